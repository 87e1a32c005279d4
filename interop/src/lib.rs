//! A real-client harness for moq-relayd: a thin, bounded wrapper over the published
//! reference client crates (`moq-net` 0.3 and `moq-tokio` 0.19, from moq-dev), so that
//! integration tests and benchmarks talk to our relay through an independent
//! implementation. It owns dialing ([`connect`]), publishing ([`BroadcastPublisher`],
//! [`TrackPublisher`], [`GroupPublisher`]), discovery ([`Announcements`]) and
//! subscribing ([`TrackSubscriber`]), plus an in-process reference relay built from the
//! same crates ([`reference_relay`]) to compare against. Every wait in this crate has a
//! timeout; nothing here is ever linked into the relay itself, and it must never
//! re-implement what the reference client does: that independence is its whole value.
//!
//! Transport and version choice in moq-tokio 0.19 (see the crate README of this
//! workspace member and `moq-tokio-0.19.31/src/noq.rs:399-441`):
//! * `https://host:port/path?jwt=…` dials WebTransport: QUIC ALPN `h3` only, the moq
//!   version list goes in the CONNECT `wt-available-protocols` header, the path and
//!   query are the CONNECT `:path`.
//! * `moql://host:port/path?jwt=…` (or `moqt://`) dials raw QUIC: the TLS ALPN list is
//!   the moq version list, and the path plus query travel in the SETUP `Path` parameter
//!   (lite-05 and later; 03/04 carry no path).
//! * [`ConnectOptions::versions`] restricts the offered list (e.g. `["moq-lite-05"]`);
//!   empty means the client default, newest first: `moq-lite-06, moq-lite-05,
//!   moq-lite-04, moq-lite-03, moql, moqt-22 … moqt-15, moq-00`.

pub mod cut_proxy;
mod error;
pub mod impair_proxy;
mod publish;
pub mod reference_relay;
pub mod rogue;
mod session;
mod subscribe;

pub use error::Error;
pub use publish::{BroadcastPublisher, GroupPublisher, TrackPublisher};
pub use session::{ConnectOptions, Dialer, Session, TlsTrust, Transport, connect, connect_with};
pub use subscribe::{
    AnnounceEvent, Announcements, Received, ReceivedGroup, SubscribeOptions, TrackEnd, TrackEvent,
    TrackSubscriber,
};

/// The reference crates, for a test that needs something this wrapper does not expose.
pub use moq_net;
pub use moq_tokio;

/// Payloads move as `Bytes`, the type the reference client stores frames in.
pub use bytes::Bytes;

/// The moq-lite versions moq-relayd spoke before it had 06, newest first, as the client
/// spells them: the reference relay restricted to these behaves like a relay without 06
/// (the downgrade cases of spec 12.1). moq-relayd itself now offers `moq-lite-06` first.
pub const RELAY_VERSIONS: [&str; 3] = ["moq-lite-05", "moq-lite-04", "moq-lite-03"];
