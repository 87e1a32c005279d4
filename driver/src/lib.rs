//! The session driver: one moq-lite session (`proto`, sans-IO) bound to one connection of
//! a quic-io transport (`SessionIo`). It hands the connection's stream events to the
//! session and carries out the session's actions on the connection, keeping what a
//! stream's flow control has not taken yet in a bounded per-stream queue.
//!
//! The relay's server sessions, its upstream links (client sessions inside the relay) and
//! relay-bench's client all use it, so the write/finish/reset rules live in one place.
//! It may depend on quic-io and proto; they must still not know each other (this crate is
//! the one arrow between them). It never decides what a session means: announcements,
//! subscriptions and frames are the application's, through `session_mut()`.

pub mod fake;

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use proto::session::{Action, ControlBytes, Session, StreamId as MoqStreamId};
use proto::{ErrorCode, Version};
use quic_io::{Event, IoError, SessionId, SessionIo, StreamId, VarInt};
use tracing::debug;

/// Actions carried out per `flush`; the session's own output bound
/// (`proto::session::MAX_PENDING_OUTPUTS`) is far above it, so this only spreads work.
pub const MAX_ACTIONS_PER_FLUSH: usize = 65_536;

/// Default hard bound on bytes one session may hold for streams whose flow control is
/// full. Applications stop feeding a session long before (the relay at its own soft
/// bound); this one only catches a peer that never reads: past it the stream that would
/// overflow is reset. A frame is at most `proto::MAX_FRAME_SIZE`, so several fit.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 64 << 20;

/// The moq-lite name of a quic-io stream.
pub fn to_moq(stream: StreamId) -> MoqStreamId {
    MoqStreamId(VarInt::from(stream).into_inner())
}

/// The quic-io stream a moq-lite stream id names; `None` only for ids above 2^62, which
/// the session never hands out (they come from the transport).
pub fn to_quic(stream: MoqStreamId) -> Option<StreamId> {
    VarInt::from_u64(stream.0).ok().map(StreamId::from)
}

/// What went wrong below the session, counted so the operator sees drift that a log line
/// at debug level would hide. Plain counters: each driver is owned by one thread.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DriverCounters {
    /// Streams the transport could not open (the peer's stream limit).
    pub open_failed: u64,
    /// Writes refused for a reason other than the peer's STOP_SENDING.
    pub write_failed: u64,
    /// Streams reset because the session's pending bytes hit the hard bound.
    pub overflow_resets: u64,
    /// Finish, reset, stop, priority or datagram calls the transport refused (the stream
    /// or session was already gone, or the datagram did not fit).
    pub refused_ops: u64,
    /// Action ids the transport cannot name (above 2^62): a session bug.
    pub bad_stream_ids: u64,
    /// Ended group streams reset while still in flight, gone stale (see
    /// [`Driver::expire`]).
    pub expired: u64,
    /// Control-stream bytes, by class (the session's own count).
    pub control: ControlBytes,
}

impl DriverCounters {
    /// Adds `other` into `self` (per-worker totals of closed sessions).
    pub fn add(&mut self, other: &DriverCounters) {
        self.open_failed += other.open_failed;
        self.write_failed += other.write_failed;
        self.overflow_resets += other.overflow_resets;
        self.refused_ops += other.refused_ops;
        self.bad_stream_ids += other.bad_stream_ids;
        self.expired += other.expired;
        self.control.add(&other.control);
    }
}

