//! One shard of the router: everything a worker thread owns about broadcasts, tracks,
//! subscribers and announce queries, plus its ends of the SPSC rings to every other
//! shard. It is single-threaded (moved into its thread once) and must never block, lock,
//! read a clock, or copy a payload; the only cross-thread traffic is ring pushes and
//! `ParkState` updates, batched into one doorbell decision per target per `flush`.
//!
//! This file holds the shard's state, its public publish/subscribe/loop API and the
//! track and broadcast lifecycle. By concern, the rest lives in: `fanout` (a track's steps
//! to its log and to interested shards), `peer` (messages and ring ends, sending side),
//! `inbound` (what each message does here), `demand` (`TrackWanted` / `TrackUnused`),
//! `fetch` (FETCH), and `crate::announce` (the announce table replica and its queries).

mod demand;
mod fanout;
mod fetch;
mod inbound;
mod peer;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::announce::{AnnounceTable, Route};
use crate::cache::Cache;
use crate::log::{Frame, Log};
use crate::park::ParkState;
use crate::ring::{self, Consumer};
use crate::slab::{Key, Slab};
use crate::subscriber::{Dropped, Subscriber};
use crate::{
    AnnounceEvent, BroadcastId, Config, Delivery, Doorbell, FetchTicket, GroupFrames, MAX_SHARDS,
    PublisherEvent, QueryId, RouterError, SubscriberId, TrackId, TrackProperties,
};

use fanout::{Ev, append_frame, join_at_newest, replay_newest, wake_idle};
use fetch::MAX_PENDING_FETCHES;
use peer::{Msg, Peer, push_data};

/// Groups a publisher may write concurrently on one track; past it the oldest open group
/// is aborted. moq-lite publishers overlap at most a couple of groups; 16 leaves room for
/// reordering upstream without letting a broken peer grow the list.
const MAX_OPEN_GROUPS: usize = 16;

/// Stale keys a log's idle list may carry beyond twice its readers before `unsubscribe`
/// compacts it; a few keep a churn of one subscriber from compacting on every leave.
const IDLE_SLACK: usize = 16;

/// Fraction of each ring kept free for control messages: data stops at 7/8 full so that
/// subscribe replies and track ends still fit while a peer is slow.
const CONTROL_RESERVE_DIVISOR: usize = 8;

/// Smallest ring the router builds: below it the control reserve
/// (`1 / CONTROL_RESERVE_DIVISOR` of the ring) would be under two slots.
const MIN_RING_CAPACITY: usize = 16;
const _: () = assert!(MIN_RING_CAPACITY.is_power_of_two());
const _: () = assert!(MIN_RING_CAPACITY / CONTROL_RESERVE_DIVISOR >= 2);
// The `Router::build` error messages spell these bounds out.
const _: () = assert!(MIN_RING_CAPACITY == 16 && MAX_SHARDS == 64);

/// How soon a shard with control messages stuck in an outbox wants to run again: peers
/// draining their ring do not ring us, so we poll for room.
const OUTBOX_RETRY: Duration = Duration::from_millis(1);

/// Counters of one shard, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frame messages pushed to other shards' rings: one per frame per interested shard.
    pub frame_pushes: u64,
    /// Frames re-sent from the cache to a shard that just subscribed (late join).
    pub replay_pushes: u64,
    /// Groups dropped for a peer shard because its ring was full.
    pub ring_groups_dropped: u64,
    /// Times the oldest groups were dropped for a local subscriber past its byte bound.
    pub subscriber_drops: u64,
    /// Frames of those dropped groups that subscribers then skipped, and their payload
    /// bytes: moq-relay 0.17's "stale" data.
    pub stale_frames: u64,
    pub stale_bytes: u64,
    /// Doorbells rung on parked peers.
    pub doorbells: u64,
    /// Messages taken from inbound rings.
    pub received: u64,
}

/// Plain counters of what one shard dropped, deferred or refused instead of failing a
/// call, for metrics (the ops issue exports them) and tests. Each counts an event that is
/// legal but, in large numbers, means a peer is slow or bookkeeping drifted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardCounters {
    /// Messages from other shards for a track or broadcast that ended here since they
    /// were sent, ignored.
    pub stale_messages: u64,
    /// FETCH answers dropped because the FETCH was cancelled first.
    pub fetch_answers_dropped: u64,
    /// Times an announce query was not drained in time and was told `Lagged`.
    pub queries_lagged: u64,
    /// Control messages that found a peer's ring full and waited in its outbox.
    pub control_deferred: u64,
    /// `TrackUnused` events not queued because the publisher event queue was at its
    /// bound: 0 unless the queue's bookkeeping is wrong (debug builds assert instead).
    pub publisher_events_dropped: u64,
}

struct Broadcast {
    path: Arc<str>,
    /// The hop chain its publisher's session reported (empty for one with none).
    hops: Arc<[u64]>,
    tracks: HashMap<Arc<str>, Key>,
    linger_until: Option<Instant>,
    /// Spliced: the publisher came back on another shard, whose broadcast now feeds this
    /// one's tracks so that existing subscribers continue. (shard, its broadcast key)
    fed_by: Option<(usize, Key)>,
}

#[derive(Clone)]
enum Origin {
    Local { bc: Key },
    Replica { owner: usize, bc: Key },
}

/// A peer shard that wants an owned track, and what it has missed.
struct Remote {
    shard: usize,
    slot: Key,
    /// Groups below this are not sent (dropped for that shard).
    floor: u64,
    /// A `Dropped { below }` still to be delivered.
    notice: Option<u64>,
}

struct Track {
    name: Arc<str>,
    origin: Origin,
    /// `None` while waiting for the publisher (owner) or the owner's reply (replica).
    info: Option<TrackProperties>,
    /// The track's shared frame log (with the late-join cache) in `Shard::logs`.
    log: Key,
    open: Vec<u64>,
    /// One past the highest group seen: the exclusive end if the track ends now.
    next_seq: u64,
    /// Groups below this came by a route the broadcast has left (`Shard::reroute`); the
    /// new route's copies of them are refused, so no subscriber sees a group twice.
    floor: u64,
    subs: Vec<Key>,
    remotes: Vec<Remote>,
    told_wanted: bool,
    in_pub_ready: bool,
    notice_pending: bool,
}

