//! The harness against the in-process reference relay (moq-tokio server + moq-net
//! origin), on 127.0.0.1 with an ephemeral port and a generated self-signed
//! certificate. These prove the harness itself, before moq-relayd exists.

use std::net::SocketAddr;
use std::time::Duration;

use interop::reference_relay::{self, ReferenceRelay, RelayConfig};
use interop::{
    AnnounceEvent, Bytes, ConnectOptions, Error, RELAY_VERSIONS, Session, TlsTrust, TrackEnd,
    TrackEvent, Transport, connect_with,
};

/// Groups and frames per group published by the data tests: enough to cross group
/// boundaries and stream reuse, small enough for a 2-core machine.
const GROUPS: u64 = 6;
const FRAMES_PER_GROUP: u64 = 5;

/// Bound on the end-of-track signal on 03/04 (two 5 s graces through one relay, plus
/// slack for a loaded machine).
const PRE_05_END_GRACE: Duration = Duration::from_secs(20);

/// How long a negative check ("nothing else is announced") waits.
const QUIET: Duration = Duration::from_millis(500);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A payload that differs per (group, frame) in both content and size, including one
/// frame larger than a QUIC packet and a flow-control window's worth of small ones.
fn payload(group: u64, frame: u64) -> Bytes {
    payload_with_head(group, frame, 200_000)
}

/// As [`payload`] with a 2 kB first frame, for tests with many subscribers: a debug
/// build of the in-process relay on a shared 2-core box moves only a few MB/s.
fn small_payload(group: u64, frame: u64) -> Bytes {
    payload_with_head(group, frame, 2_000)
}

fn payload_with_head(group: u64, frame: u64, head: usize) -> Bytes {
    let len = match frame {
        0 => head,
        _ => 1 + ((group * 31 + frame * 7) % 1500) as usize,
    };
    let mut bytes = Vec::with_capacity(len);
    let mut x = group.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ frame;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.push(x as u8);
    }
    Bytes::from(bytes)
}

async fn relay(versions: &[&str]) -> ReferenceRelay {
    // RUST_LOG=moq_net=debug shows the reference client's side of a failure.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    reference_relay::start_with(RelayConfig::new(loopback()).with_versions(versions))
        .await
        .expect("reference relay starts")
}

type Payload = fn(u64, u64) -> Bytes;

fn write_groups(track: &interop::TrackPublisher, groups: std::ops::Range<u64>, payload: Payload) {
    for group in groups {
        let sequence = track
            .write_group((0..FRAMES_PER_GROUP).map(|frame| payload(group, frame)))
            .expect("write group");
        assert_eq!(sequence, group);
    }
}

/// Read until `count` more groups have ended, checking every frame.
async fn receive_groups(
    sub: &mut interop::TrackSubscriber,
    count: u64,
    next_index: &mut [u64],
    ended: &mut [bool],
    payload: Payload,
) {
    let mut done = 0;
    while done < count {
        match sub.next().await.expect("track event") {
            TrackEvent::Frame(frame) => {
                let slot = frame.group as usize;
                assert!(slot < ended.len(), "unexpected group {}", frame.group);
                assert_eq!(frame.index, next_index[slot], "frame order in group {slot}");
                assert_eq!(
                    frame.payload,
                    payload(frame.group, frame.index),
                    "payload of group {} frame {}",
                    frame.group,
                    frame.index
                );
                next_index[slot] += 1;
            }
            TrackEvent::GroupEnd { group, frames } => {
                assert_eq!(frames, FRAMES_PER_GROUP, "frames in group {group}");
                ended[group as usize] = true;
                done += 1;
            }
            TrackEvent::GroupReset { group, reason, .. } => {
                panic!("group {group} was reset: {reason}")
            }
            TrackEvent::End(end) => panic!("track ended early: {end:?}"),
        }
    }
}

async fn open(url: &str, options: ConnectOptions) -> Session {
    connect_with(url, options).await.expect("session connects")
}

