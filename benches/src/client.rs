//! One client worker of relay-bench: a quic-io `Application` that owns a share of the
//! publisher and subscriber sessions, drives a sans-IO moq-lite session per connection,
//! publishes timed frames and records what its subscribers receive. It owns its sessions,
//! their unsent output and its own measurements; it must never block its worker thread or
//! share mutable state with other workers (results leave once, through a channel).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use driver::Driver;
use hdrhistogram::Histogram;
use proto::session::{GroupId, ServeId, Session, SessionEvent as MoqEvent, SubscriptionId};
use proto::{ErrorCode, SetupRole, SubscribeUpdate, TrackInfo, Version};
use quic_io::{Application, Event, Io, SessionId};

use crate::clock::{Epoch, now_ns};
use crate::frame::Header;
use crate::scenario::{Load, Target, Timeline, TransportKind};

/// The one track every benchmark broadcast carries.
pub const TRACK: &str = "video";

/// Broadcast path of publisher `i`.
pub fn broadcast_name(i: usize) -> String {
    format!("bench/{i}")
}

/// Largest latency the histogram holds (60 s, in µs); larger values are clamped.
pub const MAX_LATENCY_US: u64 = 60_000_000;
/// Error messages kept per worker; later ones are only counted.
const MAX_ERRORS: usize = 32;
/// Connections opened per loop iteration, so a large ramp does not starve delivery.
const MAX_CONNECTS_PER_POLL: usize = 64;
/// Frames one publisher catches up per loop iteration after a stall.
const MAX_FRAMES_PER_POLL: usize = 8;
/// A publisher more than this behind its schedule skips ahead (and counts a stall)
/// instead of bursting.
const MAX_PUBLISH_LAG_NS: u64 = 200_000_000;
/// Moq events handled per drive of one session.
const MAX_EVENTS_PER_DRIVE: usize = 65_536;
/// Groups one subscriber tracks for loss accounting: an hour at 30 groups/s fits.
const MAX_TRACKED_GROUPS: usize = 1 << 17;
/// Unsent bytes per session before the publisher's writes fail the group.
const MAX_PENDING_BYTES: usize = 64 << 20;
/// The driver's hard bound: above ours, so a publisher fails whole groups itself (one
/// round of frames past its check) before the driver has to reset a stream.
const MAX_DRIVER_PENDING_BYTES: usize = 2 * MAX_PENDING_BYTES;

/// What a session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publishes broadcast `i`.
    Publisher(usize),
    /// Subscribes to broadcast `i`.
    Subscriber(usize),
}

/// Everything a worker reads and never changes.
pub struct Shared {
    pub load: Load,
    pub target: Target,
    pub timeline: Timeline,
    pub epoch: Epoch,
    pub tls: quinn_proto::ClientConfig,
    /// For `target.publishers_at`, when publishers dial another relay.
    pub publish_tls: Option<quinn_proto::ClientConfig>,
}

/// One subscriber's delivery over the measured window.
#[derive(Debug, Clone)]
pub struct SubResult {
    pub broadcast: usize,
    pub frames: u64,
    pub bytes: u64,
    /// Measured groups received whole.
    pub complete_groups: u64,
    pub subscribed: bool,
}

/// What a worker reports once, at the end.
#[derive(Debug)]
pub struct WorkerResult {
    pub worker: usize,
    pub histogram: Histogram<u64>,
    /// Delivered (frames, bytes) per second of the run from t0.
    pub per_second: Vec<(u64, u64)>,
    /// (broadcast, groups published inside the window).
    pub measured_groups: Vec<(usize, u64)>,
    pub subs: Vec<SubResult>,
    pub errors: Vec<String>,
    pub error_count: u64,
    pub publisher_stalls: u64,
}

struct Publisher {
    broadcast: usize,
    name: String,
    serves: Vec<ServeId>,
    open: Vec<(ServeId, GroupId)>,
    next_frame_ns: u64,
    frame: u64,
    measured: bool,
    measured_groups: u64,
    done: bool,
}

struct Subscriber {
    broadcast: usize,
    name: String,
    subscription: Option<SubscriptionId>,
    /// Measured frames per group.
    groups: HashMap<u64, u32>,
    frames: u64,
    bytes: u64,
}

enum State {
    Pub(Publisher),
    Sub(Subscriber),
}

