//! Starting and stopping the server: binds one SO_REUSEPORT socket per worker (in worker
//! order, so the BPF index matches), attaches the steering program, spawns and pins the
//! worker threads, and hands back a `ServerHandle` with counters, wakers, TLS reload and
//! shutdown. It runs on the control thread only and must never touch packets.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use quinn_proto::{Endpoint, EndpointConfig};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{info, warn};

use crate::app::Application;
use crate::config::{Config, IoBackend};
use crate::io::Io;
use crate::steer::{self, WorkerCidGenerator};
use crate::tls::{self, TlsError};
use crate::worker::{self, FORWARD_QUEUE, Forwarded, WorkerSetup};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("binding {addr} for worker {worker}: {source}")]
    Bind {
        addr: SocketAddr,
        worker: usize,
        source: io::Error,
    },
    #[error("socket setup: {0}")]
    Socket(io::Error),
    #[error("workers = {0}: must be 1..=256")]
    Workers(usize),
    #[error("io = uring requested, but {0}")]
    Uring(String),
    #[error("spawning worker {worker}: {source}")]
    Spawn { worker: usize, source: io::Error },
    #[error("runtime.cpus: CPU {cpu} is not in this process's allowed set {allowed:?}")]
    CpuNotAllowed { cpu: usize, allowed: Vec<usize> },
    #[error("pinning worker {worker} to CPU {cpu}: {source}")]
    Pin {
        worker: usize,
        cpu: usize,
        source: io::Error,
    },
}

/// Upper bounds of the GSO/GRO batch histograms' buckets, in datagrams per syscall; a
/// batch above the last (GRO can merge more than 64) counts only in `+Inf`.
pub const SEGMENT_BUCKETS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Batches per size bucket (not cumulative: bucket `i` holds sizes in
/// `(SEGMENT_BUCKETS[i-1], SEGMENT_BUCKETS[i]]`); the total is the send or receive count.
#[derive(Debug, Default)]
pub struct SegmentHistogram([AtomicU64; SEGMENT_BUCKETS.len()]);

impl SegmentHistogram {
    pub fn record(&self, segments: u64) {
        if let Some(i) = SEGMENT_BUCKETS.iter().position(|&bound| segments <= bound) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Cumulative counts per bucket bound, as Prometheus `le` buckets read.
    pub fn cumulative(&self) -> [u64; SEGMENT_BUCKETS.len()] {
        let mut total = 0;
        std::array::from_fn(|i| {
            total += self.0[i].load(Ordering::Relaxed);
            total
        })
    }
}

/// Per-worker counters. Written only by the owning worker (relaxed atomics, no lock), read
/// by anyone.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub rx_datagrams: AtomicU64,
    /// UDP payload bytes received.
    pub rx_bytes: AtomicU64,
    /// Receive completions by datagrams each carried (GRO).
    pub rx_segments: SegmentHistogram,
    /// Send calls by datagrams each carried (GSO).
    pub tx_segments: SegmentHistogram,
    /// Receive completions; `rx_datagrams / rx_batches` is the mean GRO batch.
    pub rx_batches: AtomicU64,
    pub rx_max_segments: AtomicU64,
    pub tx_datagrams: AtomicU64,
    /// Send calls; `tx_datagrams / tx_sends` is the mean GSO batch.
    pub tx_sends: AtomicU64,
    pub tx_max_segments: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_errors: AtomicU64,
    /// 1 once the kernel refused a GSO send (EIO/EINVAL) and this worker's socket fell back
    /// to one datagram per send for the rest of its life.
    pub gso_disabled: AtomicU64,
    /// Packets this worker received for another worker's connection (forwarded, not reset).
    pub missteered: AtomicU64,
    /// Packets other workers forwarded to this one.
    pub forwarded_in: AtomicU64,
    /// Mis-steered packets dropped because the owner's queue was full.
    pub forward_dropped: AtomicU64,
    /// Connections currently open.
    pub connections: AtomicU64,
    pub accepted: AtomicU64,
    /// Handshakes refused: at the connection limit, or in a drain that refuses new ones.
    pub refused: AtomicU64,
    /// Handshakes refused because their source address holds its limit of connections.
    pub refused_per_source: AtomicU64,
    /// Handshakes refused above the handshake rate though their address was validated
    /// (Retry first, then refuse).
    pub refused_rate: AtomicU64,
    /// Handshakes answered with Retry above the handshake rate.
    pub retries: AtomicU64,
    /// Connections closed because they did not become a session (QUIC handshake plus a
    /// WebTransport CONNECT) within `QuicConfig::handshake_timeout`.
    pub handshake_timeouts: AtomicU64,
    /// Connections closed for HTTP/3 or WebTransport protocol violations.
    pub protocol_errors: AtomicU64,
    /// Stateless packets (Retry, refusal, version negotiation, reset, handshake-failure
    /// close) left unsent because the socket's send queue was full; the peer retries.
    pub stateless_dropped: AtomicU64,
    /// Stream operations the worker made on its own behalf (HTTP/3 control and CONNECT
    /// streams, the WebTransport close, stopping unwanted peer streams) that quinn-proto
    /// refused, typically because the peer had already closed or stopped the stream.
    pub stream_op_errors: AtomicU64,
}

/// A point-in-time copy of `WorkerStats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub rx_datagrams: u64,
    pub rx_bytes: u64,
    pub rx_batches: u64,
    pub rx_max_segments: u64,
    pub tx_datagrams: u64,
    pub tx_sends: u64,
    pub tx_max_segments: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    pub gso_disabled: u64,
    pub missteered: u64,
    pub forwarded_in: u64,
    pub forward_dropped: u64,
    pub connections: u64,
    pub accepted: u64,
    pub refused: u64,
    pub refused_per_source: u64,
    pub refused_rate: u64,
    pub retries: u64,
    pub handshake_timeouts: u64,
    pub protocol_errors: u64,
    pub stateless_dropped: u64,
    pub stream_op_errors: u64,
}

