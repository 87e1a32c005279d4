//! WebTransport over HTTP/3, sans-IO: the error codes and bounds shared by its parts, and
//! the parts themselves — `framing` (stream headers and prefixes, quarter-stream-ID
//! datagrams, the CLOSE_WEBTRANSPORT_SESSION capsule, our control stream), `handshake` (the
//! SETTINGS exchange and extended CONNECT, server and client side) and `streams` (what each
//! stream of an `h3` connection is, and where its bytes go). Everything here takes
//! bytes in and returns bytes and decisions out; it must never touch a socket, a clock or
//! quinn-proto, and never buffer more than the bounds below. QPACK (with Huffman) and
//! SETTINGS parsing come from `web-transport-proto`.

mod framing;
mod handshake;
mod streams;

pub use framing::{
    BiKind, UniKind, WT_BIDI, WT_UNI, close_capsule, control_stream_bytes, decode_datagram,
    encode_datagram, parse_bi_header, parse_uni_header, stream_prefix,
};
pub use handshake::{Handshake, Output, SessionRequest};
pub use streams::{MAX_EARLY_STREAMS, SessionIds, StreamAction, Streams};
pub use web_transport_proto::{error_from_http3, error_to_http3};

/// HTTP/3 error codes (RFC 9114 section 8.1) used to close a misbehaving connection.
pub mod h3 {
    pub const NO_ERROR: u64 = 0x100;
    pub const GENERAL_PROTOCOL_ERROR: u64 = 0x101;
    pub const STREAM_CREATION_ERROR: u64 = 0x103;
    pub const CLOSED_CRITICAL_STREAM: u64 = 0x104;
    pub const FRAME_UNEXPECTED: u64 = 0x105;
    pub const FRAME_ERROR: u64 = 0x106;
    pub const EXCESSIVE_LOAD: u64 = 0x107;
    pub const SETTINGS_ERROR: u64 = 0x109;
    pub const MISSING_SETTINGS: u64 = 0x10a;
    pub const REQUEST_REJECTED: u64 = 0x10b;
    pub const MESSAGE_ERROR: u64 = 0x10e;
    /// WT_BUFFERED_STREAM_REJECTED (draft-ietf-webtrans-http3): stops a WebTransport
    /// stream that names no session of ours, or one more than we hold before our session.
    pub const WT_BUFFERED_STREAM_REJECTED: u64 = 0x3994bd84;
}

/// HTTP/3 frame types (RFC 9114 section 7.2) the handshake tells apart.
pub(crate) mod frame {
    pub const DATA: u64 = 0x00;
    pub const HEADERS: u64 = 0x01;
    pub const SETTINGS: u64 = 0x04;
    pub const GOAWAY: u64 = 0x07;
}

/// The control stream carries SETTINGS and a few tiny frames; anything that needs more
/// than this before a frame completes is an attack (moq-dev caps frames at 64 KiB too).
pub const MAX_CONTROL_BUFFER: usize = 64 * 1024;
/// A CONNECT HEADERS frame is bounded at 16 KiB of field section by web-transport-proto;
/// allow the frame header and a little slack on top.
pub const MAX_CONNECT_BUFFER: usize = 16 * 1024 + 64;
/// Capsules on the CONNECT stream: CLOSE carries a reason of at most ~1 KiB; moq-dev accepts
/// up to 64 KiB, so we do too.
pub const MAX_CAPSULE_BUFFER: usize = 64 * 1024 + 16;
/// Stream headers are at most two 8-byte varints.
pub const MAX_STREAM_HEADER: usize = 16;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WtError {
    #[error("control stream: first frame is {0:#x}, not SETTINGS")]
    MissingSettings(u64),
    #[error("control stream: second SETTINGS frame")]
    DuplicateSettings,
    #[error("peer SETTINGS do not enable WebTransport with datagrams")]
    NoWebTransport,
    #[error("malformed SETTINGS: {0}")]
    BadSettings(String),
    #[error("frame {frame:#x} not allowed on stream {stream}")]
    FrameUnexpected { stream: u64, frame: u64 },
    #[error("frame on stream {stream} exceeds {limit} bytes")]
    TooLarge { stream: u64, limit: usize },
    #[error("second control stream {0}")]
    DuplicateControl(u64),
    #[error("control stream closed")]
    ControlClosed,
    #[error("server opened request stream {0}")]
    ServerRequestStream(u64),
    #[error("CONNECT target is not a valid https URL: {0}")]
    BadTarget(String),
}

impl WtError {
    /// The HTTP/3 connection error code to close with.
    pub fn h3_code(&self) -> u64 {
        match self {
            WtError::MissingSettings(_) => h3::MISSING_SETTINGS,
            WtError::DuplicateSettings | WtError::FrameUnexpected { .. } => h3::FRAME_UNEXPECTED,
            WtError::NoWebTransport | WtError::BadSettings(_) => h3::SETTINGS_ERROR,
            WtError::TooLarge { .. } => h3::EXCESSIVE_LOAD,
            WtError::DuplicateControl(_) | WtError::ServerRequestStream(_) => {
                h3::STREAM_CREATION_ERROR
            }
            WtError::BadTarget(_) => h3::REQUEST_REJECTED,
            WtError::ControlClosed => h3::CLOSED_CRITICAL_STREAM,
        }
    }
}
