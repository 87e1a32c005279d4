//! The moq-lite wire codec (versions 03, 04, 05, 06) and the sans-IO session state machine.
//!
//! This crate owns every byte of the MoQ layer: message layouts, bounds on decoded input,
//! path rules, error-code numbering and the per-stream transaction state of a session. It
//! must never touch a socket, a QUIC library or a clock: the transport hands it stream
//! events and `now`, and carries out the actions it returns. Frame payloads move as
//! [`bytes::Bytes`] and are never copied on the send path.
//!
//! Driving a session (the transport's loop, in outline):
//!
//! ```
//! use bytes::Bytes;
//! use proto::session::{Action, Session, SessionEvent, StreamId};
//! use proto::Version;
//!
//! let mut relay = Session::relay(Version::Lite05, 9);
//! relay.announce("room/alice", &[]).unwrap();
//! // A viewer opened bidi stream 0 and sent ANNOUNCE_REQUEST "room", exclude hop 42.
//! relay.on_stream_opened(StreamId(0), true);
//! relay.on_stream_data(StreamId(0), Bytes::from_static(&[0x01, 0x06, 0x04, b'r', b'o', b'o', b'm', 0x2a]));
//! while let Some(action) = relay.poll_action() {
//!     match action {
//!         // Open a QUIC stream, then report its ID with `on_stream_bound`.
//!         Action::OpenUni { token, .. } => relay.on_stream_bound(token, StreamId(3)),
//!         // ANNOUNCE_OK + ANNOUNCE "alice" go out on stream 0.
//!         Action::Write { stream, data } => assert!(stream == StreamId(0) || stream == StreamId(3)),
//!         // Reset codes go on the wire as `proto::stream_code_to_wire(code, version)`.
//!         _ => {}
//!     }
//! }
//! assert!(matches!(relay.poll_event(), Some(SessionEvent::AnnounceInterest { .. })));
//! ```

pub mod code;
pub mod coding;
pub mod message;
pub mod path;
pub mod reader;
pub mod session;
mod version;

pub use code::{ErrorCode, from_h3_code, stream_code_from_wire, stream_code_to_wire, to_h3_code};
pub use coding::{DecodeError, EncodeError};
pub use message::*;
pub use version::Version;
