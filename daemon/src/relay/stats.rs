//! The worker's side of `[stats]` (see `crate::stats`): what its sessions counted per
//! broadcast path and auth root, handed over when the control runtime asks, and, on
//! worker 0, the stats broadcasts themselves, published into the router from the frames
//! the control runtime sends.
//!
//! Per frame this costs two additions on the serve or upstream entry the relay already
//! holds; paths are only looked up when something opens or closes and once per report.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use router::{BroadcastId, Shard, TrackId, TrackProperties};
use tracing::debug;

use super::RelayWorker;
use crate::stats::counts::{PathCounts, Presence};
use crate::stats::tally::WorkerReport;
use crate::stats::{COMPRESSED_SUFFIX, TRACKS};

/// Paths one session's counts name between two reports (a session flipping through
/// more broadcasts than this in one interval loses the excess counts, never memory).
pub const MAX_PATHS_PER_SESSION: usize = 1024;

/// Paths closed sessions leave between two reports on one worker.
pub const MAX_ORPHANED_PATHS: usize = 65_536;

/// Roots counted between two reports on one worker.
pub const MAX_ROOTS: usize = 65_536;

/// One frame of a stats track, for worker 0 to publish.
#[derive(Debug, Clone)]
pub struct StatsWrite {
    pub broadcast: String,
    pub track: Arc<str>,
    pub payload: Bytes,
}

/// A session's counts since the last report, by absolute broadcast path.
#[derive(Debug, Default)]
pub struct SessionStats {
    pub paths: HashMap<String, PathCounts>,
}

impl SessionStats {
    /// The entry for `path`, unless the session is at its bound.
    pub fn path(&mut self, path: &str) -> Option<&mut PathCounts> {
        add_bounded(&mut self.paths, path, MAX_PATHS_PER_SESSION)
    }
}

/// The worker's stats: counts of sessions that ended, per-root opens and closes, and
/// (worker 0) the published stats broadcasts.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// `[stats] enabled`: nothing is counted per path or root otherwise.
    pub enabled: bool,
    orphaned: HashMap<String, PathCounts>,
    roots: HashMap<String, Presence>,
    publisher: StatsPublisher,
}

fn add_bounded<'a, T: Default>(
    map: &'a mut HashMap<String, T>,
    key: &str,
    bound: usize,
) -> Option<&'a mut T> {
    if !map.contains_key(key) && map.len() >= bound {
        return None;
    }
    Some(map.entry(key.to_owned()).or_default())
}

impl WorkerStats {
    pub fn session_admitted(&mut self, root: &str) {
        if !self.enabled {
            return;
        }
        if let Some(presence) = add_bounded(&mut self.roots, root, MAX_ROOTS) {
            presence.started += 1;
        }
    }

    pub fn session_ended(&mut self, root: &str, counts: SessionStats) {
        if !self.enabled {
            return;
        }
        if let Some(presence) = add_bounded(&mut self.roots, root, MAX_ROOTS) {
            presence.ended += 1;
        }
        for (path, counts) in counts.paths {
            match add_bounded(&mut self.orphaned, &path, MAX_ORPHANED_PATHS) {
                Some(entry) => entry.add(&counts),
                None => debug!(%path, "stats of an ended session dropped: too many paths"),
            }
        }
    }
}

impl WorkerStats {
    /// Takes back a report nobody collected, so its counts reach the next one.
    pub fn restore(&mut self, report: WorkerReport) {
        for (path, counts) in report.paths {
            if let Some(entry) = add_bounded(&mut self.orphaned, &path, MAX_ORPHANED_PATHS) {
                entry.add(&counts);
            }
        }
        for (root, presence) in report.roots {
            if let Some(entry) = add_bounded(&mut self.roots, &root, MAX_ROOTS) {
                entry.add(&presence);
            }
        }
    }
}

