//! End-to-end behaviour of the router through its public API.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use router::{AnnounceEvent, ArrivalTick, Config, Delivery, PublisherEvent, RouterError, Shard};

fn small_config() -> Config {
    Config {
        ring_capacity: 1024,
        ..Config::default()
    }
}

#[test]
fn subscriber_on_other_shard_gets_ready_frames_and_end() {
    let now = Instant::now();
    let (mut s, _, track) = published(2, small_config(), "room/alice", "video", now);
    let sub = s[1].subscribe("room/alice", "video").unwrap();
    settle(&mut s, now);
    s[0].start_group(track, 0).unwrap();
    s[0].push_frame(track, 0, stamp(0, 0), payload(0, 0))
        .unwrap();
    s[0].end_group(track, 0).unwrap();
    s[0].end_track(track).unwrap();
    settle(&mut s, now);
    assert_eq!(
        drain(&mut s[1], sub),
        vec![
            Delivery::Ready(info()),
            Delivery::GroupStart { group: 0 },
            Delivery::Frame {
                group: 0,
                timestamp: stamp(0, 0),
                payload: payload(0, 0),
                arrived: ArrivalTick::UNKNOWN,
            },
            Delivery::GroupEnd { group: 0 },
            Delivery::TrackEnded { end: 1 },
        ]
    );
}

#[test]
fn one_ring_push_per_frame_per_interested_shard() {
    let now = Instant::now();
    let (mut s, _, track) = published(4, small_config(), "b", "t", now);
    // Three subscribers on shard 1, two on shard 2, none on shard 3, one local.
    let mut subs = Vec::new();
    for (shard, n) in [(1, 3), (2, 2), (0, 1)] {
        for _ in 0..n {
            subs.push((shard, s[shard].subscribe("b", "t").unwrap()));
        }
    }
    settle(&mut s, now);
    let frames = 300u64;
    for g in 0..10 {
        s[0].start_group(track, g).unwrap();
        for i in 0..frames / 10 {
            s[0].push_frame(track, g, stamp(g, i), payload(g, i))
                .unwrap();
        }
        s[0].end_group(track, g).unwrap();
        settle(&mut s, now);
    }
    assert_eq!(s[0].stats().frame_pushes, 2 * frames);
    for (shard, sub) in subs {
        let got = drain(&mut s[shard], sub)
            .into_iter()
            .filter(|d| matches!(d, Delivery::Frame { .. }))
            .count();
        assert_eq!(got as u64, frames, "subscriber on shard {shard}");
    }
}

#[test]
fn payload_is_shared_not_copied_across_shards_and_subscribers() {
    let now = Instant::now();
    let (mut s, _, track) = published(2, small_config(), "b", "t", now);
    let local = s[0].subscribe("b", "t").unwrap();
    let remote = s[1].subscribe("b", "t").unwrap();
    settle(&mut s, now);
    let data = Bytes::from(vec![7u8; 1000]);
    s[0].start_group(track, 0).unwrap();
    s[0].push_frame(track, 0, 0, data.clone()).unwrap();
    settle(&mut s, now);
    for (shard, sub) in [(0, local), (1, remote)] {
        let frame = drain(&mut s[shard], sub)
            .into_iter()
            .find_map(|d| match d {
                Delivery::Frame { payload, .. } => Some(payload),
                _ => None,
            })
            .unwrap();
        assert_eq!(frame.as_ptr(), data.as_ptr(), "shard {shard} got a copy");
    }
}

#[test]
fn late_joiner_starts_at_newest_group_from_its_first_frame() {
    let now = Instant::now();
    let (mut s, _) = shards(2, small_config());
    let bc = s[0].announce("b").unwrap();
    let track = s[0].publish_track(bc, "t", info()).unwrap();
    for g in 0..5 {
        s[0].start_group(track, g).unwrap();
        for i in 0..3 {
            s[0].push_frame(track, g, stamp(g, i), payload(g, i))
                .unwrap();
        }
        if g < 4 {
            s[0].end_group(track, g).unwrap();
        }
    }
    settle(&mut s, now);
    let local = s[0].subscribe("b", "t").unwrap();
    let remote = s[1].subscribe("b", "t").unwrap();
    settle(&mut s, now);
    s[0].push_frame(track, 4, stamp(4, 3), payload(4, 3))
        .unwrap();
    s[0].end_group(track, 4).unwrap();
    s[0].start_group(track, 5).unwrap();
    settle(&mut s, now);
    let mut expected = vec![Delivery::Ready(info()), Delivery::GroupStart { group: 4 }];
    for i in 0..4 {
        expected.push(Delivery::Frame {
            group: 4,
            timestamp: stamp(4, i),
            payload: payload(4, i),
            arrived: ArrivalTick::UNKNOWN,
        });
    }
    expected.push(Delivery::GroupEnd { group: 4 });
    expected.push(Delivery::GroupStart { group: 5 });
    assert_eq!(drain(&mut s[0], local), expected);
    assert_eq!(drain(&mut s[1], remote), expected);
}

