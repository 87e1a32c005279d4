//! One shard's replica of the announce table: every broadcast path announced on any
//! shard, with the route(s) to its owner, and the live announce queries that watch a
//! prefix of it. It owns the routes, the queries and their bounded event queues; it must
//! never send a message, touch a track, or let a query's queue grow past
//! `query_max_events` (a query that is not drained is told `Lagged` and resyncs from a
//! snapshot instead).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::slab::{Key, Slab};
use crate::{AnnounceEvent, QueryId, RouterError, path_has_prefix};

/// Where a path is published: the owner shard and its broadcast key there. `order` is a
/// router-wide announce sequence. `hops` is the broadcast's hop chain as its publisher's
/// session reported it, handed on when the relay announces the path to others (spec
/// `cluster.md` 5.2). Of several routes for one path (peer relays on different shards
/// that each reach the publisher, or a publisher that came back on another shard while
/// the old one lingers), the shortest chain is the visible one, and among equals the
/// newest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) owner: usize,
    pub(crate) bc: Key,
    pub(crate) order: u64,
    pub(crate) hops: Arc<[u64]>,
}

struct Query {
    prefix: Arc<str>,
    events: VecDeque<AnnounceEvent>,
    in_ready: bool,
}

pub(crate) struct AnnounceTable {
    /// Shards of the router: every route's owner is below this.
    shards: usize,
    routes: BTreeMap<Arc<str>, Vec<Route>>,
    queries: Slab<Query>,
    /// Queries with events since the session last took them; each at most once
    /// (`in_ready`), so bounded by the query count.
    ready: VecDeque<Key>,
    max_events: usize,
    /// Times a query overflowed its queue and was told `Lagged`.
    lagged: u64,
}

impl AnnounceTable {
    pub(crate) fn new(shards: usize, max_queries: usize, max_events: usize) -> Self {
        Self {
            shards,
            routes: BTreeMap::new(),
            queries: Slab::new(max_queries),
            ready: VecDeque::new(),
            max_events,
            lagged: 0,
        }
    }

    /// Paths with at least one route.
    pub(crate) fn path_count(&self) -> usize {
        self.routes.len()
    }

    /// Open queries.
    pub(crate) fn query_count(&self) -> usize {
        self.queries.len()
    }

    /// Times a query was told `Lagged` since the table was built.
    pub(crate) fn lagged(&self) -> u64 {
        self.lagged
    }

    /// The route subscribers of `path` use.
    pub(crate) fn visible(&self, path: &str) -> Option<Route> {
        best(self.routes.get(path)?).cloned()
    }

    /// The best route to `path` owned by a shard other than `except` whose chain
    /// `matches`.
    pub(crate) fn best_other(
        &self,
        path: &str,
        except: usize,
        matches: impl Fn(&[u64]) -> bool,
    ) -> Option<Route> {
        let others: Vec<Route> = self
            .routes
            .get(path)?
            .iter()
            .filter(|r| r.owner != except && matches(&r.hops))
            .cloned()
            .collect();
        best(&others).cloned()
    }

    /// Adds (or replaces, for the same owner and broadcast) a route to `path`; queries
    /// hear `Active` if it became the visible route.
    pub(crate) fn add(&mut self, path: Arc<str>, route: Route) {
        // An owner past the shard count would be stored here and make every later
        // subscribe to this path index a peer that does not exist.
        assert!(
            route.owner < self.shards,
            "route owner {} of {path:?} is not below the shard count {}",
            route.owner,
            self.shards
        );
        let routes = self.routes.entry(path.clone()).or_default();
        let before = best(routes).cloned();
        routes.retain(|r| !(r.owner == route.owner && r.bc == route.bc));
        routes.push(route);
        if best(routes) != before.as_ref() {
            self.notify(AnnounceEvent::Active(path));
        }
    }

    /// Removes the route of `owner`'s broadcast `bc` from `path`; queries hear `Ended` if
    /// no route is left, `Active` if an older route became the visible one.
    pub(crate) fn remove(&mut self, path: &Arc<str>, owner: usize, bc: Key) {
        let Some(routes) = self.routes.get_mut(path) else {
            return;
        };
        let before = best(routes).cloned();
        routes.retain(|r| !(r.owner == owner && r.bc == bc));
        if routes.is_empty() {
            self.routes.remove(path);
            self.notify(AnnounceEvent::Ended(path.clone()));
        } else if best(routes) != before.as_ref() {
            self.notify(AnnounceEvent::Active(path.clone()));
        }
    }

