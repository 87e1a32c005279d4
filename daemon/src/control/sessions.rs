//! The internal listener's `GET /sessions` and `POST /sessions/revalidate` (moq-relay
//! 0.17, `moq-relay-0.17.md` 3.2): the filter is parsed here, every worker answers for
//! its own sessions through its bounded queue, and the answers are merged.

use std::sync::Arc;

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::oneshot;

use super::ControlState;
use super::WORKER_ANSWER_TIMEOUT;
use super::http::{Body, text};
use crate::relay::{ControlRequest, RequestError, SessionFilter, SessionView};

#[derive(Serialize)]
struct List {
    sessions: Vec<SessionView>,
}

#[derive(Serialize)]
struct Nudged {
    ids: Vec<String>,
}

pub(super) async fn list(state: &ControlState, query: &str) -> Response<Body> {
    let filter = match SessionFilter::from_query(query) {
        Ok(filter) => Arc::new(filter),
        Err(err) => return text(StatusCode::BAD_REQUEST, err.to_string()),
    };
    let answers = ask_every_worker(state, |reply| ControlRequest::Sessions {
        filter: filter.clone(),
        reply,
    })
    .await;
    let mut sessions: Vec<SessionView> = match answers {
        Ok(answers) => answers.into_iter().flatten().collect(),
        Err(response) => return response,
    };
    sessions.sort_unstable_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
    json(StatusCode::OK, &List { sessions })
}

pub(super) async fn revalidate(state: &ControlState, query: &str) -> Response<Body> {
    let filter = match SessionFilter::from_query(query) {
        Ok(filter) => Arc::new(filter),
        Err(err) => return text(StatusCode::BAD_REQUEST, err.to_string()),
    };
    let answers = ask_every_worker(state, |reply| ControlRequest::Revalidate {
        filter: filter.clone(),
        reply,
    })
    .await;
    let mut ids: Vec<String> = match answers {
        Ok(answers) => answers.into_iter().flatten().collect(),
        Err(response) => return response,
    };
    ids.sort_unstable();
    // 0.17: 202 when re-checks were started, 200 when nothing matched.
    let status = if ids.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    json(status, &Nudged { ids })
}

/// Sends one request to every worker at once and waits for all answers within
/// `WORKER_ANSWER_TIMEOUT`; a full queue, a stopped worker or a late answer is a 503.
async fn ask_every_worker<A>(
    state: &ControlState,
    request: impl Fn(oneshot::Sender<A>) -> ControlRequest,
) -> Result<Vec<A>, Response<Body>> {
    let mut pending = Vec::with_capacity(state.links.len());
    for link in &state.links {
        let (reply, answer) = oneshot::channel();
        match link.request(request(reply)) {
            Ok(()) => pending.push(answer),
            Err(RequestError::Busy) => return Err(text(StatusCode::SERVICE_UNAVAILABLE, "busy\n")),
            Err(RequestError::Gone) => {
                return Err(text(StatusCode::SERVICE_UNAVAILABLE, "stopped\n"));
            }
        }
    }
    let all = join_in_order(pending);
    match tokio::time::timeout(WORKER_ANSWER_TIMEOUT, all).await {
        Ok(Some(answers)) => Ok(answers),
        Ok(None) | Err(_) => Err(text(StatusCode::SERVICE_UNAVAILABLE, "no answer\n")),
    }
}

/// Every answer in worker order, or `None` if a worker dropped its reply.
async fn join_in_order<A>(pending: Vec<oneshot::Receiver<A>>) -> Option<Vec<A>> {
    let mut answers = Vec::with_capacity(pending.len());
    // The workers answer concurrently; awaiting in order costs only the slowest.
    for answer in pending {
        answers.push(answer.await.ok()?);
    }
    Some(answers)
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = text(status, bytes);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
