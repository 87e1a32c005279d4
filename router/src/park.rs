//! The parking protocol between one shard (the consumer of its inbound rings) and every
//! shard that pushes into them. It owns one atomic byte per shard and decides who must
//! ring a doorbell; it never sleeps, never rings the doorbell itself, and never reads a
//! ring.
//!
//! State bits live in ONE atomic and are only changed by read-modify-write operations,
//! so their modification order is total and no `SeqCst` reasoning is needed:
//!
//! * producer, after pushing: `fetch_or(NOTIFIED)`; it must ring the doorbell iff the
//!   previous value was exactly `PARKED` (parked and nobody rang since).
//! * consumer, at the start of an iteration: `swap(0)` (awake, notifications consumed),
//!   then drains its rings.
//! * consumer, before sleeping: `compare_exchange(0, PARKED)`; it fails if any producer
//!   notified after the `swap`, and then the consumer must not sleep.
//!
//! A push whose `fetch_or` precedes the `swap` is visible to the drain (release/acquire
//! through the RMW chain); one that follows it either makes the park fail or sees
//! `PARKED` and rings. Either way no wake-up is lost; `tests/loom.rs` checks this.

use crate::sync::{AtomicU8, Ordering};

const NOTIFIED: u8 = 1;
const PARKED: u8 = 2;

/// Parking state of one shard, shared by it and all its producers.
#[derive(Debug)]
pub struct ParkState(AtomicU8);

impl Default for ParkState {
    fn default() -> Self {
        Self::new()
    }
}

impl ParkState {
    pub fn new() -> Self {
        Self(AtomicU8::new(0))
    }

    /// Producer side, once per loop iteration per target after pushing to its ring.
    /// Returns true if the caller must ring the target's doorbell.
    pub fn notify(&self) -> bool {
        self.0.fetch_or(NOTIFIED, Ordering::AcqRel) == PARKED
    }

    /// Consumer side: called at the start of an iteration, before draining the rings.
    pub fn wake(&self) {
        self.0.swap(0, Ordering::AcqRel);
    }

    /// Consumer side: called when the iteration found nothing more to do. True means the
    /// loop may sleep until its doorbell rings; false means a producer pushed since
    /// `wake`, so it must run another iteration.
    pub fn try_park(&self) -> bool {
        self.0
            .compare_exchange(0, PARKED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}
