//! `[stats]` through the real binary, read by moq-stats' own consumer (the reader
//! moq-relay 0.17's stats broadcasts are made for): what a publisher sent and a
//! subscriber received shows per broadcast path on `subscriber.json` and
//! `publisher.json`, the sessions per auth root on `sessions.json`, the deflated `.z`
//! siblings decode to the same maps, and the broadcast stays hidden from announce
//! discovery unless asked for by its prefix.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::flow::Flow;
use common::http::start;
use interop::{AnnounceEvent, ConnectOptions, Session, TlsTrust, connect_with};
use moq_stats::consume::Config as ConsumerConfig;
use moq_stats::{Role, Tier, TrafficFrame};

const CONFIG: &str = "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[web.http]\nlisten = \"127.0.0.1:0\"\n[internal]\nlisten = \"127.0.0.1:0\"\n[runtime]\nworkers = 2\n[auth]\npublic = \"\"\n[stats]\nenabled = true\nnode = \"edge/1\"\ninterval = 1\n";

const STATS_BROADCAST: &str = ".stats/node/edge/1";

/// The latest traffic map until `done` holds for it (15 s at most).
async fn traffic_until(
    reader: &Session,
    role: Role,
    compressed: bool,
    done: impl Fn(&TrafficFrame) -> bool,
) -> TrafficFrame {
    let broadcast = reader
        .broadcast(STATS_BROADCAST)
        .await
        .expect("stats broadcast");
    let consumer = moq_stats::Consumer::new(
        broadcast,
        ConsumerConfig::new().with_compression(compressed),
    );
    let mut track = consumer
        .traffic(&Tier::default(), role)
        .await
        .expect("traffic track");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = BTreeMap::new();
    while Instant::now() < deadline {
        match tokio::time::timeout_at(deadline.into(), track.next()).await {
            Ok(Ok(Some(frame))) => {
                if done(&frame) {
                    return frame;
                }
                last = frame;
            }
            Ok(other) => panic!("stats track ended: {other:?}"),
            Err(_) => break,
        }
    }
    panic!("{role:?} (compressed {compressed}) never reached the expected counts; last {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moq_stats_reads_per_path_and_per_root_counts_and_the_broadcast_is_hidden() {
    let ops = start(CONFIG);
    let url = format!("https://{}/", ops.quic);
    let trust = || TlsTrust::Fingerprint(ops.fingerprint.clone());
    let mut flow = Flow::start(&ops).await;
    flow.group(&[1000, 1000, 1000], 7).await;
    flow.group(&[500], 8).await;

    let reader = connect_with(&url, ConnectOptions::new(trust()).subscribe_only(".stats"))
        .await
        .expect("stats reader connects");
    let carried = |frame: &TrafficFrame| {
        frame
            .get("demo/cam")
            .is_some_and(|t| t.bytes == 3500 && t.frames == 4 && t.groups == 2)
    };
    for compressed in [false, true] {
        let egress = traffic_until(&reader, Role::Publisher, compressed, carried).await;
        let cam = &egress["demo/cam"];
        assert_eq!(
            (cam.subscriptions_started, cam.broadcasts_started),
            (1, 1),
            "one subscriber viewing"
        );
        let ingress = traffic_until(&reader, Role::Subscriber, compressed, carried).await;
        let cam = &ingress["demo/cam"];
        assert_eq!(cam.announces_started, 1, "announced once by its publisher");
        assert_eq!(cam.subscriptions_started, 1, "one upstream subscription");
        assert!(
            !egress
                .keys()
                .chain(ingress.keys())
                .any(|path| path.starts_with(".stats")),
            "reading the stats is not counted: {egress:?}"
        );
    }

    // A track the stats broadcast does not carry (a named tier: this relay has one tier)
    // is refused rather than left waiting.
    let unknown = reader
        .subscribe(STATS_BROADCAST, "gold/publisher.json")
        .await;
    assert!(unknown.is_err(), "an unknown stats track is refused");

    // Sessions by auth root: publisher, subscriber and the reader are all under "".
    let broadcast = reader.broadcast(STATS_BROADCAST).await.unwrap();
    let consumer = moq_stats::Consumer::new(broadcast, ConsumerConfig::new());
    let mut sessions = consumer
        .sessions(&Tier::default())
        .await
        .expect("sessions track");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), sessions.next())
            .await
            .expect("sessions within 15 s")
            .expect("sessions frame")
            .expect("sessions track open");
        if let Some(root) = frame.get("")
            && root.sessions_started >= 3
        {
            assert_eq!(root.sessions_ended, 0);
            break;
        }
    }

    // Hidden: a subscriber of everything is not told about `.stats/…`, while the reader
    // (whose prefix names `.stats`) was.
    let everyone = connect_with(&url, ConnectOptions::new(trust()).subscribe_only(""))
        .await
        .expect("subscriber of everything connects");
    let mut announced = everyone.announcements().expect("announcements");
    let mut seen = Vec::new();
    while let Ok(Some(event)) = announced.next_within(Duration::from_secs(2)).await {
        if let AnnounceEvent::Announced(path) = event {
            seen.push(path);
        }
    }
    assert_eq!(seen, ["demo/cam"], "only the media broadcast is discovered");

    // When the flow ends, its path is shown once more with its final counts, then gone.
    let broadcast = reader.broadcast(STATS_BROADCAST).await.unwrap();
    let consumer = moq_stats::Consumer::new(broadcast, ConsumerConfig::new());
    let mut ingress = consumer
        .traffic(&Tier::default(), Role::Subscriber)
        .await
        .expect("traffic track");
    flow.close().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut final_seen = false;
    let mut seen = Vec::new();
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), ingress.next())
            .await
            .expect("the path's end within 15 s")
            .expect("traffic frame")
            .expect("traffic track open");
        seen.push(frame.get("demo/cam").cloned());
        match frame.get("demo/cam") {
            Some(cam)
                if cam.announces_ended == cam.announces_started
                    && cam.subscriptions_ended == cam.subscriptions_started =>
            {
                assert_eq!(cam.bytes, 3500, "final counts kept");
                final_seen = true;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert!(
        final_seen,
        "the final counts were shown before the path went: {seen:?}"
    );
    everyone.close().await;
    reader.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_depth_each_bucket_has_its_own_broadcast_which_ends_after_its_linger() {
    let config = CONFIG.replace(
        "node = \"edge/1\"\n",
        "node = \"edge\"\ndepth = 1\nlinger = \"2s\"\n",
    );
    let ops = start(&config);
    let url = format!("https://{}/", ops.quic);
    let trust = || TlsTrust::Fingerprint(ops.fingerprint.clone());
    let reader = connect_with(&url, ConnectOptions::new(trust()).subscribe_only(".stats"))
        .await
        .expect("stats reader connects");
    let mut announced = reader.announcements().expect("announcements");
    let mut flow = Flow::start(&ops).await;
    flow.group(&[700], 1).await;

    let bucket = ".stats/demo/node/edge";
    let broadcast = reader
        .broadcast(bucket)
        .await
        .expect("the demo bucket's broadcast");
    let consumer = moq_stats::Consumer::new(broadcast, ConsumerConfig::new());
    let mut egress = consumer
        .traffic(&Tier::default(), Role::Publisher)
        .await
        .expect("traffic track");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), egress.next())
            .await
            .expect("the bucket's counts within 15 s")
            .expect("traffic frame")
            .expect("traffic track open");
        if frame.get("demo/cam").is_some_and(|t| t.bytes == 700) {
            break;
        }
    }

    // Empty once the flow ends, the bucket's broadcast goes after its 2 s linger.
    flow.close().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match announced.next_within(remaining).await {
            Ok(Some(AnnounceEvent::Ended(path))) if path == bucket => break,
            Ok(Some(_)) => {}
            other => panic!("the bucket's broadcast did not end: {other:?}"),
        }
    }
    reader.close().await;
}
