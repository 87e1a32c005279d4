//! Egress benchmark: server-to-client bulk download over raw QUIC, quic-io versus the `quinn`
//! crate's own (tokio) server, both on one server thread and with the same TLS and transport
//! config, driven by the same in-process quinn client. Reports throughput and server CPU time
//! per byte (from /proc thread accounting). Bounded: every run transfers a fixed byte count
//! and gives up after `DEADLINE`.
//!
//! `cargo run --release -p quic-io --example egress_bench -- <quic-io|quinn> <conns> <MiB per conn> [poll|uring|auto] [Mbit/s]`
//!
//! With a rate (total over all connections), both servers pace their writes to it the same
//! way (what has become due, checked every `PACE_TICK`), so CPU per byte is compared at equal
//! offered load rather than at whatever throughput the shared machine and the one-thread
//! client allow.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quic_io::{Application, Config, Event, Io, IoBackend, Server, SessionId, StreamId, WorkerCtx};

/// A run that has not finished by then is reported as failed, not waited for.
const DEADLINE: Duration = Duration::from_secs(120);
/// Download chunks: one shared buffer sliced, never copied.
const CHUNK: usize = 64 * 1024;

/// Paced runs re-check what has become due this often (tokio's timer granularity).
const PACE_TICK: Duration = Duration::from_millis(1);

/// Paced streams write in pieces of this size, like a media frame, not a trickle of what
/// one tick allows (which would make the run a test of packets per second).
const PACE_QUANTUM: usize = 16 * 1024;

/// Bytes a paced stream may have written `elapsed` after its start; unpaced: everything.
fn due(rate: Option<f64>, elapsed: Duration, total: usize) -> usize {
    match rate {
        Some(bytes_per_sec) => {
            let due = (bytes_per_sec * elapsed.as_secs_f64()) as usize;
            (due / PACE_QUANTUM * PACE_QUANTUM).min(total)
        }
        None => total,
    }
}

struct Download {
    total: usize,
    sent: usize,
    start: Instant,
}

/// Answers `BULK <n>` on a bidi stream with n bytes, then FIN.
struct Bulk {
    chunk: Bytes,
    left: HashMap<(SessionId, StreamId), Download>,
    /// Bytes per second per stream, when paced.
    rate: Option<f64>,
}

impl Bulk {
    fn pump(&mut self, io: &mut Io<'_>, now: Instant, s: SessionId, t: StreamId) {
        let Some(d) = self.left.get_mut(&(s, t)) else {
            return;
        };
        let allowed = due(self.rate, now - d.start, d.total);
        while d.sent < allowed {
            let n = (allowed - d.sent).min(CHUNK);
            let mut c = [self.chunk.slice(..n)];
            match io.write(s, t, &mut c) {
                Ok(0) | Err(_) => return,
                Ok(w) => d.sent += w,
            }
        }
        if d.sent == d.total {
            let _ = io.finish(s, t);
            self.left.remove(&(s, t));
        }
    }
}

impl Application<Io<'_>> for Bulk {
    fn on_event(&mut self, now: Instant, event: Event, io: &mut Io<'_>) {
        match event {
            Event::Data {
                session,
                stream,
                data,
            } if data.starts_with(b"BULK ") => {
                let n = std::str::from_utf8(&data[5..])
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                self.left.insert(
                    (session, stream),
                    Download {
                        total: n,
                        sent: 0,
                        start: now,
                    },
                );
                self.pump(io, now, session, stream);
            }
            Event::Writable { session, stream } => self.pump(io, now, session, stream),
            Event::SessionClosed { session, .. } => self.left.retain(|k, _| k.0 != session),
            _ => {}
        }
    }
    fn poll(&mut self, now: Instant, io: &mut Io<'_>) {
        if self.rate.is_none() {
            return;
        }
        // At most one entry per benchmark connection (bounded by the `conns` argument).
        let keys: Vec<_> = self.left.keys().copied().collect();
        for (s, t) in keys {
            self.pump(io, now, s, t);
        }
    }
    fn timeout(&self) -> Option<Instant> {
        (self.rate.is_some() && !self.left.is_empty()).then(|| Instant::now() + PACE_TICK)
    }
}

#[derive(Debug)]
struct Pinned(Vec<u8>, Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        ee: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if ring::digest::digest(&ring::digest::SHA256, ee.as_ref()).as_ref() == self.0.as_slice() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("fingerprint".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

fn client_config(fp_hex: &str) -> quinn::ClientConfig {
    let fp: Vec<u8> = (0..fp_hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&fp_hex[i..i + 2], 16).ok())
        .collect();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned(fp, provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"moq-lite-05".to_vec()];
    quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls"),
    ))
}

/// utime + stime in seconds of this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let p = e.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if !comm.trim().starts_with(prefix) {
                continue;
            }
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            // Fields after the ")" of comm: state is field 3; utime 14, stime 15.
            if let Some(rest) = stat.rsplit(')').next() {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ut: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0);
                let st: u64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
                total += ut + st;
            }
        }
    }
    total as f64 / tick
}