#[test]
fn second_shard_joining_live_track_starts_at_newest_group() {
    let now = Instant::now();
    let (mut s, _, track) = published(3, small_config(), "b", "t", now);
    let first = s[1].subscribe("b", "t").unwrap();
    settle(&mut s, now);
    for g in 0..3 {
        s[0].start_group(track, g).unwrap();
        s[0].push_frame(track, g, stamp(g, 0), payload(g, 0))
            .unwrap();
        s[0].end_group(track, g).unwrap();
    }
    settle(&mut s, now);
    // A second subscriber on shard 1 is served from shard 1's replica cache.
    let second = s[1].subscribe("b", "t").unwrap();
    let late = s[2].subscribe("b", "t").unwrap();
    settle(&mut s, now);
    let starts = |d: Vec<Delivery>| -> Vec<u64> {
        d.into_iter()
            .filter_map(|d| match d {
                Delivery::GroupStart { group } => Some(group),
                _ => None,
            })
            .collect()
    };
    assert_eq!(starts(drain(&mut s[1], first)), vec![0, 1, 2]);
    assert_eq!(starts(drain(&mut s[1], second)), vec![2]);
    assert_eq!(starts(drain(&mut s[2], late)), vec![2]);
}

#[test]
fn unannounce_reaches_every_shard_and_ends_subscriptions() {
    let now = Instant::now();
    let (mut s, _) = shards(3, small_config());
    let (q, initial) = s[2].announce_query("room").unwrap();
    assert!(initial.is_empty());
    let bc = s[0].announce("room/alice").unwrap();
    s[0].announce("roomy").unwrap();
    let track = s[0].publish_track(bc, "t", info()).unwrap();
    settle(&mut s, now);
    for shard in &s {
        assert_eq!(
            shard.announced(""),
            vec!["room/alice".into(), "roomy".into()]
        );
        assert_eq!(shard.announced("room"), vec!["room/alice".into()]);
    }
    let sub = s[1].subscribe("room/alice", "t").unwrap();
    settle(&mut s, now);
    s[0].start_group(track, 7).unwrap();
    s[0].unannounce(bc).unwrap();
    settle(&mut s, now);
    for shard in &s {
        assert_eq!(shard.announced("room"), Vec::<std::sync::Arc<str>>::new());
    }
    assert_eq!(s[2].next_ready_query(), Some(q));
    assert_eq!(
        s[2].next_announce(q).unwrap(),
        Some(AnnounceEvent::Active("room/alice".into()))
    );
    assert_eq!(
        s[2].next_announce(q).unwrap(),
        Some(AnnounceEvent::Ended("room/alice".into()))
    );
    assert_eq!(s[2].next_announce(q).unwrap(), None);
    let got = drain(&mut s[1], sub);
    assert_eq!(got.last(), Some(&Delivery::TrackEnded { end: 8 }));
    assert!(matches!(
        s[1].subscribe("room/alice", "t"),
        Err(RouterError::Unroutable { .. })
    ));
}

