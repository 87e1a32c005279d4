//! Serving the peer's subscriptions to us: SUBSCRIBE in (`Serve` state per Subscribe ID),
//! accept / reject, SUBSCRIBE_OK or SUBSCRIBE_START / END out, and the group streams we
//! write for it, frame by frame.
//!
//! It owns when a served Subscribe stream may FIN: only once the track has ended and every
//! group stream has been handed off to the transport (a group queued before its stream
//! opened is not yet handed off). It must never copy a frame payload: headers come from a
//! shared arena and the payload goes out as the caller's `Bytes`.

use std::collections::{HashSet, VecDeque};

/// Ended groups' streams one subscription remembers (see `Serve::ended`): with max
/// latency 0 only the last one or two matter; past this the oldest is forgotten.
const MAX_ENDED_GROUPS: usize = 16;

use bytes::{Bytes, BytesMut};

use super::{
    Action, GroupId, Kind, MAX_QUEUED_CHUNKS, Out, ServeId, Session, SessionError, SessionEvent,
    Slot,
};
use crate::ErrorCode;
use crate::coding::{EncodeError, put_varint};
use crate::message::{
    FrameHeader, GroupHeader, Message, Subscribe, SubscribeOk, SubscribeResponse, UniType,
};

/// Low bits of a group's send priority that order groups within one subscriber priority:
/// 2^22 groups of ordering per level keeps the result below 2^30, so it stays under
/// [`super::CONTROL_PRIORITY`] and never goes negative.
const GROUP_ORDER_BITS: u32 = 22;
const _: () = assert!((u8::MAX as i64 + 1) << GROUP_ORDER_BITS <= 1 << 30);

/// Send priority of a group stream: subscriber priority first, then newer groups first
/// (the reference scheduler's order; it ignores `ordered`).
pub fn group_priority(subscriber_priority: u8, sequence: u64) -> i32 {
    (i32::from(subscriber_priority) << GROUP_ORDER_BITS)
        | (sequence & ((1 << GROUP_ORDER_BITS) - 1)) as i32
}

/// Bytes of frame-header arena allocated at a time: ~256 headers share one allocation
/// instead of one malloc per frame on the send path.
const HEADER_ARENA: usize = 4096;
// A fresh arena must hold at least one header, or `frame_header` would allocate per frame.
const _: () = assert!(HEADER_ARENA >= FrameHeader::MAX_LEN);

#[derive(Debug)]
pub(super) struct Serve {
    pub(super) slot: u64,
    pub(super) priority: u8,
    /// The subscriber's max latency (max age on 06), ms: how long a group may stay in
    /// flight once a newer one exists (spec 8.5). Kept current by SUBSCRIBE_UPDATE.
    pub(super) max_latency_ms: u64,
    pub(super) accepted: bool,
    /// Streams of groups ended and handed off (the session forgets the slot), newest
    /// last: what may still be in flight when a newer group makes them stale.
    pub(super) ended: VecDeque<(u64, super::StreamId)>,
    pub(super) started: bool,
    pub(super) ending: bool,
    pub(super) groups: HashSet<u64>,
}

impl Session {
    pub(super) fn on_subscribe(
        &mut self,
        slot: u64,
        sub: Subscribe,
    ) -> Result<(), (ErrorCode, String)> {
        let serve = ServeId(sub.id);
        if self.serves.contains_key(&serve) {
            return Err((
                ErrorCode::Duplicate,
                format!("subscribe id {} in use", sub.id),
            ));
        }
        if self.serves.len() >= self.max_peer_subscriptions {
            self.subscriptions_over_limit += 1;
            return Err((
                ErrorCode::BoundsExceeded,
                format!(
                    "more than {} subscriptions on this session",
                    self.max_peer_subscriptions
                ),
            ));
        }
        if let Some(s) = self.slots.get_mut(&slot)
            && let Kind::SubscribeIn { serve: sv, .. } = &mut s.kind
        {
            *sv = Some(serve);
        }
        let prev = self.serves.insert(
            serve,
            Serve {
                slot,
                priority: sub.priority,
                max_latency_ms: sub.max_latency_ms,
                accepted: false,
                ended: VecDeque::new(),
                started: false,
                ending: false,
                groups: HashSet::new(),
            },
        );
        debug_assert!(prev.is_none(), "serve {serve:?} registered twice");
        self.emit(SessionEvent::SubscribeRequested {
            serve,
            request: Box::new(sub),
        });
        Ok(())
    }

