//! One local subscriber's delivery queue. It owns the queued deliveries and their byte
//! count, and enforces the per-subscriber bound by dropping the OLDEST queued groups so
//! the newest keep flowing. It must never block the caller, never hold more than its
//! bound, and never copy a payload.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::slab::Key;
use crate::{Delivery, TrackInfo};

/// Bytes charged per queued delivery on top of its payload, so that control entries and
/// empty frames count against the bound (about the size of one queue entry).
pub(crate) const ENTRY_OVERHEAD: usize = 64;

pub(crate) struct Subscriber {
    pub(crate) track: Key,
    queue: VecDeque<Delivery>,
    bytes: usize,
    max_bytes: usize,
    /// First group this subscriber joined at; `None` until a group starts (late join
    /// happens at a group boundary, never mid-group).
    start: Option<u64>,
    /// Groups below this were dropped for this subscriber.
    floor: u64,
    /// Smallest group whose start the session has taken, i.e. which may have a stream.
    first_taken: Option<u64>,
    /// Pending "reset every open group below N" notice, coalesced.
    dropped_below: Option<u64>,
    pub(crate) in_ready: bool,
    /// Track ended or not found was queued; nothing follows.
    finished: bool,
    pub(crate) groups_dropped: u64,
}

impl Subscriber {
    pub(crate) fn new(track: Key, max_bytes: usize) -> Self {
        Self {
            track,
            queue: VecDeque::new(),
            bytes: 0,
            max_bytes,
            start: None,
            floor: 0,
            first_taken: None,
            dropped_below: None,
            in_ready: false,
            finished: false,
            groups_dropped: 0,
        }
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.queue.is_empty() || self.dropped_below.is_some()
    }

    fn cost(d: &Delivery) -> usize {
        match d {
            Delivery::Frame { payload, .. } => payload.len() + ENTRY_OVERHEAD,
            _ => ENTRY_OVERHEAD,
        }
    }

    fn push(&mut self, d: Delivery) {
        self.bytes += Self::cost(&d);
        self.queue.push_back(d);
        self.enforce_bound();
    }

    /// Returns true if something was queued.
    pub(crate) fn ready(&mut self, info: TrackInfo) -> bool {
        if self.finished {
            return false;
        }
        self.push(Delivery::Ready(info));
        true
    }

    pub(crate) fn finish(&mut self, d: Delivery) -> bool {
        if self.finished {
            return false;
        }
        self.finished = true;
        self.push(d);
        true
    }

    fn wants(&self, group: u64) -> bool {
        !self.finished && group >= self.floor && self.start.is_some_and(|s| group >= s)
    }

    pub(crate) fn group_start(&mut self, group: u64) -> bool {
        if self.finished || group < self.floor {
            return false;
        }
        match self.start {
            None => self.start = Some(group),
            Some(s) if group < s => return false,
            Some(_) => {}
        }
        self.push(Delivery::GroupStart { group });
        true
    }

    #[inline]
    pub(crate) fn frame(&mut self, group: u64, payload: &Bytes) -> bool {
        if !self.wants(group) {
            return false;
        }
        self.push(Delivery::Frame {
            group,
            payload: payload.clone(),
        });
        true
    }

    pub(crate) fn group_end(&mut self, group: u64) -> bool {
        if !self.wants(group) {
            return false;
        }
        self.push(Delivery::GroupEnd { group });
        true
    }

    /// Every group below `below` lost data upstream of this subscriber.
    pub(crate) fn abort_below(&mut self, below: u64) -> bool {
        if self.finished || below <= self.floor {
            return false;
        }
        self.drop_through(below - 1);
        true
    }

    /// Drops every queued delivery of groups `<= last` and everything later for them.
    fn drop_through(&mut self, last: u64) {
        let mut freed = 0;
        self.queue.retain(|d| match d.group() {
            Some(g) if g <= last => {
                freed += Self::cost(d);
                false
            }
            _ => true,
        });
        self.bytes -= freed;
        self.floor = self.floor.max(last.saturating_add(1));
        self.groups_dropped += 1;
        if self.first_taken.is_some_and(|t| t <= last) {
            self.dropped_below = Some(self.floor);
        }
    }

    /// Past the byte bound, drop the oldest queued group until back under it. A single
    /// group larger than the bound is dropped too, so the bound always holds.
    fn enforce_bound(&mut self) {
        // Each pass removes at least the front group's entries, so the loop ends.
        while self.bytes > self.max_bytes {
            let Some(oldest) = self.queue.iter().find_map(Delivery::group) else {
                break;
            };
            self.drop_through(oldest);
        }
    }

    /// The publisher came back after a loss and may number groups afresh: join at its
    /// next group, whatever its sequence. Groups already queued are still delivered.
    pub(crate) fn restart(&mut self) {
        self.start = None;
        self.floor = 0;
    }

    pub(crate) fn pop(&mut self) -> Option<Delivery> {
        if let Some(below) = self.dropped_below.take() {
            return Some(Delivery::GroupsDropped { below });
        }
        let d = self.queue.pop_front()?;
        self.bytes -= Self::cost(&d);
        if let Delivery::GroupStart { group } = d {
            self.first_taken = Some(self.first_taken.map_or(group, |t| t.min(group)));
        }
        Some(d)
    }
}
