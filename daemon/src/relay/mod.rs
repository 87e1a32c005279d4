//! The relay on one worker core: it ties the worker's QUIC/WebTransport sessions
//! (`quic-io`) to moq-lite session state machines (`proto`) and to the worker's router
//! shard (`router`). This is the only place that knows all three.
//!
//! Per session it owns the moq-lite `Session`, the session's grants, the output a stream's
//! flow control has not taken yet, and the mapping between its subscriptions and router
//! ids. It never blocks and never copies a payload: frames go from the publisher's
//! session into the router and out of the router into each subscriber's streams as the
//! same refcounted `Bytes`.
//!
//! Flow of a frame: publisher session `Event::Frame` → `Shard::push_frame` → (router
//! fanout, maybe across cores) → `Delivery::Frame` for each local subscriber →
//! `Session::write_frame` → `Action::Write` → `Io::write`.

mod conn;
mod setup;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use proto::session::{Event as MoqEvent, FetchServeId, ServeId, TrackServeId};
use proto::{ErrorCode, SubscribeResponse};
use quic_io::{Application, Event as IoEvent, SessionId, SessionInfo, SessionIo, Transport};
use router::{AnnounceEvent, BroadcastId, FetchId, PublisherEvent, QueryId, Shard, SubscriberId};
use tracing::{debug, info, warn};

use crate::auth::Authenticator;
use conn::Conn;
pub use setup::{RelayServer, start};

/// Output bytes one session may have waiting on flow control before the relay stops
/// pulling deliveries for it; past this the router's per-subscriber bound drops old groups
/// instead of this queue growing.
const MAX_PENDING_BYTES_PER_SESSION: usize = 8 << 20;

/// Rounds of session events and actions handled for one input before the rest waits for
/// the next loop iteration; a peer cannot make one call run forever.
const MAX_DRIVE_ROUNDS: usize = 1024;

/// Router deliveries handled per loop iteration, so one busy track cannot starve packet
/// I/O; the rest is handled on the next iteration (the loop does not sleep meanwhile).
const MAX_DELIVERIES_PER_POLL: usize = 65_536;

/// How the relay subscribes to a publishing session: every group, unordered, and a
/// latency budget long enough that the publisher never skips a group on our account (the
/// relay's own subscribers apply their budgets).
const UPSTREAM_SUBSCRIPTION: proto::SubscribeUpdate = proto::SubscribeUpdate {
    priority: 0,
    ordered: false,
    max_latency_ms: 30_000,
    start: None,
    end: None,
};

/// What a router subscriber on this worker is for.
#[derive(Debug, Clone, Copy)]
enum SubscriberRole {
    /// Serving a peer's SUBSCRIBE.
    Serve(ServeId),
    /// Answering a peer's TRACK request (05) with the track's info.
    TrackInfo(TrackServeId),
}

/// One worker's relay.
pub struct RelayWorker {
    worker: usize,
    shard: Shard,
    auth: Arc<Authenticator>,
    hop_id: u64,
    conns: HashMap<SessionId, Conn>,
    /// Router subscriber → the session and request it serves.
    subscribers: HashMap<SubscriberId, (SessionId, SubscriberRole)>,
    /// Router announce query → the session it feeds.
    queries: HashMap<QueryId, SessionId>,
    /// Broadcasts published by sessions on this worker → the session.
    broadcasts: HashMap<BroadcastId, SessionId>,
    /// FETCHes waiting for the router's answer → the session and its request (bounded by
    /// the router's limit on pending fetches).
    fetches: HashMap<FetchId, (SessionId, FetchServeId)>,
    /// Subscribers skipped because their session's output was full; retried first.
    deferred: VecDeque<SubscriberId>,
    deferred_set: HashSet<SubscriberId>,
    /// The router's verdict at the end of the last `poll`: may the loop sleep? Deciding
    /// there is safe: a producer that pushes after it sees this shard parked and rings
    /// the worker's eventfd, so the coming wait returns at once.
    may_park: bool,
    /// The last `poll` stopped at `MAX_DELIVERIES_PER_POLL` with deliveries left.
    budget_exhausted: bool,
    /// The time of the last `poll`, for `timeout`.
    now: Instant,
}