impl Track {
    fn new(name: Arc<str>, origin: Origin, info: Option<TrackProperties>, log: Key) -> Self {
        Self {
            name,
            origin,
            info,
            log,
            open: Vec::new(),
            next_seq: 0,
            floor: 0,
            subs: Vec::new(),
            remotes: Vec::new(),
            told_wanted: false,
            in_pub_ready: false,
            notice_pending: false,
        }
    }

    fn has_demand(&self) -> bool {
        !self.subs.is_empty() || !self.remotes.is_empty()
    }
}

/// Builds the shards.
pub struct Router;

impl Router {
    /// One shard per doorbell, in order: shard `i` is woken through `doorbells[i]`.
    pub fn build(
        config: Config,
        doorbells: Vec<Arc<dyn Doorbell>>,
    ) -> Result<Vec<Shard>, RouterError> {
        let n = doorbells.len();
        if n == 0 || n > MAX_SHARDS {
            return Err(RouterError::Config("shard count must be 1..=64"));
        }
        if config.ring_capacity < MIN_RING_CAPACITY {
            return Err(RouterError::Config("ring_capacity must be at least 16"));
        }
        if config.subscriber_max_bytes == 0 || config.cache_max_groups == 0 {
            return Err(RouterError::Config(
                "subscriber_max_bytes and cache_max_groups must be non-zero",
            ));
        }
        let parks: Vec<Arc<ParkState>> = (0..n).map(|_| Arc::new(ParkState::new())).collect();
        let epoch = Instant::now();
        let order = Arc::new(AtomicU64::new(0));
        let mut txs: Vec<Vec<Option<Peer>>> = (0..n).map(|_| Vec::new()).collect();
        let mut rxs: Vec<Vec<Option<Consumer<Msg>>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        for (from, tx_row) in txs.iter_mut().enumerate() {
            for to in 0..n {
                if from == to {
                    tx_row.push(None);
                    continue;
                }
                let (tx, rx) = ring::channel(config.ring_capacity);
                debug_assert!(
                    tx.capacity().is_power_of_two() && tx.capacity() >= MIN_RING_CAPACITY
                );
                let reserve = tx.capacity() / CONTROL_RESERVE_DIVISOR;
                tx_row.push(Some(Peer {
                    tx,
                    park: parks[to].clone(),
                    doorbell: doorbells[to].clone(),
                    outbox: VecDeque::new(),
                    pushed: false,
                    deferred: 0,
                    reserve,
                }));
                rxs[to][from] = Some(rx);
            }
        }
        Ok(txs
            .into_iter()
            .zip(rxs)
            .enumerate()
            .map(|(id, (peers, inbound))| Shard {
                id,
                config: config.clone(),
                park: parks[id].clone(),
                order: order.clone(),
                peers,
                inbound,
                backlog: false,
                broadcasts: Slab::new(config.max_broadcasts),
                by_path: HashMap::new(),
                lingering: Vec::new(),
                tracks: Slab::new(config.max_tracks),
                // A log outlives its track while subscribers still read it.
                logs: Slab::new(config.max_tracks.saturating_add(config.max_subscribers)),
                replicas: HashMap::new(),
                subs: Slab::new(config.max_subscribers),
                ready_subs: VecDeque::new(),
                announces: AnnounceTable::new(n, config.max_queries, config.query_max_events),
                pub_ready: VecDeque::new(),
                pub_direct: VecDeque::new(),
                notice_tracks: Vec::new(),
                fetches: Slab::new(MAX_PENDING_FETCHES),
                fetch_answers: VecDeque::new(),
                stats: Stats::default(),
                counters: ShardCounters::default(),
                retired_drops: Dropped::default(),
                epoch,
                clock: 1,
            })
            .collect())
    }
}

/// One worker's part of the router. `Send`, used from one thread.
pub struct Shard {
    id: usize,
    config: Config,
    park: Arc<ParkState>,
    order: Arc<AtomicU64>,
    peers: Vec<Option<Peer>>,
    inbound: Vec<Option<Consumer<Msg>>>,
    /// `poll` stopped at its budget with messages left: do not park.
    backlog: bool,
    broadcasts: Slab<Broadcast>,
    by_path: HashMap<Arc<str>, Key>,
    lingering: Vec<Key>,
    tracks: Slab<Track>,
    logs: Slab<Log>,
    replicas: HashMap<(usize, Key, Arc<str>), Key>,
    subs: Slab<Subscriber>,
    ready_subs: VecDeque<Key>,
    announces: AnnounceTable,
    pub_ready: VecDeque<Key>,
    pub_direct: VecDeque<PublisherEvent>,
    notice_tracks: Vec<Key>,
    /// FETCHes started and not yet handed back by `next_fetch_answer` (asked of an owner
    /// shard, or answered and waiting in `fetch_answers`).
    fetches: Slab<()>,
    fetch_answers: VecDeque<(FetchTicket, Option<GroupFrames>)>,
    stats: Stats,
    counters: ShardCounters,
    /// What unsubscribed subscribers had dropped, kept so the totals never go back.
    retired_drops: Dropped,
    /// When the router was built: `ArrivalTick` zero, the same on every shard.
    epoch: Instant,
    /// The `ArrivalTick` of the caller's clock (`set_clock`), stamped on frames pushed.
    clock: u32,
}

impl Shard {
    /// The caller's notion of now, stamped on frames pushed from here on (the shard reads
    /// no clock itself; a worker passes its loop iteration's time).
    pub fn set_clock(&mut self, now: Instant) {
        self.clock = self.tick(now);
    }

    fn tick(&self, now: Instant) -> u32 {
        let micros = now.saturating_duration_since(self.epoch).as_micros();
        // Wrapping by design (see `ArrivalTick`); 0 is reserved for "unknown".
        (micros as u32).max(1)
    }

