//! TLS material and the quinn-proto server configuration built from it: PEM chains and keys
//! read from files, or a short-lived self-signed ECDSA P-256 certificate, TLS 1.3 only, with
//! the SHA-256 fingerprint of the leaf. It reads files only when asked (start and reload) and
//! must never be called on the per-packet path.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn_proto::crypto::rustls::QuicServerConfig;
use quinn_proto::{IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::{Config, Congestion, TlsSource};

/// Browsers accept a `serverCertificateHashes` certificate only if it is valid for at most
/// 14 days; stay a day under so clock skew cannot push it over.
const GENERATED_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
/// Backdate the start a little so clients with a slow clock accept it.
const GENERATED_BACKDATE: Duration = Duration::from_secs(3600);
/// H3 datagrams are at most one QUIC packet; a receive queue of this many bytes per
/// connection absorbs a burst without letting one peer hold much memory.
const DATAGRAM_RECV_BUFFER: usize = 256 * 1024;
/// WebTransport needs the peer's HTTP/3 control and two QPACK streams on top of the
/// application's unidirectional streams.
const H3_EXTRA_UNI_STREAMS: u32 = 3;

/// Concurrent streams of each direction a new connection may open at first. quinn-proto
/// allocates state for every stream the peer may open, up front: at moq-relay's 10,000
/// per direction that is ~0.8 MiB and ~1 ms per connection, even for an idle one. So
/// connections start with this many and the worker doubles the credit, up to the
/// configured maximum, whenever the peer has half of it open. At 64 that up-front state
/// was 8.3 KB of an idle session's 35.8 KB (issue 16). A viewer opens one stream per
/// subscription; a publisher holds more than 4 group streams open only when a round trip
/// spans 4 groups, and then waits at most a round trip per doubling.
pub const INITIAL_STREAM_CREDIT: u32 = 8;

/// The (bidi, uni) credit a connection starts with.
pub(crate) fn initial_stream_credit(q: &crate::QuicConfig) -> (u32, u32) {
    let (bidi, uni) = max_stream_credit(q);
    (
        bidi.min(INITIAL_STREAM_CREDIT),
        uni.min(INITIAL_STREAM_CREDIT),
    )
}

/// The (bidi, uni) credit a connection may grow to.
pub(crate) fn max_stream_credit(q: &crate::QuicConfig) -> (u32, u32) {
    let uni = if q.webtransport {
        q.max_uni_streams.saturating_add(H3_EXTRA_UNI_STREAMS)
    } else {
        q.max_uni_streams
    };
    (q.max_bidi_streams, uni)
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no private key found")]
    NoKey { path: PathBuf },
    #[error("tls: {0} certificate files but {1} key files; they pair up")]
    Mismatch(usize, usize),
    #[error("tls: no certificate configured")]
    Empty,
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("quic crypto: {0}")]
    Quic(String),
    #[error("idle timeout {0:?} out of range")]
    IdleTimeout(Duration),
    #[error("{what} of {bytes} bytes is beyond QUIC's 2^62 - 1")]
    Window { what: &'static str, bytes: u64 },
    #[error("{path}: not a usable CA certificate: {reason}")]
    ClientCa { path: PathBuf, reason: String },
}

/// A certificate chain with its key, ready to serve.
#[derive(Debug)]
pub struct TlsMaterial {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Lowercase hex SHA-256 of the DER leaf certificate.
    pub fingerprint: String,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

/// Loads or generates the certificate the config names (the first pair for file lists).
pub fn load(source: &TlsSource) -> Result<TlsMaterial, TlsError> {
    match source {
        TlsSource::Files { certs, keys } => {
            if certs.len() != keys.len() {
                return Err(TlsError::Mismatch(certs.len(), keys.len()));
            }
            let (cert, key) = certs.first().zip(keys.first()).ok_or(TlsError::Empty)?;
            load_files(cert, key)
        }
        TlsSource::Generate { hostnames } => generate(hostnames),
    }
}

fn open(path: &Path) -> Result<BufReader<File>, TlsError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
}

/// The certificates of a PEM file; none is an error naming the file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn load_files(cert: &Path, key: &Path) -> Result<TlsMaterial, TlsError> {
    let chain = read_certs(cert)?;
    let key_der = rustls_pemfile::private_key(&mut open(key)?)
        .map_err(|source| TlsError::Read {
            path: key.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: key.to_owned(),
        })?;
    let fingerprint = fingerprint(&chain[0]);
    Ok(TlsMaterial {
        chain,
        key: key_der,
        fingerprint,
    })
}

