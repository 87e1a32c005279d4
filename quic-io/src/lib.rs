//! QUIC and WebTransport server for moq-relayd: one worker thread per core, each with its own
//! UDP socket (SO_REUSEPORT, CID-steered), quinn-proto endpoint and connections, presenting
//! raw-QUIC and WebTransport sessions through one event/action interface. It knows QUIC, UDP,
//! TLS and WebTransport, and must never know MoQ messages.

pub mod config;
pub mod steer;
pub mod tls;
pub mod wt;

pub use config::{
    Config, Congestion, IoBackend, LimitsConfig, QuicConfig, RuntimeConfig, SocketConfig, TlsSource,
};
pub mod app;
mod net;
pub mod server;
mod worker;

pub use app::{Application, Event, IoError, SessionId, SessionInfo, StreamId, Transport};
pub use server::{
    Server, ServerHandle, StartError, StatsSnapshot, Waker, WorkerCtx, WorkerStats, allowed_cpus,
};
pub use worker::Io;
