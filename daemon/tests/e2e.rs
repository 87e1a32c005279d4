//! End to end: the real `moq-relayd` binary on 127.0.0.1 between publishers and
//! subscribers built on the reference moq-lite client (moq-net / moq-tokio), so an
//! independent implementation is on both ends.

mod common;

use std::time::Duration;

use common::Running;
use interop::rogue::RogueSession;
use interop::{
    AnnounceEvent, Bytes, ConnectOptions, Session, TlsTrust, TrackEvent, TrackSubscriber,
    connect_with,
};

const PUBLIC_TWO_WORKERS: &str = "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 2\n[auth]\npublic = \"\"\n";

/// A payload unique to (group, frame) in content and size, some larger than a packet.
fn payload(group: u64, frame: u64) -> Bytes {
    let len = if frame == 0 {
        20_000
    } else {
        1 + ((group * 31 + frame * 7) % 1500) as usize
    };
    let mut x = group.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ frame ^ 0x5555;
    Bytes::from(
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>(),
    )
}

async fn open(url: &str, options: ConnectOptions) -> Session {
    connect_with(url, options)
        .await
        .unwrap_or_else(|err| panic!("connect {url}: {err}"))
}

/// A session of its own scoped to `demo`, subscribed to track `video` of `path`.
async fn watch(url: &str, options: ConnectOptions, path: &str) -> (Session, TrackSubscriber) {
    let session = open(url, options.subscribe_only("demo")).await;
    let sub = session
        .subscribe(path, "video")
        .await
        .unwrap_or_else(|err| panic!("subscribe to {path}: {err}"));
    (session, sub)
}

fn trust(relay: &Running) -> TlsTrust {
    TlsTrust::Fingerprint(relay.fingerprint.clone())
}

/// Reads one whole group and checks it is `group`, complete, byte-identical, in order.
/// Returns the frames' timestamps (milliseconds).
async fn expect_group(sub: &mut TrackSubscriber, group: u64, frames: u64) -> Vec<u64> {
    let mut stamps = Vec::new();
    loop {
        match sub.next().await.expect("track event") {
            TrackEvent::Frame(frame) => {
                let index = stamps.len() as u64;
                assert_eq!((frame.group, frame.index), (group, index), "frame order");
                assert_eq!(
                    frame.payload,
                    payload(group, index),
                    "payload of group {group} frame {index}"
                );
                stamps.push(frame.timestamp_ms);
            }
            TrackEvent::GroupEnd {
                group: ended,
                frames: count,
            } => {
                assert_eq!((ended, count), (group, frames), "group end");
                return stamps;
            }
            other => panic!("expected group {group}, got {other:?}"),
        }
    }
}

/// Reads one whole group, whichever it is (moq-lite sends newer groups first, so a burst
/// may arrive in any group order), and checks it is complete, byte-identical and in
/// order. Returns its sequence.
async fn expect_any_group(sub: &mut TrackSubscriber, frames: u64) -> u64 {
    let mut current = None;
    let mut index = 0;
    loop {
        match sub.next().await.expect("track event") {
            TrackEvent::Frame(frame) => {
                let group = *current.get_or_insert(frame.group);
                assert_eq!((frame.group, frame.index), (group, index), "frame order");
                assert_eq!(
                    frame.payload,
                    payload(group, index),
                    "payload of group {group} frame {index}"
                );
                index += 1;
            }
            TrackEvent::GroupEnd {
                group,
                frames: count,
            } => {
                assert_eq!(count, frames, "frames in group {group}");
                assert!(current.is_none_or(|c| c == group));
                return group;
            }
            other => panic!("expected a group, got {other:?}"),
        }
    }
}

const FRAMES: u64 = 4;
/// How long one step of a fan-out test waits for every subscriber (a loaded 2-core CI
/// machine with 50 sessions per step).
const STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
const GROUPS: u64 = 6;

fn write_group(track: &interop::TrackPublisher, group: u64) {
    let written = track
        .write_group((0..FRAMES).map(|frame| payload(group, frame)))
        .expect("write group");
    assert_eq!(written, group);
}

/// A publisher of `path` (one track, `video`) and a subscriber session scoped to `demo`,
/// both over WebTransport.
struct Flow {
    publisher: Session,
    _broadcast: interop::BroadcastPublisher,
    track: interop::TrackPublisher,
    subscriber: Session,
}

