//! The subscriber side of a relay worker: peers' subscriptions, TRACK requests and
//! fetches, served from the router shard, and the announcements each peer may see. It
//! pulls router deliveries only while a session's output fits its bound, so a slow
//! reader costs old groups (the router drops them), never memory.

use std::collections::{HashMap, HashSet};

use proto::ErrorCode;
use proto::session::SessionEvent as MoqEvent;
use quic_io::{SessionId, SessionIo};
use router::AnnounceEvent;

use super::session::Routing;
use tracing::debug;

use std::time::{Duration, Instant};

use router::{Delivery, SubscriberId};

use super::{
    FrameRange, MAX_DELIVERIES_PER_POLL, MAX_TRACK_INFO_HOLDS, RelayWorker, SubscriberRole,
    TRACK_INFO_HOLD, session,
};

/// How often served groups are checked for staleness between group starts: a stale
/// group's unsent bytes go out at most this much past its due time (spec 8.5), and the
/// check walks the worker's sessions, so not every iteration.
const STALE_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

impl RelayWorker {
    /// What a subscribing peer asked for: subscriptions, track info and fetches.
    pub(super) fn on_subscriber_request(&mut self, session: SessionId, event: MoqEvent) {
        let Some(conn) = self.sessions.get_mut(&session) else {
            return;
        };
        match event {
            MoqEvent::SubscribeRequested { serve, request } => {
                let Some(absolute) = conn.readable(&request.broadcast) else {
                    conn.refusals.note(
                        conn.driver
                            .session_mut()
                            .reject_subscribe(serve, ErrorCode::Unauthorized),
                    );
                    return;
                };
                match self.shard.subscribe(&absolute, &request.track) {
                    Ok(sub) => {
                        conn.open_serve(
                            serve,
                            session::Serve {
                                sub,
                                broadcast: absolute.clone(),
                                groups: HashMap::new(),
                                recent: Default::default(),
                                counts: Default::default(),
                            },
                            &mut self.counters.egress_subscriptions,
                        );
                        self.subscribers
                            .insert(sub, (session, SubscriberRole::Serve(serve)));
                        conn.router_subscribers.insert(sub);
                        // The subscription now keeps the track in demand itself.
                        let held: Vec<SubscriberId> = conn
                            .info_holds
                            .iter()
                            .filter(|(_, b, t, _)| *b == absolute && *t == request.track)
                            .map(|&(held, ..)| held)
                            .collect();
                        for held in held {
                            self.release_hold(session, held);
                        }
                    }
                    Err(err) => {
                        debug!(worker = self.worker, session, broadcast = %absolute, track = %request.track, %err, "subscribe refused");
                        conn.refusals.note(
                            conn.driver
                                .session_mut()
                                .reject_subscribe(serve, ErrorCode::NotFound),
                        );
                    }
                }
            }
            MoqEvent::SubscribeCancelled { serve, .. } => {
                if let Some(state) =
                    conn.close_serve(serve, &mut self.counters.egress_subscriptions)
                {
                    self.subscribers.remove(&state.sub);
                    conn.router_subscribers.remove(&state.sub);
                    self.counters.note_router(self.shard.unsubscribe(state.sub));
                }
            }
            MoqEvent::GroupCancelled { serve, group, .. } => {
                if let Some(state) = conn.serve_mut(serve) {
                    state.groups.retain(|_, open| *open != group);
                }
            }
            MoqEvent::TrackRequested {
                request,
                broadcast,
                track,
            } => {
                let Some(absolute) = conn.readable(&broadcast) else {
                    conn.refusals.note(
                        conn.driver
                            .session_mut()
                            .reject_track(request, ErrorCode::Unauthorized),
                    );
                    return;
                };
                match self.shard.subscribe(&absolute, &track) {
                    Ok(sub) => {
                        self.subscribers
                            .insert(sub, (session, SubscriberRole::TrackInfo(request)));
                        conn.router_subscribers.insert(sub);
                        conn.info_requests.insert(sub, (absolute, track));
                    }
                    Err(_) => {
                        conn.refusals.note(
                            conn.driver
                                .session_mut()
                                .reject_track(request, ErrorCode::NotFound),
                        );
                    }
                }
            }
            MoqEvent::FetchRequested { request, fetch } => {
                self.counters.fetches += 1;
                let Some(absolute) = conn.readable(&fetch.broadcast) else {
                    conn.refusals.note(
                        conn.driver
                            .session_mut()
                            .reject_fetch(request, ErrorCode::Unauthorized),
                    );
                    return;
                };
                if let Some(counts) = conn.stats_of(&absolute) {
                    counts.egress.fetches += 1;
                }
                // Answered by `fetch_answers`, from this worker's cache or the owner's.
                match self.shard.fetch(&absolute, &fetch.track, fetch.group) {
                    Ok(id) => {
                        let range = FrameRange {
                            start: fetch.frame_start,
                            end: fetch.frame_end,
                        };
                        self.fetches.insert(id, (session, request, range));
                        let earlier = conn.fetches.insert(request, id);
                        debug_assert!(earlier.is_none(), "the session reused a fetch request id");
                    }
                    Err(err) => {
                        debug!(worker = self.worker, session, %err, "fetch refused");
                        conn.refusals.note(
                            conn.driver
                                .session_mut()
                                .reject_fetch(request, ErrorCode::NotFound),
                        );
                    }
                }
            }
            MoqEvent::FetchCancelled { request, .. } => {
                if let Some(id) = conn.fetches.remove(&request) {
                    self.fetches.remove(&id);
                    self.shard.cancel_fetch(id);
                }
            }
            other => debug_assert!(false, "on_subscriber_request got {other:?}"),
        }
    }

