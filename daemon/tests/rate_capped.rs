//! One viewer held to 1 Mbit/s by the kernel's `tbf` on a ~3.9 Mbit/s track, through the
//! real binary: its old groups are reset as stale (counted), while the publisher and the
//! direct subscribers lose nothing and wait no longer, and the relay's memory stays
//! bounded. The test runs in a network namespace of its own (made with `unshare`, gone
//! with the test), whose loopback carries an `htb` qdisc that sends the viewer's packets
//! through `tbf`; where namespaces are refused it is skipped with the reason printed.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::session;
use common::http::{Ops, get, start};
use interop::{ConnectOptions, TlsTrust, TrackEvent, connect_with};

const FRAME: usize = 16 << 10;
const FRAMES_PER_GROUP: u64 = 10;
const TRACK_GROUPS: u64 = 24;
const DIRECT: usize = 5;
/// The viewer's cap, and the queue tbf keeps before it drops.
const CAP: &str = "1mbit";
const CAP_QUEUE: &str = "64kb";

fn sh(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|err| format!("{program}: {err}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Moves this thread (and what it starts from now on) into a new network namespace
/// with its loopback up; the reason when that is refused.
fn private_network() -> Result<(), String> {
    // SAFETY: unshare(2) with a namespace flag: it changes only this thread's namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    sh("ip", &["link", "set", "lo", "up"])?;
    // Everything in class 1:10 (uncapped); the viewer's packets go to 1:30, through tbf.
    // (This kernel has htb and tbf; prio and netem are not built.)
    for args in [
        "qdisc add dev lo root handle 1: htb default 10",
        "class add dev lo parent 1: classid 1:10 htb rate 10gbit quantum 200000",
        "class add dev lo parent 1: classid 1:30 htb rate 10gbit quantum 200000",
    ] {
        sh("tc", &args.split(' ').collect::<Vec<_>>())?;
    }
    sh(
        "tc",
        &[
            "qdisc", "add", "dev", "lo", "parent", "1:30", "handle", "30:", "tbf", "rate", CAP,
            "burst", "16kb", "limit", CAP_QUEUE,
        ],
    )
}

/// Sends what goes to UDP port `port` on loopback through the capped band.
fn cap_port(port: u16) {
    let port = port.to_string();
    sh(
        "tc",
        &[
            "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
            "match", "ip", "dport", &port, "0xffff", "flowid", "1:30",
        ],
    )
    .expect("tc filter");
}

/// tbf's `dropped` and `overlimits` counts.
fn tbf_counts() -> String {
    let out = Command::new("tc")
        .args(["-s", "qdisc", "show", "dev", "lo"])
        .output()
        .expect("tc -s");
    let text = String::from_utf8_lossy(&out.stdout);
    let tbf = text
        .split("qdisc ")
        .find(|q| q.starts_with("tbf"))
        .expect("tbf");
    tbf.lines()
        .find(|l| l.contains("dropped"))
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// The remote ports of the sessions the relay lists.
fn remote_ports(relay: &Ops) -> Vec<u16> {
    let body = get(relay.internal, "/sessions").body;
    let sessions: serde_json::Value = serde_json::from_str(&body).expect("/sessions JSON");
    sessions["sessions"]
        .as_array()
        .expect("a sessions array")
        .iter()
        .filter_map(|s| s["remote"].as_str()?.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .collect()
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[test]
fn a_viewer_capped_by_tbf_loses_old_groups_alone() {
    if let Err(why) = private_network() {
        eprintln!("skipped: no private network namespace with tbf here: {why}");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(capped_viewer());
}

type Seen = Vec<(u64, u64, Instant)>;

async fn capped_viewer() {
    let relay = start(
        "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 1\n\
         [auth]\npublic = \"\"\n[web.http]\nlisten = \"127.0.0.1:0\"\n[internal]\nlisten = \"127.0.0.1:0\"\n\
         [limits]\nbytes_in_flight_per_subscriber = \"256KiB\"\n",
    );
    let publisher = session(&relay, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/big", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();

    let connect = |max_age: Duration| {
        let (quic, fingerprint) = (relay.quic, relay.fingerprint.clone());
        async move {
            let options = ConnectOptions::new(TlsTrust::Fingerprint(fingerprint))
                .subscribe_only("")
                .with_op_timeout(Duration::from_secs(20));
            let session = connect_with(&format!("https://{quic}/"), options)
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
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let read = |(session, mut sub): (interop::Session, interop::TrackSubscriber),
                mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let mut seen: Seen = Vec::new();
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
    };
    // A live viewer (1 s max age) whose packets tbf holds to 1 Mbit/s, five direct.
    let before = remote_ports(&relay);
    let viewer = connect(Duration::from_secs(1)).await;
    let after = remote_ports(&relay);
    let new: Vec<u16> = after.into_iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(new.len(), 1, "the viewer's session: {new:?}");
    cap_port(new[0]);
    let slow = tokio::spawn(read(viewer, stopped.clone()));
    let mut fast = tokio::task::JoinSet::new();
    for _ in 0..DIRECT {
        fast.spawn(read(
            connect(Duration::from_secs(30)).await,
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
                let mut bytes = vec![group as u8; FRAME];
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
        peak_rss = peak_rss.max(rss_bytes(relay.relay.pid()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _track = writer.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();

    let written = written.lock().unwrap().clone();
    let mut latencies = Vec::new();
    while let Some(seen) = fast.join_next().await {
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
    let slow_seen = slow.await.unwrap();
    let slow_groups: std::collections::BTreeSet<u64> =
        slow_seen.iter().map(|(group, ..)| *group).collect();
    latencies.sort_unstable();
    let p99 = latencies[latencies.len() * 99 / 100];
    let expired = |m: &std::collections::HashMap<String, f64>| {
        m.iter()
            .filter(|(series, _)| series.starts_with("moq_relayd_groups_expired_total{"))
            .map(|(_, value)| value)
            .sum::<f64>()
    };
    let metrics = common::scrape::wait_for(&relay, |m| expired(m) >= 1.0);
    let tbf = tbf_counts();
    eprintln!(
        "tbf-capped viewer: {} of {TRACK_GROUPS} groups; relay expired {} groups; direct p99 \
         {p99:?}; relay peak RSS {} MiB; tbf {tbf}",
        slow_groups.len(),
        expired(&metrics),
        peak_rss >> 20,
    );
    assert!(
        (slow_groups.len() as u64) < TRACK_GROUPS,
        "a quarter of the bandwidth does not carry every group"
    );
    assert!(!tbf.contains("overlimits 0 "), "tbf held the viewer: {tbf}");
    assert!(
        p99 < Duration::from_millis(250),
        "direct subscribers slowed: p99 {p99:?}"
    );
    assert!(peak_rss < 200 << 20, "relay RSS {} MiB", peak_rss >> 20);
}