    /// How long the peer's subscription lets a group stay in flight once a newer group
    /// exists (its max latency, max age on 06); `None` for an unknown subscription.
    pub fn serve_max_latency(&self, serve: ServeId) -> Option<std::time::Duration> {
        self.serves
            .get(&serve)
            .map(|st| std::time::Duration::from_millis(st.max_latency_ms))
    }

    /// The stream of group `sequence` of subscription `serve`, once the group ended and
    /// its stream was handed off, for a caller that resets it when it goes stale while
    /// still in flight; forgotten by this call. `None` for a group still open, never
    /// opened, or older than the last few ended.
    pub fn take_ended_group_stream(
        &mut self,
        serve: ServeId,
        sequence: u64,
    ) -> Option<super::StreamId> {
        let ended = &mut self.serves.get_mut(&serve)?.ended;
        let at = ended.iter().rposition(|&(s, _)| s == sequence)?;
        ended.remove(at).map(|(_, stream)| stream)
    }

    /// Notes a group stream handed off for good (its slot is going).
    pub(super) fn group_handed_off(
        &mut self,
        serve: ServeId,
        sequence: u64,
        stream: super::StreamId,
    ) {
        if let Some(st) = self.serves.get_mut(&serve) {
            if st.ended.len() == MAX_ENDED_GROUPS {
                st.ended.pop_front();
            }
            st.ended.push_back((sequence, stream));
        }
    }

    pub(super) fn serve_mut(&mut self, serve: ServeId) -> Result<&mut Serve, SessionError> {
        self.serves.get_mut(&serve).ok_or(SessionError::Unknown {
            what: "served subscription",
            id: serve.0,
        })
    }

    /// Accepts the peer's subscription. On 03/04 this sends SUBSCRIBE_OK at once (it must be
    /// the first response); on 05 SUBSCRIBE_START goes out with the first group.
    pub fn accept_subscribe(&mut self, serve: ServeId) -> Result<(), SessionError> {
        let v = self.cfg.version;
        let st = self.serve_mut(serve)?;
        if st.accepted {
            return Ok(());
        }
        st.accepted = true;
        let (slot, priority) = (st.slot, st.priority);
        if !v.is_05_or_later() {
            // The reference echoes the subscriber's priority, unordered, 0 ms, no range.
            let ok = SubscribeOk {
                priority,
                ordered: false,
                max_latency_ms: 0,
                start: None,
                end: None,
            };
            let data = self.encode(&SubscribeResponse::Ok(ok))?;
            self.send(slot, Out::Data(data));
        }
        Ok(())
    }

    /// Rejects (or later fails) the peer's subscription: resets it with `code` (e.g.
    /// `Unroutable`, `NotFound`) and resets its open groups.
    pub fn reject_subscribe(
        &mut self,
        serve: ServeId,
        code: ErrorCode,
    ) -> Result<(), SessionError> {
        let st = self.serves.remove(&serve).ok_or(SessionError::Unknown {
            what: "served subscription",
            id: serve.0,
        })?;
        for g in st.groups {
            self.send(g, Out::Reset(code));
        }
        self.send(st.slot, Out::Reset(code));
        self.stop(st.slot, code);
        Ok(())
    }

