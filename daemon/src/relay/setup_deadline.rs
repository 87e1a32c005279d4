//! `[listen] timeout` on the MoQ side: a moq-lite-05+ session whose client has not sent
//! its SETUP when the deadline quic-io set at the connection's first packet passes is
//! closed with Timeout. quic-io bounds the QUIC and WebTransport handshakes against the
//! same deadline, so the whole setup gets the one timeout, as in moq-relay 0.17. A link
//! this relay dialed waits for its peer's SETUP under the same rule.

use std::time::Instant;

use proto::ErrorCode;
use quic_io::{SessionId, SessionIo};
use tracing::info;

use super::RelayWorker;

impl RelayWorker {
    /// Arms the deadline if the session still waits for its SETUP (03/04 have none).
    pub(super) fn arm_setup_deadline(&mut self, session: SessionId, deadline: Instant) {
        let awaiting = self
            .sessions
            .get(&session)
            .is_some_and(|conn| conn.awaiting_setup.is_some());
        if awaiting {
            self.set_setup_deadline(session, deadline);
        }
    }

    /// Closes `session` at `deadline` unless its peer's SETUP comes first.
    pub(super) fn set_setup_deadline(&mut self, session: SessionId, deadline: Instant) {
        let Some(conn) = self.sessions.get_mut(&session) else {
            return;
        };
        debug_assert!(
            conn.setup_deadline.is_none(),
            "a setup deadline armed twice"
        );
        conn.setup_deadline = Some(deadline);
        self.setup_deadlines.insert((deadline, session));
    }

    /// Closes every session whose SETUP is overdue at `now`.
    pub(super) fn close_late_setups<T: SessionIo>(&mut self, now: Instant, io: &mut T) {
        while let Some(&(at, session)) = self.setup_deadlines.first() {
            if at > now {
                return;
            }
            self.setup_deadlines.pop_first();
            let Some(conn) = self.sessions.get_mut(&session) else {
                debug_assert!(false, "a setup deadline outlived its session");
                continue;
            };
            debug_assert_eq!(conn.setup_deadline, Some(at));
            conn.setup_deadline = None;
            self.counters.setup_timeouts += 1;
            info!(
                worker = self.worker,
                session, "no SETUP within the setup timeout; session closed"
            );
            conn.moq()
                .close(ErrorCode::Timeout, "setup timeout".to_owned());
            self.drive(session, io);
        }
    }
}