impl RelayWorker {
    /// Counts since the last report and what is still referenced; every counter is
    /// handed over exactly once.
    pub(super) fn stats_report(&mut self) -> WorkerReport {
        let mut report = WorkerReport::default();
        for conn in self.sessions.values_mut() {
            let Some(access) = &conn.access else { continue };
            report.live_roots.insert(access.root.clone());
            conn.flush_stats_into(&mut report.paths, &mut report.live_paths);
        }
        for (path, counts) in self.stats.orphaned.drain() {
            report.paths.entry(path).or_default().add(&counts);
        }
        report.roots = std::mem::take(&mut self.stats.roots);
        report
    }

    /// Worker 0: publish what the control runtime rendered.
    pub(super) fn publish_stats(&mut self, writes: Vec<StatsWrite>, ended: Vec<String>) {
        for path in ended {
            self.stats.publisher.end(&mut self.shard, &path);
        }
        for write in writes {
            self.stats.publisher.write(&mut self.shard, write);
        }
    }

    /// Demand for a track of a stats broadcast: its own tracks are always live (the
    /// demand needs nothing), any other name is refused. False when `broadcast` is not a
    /// stats broadcast.
    pub(super) fn stats_track_wanted(&mut self, broadcast: BroadcastId, track: TrackId) -> bool {
        if !self.stats.publisher.ids.contains(&broadcast) {
            return false;
        }
        if !self.stats.publisher.carries(track) {
            self.counters.note_router(self.shard.reject_track(track));
        }
        true
    }
}

/// Worker 0's stats broadcasts in the router.
#[derive(Debug, Default)]
struct StatsPublisher {
    broadcasts: HashMap<String, (BroadcastId, HashMap<Arc<str>, TrackId>)>,
    ids: HashSet<BroadcastId>,
    /// One sequence for every group of every track, seeded with the wall clock in µs as
    /// moq-stats does: a restarted relay's groups sort after those a peer still caches.
    next_group: u64,
}

impl StatsPublisher {
    fn write(&mut self, shard: &mut Shard, write: StatsWrite) {
        if self.next_group == 0 {
            self.next_group = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(1));
        }
        let Some(track) = self.track(shard, &write.broadcast, &write.track) else {
            return;
        };
        let group = self.next_group;
        self.next_group += 1;
        let timestamp = super::arrival_millis();
        let result = shard
            .start_group(track, group)
            .and_then(|()| shard.push_frame(track, group, timestamp, write.payload))
            .and_then(|()| shard.end_group(track, group));
        if let Err(err) = result {
            debug!(broadcast = %write.broadcast, track = %write.track, %err, "stats frame not routed");
        }
    }

    /// The track, announcing its broadcast (with all six tracks) on first use.
    fn track(&mut self, shard: &mut Shard, broadcast: &str, name: &str) -> Option<TrackId> {
        if !self.broadcasts.contains_key(broadcast) {
            let id = match shard.announce(broadcast) {
                Ok(id) => id,
                Err(err) => {
                    debug!(%broadcast, %err, "stats broadcast not announced");
                    return None;
                }
            };
            let mut tracks = HashMap::new();
            let names = TRACKS
                .iter()
                .flat_map(|t| [(*t).to_owned(), format!("{t}{COMPRESSED_SUFFIX}")]);
            for track in names {
                match shard.publish_track(id, &track, TrackProperties::default()) {
                    Ok(tid) => {
                        tracks.insert(Arc::from(track), tid);
                    }
                    Err(err) => debug!(%broadcast, %track, %err, "stats track not published"),
                }
            }
            self.ids.insert(id);
            self.broadcasts.insert(broadcast.to_owned(), (id, tracks));
        }
        self.broadcasts.get(broadcast)?.1.get(name).copied()
    }

    fn carries(&self, track: TrackId) -> bool {
        self.broadcasts
            .values()
            .any(|(_, tracks)| tracks.values().any(|&id| id == track))
    }

    fn end(&mut self, shard: &mut Shard, broadcast: &str) {
        if let Some((id, _)) = self.broadcasts.remove(broadcast) {
            self.ids.remove(&id);
            if let Err(err) = shard.unannounce(id) {
                debug!(%broadcast, %err, "stats broadcast end not routed");
            }
        }
    }
}
