//! Route choice among the sessions of one worker that announce the same broadcast
//! (spec `cluster.md` 6): the upstream core's links to several peer relays that each
//! reach one publisher. The router holds one broadcast per path on a shard, fed by the
//! best route; the others wait as standbys and, when the best one goes, take over
//! without ending the broadcast, so subscribers keep their subscriptions. This table
//! only decides; the worker moves the upstream subscriptions (`Shard::reroute`).
//!
//! Only routes to the same content are alternatives: those whose chain starts with the
//! active route's publisher (a non-zero id). A second publisher of a path is not
//! kept, as before route choice existed (spec 6's "different publishers" rule, where
//! the newest takes over, is not built).

use std::cmp::Reverse;
use std::collections::HashMap;

use quic_io::SessionId;
use router::BroadcastId;

/// Routes kept per path, the active one included: one per peer relay reaching the
/// publisher; a mesh wider than this around one broadcast is beyond the deployments
/// this relay targets, and a route past it is not kept (its announcement is ignored).
pub const MAX_ROUTES_PER_PATH: usize = 16;

/// FNV-1a 64 basis of moq-relay's tie-break (spec 6), so that our choice among equal
/// routes is the one a moq-relay node makes.
const TIE_BREAK_BASIS: u64 = 0x0000_420C_0DEC_B00B;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// One session's route to a broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub session: SessionId,
    /// The chain as received, the publisher first.
    pub hops: Vec<u64>,
    /// The link's `?cost=` (0 for sessions that are not links).
    pub cost: u64,
}

struct Ranked {
    route: Route,
    /// Order of attachment: among otherwise equal routes the newest wins (spec 6).
    arrival: u64,
}

struct PathRoutes {
    broadcast: BroadcastId,
    /// Best first: `[0]` feeds the router's broadcast.
    routes: Vec<Ranked>,
}

/// What a new or repeated announcement changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    /// The path has no route here yet: the caller announces it to the router and
    /// `insert`s the route.
    New,
    /// Kept as a standby of `broadcast`, or an update of one: nothing to tell the router.
    Standby(BroadcastId),
    /// The active route's chain changed, or another session's route is now the best:
    /// the broadcast comes from `route` from now on.
    Rerouted {
        broadcast: BroadcastId,
        route: Route,
    },
    /// A different publisher, or no room: not kept.
    Refused,
}

/// What a withdrawn route (an `ended`, or its session gone) leaves.
#[derive(Debug, PartialEq, Eq)]
pub enum Withdrawn {
    /// The session had no route to the path.
    Unknown,
    /// It was a standby: nothing changes.
    Standby,
    /// It was the active route; `route` takes over.
    Failover {
        broadcast: BroadcastId,
        route: Route,
    },
    /// It was the last route: the broadcast ends (or lingers).
    Last(BroadcastId),
}

#[derive(Default)]
pub struct Routes {
    paths: HashMap<String, PathRoutes>,
    arrivals: u64,
}

impl Routes {
    /// The session that feeds `path`'s broadcast here.
    #[cfg(test)]
    pub fn active(&self, path: &str) -> Option<SessionId> {
        Some(self.paths.get(path)?.routes.first()?.route.session)
    }

    /// Standby routes, all paths together.
    #[cfg(test)]
    pub fn standby_count(&self) -> usize {
        self.paths.values().map(|p| p.routes.len() - 1).sum()
    }

    /// An announcement of `path` by `route.session`: new, a standby, or a better route.
    pub fn offer(&mut self, path: &str, route: Route) -> Offered {
        let Some(entry) = self.paths.get_mut(path) else {
            return Offered::New;
        };
        let active = entry.routes[0].route.clone();
        let same_content = |hops: &[u64]| matches!((hops.first(), active.hops.first()), (Some(&a), Some(&b)) if a != 0 && a == b);
        let known = entry
            .routes
            .iter()
            .position(|r| r.route.session == route.session);
        if route.session != active.session && !same_content(&route.hops) {
            return Offered::Refused;
        }
        self.arrivals += 1;
        let ranked = Ranked {
            route,
            arrival: self.arrivals,
        };
        match known {
            Some(at) => entry.routes[at] = ranked,
            None if entry.routes.len() >= MAX_ROUTES_PER_PATH => return Offered::Refused,
            None => entry.routes.push(ranked),
        }
        entry.routes.sort_by_key(|r| preference(path, r));
        let best = &entry.routes[0].route;
        if *best == active {
            Offered::Standby(entry.broadcast)
        } else {
            Offered::Rerouted {
                broadcast: entry.broadcast,
                route: best.clone(),
            }
        }
    }

