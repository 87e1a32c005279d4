//! `/fetch/{broadcast...}/{track}[?group=N|latest]`: one group, whole, as its frame
//! payloads concatenated. The control thread asks worker 0 to FETCH it through the router
//! (from that worker's cache or the owner's) and, for `latest`, every worker for the
//! newest group it holds; when none holds one, worker 0 subscribes to the track and
//! answers with the first group that completes. A broadcast not announced yet or a group not produced yet is
//! waited for, polling, up to `FETCH_WAIT` (then 504, as moq-relay); a group older than
//! the newest that is no longer cached whole is 404.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::{Response, StatusCode};
use tokio::sync::oneshot;

use super::http::{Body, text};
use super::{ControlState, WORKER_ANSWER_TIMEOUT};
use crate::relay::{ControlRequest, FetchReply, RequestError};

/// moq-relay's bound on a `/fetch`: the broadcast announced and the group produced
/// within 30 s in all, else 504.
pub const FETCH_WAIT: Duration = Duration::from_secs(30);

/// Pause between two looks while waiting for a broadcast or a group.
const FETCH_RETRY: Duration = Duration::from_millis(100);

/// Largest body one `/fetch` answers with; a larger group is 500 (the router's cache
/// bound per track is smaller in any sane configuration).
pub const MAX_FETCH_BYTES: usize = 64 << 20;

enum Group {
    Latest,
    Sequence(u64),
}

fn parse_group(query: &str) -> Result<Group, ()> {
    let mut group = Group::Latest;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == "group" {
            group = match value.as_ref() {
                "latest" => Group::Latest,
                number => Group::Sequence(number.parse().map_err(|_| ())?),
            };
        }
    }
    Ok(group)
}

/// Sends `request` to worker `index` and waits (bounded) for its answer.
async fn ask<T>(
    state: &ControlState,
    index: usize,
    request: impl FnOnce(oneshot::Sender<T>) -> ControlRequest,
) -> Result<T, Response<Body>> {
    ask_within(state, index, WORKER_ANSWER_TIMEOUT, request).await
}

/// `latest` of a track no worker holds a group of: worker 0 subscribes and answers with
/// the first group that completes, as moq-relay waits for one. `None` when the broadcast
/// is not announced yet (the caller polls again).
async fn pull(
    state: &ControlState,
    broadcast: &str,
    track: &str,
    deadline: Instant,
) -> Option<Response<Body>> {
    let left = deadline.saturating_duration_since(Instant::now());
    let answer = ask_within(state, 0, left, |reply| ControlRequest::Pull {
        broadcast: broadcast.to_owned(),
        track: track.to_owned(),
        reply,
    })
    .await;
    Some(match answer {
        Ok(FetchReply::NotAnnounced) => return None,
        Ok(FetchReply::Frames(frames)) => body(frames),
        Ok(FetchReply::NotFound) => text(StatusCode::NOT_FOUND, "track not found\n"),
        Ok(FetchReply::NotCached) => text(StatusCode::NOT_FOUND, "track ended\n"),
        Ok(FetchReply::TooLarge) => text(StatusCode::INTERNAL_SERVER_ERROR, "group too large\n"),
        Ok(FetchReply::Busy) => text(StatusCode::SERVICE_UNAVAILABLE, "busy\n"),
        // Waited the whole budget for a group (the worker drops the pull when it sees
        // the asker gone).
        Err(_) if Instant::now() >= deadline => {
            text(StatusCode::GATEWAY_TIMEOUT, "not produced in time\n")
        }
        Err(response) => response,
    })
}

/// `ask` with its own bound on the wait.
async fn ask_within<T>(
    state: &ControlState,
    index: usize,
    wait: Duration,
    request: impl FnOnce(oneshot::Sender<T>) -> ControlRequest,
) -> Result<T, Response<Body>> {
    let Some(link) = state.links.get(index) else {
        return Err(text(StatusCode::SERVICE_UNAVAILABLE, "no worker\n"));
    };
    let (reply, answer) = oneshot::channel();
    match link.request(request(reply)) {
        Ok(()) => {}
        Err(RequestError::Busy) => return Err(text(StatusCode::SERVICE_UNAVAILABLE, "busy\n")),
        Err(RequestError::Gone) => return Err(text(StatusCode::SERVICE_UNAVAILABLE, "stopped\n")),
    }
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) | Err(_) => Err(text(StatusCode::SERVICE_UNAVAILABLE, "no answer\n")),
    }
}

