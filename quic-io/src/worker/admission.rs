//! Live accepted connections, shared by every worker: the `max_connections_total` and
//! `max_connections_per_source` admission limits. Initials from one address reach
//! whichever worker the kernel picks, so both counts are server-wide; they are touched on
//! accept and on a connection's end, never per packet.
//!
//! Per-source counts hash addresses (with a per-process key, so a client cannot aim at
//! another's bucket) into a fixed array of counters: no map to grow, no lock. Two
//! addresses that share a bucket share its count, so that limit can only bite early,
//! never late.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Per-source counters: enough that addresses with a few connections each rarely share
/// one, small enough (32 KiB) to allocate once per server.
const BUCKETS: usize = 4096;
const _: () = assert!(BUCKETS.is_power_of_two());

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Total,
    PerSource,
}

#[derive(Debug)]
pub(crate) struct Admission {
    total: Capped,
    sources: Box<[AtomicUsize]>,
    per_source: usize,
    key: RandomState,
}

/// A limit over one counter; 0: no limit (and nothing is counted).
#[derive(Debug)]
struct Capped {
    live: AtomicUsize,
    limit: usize,
}

impl Capped {
    fn try_take(counter: &AtomicUsize, limit: usize) -> bool {
        limit == 0
            || counter
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok()
    }

    fn give_back(counter: &AtomicUsize, limit: usize) {
        if limit == 0 {
            return;
        }
        let released =
            counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        debug_assert!(released.is_ok(), "an admission slot released twice");
    }
}

impl Admission {
    pub(crate) fn new(total: usize, per_source: usize) -> Self {
        Self {
            total: Capped {
                live: AtomicUsize::new(0),
                limit: total,
            },
            sources: (0..BUCKETS).map(|_| AtomicUsize::new(0)).collect(),
            per_source,
            key: RandomState::new(),
        }
    }

    fn bucket(&self, ip: IpAddr) -> &AtomicUsize {
        let index = self.key.hash_one(ip.to_canonical()) as usize & (BUCKETS - 1);
        &self.sources[index]
    }

    /// Takes a slot in both limits for a connection from `ip`, or neither. Every `Ok`
    /// must be matched by one [`Admission::release`] with the same address.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<(), Refused> {
        if !Capped::try_take(&self.total.live, self.total.limit) {
            return Err(Refused::Total);
        }
        if !Capped::try_take(self.bucket(ip), self.per_source) {
            Capped::give_back(&self.total.live, self.total.limit);
            return Err(Refused::PerSource);
        }
        Ok(())
    }

    pub(crate) fn release(&self, ip: IpAddr) {
        Capped::give_back(self.bucket(ip), self.per_source);
        Capped::give_back(&self.total.live, self.total.limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_limit_and_a_slot_back_when_one_closes() {
        let admission = Admission::new(0, 2);
        let a = ip("192.0.2.7");
        assert_eq!(admission.admit(a), Ok(()));
        assert_eq!(admission.admit(a), Ok(()));
        assert_eq!(admission.admit(a), Err(Refused::PerSource));
        // The same address written as IPv4-mapped IPv6 is the same source.
        assert_eq!(
            admission.admit(ip("::ffff:192.0.2.7")),
            Err(Refused::PerSource)
        );
        admission.release(a);
        assert_eq!(admission.admit(a), Ok(()));
    }

    #[test]
    fn the_server_gets_its_limit_and_a_slot_back_when_one_closes() {
        let admission = Admission::new(2, 0);
        assert_eq!(admission.admit(ip("192.0.2.1")), Ok(()));
        assert_eq!(admission.admit(ip("192.0.2.2")), Ok(()));
        assert_eq!(admission.admit(ip("192.0.2.3")), Err(Refused::Total));
        admission.release(ip("192.0.2.1"));
        assert_eq!(admission.admit(ip("192.0.2.3")), Ok(()));
    }

    #[test]
    fn a_source_refused_leaves_the_total_as_it_was() {
        let admission = Admission::new(2, 1);
        assert_eq!(admission.admit(ip("192.0.2.1")), Ok(()));
        assert_eq!(admission.admit(ip("192.0.2.1")), Err(Refused::PerSource));
        // Had the refused one kept its total slot, this would be the third.
        assert_eq!(admission.admit(ip("192.0.2.2")), Ok(()));
        assert_eq!(admission.admit(ip("192.0.2.3")), Err(Refused::Total));
    }

    #[test]
    fn no_limits_count_nothing() {
        let admission = Admission::new(0, 0);
        let a = ip("192.0.2.7");
        assert!((0..10_000).all(|_| admission.admit(a).is_ok()));
        admission.release(a);
    }
}