    /// Opens a group stream for the peer's subscription. On 05 the first group also sends
    /// SUBSCRIBE_START(`sequence`).
    pub fn start_group(&mut self, serve: ServeId, sequence: u64) -> Result<GroupId, SessionError> {
        let v = self.cfg.version;
        if self.closed {
            return Err(SessionError::Closed);
        }
        self.accept_subscribe(serve)?;
        let st = self.serve_mut(serve)?;
        if st.ending {
            return Err(SessionError::WrongState {
                what: "start_group after end_subscription",
            });
        }
        // accept_subscribe above ran first: on 03/04 SUBSCRIBE_OK precedes every group.
        debug_assert!(
            st.accepted,
            "serve {serve:?} started before it was accepted"
        );
        let (slot, priority, started) = (st.slot, st.priority, st.started);
        st.started = true;
        if !started && v.is_05_or_later() {
            let data = self.encode(&SubscribeResponse::Start { group: sequence })?;
            self.send(slot, Out::Data(data));
        }
        let mut buf = BytesMut::new();
        put_varint(&mut buf, "stream type", UniType::Group.id())?;
        GroupHeader {
            subscribe_id: serve.0,
            sequence,
            // Whole groups only: we never start a group part-way (spec 12.10).
            frame_start: 0,
        }
        .encode(v, &mut buf)?;
        let g = self.new_local(
            Kind::GroupOut {
                serve,
                sequence,
                last_ts: 0,
            },
            false,
            group_priority(priority, sequence),
        )?;
        if let Some(st) = self.serves.get_mut(&serve) {
            let fresh = st.groups.insert(g);
            // `g` is a new slot number, so no group of any serve has it yet.
            debug_assert!(fresh, "group slot {g} already open");
        }
        self.send(g, Out::Data(buf.freeze()));
        Ok(GroupId(g))
    }

    /// Writes one frame: its header as one chunk, then `payload` as given (never copied).
    /// `timestamp` is absolute in the track's timescale; ignored before 05.
    pub fn write_frame(
        &mut self,
        group: GroupId,
        timestamp: u64,
        payload: Bytes,
    ) -> Result<(), SessionError> {
        if self.queued_full(group.0) {
            return Err(SessionError::Backlog {
                what: "group",
                id: group.0,
                max: MAX_QUEUED_CHUNKS,
            });
        }
        let s = self.slots.get_mut(&group.0).filter(|s| s.send_open);
        let Some(Slot {
            kind: Kind::GroupOut { last_ts, .. },
            ..
        }) = s
        else {
            return Err(SessionError::Unknown {
                what: "group",
                id: group.0,
            });
        };
        let prev = *last_ts;
        let delta = i128::from(timestamp) - i128::from(prev);
        let delta = i64::try_from(delta).map_err(|_| EncodeError::Invalid {
            what: "timestamp delta",
        })?;
        *last_ts = timestamp;
        let hdr = match self.frame_header(delta, payload.len() as u64) {
            Ok(h) => h,
            Err(e) => {
                // Undo: the frame was not written, so the next delta starts from before.
                if let Some(Slot {
                    kind: Kind::GroupOut { last_ts, .. },
                    ..
                }) = self.slots.get_mut(&group.0)
                {
                    *last_ts = prev;
                }
                return Err(e);
            }
        };
        self.send(group.0, Out::Data(hdr));
        if !payload.is_empty() {
            self.send(group.0, Out::Data(payload));
        }
        // The check above lets one frame (header and payload) past the bound, no more.
        debug_assert!(
            self.slots
                .get(&group.0)
                .is_none_or(|s| s.queued.len() <= MAX_QUEUED_CHUNKS + 1),
            "group {group:?} queued past its bound"
        );
        Ok(())
    }

    /// Finishes a group stream (FIN).
    pub fn end_group(&mut self, group: GroupId) -> Result<(), SessionError> {
        self.close_group(group, Out::Fin)
    }

