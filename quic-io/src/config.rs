//! Plain-Rust configuration of the QUIC server: sockets, workers, QUIC transport, TLS
//! source and limits. The daemon maps its TOML onto these structs; this module must never
//! read files, parse TOML or touch the network — it only holds values and their defaults.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::steer::{CidLayout, LoadBalancerError};

/// Which event loop drives a worker's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoBackend {
    /// io_uring when the kernel allows it, else poll(2). The choice is logged.
    #[default]
    Auto,
    /// io_uring only; start fails when the kernel refuses it.
    Uring,
    /// poll(2) with quinn-udp's GSO/GRO syscalls.
    Poll,
}

/// Congestion controller for every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    #[default]
    Cubic,
    Bbr,
    NewReno,
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM chains and keys, pairwise: `certs[i]` is served with `keys[i]`. The first pair is
    /// the default; extra pairs are kept for the daemon's future SNI selection.
    Files {
        certs: Vec<PathBuf>,
        keys: Vec<PathBuf>,
    },
    /// A self-signed ECDSA P-256 certificate for these host names, valid < 14 days so that
    /// browsers accept it through `serverCertificateHashes`.
    Generate { hostnames: Vec<String> },
}

/// Socket-level settings (`[socket]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    pub io: IoBackend,
    /// SO_RCVBUF request in bytes; the kernel caps it at `net.core.rmem_max`.
    pub recv_buffer: usize,
    /// SO_SNDBUF request in bytes; the kernel caps it at `net.core.wmem_max`.
    pub send_buffer: usize,
    pub gso: bool,
    pub gro: bool,
    /// Upper bound on datagrams per GSO send. This kernel accepts up to 128.
    pub max_gso_segments: usize,
    /// Attach the CID-steering BPF program to the reuseport group. Off only for tests of the
    /// user-space forwarding path, or if a kernel refuses the program.
    pub steer_bpf: bool,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            io: IoBackend::Auto,
            recv_buffer: 4 << 20,
            send_buffer: 4 << 20,
            gso: true,
            gro: true,
            // 64 KiB of 1200-byte datagrams would be 54; 40 gave ~15x packets/s in the
            // measurements of DESIGN.md while keeping one send's burst short.
            max_gso_segments: 40,
            steer_bpf: true,
        }
    }
}

/// Thread layout (`[runtime]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuntimeConfig {
    /// Worker threads, each with its own socket and QUIC endpoint. 0 means one per allowed CPU.
    pub workers: usize,
    /// Pin worker i to the i-th CPU of `cpus` (or of the process's allowed set).
    pub pin: bool,
    /// CPUs to pin to; empty means the process's allowed set.
    pub cpus: Vec<usize>,
}

/// QUIC transport settings (`[quic]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicConfig {
    pub idle_timeout: Duration,
    /// PING interval that keeps idle connections (and NAT bindings) alive; None disables it.
    pub keep_alive: Option<Duration>,
    /// Concurrent bidirectional streams a peer may open.
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional streams a peer may open (WebTransport needs 3 more).
    pub max_uni_streams: u32,
    pub congestion: Congestion,
    /// ALPNs for raw QUIC MoQ sessions, in server preference order.
    pub raw_alpns: Vec<String>,
    /// Also offer `h3` (WebTransport).
    pub webtransport: bool,
    /// WebTransport sub-protocols (`wt-available-protocols`) we accept, in preference order.
    pub wt_protocols: Vec<String>,
    /// How long an accepted connection has to become a session (QUIC handshake, and for
    /// WebTransport the CONNECT); `None` waits as long as the connection lives. The
    /// application gets the same deadline in `SessionInfo::handshake_deadline`.
    pub handshake_timeout: Option<Duration>,
    /// Flow-control windows: the connection's receive window, each stream's, and how much
    /// we keep unacknowledged in flight. `None` keeps quinn-proto's default.
    pub receive_window: Option<u64>,
    pub stream_receive_window: Option<u64>,
    pub send_window: Option<u64>,
    /// The layout of our connection IDs: plain, or QUIC-LB with a server ID.
    pub cid_layout: CidLayout,
    /// QUIC `preferred_address` transport parameters.
    pub preferred_v4: Option<SocketAddrV4>,
    pub preferred_v6: Option<SocketAddrV6>,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(10)),
            // The moq-dev reference allows 1024 of each; a relay needs one stream per group.
            max_bidi_streams: 1024,
            max_uni_streams: 1024,
            congestion: Congestion::Cubic,
            raw_alpns: vec![
                "moq-lite-05".into(),
                "moq-lite-04".into(),
                "moq-lite-03".into(),
            ],
            webtransport: true,
            wt_protocols: vec![
                "moq-lite-05".into(),
                "moq-lite-04".into(),
                "moq-lite-03".into(),
            ],
            handshake_timeout: Some(Duration::from_secs(10)),
            receive_window: None,
            stream_receive_window: None,
            send_window: None,
            cid_layout: CidLayout::default(),
            preferred_v4: None,
            preferred_v6: None,
        }
    }
}

/// Protective limits (`[limits]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Connections one worker serves; further handshakes are refused.
    pub max_connections_per_worker: usize,
    /// New handshakes per second per worker before clients must prove their address with a
    /// Retry round trip; past four times it with a proven address, they are refused.
    pub handshakes_per_sec: u32,
    /// Connections one source address may hold, all workers together; 0: no limit.
    pub max_connections_per_source: usize,
    /// Connections the whole server serves, every worker together; 0: no limit.
    pub max_connections_total: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections_per_worker: 10_000,
            handshakes_per_sec: 1_000,
            max_connections_per_source: 0,
            max_connections_total: 0,
        }
    }
}

/// Everything `Server::start` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub runtime: RuntimeConfig,
    pub socket: SocketConfig,
    pub quic: QuicConfig,
    pub limits: LimitsConfig,
    pub tls: TlsSource,
    /// PEM files of the CAs that client certificates may chain to (mTLS). Empty: no
    /// certificate is asked for. Otherwise one is asked for but optional; a presented
    /// one that does not chain fails the handshake. Re-read with the certificate.
    pub client_ca: Vec<PathBuf>,
}

impl Config {
    /// A config for `listen` with a generated certificate for `localhost` and defaults
    /// elsewhere.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            runtime: RuntimeConfig::default(),
            socket: SocketConfig::default(),
            quic: QuicConfig::default(),
            limits: LimitsConfig::default(),
            tls: TlsSource::Generate {
                hostnames: vec!["localhost".into()],
            },
            client_ca: Vec::new(),
        }
    }

    /// The ALPN list offered in TLS: raw MoQ versions first, then `h3`.
    pub fn alpns(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = self
            .quic
            .raw_alpns
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        if self.quic.webtransport {
            out.push(b"h3".to_vec());
        }
        out
    }
}
