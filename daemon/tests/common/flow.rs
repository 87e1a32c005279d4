//! One reference-client publisher and one subscriber through the relay over
//! WebTransport, for the tests that need traffic to exist before they read counters.

use std::time::Duration;

use interop::{
    BroadcastPublisher, Bytes, ConnectOptions, Session, TlsTrust, TrackEvent, TrackPublisher,
    TrackSubscriber, connect_with,
};

use super::http::Ops;

/// A publisher of `demo/cam` (track `video`) and a subscriber to it.
pub struct Flow {
    publisher: Session,
    _broadcast: BroadcastPublisher,
    track: TrackPublisher,
    subscriber: Session,
    sub: TrackSubscriber,
}

impl Flow {
    pub async fn start(ops: &Ops) -> Flow {
        let url = format!("https://{}/", ops.quic);
        let trust = || TlsTrust::Fingerprint(ops.fingerprint.clone());
        let publisher = connect_with(&url, ConnectOptions::new(trust()).publish_only())
            .await
            .expect("publisher connects");
        let (broadcast, mut tracks) = publisher.publish("demo/cam", &["video"]).expect("publish");
        let track = tracks.pop().unwrap();
        let subscriber = connect_with(&url, ConnectOptions::new(trust()).subscribe_only("demo"))
            .await
            .expect("subscriber connects");
        let sub = subscriber
            .subscribe("demo/cam", "video")
            .await
            .expect("subscribe");
        Flow {
            publisher,
            _broadcast: broadcast,
            track,
            subscriber,
            sub,
        }
    }

    /// Writes one group of frames of these lengths and waits (10 s at most) until the
    /// subscriber has them all.
    pub async fn group(&mut self, lengths: &[usize], fill: u8) {
        let frames: Vec<Bytes> = lengths
            .iter()
            .map(|&len| Bytes::from(vec![fill; len]))
            .collect();
        self.track.write_group(frames).expect("write a group");
        let mut received = 0;
        while received < lengths.len() {
            match tokio::time::timeout(Duration::from_secs(10), self.sub.next())
                .await
                .expect("frames within 10 s")
                .expect("track event")
            {
                TrackEvent::Frame(_) => received += 1,
                // A late-join replay of an earlier group may end first.
                TrackEvent::GroupEnd { .. } if received > 0 => break,
                _ => {}
            }
        }
        assert_eq!(received, lengths.len(), "frames of the group");
    }

    pub async fn close(self) {
        drop(self.sub);
        self.subscriber.close().await;
        self.publisher.close().await;
    }
}