    /// Resets a group stream (e.g. `Old`, `Evicted`, `Lagged`).
    pub fn abort_group(&mut self, group: GroupId, code: ErrorCode) -> Result<(), SessionError> {
        self.close_group(group, Out::Reset(code))
    }

    fn close_group(&mut self, group: GroupId, out: Out) -> Result<(), SessionError> {
        let serve = match self.slots.get(&group.0).map(|s| &s.kind) {
            Some(Kind::GroupOut { serve, .. }) => *serve,
            _ => {
                return Err(SessionError::Unknown {
                    what: "group",
                    id: group.0,
                });
            }
        };
        self.send(group.0, out);
        // Until the transport opens the stream the group is not handed off: the Subscribe
        // stream must not FIN before it (on_stream_bound finishes the bookkeeping).
        if self.slots.get(&group.0).is_none_or(|s| s.id.is_some()) {
            self.group_gone(serve, group.0);
        }
        Ok(())
    }

    /// The track ended: no group ≥ `end` (exclusive) will come. On 05 sends SUBSCRIBE_END;
    /// the Subscribe stream is FINed once every open group has ended.
    pub fn end_subscription(&mut self, serve: ServeId, end: u64) -> Result<(), SessionError> {
        let v = self.cfg.version;
        let st = self.serve_mut(serve)?;
        if st.ending {
            return Ok(());
        }
        st.ending = true;
        let (slot, accepted, idle) = (st.slot, st.accepted, st.groups.is_empty());
        if !accepted {
            self.accept_subscribe(serve)?;
        }
        if v.is_05_or_later() {
            let data = self.encode(&SubscribeResponse::End { group: end })?;
            self.send(slot, Out::Data(data));
        }
        if idle && let Some(st) = self.serves.remove(&serve) {
            // Keep reading: the subscriber answers our FIN with its own (spec 3.4).
            self.send(st.slot, Out::Fin);
        }
        Ok(())
    }

    /// Re-ranks open group streams after the subscriber changed its priority.
    pub(super) fn reprioritize(&mut self, groups: &[u64], priority: u8) {
        for g in groups {
            if let Some(Slot {
                id: Some(stream),
                kind: Kind::GroupOut { sequence, .. },
                ..
            }) = self.slots.get(g)
            {
                let a = Action::SetPriority {
                    stream: *stream,
                    priority: group_priority(priority, *sequence),
                };
                self.push_action(a);
            }
        }
    }

    pub(super) fn cancel_serve(&mut self, serve: ServeId, code: Option<ErrorCode>) {
        let Some(st) = self.serves.remove(&serve) else {
            return;
        };
        for g in st.groups {
            self.send(g, Out::Reset(ErrorCode::Cancel));
        }
        self.send(st.slot, Out::Fin);
        self.emit(SessionEvent::SubscribeCancelled { serve, code });
    }

    pub(super) fn group_gone(&mut self, serve: ServeId, slot: u64) {
        let finish = match self.serves.get_mut(&serve) {
            Some(st) => {
                // Not asserted: the peer may reuse a Subscribe ID once the old serve is
                // gone, and a group of the old one still bound later lands here, unknown.
                st.groups.remove(&slot);
                st.ending && st.groups.is_empty()
            }
            None => false,
        };
        if finish && let Some(st) = self.serves.remove(&serve) {
            // Keep reading: the subscriber answers our FIN with its own (spec 3.4).
            self.send(st.slot, Out::Fin);
        }
    }

    /// Encodes a frame header into the shared arena (one allocation per ~256 headers).
    pub(super) fn frame_header(&mut self, delta: i64, size: u64) -> Result<Bytes, SessionError> {
        let arena = &mut self.header_arena;
        if arena.capacity() - arena.len() < FrameHeader::MAX_LEN {
            *arena = BytesMut::with_capacity(HEADER_ARENA);
        }
        FrameHeader {
            timestamp_delta: delta,
            size,
        }
        .encode(self.cfg.version, arena)?;
        Ok(arena.split().freeze())
    }
}
