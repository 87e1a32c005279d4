//! `relay-bench`: command line around [`benches::run`]. `run` measures one scenario against
//! a relay given by URL or started by command; `compare` runs the same scenario against two
//! relay commands interleaved A B A B and prints the ratios; `saturate` searches the largest
//! subscriber count whose p99 stays under a bound. It owns argument handling and output
//! files only; it must never measure anything itself.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use benches::spawn::SpawnedRelay;
use benches::{Load, Report, Target, Trust};
use clap::{Args, Parser, Subcommand};

/// Runs of a comparison; each spawns its relay, so this bounds the relays started.
const MAX_ROUNDS: usize = 20;
/// Runs of a saturation search.
const MAX_SEARCH_STEPS: usize = 8;

#[derive(Debug, Parser)]
#[command(
    name = "relay-bench",
    version,
    about = "moq-lite relay latency and load benchmark"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// One scenario against one relay.
    Run(RunArgs),
    /// The same scenario against two relays started by command, interleaved A B A B.
    Compare(CompareArgs),
    /// Largest --subscribers (per broadcast) whose p99 latency stays under --p99-ms with no loss.
    Saturate(SaturateArgs),
}

#[derive(Debug, Args)]
struct TargetArgs {
    /// moql://HOST:PORT[/PATH] (raw QUIC) or https://… (WebTransport).
    #[arg(long, conflicts_with = "spawn")]
    connect: Option<String>,
    /// Start the relay with `sh -c CMD`, `{port}` replaced by a free UDP port; stopped after.
    #[arg(long)]
    spawn: Option<String>,
    /// Connection path for a spawned relay.
    #[arg(long, default_value = "")]
    path: String,
    /// Pin the relay's certificate: SHA-256 hex.
    #[arg(long, conflicts_with = "insecure")]
    fingerprint: Option<String>,
    /// Accept any certificate (loopback only; implied by --spawn without --fingerprint).
    #[arg(long)]
    insecure: bool,
    /// Sample this process's CPU and RSS (with its children) over the measured window.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// Publishers dial this relay instead (same transport), subscribers `--connect`:
    /// latency through a chain of linked relays.
    #[arg(long, requires = "connect")]
    publish_connect: Option<String>,
    /// Pin the publishers' relay's certificate (else the `--insecure` choice applies).
    #[arg(long, requires = "publish_connect")]
    publish_fingerprint: Option<String>,
}

#[derive(Debug, Args)]
struct Output {
    /// Write the report as JSON here ("-" = stdout, instead of the table).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the latency CDF and throughput over time into this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    load: Load,
    #[command(flatten)]
    out: Output,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// Command for relay A (e.g. moq-relayd), with {port}.
    #[arg(long)]
    a: String,
    /// Command for relay B, with {port}.
    #[arg(long)]
    b: String,
    #[arg(long, default_value = "A")]
    a_name: String,
    #[arg(long, default_value = "B")]
    b_name: String,
    /// Rounds of A then B.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    #[arg(long, default_value = "")]
    path: String,
    #[command(flatten)]
    load: Load,
    #[command(flatten)]
    out: Output,
}

#[derive(Debug, Args)]
struct SaturateArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    load: Load,
    /// Latency bound.
    #[arg(long, default_value_t = 50.0)]
    p99_ms: f64,
    /// Largest subscriber count tried.
    #[arg(long, default_value_t = 2000)]
    max: usize,
    #[command(flatten)]
    out: Output,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Run(a) => run(a),
        Cmd::Compare(a) => compare(a),
        Cmd::Saturate(a) => saturate(a),
    }
}

