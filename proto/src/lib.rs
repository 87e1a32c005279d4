//! The moq-lite wire codec (versions 03, 04, 05) and the sans-IO session state machine.
//!
//! This crate owns every byte of the MoQ layer: message layouts, bounds on decoded input,
//! path rules, error-code numbering and the per-stream transaction state of a session. It
//! must never touch a socket, a QUIC library or a clock: the transport hands it stream
//! events and `now`, and carries out the actions it returns. Frame payloads move as
//! [`bytes::Bytes`] and are never copied on the send path.

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
