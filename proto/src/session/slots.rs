//! Per-stream bookkeeping: what each stream of the session is (`Kind`), the chunks waiting
//! for the transport to bind a stream we asked for, and when a slot is done with.
//!
//! It owns two rules every concern relies on: nothing is written after a FIN or reset
//! (`send` closes the send side), and a slot is dropped only once both directions are over
//! and nothing is left queued (`maybe_remove`). It must never interpret a message (the
//! concern files do) nor queue without bound: callers check `queued_full` against
//! `MAX_QUEUED_CHUNKS` before they queue frames.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::{
    Action, ControlClass, FetchId, InterestId, MAX_QUEUED_CHUNKS, MAX_STREAMS, OpenToken, ServeId,
    Session, SessionError, StreamId, SubscriptionId, TrackRequestId,
};
use crate::ErrorCode;
use crate::message::AnnounceRequest;
use crate::reader::{GroupReader, MessageReader};

#[derive(Debug)]
pub(super) enum Out {
    Data(Bytes),
    Fin,
    Reset(ErrorCode),
}

#[derive(Debug)]
pub(super) enum Kind {
    UniUnknown(MessageReader),
    BidiUnknown(MessageReader),
    SetupIn(MessageReader),
    SetupOut,
    GroupIn {
        reader: Box<GroupReader>,
        target: Option<(SubscriptionId, u64)>,
        ts: i64,
    },
    GroupOut {
        serve: ServeId,
        sequence: u64,
        last_ts: u64,
    },
    InterestOut {
        id: InterestId,
        reader: MessageReader,
        hop: Option<u64>,
        heard: Box<Heard>,
    },
    SubscribeOut {
        id: SubscriptionId,
        reader: MessageReader,
        responses: u64,
    },
    TrackOut {
        id: TrackRequestId,
        reader: MessageReader,
    },
    InterestIn {
        reader: MessageReader,
        answer: Box<Answering>,
    },
    SubscribeIn {
        reader: MessageReader,
        serve: Option<ServeId>,
    },
    TrackIn {
        reader: MessageReader,
        asked: bool,
    },
    FetchIn {
        reader: MessageReader,
        asked: bool,
        last_ts: u64,
    },
    FetchOut {
        id: FetchId,
        reader: Box<GroupReader>,
        ts: i64,
    },
    /// Probe / GoAway streams: read and discard (bounded), never written.
    Drain {
        reader: MessageReader,
        goaway: bool,
    },
}

/// What an announce interest we opened has heard. Boxed in its `Kind` so that every
/// stream's slot, a group's above all, stays small (issue 16).
#[derive(Debug, Default)]
pub(super) struct Heard {
    pub(super) prefix: String,
    /// Suffixes reported `Announced` and not yet `Unannounced`.
    pub(super) active: HashSet<String>,
    /// 06: live Announce IDs of this stream → suffix, including STARTs dropped as loops
    /// (their END or RESTART is still legal). At most [`super::MAX_BROADCASTS`].
    pub(super) ids: HashMap<u64, String>,
    /// 06: suffixes of the live IDs, to reject a second START for one of them.
    pub(super) live: HashSet<String>,
    /// 06: the ID the next START takes (spec 12.5: counted from 0, never reused).
    pub(super) next_id: u64,
}

/// What we answer on a peer's announce interest. Boxed like [`Heard`].
#[derive(Debug, Default)]
pub(super) struct Answering {
    /// The request's prefix and exclude hop, once read.
    pub(super) state: Option<(String, u64)>,
    /// Full paths sent as active on this stream → their 06 Announce ID (unused before).
    pub(super) sent: HashMap<String, u64>,
    /// 06: the ID our next START takes.
    pub(super) next_id: u64,
    /// 06: an ANNOUNCE_REQUEST read before the peer's SETUP, answered once its `Hop`
    /// is known (moq-net's publisher waits the same way, spec 12.4).
    pub(super) deferred: Option<AnnounceRequest>,
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) id: Option<StreamId>,
    pub(super) queued: Vec<Out>,
    pub(super) kind: Kind,
    pub(super) send_open: bool,
    pub(super) recv_open: bool,
}

impl Session {
    pub(super) fn new_local(
        &mut self,
        kind: Kind,
        bidi: bool,
        priority: i32,
    ) -> Result<u64, SessionError> {
        if self.slots.len() >= MAX_STREAMS {
            return Err(SessionError::Limit {
                what: "streams",
                max: MAX_STREAMS,
            });
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        let prev = self.slots.insert(
            slot,
            Slot {
                id: None,
                queued: Vec::new(),
                kind,
                send_open: true,
                recv_open: bidi,
            },
        );
        // Slot numbers are never reused: tokens, GroupIds and FetchServeIds are slot numbers.
        debug_assert!(prev.is_none(), "slot {slot} reused");
        let token = OpenToken(slot);
        self.push_action(if bidi {
            Action::OpenBi { token, priority }
        } else {
            Action::OpenUni { token, priority }
        });
        Ok(slot)
    }

    /// Sends on a slot, or queues until the transport binds it.
    pub(super) fn send(&mut self, slot: u64, out: Out) {
        let Some(s) = self.slots.get_mut(&slot) else {
            return;
        };
        if !s.send_open {
            return;
        }
        if matches!(out, Out::Fin | Out::Reset(_)) {
            s.send_open = false;
        }
        if let (Out::Data(data), Some(class)) = (&out, ControlClass::of(&s.kind)) {
            self.control_bytes.add_sent(class, data.len());
        }
        match s.id {
            Some(stream) => {
                let a = match out {
                    Out::Data(data) => Action::Write { stream, data },
                    Out::Fin => Action::Finish { stream },
                    Out::Reset(code) => Action::Reset { stream, code },
                };
                self.push_action(a);
            }
            None => s.queued.push(out),
        }
        self.maybe_remove(slot);
    }

    pub(super) fn queued_full(&self, slot: u64) -> bool {
        self.slots
            .get(&slot)
            .is_some_and(|s| s.queued.len() >= MAX_QUEUED_CHUNKS)
    }

    pub(super) fn stop(&mut self, slot: u64, code: ErrorCode) {
        let Some(s) = self.slots.get_mut(&slot) else {
            return;
        };
        if !s.recv_open {
            return;
        }
        s.recv_open = false;
        if let Some(stream) = s.id {
            self.push_action(Action::StopSending { stream, code });
        }
        self.maybe_remove(slot);
    }

    /// Drops a slot once both directions are done and nothing is waiting to be sent.
    pub(super) fn maybe_remove(&mut self, slot: u64) {
        let done = self.slots.get(&slot).is_some_and(|s| {
            !s.send_open && !s.recv_open && (s.id.is_some() || s.queued.is_empty())
        });
        if done
            && let Some(s) = self.slots.remove(&slot)
            && let Some(id) = s.id
        {
            let mapped = self.by_id.remove(&id);
            // A bound slot is in `by_id` under its stream until it is removed here.
            debug_assert_eq!(mapped, Some(slot), "stream {id:?} not mapped to its slot");
            if let Kind::GroupOut {
                serve, sequence, ..
            } = s.kind
            {
                self.group_handed_off(serve, sequence, id);
            }
        }
    }
}
