//! The sans-IO moq-lite session: per-stream transaction state for both roles (publisher
//! and subscriber) on one connection, driven by transport events and application calls,
//! producing transport [`Action`]s and application [`SessionEvent`]s.
//!
//! It owns the meaning of every stream; it must never touch a socket, read a clock, or
//! copy a frame payload (payloads go out as the caller's `Bytes`). The transport owns
//! stream IDs: the session asks for streams with `OpenUni`/`OpenBi { token }` and learns
//! their IDs through [`Session::on_stream_bound`]. Error codes cross this boundary as
//! [`ErrorCode`]; the transport maps them to and from the wire with
//! [`crate::stream_code_to_wire`] / [`crate::stream_code_from_wire`] (raw QUIC and
//! WebTransport alike, as moq-dev does).
//!
//! This file holds the public types, the `Session` struct and its output queues; each
//! concern is an `impl Session` block in its own file: `slots` (per-stream bookkeeping),
//! `input` (classifying and parsing what the peer sends), `lifecycle` (how streams and
//! transactions end), `control` (our SETUP and GOAWAY), `announce`, `subscribe` (our
//! subscriptions), `serve` (the peer's subscriptions to us: groups and frames), `track`,
//! `fetch` and `datagram`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::{Bytes, BytesMut};

use crate::coding::{EncodeError, put_varint};
use crate::message::*;
use crate::{ErrorCode, Version};

mod announce;
mod control;
mod control_bytes;
mod datagram;
mod fetch;
mod input;
mod lifecycle;
mod serve;
mod slots;
mod subscribe;
mod track;

pub use control_bytes::{ControlBytes, ControlClass};
use serve::Serve;
pub use serve::group_priority;
use slots::{Answering, Heard, Kind, Out, Slot};

/// Streams tracked at once, all kinds: QUIC allows 1024 concurrent bidi and 1024 uni per
/// direction by default (spec 2.6), so four times that covers every legal state.
pub const MAX_STREAMS: usize = 4096;
/// Subscriptions the peer may hold on us, and requests we may have outstanding toward it:
/// each uses one bidi stream, and the peer grants at most 1024.
pub const MAX_OUTSTANDING_REQUESTS: usize = 1024;
/// Broadcasts this session publishes or learns per announce stream; a relay's announce
/// table per session is bounded by this.
pub const MAX_BROADCASTS: usize = 16384;
/// Chunks queued on a stream the transport has not opened yet (stream limit reached).
/// Past this the caller gets `SessionError::Backlog` and should drop the group.
pub const MAX_QUEUED_CHUNKS: usize = 1024;
/// Unread actions or events past which the session closes: the caller must drain after
/// every call, so reaching this means it stopped draining.
pub const MAX_PENDING_OUTPUTS: usize = 1 << 16;
/// Send priority of control streams: above every group (see [`group_priority`]).
pub const CONTROL_PRIORITY: i32 = i32::MAX;

/// Hasher for keys the session or the transport assigns (slot counters, QUIC stream IDs):
/// they are not chosen freely by the peer, so SipHash's flood resistance buys nothing and
/// costs ~20 ns per lookup on the per-frame path.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

/// 2^64 / φ: multiplying by it (Fibonacci hashing) spreads sequential IDs over the high
/// bits the table indexes by.
const FIBONACCI_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(FIBONACCI_MULTIPLIER);
        }
    }
    fn write_u64(&mut self, v: u64) {
        // Fibonacci hashing spreads sequential IDs across the table.
        self.0 = (self.0 ^ v).wrapping_mul(FIBONACCI_MULTIPLIER);
    }
}

type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// A transport stream handle, chosen by the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

/// Names a stream the session asked the transport to open, until it is bound to an ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpenToken(pub u64);

/// Our subscription to the peer (the Subscribe ID on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub u64);
/// Our announce interest (one Announce stream we opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InterestId(pub u64);
/// Our TRACK request (05).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackRequestId(pub u64);
/// The peer's subscription to us (its Subscribe ID, unique per session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServeId(pub u64);
/// A group stream we are writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupId(pub u64);
/// Our FETCH request (05).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchId(pub u64);
/// The peer's FETCH request to us (05).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchServeId(pub u64);
/// The peer's TRACK request to us (05).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackServeId(pub u64);

/// Which end of the connection this session is: SETUP content depends on it, and a server
/// hides `.`-prefixed paths from announce discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perspective {
    Server,
    Client,
}

