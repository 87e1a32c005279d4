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

mod control;
mod counters;
mod decision;
mod drain;
mod http_fetch;
mod listing;
mod publish;
mod routes;
mod serve;
mod session;
mod setup;
mod setup_deadline;
mod staleness;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use proto::session::{FetchServeId, ServeId, SessionEvent as MoqEvent, TrackServeId};
use proto::{ErrorCode, SetupRole};
use quic_io::{Application, Event as IoEvent, SessionId, SessionInfo, SessionIo, Transport};
use router::{BroadcastId, FetchTicket, QueryId, Shard, SubscriberId};
use tracing::{debug, info, warn};

use crate::auth::{self, Access, Authenticator, Rejection, Role};
pub use control::{ControlRequest, FetchReply, PublishedCounters, RequestError, WorkerLink};
pub use counters::{
    AuthRefusals, LATENCY_BUCKETS_MICROS, LatencyHistogram, OpenClose, RelayCounters,
    SessionRefusals, SubscriptionTally, TRANSPORTS, Traffic,
};
pub use drain::DrainFlag;
pub use listing::{FilterError, SessionFilter, SessionView};
use session::{AwaitingSetup, RelaySession};
pub use setup::{RelayServer, start};
pub use stats::StatsWrite;

/// Output bytes one session may have waiting on flow control before the relay stops
/// pulling deliveries for it; past this the router's per-subscriber bound drops old groups
/// instead of this queue growing. The default of `[limits] bytes_buffered_per_session`,
/// which replaces it.
pub const MAX_PENDING_BYTES_PER_SESSION: usize = 8 << 20;

/// moq-relay 0.17's default `max_hops`, and the wire's bound on any chain.
pub const DEFAULT_MAX_HOPS: usize = 32;

/// Requests a session may send before it is admitted (they wait for its SETUP or its
/// decider's verdict); one more closes it. A client sends a handful.
const MAX_HELD_EVENTS: usize = 256;

/// Rounds of session events and actions handled for one input before the rest waits for
/// the next loop iteration; a peer cannot make one call run forever.
const MAX_DRIVE_ROUNDS: usize = 1024;

/// Router deliveries handled per loop iteration, so one busy track cannot starve packet
/// I/O; the rest is handled on the next iteration (the loop does not sleep meanwhile).
const MAX_DELIVERIES_PER_POLL: usize = 65_536;

/// How long a TRACK request's router subscriber outlives its answer. A 05 subscriber asks
/// for TRACK_INFO and then subscribes; releasing the first subscriber in between let the
/// track's demand drop to zero for a moment, so the relay cancelled its upstream
/// subscription and opened another, losing or duplicating the group in flight.
const TRACK_INFO_HOLD: std::time::Duration = std::time::Duration::from_secs(5);

/// TRACK requests answered and held per session; past this the oldest hold is released
/// (a peer asking for many tracks it never subscribes to gains nothing by it).
const MAX_TRACK_INFO_HOLDS: usize = 64;

/// What a router subscriber on this worker is for.
#[derive(Debug, Clone, Copy)]
enum SubscriberRole {
    /// Serving a peer's SUBSCRIBE.
    Serve(ServeId),
    /// Answering a peer's TRACK request (05) with the track's info.
    TrackInfo(TrackServeId),
    /// An answered TRACK request, kept until this instant (or the session's SUBSCRIBE for
    /// the track) so the track's demand does not lapse; its deliveries are discarded.
    Held(Instant),
}

/// The frames of a group a FETCH asks for (06 FETCH carries a range, spec 12.9): the
/// index of the first, and of the last (inclusive; `None` = through the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameRange {
    pub start: u64,
    pub end: Option<u64>,
}

