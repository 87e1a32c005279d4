//! The application's handle on one worker's sessions: `Io`, the inherent methods the daemon
//! and relay-bench call, and its [`SessionIo`] implementation. Every action is applied to the
//! worker's quinn-proto connection at once (WebTransport prefixes, datagram IDs and error
//! codes translated here) and marks the connection dirty so it is sent in this loop
//! iteration. It owns nothing; it must never touch the socket or block.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Buf, Bytes};
use quinn_proto::{Dir, VarInt};

use crate::app::{IoError, SessionId, SessionIo, StreamId};
use crate::worker::{CLOSE_GRACE, Core, Mode, WorkerConn, app_code, wire_code};
use crate::wt;

/// The handle through which the application acts on this worker's sessions. Every action
/// takes effect on the next send of this loop iteration.
pub struct Io<'a> {
    core: &'a mut Core,
    now: Instant,
}

impl<'a> Io<'a> {
    /// The worker's loop lends its core to the application for one call.
    pub(crate) fn new(core: &'a mut Core, now: Instant) -> Self {
        Self { core, now }
    }

    fn conn(&mut self, s: SessionId) -> Result<&mut WorkerConn, IoError> {
        match self.core.conns.get_mut(&s) {
            Some(c) if c.ready && !c.closed => Ok(c),
            _ => Err(IoError::UnknownSession(s)),
        }
    }

    /// This worker's index.
    pub fn worker(&self) -> usize {
        self.core.index
    }

    /// The time of this loop iteration.
    pub fn now(&self) -> Instant {
        self.now
    }

    fn open(&mut self, s: SessionId, dir: Dir) -> Result<StreamId, IoError> {
        let c = self.conn(s)?;
        let id = c.inner.streams().open(dir).ok_or(IoError::StreamLimit(s))?;
        if let Some(session) = c.session() {
            let prefix = wt::stream_prefix(dir == Dir::Bi, session);
            if let Mode::H3(h) = &mut c.mode {
                h.streams.local_app(id);
            }
            c.write_prefix(id, prefix);
        }
        self.core.mark_dirty(s);
        Ok(id)
    }

