//! Outgoing WebTransport: a one-worker quic-io endpoint dials a two-worker quic-io server with
//! `Io::connect_webtransport`, and both ends see the same session.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use quic_io::{
    Application, Event, Io, IoBackend, Server, SessionInfo, StreamId, Transport, WorkerCtx,
};

/// What the dialing side saw: its `SessionReady`, and the bytes echoed on the bidi stream and
/// on the uni stream the server opened back.
#[derive(Debug)]
struct Outcome {
    info: SessionInfo,
    bidi: Vec<u8>,
    uni: Vec<u8>,
}

struct WtDialer {
    target: SocketAddr,
    config: Option<quinn_proto::ClientConfig>,
    path_and_query: &'static str,
    protocols: &'static [&'static str],
    info: Option<SessionInfo>,
    bidi: Option<StreamId>,
    got: HashMap<StreamId, Vec<u8>>,
    finished: Vec<StreamId>,
    done: Reporter<Outcome>,
}

impl Application<Io<'_>> for WtDialer {
    fn on_event(&mut self, _now: Instant, event: Event, io: &mut Io<'_>) {
        match event {
            Event::SessionReady(info) => {
                let b = io.open_bi(info.id).unwrap();
                io.write(info.id, b, &mut [Bytes::from_static(b"wt bidi")])
                    .unwrap();
                io.finish(info.id, b).unwrap();
                let u = io.open_uni(info.id).unwrap();
                io.write(info.id, u, &mut [Bytes::from_static(b"wt uni")])
                    .unwrap();
                io.finish(info.id, u).unwrap();
                self.bidi = Some(b);
                self.info = Some(info);
            }
            Event::StreamOpened { stream, bidi, .. } => {
                assert!(!bidi, "the echo server opens only uni streams");
                self.got.entry(stream).or_default();
            }
            Event::Data { stream, data, .. } => {
                self.got.entry(stream).or_default().extend_from_slice(&data)
            }
            Event::Finished { session, stream } => {
                self.finished.push(stream);
                // Our bidi echo and the server's uni stream: both complete.
                if self.finished.len() == 2 {
                    let bidi = self.bidi.and_then(|b| self.got.remove(&b));
                    let uni = self.got.drain().map(|(_, v)| v).next();
                    let r = match (self.info.clone(), bidi, uni) {
                        (Some(info), Some(bidi), Some(uni)) => Ok(Outcome { info, bidi, uni }),
                        other => Err(format!("incomplete: {other:?}")),
                    };
                    self.done.report(r);
                    io.close(session, 0, "done");
                }
            }
            Event::SessionClosed { code, reason, .. } => self.done.closed(code, &reason),
            _ => {}
        }
    }

    fn poll(&mut self, _now: Instant, io: &mut Io<'_>) {
        if let Some(cfg) = self.config.take() {
            let authority = format!("localhost:{}", self.target.port());
            if let Err(e) = io.connect_webtransport(
                cfg,
                self.target,
                "localhost",
                &authority,
                self.path_and_query,
                self.protocols,
            ) {
                self.done.report(Err(e.to_string()));
            }
        }
    }

    fn timeout(&self) -> Option<Instant> {
        None
    }
}

fn dial_wt(
    path_and_query: &'static str,
    protocols: &'static [&'static str],
) -> (Result<Outcome, String>, Vec<SessionInfo>) {
    let (server, seen) = start(config(2, IoBackend::Auto));
    let (ccfg, client_tls) = pinned_client(sha256_of(&server.fingerprint()), &["h3"]);
    let target = server.local_addr();
    let (client, r) = run_client(ccfg, "dialer", move |done| WtDialer {
        target,
        config: Some(client_tls.clone()),
        path_and_query,
        protocols,
        info: None,
        bidi: None,
        got: HashMap::new(),
        finished: Vec::new(),
        done,
    });
    // Let the close capsule reach the server before it stops.
    std::thread::sleep(Duration::from_millis(200));
    client.shutdown();
    server.shutdown();
    let sessions = seen
        .lock()
        .unwrap()
        .sessions
        .iter()
        .map(|s| s.1.clone())
        .collect();
    (r, sessions)
}