/// One worker's relay.
pub struct RelayWorker {
    worker: usize,
    shard: Shard,
    auth: Arc<Authenticator>,
    hop_id: u64,
    /// Boxed: a session is two kilobytes, and a map of them holds room for up to twice
    /// as many as it has, every slot's page touched (issue 16's idle-session bytes).
    sessions: HashMap<SessionId, Box<RelaySession>>,
    /// Router subscriber → the session and request it serves.
    subscribers: HashMap<SubscriberId, (SessionId, SubscriberRole)>,
    /// Router announce query → the session it feeds.
    queries: HashMap<QueryId, SessionId>,
    /// Broadcasts published by sessions on this worker → the session that feeds it (the
    /// best of `routes`).
    broadcasts: HashMap<BroadcastId, SessionId>,
    /// Every session's route to each broadcast published here, best first.
    routes: routes::Routes,
    /// Sessions given output while another session was being driven (a route switched
    /// away from them), driven in the next `poll`; each at most once, so bounded by the
    /// sessions.
    undriven: Vec<SessionId>,
    /// When each authorised session's credential expires (JWT `exp`), soonest first;
    /// one entry per session with an `exp` (`RelaySession::expires_at` names it), so it
    /// is bounded by the sessions. `poll` closes what is due; `timeout` wakes for the
    /// first.
    expiries: BTreeSet<(Instant, SessionId)>,
    /// moq-lite-05+ sessions still waiting for the client's SETUP, by the end of their
    /// `[listen] timeout` (`RelaySession::setup_deadline` names each entry).
    setup_deadlines: BTreeSet<(Instant, SessionId)>,
    /// FETCHes waiting for the router's answer → the session, its request and the frames
    /// it wants (bounded by the router's limit on pending fetches).
    fetches: HashMap<FetchTicket, (SessionId, FetchServeId, FrameRange)>,
    /// Subscribers skipped because their session's output was full; retried first.
    deferred: VecDeque<SubscriberId>,
    deferred_set: HashSet<SubscriberId>,
    /// The router's verdict at the end of the last `poll`: may the loop sleep? Deciding
    /// there is safe: a producer that pushes after it sees this shard parked and rings
    /// the worker's eventfd, so the coming wait returns at once.
    may_park: bool,
    /// The last `poll` stopped at `MAX_DELIVERIES_PER_POLL` with deliveries left.
    budget_exhausted: bool,
    /// When served groups are next checked for staleness between group starts (spec
    /// 8.5); `None` while no served group has a successor, so an idle worker sleeps.
    stale_sweep_at: Option<Instant>,
    /// Sessions served a group start since their last sweep, or with a group that may
    /// still go stale (bounded by `sessions`).
    stale_candidates: HashSet<SessionId>,
    /// The time of the last `poll`, for `timeout`.
    now: Instant,
    /// Closed sessions' counts and the worker's own; `counters()` adds the live sessions.
    counters: RelayCounters,
    /// Held TRACK subscribers by release time (see `TRACK_INFO_HOLD`).
    holds: BTreeSet<(Instant, SubscriberId)>,
    /// A session's output waiting on flow control past which its deliveries wait
    /// (`MAX_PENDING_BYTES_PER_SESSION`; tests lower it).
    max_pending_bytes: usize,
    /// Counters published to, and requests from, the control thread.
    control: control::WorkerControl,
    /// `[stats] node` (else `[cluster] node`), as `/sessions` names this relay.
    node: Arc<str>,
    /// The high half of every session id this worker hands out: random per worker run,
    /// so ids do not repeat across workers or restarts.
    session_id_prefix: u64,
    /// Sessions a `POST /sessions/revalidate` asked to re-check.
    revalidations: listing::Revalidations,
    /// The external decider (`auth_api`, `[auth] url`), when one decides sessions.
    decider: Option<crate::decider::DeciderLink>,
    /// 0.17 revalidations by due time (`External::revalidate_at` names each entry; one
    /// per session at most).
    revalidations_due: BTreeSet<(Instant, SessionId)>,
    /// The longest hop chain accepted, as received (`[cluster] max_hops`, 0.17; 32, the
    /// wire's bound, otherwise).
    max_hops: usize,
    /// The upstream core's relay: every session is a link this relay dialed to a peer
    /// relay (`crate::cluster`), admitted with full access in both directions.
    links: Option<LinkTargets>,
    /// `[stats]`: counts per path and root, and (worker 0) the stats broadcasts.
    stats: stats::WorkerStats,
    /// Sessions announce `.`-segment paths too (0.14 files, and mesh gossip).
    show_hidden: bool,
    /// `[limits]` subscriptions_per_session and announces_per_session.
    peer_limits: (usize, usize),
    /// Mesh gossip's marker broadcast, announced here for good (worker 0); it has no
    /// tracks, so a subscriber asking for one is told there is none.
    marker: Option<BroadcastId>,
    /// Where accepted sessions' declared origins are kept for the upstream core (workers
    /// of a relay with links).
    peer_origins: Option<Arc<crate::cluster::origins::PeerOrigins>>,
}

/// What the upstream core dials on each link session, by session.
pub type LinkTargets = HashMap<SessionId, LinkTarget>;

#[derive(Default)]
pub struct LinkTarget {
    /// The raw-QUIC SETUP Path (path and query of the peer URL; `None` on WebTransport,
    /// whose URL carries it).
    pub setup_path: Option<String>,
    /// The peer's `?cost=`: added to every route learned over the link.
    pub cost: u64,
}

