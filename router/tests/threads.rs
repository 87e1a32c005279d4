//! Real threads, one per shard, running the loop protocol the daemon will run.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use router::{Config, Doorbell, Router};

const FRAMES: u64 = 100_000;
const GROUP: u64 = 30;
const GROUPS: u64 = FRAMES.div_ceil(GROUP);
/// Frames the publisher lets the remote subscriber lag by; this is test pacing so that
/// the lossless assertion is meaningful, not a router feature (the router never blocks).
const MAX_LAG: u64 = 2_000;
/// Upper bound on the whole test so that a bug fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(120);

fn frames_in(g: u64) -> u64 {
    if g + 1 == GROUPS {
        FRAMES - g * GROUP
    } else {
        GROUP
    }
}

#[test]
fn every_subscriber_on_both_shards_gets_every_frame_in_order() {
    let bells = [
        Arc::new(ThreadDoorbell::default()),
        Arc::new(ThreadDoorbell::default()),
    ];
    let mut shards = Router::build(
        Config::default(),
        bells
            .iter()
            .map(|b| b.clone() as Arc<dyn Doorbell>)
            .collect(),
    )
    .unwrap();
    let mut s1 = shards.pop().unwrap();
    let mut s0 = shards.pop().unwrap();
    let remote_ready = Arc::new(AtomicBool::new(false));
    let remote_frames = Arc::new(AtomicU64::new(0));
    let start = Instant::now();

    let subscriber = {
        let bell = bells[1].clone();
        let ready = remote_ready.clone();
        let frames = remote_frames.clone();
        thread::spawn(move || {
            bell.0.set(thread::current()).ok();
            let mut subs = Vec::new();
            let mut checkers: Vec<Checker> = Vec::new();
            loop {
                assert!(start.elapsed() < DEADLINE, "shard 1 timed out");
                s1.poll(Instant::now());
                if subs.is_empty() && !s1.announced("live").is_empty() {
                    // Two local subscribers: the second is served from the same replica.
                    subs.push(s1.subscribe("live", "video").unwrap());
                    subs.push(s1.subscribe("live", "video").unwrap());
                    checkers = vec![Checker::default(), Checker::default()];
                }
                while let Some(sub) = s1.next_ready() {
                    let i = subs.iter().position(|&s| s == sub).unwrap();
                    while let Some(d) = s1.next_delivery(sub) {
                        checkers[i].check(d, frames_in);
                    }
                }
                if checkers.iter().all(|c| c.ready) && !checkers.is_empty() {
                    ready.store(true, Ordering::Release);
                }
                frames.store(
                    checkers.iter().map(|c| c.frames).min().unwrap_or(0),
                    Ordering::Release,
                );
                if !checkers.is_empty() && checkers.iter().all(|c| c.ended.is_some()) {
                    return (checkers, s1.stats());
                }
                if s1.prepare_park() {
                    thread::park_timeout(PARK_TIMEOUT);
                }
            }
        })
    };

    bells[0].0.set(thread::current()).ok();
    let bc = s0.announce("live").unwrap();
    let track = s0.publish_track(bc, "video", info()).unwrap();
    let local = s0.subscribe("live", "video").unwrap();
    let mut local_check = Checker::default();
    let run = |s0: &mut router::Shard, check: &mut Checker| {
        s0.poll(Instant::now());
        while let Some(d) = s0.next_delivery(local) {
            check.check(d, frames_in);
        }
        s0.flush();
    };
    while !remote_ready.load(Ordering::Acquire) {
        assert!(start.elapsed() < DEADLINE, "remote subscriber never ready");
        run(&mut s0, &mut local_check);
        if s0.prepare_park() {
            thread::park_timeout(PARK_TIMEOUT);
        }
    }
    for f in 0..FRAMES {
        let (g, i) = (f / GROUP, f % GROUP);
        if i == 0 {
            s0.start_group(track, g).unwrap();
        }
        s0.push_frame(track, g, stamp(g, i), payload(g, i)).unwrap();
        if i + 1 == frames_in(g) {
            s0.end_group(track, g).unwrap();
            run(&mut s0, &mut local_check);
        }
        while f.saturating_sub(remote_frames.load(Ordering::Acquire)) > MAX_LAG {
            assert!(start.elapsed() < DEADLINE, "remote subscriber stalled");
            run(&mut s0, &mut local_check);
            thread::yield_now();
        }
    }
    s0.end_track(track).unwrap();
    run(&mut s0, &mut local_check);
    let (remote_checks, s1_stats) = subscriber.join().unwrap();

    for c in remote_checks.iter().chain([&local_check]) {
        assert_eq!(c.frames, FRAMES);
        assert_eq!(c.complete_groups, (0..GROUPS).collect::<Vec<_>>());
        assert_eq!(c.dropped_notices, 0);
        assert_eq!(c.ended, Some(GROUPS));
    }
    let stats = s0.stats();
    assert_eq!(
        stats.frame_pushes, FRAMES,
        "one push per frame for one shard"
    );
    assert_eq!(stats.ring_groups_dropped, 0);
    assert_eq!(s1_stats.subscriber_drops, 0);
}