impl StatsSnapshot {
    /// Mean datagrams per send call (GSO batch).
    pub fn gso_segments_per_send(&self) -> f64 {
        self.tx_datagrams as f64 / self.tx_sends.max(1) as f64
    }
    /// Mean datagrams per receive completion (GRO batch).
    pub fn gro_segments_per_recv(&self) -> f64 {
        self.rx_datagrams as f64 / self.rx_batches.max(1) as f64
    }
}

impl WorkerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            rx_datagrams: l(&self.rx_datagrams),
            rx_bytes: l(&self.rx_bytes),
            rx_batches: l(&self.rx_batches),
            rx_max_segments: l(&self.rx_max_segments),
            tx_datagrams: l(&self.tx_datagrams),
            tx_sends: l(&self.tx_sends),
            tx_max_segments: l(&self.tx_max_segments),
            tx_bytes: l(&self.tx_bytes),
            tx_errors: l(&self.tx_errors),
            gso_disabled: l(&self.gso_disabled),
            missteered: l(&self.missteered),
            forwarded_in: l(&self.forwarded_in),
            forward_dropped: l(&self.forward_dropped),
            connections: l(&self.connections),
            accepted: l(&self.accepted),
            refused: l(&self.refused),
            refused_per_source: l(&self.refused_per_source),
            refused_rate: l(&self.refused_rate),
            retries: l(&self.retries),
            handshake_timeouts: l(&self.handshake_timeouts),
            protocol_errors: l(&self.protocol_errors),
            stateless_dropped: l(&self.stateless_dropped),
            stream_op_errors: l(&self.stream_op_errors),
        }
    }
}

/// Wakes a parked worker from any thread (an eventfd the worker polls on).
#[derive(Debug, Clone)]
pub struct Waker {
    fd: Arc<OwnedFd>,
}

