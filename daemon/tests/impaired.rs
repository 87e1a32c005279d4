//! Subscribers behind a lossy, slow, reordering path (2 % loss, 40 ms delay and up to
//! 10 ms of jitter each way, from the tests' own impairment proxy: this kernel has no
//! netem), through the real binary: QUIC recovers every loss, so each subscriber gets
//! every frame of every group from the one it joined at, within a stated latency bound.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{payload, session};
use common::http::start;
use interop::impair_proxy::{ImpairProxy, Impairment};
use interop::{ConnectOptions, TlsTrust, TrackEvent, connect_with};

const SUBSCRIBERS: usize = 10;
const GROUPS: u64 = 100;
const FRAMES: u64 = 3;
const GROUP_INTERVAL: Duration = Duration::from_millis(50);
/// The one-way delay (80 ms round trip) plus two lost-packet recoveries (each about a
/// round trip and a half) plus jitter and a loaded machine's scheduling: a frame is
/// never later than this after it was written.
const LATENCY_BOUND: Duration = Duration::from_millis(800);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_two_percent_loss_and_forty_ms_every_frame_arrives_in_bounded_time() {
    let relay = start(
        "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 2\n\
         [auth]\npublic = \"\"\n[web.http]\nlisten = \"127.0.0.1:0\"\n[internal]\nlisten = \"127.0.0.1:0\"\n",
    );
    let proxy = ImpairProxy::start(
        relay.quic,
        Impairment {
            loss: 0.02,
            delay: Duration::from_millis(40),
            jitter: Duration::from_millis(10),
            seed: 2026,
            ..Impairment::none()
        },
    )
    .await
    .unwrap();
    let publisher = session(&relay, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/cam", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();

    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..SUBSCRIBERS {
        let url = format!("https://{}/", proxy.local_addr());
        let options = ConnectOptions::new(TlsTrust::Fingerprint(relay.fingerprint.clone()))
            .subscribe_only("")
            .with_op_timeout(Duration::from_secs(20));
        let session = connect_with(&url, options)
            .await
            .expect("through the proxy");
        let mut announced = session.announcements().expect("announcements");
        announced
            .wait_announced("demo/cam")
            .await
            .expect("announced");
        let mut sub = session
            .subscribe("demo/cam", "video")
            .await
            .expect("subscribe");
        readers.spawn(async move {
            let mut seen: Vec<(u64, u64, Instant)> = Vec::new();
            let mut next_index = std::collections::HashMap::new();
            loop {
                let event = tokio::time::timeout(Duration::from_secs(20), sub.next())
                    .await
                    .expect("in time")
                    .expect("event");
                match event {
                    TrackEvent::Frame(got) => {
                        let next = next_index.entry(got.group).or_insert(got.index);
                        assert_eq!(got.index, *next, "frames of group {} in order", got.group);
                        *next += 1;
                        assert_eq!(got.payload, payload(got.group, got.index));
                        seen.push((got.group, got.index, Instant::now()));
                        if got.group == GROUPS - 1 && got.index == FRAMES - 1 {
                            drop(session);
                            return seen;
                        }
                    }
                    TrackEvent::GroupEnd { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
    }

    let written: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stamps = written.clone();
    let writer = tokio::spawn(async move {
        for group in 0..GROUPS {
            stamps.lock().unwrap().push(Instant::now());
            track
                .write_group((0..FRAMES).map(|frame| payload(group, frame)))
                .expect("group");
            tokio::time::sleep(GROUP_INTERVAL).await;
        }
        track
    });

    let mut latencies = Vec::new();
    while let Some(read) = readers.join_next().await {
        let seen = read.expect("a subscriber read its frames in order");
        let first = seen.iter().map(|(group, ..)| *group).min().unwrap();
        assert!(first <= 5, "joined at group {first}");
        let mut got: Vec<(u64, u64)> = seen.iter().map(|(g, i, _)| (*g, *i)).collect();
        got.sort_unstable();
        let want: Vec<(u64, u64)> = (first..GROUPS)
            .flat_map(|group| (0..FRAMES).map(move |frame| (group, frame)))
            .collect();
        assert_eq!(got, want, "every frame arrived, once");
        let written = written.lock().unwrap();
        latencies.extend(
            seen.iter()
                .map(|(group, _, at)| *at - written[*group as usize]),
        );
    }
    let _track = writer.await.unwrap();
    latencies.sort_unstable();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    let max = *latencies.last().unwrap();
    let stats = proxy.stats();
    eprintln!(
        "impaired: {} frames, latency p50 {p50:?} p99 {p99:?} max {max:?}; proxy forwarded {} dropped {}",
        latencies.len(),
        stats.forwarded.load(std::sync::atomic::Ordering::Relaxed),
        stats.dropped.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(max < LATENCY_BOUND, "a frame took {max:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_held_to_a_quarter_of_the_track_falls_behind_alone() {
    // The live viewer (1 s max age) dials through a 1 Mbit/s link with a 64 KiB queue,
    // five subscribers directly. The viewer gets what its link carries and the rest is
    // reset as stale; the direct ones lose nothing and wait no longer; the relay's memory
    // stays flat. (The viewer's max age resets old groups, on the relay and in the
    // client, before the relay's own byte bound is reached: `groups_dropped` stays 0; the
    // router's tests cover that bound.)
    let relay = start(common::held_back::CONFIG);
    let proxy = ImpairProxy::start(
        relay.quic,
        Impairment {
            rate: Some(1_000_000),
            queue_bytes: 64 << 10,
            ..Impairment::none()
        },
    )
    .await
    .unwrap();
    let outcome = common::held_back::run(&relay, proxy.local_addr(), |_| {}).await;
    let stats = proxy.stats();
    eprintln!(
        "slow subscriber: {} of {} groups; relay expired {} groups; direct p99 {:?}; relay \
         peak RSS {} MiB; proxy forwarded {} dropped {}",
        outcome.viewer_groups,
        common::held_back::TRACK_GROUPS,
        outcome.expired,
        outcome.direct_p99,
        outcome.peak_rss >> 20,
        stats.forwarded.load(std::sync::atomic::Ordering::Relaxed),
        stats.dropped.load(std::sync::atomic::Ordering::Relaxed)
    );
    outcome.assert_held_back_alone();
}
