//! Sessions decided by an external decider (`crate::decider`: 0.14 `auth_api`, 0.17
//! `[auth] url`), on the worker side: the connect ask, holding the session's requests
//! until its verdict comes back, the 0.17 revalidation cadence with its retries, and the
//! `end` report.
//!
//! Nothing here waits: an ask is queued and the loop goes on; verdicts are collected
//! once per iteration (`decider_verdicts`), woken by the decider thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quic_io::{SessionId, SessionInfo, SessionIo, Transport};
use tracing::{debug, info};

use super::listing::{Credential, still_covers};
use super::{RelayWorker, close_reason, raw_close};
use crate::auth::{self, Cause, Rejection, Role};
use crate::decider::{Ask, ClientCertificate, EndFacts, Kind, Outcome, SessionFacts, Verdict};

/// Verdicts applied per loop iteration; the rest wait for the next one.
const MAX_VERDICTS_PER_POLL: usize = 256;

/// A failed revalidation is retried after this, doubling, capped by the grant's cadence
/// and `MAX_REVALIDATE_RETRY` (moq-relay 0.17's schedule).
const FIRST_REVALIDATE_RETRY: Duration = Duration::from_secs(1);
const MAX_REVALIDATE_RETRY: Duration = Duration::from_secs(60);

/// A session an external decider decides.
#[derive(Debug)]
pub struct External {
    /// What every ask about it says (path, query and role filled in when asked).
    pub facts: Arc<SessionFacts>,
    /// The connect ask is out: the session's requests wait for its verdict; the role
    /// its SETUP asked for.
    pub awaiting: Option<Role>,
    /// The decider granted the connect, so 0.17 is owed an `end` (none follows a
    /// refused connect).
    pub granted: bool,
    /// The grant's revalidation cadence (0.17).
    pub cadence: Option<Duration>,
    /// When the next revalidation is due, as entered in the worker's set.
    pub revalidate_at: Option<Instant>,
    /// A revalidation is out.
    pub revalidating: bool,
    /// The wait before retrying a revalidation that could not be answered.
    pub retry: Duration,
    /// Why the relay ended the session, for the `end` report (else the peer's close).
    pub end_reason: Option<&'static str>,
    pub opened: Instant,
}

impl RelayWorker {
    /// The facts a decider is told about a new session; path, query and role are
    /// completed when the connect is asked. A verified client certificate is reported on
    /// every transport to a 0.17 auth server, and decides only URL-bearing sessions
    /// under 0.14 `auth_api` (spec `auth.md` 11).
    pub(super) fn external_for(&self, info: &SessionInfo, kind: Kind) -> External {
        let view = self.sessions.get(&info.id).map(|conn| conn.view.clone());
        let certificate = match (&info.peer_certificate, &info.transport, kind) {
            (Some(certificate), _, Kind::AuthServer)
            | (Some(certificate), Transport::WebTransport { .. }, Kind::AuthApi) => {
                Some(ClientCertificate {
                    name: certificate.name.clone(),
                    fingerprint: certificate.fingerprint.clone(),
                    expires: certificate.not_after,
                    issuer: certificate.issuer.clone(),
                })
            }
            _ => None,
        };
        let facts = SessionFacts {
            id: view.as_ref().map(|v| v.id.clone()).unwrap_or_default(),
            node: self.node.clone(),
            transport: "quic",
            remote: Some(info.remote),
            local: info.local,
            server_name: view.as_ref().and_then(|v| v.server_name.clone()),
            alpn: view.as_ref().map(|v| v.alpn.clone()),
            path: asked_path(&info.path),
            query: info.query.clone(),
            role: Role::Any,
            certificate,
        };
        External {
            facts: Arc::new(facts),
            awaiting: None,
            granted: false,
            cadence: None,
            revalidate_at: None,
            revalidating: false,
            retry: FIRST_REVALIDATE_RETRY,
            end_reason: None,
            opened: Instant::now(),
        }
    }

