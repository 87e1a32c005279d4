//! CPU time and memory of a process (and of the processes it started) read from /proc.
//! It owns parsing of `/proc/<pid>/stat` and `/proc/<pid>/status`; it must never signal or
//! otherwise touch the processes it reads.

use std::fs;

/// One reading of a process tree's cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// utime + stime of every thread, seconds.
    pub cpu_secs: f64,
    /// Resident set, bytes.
    pub rss_bytes: u64,
    /// Time its threads were runnable but waiting for a CPU (schedstat), seconds: high
    /// means the machine, not the process, set the pace.
    pub runq_wait_secs: f64,
    /// Run time of the threads named `quic-worker-*` (moq-relayd's data path), from
    /// schedstat in nanoseconds, so a small change is not lost in 10 ms ticks; 0 for
    /// relays without such threads.
    pub worker_cpu_secs: f64,
}

/// Reads `/proc/<pid>/stat` and `status`. None when the process is gone.
pub fn sample(pid: u32) -> Option<Sample> {
    let (_, cpu_ticks) = stat(pid)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Some(Sample {
        cpu_secs: cpu_ticks as f64 / ticks_per_sec(),
        rss_bytes: rss_kib * 1024,
        runq_wait_secs: schedstat_field_ns(pid, 1, |_| true) as f64 / 1e9,
        worker_cpu_secs: schedstat_field_ns(pid, 0, |name| name.starts_with(WORKER_THREAD)) as f64
            / 1e9,
    })
}

/// The name prefix of moq-relayd's worker threads.
const WORKER_THREAD: &str = "quic-worker";

/// Threads of one process read for schedstat; far above any relay's.
const MAX_THREADS_SCANNED: usize = 4_096;

/// Sum of one field of `/proc/<pid>/task/<tid>/schedstat` (0: run time, 1: run-queue
/// wait) over the process's threads whose name passes `named`; 0 when schedstats are
/// unavailable.
fn schedstat_field_ns(pid: u32, field: usize, named: impl Fn(&str) -> bool) -> u64 {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .take(MAX_THREADS_SCANNED)
        .filter(|e| {
            fs::read_to_string(e.path().join("comm")).is_ok_and(|name| named(name.trim_end()))
        })
        .filter_map(|e| fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|t| t.split_whitespace().nth(field)?.parse::<u64>().ok())
        .sum()
}

/// `pid` and every live descendant summed: a relay started through `sh -c` or `taskset`
/// is costed whole.
pub fn sample_tree(pid: u32) -> Option<Sample> {
    let mut total = sample(pid)?;
    for child in descendants(pid) {
        if let Some(s) = sample(child) {
            total.cpu_secs += s.cpu_secs;
            total.rss_bytes += s.rss_bytes;
            total.runq_wait_secs += s.runq_wait_secs;
            total.worker_cpu_secs += s.worker_cpu_secs;
        }
    }
    Some(total)
}

/// Parent pid and utime+stime ticks from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// Upper bound on processes scanned in /proc when looking for descendants.
const MAX_PROCS_SCANNED: usize = 65_536;

fn descendants(root: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(Result::ok)
        .take(MAX_PROCS_SCANNED)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| stat(pid).map(|(ppid, _)| (pid, ppid)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == p && pid != root && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// The 1-, 5- and 15-minute load averages, for printing next to figures.
pub fn load_average() -> [f64; 3] {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_cpu_time_and_resident_memory() {
        // Burn a little CPU so the tick counter is not zero.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.cpu_secs > 0.0);
        assert!(s.rss_bytes > 0);
    }

    #[test]
    fn missing_process_reads_as_none() {
        assert_eq!(sample(u32::MAX), None);
    }
}
