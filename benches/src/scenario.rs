//! What one benchmark run does: the load shape (publishers, subscribers, frame rate and
//! size, group size), its phases (ramp-up, warm-up, measured window, drain), the target and
//! how to trust it, and the client's CPUs. It owns validation and the timeline; it must
//! never open sockets.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use proto::Version;

use crate::BenchError;

/// Upper bounds that keep one run inside this machine's means; beyond them the run is
/// refused rather than left to exhaust memory or ports.
pub const MAX_PUBLISHERS: usize = 1_000;
/// Sessions one run opens in total (publishers + subscribers): one UDP flow each.
pub const MAX_SESSIONS: usize = 10_000;
pub const MAX_FPS: u32 = 10_000;
/// A frame must fit the relay's frame limits with room; 1 MiB is far above video frames.
pub const MAX_FRAME_SIZE: usize = 1 << 20;
pub const MAX_DURATION: Duration = Duration::from_secs(3_600);

/// How the client talks to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Raw QUIC, ALPN = the moq-lite version.
    Quic,
    /// WebTransport over HTTP/3 (ALPN `h3`); the moq-lite version is the `wt-protocol`.
    Webtransport,
}

/// How the relay's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// SHA-256 of the leaf certificate, hex.
    Fingerprint(String),
    /// Accept any certificate (loopback benchmarking of a relay with a generated cert).
    Insecure,
}

/// The load shape, shared by every target of a comparison.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct Load {
    /// Broadcasts, one publisher session each.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Subscriber sessions per broadcast.
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Frames per second per publisher.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Bytes per frame (the 29-byte timing header included).
    #[arg(long, default_value_t = 4096)]
    pub frame_size: usize,
    /// Frames per group (one QUIC stream per group).
    #[arg(long, default_value_t = 30)]
    pub group_size: u32,
    /// Measured window.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Publishing before the measured window (after ramp-up); not counted.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    #[serde(with = "secs")]
    pub warmup: Duration,
    /// Sessions are opened evenly over this time.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    #[serde(with = "secs")]
    pub ramp_up: Duration,
    /// Time after the last measured group for its frames to arrive.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    #[serde(with = "secs")]
    pub drain: Duration,
    /// moq-lite version: 03, 04, 05 or 06.
    #[arg(long = "moq-version", default_value = "04", value_parser = parse_version)]
    #[serde(serialize_with = "version_str")]
    pub version: Version,
    #[arg(long, value_enum, default_value = "quic")]
    pub transport: TransportKind,
    /// CPUs for the client, one client worker pinned to each (e.g. "1" or "0,1"); empty =
    /// one unpinned worker.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

fn version_str<S: serde::Serializer>(v: &Version, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.alpn())
}

pub fn parse_version(s: &str) -> Result<Version, String> {
    let alpn = if s.starts_with("moq-lite-") {
        s.to_owned()
    } else {
        format!("moq-lite-{s:0>2}")
    };
    Version::from_alpn(&alpn)
        .ok_or_else(|| format!("unknown moq-lite version {s:?} (03, 04, 05, 06)"))
}

/// Where the relay is.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// TLS server name (SNI).
    pub server_name: String,
    /// Connection path without the leading `/`: SETUP Path on raw QUIC 05, the CONNECT path
    /// on WebTransport; ignored on 03/04 raw QUIC.
    pub path: String,
    /// URL query without `?` (e.g. `jwt=…`): sent in the WebTransport CONNECT only.
    pub query: String,
    pub trust: Trust,
    /// Process whose CPU and memory are sampled over the measured window.
    pub relay_pid: Option<u32>,
    /// Where the publishers dial instead, when it is another relay (a chain of linked
    /// relays: publishers on the origin, subscribers here). Same transport and version.
    pub publishers_at: Option<Box<Target>>,
}

impl Target {
    /// Where a publisher (`true`) or a subscriber dials.
    pub fn for_role(&self, publisher: bool) -> &Target {
        match (&self.publishers_at, publisher) {
            (Some(publishers), true) => publishers,
            _ => self,
        }
    }

    /// The WebTransport CONNECT `:path`: `/path` plus `?query` when there is one.
    pub fn path_and_query(&self) -> String {
        match self.query.is_empty() {
            true => format!("/{}", self.path),
            false => format!("/{}?{}", self.path, self.query),
        }
    }

    /// The WebTransport CONNECT `:authority`: the TLS name and the port (an IP literal is
    /// named `localhost`, like the SNI, since that is what a generated certificate covers).
    pub fn authority(&self) -> String {
        format!("{}:{}", self.server_name, self.addr.port())
    }

