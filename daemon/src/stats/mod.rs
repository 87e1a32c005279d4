//! `[stats]`: moq-relay 0.17's stats broadcasts. Every `interval` the control runtime
//! asks each worker what it counted (per broadcast path, per auth root), folds the
//! answers into relay-wide rows (`tally`), and hands worker 0 the frames that changed;
//! worker 0 publishes them into the router as the broadcasts `<prefix>/node/<node>` (or
//! one per bucket of `depth` leading path segments, `<prefix>/<bucket>/node/<node>`),
//! with the tracks `publisher.json`, `subscriber.json`, `sessions.json` and their
//! deflated `.json.z` siblings, one frame per group, as moq-stats 0.2 writes them.
//! Subscribers anywhere read them through the router like any broadcast. JSON and
//! compression are done here, never on a worker.

pub mod counts;
pub mod encode;
pub mod tally;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use crate::config::StatsConfig;
use crate::relay::{ControlRequest, StatsWrite, WorkerLink};
use tally::{Rows, Tally, WorkerReport};

/// moq-stats' default linger of an emptied bucket's broadcast (sized there from a live
/// fleet, where viewers came back within two minutes).
pub const DEFAULT_LINGER: Duration = Duration::from_secs(300);

/// Buckets (stats broadcasts) at once: each costs worker 0 one broadcast and six tracks
/// in the router, so a flood of distinct first segments must not exhaust its shard.
pub const MAX_BUCKETS: usize = 256;

/// How long a round waits for a worker's report; a report that comes later is taken
/// back by its worker and its counts go in the next round.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// The tracks of one stats broadcast, in the order of `Rows`' fields, before the `.z`
/// siblings.
pub const TRACKS: [&str; 3] = ["publisher.json", "subscriber.json", "sessions.json"];

/// The suffix of a track's deflated sibling.
pub const COMPRESSED_SUFFIX: &str = ".z";

/// `[stats]` as the task uses it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub prefix: String,
    pub node: String,
    pub interval: Duration,
    pub depth: usize,
    pub linger: Duration,
}

impl Settings {
    /// `None` unless `[stats] enabled`. `node` is `[stats] node` only (moq-relay does not
    /// fall back to `[cluster] node` for the path).
    pub fn from_config(config: &StatsConfig) -> Option<Self> {
        if !config.enabled {
            return None;
        }
        Some(Self {
            prefix: proto::path::normalize(&config.prefix),
            node: config
                .node
                .as_deref()
                .map(proto::path::normalize)
                .unwrap_or_default(),
            interval: Duration::from_secs(config.interval.max(1)),
            depth: config.depth as usize,
            linger: config.linger.unwrap_or(DEFAULT_LINGER),
        })
    }

    /// The broadcast of `bucket`: `<prefix>[/<bucket>]/node[/<node>]`.
    pub fn broadcast_path(&self, bucket: &str) -> String {
        [self.prefix.as_str(), bucket, "node", self.node.as_str()]
            .iter()
            .filter(|part| !part.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// One live stats broadcast: what its tracks last carried, and since when it has had no
/// rows (`depth` ≥ 1 only; the depth-0 broadcast lives as long as the relay).
#[derive(Default)]
struct Bucket {
    last: [Option<String>; TRACKS.len()],
    empty_since: Option<Instant>,
}

/// Runs until the control runtime stops.
pub async fn run(settings: Settings, links: Vec<WorkerLink>) {
    let Some(publisher) = links.first().cloned() else {
        return;
    };
    let mut tally = Tally::new(&settings.prefix, links.len());
    let mut buckets: HashMap<String, Bucket> = HashMap::new();
    if settings.depth == 0 {
        buckets.insert(String::new(), Bucket::default());
    }
    // Broadcasts whose end did not reach worker 0 yet.
    let mut pending_ended: Vec<String> = Vec::new();
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for (worker, report) in collect(&links).await {
            tally.absorb(worker, report);
        }
        let rows = tally.rows(settings.depth);
        let (writes, ended) = frames(&settings, &mut buckets, rows, Instant::now());
        pending_ended.extend(ended);
        if writes.is_empty() && pending_ended.is_empty() {
            continue;
        }
        let request = ControlRequest::PublishStats {
            writes,
            ended: pending_ended.clone(),
        };
        match publisher.request(request) {
            Ok(()) => pending_ended.clear(),
            Err(err) => {
                // Every track is written again next round, and the ends retried.
                warn!(%err, "stats not handed to worker 0; retried next round");
                for bucket in buckets.values_mut() {
                    bucket.last = Default::default();
                }
            }
        }
    }
}

/// Every worker's report for this round, those that answer in time.
async fn collect(links: &[WorkerLink]) -> Vec<(usize, WorkerReport)> {
    let mut answers = Vec::with_capacity(links.len());
    for (worker, link) in links.iter().enumerate() {
        let (reply, answer) = tokio::sync::oneshot::channel();
        match link.request(ControlRequest::StatsReport { reply }) {
            Ok(()) => answers.push((worker, answer)),
            Err(err) => debug!(worker, %err, "stats report not asked"),
        }
    }
    let deadline = tokio::time::Instant::now() + REPORT_TIMEOUT;
    let mut reports = Vec::with_capacity(answers.len());
    for (worker, answer) in answers {
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(report)) => reports.push((worker, report)),
            _ => debug!(worker, "no stats report this round"),
        }
    }
    reports
}

