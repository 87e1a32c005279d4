//! A peer relay that breaks the protocol, through the real binary: the link to it is
//! closed with a protocol error and counted, and the relay's other links carry on
//! (spec `cluster.md` 3.2: a failed link is redialed like any other).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::cluster::{ANY_PORT, STEP, link, next_frame, payload, relay, relay_config, session};
use common::scrape::wait_for;
use interop::ConnectOptions;
use proto::message::UniType;

/// A raw-QUIC moq-lite-05 "relay" that answers every dial with a SETUP stream of
/// garbage, or (`silent`) with nothing at all. Returns its address, its certificate
/// fingerprint, and the close reasons of the connections it saw end.
fn bad_peer(
    silent: bool,
) -> (
    SocketAddr,
    String,
    tokio::sync::mpsc::Receiver<quinn::ConnectionError>,
) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let fingerprint = quic_io::tls::fingerprint(&cert);
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    tls.alpn_protocols = vec![b"moq-lite-05".to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let (closes, closed) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        // Bounded by the test: each redial is one more connection, a few at most.
        while let Some(incoming) = endpoint.accept().await {
            let closes = closes.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                if !silent && let Ok(mut setup) = conn.open_uni().await {
                    let mut bytes = BytesMut::new();
                    proto::coding::put_varint(&mut bytes, "type", UniType::Setup.id()).unwrap();
                    // A two-byte SETUP that opens an eight-byte varint: it cannot be read.
                    bytes.extend_from_slice(&[0x02, 0xc0, 0x00]);
                    let _ = setup.write_all(&bytes).await;
                }
                let _ = closes.send(conn.closed().await).await;
            });
        }
    });
    (addr, fingerprint, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_peer_closes_its_link_and_the_other_link_carries_on() {
    let origin = relay(1, &[]);
    let (bad, bad_pin, mut closed) = bad_peer(false);
    let bad_url = format!("moql://{bad}/");
    let config = relay_config(2, &[link(&origin, 0)], ANY_PORT)
        .replace("connect = [", &format!("connect = [\"{bad_url}\", "))
        .replace(
            "fingerprint = [",
            &format!("fingerprint = [\"{bad_pin}\", "),
        );
    let leaf = common::http::start(&config);
    leaf.relay.wait_for_line("cluster link established");

    let publisher = session(&origin, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/cam", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let (_subscriber, mut sub) = common::cluster::subscriber(&leaf, "demo/cam").await;
    let writer = tokio::spawn(async move {
        for group in 0..100 {
            track.write_group([payload(group, 0)]).expect("group");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // The leaf closed the bad link with a protocol error, and says why.
    let close = tokio::time::timeout(STEP, closed.recv())
        .await
        .expect("the bad link closed in time")
        .expect("a close");
    match close {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason);
            assert!(reason.contains("malformed"), "closed with {reason:?}");
        }
        other => panic!("the bad link ended with {other:?}, not a protocol error"),
    }
    let failures = format!("moq_relayd_cluster_link_failures_total{{peer=\"{bad_url}\"}}");
    wait_for(&leaf, |m| m.get(&failures).is_some_and(|&n| n >= 1.0));

    // Meanwhile the good link goes on delivering.
    for _ in 0..5 {
        next_frame(&mut sub).await;
    }
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_sends_its_setup_is_closed_at_the_setup_timeout_and_redialed() {
    let (silent, pin, mut closed) = bad_peer(true);
    let url = format!("moql://{silent}/");
    let server = format!("{ANY_PORT}timeout = \"2s\"\n");
    let leaf = common::http::start(&format!(
        "{}connect = [\"{url}\"]\n[client.tls]\nfingerprint = [\"{pin}\"]\n",
        relay_config(2, &[], &server)
    ));
    leaf.relay.wait_for_line("cluster link established");
    let started = std::time::Instant::now();
    let close = tokio::time::timeout(STEP, closed.recv())
        .await
        .expect("the silent link closed in time")
        .expect("a close");
    assert!(
        matches!(close, quinn::ConnectionError::ApplicationClosed(_)),
        "{close:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
    let failures = format!("moq_relayd_cluster_link_failures_total{{peer=\"{url}\"}}");
    wait_for(&leaf, |m| m.get(&failures).is_some_and(|&n| n >= 1.0));
    leaf.relay.wait_for_line("cluster link established");
}
