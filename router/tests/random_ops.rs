//! Random sequences of publisher, subscriber and loop operations on three shards: the
//! router must never panic whatever order sessions (driven by the network) call it in,
//! and its memory bounds must hold at every step.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use router::{BroadcastId, Config, SubscriberId, TrackId};

/// Operations per seed and seeds: enough to hit reconnects, splices and drops, small
/// enough for a debug-build test.
const STEPS: usize = 4_000;
const SEEDS: u64 = 12;
const SUB_BOUND: usize = 16 << 10;
const CACHE_BOUND: usize = 8 << 10;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, no dependency.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_operation_sequences_never_panic_and_keep_bounds() {
    for seed in 1..=SEEDS {
        run(seed);
    }
}

fn run(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let config = Config {
        ring_capacity: 32,
        subscriber_max_bytes: SUB_BOUND,
        cache_max_bytes: CACHE_BOUND,
        cache_max_groups: 3,
        linger: Duration::from_millis(100),
        max_subscribers: 64,
        max_tracks: 64,
        ..Config::default()
    };
    let (mut s, _) = shards(3, config);
    let paths = ["a", "a/b", "c"];
    let names = ["v", "w"];
    let mut now = Instant::now();
    let mut bcs: Vec<(usize, BroadcastId)> = Vec::new();
    let mut tracks: Vec<(usize, TrackId)> = Vec::new();
    let mut subs: Vec<(usize, SubscriberId)> = Vec::new();
    for _ in 0..STEPS {
        let sh = rng.below(3) as usize;
        match rng.below(14) {
            0 => {
                let p = paths[rng.below(3) as usize];
                if let Ok(bc) = s[sh].announce(p) {
                    bcs.push((sh, bc));
                }
            }
            1 if !bcs.is_empty() => {
                let (sh, bc) = bcs[rng.below(bcs.len() as u64) as usize];
                let _ = s[sh].unannounce(bc);
            }
            2 if !bcs.is_empty() => {
                let (sh, bc) = bcs[rng.below(bcs.len() as u64) as usize];
                let _ = s[sh].publisher_lost(now, bc);
            }
            3 if !bcs.is_empty() => {
                let (sh, bc) = bcs[rng.below(bcs.len() as u64) as usize];
                let n = names[rng.below(2) as usize];
                if let Ok(t) = s[sh].publish_track(bc, n, info()) {
                    tracks.push((sh, t));
                }
            }
            4..=7 if !tracks.is_empty() => {
                let (sh, t) = tracks[rng.below(tracks.len() as u64) as usize];
                let g = rng.below(8);
                let _ = match rng.below(5) {
                    0 => s[sh].start_group(t, g),
                    1 => s[sh].end_group(t, g),
                    2 => s[sh].abort_group(t, g),
                    _ => {
                        s[sh].push_frame(t, g, 0, Bytes::from(vec![0u8; rng.below(3000) as usize]))
                    }
                };
            }
            8 if !tracks.is_empty() && rng.below(10) == 0 => {
                let (sh, t) = tracks[rng.below(tracks.len() as u64) as usize];
                let _ = s[sh].end_track(t);
            }
            9 => {
                let p = paths[rng.below(3) as usize];
                let n = names[rng.below(2) as usize];
                if let Ok(sub) = s[sh].subscribe(p, n) {
                    subs.push((sh, sub));
                }
            }
            10 if !subs.is_empty() => {
                let i = rng.below(subs.len() as u64) as usize;
                let (sh, sub) = subs.swap_remove(i);
                let _ = s[sh].unsubscribe(sub);
            }
            11 if !subs.is_empty() => {
                let (sh, sub) = subs[rng.below(subs.len() as u64) as usize];
                drain(&mut s[sh], sub);
            }
            12 => {
                while s[sh].next_publisher_event().is_some() {}
                while s[sh].next_ready().is_some() {}
            }
            _ => {
                now += Duration::from_millis(rng.below(60));
                s[sh].poll(now);
                if rng.below(2) == 0 {
                    s[sh].flush();
                } else {
                    s[sh].prepare_park();
                }
            }
        }
        for shard in &s {
            let subs_here = subs.iter().filter(|(x, _)| *x == shard.id()).count();
            assert!(shard.total_queued_bytes() <= subs_here.max(1) * SUB_BOUND);
            assert!(shard.cached_bytes() <= 64 * CACHE_BOUND);
        }
        for &(sh, sub) in &subs {
            assert!(s[sh].queued_bytes(sub).unwrap_or(0) <= SUB_BOUND);
        }
    }
}