    /// From a `moql://host:port/path` (raw QUIC) or `https://…` (WebTransport) URL.
    pub fn from_url(url: &str, trust: Trust) -> Result<(Target, TransportKind), BenchError> {
        let bad = |why: &str| BenchError::Config(format!("--connect {url}: {why}"));
        let u = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let transport = match u.scheme() {
            "moql" | "moqt" | "quic" => TransportKind::Quic,
            "https" => TransportKind::Webtransport,
            other => return Err(bad(&format!("scheme {other} (use moql:// or https://)"))),
        };
        let host = u.host_str().ok_or_else(|| bad("no host"))?;
        let port = u.port().unwrap_or(443);
        let addr = (host.trim_matches(|c| c == '[' || c == ']'), port)
            .to_socket_addrs()
            .map_err(|e| bad(&e.to_string()))?
            .next()
            .ok_or_else(|| bad("host resolves to nothing"))?;
        // Non-special schemes (moql://) keep IP literals as opaque hosts: check by parsing.
        // A relay with a generated certificate names itself localhost.
        let server_name = match host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
        {
            Ok(_) => "localhost".to_owned(),
            Err(_) => host.to_owned(),
        };
        let target = Target {
            addr,
            server_name,
            path: u.path().trim_start_matches('/').to_owned(),
            query: u.query().unwrap_or_default().to_owned(),
            trust,
            relay_pid: None,
            publishers_at: None,
        };
        Ok((target, transport))
    }
}

impl Load {
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::Config(m));
        if self.publishers == 0 || self.publishers > MAX_PUBLISHERS {
            return bad(format!("--publishers must be 1..={MAX_PUBLISHERS}"));
        }
        let sessions = self.publishers * (1 + self.subscribers);
        if sessions > MAX_SESSIONS {
            return bad(format!("{sessions} sessions exceed {MAX_SESSIONS}"));
        }
        if self.fps == 0 || self.fps > MAX_FPS {
            return bad(format!("--fps must be 1..={MAX_FPS}"));
        }
        if self.frame_size < crate::frame::HEADER_LEN || self.frame_size > MAX_FRAME_SIZE {
            return bad(format!(
                "--frame-size must be {}..={MAX_FRAME_SIZE}",
                crate::frame::HEADER_LEN
            ));
        }
        if self.group_size == 0 {
            return bad("--group-size must be at least 1".into());
        }
        for (name, d) in [
            ("duration", self.duration),
            ("warmup", self.warmup),
            ("ramp-up", self.ramp_up),
            ("drain", self.drain),
        ] {
            if d > MAX_DURATION {
                return bad(format!("--{name} above {MAX_DURATION:?}"));
            }
        }
        if self.duration.is_zero() {
            return bad("--duration must be positive".into());
        }
        Ok(())
    }

    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs(1) / self.fps
    }

    pub fn group_duration(&self) -> Duration {
        self.frame_interval() * self.group_size
    }
}

/// Absolute monotonic times (ns) of a run's phases.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    /// First connection.
    pub start: u64,
    /// Connections spread up to here.
    pub ramp_end: u64,
    /// Measured window.
    pub t0: u64,
    pub t1: u64,
    /// Workers report and close.
    pub end: u64,
}

impl Timeline {
    pub fn new(start: u64, load: &Load) -> Self {
        let ns = |d: Duration| d.as_nanos() as u64;
        let ramp_end = start + ns(load.ramp_up);
        let t0 = ramp_end + ns(load.warmup);
        let t1 = t0 + ns(load.duration);
        let end = t1 + ns(load.group_duration()) + ns(load.drain);
        Self {
            start,
            ramp_end,
            t0,
            t1,
            end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_accepts_short_and_alpn_spellings() {
        assert_eq!(parse_version("4"), Ok(Version::Lite04));
        assert_eq!(parse_version("05"), Ok(Version::Lite05));
        assert_eq!(parse_version("moq-lite-03"), Ok(Version::Lite03));
        assert_eq!(parse_version("06"), Ok(Version::Lite06));
        assert_eq!(parse_version("moq-lite-06"), Ok(Version::Lite06));
        assert!(parse_version("moq-lite-06-wip").is_err());
        assert!(parse_version("07").is_err());
    }

    #[test]
    fn raw_quic_url_gives_address_path_and_localhost_name() {
        let (t, kind) = Target::from_url("moql://127.0.0.1:4443/anon", Trust::Insecure).unwrap();
        assert_eq!(kind, TransportKind::Quic);
        assert_eq!(t.addr, "127.0.0.1:4443".parse().unwrap());
        assert_eq!(t.path, "anon");
        assert_eq!(t.server_name, "localhost");
        assert!(Target::from_url("ftp://x/", Trust::Insecure).is_err());
    }

    #[test]
    fn https_url_selects_webtransport_and_keeps_path_and_query() {
        let (t, kind) = Target::from_url(
            "https://127.0.0.1:4443/anon/room?jwt=a.b.c",
            Trust::Insecure,
        )
        .unwrap();
        assert_eq!(kind, TransportKind::Webtransport);
        assert_eq!(t.path, "anon/room");
        assert_eq!(t.query, "jwt=a.b.c");
        assert_eq!(t.path_and_query(), "/anon/room?jwt=a.b.c");
        assert_eq!(t.authority(), "localhost:4443");
    }
}
