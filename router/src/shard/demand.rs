//! Publisher-side demand on one shard: which owned tracks someone reads (a local
//! subscriber or another shard), turned into `TrackWanted` / `TrackUnused` events for the
//! publishing session, and the placeholder tracks that stand for a track asked for before
//! its publisher has it. It must never tell the publisher twice in a row the same thing
//! about a track, nor queue events without bound (each track is queued at most once).

use std::sync::Arc;

use super::{Msg, Origin, Shard};
use crate::slab::Key;
use crate::{BroadcastId, PublisherEvent, RouterError, TrackId};

impl Shard {
    /// Next demand change for publishing sessions on this shard.
    pub fn next_publisher_event(&mut self) -> Option<PublisherEvent> {
        if let Some(e) = self.pub_direct.pop_front() {
            return Some(e);
        }
        // Each key is in the queue at most once (in_pub_ready), so this is bounded.
        while let Some(tk) = self.pub_ready.pop_front() {
            let Some(t) = self.tracks.get_mut(tk) else {
                continue;
            };
            t.in_pub_ready = false;
            let Origin::Local { bc } = t.origin else {
                continue;
            };
            if self
                .broadcasts
                .get(bc)
                .is_none_or(|b| b.linger_until.is_some() || b.fed_by.is_some())
            {
                continue;
            }
            let demand = t.has_demand();
            if demand == t.told_wanted {
                continue;
            }
            t.told_wanted = demand;
            return Some(if demand {
                PublisherEvent::TrackWanted {
                    broadcast: BroadcastId(bc),
                    track: TrackId(tk),
                    name: t.name.clone(),
                }
            } else {
                PublisherEvent::TrackUnused {
                    broadcast: BroadcastId(bc),
                    track: TrackId(tk),
                }
            });
        }
        None
    }

    pub(super) fn owned_track_for_demand(
        &mut self,
        bk: Key,
        name: &str,
    ) -> Result<Key, RouterError> {
        let Some(b) = self.broadcasts.get(bk) else {
            return Err(RouterError::UnknownBroadcast);
        };
        if let Some(&tk) = b.tracks.get(name) {
            return Ok(tk);
        }
        let name: Arc<str> = name.into();
        let tk = self.insert_track(name.clone(), Origin::Local { bc: bk }, None)?;
        let Some(b) = self.broadcasts.get_mut(bk) else {
            return Ok(tk);
        };
        b.tracks.insert(name.clone(), tk);
        // A spliced broadcast has no publisher here: ask the shard that feeds it.
        if let Some((feeder, fbc)) = b.fed_by
            && let Some(p) = self.peers[feeder].as_mut()
        {
            p.send_control(Msg::Subscribe {
                bc: fbc,
                name,
                slot: tk,
            });
        }
        Ok(tk)
    }

    /// Re-evaluates who must hear about a track's demand: the publisher (owned) or the
    /// owner shard (replica with no local subscriber left).
    pub(super) fn demand_changed(&mut self, tk: Key) {
        let Some(t) = self.tracks.get_mut(tk) else {
            return;
        };
        match t.origin.clone() {
            Origin::Local { bc } => {
                if let Some((feeder, fbc)) = self.broadcasts.get(bc).and_then(|b| b.fed_by) {
                    if !t.has_demand() {
                        let name = t.name.clone();
                        self.remove_track(tk);
                        if let Some(p) = self.peers[feeder].as_mut() {
                            p.send_control(Msg::Unsubscribe {
                                bc: fbc,
                                name,
                                slot: tk,
                            });
                        }
                    }
                    return;
                }
                if !t.has_demand() && t.info.is_none() {
                    // A placeholder nobody wants any more: forget it, and tell the
                    // publisher if it was asked for it.
                    if t.told_wanted
                        && let Origin::Local { bc } = t.origin
                    {
                        if self.pub_direct.len() < self.config.max_tracks {
                            self.pub_direct.push_back(PublisherEvent::TrackUnused {
                                broadcast: BroadcastId(bc),
                                track: TrackId(tk),
                            });
                        } else {
                            // Unreachable by construction: a track is told wanted only
                            // when this queue is empty (`next_publisher_event` drains it
                            // first), and at most `max_tracks` tracks live at once. If it
                            // happens, the publisher keeps an upstream subscription nobody
                            // reads.
                            debug_assert!(false, "publisher event queue past max_tracks");
                            self.counters.publisher_events_dropped += 1;
                        }
                    }
                    self.remove_track(tk);
                    return;
                }
                if !t.in_pub_ready && t.has_demand() != t.told_wanted {
                    t.in_pub_ready = true;
                    self.pub_ready.push_back(tk);
                }
            }
            Origin::Replica { owner, bc } => {
                if t.subs.is_empty() {
                    let name = t.name.clone();
                    self.remove_track(tk);
                    if let Some(p) = self.peers[owner].as_mut() {
                        p.send_control(Msg::Unsubscribe { bc, name, slot: tk });
                    }
                }
            }
        }
    }
}
