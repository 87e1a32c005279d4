//! Malformed input is rejected without disturbing an established connection on the same
//! worker (one worker, so "same worker" is certain).

mod common;

use std::time::Duration;

use common::*;
use quic_io::IoBackend;

/// Bounded garbage load.
const GARBAGE_PACKETS: usize = 300;

async fn established(fp: &str, addr: std::net::SocketAddr) -> (quinn::Endpoint, quinn::Connection) {
    let ep = client_endpoint();
    let conn = connect_moq05(&ep, fp, addr).await;
    assert_eq!(quic_echo(&conn, b"before").await, b"before");
    (ep, conn)
}

/// A tiny deterministic generator: the test must not depend on an RNG crate.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn garbage_and_truncated_initials(io: IoBackend) {
    let (server, _seen) = start(config(1, io));
    let addr = server.local_addr();
    let fp = server.fingerprint();
    runtime().block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let (_ep, conn) = established(&fp, addr).await;
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut st = 0x9e3779b97f4a7c15u64;
            for i in 0..GARBAGE_PACKETS {
                let len = 1 + (xorshift(&mut st) % 1400) as usize;
                let mut p: Vec<u8> = (0..len).map(|_| xorshift(&mut st) as u8).collect();
                match i % 3 {
                    // short header with a CID that may look like ours
                    0 => p[0] = 0x40 | (p[0] & 0x3f),
                    // long header, QUIC v1, random rest
                    1 if len > 6 => {
                        p[0] |= 0xc0;
                        p[1..5].copy_from_slice(&1u32.to_be_bytes());
                    }
                    _ => {}
                }
                sock.send_to(&p, addr).unwrap();
            }
            // Truncated Initials: a valid-looking header whose length runs past the datagram.
            for cut in [7usize, 16, 40, 200, 1199] {
                let mut p = vec![
                    0xc3u8, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x44, 0xd0,
                ];
                p.resize(1200, 0);
                p.truncate(cut);
                sock.send_to(&p, addr).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(quic_echo(&conn, b"after").await, b"after");
        })
        .await
        .expect("test finished in time");
    });
    assert_eq!(server.stats()[0].accepted, 1, "garbage created connections");
}

#[test]
fn random_bytes_and_truncated_initials_do_not_disturb_a_live_connection() {
    garbage_and_truncated_initials(IoBackend::Auto);
}

#[test]
fn random_bytes_and_truncated_initials_with_poll_backend() {
    garbage_and_truncated_initials(IoBackend::Poll);
}

/// The client's half of HTTP/3 setup: control stream with SETTINGS enabling WebTransport.
async fn h3_control(conn: &quinn::Connection) -> quinn::SendStream {
    let mut ctrl = conn.open_uni().await.unwrap();
    ctrl.write_all(&quic_io::wt::control_stream_bytes())
        .await
        .unwrap();
    ctrl
}

fn connect_frame(with_protocol: bool) -> Vec<u8> {
    let mut fs = vec![0u8, 0, 0x50, 14];
    fs.extend_from_slice(b"localhost:4443");
    fs.push(0xcf); // :method CONNECT
    if with_protocol {
        fs.extend_from_slice(&[0x27, 0x02]);
        fs.extend_from_slice(b":protocol");
        fs.push(12);
        fs.extend_from_slice(b"webtransport");
    }
    fs.push(0xd7); // :scheme https
    fs.extend_from_slice(&[0x51, 5]);
    fs.extend_from_slice(b"/anon");
    let mut out = vec![0x01, fs.len() as u8];
    out.extend_from_slice(&fs);
    out
}

fn bad_h3_peers(io: IoBackend) {
    let (server, seen) = start(config(1, io));
    let addr = server.local_addr();
    let fp = server.fingerprint();
    runtime().block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let (_ep, live) = established(&fp, addr).await;
            let ep = client_endpoint();

            // CONNECT without :protocol: answered 400 and finished; no session.
            let conn = ep.connect_with(quinn_client(&fp, "h3"), addr, "localhost").unwrap().await.unwrap();
            let _ctrl = h3_control(&conn).await;
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&connect_frame(false)).await.unwrap();
            let resp = recv.read_to_end(4096).await.unwrap();
            assert_eq!(resp[0], 0x01, "a HEADERS frame");
            assert!(resp.windows(2).any(|w| w == [0xff, 0x04]), ":status 400 in {resp:x?}");
            let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.unwrap();
            assert!(matches!(&closed, quinn::ConnectionError::ApplicationClosed(a) if a.error_code == quinn::VarInt::from_u32(0x10b)), "{closed:?}");

            // SETTINGS on a request stream: connection error H3_FRAME_UNEXPECTED.
            let conn = ep.connect_with(quinn_client(&fp, "h3"), addr, "localhost").unwrap().await.unwrap();
            let _ctrl = h3_control(&conn).await;
            let (mut send, _recv) = conn.open_bi().await.unwrap();
            send.write_all(&quic_io::wt::control_stream_bytes()[1..]).await.unwrap();
            let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.unwrap();
            assert!(matches!(&closed, quinn::ConnectionError::ApplicationClosed(a) if a.error_code == quinn::VarInt::from_u32(0x105)), "{closed:?}");

            // A control stream that does not start with SETTINGS: H3_MISSING_SETTINGS.
            let conn = ep.connect_with(quinn_client(&fp, "h3"), addr, "localhost").unwrap().await.unwrap();
            let mut ctrl = conn.open_uni().await.unwrap();
            ctrl.write_all(&[0x00, 0x07, 0x01, 0x00]).await.unwrap();
            let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.unwrap();
            assert!(matches!(&closed, quinn::ConnectionError::ApplicationClosed(a) if a.error_code == quinn::VarInt::from_u32(0x10a)), "{closed:?}");

            // The well-formed CONNECT over the same raw client works, so the rejections above
            // are about the input, not the harness.
            let conn = ep.connect_with(quinn_client(&fp, "h3"), addr, "localhost").unwrap().await.unwrap();
            let _ctrl = h3_control(&conn).await;
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&connect_frame(true)).await.unwrap();
            let mut head = [0u8; 5];
            recv.read_exact(&mut head).await.unwrap();
            assert_eq!(head[4], 0xd9, ":status 200 (static 25)");

            assert_eq!(quic_echo(&live, b"still alive").await, b"still alive");
        })
        .await
        .expect("test finished in time");
    });
    let s = server.stats()[0];
    assert!(s.protocol_errors >= 2, "{s:?}");
    // The raw-QUIC connection and the one good WebTransport session.
    assert_eq!(seen.lock().unwrap().sessions.len(), 2);
}

#[test]
fn bad_connect_and_misplaced_settings_are_rejected_without_harm() {
    bad_h3_peers(IoBackend::Auto);
}

#[test]
fn bad_connect_and_misplaced_settings_with_poll_backend() {
    bad_h3_peers(IoBackend::Poll);
}
