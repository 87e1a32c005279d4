//! Folds the workers' reports into the relay-wide rows the stats tracks show, as
//! moq-net's registry would hold them in one process: a path's (or root's) counts add up
//! across workers and never go back while anything on any worker references it; once
//! nothing does, it is shown in one last frame and then forgotten.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::counts::{PathCounts, Presence, PresenceJson, TrafficJson};

/// What one worker counted since its previous report, and what it still references.
#[derive(Debug, Default)]
pub struct WorkerReport {
    /// Counts added since the previous report, by absolute broadcast path.
    pub paths: HashMap<String, PathCounts>,
    /// Paths a live subscription, upstream subscription or published broadcast on the
    /// worker still refers to.
    pub live_paths: HashSet<String>,
    /// Sessions admitted and ended since the previous report, by auth root.
    pub roots: HashMap<String, Presence>,
    /// Roots with an admitted session open on the worker.
    pub live_roots: HashSet<String>,
}

/// Rows of one stats broadcast (one bucket of `depth` leading segments), as sorted maps:
/// moq-stats writes its frames as sorted compact JSON objects.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rows {
    pub publisher: BTreeMap<String, TrafficJson>,
    pub subscriber: BTreeMap<String, TrafficJson>,
    pub sessions: BTreeMap<String, PresenceJson>,
}

/// The relay-wide rows, fed by every worker's reports.
#[derive(Debug)]
pub struct Tally {
    /// `<prefix>` itself: paths at or under it are the stats broadcasts, never counted.
    prefix: String,
    /// Every path and root counted and not yet shown after its last reference.
    paths: HashMap<String, PathCounts>,
    roots: HashMap<String, Presence>,
    /// Each worker's latest live sets: a worker that missed a round keeps its last word.
    live_paths: Vec<HashSet<String>>,
    live_roots: Vec<HashSet<String>>,
}

impl Tally {
    pub fn new(prefix: &str, workers: usize) -> Self {
        Self {
            prefix: prefix.to_owned(),
            paths: HashMap::new(),
            roots: HashMap::new(),
            live_paths: vec![HashSet::new(); workers],
            live_roots: vec![HashSet::new(); workers],
        }
    }

    pub fn absorb(&mut self, worker: usize, report: WorkerReport) {
        assert!(
            worker < self.live_paths.len(),
            "worker {worker} out of range"
        );
        let WorkerReport {
            paths,
            mut live_paths,
            roots,
            live_roots,
        } = report;
        for (path, counts) in paths {
            if router::path_has_prefix(&path, &self.prefix) {
                continue;
            }
            self.paths.entry(path).or_default().add(&counts);
        }
        live_paths.retain(|path| !router::path_has_prefix(path, &self.prefix));
        self.live_paths[worker] = live_paths;
        for (root, presence) in roots {
            self.roots.entry(root).or_default().add(&presence);
        }
        self.live_roots[worker] = live_roots;
    }

    /// The rows of every bucket with any, keyed by bucket (the first `depth` segments of
    /// the path or root; all rows are in bucket `""` at depth 0). Rows nothing references
    /// any more are in this answer for the last time.
    pub fn rows(&mut self, depth: usize) -> BTreeMap<String, Rows> {
        let mut buckets: BTreeMap<String, Rows> = BTreeMap::new();
        for (path, counts) in &self.paths {
            let PathCounts { egress, ingress } = *counts;
            if !egress.is_zero() {
                buckets
                    .entry(bucket_of(path, depth))
                    .or_default()
                    .publisher
                    .insert(path.clone(), egress.json(0));
            }
            if !ingress.is_zero() {
                let announced_bytes =
                    path.len() as u64 * (ingress.announces_started + ingress.announces_ended);
                buckets
                    .entry(bucket_of(path, depth))
                    .or_default()
                    .subscriber
                    .insert(path.clone(), ingress.json(announced_bytes));
            }
        }
        for (root, presence) in &self.roots {
            buckets
                .entry(bucket_of(root, depth))
                .or_default()
                .sessions
                .insert(root.clone(), presence.json());
        }
        let live_paths = &self.live_paths;
        self.paths
            .retain(|path, _| live_paths.iter().any(|set| set.contains(path)));
        let live_roots = &self.live_roots;
        self.roots
            .retain(|root, _| live_roots.iter().any(|set| set.contains(root)));
        buckets
    }

