//! The control thread's HTTP side: the public `[web.http]` and `[web.https]` listeners (`/health`,
//! `/certificate.sha256`, `/announced`, `/fetch`) and the internal `[internal] listen`
//! one (`/health`, `/metrics`, `/nodes`, `/sessions`), served by one current-thread tokio runtime on
//! a thread of its own.
//!
//! It must never touch packets or take a lock a worker waits on: it reads the workers'
//! published atomics (quic-io's `WorkerStats`, the relay's `PublishedCounters`) and asks a
//! worker things only through that worker's bounded request queue. Every connection is
//! bounded in number, header size and lifetime, so a slow or hostile client costs a
//! socket for a bounded time and nothing else.

mod fetch;
mod http;
pub mod https;
pub mod metrics;
mod sessions;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use quic_io::WorkerStats;

use crate::auth::Authenticator;
use crate::relay::{DrainFlag, WorkerLink};

/// Connections one listener serves at once; more are closed as soon as accepted.
pub const MAX_CONNECTIONS_PER_LISTENER: usize = 256;

/// Bytes hyper buffers for one request head (hyper's smallest allowed buffer); a longer
/// head is answered 431 and the connection closed.
pub const MAX_HEADER_BYTES: usize = 8192;

/// Time a client has to send a complete request head (moq-relay 0.17: `[listen] timeout`,
/// 10 s); a slow trickle is closed when it runs out.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a connection may live, keep-alive included: after this it is closed whatever
/// it is doing. Above `/fetch`'s 30 s wait so that a legitimate one can finish.
pub const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// How long a request to a worker may wait for its answer before the client gets 503.
pub const WORKER_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Which listener, as the metrics' `listener` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Web,
    Internal,
}

impl Listener {
    pub fn label(self) -> &'static str {
        match self {
            Listener::Web => "web",
            Listener::Internal => "internal",
        }
    }
}

/// `accept()` failures of one listener, by moq-relay's classes, and how long it has been
/// unable to accept.
#[derive(Debug, Default)]
pub struct AcceptStats {
    pub connection: AtomicU64,
    pub exhausted: AtomicU64,
    pub unknown: AtomicU64,
    /// Connections closed at once because `MAX_CONNECTIONS_PER_LISTENER` were open.
    pub over_limit: AtomicU64,
    /// Unix time in milliseconds of the first failure of the current run of failures; 0
    /// while accepting works.
    pub stalled_since_ms: AtomicU64,
}

impl AcceptStats {
    pub fn stalled_seconds(&self, now_ms: u64) -> f64 {
        match self.stalled_since_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            since => now_ms.saturating_sub(since) as f64 / 1000.0,
        }
    }
}

/// What the HTTP handlers read. Everything a worker writes is an atomic it owns.
pub struct ControlState {
    /// The leaf certificate's fingerprint, set by the control thread at start and after a
    /// TLS reload (a lock only control-side code takes).
    fingerprint: Mutex<String>,
    pub worker_stats: Vec<Arc<WorkerStats>>,
    pub links: Vec<WorkerLink>,
    pub drain: Arc<DrainFlag>,
    /// Credentials for `/announced` (its own instance: never shared with a worker).
    pub auth: Option<Authenticator>,
    /// The external auth decider, when one decides (it then decides these routes too).
    pub decider: Option<crate::decider::HttpDecider>,
    /// The cluster links, when this relay dials peers (`/nodes`, link metrics).
    pub cluster: Option<Arc<crate::cluster::LinkTable>>,
    /// The upstream core's relay counters: summed into `/metrics` (as one more worker),
    /// never into the sessions a drain waits for.
    pub upstream_counters: Option<Arc<crate::relay::PublishedCounters>>,
    /// Accept statistics of the configured listeners only, in `/metrics` order.
    pub accept: Vec<(Listener, Arc<AcceptStats>)>,
    /// `[web.https]`'s certificate, re-read on SIGHUP.
    pub https: Option<Arc<https::HttpsTls>>,
    /// The last `/metrics` body and when it was rendered (see `metrics::CACHE_FOR`).
    metrics_cache: Mutex<Option<(std::time::Instant, bytes::Bytes)>>,
}

impl ControlState {
    pub fn new(
        fingerprint: String,
        worker_stats: Vec<Arc<WorkerStats>>,
        links: Vec<WorkerLink>,
        drain: Arc<DrainFlag>,
        auth: Option<Authenticator>,
    ) -> Self {
        Self {
            fingerprint: Mutex::new(fingerprint),
            worker_stats,
            links,
            drain,
            auth,
            decider: None,
            cluster: None,
            upstream_counters: None,
            accept: Vec::new(),
            https: None,
            metrics_cache: Mutex::new(None),
        }
    }

