//! Hop chains (spec `cluster.md` 5.2): every shard knows the chain a broadcast came
//! with, and a new route for an announced broadcast changes the chain without ending
//! its tracks.

mod common;

use std::time::Instant;

use common::{drain, info, payload, settle, shards};
use router::{AnnounceEvent, Config, Delivery, PublisherEvent, RouterError};

#[test]
fn every_shard_knows_the_chain_a_broadcast_came_with() {
    let now = Instant::now();
    let (mut s, _) = shards(3, Config::default());
    s[0].announce_via("live", &[7, 9]).unwrap();
    s[1].announce("local").unwrap();
    settle(&mut s, now);
    for shard in &s {
        assert_eq!(shard.route_hops("live").as_deref(), Some(&[7, 9][..]));
        assert_eq!(shard.route_hops("local").as_deref(), Some(&[][..]));
        assert_eq!(shard.route_hops("absent"), None);
    }
}

#[test]
fn a_new_chain_is_heard_as_active_again_and_subscribers_carry_on() {
    let now = Instant::now();
    let (mut s, _) = shards(2, Config::default());
    let bc = s[0].announce_via("live", &[7, 9]).unwrap();
    let track = s[0].publish_track(bc, "video", info()).unwrap();
    settle(&mut s, now);
    let (query, listed) = s[1].announce_query("").unwrap();
    assert_eq!(listed, vec!["live".into()]);
    let sub = s[1].subscribe("live", "video").unwrap();
    settle(&mut s, now);
    s[0].start_group(track, 1).unwrap();
    s[0].push_frame(track, 1, 0, payload(1, 0)).unwrap();
    settle(&mut s, now);

    s[0].set_hops(bc, &[7, 3]).unwrap();
    settle(&mut s, now);
    assert_eq!(s[1].route_hops("live").as_deref(), Some(&[7, 3][..]));
    assert_eq!(
        s[1].next_announce(query).unwrap(),
        Some(AnnounceEvent::Active("live".into()))
    );
    assert_eq!(s[1].next_announce(query).unwrap(), None);

    // Same chain again: nothing to tell anyone.
    s[0].set_hops(bc, &[7, 3]).unwrap();
    settle(&mut s, now);
    assert_eq!(s[1].next_announce(query).unwrap(), None);

    s[0].push_frame(track, 1, 0, payload(1, 1)).unwrap();
    s[0].end_group(track, 1).unwrap();
    settle(&mut s, now);
    let got = drain(&mut s[1], sub);
    let frames = got
        .iter()
        .filter(|d| matches!(d, Delivery::Frame { .. }))
        .count();
    assert_eq!(
        frames, 2,
        "the subscriber kept its track across the new chain: {got:?}"
    );
    assert!(
        !got.iter().any(|d| matches!(d, Delivery::TrackEnded { .. })),
        "{got:?}"
    );
}

#[test]
fn a_publisher_back_within_linger_brings_its_new_chain() {
    let now = Instant::now();
    let (mut s, _) = shards(2, Config::default());
    let bc = s[0].announce_via("live", &[7]).unwrap();
    settle(&mut s, now);
    s[0].publisher_lost(now, bc).unwrap();
    let again = s[0].announce_via("live", &[8, 1]).unwrap();
    assert_eq!(again, bc, "resumed, not a new broadcast");
    settle(&mut s, now);
    assert_eq!(s[1].route_hops("live").as_deref(), Some(&[8, 1][..]));
}

