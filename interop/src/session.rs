//! One client connection to a relay through the reference client (`moq-tokio`). It owns
//! the dial (scheme → transport, offered versions, TLS trust), the two origins the
//! session publishes from and subscribes into, and the session's end (graceful close or
//! a simulated crash). It must never redial: a harness session that silently reconnects
//! would hide exactly the failures the tests look for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use moq_net::{Pattern, Patterns};

use crate::error::{Error, bounded, redact};
use crate::publish::BroadcastPublisher;
use crate::subscribe::{Announcements, SubscribeOptions, TrackSubscriber};

/// How long a dial plus MoQ handshake may take on loopback before we call it failed.
/// A healthy local handshake takes milliseconds; 10 s absorbs a loaded 2-core machine.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default bound on any single wait after connecting (one frame, one announcement).
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on a graceful close: the client waits for the peer to acknowledge the close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The application close code a simulated crash sends (`64 + n` on the wire, so it
/// never collides with a protocol code); a relay should treat it like any other
/// abrupt end of the publisher.
pub const CRASH_CODE: u16 = 0x0bad;

/// How the client checks the relay's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsTrust {
    /// Accept any certificate (moq-tokio `tls.insecure`).
    InsecureSkipVerify,
    /// Accept only a leaf certificate with this SHA-256 fingerprint, hex encoded, as our
    /// relay logs it at start (moq-tokio `tls.fingerprint`; colons are accepted).
    Fingerprint(String),
}

/// Which QUIC binding the URL scheme selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `https://`: QUIC ALPN `h3`, moq version in `wt-available-protocols`.
    WebTransport,
    /// `moql://` or `moqt://`: the moq version is the TLS ALPN.
    RawQuic,
}

/// Everything [`connect_with`] can vary. Start from [`ConnectOptions::new`].
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Certificate check.
    pub tls: TlsTrust,
    /// Versions to offer, as the client spells them (`moq-lite-05`), in preference
    /// order. Empty means the client's default list (06 first).
    pub versions: Vec<String>,
    /// Whether this session may publish broadcasts.
    pub publish: bool,
    /// Announcement prefix to discover and subscribe under, or `None` for a
    /// publish-only session. `Some("")` means everything. The reference client sends
    /// one ANNOUNCE_REQUEST per prefix at session start, so this is fixed per session.
    pub subscribe_prefix: Option<String>,
    /// Bound on the dial plus handshake.
    pub connect_timeout: Duration,
    /// Bound on each later wait (see [`DEFAULT_OP_TIMEOUT`]).
    pub op_timeout: Duration,
    /// QUIC idle timeout to advertise; `None` keeps the client's 10 s. QUIC uses the
    /// smaller of both ends', so a short one here makes the relay notice a vanished
    /// client (see [`crate::cut_proxy`]) quickly.
    pub idle_timeout: Option<Duration>,
    /// PEM certificate chain and key to present as the mTLS client certificate.
    pub client_identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl ConnectOptions {
    /// Publish and subscribe to everything, all default versions, default timeouts.
    pub fn new(tls: TlsTrust) -> Self {
        Self {
            tls,
            versions: Vec::new(),
            publish: true,
            subscribe_prefix: Some(String::new()),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            op_timeout: DEFAULT_OP_TIMEOUT,
            idle_timeout: None,
            client_identity: None,
        }
    }

    /// Present this certificate chain and key (PEM files) as the client certificate.
    pub fn with_client_identity(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.client_identity = Some((cert.into(), key.into()));
        self
    }

    /// Offer only these versions, e.g. `&["moq-lite-04"]` to force 04.
    pub fn with_versions(mut self, versions: &[&str]) -> Self {
        self.versions = versions.iter().map(|v| (*v).to_owned()).collect();
        self
    }

    /// A publisher that never subscribes (SETUP Role = publisher on 05).
    pub fn publish_only(mut self) -> Self {
        self.publish = true;
        self.subscribe_prefix = None;
        self
    }

    /// A subscriber under `prefix` that never publishes (SETUP Role = subscriber on 05).
    pub fn subscribe_only(mut self, prefix: &str) -> Self {
        self.publish = false;
        self.subscribe_prefix = Some(prefix.to_owned());
        self
    }

    /// Bound each later wait by `timeout`.
    pub fn with_op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }
}

