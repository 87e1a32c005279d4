//! Live accepted connections of the whole server, every worker together: the
//! `max_connections_total` admission limit. Touched on accept and on a connection's
//! end, never per packet.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub(crate) struct TotalCount {
    live: AtomicUsize,
    /// 0: no limit (and nothing is counted).
    limit: usize,
}

impl TotalCount {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            live: AtomicUsize::new(0),
            limit,
        }
    }

    /// Takes a slot; false at the limit. Every `true` must be matched by one
    /// [`TotalCount::close`].
    pub(crate) fn try_open(&self) -> bool {
        self.limit == 0
            || self
                .live
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < self.limit).then_some(n + 1)
                })
                .is_ok()
    }

    pub(crate) fn close(&self) {
        if self.limit == 0 {
            return;
        }
        let released = self
            .live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        debug_assert!(released.is_ok(), "a total slot closed twice");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_gets_its_limit_and_a_slot_back_when_one_closes() {
        let total = TotalCount::new(2);
        assert!(total.try_open());
        assert!(total.try_open());
        assert!(!total.try_open());
        total.close();
        assert!(total.try_open());
        let unlimited = TotalCount::new(0);
        assert!((0..10_000).all(|_| unlimited.try_open()));
    }
}
