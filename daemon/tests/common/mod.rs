//! Starting the real `moq-relayd` binary for integration tests and reading its log.
#![allow(dead_code)]

pub mod bare;
pub mod cluster;
pub mod decider;
pub mod flow;
pub mod held_back;
pub mod http;
pub mod pki;
pub mod scrape;
pub mod sessions;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Generous: a debug build on a loaded 2-core CI machine.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Relay {
    child: Child,
    stderr_lines: Receiver<String>,
}

impl Relay {
    pub fn start(config: &std::path::Path, notify_socket: Option<&std::path::Path>) -> Relay {
        let mut command = Command::new(env!("CARGO_BIN_EXE_moq-relayd"));
        command.arg(config);
        match notify_socket {
            Some(path) => command.env("NOTIFY_SOCKET", path),
            None => command.env_remove("NOTIFY_SOCKET"),
        };
        Self::spawn(command)
    }

    /// Runs `command` (the relay binary with its arguments) with its stderr read here.
    pub fn spawn(mut command: Command) -> Relay {
        command
            .env(
                "RUST_LOG",
                std::env::var("RELAY_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, stderr_lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("relay: {line}");
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Relay {
            child,
            stderr_lines,
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no log line containing {needle:?} within {STARTUP_TIMEOUT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("relay exited before logging {needle:?}")
                }
            }
        }
    }

    /// The log lines not yet read by `wait_for_line`, without waiting.
    pub fn lines_so_far(&self) -> Vec<String> {
        self.stderr_lines.try_iter().collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0);
    }

    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill().ok();
        panic!("relay did not exit within {STARTUP_TIMEOUT:?}");
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A process's resident memory in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("relay status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

pub fn listen_address(line: &str) -> SocketAddr {
    let start = line
        .find("udp://")
        .expect("the serving line names the address")
        + "udp://".len();
    let rest = &line[start..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    rest[..end].parse().unwrap()
}

/// The certificate hash a log line names (`certificate_sha256=HEX`).
pub fn fingerprint_in(line: &str) -> String {
    line.split("certificate_sha256=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no certificate_sha256= in {line:?}"))
        .to_owned()
}

/// A relay started from config text, with the address and certificate it logged.
pub struct Running {
    pub relay: Relay,
    pub addr: SocketAddr,
    pub fingerprint: String,
    _dir: tempfile::TempDir,
}

impl Running {
    pub fn start(config: &str) -> Running {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, config).unwrap();
        let relay = Relay::start(&path, None);
        let addr = listen_address(&relay.wait_for_line("serving on udp://"));
        let fingerprint = fingerprint_in(&relay.wait_for_line("certificate_sha256="));
        Running {
            relay,
            addr,
            fingerprint,
            _dir: dir,
        }
    }

    /// WebTransport URL for a connection path.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Raw QUIC URL for a connection path.
    pub fn quic_url(&self, path: &str) -> String {
        format!("moql://{}/{}", self.addr, path.trim_start_matches('/'))
    }
}
