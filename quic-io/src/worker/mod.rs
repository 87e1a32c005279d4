//! One worker's event loop: per iteration it reads the clock once, picks up a TLS reload,
//! receives its socket's datagrams (forwarding mis-steered ones to their owner and taking in
//! those forwarded to it), fires timers, drives dirty connections and the application in a
//! few passes, flushes, and waits in `Net::wait` — io_uring (sends submitted in the same
//! `io_uring_enter` as the wait) or, where io_uring is unavailable, poll(2) with quinn-udp
//! syscalls. The connections themselves live in `conns`. Everything here is the worker's own;
//! the only things shared with other threads are atomic counters, the TLS reload slot
//! (checked once per iteration) and bounded channels of mis-steered packets. It must never
//! block except in that one wait, and never lock on the per-packet path.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::{EcnCodepoint, Endpoint};
use tracing::{debug, info};

use crate::app::{Application, SessionId};
use crate::io::Io;
use crate::net::{Net, RxDatagram};
use crate::server::{Shared, WorkerStats};

pub(crate) mod admission;
mod conns;

pub(crate) use conns::{CLOSE_GRACE, Core, Mode, WorkerConn, app_code, wire_code};

/// Longest sleep without a deadline: a safety net so a lost wake-up costs at most this.
const MAX_PARK: Duration = Duration::from_secs(1);
/// Mis-steered packets queued per worker pair; beyond this they are dropped (and counted) —
/// QUIC retransmits, and a flood must not grow memory.
pub(crate) const FORWARD_QUEUE: usize = 1024;
/// Passes over newly dirty connections per iteration; further work waits for the next turn.
const DRIVE_PASSES: usize = 4;
/// Shortest sleep, as in poll(2) and tokio: waking for a pacing timer tens of microseconds
/// away sends one datagram per wake-up where a millisecond's worth would leave as one GSO
/// batch (measured with egress_bench at a paced 100 Mbit/s: twice the CPU per byte on
/// io_uring, whose timeout is exact, against poll's millisecond rounding).
const MIN_SLEEP: Duration = Duration::from_millis(1);
/// How long shutdown waits for connections to say goodbye before the worker exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// A datagram another worker received for one of our connections.
pub(crate) struct Forwarded {
    pub data: BytesMut,
    pub remote: SocketAddr,
    pub local_ip: Option<IpAddr>,
    pub ecn: Option<EcnCodepoint>,
}

/// Everything a worker thread runs with.
pub(crate) struct WorkerSetup {
    pub index: usize,
    pub workers: usize,
    pub socket: std::net::UdpSocket,
    pub endpoint: Endpoint,
    pub shared: Arc<Shared>,
    pub stats: Arc<WorkerStats>,
    pub waker: crate::server::Waker,
    pub forward_rx: Receiver<Forwarded>,
    pub forward_tx: Vec<(SyncSender<Forwarded>, crate::server::Waker)>,
    pub uring: bool,
}

pub(crate) fn run<A>(setup: WorkerSetup, mut app: A) -> io::Result<()>
where
    A: for<'io> Application<Io<'io>>,
{
    let WorkerSetup {
        index,
        workers,
        socket,
        endpoint,
        shared,
        stats,
        waker,
        forward_rx,
        forward_tx,
        uring,
    } = setup;
    let cfg = &shared.config;
    let local_addr = socket.local_addr().ok();
    let net = Net::new(
        socket,
        uring,
        cfg.socket.max_gso_segments,
        cfg.socket.gso,
        cfg.socket.gro,
        stats.clone(),
        &waker,
    )?;
    let now = Instant::now();
    let mut tls_gen = shared.tls_generation.load(Ordering::Acquire);
    let max_segments = net.max_segments();
    let mut core = Core::new(
        index,
        endpoint,
        net,
        stats.clone(),
        shared.clone(),
        local_addr,
        now,
    );
    let mut rx: Vec<RxDatagram> = Vec::new();
    // The dirty list of one drive pass, kept across iterations so a pass allocates nothing.
    let mut pass: Vec<SessionId> = Vec::new();
    let mut shutdown_deadline: Option<Instant> = None;
    debug!(worker = index, max_segments, uring, "worker running");

    loop {
        let now = Instant::now();
        if shared.shutdown.load(Ordering::Acquire) && shutdown_deadline.is_none() {
            shutdown_deadline = Some(now + SHUTDOWN_GRACE);
            core.close_all(now);
        }
        if let Some(d) = shutdown_deadline
            && (core.conns.is_empty() || now >= d)
        {
            break;
        }
        core.refusing_new = shared.refusing_new.load(Ordering::Acquire);
        let g = shared.tls_generation.load(Ordering::Acquire);
        if g != tls_gen {
            tls_gen = g;
            if let Ok(slot) = shared.tls.lock() {
                core.endpoint
                    .set_server_config(Some(slot.server_config.clone()));
            }
        }

        // Receive: our own datagrams, then what other workers forwarded.
        rx.clear();
        let recv_more = core.net.recv(&mut rx);
        for d in rx.drain(..) {
            if workers > 1
                && let Some(owner) =
                    crate::steer::packet_owner(&d.data, &cfg.quic.cid_layout, workers)
                && owner != index
            {
                stats.missteered.fetch_add(1, Ordering::Relaxed);
                let (tx, w) = &forward_tx[owner];
                let fwd = Forwarded {
                    data: d.data,
                    remote: d.remote,
                    local_ip: d.local_ip,
                    ecn: d.ecn,
                };
                match tx.try_send(fwd) {
                    Ok(()) => w.wake(),
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                        stats.forward_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                continue;
            }
            core.handle_datagram(now, d.remote, d.local_ip, d.ecn, d.data);
        }
        for _ in 0..FORWARD_QUEUE {
            let Ok(f) = forward_rx.try_recv() else { break };
            stats.forwarded_in.fetch_add(1, Ordering::Relaxed);
            core.handle_datagram(now, f.remote, f.local_ip, f.ecn, f.data);
        }
        core.fire_timers(now);

        // Drive connections and the application.
        for _ in 0..DRIVE_PASSES {
            pass.clear();
            pass.extend_from_slice(&core.dirty);
            for &sid in &pass {
                core.drive(sid, now);
            }
            if core.events.is_empty() {
                break;
            }
            while let Some(ev) = core.events.pop_front() {
                app.on_event(now, ev, &mut Io::new(&mut core, now));
            }
        }
        app.poll(now, &mut Io::new(&mut core, now));
        core.net.unblock();
        core.debug_check_dirty();
        // Swap rather than take: both vectors keep their capacity across iterations.
        pass.clear();
        std::mem::swap(&mut pass, &mut core.dirty);
        for sid in &pass {
            if let Some(c) = core.conns.get_mut(sid) {
                c.dirty = false;
            }
        }
        for &sid in &pass {
            core.drive(sid, now);
            core.flush(sid, now);
        }

        // Wait (and, on io_uring, submit the queued sends in the same call).
        let busy =
            recv_more || !core.events.is_empty() || (!core.dirty.is_empty() && !core.net.blocked());
        let deadline = [core.next_timer(), app.timeout(), shutdown_deadline]
            .into_iter()
            .flatten()
            .min();
        let timeout = if busy {
            Duration::ZERO
        } else {
            match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
                // Already due: look again at once.
                Some(d) if d.is_zero() => d,
                Some(d) => d.clamp(MIN_SLEEP, MAX_PARK),
                None => MAX_PARK,
            }
        };
        core.net.wait(timeout, &waker);
    }
    info!(worker = index, "worker stopped");
    Ok(())
}
