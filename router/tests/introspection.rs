//! The read-only counts a shard exposes for tests and metrics follow its state.

mod common;

use std::time::{Duration, Instant};

use common::*;
use router::Config;

fn small_config() -> Config {
    Config {
        ring_capacity: 1024,
        ..Config::default()
    }
}

#[test]
fn subscriber_count_follows_subscribe_and_unsubscribe() {
    let now = Instant::now();
    let (mut s, _, _) = published(2, small_config(), "b", "t", now);
    assert_eq!(s[1].subscriber_count(), 0);
    let a = s[1].subscribe("b", "t").unwrap();
    let b = s[1].subscribe("b", "t").unwrap();
    let local = s[0].subscribe("b", "t").unwrap();
    settle(&mut s, now);
    assert_eq!(s[1].subscriber_count(), 2);
    assert_eq!(
        s[0].subscriber_count(),
        1,
        "remote interest is not a subscriber"
    );
    s[1].unsubscribe(a).unwrap();
    assert_eq!(s[1].subscriber_count(), 1);
    s[1].unsubscribe(b).unwrap();
    s[0].unsubscribe(local).unwrap();
    assert_eq!((s[0].subscriber_count(), s[1].subscriber_count()), (0, 0));
}

#[test]
fn pending_fetch_count_covers_asked_and_untaken_answers() {
    let now = Instant::now();
    let (mut s, _, _) = published(2, small_config(), "b", "t", now);
    let asked = s[1].fetch("b", "t", 0).unwrap();
    let cancelled = s[1].fetch("b", "t", 1).unwrap();
    assert_eq!(s[1].pending_fetch_count(), 2);
    s[1].cancel_fetch(cancelled);
    assert_eq!(s[1].pending_fetch_count(), 1);
    settle(&mut s, now);
    assert_eq!(s[1].pending_fetch_count(), 1, "answered, not yet taken");
    assert_eq!(s[1].next_fetch_answer(), Some((asked, None)));
    assert_eq!(s[1].pending_fetch_count(), 0);
    assert_eq!(
        s[0].pending_fetch_count(),
        0,
        "the owner keeps nothing per FETCH"
    );
}

#[test]
fn query_count_follows_open_and_close() {
    let (mut s, _) = shards(1, small_config());
    let (a, _) = s[0].announce_query("x").unwrap();
    let (_b, _) = s[0].announce_query("").unwrap();
    assert_eq!(s[0].query_count(), 2);
    s[0].close_query(a).unwrap();
    assert_eq!(s[0].query_count(), 1);
}

#[test]
fn broadcast_count_is_owned_and_announced_count_is_known() {
    let now = Instant::now();
    let config = Config {
        linger: Duration::from_secs(1),
        ..small_config()
    };
    let (mut s, _) = shards(2, config);
    let a = s[0].announce("a").unwrap();
    let b = s[0].announce("b").unwrap();
    s[1].announce("c").unwrap();
    settle(&mut s, now);
    assert_eq!((s[0].broadcast_count(), s[1].broadcast_count()), (2, 1));
    assert_eq!((s[0].announced_count(), s[1].announced_count()), (3, 3));
    // Lingering still counts as owned and announced; ended does not.
    s[0].publisher_lost(now, a).unwrap();
    s[0].unannounce(b).unwrap();
    settle(&mut s, now);
    assert_eq!(s[0].broadcast_count(), 1);
    assert_eq!(s[1].announced_count(), 2);
    settle(&mut s, now + Duration::from_secs(2));
    assert_eq!(s[0].broadcast_count(), 0);
    assert_eq!((s[0].announced_count(), s[1].announced_count()), (1, 1));
}

#[test]
fn inbound_backlog_counts_what_a_peer_pushed_until_this_shard_polls() {
    let now = Instant::now();
    let (mut s, _, t) = published(2, small_config(), "b", "t", now);
    let _sub = s[1].subscribe("b", "t").unwrap();
    settle(&mut s, now);
    assert_eq!(s[1].inbound_backlog(), 0);
    s[0].start_group(t, 0).unwrap();
    for i in 0..3 {
        s[0].push_frame(t, 0, stamp(0, i), payload(0, i)).unwrap();
    }
    s[0].flush();
    let waiting = s[1].inbound_backlog();
    assert!(waiting >= 3, "{waiting} messages waiting for 3 frames");
    s[1].poll(now);
    assert_eq!(s[1].inbound_backlog(), 0);
}

/// Every frame delivered from shard `shard` to `sub`, with its raw arrival tick.
fn arrivals(shard: &mut router::Shard, sub: router::SubscriberId) -> Vec<router::ArrivalTick> {
    std::iter::from_fn(|| shard.next_delivery(sub))
        .filter_map(|d| match d {
            router::Delivery::Frame { arrived, .. } => Some(arrived),
            _ => None,
        })
        .collect()
}

#[test]
fn live_frames_carry_their_arrival_and_late_join_replays_do_not() {
    let t0 = Instant::now();
    let (mut s, _, t) = published(3, small_config(), "b", "t", t0);
    let live = s[1].subscribe("b", "t").unwrap();
    settle(&mut s, t0);
    let pushed_at = t0 + Duration::from_millis(5);
    s[0].set_clock(pushed_at);
    s[0].start_group(t, 0).unwrap();
    s[0].push_frame(t, 0, stamp(0, 0), payload(0, 0)).unwrap();
    settle(&mut s, pushed_at);
    let got = arrivals(&mut s[1], live);
    assert_eq!(got.len(), 1);
    // Read on another shard 7 ms later: the shards share one epoch.
    let read_at = pushed_at + Duration::from_millis(7);
    assert_eq!(
        s[1].latency(got[0], read_at),
        Some(Duration::from_millis(7))
    );

    // Late joiners get the cached group again, with no arrival: from this shard's cache
    // and through a replay push to a shard that had no subscriber.
    let local_late = s[1].subscribe("b", "t").unwrap();
    let remote_late = s[2].subscribe("b", "t").unwrap();
    settle(&mut s, read_at);
    for (shard, sub) in [(1, local_late), (2, remote_late)] {
        let got = arrivals(&mut s[shard], sub);
        assert_eq!(got, [router::ArrivalTick::UNKNOWN], "shard {shard}");
        assert_eq!(s[shard].latency(got[0], read_at), None);
    }
}
