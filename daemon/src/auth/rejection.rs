//! Why a session was refused, the close code the client must see for it (spec
//! `auth.md` 13 for 0.14, `moq-relay-0.17.md` 2.7 for 0.17) and a stable label per
//! cause for metrics and logs.
//!
//! The close code depends on the config generation, so a `Rejection` carries the
//! generation of the `Authenticator` that made it. This module never decides anything.

use std::time::SystemTime;

use crate::config::Generation;

/// moq-relay 0.14's close code for every 401/403-class refusal (and for expiry).
pub const CLOSE_UNAUTHORIZED_014: u64 = 6;
/// moq-relay 0.17's (moq-net 0.3 registry `Unauthorized`).
pub const CLOSE_UNAUTHORIZED_017: u64 = 0x2;
/// Other refusals close with this plus the internal HTTP status (502 → 566), both
/// generations.
pub const CLOSE_HTTP_STATUS_BASE: u64 = 64;

/// What went wrong. Paths are normalised connection paths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Cause {
    #[error("a token was expected: no anonymous access at `/{0}`")]
    NoPublicAccess(String),
    #[error("a token was presented but authentication is disabled (no [auth] key or key_dir)")]
    AuthenticationDisabled,
    #[error("the token is {0} bytes, more than the {max} accepted", max = super::MAX_TOKEN_BYTES)]
    TokenTooLong(usize),
    #[error("the token is not a well-formed JWT: {0}")]
    MalformedToken(String),
    #[error("the token's claims are invalid: {0}")]
    InvalidClaims(String),
    #[error("the token header has no `kid`, which `key_dir` needs to pick a key")]
    MissingKid,
    #[error("the token `kid` is not 1 to 128 characters from A-Z a-z 0-9 _ -")]
    InvalidKid,
    #[error("no key `{0}.jwk` in the key directory")]
    UnknownKid(String),
    #[error("the key's `key_ops` does not allow `verify`")]
    KeyCannotVerify,
    #[error("the token is signed with {token}, the key is {key}")]
    WrongAlgorithm { token: String, key: String },
    #[error("the token signature does not verify")]
    BadSignature,
    #[error("the token has an `aud` claim; no audience is configured, so none is accepted")]
    Audience,
    #[error("the token expired at {} (unix seconds)", unix_seconds(*.0))]
    Expired(SystemTime),
    #[error("the token grants nothing (no `put`/`get`/`publish`/`subscribe`)")]
    UselessToken,
    #[error("the token mixes `put`/`get` with `publish`/`subscribe`")]
    MixedClaims,
    #[error("the token lists more than {max} grants in one claim", max = super::grant::MAX_GRANTS)]
    TooManyGrants,
    #[error("the token grants more than its key's `scope` allows")]
    ScopeExceeded,
    #[error("the connection path `/{0}` does not overlap the token root")]
    RootMismatch(String),
    #[error("nothing is granted at `/{0}`")]
    NothingGranted(String),
    #[error("the session asks to {0} but is not granted it")]
    RoleNotGranted(&'static str),
    #[error("the auth decider could not be asked: {0}")]
    DeciderUnavailable(String),
    #[error("the auth decider refused the session (HTTP {0})")]
    DeciderRefused(u16),
    #[error("the auth decider's grant is invalid: {0}")]
    InvalidGrant(String),
}

impl Cause {
    /// How many causes there are: [`Cause::index`] is below this, so a per-cause
    /// counter is a fixed array.
    pub const COUNT: usize = 23;

    /// [`Cause::label`] of each [`Cause::index`], in order.
    pub const LABELS: [&'static str; Cause::COUNT] = [
        "no_public_access",
        "auth_disabled",
        "token_too_long",
        "malformed_token",
        "invalid_claims",
        "missing_kid",
        "invalid_kid",
        "unknown_kid",
        "key_cannot_verify",
        "wrong_algorithm",
        "bad_signature",
        "audience",
        "expired",
        "useless_token",
        "mixed_claims",
        "too_many_grants",
        "scope_exceeded",
        "root_mismatch",
        "nothing_granted",
        "role_not_granted",
        "auth_unavailable",
        "auth_refused",
        "invalid_grant",
    ];

