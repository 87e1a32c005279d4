//! A test PKI: a CA and the client certificates it signs (rcgen), as files the relay
//! and the clients read.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

/// A CA (its certificate in `ca.pem`) and the client certificates it signs.
pub struct Pki {
    pub dir: TempDir,
    pub ca: PathBuf,
    pub issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A client certificate's files and its `notAfter`.
pub struct Client {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub not_after: SystemTime,
}

/// A new CA: its certificate PEM and what signs under it.
pub fn authority(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), rcgen::Issuer::new(params, key))
}

impl Pki {
    pub fn new() -> Pki {
        let dir = TempDir::new().unwrap();
        let ca = dir.path().join("ca.pem");
        let (pem, issuer) = authority("moq-relayd test CA");
        std::fs::write(&ca, pem).unwrap();
        Pki { dir, ca, issuer }
    }

    /// A client certificate valid for `validity` from now (whole seconds, as X.509
    /// stores them), signed by `issuer`.
    pub fn client(&self, name: &str, validity: Duration) -> Client {
        self.client_of(name, &self.issuer, validity)
    }

    pub fn client_of(
        &self,
        name: &str,
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
        validity: Duration,
    ) -> Client {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![format!("{name}.test")]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let not_after_secs = now + validity.as_secs();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(now as i64 - 60).unwrap();
        params.not_after =
            time::OffsetDateTime::from_unix_timestamp(not_after_secs as i64).unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        let (cert_path, key_path) = (
            self.dir.path().join(format!("{name}.pem")),
            self.dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Client {
            cert: cert_path,
            key: key_path,
            not_after: UNIX_EPOCH + Duration::from_secs(not_after_secs),
        }
    }
}
