//! Limits, TLS reload and cross-thread wake-ups.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use quic_io::{Application, Event, Io, IoBackend, Server, SessionId, WorkerCtx};

#[test]
fn connections_beyond_the_per_worker_limit_are_refused() {
    let mut cfg = config(1, IoBackend::Auto);
    cfg.limits.max_connections_per_worker = 2;
    let (server, _seen) = start(cfg);
    let addr = server.local_addr();
    let fp = server.fingerprint();
    runtime().block_on(async {
        let ep = client_endpoint();
        let a = connect_moq05(&ep, &fp, addr).await;
        let b = connect_moq05(&ep, &fp, addr).await;
        let c = ep
            .connect_with(quinn_client(&fp, "moq-lite-05"), addr, "localhost")
            .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), c)
            .await
            .unwrap();
        assert!(
            matches!(r, Err(quinn::ConnectionError::ConnectionClosed(_))),
            "{r:?}"
        );
        assert_eq!(quic_echo(&a, b"a").await, b"a");
        assert_eq!(quic_echo(&b, b"b").await, b"b");
    });
    assert_eq!(server.stats()[0].refused, 1);
}

#[test]
fn handshakes_above_the_rate_must_answer_a_retry_and_still_connect() {
    let mut cfg = config(1, IoBackend::Auto);
    cfg.limits.handshakes_per_sec = 1;
    let (server, seen) = start(cfg);
    let addr = server.local_addr();
    let fp = server.fingerprint();
    runtime().block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let ep = client_endpoint();
            for i in 0..5u8 {
                let c = connect_moq05(&ep, &fp, addr).await;
                assert_eq!(quic_echo(&c, &[i]).await, [i]);
            }
        })
        .await
        .unwrap();
    });
    assert!(server.stats()[0].retries >= 3, "{:?}", server.stats());
    assert_eq!(seen.lock().unwrap().sessions.len(), 5);
}

#[test]
fn tls_reload_serves_a_new_certificate_to_new_connections_only() {
    let (server, _seen) = start(config(2, IoBackend::Auto));
    let addr = server.local_addr();
    let old = server.fingerprint();
    runtime().block_on(async {
        let ep = client_endpoint();
        let before = connect_moq05(&ep, &old, addr).await;
        let new = server.reload_tls().unwrap();
        assert_ne!(new, old);
        assert_eq!(server.fingerprint(), new);
        // Workers pick the new config up on their next iteration; they were woken.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after = connect_moq05(&ep, &new, addr).await;
        assert_eq!(quic_echo(&after, b"new").await, b"new");
        let stale = ep
            .connect_with(quinn_client(&old, "moq-lite-05"), addr, "localhost")
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(10), stale)
                .await
                .unwrap()
                .is_err()
        );
        assert_eq!(quic_echo(&before, b"old").await, b"old");
    });
}

/// Sends every message from its channel as a datagram to every session, from `poll`.
struct Pusher {
    rx: Mutex<mpsc::Receiver<Bytes>>,
    sessions: Vec<SessionId>,
}

impl Application<Io<'_>> for Pusher {
    fn on_event(&mut self, _now: Instant, event: Event, _io: &mut Io<'_>) {
        if let Event::SessionReady(info) = event {
            self.sessions.push(info.id);
        }
    }

    fn poll(&mut self, _now: Instant, io: &mut Io<'_>) {
        let rx = self.rx.lock().unwrap();
        while let Ok(m) = rx.try_recv() {
            for &s in &self.sessions {
                let _ = io.send_datagram(s, m.clone());
            }
        }
    }

    fn timeout(&self) -> Option<Instant> {
        None
    }
}

#[test]
fn another_thread_wakes_a_parked_worker_to_push_data() {
    let (tx, rx) = mpsc::channel::<Bytes>();
    let rx = Arc::new(Mutex::new(Some(rx)));
    let mut cfg = config(1, IoBackend::Auto);
    cfg.quic.keep_alive = None;
    let server = Server::start(cfg, move |_ctx: WorkerCtx| Pusher {
        rx: Mutex::new(rx.lock().unwrap().take().expect("one worker")),
        sessions: Vec::new(),
    })
    .unwrap();
    let addr = server.local_addr();
    let fp = server.fingerprint();
    let waker = server.wakers()[0].clone();
    runtime().block_on(async {
        let ep = client_endpoint();
        let c = connect_moq05(&ep, &fp, addr).await;
        // Let the worker park (no keep-alive, nothing to do).
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.send(Bytes::from_static(b"pushed")).unwrap();
        waker.wake();
        let d = tokio::time::timeout(Duration::from_millis(900), c.read_datagram())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&d[..], b"pushed");
    });
}

#[test]
fn auto_backend_is_uring_exactly_when_uring_can_start() {
    let cfg = |io| {
        let mut c = quic_io::Config::new("127.0.0.1:0".parse().unwrap());
        c.runtime.workers = 1;
        c.socket.io = io;
        c
    };
    let app = |_ctx: WorkerCtx| Pusher {
        rx: Mutex::new(mpsc::channel().1),
        sessions: Vec::new(),
    };
    let uring = Server::start(cfg(IoBackend::Uring), app);
    let auto = Server::start(cfg(IoBackend::Auto), app).unwrap();
    match uring {
        Ok(h) => {
            assert_eq!(h.backend(), "uring");
            assert_eq!(auto.backend(), "uring");
        }
        Err(_) => assert_eq!(auto.backend(), "poll"),
    }
    assert_eq!(
        Server::start(cfg(IoBackend::Poll), app).unwrap().backend(),
        "poll"
    );
}

/// Opens `count` bidi streams and holds them all open (each has sent one byte, none is
/// finished), then finishes them and checks every echo. Fails by timeout if the server
/// never grants credit for that many at once.
async fn hold_bidi_streams_open(conn: &quinn::Connection, count: usize) {
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(&[i as u8]).await.unwrap();
        held.push((send, recv));
    }
    for (i, (mut send, mut recv)) in held.into_iter().enumerate() {
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(16).await.unwrap(), [i as u8]);
    }
}

#[test]
fn stream_credit_grows_from_a_small_start_to_the_configured_maximum() {
    let mut cfg = config(1, IoBackend::Auto);
    cfg.quic.max_bidi_streams = 300;
    let (server, _seen) = start(cfg);
    let addr = server.local_addr();
    let fp = server.fingerprint();
    runtime().block_on(async {
        let conn = connect_moq05(&client_endpoint(), &fp, addr).await;
        // Many more than a connection starts with, all open at the same time.
        let count = 300;
        assert!(count > quic_io::tls::INITIAL_STREAM_CREDIT as usize * 4);
        tokio::time::timeout(
            Duration::from_secs(20),
            hold_bidi_streams_open(&conn, count),
        )
        .await
        .expect("credit grew to the configured maximum");
        // And never past it: on a fresh connection (no freed streams whose credit quinn
        // returns in batches) 300 can be held open and the 301st must wait.
        let conn = connect_moq05(&client_endpoint(), &fp, addr).await;
        let mut held = Vec::new();
        for i in 0..count {
            let opening = tokio::time::timeout(Duration::from_secs(10), conn.open_bi());
            held.push(
                opening
                    .await
                    .unwrap_or_else(|_| panic!("stream {i} got no credit"))
                    .unwrap(),
            );
            held.last_mut().unwrap().0.write_all(b"x").await.unwrap();
        }
        let over = tokio::time::timeout(Duration::from_millis(500), conn.open_bi()).await;
        assert!(over.is_err(), "the peer got credit beyond max_bidi_streams");
    });
}
