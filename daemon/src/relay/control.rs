//! The relay worker's side of the control thread: it publishes the worker's counters into
//! atomics the control thread reads, and answers the control thread's few requests (the
//! announced list, a group for `/fetch`) from a bounded queue drained once per loop
//! iteration; the drain (`drain.rs`) and the fetches (`http_fetch.rs`) act from here.
//!
//! It must never block the worker or take a lock: counters are relaxed stores into memory
//! only this worker writes, requests come through a bounded `sync_channel` read with
//! `try_recv`, and answers go back through a oneshot, whose send never waits.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quic_io::{SessionId, SessionIo, Waker};
use router::{FetchTicket, SubscriberId};
use tracing::debug;

use super::counters::{
    LATENCY_BUCKETS_MICROS, LatencyHistogram, OpenClose, SubscriptionTally, TRANSPORTS, Traffic,
};
use super::drain::DrainFlag;
use super::http_fetch::Pull;
use super::listing::{SessionFilter, SessionView};
use super::{AuthRefusals, RelayCounters, RelayWorker, SessionRefusals};
use crate::auth::Cause;
use driver::DriverCounters;
use proto::session::{ControlBytes, ControlClass};

/// Requests one worker's queue holds; past this the control thread answers 503 rather
/// than wait (an HTTP query is never worth stalling the data path for).
pub const MAX_PENDING_REQUESTS: usize = 64;

/// Requests a worker answers per loop iteration; the rest wait for the next one.
const MAX_REQUESTS_PER_POLL: usize = 16;

/// How stale the published live-session sums may get while sessions neither open nor
/// close. Summing walks every session, so it is not done on every iteration.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// Broadcast paths one `/announced` answer carries at most.
pub const MAX_ANNOUNCED_ANSWER: usize = 10_000;

/// What the control thread may ask a worker.
#[derive(Debug)]
pub enum ControlRequest {
    /// Broadcasts announced under `prefix` (absolute, no leading slash), from this
    /// worker's replica of the announce table.
    Announced {
        prefix: String,
        reply: tokio::sync::oneshot::Sender<Vec<String>>,
    },
    /// The newest group of `track` in the broadcast at `broadcast` (absolute) that this
    /// worker caches: the owner's answer is authoritative, others may know it too.
    NewestGroup {
        broadcast: String,
        track: String,
        reply: tokio::sync::oneshot::Sender<Option<u64>>,
    },
    /// The first group that completes on a subscription this worker opens for the
    /// purpose (`/fetch` of `latest` when no group of the track is held anywhere: the
    /// subscription makes the publisher send it).
    Pull {
        broadcast: String,
        track: String,
        reply: tokio::sync::oneshot::Sender<FetchReply>,
    },
    /// This worker's sessions that the filter matches (`GET /sessions`).
    Sessions {
        filter: Arc<SessionFilter>,
        reply: tokio::sync::oneshot::Sender<Vec<SessionView>>,
    },
    /// Queue the matching admitted sessions for a re-check and name them
    /// (`POST /sessions/revalidate`); the re-checks follow over the next iterations.
    Revalidate {
        filter: Arc<SessionFilter>,
        reply: tokio::sync::oneshot::Sender<Vec<String>>,
    },
    /// What this worker counted for `[stats]` since its last report.
    StatsReport {
        reply: tokio::sync::oneshot::Sender<crate::stats::tally::WorkerReport>,
    },
    /// Worker 0: publish these stats frames, and end these stats broadcasts (by path).
    PublishStats {
        writes: Vec<super::StatsWrite>,
        ended: Vec<String>,
    },
    /// Group `group` of a track, whole, from this worker's cache or the owner's.
    Fetch {
        broadcast: String,
        track: String,
        group: u64,
        reply: tokio::sync::oneshot::Sender<FetchReply>,
    },
}

/// A worker's answer to `ControlRequest::Fetch`.
#[derive(Debug)]
pub enum FetchReply {
    /// No broadcast is announced at that path.
    NotAnnounced,
    /// The group is not cached whole: evicted, still being written, or never produced.
    NotCached,
    /// The group's frame payloads, in order.
    Frames(Vec<Bytes>),
    /// The worker cannot take another fetch now.
    Busy,
    /// The publisher does not have the track.
    NotFound,
    /// The group grew past `MAX_PULL_BYTES`.
    TooLarge,
}

