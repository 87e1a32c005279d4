//! Which of a track's newest groups late joiners may start from. It owns only group
//! metadata (sequence, where the group starts in the track's frame log, size, ended or
//! truncated); the payloads live once in the log, which keeps every entry from the oldest
//! cached group's start on. It must never account more than its group or byte bound:
//! the newest group is always kept, unless it alone exceeds the byte bound, in which case
//! it is marked truncated and no late joiner may start from it.

use std::collections::VecDeque;

/// Bytes charged per cached frame on top of its payload, so that a flood of empty frames
/// still counts against the byte bound (about the size of a `Bytes` handle plus slack).
pub(crate) const FRAME_OVERHEAD: usize = 48;

pub(crate) struct CachedGroup {
    pub(crate) seq: u64,
    /// Absolute log index of the group's `Start` entry.
    pub(crate) start: u64,
    pub(crate) ended: bool,
    truncated: bool,
    bytes: usize,
}

pub(crate) struct Cache {
    groups: VecDeque<CachedGroup>,
    bytes: usize,
    max_groups: usize,
    max_bytes: usize,
}

impl Cache {
    pub(crate) fn new(max_groups: usize, max_bytes: usize) -> Self {
        Self {
            groups: VecDeque::new(),
            bytes: 0,
            max_groups: max_groups.max(1),
            max_bytes,
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn contains(&self, seq: u64) -> bool {
        self.find(seq).is_some()
    }

    fn find(&self, seq: u64) -> Option<usize> {
        // Newest groups are at the back: search from there.
        self.groups.iter().rposition(|g| g.seq == seq)
    }

    /// Records a new group whose `Start` is at log index `start`, keeping groups sorted
    /// by sequence.
    pub(crate) fn start(&mut self, seq: u64, start: u64) {
        if self.contains(seq) {
            return;
        }
        let pos = self.groups.partition_point(|g| g.seq < seq);
        self.groups.insert(
            pos,
            CachedGroup {
                seq,
                start,
                ended: false,
                truncated: false,
                bytes: 0,
            },
        );
        self.evict();
    }

    /// Accounts a frame of `payload_len` bytes to group `seq`.
    #[inline(always)]
    pub(crate) fn frame(&mut self, seq: u64, payload_len: usize) {
        // This runs once per frame, which almost always goes to the newest group: the
        // deque's iterator in `find` costs more than the rest of the append.
        let newest_matches = self.groups.back().is_some_and(|g| g.seq == seq);
        let group = if newest_matches {
            self.groups.back_mut()
        } else {
            self.older_mut(seq)
        };
        let Some(g) = group else { return };
        if g.truncated || g.ended {
            return;
        }
        let cost = payload_len + FRAME_OVERHEAD;
        g.bytes += cost;
        self.bytes += cost;
        if self.bytes > self.max_bytes {
            self.evict();
        }
    }

    #[cold]
    fn older_mut(&mut self, seq: u64) -> Option<&mut CachedGroup> {
        self.find(seq).map(|i| &mut self.groups[i])
    }

    pub(crate) fn end(&mut self, seq: u64) {
        if let Some(i) = self.find(seq) {
            self.groups[i].ended = true;
        }
    }

    /// Forgets every unfinished group below `below`: some of its frames never arrived.
    pub(crate) fn abort_below(&mut self, below: u64) {
        let mut removed = 0;
        self.groups.retain(|g| {
            let drop = g.seq < below && !g.ended;
            if drop {
                removed += g.bytes;
            }
            !drop
        });
        // Every group's bytes are part of the total: a larger sum means they drifted.
        debug_assert!(removed <= self.bytes, "cache bytes underflow");
        self.bytes -= removed;
    }

    pub(crate) fn clear(&mut self) {
        self.groups.clear();
        self.bytes = 0;
    }

    /// Group `seq` if it is cached whole: ended, and no frame of it left out.
    pub(crate) fn complete(&self, seq: u64) -> Option<&CachedGroup> {
        self.find(seq)
            .map(|i| &self.groups[i])
            .filter(|g| g.ended && !g.truncated)
    }

    /// The group a late joiner starts from: the newest, if it is complete from its first
    /// frame.
    pub(crate) fn newest(&self) -> Option<&CachedGroup> {
        self.groups.back().filter(|g| !g.truncated)
    }

    /// The oldest log index a cached group still needs, if any.
    pub(crate) fn keep_from(&self) -> Option<u64> {
        self.groups
            .iter()
            .filter(|g| !g.truncated)
            .map(|g| g.start)
            .min()
    }

    /// Forgets the cached group that pins the oldest log entries (the log is over its
    /// hard bound because other groups' frames are interleaved with the cached ones).
    pub(crate) fn forget_oldest_start(&mut self) {
        let oldest = self
            .groups
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.truncated)
            .min_by_key(|(_, g)| g.start)
            .map(|(i, _)| i);
        if let Some(i) = oldest
            && let Some(g) = self.groups.remove(i)
        {
            debug_assert!(g.bytes <= self.bytes, "cache bytes underflow");
            self.bytes -= g.bytes;
        }
    }

    #[cold]
    fn evict(&mut self) {
        while self.groups.len() > self.max_groups
            || (self.bytes > self.max_bytes && self.groups.len() > 1)
        {
            if let Some(g) = self.groups.pop_front() {
                debug_assert!(g.bytes <= self.bytes, "cache bytes underflow");
                self.bytes -= g.bytes;
            }
        }
        if self.bytes > self.max_bytes
            && let Some(g) = self.groups.back_mut()
        {
            debug_assert!(g.bytes <= self.bytes, "cache bytes underflow");
            self.bytes -= g.bytes;
            g.bytes = 0;
            g.truncated = true;
        }
    }
}