/// Output a stream's flow control has not accepted yet, in order.
#[derive(Debug, Default)]
struct Pending {
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`; kept so the session total needs no walk.
    bytes: usize,
    finish: bool,
}

/// One session on one connection.
pub struct Driver {
    id: SessionId,
    session: Session,
    pending: HashMap<StreamId, Pending>,
    pending_bytes: usize,
    max_pending_bytes: usize,
    counters: DriverCounters,
    /// The code this side closed the connection with (`Action::Close` carried out).
    /// The transport raises no `SessionClosed` for such a close, so the application
    /// reads this to release the session itself.
    closed_with: Option<u64>,
    /// Payload bytes the session handed to the transport, and stream and datagram
    /// bytes the transport handed to the session (an auth server's `end` report).
    bytes_sent: u64,
    bytes_received: u64,
    /// Streams to reset after the session's own actions, which may still write or
    /// finish them (at most `MAX_EXPIRIES`).
    expiries: VecDeque<(StreamId, ErrorCode)>,
}

/// Expiries waiting for one flush: a burst of group starts over a session's
/// subscriptions. Past it the oldest request is dropped (that stream stays as it was).
const MAX_EXPIRIES: usize = 1024;

impl Driver {
    /// `session` is the moq-lite session of connection `id`; `max_pending_bytes` bounds
    /// what waits on flow control (see [`DEFAULT_MAX_PENDING_BYTES`]).
    pub fn new(id: SessionId, session: Session, max_pending_bytes: usize) -> Self {
        Self {
            id,
            session,
            pending: HashMap::new(),
            pending_bytes: 0,
            max_pending_bytes,
            counters: DriverCounters::default(),
            closed_with: None,
            bytes_sent: 0,
            bytes_received: 0,
            expiries: VecDeque::new(),
        }
    }

    /// Resets `stream`, an ended group stream the session no longer tracks, if the
    /// transport still holds data of it: once a newer group made it stale (spec 8.5), what
    /// is unsent is not worth the bytes. A stream whose data was all acknowledged is gone
    /// already, and nothing happens. Carried out at the next flush, after the session's
    /// own actions.
    pub fn expire(&mut self, stream: MoqStreamId, code: ErrorCode) {
        let Some(stream) = self.quic_stream(stream) else {
            return;
        };
        if self.expiries.len() == MAX_EXPIRIES {
            self.expiries.pop_front();
        }
        self.expiries.push_back((stream, code));
    }

    /// Counts an open group the caller reset as stale itself (through the session).
    pub fn count_expired(&mut self) {
        self.counters.expired += 1;
    }

    fn apply_expiries<T: SessionIo + ?Sized>(&mut self, io: &mut T) {
        let version = self.version();
        while let Some((stream, code)) = self.expiries.pop_front() {
            self.drop_pending(stream);
            // An error means the stream is gone: all of it acknowledged, or reset before.
            if io
                .reset(self.id, stream, code.stream_code(version) as u32)
                .is_ok()
            {
                self.counters.expired += 1;
            }
        }
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    pub fn version(&self) -> Version {
        self.session.version()
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Bytes accepted from the session that the transport has not taken yet.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    pub fn counters(&self) -> DriverCounters {
        DriverCounters {
            control: self.session.control_bytes(),
            ..self.counters
        }
    }

    /// Bytes sent to the peer (written or queued for writing) and received from it.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_sent, self.bytes_received)
    }

    /// The session close code, once this side has closed the connection (`io.close`
    /// called). The transport then raises no `SessionClosed`: whoever owns this driver
    /// releases the session's state when it sees this.
    pub fn closed_with(&self) -> Option<u64> {
        self.closed_with
    }

    /// Hands one of this connection's stream events to the session (a `Writable` sends
    /// what waited). Lifecycle events (`SessionReady`, `SessionClosed`) are the
    /// application's: for those it does nothing and returns false.
    pub fn on_event<T: SessionIo + ?Sized>(&mut self, event: Event, io: &mut T) -> bool {
        let version = self.version();
        let stream_code = |code: u32| ErrorCode::from_stream_code(code.into(), version);
        match event {
            Event::StreamOpened { stream, bidi, .. } => {
                self.session.on_stream_opened(to_moq(stream), bidi)
            }
            Event::Data { stream, data, .. } => {
                self.bytes_received += data.len() as u64;
                self.session.on_stream_data(to_moq(stream), data)
            }
            Event::Finished { stream, .. } => self.session.on_stream_finished(to_moq(stream)),
            Event::Reset { stream, code, .. } => self
                .session
                .on_stream_reset(to_moq(stream), stream_code(code)),
            Event::StopSending { stream, code, .. } => self
                .session
                .on_stop_sending(to_moq(stream), stream_code(code)),
            Event::Writable { stream, .. } => self.flush_stream(io, stream),
            Event::Datagram { data, .. } => {
                self.bytes_received += data.len() as u64;
                self.session.on_datagram(data)
            }
            Event::SessionReady(_) | Event::SessionClosed { .. } => return false,
        }
        true
    }

    /// Carries out the session's queued actions, at most [`MAX_ACTIONS_PER_FLUSH`].
    /// Returns how many it carried out.
    pub fn flush<T: SessionIo + ?Sized>(&mut self, io: &mut T) -> usize {
        for done in 0..MAX_ACTIONS_PER_FLUSH {
            let Some(action) = self.session.poll_action() else {
                self.apply_expiries(io);
                return done;
            };
            self.apply(io, action);
        }
        MAX_ACTIONS_PER_FLUSH
    }

    fn apply<T: SessionIo + ?Sized>(&mut self, io: &mut T, action: Action) {
        let session = self.id;
        let version = self.version();
        match action {
            Action::OpenUni { token, priority } | Action::OpenBi { token, priority } => {
                let opened = if matches!(action, Action::OpenBi { .. }) {
                    io.open_bi(session)
                } else {
                    io.open_uni(session)
                };
                match opened {
                    Ok(stream) => {
                        self.refused(io.set_priority(session, stream, priority));
                        self.session.on_stream_bound(token, to_moq(stream));
                    }
                    Err(err) => {
                        debug!(session, %err, "stream not opened");
                        self.counters.open_failed += 1;
                        self.session.on_stream_open_failed(token);
                    }
                }
            }
            Action::Write { stream, data } => {
                if let Some(stream) = self.quic_stream(stream) {
                    self.write(io, stream, data);
                }
            }
            Action::Finish { stream } => {
                let Some(stream) = self.quic_stream(stream) else {
                    return;
                };
                match self.pending.get_mut(&stream) {
                    Some(pending) => pending.finish = true,
                    None => self.refused(io.finish(session, stream)),
                }
            }
            Action::Reset { stream, code } => {
                let Some(stream) = self.quic_stream(stream) else {
                    return;
                };
                self.drop_pending(stream);
                let result = io.reset(session, stream, code.stream_code(version) as u32);
                self.refused(result);
            }
            Action::StopSending { stream, code } => {
                let Some(stream) = self.quic_stream(stream) else {
                    return;
                };
                let result = io.stop_sending(session, stream, code.stream_code(version) as u32);
                self.refused(result);
            }
            Action::SetPriority { stream, priority } => {
                if let Some(stream) = self.quic_stream(stream) {
                    self.refused(io.set_priority(session, stream, priority));
                }
            }
            Action::SendDatagram { data } => {
                self.bytes_sent += data.len() as u64;
                self.refused(io.send_datagram(session, data))
            }
            Action::Close { code, reason } => {
                let code = code.session_code(version);
                debug_assert!(self.closed_with.is_none(), "the session closed twice");
                self.closed_with = Some(code);
                // Close codes are u32 on quic-io's interface (WebTransport's width);
                // every code the registry and `App` produce fits.
                io.close(session, u32::try_from(code).unwrap_or(u32::MAX), &reason);
            }
        }
    }

    fn quic_stream(&mut self, stream: MoqStreamId) -> Option<StreamId> {
        let quic = to_quic(stream);
        if quic.is_none() {
            debug_assert!(false, "session named stream {} above 2^62", stream.0);
            self.counters.bad_stream_ids += 1;
        }
        quic
    }

    /// A refused stream operation: the stream (or session) is already gone on the
    /// transport, which the session learns from the transport's own events.
    fn refused(&mut self, result: Result<(), IoError>) {
        if let Err(err) = result {
            debug!(session = self.id, %err, "transport refused an operation");
            self.counters.refused_ops += 1;
        }
    }

    fn write<T: SessionIo + ?Sized>(&mut self, io: &mut T, stream: StreamId, data: Bytes) {
        self.bytes_sent += data.len() as u64;
        if self.pending.contains_key(&stream) {
            self.queue(io, stream, data);
            return;
        }
        let mut chunks = [data];
        match io.write(self.id, stream, &mut chunks) {
            Ok(_) => {
                let [rest] = chunks;
                if !rest.is_empty() {
                    self.queue(io, stream, rest);
                }
            }
            Err(err) => self.stream_write_failed(stream, err),
        }
    }

    /// Keeps `data` for when `stream` is writable again, unless the session's bound is
    /// reached: then the stream is reset and the session told, as if the peer had stopped
    /// it (a group is dropped; a control stream ends the session).
    fn queue<T: SessionIo + ?Sized>(&mut self, io: &mut T, stream: StreamId, data: Bytes) {
        if self.pending_bytes + data.len() > self.max_pending_bytes {
            debug!(session = self.id, %stream, pending = self.pending_bytes, "pending bound reached; stream reset");
            self.counters.overflow_resets += 1;
            self.drop_pending(stream);
            let version = self.version();
            let result = io.reset(
                self.id,
                stream,
                ErrorCode::Dropped.stream_code(version) as u32,
            );
            self.refused(result);
            self.session
                .on_stop_sending(to_moq(stream), ErrorCode::Dropped);
            return;
        }
        let pending = self.pending.entry(stream).or_default();
        self.pending_bytes += data.len();
        pending.bytes += data.len();
        pending.chunks.push_back(data);
    }

    /// Flow control opened up on `stream`: send what waited, then its FIN.
    fn flush_stream<T: SessionIo + ?Sized>(&mut self, io: &mut T, stream: StreamId) {
        let Some(mut pending) = self.pending.remove(&stream) else {
            return;
        };
        let result = io.write(self.id, stream, pending.chunks.make_contiguous());
        while pending.chunks.front().is_some_and(Bytes::is_empty) {
            pending.chunks.pop_front();
        }
        let left: usize = pending.chunks.iter().map(Bytes::len).sum();
        debug_assert!(left <= pending.bytes, "the transport grew a pending stream");
        let sent = pending.bytes - left;
        debug_assert!(
            sent <= self.pending_bytes,
            "pending-byte accounting drifted"
        );
        self.pending_bytes -= sent;
        pending.bytes = left;
        if let Err(err) = result {
            self.pending_bytes -= left;
            self.stream_write_failed(stream, err);
            return;
        }
        if pending.chunks.is_empty() {
            if pending.finish {
                let result = io.finish(self.id, stream);
                self.refused(result);
            }
        } else {
            self.pending.insert(stream, pending);
        }
    }

    fn drop_pending(&mut self, stream: StreamId) {
        if let Some(pending) = self.pending.remove(&stream) {
            debug_assert!(
                pending.bytes <= self.pending_bytes,
                "pending-byte accounting drifted"
            );
            self.pending_bytes -= pending.bytes;
        }
    }

    fn stream_write_failed(&mut self, stream: StreamId, err: IoError) {
        self.drop_pending(stream);
        match err {
            IoError::Stopped { code, .. } => {
                let code = ErrorCode::from_stream_code(code.into(), self.version());
                self.session.on_stop_sending(to_moq(stream), code);
            }
            other => {
                debug!(session = self.id, %other, "write failed");
                self.counters.write_failed += 1;
            }
        }
    }
}
