//! `Shard::counters`: what a shard drops, defers or refuses without failing a call is
//! counted, so that metrics can show it.

mod common;

use std::time::Instant;

use common::*;
use router::{Config, ShardCounters};

fn small_config() -> Config {
    Config {
        ring_capacity: 1024,
        ..Config::default()
    }
}

#[test]
fn a_fresh_shard_counts_nothing() {
    let (s, _) = shards(2, small_config());
    assert_eq!(s[0].counters(), ShardCounters::default());
}

#[test]
fn answer_to_a_cancelled_fetch_is_dropped_and_counted() {
    let now = Instant::now();
    let (mut s, _, _) = published(2, small_config(), "b", "t", now);
    // Not cached on shard 1: asked of the owner, cancelled before the answer arrives.
    let remote = s[1].fetch("b", "t", 0).unwrap();
    s[1].cancel_fetch(remote);
    settle(&mut s, now);
    assert_eq!(s[1].next_fetch_answer(), None);
    assert_eq!(s[1].counters().fetch_answers_dropped, 1);
    // Answered locally at once, cancelled before it was taken.
    let local = s[0].fetch("b", "t", 0).unwrap();
    s[0].cancel_fetch(local);
    assert_eq!(s[0].next_fetch_answer(), None);
    assert_eq!(s[0].counters().fetch_answers_dropped, 1);
}

#[test]
fn lagged_announce_query_is_counted_once_per_overflow() {
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
    assert_eq!(s[1].counters().queries_lagged, 1);
    while s[1].next_announce(q).unwrap().is_some() {}
    s[0].announce("more").unwrap();
    settle(&mut s, now);
    assert_eq!(s[1].counters().queries_lagged, 1, "drained: no new lag");
    assert_eq!(s[0].counters().queries_lagged, 0);
}

#[test]
fn control_messages_waiting_for_a_full_ring_are_counted() {
    let config = Config {
        ring_capacity: 16,
        ..Config::default()
    };
    let (mut s, _) = shards(2, config);
    // Shard 1 never polls: the 17th announce finds the ring full.
    for i in 0..20 {
        s[0].announce(&format!("p{i}")).unwrap();
    }
    assert_eq!(s[0].counters().control_deferred, 4);
}

#[test]
fn message_for_a_track_gone_in_the_meantime_is_stale() {
    let now = Instant::now();
    let (mut s, _, _) = published(2, small_config(), "b", "t", now);
    // The replica track is gone before the owner's Subscribed reply comes back.
    let sub = s[1].subscribe("b", "t").unwrap();
    s[1].unsubscribe(sub).unwrap();
    settle(&mut s, now);
    assert!(s[1].counters().stale_messages >= 1);
    assert_eq!(s[0].counters().stale_messages, 0);
}
