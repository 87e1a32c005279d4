//! Raw QUIC (moq-lite ALPNs) against the real workers with the independent `quinn` client.

mod common;

use std::time::Duration;

use common::*;
use quic_io::{IoBackend, Transport};

/// Client sockets: distinct source ports so the kernel's 4-tuple hash spreads the
/// handshakes over the workers.
const CLIENT_ENDPOINTS: usize = 20;
const CONNECTIONS: usize = 200;

fn many_connections_spread_over_workers(io: IoBackend) {
    let (server, seen) = start(config(2, io));
    let addr = server.local_addr();
    let fp = server.fingerprint();
    let rt = runtime();
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let endpoints: Vec<_> = (0..CLIENT_ENDPOINTS).map(|_| client_endpoint()).collect();
            let mut tasks = Vec::new();
            for i in 0..CONNECTIONS {
                let ep = endpoints[i % CLIENT_ENDPOINTS].clone();
                let cfg = quinn_client(&fp, "moq-lite-05");
                tasks.push(tokio::spawn(async move {
                    let conn = ep
                        .connect_with(cfg, addr, "localhost")
                        .unwrap()
                        .await
                        .unwrap();
                    let msg = format!("hello {i}");
                    let back = quic_echo(&conn, msg.as_bytes()).await;
                    assert_eq!(back, msg.as_bytes());
                    conn
                }));
            }
            let mut conns = Vec::new();
            for t in tasks {
                conns.push(t.await.unwrap());
            }
            for c in &conns {
                c.close(0u32.into(), b"done");
            }
        })
        .await
        .expect("test finished in time");
    });
    let stats = server.stats();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.sessions.len(), CONNECTIONS);
    for (_, info) in &seen.sessions {
        assert_eq!(
            info.transport,
            Transport::Quic {
                alpn: "moq-lite-05".into()
            }
        );
        assert!(info.path.is_empty());
    }
    for (w, st) in stats.iter().enumerate() {
        let n = seen.sessions.iter().filter(|(x, _)| *x == w).count();
        assert!(n > 0, "worker {w} served no connection");
        assert_eq!(st.accepted as usize, n);
    }
    assert_eq!(
        stats.iter().map(|s| s.missteered).sum::<u64>(),
        0,
        "{stats:?}"
    );
    // Shutdown closes the connections, and the workers record that in `seen`: holding
    // its lock across the join deadlocks.
    drop(seen);
    server.shutdown();
}

#[test]
fn two_hundred_connections_on_two_workers_all_echo_without_missteering() {
    many_connections_spread_over_workers(IoBackend::Auto);
}

#[test]
fn two_hundred_connections_with_poll_backend() {
    many_connections_spread_over_workers(IoBackend::Poll);
}

#[test]
fn each_moq_lite_alpn_is_accepted_and_reported() {
    let (server, seen) = start(config(1, IoBackend::Auto));
    let addr = server.local_addr();
    let fp = server.fingerprint();
    runtime().block_on(async {
        let ep = client_endpoint();
        for alpn in ["moq-lite-03", "moq-lite-04", "moq-lite-05"] {
            let conn = ep
                .connect_with(quinn_client(&fp, alpn), addr, "localhost")
                .unwrap()
                .await
                .unwrap();
            assert_eq!(quic_echo(&conn, b"x").await, b"x");
            conn.close(0u32.into(), b"");
        }
        // An ALPN we do not offer fails the handshake.
        let bad = ep
            .connect_with(quinn_client(&fp, "moq-lite-99"), addr, "localhost")
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(10), bad)
                .await
                .unwrap()
                .is_err()
        );
    });
    let versions: Vec<_> = seen
        .lock()
        .unwrap()
        .sessions
        .iter()
        .map(|(_, i)| i.transport.version().unwrap().to_string())
        .collect();
    assert_eq!(versions, ["moq-lite-03", "moq-lite-04", "moq-lite-05"]);
}

#[test]
fn server_stream_reset_code_reaches_quinn_translated() {
    // The echo app is not involved: the client resets, the server sees Reset with the
    // untranslated code; covered in the WebTransport tests. Here: datagrams on raw QUIC.
    let (server, _seen) = start(config(1, IoBackend::Auto));
    let addr = server.local_addr();
    let fp = server.fingerprint();
    runtime().block_on(async {
        let ep = client_endpoint();
        let conn = connect_moq05(&ep, &fp, addr).await;
        conn.send_datagram(bytes::Bytes::from_static(b"ping"))
            .unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), conn.read_datagram())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back[..], b"ping");
    });
}

/// Client sockets that move to a new port mid-connection (NAT rebinding).
const REBINDING_CLIENTS: usize = 16;

#[test]
fn missteered_packets_are_forwarded_to_their_owner_not_reset() {
    // Without the BPF program the kernel hashes the new 4-tuple, so about half of the rebound
    // connections land on the wrong worker and must be forwarded.
    let mut cfg = config(2, IoBackend::Auto);
    cfg.socket.steer_bpf = false;
    let (server, _seen) = start(cfg);
    let addr = server.local_addr();
    let fp = server.fingerprint();
    runtime().block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let mut conns = Vec::new();
            for i in 0..REBINDING_CLIENTS {
                let ep = client_endpoint();
                let c = connect_moq05(&ep, &fp, addr).await;
                assert_eq!(
                    quic_echo(&c, format!("a{i}").as_bytes()).await,
                    format!("a{i}").as_bytes()
                );
                conns.push((ep, c));
            }
            for (i, (ep, c)) in conns.iter().enumerate() {
                ep.rebind(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
                    .unwrap();
                assert_eq!(
                    quic_echo(c, format!("b{i}").as_bytes()).await,
                    format!("b{i}").as_bytes()
                );
            }
        })
        .await
        .expect("test finished in time");
    });
    let stats = server.stats();
    let missteered: u64 = stats.iter().map(|s| s.missteered).sum();
    let forwarded: u64 = stats.iter().map(|s| s.forwarded_in).sum();
    assert!(missteered > 0, "{stats:?}");
    // A forwarded packet may still sit in the owner's queue when the counters are read.
    assert!(forwarded > 0 && forwarded <= missteered, "{stats:?}");
}
