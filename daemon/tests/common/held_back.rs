//! One live viewer held back on a ~3.9 Mbit/s track (30 frames/s of 16 KiB, a group
//! every 10) while five subscribers read it directly: the scenario the impairment-proxy
//! and tbf tests share. The caller holds the viewer back (a proxy it dials through, or a
//! qdisc on its port) and judges the outcome.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use interop::{ConnectOptions, TlsTrust, TrackEvent, connect_with};

use super::cluster::session;
use super::http::{Ops, get};

const FRAME: usize = 16 << 10;
const FRAMES_PER_GROUP: u64 = 10;
pub const TRACK_GROUPS: u64 = 24;
const DIRECT: usize = 5;
/// The viewer wants no group more than this behind the newest.
const VIEWER_MAX_AGE: Duration = Duration::from_secs(1);

/// The relay config for this scenario: two workers, a 256 KiB byte bound per subscriber.
pub const CONFIG: &str = "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n\
    [runtime]\nworkers = 2\n[auth]\npublic = \"\"\n[web.http]\nlisten = \"127.0.0.1:0\"\n\
    [internal]\nlisten = \"127.0.0.1:0\"\n[limits]\nbytes_in_flight_per_subscriber = \"256KiB\"\n";

pub struct Outcome {
    /// Groups the viewer got any frame of.
    pub viewer_groups: usize,
    /// The direct subscribers' p99 latency, each of them having lost nothing.
    pub direct_p99: Duration,
    pub peak_rss: u64,
    /// Groups the relay reset as stale (`moq_relayd_groups_expired_total`), at least 1.
    pub expired: f64,
}

/// The remote ports of the sessions the relay lists (`/sessions`).
fn remote_ports(relay: &Ops) -> Vec<u16> {
    let body = get(relay.internal, "/sessions").body;
    let sessions: serde_json::Value = serde_json::from_str(&body).expect("/sessions JSON");
    sessions["sessions"]
        .as_array()
        .expect("a sessions array")
        .iter()
        .filter_map(|s| s["remote"].as_str()?.parse::<SocketAddr>().ok())
        .map(|a| a.port())
        .collect()
}

async fn subscriber(
    relay: &Ops,
    dial: SocketAddr,
    max_age: Duration,
) -> (interop::Session, interop::TrackSubscriber) {
    let options = ConnectOptions::new(TlsTrust::Fingerprint(relay.fingerprint.clone()))
        .subscribe_only("")
        .with_op_timeout(Duration::from_secs(20));
    let session = connect_with(&format!("https://{dial}/"), options)
        .await
        .expect("connects");
    let mut announced = session.announcements().expect("announcements");
    announced
        .wait_announced("demo/big")
        .await
        .expect("announced");
    let options = interop::SubscribeOptions {
        max_age,
        ..Default::default()
    };
    let sub = session
        .subscribe_with("demo/big", "video", options)
        .await
        .expect("subscribe");
    (session, sub)
}

/// Every frame until `stop`, as (group, index, arrival); reset groups are allowed.
async fn read(
    (session, mut sub): (interop::Session, interop::TrackSubscriber),
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(u64, u64, Instant)> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::select! {
            _ = stop.changed() => { drop(session); return seen; }
            event = tokio::time::timeout(Duration::from_secs(20), sub.next()) => {
                event.expect("in time").expect("event")
            }
        };
        match event {
            TrackEvent::Frame(got) => seen.push((got.group, got.index, Instant::now())),
            TrackEvent::GroupEnd { .. } | TrackEvent::GroupReset { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Runs the scenario: the viewer dials `viewer_dial` (the relay, or a proxy in front of
/// it) and `hold_back` is called with its port as the relay sees it once it subscribed.
/// Asserts that the direct subscribers lost nothing and that the relay reset stale
/// groups; returns the rest to judge.
pub async fn run(relay: &Ops, viewer_dial: SocketAddr, hold_back: impl FnOnce(u16)) -> Outcome {
    let publisher = session(relay, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/big", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let before = remote_ports(relay);
    let viewer = subscriber(relay, viewer_dial, VIEWER_MAX_AGE).await;
    let new: Vec<u16> = remote_ports(relay)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 1, "the viewer's session: {new:?}");
    hold_back(new[0]);
    let slow = tokio::spawn(read(viewer, stopped.clone()));
    let mut direct = tokio::task::JoinSet::new();
    for _ in 0..DIRECT {
        direct.spawn(read(
            subscriber(relay, relay.quic, Duration::from_secs(30)).await,
            stopped.clone(),
        ));
    }

    let written: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stamps = written.clone();
    let writer = tokio::spawn(async move {
        for group in 0..TRACK_GROUPS {
            stamps.lock().unwrap().push(Instant::now());
            let mut writer = track.append_group().expect("group");
            for index in 0..FRAMES_PER_GROUP {
                let mut bytes = vec![(group as u8) ^ (index as u8); FRAME];
                bytes[..16].copy_from_slice(&[group.to_le_bytes(), index.to_le_bytes()].concat());
                writer.write_frame(bytes.into()).expect("frame");
                tokio::time::sleep(Duration::from_millis(33)).await;
            }
            writer.finish().expect("finish");
        }
        track
    });
    let mut peak_rss = 0;
    while !writer.is_finished() {
        peak_rss = peak_rss.max(super::rss_kib(relay.relay.pid()) * 1024);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _track = writer.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();

    let written = written.lock().unwrap().clone();
    let mut latencies = Vec::new();
    while let Some(seen) = direct.join_next().await {
        let seen = seen.unwrap();
        let first = seen.first().expect("frames").0;
        let got: Vec<(u64, u64)> = seen.iter().map(|(g, i, _)| (*g, *i)).collect();
        let want: Vec<(u64, u64)> = (first..TRACK_GROUPS)
            .flat_map(|group| (0..FRAMES_PER_GROUP).map(move |index| (group, index)))
            .collect();
        assert_eq!(got, want, "a direct subscriber lost frames");
        latencies.extend(seen.iter().map(|(group, index, at)| {
            *at - (written[*group as usize] + Duration::from_millis(33 * index))
        }));
    }
    latencies.sort_unstable();
    let viewer_groups = slow
        .await
        .unwrap()
        .iter()
        .map(|(group, ..)| *group)
        .collect::<BTreeSet<u64>>()
        .len();
    // The relay itself reset what the viewer's max age made stale (spec 8.5), rather than
    // send it a backlog its link cannot carry.
    let expired = |m: &HashMap<String, f64>| {
        m.iter()
            .filter(|(series, _)| series.starts_with("moq_relayd_groups_expired_total{"))
            .map(|(_, value)| value)
            .sum::<f64>()
    };
    let metrics = super::scrape::wait_for(relay, |m| expired(m) >= 1.0);
    Outcome {
        viewer_groups,
        direct_p99: latencies[latencies.len() * 99 / 100],
        peak_rss,
        expired: expired(&metrics),
    }
}

impl Outcome {
    /// What both tests require: the viewer could not get everything, the direct
    /// subscribers did not wait longer, the relay's memory stayed bounded.
    pub fn assert_held_back_alone(&self) {
        assert!(
            (self.viewer_groups as u64) < TRACK_GROUPS,
            "a quarter of the bandwidth does not carry every group"
        );
        assert!(
            self.direct_p99 < Duration::from_millis(250),
            "direct subscribers slowed: p99 {:?}",
            self.direct_p99
        );
        assert!(
            self.peak_rss < 200 << 20,
            "relay RSS {} MiB",
            self.peak_rss >> 20
        );
    }
}
