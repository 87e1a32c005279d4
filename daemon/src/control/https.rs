//! `[web.https]`: the public HTTP routes over TLS, with the certificate the listener's own
//! `cert`/`key` name (the first pair, as the QUIC listener takes its first), re-read on
//! SIGHUP like the QUIC one. HTTP/1.1 only (ALPN `http/1.1`): moq-relay 0.17 also offers
//! `h2`, which every client it serves falls back from.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use quic_io::TlsSource;
use tokio_rustls::TlsAcceptor;

/// The certificate files and the acceptor built from them; only the control side reads it.
pub struct HttpsTls {
    source: TlsSource,
    acceptor: Mutex<TlsAcceptor>,
    /// The leaf's SHA-256, for the log.
    fingerprint: Mutex<String>,
}

impl HttpsTls {
    /// Loads `certs`/`keys` (paired in order); an unreadable file is an error naming it.
    pub fn load(certs: &[String], keys: &[String]) -> anyhow::Result<Self> {
        let source = TlsSource::Files {
            certs: certs.iter().map(PathBuf::from).collect(),
            keys: keys.iter().map(PathBuf::from).collect(),
        };
        let (acceptor, fingerprint) = build(&source)?;
        Ok(Self {
            source,
            acceptor: Mutex::new(acceptor),
            fingerprint: Mutex::new(fingerprint),
        })
    }

    /// Re-reads the files; new connections get the new certificate. On error the old one
    /// stays and the error says why.
    pub fn reload(&self) -> anyhow::Result<String> {
        let (acceptor, fingerprint) = build(&self.source)?;
        if let Ok(mut slot) = self.acceptor.lock() {
            *slot = acceptor;
        }
        if let Ok(mut slot) = self.fingerprint.lock() {
            slot.clone_from(&fingerprint);
        }
        Ok(fingerprint)
    }

    pub fn fingerprint(&self) -> String {
        self.fingerprint
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }

    /// The acceptor for one new connection (a clone of an `Arc` inside).
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        self.acceptor.lock().ok().map(|a| a.clone())
    }
}

fn build(source: &TlsSource) -> anyhow::Result<(TlsAcceptor, String)> {
    let material = quic_io::tls::load(source)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(material.chain, material.key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), material.fingerprint))
}