impl RelayWorker {
    pub fn new(worker: usize, shard: Shard, auth: Arc<Authenticator>, hop_id: u64) -> Self {
        Self {
            worker,
            shard,
            auth,
            hop_id,
            sessions: HashMap::new(),
            subscribers: HashMap::new(),
            queries: HashMap::new(),
            broadcasts: HashMap::new(),
            routes: routes::Routes::default(),
            undriven: Vec::new(),
            fetches: HashMap::new(),
            expiries: BTreeSet::new(),
            setup_deadlines: BTreeSet::new(),
            deferred: VecDeque::new(),
            deferred_set: HashSet::new(),
            may_park: false,
            budget_exhausted: false,
            stale_sweep_at: None,
            stale_candidates: HashSet::new(),
            now: Instant::now(),
            counters: RelayCounters::default(),
            holds: BTreeSet::new(),
            max_pending_bytes: MAX_PENDING_BYTES_PER_SESSION,
            control: control::WorkerControl::default(),
            node: Arc::from(""),
            session_id_prefix: session_id_prefix(worker),
            revalidations: listing::Revalidations::default(),
            decider: None,
            revalidations_due: BTreeSet::new(),
            links: None,
            max_hops: DEFAULT_MAX_HOPS,
            stats: stats::WorkerStats::default(),
            show_hidden: false,
            peer_limits: (
                proto::session::MAX_OUTSTANDING_REQUESTS,
                proto::session::MAX_BROADCASTS,
            ),
            marker: None,
            peer_origins: None,
        }
    }

    /// Accepted sessions' declared origins go to `origins`, for the upstream core.
    pub fn report_peer_origins(&mut self, origins: Arc<crate::cluster::origins::PeerOrigins>) {
        self.peer_origins = Some(origins);
    }

    /// The origin id a link's peer declared in its SETUP (0 until then, or if none).
    pub fn link_peer_origin(&self, session: SessionId) -> u64 {
        self.sessions
            .get(&session)
            .map_or(0, |conn| conn.driver.session().peer_origin())
    }

    /// Sessions announce paths under `.` segments like any other (moq-relay 0.14).
    pub fn show_hidden_paths(&mut self) {
        self.show_hidden = true;
    }

    /// What each accepted session may hold at once (`[limits]`): subscriptions, and
    /// broadcasts live from its announcements. Links this relay dials keep the session's
    /// own bounds: a peer relay carries a whole origin.
    pub fn limit_peers(&mut self, subscriptions: usize, broadcasts: usize) {
        self.peer_limits = (subscriptions, broadcasts);
    }

    /// Output a session may have waiting on flow control before its deliveries wait
    /// (`[limits] bytes_buffered_per_session`).
    pub fn limit_buffered(&mut self, bytes: usize) {
        self.max_pending_bytes = bytes;
    }

    /// Announces mesh gossip's marker broadcast `path` (empty, for as long as the relay
    /// runs). Before the loop runs.
    pub fn announce_marker(&mut self, path: &str) {
        match self.shard.announce(path) {
            Ok(broadcast) => {
                info!(worker = self.worker, %path, "mesh: announcing this relay");
                self.marker = Some(broadcast);
            }
            Err(err) => {
                warn!(worker = self.worker, %path, %err, "mesh: cannot announce this relay")
            }
        }
    }

    /// `[stats] enabled`: count per broadcast path and auth root for the stats
    /// broadcasts (before the loop runs).
    pub fn enable_stats(&mut self) {
        self.stats.enabled = true;
    }

    /// `[cluster] max_hops`: announcements whose chain is longer are dropped (counted).
    pub fn set_max_hops(&mut self, max_hops: usize) {
        self.max_hops = max_hops;
    }

    /// Makes this the upstream core's relay: its sessions are links it dialed.
    pub fn set_link_mode(&mut self) {
        self.links = Some(HashMap::new());
    }

    /// A link dial is out as `session`.
    pub fn expect_link(&mut self, session: SessionId, target: LinkTarget) {
        if let Some(links) = &mut self.links {
            links.insert(session, target);
        }
    }

    /// Closes a link this relay dialed that is no longer wanted, saying why.
    pub fn close_link<T: SessionIo>(&mut self, session: SessionId, why: &str, io: &mut T) {
        if let Some(conn) = self.sessions.get_mut(&session) {
            conn.moq().close(ErrorCode::Cancel, why.to_owned());
            self.drive(session, io);
        } else {
            io.close(session, 0, why);
        }
    }

