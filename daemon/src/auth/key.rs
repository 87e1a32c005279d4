//! One verifying key: a JWK file as moq-relay 0.14 reads it (spec `auth.md` 9), either
//! plain JSON or the legacy base64url-encoded JSON that `moq-token generate` writes.
//!
//! This module owns parsing and checking a key (algorithm, key type, curve, sizes,
//! `key_ops`, `kid`, `scope`) and turning it into a jsonwebtoken `DecodingKey`. Every
//! check moq-relay makes lazily, at first use, is made here at load, so a key that could
//! never verify fails at start (or at reload) instead of on every connection. It never
//! reads a file itself and never sees a token.

use std::fmt;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

/// JWK binary members are base64url; both padded and unpadded spellings load, the
/// standard alphabet (`+`, `/`) does not (spec 9.2, tested against moq-token).
const BASE64URL_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// moq-token (and the JS tool) refuse shorter HMAC secrets, whatever the HS variant.
const MIN_OCT_SECRET_BYTES: usize = 32;

/// A key id is at most this long (spec 8); it also names a file in `key_dir`.
pub const MAX_KID_LEN: usize = 128;

/// The twelve algorithms moq-token supports, spelled as in JWK `alg` and JWS headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HS256,
    HS384,
    HS512,
    ES256,
    ES384,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    EdDSA,
}

impl Algorithm {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "HS256" => Self::HS256,
            "HS384" => Self::HS384,
            "HS512" => Self::HS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "EdDSA" => Self::EdDSA,
            _ => return None,
        })
    }

    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Self::HS256 => J::HS256,
            Self::HS384 => J::HS384,
            Self::HS512 => J::HS512,
            Self::ES256 => J::ES256,
            Self::ES384 => J::ES384,
            Self::RS256 => J::RS256,
            Self::RS384 => J::RS384,
            Self::RS512 => J::RS512,
            Self::PS256 => J::PS256,
            Self::PS384 => J::PS384,
            Self::PS512 => J::PS512,
            Self::EdDSA => J::EdDSA,
        }
    }

    fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }

    fn is_rsa(self) -> bool {
        matches!(
            self,
            Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 | Self::PS384 | Self::PS512
        )
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a key file's text is not a usable verifying key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not base64url-encoded JSON (the legacy key file form): {0}")]
    LegacyBase64(base64::DecodeError),
    #[error("the legacy base64url form does not decode to UTF-8 text")]
    LegacyUtf8,
    #[error("not a JWK: {0}")]
    Json(#[from] serde_json::Error),
    #[error("a JWK Set (`keys`) is not accepted here; a key file holds exactly one JWK")]
    KeySet,
    #[error(
        "`alg` `{0}` is not one of HS256/384/512, ES256/384, RS256/384/512, PS256/384/512, EdDSA"
    )]
    UnknownAlgorithm(String),
    #[error("`kty` `{0}` is not one of oct, EC, RSA, OKP")]
    UnknownKeyType(String),
    #[error("`alg` {alg} cannot be used with `kty` {kty}")]
    AlgorithmForKeyType { alg: Algorithm, kty: &'static str },
    #[error("`crv` `{crv}` cannot be used with `alg` {alg}")]
    Curve { crv: String, alg: Algorithm },
    #[error("`{0}` is required for this key type")]
    Missing(&'static str),
    #[error("`{member}` is not base64url: {source}")]
    Member {
        member: &'static str,
        source: base64::DecodeError,
    },
    #[error("`{member}` must be {expected} bytes, not {actual}")]
    Length {
        member: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("the `oct` secret `k` must be at least {MIN_OCT_SECRET_BYTES} bytes, not {0}")]
    SecretTooShort(usize),
    #[error("`kid` `{0}` must be 1 to {MAX_KID_LEN} characters from A-Z a-z 0-9 _ -")]
    Kid(String),
    #[error("`scope` grants nothing (both `put` and `get` are empty)")]
    UselessScope,
    #[error("cannot build the verifier: {0}")]
    Verifier(jsonwebtoken::errors::Error),
}

/// A key's `scope`: the ceiling on what tokens it verifies may grant (spec 9.4). Lists
/// must be JSON arrays here; a bare string is a parse error, as in moq-token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Scope {
    pub root: String,
    pub put: Vec<String>,
    pub get: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum KeyOperation {
    Sign,
    Verify,
    Encrypt,
    Decrypt,
}

/// The JWK members moq-token reads; unknown ones (`use`, `x5c`, the JS tool's `guest*`)
/// are ignored, as there.
#[derive(Deserialize)]
struct Jwk {
    alg: String,
    kty: Option<String>,
    key_ops: Option<Vec<KeyOperation>>,
    kid: Option<String>,
    scope: Option<Scope>,
    k: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    /// Only to refuse a JWK Set with a message that says so.
    keys: Option<serde_json::Value>,
}

/// A verifying key, ready for every token signed for it.
#[derive(Clone)]
pub struct Key {
    pub algorithm: Algorithm,
    pub kid: Option<String>,
    pub scope: Option<Scope>,
    /// False for a key whose `key_ops` lacks `verify`: it loads, and every token signed
    /// for it is refused (moq-token's behaviour).
    pub can_verify: bool,
    pub decoding: DecodingKey,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the material: an HMAC key's decoding key is the secret.
        f.debug_struct("Key")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("scope", &self.scope)
            .field("can_verify", &self.can_verify)
            .finish_non_exhaustive()
    }
}

