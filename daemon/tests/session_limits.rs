//! `[limits]` past which a new session or request is refused, through the real binary:
//! sessions in total across workers, subscriptions per session (refused on their own
//! stream, the session stays) and announcements per session (ignored and counted). In
//! each case the sessions and requests inside the limit carry on unharmed.

mod common;

use std::time::Duration;

use common::cluster::{next_frame, payload, session};
use common::http::{Ops, start};
use common::scrape::{total, wait_for};
use interop::{AnnounceEvent, ConnectOptions, TrackEvent};

const LIMITS: &str = "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n\
    [runtime]\nworkers = 2\n[auth]\npublic = \"\"\n[web.http]\nlisten = \"127.0.0.1:0\"\n\
    [internal]\nlisten = \"127.0.0.1:0\"\n[limits]\nsessions_total = 3\n\
    subscriptions_per_session = 2\nannounces_per_session = 2\n";

/// Waits (bounded) until the counter reaches `value`: workers publish every 100 ms.
fn wait_counter(relay: &Ops, name: &str, labels: &str, value: f64) {
    wait_for(relay, |m| total(m, name, labels) >= value);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_total_a_handshake_is_refused_whichever_worker_takes_it() {
    let relay = start(LIMITS);
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(common::bare::bare_client_config(&relay.fingerprint));
    let mut held = Vec::new();
    for _ in 0..3 {
        let conn = endpoint.connect(relay.quic, "localhost").unwrap();
        held.push(conn.await.expect("within the total"));
    }
    // Each from a fresh port, so the kernel spreads them over both workers.
    for _ in 0..4 {
        let mut other = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        other.set_default_client_config(common::bare::bare_client_config(&relay.fingerprint));
        let refused = other.connect(relay.quic, "localhost").unwrap().await;
        assert!(refused.is_err(), "a fourth session past sessions_total = 3");
    }
    wait_counter(&relay, "moq_relayd_refused_total", "", 4.0);
    // A slot comes back when a session leaves.
    held.pop().unwrap().close(0u32.into(), b"bye");
    let again = common::http::wait_until(|| {
        let conn = endpoint.connect(relay.quic, "localhost").unwrap();
        connect_blocking(conn)
    });
    drop(again);
    for conn in &held {
        assert!(conn.close_reason().is_none(), "the admitted ones stay");
    }
}

/// Polls a connect to its end on this thread (`wait_until` retries it while the relay
/// still counts the closed session).
fn connect_blocking(connecting: quinn::Connecting) -> Option<quinn::Connection> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| handle.block_on(connecting)).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_subscription_limit_a_subscribe_is_refused_and_the_session_stays() {
    let relay = start(LIMITS);
    let publisher = session(&relay, ConnectOptions::publish_only).await;
    let (_broadcast, tracks) = publisher
        .publish("demo/cam", &["t0", "t1", "t2"])
        .expect("publish");
    let viewer = session(&relay, |o| o.subscribe_only("")).await;
    // Two subscriptions, each live (a frame through it) before the third is asked.
    let mut live = Vec::new();
    for (index, track) in ["t0", "t1"].into_iter().enumerate() {
        let mut sub = viewer
            .subscribe("demo/cam", track)
            .await
            .expect("subscribe");
        tracks[index].write_group([payload(0, 0)]).expect("group");
        next_frame(&mut sub).await;
        live.push(sub);
    }
    let third = match viewer.subscribe("demo/cam", "t2").await {
        Err(err) => err.to_string(),
        Ok(mut sub) => {
            tracks[2].write_group([payload(0, 0)]).expect("group");
            match sub.next_within(Duration::from_secs(5)).await {
                Ok(TrackEvent::End(end)) => format!("{end:?}"),
                Err(err) => err.to_string(),
                Ok(other) => panic!("the third subscription was served: {other:?}"),
            }
        }
    };
    eprintln!("the third subscription: {third}");
    wait_counter(
        &relay,
        "moq_relayd_subscriptions_refused_total",
        "reason=\"limit\"",
        1.0,
    );
    // The session itself was not touched: it still subscribes once a slot is free, and
    // another session has slots of its own.
    assert!(viewer.closed(Duration::from_millis(100)).await.is_err());
    let other = session(&relay, |o| o.subscribe_only("")).await;
    let mut sub = other.subscribe("demo/cam", "t2").await.expect("subscribe");
    tracks[2].write_group([payload(9, 0)]).expect("group");
    next_frame(&mut sub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_announce_limit_a_broadcast_is_ignored_and_the_rest_served() {
    let relay = start(LIMITS);
    let publisher = session(&relay, ConnectOptions::publish_only).await;
    let mut published = Vec::new();
    for path in ["demo/a", "demo/b", "demo/c"] {
        published.push(publisher.publish(path, &["video"]).expect("publish"));
    }
    let viewer = session(&relay, |o| o.subscribe_only("")).await;
    let mut announced = viewer.announcements().expect("announcements");
    let mut seen = Vec::new();
    while let Some(event) = announced
        .next_within(Duration::from_secs(2))
        .await
        .expect("announcements")
    {
        if let AnnounceEvent::Announced(path) = event {
            seen.push(path);
        }
    }
    seen.sort();
    assert_eq!(seen.len(), 2, "two of the three: {seen:?}");
    wait_counter(
        &relay,
        "moq_relayd_announces_dropped_total",
        "reason=\"limit\"",
        1.0,
    );
    // What was kept is served.
    let kept = &seen[0];
    let index = ["demo/a", "demo/b", "demo/c"]
        .iter()
        .position(|p| p == kept)
        .unwrap();
    let mut sub = viewer.subscribe(kept, "video").await.expect("subscribe");
    published[index].1[0]
        .write_group([payload(0, 0)])
        .expect("group");
    next_frame(&mut sub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_stops_reading_costs_old_groups_not_memory() {
    let relay = start(
        "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 1\n\
         [auth]\npublic = \"\"\n[web.http]\nlisten = \"127.0.0.1:0\"\n[internal]\nlisten = \"127.0.0.1:0\"\n\
         [limits]\nbytes_buffered_per_session = \"64KiB\"\nbytes_in_flight_per_subscriber = \"256KiB\"\n",
    );
    let publisher = session(&relay, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/cam", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let (_reader, mut reader) = common::cluster::subscriber(&relay, "demo/cam").await;
    // Max latency 30 s: nothing goes stale, only the byte bound drops groups.
    let stalled = common::bare::stalled_subscriber(&relay, 30_000).await;
    // 4 MiB in 16 KiB frames, four per group: far past both bounds for the stalled one.
    let frame = interop::Bytes::from(vec![7u8; 16 << 10]);
    let groups = 64;
    let writer = tokio::spawn(async move {
        for _ in 0..groups {
            track
                .write_group(std::iter::repeat_n(frame.clone(), 4))
                .expect("group");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        track
    });
    // The reading subscriber gets every frame of every group, unhindered.
    let mut frames = 0;
    while frames < groups * 4 {
        match reader
            .next_within(Duration::from_secs(10))
            .await
            .expect("event")
        {
            TrackEvent::Frame(_) => frames += 1,
            TrackEvent::GroupEnd { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let _track = writer.await.unwrap();
    // The stalled one lost its oldest groups to the byte bound, its session untouched.
    wait_counter(&relay, "moq_relayd_groups_dropped_total", "", 1.0);
    assert!(
        stalled.close_reason().is_none(),
        "the stalled session stays"
    );
}