    /// Paths announced under `prefix` right now.
    pub(crate) fn announced(&self, prefix: &str) -> Vec<Arc<str>> {
        self.routes
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(p, _)| p.starts_with(prefix))
            .filter(|(p, _)| path_has_prefix(p, prefix))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Opens a query on `prefix`, or `None` at the query bound.
    pub(crate) fn open(&mut self, prefix: &str) -> Option<QueryId> {
        self.queries
            .insert(Query {
                prefix: prefix.into(),
                events: VecDeque::new(),
                in_ready: false,
            })
            .ok()
            .map(QueryId)
    }

    pub(crate) fn next_event(
        &mut self,
        query: QueryId,
    ) -> Result<Option<AnnounceEvent>, RouterError> {
        let q = self
            .queries
            .get_mut(query.0)
            .ok_or(RouterError::UnknownQuery)?;
        Ok(q.events.pop_front())
    }

    pub(crate) fn next_ready(&mut self) -> Option<QueryId> {
        while let Some(qk) = self.ready.pop_front() {
            if let Some(q) = self.queries.get_mut(qk) {
                q.in_ready = false;
                return Some(QueryId(qk));
            }
        }
        None
    }

    pub(crate) fn close(&mut self, query: QueryId) -> Result<(), RouterError> {
        self.queries
            .remove(query.0)
            .map(|_| ())
            .ok_or(RouterError::UnknownQuery)
    }

    fn notify(&mut self, ev: AnnounceEvent) {
        let path = match &ev {
            AnnounceEvent::Active(p) | AnnounceEvent::Ended(p) => p.clone(),
            AnnounceEvent::Lagged => return,
        };
        let max = self.max_events;
        for (qk, q) in self.queries.iter_mut() {
            if !path_has_prefix(&path, &q.prefix) {
                continue;
            }
            // Once lagged, the session re-reads the whole table when it takes `Lagged`,
            // which covers every change until then: queue nothing more.
            let lagged = q.events.front() == Some(&AnnounceEvent::Lagged);
            if !lagged && q.events.len() + 1 >= max {
                q.events.clear();
                q.events.push_back(AnnounceEvent::Lagged);
                self.lagged += 1;
            } else if !lagged {
                q.events.push_back(ev.clone());
            }
            if !q.in_ready {
                q.in_ready = true;
                self.ready.push_back(qk);
            }
        }
    }
}

