//! Admission under a flood, through the real binary (`[limits]`): 20 000 QUIC Initials
//! from raw sockets on another loopback address, while a reference-client publisher and
//! 50 subscribers run a flow. The flood's first handshakes fill its address's
//! `sessions_per_source` and are refused past it; past `handshakes_per_second` the rest
//! get Retries they never answer. The flow loses no frame.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{frame_ids, frames_until, payload, session, subscriber};
use common::http::{Ops, start};
use common::scrape::scrape;
use interop::ConnectOptions;

const INITIALS: usize = 20_000;
const SUBSCRIBERS: usize = 50;
/// The flood comes from here, so the flow's own address keeps its allowance.
const FLOOD_FROM: [u8; 4] = [127, 0, 0, 2];
/// Above the flow's 51 sessions from 127.0.0.1.
const PER_SOURCE: usize = 60;
const FRAMES: u64 = 2;

fn relay() -> Ops {
    start(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 2\n\
         [auth]\npublic = \"\"\n[web.http]\nlisten = \"127.0.0.1:0\"\n[internal]\nlisten = \"127.0.0.1:0\"\n\
         [limits]\nsessions_per_source = {PER_SOURCE}\nhandshakes_per_second = 200\n"
    ))
}

/// `count` distinct, valid client Initials for `server` (each a new connection attempt
/// with its own connection ID), built by a quinn-proto client endpoint nobody drives.
fn initials(server: SocketAddr, fingerprint: &str, count: usize) -> Vec<Vec<u8>> {
    let config = common::bare::bare_client_config(fingerprint);
    let mut endpoint = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let now = Instant::now();
    (0..count)
        .map(|_| {
            let (_, mut conn) = endpoint
                .connect(now, config.clone(), server, "localhost")
                .expect("connect");
            let mut buf = Vec::new();
            let sent = conn.poll_transmit(now, 1, &mut buf).expect("an Initial");
            buf.truncate(sent.size);
            buf
        })
        .collect()
}

/// Sends every datagram to `server` from a few sockets on `FLOOD_FROM`, spread over
/// `over`.
fn flood(server: SocketAddr, datagrams: Vec<Vec<u8>>, over: Duration) {
    let sockets: Vec<UdpSocket> = (0..8)
        .map(|_| UdpSocket::bind(SocketAddr::from((FLOOD_FROM, 0))).expect("bind 127.0.0.2"))
        .collect();
    let per_ms = datagrams.len().div_ceil(over.as_millis() as usize).max(1);
    let started = Instant::now();
    for (i, chunk) in datagrams.chunks(per_ms).enumerate() {
        for (j, datagram) in chunk.iter().enumerate() {
            // A full socket buffer drops the datagram, as a real flood's would be.
            let _ = sockets[(i + j) % sockets.len()].send_to(datagram, server);
        }
        let due = started + Duration::from_millis(i as u64 + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_initials_is_retried_or_refused_and_a_running_flow_loses_nothing() {
    let relay = relay();
    let publisher = session(&relay, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/cam", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut sessions = Vec::new();
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..SUBSCRIBERS {
        let (session, sub) = subscriber(&relay, "demo/cam").await;
        sessions.push(session);
        readers.spawn(frames_until(sub, stopped.clone()));
    }
    // The flow is running before the flood starts and after it ends.
    let writer = tokio::spawn(async move {
        for group in 0..120 {
            track
                .write_group((0..FRAMES).map(|frame| payload(group, frame)))
                .expect("group");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        track
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (server, pin) = (relay.quic, relay.fingerprint.clone());
    tokio::task::spawn_blocking(move || {
        let datagrams = initials(server, &pin, INITIALS);
        flood(server, datagrams, Duration::from_secs(2));
    })
    .await
    .unwrap();
    let _track = writer.await.expect("writer");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();

    // Every subscriber has every frame of every group from the one it joined at, each
    // group's frames in order. Groups may overtake each other (newer groups go first
    // under load: moq-lite orders frames within a group only), so they are compared by
    // number.
    while let Some(read) = readers.join_next().await {
        let mut seen = frame_ids(&read.expect("reader"));
        seen.sort_by_key(|&(group, _)| group);
        let first = seen.first().expect("frames").0;
        assert!(first <= 10, "joined at group {first}");
        let want: Vec<(u64, u64)> = (first..120)
            .flat_map(|group| (0..FRAMES).map(move |frame| (group, frame)))
            .collect();
        assert_eq!(
            seen, want,
            "a subscriber lost frames, or got a group's out of order"
        );
    }

    // Per-worker families, summed.
    let metrics = scrape(&relay);
    let total = |family: &str| -> f64 {
        metrics
            .iter()
            .filter(|(name, _)| name.starts_with(&format!("{family}{{")))
            .map(|(_, value)| value)
            .sum()
    };
    let retried = total("moq_relayd_retries_total");
    let per_source = total("moq_relayd_refused_per_source_total");
    let accepted = total("moq_relayd_handshakes_total");
    eprintln!(
        "flood: {INITIALS} Initials: {retried} retried, {per_source} refused per source, \
         {accepted} handshakes in all (the flow's {} included)",
        SUBSCRIBERS + 1
    );
    assert!(
        retried > 0.0,
        "past the handshake rate the flood was asked to Retry"
    );
    assert!(per_source > 0.0, "the flood's address hit its limit");
    assert_eq!(
        accepted,
        (SUBSCRIBERS + 1 + PER_SOURCE) as f64,
        "the flood held exactly its {PER_SOURCE} connections"
    );
}
