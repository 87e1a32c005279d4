//! Test harness: an echo `Application` on the real workers, and independent clients (`quinn`,
//! `web-transport-quinn`) that trust the server by its certificate fingerprint.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quic_io::{
    Application, Config, Event, Io, IoBackend, Server, ServerHandle, SessionId, SessionInfo,
    StreamId, WorkerCtx,
};

/// What the echo servers saw, across workers.
#[derive(Default)]
pub struct Seen {
    pub sessions: Vec<(usize, SessionInfo)>,
    pub closed: Vec<(usize, SessionId, u64, String)>,
}

/// Echoes bidi streams back on themselves, uni streams onto a new server uni stream, and
/// datagrams back. A bidi stream whose first bytes are `BULK <n>\n` is answered with n bytes.
pub struct Echo {
    worker: usize,
    seen: Arc<Mutex<Seen>>,
    /// Where a stream's bytes are echoed to, and what waits to go there.
    targets: HashMap<(SessionId, StreamId), StreamId>,
    queues: HashMap<(SessionId, StreamId), (VecDeque<Bytes>, bool)>,
    first: HashMap<(SessionId, StreamId), bool>,
}

/// Bulk responses are generated in chunks of this size.
const BULK_CHUNK: usize = 64 * 1024;
/// A bulk request may ask for at most this much (bounded test load).
const BULK_MAX: usize = 64 << 20;

impl Echo {
    fn flush(&mut self, io: &mut Io<'_>, s: SessionId, t: StreamId) {
        let Some((q, fin)) = self.queues.get_mut(&(s, t)) else {
            return;
        };
        while let Some(front) = q.front_mut() {
            let mut one = [front.clone()];
            let n = match io.write(s, t, &mut one) {
                Ok(n) => n,
                Err(_) => {
                    q.clear();
                    return;
                }
            };
            if n >= front.len() {
                q.pop_front();
            } else {
                let _ = front.split_to(n);
                return;
            }
        }
        if *fin {
            let _ = io.finish(s, t);
            self.queues.remove(&(s, t));
        }
    }

    fn queue(&mut self, s: SessionId, t: StreamId, data: Bytes) {
        self.queues.entry((s, t)).or_default().0.push_back(data);
    }
}

impl Application<Io<'_>> for Echo {
    fn on_event(&mut self, _now: Instant, event: Event, io: &mut Io<'_>) {
        match event {
            Event::SessionReady(info) => {
                self.seen.lock().unwrap().sessions.push((self.worker, info))
            }
            Event::StreamOpened {
                session,
                stream,
                bidi,
            } => {
                let target = if bidi {
                    stream
                } else {
                    match io.open_uni(session) {
                        Ok(t) => t,
                        Err(_) => return,
                    }
                };
                self.targets.insert((session, stream), target);
                self.first.insert((session, stream), true);
            }
            Event::Data {
                session,
                stream,
                data,
            } => {
                let Some(&t) = self.targets.get(&(session, stream)) else {
                    return;
                };
                let first = self.first.insert((session, stream), false).unwrap_or(false);
                if first && data.starts_with(b"BULK ") {
                    let n: usize = std::str::from_utf8(&data[5..])
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0)
                        .min(BULK_MAX);
                    let chunk = Bytes::from(vec![0xabu8; BULK_CHUNK]);
                    let mut left = n;
                    while left > 0 {
                        let k = left.min(BULK_CHUNK);
                        self.queue(session, t, chunk.slice(..k));
                        left -= k;
                    }
                    self.queues.entry((session, t)).or_default().1 = true;
                } else {
                    self.queue(session, t, data);
                }
                self.flush(io, session, t);
            }
            Event::Finished { session, stream } => {
                let Some(&t) = self.targets.get(&(session, stream)) else {
                    return;
                };
                self.queues.entry((session, t)).or_default().1 = true;
                self.flush(io, session, t);
            }
            Event::Writable { session, stream } => self.flush(io, session, stream),
            Event::Datagram { session, data } => {
                let _ = io.send_datagram(session, data);
            }
            Event::SessionClosed {
                session,
                code,
                reason,
            } => {
                self.seen
                    .lock()
                    .unwrap()
                    .closed
                    .push((self.worker, session, code, reason));
                self.queues.retain(|k, _| k.0 != session);
                self.targets.retain(|k, _| k.0 != session);
                self.first.retain(|k, _| k.0 != session);
            }
            Event::Reset { .. } | Event::StopSending { .. } => {}
        }
    }

    fn poll(&mut self, _now: Instant, _io: &mut Io<'_>) {}

    fn timeout(&self) -> Option<Instant> {
        None
    }
}