    /// A dense number per cause, below [`Cause::COUNT`], for per-cause counters.
    pub fn index(&self) -> usize {
        match self {
            Cause::NoPublicAccess(_) => 0,
            Cause::AuthenticationDisabled => 1,
            Cause::TokenTooLong(_) => 2,
            Cause::MalformedToken(_) => 3,
            Cause::InvalidClaims(_) => 4,
            Cause::MissingKid => 5,
            Cause::InvalidKid => 6,
            Cause::UnknownKid(_) => 7,
            Cause::KeyCannotVerify => 8,
            Cause::WrongAlgorithm { .. } => 9,
            Cause::BadSignature => 10,
            Cause::Audience => 11,
            Cause::Expired(_) => 12,
            Cause::UselessToken => 13,
            Cause::MixedClaims => 14,
            Cause::TooManyGrants => 15,
            Cause::ScopeExceeded => 16,
            Cause::RootMismatch(_) => 17,
            Cause::NothingGranted(_) => 18,
            Cause::RoleNotGranted(_) => 19,
            Cause::DeciderUnavailable(_) => 20,
            Cause::DeciderRefused(_) => 21,
            Cause::InvalidGrant(_) => 22,
        }
    }

    /// A stable label per cause, for metrics and log fields. Never renamed.
    pub fn label(&self) -> &'static str {
        let index = self.index();
        debug_assert!(index < Cause::COUNT);
        Cause::LABELS[index]
    }

    /// The HTTP status moq-relay maps this cause to internally (spec 13); it decides
    /// the close code and what an HTTP route (WebSocket upgrade, `/announced`) answers.
    pub fn status(&self) -> u16 {
        match self {
            Cause::RoleNotGranted(_) => 403,
            // An auth backend that cannot be asked is moq-relay's 502.
            // 0.17 answers an invalid grant as unavailable (close code 566).
            Cause::DeciderUnavailable(_) | Cause::InvalidGrant(_) => 502,
            Cause::DeciderRefused(status) => *status,
            _ => 401,
        }
    }
}

/// `exp` as written in the token, for messages.
fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A refused session: the cause, and the close code of the config generation in use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{cause}")]
pub struct Rejection {
    cause: Cause,
    generation: Generation,
}

impl Rejection {
    pub fn new(cause: Cause, generation: Generation) -> Self {
        Self { cause, generation }
    }

    pub fn cause(&self) -> &Cause {
        &self.cause
    }

    /// A stable label for metrics (`no_public_access`, `expired`, ...).
    pub fn reason(&self) -> &'static str {
        self.cause.label()
    }

    pub fn status(&self) -> u16 {
        self.cause.status()
    }

    /// The application close code: 401/403-class is 6 for a 0.14 (or undetermined)
    /// configuration and 0x2 for a 0.17 one; anything else is 64 + status.
    pub fn close_code(&self) -> u64 {
        close_code(self.status(), self.generation)
    }
}

/// The close code for an internal HTTP status under a generation; also what a session
/// whose credential expires mid-session is closed with (status 401).
pub fn close_code(status: u16, generation: Generation) -> u64 {
    match (status, generation) {
        (401 | 403, Generation::V017) => CLOSE_UNAUTHORIZED_017,
        // An undetermined file keeps 0.14's code: this relay's behaviour before it
        // knew 0.17, and what moq-lite-05 clients of the 0.14 era read as Unauthorized.
        (401 | 403, Generation::V014 | Generation::Unknown) => CLOSE_UNAUTHORIZED_014,
        (status, _) => CLOSE_HTTP_STATUS_BASE + u64::from(status),
    }
}
