//! One relay session: its moq-lite state machine (with the session driver that carries
//! out its actions), its grants, and what it publishes and serves. It never talks to the
//! router (the worker does, with the ids kept here).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driver::{DEFAULT_MAX_PENDING_BYTES, Driver};
use proto::session::{
    Config as SessionConfig, FetchServeId, GroupId, Perspective, ServeId, Session, SubscriptionId,
    TrackRequestId, TrackServeId,
};
use proto::{ErrorCode, Version};
use quic_io::SessionId;
use router::{BroadcastId, Delivery, FetchTicket, QueryId, SubscriberId, TrackId};
use tracing::debug;

use super::counters::{OpenClose, SessionRefusals, SubscriptionTally};
use super::listing::{Credential, SessionView};
use super::staleness::RecentGroups;
use super::stats::SessionStats;
use crate::auth::Access;
use crate::stats::counts::{PathCounts, Side};

/// A moq-lite-05 session between its connection and its SETUP (spec `auth.md` 1, 6.1:
/// the Role decides which directions are wired).
#[derive(Debug)]
pub enum AwaitingSetup {
    /// Raw QUIC: the SETUP Path carries the connection path and token.
    Path,
    /// WebTransport: granted on the CONNECT URL; the Role is still to check.
    Role(Box<Access>),
    /// WebTransport with an external decider: the decider is asked once the Role is
    /// known (moq-relay reads the SETUP first).
    Decider,
}

/// A peer's subscription we serve from a router subscriber.
#[derive(Debug)]
pub struct Serve {
    pub sub: SubscriberId,
    /// The relay-wide broadcast path, for the viewer count.
    pub broadcast: String,
    /// Open group streams by group sequence.
    pub groups: HashMap<u64, GroupId>,
    /// Groups that may still be in flight, to reset once stale (spec 8.5).
    pub recent: RecentGroups,
    /// Media sent since the last stats report (`[stats]`).
    pub counts: Side,
}

/// How long after its successor arrived a group may still be sent, whatever the
/// subscriber's max latency (moq-net clients send 0): a healthy viewer's previous
/// group is often still in flight, unacknowledged, when the next starts, and resetting
/// that loses data it was about to have (the browser client fails on such a reset). Half
/// a second keeps a relay that falls behind within about a group plus this.
pub const MIN_STALE_AGE: Duration = Duration::from_millis(500);

/// Our subscription to a publishing peer for a track the router wants.
#[derive(Debug)]
pub struct Upstream {
    pub broadcast: BroadcastId,
    pub track: TrackId,
    pub name: Arc<str>,
    /// Groups this subscription started in the router, oldest first. Only their frames
    /// are routed: a group the router refused (one an earlier subscription left open, say)
    /// must not have another subscription's frames appended to it.
    pub open_groups: VecDeque<u64>,
    /// 06: subscribed at the live edge; the first group widens the budget from there.
    pub widen_at_first_group: bool,
    /// Media received since the last stats report (`[stats]`).
    pub counts: Side,
}

/// Groups one upstream subscription keeps open in the router at once; the router itself
/// aborts the oldest past its own bound, so this only keeps the list from outgrowing it.
pub const MAX_UPSTREAM_OPEN_GROUPS: usize = 64;

impl Upstream {
    pub fn new(broadcast: BroadcastId, track: TrackId, name: Arc<str>) -> Self {
        Self {
            broadcast,
            track,
            name,
            open_groups: VecDeque::new(),
            widen_at_first_group: false,
            counts: Side::default(),
        }
    }

    pub fn is_open(&self, group: u64) -> bool {
        self.open_groups.contains(&group)
    }

    /// Forgets `group`; true if this subscription had it open.
    pub fn close_group(&mut self, group: u64) -> bool {
        let before = self.open_groups.len();
        self.open_groups.retain(|&g| g != group);
        self.open_groups.len() != before
    }
}

/// How the worker's broadcasts reach it, for what a session announces: the router's
/// routes, and which session feeds each broadcast published on this worker.
#[derive(Clone, Copy)]
pub struct Routing<'a> {
    pub shard: &'a router::Shard,
    pub feeders: &'a HashMap<BroadcastId, SessionId>,
}

