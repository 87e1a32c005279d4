//! Starting the relay: the configuration mapped onto the QUIC server's and the router's
//! settings, one router shard handed to each worker as it starts, and each shard's
//! doorbell wired to its worker's waker.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use quic_io::{Server, ServerHandle, TlsSource, Waker};
use router::{Doorbell, Router};

use super::RelayWorker;
use super::control::{self, WorkerEnd, WorkerLink};
use super::drain::DrainFlag;
use crate::auth::Authenticator;
use crate::config::{Config, Congestion, IoBackend};
use crate::listen;

/// A shard's doorbell, connected to its worker's waker once that worker starts. The worker
/// sets it before its loop runs, and a shard is only rung after it parked in that loop,
/// so no ring can come before the waker is there.
#[derive(Default)]
struct WorkerDoorbell(OnceLock<Waker>);

impl Doorbell for WorkerDoorbell {
    fn ring(&self) {
        if let Some(waker) = self.0.get() {
            waker.wake();
        }
    }
}

/// The running relay.
pub struct RelayServer {
    pub handle: ServerHandle,
    pub hop_id: u64,
    /// The `[auth]` policy every worker reads; SIGHUP reloads it in place.
    pub auth: Arc<Authenticator>,
    /// The control thread's link to each worker, by index.
    pub links: Vec<WorkerLink>,
    /// Set once when a drain starts; every worker then sends GOAWAY.
    pub drain: Arc<DrainFlag>,
    /// The external auth decider's thread (`auth_api`, `[auth] url`), if one decides.
    pub decider: Option<crate::decider::Decider>,
    /// The upstream core holding the links to other relays (`[cluster] connect`).
    pub upstream: Option<ServerHandle>,
    /// What the control side reads of those links.
    pub cluster: Option<Arc<crate::cluster::LinkTable>>,
    /// The upstream core's relay counters (its link sessions), summed into `/metrics`
    /// beside the workers' but not counted as sessions a drain waits for.
    pub upstream_counters: Option<Arc<control::PublishedCounters>>,
    /// `[cluster] connect_api`'s poller, for the control runtime to run; the upstream
    /// core reads what it finds.
    pub cluster_api: Option<crate::cluster::api::Poller>,
    /// Mesh gossip's watcher, likewise.
    pub cluster_gossip: Option<crate::cluster::gossip::Watcher>,
}

/// moq-lite versions this relay speaks, newest first, as ALPN / wt-protocol strings.
fn versions(config: &Config) -> Vec<String> {
    let implemented = proto::Version::ALL.map(proto::Version::alpn);
    if config.server.version.is_empty() {
        return implemented.iter().map(|v| v.to_string()).collect();
    }
    implemented
        .iter()
        .filter(|v| config.server.version.iter().any(|wanted| wanted == **v))
        .map(|v| v.to_string())
        .collect()
}

fn random_hop_id() -> u64 {
    // moq-relay draws origin ids from [1, 2^53) so JavaScript peers can hold them.
    let random = crate::random::random_u64();
    (random % ((1 << 53) - 1)) + 1
}