    /// The first route to `path`, now announced to the router as `broadcast`.
    pub fn insert(&mut self, path: &str, broadcast: BroadcastId, route: Route) {
        self.arrivals += 1;
        let previous = self.paths.insert(
            path.to_owned(),
            PathRoutes {
                broadcast,
                routes: vec![Ranked {
                    route,
                    arrival: self.arrivals,
                }],
            },
        );
        debug_assert!(previous.is_none(), "{path} inserted twice");
    }

    /// `session` no longer offers `path`.
    pub fn withdraw(&mut self, path: &str, session: SessionId) -> Withdrawn {
        let Some(entry) = self.paths.get_mut(path) else {
            return Withdrawn::Unknown;
        };
        let Some(at) = entry.routes.iter().position(|r| r.route.session == session) else {
            return Withdrawn::Unknown;
        };
        entry.routes.remove(at);
        let broadcast = entry.broadcast;
        match (at, entry.routes.first()) {
            (_, None) => {
                self.paths.remove(path);
                Withdrawn::Last(broadcast)
            }
            (0, Some(next)) => Withdrawn::Failover {
                broadcast,
                route: next.route.clone(),
            },
            _ => Withdrawn::Standby,
        }
    }
}

/// Lower is better: cost, then the shortest chain, then moq-relay's hash of the path and
/// chain, then the newest.
fn preference(path: &str, ranked: &Ranked) -> (u64, usize, u64, Reverse<u64>) {
    let route = &ranked.route;
    (
        route.cost,
        route.hops.len(),
        tie_break(path, &route.hops),
        Reverse(ranked.arrival),
    )
}

