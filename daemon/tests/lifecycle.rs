//! The daemon's life under a service manager, through the real binary: READY once the
//! listen socket is bound, STOPPING on SIGTERM, a broken file on SIGHUP changes nothing.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Generous: a debug build on a loaded 2-core CI machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

struct Relay {
    child: Child,
    stderr_lines: Receiver<String>,
}

impl Relay {
    fn start(config: &std::path::Path, notify_socket: Option<&std::path::Path>) -> Relay {
        let mut command = Command::new(env!("CARGO_BIN_EXE_moq-relayd"));
        command
            .arg(config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        match notify_socket {
            Some(path) => command.env("NOTIFY_SOCKET", path),
            None => command.env_remove("NOTIFY_SOCKET"),
        };
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
    fn wait_for_line(&self, needle: &str) -> String {
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

    fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0);
    }

    fn wait_exit(mut self) -> std::process::ExitStatus {
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

fn listen_address(line: &str) -> SocketAddr {
    let start = line
        .find("udp://")
        .expect("the serving line names the address")
        + "udp://".len();
    let rest = &line[start..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    rest[..end].parse().unwrap()
}

fn recv_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let len = socket
        .recv(&mut buf)
        .expect("a notification before the timeout");
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

const CONFIG: &str = "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 1\n[auth]\npublic = \"\"\n";

#[test]
fn notifies_ready_after_bind_and_stopping_after_sigterm() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(STARTUP_TIMEOUT)).unwrap();

    let relay = Relay::start(&config, Some(&notify_path));
    let ready = recv_notification(&notify);
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");

    // READY came after the bind: the port is taken by now (no SO_REUSEPORT here).
    let addr = listen_address(&relay.wait_for_line("serving on udp://"));
    assert_ne!(addr.port(), 0);
    let err = UdpSocket::bind(addr).expect_err("the relay holds the port");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);

    relay.signal(libc::SIGTERM);
    let stopping = recv_notification(&notify);
    assert!(
        stopping.lines().any(|line| line == "STOPPING=1"),
        "{stopping:?}"
    );
    assert!(relay.wait_exit().success());
}

#[test]
fn broken_file_on_sighup_keeps_the_running_configuration() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let relay = Relay::start(&config, None);
    let addr = listen_address(&relay.wait_for_line("serving on udp://"));

    std::fs::write(&config, "[server]\nbind = 443\n").unwrap();
    relay.signal(libc::SIGHUP);
    let line = relay.wait_for_line("keeping the running configuration");
    assert!(line.contains("server.bind"), "{line}");
    assert_eq!(
        UdpSocket::bind(addr).unwrap_err().kind(),
        std::io::ErrorKind::AddrInUse
    );

    relay.signal(libc::SIGTERM);
    assert!(relay.wait_exit().success());
}