impl Waker {
    fn new() -> io::Result<Self> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Self {
            fd: Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }),
        })
    }

    /// Makes the worker's current or next wait return at once. Cheap; coalesces.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. EAGAIN (counter saturated)
        // means a wake-up is already pending, which is all we want.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
    }

    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                &mut v as *mut u64 as *mut libc::c_void,
                8,
            )
        };
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// What the factory gets on each worker thread.
#[derive(Debug, Clone)]
pub struct WorkerCtx {
    pub index: usize,
    pub workers: usize,
    /// Wakes this worker; hand clones to threads that feed it.
    pub waker: Waker,
}

pub(crate) struct TlsSlot {
    pub server_config: Arc<quinn_proto::ServerConfig>,
    pub fingerprint: String,
}

/// State shared by the control thread and the workers.
pub(crate) struct Shared {
    pub config: Config,
    pub shutdown: AtomicBool,
    /// Set once (a drain that refuses new handshakes); workers read it once per iteration.
    pub refusing_new: AtomicBool,
    /// Bumped on reload; workers compare it once per iteration and only then lock `tls`.
    pub tls_generation: AtomicU64,
    pub tls: Mutex<TlsSlot>,
    /// Live accepted connections, in total and per source address, for every worker.
    pub admission: crate::worker::admission::Admission,
}

struct WorkerHandle {
    thread: Option<JoinHandle<io::Result<()>>>,
    waker: Waker,
    stats: Arc<WorkerStats>,
}

/// The running server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    workers: Vec<WorkerHandle>,
    shared: Arc<Shared>,
    backend: &'static str,
}

/// Entry point.
pub struct Server;

impl Server {
    /// Binds, spawns the workers and returns once every socket is bound and, with
    /// `runtime.pin`, every worker is pinned (worker i to the i-th CPU of `runtime.cpus`, or
    /// of the process's allowed set, wrapping around). A CPU outside the allowed set is
    /// refused up front. `factory` runs once on each worker thread to build that worker's
    /// application.
    pub fn start<A, F>(config: Config, factory: F) -> Result<ServerHandle, StartError>
    where
        A: for<'io> Application<Io<'io>> + 'static,
        F: Fn(WorkerCtx) -> A + Send + Sync + 'static,
    {
        let allowed = allowed_cpus();
        let workers = if config.runtime.workers == 0 {
            allowed.len().max(1)
        } else {
            config.runtime.workers
        };
        if workers > steer::MAX_WORKERS {
            return Err(StartError::Workers(workers));
        }
        let cpus: Vec<usize> = if config.runtime.cpus.is_empty() {
            allowed.clone()
        } else {
            config.runtime.cpus.clone()
        };
        if config.runtime.pin
            && let Some(&cpu) = cpus.iter().find(|c| !allowed.contains(c))
        {
            return Err(StartError::CpuNotAllowed { cpu, allowed });
        }
        let backend = pick_backend(config.socket.io)?;

        let material = tls::load(&config.tls)?;
        let server_config = Arc::new(tls::server_config(&material, &config)?);
        info!(fingerprint = %material.fingerprint, "tls certificate sha256");

        let sockets = bind_all(&config, workers)?;
        let local_addr = sockets[0]
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| StartError::Socket(io::Error::other("no local address")))?;
        if workers > 1 && config.socket.steer_bpf {
            steer::attach_reuseport_cbpf(&sockets[0], &config.quic.cid_layout, workers)
                .map_err(StartError::Socket)?;
        }
        info!(%local_addr, workers, backend, "quic listening");

