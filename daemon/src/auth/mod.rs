//! Who may publish and subscribe where, decided once per session from the connection
//! path and its `?jwt=` query, as moq-relay decides it: JWT verification and public
//! access as in 0.14 (spec `auth.md`), 0.17 path patterns where the configuration is
//! written for 0.17 (spec `moq-relay-0.17.md` 2.3, 2.4), and each generation's close
//! codes.
//!
//! This module owns the `[auth]` policy in force (keys, public grants, generation), its
//! reload, and the decision per session. It never reads the network, and it reads the
//! disk only in `new` and `reload`: the caller hands it the path and query the
//! transport captured (the WebTransport CONNECT URL, or a moq-lite-05 SETUP `Path`
//! split with [`split_target`]). A present but bad token is never downgraded to public
//! access.
//!
//! Submodules, one concern each: `grant` (prefix and pattern arithmetic), `key` (one
//! JWK), `keys` (key sources, start errors), `verify` (one JWT), `access` (the session
//! view), `rejection` (causes, labels, close codes).

mod access;
mod grant;
mod key;
mod keys;
mod rejection;
mod verify;

#[cfg(test)]
mod tests;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use proto::path::normalize;

use crate::config::{AuthConfig, Generation, Strings};

pub use access::Access;
pub use grant::{Grant, GrantError, MAX_GRANTS};
pub use key::{Algorithm, KeyError, Scope};
pub use keys::{AuthError, MAX_KEY_DIR_KEYS, MAX_KEY_FILE_BYTES};
pub use rejection::{
    CLOSE_HTTP_STATUS_BASE, CLOSE_UNAUTHORIZED_014, CLOSE_UNAUTHORIZED_017, Cause, Rejection,
    close_code,
};

use keys::Keys;

/// moq-relay 0.14's close code for refusals. Kept for callers that predate the
/// generations; prefer [`Rejection::close_code`].
pub const CLOSE_UNAUTHORIZED: u64 = CLOSE_UNAUTHORIZED_014;

/// A `jwt` value longer than this is refused before any parsing: real tokens are a few
/// hundred bytes, and a query is attacker-controlled.
pub const MAX_TOKEN_BYTES: usize = 8 << 10;

/// The direction a moq-lite-05 SETUP `Role` asks for (spec `auth.md` 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Absent, `0` or unknown: whatever the token grants.
    Any,
    Publisher,
    Subscriber,
}

/// Everything `[auth]` decides, swapped whole on reload.
#[derive(Debug, Default)]
struct Policy {
    keys: Keys,
    public_subscribe: Vec<Grant>,
    public_publish: Vec<Grant>,
    /// `auth_api` or `url` is configured: an external decider (`crate::decider`) decides
    /// every session, asked off the workers; this policy decides none.
    external: bool,
}

impl Policy {
    fn load(config: &AuthConfig) -> Result<Self, AuthError> {
        let generation = config.generation;
        let mut subscribe = Vec::new();
        let mut publish = Vec::new();
        if let Some(public) = &config.public {
            let key = if public.subscribe == public.publish {
                "public"
            } else {
                "public.subscribe"
            };
            read_public(key, &public.subscribe, generation, &mut subscribe)?;
            read_public("public.publish", &public.publish, generation, &mut publish)?;
        }
        // 0.14 ignores these 0.17 keys, so a 0.14 file keeps ignoring them. Their values
        // are 0.17 patterns wherever they are read.
        if generation != Generation::V014 {
            let both = Generation::V017;
            read_public(
                "public_subscribe",
                &config.public_subscribe,
                both,
                &mut subscribe,
            )?;
            read_public("public_publish", &config.public_publish, both, &mut publish)?;
        }
        Ok(Self {
            keys: Keys::load(config.key.as_deref(), config.key_dir.as_deref())?,
            public_subscribe: subscribe,
            public_publish: publish,
            external: config.auth_api.is_some() || config.url.is_some(),
        })
    }
}

