//! moq-relay 0.14's unified auth API (`[auth] auth_api`, spec `auth.md` 10.1): one
//! `GET <url>?root=<path>[&kid=<kid>][&mtls=true]&transport=quic` per session, whose JSON
//! answer names the session's alias, its public grants, and the key that verifies its
//! token. It fails closed: any error refuses (502-class).
//!
//! Answers are cached as moq-relay's HTTP cache keeps them, by URL, for the
//! `Cache-Control: max-age` the API sends (none: not kept), in a bounded map.
//!
//! This module owns the call, the answer's shape and the cache. It never touches a
//! worker.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::runner::bounded_body;
use super::{Decision, Outcome, SessionFacts};
use crate::auth::{self, Access, Cause, Rejection};
use crate::config::Generation;

/// Answers kept at once (moq-relay 0.14 keeps 42); past this the entry closest to
/// expiring is dropped first.
pub const MAX_CACHED_ANSWERS: usize = 1024;

/// The longest an answer is kept, whatever `max-age` says: a revoked key should not
/// outlive a day in memory.
const MAX_CACHE_AGE: Duration = Duration::from_secs(24 * 3600);

/// The configured API.
#[derive(Debug)]
pub struct AuthApi {
    base: reqwest::Url,
    generation: Generation,
    cache: Mutex<HashMap<String, (Instant, Answer)>>,
}

/// The API's JSON answer; every member optional, unknown ones ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct Answer {
    alias: Option<String>,
    public: Option<PublicAnswer>,
    key: Option<serde_json::Value>,
    #[allow(dead_code)] // Read so a wrongly typed tier is refused; stats tiers are not built.
    tier: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct PublicAnswer {
    subscribe: Vec<String>,
    publish: Vec<String>,
}

impl AuthApi {
    pub fn new(url: &str, generation: Generation) -> Result<Self, String> {
        let base = reqwest::Url::parse(url).map_err(|err| err.to_string())?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(format!("unsupported scheme `{}`", base.scheme()));
        }
        Ok(Self {
            base,
            generation,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn generation(&self) -> Generation {
        self.generation
    }

    fn rejection(&self, cause: Cause) -> Rejection {
        Rejection::new(cause, self.generation)
    }

    /// Decides a session's `Connect` (0.14 never revalidates: the token's `exp` ends it).
    pub async fn decide(&self, client: &reqwest::Client, facts: &SessionFacts) -> Outcome {
        let token = auth::query_token(&facts.query);
        // A client certificate decides before any token (spec 11); the API only names
        // its alias.
        let certificate = facts.certificate.as_ref();
        let kid = match (&token, certificate) {
            (Some(token), None) => match auth::token_kid(token) {
                Ok(kid) => kid,
                Err(cause) => return Outcome::Refused(self.rejection(cause)),
            },
            _ => None,
        };
        let url = self.url(
            &facts.path,
            kid.as_deref(),
            certificate.is_some(),
            facts.transport,
        );
        let answer = match self.answer(client, url).await {
            Ok(answer) => answer,
            Err(reason) => {
                return Outcome::Unavailable(self.rejection(Cause::DeciderUnavailable(reason)));
            }
        };
        let decided = answer.decide(
            &facts.path,
            token.as_deref(),
            certificate.map(|c| c.expires),
            SystemTime::now(),
        );
        match decided {
            Ok(access) => Outcome::Granted(Decision {
                access,
                revalidate: None,
            }),
            // The API answered but its key does not parse: its fault, 502 as moq-relay.
            Err(cause @ Cause::DeciderUnavailable(_)) => {
                Outcome::Unavailable(self.rejection(cause))
            }
            Err(cause) => Outcome::Refused(self.rejection(cause)),
        }
    }

    /// `root` is the dialed path without its outer slashes; `kid` only with a token;
    /// `mtls` only for a verified certificate; `transport` always.
    fn url(&self, path: &str, kid: Option<&str>, mtls: bool, transport: &str) -> reqwest::Url {
        let mut url = self.base.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("root", path.trim_matches('/'));
            if let Some(kid) = kid {
                query.append_pair("kid", kid);
            }
            if mtls {
                query.append_pair("mtls", "true");
            }
            // 0.14 names no transport for the one-shot HTTP routes.
            if transport != "http" {
                query.append_pair("transport", transport);
            }
        }
        url
    }

    async fn answer(&self, client: &reqwest::Client, url: reqwest::Url) -> Result<Answer, String> {
        let key = url.as_str().to_owned();
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock()
            && let Some((until, answer)) = cache.get(&key)
            && *until > now
        {
            return Ok(answer.clone());
        }
        let response = client
            .get(url)
            .send()
            .await
            .map_err(|err| err.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|value| value.to_str().ok())
            .and_then(cache_lifetime);
        let body = bounded_body(response).await?;
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|err| format!("bad answer: {err}"))?;
        if let Some(max_age) = max_age
            && let Ok(mut cache) = self.cache.lock()
        {
            cache.retain(|_, (until, _)| *until > now);
            if cache.len() >= MAX_CACHED_ANSWERS
                && let Some(soonest) = cache
                    .iter()
                    .min_by_key(|(_, (until, _))| *until)
                    .map(|(key, _)| key.clone())
            {
                cache.remove(&soonest);
            }
            cache.insert(key, (now + max_age.min(MAX_CACHE_AGE), answer.clone()));
            debug_assert!(cache.len() <= MAX_CACHED_ANSWERS);
        }
        Ok(answer)
    }
}

/// How long `Cache-Control` lets a shared cache keep an answer: `max-age` (or
/// `s-maxage`), unless `no-store`, `no-cache` or `private` says not at all.
pub(super) fn cache_lifetime(header: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in header.split(',').map(str::trim) {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        match name.to_ascii_lowercase().as_str() {
            "no-store" | "no-cache" | "private" => return None,
            "max-age" | "s-maxage" => {
                max_age = value.trim_matches('"').parse::<u64>().ok().or(max_age);
            }
            _ => {}
        }
    }
    max_age
        .filter(|&seconds| seconds > 0)
        .map(Duration::from_secs)
}

impl Answer {
    /// The session's grants at the dialed `path`: a certificate gets everything, a token
    /// is verified with the answer's key, else the answer's public grants; the root is
    /// then the alias, which must have as many segments as the path.
    pub(super) fn decide(
        self,
        path: &str,
        token: Option<&str>,
        certificate_expires: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<Access, Cause> {
        let mut access = if certificate_expires.is_some() {
            auth::everything_at(path, certificate_expires)
        } else if let Some(token) = token {
            let key = self
                .key
                .ok_or_else(|| Cause::UnknownKid("(the API named no key)".to_owned()))?;
            auth::authorize_with_key(path, token, &key.to_string(), now)?
        } else {
            let public = self.public.unwrap_or_default();
            auth::public_at(path, &public.publish, &public.subscribe)?
        };
        if let Some(alias) = self.alias {
            let alias = proto::path::normalize(&alias);
            // 0.14 takes a certificate session's alias as it is.
            if certificate_expires.is_none() && segments(&alias) != segments(&access.root) {
                return Err(Cause::InvalidGrant(format!(
                    "alias `{alias}` has not as many segments as `{}`",
                    access.root
                )));
            }
            access.root = alias;
        }
        Ok(access)
    }
}

fn segments(path: &str) -> usize {
    if path.is_empty() {
        0
    } else {
        path.split('/').count()
    }
}