struct Peer {
    /// The moq-lite session and its output waiting on flow control.
    driver: Driver,
    state: State,
}

pub struct BenchWorker {
    shared: Arc<Shared>,
    index: usize,
    connects: VecDeque<(u64, Role)>,
    connecting: HashMap<SessionId, Role>,
    peers: HashMap<SessionId, Peer>,
    /// Roles whose session closed early, kept for the result.
    lost: Vec<Role>,
    histogram: Histogram<u64>,
    per_second: Vec<(u64, u64)>,
    errors: Vec<String>,
    error_count: u64,
    stalls: u64,
    report: Option<mpsc::SyncSender<WorkerResult>>,
    finished: bool,
}

impl BenchWorker {
    /// `connects` are (due time ns, role), sorted by time.
    pub fn new(
        shared: Arc<Shared>,
        index: usize,
        connects: Vec<(u64, Role)>,
        report: mpsc::SyncSender<WorkerResult>,
    ) -> Self {
        let t = shared.timeline;
        let seconds = (t.end.saturating_sub(t.t0)).div_ceil(1_000_000_000) as usize;
        Self {
            shared,
            index,
            connects: connects.into(),
            connecting: HashMap::new(),
            peers: HashMap::new(),
            lost: Vec::new(),
            // Bounds and precision are constants: this cannot fail.
            histogram: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
            per_second: vec![(0, 0); seconds + 1],
            errors: Vec::new(),
            error_count: 0,
            stalls: 0,
            report: Some(report),
            finished: false,
        }
    }