    /// Opens an outgoing raw-QUIC connection from this worker's socket; it becomes a session
    /// like any other (`SessionReady` once the handshake completes, `SessionClosed` if it
    /// fails). Replies reach this worker only if nothing else shares its port: use it from a
    /// one-worker `Server` (a client or upstream endpoint), not from a steered server group,
    /// where the peer's long-header replies are hashed by 4-tuple to any worker.
    pub fn connect(
        &mut self,
        config: quinn_proto::ClientConfig,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<SessionId, IoError> {
        self.dial(config, addr, server_name, None)
    }

    /// Opens an outgoing WebTransport session: `config` must offer ALPN `h3`. After the QUIC
    /// handshake the worker sends SETTINGS and an extended CONNECT for
    /// `https://{authority}{path_and_query}` offering `protocols` as `wt-available-protocols`;
    /// a 200 raises `SessionReady` with `Transport::WebTransport { protocol }` (the server's
    /// `wt-protocol`), and from then on the session behaves like a server-side one. A refusal
    /// raises `SessionClosed` whose `code` is the HTTP status (1 when there was none) and whose
    /// reason says why. The same one-worker caveat as [`Io::connect`] applies.
    pub fn connect_webtransport(
        &mut self,
        config: quinn_proto::ClientConfig,
        addr: SocketAddr,
        server_name: &str,
        authority: &str,
        path_and_query: &str,
        protocols: &[&str],
    ) -> Result<SessionId, IoError> {
        let hs = wt::Handshake::client(authority, path_and_query, protocols).map_err(|e| {
            IoError::Connect {
                addr,
                reason: e.to_string(),
            }
        })?;
        self.dial(config, addr, server_name, Some(Box::new(hs)))
    }

    fn dial(
        &mut self,
        config: quinn_proto::ClientConfig,
        addr: SocketAddr,
        server_name: &str,
        dial: Option<Box<wt::Handshake>>,
    ) -> Result<SessionId, IoError> {
        let (handle, inner) = self
            .core
            .endpoint
            .connect(self.now, config, addr, server_name)
            .map_err(|e| IoError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        // A dial gets the handshake bound an accepted connection gets (QUIC and, for
        // WebTransport, the CONNECT): past it the dial fails with `SessionClosed`, so a
        // dead peer costs one timeout, not an idle one or forever.
        let deadline = self
            .core
            .handshake_timeout
            .map(|timeout| self.now + timeout);
        Ok(self.core.insert_conn(handle, inner, addr, dial, deadline))
    }

    /// Opens a bidirectional stream (WebTransport prefix written for you).
    pub fn open_bi(&mut self, s: SessionId) -> Result<StreamId, IoError> {
        self.open(s, Dir::Bi)
    }

    /// Opens a unidirectional stream (WebTransport prefix written for you).
    pub fn open_uni(&mut self, s: SessionId) -> Result<StreamId, IoError> {
        self.open(s, Dir::Uni)
    }

    /// Queues chunks without copying; consumed chunks (and the consumed front of a partial
    /// one) are taken out of `chunks`. Returns the bytes accepted; fewer than offered means
    /// flow control is full and a `Writable` event will follow.
    pub fn write(
        &mut self,
        s: SessionId,
        stream: StreamId,
        chunks: &mut [Bytes],
    ) -> Result<usize, IoError> {
        let c = self.conn(s)?;
        if let Some(p) = c.pending_prefix.get_mut(&stream) {
            match c.inner.send_stream(stream).write(p) {
                Ok(n) if n >= p.len() => {
                    c.pending_prefix.remove(&stream);
                }
                Ok(n) => {
                    p.advance(n);
                    return Ok(0);
                }
                Err(e) => return Err(write_err(s, stream, e)),
            }
        }
        let r = c.inner.send_stream(stream).write_chunks(chunks);
        self.core.mark_dirty(s);
        match r {
            Ok(w) => Ok(w.bytes),
            Err(quinn_proto::WriteError::Blocked) => Ok(0),
            Err(e) => Err(write_err(s, stream, e)),
        }
    }

    /// Finishes our side of the stream (FIN after queued data).
    pub fn finish(&mut self, s: SessionId, stream: StreamId) -> Result<(), IoError> {
        let c = self.conn(s)?;
        let r = c.inner.send_stream(stream).finish();
        self.core.mark_dirty(s);
        r.map_err(|_| IoError::ClosedStream { session: s, stream })
    }

    /// Abandons our side of the stream with an application code.
    pub fn reset(&mut self, s: SessionId, stream: StreamId, code: u32) -> Result<(), IoError> {
        let c = self.conn(s)?;
        c.pending_prefix.remove(&stream);
        let r = c.inner.send_stream(stream).reset(wire_code(code));
        self.core.mark_dirty(s);
        r.map_err(|_| IoError::ClosedStream { session: s, stream })
    }

    /// Asks the peer to stop sending on the stream.
    pub fn stop_sending(
        &mut self,
        s: SessionId,
        stream: StreamId,
        code: u32,
    ) -> Result<(), IoError> {
        let c = self.conn(s)?;
        let r = c.inner.recv_stream(stream).stop(wire_code(code));
        self.core.mark_dirty(s);
        r.map_err(|_| IoError::ClosedStream { session: s, stream })
    }

    /// Higher goes first among this session's streams.
    pub fn set_priority(
        &mut self,
        s: SessionId,
        stream: StreamId,
        priority: i32,
    ) -> Result<(), IoError> {
        let c = self.conn(s)?;
        c.inner
            .send_stream(stream)
            .set_priority(priority)
            .map_err(|_| IoError::ClosedStream { session: s, stream })
    }

    /// Sends an unreliable datagram (dropped rather than queued when the buffer is full).
    pub fn send_datagram(&mut self, s: SessionId, data: Bytes) -> Result<(), IoError> {
        let c = self.conn(s)?;
        let data = match c.session() {
            Some(session) => wt::encode_datagram(session, &data),
            None => data,
        };
        let r = c.inner.datagrams().send(data, true);
        self.core.mark_dirty(s);
        r.map_err(|e| IoError::Datagram {
            session: s,
            reason: e.to_string(),
        })
    }

    /// The largest payload `send_datagram` accepts now.
    pub fn max_datagram_size(&mut self, s: SessionId) -> Option<usize> {
        let c = self.conn(s).ok()?;
        let max = c.inner.datagrams().max_size()?;
        Some(match c.session() {
            Some(session) => max.saturating_sub(wt::encode_datagram(session, &[]).len()),
            None => max,
        })
    }

    /// Closes the session. WebTransport: CLOSE_WEBTRANSPORT_SESSION capsule, then the QUIC
    /// connection after a short grace; raw QUIC: CONNECTION_CLOSE with the plain code. No
    /// `SessionClosed` event follows: the caller already knows.
    pub fn close(&mut self, s: SessionId, code: u32, reason: &str) {
        let now = self.now;
        let Ok(c) = self.conn(s) else { return };
        c.closed = true;
        // The CONNECT stream may already be gone (the peer reset or stopped it); then the
        // QUIC close after the grace is all the peer gets. Counted, not fatal.
        let mut failed = 0;
        match c.session() {
            Some(session) => {
                if let Ok(vi) = VarInt::from_u64(session) {
                    let id = StreamId::from(vi);
                    let capsule = wt::close_capsule(code, reason);
                    let written = c.inner.send_stream(id).write(&capsule);
                    failed += u64::from(!matches!(written, Ok(n) if n == capsule.len()));
                    failed += u64::from(c.inner.send_stream(id).finish().is_err());
                }
                c.close_at = Some((now + CLOSE_GRACE, wire_code(code)));
            }
            None => c.inner.close(
                now,
                VarInt::from_u32(code),
                Bytes::copy_from_slice(reason.as_bytes()),
            ),
        }
        self.core.stream_ops_failed(failed);
        self.core.mark_dirty(s);
    }
}

/// The worker's connections as the application's transport: each call is the inherent
/// method of the same name.
impl SessionIo for Io<'_> {
    fn open_bi(&mut self, s: SessionId) -> Result<StreamId, IoError> {
        Io::open_bi(self, s)
    }

    fn open_uni(&mut self, s: SessionId) -> Result<StreamId, IoError> {
        Io::open_uni(self, s)
    }

    fn write(
        &mut self,
        s: SessionId,
        stream: StreamId,
        chunks: &mut [Bytes],
    ) -> Result<usize, IoError> {
        Io::write(self, s, stream, chunks)
    }

    fn finish(&mut self, s: SessionId, stream: StreamId) -> Result<(), IoError> {
        Io::finish(self, s, stream)
    }

    fn reset(&mut self, s: SessionId, stream: StreamId, code: u32) -> Result<(), IoError> {
        Io::reset(self, s, stream, code)
    }

    fn stop_sending(&mut self, s: SessionId, stream: StreamId, code: u32) -> Result<(), IoError> {
        Io::stop_sending(self, s, stream, code)
    }

    fn set_priority(
        &mut self,
        s: SessionId,
        stream: StreamId,
        priority: i32,
    ) -> Result<(), IoError> {
        Io::set_priority(self, s, stream, priority)
    }

    fn send_datagram(&mut self, s: SessionId, data: Bytes) -> Result<(), IoError> {
        Io::send_datagram(self, s, data)
    }

    fn close(&mut self, s: SessionId, code: u32, reason: &str) {
        Io::close(self, s, code, reason)
    }
}

fn write_err(s: SessionId, stream: StreamId, e: quinn_proto::WriteError) -> IoError {
    match e {
        quinn_proto::WriteError::Stopped(code) => IoError::Stopped {
            session: s,
            stream,
            code: app_code(code.into_inner()),
        },
        _ => IoError::ClosedStream { session: s, stream },
    }
}