/// The writes this round makes (changed tracks only), and the broadcasts of buckets
/// whose linger ran out, by path.
fn frames(
    settings: &Settings,
    buckets: &mut HashMap<String, Bucket>,
    mut rows: std::collections::BTreeMap<String, Rows>,
    now: Instant,
) -> (Vec<StatsWrite>, Vec<String>) {
    // A bucket with rows for the first time gets a broadcast, up to MAX_BUCKETS.
    for name in rows.keys() {
        if buckets.contains_key(name) {
            continue;
        }
        if buckets.len() < MAX_BUCKETS {
            buckets.insert(name.clone(), Bucket::default());
        } else {
            debug!(bucket = %name, "stats bucket over the limit; not published");
        }
    }
    let mut writes = Vec::new();
    let mut ended = Vec::new();
    buckets.retain(|name, bucket| {
        let bucket_rows = rows.remove(name);
        let has_rows = bucket_rows.is_some();
        if has_rows || settings.depth == 0 {
            bucket.empty_since = None;
        } else {
            let since = *bucket.empty_since.get_or_insert(now);
            if now.duration_since(since) >= settings.linger {
                ended.push(settings.broadcast_path(name));
                return false;
            }
        }
        let bucket_rows = bucket_rows.unwrap_or_default();
        let texts = [
            to_json(&bucket_rows.publisher),
            to_json(&bucket_rows.subscriber),
            to_json(&bucket_rows.sessions),
        ];
        let broadcast = settings.broadcast_path(name);
        for ((track, text), last) in TRACKS.iter().zip(texts).zip(bucket.last.iter_mut()) {
            if last.as_deref() == Some(text.as_str()) {
                continue;
            }
            let compressed = encode::deflate_snapshot(text.as_bytes());
            writes.push(StatsWrite {
                broadcast: broadcast.clone(),
                track: (*track).into(),
                payload: Bytes::from(text.clone().into_bytes()),
            });
            writes.push(StatsWrite {
                broadcast: broadcast.clone(),
                track: format!("{track}{COMPRESSED_SUFFIX}").into(),
                payload: Bytes::from(compressed),
            });
            *last = Some(text);
        }
        true
    });
    (writes, ended)
}

fn to_json<T: serde::Serialize>(rows: &std::collections::BTreeMap<String, T>) -> String {
    // Serializing maps of plain integers cannot fail.
    serde_json::to_string(rows).unwrap_or_else(|_| "{}".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(depth: usize, node: &str) -> Settings {
        Settings {
            prefix: ".stats".into(),
            node: node.into(),
            interval: Duration::from_secs(1),
            depth,
            linger: Duration::from_secs(10),
        }
    }

    #[test]
    fn broadcast_paths_are_moq_stats_paths() {
        assert_eq!(settings(0, "sjc/1").broadcast_path(""), ".stats/node/sjc/1");
        assert_eq!(settings(0, "").broadcast_path(""), ".stats/node");
        assert_eq!(
            settings(1, "lon").broadcast_path("acme"),
            ".stats/acme/node/lon"
        );
    }

    #[test]
    fn only_changed_tracks_are_written_and_an_empty_bucket_ends_after_its_linger() {
        let settings = settings(1, "edge");
        let mut buckets = HashMap::new();
        let start = Instant::now();
        let mut tally = Tally::new(".stats", 1);
        let mut report = WorkerReport::default();
        report
            .paths
            .insert("acme/cam".into(), counts::PathCounts::default());
        report.roots.insert(
            "acme".into(),
            counts::Presence {
                started: 1,
                ended: 0,
            },
        );
        report.live_roots.insert("acme".into());
        tally.absorb(0, report);
        let (writes, ended) = frames(&settings, &mut buckets, tally.rows(1), start);
        assert!(ended.is_empty());
        // Every track's first value ({} included), plain and deflated.
        assert_eq!(writes.len(), 6);
        assert!(
            writes
                .iter()
                .all(|w| w.broadcast == ".stats/acme/node/edge")
        );
        let (writes, _) = frames(&settings, &mut buckets, tally.rows(1), start);
        assert!(writes.is_empty(), "nothing changed: nothing written");
        let (_, ended) = frames(&settings, &mut buckets, Default::default(), start);
        assert!(ended.is_empty(), "lingers");
        let later = start + Duration::from_secs(10);
        let (_, ended) = frames(&settings, &mut buckets, Default::default(), later);
        assert_eq!(ended, [".stats/acme/node/edge"]);
        assert!(buckets.is_empty());
    }
}