    /// A link dial that never came up: nothing more to expect of it.
    pub fn forget_link(&mut self, session: SessionId) {
        if let Some(links) = &mut self.links {
            links.remove(&session);
        }
    }

    /// Whether `session` is still open here (a link the relay closed itself raises no
    /// event: the upstream core asks).
    pub fn has_session(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Hands the worker its link to the external decider (at start, before its loop).
    pub fn set_decider(&mut self, decider: crate::decider::DeciderLink) {
        self.decider = Some(decider);
    }

    /// The node name `/sessions` reports.
    pub fn set_node(&mut self, node: &str) {
        self.node = Arc::from(node);
    }

    /// Everything this worker counted, closed and live sessions together.
    pub fn counters(&self) -> RelayCounters {
        let mut total = self.counters;
        total.router = self.shard.stats();
        total.shard = self.shard.counters();
        for conn in self.sessions.values() {
            total.note_session(conn.driver.session());
            total.session_refusals.add(&conn.refusals);
            total.driver.add(&conn.driver.counters());
        }
        total
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
        let id = format!("{:016x}{:016x}", self.session_id_prefix, info.id);
        let view = SessionView::new(id, &self.node, &info);
        if let Some(links) = &mut self.links {
            let target = links.remove(&info.id).unwrap_or_default();
            return self.link_ready(info, version, view, target, io);
        }
        let mut conn = RelaySession::new(info.id, version, self.hop_id, view);
        let (subscriptions, broadcasts) = self.peer_limits;
        conn.moq().limit_peer(subscriptions, broadcasts);
        if self.show_hidden {
            conn.moq().show_hidden_paths();
        }
        if self.stats.enabled {
            conn.stats = Some(stats::SessionStats::default());
        }
        debug!(worker = self.worker, session = info.id, %version, transport = ?info.transport, path = %info.path, "session ready");
        // Raw QUIC 05/06 carries the path in the client's SETUP; everything else is decided
        // now, and a 05/06 session is wired once its SETUP Role is known. quic-io has
        // already answered the WebTransport CONNECT with 200 (its handshake answers
        // before it raises `SessionReady`), so a refusal is a session close, never an
        // HTTP status: what moq-relay does too (spec `auth.md` 13), though it reads the
        // SETUP first and we close a refused WebTransport session at once.
        let lite05 = version.is_05_or_later();
        // 0.14 mTLS (spec `auth.md` 11): a verified client certificate decides a session
        // that carries a URL; raw QUIC carries none, so there the certificate is ignored.
        let certificate_not_after = match (&info.transport, &info.peer_certificate) {
            (Transport::WebTransport { .. }, Some(certificate)) => Some(certificate.not_after),
            _ => None,
        };
        let decide_now = match &info.transport {
            Transport::WebTransport { .. } => Some((info.path.clone(), info.query.clone())),
            Transport::Quic { .. } if lite05 => None,
            Transport::Quic { .. } => Some(("/".to_owned(), String::new())),
        };
        self.sessions.insert(info.id, Box::new(conn));
        if let Some(kind) = self.decider.as_ref().map(|d| d.kind()) {
            let external = self.external_for(&info, kind);
            if let Some(conn) = self.sessions.get_mut(&info.id) {
                conn.external = Some(Box::new(external));
            }
        }
        self.counters.sessions_opened += 1;
        let transport = usize::from(matches!(info.transport, Transport::WebTransport { .. }));
        if let Some(index) = proto::Version::ALL.iter().position(|&v| v == version) {
            self.counters.sessions_by_version[transport][index] += 1;
        }
        let session = info.id;
        let external = self.decider.is_some();
        match decide_now {
            None => self.await_setup(info.id, AwaitingSetup::Path),
            Some(_) if external && lite05 => self.await_setup(info.id, AwaitingSetup::Decider),
            Some((path, query)) if external => self.ask_connect(info.id, &path, &query, Role::Any),
            Some((path, query)) => {
                if let Some(access) = self.decide(info.id, &path, &query, certificate_not_after) {
                    if lite05 {
                        self.await_setup(info.id, AwaitingSetup::Role(Box::new(access)));
                    } else {
                        self.admit(info.id, access, Role::Any);
                    }
                }
            }
        }
        if let Some(deadline) = info.handshake_deadline {
            self.arm_setup_deadline(session, deadline);
        }
        self.drive(session, io);
    }

    /// A link to a peer relay is up: the peer is a relay like us, so the link gets
    /// everything in both directions (spec `cluster.md` 3.1 step 5): we ask for all it
    /// announces and announce all we have, minus what came from it.
    fn link_ready<T: SessionIo>(
        &mut self,
        info: SessionInfo,
        version: proto::Version,
        view: SessionView,
        target: LinkTarget,
        io: &mut T,
    ) {
        // Only raw QUIC 05/06 carries the path in SETUP; WebTransport's URL carried it.
        let setup_path = target.setup_path.filter(|_| {
            version.is_05_or_later() && matches!(info.transport, Transport::Quic { .. })
        });
        let mut conn = RelaySession::dialed(info.id, version, self.hop_id, view, setup_path);
        conn.link_cost = target.cost;
        info!(worker = self.worker, session = info.id, %version, remote = %info.remote, "cluster link up");
        // A 05/06 peer that never sends its SETUP is given the dial's own deadline, like
        // a client that never sends one; the link is then redialed.
        self.sessions.insert(info.id, Box::new(conn));
        if version.is_05_or_later()
            && let Some(deadline) = info.handshake_deadline
        {
            self.set_setup_deadline(info.id, deadline);
        }
        self.counters.sessions_opened += 1;
        self.admit(info.id, auth::everything_at("/", None), Role::Any);
        self.drive(info.id, io);
    }

    fn await_setup(&mut self, session: SessionId, awaiting: AwaitingSetup) {
        if let Some(conn) = self.sessions.get_mut(&session) {
            conn.awaiting_setup = Some(awaiting);
        }
    }

    /// Decides the session's grants from its connection path and query, and arms its
    /// expiry; a refused session is closed with the rejection's close code (6 or 0x2 by
    /// the config generation, 64 + status otherwise).
    fn decide(
        &mut self,
        session: SessionId,
        path: &str,
        query: &str,
        certificate_not_after: Option<SystemTime>,
    ) -> Option<Access> {
        let decided = match certificate_not_after {
            Some(not_after) => self.auth.authorize_peer_certificate(path, not_after),
            None => self.auth.authorize(path, query),
        };
        let access = match decided {
            Ok(access) => access,
            Err(rejection) => {
                self.refuse(session, &rejection);
                return None;
            }
        };
        let conn = self.sessions.get_mut(&session)?;
        conn.credential = Some(listing::Credential {
            path: path.to_owned(),
            query: query.to_owned(),
            role: Role::Any,
            certificate_not_after,
        });
        if let Some(expires) = access.expires {
            // The wall clock says how long the credential has left; the worker's
            // deadlines are monotonic. An `exp` already reached is due at once.
            let left = expires
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let at = Instant::now() + left;
            debug_assert!(conn.expires_at.is_none(), "a session decided twice");
            conn.expires_at = Some(at);
            self.expiries.insert((at, session));
        }
        Some(access)
    }

    /// Checks the moq-lite-05 SETUP Role against the grants (403 when the direction is
    /// not granted), keeps only the direction it asks for, and wires the session.
    fn admit(&mut self, session: SessionId, mut access: Access, role: Role) {
        if let Err(rejection) = self.auth.check_role(&access, role) {
            return self.refuse(session, &rejection);
        }
        access.narrow_to(role);
        let Some(conn) = self.sessions.get_mut(&session) else {
            return;
        };
        conn.view.set_role(role);
        if let Some(credential) = &mut conn.credential {
            credential.role = role;
        }
        debug!(worker = self.worker, session, root = %access.root, subscribe = ?access.subscribe, publish = ?access.publish, "session authorised");
        // Ask the peer for what it may publish, one announce interest per granted prefix.
        for prefix in &access.publish {
            if let Err(err) = conn.moq().announce_interest(prefix) {
                warn!(worker = self.worker, session, %err, "cannot ask for announcements");
            }
        }
        let subscribe_scope = !access.subscribe.is_empty();
        let root = access.root.clone();
        self.stats.session_admitted(&root);
        conn.access = Some(access);
        if subscribe_scope {
            match self.shard.announce_query(&root) {
                Ok((query, current)) => {
                    self.queries.insert(query, session);
                    conn.query = Some(query);
                    for path in current {
                        let routing = session::Routing {
                            shard: &self.shard,
                            feeders: &self.broadcasts,
                        };
                        conn.announce_to_peer(&path, routing);
                    }
                }
                Err(err) => {
                    warn!(worker = self.worker, session, %err, "cannot follow announcements")
                }
            }
        }
    }

    /// Closes a session `[auth]` refused: logged once, counted per cause.
    fn refuse(&mut self, session: SessionId, rejection: &Rejection) {
        let Some(conn) = self.sessions.get_mut(&session) else {
            return;
        };
        self.counters.auth_refusals.note(rejection.cause());
        let code = rejection.close_code();
        info!(worker = self.worker, session, reason = rejection.reason(), status = rejection.status(), code, %rejection, "session refused");
        conn.moq()
            .close(raw_close(code), close_reason(rejection.status()));
    }

    /// Closes every session whose credential expired by `now` (spec `auth.md` 12,
    /// `moq-relay-0.17.md` 2.7), with the generation's unauthorized code.
    fn expire_sessions<T: SessionIo>(&mut self, now: Instant, io: &mut T) {
        while let Some(&(at, session)) = self.expiries.first() {
            if at > now {
                return;
            }
            self.expiries.pop_first();
            let Some(conn) = self.sessions.get_mut(&session) else {
                debug_assert!(false, "an expiry outlived its session");
                continue;
            };
            debug_assert_eq!(conn.expires_at, Some(at));
            conn.expires_at = None;
            if let Some(external) = conn.external.as_mut() {
                external.end_reason = Some("expired");
            }
            self.counters.sessions_expired += 1;
            let code = auth::close_code(401, self.auth.generation());
            info!(
                worker = self.worker,
                session, code, "credential expired; session closed"
            );
            conn.moq().close(raw_close(code), close_reason(401));
            self.drive(session, io);
        }
    }

    /// Handles the session's pending actions and events until it is quiet.
    fn drive<T: SessionIo>(&mut self, session: SessionId, io: &mut T) {
        for _ in 0..MAX_DRIVE_ROUNDS {
            let Some(conn) = self.sessions.get_mut(&session) else {
                return;
            };
            conn.driver.flush(io);
            if let Some(code) = conn.driver.closed_with() {
                // We closed it (refused, expired, malformed, over a bound): quic-io raises
                // no `SessionClosed` for a close of our own, so release it now.
                self.session_closed(session, code, "", self.now);
                return;
            }
            // An admitted session replays what it sent before admission first.
            let held = if conn.access.is_some() && conn.held.capacity() > 0 {
                let event = conn.held.pop_front();
                if conn.held.is_empty() {
                    // Replayed: nothing is held again once admitted, so the room goes
                    // (it would stay for the session's life; issue 16's idle bytes).
                    conn.held = VecDeque::new();
                }
                event
            } else {
                None
            };
            let Some(event) = held.or_else(|| conn.moq().poll_event()) else {
                return;
            };
            if conn.access.is_none() && !decides_admission(&event) {
                // Not admitted yet (its SETUP, or its decider's verdict, is still to
                // come): its requests wait rather than be refused.
                if conn.held.len() == MAX_HELD_EVENTS {
                    debug!(
                        worker = self.worker,
                        session, "too many requests before admission; closed"
                    );
                    conn.moq().close(
                        ErrorCode::BoundsExceeded,
                        "too many requests before admission".to_owned(),
                    );
                } else {
                    conn.held.push_back(event);
                }
                continue;
            }
            self.on_moq_event(session, event);
        }
        warn!(
            worker = self.worker,
            session,
            "session still busy after {MAX_DRIVE_ROUNDS} rounds; continuing next iteration"
        );
    }

    fn on_moq_event(&mut self, session: SessionId, event: MoqEvent) {
        let Some(conn) = self.sessions.get_mut(&session) else {
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
                if let Some(origins) = &self.peer_origins
                    && conn.reported_origin.is_none()
                    && let Some(origin) = setup.origin.filter(|&origin| origin != 0)
                {
                    origins.opened(origin);
                    conn.reported_origin = Some(origin);
                }
                let role = match setup.role() {
                    SetupRole::Publisher => Role::Publisher,
                    SetupRole::Subscriber => Role::Subscriber,
                    SetupRole::Both => Role::Any,
                };
                let awaited = conn.awaiting_setup.take();
                if let Some(at) = conn.setup_deadline.take() {
                    self.setup_deadlines.remove(&(at, session));
                }
                match awaited {
                    // Raw QUIC 05: the SETUP Path is the request target (spec `auth.md` 2).
                    Some(AwaitingSetup::Path) => {
                        let target = setup.path.unwrap_or_default();
                        let (path, query) = auth::split_target(&target);
                        let (path, query) = (path.to_owned(), query.to_owned());
                        if !path.is_empty() {
                            conn.view.path = path.clone();
                        }
                        if self.decider.is_some() {
                            self.ask_connect(session, &path, &query, role);
                        } else if let Some(access) = self.decide(session, &path, &query, None) {
                            self.admit(session, access, role);
                        }
                    }
                    Some(AwaitingSetup::Decider) => {
                        let (path, query) = conn
                            .external
                            .as_ref()
                            .map(|e| (e.facts.path.clone(), e.facts.query.clone()))
                            .unwrap_or_default();
                        self.ask_connect(session, &path, &query, role);
                    }
                    // WebTransport 05: granted on the CONNECT URL (a SETUP Path is
                    // ignored there, spec 2); the Role decides what is wired.
                    Some(AwaitingSetup::Role(access)) => self.admit(session, *access, role),
                    // The session proto lets through one SETUP; nothing waits for it.
                    None => {}
                }
            }
            MoqEvent::AnnounceInterest { .. } => {
                // The session answers from the table `announce_to_peer` keeps current.
            }
            MoqEvent::InterestEnded { .. } => {}
            MoqEvent::SubscribeUpdated { .. } => {}
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

            event @ (MoqEvent::Announced { .. }
            | MoqEvent::Unannounced { .. }
            | MoqEvent::SubscribeResponse { .. }
            | MoqEvent::SubscriptionClosed { .. }
            | MoqEvent::GroupStarted { .. }
            | MoqEvent::Frame { .. }
            | MoqEvent::GroupEnded { .. }
            | MoqEvent::GroupAborted { .. }
            | MoqEvent::Datagram { .. }
            | MoqEvent::TrackInfo { .. }) => self.on_publisher_event(session, event),
            event @ (MoqEvent::SubscribeRequested { .. }
            | MoqEvent::SubscribeCancelled { .. }
            | MoqEvent::GroupCancelled { .. }
            | MoqEvent::TrackRequested { .. }
            | MoqEvent::FetchRequested { .. }
            | MoqEvent::FetchCancelled { .. }) => self.on_subscriber_request(session, event),
        }
    }

