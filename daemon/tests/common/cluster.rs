//! Relays linked on loopback for the cluster tests: their configs, the links between
//! them, and reference-client sessions on them.

use std::net::SocketAddr;
use std::time::Duration;

use interop::{
    Bytes, ConnectOptions, Session, TlsTrust, TrackEvent, TrackSubscriber, connect_with,
};

use super::http::{Ops, start};

/// One step's bound on a loaded 2-core machine.
pub const STEP: Duration = Duration::from_secs(20);

/// A `[server]` table on any free port with a generated certificate.
pub const ANY_PORT: &str = "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n";

/// A relay with HTTP listeners (for its metrics), open to everyone, linked to `peers`.
pub fn relay(id: u64, peers: &[&Ops]) -> Ops {
    let peers: Vec<Link> = peers.iter().map(|peer| link(peer, 0)).collect();
    start(&relay_config(id, &peers, ANY_PORT))
}

/// A peer to dial: its address, its pinned certificate fingerprint, its `?cost=`.
pub type Link<'a> = (SocketAddr, &'a str, u64);

pub fn link(peer: &Ops, cost: u64) -> Link<'_> {
    (peer.quic, peer.fingerprint.as_str(), cost)
}

/// A `[server]` table that a restarted relay can have again: a port picked now and a
/// certificate written to `dir`.
pub fn fixed_server(dir: &std::path::Path) -> String {
    fixed(dir).server
}

/// A relay's address and certificate, known before it starts.
pub struct Fixed {
    /// Its `[server]` table.
    pub server: String,
    pub port: u16,
    pub fingerprint: String,
}

pub fn fixed(dir: &std::path::Path) -> Fixed {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Fixed {
        server: format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\ntls.cert = [{:?}]\ntls.key = [{:?}]\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
        port,
        fingerprint: quic_io::tls::fingerprint(certified.cert.der()),
    }
}

/// `server` (its `[server]` table) plus: open to everyone, HTTP listeners, links to
/// `peers`.
pub fn relay_config(id: u64, peers: &[Link], server: &str) -> String {
    let mut config = format!(
        "{server}[runtime]\nworkers = 2\n[auth]\npublic = \"\"\n[web.http]\nlisten = \"127.0.0.1:0\"\n\
         [internal]\nlisten = \"127.0.0.1:0\"\n[cluster]\nid = {id}\nlinger = \"10s\"\n"
    );
    if !peers.is_empty() {
        let urls: Vec<String> = peers
            .iter()
            .map(|(addr, _, cost)| match cost {
                0 => format!("\"https://{addr}/\""),
                cost => format!("\"https://{addr}/?cost={cost}\""),
            })
            .collect();
        let pins: Vec<String> = peers
            .iter()
            .map(|(_, pin, _)| format!("\"{pin}\""))
            .collect();
        config.push_str(&format!(
            "connect = [{}]\n[client.tls]\nfingerprint = [{}]\n",
            urls.join(", "),
            pins.join(", ")
        ));
    }
    config
}

pub async fn session(ops: &Ops, options: impl FnOnce(ConnectOptions) -> ConnectOptions) -> Session {
    let url = format!("https://{}/", ops.quic);
    let trust = TlsTrust::Fingerprint(ops.fingerprint.clone());
    connect_with(&url, options(ConnectOptions::new(trust)))
        .await
        .unwrap_or_else(|err| panic!("connect {url}: {err}"))
}

pub fn payload(group: u64, frame: u64) -> Bytes {
    Bytes::from(format!("group {group} frame {frame}").into_bytes())
}

/// A subscriber on `ops` that waits until `broadcast` is announced there, then
/// subscribes to its `video`.
pub async fn subscriber(ops: &Ops, broadcast: &str) -> (Session, TrackSubscriber) {
    let session = session(ops, |o| o.subscribe_only("")).await;
    let mut announced = session.announcements().expect("announcements");
    tokio::time::timeout(STEP, announced.wait_announced(broadcast))
        .await
        .expect("announced across the link in time")
        .expect("announced");
    let sub = session
        .subscribe(broadcast, "video")
        .await
        .expect("subscribe");
    (session, sub)
}

/// Waits for the next frame of `sub`, skipping group ends.
pub async fn next_frame(sub: &mut TrackSubscriber) {
    loop {
        match tokio::time::timeout(STEP, sub.next())
            .await
            .expect("in time")
            .expect("event")
        {
            TrackEvent::Frame(_) => return,
            TrackEvent::GroupEnd { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Writes one-frame groups on `track` every 100 ms (40 at most) until `sub` has a frame.
pub async fn a_frame_reaches(track: interop::TrackPublisher, sub: &mut TrackSubscriber) {
    let writer = tokio::spawn(async move {
        for group in 0..40 {
            track.write_group([payload(group, 0)]).expect("group");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    next_frame(sub).await;
    writer.abort();
}

/// A broadcast published on `origin` reaches a subscriber on `leaf`.
pub async fn crosses(origin: &Ops, leaf: &Ops, broadcast: &str) {
    let publisher = session(origin, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish(broadcast, &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let (_subscriber, mut sub) = subscriber(leaf, broadcast).await;
    a_frame_reaches(track, &mut sub).await;
}

/// Every frame of `sub` until `stop`, as (group, index, arrival), each payload checked.
/// A group cut short (reset) is allowed here; callers check what they expect whole.
pub async fn frames_until(
    mut sub: TrackSubscriber,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(u64, u64, std::time::Instant)> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return seen,
            event = tokio::time::timeout(STEP, sub.next()) => {
                event.expect("in time").expect("event")
            }
        };
        match event {
            TrackEvent::Frame(got) => {
                assert_eq!(got.payload, payload(got.group, got.index));
                seen.push((got.group, got.index, std::time::Instant::now()));
            }
            TrackEvent::GroupEnd { .. } | TrackEvent::GroupReset { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The (group, index) of each frame, in arrival order.
pub fn frame_ids(seen: &[(u64, u64, std::time::Instant)]) -> Vec<(u64, u64)> {
    seen.iter()
        .map(|&(group, index, _)| (group, index))
        .collect()
}