/// Session parameters.
#[derive(Debug, Clone)]
pub struct Config {
    pub version: Version,
    pub perspective: Perspective,
    /// Our hop/origin ID, drawn from [1, 2^53) (JS clients decode it as u53).
    pub hop_id: u64,
    /// Client on raw QUIC 05/06 only: the SETUP Path (request target incl. `?query`).
    pub setup_path: Option<String>,
    /// Client only: the SETUP Role hint.
    pub setup_role: Option<SetupRole>,
}

/// What the transport must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    OpenUni {
        token: OpenToken,
        priority: i32,
    },
    OpenBi {
        token: OpenToken,
        priority: i32,
    },
    Write {
        stream: StreamId,
        data: Bytes,
    },
    Finish {
        stream: StreamId,
    },
    Reset {
        stream: StreamId,
        code: ErrorCode,
    },
    StopSending {
        stream: StreamId,
        code: ErrorCode,
    },
    /// Change a stream's send priority (a SUBSCRIBE_UPDATE re-ranked its group).
    SetPriority {
        stream: StreamId,
        priority: i32,
    },
    /// Send one QUIC datagram (05), if the congestion controller takes it now; else drop.
    SendDatagram {
        data: Bytes,
    },
    /// Close the connection with `code.session_code(version)` (untranslated).
    Close {
        code: ErrorCode,
        reason: String,
    },
}

/// What the application learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The peer's SETUP (05).
    Setup(Box<Setup>),
    /// The peer opened an Announce stream; the session answers it from its own table.
    AnnounceInterest {
        prefix: String,
        exclude_hop: u64,
    },
    /// A broadcast became active (or was re-announced on 05) under one of our interests.
    /// `path` is the full path; `hops` the full chain, ending with the sender's ID on 04/05.
    Announced {
        interest: InterestId,
        path: String,
        hops: Vec<u64>,
    },
    Unannounced {
        interest: InterestId,
        path: String,
    },
    /// Our announce stream ended: every broadcast learned on it is gone (already reported).
    InterestEnded {
        interest: InterestId,
        code: Option<ErrorCode>,
    },
    /// The peer subscribes to one of our tracks. Answer with `accept_subscribe` or
    /// `reject_subscribe`.
    SubscribeRequested {
        serve: ServeId,
        request: Box<Subscribe>,
    },
    SubscribeUpdated {
        serve: ServeId,
        update: Box<SubscribeUpdate>,
    },
    /// The peer cancelled (FIN = `None`) or reset its subscription; its groups are reset.
    SubscribeCancelled {
        serve: ServeId,
        code: Option<ErrorCode>,
    },
    /// The peer stopped one of our group streams.
    GroupCancelled {
        serve: ServeId,
        group: GroupId,
        code: ErrorCode,
    },
    /// The peer asks for TRACK_INFO (05). Answer with `answer_track` or `reject_track`.
    TrackRequested {
        request: TrackServeId,
        broadcast: String,
        track: String,
    },
    /// Reply to our `request_track`.
    TrackInfo {
        request: TrackRequestId,
        info: Result<TrackInfo, ErrorCode>,
    },
    /// A response on our Subscribe stream (SUBSCRIBE_OK / START / END / DROP).
    SubscribeResponse {
        subscription: SubscriptionId,
        response: SubscribeResponse,
    },
    /// Our subscription is over: FIN (`None`) or reset by the publisher.
    SubscriptionClosed {
        subscription: SubscriptionId,
        code: Option<ErrorCode>,
    },
    GroupStarted {
        subscription: SubscriptionId,
        sequence: u64,
    },
    /// A whole frame. `timestamp` is absolute in the track's timescale on 05, `None` before.
    Frame {
        subscription: SubscriptionId,
        sequence: u64,
        timestamp: Option<u64>,
        payload: Bytes,
    },
    GroupEnded {
        subscription: SubscriptionId,
        sequence: u64,
    },
    GroupAborted {
        subscription: SubscriptionId,
        sequence: u64,
        code: ErrorCode,
    },
    /// The peer asks for one cached group (05). Answer with `fetch_frame`… `end_fetch`, or
    /// `reject_fetch`.
    FetchRequested {
        request: FetchServeId,
        fetch: Box<Fetch>,
    },
    /// The peer reset or stopped its FETCH.
    FetchCancelled {
        request: FetchServeId,
        code: ErrorCode,
    },
    /// A frame of our FETCH response; `timestamp` is absolute in the track's timescale.
    FetchFrame {
        fetch: FetchId,
        timestamp: u64,
        payload: Bytes,
    },
    /// Our FETCH is over: FIN (`None`, all frames delivered) or reset.
    FetchEnded {
        fetch: FetchId,
        code: Option<ErrorCode>,
    },
    /// A stream was reset because of something the peer sent (for debug logs; the
    /// transaction's own event, e.g. `SubscriptionClosed`, follows).
    StreamFailed {
        code: ErrorCode,
        reason: String,
    },
    /// A single-frame group that arrived as a datagram (05) for one of our subscriptions.
    Datagram {
        subscription: SubscriptionId,
        sequence: u64,
        timestamp: u64,
        payload: Bytes,
    },
    GoAway {
        uri: String,
    },
}

