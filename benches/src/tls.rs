//! Client TLS for the benchmark: pin the relay's certificate by SHA-256 (through
//! quic-io's verifier), or, for a relay on loopback with a generated certificate that the
//! bench started itself, accept any certificate. It owns only the choice of verifier; it
//! must never be used for anything but benchmark traffic.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::BenchError;
use crate::scenario::Trust;

/// A raw-QUIC client config offering `alpn`, with quic-io's transport parameters.
pub fn client_config(
    trust: &Trust,
    alpn: &str,
    config: &quic_io::Config,
) -> Result<quinn_proto::ClientConfig, BenchError> {
    let tls_err = |e: String| BenchError::Config(format!("client TLS: {e}"));
    match trust {
        Trust::Fingerprint(hex) => {
            let digest = parse_fingerprint(hex)?;
            quic_io::tls::client_config(
                quic_io::tls::ServerVerify::Sha256(vec![digest]),
                &[alpn],
                config,
            )
            .map_err(|e| tls_err(e.to_string()))
        }
        Trust::Insecure => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| tls_err(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert { provider }))
                .with_no_client_auth();
            tls.alpn_protocols = vec![alpn.as_bytes().to_vec()];
            let quic = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls)
                .map_err(|e| tls_err(e.to_string()))?;
            let mut cc = quinn_proto::ClientConfig::new(Arc::new(quic));
            let transport =
                quic_io::tls::transport_config(config).map_err(|e| tls_err(e.to_string()))?;
            cc.transport_config(Arc::new(transport));
            Ok(cc)
        }
    }
}

/// 64 hex digits (colons allowed, as some tools print them) into 32 bytes.
pub fn parse_fingerprint(hex: &str) -> Result<[u8; 32], BenchError> {
    let clean: String = hex.chars().filter(|c| *c != ':').collect();
    let bad = || BenchError::Config(format!("fingerprint {hex:?}: want 64 hex digits"));
    if clean.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&clean[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Accepts any certificate but still checks the handshake signatures (so the key matches
/// the presented certificate).
#[derive(Debug)]
struct AnyCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_with_or_without_colons_parses_and_garbage_does_not() {
        let hex = "00".repeat(31) + "ff";
        assert_eq!(parse_fingerprint(&hex).unwrap()[31], 0xff);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert!(parse_fingerprint("abc").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }
}