/// Dial `url` with default options: publish and subscribe to everything, every
/// version the client knows.
pub async fn connect(url: &str, tls: TlsTrust) -> Result<Session, Error> {
    connect_with(url, ConnectOptions::new(tls)).await
}

/// Dial `url` with explicit options. Returns once the MoQ session is established.
/// The session has a QUIC endpoint (UDP socket) of its own; use a [`Dialer`] to open
/// many sessions over one endpoint.
pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Session, Error> {
    let dialer = Dialer::new(url, options)?;
    let mut session = dialer.dial().await?;
    session.owns_endpoint = true;
    Ok(session)
}

/// Sessions one [`Dialer`] may open: the 1000-idle-connection test plus headroom;
/// each costs a task and client state, so a runaway loop must stop somewhere.
pub const MAX_SESSIONS_PER_DIALER: usize = 10_000;

/// Opens many sessions to one URL over one client QUIC endpoint (one UDP socket), the
/// cheap way to hold hundreds of idle connections open against a relay.
pub struct Dialer {
    client: moq_tokio::Client,
    url: url::Url,
    shown: String,
    transport: Transport,
    options: ConnectOptions,
    dialed: std::sync::atomic::AtomicUsize,
}

impl Dialer {
    /// Check `url` and `options` and bind the client endpoint; nothing is sent yet.
    pub fn new(url: &str, options: ConnectOptions) -> Result<Self, Error> {
        let parsed = url::Url::parse(url).map_err(|err| Error::InvalidUrl {
            url: url.split('?').next().unwrap_or_default().to_owned(),
            reason: err.to_string(),
        })?;
        let shown = redact(&parsed);
        let transport = match parsed.scheme() {
            "https" => Transport::WebTransport,
            "moql" | "moqt" => Transport::RawQuic,
            other => return Err(Error::UnsupportedScheme(other.to_owned())),
        };
        let host = parsed.host().ok_or_else(|| Error::InvalidUrl {
            url: shown.clone(),
            reason: "no host".into(),
        })?;

        let mut config = moq_tokio::connect::Config::default();
        match &options.tls {
            TlsTrust::InsecureSkipVerify => config.tls.insecure = Some(true),
            TlsTrust::Fingerprint(hex) => config.tls.fingerprint = vec![hex.replace(':', "")],
        }
        if let Some((cert, key)) = &options.client_identity {
            config.tls.cert = Some(cert.clone());
            config.tls.key = Some(key.clone());
        }
        config.version = parse_versions(&options.versions)?;
        config.timeout = options.connect_timeout;
        config.once = Some(true);
        // The client's default bind is a dual-stack `[::]:0`; bind the family of an IP
        // literal instead, so an IPv4-only loopback (containers) still works.
        config.bind = match host {
            url::Host::Ipv4(_) => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
            url::Host::Ipv6(_) => Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)),
            url::Host::Domain(_) => None,
        };
        let mut quic = moq_tokio::quic::Config::default();
        if let Some(idle) = options.idle_timeout {
            quic.idle_timeout = idle;
            // Keep-alives must come well inside the idle timeout, or a quiet but live
            // session would time out.
            quic.keep_alive = quic.keep_alive.min(idle / 3);
        }
        let client = config.init(quic).map_err(|source| Error::Setup {
            what: "client",
            source,
        })?;
        // Validate the prefix now rather than on the first dial.
        if let Some(prefix) = &options.subscribe_prefix {
            subtree(prefix)?;
        }
        Ok(Self {
            client: client.with_reconnect(false),
            url: parsed,
            shown,
            transport,
            options,
            dialed: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Open one more session. Closing it ([`Session::close`]) leaves the shared
    /// endpoint to the dialer; see [`Dialer::close`].
    pub async fn dial(&self) -> Result<Session, Error> {
        let dialed = self
            .dialed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if dialed >= MAX_SESSIONS_PER_DIALER {
            return Err(Error::Limit(format!(
                "{MAX_SESSIONS_PER_DIALER} sessions from one dialer"
            )));
        }
        let mut client = self.client.clone();
        let publish = if self.options.publish {
            let origin = moq_tokio::origin::spawn();
            client = client.with_publisher(origin.consume());
            Some(origin)
        } else {
            None
        };
        let subscribe = match &self.options.subscribe_prefix {
            Some(prefix) => {
                let origin = moq_tokio::origin::spawn();
                let scoped = origin.scope("", &subtree(prefix)?).map_err(|err| {
                    Error::moq(format!("scoping subscriptions to {prefix:?}"), err)
                })?;
                client = client.with_subscriber(scoped.clone());
                Some(scoped)
            }
            None => None,
        };

        // moq-tokio bounds the attempt itself with `connect_timeout`; the outer bound
        // is a backstop in case the loop never reports.
        let shown = &self.shown;
        let connection = bounded(
            || format!("session with {shown}"),
            self.options.connect_timeout + Duration::from_secs(1),
            client.connect(self.url.clone()).established(),
        )
        .await?
        .map_err(|source| Error::Connect {
            url: shown.clone(),
            source,
        })?;

        tracing::debug!(url = %shown, version = ?connection.version(), transport = ?self.transport, "interop session established");
        Ok(Session {
            client,
            connection,
            publish,
            subscribe,
            transport: self.transport,
            url: shown.clone(),
            op_timeout: self.options.op_timeout,
            owns_endpoint: false,
        })
    }

    /// Close the shared endpoint, ending every session it carries.
    pub async fn close(self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.client.close()).await;
    }
}

