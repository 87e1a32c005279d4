//! An in-memory transport for tests and benchmarks of session glue: it implements
//! `SessionIo` for any number of sessions, numbers streams as QUIC does, and records what
//! was asked of it as the events the other end of each connection would see. A test wires
//! two sides by moving those events across (`take_output`), and holds back a session's
//! writes with a byte budget to play a slow reader. It never touches a socket or a clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use bytes::Bytes;
use quic_io::{Event, IoError, SessionId, SessionIo, StreamId, VarInt};

/// Which end of the connection this side is: it decides the low bits of the stream ids
/// it opens (RFC 9000 section 2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// Streams one fake session may open per direction, like a peer's stream credit; past it
/// opens fail with `StreamLimit`.
pub const MAX_FAKE_STREAMS: u64 = 1 << 16;

#[derive(Debug, Default)]
struct FakeStream {
    priority: i32,
    finished: bool,
    reset: Option<u32>,
    /// The peer asked us to stop: the next write fails as quinn's does.
    stopped: Option<u32>,
}

#[derive(Debug)]
struct FakeSession {
    side: Side,
    opened: [u64; 2],
    streams: BTreeMap<u64, FakeStream>,
    /// Bytes the transport still accepts; `None` is unlimited.
    budget: Option<usize>,
    /// Streams that took less than offered and are owed a `Writable`.
    blocked: BTreeSet<u64>,
    closed: Option<(u32, String)>,
    written_bytes: usize,
}

/// The fake transport. Output events carry the id of the session that produced them;
/// the wiring code rewrites it to the peer's id (see [`retarget`]).
#[derive(Debug, Default)]
pub struct FakeIo {
    sessions: HashMap<SessionId, FakeSession>,
    output: VecDeque<Event>,
    /// `Writable` events for this side's own application, after a budget was raised.
    writable: VecDeque<Event>,
}

fn stream_id(raw: u64) -> StreamId {
    StreamId::from(VarInt::from_u64(raw).unwrap_or(VarInt::MAX))
}

fn raw(stream: StreamId) -> u64 {
    VarInt::from(stream).into_inner()
}

impl FakeIo {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a connection on this side.
    pub fn add_session(&mut self, id: SessionId, side: Side) {
        self.sessions.insert(
            id,
            FakeSession {
                side,
                opened: [0, 0],
                streams: BTreeMap::new(),
                budget: None,
                blocked: BTreeSet::new(),
                closed: None,
                written_bytes: 0,
            },
        );
    }

    /// Limits what session `id` may still write (`None`: no limit). Raising it owes a
    /// `Writable` to every stream that was refused, collected by [`FakeIo::take_writable`].
    pub fn set_budget(&mut self, id: SessionId, budget: Option<usize>) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.budget = budget;
        if budget != Some(0) {
            for stream in std::mem::take(&mut session.blocked) {
                self.writable.push_back(Event::Writable {
                    session: id,
                    stream: stream_id(stream),
                });
            }
        }
    }

    /// Bytes session `id` has written so far.
    pub fn written_bytes(&self, id: SessionId) -> usize {
        self.sessions.get(&id).map_or(0, |s| s.written_bytes)
    }

    /// The streams session `id` opened itself, oldest first.
    pub fn opened_streams(&self, id: SessionId) -> Vec<StreamId> {
        let Some(session) = self.sessions.get(&id) else {
            return Vec::new();
        };
        let initiator = u64::from(session.side == Side::Server);
        session
            .streams
            .keys()
            .filter(|&&raw| raw & 1 == initiator)
            .map(|&raw| stream_id(raw))
            .collect()
    }

    /// How session `id` was closed by its application, if it was.
    pub fn closed(&self, id: SessionId) -> Option<&(u32, String)> {
        self.sessions.get(&id).and_then(|s| s.closed.as_ref())
    }

    /// What this side did, as the peer would see it, in order.
    pub fn take_output(&mut self) -> Vec<Event> {
        self.output.drain(..).collect()
    }

    /// `Writable` events owed to this side's application.
    pub fn take_writable(&mut self) -> Vec<Event> {
        self.writable.drain(..).collect()
    }

    /// The peer stopped our sending side of `stream`: the next write fails.
    pub fn peer_stopped(&mut self, id: SessionId, stream: StreamId, code: u32) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.streams.entry(raw(stream)).or_default().stopped = Some(code);
        }
    }

    fn open(&mut self, id: SessionId, bidi: bool) -> Result<StreamId, IoError> {
        let session = self.live(id)?;
        let dir = usize::from(!bidi);
        if session.opened[dir] >= MAX_FAKE_STREAMS {
            return Err(IoError::StreamLimit(id));
        }
        let initiator = match session.side {
            Side::Client => 0,
            Side::Server => 1,
        };
        let raw_id = (session.opened[dir] << 2) | ((dir as u64) << 1) | initiator;
        session.opened[dir] += 1;
        session.streams.insert(raw_id, FakeStream::default());
        let stream = stream_id(raw_id);
        self.output.push_back(Event::StreamOpened {
            session: id,
            stream,
            bidi,
        });
        Ok(stream)
    }

    fn live(&mut self, id: SessionId) -> Result<&mut FakeSession, IoError> {
        match self.sessions.get_mut(&id) {
            Some(session) if session.closed.is_none() => Ok(session),
            _ => Err(IoError::UnknownSession(id)),
        }
    }

    fn sendable(&mut self, id: SessionId, stream: StreamId) -> Result<&mut FakeSession, IoError> {
        let session = self.live(id)?;
        let state = session.streams.entry(raw(stream)).or_default();
        if let Some(code) = state.stopped {
            return Err(IoError::Stopped {
                session: id,
                stream,
                code,
            });
        }
        if state.finished || state.reset.is_some() {
            return Err(IoError::ClosedStream {
                session: id,
                stream,
            });
        }
        Ok(session)
    }
}

