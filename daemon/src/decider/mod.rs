//! The external deciders: moq-relay 0.14's `[auth] auth_api` (one `GET` per session that
//! names the verifying key and public grants) and 0.17's `[auth] url` auth server (one
//! JSON `POST` per connect, revalidate and end). Spec `auth.md` 10.1 and
//! `moq-relay-0.17.md` 2.5.
//!
//! Workers never wait on the network: a worker queues an [`Ask`] (bounded, never
//! blocking) and goes on; the decider thread asks the HTTP server and sends the
//! [`Verdict`] back through the worker's own queue, then rings the worker's waker. The
//! session holds its requests until its verdict arrives.
//!
//! Submodules, one concern each: `facts` (what is known of a session), `auth_api` (the
//! 0.14 call and its cache), `auth_server` (the 0.17 call and its grant), `runner` (the
//! thread, its runtime and the HTTP client).

mod auth_api;
mod auth_server;
mod facts;
pub(crate) mod runner;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use quic_io::{SessionId, Waker};

use crate::auth::{Access, Rejection};

pub use facts::{ClientCertificate, EndFacts, SessionFacts};
pub use runner::{Decider, DeciderError, start};

/// Whether `url` can be `[auth] {key}`: `auth_api` takes `http(s)://`; the 0.17 auth
/// server `https://`, `http://` to a loopback host only, or `unix:///path`.
pub fn check_url(key: &str, url: &str) -> Result<(), String> {
    match key {
        "url" => auth_server::AuthServer::new(url, crate::config::Generation::V017).map(drop),
        _ => auth_api::AuthApi::new(url, crate::config::Generation::V014).map(drop),
    }
}

/// Asks in flight across all workers (queued or being answered). Past this a new session
/// is refused as "unavailable" at once: an auth server that slow is down in all but name,
/// and each waiting ask holds a session that does nothing.
pub const MAX_ASKS_IN_FLIGHT: usize = 4096;

/// HTTP requests to the decider open at once; the other asks wait their turn inside the
/// same 10 s bound.
pub const MAX_CONCURRENT_REQUESTS: usize = 256;

/// moq-relay's bound on one decision (0.17: every event; 0.14: `auth_api`'s timeout).
pub const DECISION_TIMEOUT: Duration = Duration::from_secs(10);

/// A reply body longer than this is not a grant: refused as unavailable without reading
/// the rest.
pub const MAX_REPLY_BYTES: usize = 64 << 10;

/// What a worker asks about a session.
#[derive(Debug, Clone)]
pub enum Ask {
    /// May this session start, and with what grants?
    Connect,
    /// Does the session's grant still hold (its cadence came, or an operator nudged it)?
    Revalidate,
    /// The session ended (0.17 only; no verdict comes back).
    End(EndFacts),
}

/// Where an ask's verdict goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// The worker with this index, through its verdict queue.
    Worker(usize),
    /// A caller on the control thread (`/announced`, `/fetch`), through a oneshot.
    Caller(tokio::sync::oneshot::Sender<Outcome>),
}

/// One ask, as queued to the decider thread.
#[derive(Debug)]
pub struct Request {
    pub session: SessionId,
    pub reply: ReplyTo,
    pub ask: Ask,
    pub facts: Arc<SessionFacts>,
}

/// What the decider says.
#[derive(Debug)]
pub enum Outcome {
    /// Granted: the session's grants at its dialed path.
    Granted(Decision),
    /// Refused (401/403, an invalid grant, nothing granted): the session must end.
    Refused(Rejection),
    /// The decider could not be asked or did not answer usefully (502-class): a connect
    /// is refused; a revalidation is retried while the grant lasts.
    Unavailable(Rejection),
}

/// A grant, reduced to the session's dialed path.
#[derive(Debug)]
pub struct Decision {
    pub access: Access,
    /// 0.17: ask again after this long.
    pub revalidate: Option<Duration>,
}

/// The answer to a `Connect` or `Revalidate`.
#[derive(Debug)]
pub struct Verdict {
    pub session: SessionId,
    /// Answers a `Revalidate` (else a `Connect`).
    pub revalidation: bool,
    pub outcome: Outcome,
}