/// A self-signed ECDSA P-256 certificate for `hostnames`, valid for under 14 days.
pub fn generate(hostnames: &[String]) -> Result<TlsMaterial, TlsError> {
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(hostnames.to_vec())?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - GENERATED_BACKDATE;
    params.not_after = now + GENERATED_VALIDITY;
    let cert = params.self_signed(&key_pair)?;
    let der: CertificateDer<'static> = cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let fingerprint = fingerprint(&der);
    Ok(TlsMaterial {
        chain: vec![der],
        key,
        fingerprint,
    })
}

/// Lowercase hex SHA-256 of a DER certificate, as browsers' `serverCertificateHashes` and
/// moq-dev's `/certificate.sha256` use it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 a [`fingerprint`] names: 64 hex digits, colons allowed (as some tools print
/// them); `None` for anything else.
pub fn parse_fingerprint(hex: &str) -> Option<[u8; 32]> {
    let digits: Vec<u8> = hex.bytes().filter(|&b| b != b':').collect();
    if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// The transport parameters every connection gets.
pub fn transport_config(config: &Config) -> Result<TransportConfig, TlsError> {
    let q = &config.quic;
    let mut t = TransportConfig::default();
    let (bidi, uni) = initial_stream_credit(q);
    t.max_concurrent_bidi_streams(VarInt::from_u32(bidi));
    t.max_concurrent_uni_streams(VarInt::from_u32(uni));
    t.max_idle_timeout(Some(
        IdleTimeout::try_from(q.idle_timeout).map_err(|_| TlsError::IdleTimeout(q.idle_timeout))?,
    ));
    t.keep_alive_interval(q.keep_alive);
    t.datagram_receive_buffer_size(Some(DATAGRAM_RECV_BUFFER));
    let window = |bytes: u64, what: &'static str| {
        VarInt::from_u64(bytes).map_err(|_| TlsError::Window { what, bytes })
    };
    if let Some(bytes) = q.receive_window {
        t.receive_window(window(bytes, "receive_window")?);
    }
    if let Some(bytes) = q.stream_receive_window {
        t.stream_receive_window(window(bytes, "stream_receive_window")?);
    }
    if let Some(bytes) = q.send_window {
        t.send_window(bytes);
    }
    match q.congestion {
        Congestion::Cubic => t.congestion_controller_factory(Arc::new(
            quinn_proto::congestion::CubicConfig::default(),
        )),
        Congestion::Bbr => {
            t.congestion_controller_factory(Arc::new(quinn_proto::congestion::BbrConfig::default()))
        }
        Congestion::NewReno => t.congestion_controller_factory(Arc::new(
            quinn_proto::congestion::NewRenoConfig::default(),
        )),
    };
    Ok(t)
}

/// How an outgoing connection checks the server's certificate.
#[derive(Debug, Clone)]
pub enum ServerVerify {
    /// WebPKI validation against these roots.
    Roots(Arc<rustls::RootCertStore>),
    /// Accept exactly the leaf certificates with these SHA-256 digests (as browsers'
    /// `serverCertificateHashes`); for self-signed development relays.
    Sha256(Vec<[u8; 32]>),
    /// Accept any certificate (the handshake signatures are still checked against it):
    /// only for a loopback peer the caller started itself, such as a benchmark's relay.
    AnyCertificate,
}

