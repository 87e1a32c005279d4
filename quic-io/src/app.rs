//! The session-facing interface: what a worker tells the application (`Event`) and what the
//! application asks of the worker (`Io`). Raw QUIC and WebTransport look the same here —
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

/// One worker's application: it is built on the worker thread by the factory passed to
/// `Server::start`, and is only ever called from that thread.
pub trait Application {
    /// A session event. Act on it through `io`.
    fn on_event(&mut self, now: Instant, event: Event, io: &mut crate::Io<'_>);
    /// Called once per loop iteration, after the events: drain cross-thread work here.
    fn poll(&mut self, now: Instant, io: &mut crate::Io<'_>);
    /// When the application next needs `poll` even if nothing arrives.
    fn timeout(&self) -> Option<Instant>;
}
