//! One relay session: its moq-lite state machine, its grants, what it publishes and
//! serves, and the output its streams' flow control has not taken yet. It carries out
//! the session's actions on the worker's `Io`; it never talks to the router (the worker
//! does, with the ids kept here).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use proto::session::{
    Action, Config as SessionConfig, GroupId, Perspective, ServeId, Session,
    StreamId as MoqStreamId, SubscriptionId, TrackRequestId, TrackServeId,
};
use proto::{ErrorCode, Version};
use quic_io::{Io, IoError, SessionId, StreamId as QuicStreamId, VarInt};
use router::{BroadcastId, Delivery, QueryId, SubscriberId, TrackId};
use tracing::debug;

use crate::auth::Access;

/// Actions carried out per drive round; the session's own output bound
/// (`proto::session::MAX_PENDING_OUTPUTS`) is far above it, so this only spreads work.
const MAX_ACTIONS_PER_FLUSH: usize = 65_536;

pub fn to_proto(stream: QuicStreamId) -> MoqStreamId {
    MoqStreamId(VarInt::from(stream).into_inner())
}

fn to_quic(stream: MoqStreamId) -> Option<QuicStreamId> {
    VarInt::from_u64(stream.0).ok().map(QuicStreamId::from)
}

/// Output a stream's flow control has not accepted yet, in order.
#[derive(Debug, Default)]
struct Pending {
    chunks: VecDeque<Bytes>,
    finish: bool,
}

/// A peer's subscription we serve from a router subscriber.
#[derive(Debug)]
pub struct Serve {
    pub sub: SubscriberId,
    /// Open group streams by group sequence.
    pub groups: HashMap<u64, GroupId>,
}

/// Our subscription to a publishing peer for a track the router wants.
#[derive(Debug)]
pub struct Upstream {
    pub broadcast: BroadcastId,
    pub track: TrackId,
    pub name: Arc<str>,
}

pub struct Conn {
    pub id: SessionId,
    pub version: Version,
    pub moq: Session,
    /// `None` until the session is authorised.
    pub access: Option<Access>,
    /// Raw QUIC 05: the grants wait for the client's SETUP, which carries the path.
    pub awaiting_setup: bool,
    /// Broadcasts this session publishes, by relay-wide path.
    pub published: HashMap<String, BroadcastId>,
    pub serves: HashMap<ServeId, Serve>,
    pub upstream: HashMap<SubscriptionId, Upstream>,
    pub upstream_by_track: HashMap<TrackId, SubscriptionId>,
    /// Our TRACK requests (05) to the publishing peer, answered with the track's info.
    pub track_requests: HashMap<TrackRequestId, Upstream>,
    pub query: Option<QueryId>,
    /// Paths (relative to the session root) currently announced to the peer.
    announced: HashSet<String>,
    pending: HashMap<QuicStreamId, Pending>,
    pending_bytes: usize,
}

impl Conn {
    pub fn new(id: SessionId, version: Version, hop_id: u64) -> Self {
        let moq = Session::new(SessionConfig {
            version,
            perspective: Perspective::Server,
            hop_id,
            setup_path: None,
            setup_role: None,
        });
        Self {
            id,
            version,
            moq,
            access: None,
            awaiting_setup: false,
            published: HashMap::new(),
            serves: HashMap::new(),
            upstream: HashMap::new(),
            upstream_by_track: HashMap::new(),
            track_requests: HashMap::new(),
            query: None,
            announced: HashSet::new(),
            pending: HashMap::new(),
            pending_bytes: 0,
        }
    }

