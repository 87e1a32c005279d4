//! relay-bench: a MoQ (moq-lite) load generator and latency meter that works against any
//! moq-lite relay. P publishers each publish one broadcast at a fixed frame rate; S
//! subscribers per broadcast receive it; every frame carries its send time on the host's
//! monotonic clock, so receive − send is the one-way latency through the relay. The client
//! runs on our own quic-io stack with one pinned worker per CPU it is given, and reports
//! when it was itself the bottleneck.
//!
//! This crate owns the client, the measurement and its presentation (table, JSON, PNG);
//! it must never contain relay logic, and a failing publisher or subscriber must never
//! hang a run: every phase has a deadline and a named error.
//!
//! The binary (`relay-bench`) and the CI smoke test call [`run`].

pub mod client;
pub mod clock;
pub mod frame;
pub mod plot;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod spawn;
pub mod tls;

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use client::{BenchWorker, Role, Shared, WorkerResult};
use clock::{Epoch, now_ns};
pub use report::Report;
pub use scenario::{Load, Target, Timeline, TransportKind, Trust};

/// Time allowed after the scenario's end for workers to report; a worker silent past it is
/// an error, never a hang.
const REPORT_GRACE: Duration = Duration::from_secs(10);
/// Time from the call to the first connection: lets every client worker start.
const START_DELAY: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("not implemented: {0}")]
    Unsupported(&'static str),
    #[error("client worker {worker} failed to start: {reason}")]
    ClientStart { worker: usize, reason: String },
    #[error("client workers {0:?} did not report within {REPORT_GRACE:?} of the scenario's end")]
    NoReport(Vec<usize>),
    #[error("relay command: {0}")]
    Spawn(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs one scenario against `target` and measures it. Blocks for ramp-up + warm-up +
/// duration + drain.
pub fn run(load: &Load, target: &Target) -> Result<Report, BenchError> {
    load.validate()?;
    let workers = load.cpus.len().max(1);
    let mut ccfg = quic_io::Config::new(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| BenchError::Config("loopback address".into()))?,
    );
    ccfg.runtime.workers = 1;
    // One group stream per group per subscription arrives at once at most a few at a time;
    // the default (1024) is far above that.
    let alpn = match load.transport {
        TransportKind::Quic => load.version.alpn(),
        TransportKind::Webtransport => "h3",
    };
    let tls = tls::client_config(&target.trust, alpn, &ccfg)?;
    let publish_tls = target
        .publishers_at
        .as_ref()
        .map(|publishers| tls::client_config(&publishers.trust, alpn, &ccfg))
        .transpose()?;

    let epoch = Epoch::now();
    let start = epoch.ns() + START_DELAY.as_nanos() as u64;
    let timeline = Timeline::new(start, load);
    let shared = Arc::new(Shared {
        load: load.clone(),
        target: target.clone(),
        timeline,
        epoch,
        tls,
        publish_tls,
    });

    // Publishers first (all at `start`), then subscribers spread over the ramp, dealt to
    // workers round-robin.
    let mut plans: Vec<Vec<(u64, Role)>> = vec![Vec::new(); workers];
    let mut n = 0usize;
    for b in 0..load.publishers {
        plans[n % workers].push((start, Role::Publisher(b)));
        n += 1;
    }
    let subs = load.publishers * load.subscribers;
    let ramp = load.ramp_up.as_nanos() as u64;
    // Subscribers start after a tenth of the ramp so the publishers are announced first.
    let sub_start = start + ramp / 10;
    let sub_span = ramp - ramp / 10;
    for i in 0..subs {
        let due = sub_start + sub_span * i as u64 / subs.max(1) as u64;
        plans[n % workers].push((due, Role::Subscriber(i % load.publishers)));
        n += 1;
    }

    let (tx, rx) = mpsc::sync_channel::<WorkerResult>(workers);
    let mut servers = Vec::with_capacity(workers);
    for (w, plan) in plans.into_iter().enumerate() {
        let mut cfg = ccfg.clone();
        if let Some(&cpu) = load.cpus.get(w) {
            cfg.runtime.pin = true;
            cfg.runtime.cpus = vec![cpu];
        }
        let slot = Mutex::new(Some((plan, tx.clone())));
        let shared = shared.clone();
        let handle = quic_io::Server::start(cfg, move |_ctx| {
            let (plan, tx) = slot
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .unwrap_or_else(|| (Vec::new(), mpsc::sync_channel(1).0));
            BenchWorker::new(shared.clone(), w, plan, tx)
        })
        .map_err(|e| BenchError::ClientStart {
            worker: w,
            reason: e.to_string(),
        })?;
        servers.push(handle);
    }
    drop(tx);
    for s in &servers {
        for waker in s.wakers() {
            waker.wake();
        }
    }

    // Cost samples at the window's edges.
    let me = std::process::id();
    sleep_until(&epoch, timeline.t0);
    let relay_before = target.relay_pid.and_then(procstat::sample_tree);
    let client_before = procstat::sample(me);
    sleep_until(&epoch, timeline.t1);
    let relay_after = target.relay_pid.and_then(procstat::sample_tree);
    let client_after = procstat::sample(me);
    let load_avg = procstat::load_average();

    let deadline = epoch.instant_at(timeline.end) + REPORT_GRACE;
    let mut results = Vec::with_capacity(workers);
    while results.len() < workers {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => results.push(r),
            Err(_) => break,
        }
    }
    let missing: Vec<usize> = (0..workers)
        .filter(|w| !results.iter().any(|r| r.worker == *w))
        .collect();
    // Let the CONNECTION_CLOSEs go out before the sockets close.
    std::thread::sleep(Duration::from_millis(100));
    for s in servers {
        s.shutdown();
    }
    if !missing.is_empty() {
        return Err(BenchError::NoReport(missing));
    }
    let cost = report::Cost {
        relay_before,
        relay_after,
        client_before,
        client_after,
        load_avg,
    };
    Ok(Report::build(load, target, &timeline, results, cost))
}

fn sleep_until(epoch: &Epoch, ns: u64) {
    let at = epoch.instant_at(ns);
    let now = std::time::Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
    debug_assert!(now_ns() + 1_000_000 >= ns);
}