        let shared = Arc::new(Shared {
            config: config.clone(),
            shutdown: AtomicBool::new(false),
            refusing_new: AtomicBool::new(false),
            admission: crate::worker::admission::Admission::new(
                config.limits.max_connections_total,
                config.limits.max_connections_per_source,
            ),
            tls_generation: AtomicU64::new(0),
            tls: Mutex::new(TlsSlot {
                server_config: server_config.clone(),
                fingerprint: material.fingerprint,
            }),
        });
        let wakers = (0..workers)
            .map(|_| Waker::new())
            .collect::<io::Result<Vec<_>>>()
            .map_err(StartError::Socket)?;
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..workers)
            .map(|_| sync_channel::<Forwarded>(FORWARD_QUEUE))
            .unzip();
        // Each worker reports whether pinning worked before it touches its socket, so a
        // failure is a start error, not a warning in a log nobody reads.
        let (pinned_tx, pinned_rx) = sync_channel::<(usize, usize, io::Error)>(workers);
        let factory = Arc::new(factory);
        let mut handles = Vec::with_capacity(workers);
        for (index, (socket, forward_rx)) in sockets.into_iter().zip(rxs).enumerate() {
            let stats = Arc::new(WorkerStats::default());
            let mut ep_config = EndpointConfig::default();
            let layout = config.quic.cid_layout.clone();
            ep_config.cid_generator(move || {
                Box::new(WorkerCidGenerator::new(index, workers, layout.clone()))
            });
            let endpoint =
                Endpoint::new(Arc::new(ep_config), Some(server_config.clone()), true, None);
            let setup = WorkerSetup {
                index,
                workers,
                socket: socket.into(),
                endpoint,
                shared: shared.clone(),
                stats: stats.clone(),
                waker: wakers[index].clone(),
                forward_rx,
                forward_tx: txs.iter().cloned().zip(wakers.iter().cloned()).collect(),
                uring: backend == "uring",
            };
            let pin = if config.runtime.pin && !cpus.is_empty() {
                Some(cpus[index % cpus.len()])
            } else {
                None
            };
            let factory = factory.clone();
            let pinned_tx = pinned_tx.clone();
            let ctx = WorkerCtx {
                index,
                workers,
                waker: wakers[index].clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("quic-worker-{index}"))
                .spawn(move || {
                    if let Some(cpu) = pin
                        && let Err(e) = pin_to(cpu)
                    {
                        warn!(worker = index, cpu, error = %e, "pinning failed");
                        // `start` holds the receiver until every worker is past pinning, so
                        // this only fails if `start` has already given up; nothing to tell.
                        let _ = pinned_tx.send((index, cpu, e));
                        return Ok(());
                    }
                    drop(pinned_tx);
                    let app = factory(ctx);
                    let r = worker::run(setup, app);
                    if let Err(e) = &r {
                        warn!(worker = index, error = %e, "worker failed");
                    }
                    r
                })
                .map_err(|source| StartError::Spawn {
                    worker: index,
                    source,
                })?;
            handles.push(WorkerHandle {
                thread: Some(thread),
                waker: wakers[index].clone(),
                stats,
            });
        }
        drop(pinned_tx);
        let mut server = ServerHandle {
            local_addr,
            workers: handles,
            shared,
            backend,
        };
        // Every worker has either dropped its sender (pinned or not asked to) or sent an
        // error, so this returns once all of them are past pinning.
        if let Ok((worker, cpu, source)) = pinned_rx.recv() {
            server.stop();
            return Err(StartError::Pin {
                worker,
                cpu,
                source,
            });
        }
        if config.runtime.pin && !cpus.is_empty() {
            info!(cpus = ?(0..workers).map(|i| cpus[i % cpus.len()]).collect::<Vec<_>>(), "workers pinned");
        }
        Ok(server)
    }
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `"poll"` or `"uring"`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// True while every worker thread is still running its loop (for the watchdog).
    pub fn workers_alive(&self) -> bool {
        self.workers
            .iter()
            .all(|w| w.thread.as_ref().is_some_and(|t| !t.is_finished()))
    }

    /// Counters of every worker, by index.
    pub fn stats(&self) -> Vec<StatsSnapshot> {
        self.workers.iter().map(|w| w.stats.snapshot()).collect()
    }

    /// Every worker's live counters, by index, for a reader on another thread (the
    /// control thread's metrics) that outlives no worker's writes: the workers only store.
    pub fn worker_stats(&self) -> Vec<Arc<WorkerStats>> {
        self.workers.iter().map(|w| w.stats.clone()).collect()
    }

    /// Wakers of every worker, by index.
    pub fn wakers(&self) -> Vec<Waker> {
        self.workers.iter().map(|w| w.waker.clone()).collect()
    }

    /// Lowercase hex SHA-256 of the leaf certificate being served.
    pub fn fingerprint(&self) -> String {
        self.shared
            .tls
            .lock()
            .map(|s| s.fingerprint.clone())
            .unwrap_or_default()
    }

    /// Re-reads (or regenerates) the certificate; new connections use it, existing ones keep
    /// theirs. Returns the new fingerprint. On error the old certificate stays.
    pub fn reload_tls(&self) -> Result<String, TlsError> {
        let material = tls::load(&self.shared.config.tls)?;
        let sc = Arc::new(tls::server_config(&material, &self.shared.config)?);
        {
            let mut slot = self.shared.tls.lock().map_err(|_| TlsError::Empty)?;
            slot.server_config = sc;
            slot.fingerprint = material.fingerprint.clone();
        }
        self.shared.tls_generation.fetch_add(1, Ordering::AcqRel);
        for w in &self.workers {
            w.waker.wake();
        }
        info!(fingerprint = %material.fingerprint, "tls reloaded");
        Ok(material.fingerprint)
    }

    /// From now on every worker refuses new handshakes (CONNECTION_REFUSED, counted as
    /// `refused`) and keeps serving the connections it has. There is no way back: it is
    /// for a drain that must not take new sessions.
    pub fn refuse_new_connections(&self) {
        self.shared.refusing_new.store(true, Ordering::Release);
        for w in &self.workers {
            w.waker.wake();
        }
    }

    /// Closes every connection (bounded grace) and joins the workers.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        for w in &self.workers {
            w.waker.wake();
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                // The worker logged its own error; a panic was printed by its thread.
                let _ = t.join();
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pick_backend(io: IoBackend) -> Result<&'static str, StartError> {
    match io {
        IoBackend::Poll => Ok("poll"),
        IoBackend::Auto => {
            let uring = crate::net::uring_available();
            let picked = if uring { "uring" } else { "poll" };
            info!(backend = picked, "io = auto");
            Ok(picked)
        }
        IoBackend::Uring if crate::net::uring_available() => Ok("uring"),
        IoBackend::Uring => Err(StartError::Uring(
            "io_uring_setup failed (seccomp or kernel.io_uring_disabled?)".into(),
        )),
    }
}