pub struct RelaySession {
    pub id: SessionId,
    pub version: Version,
    /// The moq-lite session and the output its streams' flow control has not taken yet.
    pub driver: Driver,
    /// `None` until the session is authorised.
    pub access: Option<Access>,
    /// moq-lite-05: what waits for the client's SETUP (its Role, and on raw QUIC its
    /// path); `None` once the session is admitted or on 03/04.
    pub awaiting_setup: Option<AwaitingSetup>,
    /// When the credential expires, as entered in the worker's expiry set.
    pub expires_at: Option<std::time::Instant>,
    /// When a SETUP still awaited is too late, as entered in the worker's set.
    pub setup_deadline: Option<std::time::Instant>,
    /// Broadcasts this session publishes (feeds, or offers a standby route to), by
    /// relay-wide path.
    pub published: HashMap<String, BroadcastId>,
    /// A link's `?cost=`, added to the routes it offers (0 for other sessions).
    pub link_cost: u64,
    /// The origin id its SETUP declared, as reported to the upstream core's registry.
    pub reported_origin: Option<u64>,
    /// Read through `open_serve` and `close_serve`, which keep the tallies.
    serves: HashMap<ServeId, Serve>,
    /// Serves per relay-wide broadcast path: a session with one or more is a viewer of
    /// it. Bounded by `serves`.
    viewing: HashMap<String, u32>,
    /// Our subscriptions to the publishing peer. Entries come and go only through
    /// `add_upstream` and `remove_upstream`, which keep the tally.
    pub upstream: HashMap<SubscriptionId, Upstream>,
    pub upstream_by_track: HashMap<TrackId, SubscriptionId>,
    /// Our TRACK requests (05) to the publishing peer, answered with the track's info.
    pub track_requests: HashMap<TrackRequestId, Upstream>,
    pub query: Option<QueryId>,
    /// Paths (relative to the session root) currently announced to the peer.
    announced: HashSet<String>,
    /// Every router subscriber this session holds (serving SUBSCRIBE or answering
    /// TRACK), so closing it touches only its own.
    pub router_subscribers: HashSet<SubscriberId>,
    /// FETCHes waiting for the router's answer, by the peer's request.
    pub fetches: HashMap<FetchServeId, FetchTicket>,
    /// TRACK requests waiting for the router: the (relay-wide broadcast, track) asked for.
    pub info_requests: HashMap<SubscriberId, (String, String)>,
    /// Answered TRACK requests whose router subscriber is held, oldest first, with the
    /// (broadcast, track) they keep in demand and when they are released.
    pub info_holds: VecDeque<(SubscriberId, String, String, Instant)>,
    pub refusals: SessionRefusals,
    /// What `/sessions` shows of it and its filter matches.
    pub view: SessionView,
    /// What it was admitted with, for a re-check; `None` until it is admitted.
    pub credential: Option<Credential>,
    /// Set when an external decider (`auth_api`, `[auth] url`) decides this session
    /// (boxed: rare, and kept out of every session's own footprint).
    pub external: Option<Box<super::decision::External>>,
    /// What the peer sent before it was admitted, replayed in order once it is (at most
    /// `MAX_HELD_EVENTS`).
    pub held: VecDeque<proto::session::SessionEvent>,
    /// Counts since the last stats report, by path; `None` unless `[stats]` is enabled.
    pub stats: Option<SessionStats>,
}

impl RelaySession {
    pub fn new(id: SessionId, version: Version, hop_id: u64, view: SessionView) -> Self {
        let moq = Session::new(SessionConfig {
            version,
            perspective: Perspective::Server,
            hop_id,
            setup_path: None,
            setup_role: None,
        });
        Self::with_session(id, version, moq, view)
    }

    /// A link this relay dialed to another relay (cluster): the client end, with no Role
    /// (both directions) and, on raw QUIC 05/06, the peer URL's path and query as the
    /// SETUP Path (spec `cluster.md` 3.1).
    pub fn dialed(
        id: SessionId,
        version: Version,
        hop_id: u64,
        view: SessionView,
        setup_path: Option<String>,
    ) -> Self {
        let moq = Session::client(version, hop_id, setup_path, None);
        Self::with_session(id, version, moq, view)
    }