/// A target, and the relay process when we started it (stopped on drop).
fn resolve(t: &TargetArgs, load: &mut Load) -> anyhow::Result<(Target, Option<SpawnedRelay>)> {
    let trust = match (&t.fingerprint, t.insecure || t.spawn.is_some()) {
        (Some(fp), _) => Trust::Fingerprint(fp.clone()),
        (None, true) => Trust::Insecure,
        (None, false) => bail!("give --fingerprint HEX, or --insecure for a loopback relay"),
    };
    if let Some(cmd) = &t.spawn {
        let relay = SpawnedRelay::start(cmd)?;
        let target = Target {
            addr: relay.addr,
            server_name: "localhost".into(),
            path: t.path.clone(),
            query: String::new(),
            trust,
            relay_pid: Some(relay.pid()),
            publishers_at: None,
        };
        return Ok((target, Some(relay)));
    }
    let Some(url) = &t.connect else {
        bail!("give --connect URL or --spawn CMD");
    };
    let (mut target, transport) = Target::from_url(url, trust)?;
    load.transport = transport;
    target.relay_pid = t.relay_pid;
    if let Some(url) = &t.publish_connect {
        let trust = match (&t.publish_fingerprint, t.insecure) {
            (Some(fp), _) => Trust::Fingerprint(fp.clone()),
            (None, true) => Trust::Insecure,
            (None, false) => bail!("give --publish-fingerprint HEX, or --insecure"),
        };
        let (publishers, publish_transport) = Target::from_url(url, trust)?;
        if publish_transport != transport {
            bail!("--publish-connect must use the same transport as --connect");
        }
        target.publishers_at = Some(Box::new(publishers));
    }
    Ok((target, None))
}

fn emit(out: &Output, reports: &[(String, &Report)]) -> anyhow::Result<()> {
    let to_stdout = out.json.as_deref() == Some(std::path::Path::new("-"));
    if !to_stdout {
        for (label, r) in reports {
            println!("== {label}\n{}", r.table());
        }
    }
    if let Some(path) = &out.json {
        let value: Vec<_> = reports
            .iter()
            .map(|(l, r)| serde_json::json!({"label": l, "report": r}))
            .collect();
        let text = if value.len() == 1 {
            serde_json::to_string_pretty(&value[0])?
        } else {
            serde_json::to_string_pretty(&value)?
        };
        if to_stdout {
            println!("{text}");
        } else {
            std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
        }
    }
    if let Some(path) = &out.plot {
        benches::plot::draw(path, reports)?;
    }
    Ok(())
}

fn run(mut a: RunArgs) -> anyhow::Result<()> {
    let (target, relay) = resolve(&a.target, &mut a.load)?;
    let report = benches::run(&a.load, &target)?;
    drop(relay);
    let label = format!("{} subs/broadcast", a.load.subscribers);
    emit(&a.out, &[(label, &report)])
}