/// A server verifier that accepts any certificate, checking only the handshake
/// signature: for a peer the operator said not to verify (`disable_verify`).
pub fn any_server_verifier(
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Arc<dyn rustls::client::danger::ServerCertVerifier> {
    Arc::new(PinnedVerifier {
        digests: None,
        provider,
    })
}

#[derive(Debug)]
struct PinnedVerifier {
    /// `None` accepts any certificate.
    digests: Option<Vec<[u8; 32]>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let Some(digests) = &self.digests else {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        };
        let d = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if digests.iter().any(|x| x.as_slice() == d.as_ref()) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
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
        cert: &CertificateDer<'_>,
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

/// A client config for raw-QUIC connections offering `alpns`, with our transport
/// parameters. TLS 1.3 only.
pub fn client_config(
    verify: ServerVerify,
    alpns: &[&str],
    config: &Config,
) -> Result<quinn_proto::ClientConfig, TlsError> {
    client_config_as(verify, None, alpns, config)
}

/// [`client_config`] presenting `identity` (a certificate chain and its key) to servers
/// that ask for one, as a relay dialing a peer that admits relays by certificate.
pub fn client_config_as(
    verify: ServerVerify,
    identity: Option<TlsMaterial>,
    alpns: &[&str],
    config: &Config,
) -> Result<quinn_proto::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match verify {
        ServerVerify::Roots(roots) => builder.with_root_certificates(roots),
        ServerVerify::Sha256(digests) => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    digests: Some(digests),
                    provider,
                }))
        }
        ServerVerify::AnyCertificate => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    digests: None,
                    provider,
                }))
        }
    };
    let mut tls = match identity {
        Some(identity) => builder.with_client_auth_cert(identity.chain, identity.key)?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = alpns.iter().map(|a| a.as_bytes().to_vec()).collect();
    let quic = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cc = quinn_proto::ClientConfig::new(Arc::new(quic));
    cc.transport_config(Arc::new(transport_config(config)?));
    Ok(cc)
}

/// Client certificates are optional (a client without one goes through tokens or public
/// access) and, when presented, must chain to one of the CAs in `paths`.
fn client_verifier(
    paths: &[PathBuf],
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for path in paths {
        for cert in read_certs(path)? {
            roots.add(cert).map_err(|err| TlsError::ClientCa {
                path: path.clone(),
                reason: err.to_string(),
            })?;
        }
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|err| TlsError::ClientCa {
            path: paths[0].clone(),
            reason: err.to_string(),
        })
}

/// What the relay learns of a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// Lowercase hex SHA-256 of the DER leaf.
    pub fingerprint: String,
    /// The leaf's `notAfter`: a session it admitted ends then.
    pub not_after: std::time::SystemTime,
    /// As moq-relay 0.17 names a peer to its auth server: the first DNS name of the
    /// subject alternative names, else the subject's common name, else the fingerprint.
    pub name: String,
    /// The issuer (RFC 4514 text).
    pub issuer: String,
}

impl PeerCertificate {
    /// The leaf of a chain rustls verified. `None` when the leaf's validity cannot be
    /// read (rustls has checked it, so only a clock beyond `SystemTime` gets here).
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Option<Self> {
        let leaf = chain.first()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let seconds = u64::try_from(parsed.validity().not_after.timestamp()).ok()?;
        let fingerprint = fingerprint(leaf);
        let dns_name = parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
            });
        let common_name = || {
            parsed
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned)
        };
        let name = dns_name
            .or_else(common_name)
            .unwrap_or_else(|| fingerprint.clone());
        Some(Self {
            fingerprint,
            not_after: std::time::UNIX_EPOCH + Duration::from_secs(seconds),
            name,
            issuer: parsed.issuer().to_string(),
        })
    }
}

