//! Session-level control streams we open: our SETUP (05, a uni stream sent and FINed at
//! start) and GOAWAY (04/05). The peer's SETUP and GOAWAY are read where the rest of its
//! input is (`Session::process`).
//!
//! It must never send SETUP twice: `Session::new` opens it once, on 05 and 06 only.

use bytes::BytesMut;

use super::{CONTROL_PRIORITY, Kind, Out, Perspective, Session, SessionError};
use crate::ErrorCode;
use crate::coding::put_varint;
use crate::message::{BidiType, GoAway, Message, Setup, SetupRole, UniType};
use crate::reader::MessageReader;

/// SETUP Role parameter values (spec 4.2); `Setup::role` decodes the same numbers.
const ROLE_BOTH: u64 = 0;
const ROLE_PUBLISHER: u64 = 1;
const ROLE_SUBSCRIBER: u64 = 2;

impl Session {
    pub(super) fn open_setup(&mut self) {
        let (role, path) = match self.cfg.perspective {
            Perspective::Client => (
                self.cfg.setup_role.map(|r| match r {
                    SetupRole::Both => ROLE_BOTH,
                    SetupRole::Publisher => ROLE_PUBLISHER,
                    SetupRole::Subscriber => ROLE_SUBSCRIBER,
                }),
                self.cfg.setup_path.clone().filter(|p| !p.is_empty()),
            ),
            Perspective::Server => (None, None),
        };
        let setup = Setup {
            probe: None,
            path,
            role,
            cost: None,
            origin: (self.cfg.hop_id != 0).then_some(self.cfg.hop_id),
        };
        let mut buf = BytesMut::new();
        let res = put_varint(&mut buf, "type", UniType::Setup.id())
            .and_then(|_| setup.encode(self.cfg.version, &mut buf));
        if let Err(e) = res {
            self.close(ErrorCode::Encode, format!("setup: {e}"));
            return;
        }
        if let Ok(slot) = self.new_local(Kind::SetupOut, false, CONTROL_PRIORITY) {
            self.send(slot, Out::Data(buf.freeze()));
            self.send(slot, Out::Fin);
        }
    }

    /// Opens a Goaway stream (04/05): the peer should stop opening streams and migrate to
    /// `uri` if it is not empty.
    pub fn go_away(&mut self, uri: &str) -> Result<(), SessionError> {
        if self.closed {
            return Err(SessionError::Closed);
        }
        let data = self.encode_typed(
            BidiType::GoAway.id(),
            &GoAway {
                uri: uri.to_owned(),
            },
        )?;
        let slot = self.new_local(
            Kind::Drain {
                reader: MessageReader::new(),
                goaway: false,
            },
            true,
            CONTROL_PRIORITY,
        )?;
        self.send(slot, Out::Data(data));
        Ok(())
    }
}
