//! Client TLS for the benchmark: pin the relay's certificate by SHA-256 (through
//! quic-io's verifier), or, for a relay on loopback with a generated certificate that the
//! bench started itself, accept any certificate. It owns only the choice of verifier; it
//! must never be used for anything but benchmark traffic.

use crate::BenchError;
use crate::scenario::Trust;

/// A raw-QUIC client config offering `alpn`, with quic-io's transport parameters.
pub fn client_config(
    trust: &Trust,
    alpn: &str,
    config: &quic_io::Config,
) -> Result<quinn_proto::ClientConfig, BenchError> {
    let verify = match trust {
        Trust::Fingerprint(hex) => {
            quic_io::tls::ServerVerify::Sha256(vec![parse_fingerprint(hex)?])
        }
        Trust::Insecure => quic_io::tls::ServerVerify::AnyCertificate,
    };
    quic_io::tls::client_config(verify, &[alpn], config)
        .map_err(|e| BenchError::Config(format!("client TLS: {e}")))
}

/// 64 hex digits (colons allowed, as some tools print them) into 32 bytes.
pub fn parse_fingerprint(hex: &str) -> Result<[u8; 32], BenchError> {
    quic_io::tls::parse_fingerprint(hex)
        .ok_or_else(|| BenchError::Config(format!("fingerprint {hex:?}: want 64 hex digits")))
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
