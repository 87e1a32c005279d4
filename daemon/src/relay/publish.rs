//! The publisher side of a relay worker: what publishing peers announce and send, and
//! the router's demand for their tracks (one upstream subscription per track, opened
//! when the router first wants it and closed when nobody does).

use proto::ErrorCode;
use proto::SubscribeResponse;
use proto::session::SessionEvent as MoqEvent;
use quic_io::{SessionId, SessionIo};
use router::{BroadcastId, PublisherEvent};
use tracing::{debug, info, warn};

use super::routes::{Offered, Route, Withdrawn};
use super::{RelayWorker, arrival_millis, session};

/// How the relay subscribes to a publishing session: every group, unordered, and a
/// latency budget long enough that the publisher never skips a group on our account (the
/// relay's own subscribers apply their budgets). On 06 the same Max Age also places the
/// start (spec 12.7): a moq-net publisher begins at the oldest cached group still within
/// it, so a fresh upstream subscription may bring up to that much backlog; 0 would start
/// at the latest group but let the publisher drop every group a newer one makes stale.
/// The upstream latency budget: long enough that a publisher never skips a group on the
/// relay's account.
pub(super) const UPSTREAM_MAX_AGE_MS: u64 = 30_000;

const UPSTREAM_SUBSCRIPTION: proto::SubscribeUpdate = proto::SubscribeUpdate {
    priority: 0,
    ordered: false,
    max_latency_ms: UPSTREAM_MAX_AGE_MS,
    start: None,
    end: None,
    frame_start: 0,
    frame_end: None,
};

/// On 06 one Max Age both places the start and sets how stale a group may get (spec
/// 12.7): a moq-net publisher given 30 s answers a fresh subscription with every cached
/// group of the last 30 s at once, and a subscriber that just joined saw old groups
/// after newer ones, or reset when the router capped the burst. So the relay subscribes
/// at the live edge (Max Age 0) and, at the first group, widens the budget back to
/// `UPSTREAM_SUBSCRIPTION`'s with that group as the floor, so nothing older comes.
const UPSTREAM_SUBSCRIPTION_06: proto::SubscribeUpdate = proto::SubscribeUpdate {
    max_latency_ms: 0,
    ..UPSTREAM_SUBSCRIPTION
};

impl RelayWorker {
    /// `broadcast` is fed from `route` from now on: a better route arrived, the active
    /// one went, or (same session) its chain changed. The old route's subscriptions
    /// close; the router drops the groups it left open and asks for every track in
    /// demand again, which `publisher_events` subscribes on the new route. The old
    /// session's unsubscribes go out in the next `poll`.
    pub(super) fn switch_route(&mut self, broadcast: BroadcastId, path: &str, route: &Route) {
        let previous = self.broadcasts.insert(broadcast, route.session);
        if previous == Some(route.session) {
            self.counters
                .note_router(self.shard.set_hops(broadcast, &route.hops));
            return;
        }
        info!(worker = self.worker, broadcast = %path, from = ?previous, to = route.session, hops = ?route.hops, "broadcast rerouted");
        self.counters.reroutes += 1;
        if let Some(old) = previous
            && let Some(conn) = self.sessions.get_mut(&old)
        {
            conn.forget_broadcast(broadcast, &mut self.counters.ingress_subscriptions);
            if !self.undriven.contains(&old) {
                self.undriven.push(old);
            }
        }
        self.counters
            .note_router(self.shard.reroute(broadcast, &route.hops));
    }

