//! moq-relay 0.17's `/sessions` and `POST /sessions/revalidate` on the worker side: what
//! a session's request looked like (its `SessionRequest`), the filter both routes take
//! (`moq-relay-0.17.md` 3.2, the grammar and error texts of 0.17.10's `session.rs`), and
//! the re-check a nudge asks for.
//!
//! A worker answers for its own sessions only; the control thread merges the answers.
//! A re-check verifies a token again, which can cost a few hundred microseconds (ES256),
//! so a nudge only queues the sessions and `poll` re-checks a bounded number per
//! iteration.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime};

use moq_pattern::Pattern;
use quic_io::{SessionId, SessionInfo, SessionIo, Transport};
use serde::Serialize;
use tracing::info;

use super::{RelayWorker, close_reason, raw_close};
use crate::auth::{self, Access, Role};

/// Sessions re-checked per loop iteration: a nudge of every session must not hold the
/// worker for more than a few milliseconds at a time.
const MAX_REVALIDATIONS_PER_POLL: usize = 32;

/// A session's request as `/sessions` lists it and the filter matches it (0.17's
/// `Request` without `query` and `token`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionView {
    /// 128 random-looking bits in hex, unique per session and stable for its life.
    pub id: String,
    pub node: String,
    /// Raw QUIC and WebTransport are both `quic`, as in 0.17.
    pub transport: &'static str,
    pub remote: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    pub alpn: String,
    /// As dialed: the CONNECT path, a moq-lite-05 SETUP path, or `/`.
    pub path: String,
    /// The moq-lite-05 SETUP Role when it names one direction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// Unix seconds at which the session was accepted.
    pub started: u64,
}

impl SessionView {
    pub fn new(id: String, node: &str, info: &SessionInfo) -> Self {
        let alpn = match &info.transport {
            Transport::Quic { alpn } => alpn.clone(),
            Transport::WebTransport { protocol } => protocol.clone().unwrap_or_default(),
        };
        // The SNI, else the host the CONNECT named (0.17: "SNI, or the HTTP host").
        let server_name = info.server_name.clone().or_else(|| {
            info.authority
                .as_deref()
                .map(|authority| host_of(authority).to_owned())
        });
        let path = if info.path.is_empty() {
            "/".to_owned()
        } else {
            info.path.clone()
        };
        Self {
            id,
            node: node.to_owned(),
            transport: "quic",
            remote: info.remote,
            local: info.local,
            server_name,
            alpn,
            path,
            role: None,
            started: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    pub fn set_role(&mut self, role: Role) {
        self.role = match role {
            Role::Any => None,
            Role::Publisher => Some("publisher"),
            Role::Subscriber => Some("subscriber"),
        };
    }
}

/// `host` of `host:port` or `[v6]:port`.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

/// What the credential of an admitted session was, to decide again on a nudge.
#[derive(Debug, Clone)]
pub struct Credential {
    pub path: String,
    pub query: String,
    pub role: Role,
    /// The verified client certificate's `notAfter` when that certificate admitted the
    /// session (0.14 mTLS); its query is then not what decides.
    pub certificate_not_after: Option<SystemTime>,
}

/// A peer IP or network, port dropped and IPv4-mapped IPv6 folded to IPv4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteFilter {
    Ip(IpAddr),
    Cidr { network: IpAddr, prefix: u8 },
}

impl RemoteFilter {
    fn parse(value: &str) -> Result<Self, String> {
        let Some((addr, prefix)) = value.split_once('/') else {
            let ip: IpAddr = value
                .parse()
                .map_err(|_| format!("invalid remote address: {value}"))?;
            return Ok(Self::Ip(ip.to_canonical()));
        };
        let invalid = || format!("invalid remote CIDR: {value}");
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let mut prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        let network = addr.to_canonical();
        // An IPv4-mapped IPv6 network names its IPv4 bits after the 96-bit mapping prefix.
        if network.is_ipv4() && !addr.is_ipv4() {
            prefix = prefix.checked_sub(96).ok_or_else(invalid)?;
        }
        let max = if network.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(invalid());
        }
        Ok(Self::Cidr { network, prefix })
    }

