//! Per-track cache of the newest groups, for late joiners. It owns references to frame
//! payloads (shared `Bytes`, never copies) and must never exceed its group or byte bound:
//! the newest group is always kept, unless it alone exceeds the byte bound, in which case
//! it is marked truncated and no late joiner may start from it.

use std::collections::VecDeque;

use bytes::Bytes;

/// Bytes charged per cached frame on top of its payload, so that a flood of empty frames
/// still counts against the byte bound (about the size of a `Bytes` handle plus slack).
pub(crate) const FRAME_OVERHEAD: usize = 48;

/// Upper bound on frames reserved up front for a new group (one video GOP at 60 fps
/// for ~4 s); more still fit, by regrowing.
const MAX_RESERVED_FRAMES: usize = 256;

pub(crate) struct CachedGroup {
    pub(crate) seq: u64,
    pub(crate) frames: Vec<Bytes>,
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
        self.groups.iter().rposition(|g| g.seq == seq)
    }

    /// Records a new group, keeping groups sorted by sequence.
    pub(crate) fn start(&mut self, seq: u64) {
        if self.contains(seq) {
            return;
        }
        let pos = self.groups.partition_point(|g| g.seq < seq);
        // Groups of a track are similar in size: reserve what the previous one used so the
        // per-frame append does not regrow (bounded by MAX_RESERVED_FRAMES).
        let reserve = self
            .groups
            .back()
            .map_or(0, |g| g.frames.len().min(MAX_RESERVED_FRAMES));
        self.groups.insert(
            pos,
            CachedGroup {
                seq,
                frames: Vec::with_capacity(reserve),
                ended: false,
                truncated: false,
                bytes: 0,
            },
        );
        self.evict();
    }

    pub(crate) fn frame(&mut self, seq: u64, payload: &Bytes) {
        let Some(i) = self.find(seq) else { return };
        let g = &mut self.groups[i];
        if g.truncated || g.ended {
            return;
        }
        let cost = payload.len() + FRAME_OVERHEAD;
        g.frames.push(payload.clone());
        g.bytes += cost;
        self.bytes += cost;
        self.evict();
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
        self.bytes -= removed;
    }

    pub(crate) fn clear(&mut self) {
        self.groups.clear();
        self.bytes = 0;
    }

    /// The group a late joiner starts from: the newest, if it is complete from its first
    /// frame.
    pub(crate) fn newest(&self) -> Option<&CachedGroup> {
        self.groups.back().filter(|g| !g.truncated)
    }

    fn evict(&mut self) {
        while self.groups.len() > self.max_groups
            || (self.bytes > self.max_bytes && self.groups.len() > 1)
        {
            if let Some(g) = self.groups.pop_front() {
                self.bytes -= g.bytes;
            }
        }
        if self.bytes > self.max_bytes
            && let Some(g) = self.groups.back_mut()
        {
            self.bytes -= g.bytes;
            g.bytes = 0;
            g.frames = Vec::new();
            g.truncated = true;
        }
    }
}
