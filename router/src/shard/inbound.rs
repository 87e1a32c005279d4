//! The receiving side of cross-shard messaging: what one shard does with each message
//! taken from a peer's ring. It must never trust a slot or broadcast key a message names
//! (the track or broadcast may have ended since it was sent: such a message is stale and
//! ignored), and never answer a message with anything but a ring push.

use super::{Ev, Msg, Remote, Route, Shard, replay_newest};
use crate::slab::Key;

impl Shard {
    /// One message from shard `from`'s ring.
    pub(super) fn handle(&mut self, from: usize, m: Msg) {
        // `from` is the index of the inbound ring, never our own: every `peers[from]`
        // below and every route or remote recorded with it relies on that.
        debug_assert!(
            from < self.peers.len() && from != self.id,
            "message from shard {from} on shard {} of {}",
            self.id,
            self.peers.len()
        );
        match m {
            Msg::Frame { slot, frame } => {
                let Some(fed) = self.fed_kind(slot, from) else {
                    return self.stale_message();
                };
                if fed && self.below_floor(slot, frame.group) {
                    return;
                }
                if fed {
                    self.fan_remote(slot, frame.group, true, |s| Msg::Frame {
                        slot: s,
                        frame: frame.clone(),
                    });
                }
                self.fan_local(slot, Ev::Frame(frame));
            }
            Msg::GroupStart { slot, group } => {
                let Some(fed) = self.fed_kind(slot, from) else {
                    return self.stale_message();
                };
                if fed && self.below_floor(slot, group) {
                    return;
                }
                self.fan_local(slot, Ev::Start(group));
                if fed {
                    self.fan_remote(slot, group, false, |s| Msg::GroupStart { slot: s, group });
                }
            }
            Msg::GroupEnd { slot, group } => {
                let Some(fed) = self.fed_kind(slot, from) else {
                    return self.stale_message();
                };
                if fed && self.below_floor(slot, group) {
                    return;
                }
                self.fan_local(slot, Ev::End(group));
                if fed {
                    self.fan_remote(slot, group, false, |s| Msg::GroupEnd { slot: s, group });
                }
            }
            Msg::Dropped { slot, below } => {
                let Some(fed) = self.fed_kind(slot, from) else {
                    return self.stale_message();
                };
                self.fan_local(slot, Ev::AbortBelow(below));
                if fed {
                    self.drop_for_remotes(slot, below);
                }
            }
            Msg::Restart { slot } => match self.fed_kind(slot, from) {
                Some(true) => self.restart_track(slot),
                Some(false) => {
                    if let Some(t) = self.tracks.get_mut(slot) {
                        t.next_seq = 0;
                    }
                    self.fan_local(slot, Ev::Restart);
                }
                None => self.stale_message(),
            },
            Msg::Fetch {
                bc,
                name,
                group,
                ticket,
            } => self.on_fetch(from, bc, &name, group, ticket),
            Msg::Fetched { ticket, frames } => self.on_fetched(ticket, frames),
            Msg::Subscribed { slot, info } => {
                if self.fed_kind(slot, from).is_none() {
                    return self.stale_message();
                }
                if let Some(t) = self.tracks.get_mut(slot)
                    && t.info.is_none()
                {
                    t.info = Some(info);
                    self.track_became_ready(slot, info);
                }
            }
            Msg::NotFound { slot } | Msg::TrackEnded { slot, .. } => {
                if self.fed_kind(slot, from).is_none() {
                    self.stale_message();
                } else {
                    if let Msg::TrackEnded { end, .. } = m
                        && let Some(t) = self.tracks.get_mut(slot)
                    {
                        t.next_seq = t.next_seq.max(end);
                    }
                    self.end_track_inner(slot);
                }
            }
            Msg::Subscribe { bc, name, slot } => self.on_remote_subscribe(from, bc, &name, slot),
            Msg::Unsubscribe { bc, name, slot } => {
                let tk = self
                    .broadcasts
                    .get(bc)
                    .and_then(|b| b.tracks.get(&name).copied());
                if let Some(tk) = tk
                    && let Some(t) = self.tracks.get_mut(tk)
                {
                    t.remotes.retain(|r| !(r.shard == from && r.slot == slot));
                    self.demand_changed(tk);
                } else {
                    self.stale_message();
                }
            }
            Msg::Announce {
                path,
                bc,
                order,
                hops,
            } => {
                // The publisher of a broadcast lingering here came back elsewhere:
                // splice, so our subscribers continue from the new source.
                if let Some(&mine) = self.by_path.get(&path)
                    && self
                        .broadcasts
                        .get(mine)
                        .is_some_and(|b| b.linger_until.is_some())
                {
                    self.splice(mine, from, bc);
                }
                self.announces.add(
                    path,
                    Route {
                        owner: from,
                        bc,
                        order,
                        hops,
                    },
                );
            }
            Msg::Unannounce { path, bc } => {
                if let Some(&mine) = self.by_path.get(&path)
                    && self
                        .broadcasts
                        .get(mine)
                        .is_some_and(|b| b.fed_by == Some((from, bc)))
                {
                    self.end_broadcast(mine);
                }
                self.announces.remove(&path, from, bc);
            }
        }
    }

    /// A message for a track or broadcast that ended here since it was sent (normal
    /// around an end or an unsubscribe, racing the ring): ignored, and counted so that a
    /// steady stream of them, which would mean drifting keys, shows in metrics.
    #[cold]
    fn stale_message(&mut self) {
        self.counters.stale_messages += 1;
    }

    fn on_remote_subscribe(&mut self, from: usize, bc: Key, name: &str, slot: Key) {
        let tk = match self.owned_track_for_demand(bc, name) {
            Ok(tk) => tk,
            Err(_) => {
                if let Some(p) = self.peers[from].as_mut() {
                    p.send_control(Msg::NotFound { slot });
                }
                return;
            }
        };
        let Self {
            tracks,
            logs,
            peers,
            stats,
            ..
        } = self;
        let (Some(t), Some(p)) = (tracks.get_mut(tk), peers[from].as_mut()) else {
            return;
        };
        let mut r = Remote {
            shard: from,
            slot,
            floor: 0,
            notice: None,
        };
        if let Some(info) = t.info {
            p.send_control(Msg::Subscribed { slot, info });
            if let Some(log) = logs.get(t.log) {
                replay_newest(log, &mut r, p, stats);
            }
        }
        t.remotes.push(r);
        self.demand_changed(tk);
    }
}