    fn matches(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match *self {
            Self::Ip(want) => ip == want,
            Self::Cidr { network, prefix } => match (ip, network) {
                (IpAddr::V4(ip), IpAddr::V4(net)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                    u32::from(ip) & mask == u32::from(net) & mask
                }
                (IpAddr::V6(ip), IpAddr::V6(net)) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                    u128::from(ip) & mask == u128::from(net) & mask
                }
                _ => false,
            },
        }
    }
}

/// Why a query string is not a filter: the 400 body, as 0.17 words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unknown filter field: {0}")]
    Unknown(String),
    #[error("invalid {field}: {value}")]
    Invalid { field: &'static str, value: String },
}

/// A partial request: every given field must match; empty matches every session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    id: Option<String>,
    node: Option<String>,
    transport: Option<String>,
    remote: Option<RemoteFilter>,
    local: Option<SocketAddr>,
    server_name: Option<String>,
    alpn: Option<String>,
    path: Option<Pattern>,
    role: Option<String>,
    /// `tls.*`: no session here carries a client certificate, so any of them matches
    /// nothing; kept so that such a filter is accepted as 0.17 accepts it.
    tls: bool,
}

/// The transports 0.17 names; only `quic` exists here, the rest are valid and match none.
const TRANSPORTS: [&str; 6] = ["quic", "iroh", "websocket", "tcp", "unix", "http"];

impl SessionFilter {
    /// Parses the query string of both routes; an unknown field (`query` and `token`
    /// included: they carry credentials) is an error naming it.
    pub fn from_query(query: &str) -> Result<Self, FilterError> {
        let mut filter = Self::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let invalid = |field: &'static str| FilterError::Invalid {
                field,
                value: value.to_string(),
            };
            match key.as_ref() {
                "id" => filter.id = Some(value.into_owned()),
                "node" => filter.node = Some(value.into_owned()),
                "transport" => {
                    if !TRANSPORTS.contains(&value.as_ref()) {
                        return Err(invalid("transport"));
                    }
                    filter.transport = Some(value.into_owned());
                }
                "remote" => {
                    filter.remote = Some(RemoteFilter::parse(&value).map_err(|value| {
                        FilterError::Invalid {
                            field: "remote",
                            value,
                        }
                    })?);
                }
                "local" => filter.local = Some(value.parse().map_err(|_| invalid("local"))?),
                "server_name" => filter.server_name = Some(value.into_owned()),
                "alpn" => filter.alpn = Some(value.into_owned()),
                "path" => filter.path = Some(value.parse().map_err(|_| invalid("path"))?),
                "role" => {
                    if value != "publisher" && value != "subscriber" {
                        return Err(invalid("role"));
                    }
                    filter.role = Some(value.into_owned());
                }
                "tls.name" | "tls.fingerprint" | "tls.issuer" => filter.tls = true,
                other => return Err(FilterError::Unknown(other.to_owned())),
            }
        }
        Ok(filter)
    }

    pub fn matches(&self, view: &SessionView) -> bool {
        fn differs(want: &Option<String>, have: &str) -> bool {
            want.as_deref().is_some_and(|want| want != have)
        }
        !(self.tls
            || differs(&self.id, &view.id)
            || differs(&self.node, &view.node)
            || differs(&self.transport, view.transport)
            || self
                .remote
                .as_ref()
                .is_some_and(|remote| !remote.matches(view.remote.ip()))
            || self.local.is_some_and(|local| view.local != Some(local))
            || self
                .server_name
                .as_ref()
                .is_some_and(|name| view.server_name.as_ref() != Some(name))
            || differs(&self.alpn, &view.alpn)
            || self
                .path
                .as_ref()
                .is_some_and(|path| !path.matches(view.path.trim_start_matches('/')))
            || self
                .role
                .as_deref()
                .is_some_and(|role| view.role != Some(role)))
    }
}