    fn with_session(id: SessionId, version: Version, moq: Session, view: SessionView) -> Self {
        Self {
            id,
            version,
            driver: Driver::new(id, moq, DEFAULT_MAX_PENDING_BYTES),
            access: None,
            awaiting_setup: None,
            expires_at: None,
            setup_deadline: None,
            published: HashMap::new(),
            link_cost: 0,
            reported_origin: None,
            serves: HashMap::new(),
            viewing: HashMap::new(),
            upstream: HashMap::new(),
            upstream_by_track: HashMap::new(),
            track_requests: HashMap::new(),
            query: None,
            announced: HashSet::new(),
            router_subscribers: HashSet::new(),
            fetches: HashMap::new(),
            info_requests: HashMap::new(),
            info_holds: VecDeque::new(),
            refusals: SessionRefusals::default(),
            view,
            credential: None,
            external: None,
            held: VecDeque::new(),
            stats: None,
        }
    }

    /// The relay-wide path of `broadcast` if this session may subscribe to it (SUBSCRIBE,
    /// TRACK and FETCH all read it).
    pub fn readable(&self, broadcast: &str) -> Option<String> {
        self.access
            .as_ref()
            .filter(|access| access.may_subscribe(broadcast))
            .map(|access| access.absolute(broadcast))
    }

    pub fn pending_bytes(&self) -> usize {
        self.driver.pending_bytes()
    }

    /// The moq-lite session.
    pub fn moq(&mut self) -> &mut Session {
        self.driver.session_mut()
    }

    // ------------------------------------------------------------------ announcements

    /// Tells the peer about a relay-wide broadcast, if it lies in its subscribe grant and
    /// does not reach us through the peer, with the hop chain it reached us by. Split
    /// horizon: the session leaves it out for a peer the chain names, and a broadcast
    /// this session itself feeds is never offered back (that covers peers no chain names:
    /// 03, or an id of 0); what the peer was told before, when the broadcast came another
    /// way, is withdrawn.
    pub fn announce_to_peer(&mut self, absolute: &str, routing: Routing<'_>) {
        let Some(access) = &self.access else { return };
        let Some(relative) = access.relative(absolute) else {
            return;
        };
        if self.feeds(absolute, routing) {
            self.unannounce_to_peer(absolute);
            return;
        }
        if !access.may_subscribe(relative) {
            return;
        }
        let relative = relative.to_owned();
        let hops = routing.shard.route_hops(absolute);
        let hops = hops.as_deref().unwrap_or_default();
        if self.driver.session_mut().announce(&relative, hops).is_ok() {
            self.announced.insert(relative);
        }
    }

    pub fn unannounce_to_peer(&mut self, absolute: &str) {
        let Some(relative) = self
            .access
            .as_ref()
            .and_then(|access| access.relative(absolute))
        else {
            return;
        };
        if self.announced.remove(relative) {
            self.refusals
                .note(self.driver.session_mut().unannounce(relative));
        }
    }

    /// After the router reported lost announce events: make the peer's view equal to
    /// `current` (relay-wide paths).
    pub fn resync_announcements(&mut self, current: &HashSet<String>, routing: Routing<'_>) {
        let Some(access) = self.access.clone() else {
            return;
        };
        let gone: Vec<String> = self
            .announced
            .iter()
            .filter(|relative| !current.contains(&access.absolute(relative)))
            .cloned()
            .collect();
        for relative in gone {
            self.announced.remove(&relative);
            self.refusals
                .note(self.driver.session_mut().unannounce(&relative));
        }
        for absolute in current {
            self.announce_to_peer(absolute, routing);
        }
    }

    // ------------------------------------------------------------------ publishing

    /// Whether subscribers of `absolute` are fed through this session: it feeds this
    /// worker's broadcast of it, and that broadcast is the route the relay serves.
    fn feeds(&self, absolute: &str, routing: Routing<'_>) -> bool {
        self.published.get(absolute).is_some_and(|&broadcast| {
            routing.feeders.get(&broadcast) == Some(&self.id)
                && routing.shard.is_visible(absolute, broadcast)
        })
    }

