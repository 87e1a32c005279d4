//! The per-connection half of a worker: its quinn-proto endpoint and connections, turning
//! datagrams and timers into quinn events and quinn events into application [`Event`]s,
//! the WebTransport glue of `h3` connections (translating between quinn-proto and the
//! sans-IO `wt::Handshake` and `wt::Streams`), stream-credit growth, and flushing each dirty
//! connection's packets into `Net`. The event loop in `worker` decides when each of these
//! runs; this module owns the connections and must never wait, read the clock (`now` is
//! passed in) or lock.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use quinn_proto::{
    ConnectionHandle, DatagramEvent, Dir, EcnCodepoint, Endpoint, Incoming, ReadError, StreamEvent,
    VarInt,
};
use tracing::{debug, info};

use crate::app::{Event, SessionId, SessionInfo, StreamId, Transport};
use crate::net::Net;
use crate::server::WorkerStats;
use crate::worker::admission::Refused;
use crate::wt;

/// How long a graceful close waits for the peer (spec: max(3 RTT, 100 ms)).
pub(crate) const CLOSE_GRACE: Duration = Duration::from_millis(100);

pub(crate) enum Mode {
    /// TLS not finished; ALPN unknown.
    Handshaking,
    Quic {
        alpn: String,
    },
    H3(Box<H3>),
}

pub(crate) struct H3 {
    pub hs: wt::Handshake,
    pub streams: wt::Streams<StreamId>,
}

/// One QUIC connection of this worker, with what the worker keeps beside it.
pub(crate) struct WorkerConn {
    pub handle: ConnectionHandle,
    pub inner: quinn_proto::Connection,
    pub remote: SocketAddr,
    pub mode: Mode,
    /// The application has been told `SessionReady`.
    pub ready: bool,
    /// `SessionClosed` has been delivered (or the session never became ready).
    pub closed: bool,
    pub dirty: bool,
    pub timer: Option<Instant>,
    /// A graceful WebTransport close: send CONNECTION_CLOSE at this time.
    pub close_at: Option<(Instant, VarInt)>,
    /// Bytes that must precede application data on a stream (WebTransport prefixes).
    pub pending_prefix: HashMap<StreamId, Bytes>,
    /// An outgoing WebTransport dial: the client handshake, until ALPN `h3` is confirmed.
    pub dial: Option<Box<wt::Handshake>>,
    /// An accepted connection must be a session by then (`QuicConfig::handshake_timeout`).
    pub handshake_deadline: Option<Instant>,
    /// Holds a slot in the server's admission limits (accepted ones only): released
    /// with its remote address when it ends.
    pub admitted: bool,
}

impl WorkerConn {
    /// Writes bytes that must precede anything else on a new stream; what the stream does
    /// not take now is kept and sent before the application's data.
    pub fn write_prefix(&mut self, id: StreamId, prefix: Bytes) {
        match self.inner.send_stream(id).write(&prefix) {
            Ok(n) if n == prefix.len() => {}
            Ok(n) => {
                self.pending_prefix.insert(id, prefix.slice(n..));
            }
            Err(_) => {
                self.pending_prefix.insert(id, prefix);
            }
        }
    }

    pub fn session(&self) -> Option<u64> {
        match &self.mode {
            Mode::H3(h) => h.hs.session(),
            _ => None,
        }
    }
}

/// Worker-local state the application's `Io` acts on.
pub(crate) struct Core {
    pub(crate) index: usize,
    pub(crate) endpoint: Endpoint,
    /// Boxed: a quinn-proto `Connection` is kilobytes, and `drive`/`flush` take each dirty
    /// connection out of the map and put it back every iteration; moving a pointer instead
    /// of the struct was a tenth of the worker's CPU with 100 connections.
    pub(crate) conns: HashMap<SessionId, Box<WorkerConn>>,
    by_handle: HashMap<ConnectionHandle, SessionId>,
    next_id: SessionId,
    pub(crate) dirty: Vec<SessionId>,
    pub(crate) events: VecDeque<Event>,
    timers: BTreeSet<(Instant, SessionId)>,
    pub(crate) net: Net,
    stats: Arc<WorkerStats>,
    wt_protocols: Vec<String>,
    max_conns: usize,
    /// The worker socket's bound address, for `SessionInfo::local`.
    local_addr: Option<SocketAddr>,
    /// A drain that takes no new sessions: every new handshake is refused.
    pub(crate) refusing_new: bool,
    /// The most concurrent (bidi, uni) streams a peer may grow to.
    max_streams: (u32, u32),
    pub(crate) handshake_timeout: Option<Duration>,
    bucket: TokenBucket,
    /// `VALIDATED_HEADROOM` times the rate for handshakes whose address a Retry proved:
    /// past it they are refused, so a flood that answers Retries still cannot take every
    /// core, while a burst of real viewers that answered theirs still gets in.
    validated_bucket: TokenBucket,
    /// Per-source connection counts, shared by every worker.
    shared: Arc<crate::server::Shared>,
    scratch: Vec<u8>,
}