/// Publish GROUPS groups on `demo/a`/`video` through `url_pub`, read them through
/// `url_sub`, and check every frame is byte-identical and in order within its group.
async fn publish_and_receive(relay: &ReferenceRelay, url: &str, versions: &[&str]) -> String {
    let trust = relay.trust();
    let publisher = open(
        url,
        ConnectOptions::new(trust.clone())
            .with_versions(versions)
            .publish_only(),
    )
    .await;
    let subscriber = open(
        url,
        ConnectOptions::new(trust)
            .with_versions(versions)
            .subscribe_only("demo"),
    )
    .await;
    let negotiated = publisher.version_name().expect("publisher version");
    assert_eq!(
        subscriber.version_name().as_deref(),
        Some(negotiated.as_str())
    );

    let (broadcast, mut tracks) = publisher.publish("demo/a", &["video"]).expect("publish");
    let track = tracks.pop().expect("one track");
    let mut sub = subscriber
        .subscribe("demo/a", "video")
        .await
        .expect("subscribe");

    // Group 0 first, read in full, then the rest in a burst. Up to 05 the reference
    // publisher starts a fresh subscription at whatever group is newest when it first
    // has one to serve, so a burst written at once would arrive as its last group only.
    let mut ended = vec![false; GROUPS as usize];
    let mut next_index = vec![0u64; GROUPS as usize];
    write_groups(&track, 0..1, payload);
    receive_groups(&mut sub, 1, &mut next_index, &mut ended, payload).await;
    write_groups(&track, 1..GROUPS, payload);
    receive_groups(&mut sub, GROUPS - 1, &mut next_index, &mut ended, payload).await;

    // Finish only after everything arrived: the reference relay cancels its upstream
    // subscription as soon as the track's end is known, even with a group still in
    // flight (see the crate README), which would cut the tail of a burst.
    // 03 and 04 have no SUBSCRIBE_END: a subscriber that sees the subscribe stream FIN
    // waits out a grace (its max age, clamped to the publisher's 5 s) for group streams
    // still in flight, once per hop, so the end shows up about 10 s later through a
    // relay. On 05 and later it is prompt.
    track.finish().expect("finish track");
    let end_within = match negotiated.as_str() {
        "moq-lite-03" | "moq-lite-04" => PRE_05_END_GRACE,
        _ => subscriber.op_timeout(),
    };
    assert_eq!(
        sub.next_within(end_within).await.expect("end of track"),
        TrackEvent::End(TrackEnd::Finished)
    );
    assert!(ended.iter().all(|e| *e), "every group ended: {ended:?}");
    drop(broadcast);
    subscriber.close().await;
    publisher.close().await;
    negotiated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_arrive_byte_identical_and_in_order_over_webtransport() {
    let relay = relay(&[]).await;
    let version = publish_and_receive(&relay, &relay.https_url("anon"), &[]).await;
    assert_eq!(
        version, "moq-lite-06",
        "client and reference both default to 06"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_arrive_byte_identical_and_in_order_over_raw_quic() {
    let relay = relay(&[]).await;
    let version = publish_and_receive(&relay, &relay.quic_url("anon"), &[]).await;
    assert_eq!(version, "moq-lite-06");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_client_falls_back_to_lite_05_when_relay_lacks_06() {
    let relay = relay(&RELAY_VERSIONS).await;
    for url in [relay.https_url("anon"), relay.quic_url("anon")] {
        let version = publish_and_receive(&relay, &url, &[]).await;
        assert_eq!(version, "moq-lite-05", "over {url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_versions_04_and_03_carry_data_over_both_transports() {
    let relay = relay(&RELAY_VERSIONS).await;
    for version in ["moq-lite-04", "moq-lite-03"] {
        for url in [relay.https_url("anon"), relay.quic_url("anon")] {
            let negotiated = publish_and_receive(&relay, &url, &[version]).await;
            assert_eq!(negotiated, version, "over {url}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pinned_to_06_fails_against_a_relay_without_06() {
    let relay = relay(&RELAY_VERSIONS).await;
    for url in [relay.https_url("anon"), relay.quic_url("anon")] {
        let mut options = ConnectOptions::new(relay.trust()).with_versions(&["moq-lite-06"]);
        options.connect_timeout = Duration::from_secs(5);
        let result = connect_with(&url, options).await;
        assert!(
            matches!(result, Err(Error::Connect { .. })),
            "{url}: {:?}",
            result.err()
        );
        if let Err(err) = result {
            eprintln!("{url}: {err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_follows_the_url_scheme() {
    let relay = relay(&RELAY_VERSIONS).await;
    let wt = open(&relay.https_url("anon"), ConnectOptions::new(relay.trust())).await;
    let raw = open(&relay.quic_url("anon"), ConnectOptions::new(relay.trust())).await;
    assert_eq!(wt.transport(), Transport::WebTransport);
    assert_eq!(raw.transport(), Transport::RawQuic);
    wt.close().await;
    raw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_fingerprint_is_refused_and_insecure_is_accepted() {
    let relay = relay(&RELAY_VERSIONS).await;
    let wrong = TlsTrust::Fingerprint("00".repeat(32));
    let mut options = ConnectOptions::new(wrong);
    options.connect_timeout = Duration::from_secs(5);
    let refused = connect_with(&relay.https_url("anon"), options).await;
    assert!(
        matches!(refused, Err(Error::Connect { .. })),
        "{:?}",
        refused.err()
    );

    let insecure = open(
        &relay.https_url("anon"),
        ConnectOptions::new(TlsTrust::InsecureSkipVerify),
    )
    .await;
    assert_eq!(insecure.version_name().as_deref(), Some("moq-lite-05"));
    insecure.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_discovery_sees_demo_a_but_not_other_x() {
    let relay = relay(&RELAY_VERSIONS).await;
    let url = relay.https_url("anon");
    let subscriber = open(
        &url,
        ConnectOptions::new(relay.trust()).subscribe_only("demo/"),
    )
    .await;
    let mut announcements = subscriber.announcements().expect("announcements");
    assert_eq!(announcements.next_within(QUIET).await.expect("feed"), None);

    let publisher = open(&url, ConnectOptions::new(relay.trust()).publish_only()).await;
    let (other, _other_tracks) = publisher
        .publish("other/x", &["t"])
        .expect("publish other/x");
    let (demo, _demo_tracks) = publisher.publish("demo/a", &["t"]).expect("publish demo/a");

    assert_eq!(
        announcements.next().await.expect("announce"),
        AnnounceEvent::Announced("demo/a".into())
    );
    assert_eq!(
        announcements.next_within(QUIET).await.expect("feed"),
        None,
        "only demo/a"
    );

    demo.finish();
    assert_eq!(
        announcements.next().await.expect("end"),
        AnnounceEvent::Ended("demo/a".into())
    );
    other.finish();
    assert_eq!(
        announcements.next_within(QUIET).await.expect("feed"),
        None,
        "never other/x"
    );
    publisher.close().await;
    subscriber.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_publisher_crash_ends_the_broadcast_for_the_subscriber() {
    let relay = relay(&RELAY_VERSIONS).await;
    let url = relay.quic_url("anon");
    let publisher = open(&url, ConnectOptions::new(relay.trust()).publish_only()).await;
    let subscriber = open(
        &url,
        ConnectOptions::new(relay.trust()).subscribe_only("demo"),
    )
    .await;
    let mut announcements = subscriber.announcements().expect("announcements");

    let (_broadcast, mut tracks) = publisher.publish("demo/a", &["video"]).expect("publish");
    let track = tracks.pop().expect("one track");
    announcements
        .wait_announced("demo/a")
        .await
        .expect("announced");
    let mut sub = subscriber
        .subscribe("demo/a", "video")
        .await
        .expect("subscribe");

    track.write_group([payload(0, 1)]).expect("first group");
    let first = sub.next_group().await.expect("event").expect("a group");
    assert_eq!((first.sequence, first.complete), (0, true));
    let mut open_group = track.append_group().expect("second group");
    open_group.write_frame(payload(1, 1)).expect("frame");
    match sub.next().await.expect("first frame of the open group") {
        TrackEvent::Frame(frame) => assert_eq!((frame.group, frame.index), (1, 0)),
        other => panic!("expected frame 0 of group 1, got {other:?}"),
    }

    // The broadcast, track and open group are still alive on the publisher side: only
    // the connection dies.
    publisher.crash().await;

    announcements
        .wait_ended("demo/a")
        .await
        .expect("unannounced after crash");
    let reason = sub
        .broadcast_ended(Duration::from_secs(5))
        .await
        .expect("broadcast ends after crash");
    let mut events = Vec::new();
    let started = std::time::Instant::now();
    loop {
        let event = sub.next().await.expect("track event");
        if let TrackEvent::End(end) = event {
            assert!(
                matches!(end, TrackEnd::Aborted(_)),
                "track must not look finished: {end:?}"
            );
            break;
        }
        assert!(events.len() < 16, "track never ended: {events:?}");
        events.push(event);
    }
    drop((open_group, track));
    eprintln!(
        "broadcast ended with {reason:?}; track ended {:?} later after {events:?}",
        started.elapsed()
    );
    subscriber.close().await;
}

/// QUIC idle timeout the vanishing publisher advertises; QUIC takes the smaller of both
/// ends', so the relay drops the silent peer after this long.
const VANISH_IDLE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silently_vanished_publisher_ends_the_broadcast_after_the_idle_timeout() {
    let relay = relay(&RELAY_VERSIONS).await;
    let proxy = interop::cut_proxy::CutProxy::start(relay.local_addr())
        .await
        .expect("proxy starts");
    let mut options = ConnectOptions::new(relay.trust()).publish_only();
    options.idle_timeout = Some(VANISH_IDLE);
    let publisher = open(&format!("https://{}/anon", proxy.local_addr()), options).await;
    let subscriber = open(
        &relay.https_url("anon"),
        ConnectOptions::new(relay.trust()).subscribe_only("demo"),
    )
    .await;
    let mut announcements = subscriber.announcements().expect("announcements");

    let (_broadcast, mut tracks) = publisher.publish("demo/a", &["video"]).expect("publish");
    let track = tracks.pop().expect("one track");
    announcements
        .wait_announced("demo/a")
        .await
        .expect("announced");
    let mut sub = subscriber
        .subscribe("demo/a", "video")
        .await
        .expect("subscribe");
    track.write_group([payload(0, 1)]).expect("group");
    let first = sub.next_group().await.expect("event").expect("a group");
    assert_eq!((first.sequence, first.complete), (0, true));

    // No CONNECTION_CLOSE: from the relay's side the publisher just goes quiet.
    proxy.cut();
    let started = std::time::Instant::now();
    announcements
        .wait_ended("demo/a")
        .await
        .expect("unannounced after the idle timeout");
    sub.broadcast_ended(Duration::from_secs(5))
        .await
        .expect("broadcast ends");
    eprintln!("vanished publisher noticed after {:?}", started.elapsed());
    drop(track);
    subscriber.close().await;
    drop(publisher);
}

/// Subscribers in the fan-out test: enough to exercise the relay's fan-out and the
/// harness's concurrency, few enough for a shared 2-core machine in debug builds.
const FANOUT_SUBSCRIBERS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_of_a_fan_out_receives_every_frame_in_order() {
    let relay = relay(&RELAY_VERSIONS).await;
    let publisher = open(
        &relay.quic_url("anon"),
        ConnectOptions::new(relay.trust()).publish_only(),
    )
    .await;
    let (_broadcast, mut tracks) = publisher.publish("demo/a", &["video"]).expect("publish");
    let track = tracks.pop().expect("one track");

    // Half over WebTransport, half over raw QUIC; all subscribed before any group.
    let mut subscribers = Vec::new();
    for i in 0..FANOUT_SUBSCRIBERS {
        let url = match i % 2 {
            0 => relay.https_url("anon"),
            _ => relay.quic_url("anon"),
        };
        let session = open(
            &url,
            ConnectOptions::new(relay.trust()).subscribe_only("demo"),
        )
        .await;
        assert_eq!(session.version_name().as_deref(), Some("moq-lite-05"));
        let sub = session
            .subscribe("demo/a", "video")
            .await
            .expect("subscribe");
        subscribers.push((session, sub));
    }

    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(2 * FANOUT_SUBSCRIBERS);
    let mut readers = tokio::task::JoinSet::new();
    for (session, mut sub) in subscribers {
        let done = done_tx.clone();
        readers.spawn(async move {
            let mut next_index = vec![0u64; GROUPS as usize];
            let mut ended = vec![false; GROUPS as usize];
            receive_groups(&mut sub, 1, &mut next_index, &mut ended, small_payload).await;
            done.send(()).await.expect("main task waits");
            receive_groups(
                &mut sub,
                GROUPS - 1,
                &mut next_index,
                &mut ended,
                small_payload,
            )
            .await;
            done.send(()).await.expect("main task waits");
            let end = sub.next().await.expect("end of track");
            session.close().await;
            end
        });
    }
    // Group 0 alone first: up to 05 the reference publisher starts a subscription at
    // whatever group is newest when it first has one to serve, so a burst into a
    // fresh subscription arrives as its last group only (see publish_and_receive).
    write_groups(&track, 0..1, small_payload);
    for _ in 0..FANOUT_SUBSCRIBERS {
        tokio::time::timeout(Duration::from_secs(30), done_rx.recv())
            .await
            .expect("every reader gets group 0")
            .expect("readers alive");
    }
    write_groups(&track, 1..GROUPS, small_payload);
    // Finish once every reader has every group (see publish_and_receive for why).
    for _ in 0..FANOUT_SUBSCRIBERS {
        tokio::time::timeout(Duration::from_secs(30), done_rx.recv())
            .await
            .expect("every reader gets every group")
            .expect("readers alive");
    }
    track.finish().expect("finish");
    while let Some(joined) = readers.join_next().await {
        assert_eq!(
            joined.expect("reader task"),
            TrackEvent::End(TrackEnd::Finished)
        );
    }
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_on_05_starts_at_the_newest_group_from_its_first_frame() {
    let relay = relay(&RELAY_VERSIONS).await;
    let url = relay.quic_url("anon");
    let publisher = open(&url, ConnectOptions::new(relay.trust()).publish_only()).await;
    let early = open(
        &url,
        ConnectOptions::new(relay.trust()).subscribe_only("demo"),
    )
    .await;
    let (_broadcast, mut tracks) = publisher.publish("demo/a", &["t"]).expect("publish");
    let track = tracks.pop().expect("track");

    // An early subscriber keeps the relay's upstream subscription (and cache) alive.
    let mut early_sub = early.subscribe("demo/a", "t").await.expect("subscribe");
    write_groups(&track, 0..1, small_payload);
    let mut next_index = vec![0u64; GROUPS as usize];
    let mut ended = vec![false; GROUPS as usize];
    receive_groups(
        &mut early_sub,
        1,
        &mut next_index,
        &mut ended,
        small_payload,
    )
    .await;
    write_groups(&track, 1..3, small_payload);
    receive_groups(
        &mut early_sub,
        2,
        &mut next_index,
        &mut ended,
        small_payload,
    )
    .await;
    let mut open_group = track.append_group().expect("group 3");
    open_group
        .write_frame(small_payload(3, 0))
        .expect("frame 0");
    open_group
        .write_frame(small_payload(3, 1))
        .expect("frame 1");

    let late = open(
        &url,
        ConnectOptions::new(relay.trust()).subscribe_only("demo"),
    )
    .await;
    assert_eq!(late.version_name().as_deref(), Some("moq-lite-05"));
    let mut late_sub = late.subscribe("demo/a", "t").await.expect("late subscribe");
    for index in 0..2 {
        match late_sub.next().await.expect("event") {
            TrackEvent::Frame(frame) => {
                assert_eq!((frame.group, frame.index), (3, index));
                assert_eq!(frame.payload, small_payload(3, index));
            }
            other => panic!("late joiner expected frame {index} of group 3, got {other:?}"),
        }
    }
    open_group
        .write_frame(small_payload(3, 2))
        .expect("frame 2");
    open_group.finish().expect("finish group 3");
    match late_sub.next().await.expect("event") {
        TrackEvent::Frame(frame) => assert_eq!((frame.group, frame.index), (3, 2)),
        other => panic!("expected frame 2 of group 3, got {other:?}"),
    }
    assert_eq!(
        late_sub.next().await.expect("event"),
        TrackEvent::GroupEnd {
            group: 3,
            frames: 3
        }
    );
    late.close().await;
    early.close().await;
    publisher.close().await;
}

/// Idle sessions in the dialer test: a tenth of issue 6's 1000, to keep this suite
/// quick on a shared machine; the code path is the same.
const IDLE_SESSIONS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dialer_holds_many_idle_sessions_over_one_endpoint() {
    let relay = relay(&RELAY_VERSIONS).await;
    let dialer = interop::Dialer::new(
        &relay.quic_url("anon"),
        ConnectOptions::new(relay.trust()).subscribe_only("idle"),
    )
    .expect("dialer");
    let started = std::time::Instant::now();
    let mut sessions = Vec::with_capacity(IDLE_SESSIONS);
    for _ in 0..IDLE_SESSIONS {
        sessions.push(dialer.dial().await.expect("idle session"));
    }
    eprintln!("{IDLE_SESSIONS} sessions in {:?}", started.elapsed());
    // The relay counts a session when its accept loop gets to it, which can trail the
    // client's view of the handshake by a moment.
    for _ in 0..500 {
        if relay.sessions_accepted() == IDLE_SESSIONS as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(relay.sessions_accepted(), IDLE_SESSIONS as u64);

    // Closing one session leaves the others (and the shared endpoint) alive.
    let first = sessions.remove(0);
    first.close().await;
    let last = sessions.last().expect("sessions left");
    assert_eq!(last.version_name().as_deref(), Some("moq-lite-05"));
    let publisher = open(
        &relay.quic_url("anon"),
        ConnectOptions::new(relay.trust()).publish_only(),
    )
    .await;
    let (_broadcast, mut tracks) = publisher.publish("idle/x", &["t"]).expect("publish");
    let track = tracks.pop().expect("track");
    let mut sub = last
        .subscribe("idle/x", "t")
        .await
        .expect("subscribe on a shared endpoint");
    track
        .write_group([Bytes::from_static(b"still alive")])
        .expect("group");
    let group = sub.next_group().await.expect("event").expect("group");
    assert_eq!(group.frames, [Bytes::from_static(b"still alive")]);

    dialer.close().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_relay_roots_each_session_at_its_request_path() {
    let relay = relay(&RELAY_VERSIONS).await;
    let publisher = open(
        &relay.https_url("anon"),
        ConnectOptions::new(relay.trust()).publish_only(),
    )
    .await;
    let at_root = open(
        &relay.quic_url(""),
        ConnectOptions::new(relay.trust()).subscribe_only("anon"),
    )
    .await;
    let at_anon = open(
        &relay.quic_url("anon"),
        ConnectOptions::new(relay.trust()).subscribe_only(""),
    )
    .await;
    let mut seen_from_root = at_root.announcements().expect("feed");
    let mut seen_from_anon = at_anon.announcements().expect("feed");
    let (_broadcast, _tracks) = publisher.publish("bbb", &["t"]).expect("publish");
    assert_eq!(
        seen_from_root.next().await.expect("announce"),
        AnnounceEvent::Announced("anon/bbb".into())
    );
    assert_eq!(
        seen_from_anon.next().await.expect("announce"),
        AnnounceEvent::Announced("bbb".into())
    );
    publisher.close().await;
    at_root.close().await;
    at_anon.close().await;
}
