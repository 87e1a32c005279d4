//! Live accepted connections per source address, shared by every worker: the
//! `max_connections_per_source` admission limit. Initials from one address reach
//! whichever worker the kernel picks, so the count is relay-wide; it is touched on
//! accept and on a connection's end, never per packet.
//!
//! Addresses are hashed (with a per-process key, so a client cannot aim at another's
//! bucket) into a fixed array of counters: no map to grow, no lock. Two addresses that
//! share a bucket share its count, so the limit can only bite early, never late.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

/// Counters in the array: enough that addresses with a few connections each rarely
/// share one, small enough (16 KiB) to allocate once per server.
const BUCKETS: usize = 4096;
const _: () = assert!(BUCKETS.is_power_of_two());

#[derive(Debug)]
pub(crate) struct SourceCounts {
    buckets: Box<[AtomicU32]>,
    key: RandomState,
    /// Connections per source; 0: no limit (and nothing is counted).
    limit: u32,
}

impl SourceCounts {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            key: RandomState::new(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        }
    }

    fn bucket(&self, ip: IpAddr) -> &AtomicU32 {
        let index = self.key.hash_one(ip.to_canonical()) as usize & (BUCKETS - 1);
        &self.buckets[index]
    }

    /// Takes a slot for a connection from `ip`; false at the limit. Every `true` must be
    /// matched by one [`SourceCounts::close`].
    pub(crate) fn try_open(&self, ip: IpAddr) -> bool {
        if self.limit == 0 {
            return true;
        }
        self.bucket(ip)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn close(&self, ip: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let released = self
            .bucket(ip)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        debug_assert!(released.is_ok(), "a source slot closed twice");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_limit_and_a_slot_back_when_one_closes() {
        let counts = SourceCounts::new(2);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(counts.try_open(ip));
        assert!(counts.try_open(ip));
        assert!(!counts.try_open(ip));
        // The same address written as IPv4-mapped IPv6 is the same source.
        assert!(!counts.try_open("::ffff:192.0.2.7".parse().unwrap()));
        counts.close(ip);
        assert!(counts.try_open(ip));
    }

    #[test]
    fn no_limit_counts_nothing() {
        let counts = SourceCounts::new(0);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..10 {
            assert!(counts.try_open(ip));
        }
        counts.close(ip);
    }
}