    pub(super) fn announce_events<T: SessionIo>(&mut self, io: &mut T) {
        while let Some(query) = self.shard.next_ready_query() {
            let Some(&session) = self.queries.get(&query) else {
                continue;
            };
            let mut resync = false;
            while let Ok(Some(event)) = self.shard.next_announce(query) {
                let Some(conn) = self.sessions.get_mut(&session) else {
                    break;
                };
                match event {
                    AnnounceEvent::Active(path) => {
                        let routing = Routing {
                            shard: &self.shard,
                            feeders: &self.broadcasts,
                        };
                        conn.announce_to_peer(&path, routing);
                    }
                    AnnounceEvent::Ended(path) => conn.unannounce_to_peer(&path),
                    AnnounceEvent::Lagged => resync = true,
                }
            }
            if resync && let Some(conn) = self.sessions.get_mut(&session) {
                let root = conn
                    .access
                    .as_ref()
                    .map(|access| access.root.clone())
                    .unwrap_or_default();
                let current: HashSet<String> = self
                    .shard
                    .announced(&root)
                    .iter()
                    .map(|path| path.to_string())
                    .collect();
                let routing = Routing {
                    shard: &self.shard,
                    feeders: &self.broadcasts,
                };
                conn.resync_announcements(&current, routing);
            }
            self.drive(session, io);
        }
    }

    /// Writes each answered FETCH onto its stream, or refuses it.
    pub(super) fn fetch_answers<T: SessionIo>(&mut self, io: &mut T) {
        // Each pass takes one answer; the router holds at most its pending-fetch limit.
        while let Some((id, frames)) = self.shard.next_fetch_answer() {
            let Some((session, request, range)) = self.fetches.remove(&id) else {
                self.http_fetch_answered(id, frames);
                continue;
            };
            let Some(conn) = self.sessions.get_mut(&session) else {
                continue;
            };
            let indexed = conn.fetches.remove(&request);
            debug_assert_eq!(indexed, Some(id), "fetch indexes disagree");
            let Some(frames) = frames else {
                conn.refusals.note(
                    conn.driver
                        .session_mut()
                        .reject_fetch(request, ErrorCode::NotFound),
                );
                self.drive(session, io);
                continue;
            };
            // A response has no header saying where it starts, so one that cannot begin at
            // the asked frame is reset, never shifted (spec 12.9; moq-net resets with its
            // "too far behind"). Our cache holds groups whole from frame 0.
            if range.start > 0 && frames.len() as u64 <= range.start {
                conn.refusals.note(
                    conn.driver
                        .session_mut()
                        .reject_fetch(request, ErrorCode::Lagged),
                );
                self.drive(session, io);
                continue;
            }
            let wanted = range.end.map_or(u64::MAX, |end| {
                end.saturating_sub(range.start).saturating_add(1)
            });
            let written = frames
                .into_iter()
                .skip(range.start as usize)
                .take(usize::try_from(wanted).unwrap_or(usize::MAX))
                .try_for_each(|(timestamp, payload)| {
                    conn.moq().fetch_frame(request, timestamp, payload)
                });
            match written {
                Ok(()) => {
                    conn.refusals
                        .note(conn.driver.session_mut().end_fetch(request));
                }
                Err(err) => {
                    debug!(worker = self.worker, session, %err, "fetch not served");
                    conn.refusals.note(
                        conn.driver
                            .session_mut()
                            .reject_fetch(request, ErrorCode::Cancel),
                    );
                }
            }
            self.drive(session, io);
        }
    }

