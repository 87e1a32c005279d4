//! Verifying one JWT against the keys in force, exactly as moq-relay 0.14 (spec
//! `auth.md` 3, 8, 9): key by mode, `alg` equal to the key's, signature, `exp` with no
//! leeway against the caller's clock, `aud` fatal, `nbf`/`iat`/unknown claims ignored,
//! useless tokens refused, the key's `scope` enforced. Also reads 0.17's pattern claims
//! (`publish`/`subscribe`) and refuses tokens that mix the two forms, as moq-auth does.
//!
//! This module owns the claims' wire shape. It never reads the clock, a file or the
//! network: the caller passes `now` and the keys.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use serde::Deserialize;

use super::grant::{Grant, MAX_GRANTS};
use super::key::{Key, valid_kid};
use super::keys::Keys;
use super::rejection::Cause;

/// Verified claims, with grants still relative to `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Normalised.
    pub root: String,
    pub publish: Vec<Grant>,
    pub subscribe: Vec<Grant>,
    pub expires: Option<SystemTime>,
}

/// `"x"`, `["x", "y"]`, `null` or absent (the last two: nothing).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// The payload members read; everything else (`iss`, `sub`, `jti`, `nbf`, the legacy
/// boolean `cluster`) is ignored, as in 0.14. `aud` is refused by jsonwebtoken's
/// validation before this is used.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    root: String,
    put: Option<OneOrMany>,
    get: Option<OneOrMany>,
    publish: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
    /// Integers only: a float or a string makes the token invalid (tested in 0.14).
    exp: Option<i64>,
    #[allow(dead_code)] // Read only so a non-integer `iat` is refused, as moq-token does.
    iat: Option<i64>,
}

/// Verifies `token` with `keys` at time `now`.
pub fn verify(keys: &Keys, token: &str, now: SystemTime) -> Result<Claims, Cause> {
    // Without keys nothing about the token matters: it cannot be checked.
    if keys.is_none() {
        return Err(Cause::AuthenticationDisabled);
    }
    let header =
        jsonwebtoken::decode_header(token).map_err(|err| Cause::MalformedToken(err.to_string()))?;
    let key: &Key = match keys {
        Keys::None => return Err(Cause::AuthenticationDisabled),
        Keys::Single(key) => key,
        Keys::Dir(keys) => {
            let kid = header.kid.as_deref().ok_or(Cause::MissingKid)?;
            if !valid_kid(kid) {
                return Err(Cause::InvalidKid);
            }
            keys.get(kid)
                .ok_or_else(|| Cause::UnknownKid(kid.to_owned()))?
        }
    };
    if !key.can_verify {
        return Err(Cause::KeyCannotVerify);
    }
    if header.alg != key.algorithm.jwt() {
        return Err(Cause::WrongAlgorithm {
            token: format!("{:?}", header.alg),
            key: key.algorithm.to_string(),
        });
    }

    let mut validation = jsonwebtoken::Validation::new(key.algorithm.jwt());
    // No claim is required; `exp` is compared below, exactly, against the caller's
    // clock (jsonwebtoken's default leeway is 60 s, 0.14 has none). `nbf` stays
    // unchecked and `aud` checked against no audience, which refuses any `aud`.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    let raw = jsonwebtoken::decode::<RawClaims>(token, &key.decoding, &validation)
        .map_err(|err| match err.kind() {
            ErrorKind::InvalidSignature => Cause::BadSignature,
            ErrorKind::InvalidAudience => Cause::Audience,
            ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => {
                Cause::InvalidClaims(err.to_string())
            }
            _ => Cause::MalformedToken(err.to_string()),
        })?
        .claims;

    let expires = raw.exp.map(unix_time);
    if let Some(expires) = expires
        && expires < now
    {
        return Err(Cause::Expired(expires));
    }

    let legacy = raw.put.is_some() || raw.get.is_some();
    let patterns = raw.publish.is_some() || raw.subscribe.is_some();
    if legacy && patterns {
        return Err(Cause::MixedClaims);
    }
    let (publish, subscribe) = if patterns {
        (
            pattern_grants(raw.publish.unwrap_or_default())?,
            pattern_grants(raw.subscribe.unwrap_or_default())?,
        )
    } else {
        (
            prefix_grants(raw.put.map(OneOrMany::into_vec).unwrap_or_default())?,
            prefix_grants(raw.get.map(OneOrMany::into_vec).unwrap_or_default())?,
        )
    };
    if publish.is_empty() && subscribe.is_empty() {
        return Err(Cause::UselessToken);
    }
    let claims = Claims {
        root: proto::path::normalize(&raw.root),
        publish,
        subscribe,
        expires,
    };
    if let Some(scope) = &key.scope {
        let covered = |grants: &[Grant], ceiling: &[String]| {
            grants.iter().all(|grant| {
                ceiling
                    .iter()
                    .any(|entry| grant.within(&claims.root, &scope.root, entry))
            })
        };
        if !covered(&claims.publish, &scope.put) || !covered(&claims.subscribe, &scope.get) {
            return Err(Cause::ScopeExceeded);
        }
    }
    Ok(claims)
}

/// `exp` as a time; values past what `SystemTime` holds saturate to "far future" or the
/// epoch, which only ever keeps a token valid longer than the heat death of the sun.
fn unix_time(seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        UNIX_EPOCH
            .checked_add(magnitude)
            .unwrap_or(UNIX_EPOCH + Duration::from_secs(u32::MAX.into()) * 64)
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

fn prefix_grants(values: Vec<String>) -> Result<Vec<Grant>, Cause> {
    if values.len() > MAX_GRANTS {
        return Err(Cause::TooManyGrants);
    }
    // 0.14 claims are prefixes, `*` included as an ordinary byte.
    Ok(values
        .iter()
        .map(|value| Grant::Prefix(proto::path::normalize(value)))
        .collect())
}

fn pattern_grants(values: Vec<String>) -> Result<Vec<Grant>, Cause> {
    if values.len() > MAX_GRANTS {
        return Err(Cause::TooManyGrants);
    }
    values
        .iter()
        .map(|value| Grant::pattern(value).map_err(|err| Cause::InvalidClaims(err.to_string())))
        .collect()
}
