//! An in-process relay built only from the reference crates (`moq-tokio` server +
//! one shared `moq-net` origin): every accepted session publishes into the origin and
//! is served from it. It is the "other relay" for side-by-side tests and benchmarks and
//! the peer that proves this harness works without our relay. Like moq-relay (spec
//! 8.1), each session is rooted at its request path: a client at `/anon` publishing
//! `bbb` creates `anon/bbb`. It owns its listener, its generated self-signed
//! certificate and one task per session, all bounded; it must never grow features of
//! its own (auth, clustering), because then it would stop being the reference.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use moq_net::{Pattern, Patterns};
use tokio::task::JoinSet;

use crate::error::Error;

/// Sessions served at once; beyond this a new session is refused with application
/// code 503. 4096 covers the 1000-connection idle test with room to spare.
pub const MAX_SESSIONS: usize = 4096;

/// What to start. [`RelayConfig::new`] offers every version the reference knows.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// UDP address to bind; port 0 picks an ephemeral one.
    pub bind: SocketAddr,
    /// Versions to accept, as the client spells them; empty = all (06 first). Use
    /// [`crate::RELAY_VERSIONS`] to behave like a relay without 06 (05, 04, 03).
    pub versions: Vec<String>,
}

impl RelayConfig {
    /// Bind `bind`, accept every version.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            versions: Vec::new(),
        }
    }

    /// Accept only these versions.
    pub fn with_versions(mut self, versions: &[&str]) -> Self {
        self.versions = versions.iter().map(|v| (*v).to_owned()).collect();
        self
    }
}

/// A running reference relay. Dropping it stops accepting and ends every session.
pub struct ReferenceRelay {
    local_addr: SocketAddr,
    fingerprint: String,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// Start a reference relay on `addr` accepting every version.
pub async fn start(addr: SocketAddr) -> Result<ReferenceRelay, Error> {
    start_with(RelayConfig::new(addr)).await
}

/// Start a reference relay with explicit versions.
pub async fn start_with(config: RelayConfig) -> Result<ReferenceRelay, Error> {
    let versions = config
        .versions
        .iter()
        .map(|name| {
            name.parse::<moq_net::Version>()
                .map_err(|_| Error::InvalidVersion(name.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let identity =
        moq_tokio::tls::Identity::generate(["localhost"]).map_err(|err| Error::Setup {
            what: "relay certificate",
            source: moq_tokio::Error::from(err),
        })?;
    let fingerprint = identity.fingerprint().to_owned();

    let mut listen = moq_tokio::listen::Config::default();
    listen.bind = Some(moq_tokio::listen::Bind::Addr(config.bind));
    listen.tls.identity = Some(identity);
    listen.version = versions;

    let server = listen
        .init(moq_tokio::quic::Config::default())
        .map_err(|source| Error::Setup {
            what: "relay",
            source,
        })?;
    let mut listener = server.listen().await.map_err(|source| Error::Setup {
        what: "relay listener",
        source,
    })?;
    let local_addr = listener.local_addr().map_err(|source| Error::Setup {
        what: "relay address",
        source,
    })?;

    let origin = moq_tokio::origin::spawn();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        let mut sessions = JoinSet::new();
        while let Some(request) = listener.accept().await {
            while sessions.try_join_next().is_some() {}
            if sessions.len() >= MAX_SESSIONS {
                tracing::warn!(MAX_SESSIONS, "reference relay full, refusing a session");
                let _ = request.reject(moq_tokio::server::Reject::App(503)).await;
                continue;
            }
            counter.fetch_add(1, Ordering::Relaxed);
            let root = request.path().to_owned();
            let everything = Patterns::from(Pattern::all());
            let scoped = origin
                .consume()
                .scope(&root, &everything)
                .and_then(|publish| {
                    origin
                        .scope(&root, &everything)
                        .map(|subscribe| (publish, subscribe))
                });
            let (publish, subscribe) = match scoped {
                Ok(scoped) => scoped,
                Err(err) => {
                    tracing::debug!(%err, root, "reference relay refusing an unusable root");
                    let _ = request.reject(moq_tokio::server::Reject::App(400)).await;
                    continue;
                }
            };
            let request = request.with_publisher(publish).with_subscriber(subscribe);
            sessions.spawn(async move {
                match request.ok().await {
                    Ok(session) => {
                        tracing::debug!(version = %session.version(), "reference relay session up");
                        let reason = session.closed().await;
                        tracing::debug!(%reason, "reference relay session ended");
                    }
                    Err(err) => tracing::debug!(%err, "reference relay handshake failed"),
                }
            });
        }
        sessions.shutdown().await;
    });

    Ok(ReferenceRelay {
        local_addr,
        fingerprint,
        accepted,
        task,
    })
}

impl ReferenceRelay {
    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// SHA-256 of the generated certificate, lowercase hex, for [`crate::TlsTrust::Fingerprint`].
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The trust setting that pins this relay's certificate.
    pub fn trust(&self) -> crate::TlsTrust {
        crate::TlsTrust::Fingerprint(self.fingerprint.clone())
    }

    /// A WebTransport URL for `path` (which may carry a `?query`).
    pub fn https_url(&self, path: &str) -> String {
        format!(
            "https://{}/{}",
            self.local_addr,
            path.trim_start_matches('/')
        )
    }

    /// A raw QUIC URL for `path`.
    pub fn quic_url(&self, path: &str) -> String {
        format!(
            "moql://{}/{}",
            self.local_addr,
            path.trim_start_matches('/')
        )
    }

    /// Sessions accepted so far (handshakes started, not necessarily completed).
    pub fn sessions_accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Stop accepting and end every session.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

impl Drop for ReferenceRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
