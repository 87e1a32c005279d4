//! Slow consumers: a stalled subscriber or shard never blocks the publisher nor grows
//! memory, loses whole oldest groups, and gets the newest ones once it resumes.

mod common;

use std::time::Instant;

use bytes::Bytes;
use common::*;
use router::{Config, Delivery};

const BOUND: usize = 64 << 10;
const GROUP: u64 = 30;

fn big(g: u64, i: u64) -> Bytes {
    // Content still identifies (g, i) through the common payload, padded to 512 bytes
    // so the byte bound is reached quickly.
    let mut v = payload(g, i).to_vec();
    v.resize(512, 0xAB);
    Bytes::from(v)
}

#[test]
fn stalled_subscriber_stays_under_its_byte_bound_and_resumes_at_newest_groups() {
    let now = Instant::now();
    let config = Config {
        subscriber_max_bytes: BOUND,
        ..Config::default()
    };
    let (mut s, _) = shards(1, config);
    let bc = s[0].announce("b").unwrap();
    let track = s[0].publish_track(bc, "t", info()).unwrap();
    let fast = s[0].subscribe("b", "t").unwrap();
    let stalled = s[0].subscribe("b", "t").unwrap();
    let mut fast_frames = 0u64;
    let groups = 400u64;
    for g in 0..groups {
        s[0].start_group(track, g).unwrap();
        for i in 0..GROUP {
            // The publisher never waits and never fails.
            s[0].push_frame(track, g, stamp(g, i), big(g, i)).unwrap();
            assert!(s[0].queued_bytes(stalled).unwrap() <= BOUND);
            fast_frames += drain(&mut s[0], fast)
                .iter()
                .filter(|d| matches!(d, Delivery::Frame { .. }))
                .count() as u64;
        }
        s[0].end_group(track, g).unwrap();
        s[0].poll(now);
    }
    assert_eq!(fast_frames, groups * GROUP, "fast subscriber lost nothing");
    assert!(s[0].total_queued_bytes() <= BOUND);
    assert!(s[0].stats().subscriber_drops > 0);

    // Resume: what is left is a run of whole groups ending with the newest.
    let got = drain(&mut s[0], stalled);
    assert_eq!(got[0], Delivery::Ready(info()));
    let mut check = Checker::default();
    for d in got {
        check.check(
            match d {
                Delivery::Frame {
                    group,
                    timestamp,
                    payload,
                    arrived,
                } => Delivery::Frame {
                    group,
                    timestamp,
                    payload: payload.slice(..payload.len().min(big_prefix(group, &payload))),
                    arrived,
                },
                d => d,
            },
            |_| GROUP,
        );
    }
    let kept = check.complete_groups.clone();
    assert!(!kept.is_empty());
    assert_eq!(*kept.last().unwrap(), groups - 1, "newest group delivered");
    assert!(
        kept.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous: {kept:?}"
    );
    assert!(kept[0] > 0, "oldest groups were dropped");
    // Every frame the stalled subscriber did not get was counted stale, with its bytes.
    let stats = s[0].stats();
    let delivered = kept.len() as u64 * GROUP;
    assert_eq!(stats.stale_frames, groups * GROUP - delivered, "{stats:?}");
    assert_eq!(stats.stale_bytes, stats.stale_frames * 512);

    // Live again: the next group arrives whole.
    s[0].start_group(track, groups).unwrap();
    s[0].push_frame(track, groups, stamp(groups, 0), big(groups, 0))
        .unwrap();
    s[0].end_group(track, groups).unwrap();
    let got = drain(&mut s[0], stalled);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], Delivery::GroupStart { group: groups });
}

/// `big` pads `payload(g, i)`; recover the unpadded prefix so `Checker` can compare.
fn big_prefix(group: u64, p: &Bytes) -> usize {
    let i = u32::from_le_bytes([p[4], p[5], p[6], p[7]]) as u64;
    payload(group, i).len()
}

#[test]
fn subscriber_that_opened_a_group_is_told_it_was_dropped() {
    let config = Config {
        subscriber_max_bytes: 8 << 10,
        ..Config::default()
    };
    let (mut s, _) = shards(1, config);
    let bc = s[0].announce("b").unwrap();
    let track = s[0].publish_track(bc, "t", info()).unwrap();
    let sub = s[0].subscribe("b", "t").unwrap();
    s[0].start_group(track, 0).unwrap();
    // The session opened group 0's stream, then stopped reading.
    assert_eq!(
        drain(&mut s[0], sub),
        vec![Delivery::Ready(info()), Delivery::GroupStart { group: 0 }]
    );
    for g in 0..5 {
        if g > 0 {
            s[0].start_group(track, g).unwrap();
        }
        for i in 0..GROUP {
            s[0].push_frame(track, g, stamp(g, i), big(g, i)).unwrap();
        }
        s[0].end_group(track, g).unwrap();
    }
    let got = drain(&mut s[0], sub);
    let Delivery::GroupsDropped { below } = got[0] else {
        panic!(
            "first delivery should reset the open streams, got {:?}",
            got[0]
        );
    };
    assert!(below >= 1);
    assert!(
        got[1..]
            .iter()
            .all(|d| !matches!(d, Delivery::GroupsDropped { .. }))
    );
    assert!(s[0].queued_bytes(sub).unwrap() == 0);
}

#[test]
fn slow_shard_loses_whole_groups_counted_and_publisher_never_blocks() {
    let now = Instant::now();
    let config = Config {
        ring_capacity: 64,
        ..Config::default()
    };
    let (mut s, _, track) = published(2, config, "b", "t", now);
    let sub = s[1].subscribe("b", "t").unwrap();
    settle(&mut s, now);
    let mut check = Checker::default();
    s[0].start_group(track, 0).unwrap();
    for i in 0..GROUP {
        s[0].push_frame(track, 0, stamp(0, i), payload(0, i))
            .unwrap();
    }
    s[0].end_group(track, 0).unwrap();
    settle(&mut s, now);
    for d in drain(&mut s[1], sub) {
        check.check(d, |_| GROUP);
    }
    // Shard 1 is stuck (not polled) while 99 more groups are published.
    for g in 1..100 {
        s[0].start_group(track, g).unwrap();
        for i in 0..GROUP {
            s[0].push_frame(track, g, stamp(g, i), payload(g, i))
                .unwrap();
        }
        s[0].end_group(track, g).unwrap();
        s[0].poll(now);
        s[0].flush();
    }
    let dropped = s[0].stats().ring_groups_dropped;
    assert!(dropped >= 95, "only {dropped} groups dropped");
    assert!(s[0].stats().frame_pushes < GROUP + 64);

    // Shard 1 resumes: the session opens the group that was cut, which is then reset;
    // later groups arrive whole.
    s[1].poll(now);
    for d in drain(&mut s[1], sub) {
        check.check(d, |_| GROUP);
    }
    for g in 100..110 {
        settle(&mut s, now);
        for d in drain(&mut s[1], sub) {
            check.check(d, |_| GROUP);
        }
        s[0].start_group(track, g).unwrap();
        for i in 0..GROUP {
            s[0].push_frame(track, g, stamp(g, i), payload(g, i))
                .unwrap();
        }
        s[0].end_group(track, g).unwrap();
    }
    settle(&mut s, now);
    for d in drain(&mut s[1], sub) {
        check.check(d, |_| GROUP);
    }
    let expected: Vec<u64> = [0].into_iter().chain(100..110).collect();
    assert_eq!(check.complete_groups, expected);
    assert!(check.dropped_notices >= 1, "the cut group was reset");
}
