//! Sessions for the auth tests: the rogue client (it reads the exact close, and on raw
//! QUIC 05 sends a SETUP carrying the path, query and Role the test chooses) and the
//! reference client, over WebTransport or raw QUIC 05.

use std::time::Duration;

use bytes::BytesMut;
use interop::rogue::{CloseReason, RogueSession};
use interop::{Bytes, ConnectOptions, Session, TlsTrust, TrackEvent, connect_with};
use proto::message::{Message, Setup, UniType};

use super::Running;

/// One step's bound on a loaded 2-core machine.
pub const STEP: Duration = Duration::from_secs(20);
/// How long a session must stay open to count as admitted.
pub const ADMITTED: Duration = Duration::from_millis(400);

pub fn trust(relay: &Running) -> TlsTrust {
    TlsTrust::Fingerprint(relay.fingerprint.clone())
}

/// `path?jwt=token` (or just the path).
pub fn target(path: &str, jwt: Option<&str>) -> String {
    match jwt {
        Some(jwt) => format!("{path}?jwt={jwt}"),
        None => path.to_owned(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    WebTransport,
    RawQuic05,
}

pub const BOTH: [Via; 2] = [Via::WebTransport, Via::RawQuic05];

pub fn url(relay: &Running, via: Via, target: &str) -> String {
    match via {
        Via::WebTransport => relay.https_url(target),
        Via::RawQuic05 => relay.quic_url(target),
    }
}

/// A moq-lite-05 session from the rogue client at `target` (the CONNECT URL on
/// WebTransport; the SETUP Path on raw QUIC, sent with `role`).
pub async fn rogue(relay: &Running, via: Via, target: &str, role: Option<u64>) -> RogueSession {
    rogue_as(relay, via, target, role, None).await
}

/// [`rogue`] presenting a client certificate (`cert`, `key` PEM files).
pub async fn rogue_as(
    relay: &Running,
    via: Via,
    target: &str,
    role: Option<u64>,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> RogueSession {
    let (url, setup_path) = match via {
        Via::WebTransport => (relay.https_url(target), None),
        Via::RawQuic05 => (relay.quic_url(""), Some(target.to_owned())),
    };
    let mut session = RogueSession::connect_as(&url, &trust(relay), "moq-lite-05", STEP, identity)
        .await
        .unwrap_or_else(|err| panic!("rogue {via:?} {}: {err}", target_shown(target)));
    if via == Via::RawQuic05 || role.is_some() {
        let setup = Setup {
            path: setup_path,
            role,
            ..Setup::default()
        };
        let mut bytes = BytesMut::new();
        proto::coding::put_varint(&mut bytes, "type", UniType::Setup.id()).unwrap();
        setup.encode(proto::Version::Lite05, &mut bytes).unwrap();
        // The relay may already have closed a WebTransport session it refused.
        let sent = session.send_uni(&bytes).await;
        assert!(sent.is_ok() || via == Via::WebTransport, "SETUP: {sent:?}");
    }
    session
}

/// The target without its token, for messages.
pub fn target_shown(target: &str) -> &str {
    target.split('?').next().unwrap_or_default()
}

/// The close the relay sends a session at `target`.
pub async fn refusal(relay: &Running, via: Via, target: &str, role: Option<u64>) -> CloseReason {
    let session = rogue(relay, via, target, role).await;
    session
        .closed(STEP)
        .await
        .unwrap_or_else(|err| panic!("{via:?} {} was not closed: {err}", target_shown(target)))
}

pub async fn assert_refused(
    relay: &Running,
    target: &str,
    role: Option<u64>,
    code: u64,
    why: &str,
) {
    for via in BOTH {
        let close = refusal(relay, via, target, role).await;
        assert_eq!(close.code, Some(code), "{why} over {via:?}: {close:?}");
        assert_eq!(close.reason, "unauthorized", "{why} over {via:?}");
    }
}

pub async fn assert_admitted(relay: &Running, target: &str, role: Option<u64>, why: &str) {
    for via in BOTH {
        let session = rogue(relay, via, target, role).await;
        let closed = session.closed(ADMITTED).await;
        assert!(closed.is_err(), "{why} over {via:?} was closed: {closed:?}");
    }
}

pub async fn open(url: &str, options: ConnectOptions) -> Session {
    connect_with(url, options.with_versions(&["moq-lite-05"]))
        .await
        .unwrap_or_else(|err| panic!("connect {}: {err}", target_shown(url)))
}

/// A reference-client publisher dialed at `publish_at` (raw QUIC 05) publishes
/// `alice/video`; a subscriber dialed at `subscribe_at` (WebTransport) is told of it,
/// subscribes, and receives the group `payload` the publisher then writes.
pub async fn one_group_crosses(
    relay: &Running,
    publish_at: &str,
    subscribe_at: &str,
    payload: &'static [u8],
) {
    let options = ConnectOptions::new(trust(relay));
    let publisher = open(
        &url(relay, Via::RawQuic05, publish_at),
        options.clone().publish_only(),
    )
    .await;
    let (_alice, mut tracks) = publisher.publish("alice", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let subscriber = open(
        &url(relay, Via::WebTransport, subscribe_at),
        options.subscribe_only(""),
    )
    .await;
    let mut announced = subscriber.announcements().expect("announcements");
    announced.wait_announced("alice").await.expect("alice");
    let mut sub = subscriber.subscribe("alice", "video").await.expect("sub");
    track
        .write_group([Bytes::from_static(payload)])
        .expect("group");
    match sub.next_within(STEP).await.expect("a frame") {
        TrackEvent::Frame(frame) => assert_eq!(frame.payload, Bytes::from_static(payload)),
        other => panic!("expected a frame, got {other:?}"),
    }
    subscriber.close().await;
    publisher.close().await;
}