impl RelayWorker {
    pub fn new(worker: usize, shard: Shard, auth: Arc<Authenticator>, hop_id: u64) -> Self {
        Self {
            worker,
            shard,
            auth,
            hop_id,
            conns: HashMap::new(),
            subscribers: HashMap::new(),
            queries: HashMap::new(),
            broadcasts: HashMap::new(),
            fetches: HashMap::new(),
            deferred: VecDeque::new(),
            deferred_set: HashSet::new(),
            may_park: false,
            budget_exhausted: false,
            now: Instant::now(),
        }
    }

    fn session_ready<T: SessionIo>(&mut self, info: SessionInfo, io: &mut T) {
        let Some(version) = info.transport.version().and_then(proto::Version::from_alpn) else {
            // ALPN or wt-protocol outside what we offered: only a buggy peer gets here.
            warn!(worker = self.worker, session = info.id, transport = ?info.transport, "no moq-lite version negotiated");
            io.close(
                info.id,
                ErrorCode::Version.session_code(proto::Version::Lite05) as u32,
                "version",
            );
            return;
        };
        let conn = Conn::new(info.id, version, self.hop_id);
        debug!(worker = self.worker, session = info.id, %version, transport = ?info.transport, path = %info.path, "session ready");
        // Raw QUIC 05 carries the path in the client's SETUP; everything else is decided now.
        let decide_now = match &info.transport {
            Transport::WebTransport { .. } => Some((info.path.clone(), info.query.clone())),
            Transport::Quic { .. } if version == proto::Version::Lite05 => None,
            Transport::Quic { .. } => Some(("/".to_owned(), String::new())),
        };
        self.conns.insert(info.id, conn);
        if let Some((path, query)) = decide_now {
            self.authorize(info.id, &path, &query);
        } else if let Some(conn) = self.conns.get_mut(&info.id) {
            conn.awaiting_setup = true;
        }
        self.drive(info.id, io);
    }

    /// Decides the session's grants; a refused session is closed with code 6.
    fn authorize(&mut self, session: SessionId, path: &str, query: &str) {
        let Some(conn) = self.conns.get_mut(&session) else {
            return;
        };
        conn.awaiting_setup = false;
        let access = match self.auth.authorize(path, query) {
            Ok(access) => access,
            Err(rejection) => {
                info!(worker = self.worker, session, %rejection, "session refused");
                conn.moq()
                    .close(ErrorCode::Unauthorized, "unauthorized".into());
                return;
            }
        };
        debug!(worker = self.worker, session, root = %access.root, subscribe = ?access.subscribe, publish = ?access.publish, "session authorised");
        // Ask the peer for what it may publish, one announce interest per granted prefix.
        for prefix in &access.publish {
            if let Err(err) = conn.moq().announce_interest(prefix) {
                warn!(worker = self.worker, session, %err, "cannot ask for announcements");
            }
        }
        let subscribe_scope = !access.subscribe.is_empty();
        let root = access.root.clone();
        conn.access = Some(access);
        if subscribe_scope {
            match self.shard.announce_query(&root) {
                Ok((query, current)) => {
                    self.queries.insert(query, session);
                    conn.query = Some(query);
                    for path in current {
                        conn.announce_to_peer(&path);
                    }
                }
                Err(err) => {
                    warn!(worker = self.worker, session, %err, "cannot follow announcements")
                }
            }
        }
    }

