//! Admission past the handshake rate (`[limits] handshakes_per_second`), through the real
//! binary: a client must answer a Retry first, and one that does while the rate is
//! still spent is refused. Its own binary, so no other test's load shifts the second
//! the handshakes fall in.

mod common;

use common::http::start;
use common::scrape::scrape;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_rate_a_client_must_answer_a_retry_and_then_is_refused() {
    // One worker, one handshake a second: the first connects; the next nine are asked to
    // Retry, and of those that answer at once, past the proven-address allowance (four
    // a second), some are refused.
    let relay = start(
        "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 1\n\
         [auth]\npublic = \"\"\n[web.http]\nlisten = \"127.0.0.1:0\"\n[internal]\nlisten = \"127.0.0.1:0\"\n\
         [limits]\nhandshakes_per_second = 1\n",
    );
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(common::bare::bare_client_config(&relay.fingerprint));
    // All at once, so they meet the same second's allowance however slow the machine.
    let attempts: Vec<_> = (0..10)
        .map(|_| endpoint.connect(relay.quic, "localhost").unwrap())
        .collect();
    let mut outcomes = Vec::new();
    for attempt in attempts {
        outcomes.push(
            attempt
                .await
                .map(|conn| conn.close(0u32.into(), b"done"))
                .is_ok(),
        );
    }
    assert!(
        outcomes.iter().any(|ok| *ok),
        "a handshake within the rate connects: {outcomes:?}"
    );
    assert!(
        outcomes.iter().any(|ok| !ok),
        "a handshake past the rate was refused: {outcomes:?}"
    );
    let metrics = scrape(&relay);
    let retries = metrics["moq_relayd_retries_total{worker=\"0\"}"];
    let refused = metrics["moq_relayd_refused_rate_total{worker=\"0\"}"];
    assert!(retries >= 1.0, "Retry first: {retries}");
    assert!(refused >= 1.0, "then refused: {refused}");
}
