//! The relay's configuration: moq-relay's `relay.toml` keys, unchanged, plus our own
//! `[runtime]`, `[socket]`, `[quic]` and `[limits]` sections.
//!
//! This module owns the shape of the file, every default, and the rules a value must
//! satisfy. It never opens a socket or starts a thread: loading a file either yields a
//! `Config` that the rest of the daemon can use without re-checking, or a `ConfigError`
//! that names the file, line, column, key and reason.

mod addressing;
pub mod args;
mod load;
mod types;
mod validate;

pub use addressing::{AddressingError, DEFAULT_LB_NONCE, LoadBalancer};
pub use load::{ConfigError, Loaded, Source, load, load_embedded_default, load_with, to_toml};
pub use types::*;
pub use validate::{HostFacts, allowed_cpus};