/// The visible route of a path: the shortest chain, then the newest announce.
fn best(routes: &[Route]) -> Option<&Route> {
    routes
        .iter()
        .min_by_key(|r| (r.hops.len(), std::cmp::Reverse(r.order)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        // Any distinct keys do: the table only compares them.
        let mut slab = Slab::new(64);
        let mut k = None;
        for _ in 0..=i {
            k = Some(slab.insert(()).unwrap());
        }
        k.unwrap()
    }

    fn route(owner: usize, bc: Key, order: u64) -> Route {
        Route {
            owner,
            bc,
            order,
            hops: Arc::new([]),
        }
    }

    fn table() -> AnnounceTable {
        AnnounceTable::new(4, 8, 16)
    }

    fn drain(t: &mut AnnounceTable, q: QueryId) -> Vec<AnnounceEvent> {
        std::iter::from_fn(|| t.next_event(q).unwrap()).collect()
    }

    fn active(p: &str) -> AnnounceEvent {
        AnnounceEvent::Active(p.into())
    }

    fn ended(p: &str) -> AnnounceEvent {
        AnnounceEvent::Ended(p.into())
    }

    #[test]
    fn prefix_query_matches_whole_segments_only() {
        let mut t = table();
        for (i, p) in ["room", "room/alice", "roomy", "room/bob/cam", "other"]
            .into_iter()
            .enumerate()
        {
            t.add(p.into(), route(0, key(i as u32), i as u64));
        }
        let names = |v: Vec<Arc<str>>| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(t.announced("room")),
            ["room", "room/alice", "room/bob/cam"]
        );
        assert_eq!(names(t.announced("room/bob")), ["room/bob/cam"]);
        assert_eq!(names(t.announced("roo")), Vec::<String>::new());
        assert_eq!(t.announced("").len(), 5);

        let q = t.open("room").unwrap();
        t.add("roomy/x".into(), route(1, key(9), 9));
        t.add("room/carol".into(), route(1, key(10), 10));
        assert_eq!(drain(&mut t, q), [active("room/carol")]);
    }

    #[test]
    fn query_hears_active_then_ended_and_is_ready_once() {
        let mut t = table();
        let q = t.open("a").unwrap();
        let path: Arc<str> = "a/b".into();
        t.add(path.clone(), route(2, key(0), 0));
        t.remove(&path, 2, key(0));
        assert_eq!(t.next_ready(), Some(q));
        assert_eq!(t.next_ready(), None, "one ready entry per burst");
        assert_eq!(drain(&mut t, q), [active("a/b"), ended("a/b")]);
        assert_eq!(t.path_count(), 0);
        assert_eq!(t.visible("a/b"), None);
    }

    #[test]
    fn the_shortest_chain_is_visible_whatever_came_last() {
        let mut t = table();
        let q = t.open("").unwrap();
        let path: Arc<str> = "live".into();
        let chained = |owner, order, hops: &[u64]| Route {
            hops: hops.into(),
            ..route(owner, key(owner as u32), order)
        };
        t.add(path.clone(), chained(0, 5, &[50, 1]));
        t.add(path.clone(), chained(1, 7, &[50, 1, 3]));
        assert_eq!(t.visible("live"), Some(chained(0, 5, &[50, 1])));
        assert_eq!(
            drain(&mut t, q),
            [active("live")],
            "the longer one changed nothing"
        );
        t.remove(&path, 0, key(0));
        assert_eq!(t.visible("live"), Some(chained(1, 7, &[50, 1, 3])));
        assert_eq!(drain(&mut t, q), [active("live")]);
    }

    #[test]
    fn newest_route_is_visible_and_older_one_takes_over_on_removal() {
        let mut t = table();
        let q = t.open("").unwrap();
        let path: Arc<str> = "live".into();
        t.add(path.clone(), route(0, key(0), 5));
        t.add(path.clone(), route(1, key(1), 7));
        assert_eq!(t.visible("live"), Some(route(1, key(1), 7)));
        // Removing a route that is not the visible one changes nothing a query sees.
        t.add(path.clone(), route(2, key(2), 6));
        t.remove(&path, 2, key(2));
        t.remove(&path, 1, key(1));
        assert_eq!(t.visible("live"), Some(route(0, key(0), 5)));
        assert_eq!(
            drain(&mut t, q),
            [active("live"), active("live"), active("live")]
        );
    }

    #[test]
    fn undrained_query_lags_then_resyncs_from_a_snapshot() {
        let mut t = AnnounceTable::new(4, 8, 4);
        let q = t.open("").unwrap();
        for i in 0..10 {
            t.add(format!("p{i}").into(), route(0, key(i), u64::from(i)));
        }
        assert_eq!(t.lagged(), 1, "lagged once, not once per lost event");
        assert_eq!(drain(&mut t, q), [AnnounceEvent::Lagged]);
        assert_eq!(
            t.announced("").len(),
            10,
            "the snapshot a lagged query re-reads"
        );
        t.add("p10".into(), route(0, key(10), 10));
        assert_eq!(drain(&mut t, q), [active("p10")]);
        assert_eq!(t.lagged(), 1);
    }

    #[test]
    fn queries_are_bounded_and_closed_ids_are_unknown() {
        let mut t = AnnounceTable::new(1, 2, 16);
        let a = t.open("x").unwrap();
        let _b = t.open("y").unwrap();
        assert_eq!(t.open("z"), None);
        assert_eq!(t.query_count(), 2);
        t.close(a).unwrap();
        assert_eq!(t.close(a), Err(RouterError::UnknownQuery));
        assert_eq!(t.next_event(a), Err(RouterError::UnknownQuery));
        assert!(t.open("z").is_some());
    }

    #[test]
    #[should_panic(expected = "not below the shard count")]
    fn route_owner_past_the_shard_count_is_refused() {
        let mut t = AnnounceTable::new(2, 1, 1);
        t.add("p".into(), route(2, key(0), 0));
    }
}
