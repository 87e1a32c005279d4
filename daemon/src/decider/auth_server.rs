//! moq-relay 0.17's auth server (`[auth] url`, spec `moq-relay-0.17.md` 2.5): one JSON
//! `POST` per session event (`connect`, `revalidate`, `end`) and the grant a 2xx reply
//! carries. 401 or 403 refuses; anything else is "unavailable".
//!
//! This module owns the request's and the grant's wire shapes and what a grant means
//! for a session. It never touches a worker.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::facts::{ClientCertificate, EndFacts};
use super::runner::bounded_body;
use super::{Ask, Decision, Outcome, SessionFacts};
use crate::auth::{Access, Cause, Grant, MAX_GRANTS, Rejection, Role};
use crate::config::Generation;

/// The configured auth server.
#[derive(Debug)]
pub struct AuthServer {
    /// Where requests go (for `unix://`, `http://localhost/` over the socket).
    target: String,
    generation: Generation,
}

impl AuthServer {
    /// Checks `url` as moq-relay does: `https://`; `http://` only to a loopback host
    /// (a token in clear text must not cross a network); `unix:///path`.
    pub fn new(url: &str, generation: Generation) -> Result<Self, String> {
        let target = if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(
                    "a unix:// URL needs an absolute socket path (unix:///run/auth.sock)"
                        .to_owned(),
                );
            }
            "http://localhost/".to_owned()
        } else {
            let parsed = reqwest::Url::parse(url).map_err(|err| err.to_string())?;
            match parsed.scheme() {
                "https" => {}
                "http" if is_loopback(parsed.host_str().unwrap_or_default()) => {}
                "http" => {
                    return Err(
                        "http:// is allowed only to a loopback host; use https://".to_owned()
                    );
                }
                scheme => return Err(format!("unsupported scheme `{scheme}`")),
            }
            url.to_owned()
        };
        Ok(Self { target, generation })
    }

    pub fn generation(&self) -> Generation {
        self.generation
    }

    fn rejection(&self, cause: Cause) -> Rejection {
        Rejection::new(cause, self.generation)
    }

    /// Asks about a `connect` or `revalidate`.
    pub async fn decide(
        &self,
        client: &reqwest::Client,
        ask: &Ask,
        facts: &SessionFacts,
    ) -> Outcome {
        let event = match ask {
            Ask::Revalidate => "revalidate",
            _ => "connect",
        };
        let body = EventBody::new(event, facts, None);
        let response = match client.post(&self.target).json(&body).send().await {
            Ok(response) => response,
            Err(err) => {
                return Outcome::Unavailable(
                    self.rejection(Cause::DeciderUnavailable(err.to_string())),
                );
            }
        };
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Outcome::Refused(self.rejection(Cause::DeciderRefused(status)));
        }
        if !response.status().is_success() {
            return Outcome::Unavailable(
                self.rejection(Cause::DeciderUnavailable(format!("HTTP {status}"))),
            );
        }
        let body = match bounded_body(response).await {
            Ok(body) => body,
            Err(err) => {
                return Outcome::Unavailable(self.rejection(Cause::DeciderUnavailable(err)));
            }
        };
        let grant: WireGrant = match serde_json::from_slice(&body) {
            Ok(grant) => grant,
            Err(err) => {
                return Outcome::Unavailable(
                    self.rejection(Cause::DeciderUnavailable(format!("bad grant: {err}"))),
                );
            }
        };
        match grant.decide(facts, SystemTime::now()) {
            Ok(decision) => Outcome::Granted(decision),
            // A grant that does not parse is a broken server: unavailable, retried on
            // revalidation. An invalid one (502 too) or one that grants nothing ends the
            // session (0.17.10's `invalid` and `refused`).
            Err(cause @ Cause::DeciderUnavailable(_)) => {
                Outcome::Unavailable(self.rejection(cause))
            }
            Err(cause) => Outcome::Refused(self.rejection(cause)),
        }
    }

    /// Reports the end of a session.
    pub async fn end(
        &self,
        client: &reqwest::Client,
        ask: &Ask,
        facts: &SessionFacts,
    ) -> Result<(), String> {
        let Ask::End(end) = ask else {
            return Ok(());
        };
        let body = EventBody::new("end", facts, Some(end));
        let response = client
            .post(&self.target)
            .json(&body)
            .send()
            .await
            .map_err(|err| err.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", response.status().as_u16()))
        }
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The request body of every event, in moq-auth's member order; absent facts are
/// omitted (`id`, `event`, `node`, `transport` and `path` are always there).
#[derive(Debug, Serialize)]
pub(super) struct EventBody<'a> {
    id: &'a str,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<ByteCounts>,
    node: &'a str,
    transport: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alpn: Option<&'a str>,
    path: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    query: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsFacts<'a>>,
}

