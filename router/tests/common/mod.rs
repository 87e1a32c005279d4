//! Helpers shared by the router integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use router::{
    BroadcastId, Config, Delivery, Doorbell, Router, Shard, SubscriberId, TrackId, TrackProperties,
};

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
    let bells: Vec<Arc<CountingDoorbell>> = (0..n)
        .map(|_| Arc::new(CountingDoorbell::default()))
        .collect();
    let dyn_bells = bells
        .iter()
        .map(|b| b.clone() as Arc<dyn Doorbell>)
        .collect();
    (Router::build(config, dyn_bells).unwrap(), bells)
}

/// `n` shards with broadcast `path` announced on shard 0 and its track `track` live,
/// known to every shard.
pub fn published(
    n: usize,
    config: Config,
    path: &str,
    track: &str,
    now: Instant,
) -> (Vec<Shard>, BroadcastId, TrackId) {
    let (mut s, _) = shards(n, config);
    let bc = s[0].announce(path).unwrap();
    let t = s[0].publish_track(bc, track, info()).unwrap();
    settle(&mut s, now);
    (s, bc, t)
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

/// Every delivery waiting for `sub`, with frame arrivals blanked so that tests compare
/// content (`arrivals` checks the ticks themselves).
pub fn drain(shard: &mut Shard, sub: SubscriberId) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(d) = shard.next_delivery(sub) {
        out.push(match d {
            Delivery::Frame {
                group,
                timestamp,
                payload,
                ..
            } => Delivery::Frame {
                group,
                timestamp,
                payload,
                arrived: router::ArrivalTick::UNKNOWN,
            },
            d => d,
        });
    }
    out
}

pub fn info() -> TrackProperties {
    TrackProperties {
        priority: 3,
        ..TrackProperties::default()
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

/// Timestamp of frame `i` of group `g`: distinct per frame and not monotonic inside a
/// group (like B-frames), so that a timestamp lost or taken from another frame shows.
pub fn stamp(g: u64, i: u64) -> u64 {
    g * 1_000_000 + (i ^ 1) * 33
}

/// Parks for at most this long when the router says so; a lost wake-up would show as a
/// slow test rather than a hang.
pub const PARK_TIMEOUT: Duration = Duration::from_millis(50);

/// Checks one subscriber's delivery stream against the publisher's content: groups
/// start at most once, frames arrive in order and byte-identical, a finished group has
/// all its frames, and dropped groups are announced before anything else of them.
#[derive(Default)]
pub struct Checker {
    pub ready: bool,
    pub frames: u64,
    pub complete_groups: Vec<u64>,
    pub dropped_notices: u64,
    pub ended: Option<u64>,
    open: std::collections::BTreeMap<u64, u64>,
}

impl Checker {
    /// `frames_in(g)`: how many frames group `g` has when complete.
    pub fn check(&mut self, d: Delivery, frames_in: impl Fn(u64) -> u64) {
        match d {
            Delivery::Ready(_) => {
                assert!(!self.ready, "Ready twice");
                self.ready = true;
            }
            Delivery::NotFound => panic!("unexpected NotFound"),
            Delivery::GroupStart { group } => {
                assert!(self.ready, "group before Ready");
                assert!(self.ended.is_none(), "group after end");
                assert!(
                    self.complete_groups.last().is_none_or(|&g| g < group),
                    "group {group} started after a newer one completed"
                );
                assert!(self.open.insert(group, 0).is_none(), "group {group} twice");
            }
            Delivery::Frame {
                group,
                timestamp,
                payload: p,
                ..
            } => {
                let next = self
                    .open
                    .get_mut(&group)
                    .expect("frame of a group not open");
                assert_eq!(p, payload(group, *next), "group {group} frame {next}");
                assert_eq!(
                    timestamp,
                    stamp(group, *next),
                    "timestamp of group {group} frame {next}"
                );
                *next += 1;
                self.frames += 1;
            }
            Delivery::GroupEnd { group } => {
                let n = self.open.remove(&group).expect("end of a group not open");
                assert_eq!(n, frames_in(group), "group {group} incomplete");
                self.complete_groups.push(group);
            }
            Delivery::GroupsDropped { below } => {
                self.dropped_notices += 1;
                self.open.retain(|&g, _| g >= below);
            }
            Delivery::TrackEnded { end } => self.ended = Some(end),
        }
    }
}
