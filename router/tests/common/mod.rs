//! Helpers shared by the router integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use router::{Config, Delivery, Doorbell, Router, Shard, SubscriberId, TrackInfo};

/// Counts rings; for single-threaded tests that step shards by hand.
#[derive(Default)]
pub struct CountingDoorbell(pub AtomicUsize);

impl Doorbell for CountingDoorbell {
    fn ring(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl CountingDoorbell {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Unparks the shard's thread, once it is registered.
#[derive(Default)]
pub struct ThreadDoorbell(pub OnceLock<Thread>);

impl Doorbell for ThreadDoorbell {
    fn ring(&self) {
        if let Some(t) = self.0.get() {
            t.unpark();
        }
    }
}

pub fn shards(n: usize, config: Config) -> (Vec<Shard>, Vec<Arc<CountingDoorbell>>) {
    let bells: Vec<Arc<CountingDoorbell>> =
        (0..n).map(|_| Arc::new(CountingDoorbell::default())).collect();
    let dyn_bells = bells
        .iter()
        .map(|b| b.clone() as Arc<dyn Doorbell>)
        .collect();
    (Router::build(config, dyn_bells).unwrap(), bells)
}

/// One loop iteration on every shard, in order, a few times so that replies to replies
/// are delivered.
pub fn settle(shards: &mut [Shard], now: Instant) {
    for _ in 0..4 {
        for s in shards.iter_mut() {
            s.poll(now);
            s.flush();
        }
    }
}

pub fn drain(shard: &mut Shard, sub: SubscriberId) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(d) = shard.next_delivery(sub) {
        out.push(d);
    }
    out
}

pub fn info() -> TrackInfo {
    TrackInfo {
        priority: 3,
        ..TrackInfo::default()
    }
}

/// Payload of frame `i` of group `g`: distinct content and varying length so that a
/// reordering, a loss or a mix-up between groups shows.
pub fn payload(g: u64, i: u64) -> Bytes {
    let len = 8 + ((g * 31 + i * 7) % 120) as usize;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&g.to_le_bytes()[..4]);
    v.extend_from_slice(&(i as u32).to_le_bytes());
    while v.len() < len {
        v.push((g as u8).wrapping_mul(13) ^ (i as u8).wrapping_add(v.len() as u8));
    }
    Bytes::from(v)
}

/// Parks for at most this long when the router says so; a lost wake-up would show as a
/// slow test rather than a hang.
pub const PARK_TIMEOUT: Duration = Duration::from_millis(50);