#[test]
fn quic_io_client_dials_webtransport_with_path_and_jwt_and_streams_echo() {
    let (r, server_saw) = dial_wt("/anon/room?jwt=abc.def", &["moq-lite-05", "moq-lite-04"]);
    let out = r.unwrap();
    assert_eq!(out.bidi, b"wt bidi");
    assert_eq!(out.uni, b"wt uni");
    assert_eq!(
        out.info.transport,
        Transport::WebTransport {
            protocol: Some("moq-lite-05".into())
        }
    );
    assert_eq!(out.info.path, "/anon/room");
    assert_eq!(out.info.query, "jwt=abc.def");
    assert_eq!(server_saw.len(), 1);
    assert_eq!(server_saw[0].path, "/anon/room");
    assert_eq!(server_saw[0].query, "jwt=abc.def");
    assert_eq!(server_saw[0].transport.version(), Some("moq-lite-05"));
}

#[test]
fn webtransport_client_offering_no_known_protocol_gets_a_session_without_one() {
    let (r, server_saw) = dial_wt("/", &["moq-lite-99"]);
    let out = r.unwrap();
    assert_eq!(
        out.info.transport,
        Transport::WebTransport { protocol: None }
    );
    assert_eq!(out.bidi, b"wt bidi");
    assert_eq!(server_saw[0].transport.version(), None);
}

/// Opens a uni stream and says hello the moment a session is ready, as a relay does with
/// its first MoQ streams: the bytes leave right behind the CONNECT response.
struct Greeter;

impl Application<Io<'_>> for Greeter {
    fn on_event(&mut self, _now: Instant, event: Event, io: &mut Io<'_>) {
        if let Event::SessionReady(info) = event
            && let Ok(u) = io.open_uni(info.id)
        {
            let _ = io.write(info.id, u, &mut [Bytes::from_static(b"hello early")]);
            let _ = io.finish(info.id, u);
        }
    }
    fn poll(&mut self, _now: Instant, _io: &mut Io<'_>) {}
    fn timeout(&self) -> Option<Instant> {
        None
    }
}

/// Reports the first stream the server finishes.
struct Listener {
    target: SocketAddr,
    config: Option<quinn_proto::ClientConfig>,
    got: HashMap<StreamId, Vec<u8>>,
    done: Reporter<Vec<u8>>,
}

impl Application<Io<'_>> for Listener {
    fn on_event(&mut self, _now: Instant, event: Event, io: &mut Io<'_>) {
        match event {
            Event::Data { stream, data, .. } => {
                self.got.entry(stream).or_default().extend_from_slice(&data)
            }
            Event::Finished { session, stream } => {
                let data = self.got.remove(&stream).unwrap_or_default();
                self.done.report(Ok(data));
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
            let authority = format!("localhost:{}", self.target.port());
            let _ = io.connect_webtransport(cfg, self.target, "localhost", &authority, "/", &[]);
        }
    }

    fn timeout(&self) -> Option<Instant> {
        None
    }
}

#[test]
fn stream_the_server_opens_right_behind_its_200_reaches_the_client() {
    // Several rounds: whether the stream's packet is read before the response varies.
    for _ in 0..3 {
        let server = Server::start(config(1, IoBackend::Auto), |_ctx: WorkerCtx| Greeter)
            .expect("server starts");
        let (ccfg, tls) = pinned_client(sha256_of(&server.fingerprint()), &["h3"]);
        let target = server.local_addr();
        let (client, r) = run_client(ccfg, "listener", move |done| Listener {
            target,
            config: Some(tls.clone()),
            got: HashMap::new(),
            done,
        });
        client.shutdown();
        server.shutdown();
        assert_eq!(r.unwrap(), b"hello early");
    }
}
