//! `/fetch/{broadcast}/{track}?group=N|latest` and `/announced` on the public listener,
//! through the real binary with the reference client publishing: a group comes back as
//! its frames concatenated, the newest one for `latest`, from either worker's cache.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Relay;
use interop::{Bytes, ConnectOptions, TlsTrust, TrackEvent, connect_with};
use tempfile::TempDir;

const CONFIG: &str = "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[web.http]\nlisten = \"127.0.0.1:0\"\n[runtime]\nworkers = 2\n[auth]\npublic = \"\"\n";

struct Web {
    _relay: Relay,
    quic: SocketAddr,
    web: SocketAddr,
    fingerprint: String,
    _dir: TempDir,
}

fn after(line: &str, marker: &str) -> String {
    let start = line.find(marker).expect("marker in line") + marker.len();
    line[start..].split_whitespace().next().unwrap().to_owned()
}

fn start() -> Web {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let relay = Relay::start(&path, None);
    let quic = after(&relay.wait_for_line("serving on udp://"), "udp://")
        .parse()
        .unwrap();
    let web = after(
        &relay.wait_for_line("web HTTP listening on http://"),
        "http://",
    )
    .parse()
    .unwrap();
    let fingerprint = after(
        &relay.wait_for_line("certificate_sha256="),
        "certificate_sha256=",
    );
    Web {
        _relay: relay,
        quic,
        web,
        fingerprint,
        _dir: dir,
    }
}

/// Status, raw head and body of one GET on a fresh connection.
fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    (status, head.to_ascii_lowercase(), raw[split + 4..].to_vec())
}

fn frames(group: u8) -> Vec<Bytes> {
    (0..3u8)
        .map(|i| Bytes::from(vec![group * 16 + i; 100 + usize::from(i) * 1000]))
        .collect()
}