    /// Handles the session's pending actions and events until it is quiet.
    fn drive<T: SessionIo>(&mut self, session: SessionId, io: &mut T) {
        for _ in 0..MAX_DRIVE_ROUNDS {
            let Some(conn) = self.conns.get_mut(&session) else {
                return;
            };
            conn.driver.flush(io);
            let Some(event) = conn.moq().poll_event() else {
                return;
            };
            self.on_moq_event(session, event);
        }
        warn!(
            worker = self.worker,
            session,
            "session still busy after {MAX_DRIVE_ROUNDS} rounds; continuing next iteration"
        );
    }

    fn on_moq_event(&mut self, session: SessionId, event: MoqEvent) {
        let Some(conn) = self.conns.get_mut(&session) else {
            return;
        };
        if !matches!(
            event,
            MoqEvent::Frame { .. } | MoqEvent::GroupStarted { .. } | MoqEvent::GroupEnded { .. }
        ) {
            tracing::trace!(worker = self.worker, session, ?event, "moq event");
        }
        match event {
            MoqEvent::Setup(setup) => {
                if conn.awaiting_setup {
                    let target = setup.path.unwrap_or_default();
                    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                    let (path, query) = (path.to_owned(), query.to_owned());
                    self.authorize(session, &path, &query);
                }
            }
            MoqEvent::AnnounceInterest { .. } => {
                // The session answers from the table `announce_to_peer` keeps current.
            }
            MoqEvent::Announced { path, .. } => {
                let Some(access) = conn.access.as_ref() else {
                    return;
                };
                if !access.may_publish(&path) {
                    debug!(worker = self.worker, session, %path, "announcement outside the publish grant ignored");
                    return;
                }
                let absolute = access.absolute(&path);
                if conn.published.contains_key(&absolute) {
                    return;
                }
                match self.shard.announce(&absolute) {
                    Ok(broadcast) => {
                        info!(worker = self.worker, session, broadcast = %absolute, "publishing");
                        conn.published.insert(absolute, broadcast);
                        self.broadcasts.insert(broadcast, session);
                    }
                    Err(err) => {
                        warn!(worker = self.worker, session, broadcast = %absolute, %err, "cannot publish")
                    }
                }
            }
            MoqEvent::Unannounced { path, .. } => {
                let Some(access) = conn.access.as_ref() else {
                    return;
                };
                let absolute = access.absolute(&path);
                if let Some(broadcast) = conn.published.remove(&absolute) {
                    info!(worker = self.worker, session, broadcast = %absolute, "unpublished");
                    self.broadcasts.remove(&broadcast);
                    conn.forget_broadcast(broadcast);
                    let _ = self.shard.unannounce(broadcast);
                }
            }
            MoqEvent::InterestEnded { .. } => {}
            MoqEvent::SubscribeRequested { serve, request } => {
                let Some(absolute) = conn.readable(&request.broadcast) else {
                    let _ = conn.moq().reject_subscribe(serve, ErrorCode::Unauthorized);
                    return;
                };
                match self.shard.subscribe(&absolute, &request.track) {
                    Ok(sub) => {
                        conn.serves.insert(
                            serve,
                            conn::Serve {
                                sub,
                                groups: HashMap::new(),
                            },
                        );
                        self.subscribers
                            .insert(sub, (session, SubscriberRole::Serve(serve)));
                    }
                    Err(err) => {
                        debug!(worker = self.worker, session, broadcast = %absolute, track = %request.track, %err, "subscribe refused");
                        let _ = conn.moq().reject_subscribe(serve, ErrorCode::NotFound);
                    }
                }
            }
            MoqEvent::SubscribeUpdated { .. } => {}
            MoqEvent::SubscribeCancelled { serve, .. } => {
                if let Some(state) = conn.serves.remove(&serve) {
                    self.subscribers.remove(&state.sub);
                    let _ = self.shard.unsubscribe(state.sub);
                }
            }
            MoqEvent::GroupCancelled { serve, group, .. } => {
                if let Some(state) = conn.serves.get_mut(&serve) {
                    state.groups.retain(|_, open| *open != group);
                }
            }
            MoqEvent::TrackRequested {
                request,
                broadcast,
                track,
            } => {
                let Some(absolute) = conn.readable(&broadcast) else {
                    let _ = conn.moq().reject_track(request, ErrorCode::Unauthorized);
                    return;
                };
                match self.shard.subscribe(&absolute, &track) {
                    Ok(sub) => {
                        self.subscribers
                            .insert(sub, (session, SubscriberRole::TrackInfo(request)));
                    }
                    Err(_) => {
                        let _ = conn.moq().reject_track(request, ErrorCode::NotFound);
                    }
                }
            }
            MoqEvent::SubscribeResponse {
                subscription,
                response,
            } => {
                let Some(upstream) = conn.upstream.get(&subscription) else {
                    return;
                };
                let info = match response {
                    SubscribeResponse::Ok(ok) => router::TrackInfo {
                        priority: ok.priority,
                        ordered: ok.ordered,
                        max_latency: std::time::Duration::from_millis(ok.max_latency_ms),
                        ..router::TrackInfo::default()
                    },
                    SubscribeResponse::Start { .. } => router::TrackInfo::default(),
                    SubscribeResponse::End { .. } | SubscribeResponse::Drop(_) => return,
                };
                if let Err(err) = self
                    .shard
                    .publish_track(upstream.broadcast, &upstream.name, info)
                {
                    debug!(worker = self.worker, session, %err, "track not published");
                }
            }
            MoqEvent::SubscriptionClosed { subscription, code } => {
                if let Some(upstream) = conn.upstream.remove(&subscription) {
                    conn.upstream_by_track.remove(&upstream.track);
                    let result = match code {
                        Some(ErrorCode::NotFound) => self.shard.reject_track(upstream.track),
                        _ => self.shard.end_track(upstream.track),
                    };
                    if let Err(err) = result {
                        debug!(worker = self.worker, session, %err, "track end not routed");
                    }
                }
            }
            MoqEvent::GroupStarted {
                subscription,
                sequence,
            } => {
                if let Some(upstream) = conn.upstream.get(&subscription) {
                    // The router counts groups that beat SUBSCRIBE_OK as the track going live.
                    let _ = self.shard.publish_track(
                        upstream.broadcast,
                        &upstream.name,
                        router::TrackInfo::default(),
                    );
                    if let Err(err) = self.shard.start_group(upstream.track, sequence) {
                        debug!(worker = self.worker, session, %err, "group not started");
                    }
                }
            }
            MoqEvent::Frame {
                subscription,
                sequence,
                timestamp,
                payload,
            } => {
                // 03/04 frames carry no timestamp: stamp them as the reference does, so that
                // a 05 subscriber still sees media time move.
                let timestamp = timestamp.unwrap_or_else(arrival_millis);
                if let Some(upstream) = conn.upstream.get(&subscription)
                    && let Err(err) =
                        self.shard
                            .push_frame(upstream.track, sequence, timestamp, payload)
                {
                    debug!(worker = self.worker, session, %err, "frame not routed");
                }
            }
            MoqEvent::GroupEnded {
                subscription,
                sequence,
            } => {
                if let Some(upstream) = conn.upstream.get(&subscription) {
                    let _ = self.shard.end_group(upstream.track, sequence);
                }
            }
            MoqEvent::GroupAborted {
                subscription,
                sequence,
                ..
            } => {
                if let Some(upstream) = conn.upstream.get(&subscription) {
                    let _ = self.shard.abort_group(upstream.track, sequence);
                }
            }
            MoqEvent::Datagram {
                subscription,
                sequence,
                timestamp,
                payload,
            } => {
                if let Some(upstream) = conn.upstream.get(&subscription) {
                    let track = upstream.track;
                    if self.shard.start_group(track, sequence).is_ok() {
                        let _ = self.shard.push_frame(track, sequence, timestamp, payload);
                        let _ = self.shard.end_group(track, sequence);
                    }
                }
            }
            MoqEvent::TrackInfo { request, info } => {
                let Some(upstream) = conn.track_requests.remove(&request) else {
                    return;
                };
                let result = match info {
                    Ok(info) => self
                        .shard
                        .publish_track(
                            upstream.broadcast,
                            &upstream.name,
                            conn::router_track_info(&info),
                        )
                        .map(drop),
                    Err(ErrorCode::NotFound) => self.shard.reject_track(upstream.track),
                    Err(_) => Ok(()),
                };
                if let Err(err) = result {
                    debug!(worker = self.worker, session, %err, "track info not routed");
                }
            }
            MoqEvent::FetchRequested { request, fetch } => {
                let Some(absolute) = conn.readable(&fetch.broadcast) else {
                    let _ = conn.moq().reject_fetch(request, ErrorCode::Unauthorized);
                    return;
                };
                // Answered by `fetch_answers`, from this worker's cache or the owner's.
                match self.shard.fetch(&absolute, &fetch.track, fetch.group) {
                    Ok(id) => {
                        self.fetches.insert(id, (session, request));
                    }
                    Err(err) => {
                        debug!(worker = self.worker, session, %err, "fetch refused");
                        let _ = conn.moq().reject_fetch(request, ErrorCode::NotFound);
                    }
                }
            }
            MoqEvent::FetchCancelled { request, .. } => {
                self.fetches.retain(|&id, &mut (owner, pending)| {
                    let cancelled = owner == session && pending == request;
                    if cancelled {
                        self.shard.cancel_fetch(id);
                    }
                    !cancelled
                });
            }
            MoqEvent::FetchFrame { .. } | MoqEvent::FetchEnded { .. } => {}
            MoqEvent::StreamFailed { code, reason } => {
                if breaks_the_protocol(code) {
                    // A peer that sends bytes we cannot parse is broken, not unlucky: keep
                    // nothing of it rather than guess what its other streams meant.
                    debug!(worker = self.worker, session, ?code, %reason, "malformed peer closed");
                    conn.moq()
                        .close(ErrorCode::ProtocolViolation, format!("malformed: {reason}"));
                } else {
                    debug!(worker = self.worker, session, ?code, %reason, "stream refused");
                }
            }
            MoqEvent::GoAway { uri } => {
                debug!(worker = self.worker, session, %uri, "peer sent GOAWAY")
            }
        }
    }