    /// The relay-wide path of `broadcast` if this session may subscribe to it (SUBSCRIBE,
    /// TRACK and FETCH all read it).
    pub fn readable(&self, broadcast: &str) -> Option<String> {
        self.access
            .as_ref()
            .filter(|access| access.may_subscribe(broadcast))
            .map(|access| access.absolute(broadcast))
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Carries out the session's queued actions.
    pub fn flush_actions(&mut self, io: &mut Io<'_>) {
        for _ in 0..MAX_ACTIONS_PER_FLUSH {
            let Some(action) = self.moq.poll_action() else {
                return;
            };
            self.apply(io, action);
        }
    }

    fn apply(&mut self, io: &mut Io<'_>, action: Action) {
        let session = self.id;
        match action {
            Action::OpenUni { token, priority } | Action::OpenBi { token, priority } => {
                let bidi = matches!(action, Action::OpenBi { .. });
                let opened = if bidi {
                    io.open_bi(session)
                } else {
                    io.open_uni(session)
                };
                match opened {
                    Ok(stream) => {
                        let _ = io.set_priority(session, stream, priority);
                        self.moq.on_stream_bound(token, to_proto(stream));
                    }
                    Err(err) => {
                        debug!(session, %err, "stream not opened");
                        self.moq.on_stream_open_failed(token);
                    }
                }
            }
            Action::Write { stream, data } => {
                if let Some(stream) = to_quic(stream) {
                    self.write(io, stream, data);
                }
            }
            Action::Finish { stream } => {
                let Some(stream) = to_quic(stream) else {
                    return;
                };
                match self.pending.get_mut(&stream) {
                    Some(pending) => pending.finish = true,
                    None => {
                        let _ = io.finish(session, stream);
                    }
                }
            }
            Action::Reset { stream, code } => {
                let Some(stream) = to_quic(stream) else {
                    return;
                };
                self.drop_pending(stream);
                let _ = io.reset(session, stream, code.stream_code(self.version) as u32);
            }
            Action::StopSending { stream, code } => {
                let Some(stream) = to_quic(stream) else {
                    return;
                };
                let _ = io.stop_sending(session, stream, code.stream_code(self.version) as u32);
            }
            Action::SetPriority { stream, priority } => {
                if let Some(stream) = to_quic(stream) {
                    let _ = io.set_priority(session, stream, priority);
                }
            }
            Action::SendDatagram { data } => {
                let _ = io.send_datagram(session, data);
            }
            Action::Close { code, reason } => {
                io.close(session, code.session_code(self.version) as u32, &reason);
            }
        }
    }

    fn write(&mut self, io: &mut Io<'_>, stream: QuicStreamId, data: Bytes) {
        if let Some(pending) = self.pending.get_mut(&stream) {
            self.pending_bytes += data.len();
            pending.chunks.push_back(data);
            return;
        }
        let mut chunks = [data];
        match io.write(self.id, stream, &mut chunks) {
            Ok(_) => {
                let [rest] = chunks;
                if !rest.is_empty() {
                    self.pending_bytes += rest.len();
                    self.pending
                        .entry(stream)
                        .or_default()
                        .chunks
                        .push_back(rest);
                }
            }
            Err(err) => self.stream_write_failed(stream, err),
        }
    }

    /// Flow control opened up on `stream`: send what waited, then its FIN.
    pub fn flush_stream(&mut self, io: &mut Io<'_>, stream: QuicStreamId) {
        let Some(mut pending) = self.pending.remove(&stream) else {
            return;
        };
        let before: usize = pending.chunks.iter().map(Bytes::len).sum();
        let result = io.write(self.id, stream, pending.chunks.make_contiguous());
        while pending.chunks.front().is_some_and(Bytes::is_empty) {
            pending.chunks.pop_front();
        }
        let after: usize = pending.chunks.iter().map(Bytes::len).sum();
        self.pending_bytes -= before - after;
        if let Err(err) = result {
            self.pending_bytes -= after;
            self.stream_write_failed(stream, err);
            return;
        }
        if pending.chunks.is_empty() {
            if pending.finish {
                let _ = io.finish(self.id, stream);
            }
        } else {
            self.pending.insert(stream, pending);
        }
    }

    fn drop_pending(&mut self, stream: QuicStreamId) {
        if let Some(pending) = self.pending.remove(&stream) {
            self.pending_bytes -= pending.chunks.iter().map(Bytes::len).sum::<usize>();
        }
    }

    fn stream_write_failed(&mut self, stream: QuicStreamId, err: IoError) {
        self.drop_pending(stream);
        match err {
            IoError::Stopped { code, .. } => {
                let code = ErrorCode::from_stream_code(code.into(), self.version);
                self.moq.on_stop_sending(to_proto(stream), code);
            }
            other => debug!(session = self.id, %other, "write failed"),
        }
    }

    // ------------------------------------------------------------------ announcements

    /// Tells the peer about a relay-wide broadcast, if it lies in its subscribe grant and
    /// is not its own.
    pub fn announce_to_peer(&mut self, absolute: &str) {
        let Some(access) = &self.access else { return };
        let Some(relative) = access.relative(absolute) else {
            return;
        };
        if !access.may_subscribe(relative) || self.published.contains_key(absolute) {
            return;
        }
        let relative = relative.to_owned();
        if self.moq.announce(&relative, &[]).is_ok() {
            self.announced.insert(relative);
        }
    }

    pub fn unannounce_to_peer(&mut self, absolute: &str) {
        let Some(relative) = self
            .access
            .as_ref()
            .and_then(|access| access.relative(absolute))
        else {
            return;
        };
        if self.announced.remove(relative) {
            let _ = self.moq.unannounce(relative);
        }
    }

    /// After the router reported lost announce events: make the peer's view equal to
    /// `current` (relay-wide paths).
    pub fn resync_announcements(&mut self, current: &HashSet<String>) {
        let Some(access) = self.access.clone() else {
            return;
        };
        let gone: Vec<String> = self
            .announced
            .iter()
            .filter(|relative| !current.contains(&access.absolute(relative)))
            .cloned()
            .collect();
        for relative in gone {
            self.announced.remove(&relative);
            let _ = self.moq.unannounce(&relative);
        }
        for absolute in current {
            self.announce_to_peer(absolute);
        }
    }

    // ------------------------------------------------------------------ publishing

    /// The path the peer knows a broadcast it publishes by.
    pub fn relative_broadcast(&self, broadcast: BroadcastId) -> Option<String> {
        let access = self.access.as_ref()?;
        let (absolute, _) = self.published.iter().find(|(_, id)| **id == broadcast)?;
        access.relative(absolute).map(str::to_owned)
    }

    pub fn add_upstream(
        &mut self,
        subscription: SubscriptionId,
        broadcast: BroadcastId,
        track: TrackId,
        name: Arc<str>,
    ) {
        self.upstream_by_track.insert(track, subscription);
        self.upstream.insert(
            subscription,
            Upstream {
                broadcast,
                track,
                name,
            },
        );
    }

    /// The broadcast ended: its upstream subscriptions go with it.
    pub fn forget_broadcast(&mut self, broadcast: BroadcastId) {
        let ended: Vec<SubscriptionId> = self
            .upstream
            .iter()
            .filter(|(_, up)| up.broadcast == broadcast)
            .map(|(id, _)| *id)
            .collect();
        for subscription in ended {
            if let Some(up) = self.upstream.remove(&subscription) {
                self.upstream_by_track.remove(&up.track);
            }
            let _ = self.moq.unsubscribe(subscription);
        }
    }

    // ------------------------------------------------------------------ serving

    /// Applies one router delivery to the peer's subscription. True when the
    /// subscription is over and its router subscriber can go.
    pub fn deliver(&mut self, serve: ServeId, delivery: Delivery) -> bool {
        let Some(state) = self.serves.get_mut(&serve) else {
            return true;
        };
        let moq = &mut self.moq;
        match delivery {
            Delivery::Ready(_) => {
                let _ = moq.accept_subscribe(serve);
            }
            Delivery::NotFound => {
                let _ = moq.reject_subscribe(serve, ErrorCode::NotFound);
                self.serves.remove(&serve);
                return true;
            }
            Delivery::GroupStart { group } => match moq.start_group(serve, group) {
                Ok(id) => {
                    state.groups.insert(group, id);
                }
                Err(err) => debug!(session = self.id, group, %err, "group not started"),
            },
            Delivery::Frame {
                group,
                timestamp,
                payload,
            } => {
                if let Some(&id) = state.groups.get(&group)
                    && let Err(err) = moq.write_frame(id, timestamp, payload)
                {
                    debug!(session = self.id, group, %err, "frame not written");
                    state.groups.remove(&group);
                }
            }
            Delivery::GroupEnd { group } => {
                if let Some(id) = state.groups.remove(&group) {
                    let _ = moq.end_group(id);
                }
            }
            Delivery::GroupsDropped { below } => {
                let dropped: Vec<u64> = state
                    .groups
                    .keys()
                    .copied()
                    .filter(|&group| group < below)
                    .collect();
                for group in dropped {
                    if let Some(id) = state.groups.remove(&group) {
                        let _ = moq.abort_group(id, ErrorCode::Dropped);
                    }
                }
            }
            Delivery::TrackEnded { end } => {
                for (_, id) in state.groups.drain() {
                    let _ = moq.abort_group(id, ErrorCode::Cancel);
                }
                let _ = moq.end_subscription(serve, end);
                self.serves.remove(&serve);
                return true;
            }
        }
        false
    }

    /// Answers a TRACK request (05) from the first delivery. True when done.
    pub fn answer_track_info(&mut self, request: TrackServeId, delivery: Delivery) -> bool {
        match delivery {
            Delivery::Ready(info) => {
                let info = proto::TrackInfo {
                    priority: info.priority,
                    ordered: info.ordered,
                    max_latency_ms: u64::try_from(info.max_latency.as_millis()).unwrap_or(u64::MAX),
                    timescale: info.timescale,
                };
                let _ = self.moq.answer_track(request, info);
            }
            _ => {
                let _ = self.moq.reject_track(request, ErrorCode::NotFound);
            }
        }
        true
    }
}

/// A publisher's TRACK_INFO as the router keeps it.
pub fn router_track_info(info: &proto::TrackInfo) -> router::TrackInfo {
    router::TrackInfo {
        priority: info.priority,
        ordered: info.ordered,
        max_latency: std::time::Duration::from_millis(info.max_latency_ms),
        timescale: info.timescale,
    }
}