#[test]
fn a_reroute_drops_open_groups_refuses_old_ones_and_asks_for_the_track_again() {
    let now = Instant::now();
    let config = Config {
        cache_max_groups: 1,
        ..Config::default()
    };
    let (mut s, _) = shards(2, config);
    let bc = s[0].announce_via("live", &[50, 2]).unwrap();
    let track = s[0].publish_track(bc, "video", info()).unwrap();
    settle(&mut s, now);
    let sub = s[1].subscribe("live", "video").unwrap();
    settle(&mut s, now);
    assert!(matches!(
        s[0].next_publisher_event(),
        Some(PublisherEvent::TrackWanted { .. })
    ));
    for group in 1..=3 {
        s[0].start_group(track, group).unwrap();
        s[0].push_frame(track, group, 0, payload(group, 0)).unwrap();
        if group < 3 {
            s[0].end_group(track, group).unwrap();
        }
    }
    settle(&mut s, now);
    drain(&mut s[1], sub);

    s[0].reroute(bc, &[50, 2, 3]).unwrap();
    settle(&mut s, now);
    assert!(
        matches!(s[0].next_publisher_event(), Some(PublisherEvent::TrackWanted { track: t, .. }) if t == track),
        "the worker is asked to subscribe on the new route"
    );
    // Group 1 left the one-group cache long ago; it still came by the old route.
    for old in 1..=3 {
        assert!(
            matches!(
                s[0].start_group(track, old),
                Err(RouterError::DuplicateGroup { group, .. }) if group == old
            ),
            "group {old} came by the old route"
        );
    }
    s[0].start_group(track, 4).unwrap();
    s[0].push_frame(track, 4, 0, payload(4, 0)).unwrap();
    settle(&mut s, now);
    let got = drain(&mut s[1], sub);
    assert!(
        matches!(got.first(), Some(Delivery::GroupsDropped { below: 4 })),
        "the open group 3 is dropped first: {got:?}"
    );
    let frames: Vec<u64> = got
        .iter()
        .filter_map(|d| match d {
            Delivery::Frame { group, .. } => Some(*group),
            _ => None,
        })
        .collect();
    assert_eq!(frames, [4]);
    assert_eq!(s[1].route_hops("live").as_deref(), Some(&[50, 2, 3][..]));
}

#[test]
fn a_lost_publisher_reached_from_another_shard_too_is_fed_from_there_at_once() {
    let now = Instant::now();
    // No linger: without the other route the broadcast would end at once.
    let config = Config {
        linger: std::time::Duration::ZERO,
        ..Config::default()
    };
    let (mut s, _) = shards(3, config);
    let near = s[0].announce_via("live", &[50, 1]).unwrap();
    let track = s[0].publish_track(near, "video", info()).unwrap();
    let far = s[1].announce_via("live", &[50, 1, 3]).unwrap();
    settle(&mut s, now);
    let sub = s[2].subscribe("live", "video").unwrap();
    settle(&mut s, now);
    for group in 1..=2 {
        s[0].start_group(track, group).unwrap();
        s[0].push_frame(track, group, 0, payload(group, 0)).unwrap();
    }
    s[0].end_group(track, 1).unwrap();
    settle(&mut s, now);
    let frames = |got: &[Delivery]| -> Vec<u64> {
        got.iter()
            .filter_map(|d| match d {
                Delivery::Frame { group, .. } => Some(*group),
                _ => None,
            })
            .collect()
    };
    assert_eq!(frames(&drain(&mut s[2], sub)), [1, 2]);

    s[0].publisher_lost(now, near).unwrap();
    settle(&mut s, now);
    assert_eq!(s[2].route_hops("live").as_deref(), Some(&[50, 1, 3][..]));
    let Some(PublisherEvent::TrackWanted { track: wanted, .. }) = s[1].next_publisher_event()
    else {
        panic!("the other route is asked for the track");
    };
    let standby = s[1].publish_track(far, "video", info()).unwrap();
    assert_eq!(standby, wanted);
    for group in 2..=3 {
        s[1].start_group(standby, group).unwrap();
        s[1].push_frame(standby, group, 0, payload(group, 0))
            .unwrap();
        s[1].end_group(standby, group).unwrap();
    }
    settle(&mut s, now);
    let got = drain(&mut s[2], sub);
    assert_eq!(
        frames(&got),
        [3],
        "group 2 not again, the new route's 3: {got:?}"
    );
    assert!(
        !got.iter().any(|d| matches!(d, Delivery::TrackEnded { .. })),
        "{got:?}"
    );
}
