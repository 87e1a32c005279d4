//! A loopback UDP forwarder that impairs what it forwards: each datagram is dropped
//! with probability `loss`, and delayed by `delay` plus up to `jitter` more, so datagrams
//! a jitter apart overtake each other (reordering); toward the client it can also be
//! held to a `rate`, behind a FIFO of `queue_bytes` that drops what does not fit (as a
//! `tbf` qdisc does). This kernel has no `netem` qdisc; this is the tests' own. The draws come from a seeded generator, one pair per
//! datagram in the order the proxy reads them, so a seed gives the same decisions for
//! the same traffic. It never alters a datagram's bytes.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// Distinct client addresses the proxy forwards for.
pub const MAX_FLOWS: usize = 256;
/// Datagrams held back at once (delayed, not yet sent); past it a datagram is dropped,
/// as a full queue drops it.
pub const MAX_HELD: usize = 1 << 16;
const MAX_DATAGRAM: usize = 65_535;

/// How the forwarded traffic is impaired, in both directions.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// Probability in [0, 1) that a datagram is dropped.
    pub loss: f64,
    pub delay: Duration,
    /// Extra delay, uniform in [0, jitter): datagrams closer than this may reorder.
    pub jitter: Duration,
    pub seed: u64,
    /// Bits per second toward the client, behind a FIFO of `queue_bytes`; `None`: no cap.
    pub rate: Option<u64>,
    pub queue_bytes: usize,
}

impl Impairment {
    /// No loss, delay or cap: a plain forwarder to change from.
    pub fn none() -> Self {
        Self {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            seed: 1,
            rate: None,
            queue_bytes: 0,
        }
    }
}

/// What the proxy did, for the test to report.
#[derive(Debug, Default)]
pub struct ImpairStats {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
}

/// A running forwarder. Dropping it stops forwarding.
pub struct ImpairProxy {
    local_addr: SocketAddr,
    stats: Arc<ImpairStats>,
    task: tokio::task::JoinHandle<()>,
}

/// The seeded draws: xorshift64*, one state for the whole proxy.
struct Draws(Mutex<u64>);

impl Draws {
    fn next(&self) -> f64 {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let value = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (value >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What every forwarding task shares.
struct Shared {
    impairment: Impairment,
    draws: Draws,
    held: AtomicUsize,
    stats: Arc<ImpairStats>,
    /// When the capped direction's link is free again: the FIFO's tail.
    link_free: Mutex<tokio::time::Instant>,
}

impl Shared {
    /// Sends `datagram` on `socket` (to `to`, or its connected peer) after the
    /// impairment's delay, unless it is lost.
    fn pass(self: &Arc<Self>, socket: Arc<UdpSocket>, to: Option<SocketAddr>, datagram: &[u8]) {
        let (lose, spread) = (self.draws.next(), self.draws.next());
        if lose < self.impairment.loss || self.held.load(Ordering::Relaxed) >= MAX_HELD {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = tokio::time::Instant::now();
        let mut due = now + self.impairment.delay + self.impairment.jitter.mul_f64(spread);
        // Toward the client (`to` is set), a capped link sends one datagram after another.
        if let (Some(rate), Some(_)) = (self.impairment.rate, to) {
            let mut free = self
                .link_free
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let start = (*free).max(now);
            let queued_bytes = start.duration_since(now).as_secs_f64() * rate as f64 / 8.0;
            if queued_bytes + datagram.len() as f64 > self.impairment.queue_bytes as f64 {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            *free = start + Duration::from_secs_f64(datagram.len() as f64 * 8.0 / rate as f64);
            due = due.max(*free);
        }
        let datagram = datagram.to_vec();
        let shared = self.clone();
        self.held.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let _ = match to {
                Some(to) => socket.send_to(&datagram, to).await,
                None => socket.send(&datagram).await,
            };
            shared.held.fetch_sub(1, Ordering::Relaxed);
            shared.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        });
    }
}

impl ImpairProxy {
    /// Forwards datagrams sent to [`ImpairProxy::local_addr`] (on 127.0.0.1) to
    /// `upstream`, and the answers back, impaired both ways.
    pub async fn start(upstream: SocketAddr, impairment: Impairment) -> io::Result<Self> {
        let front = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?);
        let local_addr = front.local_addr()?;
        let stats = Arc::new(ImpairStats::default());
        let shared = Arc::new(Shared {
            impairment,
            // xorshift never leaves 0: any seed maps to a non-zero state.
            draws: Draws(Mutex::new(impairment.seed | 1)),
            held: AtomicUsize::new(0),
            stats: stats.clone(),
            link_free: Mutex::new(tokio::time::Instant::now()),
        });
        let task = tokio::spawn(forward(front, upstream, shared));
        Ok(Self {
            local_addr,
            stats,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> &ImpairStats {
        &self.stats
    }
}

impl Drop for ImpairProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(front: Arc<UdpSocket>, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut returns = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((len, client)) = front.recv_from(&mut buf).await else {
            return;
        };
        let back = match flows.get(&client) {
            Some(back) => back.clone(),
            None => {
                if flows.len() >= MAX_FLOWS {
                    continue;
                }
                let Ok(back) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await else {
                    continue;
                };
                if back.connect(upstream).await.is_err() {
                    continue;
                }
                let back = Arc::new(back);
                flows.insert(client, back.clone());
                returns.spawn(back_to_front(
                    back.clone(),
                    front.clone(),
                    client,
                    shared.clone(),
                ));
                back
            }
        };
        shared.pass(back, None, &buf[..len]);
    }
}

async fn back_to_front(
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while let Ok(len) = back.recv(&mut buf).await {
        shared.pass(front.clone(), Some(client), &buf[..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_draws_and_they_are_spread_over_zero_to_one() {
        let draws = |seed: u64| {
            let d = Draws(Mutex::new(seed | 1));
            (0..1000).map(|_| d.next()).collect::<Vec<f64>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let values = draws(7);
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let below = values.iter().filter(|&&v| v < 0.02).count();
        assert!((5..=40).contains(&below), "2 % of 1000 draws: {below}");
    }
}