pub fn quic_config(config: &Config, listen: SocketAddr, allowed_cpus: &[usize]) -> quic_io::Config {
    let cpus = listen::worker_cpus(&config.runtime, allowed_cpus);
    let quic = config.effective_quic();
    let tls = if config.server.tls.cert.is_empty() {
        TlsSource::Generate {
            hostnames: config.server.tls.generate.0.clone(),
        }
    } else {
        TlsSource::Files {
            certs: config.server.tls.cert.iter().map(Into::into).collect(),
            keys: config.server.tls.key.iter().map(Into::into).collect(),
        }
    };
    let versions = versions(config);
    let preferred = config.preferred_addresses().unwrap_or((None, None));
    // quinn counts streams as u32-bounded varints; validation keeps max_streams ≤ 2^20.
    let max_streams = u32::try_from(quic.max_streams).unwrap_or(u32::MAX);
    quic_io::Config {
        listen,
        runtime: quic_io::RuntimeConfig {
            workers: cpus.len(),
            pin: config.runtime.pin,
            cpus: cpus.iter().flatten().copied().collect(),
        },
        socket: quic_io::SocketConfig {
            io: match config.effective_io() {
                IoBackend::Auto => quic_io::IoBackend::Auto,
                IoBackend::Uring => quic_io::IoBackend::Uring,
                IoBackend::Poll => quic_io::IoBackend::Poll,
            },
            recv_buffer: config.socket.recv_buffer.0 as usize,
            send_buffer: config.socket.send_buffer.0 as usize,
            gso: config.effective_gso(),
            gro: config.socket.gro,
            max_gso_segments: config.socket.max_gso_segments,
            steer_bpf: true,
        },
        quic: quic_io::QuicConfig {
            idle_timeout: quic.idle_timeout,
            keep_alive: quic.keep_alive,
            max_bidi_streams: max_streams,
            max_uni_streams: max_streams,
            congestion: match quic.congestion {
                Congestion::Cubic => quic_io::Congestion::Cubic,
                Congestion::Bbr => quic_io::Congestion::Bbr,
                Congestion::NewReno => quic_io::Congestion::NewReno,
            },
            raw_alpns: versions.clone(),
            webtransport: true,
            wt_protocols: versions,
            handshake_timeout: quic.handshake_timeout,
            receive_window: Some(quic.receive_window),
            stream_receive_window: quic.stream_receive_window,
            send_window: quic.send_window,
            // Validation has checked both; a failure here cannot happen and falls back
            // to the plain layout and no preferred address.
            cid_layout: config
                .load_balancer()
                .ok()
                .flatten()
                .and_then(|lb| quic_io::CidLayout::quic_lb(&lb.server_id, lb.nonce).ok())
                .unwrap_or_default(),
            preferred_v4: preferred.0,
            preferred_v6: preferred.1,
        },
        limits: quic_io::LimitsConfig {
            max_connections_per_worker: config.limits.connections_per_worker,
            max_connections_per_source: config.limits.sessions_per_source,
            max_connections_total: config.limits.sessions_total,
            handshakes_per_sec: config.limits.handshakes_per_second,
        },
        tls,
        // A 0.17 file with a client CA is refused at validation (0.17 reports
        // certificates to an auth server, which this build does not have).
        client_ca: config.server.tls.root.iter().map(Into::into).collect(),
    }
}

fn router_config(config: &Config) -> router::Config {
    router::Config {
        subscriber_max_bytes: config.limits.bytes_in_flight_per_subscriber.0 as usize,
        cache_max_bytes: config.limits.cache_bytes_per_track.0 as usize,
        linger: config.cluster.linger,
        ..router::Config::default()
    }
}

