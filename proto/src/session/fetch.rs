//! FETCH of one cached group (05), both sides. Fetcher side: `fetch` opens a Fetch stream
//! and the response (bare frames, timestamps delta-coded from 0, then FIN) comes back as
//! `FetchFrame` / `FetchEnded`. Server side: a Fetch stream the peer opened is answered
//! with `fetch_frame`… `end_fetch`, or refused with `reject_fetch` (a reset is the only
//! refusal FETCH has).
//!
//! It must never write a response before the peer's FETCH was read (`asked`) or after its
//! send side closed, and never queue more than `MAX_QUEUED_CHUNKS` before the stream opens.

use bytes::Bytes;

use super::{
    CONTROL_PRIORITY, FetchId, FetchServeId, Kind, MAX_QUEUED_CHUNKS, Out, Session, SessionError,
    SessionEvent, Slot,
};
use crate::coding::EncodeError;
use crate::message::{BidiType, Fetch};
use crate::reader::{GroupItem, GroupReader};
use crate::{ErrorCode, path};

impl Session {
    /// Asks the peer for one group of a track from its cache (05). Frames arrive as
    /// `FetchFrame`, then `FetchEnded`.
    pub fn fetch(
        &mut self,
        broadcast: &str,
        track: &str,
        priority: u8,
        group: u64,
    ) -> Result<FetchId, SessionError> {
        // The whole group, as moq-net subscribers always ask on 06 (spec 12.9).
        self.fetch_frames(broadcast, track, priority, group, 0, None)
    }

    /// As [`Session::fetch`], for frames `frame_start ..= frame_end` of the group only (06;
    /// `frame_end` `None` = through its end). The response starts exactly at `frame_start`.
    pub fn fetch_frames(
        &mut self,
        broadcast: &str,
        track: &str,
        priority: u8,
        group: u64,
        frame_start: u64,
        frame_end: Option<u64>,
    ) -> Result<FetchId, SessionError> {
        let v = self.cfg.version;
        if !v.is_05_or_later() {
            return Err(SessionError::NotInVersion {
                what: "FETCH",
                version: v,
            });
        }
        let id = FetchId(self.new_request_id()?);
        let msg = Fetch {
            broadcast: path::normalize(broadcast),
            track: track.to_owned(),
            priority,
            group,
            frame_start,
            frame_end,
        };
        let data = self.encode_typed(BidiType::Fetch.id(), &msg)?;
        let kind = Kind::FetchOut {
            id,
            reader: Box::new(GroupReader::frames_only(v)),
            ts: 0,
        };
        let slot = self.new_local(kind, true, CONTROL_PRIORITY)?;
        self.send(slot, Out::Data(data));
        Ok(id)
    }

    /// A FETCH response: bare frames (05 format, deltas from 0), then FIN.
    pub(super) fn process_fetch_out(
        &mut self,
        slot: u64,
        data: Option<Bytes>,
        fin: bool,
    ) -> Result<(), (ErrorCode, String)> {
        // Each frame consumes at least one byte of input, so the input bounds the loop.
        let mut data = data;
        loop {
            let Some(s) = self.slots.get_mut(&slot) else {
                return Ok(());
            };
            let Kind::FetchOut { id, reader, ts } = &mut s.kind else {
                return Ok(());
            };
            if let Some(d) = data.take() {
                reader.push(d);
            }
            let fetch = *id;
            match reader.next().map_err(|e| (e.code(), e.to_string()))? {
                None => break,
                Some(GroupItem::Header(_)) => {
                    return Err((ErrorCode::Decode, "header in a fetch response".into()));
                }
                Some(GroupItem::Frame {
                    timestamp_delta,
                    payload,
                }) => {
                    let Some(t) = ts.checked_add(timestamp_delta).filter(|t| *t >= 0) else {
                        return Err((
                            ErrorCode::TimestampMismatch,
                            "timestamp out of range".into(),
                        ));
                    };
                    *ts = t;
                    self.emit(SessionEvent::FetchFrame {
                        fetch,
                        timestamp: t as u64,
                        payload,
                    });
                }
            }
        }
        if fin {
            let ok = matches!(
                self.slots.get(&slot).map(|s| &s.kind),
                Some(Kind::FetchOut { reader, .. }) if reader.at_boundary()
            );
            if !ok {
                return Err((
                    ErrorCode::WrongSize,
                    "fetch response ended inside a frame".into(),
                ));
            }
            self.fail_recv(slot, None);
        }
        Ok(())
    }

    fn fetch_in_mut(&mut self, request: FetchServeId) -> Result<&mut u64, SessionError> {
        match self.slots.get_mut(&request.0) {
            Some(Slot {
                kind:
                    Kind::FetchIn {
                        asked: true,
                        last_ts,
                        ..
                    },
                send_open: true,
                ..
            }) => Ok(last_ts),
            _ => Err(SessionError::Unknown {
                what: "fetch request",
                id: request.0,
            }),
        }
    }

    /// Writes one frame of a FETCH response (timestamps delta-coded from 0, as in a group).
    pub fn fetch_frame(
        &mut self,
        request: FetchServeId,
        timestamp: u64,
        payload: Bytes,
    ) -> Result<(), SessionError> {
        if self.queued_full(request.0) {
            return Err(SessionError::Backlog {
                what: "fetch",
                id: request.0,
                max: MAX_QUEUED_CHUNKS,
            });
        }
        let last_ts = self.fetch_in_mut(request)?;
        let delta = i64::try_from(i128::from(timestamp) - i128::from(*last_ts)).map_err(|_| {
            EncodeError::Invalid {
                what: "timestamp delta",
            }
        })?;
        let size = payload.len() as u64;
        let hdr = self.frame_header(delta, size)?;
        *self.fetch_in_mut(request)? = timestamp;
        self.send(request.0, Out::Data(hdr));
        if !payload.is_empty() {
            self.send(request.0, Out::Data(payload));
        }
        Ok(())
    }

    /// Ends a FETCH response (FIN).
    pub fn end_fetch(&mut self, request: FetchServeId) -> Result<(), SessionError> {
        self.fetch_in_mut(request)?;
        // The fetcher answers our FIN with its own (spec 3.4); keep reading until then.
        self.send(request.0, Out::Fin);
        Ok(())
    }

    /// Refuses or aborts a FETCH (there is no error message: a reset is the answer).
    pub fn reject_fetch(
        &mut self,
        request: FetchServeId,
        code: ErrorCode,
    ) -> Result<(), SessionError> {
        self.fetch_in_mut(request)?;
        self.send(request.0, Out::Reset(code));
        self.stop(request.0, ErrorCode::Cancel);
        Ok(())
    }
}