    /// How long ago, at `now`, a delivered frame reached the router; `None` for a
    /// replayed one.
    pub fn latency(&self, arrived: crate::ArrivalTick, now: Instant) -> Option<Duration> {
        if arrived == crate::ArrivalTick::UNKNOWN {
            return None;
        }
        let micros = self.tick(now).wrapping_sub(arrived.0);
        Some(Duration::from_micros(u64::from(micros)))
    }

    pub fn id(&self) -> usize {
        self.id
    }

    pub fn shard_count(&self) -> usize {
        self.peers.len()
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        let mut dropped = self.retired_drops;
        for (_, sub) in self.subs.iter() {
            dropped.add(&sub.dropped);
        }
        s.subscriber_drops = dropped.groups;
        s.stale_frames = dropped.frames;
        s.stale_bytes = dropped.bytes;
        s
    }

    // Read-only introspection for tests and metrics: each is O(1), a length kept anyway.

    /// Live local subscribers on this shard (those `unsubscribe` has not removed yet).
    pub fn subscriber_count(&self) -> usize {
        self.subs.len()
    }

    /// FETCHes started on this shard and not yet handed back by `next_fetch_answer` or
    /// cancelled: waiting for an owner shard's answer, or answered and not yet taken.
    pub fn pending_fetch_count(&self) -> usize {
        self.fetches.len()
    }

    /// Open announce queries on this shard.
    pub fn query_count(&self) -> usize {
        self.announces.query_count()
    }

    /// Broadcasts owned by this shard: announced here and not ended, lingering or
    /// spliced ones included.
    pub fn broadcast_count(&self) -> usize {
        self.broadcasts.len()
    }

    /// Paths in this shard's replica of the announce table: announced on any shard, as
    /// far as this shard has heard.
    pub fn announced_count(&self) -> usize {
        self.announces.path_count()
    }

    /// What this shard dropped, deferred or refused without failing a call (cheap: sums
    /// one field per peer).
    /// Messages waiting in this shard's inbound rings right now, summed over its peers:
    /// a gauge of how far this shard lags behind the others.
    pub fn inbound_backlog(&mut self) -> usize {
        self.inbound.iter_mut().flatten().map(Consumer::len).sum()
    }

    pub fn counters(&self) -> ShardCounters {
        let mut c = self.counters;
        c.queries_lagged = self.announces.lagged();
        c.control_deferred = self.peers.iter().flatten().map(|p| p.deferred).sum();
        c
    }

    fn limit(&self, what: &'static str, limit: usize) -> RouterError {
        RouterError::Limit {
            what,
            limit,
            shard: self.id,
        }
    }

    // ---------------------------------------------------------------- publishing

    /// Announces `path` (normalized) as published by a session on this shard. If a
    /// broadcast at `path` is lingering here after an abrupt loss (or was spliced to a
    /// reconnect on another shard), it is resumed: same id, same tracks and subscribers,
    /// caches cleared (the publisher may renumber groups), and `TrackWanted` re-issued
    /// for tracks in demand. A lingering broadcast on ANOTHER shard is spliced: that shard
    /// subscribes to this one and keeps feeding its subscribers.
    pub fn announce(&mut self, path: &str) -> Result<BroadcastId, RouterError> {
        self.announce_via(path, &[])
    }

    /// [`Shard::announce`] of a broadcast that came with a hop chain (oldest first, the
    /// original publisher's id at 0): every shard hands it on with the path, so the relay
    /// can tell each peer the real chain and leave out the peers it passed through.
    pub fn announce_via(&mut self, path: &str, hops: &[u64]) -> Result<BroadcastId, RouterError> {
        if let Some(&bk) = self.by_path.get(path) {
            let Some(b) = self.broadcasts.get_mut(bk) else {
                return Err(RouterError::UnknownBroadcast);
            };
            let fed = b.fed_by.take();
            let lingered = b.linger_until.take().is_some();
            if !lingered && fed.is_none() {
                return Err(RouterError::Duplicate { path: path.into() });
            }
            self.lingering.retain(|&k| k != bk);
            let tks: Vec<Key> = b.tracks.values().copied().collect();
            let hops_changed = *b.hops != *hops;
            b.hops = hops.into();
            if let Some((feeder, fbc)) = fed {
                // Back here after being fed from another shard: stop the feed and
                // become the visible route again.
                self.unsubscribe_feed(&tks, feeder, fbc);
                self.reannounce(bk);
            } else if hops_changed {
                self.reannounce(bk);
            }
            for tk in tks {
                self.restart_track(tk);
                if let Some(t) = self.tracks.get_mut(tk) {
                    t.told_wanted = false;
                }
                self.demand_changed(tk);
            }
            return Ok(BroadcastId(bk));
        }
        self.check_outboxes()?;
        let path: Arc<str> = path.into();
        let hops: Arc<[u64]> = hops.into();
        let bk = self
            .broadcasts
            .insert(Broadcast {
                path: path.clone(),
                hops: hops.clone(),
                tracks: HashMap::new(),
                linger_until: None,
                fed_by: None,
            })
            .map_err(|_| self.limit("broadcasts", self.config.max_broadcasts))?;
        self.by_path.insert(path.clone(), bk);
        let order = self.order.fetch_add(1, Ordering::Relaxed);
        let route = Route {
            owner: self.id,
            bc: bk,
            order,
            hops: hops.clone(),
        };
        self.announces.add(path.clone(), route);
        self.broadcast_control(|| Msg::Announce {
            path: path.clone(),
            bc: bk,
            order,
            hops: hops.clone(),
        });
        Ok(BroadcastId(bk))
    }

    /// The broadcast now arrives by another route, with this chain: its tracks and
    /// subscribers stay, and every shard's announce queries hear it `Active` again so
    /// the relay re-announces it with the new chain.
    pub fn set_hops(&mut self, bc: BroadcastId, hops: &[u64]) -> Result<(), RouterError> {
        let Some(b) = self.broadcasts.get_mut(bc.0) else {
            return Err(RouterError::UnknownBroadcast);
        };
        if *b.hops != *hops {
            b.hops = hops.into();
            if b.fed_by.is_none() {
                self.reannounce(bc.0);
            }
        }
        Ok(())
    }