#[test]
fn linger_keeps_broadcast_alive_across_publisher_reconnect() {
    let now = Instant::now();
    let config = Config {
        linger: Duration::from_secs(5),
        ..small_config()
    };
    let (mut s, _) = shards(2, config);
    let bc = s[0].announce("cam").unwrap();
    settle(&mut s, now);
    let sub = s[1].subscribe("cam", "video").unwrap();
    settle(&mut s, now);
    let Some(PublisherEvent::TrackWanted { track, .. }) = s[0].next_publisher_event() else {
        panic!("publisher was not asked for the track");
    };
    s[0].publish_track(bc, "video", info()).unwrap();
    s[0].start_group(track, 0).unwrap();
    s[0].push_frame(track, 0, stamp(0, 0), payload(0, 0))
        .unwrap();
    settle(&mut s, now);
    assert_eq!(
        drain(&mut s[1], sub),
        vec![
            Delivery::Ready(info()),
            Delivery::GroupStart { group: 0 },
            Delivery::Frame {
                group: 0,
                timestamp: stamp(0, 0),
                payload: payload(0, 0),
                arrived: ArrivalTick::UNKNOWN,
            },
        ]
    );

    s[0].publisher_lost(now, bc).unwrap();
    let later = now + Duration::from_secs(4);
    settle(&mut s, later);
    assert_eq!(s[1].announced(""), vec!["cam".into()]);
    assert_eq!(
        s[0].next_deadline(later),
        Some(now + Duration::from_secs(5))
    );

    // The publisher reconnects on the same worker: same broadcast, asked again for the
    // track its subscribers still want.
    assert_eq!(s[0].announce("cam").unwrap(), bc);
    assert_eq!(
        s[0].next_publisher_event(),
        Some(PublisherEvent::TrackWanted {
            broadcast: bc,
            track,
            name: "video".into()
        })
    );
    assert_eq!(s[0].publish_track(bc, "video", info()).unwrap(), track);
    s[0].start_group(track, 1).unwrap();
    s[0].push_frame(track, 1, stamp(1, 0), payload(1, 0))
        .unwrap();
    settle(&mut s, now + Duration::from_secs(10));
    assert_eq!(s[1].announced(""), vec!["cam".into()]);
    // The group cut by the loss is reset; the subscription continues.
    assert_eq!(
        drain(&mut s[1], sub),
        vec![
            Delivery::GroupsDropped { below: 1 },
            Delivery::GroupStart { group: 1 },
            Delivery::Frame {
                group: 1,
                timestamp: stamp(1, 0),
                payload: payload(1, 0),
                arrived: ArrivalTick::UNKNOWN,
            },
        ]
    );
}

#[test]
fn linger_ends_broadcast_after_window() {
    let now = Instant::now();
    let config = Config {
        linger: Duration::from_secs(5),
        ..small_config()
    };
    let (mut s, bc, track) = published(2, config, "cam", "video", now);
    let sub = s[1].subscribe("cam", "video").unwrap();
    settle(&mut s, now);
    s[0].start_group(track, 0).unwrap();
    s[0].publisher_lost(now, bc).unwrap();
    settle(&mut s, now + Duration::from_millis(4999));
    assert_eq!(s[1].announced(""), vec!["cam".into()]);
    settle(&mut s, now + Duration::from_secs(5));
    assert!(s[0].announced("").is_empty());
    assert!(s[1].announced("").is_empty());
    let got = drain(&mut s[1], sub);
    assert_eq!(got.last(), Some(&Delivery::TrackEnded { end: 1 }));
    assert_eq!(
        s[0].announce("cam").map(|_| ()),
        Ok(()),
        "path is free again"
    );
}

#[test]
fn zero_linger_ends_broadcast_at_once() {
    let now = Instant::now();
    let config = Config {
        linger: Duration::ZERO,
        ..small_config()
    };
    let (mut s, _) = shards(2, config);
    let bc = s[0].announce("cam").unwrap();
    settle(&mut s, now);
    s[0].publisher_lost(now, bc).unwrap();
    settle(&mut s, now);
    assert!(s[1].announced("").is_empty());
}

#[test]
fn one_upstream_demand_per_track_however_many_subscribers() {
    let now = Instant::now();
    let (mut s, _) = shards(3, small_config());
    let bc = s[0].announce("b").unwrap();
    settle(&mut s, now);
    let mut subs = Vec::new();
    for shard in [0, 1, 1, 2, 2, 2] {
        subs.push((shard, s[shard].subscribe("b", "audio").unwrap()));
    }
    settle(&mut s, now);
    let Some(PublisherEvent::TrackWanted { track, name, .. }) = s[0].next_publisher_event() else {
        panic!("no TrackWanted");
    };
    assert_eq!(&*name, "audio");
    assert_eq!(s[0].next_publisher_event(), None);
    s[0].publish_track(bc, "audio", info()).unwrap();
    settle(&mut s, now);
    for &(shard, sub) in &subs {
        assert_eq!(drain(&mut s[shard], sub), vec![Delivery::Ready(info())]);
    }
    for (shard, sub) in subs {
        s[shard].unsubscribe(sub).unwrap();
    }
    settle(&mut s, now);
    assert_eq!(
        s[0].next_publisher_event(),
        Some(PublisherEvent::TrackUnused {
            broadcast: bc,
            track
        })
    );
    assert_eq!(s[0].next_publisher_event(), None);
}

