//! Outgoing connections: a one-worker quic-io endpoint dials a two-worker quic-io server.

mod common;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use quic_io::{Application, Event, Io, IoBackend, Server, SessionId, WorkerCtx};

/// Dials once from `poll`, sends a message on a bidi stream and reports what comes back.
struct Dialer {
    target: SocketAddr,
    config: Option<quinn_proto::ClientConfig>,
    session: Option<SessionId>,
    got: Vec<u8>,
    done: Mutex<mpsc::Sender<Result<Vec<u8>, String>>>,
}

impl Application for Dialer {
    fn on_event(&mut self, _now: Instant, event: Event, io: &mut Io<'_>) {
        match event {
            Event::SessionReady(info) => {
                assert_eq!(info.transport.version(), Some("moq-lite-04"));
                let s = io.open_bi(info.id).unwrap();
                io.write(
                    info.id,
                    s,
                    &mut [Bytes::from_static(b"from a quic-io client")],
                )
                .unwrap();
                io.finish(info.id, s).unwrap();
            }
            Event::Data { data, .. } => self.got.extend_from_slice(&data),
            Event::Finished { session, .. } => {
                let _ = self
                    .done
                    .lock()
                    .unwrap()
                    .send(Ok(std::mem::take(&mut self.got)));
                io.close(session, 0, "done");
            }
            Event::SessionClosed { code, reason, .. } => {
                let _ = self
                    .done
                    .lock()
                    .unwrap()
                    .send(Err(format!("closed {code} {reason}")));
            }
            _ => {}
        }
    }

    fn poll(&mut self, _now: Instant, io: &mut Io<'_>) {
        if let Some(cfg) = self.config.take() {
            self.session = Some(io.connect(cfg, self.target, "localhost").unwrap());
        }
    }

    fn timeout(&self) -> Option<Instant> {
        None
    }
}

fn dial(fingerprint_ok: bool) -> Result<Vec<u8>, String> {
    let (server, _seen) = start(config(2, IoBackend::Auto));
    let mut digest = sha256_of(&server.fingerprint());
    if !fingerprint_ok {
        digest[0] ^= 1;
    }
    let (ccfg, client_tls) = pinned_client(digest, &["moq-lite-04"]);
    let (tx, rx) = mpsc::channel();
    let target = server.local_addr();
    let tx = Mutex::new(Some(tx));
    let client = Server::start(ccfg, move |_ctx: WorkerCtx| Dialer {
        target,
        config: Some(client_tls.clone()),
        session: None,
        got: Vec::new(),
        done: Mutex::new(tx.lock().unwrap().take().expect("one worker")),
    })
    .unwrap();
    client.wakers()[0].wake();
    let r = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("dialer reported");
    client.shutdown();
    server.shutdown();
    r
}

#[test]
fn quic_io_endpoint_dials_out_and_echoes_over_raw_quic() {
    assert_eq!(dial(true).unwrap(), b"from a quic-io client");
}

#[test]
fn outgoing_connection_with_wrong_pinned_fingerprint_reports_session_closed() {
    assert!(dial(false).is_err());
}