/// Which generation's decider is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 0.14 `auth_api`: connect only; the session lives until its token's `exp`.
    AuthApi,
    /// 0.17 `[auth] url`: connect, revalidate and end.
    AuthServer,
}

/// Why an ask was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    #[error("{MAX_ASKS_IN_FLIGHT} asks are already in flight")]
    Busy,
    #[error("the decider thread has stopped")]
    Gone,
}

/// A worker's end: it queues asks and collects verdicts, never blocking.
pub struct DeciderLink {
    worker: usize,
    kind: Kind,
    asks: tokio::sync::mpsc::Sender<Request>,
    in_flight: Arc<AtomicUsize>,
    verdicts: Receiver<Verdict>,
    slots: Arc<[WorkerSlot]>,
}

impl std::fmt::Debug for DeciderLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeciderLink")
            .field("worker", &self.worker)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl DeciderLink {
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The waker a verdict for this worker rings; set once, before the worker runs.
    pub fn attach_waker(&self, waker: Waker) {
        let first = self
            .slots
            .get(self.worker)
            .is_some_and(|slot| slot.waker.set(waker).is_ok());
        debug_assert!(first, "worker {}'s waker attached twice", self.worker);
    }

    /// Queues `ask` about `session`. A `Connect` or `Revalidate` that is queued always
    /// gets exactly one verdict back.
    pub fn ask(
        &self,
        session: SessionId,
        ask: Ask,
        facts: Arc<SessionFacts>,
    ) -> Result<(), AskError> {
        let request = Request {
            session,
            reply: ReplyTo::Worker(self.worker),
            ask,
            facts,
        };
        queue(&self.asks, &self.in_flight, request)
    }

    /// The next verdict that arrived, if any.
    pub fn next_verdict(&self) -> Option<Verdict> {
        match self.verdicts.try_recv() {
            Ok(verdict) => {
                // The ask it answers stops counting.
                let before = self.in_flight.fetch_sub(1, Ordering::AcqRel);
                debug_assert!(before > 0, "a verdict nobody asked for");
                Some(verdict)
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }
}

/// Counts and queues `request`, or says why not; never blocks.
fn queue(
    asks: &tokio::sync::mpsc::Sender<Request>,
    in_flight: &AtomicUsize,
    request: Request,
) -> Result<(), AskError> {
    if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_ASKS_IN_FLIGHT {
        in_flight.fetch_sub(1, Ordering::AcqRel);
        return Err(AskError::Busy);
    }
    asks.try_send(request).map_err(|err| {
        in_flight.fetch_sub(1, Ordering::AcqRel);
        match err {
            tokio::sync::mpsc::error::TrySendError::Full(_) => AskError::Busy,
            tokio::sync::mpsc::error::TrySendError::Closed(_) => AskError::Gone,
        }
    })
}

/// The control thread's handle: `/announced` and `/fetch` ask the same decider about
/// their caller (0.17: transport `http`), and await the answer.
#[derive(Debug, Clone)]
pub struct HttpDecider {
    asks: tokio::sync::mpsc::Sender<Request>,
    in_flight: Arc<AtomicUsize>,
}

impl HttpDecider {
    /// Asks whether a one-shot HTTP request at `path?query` may go on.
    pub async fn decide(&self, facts: SessionFacts) -> Result<Outcome, AskError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = Request {
            session: 0,
            reply: ReplyTo::Caller(reply),
            ask: Ask::Connect,
            facts: Arc::new(facts),
        };
        queue(&self.asks, &self.in_flight, request)?;
        // The decider always answers (within its own bound); a dropped sender means it
        // stopped.
        answer.await.map_err(|_| AskError::Gone)
    }
}

/// The decider thread's way back to one worker.
#[derive(Debug)]
struct WorkerSlot {
    /// Unbounded in type, bounded in use: a verdict answers a counted ask, and at most
    /// `MAX_ASKS_IN_FLIGHT` are counted at once.
    verdicts: std::sync::mpsc::Sender<Verdict>,
    waker: OnceLock<Waker>,
}

impl WorkerSlot {
    fn deliver(&self, verdict: Verdict) {
        if self.verdicts.send(verdict).is_err() {
            // The worker is gone (shutting down); nobody waits for this.
            return;
        }
        if let Some(waker) = self.waker.get() {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests;
