//! The sending side of cross-shard messaging: the messages shards exchange, and one
//! shard's end of the ring to each peer with its overflow outbox. It owns the split of
//! each ring between data (which may be dropped, a whole group at a time, when the ring is
//! full) and control (which is never dropped: it waits in the outbox); it must never
//! block, and never let data take the slots reserved for control messages.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Remote, Shard};
use crate::log::Frame;
use crate::park::ParkState;
use crate::ring::Producer;
use crate::slab::Key;
use crate::{Doorbell, GroupFrames, RouterError, TrackProperties};

/// A message on a ring. The sender is implied by the ring it arrives on. `slot` is the
/// receiving shard's replica track key (for data) as chosen in `Subscribe`.
pub(super) enum Msg {
    Announce {
        path: Arc<str>,
        bc: Key,
        order: u64,
        hops: Arc<[u64]>,
    },
    Unannounce {
        path: Arc<str>,
        bc: Key,
    },
    Subscribe {
        bc: Key,
        name: Arc<str>,
        slot: Key,
    },
    Unsubscribe {
        bc: Key,
        name: Arc<str>,
        slot: Key,
    },
    Subscribed {
        slot: Key,
        info: TrackProperties,
    },
    NotFound {
        slot: Key,
    },
    TrackEnded {
        slot: Key,
        end: u64,
    },
    GroupStart {
        slot: Key,
        group: u64,
    },
    Frame {
        slot: Key,
        frame: Frame,
    },
    GroupEnd {
        slot: Key,
        group: u64,
    },
    Dropped {
        slot: Key,
        below: u64,
    },
    /// The publisher resumed after a loss: forget cached groups and numbering.
    Restart {
        slot: Key,
    },
    /// A FETCH this shard could not answer from its own cache, for the owner's.
    Fetch {
        bc: Key,
        name: Arc<str>,
        group: u64,
        ticket: Key,
    },
    /// The owner's answer to `Fetch`: the group whole, or `None`.
    Fetched {
        ticket: Key,
        frames: Option<GroupFrames>,
    },
}

pub(super) struct Peer {
    pub(super) tx: Producer<Msg>,
    pub(super) park: Arc<ParkState>,
    pub(super) doorbell: Arc<dyn Doorbell>,
    /// Control messages that found the ring full; bounded by `Config::outbox_max` for
    /// new work (teardown messages may exceed it by the teardowns of live state).
    pub(super) outbox: VecDeque<Msg>,
    /// Pushed since the last `flush`: notify the target once there.
    pub(super) pushed: bool,
    /// Control messages that found the ring full and waited in the outbox.
    pub(super) deferred: u64,
    pub(super) reserve: usize,
}

impl Peer {
    pub(super) fn try_data(&mut self, msg: Msg, reserve: usize) -> Result<(), Msg> {
        if !self.outbox.is_empty() || self.tx.free(reserve + 1) <= reserve {
            return Err(msg);
        }
        self.tx.push(msg)?;
        self.pushed = true;
        Ok(())
    }

    pub(super) fn send_control(&mut self, msg: Msg) {
        let msg = if self.outbox.is_empty() {
            match self.tx.push(msg) {
                Ok(()) => {
                    self.pushed = true;
                    return;
                }
                Err(m) => m,
            }
        } else {
            msg
        };
        self.deferred += 1;
        self.outbox.push_back(msg);
    }
}

impl Shard {
    pub(super) fn check_outboxes(&self) -> Result<(), RouterError> {
        for (peer, p) in self.peers.iter().enumerate() {
            if let Some(p) = p
                && p.outbox.len() >= self.config.outbox_max
            {
                return Err(RouterError::Backlogged {
                    peer,
                    pending: p.outbox.len(),
                });
            }
        }
        Ok(())
    }

    pub(super) fn broadcast_control(&mut self, mut make: impl FnMut() -> Msg) {
        for p in self.peers.iter_mut().flatten() {
            p.send_control(make());
        }
    }
}

/// Data push to one interested shard, after any pending drop notice.
pub(super) fn push_data(p: &mut Peer, r: &mut Remote, msg: Msg) -> bool {
    if let Some(below) = r.notice {
        if p.try_data(
            Msg::Dropped {
                slot: r.slot,
                below,
            },
            0,
        )
        .is_err()
        {
            return false;
        }
        r.notice = None;
    }
    let reserve = p.reserve;
    p.try_data(msg, reserve).is_ok()
}
