//! A client that writes garbage, against the reference relay: what the reference does
//! is the yardstick for moq-relayd (issue 6 wants a protocol-error close while other
//! sessions lose nothing).

use std::net::SocketAddr;
use std::time::Duration;

use interop::reference_relay::{self, RelayConfig};
use interop::rogue::{CloseReason, RogueSession};
use interop::{Bytes, ConnectOptions, RELAY_VERSIONS, TrackEnd, TrackEvent, connect_with};

/// How long the relay gets to react to garbage.
const REACT: Duration = Duration::from_secs(5);

/// moq-net's session close code for a protocol violation (spec 12.11).
const PROTOCOL_VIOLATION: u64 = 0x3;

/// Groups the bystander flow carries after the garbage.
const GROUPS: u64 = 4;

/// A Setup uni stream (type 0x1) whose message is a length promising 5 bytes of
/// varints that all claim 8-byte encodings.
const BAD_SETUP: [u8; 7] = [0x01, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_setup_stream_closes_only_that_session() {
    let relay = reference_relay::start_with(
        RelayConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))).with_versions(&RELAY_VERSIONS),
    )
    .await
    .expect("relay");

    let publisher = connect_with(
        &relay.quic_url("anon"),
        ConnectOptions::new(relay.trust()).publish_only(),
    )
    .await
    .expect("publisher");
    let subscriber = connect_with(
        &relay.https_url("anon"),
        ConnectOptions::new(relay.trust()).subscribe_only("demo"),
    )
    .await
    .expect("subscriber");
    let (_broadcast, mut tracks) = publisher.publish("demo/a", &["t"]).expect("publish");
    let track = tracks.pop().expect("track");
    let mut sub = subscriber
        .subscribe("demo/a", "t")
        .await
        .expect("subscribe");
    track
        .write_group([Bytes::from_static(b"before")])
        .expect("group 0");
    let first = sub.next_group().await.expect("event").expect("group 0");
    assert_eq!(first.frames, [Bytes::from_static(b"before")]);

    for url in [relay.quic_url("anon"), relay.https_url("anon")] {
        let mut rogue = RogueSession::connect(&url, &relay.trust(), "moq-lite-05", REACT)
            .await
            .expect("rogue handshake");
        rogue.send_uni(&BAD_SETUP).await.expect("write garbage");
        let CloseReason { code, reason } = rogue.closed(REACT).await.expect("relay closes it");
        assert_eq!(code, Some(PROTOCOL_VIOLATION), "{url}: {reason}");
    }

    for group in 1..=GROUPS {
        track
            .write_group([Bytes::from(format!("after {group}"))])
            .expect("group");
    }
    for group in 1..=GROUPS {
        let received = sub.next_group().await.expect("event").expect("group");
        assert!(received.complete);
        assert_eq!(
            received.frames,
            [Bytes::from(format!("after {}", received.sequence))]
        );
        assert!((1..=GROUPS).contains(&received.sequence), "group {group}");
    }
    track.finish().expect("finish");
    assert_eq!(
        sub.next().await.expect("end"),
        TrackEvent::End(TrackEnd::Finished)
    );
    publisher.close().await;
    subscriber.close().await;
}