fn subtree(prefix: &str) -> Result<Patterns, Error> {
    let pattern = Pattern::subtree(prefix).map_err(|err| Error::InvalidPath {
        path: prefix.to_owned(),
        reason: err.to_string(),
    })?;
    Ok(Patterns::from(pattern))
}

fn parse_versions(names: &[String]) -> Result<Vec<moq_net::Version>, Error> {
    names
        .iter()
        .map(|name| {
            name.parse::<moq_net::Version>()
                .map_err(|_| Error::InvalidVersion(name.clone()))
        })
        .collect()
}

/// A live MoQ session through the reference client. Dropping it closes the session
/// (the client sends a plain cancel); use [`Session::close`] to wait for the peer, or
/// [`Session::crash`] to end it without any MoQ-level goodbye.
pub struct Session {
    client: moq_tokio::Client,
    connection: moq_tokio::Connection,
    publish: Option<moq_net::origin::Producer>,
    subscribe: Option<moq_net::origin::Producer>,
    transport: Transport,
    url: String,
    op_timeout: Duration,
    /// Whether closing this session also closes the client endpoint (false when a
    /// [`Dialer`] shares it between sessions).
    owns_endpoint: bool,
}

impl Session {
    /// The negotiated MoQ version, or `None` once the session has ended.
    pub fn version(&self) -> Option<moq_net::Version> {
        self.connection.version()
    }

    /// The negotiated version as its ALPN / `wt-protocol` string, e.g. `moq-lite-05`.
    pub fn version_name(&self) -> Option<String> {
        self.version().map(|v| v.to_string())
    }

    /// Which binding the URL selected.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The URL dialed, without its query.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The per-operation bound this session was opened with.
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// Create a broadcast at `path`, not yet announced: add its tracks, then call
    /// [`BroadcastPublisher::announce`], so a subscriber never finds it without them.
    pub fn create_broadcast(&self, path: &str) -> Result<BroadcastPublisher, Error> {
        let origin = self.publish.as_ref().ok_or(Error::NotEnabled("publish"))?;
        let inner = origin
            .create_broadcast(path)
            .map_err(|err| Error::moq(format!("creating broadcast {path:?}"), err))?;
        Ok(BroadcastPublisher::new(path.to_owned(), inner))
    }