    fn session_closed(&mut self, session: SessionId, code: u64, now: Instant) {
        let Some(mut conn) = self.conns.remove(&session) else {
            return;
        };
        debug!(worker = self.worker, session, code, "session closed");
        conn.moq()
            .on_connection_closed(ErrorCode::from_number(code));
        for (path, broadcast) in conn.published.drain() {
            self.broadcasts.remove(&broadcast);
            // A publisher that leaves gracefully withdraws its announcements first (they
            // were handled as `Unannounced`); one that still has broadcasts is lost and
            // may come back, so they linger (`[cluster] linger`). The close code cannot
            // decide this: the reference client's crash over WebTransport arrives as 0.
            let result = self.shard.publisher_lost(now, broadcast);
            if let Err(err) = result {
                debug!(worker = self.worker, session, %path, %err, "broadcast end not routed");
            }
        }
        for state in conn.serves.values() {
            self.subscribers.remove(&state.sub);
            let _ = self.shard.unsubscribe(state.sub);
        }
        self.subscribers.retain(|sub, (owner, _)| {
            let keep = *owner != session;
            if !keep {
                let _ = self.shard.unsubscribe(*sub);
            }
            keep
        });
        self.fetches.retain(|&id, &mut (owner, _)| {
            if owner == session {
                self.shard.cancel_fetch(id);
            }
            owner != session
        });
        if let Some(query) = conn.query {
            self.queries.remove(&query);
            let _ = self.shard.close_query(query);
        }
    }