fn read_public(
    key: &'static str,
    values: &Strings,
    generation: Generation,
    out: &mut Vec<Grant>,
) -> Result<(), AuthError> {
    for value in values.iter() {
        if out.len() == MAX_GRANTS {
            return Err(AuthError::TooManyPublic { key });
        }
        let grant = Grant::from_config(value, generation)
            .map_err(|source| AuthError::Public { key, source })?;
        if !out.contains(&grant) {
            out.push(grant);
        }
    }
    Ok(())
}

/// The `[auth]` section in force, shared by every worker.
#[derive(Debug)]
pub struct Authenticator {
    generation: Generation,
    /// Read once per session (an `Arc` clone under the read lock), written on reload.
    policy: RwLock<Arc<Policy>>,
}

impl Authenticator {
    /// Loads the keys and public grants. A key that cannot be read or used is an error
    /// naming its file.
    pub fn new(config: &AuthConfig) -> Result<Self, AuthError> {
        // jsonwebtoken panics on first use when feature unification leaves it with no
        // backend or two; find out at start instead.
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
            return Err(AuthError::NoCryptoProvider);
        }
        Ok(Self {
            generation: config.generation,
            policy: RwLock::new(Arc::new(Policy::load(config)?)),
        })
    }

    /// Re-reads keys and public grants (SIGHUP). On any error the policy in force is
    /// kept, and the error says why. The generation is the one the process started
    /// with: close codes do not change under running clients.
    pub fn reload(&self, config: &AuthConfig) -> Result<(), AuthError> {
        let policy = Arc::new(Policy::load(config)?);
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = policy;
        Ok(())
    }

    pub fn generation(&self) -> Generation {
        self.generation
    }

    fn policy(&self) -> Arc<Policy> {
        // A panic while holding the lock cannot leave a half-written `Arc`.
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True when no session can ever be granted anything (no public grant, no keys).
    pub fn refuses_everyone(&self) -> bool {
        let policy = self.policy();
        policy.public_subscribe.is_empty()
            && policy.public_publish.is_empty()
            && policy.keys.is_none()
            && !policy.external
    }

    /// Decides a session from its connection path and URL query (without the `?`), at
    /// the current time.
    pub fn authorize(&self, path: &str, query: &str) -> Result<Access, Rejection> {
        self.authorize_at(path, query, SystemTime::now())
    }

    /// A WebTransport session whose client presented a certificate that chains to
    /// `[server.tls] root` (0.14, spec `auth.md` 11): full publish and subscribe under its
    /// connection path, whatever its query says, until the certificate's `notAfter`.
    pub fn authorize_peer_certificate(
        &self,
        path: &str,
        not_after: SystemTime,
    ) -> Result<Access, Rejection> {
        // With an external decider it decides certificate sessions too (0.14 asks
        // `auth_api` for their alias); nothing here may.
        if self.policy().external {
            return Err(Rejection::new(external_only(), self.generation));
        }
        let root = normalize(path);
        let everything = [Grant::Prefix(String::new())];
        access::reduce(&root, &root, &everything, &everything, Some(not_after))
            .map_err(|cause| Rejection::new(cause, self.generation))
    }

    /// [`authorize`](Self::authorize) with the caller's clock: `exp` is compared with
    /// `now`, exactly.
    pub fn authorize_at(
        &self,
        path: &str,
        query: &str,
        now: SystemTime,
    ) -> Result<Access, Rejection> {
        self.decide(path, query, now)
            .map_err(|cause| Rejection::new(cause, self.generation))
    }

    fn decide(&self, path: &str, query: &str, now: SystemTime) -> Result<Access, Cause> {
        let root = normalize(path);
        let policy = self.policy();
        if policy.external {
            return Err(external_only());
        }
        if let Some(token) = token(query) {
            if token.len() > MAX_TOKEN_BYTES {
                return Err(Cause::TokenTooLong(token.len()));
            }
            let claims = verify::verify(&policy.keys, &token, now)?;
            return access::reduce(
                &root,
                &claims.root,
                &claims.publish,
                &claims.subscribe,
                claims.expires,
            );
        }
        // Anonymous: rooted at the global root and reduced at the path (spec 7.2). A
        // grant overlaps the path exactly when something of it survives the rebase, so
        // "no overlap" and "nothing granted" are one refusal here.
        access::reduce(
            &root,
            "",
            &policy.public_publish,
            &policy.public_subscribe,
            None,
        )
        .map_err(|_| Cause::NoPublicAccess(root))
    }

    /// The moq-lite-05 Role check (spec 6.1): a publisher needs a publish grant, a
    /// subscriber a subscribe grant; refused as HTTP 403.
    pub fn check_role(&self, access: &Access, role: Role) -> Result<(), Rejection> {
        let refused = match role {
            Role::Publisher if access.publish.is_empty() => Some("publish"),
            Role::Subscriber if access.subscribe.is_empty() => Some("subscribe"),
            _ => None,
        };
        match refused {
            Some(direction) => Err(Rejection::new(
                Cause::RoleNotGranted(direction),
                self.generation,
            )),
            None => Ok(()),
        }
    }
}