impl SessionIo for FakeIo {
    fn open_bi(&mut self, id: SessionId) -> Result<StreamId, IoError> {
        self.open(id, true)
    }

    fn open_uni(&mut self, id: SessionId) -> Result<StreamId, IoError> {
        self.open(id, false)
    }

    fn write(
        &mut self,
        id: SessionId,
        stream: StreamId,
        chunks: &mut [Bytes],
    ) -> Result<usize, IoError> {
        let session = self.sendable(id, stream)?;
        let mut taken = 0;
        let mut out = Vec::new();
        for chunk in chunks.iter_mut() {
            let room = session.budget.map_or(usize::MAX, |b| b - taken);
            if room == 0 {
                break;
            }
            let part = chunk.split_to(chunk.len().min(room));
            taken += part.len();
            if !part.is_empty() {
                out.push(part);
            }
        }
        let offered_more = chunks.iter().any(|c| !c.is_empty());
        if let Some(budget) = session.budget.as_mut() {
            *budget -= taken;
        }
        session.written_bytes += taken;
        if offered_more {
            session.blocked.insert(raw(stream));
        }
        for data in out {
            self.output.push_back(Event::Data {
                session: id,
                stream,
                data,
            });
        }
        Ok(taken)
    }

    fn finish(&mut self, id: SessionId, stream: StreamId) -> Result<(), IoError> {
        let session = self.sendable(id, stream)?;
        session.streams.entry(raw(stream)).or_default().finished = true;
        self.output.push_back(Event::Finished {
            session: id,
            stream,
        });
        Ok(())
    }

    fn reset(&mut self, id: SessionId, stream: StreamId, code: u32) -> Result<(), IoError> {
        let session = self.live(id)?;
        let state = session.streams.entry(raw(stream)).or_default();
        if state.finished || state.reset.is_some() {
            return Err(IoError::ClosedStream {
                session: id,
                stream,
            });
        }
        state.reset = Some(code);
        session.blocked.remove(&raw(stream));
        self.output.push_back(Event::Reset {
            session: id,
            stream,
            code,
        });
        Ok(())
    }

    fn stop_sending(&mut self, id: SessionId, stream: StreamId, code: u32) -> Result<(), IoError> {
        self.live(id)?;
        self.output.push_back(Event::StopSending {
            session: id,
            stream,
            code,
        });
        Ok(())
    }

    fn set_priority(
        &mut self,
        id: SessionId,
        stream: StreamId,
        priority: i32,
    ) -> Result<(), IoError> {
        let session = self.live(id)?;
        session.streams.entry(raw(stream)).or_default().priority = priority;
        Ok(())
    }

    fn send_datagram(&mut self, id: SessionId, data: Bytes) -> Result<(), IoError> {
        self.live(id)?;
        self.output.push_back(Event::Datagram { session: id, data });
        Ok(())
    }

    fn close(&mut self, id: SessionId, code: u32, reason: &str) {
        if let Ok(session) = self.live(id) {
            session.closed = Some((code, reason.to_owned()));
            self.output.push_back(Event::SessionClosed {
                session: id,
                code: code.into(),
                reason: reason.to_owned(),
            });
        }
    }
}

/// The same event as the peer's session `peer` sees it. A `StopSending` the peer receives
/// is about its own sending side; the wiring code also tells the peer's `FakeIo`
/// (`peer_stopped`) so its next write fails as it would on QUIC.
pub fn retarget(event: Event, peer: SessionId) -> Event {
    match event {
        Event::SessionReady(mut info) => {
            info.id = peer;
            Event::SessionReady(info)
        }
        Event::StreamOpened { stream, bidi, .. } => Event::StreamOpened {
            session: peer,
            stream,
            bidi,
        },
        Event::Data { stream, data, .. } => Event::Data {
            session: peer,
            stream,
            data,
        },
        Event::Finished { stream, .. } => Event::Finished {
            session: peer,
            stream,
        },
        Event::Reset { stream, code, .. } => Event::Reset {
            session: peer,
            stream,
            code,
        },
        Event::StopSending { stream, code, .. } => Event::StopSending {
            session: peer,
            stream,
            code,
        },
        Event::Writable { stream, .. } => Event::Writable {
            session: peer,
            stream,
        },
        Event::Datagram { data, .. } => Event::Datagram {
            session: peer,
            data,
        },
        Event::SessionClosed { code, reason, .. } => Event::SessionClosed {
            session: peer,
            code,
            reason,
        },
    }
}