    /// The `/metrics` body: rendered again only once the last one is `CACHE_FOR` old, so
    /// a scraper polling faster than the workers publish costs one render per interval.
    pub fn metrics_body(&self) -> bytes::Bytes {
        let now = std::time::Instant::now();
        let Ok(mut cache) = self.metrics_cache.lock() else {
            return metrics::render(self).into();
        };
        if let Some((at, body)) = cache.as_ref()
            && now.duration_since(*at) < metrics::CACHE_FOR
        {
            return body.clone();
        }
        let body = bytes::Bytes::from(metrics::render(self));
        *cache = Some((now, body.clone()));
        body
    }

    /// Decides a one-shot HTTP request (`/announced`, `/fetch`) at `path?query`, as the
    /// sessions are decided: by the external decider when there is one (0.17 answers
    /// 401 refused, 502 unavailable), else by `[auth]` (401).
    pub async fn authorize(
        &self,
        path: &str,
        query: &str,
    ) -> Result<crate::auth::Access, hyper::StatusCode> {
        use crate::decider::Outcome;
        use hyper::StatusCode;
        let Some(decider) = &self.decider else {
            let Some(auth) = &self.auth else {
                return Err(StatusCode::INTERNAL_SERVER_ERROR);
            };
            return auth.authorize(path, query).map_err(|rejection| {
                tracing::debug!(%rejection, path, "HTTP request refused");
                StatusCode::UNAUTHORIZED
            });
        };
        let facts = crate::decider::SessionFacts {
            id: format!("{:032x}", random_u128()),
            node: std::sync::Arc::from(""),
            transport: "http",
            remote: None,
            local: None,
            server_name: None,
            alpn: None,
            path: path.to_owned(),
            query: query.to_owned(),
            role: crate::auth::Role::Any,
            certificate: None,
        };
        match decider.decide(facts).await {
            Ok(Outcome::Granted(decision)) => Ok(decision.access),
            Ok(Outcome::Refused(rejection)) if rejection.status() < 500 => {
                tracing::debug!(%rejection, path, "HTTP request refused");
                Err(StatusCode::UNAUTHORIZED)
            }
            Ok(Outcome::Refused(rejection) | Outcome::Unavailable(rejection)) => {
                tracing::debug!(%rejection, path, "HTTP request's decider unavailable");
                Err(StatusCode::BAD_GATEWAY)
            }
            Err(err) => {
                tracing::debug!(%err, path, "HTTP request's decider not asked");
                Err(StatusCode::BAD_GATEWAY)
            }
        }
    }

    pub fn fingerprint(&self) -> String {
        self.fingerprint
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }

    /// After a TLS reload: `/certificate.sha256` serves the new leaf's hash.
    pub fn set_fingerprint(&self, fingerprint: String) {
        if let Ok(mut slot) = self.fingerprint.lock() {
            *slot = fingerprint;
        }
    }

    /// Sessions open on every worker (opened − closed, from the published counters).
    pub fn live_sessions(&self) -> u64 {
        self.links
            .iter()
            .map(|link| {
                let c = link.counters.load();
                debug_assert!(c.sessions_closed <= c.sessions_opened);
                c.sessions_opened.saturating_sub(c.sessions_closed)
            })
            .sum()
    }
}

/// The HTTP listeners to serve, resolved from the configuration.
#[derive(Debug, Default, Clone)]
pub struct Listeners {
    pub web: Option<String>,
    /// `[web.https] listen` with its certificate and key files.
    pub https: Option<(String, Vec<String>, Vec<String>)>,
    pub internal: Option<String>,
    /// CPUs no worker is pinned to: the control thread runs there, so a scrape storm or
    /// a slow HTTP client never takes time from a worker's core. Empty: wherever the
    /// scheduler puts it (every allowed CPU holds a worker).
    pub housekeeping_cpus: Vec<usize>,
    /// `[stats]`, when enabled: its task runs on this runtime too.
    pub stats: Option<crate::stats::Settings>,
    /// `[cluster] connect_api`, when set: its poller runs on this runtime too.
    pub cluster_api: Option<crate::cluster::api::Poller>,
    /// Mesh gossip, when on with peers to dial: its watcher runs here too.
    pub cluster_gossip: Option<crate::cluster::gossip::Watcher>,
}

