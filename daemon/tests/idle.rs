//! Many idle subscribers: the relay holds 1000 moq-lite-05 sessions that sent SETUP and
//! asked for announcements under a prefix, then went quiet; it keeps serving new work,
//! and its resident memory per idle session is measured (printed, and bounded loosely
//! here; the 64 KiB target is read off this figure).
//!
//! The idle sessions come from a bare `quinn` endpoint (`common::bare`), not from the
//! reference client: its per-session tasks and timers make a debug-built client the
//! bottleneck long before the relay.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Running;
use common::bare::{bare_client_config, dial_batch};
use interop::{ConnectOptions, TlsTrust};

const CONFIG: &str = "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 2\n[auth]\npublic = \"\"\n";

/// Idle sessions held at once, per the issue.
const IDLE_SESSIONS: usize = 1000;
/// Sessions opened before the baseline is read, so one-time costs (allocator arenas,
/// table growth) are not charged to the idle sessions.
const WARM_UP: usize = 50;
/// Handshakes in flight at once.
const IN_FLIGHT: usize = 32;
/// Client endpoints (UDP sockets): distinct 4-tuples, so both workers get sessions.
const ENDPOINTS: usize = 8;
/// Loose ceiling for a debug build on a shared machine; the release figure is what the
/// 64 KiB target is judged by. A regression to per-connection megabytes fails here.
const MAX_BYTES_PER_IDLE_SESSION: u64 = 256 * 1024;
/// Bounds the whole dialing phase.
const DIAL_DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_subscribers_are_held_and_measured() {
    let relay = Running::start(CONFIG);
    let client = bare_client_config(&relay.fingerprint);
    let endpoints: Vec<quinn::Endpoint> = (0..ENDPOINTS)
        .map(|_| quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint"))
        .collect();
    let endpoints = Arc::new(endpoints);

    let started = Instant::now();
    let total = WARM_UP + IDLE_SESSIONS;
    let mut sessions = Vec::with_capacity(total);
    let mut baseline = None;
    while sessions.len() < total {
        assert!(
            started.elapsed() < DIAL_DEADLINE,
            "only {} sessions within {DIAL_DEADLINE:?}",
            sessions.len()
        );
        if sessions.len() == WARM_UP {
            tokio::time::sleep(Duration::from_millis(200)).await;
            baseline = Some(common::rss_kib(relay.relay.pid()));
        }
        let goal = if sessions.len() < WARM_UP {
            WARM_UP
        } else {
            total
        };
        let batch = IN_FLIGHT.min(goal - sessions.len());
        let first = sessions.len();
        sessions.extend(dial_batch(&endpoints, &client, relay.addr, first, batch).await);
    }
    let dialed_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = common::rss_kib(relay.relay.pid());
    let baseline = baseline.expect("baseline read");
    let per_session = held.saturating_sub(baseline) * 1024 / IDLE_SESSIONS as u64;
    eprintln!(
        "idle sessions: {IDLE_SESSIONS} opened in {dialed_in:?}; relay RSS {baseline} KiB -> {held} KiB: {per_session} bytes per idle session"
    );

    // Still serving: a reference-client session completes while all of them are held.
    let fresh = interop::connect_with(
        &relay.https_url(""),
        ConnectOptions::new(TlsTrust::Fingerprint(relay.fingerprint.clone())).publish_only(),
    )
    .await
    .expect("a new session while 1000 are idle");
    fresh.close().await;

    assert!(
        per_session <= MAX_BYTES_PER_IDLE_SESSION,
        "{per_session} bytes per idle session"
    );
    drop(sessions);
}