fn bind_all(config: &Config, workers: usize) -> Result<Vec<Socket>, StartError> {
    let mut out = Vec::with_capacity(workers);
    let mut addr = config.listen;
    for worker in 0..workers {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(StartError::Socket)?;
        let bind_err = |source| StartError::Bind {
            addr,
            worker,
            source,
        };
        s.set_reuse_port(true).map_err(bind_err)?;
        s.set_nonblocking(true).map_err(bind_err)?;
        // Buffer sizes are requests; the kernel caps them silently.
        if let Err(e) = s.set_recv_buffer_size(config.socket.recv_buffer) {
            warn!(worker, error = %e, "SO_RCVBUF not set");
        }
        if let Err(e) = s.set_send_buffer_size(config.socket.send_buffer) {
            warn!(worker, error = %e, "SO_SNDBUF not set");
        }
        s.bind(&addr.into()).map_err(bind_err)?;
        if worker == 0 {
            addr = s
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or_else(|| StartError::Socket(io::Error::other("no local address")))?;
        }
        out.push(s);
    }
    Ok(out)
}

/// CPUs this process may run on, from sched_getaffinity (not the calling thread's mask as
/// seen by helper crates, which may already be narrowed).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn pin_to(cpu: usize) -> io::Result<()> {
    pin_to_cpus(&[cpu])
}

/// Restricts the calling thread to `cpus` (each below `CPU_SETSIZE`).
pub fn pin_to_cpus(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() || cpus.iter().any(|&c| c >= libc::CPU_SETSIZE as usize) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: cpu_set_t is plain data; we set in-range bits and apply it to the calling
    // thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
