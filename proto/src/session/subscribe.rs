//! Our subscriptions to the peer: the Subscribe streams we open (SUBSCRIBE, then
//! SUBSCRIBE_UPDATE), and the group streams the peer sends for them, parsed into
//! `GroupStarted` / `Frame` / `GroupEnded` events.
//!
//! A subscription's ID is registered before SUBSCRIBE goes out, so groups that beat
//! SUBSCRIBE_OK are accepted. It must never deliver a frame for a subscription we have
//! dropped: `unsubscribe` detaches and stops its in-flight groups, and a group whose ID is
//! unknown is stopped, not failed (it may simply have crossed our unsubscribe).

use bytes::Bytes;

use super::{CONTROL_PRIORITY, Kind, Out, Session, SessionError, SessionEvent, SubscriptionId};
use crate::message::{BidiType, Subscribe, SubscribeUpdate};
use crate::reader::{GroupItem, MessageReader};
use crate::{ErrorCode, path};

impl Session {
    /// Subscribes to `track` of `broadcast` with the given preferences (priority, ordered,
    /// max latency, start, end; `SubscribeUpdate::latest(p)` for "from the latest group"). The ID is registered before SUBSCRIBE is sent,
    /// so groups that beat SUBSCRIBE_OK are accepted.
    pub fn subscribe(
        &mut self,
        broadcast: &str,
        track: &str,
        prefs: SubscribeUpdate,
    ) -> Result<SubscriptionId, SessionError> {
        let id = SubscriptionId(self.new_request_id()?);
        let msg = Subscribe {
            id: id.0,
            broadcast: path::normalize(broadcast),
            track: track.to_owned(),
            priority: prefs.priority,
            ordered: prefs.ordered,
            max_latency_ms: prefs.max_latency_ms,
            start: prefs.start,
            end: prefs.end,
            frame_start: prefs.frame_start,
            frame_end: prefs.frame_end,
        };
        let data = self.encode_typed(BidiType::Subscribe.id(), &msg)?;
        let slot = self.new_local(
            Kind::SubscribeOut {
                id,
                reader: MessageReader::new(),
                responses: 0,
            },
            true,
            CONTROL_PRIORITY,
        )?;
        let prev = self.subs.insert(id, slot);
        // Request IDs come from a counter, so each is new.
        debug_assert!(prev.is_none(), "request {id:?} registered twice");
        self.send(slot, Out::Data(data));
        Ok(id)
    }

    /// Sends SUBSCRIBE_UPDATE.
    pub fn update_subscription(
        &mut self,
        id: SubscriptionId,
        update: SubscribeUpdate,
    ) -> Result<(), SessionError> {
        let slot = *self.subs.get(&id).ok_or(SessionError::Unknown {
            what: "subscription",
            id: id.0,
        })?;
        let data = self.encode(&update)?;
        self.send(slot, Out::Data(data));
        Ok(())
    }

    /// Cancels a subscription (FIN); in-flight groups for it are stopped.
    pub fn unsubscribe(&mut self, id: SubscriptionId) -> Result<(), SessionError> {
        let slot = self.subs.remove(&id).ok_or(SessionError::Unknown {
            what: "subscription",
            id: id.0,
        })?;
        self.send(slot, Out::Fin);
        self.stop(slot, ErrorCode::Cancel);
        let groups: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s.kind, Kind::GroupIn { target: Some((sub, _)), .. } if sub == id))
            .map(|(k, _)| *k)
            .collect();
        for g in groups {
            if let Some(s) = self.slots.get_mut(&g)
                && let Kind::GroupIn { target, .. } = &mut s.kind
            {
                *target = None;
            }
            self.stop(g, ErrorCode::Cancel);
        }
        Ok(())
    }

    pub(super) fn process_group(
        &mut self,
        slot: u64,
        data: Option<Bytes>,
        fin: bool,
    ) -> Result<(), (ErrorCode, String)> {
        let v = self.cfg.version;
        let Some(s) = self.slots.get_mut(&slot) else {
            return Ok(());
        };
        let Kind::GroupIn { reader, .. } = &mut s.kind else {
            return Ok(());
        };
        if let Some(d) = data {
            reader.push(d);
        }
        // Each item consumes at least one byte of the chunk; MAX_FRAME_SIZE+ bounds the loop.
        loop {
            let Some(s) = self.slots.get_mut(&slot) else {
                return Ok(());
            };
            let Kind::GroupIn { reader, target, ts } = &mut s.kind else {
                return Ok(());
            };
            let item = reader.next().map_err(|e| (e.code(), e.to_string()))?;
            match item {
                None => break,
                Some(GroupItem::Header(h)) => {
                    let sub = SubscriptionId(h.subscribe_id);
                    if h.frame_start != 0 {
                        // A partial group (06): we never ask for one (Frame Start is always 0
                        // from here), and frames forwarded from it would be numbered from 0,
                        // so refuse it rather than pass on a misaligned group (spec 12.10).
                        return Err((
                            ErrorCode::Unsupported,
                            format!("group {} starts at frame {}", h.sequence, h.frame_start),
                        ));
                    }
                    if self.subs.contains_key(&sub) {
                        *target = Some((sub, h.sequence));
                        self.emit(SessionEvent::GroupStarted {
                            subscription: sub,
                            sequence: h.sequence,
                        });
                    } else {
                        // Unknown ID (e.g. after an unsubscribe): not an error, just unwanted.
                        self.stop(slot, ErrorCode::Cancel);
                        return Ok(());
                    }
                }
                Some(GroupItem::Frame {
                    timestamp_delta,
                    payload,
                }) => {
                    let Some((subscription, sequence)) = *target else {
                        return Ok(());
                    };
                    let timestamp = if v.is_05_or_later() {
                        match ts.checked_add(timestamp_delta).filter(|t| *t >= 0) {
                            Some(t) => {
                                *ts = t;
                                Some(t as u64)
                            }
                            None => {
                                return Err((
                                    ErrorCode::TimestampMismatch,
                                    "timestamp out of range".into(),
                                ));
                            }
                        }
                    } else {
                        None
                    };
                    self.emit(SessionEvent::Frame {
                        subscription,
                        sequence,
                        timestamp,
                        payload,
                    });
                }
            }
        }
        if fin {
            let Some(s) = self.slots.get_mut(&slot) else {
                return Ok(());
            };
            let Kind::GroupIn { reader, target, .. } = &mut s.kind else {
                return Ok(());
            };
            if reader.finish().is_err() {
                return Err((
                    ErrorCode::WrongSize,
                    "group stream ended inside a frame".into(),
                ));
            }
            let target = target.take();
            s.recv_open = false;
            if let Some((subscription, sequence)) = target {
                self.emit(SessionEvent::GroupEnded {
                    subscription,
                    sequence,
                });
            }
            self.maybe_remove(slot);
        }
        Ok(())
    }
}
