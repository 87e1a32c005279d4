//! One viewer held to 1 Mbit/s by the kernel's `tbf` on a ~3.9 Mbit/s track, through the
//! real binary: its old groups are reset as stale (counted), while the publisher and the
//! direct subscribers lose nothing and wait no longer, and the relay's memory stays
//! bounded. The test runs in a network namespace of its own (made with `unshare`, gone
//! with the test), whose loopback carries an `htb` qdisc that sends the viewer's packets
//! through `tbf`; where namespaces are refused it is skipped with the reason printed.

mod common;

use std::process::Command;

use common::http::start;

/// The viewer's cap, and the queue tbf keeps before it drops.
const CAP: &str = "1mbit";
const CAP_QUEUE: &str = "64kb";

fn sh(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|err| format!("{program}: {err}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Moves this thread (and what it starts from now on) into a new network namespace
/// with its loopback up; the reason when that is refused.
fn private_network() -> Result<(), String> {
    // SAFETY: unshare(2) with a namespace flag: it changes only this thread's namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    sh("ip", &["link", "set", "lo", "up"])?;
    // Everything in class 1:10 (uncapped); the viewer's packets go to 1:30, through tbf.
    // (This kernel has htb and tbf; prio and netem are not built.)
    for args in [
        "qdisc add dev lo root handle 1: htb default 10",
        "class add dev lo parent 1: classid 1:10 htb rate 10gbit quantum 200000",
        "class add dev lo parent 1: classid 1:30 htb rate 10gbit quantum 200000",
    ] {
        sh("tc", &args.split(' ').collect::<Vec<_>>())?;
    }
    sh(
        "tc",
        &[
            "qdisc", "add", "dev", "lo", "parent", "1:30", "handle", "30:", "tbf", "rate", CAP,
            "burst", "16kb", "limit", CAP_QUEUE,
        ],
    )
}

/// Sends what goes to UDP port `port` on loopback through the capped band.
fn cap_port(port: u16) {
    let port = port.to_string();
    sh(
        "tc",
        &[
            "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
            "match", "ip", "dport", &port, "0xffff", "flowid", "1:30",
        ],
    )
    .expect("tc filter");
}

/// tbf's `dropped` and `overlimits` counts.
fn tbf_counts() -> String {
    let out = Command::new("tc")
        .args(["-s", "qdisc", "show", "dev", "lo"])
        .output()
        .expect("tc -s");
    let text = String::from_utf8_lossy(&out.stdout);
    let tbf = text
        .split("qdisc ")
        .find(|q| q.starts_with("tbf"))
        .expect("tbf");
    tbf.lines()
        .find(|l| l.contains("dropped"))
        .unwrap_or("")
        .trim()
        .to_owned()
}

#[test]
fn a_viewer_capped_by_tbf_loses_old_groups_alone() {
    if let Err(why) = private_network() {
        eprintln!("skipped: no private network namespace with tbf here: {why}");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(capped_viewer());
}

async fn capped_viewer() {
    let relay = start(common::held_back::CONFIG);
    let outcome = common::held_back::run(&relay, relay.quic, cap_port).await;
    let tbf = tbf_counts();
    eprintln!(
        "tbf-capped viewer: {} of {} groups; relay expired {} groups; direct p99 {:?}; relay \
         peak RSS {} MiB; tbf {tbf}",
        outcome.viewer_groups,
        common::held_back::TRACK_GROUPS,
        outcome.expired,
        outcome.direct_p99,
        outcome.peak_rss >> 20,
    );
    outcome.assert_held_back_alone();
    assert!(!tbf.contains("overlimits 0 "), "tbf held the viewer: {tbf}");
}
