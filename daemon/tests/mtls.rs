//! 0.14's mTLS through the real binary (spec `auth.md` 11): with `[server.tls] root`, a
//! WebTransport client whose certificate chains to that CA gets full publish and
//! subscribe under its connection path without a token, until the certificate's
//! `notAfter`; a client without one goes through public access; raw QUIC carries no URL,
//! so a certificate decides nothing there; a certificate from another CA fails the
//! handshake. A 0.17-style file with a client CA is a start error naming the key.

mod common;

use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use common::Running;
use common::pki::{Client, Pki, authority};
use interop::rogue::RogueSession;
use interop::{Bytes, ConnectOptions, TlsTrust, TrackEvent, connect_with};
use proto::message::{Message, Setup, UniType};
use tempfile::TempDir;

/// One step's bound on a loaded 2-core machine.
const STEP: Duration = Duration::from_secs(20);
/// How long a session must stay open to count as admitted.
const ADMITTED: Duration = Duration::from_millis(400);
const UNAUTHORIZED_014: u64 = 6;

fn config(pki: &Pki) -> String {
    format!(
        "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\ntls.root = [\"{}\"]\n[auth]\npublic = \"anon\"\n",
        pki.ca.display()
    )
}

fn trust(relay: &Running) -> TlsTrust {
    TlsTrust::Fingerprint(relay.fingerprint.clone())
}

/// A rogue moq-lite-05 session presenting `client`; on raw QUIC it sends a SETUP whose
/// Path is `path` (WebTransport dials it in the URL).
async fn rogue(relay: &Running, raw: bool, path: &str, client: Option<&Client>) -> RogueSession {
    let url = if raw {
        relay.quic_url("")
    } else {
        relay.https_url(path)
    };
    let identity = client.map(|c| (c.cert.as_path(), c.key.as_path()));
    let mut session = RogueSession::connect_as(&url, &trust(relay), "moq-lite-05", STEP, identity)
        .await
        .unwrap_or_else(|err| panic!("rogue {url}: {err}"));
    if raw {
        let mut bytes = BytesMut::new();
        proto::coding::put_varint(&mut bytes, "type", UniType::Setup.id()).unwrap();
        Setup {
            path: Some(path.to_owned()),
            ..Setup::default()
        }
        .encode(proto::Version::Lite05, &mut bytes)
        .unwrap();
        session.send_uni(&bytes).await.expect("SETUP");
    }
    session
}

fn options(relay: &Running, client: &Client) -> ConnectOptions {
    ConnectOptions::new(trust(relay))
        .with_versions(&["moq-lite-05"])
        .with_client_identity(&client.cert, &client.key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_client_certificate_grants_its_webtransport_path_and_nothing_on_raw_quic() {
    let pki = Pki::new();
    let client = pki.client("client", Duration::from_secs(86_400));
    let (_, other_ca) = authority("another CA");
    let stranger = pki.client_of("stranger", &other_ca, Duration::from_secs(86_400));
    let relay = Running::start(&config(&pki));

    // Publish and subscribe at /demo on the certificate alone: public covers only anon.
    let url = relay.https_url("/demo");
    let publisher = connect_with(&url, options(&relay, &client).publish_only())
        .await
        .expect("publisher with a certificate");
    let (_broadcast, mut tracks) = publisher.publish("cam", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let subscriber = connect_with(&url, options(&relay, &client).subscribe_only(""))
        .await
        .expect("subscriber with a certificate");
    let mut sub = subscriber
        .subscribe("cam", "video")
        .await
        .expect("subscribe");
    track
        .write_group([Bytes::from_static(b"certified")])
        .expect("group");
    match sub.next_within(STEP).await.expect("a frame") {
        TrackEvent::Frame(frame) => assert_eq!(frame.payload, Bytes::from_static(b"certified")),
        other => panic!("expected a frame, got {other:?}"),
    }

    // The same path without a certificate: public access only, which is not /demo.
    let close = rogue(&relay, false, "/demo", None)
        .await
        .closed(STEP)
        .await
        .expect("closed");
    assert_eq!(close.code, Some(UNAUTHORIZED_014), "{close:?}");
    // Public access still works beside it.
    let anon = rogue(&relay, false, "/anon", None).await;
    assert!(anon.closed(ADMITTED).await.is_err(), "anon was closed");
    // Raw QUIC carries no URL: the certificate decides nothing there.
    let close = rogue(&relay, true, "/demo", Some(&client))
        .await
        .closed(STEP)
        .await
        .expect("closed");
    assert_eq!(close.code, Some(UNAUTHORIZED_014), "raw QUIC: {close:?}");
    // A certificate from another CA does not get through the handshake.
    let refused = RogueSession::connect_as(
        &relay.https_url("/demo"),
        &trust(&relay),
        "moq-lite-05",
        STEP,
        Some((&stranger.cert, &stranger.key)),
    )
    .await;
    match refused {
        Err(_) => {}
        Ok(session) => {
            // TLS 1.3 clients finish before the server checks their certificate; the
            // server then ends the connection.
            let close = session.closed(STEP).await.expect("closed");
            assert_ne!(close.code, Some(0), "{close:?}");
        }
    }
    subscriber.close().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_session_ends_within_a_second_of_not_after() {
    let pki = Pki::new();
    let client = pki.client("brief", Duration::from_secs(4));
    let relay = Running::start(&config(&pki));
    let session = rogue(&relay, false, "/demo", Some(&client)).await;
    let left = client
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let close = session
        .closed(left + STEP)
        .await
        .expect("closed at notAfter");
    let now = SystemTime::now();
    assert_eq!(close.code, Some(UNAUTHORIZED_014), "{close:?}");
    let late = now
        .duration_since(client.not_after)
        .unwrap_or_else(|early| {
            assert!(
                early.duration() <= Duration::from_millis(20),
                "closed {:?} before notAfter",
                early.duration()
            );
            Duration::ZERO
        });
    assert!(
        late < Duration::from_secs(1),
        "closed {late:?} after notAfter"
    );
}

#[test]
fn a_017_file_with_a_client_ca_is_refused_by_name() {
    let pki = Pki::new();
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        format!(
            "[listen]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\ntls.root = [\"{}\"]\n[auth]\npublic = \"**\"\n",
            pki.ca.display()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_moq-relayd"))
        .arg("--check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("listen.tls.root"), "{message}");
}
