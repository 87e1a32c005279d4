//! The TLS client side of the relay's outgoing connections that are not QUIC (the auth
//! server and `auth_api` over `https://`), built from `[client.tls]` (0.17: `[connect.tls]`):
//! which roots to trust, the client certificate to present, or no verification at all
//! when the operator says so.
//!
//! This module owns turning those keys into a rustls `ClientConfig` with the ring
//! provider, the one the rest of the relay uses. It never opens a connection.

use std::path::PathBuf;
use std::sync::Arc;

use quic_io::TlsSource;

use crate::config::ClientTlsConfig;

/// Why the client TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("[client.tls] root: {0}")]
    Root(quic_io::tls::TlsError),
    #[error("[client.tls] root `{path}`: {reason}")]
    BadRoot { path: String, reason: String },
    #[error("[client.tls] cert/key: {0}")]
    Identity(quic_io::tls::TlsError),
    #[error("[client.tls]: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("[client.tls] trusts no root: no `root` file and no system roots could be read")]
    NoRoots,
}

/// A rustls client config for HTTPS, from `[client.tls]`: the configured `root` files,
/// plus the system's roots when no file is given or `system_roots = true`; the client
/// certificate when `cert`/`key` are set; `disable_verify = true` trusts any server.
pub fn https_client_config(tls: &ClientTlsConfig) -> Result<rustls::ClientConfig, ClientTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = if tls.disable_verify == Some(true) {
        // The operator asked for no server verification (a test setup).
        builder
            .dangerous()
            .with_custom_certificate_verifier(quic_io::tls::any_server_verifier(provider))
    } else {
        builder.with_root_certificates(roots(tls)?)
    };
    let mut config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let material = quic_io::tls::load(&TlsSource::Files {
                certs: vec![cert.clone()],
                keys: vec![key.clone()],
            })
            .map_err(ClientTlsError::Identity)?;
            builder.with_client_auth_cert(material.chain, material.key)?
        }
        // Validation refuses one without the other.
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A config that trusts nothing, for a client that never speaks TLS but must be given
/// one (reqwest with no provider of its own).
pub fn unused_client_config() -> Result<rustls::ClientConfig, ClientTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

pub(crate) fn roots(tls: &ClientTlsConfig) -> Result<rustls::RootCertStore, ClientTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for path in tls.root.iter() {
        for cert in quic_io::tls::read_certs(&PathBuf::from(path)).map_err(ClientTlsError::Root)? {
            roots.add(cert).map_err(|err| ClientTlsError::BadRoot {
                path: path.to_owned(),
                reason: err.to_string(),
            })?;
        }
    }
    if tls.root.is_empty() || tls.system_roots == Some(true) {
        // Unreadable system certificates are skipped, as every rustls user does; an
        // empty store is refused below rather than failing every request later.
        let system = rustls_native_certs::load_native_certs();
        for error in &system.errors {
            tracing::debug!(%error, "a system root certificate could not be read");
        }
        roots.add_parsable_certificates(system.certs);
    }
    if roots.is_empty() {
        return Err(ClientTlsError::NoRoots);
    }
    Ok(roots)
}
