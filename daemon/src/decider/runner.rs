//! The decider thread: one current-thread tokio runtime on the housekeeping CPUs, one
//! HTTP client (reqwest: `http://`, `https://` with `[client.tls]`, or `unix://`), and a
//! task per ask, each bounded by `DECISION_TIMEOUT` and `MAX_CONCURRENT_REQUESTS`.
//!
//! Every `Connect` and `Revalidate` gets exactly one verdict, also when its task times
//! out or panics (`VerdictGuard`), so no session waits forever for its answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use anyhow::Context;
use tokio::sync::Semaphore;

use super::auth_api::AuthApi;
use super::auth_server::AuthServer;
use super::{
    Ask, DECISION_TIMEOUT, DeciderLink, HttpDecider, Kind, MAX_ASKS_IN_FLIGHT,
    MAX_CONCURRENT_REQUESTS, MAX_REPLY_BYTES, Outcome, ReplyTo, Request, Verdict, WorkerSlot,
};
use crate::auth::{Cause, Rejection};
use crate::config::{AuthConfig, ClientTlsConfig, Generation};

/// Why the decider cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DeciderError {
    #[error("`[auth] {key} = \"{url}\"`: {reason}")]
    Url {
        key: &'static str,
        url: String,
        reason: String,
    },
    #[error(transparent)]
    Tls(#[from] crate::client_tls::ClientTlsError),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The configured backend.
enum Backend {
    AuthApi(AuthApi),
    AuthServer(AuthServer),
}

/// The running decider thread.
pub struct Decider {
    kind: Kind,
    http: HttpDecider,
    thread: Option<JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Decider {
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// A handle for the control thread's HTTP routes.
    pub fn http(&self) -> HttpDecider {
        self.http.clone()
    }
}

impl Drop for Decider {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The runtime may already have ended; then there is nobody to tell.
            let _ignored = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the auth decider thread panicked");
        }
    }
}

/// Starts the decider `[auth]` names (`url` or `auth_api`), with one link per worker;
/// `None` when neither is set.
pub fn start(
    auth: &AuthConfig,
    client_tls: &ClientTlsConfig,
    workers: usize,
    cpus: Vec<usize>,
) -> Result<Option<(Decider, Vec<DeciderLink>)>, DeciderError> {
    let (kind, backend, key, url) = if let Some(url) = &auth.url {
        let generation = match auth.generation {
            // `url` exists only in 0.17: a file that names no generation means it.
            Generation::Unknown => Generation::V017,
            generation => generation,
        };
        let server = AuthServer::new(url, generation).map_err(|reason| DeciderError::Url {
            key: "url",
            url: url.clone(),
            reason,
        })?;
        (Kind::AuthServer, Backend::AuthServer(server), "url", url)
    } else if let Some(url) = &auth.auth_api {
        let api = AuthApi::new(url, auth.generation).map_err(|reason| DeciderError::Url {
            key: "auth_api",
            url: url.clone(),
            reason,
        })?;
        (Kind::AuthApi, Backend::AuthApi(api), "auth_api", url)
    } else {
        return Ok(None);
    };
    let client = http_client(url, client_tls).map_err(|reason| match reason {
        ClientBuild::Tls(err) => DeciderError::Tls(err),
        ClientBuild::Other(reason) => DeciderError::Url {
            key,
            url: url.clone(),
            reason,
        },
    })?;
    let (asks, mut incoming) = tokio::sync::mpsc::channel(MAX_ASKS_IN_FLIGHT);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut slots = Vec::with_capacity(workers);
    let mut links = Vec::with_capacity(workers);
    for worker in 0..workers {
        let (sender, verdicts) = std::sync::mpsc::channel();
        slots.push(WorkerSlot {
            verdicts: sender,
            waker: OnceLock::new(),
        });
        links.push((worker, verdicts));
    }
    let slots: Arc<[WorkerSlot]> = slots.into();
    let links = links
        .into_iter()
        .map(|(worker, verdicts)| DeciderLink {
            worker,
            kind,
            asks: asks.clone(),
            in_flight: in_flight.clone(),
            verdicts,
            slots: slots.clone(),
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|err| DeciderError::Client(err.to_string()))?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let http_in_flight = in_flight.clone();
    let shared = Shared {
        backend,
        client,
        slots: slots.clone(),
        in_flight,
        permits: Semaphore::new(MAX_CONCURRENT_REQUESTS),
    };
    let thread = std::thread::Builder::new()
        .name("auth-decider".into())
        .spawn(move || {
            if !cpus.is_empty()
                && let Err(err) = quic_io::pin_to_cpus(&cpus)
            {
                tracing::warn!(?cpus, "auth decider thread not placed: {err}");
            }
            let shared = Arc::new(shared);
            runtime.block_on(async move {
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        request = incoming.recv() => match request {
                            Some(request) => {
                                tokio::spawn(answer(shared.clone(), request));
                            }
                            None => return,
                        },
                    }
                }
            });
        })
        .context("cannot spawn the auth decider thread")
        .map_err(|err| DeciderError::Client(format!("{err:#}")))?;
    Ok(Some((
        Decider {
            kind,
            http: HttpDecider {
                asks,
                in_flight: http_in_flight,
            },
            thread: Some(thread),
            stop: Some(stop),
        },
        links,
    )))
}