    /// The broadcast's publisher is now reached by another route (another session on
    /// this shard with the same content, spec `cluster.md` 6): the groups the old route
    /// left open are dropped, groups it already delivered are not taken again, and every
    /// track in demand is told `TrackWanted` afresh so the worker subscribes on the new
    /// route. Subscribers keep their subscriptions and go on at the next group.
    pub fn reroute(&mut self, bc: BroadcastId, hops: &[u64]) -> Result<(), RouterError> {
        let Some(b) = self.broadcasts.get(bc.0) else {
            return Err(RouterError::UnknownBroadcast);
        };
        let tks: Vec<Key> = b.tracks.values().copied().collect();
        for tk in tks {
            let Some(t) = self.tracks.get_mut(tk) else {
                continue;
            };
            t.floor = t.floor.max(t.next_seq);
            t.told_wanted = false;
            self.drop_open_groups(tk);
            self.demand_changed(tk);
        }
        self.set_hops(bc, hops)
    }

    /// Whether subscribers of `path` are served from `bc`, a broadcast of this shard (and
    /// not from another route on another shard).
    pub fn is_visible(&self, path: &str, bc: BroadcastId) -> bool {
        self.announces
            .visible(path)
            .is_some_and(|route| route.owner == self.id && route.bc == bc.0)
    }

    /// The hop chain of the route subscribers of `path` use, if it is announced.
    pub fn route_hops(&self, path: &str) -> Option<Arc<[u64]>> {
        self.announces.visible(path).map(|route| route.hops)
    }

    /// Makes an owned broadcast the newest route to its path again, with its current
    /// chain, here and on every shard.
    fn reannounce(&mut self, bk: Key) {
        let Some(b) = self.broadcasts.get(bk) else {
            return;
        };
        let (path, hops) = (b.path.clone(), b.hops.clone());
        let order = self.order.fetch_add(1, Ordering::Relaxed);
        self.announces.add(
            path.clone(),
            Route {
                owner: self.id,
                bc: bk,
                order,
                hops: hops.clone(),
            },
        );
        self.broadcast_control(|| Msg::Announce {
            path: path.clone(),
            bc: bk,
            order,
            hops: hops.clone(),
        });
    }

    /// Graceful end: the broadcast and its tracks end now, on every shard.
    pub fn unannounce(&mut self, bc: BroadcastId) -> Result<(), RouterError> {
        if self.broadcasts.get(bc.0).is_none() {
            return Err(RouterError::UnknownBroadcast);
        }
        self.end_broadcast(bc.0);
        Ok(())
    }

    /// Abrupt loss of the publishing session: open groups are dropped, and the broadcast
    /// stays announced until `now + linger` for the publisher to come back (`announce`
    /// of the same path on this shard), then ends (in `poll`). If another shard already
    /// has a route to the same publisher (the same non-zero first hop: a peer relay that
    /// reaches it too), the broadcast is fed from there at once instead, and its
    /// subscribers go on at that route's next group.
    pub fn publisher_lost(&mut self, now: Instant, bc: BroadcastId) -> Result<(), RouterError> {
        let Some(b) = self.broadcasts.get_mut(bc.0) else {
            return Err(RouterError::UnknownBroadcast);
        };
        let publisher = b.hops.first().copied().filter(|&hop| hop != 0);
        let elsewhere = publisher.and_then(|publisher| {
            self.announces
                .best_other(&b.path, self.id, |hops| hops.first() == Some(&publisher))
        });
        if let Some(route) = elsewhere {
            self.fail_over(bc.0, route);
            return Ok(());
        }
        let Some(b) = self.broadcasts.get_mut(bc.0) else {
            return Err(RouterError::UnknownBroadcast);
        };
        if self.config.linger.is_zero() {
            self.end_broadcast(bc.0);
            return Ok(());
        }
        if b.linger_until.is_none() {
            self.lingering.push(bc.0);
        }
        b.linger_until = Some(now + self.config.linger);
        let tks: Vec<Key> = b.tracks.values().copied().collect();
        for tk in tks {
            self.drop_open_groups(tk);
        }
        Ok(())
    }

    /// Makes `name` a live track of `bc` (idempotent; the info of an already live track
    /// is kept, it is immutable). Waiting subscribers on every shard get `Ready`.
    pub fn publish_track(
        &mut self,
        bc: BroadcastId,
        name: &str,
        info: TrackProperties,
    ) -> Result<TrackId, RouterError> {
        let Some(b) = self.broadcasts.get(bc.0) else {
            return Err(RouterError::UnknownBroadcast);
        };
        let tk = match b.tracks.get(name) {
            Some(&tk) => tk,
            None => {
                let name: Arc<str> = name.into();
                let tk = self.insert_track(name.clone(), Origin::Local { bc: bc.0 }, Some(info))?;
                if let Some(b) = self.broadcasts.get_mut(bc.0) {
                    b.tracks.insert(name, tk);
                }
                return Ok(TrackId(tk));
            }
        };
        let Some(t) = self.tracks.get_mut(tk) else {
            return Err(RouterError::UnknownTrack);
        };
        if t.info.is_none() {
            t.info = Some(info);
            self.track_became_ready(tk, info);
        }
        Ok(TrackId(tk))
    }

    /// The publisher does not have this track: every waiting subscriber gets `NotFound`.
    pub fn reject_track(&mut self, track: TrackId) -> Result<(), RouterError> {
        self.owned_track(track)?;
        self.end_track_inner(track.0);
        Ok(())
    }

    /// Ends the track (SUBSCRIBE_END at one past its highest group) on every shard.
    pub fn end_track(&mut self, track: TrackId) -> Result<(), RouterError> {
        self.owned_track(track)?;
        self.end_track_inner(track.0);
        Ok(())
    }