#[test]
fn rejected_track_is_not_found_on_every_shard() {
    let now = Instant::now();
    let (mut s, _) = shards(2, small_config());
    s[0].announce("b").unwrap();
    settle(&mut s, now);
    let local = s[0].subscribe("b", "nope").unwrap();
    let remote = s[1].subscribe("b", "nope").unwrap();
    settle(&mut s, now);
    let Some(PublisherEvent::TrackWanted { track, .. }) = s[0].next_publisher_event() else {
        panic!("no TrackWanted");
    };
    s[0].reject_track(track).unwrap();
    settle(&mut s, now);
    assert_eq!(drain(&mut s[0], local), vec![Delivery::NotFound]);
    assert_eq!(drain(&mut s[1], remote), vec![Delivery::NotFound]);
}

#[test]
fn unknown_broadcast_is_unroutable() {
    let (mut s, _) = shards(1, small_config());
    assert_eq!(
        s[0].subscribe("nobody", "t"),
        Err(RouterError::Unroutable {
            path: "nobody".into()
        })
    );
}

#[test]
fn frames_for_unopened_group_are_rejected() {
    let (mut s, _) = shards(1, small_config());
    let bc = s[0].announce("b").unwrap();
    let t = s[0].publish_track(bc, "t", info()).unwrap();
    assert!(matches!(
        s[0].push_frame(t, 3, 0, Bytes::new()),
        Err(RouterError::GroupNotOpen { group: 3, .. })
    ));
    s[0].start_group(t, 3).unwrap();
    assert!(matches!(
        s[0].start_group(t, 3),
        Err(RouterError::DuplicateGroup { group: 3, .. })
    ));
}

#[test]
fn parked_shard_doorbell_rings_once_until_it_wakes() {
    let now = Instant::now();
    let (mut s, bells) = shards(2, small_config());
    let bc = s[0].announce("b").unwrap();
    let track = s[0].publish_track(bc, "t", info()).unwrap();
    settle(&mut s, now);
    let _sub = s[1].subscribe("b", "t").unwrap();
    settle(&mut s, now);
    s[1].poll(now);
    assert!(s[1].prepare_park());
    let before = bells[1].count();
    s[0].start_group(track, 0).unwrap();
    for i in 0..50 {
        s[0].push_frame(track, 0, stamp(0, i), payload(0, i))
            .unwrap();
    }
    s[0].flush();
    assert_eq!(bells[1].count(), before + 1);
    // Still parked (has not run): more pushes ring no more.
    s[0].push_frame(track, 0, stamp(0, 50), payload(0, 50))
        .unwrap();
    s[0].flush();
    assert_eq!(bells[1].count(), before + 1);
    // It must not park again with work pending...
    assert!(!s[1].prepare_park());
    // ...and after it ran, a new park is rung again.
    s[1].poll(now);
    assert!(s[1].prepare_park());
    s[0].push_frame(track, 0, stamp(0, 51), payload(0, 51))
        .unwrap();
    s[0].flush();
    assert_eq!(bells[1].count(), before + 2);
    // A producer that pushed nothing rings nothing.
    s[1].poll(now);
    assert!(s[1].prepare_park());
    s[0].flush();
    assert_eq!(bells[1].count(), before + 2);
}

#[test]
fn cache_stays_within_byte_bound_and_late_joiner_still_gets_newest_group() {
    let now = Instant::now();
    let config = Config {
        cache_max_bytes: 4 << 10,
        cache_max_groups: 8,
        ..small_config()
    };
    let (mut s, _, track) = published(2, config, "b", "t", now);
    let early = s[1].subscribe("b", "t").unwrap();
    settle(&mut s, now);
    for g in 0..50 {
        s[0].start_group(track, g).unwrap();
        for i in 0..10 {
            s[0].push_frame(track, g, stamp(g, i), payload(g, i))
                .unwrap();
            assert!(s[0].cached_bytes() <= 4 << 10);
        }
        s[0].end_group(track, g).unwrap();
        settle(&mut s, now);
        assert!(s[1].cached_bytes() <= 4 << 10, "replica cache bounded too");
    }
    drain(&mut s[1], early);
    let late = s[0].subscribe("b", "t").unwrap();
    let got = drain(&mut s[0], late);
    assert_eq!(got[1], Delivery::GroupStart { group: 49 });
    assert_eq!(got.len(), 1 + 1 + 10 + 1);
}