    fn error(&mut self, msg: String) {
        self.error_count += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(msg);
        }
    }

    /// A session answer the bench expected to give: a refusal means its bookkeeping and
    /// the session's disagree, which would make the run's figures suspect.
    fn refused(&mut self, what: &str, result: Result<(), proto::session::SessionError>) {
        if let Err(e) = result {
            self.error(format!("{what}: {e}"));
        }
    }

    fn hop_id(&self, session: SessionId) -> u64 {
        // Any value in [1, 2^53) distinct per session will do.
        let x =
            (now_ns() ^ ((self.index as u64) << 40) ^ session).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (x % ((1u64 << 53) - 1)) + 1
    }

    fn on_ready(&mut self, info: quic_io::SessionInfo, io: &mut Io<'_>) {
        let Some(role) = self.connecting.remove(&info.id) else {
            return;
        };
        let Some(version) = info.transport.version().and_then(Version::from_alpn) else {
            self.error(format!("{role:?}: relay chose {:?}", info.transport));
            io.close(info.id, 0, "unsupported version");
            return;
        };
        // On WebTransport the path travels in the CONNECT URL and must not be in SETUP.
        let raw = matches!(info.transport, quic_io::Transport::Quic { .. });
        let publisher = matches!(role, Role::Publisher(_));
        let setup_path = (raw && version.is_05_or_later())
            .then(|| self.shared.target.for_role(publisher).path.clone());
        let hint = match role {
            Role::Publisher(_) => SetupRole::Publisher,
            Role::Subscriber(_) => SetupRole::Subscriber,
        };
        let mut moq = Session::client(version, self.hop_id(info.id), setup_path, Some(hint));
        let state = match role {
            Role::Publisher(b) => {
                let name = broadcast_name(b);
                if let Err(e) = moq.announce(&name, &[]) {
                    self.error(format!("publisher {b}: announce: {e}"));
                }
                State::Pub(Publisher {
                    broadcast: b,
                    name,
                    serves: Vec::new(),
                    open: Vec::new(),
                    next_frame_ns: now_ns(),
                    frame: 0,
                    measured: false,
                    measured_groups: 0,
                    done: false,
                })
            }
            Role::Subscriber(b) => {
                let name = broadcast_name(b);
                if let Err(e) = moq.announce_interest(&name) {
                    self.error(format!("subscriber of {b}: announce interest: {e}"));
                }
                State::Sub(Subscriber {
                    broadcast: b,
                    name,
                    subscription: None,
                    groups: HashMap::new(),
                    frames: 0,
                    bytes: 0,
                })
            }
        };
        self.peers.insert(
            info.id,
            Peer {
                driver: Driver::new(info.id, moq, MAX_DRIVER_PENDING_BYTES),
                state,
            },
        );
        self.drive(info.id, io);
    }

    /// Handles the session's events, then carries out its actions.
    fn drive(&mut self, sid: SessionId, io: &mut Io<'_>) {
        let Some(mut peer) = self.peers.remove(&sid) else {
            return;
        };
        for _ in 0..MAX_EVENTS_PER_DRIVE {
            let Some(ev) = peer.driver.session_mut().poll_event() else {
                break;
            };
            self.on_moq_event(&mut peer, ev);
        }
        peer.driver.flush(io);
        self.peers.insert(sid, peer);
    }

    fn on_moq_event(&mut self, peer: &mut Peer, ev: MoqEvent) {
        let t = self.shared.timeline;
        match (&mut peer.state, ev) {
            (State::Pub(p), MoqEvent::SubscribeRequested { serve, request }) => {
                if request.track == TRACK && proto::path::normalize(&request.broadcast) == p.name {
                    let answered = peer.driver.session_mut().accept_subscribe(serve);
                    self.refused("accept_subscribe", answered);
                    p.serves.push(serve);
                } else {
                    let answered = peer
                        .driver
                        .session_mut()
                        .reject_subscribe(serve, ErrorCode::NotFound);
                    self.refused("reject_subscribe", answered);
                }
            }
            (State::Pub(p), MoqEvent::SubscribeCancelled { serve, .. }) => {
                p.serves.retain(|s| *s != serve);
                p.open.retain(|(s, _)| *s != serve);
            }
            (State::Pub(p), MoqEvent::GroupCancelled { group, .. }) => {
                p.open.retain(|(_, g)| *g != group);
            }
            (State::Pub(_), MoqEvent::TrackRequested { request, track, .. }) => {
                if track == TRACK {
                    let answered = peer
                        .driver
                        .session_mut()
                        .answer_track(request, TrackInfo::DEFAULT);
                    self.refused("answer_track", answered);
                } else {
                    let answered = peer
                        .driver
                        .session_mut()
                        .reject_track(request, ErrorCode::NotFound);
                    self.refused("reject_track", answered);
                }
            }
            (_, MoqEvent::FetchRequested { request, .. }) => {
                let answered = peer
                    .driver
                    .session_mut()
                    .reject_fetch(request, ErrorCode::NotFound);
                self.refused("reject_fetch", answered);
            }
            (State::Sub(s), MoqEvent::Announced { path, .. })
                if s.subscription.is_none() && proto::path::normalize(&path) == s.name =>
            {
                match peer.driver.session_mut().subscribe(
                    &s.name,
                    TRACK,
                    SubscribeUpdate::latest(0),
                ) {
                    Ok(id) => s.subscription = Some(id),
                    Err(e) => {
                        let msg = format!("subscriber of {}: subscribe: {e}", s.broadcast);
                        self.error(msg);
                    }
                }
            }
            (State::Sub(s), MoqEvent::SubscriptionClosed { subscription, code })
                if s.subscription == Some(subscription) =>
            {
                s.subscription = None;
                if now_ns() < t.t1 {
                    let msg = format!(
                        "subscriber of {}: subscription closed ({code:?}) before the end",
                        s.broadcast
                    );
                    self.error(msg);
                }
            }
            (State::Sub(s), MoqEvent::Frame { payload, .. }) => {
                let recv = now_ns();
                let Some(h) = Header::decode(&payload) else {
                    return;
                };
                if !h.measured {
                    return;
                }
                let us = (recv.saturating_sub(h.sent_ns) / 1_000).clamp(1, MAX_LATENCY_US);
                let _ = self.histogram.record(us);
                s.frames += 1;
                s.bytes += payload.len() as u64;
                if s.groups.len() < MAX_TRACKED_GROUPS || s.groups.contains_key(&h.group) {
                    *s.groups.entry(h.group).or_default() += 1;
                }
                let second = (recv.saturating_sub(t.t0) / 1_000_000_000) as usize;
                if let Some(slot) = self.per_second.get_mut(second) {
                    slot.0 += 1;
                    slot.1 += payload.len() as u64;
                }
            }
            _ => {}
        }
    }

    /// Publishes every frame that is due for each publisher.
    fn publish_due(&mut self, io: &mut Io<'_>) {
        let load = &self.shared.load;
        let interval = load.frame_interval().as_nanos() as u64;
        let group_size = u64::from(load.group_size);
        let frame_size = load.frame_size;
        let t = self.shared.timeline;
        let epoch_ns = self.shared.epoch.ns();
        let mut dirty = Vec::new();
        let mut errors = Vec::new();
        for (&sid, peer) in self.peers.iter_mut() {
            let State::Pub(p) = &mut peer.state else {
                continue;
            };
            let now = now_ns();
            if p.done || p.next_frame_ns > now {
                continue;
            }
            if now - p.next_frame_ns > MAX_PUBLISH_LAG_NS {
                self.stalls += 1;
                p.next_frame_ns = now;
            }
            for _ in 0..MAX_FRAMES_PER_POLL {
                if p.done || p.next_frame_ns > now_ns() {
                    break;
                }
                let k = p.frame % group_size;
                let group = p.frame / group_size;
                let sent = now_ns();
                if k == 0 {
                    if sent >= t.t1 {
                        p.done = true;
                        break;
                    }
                    p.measured = sent >= t.t0;
                    if p.measured {
                        p.measured_groups += 1;
                    }
                    for &serve in &p.serves {
                        match peer.driver.session_mut().start_group(serve, group) {
                            Ok(g) => p.open.push((serve, g)),
                            Err(e) => errors
                                .push(format!("publisher {}: group {group}: {e}", p.broadcast)),
                        }
                    }
                }
                let header = Header {
                    sent_ns: sent,
                    sequence: p.frame,
                    group,
                    measured: p.measured,
                };
                let payload = header.encode(frame_size);
                let ts_ms = sent.saturating_sub(epoch_ns) / 1_000_000;
                let over = peer.driver.pending_bytes() > MAX_PENDING_BYTES;
                let mut failed = Vec::new();
                for &(_, g) in &p.open {
                    if over {
                        failed.push(g);
                        continue;
                    }
                    if let Err(e) = peer
                        .driver
                        .session_mut()
                        .write_frame(g, ts_ms, payload.clone())
                    {
                        errors.push(format!("publisher {}: frame {}: {e}", p.broadcast, p.frame));
                        failed.push(g);
                    }
                }
                for g in failed {
                    if let Err(e) = peer.driver.session_mut().abort_group(g, ErrorCode::Dropped) {
                        errors.push(format!("publisher {}: abort group: {e}", p.broadcast));
                    }
                    p.open.retain(|(_, x)| *x != g);
                }
                if k + 1 == group_size {
                    for (_, g) in p.open.drain(..) {
                        if let Err(e) = peer.driver.session_mut().end_group(g) {
                            errors.push(format!("publisher {}: end group: {e}", p.broadcast));
                        }
                    }
                }
                p.frame += 1;
                p.next_frame_ns += interval;
            }
            dirty.push(sid);
        }
        for e in errors {
            self.error(e);
        }
        for sid in dirty {
            self.drive(sid, io);
        }
    }

    fn connect_due(&mut self, io: &mut Io<'_>) {
        let now = now_ns();
        for _ in 0..MAX_CONNECTS_PER_POLL {
            match self.connects.front() {
                Some(&(due, _)) if due <= now => {}
                _ => return,
            }
            let Some((_, role)) = self.connects.pop_front() else {
                return;
            };
            let publisher = matches!(role, Role::Publisher(_));
            let target = self.shared.target.for_role(publisher);
            let tls = match (&self.shared.publish_tls, publisher) {
                (Some(tls), true) => tls.clone(),
                _ => self.shared.tls.clone(),
            };
            let load = &self.shared.load;
            let dialed = match load.transport {
                TransportKind::Quic => io.connect(tls, target.addr, &target.server_name),
                // Offer only the chosen version so the run measures what it says it does.
                TransportKind::Webtransport => io.connect_webtransport(
                    tls,
                    target.addr,
                    &target.server_name,
                    &target.authority(),
                    &target.path_and_query(),
                    &[load.version.alpn()],
                ),
            };
            match dialed {
                Ok(sid) => {
                    self.connecting.insert(sid, role);
                }
                Err(e) => self.error(format!("{role:?}: connect: {e}")),
            }
        }
    }

    fn finish(&mut self, io: &mut Io<'_>) {
        self.finished = true;
        let mut measured_groups = Vec::new();
        let mut subs = Vec::new();
        for (sid, peer) in self.peers.drain() {
            io.close(sid, 0, "bench done");
            match peer.state {
                State::Pub(p) => measured_groups.push((p.broadcast, p.measured_groups)),
                State::Sub(s) => {
                    let gs = self.shared.load.group_size;
                    subs.push(SubResult {
                        broadcast: s.broadcast,
                        frames: s.frames,
                        bytes: s.bytes,
                        complete_groups: s.groups.values().filter(|&&n| n >= gs).count() as u64,
                        subscribed: s.subscription.is_some() || s.frames > 0,
                    })
                }
            }
        }
        let never: Vec<Role> = self
            .connecting
            .drain()
            .map(|(_, r)| r)
            .chain(self.connects.drain(..).map(|(_, r)| r))
            .collect();
        for role in &never {
            self.error(format!(
                "{role:?}: no session with the relay by the end of the run"
            ));
        }
        let unconnected: Vec<Role> = never.into_iter().chain(self.lost.drain(..)).collect();
        for role in unconnected {
            match role {
                // Its groups were never counted: the subscribers' loss shows it.
                Role::Publisher(b) => measured_groups.push((b, 0)),
                Role::Subscriber(b) => subs.push(SubResult {
                    broadcast: b,
                    frames: 0,
                    bytes: 0,
                    complete_groups: 0,
                    subscribed: false,
                }),
            }
        }
        let result = WorkerResult {
            worker: self.index,
            histogram: self.histogram.clone(),
            per_second: std::mem::take(&mut self.per_second),
            measured_groups,
            subs,
            errors: std::mem::take(&mut self.errors),
            error_count: self.error_count,
            publisher_stalls: self.stalls,
        };
        if let Some(tx) = self.report.take() {
            let _ = tx.send(result);
        }
    }
}

