//! Announcements, both sides. Subscriber side: our announce interests (Announce streams we
//! open) and the ANNOUNCE_OK / ANNOUNCE messages that come back on them. Publisher side:
//! the table of broadcasts we publish (`published`) and the Announce streams the peer
//! opened, answered from that table and kept up to date as it changes.
//!
//! It owns the loop rules: a broadcast whose hop chain holds our own ID is dropped on
//! receipt, and one whose chain holds the peer's Exclude Hop or SETUP Origin is never
//! offered back to it (split horizon). It must never send a broadcast on a stream twice
//! as active without ending it first where the version forbids that (03/04).

use std::collections::HashSet;

use bytes::BytesMut;

use super::{
    CONTROL_PRIORITY, InterestId, Kind, MAX_BROADCASTS, Out, Session, SessionError, SessionEvent,
};
use crate::coding::EncodeError;
use crate::message::{Announce, AnnounceOk, AnnounceRequest, AnnounceStatus, BidiType, Message};
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
            prefix,
            reader: MessageReader::new(),
            hop: None,
            active: HashSet::new(),
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
        let Some(s) = self.slots.get_mut(&slot) else {
            return Ok(());
        };
        let Kind::InterestOut {
            id,
            prefix,
            hop,
            active,
            ..
        } = &mut s.kind
        else {
            return Ok(());
        };
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
                    return Ok(()); // Our own broadcast reflected back: drop (loop rule).
                }
                let dup = active.contains(&a.suffix);
                if dup && !v.is_05_or_later() {
                    self.close(
                        ErrorCode::Duplicate,
                        format!("duplicate announce of {full}"),
                    );
                    return Ok(());
                }
                if !dup && active.len() >= MAX_BROADCASTS {
                    return Err((
                        ErrorCode::BoundsExceeded,
                        "too many announced broadcasts".into(),
                    ));
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

    // -----------------------------------------------------------------------------------
    // Publisher side: our broadcasts, offered on the peer's Announce streams

    /// Makes `path` (normalized here) available with stored hop chain `hops` (as received:
    /// on 05 it already ends with the upstream's ID; empty for a local publisher). Sent to
    /// every matching announce stream; a repeat replaces the chain.
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
        Announce {
            status: AnnounceStatus::Active,
            suffix: p.clone(),
            hops: wire.clone(),
        }
        .encode(v, &mut BytesMut::new())?;
        self.published.insert(p.clone(), hops.to_vec());
        let targets = self.interest_in_slots(&p, hops);
        for (slot, suffix, already, excluded) in targets {
            let mut buf = BytesMut::new();
            if excluded {
                // The new route runs through this peer: withdraw what it was told before.
                if already {
                    Announce {
                        status: AnnounceStatus::Ended,
                        suffix,
                        hops: vec![],
                    }
                    .encode(v, &mut buf)?;
                    self.mark_sent(slot, &p, false);
                    self.send(slot, Out::Data(buf.freeze()));
                }
                continue;
            }
            if already && !v.is_05_or_later() {
                // 03/04 forbid a duplicate active: end it first, then re-announce.
                Announce {
                    status: AnnounceStatus::Ended,
                    suffix: suffix.clone(),
                    hops: vec![],
                }
                .encode(v, &mut buf)?;
            }
            Announce {
                status: AnnounceStatus::Active,
                suffix,
                hops: wire.clone(),
            }
            .encode(v, &mut buf)?;
            self.mark_sent(slot, &p, true);
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
        let v = self.cfg.version;
        for (slot, suffix, already, _) in self.interest_in_slots(&p, &[]) {
            if !already {
                continue;
            }
            let mut buf = BytesMut::new();
            Announce {
                status: AnnounceStatus::Ended,
                suffix,
                hops: vec![],
            }
            .encode(v, &mut buf)?;
            self.mark_sent(slot, &p, false);
            self.send(slot, Out::Data(buf.freeze()));
        }
        Ok(())
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
                path::has_prefix(p, &req.prefix) && !self.excluded(hops, req.exclude_hop)
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
        let mut sent = HashSet::new();
        for (p, hops) in matching {
            let suffix = path::strip_prefix(&p, &req.prefix)
                .unwrap_or_default()
                .to_owned();
            Announce {
                status: AnnounceStatus::Active,
                suffix,
                hops,
            }
            .encode(v, &mut buf)
            .map_err(enc)?;
            sent.insert(p);
        }
        if let Some(s) = self.slots.get_mut(&slot)
            && let Kind::InterestIn {
                state,
                sent: s_sent,
                ..
            } = &mut s.kind
        {
            *state = Some((req.prefix.clone(), req.exclude_hop));
            *s_sent = sent;
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

    fn wire_hops(&self, stored: &[u64]) -> Vec<u64> {
        match self.cfg.version {
            Version::Lite05 => stored.to_vec(),
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
                Kind::InterestIn {
                    state: Some((prefix, exclude)),
                    sent,
                    ..
                } => {
                    let suffix = path::strip_prefix(p, prefix)?;
                    Some((
                        *k,
                        suffix.to_owned(),
                        sent.contains(p),
                        self.excluded(hops, *exclude),
                    ))
                }
                _ => None,
            })
            .collect();
        out.sort_by_key(|(k, ..)| *k);
        out
    }

    fn mark_sent(&mut self, slot: u64, p: &str, on: bool) {
        if let Some(s) = self.slots.get_mut(&slot)
            && let Kind::InterestIn { sent, .. } = &mut s.kind
        {
            if on {
                sent.insert(p.to_owned());
            } else {
                sent.remove(p);
            }
        }
    }
}