/// Whether a re-decided grant still covers what the session was admitted with: the same
/// root and every grant it had (a wider grant is fine; a narrower one ends the session,
/// as 0.17.10 ends a session whose re-checked grant no longer covers its patterns).
pub(super) fn still_covers(admitted: &Access, now: &Access) -> bool {
    admitted.root == now.root
        && admitted
            .subscribe_grants()
            .iter()
            .all(|grant| now.subscribe_grants().contains(grant))
        && admitted
            .publish_grants()
            .iter()
            .all(|grant| now.publish_grants().contains(grant))
}

/// A worker's queue of sessions to re-check (bounded by its sessions: one entry each;
/// `queued` keeps a nudge of every session O(sessions), not O(sessions²)).
#[derive(Debug, Default)]
pub(super) struct Revalidations {
    queue: VecDeque<SessionId>,
    queued: HashSet<SessionId>,
}

impl RelayWorker {
    /// The views of this worker's sessions that `filter` matches.
    pub(super) fn list_sessions(&self, filter: &SessionFilter) -> Vec<SessionView> {
        self.sessions
            .values()
            .map(|conn| &conn.view)
            .filter(|view| filter.matches(view))
            .cloned()
            .collect()
    }

    /// Queues the matching admitted sessions for a re-check; returns their ids.
    pub(super) fn nudge_sessions(&mut self, filter: &SessionFilter) -> Vec<String> {
        let mut ids = Vec::new();
        for (&id, conn) in &self.sessions {
            if conn.access.is_none() || !filter.matches(&conn.view) {
                continue;
            }
            ids.push(conn.view.id.clone());
            if self.revalidations.queued.insert(id) {
                self.revalidations.queue.push_back(id);
            }
        }
        debug_assert_eq!(
            self.revalidations.queue.len(),
            self.revalidations.queued.len()
        );
        debug_assert!(self.revalidations.queue.len() <= self.sessions.len());
        ids
    }

    /// Re-decides up to `MAX_REVALIDATIONS_PER_POLL` queued sessions against the current
    /// `[auth]` (keys and `public` as the last SIGHUP left them): a refused or narrowed
    /// session is closed with the refusal's code; one still covered gets its new expiry.
    pub(super) fn revalidate_some<T: SessionIo>(&mut self, io: &mut T) {
        for _ in 0..MAX_REVALIDATIONS_PER_POLL {
            let Some(session) = self.revalidations.queue.pop_front() else {
                return;
            };
            self.revalidations.queued.remove(&session);
            let Some(conn) = self.sessions.get(&session) else {
                continue;
            };
            if conn.external.is_some() {
                // Its decider re-checks it (0.14 `auth_api` has no revalidation: only a
                // 0.17 auth server is asked).
                self.ask_revalidation(session);
                continue;
            }
            let (Some(credential), Some(admitted)) = (&conn.credential, &conn.access) else {
                continue;
            };
            let decided = match credential.certificate_not_after {
                Some(not_after) => self
                    .auth
                    .authorize_peer_certificate(&credential.path, not_after),
                None => self.auth.authorize(&credential.path, &credential.query),
            }
            .and_then(|mut access| {
                self.auth.check_role(&access, credential.role)?;
                access.narrow_to(credential.role);
                Ok(access)
            });
            match decided {
                Ok(access) if still_covers(admitted, &access) => {
                    let expires = access.expires;
                    self.rearm_expiry(session, expires);
                    info!(worker = self.worker, session, "revalidated; session kept");
                }
                Ok(_) => {
                    let code = auth::close_code(403, self.auth.generation());
                    info!(
                        worker = self.worker,
                        session, code, "revalidated grant no longer covers the session; closed"
                    );
                    if let Some(conn) = self.sessions.get_mut(&session) {
                        conn.moq().close(raw_close(code), close_reason(403));
                    }
                    self.drive(session, io);
                }
                Err(rejection) => {
                    info!(worker = self.worker, session, %rejection, "revalidation refused the session; closed");
                    self.refuse(session, &rejection);
                    self.drive(session, io);
                }
            }
        }
        // More queued than one iteration re-checks: come back at once.
        if !self.revalidations.queue.is_empty() {
            self.budget_exhausted = true;
        }
    }