/// Misuse of the session API (never caused by the peer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("session is closed")]
    Closed,
    #[error("unknown {what} {id}")]
    Unknown { what: &'static str, id: u64 },
    #[error("limit of {max} {what} reached")]
    Limit { what: &'static str, max: usize },
    #[error("stream for {what} {id} has {max} chunks queued before the transport opened it")]
    Backlog {
        what: &'static str,
        id: u64,
        max: usize,
    },
    #[error("{what} is not possible on {version}")]
    NotInVersion {
        what: &'static str,
        version: Version,
    },
    #[error("{what} is not allowed now")]
    WrongState { what: &'static str },
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
}

/// One moq-lite session (both roles). Drive it with `on_*` calls and application calls,
/// then drain [`Session::poll_action`] and [`Session::poll_event`] after every call.
#[derive(Debug)]
pub struct Session {
    cfg: Config,
    closed: bool,
    next_slot: u64,
    slots: IdMap<u64, Slot>,
    by_id: IdMap<StreamId, u64>,
    header_arena: BytesMut,
    actions: VecDeque<Action>,
    events: VecDeque<SessionEvent>,
    next_request: u64,
    subs: HashMap<SubscriptionId, u64>,
    interests: HashMap<InterestId, u64>,
    tracks: HashMap<TrackRequestId, u64>,
    serves: HashMap<ServeId, Serve>,
    published: BTreeMap<String, Vec<u64>>,
    peer_setup: bool,
    /// The peer's SETUP Origin (05/06; `Hop` on 06, the only exclusion id there): like
    /// Exclude Hop, never send it its own broadcasts.
    peer_origin: u64,
    control_bytes: ControlBytes,
    /// Announcements dropped because their hop chain held our own id (a loop).
    loops_dropped: u64,
    /// Announce paths under a `.` segment too (moq-relay 0.14, which had no hidden paths).
    show_hidden: bool,
    /// The peer's subscriptions on us at once (at most `MAX_OUTSTANDING_REQUESTS`).
    max_peer_subscriptions: usize,
    /// Broadcasts the peer's announcements may make live at once (at most
    /// `MAX_BROADCASTS`); past it an announcement is ignored, never the session ended.
    max_peer_broadcasts: usize,
    /// Subscriptions refused and announcements ignored at those limits.
    subscriptions_over_limit: u64,
    announces_over_limit: u64,
}

impl Session {
    /// Announcements the peer sent back to us through a loop (our id in their hop chain),
    /// dropped unreported.
    pub fn loops_dropped(&self) -> u64 {
        self.loops_dropped
    }

    /// The origin id the peer declared in its SETUP (05/06); 0 when it declared none.
    pub fn peer_origin(&self) -> u64 {
        self.peer_origin
    }

    /// Announces paths under a `.`-prefixed segment like any other, as moq-relay 0.14
    /// did (its mesh gossip travels under `.internal/origins`); by default a server hides
    /// them, as 0.17 does.
    pub fn show_hidden_paths(&mut self) {
        self.show_hidden = true;
    }

    /// Lowers what the peer may hold on us at once: `subscriptions` (each further SUBSCRIBE
    /// is refused on its own stream with BoundsExceeded) and `broadcasts` live from its
    /// announcements (each further one is ignored and counted). Clamped to the session's
    /// own bounds, and to at least 1.
    pub fn limit_peer(&mut self, subscriptions: usize, broadcasts: usize) {
        self.max_peer_subscriptions = subscriptions.clamp(1, MAX_OUTSTANDING_REQUESTS);
        self.max_peer_broadcasts = broadcasts.clamp(1, MAX_BROADCASTS);
    }

    /// Subscriptions refused at the peer's limit (see [`Session::limit_peer`]).
    pub fn subscriptions_over_limit(&self) -> u64 {
        self.subscriptions_over_limit
    }

    /// Announcements ignored at the peer's limit (see [`Session::limit_peer`]).
    pub fn announces_over_limit(&self) -> u64 {
        self.announces_over_limit
    }

    /// Control-stream bytes sent and received so far, by class.
    pub fn control_bytes(&self) -> ControlBytes {
        self.control_bytes
    }

    /// Starts a session. On 05 the first action opens our Setup stream.
    pub fn new(cfg: Config) -> Self {
        let mut s = Session {
            cfg,
            closed: false,
            next_slot: 0,
            slots: IdMap::default(),
            by_id: IdMap::default(),
            header_arena: BytesMut::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            next_request: 0,
            subs: HashMap::new(),
            interests: HashMap::new(),
            tracks: HashMap::new(),
            serves: HashMap::new(),
            published: BTreeMap::new(),
            peer_setup: false,
            peer_origin: 0,
            control_bytes: ControlBytes::default(),
            loops_dropped: 0,
            show_hidden: false,
            max_peer_subscriptions: MAX_OUTSTANDING_REQUESTS,
            max_peer_broadcasts: MAX_BROADCASTS,
            subscriptions_over_limit: 0,
            announces_over_limit: 0,
        };
        if s.cfg.version.is_05_or_later() {
            s.open_setup();
        }
        s
    }

    /// The relay (server) end of a connection: no SETUP Path or Role; `hop_id` is the relay's
    /// origin ID, sent in SETUP (05), ANNOUNCE_OK (05) and announcement hop chains (04).
    pub fn relay(version: Version, hop_id: u64) -> Self {
        Session::new(Config {
            version,
            perspective: Perspective::Server,
            hop_id,
            setup_path: None,
            setup_role: None,
        })
    }

    /// The client end (upstream links, relay-bench). `setup_path` is for raw QUIC on 05/06 only
    /// (on WebTransport the CONNECT path carries it); pass `None` there.
    pub fn client(
        version: Version,
        hop_id: u64,
        setup_path: Option<String>,
        setup_role: Option<SetupRole>,
    ) -> Self {
        Session::new(Config {
            version,
            perspective: Perspective::Client,
            hop_id,
            setup_path,
            setup_role,
        })
    }

    pub fn version(&self) -> Version {
        self.cfg.version
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Next transport action, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Next application event, if any.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Number of streams tracked (for metrics and leak tests).
    pub fn stream_count(&self) -> usize {
        self.slots.len()
    }

    // -----------------------------------------------------------------------------------
    // Internal plumbing

    fn push_action(&mut self, a: Action) {
        if self.actions.len() >= MAX_PENDING_OUTPUTS {
            if !self.closed {
                self.closed = true;
                self.actions.push_back(Action::Close {
                    code: ErrorCode::BoundsExceeded,
                    reason: "action queue not drained".into(),
                });
            }
            // Closed: the connection is going away, so output past the bound has nowhere
            // to go; dropping it keeps a caller that writes after close from growing it.
            return;
        }
        self.actions.push_back(a);
        debug_assert!(self.actions.len() <= MAX_PENDING_OUTPUTS);
    }

    fn emit(&mut self, e: SessionEvent) {
        if self.events.len() >= MAX_PENDING_OUTPUTS {
            self.close(ErrorCode::BoundsExceeded, "event queue not drained".into());
            return;
        }
        self.events.push_back(e);
        debug_assert!(self.events.len() <= MAX_PENDING_OUTPUTS);
    }

    fn encode<M: Message>(&mut self, m: &M) -> Result<Bytes, SessionError> {
        let mut buf = BytesMut::new();
        m.encode(self.cfg.version, &mut buf)?;
        Ok(buf.freeze())
    }

    fn encode_typed<M: Message>(&mut self, typ: u64, m: &M) -> Result<Bytes, SessionError> {
        let mut buf = BytesMut::new();
        put_varint(&mut buf, "stream type", typ)?;
        m.encode(self.cfg.version, &mut buf)?;
        Ok(buf.freeze())
    }

    fn new_request_id(&mut self) -> Result<u64, SessionError> {
        if self.closed {
            return Err(SessionError::Closed);
        }
        if self.subs.len() + self.interests.len() + self.tracks.len() >= MAX_OUTSTANDING_REQUESTS {
            return Err(SessionError::Limit {
                what: "outstanding requests",
                max: MAX_OUTSTANDING_REQUESTS,
            });
        }
        let id = self.next_request;
        self.next_request += 1;
        Ok(id)
    }

    /// Closes the session with `code`. Idempotent.
    pub fn close(&mut self, code: ErrorCode, reason: String) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.actions.push_back(Action::Close { code, reason });
    }
}