/// The newest group any worker holds of the track.
async fn newest(
    state: &ControlState,
    broadcast: &str,
    track: &str,
) -> Result<Option<u64>, Response<Body>> {
    let mut newest = None;
    for index in 0..state.links.len() {
        let answer = ask(state, index, |reply| ControlRequest::NewestGroup {
            broadcast: broadcast.to_owned(),
            track: track.to_owned(),
            reply,
        })
        .await?;
        newest = newest.max(answer);
    }
    Ok(newest)
}

pub(super) async fn fetch(state: &ControlState, rest: &str, query: &str) -> Response<Body> {
    let Some((broadcast, track)) = rest.rsplit_once('/') else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected /fetch/{broadcast}/{track}\n",
        );
    };
    if broadcast.trim_matches('/').is_empty() || track.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "expected /fetch/{broadcast}/{track}\n",
        );
    }
    let Ok(wanted) = parse_group(query) else {
        return text(
            StatusCode::BAD_REQUEST,
            "group must be a number or `latest`\n",
        );
    };
    let access = match state.authorize(&format!("/{broadcast}"), query).await {
        Ok(access) if access.may_subscribe("") => access,
        Ok(_) => return text(StatusCode::UNAUTHORIZED, "unauthorized\n"),
        Err(status) => return super::http::refused(status),
    };
    let broadcast = access.root.clone();
    let deadline = Instant::now() + FETCH_WAIT;
    loop {
        let group = match wanted {
            Group::Sequence(n) => Some(n),
            Group::Latest => match newest(state, &broadcast, track).await {
                Ok(group) => group,
                Err(response) => return response,
            },
        };
        if group.is_none()
            && matches!(wanted, Group::Latest)
            && let Some(response) = pull(state, &broadcast, track, deadline).await
        {
            return response;
        }
        if let Some(group) = group {
            let answer = ask(state, 0, |reply| ControlRequest::Fetch {
                broadcast: broadcast.clone(),
                track: track.to_owned(),
                group,
                reply,
            })
            .await;
            match answer {
                Err(response) => return response,
                Ok(FetchReply::Frames(frames)) => return body(frames),
                Ok(FetchReply::Busy) => return text(StatusCode::SERVICE_UNAVAILABLE, "busy\n"),
                Ok(FetchReply::NotFound) => {
                    return text(StatusCode::NOT_FOUND, "track not found\n");
                }
                Ok(FetchReply::TooLarge) => {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, "group too large\n");
                }
                Ok(FetchReply::NotAnnounced) => {}
                Ok(FetchReply::NotCached) => {
                    // Older than the newest group and not cached whole: it is gone.
                    match newest(state, &broadcast, track).await {
                        Ok(Some(newest)) if newest > group => {
                            return text(StatusCode::NOT_FOUND, "group not found\n");
                        }
                        Ok(_) => {}
                        Err(response) => return response,
                    }
                }
            }
        }
        if Instant::now() + FETCH_RETRY >= deadline {
            return text(StatusCode::GATEWAY_TIMEOUT, "not produced in time\n");
        }
        tokio::time::sleep(FETCH_RETRY).await;
    }
}

/// The frames concatenated, with no framing and no `Content-Type`, as moq-relay answers.
fn body(frames: Vec<Bytes>) -> Response<Body> {
    let total: usize = frames.iter().map(Bytes::len).sum();
    if total > MAX_FETCH_BYTES {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "group too large\n");
    }
    let body = match frames.len() {
        1 => frames.into_iter().next().unwrap_or_default(),
        _ => {
            let mut joined = BytesMut::with_capacity(total);
            for frame in &frames {
                joined.extend_from_slice(frame);
            }
            joined.freeze()
        }
    };
    Response::new(Full::new(body))
}