/// `[A-Za-z0-9_-]{1,128}`: also what keeps a `kid` from naming a path outside `key_dir`.
pub fn valid_kid(kid: &str) -> bool {
    (1..=MAX_KID_LEN).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Key {
    /// Parses a key file's text: JSON when it starts with `{` after trimming, else the
    /// legacy base64url (unpadded or padded) encoding of that JSON.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let jwk: Jwk = if text.starts_with('{') {
            serde_json::from_str(text)?
        } else {
            let json = BASE64URL_ANY_PADDING
                .decode(text)
                .map_err(KeyError::LegacyBase64)?;
            let json = String::from_utf8(json).map_err(|_| KeyError::LegacyUtf8)?;
            serde_json::from_str(&json)?
        };
        Self::from_jwk(jwk)
    }

    fn from_jwk(jwk: Jwk) -> Result<Self, KeyError> {
        if jwk.keys.is_some() {
            return Err(KeyError::KeySet);
        }
        let alg = Algorithm::parse(&jwk.alg)
            .ok_or_else(|| KeyError::UnknownAlgorithm(jwk.alg.clone()))?;
        if let Some(kid) = jwk.kid.as_deref().filter(|kid| !valid_kid(kid)) {
            return Err(KeyError::Kid(kid.to_owned()));
        }
        if let Some(scope) = &jwk.scope
            && scope.put.is_empty()
            && scope.get.is_empty()
        {
            return Err(KeyError::UselessScope);
        }
        // 0.14 defaults a missing `kty` to `oct`: keys minted before it was written
        // must keep verifying.
        let decoding = match jwk.kty.as_deref().unwrap_or("oct") {
            "oct" => {
                if !alg.is_hmac() {
                    return Err(KeyError::AlgorithmForKeyType { alg, kty: "oct" });
                }
                let secret = member("k", jwk.k.as_deref())?;
                if secret.len() < MIN_OCT_SECRET_BYTES {
                    return Err(KeyError::SecretTooShort(secret.len()));
                }
                DecodingKey::from_secret(&secret).map_err(KeyError::Verifier)?
            }
            "EC" => {
                let crv = jwk.crv.as_deref().ok_or(KeyError::Missing("crv"))?;
                let size = match (crv, alg) {
                    ("P-256", Algorithm::ES256) => 32,
                    ("P-384", Algorithm::ES384) => 48,
                    _ => {
                        return Err(KeyError::Curve {
                            crv: crv.to_owned(),
                            alg,
                        });
                    }
                };
                let x = sized_member("x", jwk.x.as_deref(), size)?;
                let y = sized_member("y", jwk.y.as_deref(), size)?;
                DecodingKey::from_ec_components(&unpadded(&x), &unpadded(&y))
                    .map_err(KeyError::Verifier)?
            }
            "OKP" => {
                let crv = jwk.crv.as_deref().ok_or(KeyError::Missing("crv"))?;
                if crv != "Ed25519" || alg != Algorithm::EdDSA {
                    return Err(KeyError::Curve {
                        crv: crv.to_owned(),
                        alg,
                    });
                }
                let x = sized_member("x", jwk.x.as_deref(), 32)?;
                DecodingKey::from_ed_components(&unpadded(&x)).map_err(KeyError::Verifier)?
            }
            "RSA" => {
                if !alg.is_rsa() {
                    return Err(KeyError::AlgorithmForKeyType { alg, kty: "RSA" });
                }
                let n = member("n", jwk.n.as_deref())?;
                let e = member("e", jwk.e.as_deref())?;
                DecodingKey::from_rsa_raw_components(&n, &e)
            }
            other => return Err(KeyError::UnknownKeyType(other.to_owned())),
        };
        let can_verify = jwk
            .key_ops
            .as_deref()
            .is_none_or(|ops| ops.contains(&KeyOperation::Verify));
        Ok(Key {
            algorithm: alg,
            kid: jwk.kid,
            scope: jwk.scope,
            can_verify,
            decoding,
        })
    }
}

fn member(name: &'static str, value: Option<&str>) -> Result<Vec<u8>, KeyError> {
    let value = value.ok_or(KeyError::Missing(name))?;
    BASE64URL_ANY_PADDING
        .decode(value)
        .map_err(|source| KeyError::Member {
            member: name,
            source,
        })
}

fn sized_member(name: &'static str, value: Option<&str>, size: usize) -> Result<Vec<u8>, KeyError> {
    let bytes = member(name, value)?;
    if bytes.len() != size {
        return Err(KeyError::Length {
            member: name,
            expected: size,
            actual: bytes.len(),
        });
    }
    Ok(bytes)
}

/// jsonwebtoken's component constructors want unpadded base64url text.
fn unpadded(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