#[derive(Debug, Serialize)]
struct TlsFacts<'a> {
    name: &'a str,
    fingerprint: &'a str,
    expires: u64,
    issuer: &'a str,
}

#[derive(Debug, Serialize)]
struct ByteCounts {
    sent: u64,
    received: u64,
}

impl<'a> EventBody<'a> {
    pub(super) fn new(
        event: &'static str,
        facts: &'a SessionFacts,
        end: Option<&'a EndFacts>,
    ) -> Self {
        Self {
            id: &facts.id,
            event,
            node: &facts.node,
            transport: facts.transport,
            remote: facts.remote.map(|addr| addr.to_string()),
            local: facts.local.map(|addr| addr.to_string()),
            server_name: facts.server_name.as_deref(),
            alpn: facts.alpn.as_deref(),
            path: &facts.path,
            query: &facts.query,
            role: match facts.role {
                Role::Publisher => Some("publisher"),
                Role::Subscriber => Some("subscriber"),
                Role::Any => None,
            },
            tls: facts.certificate.as_ref().map(TlsFacts::from),
            reason: end.map(|end| end.reason.as_str()),
            duration: end.map(|end| end.duration.as_secs_f64()),
            bytes: end.map(|end| ByteCounts {
                sent: end.sent,
                received: end.received,
            }),
        }
    }
}

impl<'a> From<&'a ClientCertificate> for TlsFacts<'a> {
    fn from(certificate: &'a ClientCertificate) -> Self {
        Self {
            name: &certificate.name,
            fingerprint: &certificate.fingerprint,
            expires: unix_seconds(certificate.expires),
            issuer: &certificate.issuer,
        }
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A 2xx reply. Unknown members are ignored, so a newer server's additions do not
/// refuse everyone.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct WireGrant {
    publish: Vec<String>,
    subscribe: Vec<String>,
    root: Option<String>,
    mounts: Option<serde_json::Map<String, serde_json::Value>>,
    expires: Option<u64>,
    revalidate: Option<u64>,
    #[allow(dead_code)] // Read so a wrongly typed tier is refused; stats tiers are not built.
    tier: Option<String>,
    #[allow(dead_code)]
    // Read so a wrongly typed flag is refused; hidden peers come with the cluster.
    peer: Option<bool>,
}

impl WireGrant {
    /// The grant as a session decision at `now`: patterns relative to the session root
    /// (the dialed path, or `root` when the server names an alias), taken as they are:
    /// the auth server has already rebased them (0.17.10 does not rebase a grant).
    pub(super) fn decide(self, facts: &SessionFacts, now: SystemTime) -> Result<Decision, Cause> {
        if self.publish.len() > MAX_GRANTS || self.subscribe.len() > MAX_GRANTS {
            return Err(Cause::DeciderUnavailable(format!(
                "a grant lists more than {MAX_GRANTS} patterns"
            )));
        }
        if self
            .mounts
            .as_ref()
            .is_some_and(|mounts| !mounts.is_empty())
        {
            return Err(Cause::InvalidGrant("mounts are not supported".to_owned()));
        }
        let expires = self.expires.map(|at| UNIX_EPOCH + Duration::from_secs(at));
        if let Some(at) = expires
            && at <= now
        {
            return Err(Cause::InvalidGrant("`expires` is already past".to_owned()));
        }
        let revalidate = match self.revalidate {
            Some(0) => return Err(Cause::InvalidGrant("`revalidate` is 0".to_owned())),
            Some(_) if expires.is_none() => {
                return Err(Cause::InvalidGrant(
                    "`revalidate` without `expires`".to_owned(),
                ));
            }
            seconds => seconds.map(Duration::from_secs),
        };
        let patterns = |list: Vec<String>| -> Result<Vec<Grant>, Cause> {
            let mut grants: Vec<Grant> = Vec::with_capacity(list.len());
            for text in list {
                let grant = Grant::pattern(&text)
                    .map_err(|err| Cause::DeciderUnavailable(format!("bad grant: {err}")))?;
                if !grants.contains(&grant) {
                    grants.push(grant);
                }
            }
            Ok(grants)
        };
        let publish = patterns(self.publish)?;
        let subscribe = patterns(self.subscribe)?;
        let root = proto::path::normalize(self.root.as_deref().unwrap_or(&facts.path));
        if publish.is_empty() && subscribe.is_empty() {
            return Err(Cause::NothingGranted(root));
        }
        Ok(Decision {
            access: Access::new(root, publish, subscribe, expires),
            revalidate,
        })
    }
}