    /// Asks the decider whether `session` may start at `path?query` with `role`; its
    /// requests wait for the verdict. A queue that cannot take the ask refuses at once.
    pub(super) fn ask_connect(&mut self, session: SessionId, path: &str, query: &str, role: Role) {
        let Some(conn) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(external) = conn.external.as_mut() else {
            debug_assert!(false, "a connect asked for a session no decider decides");
            return;
        };
        {
            let facts = Arc::make_mut(&mut external.facts);
            facts.path = asked_path(path);
            facts.query = query.to_owned();
            facts.role = role;
        }
        let facts = external.facts.clone();
        conn.credential = Some(Credential {
            path: facts.path.clone(),
            query: query.to_owned(),
            role,
            certificate_not_after: None,
        });
        let Some(decider) = &self.decider else {
            return;
        };
        match decider.ask(session, Ask::Connect, facts) {
            Ok(()) => external.awaiting = Some(role),
            Err(err) => {
                let rejection = Rejection::new(
                    Cause::DeciderUnavailable(err.to_string()),
                    self.auth.generation(),
                );
                self.refuse(session, &rejection);
            }
        }
    }

    /// Applies the verdicts that arrived, at most `MAX_VERDICTS_PER_POLL`.
    pub(super) fn decider_verdicts<T: SessionIo>(&mut self, io: &mut T) {
        let Some(decider) = &self.decider else {
            return;
        };
        let verdicts: Vec<Verdict> = std::iter::from_fn(|| decider.next_verdict())
            .take(MAX_VERDICTS_PER_POLL)
            .collect();
        if verdicts.len() == MAX_VERDICTS_PER_POLL {
            // More may wait, and their wake-up was spent.
            self.budget_exhausted = true;
        }
        for verdict in verdicts {
            let session = verdict.session;
            debug!(
                worker = self.worker,
                session,
                revalidation = verdict.revalidation,
                "decider verdict"
            );
            if verdict.revalidation {
                self.revalidated(session, verdict.outcome);
            } else {
                self.decided(session, verdict.outcome);
            }
            self.drive(session, io);
        }
    }

    fn decided(&mut self, session: SessionId, outcome: Outcome) {
        let Some(conn) = self.sessions.get_mut(&session) else {
            // Closed while its ask was out.
            return;
        };
        let Some(external) = conn.external.as_mut() else {
            debug_assert!(false, "a connect verdict for a session no decider decides");
            return;
        };
        let Some(role) = external.awaiting.take() else {
            debug_assert!(false, "a connect verdict nobody waited for");
            return;
        };
        let decision = match outcome {
            Outcome::Granted(decision) => decision,
            Outcome::Refused(rejection) | Outcome::Unavailable(rejection) => {
                return self.refuse(session, &rejection);
            }
        };
        external.granted = true;
        // 0.17 counts a session's duration from its grant.
        external.opened = Instant::now();
        external.cadence = decision.revalidate;
        self.rearm_expiry(session, decision.access.expires);
        self.schedule_revalidation(session, decision.revalidate);
        self.admit(session, decision.access, role);
    }

    fn revalidated(&mut self, session: SessionId, outcome: Outcome) {
        let Some(conn) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(external) = conn.external.as_mut() else {
            return;
        };
        external.revalidating = false;
        let cadence = external.cadence;
        match outcome {
            Outcome::Granted(decision) => {
                let role = conn.credential.as_ref().map_or(Role::Any, |c| c.role);
                let mut access = decision.access;
                let root_changed = conn
                    .access
                    .as_ref()
                    .is_some_and(|admitted| admitted.root != access.root);
                // A wider grant does not widen the session (0.17.10 keeps what it
                // admitted); a narrower one, or another root, ends it.
                let covered = !root_changed && self.auth.check_role(&access, role).is_ok() && {
                    access.narrow_to(role);
                    conn.access
                        .as_ref()
                        .is_some_and(|admitted| still_covers(admitted, &access))
                };
                if !covered {
                    let code = auth::close_code(403, self.auth.generation());
                    let reason = if root_changed {
                        "root changed"
                    } else {
                        "grant narrowed"
                    };
                    info!(
                        worker = self.worker,
                        session,
                        code,
                        reason,
                        "revalidated grant no longer covers the session; closed"
                    );
                    if let Some(external) = conn.external.as_mut() {
                        external.end_reason = Some(reason);
                    }
                    conn.moq().close(raw_close(code), close_reason(403));
                    return;
                }
                if let Some(external) = conn.external.as_mut() {
                    external.retry = FIRST_REVALIDATE_RETRY;
                    external.cadence = decision.revalidate.or(cadence);
                }
                debug!(worker = self.worker, session, "revalidated; session kept");
                self.rearm_expiry(session, access.expires);
                self.schedule_revalidation(session, decision.revalidate.or(cadence));
            }
            Outcome::Refused(rejection) => {
                info!(worker = self.worker, session, %rejection, "revalidation refused the session; closed");
                if let Some(external) = conn.external.as_mut() {
                    external.end_reason = Some(match rejection.cause() {
                        Cause::InvalidGrant(_) => "invalid",
                        _ => "refused",
                    });
                }
                self.refuse(session, &rejection);
            }
            Outcome::Unavailable(rejection) => {
                // The grant still holds until it expires; ask again later.
                let retry = external.retry;
                external.retry = (retry * 2)
                    .min(cadence.unwrap_or(MAX_REVALIDATE_RETRY))
                    .min(MAX_REVALIDATE_RETRY);
                debug!(worker = self.worker, session, %rejection, ?retry, "revalidation unanswered; retrying");
                self.schedule_revalidation(session, Some(jitter(retry, session)));
            }
        }
    }

