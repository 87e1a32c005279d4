//! A track's shared frame log on one shard: every group start, frame, group end, abort
//! and restart, in the order they happened, stored ONCE however many local subscribers
//! read it. Subscribers hold only a cursor (an absolute entry index); delivering a frame
//! to N subscribers is N cursor advances plus the one refcount increment each session
//! needs for its own send stream. It owns the entries and the late-join cache metadata;
//! it must never be trimmed past a subscriber's cursor (the shard first moves a cursor
//! that is over its byte bound), and never hold more than the cache bound plus one
//! subscriber bound of entries (the shard trims it at each scan).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::Delivery;
use crate::cache::Cache;
use crate::slab::Key;

/// Bytes charged per log entry on top of its payload, so that control entries and empty
/// frames count against a subscriber's byte bound (about the size of one entry).
pub(crate) const ENTRY_OVERHEAD: usize = 64;

/// One frame as the publisher's session handed it over.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub(crate) group: u64,
    /// In the track's timescale; the router never interprets it.
    pub(crate) timestamp: u64,
    pub(crate) payload: Bytes,
    /// `ArrivalTick` of the publisher's shard when it took the frame (0: unknown).
    pub(crate) arrived: u32,
}

#[derive(Clone, Debug)]
pub(crate) enum Entry {
    Start(u64),
    Frame(Frame),
    End(u64),
    /// Every group below this lost data upstream.
    AbortBelow(u64),
    /// The publisher resumed after a loss and may number groups afresh.
    Restart,
}

impl Entry {
    pub(crate) fn group(&self) -> Option<u64> {
        match self {
            Entry::Start(g) | Entry::Frame(Frame { group: g, .. }) | Entry::End(g) => Some(*g),
            Entry::AbortBelow(_) | Entry::Restart => None,
        }
    }

    fn cost(&self) -> u64 {
        let payload = match self {
            Entry::Frame(f) => f.payload.len(),
            _ => 0,
        };
        (payload + ENTRY_OVERHEAD) as u64
    }
}

struct Slot {
    entry: Entry,
    /// Cost of every entry appended before this one (absolute), so that a cursor's
    /// backlog is one subtraction.
    before: u64,
}

pub(crate) struct Log {
    slots: VecDeque<Slot>,
    /// Absolute index of `slots[0]`.
    base: u64,
    /// Cost of every entry ever appended.
    total: u64,
    pub(crate) cache: Cache,
    /// Absolute index of the newest `Restart` entry: a subscriber whose cursor is not past
    /// it must not have aborts applied ahead of it (group numbers may repeat across it).
    pub(crate) last_restart: Option<u64>,
    /// `total` at which some subscriber may be over its byte bound: the shard scans the
    /// subscribers then, not on every append.
    pub(crate) check_at: u64,
    /// Subscribers not in the shard's ready queue: woken (moved there) by the next append.
    pub(crate) idle: Vec<Key>,
    /// Subscribers reading this log; it is freed when its track is gone and this is 0.
    pub(crate) readers: usize,
    /// The track is gone; set once with the last delivery every reader gets.
    pub(crate) finish: Option<Delivery>,
    /// The track is gone: the log is freed with its last reader.
    pub(crate) orphan: bool,
}

impl Log {
    pub(crate) fn new(cache: Cache) -> Self {
        Self {
            slots: VecDeque::new(),
            base: 0,
            total: 0,
            cache,
            last_restart: None,
            check_at: u64::MAX,
            idle: Vec::new(),
            readers: 0,
            finish: None,
            orphan: false,
        }
    }

    /// Absolute index one past the newest entry.
    #[inline]
    pub(crate) fn end(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    #[inline]
    pub(crate) fn get(&self, index: u64) -> Option<&Entry> {
        // Below `base` wraps to a huge offset, which `get` rejects like one past the end.
        let i = index.wrapping_sub(self.base);
        if i >= self.slots.len() as u64 {
            return None;
        }
        self.slots.get(i as usize).map(|s| &s.entry)
    }

    /// Cost of the entries from `index` to the end.
    #[inline]
    pub(crate) fn backlog(&self, index: u64) -> u64 {
        let before = match index.checked_sub(self.base) {
            Some(i) => usize::try_from(i)
                .ok()
                .and_then(|i| self.slots.get(i))
                .map_or(self.total, |s| s.before),
            // Trimmed entries are never behind a cursor; count them all if one were.
            None => self.slots.front().map_or(self.total, |s| s.before),
        };
        self.total - before
    }

    /// Cost of every entry held.
    pub(crate) fn held(&self) -> u64 {
        self.backlog(self.base)
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Appends; returns the entry's absolute index.
    #[inline]
    pub(crate) fn push(&mut self, entry: Entry) -> u64 {
        let index = self.end();
        let before = self.total;
        self.total += entry.cost();
        self.slots.push_back(Slot { entry, before });
        index
    }

    /// Drops every entry below `index` (never past the end).
    pub(crate) fn trim(&mut self, index: u64) {
        let index = index.min(self.end());
        let Some(n) = index.checked_sub(self.base).filter(|&n| n > 0) else {
            return;
        };
        // n <= slots.len(), which is a usize. Dropping in place (not one pop at a time) is
        // a third of the per-frame cost of a one-subscriber track otherwise.
        self.slots.drain(..n as usize);
        self.base = index;
    }

    /// Entries from `index` on, for replaying a cached group to another shard.
    pub(crate) fn iter_from(&self, index: u64) -> impl Iterator<Item = &Entry> {
        let skip = usize::try_from(index.saturating_sub(self.base)).unwrap_or(usize::MAX);
        self.slots.iter().skip(skip).map(|s| &s.entry)
    }
}
