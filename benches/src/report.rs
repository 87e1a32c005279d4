//! A run's result: latency percentiles and CDF, delivered rate, loss, relay and client
//! cost, the environment (load average, CPUs), as a human table and as JSON. It owns the
//! arithmetic from raw worker results to figures; it must never measure anything itself.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::{MAX_LATENCY_US, WorkerResult};
use crate::procstat::Sample;
use crate::scenario::{Load, Target, Timeline};

/// Client CPU use above this share of the CPUs it was given means the client, not the
/// relay, may have set the figures.
pub const SATURATION_SHARE: f64 = 0.9;
/// Points on the latency CDF kept for the JSON and the plot.
const CDF_POINTS: usize = 200;

/// /proc readings at the measured window's edges.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub relay_before: Option<Sample>,
    pub relay_after: Option<Sample>,
    pub client_before: Option<Sample>,
    pub client_after: Option<Sample>,
    pub load_avg: [f64; 3],
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RelayCost {
    pub pid: u32,
    pub cpu_secs: f64,
    /// Share of one CPU over the window.
    pub cpu_share: f64,
    pub rss_mib: f64,
    pub cpu_us_per_frame: f64,
    /// The part spent on its worker threads (the data path), per delivered frame; 0 for
    /// a relay without `quic-worker-*` threads.
    pub worker_cpu_us_per_frame: f64,
    pub cpu_ms_per_mb: f64,
    /// Share of the window its threads spent runnable but waiting for a CPU (summed over
    /// threads): another load on its CPUs slowed it.
    pub runq_wait_share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientCost {
    pub workers: usize,
    pub cpus: Vec<usize>,
    pub cpu_secs: f64,
    /// CPU used / (window × CPUs given).
    pub cpu_share: f64,
    /// Share of the window its threads waited for a CPU (summed over threads).
    pub runq_wait_share: f64,
    /// It used ≥ 90 % of its CPUs, or used + waited ≥ 90 %: it wanted more CPU than it had.
    pub saturated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub t: u64,
    pub frames: u64,
    pub mbps: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub load: Load,
    pub window_secs: f64,
    pub subscribers_total: usize,
    pub subscribers_active: usize,
    pub latency: Latency,
    pub expected_frames: u64,
    pub delivered_frames: u64,
    pub delivered_fps: f64,
    pub delivered_mbps: f64,
    pub lost_frames: u64,
    pub lost_groups: u64,
    pub publisher_stalls: u64,
    pub relay: Option<RelayCost>,
    pub client: ClientCost,
    pub load_avg: [f64; 3],
    pub errors: Vec<String>,
    pub error_count: u64,
    /// (percentile, latency ms) from 0 to 100.
    pub cdf: Vec<(f64, f64)>,
    pub per_second: Vec<Second>,
}

impl Report {
    pub fn build(
        load: &Load,
        target: &Target,
        timeline: &Timeline,
        results: Vec<WorkerResult>,
        cost: Cost,
    ) -> Report {
        let window = (timeline.t1 - timeline.t0) as f64 / 1e9;
        let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
        let mut groups = vec![0u64; load.publishers];
        let mut per_second: Vec<(u64, u64)> = Vec::new();
        let mut subs = Vec::new();
        let mut errors = Vec::new();
        let mut error_count = 0;
        let mut stalls = 0;
        for r in results {
            let _ = hist.add(&r.histogram);
            for (b, n) in r.measured_groups {
                if let Some(slot) = groups.get_mut(b) {
                    *slot = (*slot).max(n);
                }
            }
            if per_second.len() < r.per_second.len() {
                per_second.resize(r.per_second.len(), (0, 0));
            }
            for (i, (f, b)) in r.per_second.into_iter().enumerate() {
                per_second[i].0 += f;
                per_second[i].1 += b;
            }
            subs.extend(r.subs);
            errors.extend(r.errors);
            error_count += r.error_count;
            stalls += r.publisher_stalls;
        }
        let last_busy = per_second.iter().rposition(|&(f, _)| f > 0).unwrap_or(0);
        let gs = u64::from(load.group_size);
        let mut expected = 0;
        let mut delivered = 0;
        let mut bytes = 0;
        let mut lost_groups = 0;
        for s in &subs {
            let g = groups.get(s.broadcast).copied().unwrap_or(0);
            expected += g * gs;
            delivered += s.frames.min(g * gs);
            bytes += s.bytes;
            lost_groups += g.saturating_sub(s.complete_groups);
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let latency = Latency {
            samples: hist.len(),
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p90_ms: ms(hist.value_at_quantile(0.90)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            p999_ms: ms(hist.value_at_quantile(0.999)),
            max_ms: ms(hist.max()),
            mean_ms: hist.mean() / 1000.0,
        };
        let cdf = if hist.is_empty() {
            Vec::new()
        } else {
            (0..=CDF_POINTS)
                .map(|i| {
                    // Denser towards the tail: q = 1 - 10^(-4 i / N).
                    let q = 1.0 - 10f64.powf(-4.0 * i as f64 / CDF_POINTS as f64);
                    (q * 100.0, ms(hist.value_at_quantile(q)))
                })
                .collect()
        };
        let relay = match (target.relay_pid, cost.relay_before, cost.relay_after) {
            (Some(pid), Some(a), Some(b)) => {
                let cpu = (b.cpu_secs - a.cpu_secs).max(0.0);
                Some(RelayCost {
                    pid,
                    cpu_secs: cpu,
                    cpu_share: cpu / window,
                    rss_mib: b.rss_bytes as f64 / (1 << 20) as f64,
                    cpu_us_per_frame: if delivered > 0 {
                        cpu * 1e6 / delivered as f64
                    } else {
                        0.0
                    },
                    worker_cpu_us_per_frame: if delivered > 0 {
                        (b.worker_cpu_secs - a.worker_cpu_secs).max(0.0) * 1e6 / delivered as f64
                    } else {
                        0.0
                    },
                    cpu_ms_per_mb: if bytes > 0 {
                        cpu * 1e3 / (bytes as f64 / 1e6)
                    } else {
                        0.0
                    },
                    runq_wait_share: (b.runq_wait_secs - a.runq_wait_secs).max(0.0) / window,
                })
            }
            _ => None,
        };
        let workers = load.cpus.len().max(1);
        let (client_cpu, client_wait) = match (cost.client_before, cost.client_after) {
            (Some(a), Some(b)) => (
                (b.cpu_secs - a.cpu_secs).max(0.0),
                (b.runq_wait_secs - a.runq_wait_secs).max(0.0),
            ),
            _ => (0.0, 0.0),
        };
        let share = client_cpu / (window * workers as f64);
        let wait_share = client_wait / (window * workers as f64);
        Report {
            target: target.addr.to_string(),
            load: load.clone(),
            window_secs: window,
            subscribers_total: subs.len(),
            subscribers_active: subs.iter().filter(|s| s.subscribed).count(),
            latency,
            expected_frames: expected,
            delivered_frames: delivered,
            delivered_fps: delivered as f64 / window,
            delivered_mbps: bytes as f64 * 8.0 / 1e6 / window,
            lost_frames: expected - delivered,
            lost_groups,
            publisher_stalls: stalls,
            relay,
            client: ClientCost {
                workers,
                cpus: load.cpus.clone(),
                cpu_secs: client_cpu,
                cpu_share: share,
                runq_wait_share: wait_share,
                saturated: share + wait_share >= SATURATION_SHARE,
            },
            load_avg: cost.load_avg,
            errors,
            error_count,
            cdf,
            per_second: per_second
                .into_iter()
                // The drain after the window ends in empty seconds: not a throughput drop.
                .take(last_busy + 1)
                .enumerate()
                .map(|(t, (frames, b))| Second {
                    t: t as u64,
                    frames,
                    mbps: b as f64 * 8.0 / 1e6,
                })
                .collect(),
        }
    }

    /// The human summary.
    pub fn table(&self) -> String {
        let l = &self.load;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "target {}  {} × {} subs  {} fps × {} B  group {}  {}  window {:.1}s  load avg {:.2} {:.2} {:.2}",
            self.target,
            l.publishers,
            l.subscribers,
            l.fps,
            l.frame_size,
            l.group_size,
            l.version,
            self.window_secs,
            self.load_avg[0],
            self.load_avg[1],
            self.load_avg[2]
        );
        let lat = &self.latency;
        let _ = writeln!(
            s,
            "latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  ({} samples)",
            lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.p999_ms, lat.max_ms, lat.samples
        );
        let _ = writeln!(
            s,
            "delivered   {:.0} frames/s  {:.1} Mbit/s  lost {} of {} frames, {} groups  subscribers {}/{}",
            self.delivered_fps,
            self.delivered_mbps,
            self.lost_frames,
            self.expected_frames,
            self.lost_groups,
            self.subscribers_active,
            self.subscribers_total
        );
        match &self.relay {
            Some(r) => {
                let _ = writeln!(
                    s,
                    "relay       pid {}  cpu {:.1}% of a core (+{:.0}% waiting for a cpu)  {:.2} µs/frame ({:.2} on workers)  {:.2} ms/MB  rss {:.1} MiB",
                    r.pid,
                    r.cpu_share * 100.0,
                    r.runq_wait_share * 100.0,
                    r.cpu_us_per_frame,
                    r.worker_cpu_us_per_frame,
                    r.cpu_ms_per_mb,
                    r.rss_mib
                );
            }
            None => {
                let _ = writeln!(s, "relay       (no --relay-pid: cost not sampled)");
            }
        }
        let c = &self.client;
        let _ = writeln!(
            s,
            "client      {} worker(s) on cpus {:?}  cpu {:.0}% of its share (+{:.0}% waiting for a cpu){}",
            c.workers,
            c.cpus,
            c.cpu_share * 100.0,
            c.runq_wait_share * 100.0,
            if c.saturated {
                "  CLIENT SATURATED (or starved by other load): figures may be the client's"
            } else {
                ""
            }
        );
        if self.publisher_stalls > 0 {
            let _ = writeln!(
                s,
                "publisher stalls (fell >200 ms behind): {}",
                self.publisher_stalls
            );
        }
        if self.error_count > 0 {
            let _ = writeln!(s, "errors: {}", self.error_count);
            for e in &self.errors {
                let _ = writeln!(s, "  {e}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::SubResult;
    use crate::scenario::{Load, Trust};
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        load: Load,
    }

    fn worker(hist: &[u64], groups: u64, subs: Vec<SubResult>) -> WorkerResult {
        let mut h = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap();
        for &v in hist {
            h.record(v).unwrap();
        }
        WorkerResult {
            worker: 0,
            histogram: h,
            per_second: vec![(hist.len() as u64, 4096 * hist.len() as u64), (0, 0)],
            measured_groups: vec![(0, groups)],
            subs,
            errors: Vec::new(),
            error_count: 0,
            publisher_stalls: 0,
        }
    }

    #[test]
    fn loss_counts_missing_frames_and_incomplete_groups_per_subscriber() {
        let load = Wrap::parse_from(["x", "--group-size", "10", "--duration", "1s"]).load;
        let target = Target {
            addr: "127.0.0.1:1".parse().unwrap(),
            server_name: "localhost".into(),
            path: String::new(),
            query: String::new(),
            trust: Trust::Insecure,
            relay_pid: None,
            publishers_at: None,
        };
        let timeline = Timeline::new(0, &load);
        let sub = |frames, complete| SubResult {
            broadcast: 0,
            frames,
            bytes: frames * 4096,
            complete_groups: complete,
            subscribed: true,
        };
        // 3 measured groups of 10: one subscriber got everything, one missed 4 frames of
        // one group.
        let r = Report::build(
            &load,
            &target,
            &timeline,
            vec![worker(
                &[1000, 2000, 50_000],
                3,
                vec![sub(30, 3), sub(26, 2)],
            )],
            Cost {
                relay_before: None,
                relay_after: None,
                client_before: None,
                client_after: None,
                load_avg: [0.0; 3],
            },
        );
        assert_eq!(r.expected_frames, 60);
        assert_eq!(r.delivered_frames, 56);
        assert_eq!(r.lost_frames, 4);
        assert_eq!(r.lost_groups, 1);
        assert_eq!(r.latency.samples, 3);
        assert!((r.latency.max_ms - 50.0).abs() < 0.1);
        assert_eq!(r.per_second.len(), 1, "empty drain seconds are trimmed");
        assert!(r.relay.is_none());
    }
}