    fn owned_track(&mut self, track: TrackId) -> Result<&mut Track, RouterError> {
        match self.tracks.get_mut(track.0) {
            Some(t) if matches!(t.origin, Origin::Local { .. }) => Ok(t),
            _ => Err(RouterError::UnknownTrack),
        }
    }

    pub fn start_group(&mut self, track: TrackId, group: u64) -> Result<(), RouterError> {
        let t = self.owned_track(track)?;
        if t.info.is_none() {
            return Err(RouterError::UnknownTrack);
        }
        let lk = t.log;
        let cached = self.logs.get(lk).is_some_and(|l| l.cache.contains(group));
        let t = self.owned_track(track)?;
        if t.open.contains(&group) || cached || group < t.floor {
            return Err(RouterError::DuplicateGroup {
                track: t.name.to_string(),
                group,
            });
        }
        if t.open.len() >= MAX_OPEN_GROUPS
            && let Some(oldest) = t.open.iter().copied().min()
        {
            self.abort_group(track, oldest)?;
        }
        let t = self.owned_track(track)?;
        t.open.push(group);
        self.fan_local(track.0, Ev::Start(group));
        self.fan_remote(track.0, group, false, |slot| Msg::GroupStart {
            slot,
            group,
        });
        Ok(())
    }

    /// Appends a frame to an open group; the payload is shared with every subscriber and
    /// shard by refcount. `timestamp` (in the track's timescale) is handed to every
    /// subscriber unchanged.
    pub fn push_frame(
        &mut self,
        track: TrackId,
        group: u64,
        timestamp: u64,
        payload: Bytes,
    ) -> Result<(), RouterError> {
        let Self {
            tracks,
            logs,
            subs,
            ready_subs,
            config,
            clock,
            ..
        } = self;
        let t = match tracks.get(track.0) {
            Some(t) if matches!(t.origin, Origin::Local { .. }) => t,
            _ => return Err(RouterError::UnknownTrack),
        };
        if !t.open.contains(&group) {
            return Err(group_not_open(t, group));
        }
        let frame = Frame {
            group,
            timestamp,
            payload,
            arrived: *clock,
        };
        // The per-frame path of a track read only on this shard: one lookup, one append.
        // The rest stays out of line so that this path keeps a small stack frame.
        if !t.remotes.is_empty() {
            self.push_frame_to_remotes(track, frame);
            return Ok(());
        }
        if let Some(log) = logs.get_mut(t.log) {
            append_frame(t, log, subs, ready_subs, config, frame);
        }
        Ok(())
    }

    #[inline(never)]
    fn push_frame_to_remotes(&mut self, track: TrackId, frame: Frame) {
        self.fan_remote(track.0, frame.group, true, |slot| Msg::Frame {
            slot,
            frame: frame.clone(),
        });
        self.fan_local(track.0, Ev::Frame(frame));
    }

    pub fn end_group(&mut self, track: TrackId, group: u64) -> Result<(), RouterError> {
        let t = self.owned_track(track)?;
        let Some(pos) = t.open.iter().position(|&g| g == group) else {
            return Err(group_not_open(t, group));
        };
        t.open.swap_remove(pos);
        self.fan_local(track.0, Ev::End(group));
        self.fan_remote(track.0, group, false, |slot| Msg::GroupEnd { slot, group });
        Ok(())
    }

    /// The publisher reset this group: subscribers reset the groups up to it.
    pub fn abort_group(&mut self, track: TrackId, group: u64) -> Result<(), RouterError> {
        let t = self.owned_track(track)?;
        let Some(pos) = t.open.iter().position(|&g| g == group) else {
            return Err(group_not_open(t, group));
        };
        t.open.swap_remove(pos);
        self.fan_local(track.0, Ev::AbortBelow(group.saturating_add(1)));
        self.drop_for_remotes(track.0, group.saturating_add(1));
        Ok(())
    }

    // ---------------------------------------------------------------- subscribing

    /// Subscribes to `track` of the broadcast announced at `path`. Deliveries start with
    /// `Ready` (or `NotFound`), then the newest cached group from its first frame, then
    /// live groups.
    pub fn subscribe(&mut self, path: &str, track: &str) -> Result<SubscriberId, RouterError> {
        let Some(route) = self.announces.visible(path) else {
            return Err(RouterError::Unroutable { path: path.into() });
        };
        if self.subs.len() >= self.config.max_subscribers {
            return Err(self.limit("subscribers", self.config.max_subscribers));
        }
        let tk = if route.owner == self.id {
            self.owned_track_for_demand(route.bc, track)?
        } else {
            let name: Arc<str> = track.into();
            let key = (route.owner, route.bc, name.clone());
            match self.replicas.get(&key) {
                Some(&tk) => tk,
                None => {
                    self.check_outboxes()?;
                    let tk = self.insert_track(
                        name.clone(),
                        Origin::Replica {
                            owner: route.owner,
                            bc: route.bc,
                        },
                        None,
                    )?;
                    self.replicas.insert(key, tk);
                    if let Some(p) = self.peers[route.owner].as_mut() {
                        p.send_control(Msg::Subscribe {
                            bc: route.bc,
                            name,
                            slot: tk,
                        });
                    }
                    tk
                }
            }
        };
        let Some(lk) = self.tracks.get(tk).map(|t| t.log) else {
            return Err(RouterError::UnknownTrack);
        };
        let Some(end) = self.logs.get(lk).map(Log::end) else {
            return Err(RouterError::UnknownTrack);
        };
        let sk = match self.subs.insert(Subscriber::new(
            tk,
            lk,
            end,
            self.config.subscriber_max_bytes,
        )) {
            Ok(sk) => sk,
            Err(_) => return Err(self.limit("subscribers", self.config.max_subscribers)),
        };
        let Self {
            tracks,
            logs,
            subs,
            ready_subs,
            ..
        } = self;
        if let (Some(t), Some(s), Some(log)) =
            (tracks.get_mut(tk), subs.get_mut(sk), logs.get_mut(lk))
        {
            s.track_index = t.subs.len();
            t.subs.push(sk);
            log.readers += 1;
            if let Some(info) = t.info {
                s.ready(info);
                join_at_newest(log, s);
                s.enforce_bound(log);
                log.check_at = log.check_at.min(s.limit(log).saturating_add(1));
            }
            if s.has_pending(log) {
                s.in_ready = true;
                ready_subs.push_back(sk);
            } else {
                log.idle.push(sk);
            }
        }
        self.demand_changed(tk);
        Ok(SubscriberId(sk))
    }