/// `QUIC_IO_BACKEND=poll` (or `uring`) forces every test onto one backend, so the whole
/// suite can be run against each.
pub fn config(workers: usize, io: IoBackend) -> Config {
    let mut c = Config::new("127.0.0.1:0".parse().unwrap());
    c.runtime.workers = workers;
    c.socket.io = match std::env::var("QUIC_IO_BACKEND").as_deref() {
        Ok("poll") => IoBackend::Poll,
        Ok("uring") => IoBackend::Uring,
        _ => io,
    };
    c
}

pub fn start(config: Config) -> (ServerHandle, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    let h = Server::start(config, move |ctx: WorkerCtx| Echo {
        worker: ctx.index,
        seen: s2.clone(),
        targets: HashMap::new(),
        queues: HashMap::new(),
        first: HashMap::new(),
    })
    .expect("server starts");
    (h, seen)
}

/// Hands a test client's one result back to the test thread.
pub struct Reporter<T>(Mutex<std::sync::mpsc::Sender<Result<T, String>>>);

impl<T> Reporter<T> {
    pub fn report(&self, result: Result<T, String>) {
        let _ = self.0.lock().unwrap().send(result);
    }

    /// The session closed before the client had its result.
    pub fn closed(&self, code: u64, reason: &str) {
        self.report(Err(format!("closed {code} {reason}")));
    }
}

/// Starts the one-worker client endpoint `client` running the application `make` builds
/// around its reporter, and waits (at most 20 s) for the result it reports. The caller
/// shuts the client down.
pub fn run_client<T, A>(
    client: Config,
    what: &str,
    make: impl Fn(Reporter<T>) -> A + Send + Sync + 'static,
) -> (ServerHandle, Result<T, String>)
where
    T: Send + 'static,
    A: for<'io> Application<Io<'io>> + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(Some(tx));
    let handle = Server::start(client, move |_ctx: WorkerCtx| {
        make(Reporter(Mutex::new(
            tx.lock().unwrap().take().expect("one worker"),
        )))
    })
    .unwrap();
    handle.wakers()[0].wake();
    let result = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} reported"));
    (handle, result)
}

/// The 32 bytes of a hex SHA-256 fingerprint, as `ServerVerify::Sha256` wants them.
pub fn sha256_of(fingerprint: &str) -> [u8; 32] {
    hex_to_bytes(fingerprint)
        .try_into()
        .expect("a SHA-256 fingerprint is 32 bytes")
}

/// A one-worker quic-io client endpoint config and a client TLS config that accepts only
/// the server certificate with SHA-256 `digest`.
pub fn pinned_client(digest: [u8; 32], alpns: &[&str]) -> (Config, quinn_proto::ClientConfig) {
    let endpoint = config(1, IoBackend::Auto);
    let tls = quic_io::tls::client_config(
        quic_io::tls::ServerVerify::Sha256(vec![digest]),
        alpns,
        &endpoint,
    )
    .unwrap();
    (endpoint, tls)
}

fn hex_to_bytes(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

/// Accepts exactly the server certificate with this SHA-256, as browsers'
/// `serverCertificateHashes` do.
#[derive(Debug)]
struct Pinned {
    sha256: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let d = ring_sha256(end_entity.as_ref());
        if d == self.sha256 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("fingerprint mismatch".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn ring_sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// A quinn client config for `alpn` trusting the server with this fingerprint.
pub fn quinn_client(fingerprint: &str, alpn: &str) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            sha256: hex_to_bytes(fingerprint),
            provider,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    let mut c = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(Duration::from_secs(10).try_into().unwrap()));
    c.transport_config(Arc::new(t));
    c
}

pub fn client_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client("127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap()
}

/// A web-transport-quinn client that pins the server's fingerprint.
pub fn wt_client(fingerprint: &str) -> web_transport_quinn::Client {
    web_transport_quinn::ClientBuilder::new()
        .with_server_certificate_hashes(vec![hex_to_bytes(fingerprint)])
        .unwrap()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Every test is bounded in time.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(150);

/// A raw QUIC moq-lite-05 connection from `ep` to the server with fingerprint `fp`.
pub async fn connect_moq05(ep: &quinn::Endpoint, fp: &str, addr: SocketAddr) -> quinn::Connection {
    ep.connect_with(quinn_client(fp, "moq-lite-05"), addr, "localhost")
        .unwrap()
        .await
        .unwrap()
}

/// A raw QUIC echo round trip on a fresh bidi stream.
pub async fn quic_echo(conn: &quinn::Connection, msg: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(msg).await.unwrap();
    send.finish().unwrap();
    recv.read_to_end(1 << 20).await.unwrap()
}