    /// Demand changes for tracks published by sessions here: subscribe upstream to the
    /// publishing session, or stop.
    fn publisher_events<T: SessionIo>(&mut self, io: &mut T) {
        while let Some(event) = self.shard.next_publisher_event() {
            match event {
                PublisherEvent::TrackWanted {
                    broadcast,
                    track,
                    name,
                } => {
                    debug!(worker = self.worker, %name, "track wanted");
                    let Some(&session) = self.broadcasts.get(&broadcast) else {
                        continue;
                    };
                    let Some(conn) = self.conns.get_mut(&session) else {
                        continue;
                    };
                    if conn.upstream_by_track.contains_key(&track) {
                        continue;
                    }
                    let Some(relative) = conn.relative_broadcast(broadcast) else {
                        continue;
                    };
                    // On 05 a publisher may hold SUBSCRIBE_START back until it has a
                    // group, while a subscriber waits for TRACK_INFO before subscribing:
                    // ask the publisher for the track's info too, so the track goes live
                    // (and waiting subscribers get their answer) as soon as it exists.
                    if conn.version == proto::Version::Lite05 {
                        match conn.moq().request_track(&relative, &name) {
                            Ok(request) => {
                                conn.track_requests.insert(
                                    request,
                                    conn::Upstream {
                                        broadcast,
                                        track,
                                        name: name.clone(),
                                    },
                                );
                            }
                            Err(err) => {
                                debug!(worker = self.worker, session, %err, "cannot ask for track info")
                            }
                        }
                    }
                    match conn
                        .moq()
                        .subscribe(&relative, &name, UPSTREAM_SUBSCRIPTION)
                    {
                        Ok(subscription) => conn.add_upstream(subscription, broadcast, track, name),
                        Err(err) => {
                            warn!(worker = self.worker, session, %err, "cannot subscribe to the publisher");
                            let _ = self.shard.reject_track(track);
                        }
                    }
                    self.drive(session, io);
                }
                PublisherEvent::TrackUnused { broadcast, track } => {
                    let Some(&session) = self.broadcasts.get(&broadcast) else {
                        continue;
                    };
                    let Some(conn) = self.conns.get_mut(&session) else {
                        continue;
                    };
                    if let Some(subscription) = conn.upstream_by_track.remove(&track) {
                        conn.upstream.remove(&subscription);
                        let _ = conn.moq().unsubscribe(subscription);
                    }
                    self.drive(session, io);
                }
            }
        }
    }