    /// What a publishing peer sent: its announcements, and the tracks, groups and frames
    /// of the relay's subscriptions to it.
    pub(super) fn on_publisher_event(&mut self, session: SessionId, event: MoqEvent) {
        let Some(conn) = self.sessions.get_mut(&session) else {
            return;
        };
        match event {
            MoqEvent::Announced { path, hops, .. } => {
                let Some(access) = conn.access.as_ref() else {
                    return;
                };
                // The chain as received names every hop before us (on 05/06 the
                // announcer's own included); longer than `max_hops` is dropped.
                if hops.len() > self.max_hops {
                    debug!(worker = self.worker, session, %path, hops = hops.len(), "announcement past max_hops dropped");
                    self.counters.announces_too_long += 1;
                    return;
                }
                if !access.may_publish(&path) {
                    debug!(worker = self.worker, session, %path, "announcement outside the publish grant ignored");
                    return;
                }
                let absolute = access.absolute(&path);
                let route = Route {
                    session,
                    hops,
                    cost: conn.link_cost,
                };
                let broadcast = match self.routes.offer(&absolute, route.clone()) {
                    Offered::New => match self.shard.announce_via(&absolute, &route.hops) {
                        Ok(broadcast) => {
                            info!(worker = self.worker, session, broadcast = %absolute, "publishing");
                            self.routes.insert(&absolute, broadcast, route);
                            self.broadcasts.insert(broadcast, session);
                            broadcast
                        }
                        Err(err) => {
                            warn!(worker = self.worker, session, broadcast = %absolute, %err, "cannot publish");
                            return;
                        }
                    },
                    Offered::Standby(broadcast) => broadcast,
                    Offered::Rerouted { broadcast, route } => {
                        self.switch_route(broadcast, &absolute, &route);
                        broadcast
                    }
                    Offered::Refused => {
                        debug!(worker = self.worker, session, broadcast = %absolute, "another publisher's broadcast of a routed path ignored");
                        self.counters.announces_refused += 1;
                        return;
                    }
                };
                let Some(conn) = self.sessions.get_mut(&session) else {
                    return;
                };
                if conn.published.insert(absolute.clone(), broadcast).is_none() {
                    self.counters.announces_started += 1;
                    if let Some(counts) = conn.stats_of(&absolute) {
                        counts.ingress.announces_started += 1;
                    }
                }
            }
            MoqEvent::Unannounced { path, .. } => {
                let Some(access) = conn.access.as_ref() else {
                    return;
                };
                let absolute = access.absolute(&path);
                if let Some(&broadcast) = conn.published.get(&absolute) {
                    info!(worker = self.worker, session, broadcast = %absolute, "unpublished");
                    self.counters.announces_ended += 1;
                    // While the path is still known: its upstream counts go to it.
                    conn.forget_broadcast(broadcast, &mut self.counters.ingress_subscriptions);
                    conn.published.remove(&absolute);
                    if let Some(counts) = conn.stats_of(&absolute) {
                        counts.ingress.announces_ended += 1;
                    }
                    match self.routes.withdraw(&absolute, session) {
                        Withdrawn::Standby => {}
                        Withdrawn::Failover { broadcast, route } => {
                            self.switch_route(broadcast, &absolute, &route)
                        }
                        Withdrawn::Last(_) | Withdrawn::Unknown => {
                            self.broadcasts.remove(&broadcast);
                            self.counters.note_router(self.shard.unannounce(broadcast));
                        }
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
                    SubscribeResponse::Ok(ok) => router::TrackProperties {
                        priority: ok.priority,
                        ordered: ok.ordered,
                        max_latency: std::time::Duration::from_millis(ok.max_latency_ms),
                        ..router::TrackProperties::default()
                    },
                    SubscribeResponse::Start { .. } => router::TrackProperties::default(),
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
                if let Some(upstream) =
                    conn.remove_upstream(subscription, &mut self.counters.ingress_subscriptions)
                {
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
                if let Some(upstream) = conn.upstream.get_mut(&subscription) {
                    self.counters.ingress.groups += 1;
                    upstream.counts.groups += 1;
                    // The router counts groups that beat SUBSCRIBE_OK as the track going live.
                    self.counters.note_router(self.shard.publish_track(
                        upstream.broadcast,
                        &upstream.name,
                        router::TrackProperties::default(),
                    ));
                    if std::mem::take(&mut upstream.widen_at_first_group) {
                        let widened = proto::SubscribeUpdate {
                            start: Some(sequence),
                            ..UPSTREAM_SUBSCRIPTION
                        };
                        let updated = conn
                            .driver
                            .session_mut()
                            .update_subscription(subscription, widened);
                        conn.refusals.note(updated);
                    }
                    let Some(upstream) = conn.upstream.get_mut(&subscription) else {
                        return;
                    };
                    match self.shard.start_group(upstream.track, sequence) {
                        Ok(()) => {
                            upstream.open_groups.push_back(sequence);
                            if upstream.open_groups.len() > session::MAX_UPSTREAM_OPEN_GROUPS {
                                upstream.open_groups.pop_front();
                            }
                        }
                        Err(err) => {
                            debug!(worker = self.worker, session, %err, "group not started");
                            self.counters.router_refusals += 1;
                        }
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
                if let Some(upstream) = conn.upstream.get_mut(&subscription) {
                    self.counters.ingress.frame(payload.len());
                    upstream.counts.frame(payload.len());
                }
                if let Some(upstream) = conn.upstream.get(&subscription)
                    && upstream.is_open(sequence)
                    && let Err(err) =
                        self.shard
                            .push_frame(upstream.track, sequence, timestamp, payload)
                {
                    debug!(worker = self.worker, session, %err, "frame not routed");
                    self.counters.router_refusals += 1;
                }
            }
            MoqEvent::GroupEnded {
                subscription,
                sequence,
            }
            | MoqEvent::GroupAborted {
                subscription,
                sequence,
                ..
            } => {
                let aborted = matches!(event, MoqEvent::GroupAborted { .. });
                if let Some(upstream) = conn.upstream.get_mut(&subscription)
                    && upstream.close_group(sequence)
                {
                    let result = if aborted {
                        self.shard.abort_group(upstream.track, sequence)
                    } else {
                        self.shard.end_group(upstream.track, sequence)
                    };
                    self.counters.note_router(result);
                }
            }
            MoqEvent::Datagram {
                subscription,
                sequence,
                timestamp,
                payload,
            } => {
                if let Some(upstream) = conn.upstream.get_mut(&subscription) {
                    let track = upstream.track;
                    self.counters.ingress.groups += 1;
                    self.counters.ingress.datagrams += 1;
                    self.counters.ingress.frame(payload.len());
                    upstream.counts.groups += 1;
                    upstream.counts.datagrams += 1;
                    upstream.counts.frame(payload.len());
                    if self.shard.start_group(track, sequence).is_ok() {
                        self.counters.note_router(
                            self.shard.push_frame(track, sequence, timestamp, payload),
                        );
                        self.counters
                            .note_router(self.shard.end_group(track, sequence));
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
                            session::router_track_info(&info),
                        )
                        .map(drop),
                    Err(ErrorCode::NotFound) => self.shard.reject_track(upstream.track),
                    Err(_) => Ok(()),
                };
                if let Err(err) = result {
                    debug!(worker = self.worker, session, %err, "track info not routed");
                }
            }
            other => debug_assert!(false, "on_publisher_event got {other:?}"),
        }
    }

    /// Demand changes for tracks published by sessions here: subscribe upstream to the
    /// publishing session, or stop.
    pub(super) fn publisher_events<T: SessionIo>(&mut self, io: &mut T) {
        while let Some(event) = self.shard.next_publisher_event() {
            match event {
                PublisherEvent::TrackWanted {
                    broadcast,
                    track,
                    name,
                } => {
                    debug!(worker = self.worker, %name, "track wanted");
                    if self.stats_track_wanted(broadcast, track) {
                        continue;
                    }
                    if self.marker == Some(broadcast) {
                        self.counters.note_router(self.shard.reject_track(track));
                        continue;
                    }
                    let Some(&session) = self.broadcasts.get(&broadcast) else {
                        continue;
                    };
                    let Some(conn) = self.sessions.get_mut(&session) else {
                        continue;
                    };
                    if conn.upstream_by_track.contains_key(&track) {
                        continue;
                    }
                    let Some(relative) = conn.relative_broadcast(broadcast) else {
                        continue;
                    };
                    // On 05/06 a publisher may hold SUBSCRIBE_START back until it has a
                    // group, while a subscriber waits for TRACK_INFO before subscribing:
                    // ask the publisher for the track's info too, so the track goes live
                    // (and waiting subscribers get their answer) as soon as it exists.
                    if conn.version.is_05_or_later() {
                        match conn.moq().request_track(&relative, &name) {
                            Ok(request) => {
                                conn.track_requests.insert(
                                    request,
                                    session::Upstream::new(broadcast, track, name.clone()),
                                );
                            }
                            Err(err) => {
                                debug!(worker = self.worker, session, %err, "cannot ask for track info")
                            }
                        }
                    }
                    let live_edge = conn.version.is_06_or_later();
                    let request = if live_edge {
                        UPSTREAM_SUBSCRIPTION_06
                    } else {
                        UPSTREAM_SUBSCRIPTION
                    };
                    match conn.moq().subscribe(&relative, &name, request) {
                        Ok(subscription) => {
                            let mut upstream = session::Upstream::new(broadcast, track, name);
                            upstream.widen_at_first_group = live_edge;
                            conn.add_upstream(
                                subscription,
                                upstream,
                                &mut self.counters.ingress_subscriptions,
                            );
                        }
                        Err(err) => {
                            warn!(worker = self.worker, session, %err, "cannot subscribe to the publisher");
                            self.counters.note_router(self.shard.reject_track(track));
                        }
                    }
                    self.drive(session, io);
                }
                PublisherEvent::TrackUnused { broadcast, track } => {
                    let Some(&session) = self.broadcasts.get(&broadcast) else {
                        continue;
                    };
                    let Some(conn) = self.sessions.get_mut(&session) else {
                        continue;
                    };
                    if let Some(subscription) = conn.upstream_by_track.remove(&track) {
                        // Groups left half-written end as aborted, so nobody waits on them
                        // and a later subscription cannot append to them.
                        if let Some(upstream) = conn
                            .remove_upstream(subscription, &mut self.counters.ingress_subscriptions)
                        {
                            for group in upstream.open_groups {
                                self.counters
                                    .note_router(self.shard.abort_group(track, group));
                            }
                        }
                        conn.refusals
                            .note(conn.driver.session_mut().unsubscribe(subscription));
                    }
                    self.drive(session, io);
                }
            }
        }
    }
}
