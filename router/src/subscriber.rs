//! One local subscriber: a cursor into its track's shared log, plus the little state that
//! is its own (where it joined, which groups it dropped, what it must be told). It
//! enforces the per-subscriber bound by dropping its OLDEST unread groups (raising its
//! floor and moving its cursor) so the newest keep flowing. It must never block the
//! caller, never let its unread backlog exceed its bound once the shard has scanned it,
//! and never copy a payload (a frame is handed out as a refcounted `Bytes` clone).

use crate::log::{ENTRY_OVERHEAD, Entry, Frame, Log};
use crate::slab::Key;
use crate::{Delivery, TrackProperties};

pub(crate) struct Subscriber {
    pub(crate) track: Key,
    /// This subscriber's index in its track's `subs`, so leaving is a swap-remove, not a
    /// walk of every subscriber of the track (a mass disconnect would be O(N²)).
    pub(crate) track_index: usize,
    pub(crate) log: Key,
    /// Absolute index of the next log entry to read.
    cursor: u64,
    max_bytes: usize,
    /// `Ready` still to be handed out (it comes before any log entry).
    ready: Option<TrackProperties>,
    /// First group this subscriber joined at; `None` until a group starts (late join
    /// happens at a group boundary, never mid-group).
    start: Option<u64>,
    /// Groups below this were dropped for this subscriber.
    floor: u64,
    /// Smallest group whose frames this subscriber reads, `None` while it reads none
    /// (not started or finished): `start`, `floor` and `finished` folded into the one
    /// comparison the per-frame path makes. Kept by `recompute_reads_from`.
    reads_from: Option<u64>,
    /// Smallest group whose start the session has taken, i.e. which may have a stream.
    first_taken: Option<u64>,
    /// Pending "reset every open group below N" notice, coalesced.
    dropped_below: Option<u64>,
    /// Late join replay `(group, until)`: entries before log index `until` happened
    /// before this subscriber existed, so of those only group `group`'s are its own.
    replay: Option<(u64, u64)>,
    pub(crate) in_ready: bool,
    /// The track's last delivery (ended or not found) was handed out; nothing follows.
    finished: bool,
    pub(crate) dropped: Dropped,
}

/// What the slow-consumer policy took from one subscriber: whole-group drops, and the
/// frames (with their payload bytes) of dropped groups it then skipped unread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub(crate) groups: u64,
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
}

impl Dropped {
    pub(crate) fn add(&mut self, other: &Dropped) {
        self.groups += other.groups;
        self.frames += other.frames;
        self.bytes += other.bytes;
    }
}

impl Subscriber {
    pub(crate) fn new(track: Key, log: Key, cursor: u64, max_bytes: usize) -> Self {
        Self {
            track,
            track_index: usize::MAX,
            log,
            cursor,
            max_bytes,
            ready: None,
            start: None,
            floor: 0,
            reads_from: None,
            first_taken: None,
            dropped_below: None,
            replay: None,
            in_ready: false,
            finished: false,
            dropped: Dropped::default(),
        }
    }

    fn control_bytes(&self) -> usize {
        if self.ready.is_some() {
            ENTRY_OVERHEAD
        } else {
            0
        }
    }

    /// Bytes this subscriber has not read yet (entries of groups it will skip count too:
    /// the bound errs on the side of dropping).
    pub(crate) fn queued_bytes(&self, log: &Log) -> usize {
        usize::try_from(log.backlog(self.cursor))
            .unwrap_or(usize::MAX)
            .saturating_add(self.control_bytes())
    }

    /// The log total past which this subscriber would be over its bound.
    pub(crate) fn limit(&self, log: &Log) -> u64 {
        let read = log.total() - log.backlog(self.cursor);
        let room = self.max_bytes.saturating_sub(self.control_bytes()) as u64;
        read.saturating_add(room)
    }

