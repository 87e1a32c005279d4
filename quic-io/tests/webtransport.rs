//! WebTransport sessions from the independent `web-transport-quinn` client.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use quic_io::{IoBackend, Transport};

fn session_with_path_query_streams_and_datagrams(io: IoBackend) {
    let (server, seen) = start(config(2, io));
    let port = server.local_addr().port();
    let fp = server.fingerprint();
    runtime().block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let client = wt_client(&fp);
            let url: url::Url = format!("https://127.0.0.1:{port}/anon/room?jwt=abc.def")
                .parse()
                .unwrap();
            let req = web_transport_quinn::proto::ConnectRequest::new(url)
                .with_protocols(["moq-lite-05".to_string(), "moq-lite-04".to_string()]);
            let session = client.connect(req).await.unwrap();
            assert_eq!(session.protocol(), Some("moq-lite-05"));

            // Client-opened bidi stream: echoed back on the same stream.
            let (mut send, mut recv) = session.open_bi().await.unwrap();
            send.write_all(b"bidi hello").await.unwrap();
            send.finish().unwrap();
            assert_eq!(recv.read_to_end(1 << 16).await.unwrap(), b"bidi hello");

            // Client-opened uni stream: the server echoes on a uni stream it opens.
            let mut uni = session.open_uni().await.unwrap();
            uni.write_all(b"uni hello").await.unwrap();
            uni.finish().unwrap();
            let mut back = session.accept_uni().await.unwrap();
            assert_eq!(back.read_to_end(1 << 16).await.unwrap(), b"uni hello");

            // Datagrams both ways (unreliable even on loopback: retry a few times).
            let mut got = None;
            for _ in 0..20 {
                session.send_datagram(Bytes::from_static(b"dgram")).unwrap();
                if let Ok(Ok(d)) =
                    tokio::time::timeout(Duration::from_millis(200), session.read_datagram()).await
                {
                    got = Some(d);
                    break;
                }
            }
            assert_eq!(got.as_deref(), Some(&b"dgram"[..]));

            session.close(7, b"bye");
            tokio::time::sleep(Duration::from_millis(300)).await;
        })
        .await
        .expect("test finished in time");
    });
    let seen = seen.lock().unwrap();
    assert_eq!(seen.sessions.len(), 1);
    let info = &seen.sessions[0].1;
    assert_eq!(info.path, "/anon/room");
    assert_eq!(info.query, "jwt=abc.def");
    assert_eq!(
        info.authority.as_deref(),
        Some(&*format!("127.0.0.1:{port}"))
    );
    assert_eq!(
        info.transport,
        Transport::WebTransport {
            protocol: Some("moq-lite-05".into())
        }
    );
    assert_eq!(seen.closed.len(), 1);
    assert_eq!(seen.closed[0].2, 7);
    assert_eq!(seen.closed[0].3, "bye");
}

#[test]
fn webtransport_session_sees_path_and_jwt_and_moves_streams_and_datagrams() {
    session_with_path_query_streams_and_datagrams(IoBackend::Auto);
}

#[test]
fn webtransport_session_with_poll_backend() {
    session_with_path_query_streams_and_datagrams(IoBackend::Poll);
}
