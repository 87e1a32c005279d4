//! Which relays hold a session this relay accepted, by the origin id their SETUP
//! declared: how the upstream core tells that a peer it dials also dials it (spec
//! `cluster.md` 3.4's one link per pair, for peers that both list each other in
//! `connect`). Workers write it when a session's SETUP arrives and when the session
//! closes, never per packet; the upstream core reads it once a second.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Live accepted sessions per declared origin id (0, "not declared", is never kept).
/// Bounded by the sessions the workers hold.
#[derive(Debug, Default)]
pub struct PeerOrigins(Mutex<HashMap<u64, u32>>);

impl PeerOrigins {
    pub fn opened(&self, origin: u64) {
        if origin != 0 {
            *self.lock().entry(origin).or_insert(0) += 1;
        }
    }

    pub fn closed(&self, origin: u64) {
        let mut origins = self.lock();
        if let Some(count) = origins.get_mut(&origin) {
            *count -= 1;
            if *count == 0 {
                origins.remove(&origin);
            }
        }
    }

    /// Whether a session from relay `origin` is open here.
    pub fn has(&self, origin: u64) -> bool {
        origin != 0 && self.lock().contains_key(&origin)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u32>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Of two relays that each dial the other, the one with the smaller origin id keeps its
/// link; the other yields its own. Both decide alike from the two ids alone.
pub fn yields_to(own: u64, peer: u64) -> bool {
    peer != 0 && own > peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_present_while_any_of_its_sessions_is() {
        let origins = PeerOrigins::default();
        origins.opened(7);
        origins.opened(7);
        origins.opened(0);
        origins.closed(7);
        assert!(origins.has(7));
        origins.closed(7);
        assert!(!origins.has(7));
        assert!(!origins.has(0));
        origins.closed(9);
        assert!(!origins.has(9));
    }

    #[test]
    fn the_larger_id_yields_and_never_to_an_undeclared_peer() {
        assert!(yields_to(9, 3));
        assert!(!yields_to(3, 9));
        assert!(!yields_to(9, 0));
    }
}
