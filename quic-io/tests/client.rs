//! Outgoing connections: a one-worker quic-io endpoint dials a two-worker quic-io server.

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use common::*;
use quic_io::{Application, Event, Io, IoBackend, SessionId};

/// Dials once from `poll`, sends a message on a bidi stream and reports what comes back.
struct Dialer {
    target: SocketAddr,
    config: Option<quinn_proto::ClientConfig>,
    session: Option<SessionId>,
    got: Vec<u8>,
    done: Reporter<Vec<u8>>,
}

impl Application<Io<'_>> for Dialer {
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
                self.done.report(Ok(std::mem::take(&mut self.got)));
                io.close(session, 0, "done");
            }
            Event::SessionClosed { code, reason, .. } => {
                self.done.closed(code, &reason);
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
    let target = server.local_addr();
    let (client, r) = run_client(ccfg, "dialer", move |done| Dialer {
        target,
        config: Some(client_tls.clone()),
        session: None,
        got: Vec::new(),
        done,
    });
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