impl Application<Io<'_>> for BenchWorker {
    fn on_event(&mut self, _now: Instant, event: Event, io: &mut Io<'_>) {
        if self.finished {
            return;
        }
        let sid = match &event {
            Event::SessionReady(info) => {
                let info = info.clone();
                self.on_ready(info, io);
                return;
            }
            Event::SessionClosed {
                session,
                code,
                reason,
            } => {
                let t1 = self.shared.timeline.t1;
                if let Some(role) = self.connecting.remove(session) {
                    self.error(format!("{role:?}: connection failed: code {code} {reason}"));
                    self.lost.push(role);
                } else if let Some(peer) = self.peers.remove(session) {
                    let role = match &peer.state {
                        State::Pub(p) => Role::Publisher(p.broadcast),
                        State::Sub(s) => Role::Subscriber(s.broadcast),
                    };
                    if now_ns() < t1 {
                        self.error(format!(
                            "{role:?}: relay closed the session: code {code} {reason}"
                        ));
                    }
                    // Keep what it measured.
                    self.peers.insert(*session, peer);
                    if let Some(p) = self.peers.get_mut(session) {
                        p.driver
                            .session_mut()
                            .on_connection_closed(ErrorCode::Closed);
                    }
                }
                return;
            }
            Event::StreamOpened { session, .. }
            | Event::Data { session, .. }
            | Event::Finished { session, .. }
            | Event::Reset { session, .. }
            | Event::StopSending { session, .. }
            | Event::Writable { session, .. }
            | Event::Datagram { session, .. } => *session,
        };
        let Some(peer) = self.peers.get_mut(&sid) else {
            return;
        };
        let handled = peer.driver.on_event(event, io);
        debug_assert!(handled, "a lifecycle event reached the driver");
        self.drive(sid, io);
    }

    fn poll(&mut self, _now: Instant, io: &mut Io<'_>) {
        if self.finished {
            return;
        }
        if now_ns() >= self.shared.timeline.end {
            self.finish(io);
            return;
        }
        self.connect_due(io);
        self.publish_due(io);
    }

    fn timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let mut next = self.shared.timeline.end;
        if let Some(&(due, _)) = self.connects.front() {
            next = next.min(due);
        }
        for peer in self.peers.values() {
            if let State::Pub(p) = &peer.state
                && !p.done
            {
                next = next.min(p.next_frame_ns);
            }
        }
        Some(self.shared.epoch.instant_at(next))
    }
}
