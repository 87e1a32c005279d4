//! The HTTP/1.1 accept loops and routes of the control listeners. One task per
//! connection, each bounded (`MAX_CONNECTIONS_PER_LISTENER`, `MAX_HEADER_BYTES`,
//! `HEADER_READ_TIMEOUT`, `MAX_CONNECTION_LIFETIME`); handlers only read atomics or ask a
//! worker through its bounded queue.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, oneshot};
use tracing::{debug, warn};

use super::https::HttpsTls;
use super::{
    AcceptStats, ControlState, HEADER_READ_TIMEOUT, Listener, MAX_CONNECTION_LIFETIME,
    MAX_CONNECTIONS_PER_LISTENER, MAX_HEADER_BYTES, WORKER_ANSWER_TIMEOUT, metrics, unix_millis,
};
use crate::relay::{ControlRequest, RequestError};

/// Pause after an `accept()` that failed for lack of descriptors or memory, so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub(super) type Body = Full<Bytes>;

/// One bound listener: its routes, socket, accept statistics and, for HTTPS, its TLS.
pub(super) struct Bound {
    pub kind: Listener,
    pub listener: std::net::TcpListener,
    pub stats: Arc<AcceptStats>,
    pub tls: Option<Arc<HttpsTls>>,
}

pub(super) async fn serve(
    listeners: Vec<Bound>,
    state: Arc<ControlState>,
    stop: oneshot::Receiver<()>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for Bound {
        kind,
        listener,
        stats,
        tls,
    } in listeners
    {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => {
                tasks.spawn(accept_loop(kind, listener, stats, tls, state.clone()));
            }
            Err(err) => warn!(listener = kind.label(), %err, "cannot register the HTTP listener"),
        }
    }
    // The listeners run until the control thread asks them to stop (or its end drops).
    if stop.await.is_err() {
        debug!("control runtime's stop handle dropped");
    }
    tasks.abort_all();
}

/// The moq-relay class of an `accept()` error.
fn classify(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => "exhausted",
        Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EPROTO | libc::EPERM) => "connection",
        _ => "unknown",
    }
}

async fn accept_loop(
    kind: Listener,
    listener: tokio::net::TcpListener,
    stats: Arc<AcceptStats>,
    tls: Option<Arc<HttpsTls>>,
    state: Arc<ControlState>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS_PER_LISTENER));
    // Connections end with the listener's task: a JoinSet aborts them when dropped.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                stats.stalled_since_ms.store(0, Ordering::Relaxed);
                accepted
            }
            Err(err) => {
                let class = classify(&err);
                let counter = match class {
                    "exhausted" => &stats.exhausted,
                    "connection" => &stats.connection,
                    _ => &stats.unknown,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if class != "connection" {
                    // Only the first failure of a run sets the start (this loop is the
                    // only writer).
                    if stats.stalled_since_ms.load(Ordering::Relaxed) == 0 {
                        stats
                            .stalled_since_ms
                            .store(unix_millis().max(1), Ordering::Relaxed);
                    }
                    warn!(listener = kind.label(), %err, class, "HTTP accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            stats.over_limit.fetch_add(1, Ordering::Relaxed);
            debug!(listener = kind.label(), %peer, "HTTP connection over the limit closed");
            drop(stream);
            continue;
        };
        let state = state.clone();
        let acceptor = tls.as_ref().and_then(|tls| tls.acceptor());
        connections.spawn(async move {
            // The whole connection, TLS handshake included, lives at most
            // MAX_CONNECTION_LIFETIME; the handshake alone gets the header deadline.
            let served = tokio::time::timeout(MAX_CONNECTION_LIFETIME, async {
                match acceptor {
                    None => serve_connection(kind, stream, state).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => serve_connection(kind, stream, state).await,
                            Ok(Err(err)) => debug!(listener = kind.label(), %peer, %err, "TLS handshake failed"),
                            Err(_) => debug!(listener = kind.label(), %peer, "TLS handshake too slow; closed"),
                        }
                    }
                }
            })
            .await;
            if served.is_err() {
                debug!(listener = kind.label(), %peer, "HTTP connection lifetime reached; closed");
            }
            drop(permit);
        });
    }
}

