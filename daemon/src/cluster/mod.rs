//! Links to other relays (`[cluster] connect`, spec `cluster.md`): the peers to dial,
//! the client TLS they are verified with, and the upstream core that holds the links on
//! a thread of its own and joins the router as one more shard.
//!
//! Submodules, one concern each: `peer` (a peer URL), `link` (one link's state and
//! redial schedule), `core` (the upstream core's application), `table` (what the
//! control side reads of the links), `api` (`connect_api`'s peer lists), `gossip`
//! (0.14's mesh discovery), `origins` (which relays dialed us, for one link per pair).
//!
//! Route choice among links is the relay's (`crate::relay::routes`). Not built: 0.17's
//! LAN discovery (`[cluster.lan]`, mDNS).

pub mod api;
mod core;
pub mod gossip;
mod link;
pub mod origins;
mod peer;
mod table;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use core::{Dialer, UpstreamCore};
pub use link::Schedule;
pub use peer::Peer;
pub use table::{LinkStatus, LinkTable};

use crate::config::{ClientTlsConfig, Config, PeerEntry};

/// Why the cluster links cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("[cluster] connect: {0}")]
    Peer(String),
    #[error("[cluster] token `{path}`: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::client_tls::ClientTlsError),
    #[error("[client.tls] fingerprint `{0}` is not 64 hex digits")]
    Fingerprint(String),
    #[error("cluster client TLS: {0}")]
    Quic(String),
    #[error("[client.tls] cert/key: {0}")]
    Identity(String),
}

/// A link whose peer went silent this long is down, and is redialed. A relay killed
/// without a close says nothing: its peers learn it from this bound, so it is short, and
/// `LINK_KEEP_ALIVE` keeps an idle but healthy link from reaching it.
pub const LINK_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
pub const LINK_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// A token file larger than this is not a JWT.
const MAX_TOKEN_FILE_BYTES: u64 = 16 << 10;

/// The redial schedule of the moq-relay release the configuration is written for.
pub fn schedule(config: &Config) -> Schedule {
    match config.auth.generation {
        crate::config::Generation::V017 => Schedule::V017,
        _ => Schedule::V014,
    }
}

/// `[cluster] token`'s JWT, read once.
pub fn token(config: &Config) -> Result<Option<String>, ClusterError> {
    config.cluster.token.as_deref().map(read_token).transpose()
}

/// `[cluster] connect_api`'s poller and the inbox it fills, when it is configured.
pub fn api(config: &Config) -> Result<Option<(api::Poller, Arc<api::Inbox>)>, ClusterError> {
    let Some(source) = &config.cluster.connect_api else {
        return Ok(None);
    };
    let inbox = Arc::new(api::Inbox::default());
    let poller = api::Poller {
        source: api::Source::parse(source),
        node: config.cluster.node.clone(),
        token: token(config)?,
        tls: config.client.tls.clone(),
        inbox: inbox.clone(),
    };
    Ok(Some((poller, inbox)))
}

/// This relay's `node` URL when mesh gossip is on (`mesh = true` with `node`, or 0.14's
/// legacy `mesh = "<url>"`).
fn mesh_node(config: &Config) -> Option<&str> {
    let cluster = &config.cluster;
    match &cluster.mesh {
        Some(crate::config::Mesh::LegacyNode(url)) => Some(cluster.node.as_deref().unwrap_or(url)),
        Some(mesh) if mesh.is_enabled() => cluster.node.as_deref(),
        _ => None,
    }
}

/// The marker broadcast this relay announces for mesh gossip, if it is on.
pub fn origin_marker(config: &Config) -> Option<String> {
    mesh_node(config).map(gossip::origin_path)
}

/// Whether sessions announce paths under `.` segments too: with mesh gossip on, whose
/// markers travel under `.internal` as in moq-relay 0.14 (which hid nothing). Otherwise
/// they are hidden, as 0.17 does, whatever the file's generation.
pub fn shows_hidden_paths(config: &Config) -> bool {
    mesh_node(config).is_some()
}

/// The mesh watcher and the inbox it fills, when gossip is on and this relay dials peers
/// of its own (a relay without any only advertises itself, spec 3.4's run modes).
pub fn gossip(config: &Config) -> Result<Option<(gossip::Watcher, Arc<api::Inbox>)>, ClusterError> {
    let Some(node) = mesh_node(config) else {
        return Ok(None);
    };
    if config.cluster.connect.is_empty() && config.cluster.connect_api.is_none() {
        return Ok(None);
    }
    let own_key = Peer::identity_key(node).map_err(ClusterError::Peer)?;
    let inbox = Arc::new(api::Inbox::default());
    let watcher = gossip::Watcher {
        own_key,
        token: token(config)?,
        inbox: inbox.clone(),
    };
    Ok(Some((watcher, inbox)))
}

