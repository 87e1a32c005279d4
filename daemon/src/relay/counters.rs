//! Per-worker counters of results the relay's bookkeeping expected to succeed. A refused
//! call is never fatal (the peer or the router moved first), but a count that grows
//! means the relay's view of a session or of the router drifted: the ops endpoint
//! exports these. Plain integers: each worker owns its own.

use driver::DriverCounters;
use proto::session::SessionError;
use router::RouterError;
use tracing::debug;

use crate::auth::Cause;

/// Session calls that were refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionRefusals {
    /// The session had already closed: normal while a session is torn down.
    pub closed: u64,
    /// An id the session did not know, or one of its limits: drift, or a peer at a limit.
    pub other: u64,
}

impl SessionRefusals {
    /// The value of `result`, counting a refusal.
    pub fn note<T>(&mut self, result: Result<T, SessionError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(SessionError::Closed) => {
                self.closed += 1;
                None
            }
            Err(err) => {
                debug!(%err, "session refused a relay call");
                self.other += 1;
                None
            }
        }
    }

    pub fn add(&mut self, other: &SessionRefusals) {
        self.closed += other.closed;
        self.other += other.other;
    }
}

/// Sessions refused by `[auth]`, one count per [`Cause`] (indexed by `Cause::index`,
/// labelled by `Cause::LABELS`): a fixed array, so a flood of bad tokens costs no memory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AuthRefusals {
    pub by_cause: [u64; Cause::COUNT],
}

impl AuthRefusals {
    pub fn note(&mut self, cause: &Cause) {
        let index = cause.index();
        debug_assert!(index < Cause::COUNT);
        if let Some(count) = self.by_cause.get_mut(index) {
            *count += 1;
        }
    }

    /// The count for the cause labelled `label` (0 for a label no cause has).
    pub fn get(&self, label: &str) -> u64 {
        Cause::LABELS
            .iter()
            .position(|known| *known == label)
            .map_or(0, |index| self.by_cause[index])
    }

    pub fn total(&self) -> u64 {
        self.by_cause.iter().sum()
    }

    /// `(label, count)` for every cause, in `Cause::index` order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Cause::LABELS
            .iter()
            .copied()
            .zip(self.by_cause.iter().copied())
    }
}

/// Media moved in one direction: moq-relay's `role` label (`subscriber` for what the
/// relay receives from publishers, `publisher` for what it sends to subscribers).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// Frame payload bytes.
    pub bytes: u64,
    pub frames: u64,
    pub groups: u64,
    /// Single-frame groups that came as QUIC datagrams (a subset of `groups`).
    pub datagrams: u64,
}

impl Traffic {
    pub fn frame(&mut self, payload_len: usize) {
        self.frames += 1;
        self.bytes += payload_len as u64;
    }
}

/// Things that open and close (moq-relay's `*_opened_total` / `*_closed_total` pairs);
/// `closed <= opened`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpenClose {
    pub opened: u64,
    pub closed: u64,
}

/// Subscriptions on one side of the relay, as moq-relay counts them: track
/// subscriptions, and viewers (a session's first subscription to a broadcast opens one,
/// its last closes it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionTally {
    pub subscriptions: OpenClose,
    pub viewers: OpenClose,
}

/// Upper bounds of the frame-latency histogram's buckets, in microseconds: from what one
/// loop iteration costs to what a stalled worker would show.
pub const LATENCY_BUCKETS_MICROS: [u64; 10] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000,
];

/// The relay's own latency per delivered frame: from the loop iteration that handed the
/// frame to the router to the moment a subscriber's session took it for QUIC.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Frames per bucket (not cumulative); a frame above the last bound is only in `count`.
    pub buckets: [u64; LATENCY_BUCKETS_MICROS.len()],
    pub sum_micros: u64,
    pub count: u64,
}

impl LatencyHistogram {
    pub fn record(&mut self, latency: std::time::Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_MICROS.partition_point(|&bound| bound < micros);
        if let Some(slot) = self.buckets.get_mut(bucket) {
            *slot += 1;
        }
        self.sum_micros = self.sum_micros.saturating_add(micros);
        self.count += 1;
    }
}