/// The running control runtime.
pub struct Control {
    thread: Option<JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The bound addresses (an ephemeral port resolved).
    pub web_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub internal_addr: Option<SocketAddr>,
    pub state: Arc<ControlState>,
}

fn bind(what: &str, address: &str) -> anyhow::Result<TcpListener> {
    let addr = address
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {what} `{address}`"))?
        .next()
        .with_context(|| format!("{what} `{address}` resolved to no address"))?;
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot bind {what} on tcp://{addr}"))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("cannot make {what} non-blocking"))?;
    Ok(listener)
}

/// Binds the configured listeners (errors come back before READY) and starts the
/// runtime thread. With no listener configured no thread is started.
pub fn start(listeners: &Listeners, mut state: ControlState) -> anyhow::Result<Control> {
    let web = listeners
        .web
        .as_deref()
        .map(|a| bind("[web.http] listen", a))
        .transpose()?;
    let https = match &listeners.https {
        Some((address, certs, keys)) => {
            let tls =
                https::HttpsTls::load(certs, keys).context("cannot load [web.https] cert/key")?;
            Some((bind("[web.https] listen", address)?, Arc::new(tls)))
        }
        None => None,
    };
    let internal = listeners
        .internal
        .as_deref()
        .map(|a| bind("[internal] listen", a))
        .transpose()?;
    let web_addr = web.as_ref().map(TcpListener::local_addr).transpose()?;
    let https_addr = https.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
    let internal_addr = internal.as_ref().map(TcpListener::local_addr).transpose()?;
    state.https = https.as_ref().map(|(_, tls)| tls.clone());
    let mut bound = Vec::new();
    // HTTP and HTTPS are one `web` listener to the metrics, as in moq-relay 0.17.
    let web_stats = Arc::new(AcceptStats::default());
    if web.is_some() || https.is_some() {
        state.accept.push((Listener::Web, web_stats.clone()));
    }
    if let Some(listener) = web {
        bound.push(http::Bound {
            kind: Listener::Web,
            listener,
            stats: web_stats.clone(),
            tls: None,
        });
    }
    if let Some((listener, tls)) = https {
        bound.push(http::Bound {
            kind: Listener::Web,
            listener,
            stats: web_stats,
            tls: Some(tls),
        });
    }
    if let Some(listener) = internal {
        let stats = Arc::new(AcceptStats::default());
        state.accept.push((Listener::Internal, stats.clone()));
        bound.push(http::Bound {
            kind: Listener::Internal,
            listener,
            stats,
            tls: None,
        });
    }
    let state = Arc::new(state);
    if bound.is_empty()
        && listeners.stats.is_none()
        && listeners.cluster_api.is_none()
        && listeners.cluster_gossip.is_none()
    {
        return Ok(Control {
            thread: None,
            stop: None,
            web_addr,
            https_addr,
            internal_addr,
            state,
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("cannot build the control runtime")?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let shared = state.clone();
    let cpus = listeners.housekeeping_cpus.clone();
    let stats = listeners.stats.clone();
    let cluster_api = listeners.cluster_api.clone();
    let cluster_gossip = listeners.cluster_gossip.clone();
    let thread = std::thread::Builder::new()
        .name("control-http".into())
        .spawn(move || {
            if !cpus.is_empty() {
                match quic_io::pin_to_cpus(&cpus) {
                    Ok(()) => tracing::info!(?cpus, "control thread kept off the worker cores"),
                    Err(err) => tracing::warn!(?cpus, "control thread not placed: {err}"),
                }
            }
            if let Some(settings) = stats {
                runtime.spawn(crate::stats::run(settings, shared.links.clone()));
            }
            if let Some(poller) = cluster_api {
                runtime.spawn(crate::cluster::api::run(poller));
            }
            if let Some(watcher) = cluster_gossip {
                runtime.spawn(crate::cluster::gossip::run(watcher, shared.links.clone()));
            }
            runtime.block_on(http::serve(bound, shared, stopped))
        })
        .context("cannot spawn the control HTTP thread")?;
    Ok(Control {
        thread: Some(thread),
        stop: Some(stop),
        web_addr,
        https_addr,
        internal_addr,
        state,
    })
}

impl Control {
    /// Stops the listeners and joins the thread; open connections are dropped.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take()
            && stop.send(()).is_err()
        {
            tracing::debug!("the control runtime had already ended");
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the control HTTP thread panicked");
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.halt();
    }
}

/// 128 bits that differ per call and per process, for request ids (not secrets).
fn random_u128() -> u128 {
    use crate::random::random_u64;
    (u128::from(random_u64()) << 64) | u128::from(random_u64())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