#[test]
fn group_larger_than_cache_is_not_offered_to_late_joiners() {
    let config = Config {
        cache_max_bytes: 1 << 10,
        ..small_config()
    };
    let (mut s, _) = shards(1, config);
    let bc = s[0].announce("b").unwrap();
    let track = s[0].publish_track(bc, "t", info()).unwrap();
    s[0].start_group(track, 0).unwrap();
    s[0].push_frame(track, 0, 0, Bytes::from(vec![1u8; 2000]))
        .unwrap();
    assert!(s[0].cached_bytes() <= 1 << 10);
    let late = s[0].subscribe("b", "t").unwrap();
    s[0].push_frame(track, 0, stamp(0, 1), payload(0, 1))
        .unwrap();
    s[0].start_group(track, 1).unwrap();
    // Never joins mid-group: it skips the truncated group 0 and starts at group 1.
    assert_eq!(
        drain(&mut s[0], late),
        vec![Delivery::Ready(info()), Delivery::GroupStart { group: 1 }]
    );
}

#[test]
fn undrained_announce_query_reports_lagged_instead_of_growing() {
    let now = Instant::now();
    let config = Config {
        query_max_events: 8,
        ..small_config()
    };
    let (mut s, _) = shards(2, config);
    let (q, _) = s[1].announce_query("").unwrap();
    for i in 0..100 {
        s[0].announce(&format!("p{i}")).unwrap();
    }
    settle(&mut s, now);
    assert_eq!(s[1].next_announce(q).unwrap(), Some(AnnounceEvent::Lagged));
    assert_eq!(s[1].next_announce(q).unwrap(), None);
    assert_eq!(s[1].announced("").len(), 100);
}

#[test]
fn newest_publisher_of_a_path_wins_on_every_shard() {
    let now = Instant::now();
    let (mut s, _) = shards(3, small_config());
    let old = s[0].announce("dup").unwrap();
    settle(&mut s, now);
    let new = s[1].announce("dup").unwrap();
    let new_track = s[1].publish_track(new, "t", info()).unwrap();
    settle(&mut s, now);
    let sub = s[2].subscribe("dup", "t").unwrap();
    settle(&mut s, now);
    s[1].start_group(new_track, 0).unwrap();
    settle(&mut s, now);
    assert_eq!(
        drain(&mut s[2], sub),
        vec![Delivery::Ready(info()), Delivery::GroupStart { group: 0 }]
    );
    // The older one leaving does not end the path.
    s[0].unannounce(old).unwrap();
    settle(&mut s, now);
    for shard in &s {
        assert_eq!(shard.announced(""), vec!["dup".into()]);
    }
}

#[test]
fn resumed_publisher_may_restart_group_numbering() {
    let now = Instant::now();
    let (mut s, bc, track) = published(2, small_config(), "cam", "video", now);
    let local = s[0].subscribe("cam", "video").unwrap();
    let remote = s[1].subscribe("cam", "video").unwrap();
    settle(&mut s, now);
    for g in 0..6 {
        s[0].start_group(track, g).unwrap();
        s[0].push_frame(track, g, stamp(g, 0), payload(g, 0))
            .unwrap();
        if g < 5 {
            s[0].end_group(track, g).unwrap();
        }
    }
    settle(&mut s, now);
    drain(&mut s[0], local);
    drain(&mut s[1], remote);
    s[0].publisher_lost(now, bc).unwrap();
    settle(&mut s, now);
    assert_eq!(s[0].announce("cam").unwrap(), bc);
    // The new session numbers its groups from 0 again.
    s[0].start_group(track, 0).unwrap();
    s[0].push_frame(track, 0, stamp(0, 9), payload(0, 9))
        .unwrap();
    settle(&mut s, now);
    let expected = vec![
        Delivery::GroupsDropped { below: 6 },
        Delivery::GroupStart { group: 0 },
        Delivery::Frame {
            group: 0,
            timestamp: stamp(0, 9),
            payload: payload(0, 9),
            arrived: ArrivalTick::UNKNOWN,
        },
    ];
    assert_eq!(drain(&mut s[0], local), expected);
    assert_eq!(drain(&mut s[1], remote), expected);
}