/// FNV-1a 64 over the path's bytes, then each hop id as 8 little-endian bytes.
fn tie_break(path: &str, hops: &[u64]) -> u64 {
    let bytes = path
        .bytes()
        .chain(hops.iter().flat_map(|hop| hop.to_le_bytes()));
    bytes.fold(TIE_BREAK_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(session: SessionId, hops: &[u64], cost: u64) -> Route {
        Route {
            session,
            hops: hops.to_vec(),
            cost,
        }
    }

    fn routes_with(path: &str, first: Route) -> (Routes, BroadcastId) {
        let mut routes = Routes::default();
        let broadcast = router_broadcast();
        assert_eq!(routes.offer(path, first.clone()), Offered::New);
        routes.insert(path, broadcast, first);
        (routes, broadcast)
    }

    /// A real id from a router shard: the table only carries it.
    fn router_broadcast() -> BroadcastId {
        let bell: std::sync::Arc<dyn router::Doorbell> = std::sync::Arc::new(NoBell);
        let mut shards = router::Router::build(router::Config::default(), vec![bell]).unwrap();
        shards[0].announce("x").unwrap()
    }

    struct NoBell;
    impl router::Doorbell for NoBell {
        fn ring(&self) {}
    }

    #[test]
    fn a_shorter_route_takes_over_and_a_longer_one_waits() {
        let (mut routes, broadcast) = routes_with("live", route(1, &[50, 2, 3], 0));
        assert!(matches!(
            routes.offer("live", route(2, &[50, 2, 3, 4], 0)),
            Offered::Standby(_)
        ));
        assert_eq!(
            routes.offer("live", route(3, &[50, 2], 0)),
            Offered::Rerouted {
                broadcast,
                route: route(3, &[50, 2], 0)
            }
        );
        assert_eq!(routes.active("live"), Some(3));
        assert_eq!(routes.standby_count(), 2);
    }

    #[test]
    fn cost_comes_before_length() {
        let (mut routes, _) = routes_with("live", route(1, &[50, 2, 3], 0));
        assert!(matches!(
            routes.offer("live", route(2, &[50, 2], 10)),
            Offered::Standby(_)
        ));
        assert_eq!(routes.active("live"), Some(1));
    }

    #[test]
    fn losing_the_active_route_fails_over_to_the_next_best() {
        let (mut routes, broadcast) = routes_with("live", route(1, &[50, 2], 0));
        routes.offer("live", route(2, &[50, 2, 3, 4], 0));
        routes.offer("live", route(3, &[50, 2, 3], 0));
        assert_eq!(routes.withdraw("live", 2), Withdrawn::Standby);
        assert_eq!(
            routes.withdraw("live", 1),
            Withdrawn::Failover {
                broadcast,
                route: route(3, &[50, 2, 3], 0)
            }
        );
        assert_eq!(routes.withdraw("live", 3), Withdrawn::Last(broadcast));
        assert_eq!(routes.withdraw("live", 3), Withdrawn::Unknown);
        assert_eq!(routes.offer("live", route(3, &[50], 0)), Offered::New);
    }

    #[test]
    fn another_publisher_or_an_unknown_one_is_not_an_alternative() {
        let (mut routes, _) = routes_with("live", route(1, &[50, 2], 0));
        assert_eq!(
            routes.offer("live", route(2, &[51, 2], 0)),
            Offered::Refused
        );
        assert_eq!(routes.offer("live", route(2, &[0, 0], 0)), Offered::Refused);
        let (mut zero, _) = routes_with("live", route(1, &[0, 0], 0));
        assert_eq!(zero.offer("live", route(2, &[0], 0)), Offered::Refused);
    }

    #[test]
    fn the_active_route_changing_its_chain_is_a_reroute_to_itself() {
        let (mut routes, broadcast) = routes_with("live", route(1, &[50, 2], 0));
        assert_eq!(
            routes.offer("live", route(1, &[50, 4, 2], 0)),
            Offered::Rerouted {
                broadcast,
                route: route(1, &[50, 4, 2], 0)
            }
        );
    }

    #[test]
    fn routes_per_path_are_bounded() {
        let (mut routes, _) = routes_with("live", route(0, &[50], 0));
        for session in 1..MAX_ROUTES_PER_PATH as u64 {
            assert!(matches!(
                routes.offer("live", route(session, &[50, session, 1], 0)),
                Offered::Standby(_)
            ));
        }
        assert_eq!(
            routes.offer("live", route(99, &[50, 9, 9], 0)),
            Offered::Refused
        );
    }

    #[test]
    fn equal_routes_are_ordered_by_moq_relays_hash() {
        // Two chains of one length and cost: the hash decides, the same way whichever
        // arrives first.
        let a = route(1, &[50, 7], 0);
        let b = route(2, &[50, 8], 0);
        let winner = if tie_break("live", &a.hops) < tie_break("live", &b.hops) {
            1
        } else {
            2
        };
        for (first, second) in [(a.clone(), b.clone()), (b, a)] {
            let (mut routes, _) = routes_with("live", first);
            routes.offer("live", second);
            assert_eq!(routes.active("live"), Some(winner));
        }
    }

    #[test]
    fn the_tie_break_is_fnv1a_with_moq_relays_basis() {
        // Empty input is the basis; one byte is one xor-multiply step.
        assert_eq!(tie_break("", &[]), TIE_BREAK_BASIS);
        assert_eq!(
            tie_break("a", &[]),
            (TIE_BREAK_BASIS ^ 0x61).wrapping_mul(FNV_PRIME)
        );
        // A hop is its 8 little-endian bytes, not its decimal or its varint.
        assert_eq!(tie_break("", &[0x61]), {
            let after_a = (TIE_BREAK_BASIS ^ 0x61).wrapping_mul(FNV_PRIME);
            (0..7).fold(after_a, |hash, _| hash.wrapping_mul(FNV_PRIME))
        });
    }
}