    pub fn path_count(&self) -> usize {
        self.paths.len()
    }
}

/// The first `depth` segments of `path` (all of it when shorter), as moq-stats groups.
pub fn bucket_of(path: &str, depth: usize) -> String {
    if depth == 0 {
        return String::new();
    }
    path.split('/').take(depth).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::counts::Side;

    fn egress_bytes(bytes: u64) -> PathCounts {
        PathCounts {
            egress: Side {
                bytes,
                frames: 1,
                ..Side::default()
            },
            ingress: Side::default(),
        }
    }

    fn report(path: &str, bytes: u64, live: bool) -> WorkerReport {
        let mut report = WorkerReport::default();
        report.paths.insert(path.into(), egress_bytes(bytes));
        if live {
            report.live_paths.insert(path.into());
        }
        report
    }

    fn bytes_of(rows: &BTreeMap<String, Rows>, path: &str) -> Option<u64> {
        let json = serde_json::to_value(rows.get("")?.publisher.get(path)?).unwrap();
        json["bytes"].as_u64()
    }

    #[test]
    fn a_path_adds_up_across_workers_and_is_shown_once_after_its_last_reference() {
        let mut tally = Tally::new(".stats", 2);
        tally.absorb(0, report("demo/room", 10, true));
        tally.absorb(1, report("demo/room", 5, true));
        assert_eq!(bytes_of(&tally.rows(0), "demo/room"), Some(15));
        // Worker 1's subscribers leave: the path lives on through worker 0, unchanged.
        tally.absorb(1, report("demo/room", 1, false));
        assert_eq!(bytes_of(&tally.rows(0), "demo/room"), Some(16));
        tally.absorb(0, report("demo/room", 0, false));
        assert_eq!(
            bytes_of(&tally.rows(0), "demo/room"),
            Some(16),
            "final frame"
        );
        assert_eq!(
            bytes_of(&tally.rows(0), "demo/room"),
            None,
            "then forgotten"
        );
        assert_eq!(tally.path_count(), 0);
    }

    #[test]
    fn the_stats_broadcasts_own_paths_are_never_counted() {
        let mut tally = Tally::new(".stats", 1);
        tally.absorb(0, report(".stats/node/edge", 10, true));
        tally.absorb(0, report(".statsy", 1, true));
        let rows = tally.rows(0);
        assert_eq!(bytes_of(&rows, ".stats/node/edge"), None);
        assert_eq!(bytes_of(&rows, ".statsy"), Some(1));
    }

    #[test]
    fn a_side_with_nothing_counted_has_no_row_and_buckets_follow_depth() {
        let mut tally = Tally::new(".stats", 1);
        tally.absorb(0, report("acme/live/cam", 3, true));
        let rows = tally.rows(1);
        let acme = rows.get("acme").unwrap();
        assert!(acme.publisher.contains_key("acme/live/cam"));
        assert!(acme.subscriber.is_empty());
        assert_eq!(bucket_of("acme/live/cam", 2), "acme/live");
        assert_eq!(bucket_of("acme", 3), "acme");
    }

    #[test]
    fn a_root_is_shown_while_a_session_is_open_and_once_after() {
        let mut tally = Tally::new(".stats", 1);
        let mut open = WorkerReport::default();
        open.roots.insert(
            "anon".into(),
            Presence {
                started: 1,
                ended: 0,
            },
        );
        open.live_roots.insert("anon".into());
        tally.absorb(0, open);
        assert!(tally.rows(0)[""].sessions.contains_key("anon"));
        tally.absorb(
            0,
            WorkerReport {
                live_roots: ["anon".to_string()].into(),
                ..WorkerReport::default()
            },
        );
        assert!(
            tally.rows(0)[""].sessions.contains_key("anon"),
            "still open"
        );
        let mut closed = WorkerReport::default();
        closed.roots.insert(
            "anon".into(),
            Presence {
                started: 0,
                ended: 1,
            },
        );
        tally.absorb(0, closed);
        let rows = tally.rows(0);
        let json = serde_json::to_value(&rows[""].sessions["anon"]).unwrap();
        assert_eq!(json["sessions_ended"], 1);
        assert!(
            tally
                .rows(0)
                .get("")
                .is_none_or(|rows| rows.sessions.is_empty())
        );
    }
}