    /// Create a broadcast with these tracks and announce it at once.
    pub fn publish(
        &self,
        path: &str,
        tracks: &[&str],
    ) -> Result<(BroadcastPublisher, Vec<crate::TrackPublisher>), Error> {
        let broadcast = self.create_broadcast(path)?;
        let tracks = tracks
            .iter()
            .map(|name| broadcast.create_track(name))
            .collect::<Result<Vec<_>, _>>()?;
        broadcast.announce()?;
        Ok((broadcast, tracks))
    }

    /// The stream of announcements under this session's subscribe prefix, starting
    /// with those already known. Paths are absolute (`demo/a`, not `a`).
    pub fn announcements(&self) -> Result<Announcements, Error> {
        let origin = self
            .subscribe
            .as_ref()
            .ok_or(Error::NotEnabled("subscribe"))?;
        Ok(Announcements::new(
            origin.consume().announced(),
            self.op_timeout,
        ))
    }

    /// Subscribe to `track` of `broadcast`, waiting (bounded) for the broadcast to be
    /// announced first. Uses [`SubscribeOptions::default`].
    pub async fn subscribe(&self, broadcast: &str, track: &str) -> Result<TrackSubscriber, Error> {
        self.subscribe_with(broadcast, track, SubscribeOptions::default())
            .await
    }

    /// [`Session::subscribe`] with explicit priority and max age.
    pub async fn subscribe_with(
        &self,
        broadcast: &str,
        track: &str,
        options: SubscribeOptions,
    ) -> Result<TrackSubscriber, Error> {
        let origin = self
            .subscribe
            .as_ref()
            .ok_or(Error::NotEnabled("subscribe"))?;
        TrackSubscriber::open(
            &origin.consume(),
            broadcast,
            track,
            options,
            self.op_timeout,
        )
        .await
    }

    /// The moq-net consumer of `broadcast`, once announced (bounded by the op timeout):
    /// for readers built on moq-net itself, such as moq-stats' stats consumer.
    pub async fn broadcast(&self, broadcast: &str) -> Result<moq_net::broadcast::Consumer, Error> {
        let origin = self
            .subscribe
            .as_ref()
            .ok_or(Error::NotEnabled("subscribe"))?;
        crate::error::bounded(
            || format!("broadcast {broadcast:?} to be announced"),
            self.op_timeout,
            origin.consume().routed_broadcast(broadcast),
        )
        .await?
        .map_err(|err| Error::moq(format!("resolving broadcast {broadcast:?}"), err))
    }

    /// Wait (bounded by `within`) for the session to end; returns the reason the
    /// client reports, `Ok(())` for a clean close by either side.
    pub async fn closed(&self, within: Duration) -> Result<Result<(), String>, Error> {
        let result = bounded(
            || format!("session with {} to end", self.url),
            within,
            self.connection.closed(),
        )
        .await?;
        Ok(result.map_err(|err| err.to_string()))
    }

    /// Close gracefully: finish the MoQ session, then wait (bounded) for the peer to
    /// receive the QUIC close.
    pub async fn close(self) {
        let Self {
            client,
            connection,
            owns_endpoint,
            ..
        } = self;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close()).await;
        if owns_endpoint {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await;
        }
    }

    /// Simulate a crash: close the QUIC connection at once with application code
    /// [`CRASH_CODE`], without finishing any track, group or announcement. Broadcast
    /// and track handles the caller still holds become inert.
    pub async fn crash(self) {
        let Self {
            client,
            connection,
            publish,
            subscribe,
            owns_endpoint,
            ..
        } = self;
        connection.abort(moq_net::Error::App(CRASH_CODE));
        // Send the CONNECTION_CLOSE before the origins drop, so the peer never sees a
        // tidy unannounce first.
        if owns_endpoint {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await;
        } else {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.closed()).await;
        }
        drop((publish, subscribe));
    }
}