    /// The path the peer knows a broadcast it publishes by.
    pub fn relative_broadcast(&self, broadcast: BroadcastId) -> Option<String> {
        let access = self.access.as_ref()?;
        access
            .relative(path_of(&self.published, broadcast)?)
            .map(str::to_owned)
    }

    pub fn add_upstream(
        &mut self,
        subscription: SubscriptionId,
        upstream: Upstream,
        tally: &mut OpenClose,
    ) {
        tally.opened += 1;
        if let Some(counts) = self.stats_of_broadcast(upstream.broadcast) {
            counts.ingress.subscriptions_started += 1;
        }
        self.upstream_by_track.insert(upstream.track, subscription);
        if let Some(replaced) = self.upstream.insert(subscription, upstream) {
            debug_assert!(false, "subscription id {subscription:?} reused");
            self.upstream_by_track.remove(&replaced.track);
            tally.closed += 1;
        }
    }

    pub fn remove_upstream(
        &mut self,
        subscription: SubscriptionId,
        tally: &mut OpenClose,
    ) -> Option<Upstream> {
        let upstream = self.upstream.remove(&subscription)?;
        tally.closed += 1;
        if let Some(counts) = self.stats_of_broadcast(upstream.broadcast) {
            counts.ingress.subscriptions_ended += 1;
            counts.ingress.add(&upstream.counts);
        }
        if self.upstream_by_track.get(&upstream.track) == Some(&subscription) {
            self.upstream_by_track.remove(&upstream.track);
        }
        Some(upstream)
    }

    /// The broadcast ended: its upstream subscriptions go with it.
    pub fn forget_broadcast(&mut self, broadcast: BroadcastId, tally: &mut OpenClose) {
        let ended: Vec<SubscriptionId> = self
            .upstream
            .iter()
            .filter(|(_, up)| up.broadcast == broadcast)
            .map(|(id, _)| *id)
            .collect();
        for subscription in ended {
            self.remove_upstream(subscription, tally);
            self.refusals
                .note(self.driver.session_mut().unsubscribe(subscription));
        }
        self.track_requests
            .retain(|_, upstream| upstream.broadcast != broadcast);
    }

    // ------------------------------------------------------------------ serving

    /// Starts serving the peer's subscription `id`.
    pub fn open_serve(&mut self, id: ServeId, serve: Serve, tally: &mut SubscriptionTally) {
        // The session never reuses an id; if it did, the old serve counts as closed so
        // opened - closed stays the live count.
        debug_assert!(!self.serves.contains_key(&id), "serve id {id:?} reused");
        self.close_serve(id, tally);
        tally.subscriptions.opened += 1;
        let viewing = self.viewing.entry(serve.broadcast.clone()).or_insert(0);
        let first_view = *viewing == 0;
        if first_view {
            tally.viewers.opened += 1;
        }
        *viewing += 1;
        if let Some(counts) = self.stats_of(&serve.broadcast) {
            counts.egress.subscriptions_started += 1;
            counts.egress.broadcasts_started += u64::from(first_view);
        }
        self.serves.insert(id, serve);
    }

    /// Stops serving `id`; `None` when it was not served.
    pub fn close_serve(&mut self, id: ServeId, tally: &mut SubscriptionTally) -> Option<Serve> {
        let serve = self.serves.remove(&id)?;
        tally.subscriptions.closed += 1;
        let mut last_view = false;
        match self.viewing.get_mut(&serve.broadcast) {
            Some(viewing) if *viewing > 1 => *viewing -= 1,
            Some(_) => {
                self.viewing.remove(&serve.broadcast);
                tally.viewers.closed += 1;
                last_view = true;
            }
            None => debug_assert!(false, "a served broadcast without a viewer count"),
        }
        if let Some(counts) = self.stats_of(&serve.broadcast) {
            counts.egress.subscriptions_ended += 1;
            counts.egress.broadcasts_ended += u64::from(last_view);
            counts.egress.add(&serve.counts);
        }
        Some(serve)
    }

    pub fn serve_mut(&mut self, id: ServeId) -> Option<&mut Serve> {
        self.serves.get_mut(&id)
    }