#[test]
fn publisher_reconnecting_on_another_shard_is_spliced_and_subscribers_continue() {
    let now = Instant::now();
    let config = Config {
        linger: Duration::from_secs(5),
        ..small_config()
    };
    let (mut s, _) = shards(3, config);
    let old = s[0].announce("cam").unwrap();
    let track = s[0].publish_track(old, "video", info()).unwrap();
    settle(&mut s, now);
    let local = s[0].subscribe("cam", "video").unwrap();
    let remote = s[2].subscribe("cam", "video").unwrap();
    settle(&mut s, now);
    s[0].start_group(track, 0).unwrap();
    s[0].push_frame(track, 0, stamp(0, 0), payload(0, 0))
        .unwrap();
    settle(&mut s, now);
    drain(&mut s[0], local);
    drain(&mut s[2], remote);

    s[0].publisher_lost(now, old).unwrap();
    settle(&mut s, now);
    // The publisher comes back through another worker.
    let new = s[1].announce("cam").unwrap();
    settle(&mut s, now);
    let Some(PublisherEvent::TrackWanted {
        track: t1, name, ..
    }) = s[1].next_publisher_event()
    else {
        panic!("new publisher was not asked for the track in demand");
    };
    assert_eq!(&*name, "video");
    assert_eq!(s[1].publish_track(new, "video", info()).unwrap(), t1);
    s[1].start_group(t1, 0).unwrap();
    s[1].push_frame(t1, 0, stamp(0, 5), payload(0, 5)).unwrap();
    // Past the linger window: the spliced broadcast is not ended.
    settle(&mut s, now + Duration::from_secs(10));
    let expected = vec![
        Delivery::GroupsDropped { below: 1 },
        Delivery::GroupStart { group: 0 },
        Delivery::Frame {
            group: 0,
            timestamp: stamp(0, 5),
            payload: payload(0, 5),
            arrived: ArrivalTick::UNKNOWN,
        },
    ];
    assert_eq!(drain(&mut s[0], local), expected);
    assert_eq!(drain(&mut s[2], remote), expected);
    for shard in &s {
        assert_eq!(shard.announced(""), vec!["cam".into()]);
    }

    // The new publisher leaving ends it everywhere, spliced subscribers included.
    s[1].unannounce(new).unwrap();
    settle(&mut s, now + Duration::from_secs(10));
    for shard in &s {
        assert!(shard.announced("").is_empty());
    }
    assert_eq!(
        drain(&mut s[0], local),
        vec![Delivery::TrackEnded { end: 1 }]
    );
    assert_eq!(
        drain(&mut s[2], remote),
        vec![Delivery::TrackEnded { end: 1 }]
    );
}

#[test]
fn publisher_returning_to_the_spliced_shard_takes_the_broadcast_back() {
    let now = Instant::now();
    let (mut s, _) = shards(3, small_config());
    let old = s[0].announce("cam").unwrap();
    let track = s[0].publish_track(old, "video", info()).unwrap();
    settle(&mut s, now);
    let remote = s[2].subscribe("cam", "video").unwrap();
    settle(&mut s, now);
    s[0].publisher_lost(now, old).unwrap();
    let new = s[1].announce("cam").unwrap();
    settle(&mut s, now);
    // Lost again, and back on shard 0 this time.
    s[1].publisher_lost(now, new).unwrap();
    settle(&mut s, now);
    assert_eq!(s[0].announce("cam").unwrap(), old);
    settle(&mut s, now);
    while let Some(e) = s[1].next_publisher_event() {
        drop(e);
    }
    assert!(matches!(
        s[0].next_publisher_event(),
        Some(router::PublisherEvent::TrackWanted { track: t, .. }) if t == track
    ));
    s[0].publish_track(old, "video", info()).unwrap();
    s[0].start_group(track, 0).unwrap();
    s[0].push_frame(track, 0, stamp(0, 1), payload(0, 1))
        .unwrap();
    settle(&mut s, now + Duration::from_secs(10));
    let got = drain(&mut s[2], remote);
    assert_eq!(got[0], Delivery::Ready(info()));
    assert_eq!(
        &got[got.len() - 2..],
        &[
            Delivery::GroupStart { group: 0 },
            Delivery::Frame {
                group: 0,
                timestamp: stamp(0, 1),
                payload: payload(0, 1),
                arrived: ArrivalTick::UNKNOWN,
            }
        ]
    );
    for shard in &s {
        assert_eq!(shard.announced(""), vec!["cam".into()]);
    }
}

