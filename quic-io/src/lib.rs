//! QUIC and WebTransport server for moq-relayd: one worker thread per core, each with its own
//! UDP socket (SO_REUSEPORT, CID-steered), quinn-proto endpoint and connections, presenting
//! raw-QUIC and WebTransport sessions through one event/action interface. It knows QUIC, UDP,
//! TLS and WebTransport, and must never know MoQ messages.
//!
//! The daemon builds a [`Config`], calls [`Server::start`] with a factory that makes one
//! [`Application`] per worker (on that worker's thread), and keeps the [`ServerHandle`] for
//! counters, wakers, `reload_tls()` (SIGHUP) and `shutdown()` (SIGTERM). The application sees
//! [`Event`]s and acts through [`Io`]; nothing in that interface depends on whether raw QUIC
//! or WebTransport carried the session.

pub mod app;
pub mod config;
mod io;
mod net;
pub mod server;
pub mod steer;
pub mod tls;
mod worker;
pub mod wt;

pub use app::{
    Application, Event, IoError, SessionId, SessionInfo, SessionIo, StreamId, Transport, VarInt,
};
pub use config::{
    CidLayout, Config, Congestion, IoBackend, LimitsConfig, LoadBalancerError, QuicConfig,
    RuntimeConfig, SocketConfig, TlsSource,
};
pub use io::Io;
/// What a dial (`Io::connect`, `Io::connect_webtransport`) is given: build it with
/// `tls::client_config`.
pub use quinn_proto::ClientConfig;
pub use server::{
    SEGMENT_BUCKETS, SegmentHistogram, Server, ServerHandle, StartError, StatsSnapshot, Waker,
    WorkerCtx, WorkerStats, allowed_cpus, pin_to_cpus,
};
