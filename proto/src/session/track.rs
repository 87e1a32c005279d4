//! TRACK / TRACK_INFO requests (05), both sides: `request_track` opens a Track stream to
//! the peer, and a Track stream the peer opened is answered with `answer_track` (TRACK_INFO
//! then FIN) or `reject_track` (reset).
//!
//! It must never answer a Track stream before the peer's TRACK was read (`asked`), and
//! never ask on versions before 05, which have no Track stream.

use super::{CONTROL_PRIORITY, Kind, Out, Session, SessionError, TrackRequestId, TrackServeId};
use crate::message::{BidiType, TrackInfo, TrackRequest};
use crate::reader::MessageReader;
use crate::{ErrorCode, path};

impl Session {
    /// Asks for TRACK_INFO (05 only).
    pub fn request_track(
        &mut self,
        broadcast: &str,
        track: &str,
    ) -> Result<TrackRequestId, SessionError> {
        if !self.cfg.version.is_05_or_later() {
            return Err(SessionError::NotInVersion {
                what: "TRACK",
                version: self.cfg.version,
            });
        }
        let id = TrackRequestId(self.new_request_id()?);
        let msg = TrackRequest {
            broadcast: path::normalize(broadcast),
            track: track.to_owned(),
        };
        let data = self.encode_typed(BidiType::Track.id(), &msg)?;
        let slot = self.new_local(
            Kind::TrackOut {
                id,
                reader: MessageReader::new(),
            },
            true,
            CONTROL_PRIORITY,
        )?;
        let prev = self.tracks.insert(id, slot);
        // Request IDs come from a counter, so each is new.
        debug_assert!(prev.is_none(), "request {id:?} registered twice");
        self.send(slot, Out::Data(data));
        Ok(id)
    }

    /// Answers a TRACK request with TRACK_INFO and FIN.
    pub fn answer_track(
        &mut self,
        request: TrackServeId,
        info: TrackInfo,
    ) -> Result<(), SessionError> {
        if !matches!(
            self.slots.get(&request.0).map(|s| &s.kind),
            Some(Kind::TrackIn { asked: true, .. })
        ) {
            return Err(SessionError::Unknown {
                what: "track request",
                id: request.0,
            });
        }
        let data = self.encode(&info)?;
        self.send(request.0, Out::Data(data));
        self.send(request.0, Out::Fin);
        Ok(())
    }

    /// Rejects a TRACK request: `Unroutable` (no broadcast) or `NotFound` (no track).
    pub fn reject_track(
        &mut self,
        request: TrackServeId,
        code: ErrorCode,
    ) -> Result<(), SessionError> {
        if !matches!(
            self.slots.get(&request.0).map(|s| &s.kind),
            Some(Kind::TrackIn { asked: true, .. })
        ) {
            return Err(SessionError::Unknown {
                what: "track request",
                id: request.0,
            });
        }
        self.send(request.0, Out::Reset(code));
        self.stop(request.0, ErrorCode::Cancel);
        Ok(())
    }
}