#[test]
fn new_track_requested_from_a_spliced_broadcast_is_fetched_from_its_feed() {
    let now = Instant::now();
    let (mut s, _) = shards(3, small_config());
    let old = s[0].announce("cam").unwrap();
    settle(&mut s, now);
    let video = s[2].subscribe("cam", "video").unwrap();
    settle(&mut s, now);
    s[0].publisher_lost(now, old).unwrap();
    let new = s[1].announce("cam").unwrap();
    // Shard 0 is spliced before shard 2 learns of the new route: shard 2's request for
    // another track still goes to shard 0.
    s[0].poll(now);
    s[0].flush();
    s[1].poll(now);
    s[1].flush();
    let audio = s[2].subscribe("cam", "audio").unwrap();
    settle(&mut s, now);
    let mut wanted = Vec::new();
    while let Some(e) = s[1].next_publisher_event() {
        if let PublisherEvent::TrackWanted { name, .. } = e {
            wanted.push(name.to_string());
        }
    }
    wanted.sort();
    assert_eq!(wanted, vec!["audio", "video"]);
    s[1].publish_track(new, "audio", info()).unwrap();
    s[1].publish_track(new, "video", info()).unwrap();
    settle(&mut s, now);
    assert_eq!(drain(&mut s[2], audio), vec![Delivery::Ready(info())]);
    assert_eq!(drain(&mut s[2], video), vec![Delivery::Ready(info())]);
}

/// Runs a FETCH on `shard` to its answer.
fn fetch(s: &mut [Shard], shard: usize, track: &str, group: u64) -> Option<Vec<(u64, Bytes)>> {
    let id = s[shard].fetch("room/alice", track, group).unwrap();
    settle(s, Instant::now());
    let (answered, frames) = s[shard].next_fetch_answer().expect("an answer");
    assert_eq!(answered, id);
    assert_eq!(s[shard].next_fetch_answer(), None, "one answer per fetch");
    frames
}

/// FETCH serves a group cached whole: from the shard's own cache (owner or replica) or,
/// on a shard without a copy, from the owner's; nothing that is not cached whole.
#[test]
fn fetch_serves_whole_cached_groups_from_any_shard() {
    let now = Instant::now();
    let config = Config {
        cache_max_groups: 2,
        ..small_config()
    };
    let (mut s, _, track) = published(3, config, "room/alice", "video", now);
    let _sub = s[1].subscribe("room/alice", "video").unwrap();
    settle(&mut s, now);
    for g in 0..4 {
        s[0].start_group(track, g).unwrap();
        for i in 0..3 {
            s[0].push_frame(track, g, stamp(g, i), payload(g, i))
                .unwrap();
        }
        if g < 3 {
            s[0].end_group(track, g).unwrap();
        }
    }
    settle(&mut s, now);
    let whole = |g: u64| {
        (0..3)
            .map(|i| (stamp(g, i), payload(g, i)))
            .collect::<Vec<_>>()
    };
    // Shard 2 holds no copy of the track: its FETCH goes to the owner, shard 0.
    for shard in [0, 1, 2] {
        assert_eq!(
            fetch(&mut s, shard, "video", 2),
            Some(whole(2)),
            "shard {shard}"
        );
        // Evicted (two groups cached: 2 and the open 3), still open, never published.
        for g in [0, 3, 9] {
            assert_eq!(fetch(&mut s, shard, "video", g), None, "group {g}");
        }
        assert_eq!(fetch(&mut s, shard, "audio", 2), None);
    }
    assert!(s[2].fetch("room/bob", "video", 2).is_err(), "not announced");

    // A cancelled FETCH never answers, even when the owner's reply arrives later.
    let id = s[2].fetch("room/alice", "video", 2).unwrap();
    s[2].cancel_fetch(id);
    settle(&mut s, now);
    assert_eq!(s[2].next_fetch_answer(), None);
}