/// Session transports, as the `transport` label of `moq_relayd_sessions_by_version_total`.
pub const TRANSPORTS: [&str; 2] = ["quic", "webtransport"];

/// Everything one relay worker counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayCounters {
    pub sessions_opened: u64,
    pub sessions_closed: u64,
    /// Sessions opened, by transport (`TRANSPORTS` order) and moq-lite version
    /// (`proto::Version::ALL` order).
    pub sessions_by_version: [[u64; proto::Version::ALL.len()]; TRANSPORTS.len()],
    /// The worker's router shard's own counts, copied in when published.
    pub router: router::Stats,
    pub shard: router::ShardCounters,
    /// Messages waiting in the shard's inbound rings when last published (a gauge).
    pub ring_backlog: u64,
    pub frame_latency: LatencyHistogram,
    /// Media received from publishing sessions (frames handed to the router).
    pub ingress: Traffic,
    /// Media handed to subscribing sessions (router deliveries applied to a session).
    pub egress: Traffic,
    /// Track subscriptions subscribers made here (role publisher: the relay serves them).
    pub egress_subscriptions: SubscriptionTally,
    /// Track subscriptions the relay made to publishing sessions (role subscriber); no
    /// viewers on this side.
    pub ingress_subscriptions: OpenClose,
    /// FETCH requests from peers.
    pub fetches: u64,
    /// Broadcasts publishing sessions announced here, and those that ended (withdrawn, or
    /// their session gone); `ended <= started`.
    pub announces_started: u64,
    pub announces_ended: u64,
    /// Announcements dropped: one whose hop chain held this relay's id (a loop), and one
    /// whose chain exceeds `[cluster] max_hops`.
    pub announces_looped: u64,
    pub announces_too_long: u64,
    /// Announcements not kept: a second publisher of a path this worker already routes,
    /// or one route too many to it (`routes::MAX_ROUTES_PER_PATH`).
    pub announces_refused: u64,
    /// Announcements ignored, and subscriptions refused, past `[limits]
    /// announces_per_session` / `subscriptions_per_session`.
    pub announces_over_limit: u64,
    pub subscriptions_over_limit: u64,
    /// Times a broadcast's feed moved to another session's route: a better route
    /// arrived, or the active one went and a standby took over.
    pub reroutes: u64,
    pub session_refusals: SessionRefusals,
    /// Sessions `[auth]` refused, per cause (each refusal is also logged once at info).
    pub auth_refusals: AuthRefusals,
    /// Sessions closed because their credential's `exp` passed.
    pub sessions_expired: u64,
    /// moq-lite-05+ sessions closed for no SETUP within `[listen] timeout`.
    pub setup_timeouts: u64,
    /// Router calls refused (an id the router no longer knew, a group out of order).
    pub router_refusals: u64,
    pub driver: DriverCounters,
}

impl RelayCounters {
    /// What a session counted itself: loops dropped, and requests past its limits.
    pub fn note_session(&mut self, session: &proto::session::Session) {
        self.announces_looped += session.loops_dropped();
        self.announces_over_limit += session.announces_over_limit();
        self.subscriptions_over_limit += session.subscriptions_over_limit();
    }

    /// The value of `result`, counting a router refusal.
    pub fn note_router<T>(&mut self, result: Result<T, RouterError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                debug!(%err, "router refused a relay call");
                self.router_refusals += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latency_buckets_take_their_upper_bound_and_the_rest_only_counts() {
        let mut h = LatencyHistogram::default();
        for micros in [0, 50, 51, 100_000, 100_001] {
            h.record(Duration::from_micros(micros));
        }
        assert_eq!(h.buckets[0], 2, "0 and 50 are <= 50");
        assert_eq!(h.buckets[1], 1, "51 is <= 100");
        assert_eq!(h.buckets[9], 1, "100 000 is the last bound");
        assert_eq!(h.buckets.iter().sum::<u64>(), 4);
        assert_eq!(h.count, 5);
        assert_eq!(h.sum_micros, 200_102);
    }
}