/// Serves HTTP/1.1 on one accepted stream (plain or TLS) until it ends.
async fn serve_connection<S>(kind: Listener, stream: S, state: Arc<ControlState>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(route(kind, &state, request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(err) = connection.await {
        debug!(listener = kind.label(), %err, "HTTP connection ended");
    }
}

pub(super) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A refused or undecidable `/announced` or `/fetch`.
pub(super) fn refused(status: StatusCode) -> Response<Body> {
    match status {
        StatusCode::UNAUTHORIZED => text(status, "unauthorized\n"),
        StatusCode::BAD_GATEWAY => text(status, "auth unavailable\n"),
        status => text(status, "cannot authorize\n"),
    }
}

fn not_found_page() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(
        b"<!doctype html><title>moq-relayd</title><p>This is a Media over QUIC relay (moq-relayd). Nothing is served at this path.</p>\n",
    )));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

async fn route(kind: Listener, state: &ControlState, request: Request<Incoming>) -> Response<Body> {
    let get = request.method() == Method::GET || request.method() == Method::HEAD;
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    if kind == Listener::Internal && path == "/sessions/revalidate" {
        return if request.method() == Method::POST {
            super::sessions::revalidate(state, &query).await
        } else {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        };
    }
    let mut response = match (kind, get, path.as_str()) {
        (_, false, _) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        (_, true, "/health") => text(StatusCode::OK, "ok\n"),
        (Listener::Internal, true, "/metrics") => {
            let mut response = text(StatusCode::OK, state.metrics_body());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        (Listener::Internal, true, "/nodes") => {
            // Without links, the standalone answer of 0.14 and 0.17 alike.
            let nodes = state
                .cluster
                .as_ref()
                .map_or_else(|| "{\"nodes\":[]}".to_owned(), |table| table.nodes_json());
            let mut response = text(StatusCode::OK, nodes);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        (Listener::Internal, true, "/sessions") => super::sessions::list(state, &query).await,
        (Listener::Internal, true, _) => text(StatusCode::NOT_FOUND, "not found\n"),
        (Listener::Web, true, "/certificate.sha256") => {
            let fingerprint = state.fingerprint();
            if fingerprint.is_empty() {
                text(StatusCode::NOT_FOUND, "no certificate\n")
            } else {
                text(StatusCode::OK, fingerprint)
            }
        }
        (Listener::Web, true, p) if p == "/announced" || p.starts_with("/announced/") => {
            let prefix = p.strip_prefix("/announced").unwrap_or("");
            announced(state, prefix, &query).await
        }
        (Listener::Web, true, p) if p.starts_with("/fetch/") => {
            super::fetch::fetch(state, &p["/fetch/".len()..], &query).await
        }
        (Listener::Web, true, _) => not_found_page(),
    };
    if kind == Listener::Web && get {
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    response
}

/// `/announced[/prefix]`: the caller's credential is decided for `prefix`, then one worker
/// lists its replica of the announce table and the answer keeps what the grant allows.
async fn announced(state: &ControlState, prefix: &str, query: &str) -> Response<Body> {
    let path = if prefix.is_empty() { "/" } else { prefix };
    let access = match state.authorize(path, query).await {
        Ok(access) if !access.subscribe.is_empty() => access,
        Ok(_) => return text(StatusCode::UNAUTHORIZED, "unauthorized\n"),
        Err(status) => return refused(status),
    };
    // Every worker keeps a replica of the announce table: the first answers.
    let Some(link) = state.links.first() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "no worker\n");
    };
    let (reply, answer) = oneshot::channel();
    let request = ControlRequest::Announced {
        prefix: access.root.clone(),
        reply,
    };
    match link.request(request) {
        Ok(()) => {}
        Err(RequestError::Busy) => return text(StatusCode::SERVICE_UNAVAILABLE, "busy\n"),
        Err(RequestError::Gone) => return text(StatusCode::SERVICE_UNAVAILABLE, "stopped\n"),
    }
    let paths = match tokio::time::timeout(WORKER_ANSWER_TIMEOUT, answer).await {
        Ok(Ok(paths)) => paths,
        Ok(Err(_)) | Err(_) => return text(StatusCode::SERVICE_UNAVAILABLE, "no answer\n"),
    };
    let mut lines: Vec<&str> = paths
        .iter()
        .filter_map(|absolute| access.relative(absolute))
        .filter(|relative| !relative.is_empty() && access.may_subscribe(relative))
        // Hidden paths (`.stats/…`) are listed only when asked for by their own prefix.
        .filter(|relative| !relative.starts_with('.'))
        .collect();
    lines.sort_unstable();
    text(StatusCode::OK, lines.join("\n"))
}
