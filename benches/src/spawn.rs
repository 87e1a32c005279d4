//! Starting a relay for a run from a shell command: pick a free loopback UDP port, put it
//! into the command for `{port}`, start it in its own process group, wait until the port
//! is bound, and stop the whole group afterwards. It owns only processes it started; it
//! must never signal anything else.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::BenchError;

/// A relay that does not bind its port within this is reported as failed.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a relay gets to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SpawnedRelay {
    child: Child,
    pub addr: SocketAddr,
}

impl SpawnedRelay {
    /// Runs `sh -c COMMAND` with `{port}` replaced by a free port.
    pub fn start(command: &str) -> Result<SpawnedRelay, BenchError> {
        let port = free_udp_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let cmd = command.replace("{port}", &port.to_string());
        let mut child = std::os::unix::process::CommandExt::process_group(
            Command::new("sh").arg("-c").arg(&cmd).stdin(Stdio::null()),
            0,
        )
        .spawn()
        .map_err(|e| BenchError::Spawn(format!("{cmd}: {e}")))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(BenchError::Spawn(format!("{cmd}: exited with {status}")));
            }
            if udp_port_bound(port) {
                break;
            }
            if Instant::now() > deadline {
                let mut relay = SpawnedRelay { child, addr };
                relay.stop();
                return Err(BenchError::Spawn(format!(
                    "{cmd}: port {port} not bound within {READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Bound is not yet serving for every relay (keys, workers): a short grace.
        std::thread::sleep(Duration::from_millis(500));
        Ok(SpawnedRelay { child, addr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM to the process group, SIGKILL after a grace, then reap.
    pub fn stop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group we created for this child.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // SAFETY: as above; anything left in the group goes too.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for SpawnedRelay {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn free_udp_port() -> Result<u16, BenchError> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|source| BenchError::Io {
        what: "probe a free UDP port".into(),
        source,
    })?;
    s.local_addr()
        .map(|a| a.port())
        .map_err(|source| BenchError::Io {
            what: "probe a free UDP port".into(),
            source,
        })
}

/// Whether anything has a UDP socket bound to `port` (IPv4 or IPv6), from /proc/net.
pub fn udp_port_bound(port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|p| {
        std::fs::read_to_string(p)
            .map(|t| {
                t.lines().skip(1).any(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|local| format!("{local} ").ends_with(&needle))
                })
            })
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_socket_is_seen_in_proc_net_udp() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        assert!(udp_port_bound(port));
        drop(s);
        assert!(!udp_port_bound(port));
    }

    #[test]
    fn command_that_exits_is_reported_not_waited_for() {
        let err = SpawnedRelay::start("exit 3").err().expect("must fail");
        assert!(err.to_string().contains("exited"), "{err}");
    }
}