    pub fn unsubscribe(&mut self, sub: SubscriberId) -> Result<(), RouterError> {
        let Some(s) = self.subs.remove(sub.0) else {
            return Err(RouterError::UnknownSubscriber);
        };
        self.retired_drops.add(&s.dropped);
        // A log is freed only with its last reader, so this subscriber's is still there
        // and counts it: a miss or a zero count means the reader bookkeeping drifted (and
        // a log would be freed under a reader, or never).
        debug_assert!(
            self.logs.get(s.log).is_some_and(|l| l.readers > 0),
            "subscriber's log is gone or does not count it as a reader"
        );
        if let Some(log) = self.logs.get_mut(s.log) {
            log.readers = log.readers.saturating_sub(1);
            // A removed key never comes back (slab generations) and `wake_idle` skips
            // it, so the idle list is compacted only when stale keys outnumber the
            // readers: leaving stays O(1) amortised, and the list bounded by twice them.
            if log.idle.len() > 2 * log.readers + IDLE_SLACK {
                let subs = &self.subs;
                log.idle.retain(|&k| subs.get(k).is_some());
            }
            if log.readers == 0 && log.orphan {
                self.logs.remove(s.log);
            }
        }
        if let Some(t) = self.tracks.get_mut(s.track) {
            // Demand is counted from this list: the subscriber is in it exactly once, at
            // the index it keeps; the subscriber swapped into its place learns its new one.
            let index = s.track_index;
            debug_assert_eq!(
                t.subs.get(index),
                Some(&sub.0),
                "subscriber's track index drifted"
            );
            if t.subs.get(index) == Some(&sub.0) {
                t.subs.swap_remove(index);
                if let Some(&moved) = t.subs.get(index)
                    && let Some(m) = self.subs.get_mut(moved)
                {
                    m.track_index = index;
                }
            } else {
                t.subs.retain(|&k| k != sub.0);
            }
            self.demand_changed(s.track);
        }
        Ok(())
    }

    /// Next delivery for `sub`, in order; `None` when it has read everything so far. A
    /// frame comes as its own `Bytes` handle (a refcount clone of the log's).
    #[inline]
    pub fn next_delivery(&mut self, sub: SubscriberId) -> Option<Delivery> {
        let s = self.subs.get_mut(sub.0)?;
        s.next(self.logs.get(s.log)?)
    }

    /// A subscriber that got deliveries since it was last returned here.
    pub fn next_ready(&mut self) -> Option<SubscriberId> {
        while let Some(sk) = self.ready_subs.pop_front() {
            if let Some(s) = self.subs.get_mut(sk) {
                s.in_ready = false;
                // Woken again by the next append to its log.
                if let Some(log) = self.logs.get_mut(s.log) {
                    log.idle.push(sk);
                }
                return Some(SubscriberId(sk));
            }
        }
        None
    }

    /// Bytes `sub` has not read yet: the share of its track's log it pins.
    pub fn queued_bytes(&self, sub: SubscriberId) -> Option<usize> {
        let s = self.subs.get(sub.0)?;
        Some(self.logs.get(s.log).map_or(0, |l| s.queued_bytes(l)))
    }

    /// Unread bytes summed over all local subscribers (walks them: for metrics and
    /// tests). Subscribers of one track share its log, so memory held is at most the
    /// largest of them per track, not this sum.
    pub fn total_queued_bytes(&self) -> usize {
        self.subs
            .iter()
            .map(|(_, s)| self.logs.get(s.log).map_or(0, |l| s.queued_bytes(l)))
            .sum()
    }

    /// Bytes of the newest groups kept for late joiners, per the cache bounds (walks the
    /// tracks: metrics and tests).
    pub fn cached_bytes(&self) -> usize {
        self.tracks
            .iter()
            .filter_map(|(_, t)| self.logs.get(t.log))
            .map(|l| l.cache.bytes())
            .sum()
    }

    /// Bytes of entries held by the track logs (frames counted once however many
    /// subscribers read them; walks the logs: metrics and tests).
    pub fn log_bytes(&self) -> usize {
        self.logs
            .iter()
            .map(|(_, l)| usize::try_from(l.held()).unwrap_or(usize::MAX))
            .sum()
    }

    // ---------------------------------------------------------------- announce queries

    /// Paths announced under `prefix` right now, from this shard's replica.
    pub fn announced(&self, prefix: &str) -> Vec<Arc<str>> {
        self.announces.announced(prefix)
    }

    /// Current matches plus a query that receives every later change under `prefix`.
    pub fn announce_query(
        &mut self,
        prefix: &str,
    ) -> Result<(QueryId, Vec<Arc<str>>), RouterError> {
        let q = self
            .announces
            .open(prefix)
            .ok_or_else(|| self.limit("queries", self.config.max_queries))?;
        Ok((q, self.announced(prefix)))
    }

    pub fn next_announce(&mut self, query: QueryId) -> Result<Option<AnnounceEvent>, RouterError> {
        self.announces.next_event(query)
    }

    pub fn next_ready_query(&mut self) -> Option<QueryId> {
        self.announces.next_ready()
    }

    pub fn close_query(&mut self, query: QueryId) -> Result<(), RouterError> {
        self.announces.close(query)
    }

    // ---------------------------------------------------------------- the loop

