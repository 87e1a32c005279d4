//! FETCH on one shard: a group asked for whole, answered from this shard's cache or by
//! the broadcast's owner shard over the ring. It owns the bound on FETCHes in flight and
//! the order answers are handed back in; it must never answer from a group that is not
//! cached whole, nor hand back an answer for a FETCH that was cancelled.

use std::sync::Arc;

use super::{Msg, Shard};
use crate::log::Entry;
use crate::slab::Key;
use crate::{FetchTicket, GroupFrames, RouterError};

/// FETCHes a shard may have outstanding at owner shards: each waits one ring round trip,
/// so more than this means an owner is not draining its ring.
pub(super) const MAX_PENDING_FETCHES: usize = 1024;

impl Shard {
    /// Starts a FETCH (moq-lite) of group `group` of `track` in the broadcast at `path`:
    /// answered from this shard's cache if it holds the group whole, otherwise by the
    /// broadcast's owner shard. The answer comes from `next_fetch_answer`: the group's
    /// frames as `(timestamp, payload)` in order, or `None` when it is not cached whole
    /// (evicted, still being written, too large to cache, or never published).
    pub fn fetch(
        &mut self,
        path: &str,
        track: &str,
        group: u64,
    ) -> Result<FetchTicket, RouterError> {
        let Some(route) = self.announces.visible(path) else {
            return Err(RouterError::Unroutable { path: path.into() });
        };
        let local = if route.owner == self.id {
            self.broadcasts
                .get(route.bc)
                .and_then(|b| b.tracks.get(track).copied())
        } else {
            self.replicas
                .get(&(route.owner, route.bc, Arc::<str>::from(track)))
                .copied()
        };
        let frames = local.and_then(|tk| self.cached_frames(tk, group));
        self.check_outboxes()?;
        let ticket = self
            .fetches
            .insert(())
            .map_err(|_| self.limit("pending fetches", MAX_PENDING_FETCHES))?;
        match (frames, self.peers[route.owner].as_mut()) {
            (None, Some(owner)) => owner.send_control(Msg::Fetch {
                bc: route.bc,
                name: track.into(),
                group,
                ticket,
            }),
            (frames, _) => self.fetch_answers.push_back((FetchTicket(ticket), frames)),
        }
        Ok(FetchTicket(ticket))
    }

    /// A FETCH answer, in the order they came (never one for a cancelled FETCH).
    pub fn next_fetch_answer(&mut self) -> Option<(FetchTicket, Option<GroupFrames>)> {
        // Each pass removes one queued answer: bounded by the queue.
        while let Some((id, frames)) = self.fetch_answers.pop_front() {
            if self.fetches.remove(id.0).is_some() {
                return Some((id, frames));
            }
            // Answered here, then cancelled before it was taken.
            self.counters.fetch_answers_dropped += 1;
        }
        None
    }

    /// The newest group of `track` in the broadcast at `path` that this shard caches from
    /// its first frame (ended or still being written): known on the broadcast's owner
    /// shard, and on another shard while it receives the track. `None` when this shard
    /// holds no group of it. For a one-shot "latest" fetch (the relay's `/fetch`).
    pub fn newest_group(&self, path: &str, track: &str) -> Option<u64> {
        let route = self.announces.visible(path)?;
        let tk = if route.owner == self.id {
            self.broadcasts
                .get(route.bc)
                .and_then(|b| b.tracks.get(track).copied())
        } else {
            self.replicas
                .get(&(route.owner, route.bc, Arc::<str>::from(track)))
                .copied()
        }?;
        let log = self.logs.get(self.tracks.get(tk)?.log)?;
        log.cache.newest().map(|g| g.seq)
    }

    /// Whether a broadcast is announced at `path` (visible to fetches and subscribers).
    pub fn is_announced(&self, path: &str) -> bool {
        self.announces.visible(path).is_some()
    }

    /// The FETCH's requester went away: its answer, if it comes, is dropped.
    pub fn cancel_fetch(&mut self, id: FetchTicket) {
        self.fetches.remove(id.0);
    }

    /// Frames of group `group` of track `tk` if this shard's cache holds it whole.
    fn cached_frames(&self, tk: Key, group: u64) -> Option<GroupFrames> {
        let log = self.logs.get(self.tracks.get(tk)?.log)?;
        let cached = log.cache.complete(group)?;
        let frames = log
            .iter_from(cached.start)
            .take_while(|e| !matches!(e, Entry::End(g) if *g == group))
            .filter_map(|e| match e {
                Entry::Frame(f) if f.group == group => Some((f.timestamp, f.payload.clone())),
                _ => None,
            });
        Some(frames.collect())
    }

    /// The owner side of a FETCH another shard could not answer: our cached group, or
    /// `None`, back to the asking shard.
    pub(super) fn on_fetch(&mut self, from: usize, bc: Key, name: &str, group: u64, ticket: Key) {
        let frames = self
            .broadcasts
            .get(bc)
            .and_then(|b| b.tracks.get(name).copied())
            .and_then(|tk| self.cached_frames(tk, group));
        if let Some(p) = self.peers[from].as_mut() {
            p.send_control(Msg::Fetched { ticket, frames });
        }
    }

    /// The owner's answer to one of our FETCHes; dropped if it was cancelled meanwhile.
    pub(super) fn on_fetched(&mut self, ticket: Key, frames: Option<GroupFrames>) {
        if self.fetches.get(ticket).is_some() {
            self.fetch_answers.push_back((FetchTicket(ticket), frames));
        } else {
            self.counters.fetch_answers_dropped += 1;
        }
    }
}
