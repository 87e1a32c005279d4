//! Shutdown as moq-relay 0.17 drains (spec 0.17 section 4), through the real binary:
//! the first SIGTERM/SIGINT sends GOAWAY to every session and waits up to
//! `drain_timeout` for them to leave, then closes the rest and exits 0;
//! `drain_timeout = 0` closes at once; a second signal ends at once.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Relay, fingerprint_in, listen_address};
use interop::{ConnectOptions, Session, TlsTrust, connect_with};
use tempfile::TempDir;

fn config(drain_timeout: &str, top_level: &str) -> String {
    format!(
        "drain_timeout = \"{drain_timeout}\"\n{top_level}[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[internal]\nlisten = \"127.0.0.1:0\"\n[runtime]\nworkers = 2\n[auth]\npublic = \"\"\n"
    )
}

struct Draining {
    relay: Relay,
    quic: SocketAddr,
    internal: SocketAddr,
    fingerprint: String,
    _dir: TempDir,
}

fn start(drain_timeout: &str) -> Draining {
    start_with(drain_timeout, "")
}

/// `top_level`: more top-level keys, each line ending in a newline.
fn start_with(drain_timeout: &str, top_level: &str) -> Draining {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, config(drain_timeout, top_level)).unwrap();
    let relay = Relay::start(&path, None);
    let quic = listen_address(&relay.wait_for_line("serving on udp://"));
    let line = relay.wait_for_line("internal HTTP listening on http://");
    let internal = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let fingerprint = fingerprint_in(&relay.wait_for_line("certificate_sha256="));
    Draining {
        relay,
        quic,
        internal,
        fingerprint,
        _dir: dir,
    }
}

async fn session(relay: &Draining) -> Session {
    session_with(relay, &[]).await
}

/// moq-lite-03 has no GOAWAY: such a session stays until the drain deadline (and the
/// reference client leaves at once on a GOAWAY, so only 03 can show a drain in progress).
async fn session_without_goaway(relay: &Draining) -> Session {
    let session = session_with(relay, &["moq-lite-03"]).await;
    assert_eq!(session.version_name().as_deref(), Some("moq-lite-03"));
    session
}

async fn session_with(relay: &Draining, versions: &[&str]) -> Session {
    let url = format!("https://{}/", relay.quic);
    connect_with(
        &url,
        ConnectOptions::new(TlsTrust::Fingerprint(relay.fingerprint.clone()))
            .with_versions(versions)
            .subscribe_only(""),
    )
    .await
    .expect("session connects")
}

/// The value of an unlabelled sample in a `/metrics` scrape.
fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits for the relay's published count of open sessions to reach `n`.
fn wait_sessions(relay: &Draining, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let opened = metric(relay.internal, "moq_relay_sessions_opened_total{tier=\"\"}");
        if opened.is_some_and(|v| v >= n) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{n} sessions never showed in /metrics");
}