    pub(crate) fn has_pending(&self, log: &Log) -> bool {
        self.ready.is_some()
            || self.dropped_below.is_some()
            || self.cursor < log.end()
            || (log.finish.is_some() && !self.finished)
    }

    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The track is live: `Ready` comes first.
    pub(crate) fn ready(&mut self, info: TrackProperties) {
        if !self.finished {
            self.ready = Some(info);
        }
    }

    /// Late join at the cached group `group` whose `Start` is at log index `start`;
    /// `until` is the log's end now.
    pub(crate) fn join(&mut self, group: u64, start: u64, until: u64) {
        self.cursor = start;
        self.replay = Some((group, until));
    }

    #[inline(always)]
    fn wants(&self, group: u64) -> bool {
        self.reads_from.is_some_and(|from| group >= from)
    }

    fn recompute_reads_from(&mut self) {
        self.reads_from = match self.start {
            Some(start) if !self.finished => Some(start.max(self.floor)),
            _ => None,
        };
    }

    fn in_replay(&self, index: u64, group: Option<u64>) -> bool {
        match self.replay {
            Some((g, until)) if index < until => group == Some(g),
            _ => true,
        }
    }

    /// Whether the entry at `index` is handed to the session (false: skipped, or a
    /// control entry applied silently).
    fn delivers(&self, index: u64, e: &Entry) -> bool {
        if !self.in_replay(index, e.group()) {
            return false;
        }
        match *e {
            Entry::Start(g) => {
                !self.finished && g >= self.floor && self.start.is_none_or(|s| g >= s)
            }
            Entry::Frame(Frame { group: g, .. }) | Entry::End(g) => self.wants(g),
            Entry::AbortBelow(_) | Entry::Restart => false,
        }
    }

    /// Applies the entry at `index`; the delivery it makes, if any.
    #[inline(always)]
    fn step(&mut self, index: u64, e: &Entry) -> Option<Delivery> {
        if self.replay.is_some() && !self.replay_step(index, e) {
            return None;
        }
        match e {
            Entry::Start(g) => {
                let g = *g;
                if self.finished || g < self.floor || self.start.is_some_and(|s| g < s) {
                    return None;
                }
                if self.start.is_none() {
                    self.start = Some(g);
                    self.recompute_reads_from();
                }
                self.first_taken = Some(self.first_taken.map_or(g, |t| t.min(g)));
                Some(Delivery::GroupStart { group: g })
            }
            Entry::Frame(f) if !self.wants(f.group) => {
                // Below the floor: a frame of a group dropped for this subscriber. (Frames
                // from before it joined are never stepped here: the cursor starts past
                // them, and a late join's replay skips other groups before this match.)
                if !self.finished && f.group < self.floor {
                    self.dropped.frames += 1;
                    self.dropped.bytes += f.payload.len() as u64;
                }
                None
            }
            Entry::Frame(f) => Some(Delivery::Frame {
                group: f.group,
                timestamp: f.timestamp,
                payload: f.payload.clone(),
                // A late joiner's replay is as old as the cache, not the relay's latency.
                arrived: if self.replay.is_some() {
                    crate::ArrivalTick::UNKNOWN
                } else {
                    crate::ArrivalTick(f.arrived)
                },
            }),
            Entry::End(g) => self.wants(*g).then_some(Delivery::GroupEnd { group: *g }),
            Entry::AbortBelow(below) => {
                self.abort_below(*below);
                None
            }
            Entry::Restart => {
                self.restart();
                None
            }
        }
    }

    /// Leaves the late-join replay once past it; whether the entry is this
    /// subscriber's.
    #[cold]
    fn replay_step(&mut self, index: u64, e: &Entry) -> bool {
        if let Some((_, until)) = self.replay
            && index >= until
        {
            self.replay = None;
        }
        self.in_replay(index, e.group())
    }