    /// Moves a session's expiry to the re-checked credential's `exp`.
    pub(super) fn rearm_expiry(&mut self, session: SessionId, expires: Option<SystemTime>) {
        let Some(conn) = self.sessions.get_mut(&session) else {
            return;
        };
        if let Some(at) = conn.expires_at.take() {
            let removed = self.expiries.remove(&(at, session));
            debug_assert!(removed, "an armed expiry was not in the set");
        }
        if let Some(expires) = expires {
            let left = expires
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let at = Instant::now() + left;
            conn.expires_at = Some(at);
            self.expiries.insert((at, session));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(path: &str, remote: &str) -> SessionView {
        SessionView {
            id: "00112233445566778899aabbccddeeff".into(),
            node: String::new(),
            transport: "quic",
            remote: remote.parse().unwrap(),
            local: Some("127.0.0.1:4443".parse().unwrap()),
            server_name: Some("localhost".into()),
            alpn: "moq-lite-05".into(),
            path: path.into(),
            role: Some("subscriber"),
            started: 0,
        }
    }

    fn matches(query: &str, view: &SessionView) -> bool {
        SessionFilter::from_query(query).unwrap().matches(view)
    }

    #[test]
    fn an_empty_filter_matches_every_session() {
        assert!(matches("", &view("/anon", "10.0.0.1:5000")));
    }

    #[test]
    fn unknown_fields_and_credentials_are_refused_by_name() {
        for field in ["query", "token", "bogus"] {
            let err = SessionFilter::from_query(&format!("{field}=x")).unwrap_err();
            assert_eq!(err.to_string(), format!("unknown filter field: {field}"));
        }
        let err = SessionFilter::from_query("remote=10.0.0.0/33").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid remote: invalid remote CIDR: 10.0.0.0/33"
        );
        assert!(SessionFilter::from_query("role=both").is_err());
        assert!(SessionFilter::from_query("local=nothing").is_err());
    }

    #[test]
    fn every_field_given_must_match() {
        let v = view("/anon/room", "10.1.2.3:5000");
        assert!(matches(
            "path=anon/**&remote=10.0.0.0/8&role=subscriber",
            &v
        ));
        assert!(!matches("path=other/**", &v));
        assert!(!matches("remote=10.0.0.0/16", &v));
        assert!(matches("remote=10.1.2.3", &v));
        assert!(matches(
            "local=127.0.0.1:4443&alpn=moq-lite-05&transport=quic",
            &v
        ));
        assert!(!matches("local=127.0.0.1:4444", &v));
        assert!(!matches("transport=websocket", &v));
        assert!(!matches("role=publisher", &v));
        assert!(matches("server_name=localhost&node=", &v));
        assert!(!matches("id=ff", &v));
        // No session here has a client certificate.
        assert!(!matches("tls.name=x", &v));
    }

    #[test]
    fn a_mapped_v6_remote_is_matched_as_ipv4() {
        let v = view("/", "[::ffff:192.168.1.9]:7000");
        assert!(matches("remote=192.168.1.0/24", &v));
        assert!(matches("remote=::ffff:192.168.1.0/120", &v));
        assert!(matches("remote=0.0.0.0/0", &v));
        assert!(!matches("remote=::/0", &v));
    }

    #[test]
    fn the_host_of_an_authority_drops_the_port() {
        assert_eq!(host_of("relay.example:443"), "relay.example");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("relay.example"), "relay.example");
    }
}
