//! Broadcast model, cache and cross-core fanout for moq-relayd. It owns the announce
//! table replicas, tracks, frame logs (with their late-join caches) and subscriber
//! cursors of every shard, and the SPSC rings between shards. It must never know the
//! wire format, read a clock, take a lock, block a publisher, or copy a payload: frames
//! move as refcounted `Bytes`, time comes in as `now`.
//!
//! Shape: [`Router::build`] returns one [`Shard`] per [`Doorbell`] it is given, in order;
//! the daemon gives one per worker, and there is no other kind of shard. Each `Shard` is
//! moved into its thread and used from there only. A broadcast is
//! owned by the shard of its publisher; every shard keeps a replica of the announce table;
//! a subscriber on another shard is served through one replica track per shard, fed by
//! one ring push per frame. On each shard a track's frames are appended once to its log
//! (which also serves late joiners); local subscribers read the log through cursors, so
//! local fan-out costs one append per frame plus, per subscriber, the `Bytes` clone its
//! session takes at `next_delivery`.
//!
//! The embedding loop, per iteration:
//! `shard.poll(now)` → run sessions (publish, subscribe, drain deliveries) →
//! `shard.flush()` → `if shard.prepare_park() { sleep until the doorbell, I/O or
//! shard.next_deadline() }`. A shard that pushed to a peer rings that peer's doorbell in
//! `flush`, and only if the peer parked and nobody rang it since (see [`park`]).

mod announce;
mod cache;
mod log;
pub mod park;
pub mod ring;
mod shard;
mod slab;
mod subscriber;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use shard::{Router, Shard, ShardCounters, Stats};

/// Each ordered pair of shards owns a ring, so a router of n shards holds n·(n−1) rings
/// of `ring_capacity` slots: 64 cores is beyond this daemon's target machines.
/// (`Router::build`'s error message spells the bound out.)
pub const MAX_SHARDS: usize = 64;

/// Wakes a parked shard's loop. Implemented by the embedding loop: the daemon writes the
/// worker's eventfd (quic-io's `Waker`), which its poll or io_uring wait includes; tests
/// use `Thread::unpark`. Rung from the producer's `Shard::flush`, and only when the target
/// declared itself parked (`prepare_park` returned true) and no producer rang it since:
/// at most once per park of the target, however many shards pushed to it.
pub trait Doorbell: Send + Sync {
    fn ring(&self);
}

/// Default messages per ordered shard pair ring: a power of two, so that it is used as
/// configured rather than rounded up. 1000 tracks at 30 frames/s crossing one shard pair
/// take about a quarter of a second to fill it.
const DEFAULT_RING_CAPACITY: usize = 8192;
const _: () = assert!(DEFAULT_RING_CAPACITY.is_power_of_two());

/// Limits and timings of the router; every bound the router uses comes from here or from
/// a named constant.
#[derive(Clone, Debug)]
pub struct Config {
    /// Messages per ordered shard pair ring (rounded up to a power of two).
    pub ring_capacity: usize,
    /// Unread bytes per local subscriber before its oldest groups are dropped. A track's
    /// log on one shard, shared by all its local subscribers, holds at most
    /// `cache_max_bytes + 2 * subscriber_max_bytes` (entries counted with their payload).
    pub subscriber_max_bytes: usize,
    /// Groups cached per track (the newest is always kept).
    pub cache_max_groups: usize,
    /// Bytes cached per track.
    pub cache_max_bytes: usize,
    /// How long an abruptly lost broadcast stays announced, waiting for its publisher.
    pub linger: Duration,
    /// Broadcasts owned per shard.
    pub max_broadcasts: usize,
    /// Tracks per shard, owned and replicas together.
    pub max_tracks: usize,
    /// Local subscribers per shard.
    pub max_subscribers: usize,
    /// Open announce queries per shard.
    pub max_queries: usize,
    /// Events queued per announce query before it reports `Lagged`.
    pub query_max_events: usize,
    /// Control messages waiting per peer when its ring is full.
    pub outbox_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ring_capacity: DEFAULT_RING_CAPACITY,
            subscriber_max_bytes: 4 << 20,
            cache_max_groups: 4,
            cache_max_bytes: 16 << 20,
            linger: Duration::from_secs(5),
            max_broadcasts: 4096,
            max_tracks: 1 << 16,
            max_subscribers: 1 << 16,
            max_queries: 4096,
            query_max_events: 1024,
            outbox_max: 1 << 16,
        }
    }
}

