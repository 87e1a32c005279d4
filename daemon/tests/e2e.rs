//! End to end: the real `moq-relayd` binary on 127.0.0.1 between publishers and
//! subscribers built on the reference moq-lite client (moq-net / moq-tokio), so an
//! independent implementation is on both ends.

mod common;

use std::time::Duration;

use common::Running;
use interop::{Bytes, ConnectOptions, Session, TlsTrust, TrackEnd, TrackEvent, connect_with};

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

fn trust(relay: &Running) -> TlsTrust {
    TlsTrust::Fingerprint(relay.fingerprint.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_reaches_a_subscriber_byte_identical() {
    let relay = Running::start(PUBLIC_TWO_WORKERS);
    let url = relay.https_url("");
    let publisher = open(&url, ConnectOptions::new(trust(&relay)).publish_only()).await;
    let subscriber = open(
        &url,
        ConnectOptions::new(trust(&relay)).subscribe_only("demo"),
    )
    .await;
    assert_eq!(publisher.version_name().as_deref(), Some("moq-lite-05"));

    let (_broadcast, mut tracks) = publisher.publish("demo/a", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let mut announcements = subscriber.announcements().unwrap();
    announcements
        .wait_announced("demo/a")
        .await
        .expect("demo/a announced");
    let mut sub = subscriber
        .subscribe("demo/a", "video")
        .await
        .expect("subscribe");

    const GROUPS: u64 = 5;
    const FRAMES: u64 = 4;
    for group in 0..GROUPS {
        track
            .write_group((0..FRAMES).map(|frame| payload(group, frame)))
            .unwrap();
        let mut index = 0;
        loop {
            match sub.next().await.expect("track event") {
                TrackEvent::Frame(frame) => {
                    assert_eq!((frame.group, frame.index), (group, index));
                    assert_eq!(frame.payload, payload(group, index));
                    index += 1;
                }
                TrackEvent::GroupEnd {
                    group: ended,
                    frames,
                } => {
                    assert_eq!((ended, frames), (group, FRAMES));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    track.finish().unwrap();
    assert_eq!(
        sub.next_within(Duration::from_secs(10)).await.expect("end"),
        TrackEvent::End(TrackEnd::Finished)
    );
}