    pub(super) fn deliveries<T: SessionIo>(&mut self, io: &mut T) {
        let mut handled = 0;
        // When this pass hands frames to their sessions: read once, at the first frame.
        let mut handed_at: Option<Instant> = None;
        let mut retry = std::mem::take(&mut self.deferred);
        self.deferred_set.clear();
        loop {
            let next = retry.pop_front().or_else(|| self.shard.next_ready());
            let Some(sub) = next else { break };
            let Some(&(session, role)) = self.subscribers.get(&sub) else {
                self.http_pull_ready(sub);
                continue;
            };
            let Some(conn) = self.sessions.get_mut(&session) else {
                continue;
            };
            if conn.pending_bytes() > self.max_pending_bytes || handled >= MAX_DELIVERIES_PER_POLL {
                if self.deferred_set.insert(sub) {
                    self.deferred.push_back(sub);
                }
                continue;
            }
            while let Some(delivery) = self.shard.next_delivery(sub) {
                handled += 1;
                match (&delivery, role) {
                    (router::Delivery::GroupStart { .. }, SubscriberRole::Serve(_)) => {
                        self.counters.egress.groups += 1;
                        // Its predecessor may go stale before the next group starts.
                        self.stale_candidates.insert(session);
                        self.stale_sweep_at
                            .get_or_insert(self.now + STALE_SWEEP_INTERVAL);
                    }
                    (
                        router::Delivery::Frame {
                            payload, arrived, ..
                        },
                        SubscriberRole::Serve(_),
                    ) => {
                        self.counters.egress.frame(payload.len());
                        let now = *handed_at.get_or_insert_with(Instant::now);
                        if let Some(latency) = self.shard.latency(*arrived, now) {
                            self.counters.frame_latency.record(latency);
                        }
                    }
                    _ => {}
                }
                let finished = match role {
                    SubscriberRole::Serve(serve) => conn.deliver(
                        serve,
                        delivery,
                        self.now,
                        &mut self.counters.egress_subscriptions,
                    ),
                    SubscriberRole::TrackInfo(request) => {
                        let ready = matches!(delivery, Delivery::Ready(_));
                        conn.answer_track_info(request, delivery);
                        let key = conn.info_requests.remove(&sub);
                        match key {
                            Some((broadcast, track)) if ready => {
                                let until = self.now + TRACK_INFO_HOLD;
                                conn.info_holds.push_back((sub, broadcast, track, until));
                                self.holds.insert((until, sub));
                                self.subscribers
                                    .insert(sub, (session, SubscriberRole::Held(until)));
                                if conn.info_holds.len() > MAX_TRACK_INFO_HOLDS
                                    && let Some(&(oldest, ..)) = conn.info_holds.front()
                                {
                                    self.release_hold(session, oldest);
                                }
                                break;
                            }
                            _ => true,
                        }
                    }
                    // Only the end of the track matters to a hold.
                    SubscriberRole::Held(_) => {
                        matches!(delivery, Delivery::TrackEnded { .. } | Delivery::NotFound)
                    }
                };
                if finished {
                    conn.info_holds.retain(|&(held, ..)| held != sub);
                    self.subscribers.remove(&sub);
                    conn.router_subscribers.remove(&sub);
                    self.counters.note_router(self.shard.unsubscribe(sub));
                    break;
                }
                if conn.pending_bytes() > self.max_pending_bytes {
                    if self.deferred_set.insert(sub) {
                        self.deferred.push_back(sub);
                    }
                    break;
                }
            }
            self.drive(session, io);
        }
        self.budget_exhausted = handled >= MAX_DELIVERIES_PER_POLL;
    }

    /// Resets served groups gone stale since their successor started (spec 8.5), at most
    /// every `STALE_SWEEP_INTERVAL`: a group start judges only its own subscription's
    /// older groups, and a long group would hold its predecessor until the next.
    pub(super) fn sweep_stale<T: SessionIo>(&mut self, now: Instant, io: &mut T) {
        if self.stale_sweep_at.is_none_or(|at| at > now) {
            return;
        }
        let candidates = std::mem::take(&mut self.stale_candidates);
        for session in candidates {
            let Some(conn) = self.sessions.get_mut(&session) else {
                continue;
            };
            let sweep = conn.expire_stale(now);
            if sweep.more {
                self.stale_candidates.insert(session);
            }
            if sweep.reset {
                self.drive(session, io);
            }
        }
        self.stale_sweep_at =
            (!self.stale_candidates.is_empty()).then_some(now + STALE_SWEEP_INTERVAL);
    }

    /// Releases the held TRACK subscribers whose time is up.
    pub(super) fn release_holds(&mut self, now: Instant) {
        while let Some(&(until, sub)) = self.holds.first() {
            if until > now {
                return;
            }
            self.holds.pop_first();
            // A stale entry (the hold was released early, its session closed, the id
            // reused) names a subscriber whose role no longer matches: skip it.
            if let Some(&(session, SubscriberRole::Held(at))) = self.subscribers.get(&sub)
                && at == until
            {
                self.release_hold(session, sub);
            }
        }
    }

    /// Ends one held TRACK subscriber of `session`.
    pub(super) fn release_hold(&mut self, session: SessionId, sub: SubscriberId) {
        let Some(conn) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(pos) = conn.info_holds.iter().position(|&(held, ..)| held == sub) else {
            return;
        };
        if let Some((_, _, _, until)) = conn.info_holds.remove(pos) {
            self.holds.remove(&(until, sub));
        }
        conn.router_subscribers.remove(&sub);
        let removed = self.subscribers.remove(&sub);
        debug_assert!(
            matches!(removed, Some((owner, SubscriberRole::Held(_))) if owner == session)
        );
        self.counters.note_router(self.shard.unsubscribe(sub));
    }
}