    /// Next delivery, in order; `None` when everything in the log was read.
    #[inline]
    pub(crate) fn next(&mut self, log: &Log) -> Option<Delivery> {
        // Nearly every call hands out a frame of a group this subscriber reads, with no
        // notice pending: serve it without the general walk below.
        if self.dropped_below.is_none()
            && self.ready.is_none()
            && self.replay.is_none()
            && let Some(Entry::Frame(f)) = log.get(self.cursor)
            && self.wants(f.group)
        {
            self.cursor += 1;
            return Some(Delivery::Frame {
                group: f.group,
                timestamp: f.timestamp,
                payload: f.payload.clone(),
                arrived: crate::ArrivalTick(f.arrived),
            });
        }
        self.next_in_order(log)
    }

    fn next_in_order(&mut self, log: &Log) -> Option<Delivery> {
        if let Some(below) = self.dropped_below.take() {
            return Some(Delivery::GroupsDropped { below });
        }
        if let Some(info) = self.ready.take() {
            return Some(Delivery::Ready(info));
        }
        debug_assert!(self.cursor >= log.base(), "log trimmed past a cursor");
        // Each pass consumes one entry, so this ends at the log's end.
        loop {
            let Some(e) = log.get(self.cursor) else {
                if self.cursor < log.base() {
                    // Never happens (the log is trimmed only behind every cursor); if it
                    // did, resume at the oldest entry rather than stall.
                    self.cursor = log.base();
                    continue;
                }
                if !self.finished
                    && let Some(f) = &log.finish
                {
                    self.finished = true;
                    self.recompute_reads_from();
                    return Some(f.clone());
                }
                return None;
            };
            let index = self.cursor;
            self.cursor += 1;
            if let Some(d) = self.step(index, e) {
                return Some(d);
            }
            if let Some(below) = self.dropped_below.take() {
                return Some(Delivery::GroupsDropped { below });
            }
        }
    }

    /// Past the byte bound, drop the oldest unread group until back under it. A single
    /// group larger than the bound is dropped too, so the bound always holds.
    pub(crate) fn enforce_bound(&mut self, log: &Log) {
        self.cursor = self.cursor.max(log.base());
        // Each pass either returns or raises the floor past the group at the cursor, which
        // the next pass then steps over: the loop ends within the log's length.
        loop {
            while let Some(e) = log.get(self.cursor) {
                if self.delivers(self.cursor, e) {
                    break;
                }
                self.step(self.cursor, e);
                self.cursor += 1;
            }
            if self.queued_bytes(log) <= self.max_bytes {
                return;
            }
            let Some(g) = log.get(self.cursor).and_then(Entry::group) else {
                return;
            };
            self.drop_through(g);
            if g == u64::MAX {
                // The floor cannot rise past the largest group: step over it by hand.
                self.cursor += 1;
            }
        }
    }

    /// Every group below `below` lost data upstream of this subscriber. True if that
    /// changed anything.
    pub(crate) fn abort_below(&mut self, below: u64) -> bool {
        if self.finished || below <= self.floor {
            return false;
        }
        self.drop_through(below - 1);
        true
    }

    /// Groups `<= last` are gone for this subscriber.
    fn drop_through(&mut self, last: u64) {
        self.floor = self.floor.max(last.saturating_add(1));
        self.recompute_reads_from();
        self.dropped.groups += 1;
        if self.first_taken.is_some_and(|t| t <= last) {
            self.dropped_below = Some(self.floor);
        }
    }

    /// The publisher came back after a loss and may number groups afresh: join at its
    /// next group, whatever its sequence. Groups already in the log are still delivered.
    pub(crate) fn restart(&mut self) {
        self.start = None;
        self.floor = 0;
        self.recompute_reads_from();
    }

    /// Whether aborts may be applied ahead of the cursor (it is past the last restart).
    pub(crate) fn past(&self, index: Option<u64>) -> bool {
        index.is_none_or(|i| self.cursor > i)
    }
}
