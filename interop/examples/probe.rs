//! Manual smoke test against any relay, or a reference relay to point tools at.
//!
//! ```text
//! cargo run -p interop --example probe -- https://127.0.0.1:4443/anon --fingerprint HEX
//! cargo run -p interop --example probe -- moql://127.0.0.1:4443/anon --insecure --version moq-lite-04
//! cargo run -p interop --example probe -- --reference --bind 127.0.0.1:4443 --seconds 600
//! ```
//!
//! Probe mode dials a publisher and a subscriber, prints the negotiated version, sends
//! `--groups` groups (default 20) of 3 frames and prints each group's one-way latency
//! through the relay (same process, same clock).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use interop::reference_relay::{self, RelayConfig};
use interop::{Bytes, ConnectOptions, RELAY_VERSIONS, TlsTrust, TrackEvent, connect_with};

/// Upper bound on `--groups`, so a typo cannot start an endless run.
const MAX_GROUPS: u64 = 100_000;
/// Upper bound on `--seconds` for the reference relay (one day).
const MAX_SECONDS: u64 = 86_400;

struct Args {
    url: Option<String>,
    trust: TlsTrust,
    versions: Vec<String>,
    groups: u64,
    reference: bool,
    bind: SocketAddr,
    seconds: u64,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        url: None,
        trust: TlsTrust::InsecureSkipVerify,
        versions: Vec::new(),
        groups: 20,
        reference: false,
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        seconds: 600,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--fingerprint" => args.trust = TlsTrust::Fingerprint(value("--fingerprint")?),
            "--insecure" => args.trust = TlsTrust::InsecureSkipVerify,
            "--version" => args.versions.push(value("--version")?),
            "--groups" => {
                args.groups = value("--groups")?
                    .parse::<u64>()
                    .map_err(|e| e.to_string())?
                    .min(MAX_GROUPS)
            }
            "--reference" => args.reference = true,
            "--bind" => args.bind = value("--bind")?.parse().map_err(|e| format!("{e}"))?,
            "--seconds" => {
                args.seconds = value("--seconds")?
                    .parse::<u64>()
                    .map_err(|e| e.to_string())?
                    .min(MAX_SECONDS)
            }
            url if !url.starts_with("--") => args.url = Some(url.to_owned()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let args = parse()?;

    if args.reference {
        let versions: Vec<&str> = match args.versions.is_empty() {
            true => RELAY_VERSIONS.to_vec(),
            false => args.versions.iter().map(String::as_str).collect(),
        };
        let relay =
            reference_relay::start_with(RelayConfig::new(args.bind).with_versions(&versions))
                .await?;
        println!("reference relay on {} ({versions:?})", relay.local_addr());
        println!("fingerprint {}", relay.fingerprint());
        println!("{}  {}", relay.https_url("anon"), relay.quic_url("anon"));
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        return Ok(());
    }

    let url = args.url.ok_or("give a relay URL, or --reference")?;
    let versions: Vec<&str> = args.versions.iter().map(String::as_str).collect();
    let options = ConnectOptions::new(args.trust).with_versions(&versions);
    let publisher = connect_with(&url, options.clone().publish_only()).await?;
    let subscriber = connect_with(&url, options.subscribe_only("probe")).await?;
    println!(
        "connected: {:?} {:?}",
        publisher.transport(),
        publisher.version_name()
    );

    let path = format!("probe/{}", std::process::id());
    let (_broadcast, mut tracks) = publisher.publish(&path, &["t"])?;
    let track = tracks.pop().ok_or("no track")?;
    let mut sub = subscriber.subscribe(&path, "t").await?;

    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut latencies = Vec::new();
    for group in 0..args.groups {
        sent.insert(group, Instant::now());
        track.write_group((0..3).map(|frame| Bytes::from(format!("{group}:{frame}"))))?;
        // One group in flight at a time: a pre-06 subscription starts at the newest
        // group, and this measures latency, not throughput.
        loop {
            match sub.next().await? {
                TrackEvent::GroupEnd { group: g, frames } => {
                    if let Some(at) = sent.remove(&g) {
                        latencies.push(at.elapsed());
                    }
                    if frames != 3 {
                        println!("group {g}: {frames} frames");
                    }
                    break;
                }
                TrackEvent::GroupReset {
                    group: g, reason, ..
                } => {
                    println!("group {g} reset: {reason}");
                    break;
                }
                TrackEvent::End(end) => return Err(format!("track ended: {end:?}").into()),
                TrackEvent::Frame(_) => {}
            }
        }
    }
    latencies.sort();
    if let (Some(min), Some(max)) = (latencies.first(), latencies.last()) {
        let median = latencies[latencies.len() / 2];
        println!(
            "{} groups: latency min {min:?} median {median:?} max {max:?}",
            latencies.len()
        );
    }
    track.finish()?;
    publisher.close().await;
    subscriber.close().await;
    Ok(())
}