/// The configured peers, one per identity key (the first spelling wins), each with the
/// `[cluster] token` unless its URL carries a token of its own.
pub fn peers(config: &Config) -> Result<Vec<Peer>, ClusterError> {
    let cluster = &config.cluster;
    let token = token(config)?;
    let mut seen = HashSet::new();
    let mut peers = Vec::new();
    for entry in cluster.connect.iter() {
        let peer = match entry {
            PeerEntry::Url(url) => Peer::parse(url, token.as_deref()),
            PeerEntry::Object(object) => {
                let token = object.token.as_deref().or(token.as_deref());
                Peer::parse(&object.url, token).map(|mut peer| {
                    peer.cost = object.cost.or(peer.cost);
                    peer
                })
            }
        }
        .map_err(ClusterError::Peer)?;
        if seen.insert(peer.key.clone()) {
            peers.push(peer);
        }
    }
    Ok(peers)
}

fn read_token(path: &std::path::Path) -> Result<String, ClusterError> {
    use std::io::Read;
    let error = |source| ClusterError::Token {
        path: path.display().to_string(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(error)?
        .take(MAX_TOKEN_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(error)?;
    Ok(text.trim().to_owned())
}

/// How the links verify their peers, from `[client.tls]` (0.17: `[connect.tls]`): pinned
/// fingerprints, else the roots (files, else the system's); `disable_verify = true`
/// trusts any certificate, and says so in the log. With `cert` and `key` the links
/// present that certificate, for peers that admit relays by client certificate
/// (`[server.tls] root` there, spec `cluster.md` 4).
pub fn dialer(
    tls: &ClientTlsConfig,
    versions: &[String],
    quic: &quic_io::Config,
) -> Result<Dialer, ClusterError> {
    use quic_io::tls::ServerVerify;
    let verify = || -> Result<ServerVerify, ClusterError> {
        if tls.disable_verify == Some(true) {
            tracing::warn!(
                "[client.tls] disable_verify: cluster peers' certificates are not verified"
            );
            return Ok(ServerVerify::AnyCertificate);
        }
        if !tls.fingerprint.is_empty() {
            let digests = tls
                .fingerprint
                .iter()
                .map(|hex| {
                    quic_io::tls::parse_fingerprint(hex)
                        .ok_or_else(|| ClusterError::Fingerprint(hex.to_owned()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(ServerVerify::Sha256(digests));
        }
        Ok(ServerVerify::Roots(Arc::new(crate::client_tls::roots(
            tls,
        )?)))
    };
    let identity = || -> Result<Option<quic_io::tls::TlsMaterial>, ClusterError> {
        let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
            return Ok(None);
        };
        quic_io::tls::load(&quic_io::TlsSource::Files {
            certs: vec![cert.clone()],
            keys: vec![key.clone()],
        })
        .map(Some)
        .map_err(|err| ClusterError::Identity(err.to_string()))
    };
    let alpns: Vec<&str> = versions.iter().map(String::as_str).collect();
    let build = |alpns: &[&str]| {
        quic_io::tls::client_config_as(verify()?, identity()?, alpns, quic)
            .map_err(|err| ClusterError::Quic(err.to_string()))
    };
    Ok(Dialer {
        webtransport: build(&["h3"])?,
        raw: build(&alpns)?,
        versions: versions.to_vec(),
    })
}

/// The upstream core's endpoint: the relay's QUIC settings, one unsteered worker on an
/// ephemeral port of the peers' address family, pinned to `[runtime] upstream_cpu`.
pub fn upstream_quic_config(
    config: &Config,
    mut quic: quic_io::Config,
    peers: &[Peer],
) -> quic_io::Config {
    let v6 = peers.first().is_some_and(|peer| peer.addr.is_ipv6());
    quic.listen = if v6 {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    quic.runtime = quic_io::RuntimeConfig {
        workers: 1,
        pin: config.runtime.upstream_cpu.is_some(),
        cpus: config.runtime.upstream_cpu.into_iter().collect(),
    };
    quic.socket.steer_bpf = false;
    // Nobody dials the upstream core: it needs a certificate only to start.
    quic.tls = quic_io::TlsSource::Generate {
        hostnames: vec!["localhost".to_owned()],
    };
    quic.client_ca = Vec::new();
    quic.quic.cid_layout = quic_io::CidLayout::default();
    quic.quic.idle_timeout = quic.quic.idle_timeout.min(LINK_IDLE_TIMEOUT);
    quic.quic.keep_alive = Some(LINK_KEEP_ALIVE);
    quic.quic.preferred_v4 = None;
    quic.quic.preferred_v6 = None;
    quic
}
