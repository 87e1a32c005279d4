//! The daemon's life under a service manager, through the real binary: READY once the
//! listen socket is bound, STOPPING on SIGTERM, a broken file on SIGHUP changes nothing.

mod common;

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;

use common::{Relay, STARTUP_TIMEOUT, listen_address};

use tempfile::TempDir;

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

#[test]
fn losing_stderr_loses_log_lines_not_the_relay() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = TempDir::new().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_moq-relayd"))
        .arg(&config)
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("serving on udp://") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "relay exited early"
        );
    }
    drop(stderr);

    // Each SIGHUP logs a reload: writes into the closed pipe.
    for _ in 0..3 {
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the relay died when its log pipe closed"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
