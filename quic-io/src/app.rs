//! The session-facing interface: what a worker tells the application (`Event`) and what the
//! application asks of the worker (`SessionIo`, carried out by `Io`). Raw QUIC and WebTransport look the same here —
//! stream prefixes, datagram IDs and error-code translation are handled below this line. This
//! module owns no sockets and no connections; it must never expose HTTP/3 framing or block.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

pub use quinn_proto::{StreamId, VarInt};

/// A session (one QUIC connection, raw or carrying one WebTransport session), unique within
/// its worker for the worker's lifetime.
pub type SessionId = u64;

/// What carried a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Raw QUIC with this ALPN (e.g. `moq-lite-05`).
    Quic { alpn: String },
    /// WebTransport over HTTP/3; `protocol` is the negotiated `wt-protocol`, if any.
    WebTransport { protocol: Option<String> },
}

impl Transport {
    /// The MoQ version string: the raw ALPN, or the negotiated WebTransport protocol.
    pub fn version(&self) -> Option<&str> {
        match self {
            Transport::Quic { alpn } => Some(alpn),
            Transport::WebTransport { protocol } => protocol.as_deref(),
        }
    }
}

/// A session that is ready for streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: SessionId,
    pub transport: Transport,
    /// `:authority` of the CONNECT; None on raw QUIC.
    pub authority: Option<String>,
    /// URL path of the CONNECT (e.g. `/anon`); empty on raw QUIC.
    pub path: String,
    /// URL query without `?` (e.g. `jwt=…`); empty when absent and on raw QUIC.
    pub query: String,
    pub remote: SocketAddr,
    /// Our address the session arrived on (the worker socket's port; the IP the packets
    /// were sent to when the kernel reports it, else the bound one).
    pub local: Option<SocketAddr>,
    /// The TLS SNI the client sent, if any.
    pub server_name: Option<String>,
    /// When the whole session setup must be done (`QuicConfig::handshake_timeout` from
    /// the connection's first packet): what the transport did counts against it, and the
    /// application bounds its own setup (a MoQ SETUP) by what is left.
    pub handshake_deadline: Option<std::time::Instant>,
    /// The client certificate rustls verified against `Config::client_ca`, if the
    /// client presented one.
    pub peer_certificate: Option<Box<crate::tls::PeerCertificate>>,
}

/// Something that happened on a session. Error codes are application codes: the HTTP/3
/// translation of WebTransport (also applied to raw QUIC stream codes, as moq-dev does) is
/// undone before they get here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    SessionReady(SessionInfo),
    /// The peer opened a stream. Its data follows as `Data` events.
    StreamOpened {
        session: SessionId,
        stream: StreamId,
        bidi: bool,
    },
    /// Bytes on a stream, in order.
    Data {
        session: SessionId,
        stream: StreamId,
        data: Bytes,
    },
    /// The peer finished its side of the stream; no more `Data` follows.
    Finished {
        session: SessionId,
        stream: StreamId,
    },
    /// The peer reset its side of the stream.
    Reset {
        session: SessionId,
        stream: StreamId,
        code: u32,
    },
    /// The peer asked us to stop sending on a stream.
    StopSending {
        session: SessionId,
        stream: StreamId,
        code: u32,
    },
    /// A stream that refused a write (returned fewer bytes) can take more now.
    Writable {
        session: SessionId,
        stream: StreamId,
    },
    Datagram {
        session: SessionId,
        data: Bytes,
    },
    /// The session is gone; no more events for it. `code` is the application close code
    /// (0 = normal), `reason` the peer's text when it sent one.
    SessionClosed {
        session: SessionId,
        code: u64,
        reason: String,
    },
}

impl Event {
    /// The session the event is about.
    pub fn session(&self) -> SessionId {
        match self {
            Event::SessionReady(info) => info.id,
            Event::StreamOpened { session, .. }
            | Event::Data { session, .. }
            | Event::Finished { session, .. }
            | Event::Reset { session, .. }
            | Event::StopSending { session, .. }
            | Event::Writable { session, .. }
            | Event::Datagram { session, .. }
            | Event::SessionClosed { session, .. } => *session,
        }
    }
}

/// Why an `Io` action failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IoError {
    #[error("session {0} is not open")]
    UnknownSession(SessionId),
    #[error("session {0}: peer's stream limit reached")]
    StreamLimit(SessionId),
    #[error("session {session}: stream {stream} is closed")]
    ClosedStream {
        session: SessionId,
        stream: StreamId,
    },
    #[error("session {session}: stream {stream} was stopped by the peer with code {code}")]
    Stopped {
        session: SessionId,
        stream: StreamId,
        code: u32,
    },
    #[error("connect to {addr}: {reason}")]
    Connect {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("session {session}: datagram not sent: {reason}")]
    Datagram { session: SessionId, reason: String },
}

/// What a session may do to its connection: the seam between the application and the
/// worker. [`crate::Io`] carries it out on real connections; a test can hand the same
/// application an in-memory fake and check what it asked for. Error codes are application
/// codes (the WebTransport translation happens below this line).
pub trait SessionIo {
    /// Opens a bidirectional stream (any WebTransport prefix is written for the caller).
    fn open_bi(&mut self, session: SessionId) -> Result<StreamId, IoError>;
    /// Opens a unidirectional stream (any WebTransport prefix is written for the caller).
    fn open_uni(&mut self, session: SessionId) -> Result<StreamId, IoError>;
    /// Queues chunks without copying; consumed chunks (and the consumed front of a partial
    /// one) are taken out of `chunks`. Returns the bytes accepted; fewer than offered means
    /// flow control is full and a `Writable` event will follow.
    fn write(
        &mut self,
        session: SessionId,
        stream: StreamId,
        chunks: &mut [Bytes],
    ) -> Result<usize, IoError>;
    /// Finishes our side of the stream (FIN after queued data).
    fn finish(&mut self, session: SessionId, stream: StreamId) -> Result<(), IoError>;
    /// Abandons our side of the stream with an application code.
    fn reset(&mut self, session: SessionId, stream: StreamId, code: u32) -> Result<(), IoError>;
    /// Asks the peer to stop sending on the stream.
    fn stop_sending(
        &mut self,
        session: SessionId,
        stream: StreamId,
        code: u32,
    ) -> Result<(), IoError>;
    /// Higher goes first among this session's streams.
    fn set_priority(
        &mut self,
        session: SessionId,
        stream: StreamId,
        priority: i32,
    ) -> Result<(), IoError>;
    /// Sends an unreliable datagram (dropped rather than queued when the buffer is full).
    fn send_datagram(&mut self, session: SessionId, data: Bytes) -> Result<(), IoError>;
    /// Closes the session; no `SessionClosed` event follows (the caller already knows).
    fn close(&mut self, session: SessionId, code: u32, reason: &str);
}

/// One worker's application: it is built on the worker thread by the factory passed to
/// `Server::start`, and is only ever called from that thread. Generic over the transport
/// so the same application runs on a worker (`T = Io`) and against a fake in a test;
/// an application that also dials (relay-bench) implements it for `Io` alone.
pub trait Application<T: SessionIo + ?Sized> {
    /// A session event. Act on it through `io`.
    fn on_event(&mut self, now: Instant, event: Event, io: &mut T);
    /// Called once per loop iteration, after the events: drain cross-thread work here.
    fn poll(&mut self, now: Instant, io: &mut T);
    /// When the application next needs `poll` even if nothing arrives.
    fn timeout(&self) -> Option<Instant>;
}
