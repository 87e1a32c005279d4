//! The relay with both HTTP listeners, and a minimal HTTP/1.1 client for its routes (one
//! request per connection, read to the end), for the tests of the control listeners.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{Relay, fingerprint_in};

/// The relay, its QUIC address, its two HTTP listeners and the fingerprint it logged.
pub struct Ops {
    pub relay: Relay,
    pub quic: SocketAddr,
    pub web: SocketAddr,
    pub internal: SocketAddr,
    pub fingerprint: String,
    pub dir: TempDir,
}

pub fn address_after(line: &str, marker: &str) -> SocketAddr {
    let start = line.find(marker).expect("marker in line") + marker.len();
    let rest = &line[start..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    rest[..end].parse().unwrap()
}

pub fn start(config: &str) -> Ops {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, config).unwrap();
    let relay = Relay::start(&path, None);
    // The lines come in this order: serving, web, internal, then the fingerprint.
    let quic = address_after(&relay.wait_for_line("serving on udp://"), "udp://");
    let web = address_after(
        &relay.wait_for_line("web HTTP listening on http://"),
        "http://",
    );
    let internal = address_after(
        &relay.wait_for_line("internal HTTP listening on http://"),
        "http://",
    );
    let fingerprint = fingerprint_in(&relay.wait_for_line("certificate_sha256="));
    Ops {
        relay,
        quic,
        web,
        internal,
        fingerprint,
        dir,
    }
}

pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse(&raw)
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path)
}

pub fn parse(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a complete response head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Polls `probe` every 50 ms until it answers, for at most 10 s.
pub fn wait_until<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}