#[test]
fn sigterm_with_no_session_exits_zero_at_once() {
    let relay = start("10s");
    let started = Instant::now();
    relay.relay.signal(libc::SIGTERM);
    relay
        .relay
        .wait_for_line("drain complete: every session left");
    let status = relay.relay.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_goaway_and_exits_zero_once_the_session_leaves() {
    let relay = start("30s");
    let client = session(&relay).await;
    wait_sessions(&relay, 1.0);

    let started = Instant::now();
    relay.relay.signal(libc::SIGTERM);
    relay.relay.wait_for_line("draining sessions");
    relay.relay.wait_for_line("drain: GOAWAY sent");
    // The reference client leaves on a GOAWAY: the drain ends long before its deadline.
    relay
        .relay
        .wait_for_line("drain complete: every session left");
    let Draining { relay: process, .. } = relay;
    let status = tokio::task::spawn_blocking(move || process.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_stays_is_closed_at_the_deadline_and_the_exit_is_zero() {
    let relay = start("2s");
    let client = session_without_goaway(&relay).await;
    wait_sessions(&relay, 1.0);

    let started = Instant::now();
    relay.relay.signal(libc::SIGTERM);
    // Closed by its worker with 0.17's "GOAWAY timeout" before the server stops.
    relay
        .relay
        .wait_for_line("peer did not leave before the GOAWAY deadline; closing");
    let line = relay
        .relay
        .wait_for_line("drain deadline force-closed sessions");
    assert!(line.contains("forced=1"), "{line}");
    let Draining { relay: process, .. } = relay;
    let status = tokio::task::spawn_blocking(move || process.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(6),
        "took {elapsed:?}"
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_draining_gauge_counts_sessions_not_yet_gone() {
    let relay = start("30s");
    let client = session_without_goaway(&relay).await;
    wait_sessions(&relay, 1.0);
    assert_eq!(
        metric(relay.internal, "moq_relay_draining_sessions"),
        Some(0.0)
    );
    relay.relay.signal(libc::SIGTERM);
    relay.relay.wait_for_line("draining sessions");
    // Listeners keep serving during the drain.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = None;
    while Instant::now() < deadline {
        seen = metric(relay.internal, "moq_relay_draining_sessions");
        if seen.is_some_and(|v| v >= 1.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen.is_some_and(|v| v >= 1.0), "draining gauge {seen:?}");
    // The client leaves: the drain completes long before its 30 s deadline.
    client.close().await;
    relay
        .relay
        .wait_for_line("drain complete: every session left");
    let Draining { relay: process, .. } = relay;
    let status = tokio::task::spawn_blocking(move || process.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_zero_closes_at_once() {
    let relay = start("0s");
    let client = session(&relay).await;
    wait_sessions(&relay, 1.0);
    let started = Instant::now();
    relay.relay.signal(libc::SIGTERM);
    relay.relay.wait_for_line("drain_timeout is 0");
    let Draining { relay: process, .. } = relay;
    let status = tokio::task::spawn_blocking(move || process.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_the_drain_at_once() {
    let relay = start("60s");
    let client = session_without_goaway(&relay).await;
    wait_sessions(&relay, 1.0);
    relay.relay.signal(libc::SIGTERM);
    relay.relay.wait_for_line("draining sessions");
    let started = Instant::now();
    relay.relay.signal(libc::SIGINT);
    relay.relay.wait_for_line("second shutdown signal");
    let Draining { relay: process, .. } = relay;
    let status = tokio::task::spawn_blocking(move || process.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(client);
}

/// 0.17's default: the listener keeps accepting during a drain, and a newcomer is sent
/// its GOAWAY on arrival (the reference client then leaves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_arriving_mid_drain_is_accepted_and_sent_goaway() {
    let relay = start("30s");
    // A 03 session gets no GOAWAY and holds the drain open.
    let stayer = session_without_goaway(&relay).await;
    wait_sessions(&relay, 1.0);
    relay.relay.signal(libc::SIGTERM);
    relay.relay.wait_for_line("draining sessions");

    let newcomer = tokio::time::timeout(Duration::from_secs(10), session(&relay))
        .await
        .expect("a handshake during the drain completes");
    relay.relay.wait_for_line("drain: GOAWAY sent");
    let left = newcomer.closed(Duration::from_secs(10)).await;
    assert!(
        left.is_ok(),
        "the newcomer did not leave on its GOAWAY: {left:?}"
    );

    stayer.close().await;
    relay
        .relay
        .wait_for_line("drain complete: every session left");
    let Draining { relay: process, .. } = relay;
    let status = tokio::task::spawn_blocking(move || process.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// `drain_refuse_new = true`: a handshake during the drain is refused, and the sessions
/// already here keep being served until they leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_drain_refuse_new_a_handshake_during_the_drain_is_refused() {
    let relay = start_with("30s", "drain_refuse_new = true\n");
    let stayer = session_without_goaway(&relay).await;
    wait_sessions(&relay, 1.0);
    relay.relay.signal(libc::SIGTERM);
    relay.relay.wait_for_line("drain: refusing new handshakes");

    let attempt = tokio::time::timeout(Duration::from_secs(10), async {
        let url = format!("https://{}/", relay.quic);
        connect_with(
            &url,
            ConnectOptions::new(TlsTrust::Fingerprint(relay.fingerprint.clone()))
                .subscribe_only(""),
        )
        .await
    })
    .await
    .expect("a refused handshake ends within the bound");
    assert!(
        attempt.is_err(),
        "a handshake during the drain was accepted"
    );
    // The refusal touched nobody else: the 03 session is still open.
    let still_open = stayer.closed(Duration::from_millis(300)).await;
    assert!(still_open.is_err(), "the stayer was closed: {still_open:?}");

    stayer.close().await;
    relay
        .relay
        .wait_for_line("drain complete: every session left");
    let Draining { relay: process, .. } = relay;
    let status = tokio::task::spawn_blocking(move || process.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