    fn session_closed(&mut self, session: SessionId, code: u64, reason: &str, now: Instant) {
        let Some(mut conn) = self.sessions.remove(&session) else {
            return;
        };
        if let Some(external) = conn.external.take() {
            self.external_closed(session, *external, reason, conn.driver.bytes());
        }
        debug!(worker = self.worker, session, code, "session closed");
        self.stale_candidates.remove(&session);
        if let Some(at) = conn.expires_at.take() {
            self.expiries.remove(&(at, session));
        }
        if let Some(at) = conn.setup_deadline.take() {
            self.setup_deadlines.remove(&(at, session));
        }
        if let (Some(origins), Some(origin)) = (&self.peer_origins, conn.reported_origin) {
            origins.closed(origin);
        }
        self.counters.sessions_closed += 1;
        self.counters.note_session(conn.driver.session());
        self.counters.session_refusals.add(&conn.refusals);
        self.counters.driver.add(&conn.driver.counters());
        let code = ErrorCode::from_session_code(code, conn.version);
        conn.moq().on_connection_closed(code);
        // Before the published paths go: upstream counts are filed under them.
        conn.close_all_subscriptions(
            &mut self.counters.egress_subscriptions,
            &mut self.counters.ingress_subscriptions,
        );
        let published: Vec<(String, BroadcastId)> = conn.published.drain().collect();
        for (path, broadcast) in published {
            if let Some(counts) = conn.stats_of(&path) {
                counts.ingress.announces_ended += 1;
            }
            self.counters.announces_ended += 1;
            match self.routes.withdraw(&path, session) {
                routes::Withdrawn::Standby => continue,
                routes::Withdrawn::Failover { broadcast, route } => {
                    self.switch_route(broadcast, &path, &route);
                    continue;
                }
                routes::Withdrawn::Last(_) | routes::Withdrawn::Unknown => {}
            }
            self.broadcasts.remove(&broadcast);
            // A publisher that leaves gracefully withdraws its announcements first (they
            // were handled as `Unannounced`); one that still has broadcasts is lost and
            // may come back, so they linger (`[cluster] linger`). The close code cannot
            // decide this: the reference client's crash over WebTransport arrives as 0.
            let result = self.shard.publisher_lost(now, broadcast);
            if let Err(err) = result {
                debug!(worker = self.worker, session, %path, %err, "broadcast end not routed");
                self.counters.router_refusals += 1;
            }
        }
        if let (Some(access), Some(counts)) = (&conn.access, conn.stats.take()) {
            self.stats.session_ended(&access.root, counts);
        }
        // Only this session's own state: a mass disconnect costs O(sessions), not O(N²).
        for sub in conn.router_subscribers.drain() {
            let removed = self.subscribers.remove(&sub);
            debug_assert!(removed.is_some_and(|(owner, _)| owner == session));
            self.counters.note_router(self.shard.unsubscribe(sub));
        }
        for (_, id) in conn.fetches.drain() {
            let removed = self.fetches.remove(&id);
            debug_assert!(removed.is_some_and(|(owner, ..)| owner == session));
            self.shard.cancel_fetch(id);
        }
        if let Some(query) = conn.query {
            self.queries.remove(&query);
            self.counters.note_router(self.shard.close_query(query));
        }
    }
}