fn compare(a: CompareArgs) -> anyhow::Result<()> {
    if a.rounds == 0 || a.rounds > MAX_ROUNDS {
        bail!("--rounds must be 1..={MAX_ROUNDS}");
    }
    let mut runs: Vec<(String, Report)> = Vec::new();
    for round in 0..a.rounds {
        for (name, cmd) in [(&a.a_name, &a.a), (&a.b_name, &a.b)] {
            let mut load = a.load.clone();
            let t = TargetArgs {
                connect: None,
                spawn: Some(cmd.clone()),
                path: a.path.clone(),
                fingerprint: None,
                insecure: true,
                relay_pid: None,
                publish_connect: None,
                publish_fingerprint: None,
            };
            let (target, relay) = resolve(&t, &mut load)?;
            let report = benches::run(&load, &target)
                .with_context(|| format!("{name} round {}", round + 1))?;
            drop(relay);
            eprintln!(
                "{name} round {}: p50 {:.2} ms p99 {:.2} ms lost {}",
                round + 1,
                report.latency.p50_ms,
                report.latency.p99_ms,
                report.lost_frames
            );
            runs.push((format!("{name} #{}", round + 1), report));
            // Let the port and the CPU settle between relays.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let labelled: Vec<(String, &Report)> = runs.iter().map(|(l, r)| (l.clone(), r)).collect();
    emit(&a.out, &labelled)?;
    println!("{}", ratios(&a.a_name, &a.b_name, &runs));
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|x, y| x.total_cmp(y));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Median of each figure per relay, and B / A.
fn ratios(a: &str, b: &str, runs: &[(String, Report)]) -> String {
    type Pick = fn(&Report) -> f64;
    let figures: [(&str, Pick); 10] = [
        ("p50 ms", |r| r.latency.p50_ms),
        ("p90 ms", |r| r.latency.p90_ms),
        ("p99 ms", |r| r.latency.p99_ms),
        ("max ms", |r| r.latency.max_ms),
        ("delivered frames/s", |r| r.delivered_fps),
        ("lost frames", |r| r.lost_frames as f64),
        ("relay CPU µs/frame", |r| {
            r.relay.as_ref().map_or(f64::NAN, |c| c.cpu_us_per_frame)
        }),
        ("relay worker-thread CPU µs/frame", |r| {
            r.relay
                .as_ref()
                .map_or(f64::NAN, |c| c.worker_cpu_us_per_frame)
        }),
        ("relay CPU % of a core", |r| {
            r.relay.as_ref().map_or(f64::NAN, |c| c.cpu_share * 100.0)
        }),
        ("relay RSS MiB", |r| {
            r.relay.as_ref().map_or(f64::NAN, |c| c.rss_mib)
        }),
    ];
    let of = |name: &str, f: Pick| {
        median(
            runs.iter()
                .filter(|(l, _)| l.starts_with(&format!("{name} #")))
                .map(|(_, r)| f(r))
                .collect(),
        )
    };
    let mut s =
        format!("| figure (median of rounds) | {a} | {b} | {b} / {a} |\n|---|---|---|---|\n");
    for (name, f) in figures {
        let (x, y) = (of(a, f), of(b, f));
        let ratio = if x > 0.0 && x.is_finite() && y.is_finite() {
            format!("{:.2}", y / x)
        } else {
            "–".to_owned()
        };
        s += &format!("| {name} | {x:.2} | {y:.2} | {ratio} |\n");
    }
    s
}

fn saturate(mut a: SaturateArgs) -> anyhow::Result<()> {
    let (target, _relay) = resolve(&a.target, &mut a.load)?;
    let ok = |r: &Report, bound: f64| {
        r.latency.p99_ms < bound && r.lost_frames == 0 && r.error_count == 0
    };
    let mut good: Option<(usize, Report)> = None;
    let mut bad: Option<usize> = None;
    let mut n = a.load.subscribers.max(1);
    for _ in 0..MAX_SEARCH_STEPS {
        let mut load = a.load.clone();
        load.subscribers = n;
        let r = benches::run(&load, &target)?;
        let pass = ok(&r, a.p99_ms);
        eprintln!(
            "{n} subscribers: p99 {:.2} ms lost {} errors {} client cpu {:.0}% -> {}",
            r.latency.p99_ms,
            r.lost_frames,
            r.error_count,
            r.client.cpu_share * 100.0,
            if pass { "ok" } else { "over" }
        );
        if pass {
            good = Some((n, r));
        } else {
            bad = Some(n);
        }
        let lo = good.as_ref().map_or(0, |(g, _)| *g);
        let next = match bad {
            None => (n * 2).min(a.max),
            Some(hi) => lo + (hi - lo) / 2,
        };
        // Stop when the bracket is within 10 % or cannot move.
        if next == n || next <= lo || bad.is_some_and(|hi| (hi - lo) * 10 <= hi) {
            break;
        }
        n = next;
    }
    match good {
        Some((n, r)) => {
            println!(
                "highest subscriber count with p99 < {} ms and no loss: {n}",
                a.p99_ms
            );
            emit(&a.out, &[(format!("{n} subs (saturation)"), &r)])
        }
        None => bail!(
            "even {} subscribers missed p99 < {} ms",
            a.load.subscribers,
            a.p99_ms
        ),
    }
}