/// Proven-address handshakes allowed per unproven one: a Retry round trip already costs
/// a flood its spoofing, so the second limit only caps what a real but abusive client
/// fleet can start; four times the rate lets a legitimate burst through.
const VALIDATED_HEADROOM: u32 = 4;

/// New-handshake rate limiter: above the rate, clients must prove their address (Retry).
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32, now: Instant) -> Self {
        Self {
            rate: rate as f64,
            tokens: rate as f64,
            last: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The address a connection reached us on: the destination IP of its packets when the
/// kernel reported one, on the worker socket's port.
fn session_local(conn: &quinn_proto::Connection, bound: Option<SocketAddr>) -> Option<SocketAddr> {
    let bound = bound?;
    Some(SocketAddr::new(
        conn.local_ip().unwrap_or(bound.ip()),
        bound.port(),
    ))
}

/// The SNI of a server-side connection, once its handshake data exists.
/// The verified client certificate of `conn`, if it presented one.
fn peer_certificate(conn: &quinn_proto::Connection) -> Option<Box<crate::tls::PeerCertificate>> {
    let identity = conn.crypto_session().peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    crate::tls::PeerCertificate::from_chain(&chain).map(Box::new)
}

fn server_name(conn: &quinn_proto::Connection) -> Option<String> {
    conn.crypto_session()
        .handshake_data()?
        .downcast::<quinn_proto::crypto::rustls::HandshakeData>()
        .ok()?
        .server_name
}

/// The application's code for an HTTP/3-space code from the wire.
pub(crate) fn app_code(raw: u64) -> u32 {
    wt::error_from_http3(raw).unwrap_or(u32::try_from(raw).unwrap_or(u32::MAX))
}

pub(crate) fn wire_code(code: u32) -> VarInt {
    VarInt::from_u64(wt::error_to_http3(code)).unwrap_or(VarInt::from_u32(code))
}

impl Core {
    pub(crate) fn new(
        index: usize,
        endpoint: Endpoint,
        net: Net,
        stats: Arc<WorkerStats>,
        shared: Arc<crate::server::Shared>,
        local_addr: Option<SocketAddr>,
        now: Instant,
    ) -> Self {
        let cfg = &shared.config;
        let max_segments = net.max_segments();
        Core {
            index,
            endpoint,
            conns: HashMap::new(),
            by_handle: HashMap::new(),
            next_id: 0,
            dirty: Vec::new(),
            events: VecDeque::new(),
            timers: BTreeSet::new(),
            net,
            stats,
            wt_protocols: cfg.quic.wt_protocols.clone(),
            max_conns: cfg.limits.max_connections_per_worker,
            local_addr,
            refusing_new: false,
            max_streams: crate::tls::max_stream_credit(&cfg.quic),
            handshake_timeout: cfg.quic.handshake_timeout,
            bucket: TokenBucket::new(cfg.limits.handshakes_per_sec, now),
            validated_bucket: TokenBucket::new(
                cfg.limits
                    .handshakes_per_sec
                    .saturating_mul(VALIDATED_HEADROOM),
                now,
            ),
            shared,
            scratch: Vec::with_capacity(max_segments * 1500),
        }
    }

    /// Sends a packet that belongs to no connection; one the socket cannot take now is
    /// dropped and counted (the peer retries its Initial).
    fn send_stateless(&mut self, t: &quinn_proto::Transmit, buf: &[u8]) {
        if !self.net.send(t, buf) {
            self.stats.stateless_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a stream operation the worker made on its own behalf that quinn-proto refused.
    pub(crate) fn stream_op<T, E>(&self, r: Result<T, E>) {
        if r.is_err() {
            self.stream_ops_failed(1);
        }
    }

    /// Counts `n` refused stream operations of the worker's own (see `stream_op`).
    pub(crate) fn stream_ops_failed(&self, n: u64) {
        if n > 0 {
            self.stats.stream_op_errors.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn mark_dirty(&mut self, sid: SessionId) {
        if let Some(c) = self.conns.get_mut(&sid)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(sid);
        }
    }

    /// Takes a new connection, accepted or dialed (`dial`: a WebTransport dial's client
    /// handshake), into the worker; returns its session ID.
    pub(crate) fn insert_conn(
        &mut self,
        handle: ConnectionHandle,
        inner: quinn_proto::Connection,
        remote: SocketAddr,
        dial: Option<Box<wt::Handshake>>,
        handshake_deadline: Option<Instant>,
    ) -> SessionId {
        let sid = self.next_id;
        self.next_id += 1;
        self.conns.insert(
            sid,
            Box::new(WorkerConn {
                handle,
                inner,
                remote,
                mode: Mode::Handshaking,
                ready: false,
                closed: false,
                dirty: false,
                timer: None,
                close_at: None,
                pending_prefix: HashMap::new(),
                dial,
                handshake_deadline,
                admitted: false,
            }),
        );
        self.by_handle.insert(handle, sid);
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.mark_dirty(sid);
        sid
    }

    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        match self
            .endpoint
            .handle(now, remote, local_ip, ecn, data, &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(h, ev)) => {
                if let Some(&sid) = self.by_handle.get(&h) {
                    if let Some(c) = self.conns.get_mut(&sid) {
                        c.inner.handle_event(ev);
                    }
                    self.mark_dirty(sid);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.on_incoming(now, incoming, &mut buf)
            }
            Some(DatagramEvent::Response(t)) => {
                self.send_stateless(&t, &buf);
            }
            None => {}
        }
        self.scratch = buf;
    }

    fn on_incoming(&mut self, now: Instant, incoming: Incoming, buf: &mut Vec<u8>) {
        if self.refusing_new || self.conns.len() >= self.max_conns {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            let t = self.endpoint.refuse(incoming, buf);
            self.send_stateless(&t, buf);
            return;
        }
        if !incoming.remote_address_validated() && incoming.may_retry() && !self.bucket.take(now) {
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            match self.endpoint.retry(incoming, buf) {
                Ok(t) => {
                    self.send_stateless(&t, buf);
                }
                Err(e) => self.endpoint.ignore(e.into_incoming()),
            }
            return;
        }
        if incoming.remote_address_validated() && !self.validated_bucket.take(now) {
            self.stats.refused_rate.fetch_add(1, Ordering::Relaxed);
            let t = self.endpoint.refuse(incoming, buf);
            self.send_stateless(&t, buf);
            return;
        }
        let remote = incoming.remote_address();
        if let Err(refused) = self.shared.admission.admit(remote.ip()) {
            let counter = match refused {
                Refused::Total => &self.stats.refused,
                Refused::PerSource => &self.stats.refused_per_source,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let t = self.endpoint.refuse(incoming, buf);
            self.send_stateless(&t, buf);
            return;
        }
        match self.endpoint.accept(incoming, now, buf, None) {
            Ok((handle, inner)) => {
                let deadline = self.handshake_timeout.map(|timeout| now + timeout);
                let sid = self.insert_conn(handle, inner, remote, None, deadline);
                if let Some(c) = self.conns.get_mut(&sid) {
                    c.admitted = true;
                }
                debug!(worker = self.index, session = sid, %remote, "accepted");
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.shared.admission.release(remote.ip());
                debug!(error = %e.cause, "accept failed");
                if let Some(t) = e.response {
                    self.send_stateless(&t, buf);
                }
            }
        }
    }

    /// Drains one connection's quinn events into application events.
    pub(crate) fn drive(&mut self, sid: SessionId, now: Instant) {
        let Some(mut c) = self.conns.remove(&sid) else {
            return;
        };
        let _span = tracing::debug_span!("conn", id = sid, worker = self.index).entered();
        while let Some(ev) = c.inner.poll() {
            self.on_conn_event(sid, &mut c, ev, now);
        }
        self.conns.insert(sid, c);
    }

    fn on_conn_event(
        &mut self,
        sid: SessionId,
        c: &mut WorkerConn,
        ev: quinn_proto::Event,
        now: Instant,
    ) {
        use quinn_proto::Event as Q;
        match ev {
            Q::HandshakeDataReady => {
                let alpn = c
                    .inner
                    .crypto_session()
                    .handshake_data()
                    .and_then(|d| {
                        d.downcast::<quinn_proto::crypto::rustls::HandshakeData>()
                            .ok()
                    })
                    .and_then(|d| d.protocol)
                    .map(|p| String::from_utf8_lossy(&p).into_owned())
                    .unwrap_or_default();
                // Outgoing connections speak h3 only when dialed as WebTransport.
                c.mode = match c.dial.take() {
                    Some(hs) if alpn == "h3" => Mode::H3(Box::new(H3 {
                        hs: *hs,
                        streams: wt::Streams::new(),
                    })),
                    Some(_) => {
                        let reason = format!("server chose ALPN {alpn:?}, not h3");
                        c.inner.close(
                            now,
                            VarInt::from_u64(wt::h3::GENERAL_PROTOCOL_ERROR).unwrap_or_default(),
                            Bytes::from(reason.clone()),
                        );
                        if !c.closed {
                            c.closed = true;
                            self.events.push_back(Event::SessionClosed {
                                session: sid,
                                code: 1,
                                reason,
                            });
                        }
                        Mode::Handshaking
                    }
                    None if alpn == "h3" && c.inner.side().is_server() => Mode::H3(Box::new(H3 {
                        hs: wt::Handshake::new(self.wt_protocols.clone()),
                        streams: wt::Streams::new(),
                    })),
                    None => Mode::Quic { alpn },
                };
            }
            Q::Connected => match &c.mode {
                Mode::Quic { alpn } => {
                    c.ready = true;
                    self.events.push_back(Event::SessionReady(SessionInfo {
                        id: sid,
                        transport: Transport::Quic { alpn: alpn.clone() },
                        authority: None,
                        path: String::new(),
                        query: String::new(),
                        remote: c.remote,
                        local: session_local(&c.inner, self.local_addr),
                        server_name: server_name(&c.inner),
                        handshake_deadline: c.handshake_deadline,
                        peer_certificate: peer_certificate(&c.inner),
                    }));
                }
                Mode::H3(_) => {
                    // Our control stream: open for the connection's whole life, and never
                    // the application's.
                    if let Some(id) = c.inner.streams().open(Dir::Uni) {
                        // What the stream does not take now goes out on `Writable`.
                        c.write_prefix(id, wt::control_stream_bytes());
                        if let Mode::H3(h) = &mut c.mode {
                            h.streams.local_control(id);
                        }
                    }
                    if c.inner.side().is_client() {
                        self.send_connect(sid, c, now);
                    }
                }
                Mode::Handshaking => {}
            },
            Q::ConnectionLost { reason } => {
                debug!(worker = self.index, session = sid, %reason, "connection lost");
                self.session_closed(sid, c, &reason);
            }
            Q::Stream(StreamEvent::Opened { dir }) => {
                while let Some(id) = c.inner.streams().accept(dir) {
                    if let Mode::H3(h) = &mut c.mode {
                        h.streams.peer_opened(id);
                    } else if c.ready {
                        self.events.push_back(Event::StreamOpened {
                            session: sid,
                            stream: id,
                            bidi: dir == Dir::Bi,
                        });
                    }
                    // Data that arrived before accept raises no Readable: read now.
                    self.read_stream(sid, c, id, now);
                }
                let cap = match dir {
                    Dir::Bi => self.max_streams.0,
                    Dir::Uni => self.max_streams.1,
                };
                grow_stream_credit(&mut c.inner, dir, cap);
            }
            Q::Stream(StreamEvent::Readable { id }) => self.read_stream(sid, c, id, now),
            Q::Stream(StreamEvent::Writable { id }) => {
                if let Some(p) = c.pending_prefix.get_mut(&id) {
                    match c.inner.send_stream(id).write(p) {
                        Ok(n) if n >= p.len() => {
                            c.pending_prefix.remove(&id);
                        }
                        Ok(n) => {
                            p.advance(n);
                            return;
                        }
                        Err(_) => {
                            c.pending_prefix.remove(&id);
                        }
                    }
                }
                if c.ready && self.is_app_stream(c, id) {
                    self.events.push_back(Event::Writable {
                        session: sid,
                        stream: id,
                    });
                }
            }
            Q::Stream(StreamEvent::Stopped { id, error_code }) => {
                if c.ready && self.is_app_stream(c, id) {
                    self.events.push_back(Event::StopSending {
                        session: sid,
                        stream: id,
                        code: app_code(error_code.into_inner()),
                    });
                }
            }
            Q::Stream(StreamEvent::Finished { .. } | StreamEvent::Available { .. }) => {}
            Q::DatagramReceived => {
                while let Some(d) = c.inner.datagrams().recv() {
                    if !c.ready {
                        continue;
                    }
                    let data = match c.session() {
                        Some(s) => match wt::decode_datagram(s, d) {
                            Some(d) => d,
                            None => continue,
                        },
                        None if matches!(c.mode, Mode::Quic { .. }) => d,
                        None => continue,
                    };
                    self.events
                        .push_back(Event::Datagram { session: sid, data });
                }
            }
            Q::DatagramsUnblocked => {}
        }
    }

    /// Client side: opens the CONNECT request stream and writes the request on it.
    fn send_connect(&mut self, sid: SessionId, c: &mut WorkerConn, now: Instant) {
        let Some(id) = c.inner.streams().open(Dir::Bi) else {
            // A fresh connection always has bidi credit unless the server grants none.
            c.inner.close(
                now,
                VarInt::from_u64(wt::h3::GENERAL_PROTOCOL_ERROR).unwrap_or_default(),
                Bytes::from_static(b"no bidi stream for CONNECT"),
            );
            let reason = quinn_proto::ConnectionError::LocallyClosed;
            self.session_closed(sid, c, &reason);
            return;
        };
        let Mode::H3(h) = &mut c.mode else { return };
        let req = h.hs.start_request(id.into());
        h.streams.local_request(id);
        c.write_prefix(id, req);
    }

    fn is_app_stream(&self, c: &WorkerConn, id: StreamId) -> bool {
        match &c.mode {
            Mode::H3(h) => h.streams.is_app_stream(id) && !h.hs.is_connect_stream(id.into()),
            _ => true,
        }
    }

    fn session_closed(
        &mut self,
        sid: SessionId,
        c: &mut WorkerConn,
        reason: &quinn_proto::ConnectionError,
    ) {
        if c.closed {
            return;
        }
        c.closed = true;
        // An incoming connection that never became a session is not the application's
        // business; an outgoing one is (its `connect` must learn that it failed).
        if !c.ready && c.inner.side().is_server() {
            return;
        }
        let (code, text) = match reason {
            quinn_proto::ConnectionError::ApplicationClosed(a) => {
                let raw = a.error_code.into_inner();
                let code = match c.mode {
                    Mode::H3(_) => wt::error_from_http3(raw).map(u64::from).unwrap_or(raw),
                    _ => raw,
                };
                (code, String::from_utf8_lossy(&a.reason).into_owned())
            }
            quinn_proto::ConnectionError::LocallyClosed => (0, String::new()),
            other => (1, other.to_string()),
        };
        self.events.push_back(Event::SessionClosed {
            session: sid,
            code,
            reason: text,
        });
    }

    /// Reads everything a stream has; flow control bounds how much that can be.
    fn read_stream(&mut self, sid: SessionId, c: &mut WorkerConn, id: StreamId, now: Instant) {
        let mut chunks_out = Vec::new();
        let mut fin = false;
        let mut reset = None;
        {
            let mut recv = c.inner.recv_stream(id);
            let Ok(mut chunks) = recv.read(true) else {
                return;
            };
            loop {
                match chunks.next(usize::MAX) {
                    Ok(Some(chunk)) => chunks_out.push(chunk.bytes),
                    Ok(None) => {
                        fin = true;
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                    Err(ReadError::Reset(code)) => {
                        reset = Some(code);
                        break;
                    }
                }
            }
            // Whether to send the credit now: the connection is dirty (being driven) and
            // is flushed this iteration anyway.
            let _ = chunks.finalize();
        }
        let drained = chunks_out;
        if matches!(c.mode, Mode::H3(_)) {
            self.h3_stream_input(sid, c, id, drained, fin, reset, now);
            return;
        }
        if !c.ready {
            return;
        }
        for data in drained {
            self.events.push_back(Event::Data {
                session: sid,
                stream: id,
                data,
            });
        }
        self.stream_end(sid, id, fin, reset.map(VarInt::into_inner));
    }

    fn stream_end(&mut self, sid: SessionId, id: StreamId, fin: bool, reset: Option<u64>) {
        if let Some(code) = reset {
            self.events.push_back(Event::Reset {
                session: sid,
                stream: id,
                code: app_code(code),
            });
        } else if fin {
            self.events.push_back(Event::Finished {
                session: sid,
                stream: id,
            });
        }
    }

    /// Feeds what was read on a stream of an `h3` connection to its stream roles, and carries
    /// out what they say.
    #[allow(clippy::too_many_arguments)]
    fn h3_stream_input(
        &mut self,
        sid: SessionId,
        c: &mut WorkerConn,
        id: StreamId,
        chunks: Vec<Bytes>,
        fin: bool,
        reset: Option<VarInt>,
        now: Instant,
    ) {
        let Mode::H3(h) = &mut c.mode else { return };
        // Both flip together when the handshake says `Ready` (`h3_outputs`).
        debug_assert_eq!(
            c.ready,
            h.streams.is_ready(),
            "session {sid}: ready flags differ"
        );
        let ids = h.hs.session_ids();
        h.streams
            .on_input(id, chunks, fin, reset.map(VarInt::into_inner), ids);
        let mut result = Ok(());
        self.stream_actions(sid, c, &mut result);
        if let Err(e) = result {
            debug!(worker = self.index, session = sid, error = %e, "closing h3 connection");
            self.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            c.inner.close(
                now,
                VarInt::from_u64(e.h3_code()).unwrap_or_default(),
                Bytes::from(e.to_string()),
            );
            let reason = quinn_proto::ConnectionError::LocallyClosed;
            self.session_closed(sid, c, &reason);
            return;
        }
        self.h3_outputs(sid, c, now);
    }

    /// Carries out the stream roles' actions: application events, STOP_SENDING, and the
    /// handshake's input. After the handshake's first error, its remaining input is dropped
    /// (the connection is about to close with that error).
    fn stream_actions(
        &mut self,
        sid: SessionId,
        c: &mut WorkerConn,
        result: &mut Result<(), wt::WtError>,
    ) {
        let Mode::H3(h) = &mut c.mode else { return };
        while let Some(action) = h.streams.poll_action() {
            match action {
                wt::StreamAction::Opened { stream, bidi } => {
                    self.events.push_back(Event::StreamOpened {
                        session: sid,
                        stream,
                        bidi,
                    });
                }
                wt::StreamAction::Data { stream, data } => {
                    self.events.push_back(Event::Data {
                        session: sid,
                        stream,
                        data,
                    });
                }
                wt::StreamAction::Finished { stream } => self.stream_end(sid, stream, true, None),
                wt::StreamAction::Reset { stream, code } => {
                    self.stream_end(sid, stream, false, Some(code));
                }
                wt::StreamAction::Stop { stream, code } => {
                    let r = c
                        .inner
                        .recv_stream(stream)
                        .stop(VarInt::from_u64(code).unwrap_or_default());
                    self.stream_op(r);
                }
                wt::StreamAction::ControlOpened { stream } => {
                    if result.is_ok() {
                        *result = h.hs.on_control_opened(stream.into());
                    }
                }
                wt::StreamAction::ControlData { data } => {
                    if result.is_ok() {
                        *result = h.hs.on_control_data(&data, false);
                    }
                }
                wt::StreamAction::ControlClosed => {
                    if result.is_ok() {
                        *result = Err(wt::WtError::ControlClosed);
                    }
                }
                wt::StreamAction::RequestData { stream, data, fin } => {
                    if result.is_ok() {
                        *result = h.hs.on_request_data(stream.into(), &data, fin);
                    }
                }
                wt::StreamAction::RequestReset { stream } => h.hs.on_request_reset(stream.into()),
            }
        }
    }

    fn h3_outputs(&mut self, sid: SessionId, c: &mut WorkerConn, now: Instant) {
        loop {
            let Mode::H3(h) = &mut c.mode else { return };
            let Some(out) = h.hs.poll_output() else {
                return;
            };
            match out {
                wt::Output::Send { stream, data, fin } => {
                    let Ok(vi) = VarInt::from_u64(stream) else {
                        continue;
                    };
                    let id = StreamId::from(vi);
                    let mut s = c.inner.send_stream(id);
                    match s.write(&data) {
                        Ok(n) if n < data.len() => {
                            c.pending_prefix.insert(id, data.slice(n..));
                        }
                        _ => {}
                    }
                    if fin {
                        let r = c.inner.send_stream(id).finish();
                        self.stream_op(r);
                        if c.session().is_none() {
                            // A rejected CONNECT: the connection has no other use.
                            c.close_at = Some((
                                now + CLOSE_GRACE,
                                VarInt::from_u64(wt::h3::REQUEST_REJECTED).unwrap_or_default(),
                            ));
                        }
                    }
                }
                wt::Output::Ready(req) => {
                    c.ready = true;
                    info!(worker = self.index, session = sid, path = %req.path, protocol = ?req.protocol, "webtransport session");
                    self.events.push_back(Event::SessionReady(SessionInfo {
                        id: sid,
                        transport: Transport::WebTransport {
                            protocol: req.protocol,
                        },
                        authority: Some(req.authority),
                        path: req.path,
                        query: req.query,
                        remote: c.remote,
                        local: session_local(&c.inner, self.local_addr),
                        server_name: server_name(&c.inner),
                        handshake_deadline: c.handshake_deadline,
                        peer_certificate: peer_certificate(&c.inner),
                    }));
                    if let Mode::H3(h) = &mut c.mode {
                        h.streams.session_ready();
                    }
                    // Only application events come of releasing held streams.
                    self.stream_actions(sid, c, &mut Ok(()));
                }
                wt::Output::Refused { status, reason } => {
                    info!(worker = self.index, session = sid, %reason, "webtransport refused");
                    if !c.closed {
                        c.closed = true;
                        self.events.push_back(Event::SessionClosed {
                            session: sid,
                            code: status.map(u64::from).unwrap_or(1),
                            reason,
                        });
                    }
                    c.inner.close(
                        now,
                        VarInt::from_u64(wt::h3::REQUEST_REJECTED).unwrap_or_default(),
                        Bytes::new(),
                    );
                }
                wt::Output::Closed { code, reason } => {
                    if c.ready && !c.closed {
                        c.closed = true;
                        self.events.push_back(Event::SessionClosed {
                            session: sid,
                            code: code.into(),
                            reason,
                        });
                    }
                    c.inner.close(
                        now,
                        VarInt::from_u64(wt::h3::NO_ERROR).unwrap_or_default(),
                        Bytes::new(),
                    );
                }
            }
        }
    }

    /// Sends what a connection has queued, handles its endpoint events and re-arms its timer.
    /// Returns false if the socket is full (the connection stays dirty).
    pub(crate) fn flush(&mut self, sid: SessionId, now: Instant) -> bool {
        let Some(mut c) = self.conns.remove(&sid) else {
            return true;
        };
        let mut ok = true;
        let max_segments = self.net.max_segments();
        loop {
            // quinn-proto writes the batch straight into the buffer the kernel will read:
            // no copy between building a packet and sending it.
            let Some(buf) = self.net.tx_buffer() else {
                ok = false;
                break;
            };
            let Some(t) = c.inner.poll_transmit(now, max_segments, buf) else {
                break;
            };
            if !self.net.send_built(&t) {
                // The batch was built but could not be queued; QUIC's loss recovery
                // resends its contents. Rare: only when the socket is full.
                ok = false;
                break;
            }
        }
        let mut drained = false;
        while let Some(ev) = c.inner.poll_endpoint_events() {
            drained |= ev.is_drained();
            if let Some(cev) = self.endpoint.handle_event(c.handle, ev) {
                c.inner.handle_event(cev);
            }
        }
        if drained {
            if !c.closed {
                let reason = quinn_proto::ConnectionError::LocallyClosed;
                self.session_closed(sid, &mut c, &reason);
            }
            if let Some(t) = c.timer {
                let armed = self.timers.remove(&(t, sid));
                debug_assert!(
                    armed,
                    "session {sid}: conn.timer {t:?} not in the timer set"
                );
            }
            let known = self.by_handle.remove(&c.handle);
            debug_assert_eq!(known, Some(sid), "handle map out of step with conns");
            if c.admitted {
                self.shared.admission.release(c.remote.ip());
            }
            let open = self.stats.connections.fetch_sub(1, Ordering::Relaxed);
            debug_assert!(open > 0, "connection counter underflow");
            return ok;
        }
        let handshake = c.handshake_deadline.filter(|_| !c.ready && !c.closed);
        let next = [c.inner.poll_timeout(), c.close_at.map(|x| x.0), handshake]
            .into_iter()
            .flatten()
            .min();
        if next != c.timer {
            if let Some(t) = c.timer {
                let armed = self.timers.remove(&(t, sid));
                debug_assert!(
                    armed,
                    "session {sid}: conn.timer {t:?} not in the timer set"
                );
            }
            if let Some(t) = next {
                let fresh = self.timers.insert((t, sid));
                debug_assert!(fresh, "session {sid}: timer {t:?} armed twice");
            }
            c.timer = next;
        }
        // Taken out of the map above, nothing could mark it dirty meanwhile: the flag is
        // still the one the loop cleared, so pushing here cannot list it twice.
        debug_assert!(!c.dirty, "session {sid} marked dirty while flushed");
        c.dirty = !ok;
        self.conns.insert(sid, c);
        if !ok {
            self.dirty.push(sid);
        }
        ok
    }

    /// The dirty list and the connections' dirty flags agree: every flagged connection is
    /// listed exactly once, and every listed connection that still exists is flagged.
    /// O(connections): debug builds only, once per loop iteration.
    pub(crate) fn debug_check_dirty(&self) {
        if cfg!(debug_assertions) {
            let mut listed = std::collections::HashSet::with_capacity(self.dirty.len());
            for sid in &self.dirty {
                if let Some(c) = self.conns.get(sid) {
                    debug_assert!(c.dirty, "session {sid} listed dirty but not flagged");
                    debug_assert!(listed.insert(*sid), "session {sid} listed dirty twice");
                }
            }
            let flagged = self.conns.values().filter(|c| c.dirty).count();
            debug_assert_eq!(flagged, listed.len(), "flagged dirty but not listed");
        }
    }

    pub(crate) fn fire_timers(&mut self, now: Instant) {
        while let Some(&(t, sid)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            // A connection's entry leaves the set with it (`flush`), so each entry has one.
            debug_assert!(
                self.conns.contains_key(&sid),
                "timer of a gone session {sid}"
            );
            if let Some(c) = self.conns.get_mut(&sid) {
                debug_assert_eq!(
                    c.timer,
                    Some(t),
                    "session {sid}: timer set and conn.timer differ"
                );
                c.timer = None;
                if let Some((at, code)) = c.close_at
                    && at <= now
                {
                    c.close_at = None;
                    c.inner.close(now, code, Bytes::new());
                }
                if !c.ready && !c.closed && c.handshake_deadline.is_some_and(|at| at <= now) {
                    c.handshake_deadline = None;
                    self.stats
                        .handshake_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(worker = self.index, session = sid, remote = %c.remote, "handshake timed out");
                    // The session never became ready, so the application hears nothing.
                    let code = match c.mode {
                        Mode::H3(_) => wt::h3::REQUEST_REJECTED,
                        _ => 0,
                    };
                    c.inner.close(
                        now,
                        VarInt::from_u64(code).unwrap_or_default(),
                        Bytes::from_static(b"handshake timeout"),
                    );
                }
                c.inner.handle_timeout(now);
            }
            self.mark_dirty(sid);
        }
    }

    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.timers.first().map(|x| x.0)
    }

    pub(crate) fn close_all(&mut self, now: Instant) {
        let ids: Vec<SessionId> = self.conns.keys().copied().collect();
        for sid in ids {
            if let Some(c) = self.conns.get_mut(&sid) {
                c.inner
                    .close(now, VarInt::from_u32(0), Bytes::from_static(b"shutdown"));
            }
            self.mark_dirty(sid);
        }
    }
}

/// Doubles the peer's stream credit in `dir`, up to `cap`, once it has half of it open, so
/// a busy peer never waits on credit for more than a round trip while an idle one keeps
/// the small allocation it started with (see `tls::INITIAL_STREAM_CREDIT`).
fn grow_stream_credit(conn: &mut quinn_proto::Connection, dir: Dir, cap: u32) {
    let credit = conn.max_concurrent_streams(dir);
    let open = conn.streams().remote_open_streams(dir);
    if open.saturating_mul(2) >= credit && credit < u64::from(cap) {
        let grown = credit.saturating_mul(2).clamp(1, u64::from(cap));
        conn.set_max_concurrent_streams(dir, VarInt::from_u64(grown).unwrap_or(VarInt::MAX));
    }
}