/// Track properties set by its publisher and immutable for the track's life (moq-lite
/// TRACK_INFO / SUBSCRIBE_OK values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackProperties {
    pub priority: u8,
    pub ordered: bool,
    pub max_latency: Duration,
    pub timescale: u64,
}

impl Default for TrackProperties {
    /// moq-dev's defaults for a track that came without TRACK_INFO.
    fn default() -> Self {
        Self {
            priority: 0,
            ordered: false,
            max_latency: Duration::from_millis(5000),
            timescale: 1000,
        }
    }
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) slab::Key);
    };
}
id_type!(
    /// A broadcast owned by this shard.
    BroadcastId
);
id_type!(
    /// A track owned by this shard.
    TrackId
);
id_type!(
    /// A local subscription on this shard.
    SubscriberId
);
id_type!(
    /// A live announce query on this shard.
    QueryId
);
id_type!(
    /// A FETCH started on this shard.
    FetchTicket
);

/// When a frame reached the router, in microseconds since the router was built, modulo
/// 2^32 (71 minutes: latencies are differences of a few milliseconds). `UNKNOWN` for a
/// frame re-sent from the cache to a late joiner, whose age is not the relay's latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArrivalTick(pub(crate) u32);

impl ArrivalTick {
    pub const UNKNOWN: ArrivalTick = ArrivalTick(0);
}

/// What a subscriber receives, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The track exists; the session may send SUBSCRIBE_OK / TRACK_INFO.
    Ready(TrackProperties),
    /// The publisher does not have this track (reset 13); nothing follows.
    NotFound,
    /// A group begins: open its stream.
    GroupStart { group: u64 },
    Frame {
        group: u64,
        /// In the track's timescale, as the publisher's session handed it over.
        timestamp: u64,
        payload: Bytes,
        /// When the publisher's shard took it (`Shard::latency` reads it).
        arrived: ArrivalTick,
    },
    /// The group is complete: FIN its stream.
    GroupEnd { group: u64 },
    /// Reset every open stream of a group below `below`: those groups were dropped
    /// (slow subscriber, slow shard, or lost publisher).
    GroupsDropped { below: u64 },
    /// No group at or past `end` will come (exclusive, moq-lite SUBSCRIBE_END); nothing
    /// follows.
    TrackEnded { end: u64 },
}

/// A group's frames as `(timestamp, payload)`, in order: the answer to a FETCH.
pub type GroupFrames = Vec<(u64, Bytes)>;

/// Demand changes the publishing session acts on (open or close its upstream
/// subscription for a track).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublisherEvent {
    /// A subscriber wants this track: subscribe upstream, then `publish_track` (or
    /// `reject_track`).
    TrackWanted {
        broadcast: BroadcastId,
        track: TrackId,
        name: Arc<str>,
    },
    /// Nobody reads this track any more: the upstream subscription may be closed.
    TrackUnused {
        broadcast: BroadcastId,
        track: TrackId,
    },
}

/// A change in the announce table under a query's prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnnounceEvent {
    /// The path is announced, or its route changed (re-advertise).
    Active(Arc<str>),
    Ended(Arc<str>),
    /// Events were lost because the query was not drained; take a fresh snapshot with
    /// `Shard::announced`.
    Lagged,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouterError {
    #[error("invalid router config: {0}")]
    Config(&'static str),
    #[error("broadcast {path:?} is not announced")]
    Unroutable { path: String },
    #[error("broadcast {path:?} is already published on this shard")]
    Duplicate { path: String },
    #[error("unknown or ended broadcast id")]
    UnknownBroadcast,
    #[error("unknown or ended track id")]
    UnknownTrack,
    #[error("unknown subscriber id")]
    UnknownSubscriber,
    #[error("unknown query id")]
    UnknownQuery,
    #[error("group {group} of track {track:?} already exists")]
    DuplicateGroup { track: String, group: u64 },
    #[error("group {group} of track {track:?} is not open")]
    GroupNotOpen { track: String, group: u64 },
    #[error("{what} limit of {limit} reached on shard {shard}")]
    Limit {
        what: &'static str,
        limit: usize,
        shard: usize,
    },
    #[error("shard {peer} is not draining its ring: {pending} control messages waiting")]
    Backlogged { peer: usize, pending: usize },
}

/// Segment-aware prefix test of moq-lite (section 8.1): `room` matches `room` and
/// `room/alice` but not `roomy`. Paths are expected normalized.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}