async fn flow(relay: &Running, path: &str) -> Flow {
    let url = relay.https_url("");
    let publisher = open(&url, ConnectOptions::new(trust(relay)).publish_only()).await;
    let (broadcast, mut tracks) = publisher.publish(path, &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let subscriber = open(
        &url,
        ConnectOptions::new(trust(relay)).subscribe_only("demo"),
    )
    .await;
    Flow {
        publisher,
        _broadcast: broadcast,
        track,
        subscriber,
    }
}

/// One publisher, `subscribers` subscribers on their own connections, through the relay
/// at `url` with the client offering `versions` (empty: the client's default list).
/// Returns the negotiated version.
async fn fanout(relay: &Running, url: &str, versions: &[&str], subscribers: usize) -> String {
    let publisher = open(
        url,
        ConnectOptions::new(trust(relay))
            .with_versions(versions)
            .publish_only(),
    )
    .await;
    let version = publisher.version_name().expect("negotiated version");
    let (_broadcast, mut tracks) = publisher.publish("demo/fan", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(subscribers);
    let (go_tx, _) = tokio::sync::broadcast::channel::<u64>(4);
    for _ in 0..subscribers {
        let options = ConnectOptions::new(trust(relay))
            .with_versions(versions)
            .subscribe_only("demo");
        let url = url.to_owned();
        let ready = ready_tx.clone();
        let mut go = go_tx.subscribe();
        tasks.spawn(async move {
            let session = open(&url, options).await;
            let mut sub = session
                .subscribe("demo/fan", "video")
                .await
                .expect("subscribe");
            ready.send(()).await.unwrap();
            // Group 0 proves the subscription is live; the rest come as a burst.
            let _ = go.recv().await;
            expect_group(&mut sub, 0, FRAMES).await;
            ready.send(()).await.unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for _ in 1..GROUPS {
                assert!(
                    seen.insert(expect_any_group(&mut sub, FRAMES).await),
                    "a group arrived twice"
                );
            }
            assert_eq!(seen, (1..GROUPS).collect(), "every group of the burst");
            session.close().await;
        });
    }
    drop(ready_tx);
    // A subscriber task that panics never reports: wait for the others only so long,
    // then let its panic (from `join_next`) say what went wrong instead of hanging.
    let mut all_report = async |what: &str| {
        for n in 0..subscribers {
            match tokio::time::timeout(STEP_TIMEOUT, ready_rx.recv()).await {
                Ok(Some(())) => {}
                _ => {
                    tasks.abort_all();
                    while let Some(result) = tasks.join_next().await {
                        if let Err(err) = result
                            && err.is_panic()
                        {
                            std::panic::resume_unwind(err.into_panic());
                        }
                    }
                    panic!("only {n} of {subscribers} subscribers {what}");
                }
            }
        }
    };
    all_report("subscribed").await;
    go_tx.send(0).unwrap();
    write_group(&track, 0);
    all_report("got group 0").await;
    for group in 1..GROUPS {
        write_group(&track, group);
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("subscriber task");
    }
    publisher.close().await;
    version
}

const FANOUT: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_to_50_subscribers_over_webtransport() {
    let relay = Running::start(PUBLIC_TWO_WORKERS);
    let version = fanout(&relay, &relay.https_url(""), &[], FANOUT).await;
    assert_eq!(
        version, "moq-lite-06",
        "the client offers 06 first and the relay takes it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_to_50_subscribers_over_raw_quic_on_every_version() {
    let relay = Running::start(PUBLIC_TWO_WORKERS);
    for version in ["moq-lite-06", "moq-lite-05", "moq-lite-04", "moq-lite-03"] {
        let negotiated = fanout(&relay, &relay.quic_url(""), &[version], FANOUT).await;
        assert_eq!(negotiated, version);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_through_a_single_worker_on_both_transports() {
    let relay = Running::start(&PUBLIC_TWO_WORKERS.replace("workers = 2", "workers = 1"));
    fanout(&relay, &relay.https_url(""), &[], 10).await;
    fanout(&relay, &relay.quic_url(""), &["moq-lite-04"], 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_starts_at_the_newest_group() {
    for version in ["moq-lite-06", "moq-lite-05"] {
        late_joiner_on(version).await;
    }
}

async fn late_joiner_on(version: &str) {
    let relay = Running::start(PUBLIC_TWO_WORKERS);
    let options = || ConnectOptions::new(trust(&relay)).with_versions(&[version]);
    let url = relay.https_url("");
    let publisher = open(&url, options().publish_only()).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/late", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();

    // An early subscriber makes the relay pull the track, so its groups are cached.
    let (_early, mut early_sub) = watch(&url, options(), "demo/late").await;
    for group in 0..3 {
        write_group(&track, group);
        expect_group(&mut early_sub, group, FRAMES).await;
    }

    let (_late, mut late_sub) = watch(&url, options(), "demo/late").await;
    expect_group(&mut late_sub, 2, FRAMES).await;
    write_group(&track, 3);
    expect_group(&mut late_sub, 3, FRAMES).await;
    expect_group(&mut early_sub, 3, FRAMES).await;
}

fn unix_millis() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// Frame timestamps cross the relay unchanged on 05 and 06 (to a WebTransport and raw QUIC
/// subscribers), and frames from a 04 publisher, which carry none, reach a 06 subscriber
/// stamped with the wall-clock time they arrived at the relay (spec 5.11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_timestamps_cross_the_relay_and_04_frames_are_stamped_on_arrival() {
    // Not monotonic (a B-frame) and far from the publisher's own clock, so neither a
    // reordering nor a re-stamp can pass.
    const STAMPS: [u64; 4] = [90_000_000, 90_000_033, 90_000_016, 90_000_066];
    let relay = Running::start(PUBLIC_TWO_WORKERS);
    let webtransport = relay.https_url("");
    let raw_quic = relay.quic_url("");

    let publisher = open(
        &webtransport,
        ConnectOptions::new(trust(&relay)).publish_only(),
    )
    .await;
    let (_broadcast, mut tracks) = publisher
        .publish("demo/stamps", &["video"])
        .expect("publish");
    let track = tracks.pop().unwrap();
    let mut subscribers = Vec::new();
    for (url, versions, negotiated) in [
        (&webtransport, &[][..], "moq-lite-06"),
        (&raw_quic, &["moq-lite-05"][..], "moq-lite-05"),
        (&raw_quic, &["moq-lite-06"][..], "moq-lite-06"),
    ] {
        let options = ConnectOptions::new(trust(&relay)).with_versions(versions);
        let (session, sub) = watch(url, options, "demo/stamps").await;
        assert_eq!(session.version_name().as_deref(), Some(negotiated));
        subscribers.push((session, sub));
    }
    let mut group = track.append_group().expect("group");
    let sequence = group.sequence();
    for (index, &stamp) in STAMPS.iter().enumerate() {
        group
            .write_frame_at(stamp, payload(sequence, index as u64))
            .expect("frame");
    }
    group.finish().expect("finish");
    for (_, sub) in &mut subscribers {
        let stamps = expect_group(sub, sequence, STAMPS.len() as u64).await;
        assert_eq!(stamps, STAMPS, "timestamps through the relay");
    }

    let old = open(
        &raw_quic,
        ConnectOptions::new(trust(&relay))
            .with_versions(&["moq-lite-04"])
            .publish_only(),
    )
    .await;
    let (_bridged, mut tracks) = old.publish("demo/bridged", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let (_session, mut sub) = watch(
        &webtransport,
        ConnectOptions::new(trust(&relay)),
        "demo/bridged",
    )
    .await;
    let before = unix_millis();
    write_group(&track, 0);
    let stamps = expect_group(&mut sub, 0, FRAMES).await;
    let after = unix_millis();
    for stamp in &stamps {
        assert!(
            (before..=after).contains(stamp),
            "04 frame stamped {stamp}, not within its arrival window {before}..={after}"
        );
    }
    assert!(stamps.is_sorted(), "arrival stamps go forward: {stamps:?}");
}

/// A 05 or 06 subscriber that joined at the newest group FETCHes older ones: the relay
/// serves a cached group whole, timestamps included, and refuses one it no longer caches,
/// whichever worker each session landed on (the router asks the owner's cache when the
/// serving worker's own has no copy; `router/tests/fanout.rs` pins that case down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_serves_a_cached_group_whole_and_refuses_an_evicted_one() {
    for version in ["moq-lite-06", "moq-lite-05"] {
        fetch_on(version).await;
    }
}

async fn fetch_on(version: &str) {
    const CACHED_GROUPS: u64 = 4;
    let relay = Running::start(PUBLIC_TWO_WORKERS);
    let url = relay.https_url("");
    let publisher = open(&url, ConnectOptions::new(trust(&relay)).publish_only()).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/vod", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let (_early, mut early_sub) = watch(&url, ConnectOptions::new(trust(&relay)), "demo/vod").await;
    let mut stamps = Vec::new();
    for group in 0..=CACHED_GROUPS {
        write_group(&track, group);
        stamps.push(expect_group(&mut early_sub, group, FRAMES).await);
    }
    let pinned = ConnectOptions::new(trust(&relay)).with_versions(&[version]);
    let (late, mut late_sub) = watch(&url, pinned, "demo/vod").await;
    assert_eq!(late.version_name().as_deref(), Some(version));
    expect_group(&mut late_sub, CACHED_GROUPS, FRAMES).await;

    let oldest_cached = 1;
    let fetched = late_sub.fetch_group(oldest_cached).await.expect("fetch");
    let payloads: Vec<_> = fetched.iter().map(|f| f.payload.clone()).collect();
    let expected: Vec<_> = (0..FRAMES).map(|i| payload(oldest_cached, i)).collect();
    assert_eq!(payloads, expected, "the fetched group, whole and in order");
    let fetched_stamps: Vec<_> = fetched.iter().map(|f| f.timestamp_ms).collect();
    assert_eq!(fetched_stamps, stamps[oldest_cached as usize]);

    let evicted = late_sub.fetch_group(0).await;
    assert!(
        evicted.is_err(),
        "{version}: group 0 left the cache: {evicted:?}"
    );
}

/// Every pair of versions through one relay: a publisher on each of 06, 05, 04 and 03
/// reaches a subscriber on each of them (so a 06 publisher reaches 03/04/05 subscribers,
/// and 03/04/05 publishers reach a 06 one), whole groups, byte-identical, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_reaches_every_other_version_through_the_relay() {
    const VERSIONS: [&str; 4] = ["moq-lite-06", "moq-lite-05", "moq-lite-04", "moq-lite-03"];
    let relay = Running::start(PUBLIC_TWO_WORKERS);
    let url = relay.quic_url("");
    for published in VERSIONS {
        let path = format!("demo/cross-{published}");
        let publisher = open(
            &url,
            ConnectOptions::new(trust(&relay))
                .with_versions(&[published])
                .publish_only(),
        )
        .await;
        assert_eq!(publisher.version_name().as_deref(), Some(published));
        let (_broadcast, mut tracks) = publisher.publish(&path, &["video"]).expect("publish");
        let track = tracks.pop().unwrap();
        let mut subscribers = Vec::new();
        for subscribed in VERSIONS {
            let options = ConnectOptions::new(trust(&relay)).with_versions(&[subscribed]);
            let (session, sub) = watch(&url, options, &path).await;
            assert_eq!(session.version_name().as_deref(), Some(subscribed));
            subscribers.push((subscribed, session, sub));
        }
        for group in 0..3 {
            write_group(&track, group);
            for (subscribed, _, sub) in &mut subscribers {
                let within = tokio::time::timeout(STEP_TIMEOUT, expect_group(sub, group, FRAMES));
                within.await.unwrap_or_else(|_| {
                    panic!("{published} → {subscribed}: group {group} never came")
                });
            }
        }
        for (_, session, _) in subscribers {
            session.close().await;
        }
        publisher.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_discovery_sees_later_broadcasts_and_their_end_but_nothing_outside() {
    // 06 announces by implicit id (START/END), 05 by path with a status byte.
    for version in ["moq-lite-06", "moq-lite-05"] {
        prefix_discovery_on(version).await;
    }
}

async fn prefix_discovery_on(version: &str) {
    let relay = Running::start(PUBLIC_TWO_WORKERS);
    let options = || ConnectOptions::new(trust(&relay)).with_versions(&[version]);
    let url = relay.https_url("");
    let watcher = open(&url, options().subscribe_only("demo")).await;
    assert_eq!(watcher.version_name().as_deref(), Some(version));
    let mut announcements = watcher.announcements().unwrap();

    let other = open(&url, options().publish_only()).await;
    let (_other_broadcast, _) = other
        .publish("other/x", &["video"])
        .expect("publish other/x");
    let publisher = open(&url, options().publish_only()).await;
    let (_broadcast, _tracks) = publisher
        .publish("demo/a", &["video"])
        .expect("publish demo/a");

    let first = announcements.next().await.expect("an announcement");
    assert_eq!(first, AnnounceEvent::Announced("demo/a".into()));
    publisher.close().await;
    let next = announcements.next().await.expect("the end of demo/a");
    assert_eq!(next, AnnounceEvent::Ended("demo/a".into()));
    let quiet = announcements
        .next_within(Duration::from_millis(500))
        .await
        .expect("no error");
    assert_eq!(quiet, None, "{version}: nothing outside demo/ is announced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_publisher_loss_ends_the_broadcast_within_linger_plus_one_second() {
    const LINGER: Duration = Duration::from_secs(1);
    let relay = Running::start(&format!("{PUBLIC_TWO_WORKERS}[cluster]\nlinger = \"1s\"\n"));
    let Flow {
        publisher,
        _broadcast,
        track,
        subscriber,
    } = flow(&relay, "demo/crash").await;
    let mut announcements = subscriber.announcements().unwrap();
    announcements
        .wait_announced("demo/crash")
        .await
        .expect("announced");
    let mut sub = subscriber
        .subscribe("demo/crash", "video")
        .await
        .expect("subscribe");
    write_group(&track, 0);
    expect_group(&mut sub, 0, FRAMES).await;

    let crashed = std::time::Instant::now();
    publisher.crash().await;
    announcements
        .wait_ended("demo/crash")
        .await
        .expect("the broadcast ends");
    let took = crashed.elapsed();
    assert!(
        took >= LINGER,
        "the broadcast lingers for a reconnecting publisher ({took:?})"
    );
    assert!(
        took <= LINGER + Duration::from_secs(1),
        "ended {took:?} after the crash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_auth_section_sessions_are_refused() {
    let relay =
        Running::start("[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n");
    let url = relay.https_url("");
    let refused = match connect_with(&url, ConnectOptions::new(trust(&relay)).publish_only()).await
    {
        Err(err) => err.to_string(),
        Ok(session) => session
            .closed(Duration::from_secs(10))
            .await
            .expect("closed")
            .expect_err("refused"),
    };
    // The client's wording of the refusal varies with timing (the close can race its
    // SETUP); the relay's log says which rule refused it.
    assert!(!refused.is_empty());
    let line = relay.relay.wait_for_line("session refused");
    assert!(line.contains("no anonymous access"), "{line}");
}

/// Garbage after a valid stream type on the streams a session is steered by: a raw-QUIC
/// 04 Subscribe stream whose SUBSCRIBE cannot be parsed, and WebTransport 05 and 06 Setup
/// streams whose SETUP cannot be parsed. (Random bytes as the stream type itself are an
/// unknown type, which moq-lite says to refuse per stream, so they prove less.) The last
/// field is the session close code for a protocol violation on that version: 15 in the
/// section 6 table of 03–05, 3 in moq-net 0.3.18's session registry on 06 (spec 12.11).
const GARBAGE_STREAMS: [(&str, bool, &[u8], u64); 3] = [
    (
        "moq-lite-04",
        true,
        &[0x02, 0x04, 0xff, 0xff, 0xff, 0xff],
        15,
    ),
    ("moq-lite-05", false, &[0x01, 0x03, 0xff, 0xff, 0xff], 15),
    ("moq-lite-06", false, &[0x01, 0x03, 0xff, 0xff, 0xff], 3),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_control_stream_closes_that_session_and_no_other() {
    let relay = Running::start(PUBLIC_TWO_WORKERS);
    let Flow {
        publisher,
        _broadcast,
        track,
        subscriber,
    } = flow(&relay, "demo/steady").await;
    let mut sub = subscriber
        .subscribe("demo/steady", "video")
        .await
        .expect("subscribe");

    let rogue_trust = trust(&relay);
    let (quic_url, https_url) = (relay.quic_url(""), relay.https_url(""));
    let rogues = tokio::spawn(async move {
        let mut closes = Vec::new();
        for (version, raw, garbage, violation) in GARBAGE_STREAMS {
            let url = if raw { &quic_url } else { &https_url };
            let mut rogue =
                RogueSession::connect(url, &rogue_trust, version, Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|err| panic!("rogue {version} handshake: {err}"));
            if raw {
                rogue.send_bidi(garbage).await.expect("write garbage");
            } else {
                rogue.send_uni(garbage).await.expect("write garbage");
            }
            let close = rogue.closed(Duration::from_secs(10)).await.expect("closed");
            closes.push((version, violation, close));
        }
        closes
    });

    // Keep the flow going for as long as the rogues live, and a little after.
    let mut group = 0;
    let mut after = 3;
    while after > 0 {
        assert!(group < 1000, "the rogue sessions were never closed");
        if rogues.is_finished() {
            after -= 1;
        }
        write_group(&track, group);
        expect_group(&mut sub, group, FRAMES).await;
        group += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (version, violation, close) in rogues.await.expect("rogue task") {
        assert_eq!(
            close.code,
            Some(violation),
            "{version} rogue closed with {close:?}"
        );
        assert!(close.reason.contains("malformed"), "{close:?}");
    }
    publisher.close().await;
}