/// What every task reads.
struct Shared {
    backend: Backend,
    client: reqwest::Client,
    slots: Arc<[WorkerSlot]>,
    in_flight: Arc<AtomicUsize>,
    permits: Semaphore,
}

impl Shared {
    fn generation(&self) -> Generation {
        match &self.backend {
            Backend::AuthApi(api) => api.generation(),
            Backend::AuthServer(server) => server.generation(),
        }
    }
}

/// Sends `Unavailable` for an ask whose task ended without a verdict (timed out,
/// panicked), so the session never waits forever.
struct VerdictGuard<'a> {
    shared: &'a Shared,
    session: quic_io::SessionId,
    revalidation: bool,
    reply: Option<ReplyTo>,
}

impl VerdictGuard<'_> {
    fn send(mut self, outcome: Outcome) {
        self.deliver(outcome);
    }

    fn deliver(&mut self, outcome: Outcome) {
        match self.reply.take() {
            Some(ReplyTo::Worker(worker)) => {
                let Some(slot) = self.shared.slots.get(worker) else {
                    debug_assert!(false, "an ask from worker {worker} that has no slot");
                    return;
                };
                // The worker uncounts it when it takes the verdict.
                slot.deliver(Verdict {
                    session: self.session,
                    revalidation: self.revalidation,
                    outcome,
                });
            }
            Some(ReplyTo::Caller(reply)) => {
                self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                // The caller may have gone (its HTTP client hung up).
                let _ignored = reply.send(outcome);
            }
            None => {}
        }
    }
}

impl Drop for VerdictGuard<'_> {
    fn drop(&mut self) {
        if self.reply.is_some() {
            let cause = Cause::DeciderUnavailable("no answer".to_owned());
            let generation = self.shared.generation();
            self.deliver(Outcome::Unavailable(Rejection::new(cause, generation)));
        }
    }
}

async fn answer(shared: Arc<Shared>, request: Request) {
    let Request {
        session,
        reply,
        ask,
        facts,
    } = request;
    let revalidation = match &ask {
        Ask::Connect => false,
        Ask::Revalidate => true,
        Ask::End(_) => {
            // Reported, never answered: it stops counting as soon as it is handled.
            if let Backend::AuthServer(server) = &shared.backend {
                let sent = tokio::time::timeout(DECISION_TIMEOUT, async {
                    let _permit = shared.permits.acquire().await;
                    server.end(&shared.client, &ask, &facts).await
                })
                .await;
                if let Ok(Err(err)) | Err(err) = sent.map_err(|_| "timed out".to_owned()) {
                    tracing::debug!(session = %facts.id, %err, "auth server did not take the end event");
                }
            }
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return;
        }
    };
    let guard = VerdictGuard {
        shared: &shared,
        session,
        revalidation,
        reply: Some(reply),
    };
    let decided = tokio::time::timeout(DECISION_TIMEOUT, async {
        let _permit = shared.permits.acquire().await;
        match &shared.backend {
            Backend::AuthApi(api) => api.decide(&shared.client, &facts).await,
            Backend::AuthServer(server) => server.decide(&shared.client, &ask, &facts).await,
        }
    })
    .await;
    let outcome = decided.unwrap_or_else(|_| {
        Outcome::Unavailable(Rejection::new(
            Cause::DeciderUnavailable(format!("no answer within {DECISION_TIMEOUT:?}")),
            shared.generation(),
        ))
    });
    guard.send(outcome);
}

enum ClientBuild {
    Tls(crate::client_tls::ClientTlsError),
    Other(String),
}

/// One client for the configured URL: a `unix://` URL routes every request over that
/// socket; `https://` verifies with `[client.tls]` and presents its certificate.
fn http_client(url: &str, tls: &ClientTlsConfig) -> Result<reqwest::Client, ClientBuild> {
    let mut builder = reqwest::Client::builder()
        .timeout(DECISION_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(MAX_CONCURRENT_REQUESTS);
    if let Some(path) = url.strip_prefix("unix://") {
        builder = builder.unix_socket(std::path::PathBuf::from(path));
    }
    // Always a config of ours: reqwest, built without a provider of its own, would
    // otherwise panic at `build` for want of one. Plain `http://` and `unix://` never
    // use it.
    let config = if url.starts_with("https://") {
        crate::client_tls::https_client_config(tls).map_err(ClientBuild::Tls)?
    } else {
        crate::client_tls::unused_client_config().map_err(ClientBuild::Tls)?
    };
    builder = builder.tls_backend_preconfigured(config);
    builder
        .build()
        .map_err(|err| ClientBuild::Other(err.to_string()))
}

/// Reads a reply body, at most `MAX_REPLY_BYTES`.
pub(super) async fn bounded_body(response: reqwest::Response) -> Result<Vec<u8>, String> {
    bounded_body_of(response, MAX_REPLY_BYTES).await
}

/// Reads a reply body of at most `max` bytes; a larger one is an error, read no further.
pub(crate) async fn bounded_body_of(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| err.to_string())? {
        if body.len() + chunk.len() > max {
            return Err(format!("reply larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
