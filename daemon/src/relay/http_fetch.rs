//! One-shot group fetches for the control thread's HTTP `/fetch`, on the worker side: a
//! router FETCH per numbered group (answered from this worker's cache or the owner's),
//! and for `latest` of a track nobody here receives, a router subscription that keeps
//! the first group that completes. Each is bounded in number and size, answered through
//! a oneshot (whose send never waits), and dropped when its asker has gone.

use bytes::Bytes;
use router::{Delivery, FetchTicket, GroupFrames, RouterError, SubscriberId};
use tracing::debug;

use super::RelayWorker;
use super::control::FetchReply;

/// HTTP pulls (subscriptions waiting for one group) one worker holds at once.
pub(super) const MAX_HTTP_PULLS: usize = 64;

/// Bytes one pulled group may hold; past this the pull ends `TooLarge`.
pub const MAX_PULL_BYTES: usize = 64 << 20;

/// A subscription opened for one HTTP `/fetch`, collecting the first group it sees whole.
pub(super) struct Pull {
    reply: tokio::sync::oneshot::Sender<FetchReply>,
    /// The group being collected: the first that started on this subscription.
    group: Option<u64>,
    frames: Vec<Bytes>,
    bytes: usize,
}

/// HTTP fetches one worker has waiting on the router at once; more are answered `Busy`.
const MAX_HTTP_FETCHES: usize = 64;

impl RelayWorker {
    pub(super) fn http_fetch(
        &mut self,
        broadcast: &str,
        track: &str,
        group: u64,
        reply: tokio::sync::oneshot::Sender<FetchReply>,
    ) {
        let answer = if self.control.http_fetches.len() >= MAX_HTTP_FETCHES {
            FetchReply::Busy
        } else {
            match self.shard.fetch(broadcast, track, group) {
                Ok(ticket) => {
                    // Answered by `http_fetch_answered`, from `fetch_answers`.
                    self.control.http_fetches.insert(ticket, reply);
                    return;
                }
                Err(RouterError::Unroutable { .. }) => FetchReply::NotAnnounced,
                Err(err) => {
                    debug!(worker = self.worker, %err, "HTTP fetch refused by the router");
                    FetchReply::Busy
                }
            }
        };
        if reply.send(answer).is_err() {
            debug!(worker = self.worker, "fetch answer not collected");
        }
    }

    /// A router FETCH answer that no session asked for: an HTTP fetch's, or nobody's.
    pub(super) fn http_fetch_answered(&mut self, ticket: FetchTicket, frames: Option<GroupFrames>) {
        let Some(reply) = self.control.http_fetches.remove(&ticket) else {
            return;
        };
        let answer = match frames {
            Some(frames) => {
                FetchReply::Frames(frames.into_iter().map(|(_, payload)| payload).collect())
            }
            None => FetchReply::NotCached,
        };
        if reply.send(answer).is_err() {
            debug!(worker = self.worker, "fetch answer not collected");
        }
    }

    pub(super) fn http_pull(
        &mut self,
        broadcast: &str,
        track: &str,
        reply: tokio::sync::oneshot::Sender<FetchReply>,
    ) {
        let answer = if self.control.http_pulls.len() >= MAX_HTTP_PULLS {
            FetchReply::Busy
        } else {
            match self.shard.subscribe(broadcast, track) {
                Ok(sub) => {
                    // Fed by `http_pull_ready`, from `deliveries`.
                    let pull = Pull {
                        reply,
                        group: None,
                        frames: Vec::new(),
                        bytes: 0,
                    };
                    self.control.http_pulls.insert(sub, pull);
                    return;
                }
                Err(RouterError::Unroutable { .. }) => FetchReply::NotAnnounced,
                Err(err) => {
                    debug!(worker = self.worker, %err, "HTTP pull refused by the router");
                    FetchReply::Busy
                }
            }
        };
        if reply.send(answer).is_err() {
            debug!(worker = self.worker, "pull answer not collected");
        }
    }

    /// A ready router subscriber that no session owns: an HTTP pull's, or nobody's.
    pub(super) fn http_pull_ready(&mut self, sub: SubscriberId) {
        let Some(mut pull) = self.control.http_pulls.remove(&sub) else {
            return;
        };
        let mut answer = None;
        while answer.is_none()
            && let Some(delivery) = self.shard.next_delivery(sub)
        {
            answer = match delivery {
                Delivery::Ready(_) => None,
                Delivery::NotFound => Some(FetchReply::NotFound),
                Delivery::TrackEnded { .. } => Some(FetchReply::NotCached),
                Delivery::GroupStart { group } => {
                    if pull.group.is_none() {
                        pull.group = Some(group);
                    }
                    None
                }
                Delivery::Frame { group, payload, .. } if pull.group == Some(group) => {
                    pull.bytes += payload.len();
                    pull.frames.push(payload);
                    (pull.bytes > MAX_PULL_BYTES).then_some(FetchReply::TooLarge)
                }
                Delivery::Frame { .. } => None,
                Delivery::GroupEnd { group } if pull.group == Some(group) => {
                    Some(FetchReply::Frames(std::mem::take(&mut pull.frames)))
                }
                Delivery::GroupEnd { .. } => None,
                Delivery::GroupsDropped { below } => {
                    // The group being collected lost frames: start over with the next.
                    if pull.group.is_some_and(|group| group < below) {
                        pull.group = None;
                        pull.frames.clear();
                        pull.bytes = 0;
                    }
                    None
                }
            };
        }
        match answer {
            None => {
                self.control.http_pulls.insert(sub, pull);
            }
            Some(answer) => {
                self.counters.note_router(self.shard.unsubscribe(sub));
                if pull.reply.send(answer).is_err() {
                    debug!(worker = self.worker, "pull answer not collected");
                }
            }
        }
    }

    /// HTTP fetches and pulls whose asker gave up: their router tickets are cancelled
    /// and their subscriptions closed.
    pub(super) fn forget_abandoned_fetches(&mut self) {
        if !self.control.http_pulls.is_empty() {
            let abandoned: Vec<SubscriberId> = self
                .control
                .http_pulls
                .iter()
                .filter(|(_, pull)| pull.reply.is_closed())
                .map(|(sub, _)| *sub)
                .collect();
            for sub in abandoned {
                self.control.http_pulls.remove(&sub);
                self.counters.note_router(self.shard.unsubscribe(sub));
            }
        }
        if self.control.http_fetches.is_empty() {
            return;
        }
        let shard = &mut self.shard;
        self.control.http_fetches.retain(|ticket, reply| {
            let keep = !reply.is_closed();
            if !keep {
                shard.cancel_fetch(*ticket);
            }
            keep
        });
    }
}