    /// Moves the session's next revalidation to `after` from now (`None`: none).
    fn schedule_revalidation(&mut self, session: SessionId, after: Option<Duration>) {
        let Some(external) = self
            .sessions
            .get_mut(&session)
            .and_then(|conn| conn.external.as_mut())
        else {
            return;
        };
        if let Some(at) = external.revalidate_at.take() {
            let removed = self.revalidations_due.remove(&(at, session));
            debug_assert!(removed, "a scheduled revalidation was not in the set");
        }
        if let Some(after) = after {
            let at = self.now.max(Instant::now()) + after;
            external.revalidate_at = Some(at);
            self.revalidations_due.insert((at, session));
        }
    }

    /// Asks the decider about every session whose revalidation is due at `now`.
    pub(super) fn revalidate_due(&mut self, now: Instant) {
        while let Some(&(at, session)) = self.revalidations_due.first() {
            if at > now {
                return;
            }
            self.revalidations_due.pop_first();
            if let Some(external) = self
                .sessions
                .get_mut(&session)
                .and_then(|conn| conn.external.as_mut())
            {
                debug_assert_eq!(external.revalidate_at, Some(at));
                external.revalidate_at = None;
            }
            self.ask_revalidation(session);
        }
    }

    /// Asks again about an admitted session (its cadence came, or an operator's nudge).
    /// A queue that cannot take it counts as a failed revalidation: retried later.
    pub(super) fn ask_revalidation(&mut self, session: SessionId) {
        let Some(decider) = &self.decider else {
            return;
        };
        let Some(conn) = self.sessions.get_mut(&session) else {
            return;
        };
        let admitted = conn.access.is_some();
        let Some(external) = conn.external.as_mut() else {
            return;
        };
        if !admitted || external.revalidating || external.awaiting.is_some() {
            return;
        }
        match decider.ask(session, Ask::Revalidate, external.facts.clone()) {
            Ok(()) => external.revalidating = true,
            Err(err) => {
                let retry = external.retry;
                debug!(worker = self.worker, session, %err, "revalidation not queued; retrying");
                self.schedule_revalidation(session, Some(jitter(retry, session)));
            }
        }
    }

    /// The session is gone: tell a 0.17 auth server (an `end` follows every connect it
    /// granted, none a refused one), and forget its schedule.
    pub(super) fn external_closed(
        &mut self,
        session: SessionId,
        external: External,
        peer_reason: &str,
        bytes: (u64, u64),
    ) {
        if let Some(at) = external.revalidate_at {
            let removed = self.revalidations_due.remove(&(at, session));
            debug_assert!(removed, "a scheduled revalidation was not in the set");
        }
        let Some(decider) = &self.decider else {
            return;
        };
        if !external.granted || decider.kind() != Kind::AuthServer {
            return;
        }
        let reason = match external.end_reason {
            Some(reason) => reason.to_owned(),
            None if peer_reason.is_empty() => "dropped".to_owned(),
            None => peer_reason.to_owned(),
        };
        let end = EndFacts {
            reason,
            duration: external.opened.elapsed(),
            sent: bytes.0,
            received: bytes.1,
        };
        if let Err(err) = decider.ask(session, Ask::End(end), external.facts) {
            debug!(worker = self.worker, session, %err, "end event not reported");
        }
    }
}

/// The path a decider is told: the dialed one, `/` when the session named none.
fn asked_path(path: &str) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    }
}

/// `base` ± 25 %, spread by session so that retries after one outage do not come back
/// all at once.
fn jitter(base: Duration, session: SessionId) -> Duration {
    let spread = (session.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as u32; // 0..1024
    base.mul_f64(0.75 + f64::from(spread) / 2048.0)
}