fn cpu_mhz() -> f64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn start_quinn_server(
    cfg: &Config,
    rate: Option<f64>,
) -> (SocketAddr, String, std::thread::JoinHandle<()>) {
    let material = quic_io::tls::generate(&["localhost".into()]).expect("cert");
    let sc = quic_io::tls::server_config(&material, cfg).expect("server config");
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::Builder::new()
        .name("quinn-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let ep = quinn::Endpoint::server(sc, "127.0.0.1:0".parse().expect("addr"))
                    .expect("bind");
                tx.send(ep.local_addr().expect("addr")).expect("send addr");
                let chunk = Bytes::from(vec![0xabu8; CHUNK]);
                while let Some(inc) = ep.accept().await {
                    let chunk = chunk.clone();
                    tokio::spawn(async move {
                        let Ok(conn) = inc.await else { return };
                        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                            let chunk = chunk.clone();
                            tokio::spawn(async move {
                                let Ok(req) = recv.read_to_end(64).await else {
                                    return;
                                };
                                let n: usize = std::str::from_utf8(&req[5..])
                                    .ok()
                                    .and_then(|s| s.trim().parse().ok())
                                    .unwrap_or(0);
                                let start = Instant::now();
                                let mut sent = 0;
                                while sent < n {
                                    let allowed = due(rate, start.elapsed(), n);
                                    if allowed <= sent {
                                        tokio::time::sleep(PACE_TICK).await;
                                        continue;
                                    }
                                    let k = (allowed - sent).min(CHUNK);
                                    if send.write_chunk(chunk.slice(..k)).await.is_err() {
                                        return;
                                    }
                                    sent += k;
                                }
                                let _ = send.finish();
                                let _ = send.stopped().await;
                            });
                        }
                    });
                }
            });
        })
        .expect("spawn");
    let addr = rx.recv().expect("server address");
    (addr, material.fingerprint, t)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("quic-io");
    let conns: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .clamp(1, 1000);
    let mib: usize = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
        .clamp(1, 4096);
    let io = match args.get(4).map(String::as_str) {
        Some("poll") => IoBackend::Poll,
        Some("uring") => IoBackend::Uring,
        _ => IoBackend::Auto,
    };
    // Total offered rate in Mbit/s, split evenly over the connections.
    let rate: Option<f64> = args
        .get(5)
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|r| *r > 0.0)
        .map(|mbit| mbit * 1e6 / 8.0 / conns as f64);
    let per_conn = mib << 20;
    let mut cfg = Config::new("127.0.0.1:0".parse().expect("addr"));
    cfg.runtime.workers = 1;
    cfg.socket.io = io;

    let mut _handle = None;
    let (addr, fp, prefix, backend) = if which == "quinn" {
        let (a, f, _t) = start_quinn_server(&cfg, rate);
        (a, f, "quinn-server", "tokio")
    } else {
        let h = Server::start(cfg, move |_ctx: WorkerCtx| Bulk {
            chunk: Bytes::from(vec![0xabu8; CHUNK]),
            left: HashMap::new(),
            rate,
        })
        .expect("server");
        let r = (h.local_addr(), h.fingerprint(), "quic-worker", h.backend());
        _handle = Some(h);
        r
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .expect("client runtime");
    let cpu0 = thread_cpu(prefix);
    let client0 = thread_cpu("bench-client");
    let t0 = Instant::now();
    let total = rt.block_on(async {
        tokio::time::timeout(DEADLINE, async {
            // Spread connections over a few client sockets.
            let eps: Vec<_> = (0..conns.min(16))
                .map(|_| {
                    quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client")
                })
                .collect();
            let mut tasks = Vec::new();
            for i in 0..conns {
                let ep = eps[i % eps.len()].clone();
                let cc = client_config(&fp);
                tasks.push(tokio::spawn(async move {
                    let conn = ep
                        .connect_with(cc, addr, "localhost")
                        .expect("connect")
                        .await
                        .expect("handshake");
                    let (mut s, mut r) = conn.open_bi().await.expect("open");
                    s.write_all(format!("BULK {per_conn}\n").as_bytes())
                        .await
                        .expect("request");
                    s.finish().expect("finish");
                    let mut got = 0usize;
                    while let Some(c) = r.read_chunk(usize::MAX, false).await.expect("read") {
                        got += c.bytes.len();
                    }
                    conn.close(0u32.into(), b"");
                    got
                }));
            }
            let mut total = 0;
            for t in tasks {
                total += t.await.expect("task");
            }
            total
        })
        .await
        .expect("benchmark finished before the deadline")
    });
    let wall = t0.elapsed().as_secs_f64();
    let cpu = thread_cpu(prefix) - cpu0;
    let client = thread_cpu("bench-client") - client0;
    let mhz = cpu_mhz();
    // Mean datagrams per send, from quic-io's counters (quinn's server exposes none).
    let gso = _handle
        .as_ref()
        .map(|h| format!("{:.1}", h.stats()[0].gso_segments_per_send()))
        .unwrap_or_else(|| "-".into());
    // A client thread busy for (nearly) the whole run means the client, not the server,
    // set the pace: compare CPU per byte then, not throughput.
    println!(
        "server={which} backend={backend} conns={conns} bytes={total} wall={wall:.2}s throughput={:.0} Mbit/s server_cpu={cpu:.2}s ns/byte={:.3} est_cycles/byte={:.2} (cpu {mhz:.0} MHz) server_busy={:.0}% client_busy={:.0}% gso_per_send={gso}",
        total as f64 * 8.0 / wall / 1e6,
        cpu * 1e9 / total as f64,
        cpu * mhz * 1e6 / total as f64,
        100.0 * cpu / wall,
        100.0 * client / wall,
    );
}