/// Counters by session transport and version.
const BY_VERSION: usize = TRANSPORTS.len() * proto::Version::ALL.len();
/// The frame-latency histogram: its buckets, sum and count.
const LATENCY_FIELDS: usize = LATENCY_BUCKETS_MICROS.len() + 2;
/// `router::Stats` fields, then `router::ShardCounters` fields, then the ring backlog
/// (last: the only gauge).
const ROUTER_FIELDS: usize = 8 + 5 + 1;

/// Counters kept one by one, in `flatten`'s order.
const SINGLE_FIELDS: usize = 36;

/// Control-stream bytes, sent then received, by class.
const CONTROL_FIELDS: usize = 2 * ControlClass::COUNT;

/// The number of counters in `PublishedCounters`: the single counters, one per `[auth]`
/// refusal cause, the sessions by transport and version, the control bytes, the latency
/// histogram, then the router's.
const FIELDS: usize =
    SINGLE_FIELDS + Cause::COUNT + BY_VERSION + CONTROL_FIELDS + LATENCY_FIELDS + ROUTER_FIELDS;

/// One worker's counters as the control thread sees them. Written only by the owning
/// worker (relaxed stores), read by anyone; every value is cumulative and monotonic.
#[derive(Debug)]
pub struct PublishedCounters {
    values: [AtomicU64; FIELDS],
}