impl<T: SessionIo> Application<T> for RelayWorker {
    fn on_event(&mut self, now: Instant, event: IoEvent, io: &mut T) {
        // Frames this event carries reached the relay in this iteration.
        self.shard.set_clock(now);
        let session = match event {
            IoEvent::SessionReady(info) => return self.session_ready(info, io),
            IoEvent::SessionClosed {
                session,
                code,
                reason,
            } => {
                return self.session_closed(session, code, &reason, now);
            }
            ref stream_event => stream_event.session(),
        };
        let Some(conn) = self.sessions.get_mut(&session) else {
            return;
        };
        let handled = conn.driver.on_event(event, io);
        debug_assert!(handled, "a lifecycle event reached the driver");
        self.drive(session, io);
    }

    fn poll(&mut self, now: Instant, io: &mut T) {
        self.now = now;
        self.expire_sessions(now, io);
        self.close_late_setups(now, io);
        self.decider_verdicts(io);
        self.revalidate_due(now);
        self.shard.poll(now);
        self.publisher_events(io);
        for session in std::mem::take(&mut self.undriven) {
            self.drive(session, io);
        }
        self.announce_events(io);
        self.fetch_answers(io);
        self.release_holds(now);
        self.deliveries(io);
        self.sweep_stale(now, io);
        self.control_poll(now, io);
        self.revalidate_some(io);
        // Deliveries deferred for flow control wait for the peer's ACKs (socket input);
        // only those left by the per-poll budget need another iteration at once.
        self.may_park = self.shard.prepare_park() && !self.budget_exhausted;
    }

