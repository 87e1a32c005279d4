//! `[listen] timeout` through the real binary: a connection that never becomes a
//! WebTransport session, or a moq-lite-05 session whose client never sends SETUP, is
//! closed once the deadline from its first packet passes, and counted; a session that
//! sets up in time stays; `0` waits as long as the connection lives.

mod common;

use std::time::{Duration, Instant};

use common::bare::{client_config_offering, idle_subscriber};
use common::http::{Ops, start};
use common::scrape::wait_for;
use proto::{ErrorCode, Version};

/// The deadline under test: short, so the test is quick, and well above a debug
/// build's handshake on a loaded machine.
const TIMEOUT: &str = "1500ms";
const TIMEOUT_DURATION: Duration = Duration::from_millis(1500);
/// How long past the deadline the close may take to arrive.
const SLACK: Duration = Duration::from_secs(3);

fn config(timeout: &str) -> String {
    format!(
        "[listen]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\ntimeout = \"{timeout}\"\n[web.http]\nlisten = \"127.0.0.1:0\"\n[internal]\nlisten = \"127.0.0.1:0\"\n[runtime]\nworkers = 1\n[auth]\npublic_subscribe = [\"**\"]\npublic_publish = [\"**\"]\n"
    )
}

/// A QUIC connection offering `alpn`, handshake done, nothing sent on it.
async fn silent_connection(ops: &Ops, alpn: &str) -> (quinn::Endpoint, quinn::Connection) {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint");
    let config = client_config_offering(&ops.fingerprint, &[alpn]);
    let connection = endpoint
        .connect_with(config, ops.quic, "localhost")
        .expect("connect")
        .await
        .expect("handshake");
    (endpoint, connection)
}

/// Waits for the relay to close `connection`; returns the application close code and
/// how long after `since` it came.
async fn closed_by_relay(connection: &quinn::Connection, since: Instant) -> (u64, Duration) {
    let error = tokio::time::timeout(TIMEOUT_DURATION + SLACK, connection.closed())
        .await
        .expect("the relay closes the connection after the deadline");
    let elapsed = since.elapsed();
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => {
            (close.error_code.into_inner(), elapsed)
        }
        other => panic!("closed with {other}, not by the relay's application close"),
    }
}

fn total(m: &std::collections::HashMap<String, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .map(|(_, value)| value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moq_lite_05_session_without_setup_is_closed_at_the_deadline() {
    let ops = start(&config(TIMEOUT));
    let started = Instant::now();
    let (_endpoint, connection) = silent_connection(&ops, "moq-lite-05").await;
    let (code, after) = closed_by_relay(&connection, started).await;
    assert_eq!(code, ErrorCode::Timeout.session_code(Version::Lite05));
    assert!(
        after >= TIMEOUT_DURATION - Duration::from_millis(100),
        "closed after {after:?}, before the {TIMEOUT} deadline"
    );
    let metrics = wait_for(&ops, |m| total(m, "moq_relayd_setup_timeouts_total") == 1.0);
    assert_eq!(total(&metrics, "moq_relayd_handshake_timeouts_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webtransport_connection_without_connect_is_closed_at_the_deadline() {
    let ops = start(&config(TIMEOUT));
    let started = Instant::now();
    let (_endpoint, connection) = silent_connection(&ops, "h3").await;
    let (code, after) = closed_by_relay(&connection, started).await;
    assert_eq!(code, 0x10b, "H3_REQUEST_REJECTED");
    assert!(
        after >= TIMEOUT_DURATION - Duration::from_millis(100),
        "{after:?}"
    );
    let metrics = wait_for(&ops, |m| {
        total(m, "moq_relayd_handshake_timeouts_total") == 1.0
    });
    assert_eq!(total(&metrics, "moq_relayd_setup_timeouts_total"), 0.0);
    assert_eq!(total(&metrics, "moq_relay_sessions_opened_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_set_up_in_time_outlives_the_deadline() {
    let ops = start(&config(TIMEOUT));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint");
    let config = client_config_offering(&ops.fingerprint, &["moq-lite-05"]);
    let session = idle_subscriber(&endpoint, config, ops.quic)
        .await
        .expect("SETUP and an announce request, answered");
    tokio::time::sleep(TIMEOUT_DURATION + Duration::from_secs(1)).await;
    assert!(
        session.connection.close_reason().is_none(),
        "closed: {:?}",
        session.connection.close_reason()
    );
    let metrics = common::scrape::scrape(&ops);
    assert_eq!(total(&metrics, "moq_relayd_setup_timeouts_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_timeout_waits_for_setup_as_long_as_the_connection_lives() {
    let ops = start(&config("0s"));
    let (_endpoint, connection) = silent_connection(&ops, "moq-lite-05").await;
    tokio::time::sleep(TIMEOUT_DURATION + Duration::from_secs(1)).await;
    assert!(
        connection.close_reason().is_none(),
        "{:?}",
        connection.close_reason()
    );
}
