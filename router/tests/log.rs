//! The shared per-track frame log: frames are held once however many local subscribers
//! read them, slow readers are bounded without copying the log, readers that caught up
//! are woken once per burst, and a log outlives its track until its readers finish.

mod common;

use std::collections::HashSet;

use common::*;
use router::{Config, Delivery};

const GROUP: u64 = 30;

fn publish_group(s: &mut router::Shard, track: router::TrackId, g: u64) {
    s.start_group(track, g).unwrap();
    for i in 0..GROUP {
        s.push_frame(track, g, stamp(g, i), payload(g, i)).unwrap();
    }
    s.end_group(track, g).unwrap();
}

#[test]
fn frames_are_held_once_however_many_subscribers_stall() {
    let bound = 32 << 10;
    let config = Config {
        subscriber_max_bytes: bound,
        cache_max_bytes: 16 << 10,
        ..Config::default()
    };
    let (mut s, _) = shards(1, config);
    let bc = s[0].announce("b").unwrap();
    let track = s[0].publish_track(bc, "t", info()).unwrap();
    let stalled: Vec<_> = (0..200)
        .map(|_| s[0].subscribe("b", "t").unwrap())
        .collect();
    for g in 0..100 {
        publish_group(&mut s[0], track, g);
        // Each reader's share is bounded, and the memory behind all of them is one log
        // bounded by the cache plus one subscriber bound, not 200 queues.
        for &sub in &stalled {
            assert!(s[0].queued_bytes(sub).unwrap() <= bound);
        }
        assert!(s[0].log_bytes() <= (16 << 10) + 2 * bound);
    }
    assert!(
        s[0].total_queued_bytes() > 100 * (16 << 10),
        "they really lag"
    );
    // Every one of them still resumes at whole, newest groups.
    for sub in stalled {
        let mut check = Checker::default();
        for d in drain(&mut s[0], sub) {
            check.check(d, |_| GROUP);
        }
        assert_eq!(check.complete_groups.last(), Some(&99));
        assert!(check.complete_groups.windows(2).all(|w| w[1] == w[0] + 1));
    }
}

#[test]
fn reader_that_caught_up_is_woken_once_per_burst() {
    let (mut s, _) = shards(1, Config::default());
    let bc = s[0].announce("b").unwrap();
    let track = s[0].publish_track(bc, "t", info()).unwrap();
    let subs: Vec<_> = (0..10).map(|_| s[0].subscribe("b", "t").unwrap()).collect();
    let mut ready = HashSet::new();
    while let Some(sub) = s[0].next_ready() {
        assert!(ready.insert(sub), "listed twice");
    }
    assert_eq!(ready.len(), 10, "Ready to take");
    for &sub in &subs {
        drain(&mut s[0], sub);
    }
    assert_eq!(s[0].next_ready(), None, "nothing new");
    publish_group(&mut s[0], track, 0);
    let mut woken = Vec::new();
    while let Some(sub) = s[0].next_ready() {
        woken.push(sub);
    }
    woken.sort_by_key(|k| format!("{k:?}"));
    let mut expected = subs.clone();
    expected.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(woken, expected, "each reader once for the 32 entries");
    for &sub in &subs {
        let n = drain(&mut s[0], sub)
            .iter()
            .filter(|d| matches!(d, Delivery::Frame { .. }))
            .count() as u64;
        assert_eq!(n, GROUP);
    }
}

#[test]
fn ended_track_is_read_to_its_end_by_a_reader_that_lags() {
    let (mut s, _) = shards(1, Config::default());
    let bc = s[0].announce("b").unwrap();
    let track = s[0].publish_track(bc, "t", info()).unwrap();
    let fast = s[0].subscribe("b", "t").unwrap();
    let slow = s[0].subscribe("b", "t").unwrap();
    for g in 0..3 {
        publish_group(&mut s[0], track, g);
        drain(&mut s[0], fast);
    }
    s[0].end_track(track).unwrap();
    assert_eq!(
        drain(&mut s[0], fast),
        vec![Delivery::TrackEnded { end: 3 }]
    );
    s[0].unsubscribe(fast).unwrap();
    let mut check = Checker::default();
    for d in drain(&mut s[0], slow) {
        check.check(d, |_| GROUP);
    }
    assert_eq!(check.complete_groups, vec![0, 1, 2]);
    assert_eq!(check.ended, Some(3));
    s[0].unsubscribe(slow).unwrap();
    assert_eq!(s[0].log_bytes(), 0, "the log went with its last reader");
}

#[test]
fn log_of_a_track_nobody_reads_keeps_only_the_cache() {
    let config = Config {
        cache_max_groups: 2,
        ..Config::default()
    };
    let (mut s, _) = shards(1, config);
    let bc = s[0].announce("b").unwrap();
    let track = s[0].publish_track(bc, "t", info()).unwrap();
    for g in 0..50 {
        publish_group(&mut s[0], track, g);
    }
    // Two cached groups, plus the entries of the group being started.
    let per_group: usize = (0..GROUP).map(|i| payload(49, i).len() + 64).sum::<usize>() + 128;
    assert!(s[0].log_bytes() <= 3 * per_group, "{}", s[0].log_bytes());
    let late = s[0].subscribe("b", "t").unwrap();
    let got = drain(&mut s[0], late);
    assert_eq!(got[1], Delivery::GroupStart { group: 49 });
    assert_eq!(got.len() as u64, 1 + 1 + GROUP + 1);
}