    /// The stats entry of a broadcast this session publishes.
    fn stats_of_broadcast(&mut self, broadcast: BroadcastId) -> Option<&mut PathCounts> {
        let stats = self.stats.as_mut()?;
        stats.path(path_of(&self.published, broadcast)?)
    }

    /// The stats entry of `path` (absolute), when `[stats]` counts.
    pub fn stats_of(&mut self, path: &str) -> Option<&mut PathCounts> {
        self.stats.as_mut()?.path(path)
    }

    /// Moves what this session counted since the last report into `paths`, and names
    /// the paths it still refers to in `live`.
    pub fn flush_stats_into(
        &mut self,
        paths: &mut HashMap<String, PathCounts>,
        live: &mut HashSet<String>,
    ) {
        let Some(stats) = self.stats.as_mut() else {
            return;
        };
        for serve in self.serves.values_mut() {
            let counts = std::mem::take(&mut serve.counts);
            paths
                .entry(serve.broadcast.clone())
                .or_default()
                .egress
                .add(&counts);
            live.insert(serve.broadcast.clone());
        }
        for upstream in self.upstream.values_mut() {
            let counts = std::mem::take(&mut upstream.counts);
            if let Some(path) = path_of(&self.published, upstream.broadcast) {
                paths
                    .entry(path.to_owned())
                    .or_default()
                    .ingress
                    .add(&counts);
            }
        }
        for path in self.published.keys() {
            live.insert(path.clone());
        }
        for (path, counts) in stats.paths.drain() {
            paths.entry(path).or_default().add(&counts);
        }
    }

    /// The session is gone: everything it served and subscribed to upstream closes.
    pub fn close_all_subscriptions(
        &mut self,
        egress: &mut SubscriptionTally,
        ingress: &mut OpenClose,
    ) {
        let serves: Vec<ServeId> = self.serves.keys().copied().collect();
        for id in serves {
            self.close_serve(id, egress);
        }
        let upstream: Vec<SubscriptionId> = self.upstream.keys().copied().collect();
        for subscription in upstream {
            self.remove_upstream(subscription, ingress);
        }
        debug_assert!(self.viewing.is_empty());
    }

    /// Resets what went stale at `now` in every served subscription (spec 8.5), between
    /// group starts. Returns whether it reset anything (the session has output to
    /// drive) and whether some group may still go stale later.
    pub fn expire_stale(&mut self, now: Instant) -> StaleSweep {
        let mut sweep = StaleSweep::default();
        for (&serve, state) in &mut self.serves {
            if !state.recent.has_older_groups() {
                continue;
            }
            let max_latency = stale_age(self.driver.session(), serve);
            let (driver, refusals) = (&mut self.driver, &mut self.refusals);
            state.recent.expire(now, max_latency, |stale| {
                reset_stale(driver, refusals, serve, &mut state.groups, stale);
                sweep.reset = true;
            });
            sweep.more |= state.recent.has_older_groups();
        }
        sweep
    }