    fn announce_events<T: SessionIo>(&mut self, io: &mut T) {
        while let Some(query) = self.shard.next_ready_query() {
            let Some(&session) = self.queries.get(&query) else {
                continue;
            };
            let mut resync = false;
            while let Ok(Some(event)) = self.shard.next_announce(query) {
                let Some(conn) = self.conns.get_mut(&session) else {
                    break;
                };
                match event {
                    AnnounceEvent::Active(path) => conn.announce_to_peer(&path),
                    AnnounceEvent::Ended(path) => conn.unannounce_to_peer(&path),
                    AnnounceEvent::Lagged => resync = true,
                }
            }
            if resync && let Some(conn) = self.conns.get_mut(&session) {
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
                conn.resync_announcements(&current);
            }
            self.drive(session, io);
        }
    }

    /// Writes each answered FETCH onto its stream, or refuses it.
    fn fetch_answers<T: SessionIo>(&mut self, io: &mut T) {
        // Each pass takes one answer; the router holds at most its pending-fetch limit.
        while let Some((id, frames)) = self.shard.next_fetch_answer() {
            let Some((session, request)) = self.fetches.remove(&id) else {
                continue;
            };
            let Some(conn) = self.conns.get_mut(&session) else {
                continue;
            };
            let Some(frames) = frames else {
                let _ = conn.moq().reject_fetch(request, ErrorCode::NotFound);
                self.drive(session, io);
                continue;
            };
            let written = frames.into_iter().try_for_each(|(timestamp, payload)| {
                conn.moq().fetch_frame(request, timestamp, payload)
            });
            match written {
                Ok(()) => {
                    let _ = conn.moq().end_fetch(request);
                }
                Err(err) => {
                    debug!(worker = self.worker, session, %err, "fetch not served");
                    let _ = conn.moq().reject_fetch(request, ErrorCode::Cancel);
                }
            }
            self.drive(session, io);
        }
    }

