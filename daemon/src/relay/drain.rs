//! Shutdown as moq-relay 0.17 drains, on the worker side: once the control thread
//! starts a drain every session gets a GOAWAY (moq-lite-04 and later; sessions that
//! arrive later get theirs on arrival), and at the deadline every session still here is
//! closed with "GOAWAY timeout". It must never wait: it acts once per loop iteration
//! from `control_poll` and only on this worker's own sessions.

use std::sync::atomic::{AtomicU8, Ordering};

use quic_io::{SessionId, SessionIo};
use tracing::info;

use super::RelayWorker;

/// The session close code at the drain deadline: moq-relay 0.17's "GOAWAY timeout".
pub const GOAWAY_TIMEOUT_CODE: u64 = 0x10;

/// State shared by every worker and the control thread: how far a drain has gone.
#[derive(Debug, Default)]
pub struct DrainFlag(AtomicU8);

/// `DrainFlag` stages, only ever moving forward.
const SERVING: u8 = 0;
const DRAINING: u8 = 1;
const CLOSING: u8 = 2;

impl DrainFlag {
    /// GOAWAY to every session, and to every session that arrives from now on.
    pub fn start(&self) {
        self.0.fetch_max(DRAINING, Ordering::Relaxed);
    }

    /// The deadline passed: close every session with `GOAWAY_TIMEOUT_CODE`.
    pub fn close_all(&self) {
        self.0.fetch_max(CLOSING, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed) != SERVING
    }

    pub(super) fn is_closing(&self) -> bool {
        self.0.load(Ordering::Relaxed) == CLOSING
    }
}

impl RelayWorker {
    /// At the drain deadline: closes every session still here, once each.
    pub(super) fn close_all<T: SessionIo>(&mut self, io: &mut T) {
        let sessions = &self.sessions;
        self.control
            .closed_sent
            .retain(|id| sessions.contains_key(id));
        if self.control.closed_sent.len() == self.sessions.len() {
            return;
        }
        let fresh: Vec<SessionId> = self
            .sessions
            .keys()
            .filter(|id| !self.control.closed_sent.contains(id))
            .copied()
            .collect();
        for id in fresh {
            self.control.closed_sent.insert(id);
            let Some(conn) = self.sessions.get_mut(&id) else {
                continue;
            };
            info!(
                worker = self.worker,
                session = id,
                "peer did not leave before the GOAWAY deadline; closing"
            );
            if let Some(external) = conn.external.as_mut() {
                external.end_reason = Some("shutdown");
            }
            conn.moq().close(
                proto::ErrorCode::Unknown(GOAWAY_TIMEOUT_CODE),
                "GOAWAY timeout".into(),
            );
            self.drive(id, io);
        }
    }

    /// Sends a GOAWAY (empty URI: "reconnect to me") to every admitted session that has
    /// not had one; moq-lite-03 has no GOAWAY and is served until the drain deadline. A
    /// session still on its way in (no SETUP or verdict yet) gets its GOAWAY once it is
    /// admitted: the reference client fails a connect that meets a GOAWAY before its
    /// SETUP is answered, where it follows one that comes after.
    pub(super) fn go_away_all<T: SessionIo>(&mut self, io: &mut T) {
        let sessions = &self.sessions;
        self.control
            .goaway_sent
            .retain(|id| sessions.contains_key(id));
        // Every id left is a live session's: equal sizes mean everyone has had one.
        if self.control.goaway_sent.len() == self.sessions.len() {
            return;
        }
        let fresh: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(id, conn)| conn.access.is_some() && !self.control.goaway_sent.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for id in fresh {
            self.control.goaway_sent.insert(id);
            let Some(conn) = self.sessions.get_mut(&id) else {
                continue;
            };
            if conn.version == proto::Version::Lite03 {
                continue;
            }
            let result = conn.moq().go_away("");
            if conn.refusals.note(result).is_some() {
                info!(worker = self.worker, session = id, "drain: GOAWAY sent");
            }
            self.drive(id, io);
        }
    }
}
