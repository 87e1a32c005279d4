//! `runtime.pin`: each worker thread runs on exactly its CPU from the process's allowed set,
//! and a CPU outside that set is refused at start with an error naming it.

mod common;

use common::*;
use std::sync::{Mutex, MutexGuard};

use quic_io::{IoBackend, StartError, allowed_cpus};

/// Worker threads are found by name, so the tests of this file must not run servers at the
/// same time.
static ONE_SERVER: Mutex<()> = Mutex::new(());

fn one_server() -> MutexGuard<'static, ()> {
    ONE_SERVER.lock().unwrap_or_else(|e| e.into_inner())
}

/// The CPUs a thread of this process may run on, from `/proc/self/task/<tid>/status`,
/// keyed by thread name (`comm`).
fn thread_cpus(name: &str) -> Option<Vec<usize>> {
    for e in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(e.path().join("status")).ok()?;
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
            .trim()
            .to_string();
        return Some(parse_cpu_list(&list));
    }
    None
}

/// Parses the kernel's `0-3,6` form.
fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

#[test]
fn each_pinned_worker_runs_on_its_own_cpu_from_the_allowed_set() {
    let _one = one_server();
    let allowed = allowed_cpus();
    assert!(!allowed.is_empty());
    let mut cfg = config(allowed.len(), IoBackend::Auto);
    cfg.runtime.pin = true;
    let (server, _seen) = start(cfg);
    for (i, cpu) in allowed.iter().enumerate() {
        let got = thread_cpus(&format!("quic-worker-{i}")).expect("worker thread exists");
        assert_eq!(got, vec![*cpu], "worker {i}");
    }
    // The pinned workers still serve.
    echo_once(&server);
}

#[test]
fn pinning_follows_the_configured_cpu_order_and_wraps_around() {
    let _one = one_server();
    let allowed = allowed_cpus();
    // The last allowed CPU first: worker 0 must not simply land on the lowest CPU.
    let order: Vec<usize> = allowed.iter().rev().copied().collect();
    let workers = order.len() + 1;
    let mut cfg = config(workers, IoBackend::Auto);
    cfg.runtime.pin = true;
    cfg.runtime.cpus = order.clone();
    let (server, _seen) = start(cfg);
    for i in 0..workers {
        let got = thread_cpus(&format!("quic-worker-{i}")).expect("worker thread exists");
        assert_eq!(got, vec![order[i % order.len()]], "worker {i}");
    }
    echo_once(&server);
}

#[test]
fn unpinned_workers_keep_the_whole_allowed_set() {
    let _one = one_server();
    let allowed = allowed_cpus();
    let mut cfg = config(2, IoBackend::Auto);
    cfg.runtime.pin = false;
    let (_server, _seen) = start(cfg);
    for i in 0..2 {
        assert_eq!(
            thread_cpus(&format!("quic-worker-{i}")),
            Some(allowed.clone()),
            "worker {i}"
        );
    }
}

#[test]
fn pinning_to_a_cpu_outside_the_allowed_set_is_refused_with_the_cpu_named() {
    let _one = one_server();
    let allowed = allowed_cpus();
    let outside = allowed.iter().max().copied().unwrap_or(0) + 1;
    let mut cfg = config(1, IoBackend::Auto);
    cfg.runtime.pin = true;
    cfg.runtime.cpus = vec![outside];
    let err = match quic_io::Server::start(cfg, |_ctx| Silent) {
        Ok(_) => panic!("start must refuse CPU {outside}"),
        Err(e) => e,
    };
    match &err {
        StartError::CpuNotAllowed { cpu, allowed: a } => {
            assert_eq!(*cpu, outside);
            assert_eq!(a, &allowed);
        }
        other => panic!("wrong error: {other}"),
    }
    assert!(err.to_string().contains(&format!("CPU {outside}")), "{err}");
    assert!(
        thread_cpus("quic-worker-0").is_none(),
        "no worker may be left running after a refused start"
    );
}

/// An application that does nothing: the refused start must not get as far as using it.
struct Silent;

impl quic_io::Application<quic_io::Io<'_>> for Silent {
    fn on_event(
        &mut self,
        _now: std::time::Instant,
        _event: quic_io::Event,
        _io: &mut quic_io::Io<'_>,
    ) {
    }
    fn poll(&mut self, _now: std::time::Instant, _io: &mut quic_io::Io<'_>) {}
    fn timeout(&self) -> Option<std::time::Instant> {
        None
    }
}

fn echo_once(server: &quic_io::ServerHandle) {
    let addr = server.local_addr();
    let fp = server.fingerprint();
    runtime().block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let ep = client_endpoint();
            let conn = connect_moq05(&ep, &fp, addr).await;
            assert_eq!(quic_echo(&conn, b"pinned").await, b"pinned");
            conn.close(0u32.into(), b"");
        })
        .await
        .expect("test finished in time");
    });
}
