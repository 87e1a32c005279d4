//! Stream input: every byte and FIN the peer sends enters here. A stream the peer opens is
//! classified by its type varint (`classify`), then its bytes go to the parser for its
//! kind: group streams and FETCH responses to their concern files, the peer's SETUP here,
//! and every control stream (Announce, Subscribe, Track, Fetch, GoAway, Probe) to the
//! message loop in `process_control`, which hands each decoded message to its concern.
//!
//! Each loop consumes at least one byte per message, so the input bounds it. A decode error
//! comes back as `(code, reason)` and fails only that stream; it must never close the
//! session except where the protocol says so (a second SETUP).

use bytes::Bytes;

use super::{
    Action, ControlClass, FetchServeId, Kind, MAX_STREAMS, Out, Session, SessionEvent, Slot,
    StreamId, TrackServeId,
};
use crate::message::{
    Announce, Announce06, AnnounceOk, AnnounceRequest, BidiType, Fetch, GoAway, Setup, Subscribe,
    SubscribeResponse, SubscribeUpdate, TrackInfo, TrackRequest, UniType,
};
use crate::reader::{GroupReader, MessageReader};
use crate::{DecodeError, ErrorCode};

impl Session {
    /// The peer opened a stream.
    pub fn on_stream_opened(&mut self, stream: StreamId, bidi: bool) {
        if self.closed || self.by_id.contains_key(&stream) {
            return;
        }
        if self.slots.len() >= MAX_STREAMS {
            self.push_action(Action::StopSending {
                stream,
                code: ErrorCode::BoundsExceeded,
            });
            if bidi {
                self.push_action(Action::Reset {
                    stream,
                    code: ErrorCode::BoundsExceeded,
                });
            }
            return;
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        debug_assert!(!self.slots.contains_key(&slot), "slot {slot} reused");
        let kind = if bidi {
            Kind::BidiUnknown(MessageReader::new())
        } else {
            Kind::UniUnknown(MessageReader::new())
        };
        self.slots.insert(
            slot,
            Slot {
                id: Some(stream),
                queued: Vec::new(),
                kind,
                send_open: bidi,
                recv_open: true,
            },
        );
        let prev = self.by_id.insert(stream, slot);
        // Checked at the top: a stream the peer opens is new to us.
        debug_assert!(prev.is_none(), "stream {stream:?} opened twice");
    }

    /// Bytes arrived on a stream.
    pub fn on_stream_data(&mut self, stream: StreamId, data: Bytes) {
        if self.closed {
            return;
        }
        let Some(&slot) = self.by_id.get(&stream) else {
            return;
        };
        let Some(s) = self.slots.get(&slot).filter(|s| s.recv_open) else {
            return;
        };
        // Until its type is read a stream has no class; `process` counts those bytes
        // when it learns the type.
        if let Some(class) = ControlClass::of(&s.kind) {
            self.control_bytes.add_received(class, data.len());
        }
        if let Err((code, why)) = self.process(slot, Some(data), false) {
            self.fail_stream(slot, code, why);
        }
    }

    /// The peer finished (FIN) its send side of a stream.
    pub fn on_stream_finished(&mut self, stream: StreamId) {
        if self.closed {
            return;
        }
        let Some(&slot) = self.by_id.get(&stream) else {
            return;
        };
        if !self.slots.get(&slot).is_some_and(|s| s.recv_open) {
            return;
        }
        if let Err((code, why)) = self.process(slot, None, true) {
            self.fail_stream(slot, code, why);
        }
    }

    /// The peer reset its send side of a stream.
    pub fn on_stream_reset(&mut self, stream: StreamId, code: ErrorCode) {
        if self.closed {
            return;
        }
        let Some(&slot) = self.by_id.get(&stream) else {
            return;
        };
        self.fail_recv(slot, Some(code));
    }

    /// Feeds data (or FIN) into a slot's parser. Errors carry the reset code.
    fn process(
        &mut self,
        slot: u64,
        data: Option<Bytes>,
        fin: bool,
    ) -> Result<(), (ErrorCode, String)> {
        let v = self.cfg.version;
        let dec = |e: DecodeError| (e.code(), e.to_string());
        let Some(s) = self.slots.get_mut(&slot) else {
            return Ok(());
        };
        match &mut s.kind {
            Kind::UniUnknown(r) | Kind::BidiUnknown(r) => {
                if let Some(d) = &data {
                    r.push(d);
                }
                let so_far = r.buffered();
                let Some(typ) = r.read_varint().map_err(dec)? else {
                    return if fin {
                        Err((ErrorCode::Decode, "stream ended before its type".into()))
                    } else {
                        Ok(())
                    };
                };
                let rest = r.take_rest();
                let bidi = matches!(s.kind, Kind::BidiUnknown(_));
                self.classify(slot, typ, bidi)?;
                if let Some(class) = self
                    .slots
                    .get(&slot)
                    .and_then(|s| ControlClass::of(&s.kind))
                {
                    self.control_bytes.add_received(class, so_far);
                }
                if !rest.is_empty() || fin {
                    return self.process(slot, (!rest.is_empty()).then_some(rest), fin);
                }
                Ok(())
            }
            Kind::GroupIn { .. } => self.process_group(slot, data, fin),
            Kind::FetchOut { .. } => self.process_fetch_out(slot, data, fin),
            Kind::SetupIn(r) => {
                if let Some(d) = &data {
                    r.push(d);
                }
                if let Some(setup) = r.read::<Setup>(v).map_err(dec)? {
                    if self.peer_setup {
                        self.close(ErrorCode::ProtocolViolation, "second SETUP".into());
                        return Ok(());
                    }
                    self.peer_setup = true;
                    self.peer_origin = setup.origin.unwrap_or(0);
                    // Only FIN may follow; anything else is discarded.
                    if let Some(s) = self.slots.get_mut(&slot) {
                        s.kind = Kind::Drain {
                            reader: MessageReader::new(),
                            goaway: false,
                        };
                    }
                    self.emit(SessionEvent::Setup(Box::new(setup)));
                    if fin {
                        self.fail_recv(slot, None);
                    }
                    self.answer_deferred_interests();
                    return Ok(());
                }
                if fin {
                    return Err((ErrorCode::Decode, "Setup stream ended early".into()));
                }
                Ok(())
            }
            _ => self.process_control(slot, data, fin),
        }
    }

    fn classify(&mut self, slot: u64, typ: u64, bidi: bool) -> Result<(), (ErrorCode, String)> {
        let v = self.cfg.version;
        let Some(s) = self.slots.get_mut(&slot) else {
            return Ok(());
        };
        if !bidi {
            s.kind = match UniType::from_id(v, typ) {
                Some(UniType::Group) => Kind::GroupIn {
                    reader: Box::new(GroupReader::new(v)),
                    target: None,
                    ts: 0,
                },
                Some(UniType::Setup) => Kind::SetupIn(MessageReader::new()),
                None => {
                    return Err((
                        ErrorCode::UnexpectedStream,
                        format!("uni stream type {typ}"),
                    ));
                }
            };
            return Ok(());
        }
        s.kind = match BidiType::from_id(v, typ) {
            Some(BidiType::Announce) => Kind::InterestIn {
                reader: MessageReader::new(),
                answer: Box::default(),
            },
            Some(BidiType::Subscribe) => Kind::SubscribeIn {
                reader: MessageReader::new(),
                serve: None,
            },
            Some(BidiType::Track) => Kind::TrackIn {
                reader: MessageReader::new(),
                asked: false,
            },
            // We advertise no Probe level on 05, so the stream must be reset there; on 03/04
            // the reference subscriber only reads it, so leave it open and silent.
            Some(BidiType::Probe) if !v.is_05_or_later() => Kind::Drain {
                reader: MessageReader::new(),
                goaway: false,
            },
            Some(BidiType::GoAway) => Kind::Drain {
                reader: MessageReader::new(),
                goaway: true,
            },
            // FETCH of one cached group: the application answers `FetchRequested` with
            // `fetch_frame`… `end_fetch`, or `reject_fetch` when it does not have the group.
            Some(BidiType::Fetch) => Kind::FetchIn {
                reader: MessageReader::new(),
                asked: false,
                last_ts: 0,
            },
            Some(BidiType::Probe) => return Err((ErrorCode::Cancel, "probe not offered".into())),
            None => return Err((ErrorCode::Cancel, format!("bidi stream type {typ}"))),
        };
        Ok(())
    }

    fn process_control(
        &mut self,
        slot: u64,
        data: Option<Bytes>,
        fin: bool,
    ) -> Result<(), (ErrorCode, String)> {
        let v = self.cfg.version;
        let dec = |e: DecodeError| (e.code(), e.to_string());
        {
            let Some(s) = self.slots.get_mut(&slot) else {
                return Ok(());
            };
            let r = match &mut s.kind {
                Kind::InterestOut { reader, .. }
                | Kind::SubscribeOut { reader, .. }
                | Kind::TrackOut { reader, .. }
                | Kind::InterestIn { reader, .. }
                | Kind::SubscribeIn { reader, .. }
                | Kind::TrackIn { reader, .. }
                | Kind::FetchIn { reader, .. }
                | Kind::Drain { reader, .. } => reader,
                _ => return Ok(()),
            };
            if let Some(d) = &data {
                r.push(d);
            }
        }
        // One message per iteration, each consuming ≥ 1 byte: bounded by the buffer size.
        loop {
            let Some(s) = self.slots.get_mut(&slot) else {
                return Ok(());
            };
            if !s.recv_open {
                return Ok(());
            }
            let progressed = match &mut s.kind {
                Kind::InterestOut { reader, hop, .. } => {
                    if v.is_05_or_later() && hop.is_none() {
                        match reader.read::<AnnounceOk>(v).map_err(dec)? {
                            Some(ok) => {
                                *hop = Some(ok.hop_id);
                                true
                            }
                            None => false,
                        }
                    } else if v.is_06_or_later() {
                        match reader.read::<Announce06>(v).map_err(dec)? {
                            Some(a) => {
                                self.on_announce06(slot, a)?;
                                true
                            }
                            None => false,
                        }
                    } else {
                        match reader.read::<Announce>(v).map_err(dec)? {
                            Some(a) => {
                                self.on_announce(slot, a)?;
                                true
                            }
                            None => false,
                        }
                    }
                }
                Kind::SubscribeOut {
                    reader,
                    id,
                    responses,
                } => match reader.read::<SubscribeResponse>(v).map_err(dec)? {
                    Some(resp) => {
                        let first = *responses == 0;
                        *responses += 1;
                        let id = *id;
                        if !v.is_05_or_later() && first && !matches!(resp, SubscribeResponse::Ok(_))
                        {
                            return Err((
                                ErrorCode::ProtocolViolation,
                                "first response is not SUBSCRIBE_OK".into(),
                            ));
                        }
                        self.emit(SessionEvent::SubscribeResponse {
                            subscription: id,
                            response: resp,
                        });
                        true
                    }
                    None => false,
                },
                Kind::TrackOut { reader, id } => match reader.read::<TrackInfo>(v).map_err(dec)? {
                    Some(info) => {
                        let id = *id;
                        let pending = self.tracks.remove(&id);
                        // A TrackOut slot's request stays in `tracks` until it is answered
                        // (here, once: the slot turns into a Drain) or fails.
                        debug_assert_eq!(pending, Some(slot), "track request {id:?} not pending");
                        s.kind = Kind::Drain {
                            reader: MessageReader::new(),
                            goaway: false,
                        };
                        self.emit(SessionEvent::TrackInfo {
                            request: id,
                            info: Ok(info),
                        });
                        self.send(slot, Out::Fin);
                        true
                    }
                    None => false,
                },
                Kind::InterestIn { reader, answer }
                    if answer.state.is_none() && answer.deferred.is_none() =>
                {
                    match reader.read::<AnnounceRequest>(v).map_err(dec)? {
                        Some(req) => {
                            if v.is_06_or_later() && !self.peer_setup {
                                answer.deferred = Some(req);
                            } else {
                                self.on_announce_request(slot, req)?;
                            }
                            true
                        }
                        None => false,
                    }
                }
                Kind::InterestIn { reader, .. } => {
                    if reader.buffered() > 0 {
                        return Err((
                            ErrorCode::UnexpectedMessage,
                            "data after ANNOUNCE_REQUEST".into(),
                        ));
                    }
                    false
                }
                Kind::SubscribeIn {
                    reader,
                    serve: None,
                } => match reader.read::<Subscribe>(v).map_err(dec)? {
                    Some(sub) => {
                        self.on_subscribe(slot, sub)?;
                        true
                    }
                    None => false,
                },
                Kind::SubscribeIn {
                    reader,
                    serve: Some(serve),
                } => match reader.read::<SubscribeUpdate>(v).map_err(dec)? {
                    Some(update) => {
                        let serve = *serve;
                        // After the track ended the update has nothing left to change.
                        if let Some(st) = self.serves.get_mut(&serve) {
                            st.priority = update.priority;
                            st.max_latency_ms = update.max_latency_ms;
                            let groups: Vec<u64> = st.groups.iter().copied().collect();
                            self.reprioritize(&groups, update.priority);
                            self.emit(SessionEvent::SubscribeUpdated {
                                serve,
                                update: Box::new(update),
                            });
                        }
                        true
                    }
                    None => false,
                },
                Kind::TrackIn {
                    reader,
                    asked: false,
                } => match reader.read::<TrackRequest>(v).map_err(dec)? {
                    Some(req) => {
                        if let Kind::TrackIn { asked, .. } = &mut s.kind {
                            *asked = true;
                        }
                        self.emit(SessionEvent::TrackRequested {
                            request: TrackServeId(slot),
                            broadcast: req.broadcast,
                            track: req.track,
                        });
                        true
                    }
                    None => false,
                },
                Kind::TrackIn { reader, .. } => {
                    if reader.buffered() > 0 {
                        return Err((ErrorCode::UnexpectedMessage, "data after TRACK".into()));
                    }
                    false
                }
                Kind::FetchIn {
                    reader,
                    asked: false,
                    ..
                } => match reader.read::<Fetch>(v).map_err(dec)? {
                    Some(fetch) => {
                        if let Kind::FetchIn { asked, .. } = &mut s.kind {
                            *asked = true;
                        }
                        self.emit(SessionEvent::FetchRequested {
                            request: FetchServeId(slot),
                            fetch: Box::new(fetch),
                        });
                        true
                    }
                    None => false,
                },
                Kind::FetchIn { reader, .. } => {
                    if reader.buffered() > 0 {
                        return Err((ErrorCode::UnexpectedMessage, "data after FETCH".into()));
                    }
                    false
                }
                Kind::Drain { reader, goaway } => {
                    if *goaway {
                        match reader.read::<GoAway>(v).map_err(dec)? {
                            Some(g) => {
                                self.emit(SessionEvent::GoAway { uri: g.uri });
                                true
                            }
                            None => false,
                        }
                    } else {
                        // Discard: keep nothing (probe reports, bytes after TRACK_INFO).
                        drop(reader.take_rest());
                        false
                    }
                }
                _ => false,
            };
            if !progressed {
                break;
            }
        }
        if fin {
            let leftover = self.slots.get(&slot).map(|s| match &s.kind {
                Kind::InterestOut { reader, .. }
                | Kind::SubscribeOut { reader, .. }
                | Kind::TrackOut { reader, .. }
                | Kind::InterestIn { reader, .. }
                | Kind::SubscribeIn { reader, .. }
                | Kind::TrackIn { reader, .. }
                | Kind::FetchIn { reader, .. }
                | Kind::Drain { reader, .. } => reader.buffered(),
                _ => 0,
            });
            if leftover.unwrap_or(0) > 0 {
                return Err((ErrorCode::Decode, "stream ended inside a message".into()));
            }
            self.fail_recv(slot, None);
        }
        Ok(())
    }
}