/// What a synchronous decision says where only the external decider may decide.
fn external_only() -> Cause {
    Cause::DeciderUnavailable("only the configured auth decider decides sessions".to_owned())
}

/// 0.14 `auth_api` (spec `auth.md` 10.1): the token's `kid`, which the API is asked
/// for, read from its header without verifying anything.
pub fn token_kid(token: &str) -> Result<Option<String>, Cause> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Cause::TokenTooLong(token.len()));
    }
    let header =
        jsonwebtoken::decode_header(token).map_err(|err| Cause::MalformedToken(err.to_string()))?;
    match header.kid {
        Some(kid) if !key::valid_kid(&kid) => Err(Cause::InvalidKid),
        kid => Ok(kid),
    }
}

/// 0.14 `auth_api`: verifies `token` with the JWK the API returned (JSON text) at `now`
/// and reduces its claims at the dialed `path`, exactly as a `[auth] key` would.
pub fn authorize_with_key(
    path: &str,
    token: &str,
    jwk: &str,
    now: SystemTime,
) -> Result<Access, Cause> {
    let key = key::Key::parse(jwk)
        .map_err(|err| Cause::DeciderUnavailable(format!("the API's key: {err}")))?;
    let claims = verify::verify(&Keys::Single(Arc::new(key)), token, now)?;
    access::reduce(
        &normalize(path),
        &claims.root,
        &claims.publish,
        &claims.subscribe,
        claims.expires,
    )
}

/// 0.14 `auth_api`'s `public` answer: prefixes relative to the dialed `path`.
pub fn public_at(path: &str, publish: &[String], subscribe: &[String]) -> Result<Access, Cause> {
    let root = normalize(path);
    let prefixes = |list: &[String]| -> Result<Vec<Grant>, Cause> {
        if list.len() > MAX_GRANTS {
            return Err(Cause::TooManyGrants);
        }
        let mut grants: Vec<Grant> = Vec::with_capacity(list.len());
        for grant in list.iter().map(|p| Grant::Prefix(normalize(p))) {
            if !grants.contains(&grant) {
                grants.push(grant);
            }
        }
        Ok(grants)
    };
    access::reduce(
        &root,
        &root,
        &prefixes(publish)?,
        &prefixes(subscribe)?,
        None,
    )
    .map_err(|_| Cause::NoPublicAccess(root))
}

/// Everything under the dialed `path`, until `expires` (a verified client certificate).
pub fn everything_at(path: &str, expires: Option<SystemTime>) -> Access {
    let root = normalize(path);
    let everything = vec![Grant::Prefix(String::new())];
    Access::new(root, everything.clone(), everything, expires)
}

/// The `jwt` query value, as [`Authenticator::authorize`] reads it.
pub fn query_token(query: &str) -> Option<String> {
    token(query)
}

/// Splits a moq-lite-05 SETUP `Path` (or any request target) at the first `?` into the
/// connection path and its query; an empty path is `/`.
pub fn split_target(target: &str) -> (&str, &str) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    (if path.is_empty() { "/" } else { path }, query)
}

/// The `jwt` query value: `application/x-www-form-urlencoded`, empty values skipped,
/// the last non-empty one wins.
fn token(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(key, value)| key == "jwt" && !value.is_empty())
        .map(|(_, value)| value.into_owned())
        .last()
}