    /// Applies one router delivery to the peer's subscription. True when the
    /// subscription is over and its router subscriber can go.
    pub fn deliver(
        &mut self,
        serve: ServeId,
        delivery: Delivery,
        now: Instant,
        tally: &mut SubscriptionTally,
    ) -> bool {
        let Some(state) = self.serves.get_mut(&serve) else {
            return true;
        };
        let moq = self.driver.session_mut();
        match delivery {
            Delivery::Ready(_) => {
                self.refusals.note(moq.accept_subscribe(serve));
            }
            Delivery::NotFound => {
                self.refusals
                    .note(moq.reject_subscribe(serve, ErrorCode::NotFound));
                self.close_serve(serve, tally);
                return true;
            }
            Delivery::GroupStart { group } => {
                state.counts.groups += 1;
                let max_latency = stale_age(moq, serve);
                let (driver, refusals) = (&mut self.driver, &mut self.refusals);
                state.recent.start(group, now, max_latency, |stale| {
                    reset_stale(driver, refusals, serve, &mut state.groups, stale);
                });
                let moq = self.driver.session_mut();
                match moq.start_group(serve, group) {
                    Ok(id) => {
                        state.groups.insert(group, id);
                    }
                    Err(err) => {
                        debug!(session = self.id, group, %err, "group not started");
                        self.refusals.note::<()>(Err(err));
                    }
                }
            }
            Delivery::Frame {
                group,
                timestamp,
                payload,
                ..
            } => {
                state.counts.frame(payload.len());
                if let Some(&id) = state.groups.get(&group)
                    && let Err(err) = moq.write_frame(id, timestamp, payload)
                {
                    debug!(session = self.id, group, %err, "frame not written");
                    state.groups.remove(&group);
                    self.refusals.note::<()>(Err(err));
                }
            }
            Delivery::GroupEnd { group } => {
                if let Some(id) = state.groups.remove(&group) {
                    self.refusals.note(moq.end_group(id));
                }
            }
            Delivery::GroupsDropped { below } => {
                let dropped: Vec<u64> = state
                    .groups
                    .keys()
                    .copied()
                    .filter(|&group| group < below)
                    .collect();
                for group in dropped {
                    if let Some(id) = state.groups.remove(&group) {
                        state.recent.forget(group);
                        self.refusals.note(moq.abort_group(id, ErrorCode::Dropped));
                    }
                }
            }
            Delivery::TrackEnded { end } => {
                for (_, id) in state.groups.drain() {
                    self.refusals.note(moq.abort_group(id, ErrorCode::Cancel));
                }
                self.refusals.note(moq.end_subscription(serve, end));
                self.close_serve(serve, tally);
                return true;
            }
        }
        false
    }

    /// Answers a TRACK request (05) from the first delivery. True when done.
    pub fn answer_track_info(&mut self, request: TrackServeId, delivery: Delivery) -> bool {
        match delivery {
            Delivery::Ready(info) => {
                let info = proto::TrackInfo {
                    priority: info.priority,
                    ordered: info.ordered,
                    max_latency_ms: u64::try_from(info.max_latency.as_millis()).unwrap_or(u64::MAX),
                    timescale: info.timescale,
                };
                self.refusals
                    .note(self.driver.session_mut().answer_track(request, info));
            }
            _ => {
                let rejected = self
                    .driver
                    .session_mut()
                    .reject_track(request, ErrorCode::NotFound);
                self.refusals.note(rejected);
            }
        }
        true
    }
}

/// A publisher's TRACK_INFO as the router keeps it.
pub fn router_track_info(info: &proto::TrackInfo) -> router::TrackProperties {
    router::TrackProperties {
        priority: info.priority,
        ordered: info.ordered,
        max_latency: std::time::Duration::from_millis(info.max_latency_ms),
        timescale: info.timescale,
    }
}

/// The relay-wide path of a broadcast the session publishes (a session publishes a
/// handful, so a scan beats keeping a reverse map in step).
fn path_of(published: &HashMap<String, BroadcastId>, broadcast: BroadcastId) -> Option<&str> {
    published
        .iter()
        .find(|(_, id)| **id == broadcast)
        .map(|(path, _)| path.as_str())
}

/// What one session's stale sweep did.
#[derive(Debug, Default, Clone, Copy)]
pub struct StaleSweep {
    /// Some group was reset: the session has output to drive.
    pub reset: bool,
    /// Some group may still go stale later: sweep again.
    pub more: bool,
}

/// How long after its successor arrived a group of `serve` may still be sent: the
/// subscriber's max latency, never under `MIN_STALE_AGE`.
fn stale_age(moq: &Session, serve: ServeId) -> Duration {
    moq.serve_max_latency(serve)
        .map_or(Duration::MAX, |max| max.max(MIN_STALE_AGE))
}

/// Resets group `stale` of `serve`: an open one through the session, an ended one still
/// in flight by the stream the session kept.
fn reset_stale(
    driver: &mut Driver,
    refusals: &mut SessionRefusals,
    serve: ServeId,
    open: &mut HashMap<u64, GroupId>,
    stale: u64,
) {
    let moq = driver.session_mut();
    if let Some(group) = open.remove(&stale) {
        refusals.note(moq.abort_group(group, ErrorCode::Old));
        driver.count_expired();
    } else if let Some(stream) = moq.take_ended_group_stream(serve, stale) {
        driver.expire(stream, ErrorCode::Old);
    }
}
