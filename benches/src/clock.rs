//! The benchmark's one clock: CLOCK_MONOTONIC in nanoseconds, the same clock in every
//! process on the host, so a publisher's send time and a subscriber's receive time can be
//! subtracted even across processes. It owns the conversion to `Instant` (which is the same
//! clock on Linux) for timers; it must never use the wall clock, which can jump.

use std::time::{Duration, Instant};

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// A pair of readings taken together, to turn nanosecond deadlines into `Instant`s.
#[derive(Debug, Clone, Copy)]
pub struct Epoch {
    instant: Instant,
    ns: u64,
}

impl Epoch {
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            ns: now_ns(),
        }
    }

    /// The `Instant` at monotonic time `ns` (clamped to the epoch for earlier times).
    pub fn instant_at(&self, ns: u64) -> Instant {
        self.instant + Duration::from_nanos(ns.saturating_sub(self.ns))
    }

    pub fn ns(&self) -> u64 {
        self.ns
    }
}