/// A complete quinn-proto server config: TLS 1.3 only, our ALPNs, our transport parameters.
pub fn server_config(
    material: &TlsMaterial,
    config: &Config,
) -> Result<quinn_proto::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = if config.client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_cert_verifier(client_verifier(&config.client_ca, provider)?)
    };
    let mut tls = builder.with_single_cert(material.chain.clone(), material.key.clone_key())?;
    tls.alpn_protocols = config.alpns();
    tls.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut sc = quinn_proto::ServerConfig::with_crypto(Arc::new(quic));
    sc.transport_config(Arc::new(transport_config(config)?));
    // Clients that support it (Chrome, quinn) move to these once the handshake is done;
    // the socket must be reachable there too (a wildcard bind, or the host's unicast
    // address behind an anycast one).
    sc.preferred_address_v4(config.quic.preferred_v4);
    sc.preferred_address_v6(config.quic.preferred_v6);
    Ok(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferred_addresses_reach_the_server_config() {
        let mut config = Config::new("127.0.0.1:0".parse().unwrap());
        let material = generate(&["localhost".into()]).unwrap();
        let plain = format!("{:?}", server_config(&material, &config).unwrap());
        assert!(plain.contains("preferred_address_v4: None"), "{plain}");
        config.quic.preferred_v4 = Some("192.0.2.7:4443".parse().unwrap());
        config.quic.preferred_v6 = Some("[2001:db8::7]:4443".parse().unwrap());
        let set = format!("{:?}", server_config(&material, &config).unwrap());
        assert!(
            set.contains("preferred_address_v4: Some(192.0.2.7:4443)"),
            "{set}"
        );
        assert!(
            set.contains("preferred_address_v6: Some([2001:db8::7]:4443)"),
            "{set}"
        );
    }

    #[test]
    fn generated_certificate_is_short_lived_p256_with_hex_fingerprint() {
        let m = generate(&["localhost".into()]).unwrap();
        assert_eq!(m.fingerprint.len(), 64);
        assert!(m.fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(m.fingerprint, fingerprint(&m.chain[0]));
        // A second generation is a different certificate.
        assert_ne!(
            generate(&["localhost".into()]).unwrap().fingerprint,
            m.fingerprint
        );
    }

    #[test]
    fn pem_files_load_and_mismatched_lists_are_rejected() {
        let dir = std::env::temp_dir().join(format!("quic-io-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".into()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key_pair.serialize_pem()).unwrap();
        let m = load(&TlsSource::Files {
            certs: vec![c.clone()],
            keys: vec![k.clone()],
        })
        .unwrap();
        assert_eq!(m.fingerprint, fingerprint(cert.der()));
        assert!(matches!(
            load(&TlsSource::Files {
                certs: vec![c.clone()],
                keys: vec![]
            }),
            Err(TlsError::Mismatch(1, 0))
        ));
        assert!(matches!(
            load(&TlsSource::Files {
                certs: vec![k.clone()],
                keys: vec![k]
            }),
            Err(TlsError::NoCertificate { .. })
        ));
        let cfg = Config::new("127.0.0.1:0".parse().unwrap());
        assert!(server_config(&m, &cfg).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    /// quinn-proto keeps its fields private; its Debug output is the one public view.
    fn shown(config: &Config) -> String {
        format!("{:?}", transport_config(config).expect("transport config"))
    }

    #[test]
    fn configured_windows_reach_every_connection_and_unset_ones_keep_quinns() {
        let mut config = Config::new("127.0.0.1:0".parse().unwrap());
        let defaults = shown(&config);
        config.quic.receive_window = Some(3 << 20);
        config.quic.stream_receive_window = Some(256 << 10);
        config.quic.send_window = Some(5 << 20);
        let set = shown(&config);
        assert!(set.contains("receive_window: 3145728"), "{set}");
        assert!(set.contains("stream_receive_window: 262144"), "{set}");
        assert!(set.contains("send_window: 5242880"), "{set}");
        assert!(!defaults.contains("receive_window: 3145728"), "{defaults}");
    }

    #[test]
    fn a_window_beyond_a_quic_varint_is_an_error() {
        let mut config = Config::new("127.0.0.1:0".parse().unwrap());
        config.quic.receive_window = Some(1 << 62);
        assert!(matches!(
            transport_config(&config),
            Err(TlsError::Window {
                what: "receive_window",
                ..
            })
        ));
    }
}