    fn deliveries<T: SessionIo>(&mut self, io: &mut T) {
        let mut handled = 0;
        let mut retry = std::mem::take(&mut self.deferred);
        self.deferred_set.clear();
        loop {
            let next = retry.pop_front().or_else(|| self.shard.next_ready());
            let Some(sub) = next else { break };
            let Some(&(session, role)) = self.subscribers.get(&sub) else {
                continue;
            };
            let Some(conn) = self.conns.get_mut(&session) else {
                continue;
            };
            if conn.pending_bytes() > MAX_PENDING_BYTES_PER_SESSION
                || handled >= MAX_DELIVERIES_PER_POLL
            {
                if self.deferred_set.insert(sub) {
                    self.deferred.push_back(sub);
                }
                continue;
            }
            while let Some(delivery) = self.shard.next_delivery(sub) {
                handled += 1;
                let finished = match role {
                    SubscriberRole::Serve(serve) => conn.deliver(serve, delivery),
                    SubscriberRole::TrackInfo(request) => conn.answer_track_info(request, delivery),
                };
                if finished {
                    self.subscribers.remove(&sub);
                    let _ = self.shard.unsubscribe(sub);
                    break;
                }
                if conn.pending_bytes() > MAX_PENDING_BYTES_PER_SESSION {
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
}

impl<T: SessionIo> Application<T> for RelayWorker {
    fn on_event(&mut self, now: Instant, event: IoEvent, io: &mut T) {
        let session = match event {
            IoEvent::SessionReady(info) => return self.session_ready(info, io),
            IoEvent::SessionClosed { session, code, .. } => {
                return self.session_closed(session, code, now);
            }
            IoEvent::StreamOpened { session, .. }
            | IoEvent::Data { session, .. }
            | IoEvent::Finished { session, .. }
            | IoEvent::Reset { session, .. }
            | IoEvent::StopSending { session, .. }
            | IoEvent::Writable { session, .. }
            | IoEvent::Datagram { session, .. } => session,
        };
        let Some(conn) = self.conns.get_mut(&session) else {
            return;
        };
        let handled = conn.driver.on_event(event, io);
        debug_assert!(handled, "a lifecycle event reached the driver");
        self.drive(session, io);
    }

    fn poll(&mut self, now: Instant, io: &mut T) {
        self.shard.poll(now);
        self.publisher_events(io);
        self.announce_events(io);
        self.fetch_answers(io);
        self.deliveries(io);
        // Deliveries deferred for flow control wait for the peer's ACKs (socket input);
        // only those left by the per-poll budget need another iteration at once.
        self.may_park = self.shard.prepare_park() && !self.budget_exhausted;
        self.now = now;
    }

    fn timeout(&self) -> Option<Instant> {
        if !self.may_park {
            // Router work arrived since this iteration's poll: run another one at once.
            return Some(self.now);
        }
        self.shard.next_deadline(self.now)
    }
}

/// Wall-clock arrival time in milliseconds since the Unix epoch: the timestamp moq-lite
/// gives a frame that came without one (spec 5.11, bridging 03/04 into 05), in the
/// default timescale of 1000 units per second that such a track has.
fn arrival_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Stream failures that mean the peer broke the wire format, as opposed to refusals a
/// well-behaved peer can meet (an unknown stream type, which the draft says to ignore so
/// extensions can be probed, or a limit such as too many subscriptions).
fn breaks_the_protocol(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Decode
            | ErrorCode::WrongSize
            | ErrorCode::UnexpectedMessage
            | ErrorCode::ProtocolViolation
            | ErrorCode::Duplicate
            | ErrorCode::Version
    )
}
