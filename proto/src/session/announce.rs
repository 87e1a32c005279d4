//! Announcements, both sides. Subscriber side: our announce interests (Announce streams we
//! open) and the ANNOUNCE_OK / ANNOUNCE messages that come back on them. Publisher side:
//! the table of broadcasts we publish (`published`) and the Announce streams the peer
//! opened, answered from that table and kept up to date as it changes.
//!
//! It owns the loop rules: a broadcast whose hop chain holds our own ID is dropped on
//! receipt, and one whose chain holds the peer's Exclude Hop or SETUP Origin is never
//! offered back to it (split horizon). It must never send a broadcast on a stream twice
//! as active without ending it first where the version forbids that (03/04), and on 06
//! never a second START for a live ID: a route change there is a RESTART of that ID.
//!
//! 06 (spec 12.5) numbers the STARTs of each Announce stream from 0 on both ends; the
//! receiver keeps `id → suffix`, the sender `path → id`, and END / RESTART name the ID.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use super::{
    Answering, CONTROL_PRIORITY, Heard, InterestId, Kind, MAX_BROADCASTS, Out, Perspective,
    Session, SessionError, SessionEvent,
};
use crate::coding::EncodeError;
use crate::message::{
    Announce, Announce06, AnnounceOk, AnnounceRequest, AnnounceStatus, BidiType, Message, RouteCost,
};
use crate::reader::MessageReader;
use crate::{ErrorCode, Version, path};

impl Session {
    // -----------------------------------------------------------------------------------
    // Subscriber side: our interests in the peer's broadcasts

    /// Opens an Announce stream for `prefix` (normalized here).
    pub fn announce_interest(&mut self, prefix: &str) -> Result<InterestId, SessionError> {
        let id = InterestId(self.new_request_id()?);
        let prefix = path::normalize(prefix);
        let req = AnnounceRequest {
            prefix: prefix.clone(),
            exclude_hop: self.cfg.hop_id,
        };
        let data = self.encode_typed(BidiType::Announce.id(), &req)?;
        let kind = Kind::InterestOut {
            id,
            reader: MessageReader::new(),
            hop: None,
            heard: Box::new(Heard {
                prefix,
                ..Heard::default()
            }),
        };
        let slot = self.new_local(kind, true, CONTROL_PRIORITY)?;
        let prev = self.interests.insert(id, slot);
        // Request IDs come from a counter, so each is new.
        debug_assert!(prev.is_none(), "request {id:?} registered twice");
        self.send(slot, Out::Data(data));
        Ok(id)
    }

    /// Stops an interest (FIN); its broadcasts are reported unannounced.
    pub fn stop_interest(&mut self, id: InterestId) -> Result<(), SessionError> {
        let slot = *self.interests.get(&id).ok_or(SessionError::Unknown {
            what: "interest",
            id: id.0,
        })?;
        self.stop(slot, ErrorCode::Cancel);
        self.fail_recv(slot, None);
        Ok(())
    }

    pub(super) fn on_announce(
        &mut self,
        slot: u64,
        a: Announce,
    ) -> Result<(), (ErrorCode, String)> {
        let v = self.cfg.version;
        let own = self.cfg.hop_id;
        let limit = self.max_peer_broadcasts;
        let Some(s) = self.slots.get_mut(&slot) else {
            return Ok(());
        };
        let Kind::InterestOut { id, hop, heard, .. } = &mut s.kind else {
            return Ok(());
        };
        let Heard { prefix, active, .. } = &mut **heard;
        let id = *id;
        let full = path::join(prefix, &a.suffix);
        match a.status {
            AnnounceStatus::Ended => {
                // Ended for a path that is not active is ignored (it may have been a loop).
                if active.remove(&a.suffix) {
                    self.emit(SessionEvent::Unannounced {
                        interest: id,
                        path: full,
                    });
                }
            }
            AnnounceStatus::Active | AnnounceStatus::Restart => {
                let mut chain = a.hops;
                if let Some(h) = *hop {
                    chain.push(h);
                }
                if own != 0 && chain.contains(&own) {
                    // Our own broadcast reflected back: drop (loop rule).
                    self.loops_dropped += 1;
                    return Ok(());
                }
                let dup = active.contains(&a.suffix);
                if dup && !v.is_05_or_later() {
                    self.close(
                        ErrorCode::Duplicate,
                        format!("duplicate announce of {full}"),
                    );
                    return Ok(());
                }
                if !dup && active.len() >= limit {
                    // Unreported, as a loop is: its Ended is then ignored too.
                    self.announces_over_limit += 1;
                    return Ok(());
                }
                active.insert(a.suffix);
                self.emit(SessionEvent::Announced {
                    interest: id,
                    path: full,
                    hops: chain,
                });
            }
        }
        Ok(())
    }