/// Binds the listen sockets and starts one relay worker per configured core.
pub fn start(config: &Config, allowed_cpus: &[usize]) -> anyhow::Result<RelayServer> {
    let listen = listen::resolve_bind(config).context("cannot resolve [server] bind")?;
    let quic = quic_config(config, listen, allowed_cpus);
    let workers = quic.runtime.workers;
    let peers = crate::cluster::peers(config)?;
    let (cluster_api, api_inbox) = crate::cluster::api(config)?.unzip();
    let (cluster_gossip, gossip_inbox) = crate::cluster::gossip(config)?.unzip();
    let marker = crate::cluster::origin_marker(config);
    let show_hidden = crate::cluster::shows_hidden_paths(config);
    // With links (configured, or to come from connect_api), the upstream core is one
    // more shard, after the workers'.
    let has_links = !peers.is_empty() || api_inbox.is_some();
    let shard_count = workers + usize::from(has_links);
    // Which relays dialed us, for the upstream core's one link per pair.
    let peer_origins = has_links.then(|| Arc::new(crate::cluster::origins::PeerOrigins::default()));
    let workers_origins = peer_origins.clone();
    let doorbells: Vec<Arc<WorkerDoorbell>> = (0..shard_count)
        .map(|_| Arc::new(WorkerDoorbell::default()))
        .collect();
    let upstream_quic =
        has_links.then(|| crate::cluster::upstream_quic_config(config, quic.clone(), &peers));
    let shards = Router::build(
        router_config(config),
        doorbells
            .iter()
            .map(|d| d.clone() as Arc<dyn Doorbell>)
            .collect(),
    )
    .context("cannot build the router")?;
    // Taken once per worker at start-up; never touched on the data path.
    let shards: Arc<Mutex<Vec<Option<router::Shard>>>> =
        Arc::new(Mutex::new(shards.into_iter().map(Some).collect()));
    let auth = Arc::new(Authenticator::new(&config.auth).context("cannot load [auth]")?);
    let hop_id = config.cluster.id.unwrap_or_else(random_hop_id);
    let max_hops = config
        .cluster
        .max_hops
        .map_or(super::DEFAULT_MAX_HOPS, |hops| hops as usize);
    let workers_auth = auth.clone();
    let drain = Arc::new(DrainFlag::default());
    // moq-relay 0.17: `[stats] node`, else `[cluster] node`, else "".
    let node: Arc<str> = Arc::from(
        config
            .stats
            .node
            .as_deref()
            .or(config.cluster.node.as_deref())
            .unwrap_or(""),
    );
    let (ends, mut links): (Vec<WorkerEnd>, Vec<WorkerLink>) =
        (0..workers).map(|_| control::link(drain.clone())).unzip();
    let (decider, decider_links) = match crate::decider::start(
        &config.auth,
        &config.client.tls,
        workers,
        listen::housekeeping_cpus(&config.runtime, allowed_cpus),
    )
    .context("cannot start the [auth] decider")?
    {
        Some((decider, links)) => (Some(decider), links.into_iter().map(Some).collect()),
        None => (None, Vec::new()),
    };
    // Taken once per worker at start-up, like the shards.
    let decider_links: Mutex<Vec<Option<crate::decider::DeciderLink>>> = Mutex::new(decider_links);
    // Taken once per worker at start-up, like the shards.
    let ends: Mutex<Vec<Option<WorkerEnd>>> = Mutex::new(ends.into_iter().map(Some).collect());

    let upstream_doorbell = doorbells.get(workers).cloned();
    let upstream_shard = if !has_links {
        None
    } else {
        shards
            .lock()
            .ok()
            .and_then(|mut shards| shards.get_mut(workers).and_then(Option::take))
    };
    let upstream_auth = auth.clone();
    let upstream_node = node.clone();
    let stats_enabled = config.stats.enabled;
    let buffered = config.limits.bytes_buffered_per_session.0 as usize;
    let peer_limits = (
        config.limits.subscriptions_per_session,
        config.limits.announces_per_session,
    );
    let handle = Server::start(quic, move |ctx| {
        let first = doorbells[ctx.index].0.set(ctx.waker.clone());
        assert!(first.is_ok(), "worker {} started twice", ctx.index);
        let shard = shards
            .lock()
            .ok()
            .and_then(|mut shards| shards.get_mut(ctx.index).and_then(Option::take))
            .unwrap_or_else(|| {
                panic!(
                    "router shard {} missing: workers and shards must be built together",
                    ctx.index
                )
            });
        let mut worker = RelayWorker::new(ctx.index, shard, workers_auth.clone(), hop_id);
        worker.set_node(&node);
        worker.set_max_hops(max_hops);
        worker.limit_peers(peer_limits.0, peer_limits.1);
        worker.limit_buffered(buffered);
        if show_hidden {
            worker.show_hidden_paths();
        }
        if let Some(origins) = &workers_origins {
            worker.report_peer_origins(origins.clone());
        }
        if ctx.index == 0
            && let Some(marker) = &marker
        {
            worker.announce_marker(marker);
        }
        if stats_enabled {
            worker.enable_stats();
        }
        if let Some(end) = ends
            .lock()
            .ok()
            .and_then(|mut ends| ends.get_mut(ctx.index).and_then(Option::take))
        {
            worker.attach_control(end);
        }
        if let Some(link) = decider_links
            .lock()
            .ok()
            .and_then(|mut links| links.get_mut(ctx.index).and_then(Option::take))
        {
            // Before the worker's loop runs: no verdict can come before its waker.
            link.attach_waker(ctx.waker.clone());
            worker.set_decider(link);
        }
        worker
    })
    .with_context(|| format!("cannot start the QUIC server on {listen}"))?;
    for (link, waker) in links.iter_mut().zip(handle.wakers()) {
        link.set_waker(waker);
    }
    let mut cluster = None;
    let mut upstream_counters = None;
    let upstream = match (upstream_quic, upstream_shard, upstream_doorbell) {
        (Some(upstream_quic), Some(shard), Some(doorbell)) => {
            let dialer =
                crate::cluster::dialer(&config.client.tls, &versions(config), &upstream_quic)
                    .context("cannot set up the cluster links")?;
            let mut relay = RelayWorker::new(workers, shard, upstream_auth, hop_id);
            relay.set_node(&upstream_node);
            relay.set_link_mode();
            relay.set_max_hops(max_hops);
            // Its own drain flag, never raised: the links keep feeding the workers'
            // sessions through a drain, and close with the process.
            let (end, link) = control::link(Arc::new(DrainFlag::default()));
            relay.attach_control(end);
            upstream_counters = Some(link.counters.clone());
            let schedule = crate::cluster::schedule(config);
            let mut core = crate::cluster::UpstreamCore::new(relay, peers, dialer, schedule);
            if let Some(inbox) = api_inbox {
                core.follow_api(inbox);
            }
            if let Some(inbox) = gossip_inbox {
                core.follow_gossip(inbox);
            }
            if let Some(origins) = peer_origins {
                core.yield_to_inbound(origins, hop_id);
            }
            cluster = Some(core.table());
            let core = Mutex::new(Some(core));
            let upstream = Server::start(upstream_quic, move |ctx| {
                let first = doorbell.0.set(ctx.waker.clone());
                assert!(first.is_ok(), "the upstream core started twice");
                core.lock()
                    .ok()
                    .and_then(|mut core| core.take())
                    .unwrap_or_else(|| panic!("the upstream core is one worker, built once"))
            })
            .context("cannot start the upstream core")?;
            // Links are dialed from here; nobody is to dial in.
            upstream.refuse_new_connections();
            Some(upstream)
        }
        _ => None,
    };
    Ok(RelayServer {
        handle,
        hop_id,
        auth,
        links,
        drain,
        decider,
        upstream,
        cluster,
        upstream_counters,
        cluster_api,
        cluster_gossip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strings;

    fn offered(wanted: &[&str]) -> Vec<String> {
        let mut config = Config::default();
        config.server.version = Strings(wanted.iter().map(|v| (*v).to_owned()).collect());
        versions(&config)
    }

    #[test]
    fn the_relay_offers_06_first_then_05_04_03() {
        assert_eq!(
            offered(&[]),
            ["moq-lite-06", "moq-lite-05", "moq-lite-04", "moq-lite-03"]
        );
    }

    #[test]
    fn server_version_filters_keep_our_order_and_never_name_06_wip() {
        assert_eq!(
            offered(&["moq-lite-03", "moq-lite-06"]),
            ["moq-lite-06", "moq-lite-03"]
        );
        assert_eq!(offered(&["moq-lite-05"]), ["moq-lite-05"]);
        // The published clients do not know 06-wip (spec 12.1): a list of only it offers
        // nothing rather than a format nobody speaks.
        assert!(offered(&["moq-lite-06-wip"]).is_empty());
    }
}