impl Default for PublishedCounters {
    fn default() -> Self {
        Self {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl PublishedCounters {
    fn store(&self, c: &RelayCounters) {
        let values = flatten(c);
        for (i, (slot, value)) in self.values.iter().zip(values).enumerate() {
            // The last field, the ring backlog, is a gauge.
            debug_assert!(
                i == FIELDS - 1 || slot.load(Ordering::Relaxed) <= value,
                "counter {i} went back"
            );
            slot.store(value, Ordering::Relaxed);
        }
    }

    /// The last values the worker published.
    pub fn load(&self) -> RelayCounters {
        let v: [u64; FIELDS] = std::array::from_fn(|i| self.values[i].load(Ordering::Relaxed));
        let r = &v[FIELDS - ROUTER_FIELDS..];
        let l = &v[FIELDS - ROUTER_FIELDS - LATENCY_FIELDS..FIELDS - ROUTER_FIELDS];
        let control = &v[FIELDS - ROUTER_FIELDS - LATENCY_FIELDS - CONTROL_FIELDS..];
        RelayCounters {
            sessions_opened: v[0],
            sessions_closed: v[1],
            session_refusals: SessionRefusals {
                closed: v[2],
                other: v[3],
            },
            router_refusals: v[4],
            driver: DriverCounters {
                open_failed: v[5],
                write_failed: v[6],
                overflow_resets: v[7],
                refused_ops: v[8],
                bad_stream_ids: v[9],
                expired: v[35],
                control: ControlBytes {
                    tx: std::array::from_fn(|i| control[i]),
                    rx: std::array::from_fn(|i| control[ControlClass::COUNT + i]),
                },
            },
            ingress: Traffic {
                bytes: v[10],
                frames: v[11],
                groups: v[12],
                datagrams: v[13],
            },
            egress: Traffic {
                bytes: v[14],
                frames: v[15],
                groups: v[16],
                datagrams: v[17],
            },
            fetches: v[18],
            announces_started: v[19],
            announces_ended: v[20],
            sessions_expired: v[21],
            egress_subscriptions: SubscriptionTally {
                subscriptions: OpenClose {
                    opened: v[22],
                    closed: v[23],
                },
                viewers: OpenClose {
                    opened: v[24],
                    closed: v[25],
                },
            },
            ingress_subscriptions: OpenClose {
                opened: v[26],
                closed: v[27],
            },
            setup_timeouts: v[28],
            announces_looped: v[29],
            announces_too_long: v[30],
            announces_refused: v[31],
            reroutes: v[32],
            announces_over_limit: v[33],
            subscriptions_over_limit: v[34],
            auth_refusals: AuthRefusals {
                by_cause: std::array::from_fn(|i| v[SINGLE_FIELDS + i]),
            },
            sessions_by_version: std::array::from_fn(|t| {
                std::array::from_fn(|version| {
                    v[SINGLE_FIELDS + Cause::COUNT + t * proto::Version::ALL.len() + version]
                })
            }),
            router: router::Stats {
                frame_pushes: r[0],
                replay_pushes: r[1],
                ring_groups_dropped: r[2],
                subscriber_drops: r[3],
                stale_frames: r[4],
                stale_bytes: r[5],
                doorbells: r[6],
                received: r[7],
            },
            shard: router::ShardCounters {
                stale_messages: r[8],
                fetch_answers_dropped: r[9],
                queries_lagged: r[10],
                control_deferred: r[11],
                publisher_events_dropped: r[12],
            },
            ring_backlog: r[13],
            frame_latency: LatencyHistogram {
                buckets: std::array::from_fn(|i| l[i]),
                sum_micros: l[LATENCY_BUCKETS_MICROS.len()],
                count: l[LATENCY_BUCKETS_MICROS.len() + 1],
            },
        }
    }
}

fn flatten(c: &RelayCounters) -> [u64; FIELDS] {
    let single: [u64; SINGLE_FIELDS] = [
        c.sessions_opened,
        c.sessions_closed,
        c.session_refusals.closed,
        c.session_refusals.other,
        c.router_refusals,
        c.driver.open_failed,
        c.driver.write_failed,
        c.driver.overflow_resets,
        c.driver.refused_ops,
        c.driver.bad_stream_ids,
        c.ingress.bytes,
        c.ingress.frames,
        c.ingress.groups,
        c.ingress.datagrams,
        c.egress.bytes,
        c.egress.frames,
        c.egress.groups,
        c.egress.datagrams,
        c.fetches,
        c.announces_started,
        c.announces_ended,
        c.sessions_expired,
        c.egress_subscriptions.subscriptions.opened,
        c.egress_subscriptions.subscriptions.closed,
        c.egress_subscriptions.viewers.opened,
        c.egress_subscriptions.viewers.closed,
        c.ingress_subscriptions.opened,
        c.ingress_subscriptions.closed,
        c.setup_timeouts,
        c.announces_looped,
        c.announces_too_long,
        c.announces_refused,
        c.reroutes,
        c.announces_over_limit,
        c.subscriptions_over_limit,
        c.driver.expired,
    ];
    let (r, sh) = (&c.router, &c.shard);
    let router = [
        r.frame_pushes,
        r.replay_pushes,
        r.ring_groups_dropped,
        r.subscriber_drops,
        r.stale_frames,
        r.stale_bytes,
        r.doorbells,
        r.received,
        sh.stale_messages,
        sh.fetch_answers_dropped,
        sh.queries_lagged,
        sh.control_deferred,
        sh.publisher_events_dropped,
        c.ring_backlog,
    ];
    let mut values = single
        .into_iter()
        .chain(c.auth_refusals.by_cause)
        .chain(c.sessions_by_version.into_iter().flatten())
        .chain(c.driver.control.tx)
        .chain(c.driver.control.rx)
        .chain(c.frame_latency.buckets)
        .chain([c.frame_latency.sum_micros, c.frame_latency.count])
        .chain(router);
    let flat = std::array::from_fn(|_| values.next().unwrap_or_default());
    debug_assert!(
        values.next().is_none(),
        "FIELDS is shorter than the counters"
    );
    flat
}

/// The control thread's handle on one worker.
#[derive(Debug, Clone)]
pub struct WorkerLink {
    pub counters: Arc<PublishedCounters>,
    requests: SyncSender<ControlRequest>,
    waker: Option<Waker>,
}

/// Why a request did not reach a worker.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the worker's request queue is full")]
    Busy,
    #[error("the worker has stopped")]
    Gone,
}

impl WorkerLink {
    /// Queues `request` and wakes the worker; never blocks.
    pub fn request(&self, request: ControlRequest) -> Result<(), RequestError> {
        match self.requests.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(RequestError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(RequestError::Gone),
        }
        if let Some(waker) = &self.waker {
            waker.wake();
        }
        Ok(())
    }

    /// The worker's waker, known once the worker runs.
    pub(super) fn set_waker(&mut self, waker: Waker) {
        self.waker = Some(waker);
    }

    /// Wakes the worker (after the drain flag changed).
    pub fn wake(&self) {
        if let Some(waker) = &self.waker {
            waker.wake();
        }
    }
}

/// The worker's end: where it publishes and what it reads.
#[derive(Default)]
pub(super) struct WorkerControl {
    counters: Arc<PublishedCounters>,
    requests: Option<Receiver<ControlRequest>>,
    pub(super) drain: Arc<DrainFlag>,
    /// Sessions sent a GOAWAY since the drain began.
    pub(super) goaway_sent: HashSet<SessionId>,
    /// Sessions closed at the drain deadline.
    pub(super) closed_sent: HashSet<SessionId>,
    last_published: Option<(Instant, u64, u64)>,
    /// HTTP fetches waiting for the router's answer (at most `MAX_HTTP_FETCHES`).
    pub(super) http_fetches: HashMap<FetchTicket, tokio::sync::oneshot::Sender<FetchReply>>,
    /// HTTP pulls, by their router subscriber (at most `MAX_HTTP_PULLS`).
    pub(super) http_pulls: HashMap<SubscriberId, Pull>,
}

/// A worker's control end and the control thread's link to it.
pub(super) fn link(drain: Arc<DrainFlag>) -> (WorkerEnd, WorkerLink) {
    let (sender, receiver) = sync_channel(MAX_PENDING_REQUESTS);
    let counters = Arc::new(PublishedCounters::default());
    let end = WorkerEnd(WorkerControl {
        counters: counters.clone(),
        requests: Some(receiver),
        drain,
        goaway_sent: HashSet::new(),
        closed_sent: HashSet::new(),
        last_published: None,
        http_fetches: HashMap::new(),
        http_pulls: HashMap::new(),
    });
    let link = WorkerLink {
        counters,
        requests: sender,
        waker: None,
    };
    (end, link)
}

/// A worker's control end, handed to `RelayWorker::attach_control`.
pub struct WorkerEnd(WorkerControl);

impl RelayWorker {
    /// Connects this worker to the control thread (at start, before its loop runs).
    pub fn attach_control(&mut self, end: WorkerEnd) {
        self.control = end.0;
    }

    /// Once per loop iteration: publish counters, answer requests, GOAWAY on drain.
    pub(super) fn control_poll<T: SessionIo>(&mut self, now: Instant, io: &mut T) {
        self.publish_counters(now);
        self.answer_requests();
        self.forget_abandoned_fetches();
        if self.control.drain.is_closing() {
            self.close_all(io);
        } else if self.control.drain.is_draining() {
            self.go_away_all(io);
        }
    }

    fn publish_counters(&mut self, now: Instant) {
        let (opened, closed) = (self.counters.sessions_opened, self.counters.sessions_closed);
        let due = match self.control.last_published {
            None => true,
            Some((at, o, c)) => {
                o != opened || c != closed || now.duration_since(at) >= PUBLISH_INTERVAL
            }
        };
        if due {
            let mut total = self.counters();
            total.ring_backlog = self.shard.inbound_backlog() as u64;
            self.control.counters.store(&total);
            self.control.last_published = Some((now, opened, closed));
        }
    }

    fn answer_requests(&mut self) {
        // Taken out while answering (an answer needs `&mut self`), put back below.
        let Some(requests) = self.control.requests.take() else {
            return;
        };
        let mut answered = 0;
        loop {
            if answered == MAX_REQUESTS_PER_POLL {
                // More may be queued, and their wake-up was spent: run another iteration
                // at once rather than park on them (`deliveries` set this flag afresh).
                self.budget_exhausted = true;
                break;
            }
            answered += 1;
            let request = match requests.try_recv() {
                Ok(request) => request,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            };
            match request {
                ControlRequest::Announced { prefix, reply } => {
                    let mut paths: Vec<String> = self
                        .shard
                        .announced(&prefix)
                        .iter()
                        .map(|path| path.to_string())
                        .collect();
                    paths.truncate(MAX_ANNOUNCED_ANSWER);
                    // A oneshot never blocks the sender. The asker may have given up
                    // (timed out); then nobody needs the answer.
                    if reply.send(paths).is_err() {
                        debug!(worker = self.worker, "announced answer not collected");
                    }
                }
                ControlRequest::NewestGroup {
                    broadcast,
                    track,
                    reply,
                } => {
                    let newest = self.shard.newest_group(&broadcast, &track);
                    if reply.send(newest).is_err() {
                        debug!(worker = self.worker, "newest-group answer not collected");
                    }
                }
                ControlRequest::Sessions { filter, reply } => {
                    if reply.send(self.list_sessions(&filter)).is_err() {
                        debug!(worker = self.worker, "sessions answer not collected");
                    }
                }
                ControlRequest::Revalidate { filter, reply } => {
                    if reply.send(self.nudge_sessions(&filter)).is_err() {
                        debug!(worker = self.worker, "revalidate answer not collected");
                    }
                }
                ControlRequest::StatsReport { reply } => {
                    if let Err(report) = reply.send(self.stats_report()) {
                        // The round gave up on this worker: the counts go in the next one.
                        debug!(worker = self.worker, "stats report not collected");
                        self.stats.restore(report);
                    }
                }
                ControlRequest::PublishStats { writes, ended } => {
                    self.publish_stats(writes, ended);
                }
                ControlRequest::Fetch {
                    broadcast,
                    track,
                    group,
                    reply,
                } => self.http_fetch(&broadcast, &track, group, reply),
                ControlRequest::Pull {
                    broadcast,
                    track,
                    reply,
                } => self.http_pull(&broadcast, &track, reply),
            }
        }
        self.control.requests = Some(requests);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_counters_carry_every_field_back() {
        let counters = RelayCounters {
            sessions_opened: 1,
            sessions_closed: 2,
            session_refusals: SessionRefusals {
                closed: 3,
                other: 4,
            },
            router_refusals: 5,
            driver: DriverCounters {
                open_failed: 6,
                write_failed: 7,
                overflow_resets: 8,
                refused_ops: 9,
                bad_stream_ids: 10,
                expired: 103,
                control: ControlBytes {
                    tx: std::array::from_fn(|i| 300 + i as u64),
                    rx: std::array::from_fn(|i| 400 + i as u64),
                },
            },
            ingress: Traffic {
                bytes: 11,
                frames: 12,
                groups: 13,
                datagrams: 14,
            },
            egress: Traffic {
                bytes: 15,
                frames: 16,
                groups: 17,
                datagrams: 18,
            },
            fetches: 19,
            announces_started: 20,
            announces_ended: 21,
            sessions_expired: 22,
            egress_subscriptions: SubscriptionTally {
                subscriptions: OpenClose {
                    opened: 90,
                    closed: 91,
                },
                viewers: OpenClose {
                    opened: 92,
                    closed: 93,
                },
            },
            ingress_subscriptions: OpenClose {
                opened: 94,
                closed: 95,
            },
            setup_timeouts: 96,
            announces_looped: 97,
            announces_too_long: 98,
            announces_refused: 99,
            reroutes: 100,
            announces_over_limit: 101,
            subscriptions_over_limit: 102,
            auth_refusals: AuthRefusals {
                by_cause: std::array::from_fn(|i| 23 + i as u64),
            },
            sessions_by_version: [[40, 41, 42, 43], [44, 45, 46, 47]],
            router: router::Stats {
                frame_pushes: 50,
                replay_pushes: 51,
                ring_groups_dropped: 52,
                subscriber_drops: 53,
                stale_frames: 58,
                stale_bytes: 59,
                doorbells: 54,
                received: 55,
            },
            shard: router::ShardCounters {
                stale_messages: 56,
                fetch_answers_dropped: 57,
                queries_lagged: 58,
                control_deferred: 59,
                publisher_events_dropped: 60,
            },
            ring_backlog: 61,
            frame_latency: LatencyHistogram {
                buckets: std::array::from_fn(|i| 70 + i as u64),
                sum_micros: 80,
                count: 81,
            },
        };
        let published = PublishedCounters::default();
        published.store(&counters);
        assert_eq!(published.load(), counters);
    }

    #[test]
    fn a_full_request_queue_is_busy_not_blocking() {
        let (_end, link) = link(Arc::default());
        for _ in 0..MAX_PENDING_REQUESTS {
            let (reply, _answer) = tokio::sync::oneshot::channel();
            link.request(ControlRequest::Announced {
                prefix: String::new(),
                reply,
            })
            .expect("room in the queue");
        }
        let (reply, _answer) = tokio::sync::oneshot::channel();
        let refused = link.request(ControlRequest::Announced {
            prefix: String::new(),
            reply,
        });
        assert!(matches!(refused, Err(RequestError::Busy)));
    }
}