    /// A 06 typed announcement (spec 12.5). An END or RESTART of an ID that is not live, or
    /// a second START of a live suffix, closes the session (moq-net does the same, code 3).
    pub(super) fn on_announce06(
        &mut self,
        slot: u64,
        a: Announce06,
    ) -> Result<(), (ErrorCode, String)> {
        let own = self.cfg.hop_id;
        let limit = self.max_peer_broadcasts;
        let Some(s) = self.slots.get_mut(&slot) else {
            return Ok(());
        };
        let Kind::InterestOut {
            id: interest,
            hop,
            heard,
            ..
        } = &mut s.kind
        else {
            return Ok(());
        };
        let Heard {
            prefix,
            active,
            ids,
            live,
            next_id,
        } = &mut **heard;
        let interest = *interest;
        let with_hop = |mut chain: Vec<u64>| {
            if let Some(h) = *hop {
                chain.push(h);
            }
            chain
        };
        // Received costs are parsed but not ranked: one relay node has a single route per
        // broadcast per session (spec 12.6 allows ignoring them).
        let (suffix, chain) = match a {
            Announce06::Unknown { .. } => return Ok(()),
            Announce06::Start { suffix, hops, .. } => {
                let aid = *next_id;
                *next_id += 1;
                if live.contains(&suffix) {
                    let full = path::join(prefix, &suffix);
                    self.close(
                        ErrorCode::ProtocolViolation,
                        format!("second START of live {full}"),
                    );
                    return Ok(());
                }
                if ids.len() >= MAX_BROADCASTS {
                    return Err((
                        ErrorCode::BoundsExceeded,
                        "too many announced broadcasts".into(),
                    ));
                }
                live.insert(suffix.clone());
                let prev = ids.insert(aid, suffix.clone());
                // IDs come from the per-stream counter, so each is new.
                debug_assert!(prev.is_none(), "announce id {aid} assigned twice");
                (suffix, with_hop(hops))
            }
            Announce06::End { id: aid } => {
                let Some(suffix) = ids.remove(&aid) else {
                    self.close(
                        ErrorCode::ProtocolViolation,
                        format!("END of unknown announce id {aid}"),
                    );
                    return Ok(());
                };
                let was_live = live.remove(&suffix);
                debug_assert!(was_live, "announce id {aid} live without its suffix");
                if active.remove(&suffix) {
                    let path = path::join(prefix, &suffix);
                    self.emit(SessionEvent::Unannounced { interest, path });
                }
                return Ok(());
            }
            Announce06::Restart { id: aid, hops, .. } => {
                let Some(suffix) = ids.get(&aid) else {
                    self.close(
                        ErrorCode::ProtocolViolation,
                        format!("RESTART of unknown announce id {aid}"),
                    );
                    return Ok(());
                };
                (suffix.clone(), with_hop(hops))
            }
        };
        let path = path::join(prefix, &suffix);
        if own != 0 && chain.contains(&own) {
            // Our own broadcast reflected back (loop rule): the ID stays live, unreported; a
            // restart into a loop withdraws what was reported.
            self.loops_dropped += 1;
            if active.remove(&suffix) {
                self.emit(SessionEvent::Unannounced { interest, path });
            }
            return Ok(());
        }
        if !active.contains(&suffix) && active.len() >= limit {
            // Past the peer's limit: the ID stays live, unreported (as a loop's does).
            self.announces_over_limit += 1;
            return Ok(());
        }
        active.insert(suffix);
        self.emit(SessionEvent::Announced {
            interest,
            path,
            hops: chain,
        });
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Publisher side: our broadcasts, offered on the peer's Announce streams

    /// Makes `path` (normalized here) available with stored hop chain `hops` (as received:
    /// on 05/06 it already ends with the upstream's ID; empty for a local publisher). Sent to
    /// every matching announce stream; a repeat replaces the chain (a RESTART on 06).
    pub fn announce(&mut self, broadcast: &str, hops: &[u64]) -> Result<(), SessionError> {
        if self.closed {
            return Err(SessionError::Closed);
        }
        let p = path::normalize(broadcast);
        if !self.published.contains_key(&p) && self.published.len() >= MAX_BROADCASTS {
            return Err(SessionError::Limit {
                what: "broadcasts",
                max: MAX_BROADCASTS,
            });
        }
        let v = self.cfg.version;
        let wire = self.wire_hops(hops);
        // Check the bounds once before touching any stream.
        self.active_msg(&p, wire.clone(), None)?;
        self.published.insert(p.clone(), hops.to_vec());
        let targets = self.interest_in_slots(&p, hops);
        for (slot, suffix, already, excluded) in targets {
            if excluded {
                // The new route runs through this peer: withdraw what it was told before.
                if already {
                    let data = self.ended_msg(slot, &p, suffix)?;
                    self.send(slot, Out::Data(data));
                }
                continue;
            }
            let mut buf = BytesMut::new();
            if already && !v.is_05_or_later() {
                // 03/04 forbid a duplicate active: end it first, then re-announce.
                Announce {
                    status: AnnounceStatus::Ended,
                    suffix: suffix.clone(),
                    hops: vec![],
                }
                .encode(v, &mut buf)?;
            }
            // 06: a live ID is restarted in place; a new one takes the stream's next ID.
            let restart = if already {
                self.sent_id(slot, &p)
            } else {
                None
            };
            self.mark_sent(slot, &p);
            buf.extend_from_slice(&self.active_msg(&suffix, wire.clone(), restart)?);
            self.send(slot, Out::Data(buf.freeze()));
        }
        Ok(())
    }

    /// Withdraws `path` from every announce stream it was sent on.
    pub fn unannounce(&mut self, broadcast: &str) -> Result<(), SessionError> {
        let p = path::normalize(broadcast);
        if self.published.remove(&p).is_none() {
            return Err(SessionError::Unknown {
                what: "broadcast",
                id: 0,
            });
        }
        for (slot, suffix, already, _) in self.interest_in_slots(&p, &[]) {
            if !already {
                continue;
            }
            let data = self.ended_msg(slot, &p, suffix)?;
            self.send(slot, Out::Data(data));
        }
        Ok(())
    }

    /// The message that makes `suffix` active: 03-05 a status-byte ANNOUNCE (a repeat of a
    /// live one on 05 replaces it), 06 a RESTART of `restart` or else a START, which takes
    /// the stream's next ID (the caller counts it: [`Session::mark_sent`]).
    fn active_msg(
        &self,
        suffix: &str,
        hops: Vec<u64>,
        restart: Option<u64>,
    ) -> Result<Bytes, EncodeError> {
        let v = self.cfg.version;
        let mut buf = BytesMut::new();
        if !v.is_06_or_later() {
            Announce {
                status: AnnounceStatus::Active,
                suffix: suffix.to_owned(),
                hops,
            }
            .encode(v, &mut buf)?;
            return Ok(buf.freeze());
        }
        let cost = route_cost(&hops);
        let msg = match restart {
            Some(id) => Announce06::Restart { id, hops, cost },
            None => Announce06::Start {
                suffix: suffix.to_owned(),
                hops,
                cost,
            },
        };
        msg.encode(v, &mut buf)?;
        Ok(buf.freeze())
    }

    /// The message that withdraws full path `p` (sent as `suffix`) from `slot`, which must
    /// have been sent it: 03-05 an `Ended` ANNOUNCE, 06 an END of its ID.
    fn ended_msg(&mut self, slot: u64, p: &str, suffix: String) -> Result<Bytes, EncodeError> {
        let v = self.cfg.version;
        let id = self.unmark_sent(slot, p);
        let mut buf = BytesMut::new();
        if v.is_06_or_later() {
            let Some(id) = id else {
                return Err(EncodeError::Invalid {
                    what: "END of a path never started",
                });
            };
            Announce06::End { id }.encode(v, &mut buf)?;
        } else {
            Announce {
                status: AnnounceStatus::Ended,
                suffix,
                hops: vec![],
            }
            .encode(v, &mut buf)?;
        }
        Ok(buf.freeze())
    }

    pub(super) fn on_announce_request(
        &mut self,
        slot: u64,
        req: AnnounceRequest,
    ) -> Result<(), (ErrorCode, String)> {
        let v = self.cfg.version;
        let matching: Vec<(String, Vec<u64>)> = self
            .published
            .iter()
            .filter(|(p, hops)| {
                path::has_prefix(p, &req.prefix)
                    && !self.excluded(hops, req.exclude_hop)
                    && !self.hidden(p, &req.prefix)
            })
            .map(|(p, h)| (p.clone(), self.wire_hops(h)))
            .collect();
        let mut buf = BytesMut::new();
        let enc = |e: EncodeError| (ErrorCode::Encode, e.to_string());
        if v.is_05_or_later() {
            AnnounceOk {
                hop_id: self.cfg.hop_id,
                active_count: matching.len() as u64,
            }
            .encode(v, &mut buf)
            .map_err(enc)?;
        }
        // The initial burst takes IDs 0 .. count-1 on 06 (spec 12.5).
        let mut sent = HashMap::with_capacity(matching.len());
        for (p, hops) in matching {
            let suffix = path::strip_prefix(&p, &req.prefix)
                .unwrap_or_default()
                .to_owned();
            buf.extend_from_slice(&self.active_msg(&suffix, hops, None).map_err(enc)?);
            let id = sent.len() as u64;
            sent.insert(p, id);
        }
        if let Some(s) = self.slots.get_mut(&slot)
            && let Kind::InterestIn { answer, .. } = &mut s.kind
        {
            answer.state = Some((req.prefix.clone(), req.exclude_hop));
            answer.next_id = sent.len() as u64;
            answer.sent = sent;
        }
        if !buf.is_empty() {
            self.send(slot, Out::Data(buf.freeze()));
        }
        self.emit(SessionEvent::AnnounceInterest {
            prefix: req.prefix,
            exclude_hop: req.exclude_hop,
        });
        Ok(())
    }

    /// The peer's SETUP arrived: answer the 06 Announce streams that waited for its `Hop`.
    pub(super) fn answer_deferred_interests(&mut self) {
        let mut waiting: Vec<(u64, AnnounceRequest)> = self
            .slots
            .iter_mut()
            .filter_map(|(k, s)| match &mut s.kind {
                Kind::InterestIn { answer, .. } => answer.deferred.take().map(|r| (*k, r)),
                _ => None,
            })
            .collect();
        waiting.sort_by_key(|(k, _)| *k);
        for (slot, req) in waiting {
            if let Err((code, why)) = self.on_announce_request(slot, req) {
                self.fail_stream(slot, code, why);
            }
        }
    }

    fn wire_hops(&self, stored: &[u64]) -> Vec<u64> {
        match self.cfg.version {
            Version::Lite05 | Version::Lite06 => stored.to_vec(),
            // 04 appends our ID; 03 sends only the count, which includes us.
            Version::Lite04 | Version::Lite03 => {
                let mut h = stored.to_vec();
                h.push(self.cfg.hop_id);
                h
            }
        }
    }

    /// Split horizon: a broadcast whose chain holds the peer's Exclude Hop or SETUP Origin
    /// came through that peer and must not be offered back to it.
    fn excluded(&self, hops: &[u64], exclude_hop: u64) -> bool {
        (exclude_hop != 0 && hops.contains(&exclude_hop))
            || (self.peer_origin != 0 && hops.contains(&self.peer_origin))
    }

    /// Announce streams whose prefix covers `p`: `(slot, suffix, already sent, excluded)`,
    /// where `excluded` applies the split-horizon rule to `hops`.
    fn interest_in_slots(&self, p: &str, hops: &[u64]) -> Vec<(u64, String, bool, bool)> {
        let mut out: Vec<(u64, String, bool, bool)> = self
            .slots
            .iter()
            .filter(|(_, s)| s.send_open)
            .filter_map(|(k, s)| match &s.kind {
                Kind::InterestIn { answer, .. } => {
                    let Answering {
                        state: Some((prefix, exclude)),
                        sent,
                        ..
                    } = &**answer
                    else {
                        return None;
                    };
                    let suffix = path::strip_prefix(p, prefix)?;
                    if self.hidden(p, prefix) {
                        return None;
                    }
                    Some((
                        *k,
                        suffix.to_owned(),
                        sent.contains_key(p),
                        self.excluded(hops, *exclude),
                    ))
                }
                _ => None,
            })
            .collect();
        out.sort_by_key(|(k, ..)| *k);
        out
    }

    /// moq-relay 0.17's hidden paths: a server does not announce a path whose part below
    /// the request prefix has a segment starting with `.` (`.stats/…` under `""`); asked
    /// for by a prefix that names the segment, it is announced. Our own dials to peer
    /// relays (the client side) see everything, as 0.17's outbound peers do.
    fn hidden(&self, p: &str, prefix: &str) -> bool {
        !self.show_hidden
            && self.cfg.perspective == Perspective::Server
            && path::strip_prefix(p, prefix).is_some_and(path::is_hidden)
    }

    /// The 06 ID `p` was started with on `slot`, if it was sent there.
    fn sent_id(&self, slot: u64, p: &str) -> Option<u64> {
        match self.slots.get(&slot).map(|s| &s.kind) {
            Some(Kind::InterestIn { answer, .. }) => answer.sent.get(p).copied(),
            _ => None,
        }
    }

    /// Records `p` as sent on `slot`; a path not sent yet takes the stream's next 06 ID
    /// (a path already sent keeps its ID: it was restarted).
    fn mark_sent(&mut self, slot: u64, p: &str) {
        if let Some(s) = self.slots.get_mut(&slot)
            && let Kind::InterestIn { answer, .. } = &mut s.kind
            && !answer.sent.contains_key(p)
        {
            answer.sent.insert(p.to_owned(), answer.next_id);
            answer.next_id += 1;
        }
    }

    /// Forgets `p` on `slot`, returning the 06 ID it had (retired: never reused).
    fn unmark_sent(&mut self, slot: u64, p: &str) -> Option<u64> {
        if let Some(s) = self.slots.get_mut(&slot)
            && let Kind::InterestIn { answer, .. } = &mut s.kind
        {
            return answer.sent.remove(p);
        }
        None
    }
}

/// What we put on the wire for a route we store only as a hop chain (spec 12.6): with no
/// link prices configured anywhere moq-net's cost equals the hop count, so a chain of `n`
/// hops is sent as `n/n` (0/0 for a broadcast published on this node's session).
fn route_cost(hops: &[u64]) -> RouteCost {
    let n = hops.len() as u64;
    RouteCost { warm: n, cold: n }
}