    fn timeout(&self) -> Option<Instant> {
        if !self.may_park {
            // Router work arrived since this iteration's poll: run another one at once.
            return Some(self.now);
        }
        let hold = self.holds.first().map(|&(at, _)| at);
        let expiry = [
            self.expiries.first().map(|&(at, _)| at),
            self.setup_deadlines.first().map(|&(at, _)| at),
            self.revalidations_due.first().map(|&(at, _)| at),
            hold,
            self.stale_sweep_at,
        ]
        .into_iter()
        .flatten()
        .min();
        match (self.shard.next_deadline(self.now), expiry) {
            (Some(router), Some(expiry)) => Some(router.min(expiry)),
            (router, expiry) => router.or(expiry),
        }
    }
}

/// A worker's random session-id prefix: distinct per worker and per process run.
fn session_id_prefix(worker: usize) -> u64 {
    crate::random::random_u64() ^ worker as u64
}

/// Wall-clock arrival time in milliseconds since the Unix epoch: the timestamp moq-lite
/// gives a frame that came without one (spec 5.11, bridging 03/04 into 05), in the
/// default timescale of 1000 units per second that such a track has.
fn arrival_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The moq-lite close for a raw session close code (`Rejection::close_code` and the
/// like): the code the peer reads is `code` itself, whatever the registry calls it
/// (0x2 is 0.17's Unauthorized and the August registry's Old).
fn raw_close(code: u64) -> ErrorCode {
    let close = ErrorCode::from_number(code);
    debug_assert_eq!(
        close.number(),
        code,
        "close code {code} does not round-trip"
    );
    close
}

/// moq-relay's close reason text for an internal HTTP status (spec `auth.md` 13).
fn close_reason(status: u16) -> String {
    match status {
        401 | 403 => "unauthorized".to_owned(),
        status => format!("app code={status}"),
    }
}

/// Events a session's admission waits for, or that end it: everything else it sends
/// before it is admitted is held (`RelaySession::held`).
fn decides_admission(event: &MoqEvent) -> bool {
    matches!(
        event,
        MoqEvent::Setup(_) | MoqEvent::StreamFailed { .. } | MoqEvent::GoAway { .. }
    )
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