fn joined(group: u8) -> Vec<u8> {
    frames(group).iter().flat_map(|f| f.to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_returns_a_group_by_number_and_the_newest_for_latest() {
    let web = start();
    let url = format!("https://{}/", web.quic);
    let publisher = connect_with(
        &url,
        ConnectOptions::new(TlsTrust::Fingerprint(web.fingerprint.clone())).publish_only(),
    )
    .await
    .expect("publisher connects");
    let (_broadcast, mut tracks) = publisher.publish("demo/cam", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    // /fetch answers from the router's cache, which holds a track while someone
    // subscribes to it (the relay does not pull a track for a fetch on its own yet).
    let viewer = connect_with(
        &url,
        ConnectOptions::new(TlsTrust::Fingerprint(web.fingerprint.clone())).subscribe_only("demo"),
    )
    .await
    .expect("viewer connects");
    let mut sub = viewer
        .subscribe("demo/cam", "video")
        .await
        .expect("subscribe");
    // Until the relay's upstream subscription is live a group may not reach the viewer:
    // write groups until one arrives, then one more, and fetch those two.
    let mut written = Vec::new();
    let mut arrived = Vec::new();
    for round in 0..20u8 {
        let seq = track.write_group(frames(round % 2)).expect("write a group");
        written.push((seq, round % 2));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, sub.next()).await {
            if let TrackEvent::GroupEnd { group, .. } = event {
                arrived.push(group);
                if group == seq {
                    break;
                }
            }
        }
        if arrived.len() >= 2 && arrived.last() == Some(&seq) {
            break;
        }
    }
    assert!(
        arrived.len() >= 2,
        "groups never reached the viewer: {arrived:?}"
    );
    let pattern = |seq: u64| {
        written
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, p)| *p)
            .unwrap()
    };
    let second = *arrived.last().unwrap();
    let first = arrived[arrived.len() - 2];
    let (first_pattern, second_pattern) = (pattern(first), pattern(second));
    let addr = web.web;
    let (status, head, body) = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = get(addr, &format!("/fetch/demo/cam/video?group={first}"));
            if answer.0 == 200 || Instant::now() > deadline {
                return answer;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, joined(first_pattern));
    assert!(!head.contains("content-type"), "{head}");
    assert!(head.contains("access-control-allow-origin: *"), "{head}");

    let (status, _, body) = tokio::task::spawn_blocking(move || get(addr, "/fetch/demo/cam/video"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, joined(second_pattern), "latest is the newest group");
    let (status, _, body) =
        tokio::task::spawn_blocking(move || get(addr, "/fetch/demo/cam/video?group=latest"))
            .await
            .unwrap();
    assert_eq!((status, body), (200, joined(second_pattern)));

    let (status, _, body) = tokio::task::spawn_blocking(move || get(addr, "/announced/demo"))
        .await
        .unwrap();
    assert_eq!((status, body.as_slice()), (200, b"cam".as_slice()));
    drop(sub);
    viewer.close().await;
    publisher.close().await;
}

#[test]
fn fetch_with_a_bad_path_or_group_is_400() {
    let web = start();
    for path in [
        "/fetch/onlyone",
        "/fetch//video",
        "/fetch/demo/cam/video?group=banana",
        "/fetch/demo/cam/video?group=-1",
    ] {
        let (status, _, _) = get(web.web, path);
        assert_eq!(status, 400, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_of_a_track_nobody_watches_waits_for_its_next_group() {
    let web = start();
    let url = format!("https://{}/", web.quic);
    let publisher = connect_with(
        &url,
        ConnectOptions::new(TlsTrust::Fingerprint(web.fingerprint.clone())).publish_only(),
    )
    .await
    .expect("publisher connects");
    let (_broadcast, mut tracks) = publisher
        .publish("demo/idle", &["video", "audio"])
        .expect("publish");
    let track = tracks.remove(0);
    let addr = web.web;
    // Wait for the announcement to reach the relay.
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(addr, "/announced/demo").2 != b"idle" {
            assert!(Instant::now() < deadline, "never announced");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();

    let fetch = tokio::task::spawn_blocking(move || get(addr, "/fetch/demo/idle/video"));
    // Nobody subscribes: the fetch makes the relay subscribe and answers with the first
    // group that then arrives whole.
    let mut written = Vec::new();
    for round in 0..15u8 {
        if fetch.is_finished() {
            break;
        }
        track.write_group(frames(round)).expect("write a group");
        written.push(round);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (status, head, body) = fetch.await.unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(
        written.iter().any(|&round| body == joined(round)),
        "the body is one whole written group ({} bytes)",
        body.len()
    );
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_and_fetch_keep_to_what_the_caller_may_subscribe() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, CONFIG.replace("public = \"\"", "public = \"demo\"")).unwrap();
    let relay = Relay::start(&path, None);
    let quic: SocketAddr = after(&relay.wait_for_line("serving on udp://"), "udp://")
        .parse()
        .unwrap();
    let web: SocketAddr = after(
        &relay.wait_for_line("web HTTP listening on http://"),
        "http://",
    )
    .parse()
    .unwrap();
    let fingerprint = after(
        &relay.wait_for_line("certificate_sha256="),
        "certificate_sha256=",
    );
    let publisher = connect_with(
        &format!("https://{quic}/demo"),
        ConnectOptions::new(TlsTrust::Fingerprint(fingerprint)).publish_only(),
    )
    .await
    .expect("publisher connects");
    let (_broadcast, _tracks) = publisher.publish("cam", &["video"]).expect("publish");

    let answers = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(web, "/announced/demo").2 != b"cam" {
            assert!(Instant::now() < deadline, "never announced");
            std::thread::sleep(Duration::from_millis(50));
        }
        (
            get(web, "/announced/private").0,
            get(web, "/fetch/private/cam/video?group=0").0,
        )
    })
    .await
    .unwrap();
    assert_eq!(answers, (401, 401), "outside the public prefix");
    publisher.close().await;
}
