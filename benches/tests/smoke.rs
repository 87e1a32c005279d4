//! CI smoke: the real `moq-relayd` binary on an ephemeral loopback port, a 5-second
//! relay-bench scenario through it, no lost frames and a filled latency histogram.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use benches::{Load, Target, TransportKind, Trust};

/// Generous: a debug relay on a loaded 2-core machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// `moq-relayd` next to this test's executable (target/<profile>/), built if missing.
fn relayd() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = dir.join("moq-relayd");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "moq-relayd"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build -p moq-relayd");
        assert!(status.success(), "cargo build -p moq-relayd failed");
    }
    bin
}

struct Relay {
    child: Child,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the relay; returns it with its address and certificate fingerprint from the log.
fn start_relay(dir: &tempfile::TempDir) -> (Relay, std::net::SocketAddr, String) {
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 1\n[auth]\npublic = \"\"\n",
    )
    .expect("write relay.toml");
    let mut child = Command::new(relayd())
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn moq-relayd");
    let stderr = child.stderr.take().expect("piped stderr");
    let relay = Relay { child };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep reading after the address is found: a closed pipe would kill the relay at
        // its next log line (WebTransport sessions log one each).
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut addr, mut fingerprint) = (None, None);
    while addr.is_none() || fingerprint.is_none() {
        let line = rx
            .recv_timeout(STARTUP_TIMEOUT)
            .expect("moq-relayd logged its address and certificate");
        if let Some(rest) = line.split("udp://").nth(1) {
            addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
        }
        if let Some(rest) = line.split("certificate_sha256=").nth(1) {
            fingerprint = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    (
        relay,
        addr.unwrap_or_else(|| unreachable!()),
        fingerprint.unwrap_or_else(|| unreachable!()),
    )
}

#[test]
fn five_second_fanout_through_moq_relayd_loses_no_frames() {
    fanout_loses_no_frames(TransportKind::Quic, proto::Version::Lite04, 5);
}

#[test]
fn webtransport_fanout_through_moq_relayd_loses_no_frames() {
    // Shorter: it proves the transport, the raw-QUIC run above proves the load.
    fanout_loses_no_frames(TransportKind::Webtransport, proto::Version::Lite05, 3);
}

fn fanout_loses_no_frames(transport: TransportKind, version: proto::Version, secs: u64) {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let (relay, addr, fingerprint) = start_relay(&dir);
    let load = Load {
        publishers: 1,
        subscribers: 5,
        fps: 30,
        frame_size: 4096,
        group_size: 30,
        duration: Duration::from_secs(secs),
        // Generous for a debug build on a loaded machine: every subscriber must be on
        // before the first measured group.
        warmup: Duration::from_secs(2),
        ramp_up: Duration::from_millis(500),
        drain: Duration::from_secs(2),
        version,
        transport,
        cpus: Vec::new(),
    };
    let target = Target {
        addr,
        server_name: "localhost".into(),
        path: String::new(),
        query: String::new(),
        trust: Trust::Fingerprint(fingerprint),
        relay_pid: Some(relay.child.id()),
        publishers_at: None,
    };
    let report = benches::run(&load, &target).expect("scenario ran");
    eprintln!("{}", report.table());
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert_eq!(report.subscribers_active, 5);
    assert!(
        report.expected_frames >= 5 * 30 * (secs - 1),
        "too few frames published"
    );
    assert_eq!(report.lost_frames, 0);
    assert_eq!(report.lost_groups, 0);
    assert!(report.latency.samples > 0);
    assert_eq!(report.latency.samples, report.delivered_frames);
    let relay_cost = report.relay.expect("relay pid was sampled");
    assert!(relay_cost.rss_mib > 0.0);
}

#[test]
fn silent_relay_is_reported_as_errors_within_the_run_time() {
    // A bound UDP socket that never answers: handshakes go nowhere.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let load = Load {
        publishers: 1,
        subscribers: 2,
        fps: 30,
        frame_size: 1024,
        group_size: 10,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        ramp_up: Duration::from_millis(200),
        drain: Duration::from_millis(200),
        version: proto::Version::Lite04,
        transport: TransportKind::Quic,
        cpus: Vec::new(),
    };
    let target = Target {
        addr: silent.local_addr().expect("addr"),
        server_name: "localhost".into(),
        path: String::new(),
        query: String::new(),
        trust: Trust::Insecure,
        relay_pid: None,
        publishers_at: None,
    };
    let started = std::time::Instant::now();
    let report = benches::run(&load, &target).expect("the run itself completes");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "run overran its phases"
    );
    assert_eq!(
        report.error_count, 3,
        "each session named: {:?}",
        report.errors
    );
    assert!(report.errors.iter().all(|e| e.contains("no session")));
    assert_eq!(report.subscribers_active, 0);
    assert_eq!(report.latency.samples, 0);
}