    /// Processes messages from other shards (at most one ring's worth per peer) and
    /// linger deadlines. Call at the start of every loop iteration.
    pub fn poll(&mut self, now: Instant) {
        self.set_clock(now);
        self.park.wake();
        self.backlog = false;
        let budget = self.config.ring_capacity;
        for from in 0..self.inbound.len() {
            let mut n = 0;
            while n < budget {
                let Some(m) = self.inbound[from].as_mut().and_then(Consumer::pop) else {
                    break;
                };
                n += 1;
                self.handle(from, m);
            }
            self.stats.received += n as u64;
            if n == budget && self.inbound[from].as_mut().is_some_and(|c| !c.is_empty()) {
                self.backlog = true;
            }
        }
        let mut i = 0;
        while i < self.lingering.len() {
            let bk = self.lingering[i];
            let expired = self
                .broadcasts
                .get(bk)
                .is_none_or(|b| b.linger_until.is_none_or(|t| t <= now));
            if expired {
                self.lingering.swap_remove(i);
                if self
                    .broadcasts
                    .get(bk)
                    .is_some_and(|b| b.linger_until.is_some())
                {
                    self.end_broadcast(bk);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Retries waiting control messages and drop notices, then rings the doorbell of
    /// every peer that was pushed to since the last flush and is parked. Call once per
    /// loop iteration, after the sessions ran.
    pub fn flush(&mut self) {
        for p in self.peers.iter_mut().flatten() {
            while let Some(m) = p.outbox.pop_front() {
                match p.tx.push(m) {
                    Ok(()) => p.pushed = true,
                    Err(m) => {
                        p.outbox.push_front(m);
                        break;
                    }
                }
            }
        }
        let Self {
            tracks,
            peers,
            notice_tracks,
            ..
        } = self;
        notice_tracks.retain(|&tk| {
            let Some(t) = tracks.get_mut(tk) else {
                return false;
            };
            let mut pending = false;
            for r in &mut t.remotes {
                let (Some(below), Some(p)) = (r.notice, peers[r.shard].as_mut()) else {
                    continue;
                };
                if p.try_data(
                    Msg::Dropped {
                        slot: r.slot,
                        below,
                    },
                    0,
                )
                .is_ok()
                {
                    r.notice = None;
                } else {
                    pending = true;
                }
            }
            t.notice_pending = pending;
            pending
        });
        for p in self.peers.iter_mut().flatten() {
            if std::mem::take(&mut p.pushed) && p.park.notify() {
                p.doorbell.ring();
                self.stats.doorbells += 1;
            }
        }
    }

    /// Flushes, then tells the loop whether it may sleep until its doorbell rings (or
    /// I/O, or `next_deadline`). False means more router work arrived: iterate again.
    pub fn prepare_park(&mut self) -> bool {
        self.flush();
        !self.backlog && self.park.try_park()
    }

    /// When the loop must call `poll` again even without a doorbell: the nearest linger
    /// deadline, or soon if control messages wait for room in a peer's ring.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let linger = self
            .lingering
            .iter()
            .filter_map(|&bk| self.broadcasts.get(bk)?.linger_until)
            .min();
        let stuck = !self.notice_tracks.is_empty()
            || self.peers.iter().flatten().any(|p| !p.outbox.is_empty());
        let retry = stuck.then(|| now + OUTBOX_RETRY);
        match (linger, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---------------------------------------------------------------- internals

    /// A new track with its own (empty) log.
    fn insert_track(
        &mut self,
        name: Arc<str>,
        origin: Origin,
        info: Option<TrackProperties>,
    ) -> Result<Key, RouterError> {
        let cache = Cache::new(self.config.cache_max_groups, self.config.cache_max_bytes);
        let lk = self
            .logs
            .insert(Log::new(cache))
            .map_err(|_| self.limit("tracks", self.config.max_tracks))?;
        match self.tracks.insert(Track::new(name, origin, info, lk)) {
            Ok(tk) => Ok(tk),
            Err(_) => {
                self.logs.remove(lk);
                Err(self.limit("tracks", self.config.max_tracks))
            }
        }
    }

    fn remove_track(&mut self, tk: Key) -> Option<Track> {
        let t = self.tracks.remove(tk)?;
        // Subscribers still reading the log keep it until they leave.
        if let Some(log) = self.logs.get_mut(t.log) {
            log.orphan = true;
            if log.readers == 0 {
                self.logs.remove(t.log);
            }
        }
        match t.origin {
            Origin::Local { bc } => {
                if let Some(b) = self.broadcasts.get_mut(bc) {
                    b.tracks.remove(&t.name);
                }
            }
            Origin::Replica { owner, bc } => {
                self.replicas.remove(&(owner, bc, t.name.clone()));
            }
        }
        Some(t)
    }

    fn end_track_inner(&mut self, tk: Key) {
        let Some(t) = self.remove_track(tk) else {
            return;
        };
        let end = t.next_seq;
        let live = t.info.is_some();
        if let Some(log) = self.logs.get_mut(t.log)
            && log.finish.is_none()
        {
            log.finish = Some(if live {
                Delivery::TrackEnded { end }
            } else {
                Delivery::NotFound
            });
            wake_idle(log, &mut self.subs, &mut self.ready_subs);
        }
        for r in &t.remotes {
            if let Some(p) = self.peers[r.shard].as_mut() {
                p.send_control(if live {
                    Msg::TrackEnded { slot: r.slot, end }
                } else {
                    Msg::NotFound { slot: r.slot }
                });
            }
        }
    }

    fn end_broadcast(&mut self, bk: Key) {
        let Some(b) = self.broadcasts.remove(bk) else {
            return;
        };
        self.by_path.remove(&b.path);
        self.lingering.retain(|&k| k != bk);
        if let Some((feeder, fbc)) = b.fed_by {
            let tks: Vec<Key> = b.tracks.values().copied().collect();
            self.unsubscribe_feed(&tks, feeder, fbc);
        }
        for (_, tk) in b.tracks {
            self.end_track_inner(tk);
        }
        self.announces.remove(&b.path, self.id, bk);
        let path = b.path;
        self.broadcast_control(|| Msg::Unannounce {
            path: path.clone(),
            bc: bk,
        });
    }

    fn unsubscribe_feed(&mut self, tks: &[Key], feeder: usize, fbc: Key) {
        for &tk in tks {
            if let (Some(t), Some(p)) = (self.tracks.get(tk), self.peers[feeder].as_mut()) {
                p.send_control(Msg::Unsubscribe {
                    bc: fbc,
                    name: t.name.clone(),
                    slot: tk,
                });
            }
        }
    }

    /// Feeds broadcast `bk`, whose publisher was lost, from `route` on another shard that
    /// reaches the same publisher: the open groups are dropped, groups already delivered
    /// are not taken again (the tracks' floor), every track in demand is subscribed
    /// there, and the broadcast is announced again with that route's chain, so no peer
    /// the new chain passes through is offered it back.
    fn fail_over(&mut self, bk: Key, route: Route) {
        let Some(b) = self.broadcasts.get_mut(bk) else {
            return;
        };
        b.linger_until = None;
        b.fed_by = Some((route.owner, route.bc));
        b.hops = route.hops.clone();
        self.lingering.retain(|&k| k != bk);
        let tks: Vec<Key> = b.tracks.values().copied().collect();
        for tk in tks {
            let Some(t) = self.tracks.get_mut(tk) else {
                continue;
            };
            if !t.has_demand() {
                self.remove_track(tk);
                continue;
            }
            t.floor = t.floor.max(t.next_seq);
            let name = t.name.clone();
            self.drop_open_groups(tk);
            if let Some(p) = self.peers[route.owner].as_mut() {
                p.send_control(Msg::Subscribe {
                    bc: route.bc,
                    name,
                    slot: tk,
                });
            }
        }
        self.reannounce(bk);
    }

    /// The feed of owned track `tk` is gone with groups open: they end, cut short, for
    /// its subscribers here and on every shard.
    fn drop_open_groups(&mut self, tk: Key) {
        let Some(t) = self.tracks.get_mut(tk) else {
            return;
        };
        if let Some(&max) = t.open.iter().max() {
            t.open.clear();
            self.fan_local(tk, Ev::AbortBelow(max.saturating_add(1)));
            self.drop_for_remotes(tk, max.saturating_add(1));
        }
    }

    /// Whether a group of fed track `slot` came by a route the broadcast has left.
    fn below_floor(&self, slot: Key, group: u64) -> bool {
        self.tracks.get(slot).is_some_and(|t| group < t.floor)
    }

    /// The publisher of broadcast `bk`, lingering here, came back on shard `feeder` as
    /// its broadcast `fbc`: subscribe to it for every track still in demand and keep
    /// serving our subscribers (local and on other shards) from that feed.
    fn splice(&mut self, bk: Key, feeder: usize, fbc: Key) {
        let Some(b) = self.broadcasts.get_mut(bk) else {
            return;
        };
        b.linger_until = None;
        b.fed_by = Some((feeder, fbc));
        self.lingering.retain(|&k| k != bk);
        let tks: Vec<Key> = b.tracks.values().copied().collect();
        for tk in tks {
            let Some(t) = self.tracks.get(tk) else {
                continue;
            };
            if !t.has_demand() {
                self.remove_track(tk);
                continue;
            }
            let name = t.name.clone();
            self.restart_track(tk);
            if let Some(p) = self.peers[feeder].as_mut() {
                p.send_control(Msg::Subscribe {
                    bc: fbc,
                    name,
                    slot: tk,
                });
            }
        }
    }

    /// Whether `slot` is a track fed by shard `from`: `Some(false)` for a replica,
    /// `Some(true)` for an owned track of a spliced broadcast (which also feeds other
    /// shards).
    fn fed_kind(&self, slot: Key, from: usize) -> Option<bool> {
        match self.tracks.get(slot)?.origin {
            Origin::Replica { owner, .. } if owner == from => Some(false),
            Origin::Local { bc } => self
                .broadcasts
                .get(bc)?
                .fed_by
                .filter(|&(feeder, _)| feeder == from)
                .map(|_| true),
            _ => None,
        }
    }

    /// A resumed publisher may restart group numbering: drop the cache and let every
    /// subscriber, here and on other shards, join at the next group it starts.
    fn restart_track(&mut self, tk: Key) {
        let Some(t) = self.tracks.get_mut(tk) else {
            return;
        };
        t.open.clear();
        t.next_seq = 0;
        t.floor = 0;
        self.fan_local(tk, Ev::Restart);
        let Self { tracks, peers, .. } = self;
        let Some(t) = tracks.get_mut(tk) else {
            return;
        };
        for r in &mut t.remotes {
            let Some(p) = peers[r.shard].as_mut() else {
                continue;
            };
            // The drop notice for groups cut by the loss must reach the shard before
            // the restart, so both go in order on the control path.
            if let Some(below) = r.notice.take() {
                p.send_control(Msg::Dropped {
                    slot: r.slot,
                    below,
                });
            }
            p.send_control(Msg::Restart { slot: r.slot });
            r.floor = 0;
        }
    }

    fn track_became_ready(&mut self, tk: Key, info: TrackProperties) {
        let Self {
            tracks,
            logs,
            subs,
            ready_subs,
            peers,
            stats,
            ..
        } = self;
        let Some(t) = tracks.get_mut(tk) else {
            return;
        };
        let Some(log) = logs.get_mut(t.log) else {
            return;
        };
        for &sk in &t.subs {
            if let Some(s) = subs.get_mut(sk) {
                s.ready(info);
                join_at_newest(log, s);
                s.enforce_bound(log);
                log.check_at = log.check_at.min(s.limit(log).saturating_add(1));
            }
        }
        wake_idle(log, subs, ready_subs);
        for r in &mut t.remotes {
            if let Some(p) = peers[r.shard].as_mut() {
                p.send_control(Msg::Subscribed { slot: r.slot, info });
                replay_newest(log, r, p, stats);
            }
        }
    }
}

#[cold]
fn group_not_open(t: &Track, group: u64) -> RouterError {
    RouterError::GroupNotOpen {
        track: t.name.to_string(),
        group,
    }
}
