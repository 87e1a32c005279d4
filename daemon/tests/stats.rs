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
use interop::rogue::RogueSession;
use interop::{AnnounceEvent, ConnectOptions, Session, TlsTrust, connect_with};
use moq_stats::consume::Config as ConsumerConfig;
use moq_stats::{Role, Tier, TrafficFrame};
use proto::message::{AnnounceRequest, BidiType, Message};

const CONFIG: &str = "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[web.http]\nlisten = \"127.0.0.1:0\"\n[internal]\nlisten = \"127.0.0.1:0\"\n[runtime]\nworkers = 2\n[auth]\npublic = \"\"\n[stats]\nenabled = true\nnode = \"edge/1\"\ninterval = 1\n";

const STATS_BROADCAST: &str = ".stats/node/edge/1";

/// The traffic track of `role` on the stats broadcast at `broadcast`, read by moq-stats.
async fn traffic_track(
    reader: &Session,
    broadcast: &str,
    role: Role,
    compressed: bool,
) -> moq_stats::consume::Traffic {
    let broadcast = reader.broadcast(broadcast).await.expect("stats broadcast");
    moq_stats::Consumer::new(
        broadcast,
        ConsumerConfig::new().with_compression(compressed),
    )
    .traffic(&Tier::default(), role)
    .await
    .expect("traffic track")
}

/// The track's next (latest) map, `None` once `deadline` passes; the track ending is a
/// failure.
async fn next_traffic(
    track: &mut moq_stats::consume::Traffic,
    deadline: Instant,
) -> Option<TrafficFrame> {
    match tokio::time::timeout_at(deadline.into(), track.next()).await {
        Ok(Ok(Some(frame))) => Some(frame),
        Ok(other) => panic!("stats track ended: {other:?}"),
        Err(_) => None,
    }
}

/// The latest traffic map until `done` holds for it (15 s at most).
async fn traffic_until(
    reader: &Session,
    broadcast: &str,
    role: Role,
    compressed: bool,
    done: impl Fn(&TrafficFrame) -> bool,
) -> TrafficFrame {
    let mut track = traffic_track(reader, broadcast, role, compressed).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = BTreeMap::new();
    while let Some(frame) = next_traffic(&mut track, deadline).await {
        if done(&frame) {
            return frame;
        }
        last = frame;
    }
    panic!("{role:?} (compressed {compressed}) never reached the expected counts; last {last:?}");
}

/// The relay's first answer to a moq-lite-04 announce request for `prefix`: the
/// announcements it sends at once, as bytes.
async fn announcements_on_the_wire(url: &str, fingerprint: &str, prefix: &str) -> Vec<u8> {
    let trust = TlsTrust::Fingerprint(fingerprint.to_owned());
    let mut session = RogueSession::connect(url, &trust, "moq-lite-04", Duration::from_secs(5))
        .await
        .expect("moq-lite-04 session");
    let mut request = bytes::BytesMut::new();
    proto::coding::put_varint(&mut request, "type", BidiType::Announce.id()).unwrap();
    AnnounceRequest {
        prefix: prefix.into(),
        exclude_hop: 0,
    }
    .encode(proto::Version::Lite04, &mut request)
    .unwrap();
    session
        .request_bidi(&request, Duration::from_secs(5))
        .await
        .expect("the announce request is answered")
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
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
        let egress = traffic_until(
            &reader,
            STATS_BROADCAST,
            Role::Publisher,
            compressed,
            carried,
        )
        .await;
        let cam = &egress["demo/cam"];
        assert_eq!(
            (cam.subscriptions_started, cam.broadcasts_started),
            (1, 1),
            "one subscriber viewing"
        );
        let ingress = traffic_until(
            &reader,
            STATS_BROADCAST,
            Role::Subscriber,
            compressed,
            carried,
        )
        .await;
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

    // Hidden, on the wire: asked for announcements under "", the relay names the media
    // broadcast and not the stats one; asked under `.stats`, it names `node/edge/1`. (The
    // reference client's origin hides dot segments itself, so it cannot tell.)
    for (prefix, named, unnamed) in [
        ("", "demo/cam", ".stats"),
        (".stats", "node/edge/1", "demo"),
    ] {
        let answer = announcements_on_the_wire(&url, &ops.fingerprint, prefix).await;
        assert!(
            contains(&answer, named) && !contains(&answer, unnamed),
            "announcements under {prefix:?}: {}",
            String::from_utf8_lossy(&answer)
        );
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
    let mut ingress = traffic_track(&reader, STATS_BROADCAST, Role::Subscriber, false).await;
    flow.close().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut final_seen = false;
    let mut seen = Vec::new();
    loop {
        let frame = next_traffic(&mut ingress, deadline)
            .await
            .expect("the path's end within 15 s");
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
    traffic_until(&reader, bucket, Role::Publisher, false, |frame| {
        frame.get("demo/cam").is_some_and(|t| t.bytes == 700)
    })
    .await;

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
