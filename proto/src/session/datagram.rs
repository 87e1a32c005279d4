//! Datagrams (05): a whole single-frame group in one QUIC datagram, both directions.
//!
//! Datagrams are best effort by design: a malformed, oversized or unknown-subscription
//! datagram is dropped silently (spec 7), and one the congestion controller will not take
//! is the transport's to drop. It must never open a stream or fail a transaction.

use bytes::{Bytes, BytesMut};

use super::{Action, ServeId, Session, SessionError, SessionEvent, SubscriptionId};
use crate::message::Datagram;

/// Longest DATAGRAM header: three varints (subscribe id, group, timestamp) of at most 8
/// bytes each, so the buffer is sized once and never regrows.
const DATAGRAM_HEADER_MAX_LEN: usize = 3 * 8;

impl Session {
    /// A QUIC datagram arrived. Malformed, oversized or unknown-subscription datagrams are
    /// dropped silently (spec 7).
    pub fn on_datagram(&mut self, data: Bytes) {
        if self.closed {
            return;
        }
        let Ok(d) = Datagram::decode(self.cfg.version, data) else {
            return;
        };
        let subscription = SubscriptionId(d.subscribe_id);
        if self.subs.contains_key(&subscription) {
            self.emit(SessionEvent::Datagram {
                subscription,
                sequence: d.group,
                timestamp: d.timestamp,
                payload: d.payload,
            });
        }
    }

    /// Sends a whole single-frame group as a datagram (05). The body (header and payload)
    /// is at most [`crate::coding::MAX_DATAGRAM_SIZE`] bytes.
    pub fn send_datagram(
        &mut self,
        serve: ServeId,
        sequence: u64,
        timestamp: u64,
        payload: &Bytes,
    ) -> Result<(), SessionError> {
        let v = self.cfg.version;
        if !v.is_05_or_later() {
            return Err(SessionError::NotInVersion {
                what: "DATAGRAM",
                version: v,
            });
        }
        self.serve_mut(serve)?;
        let mut buf = BytesMut::with_capacity(DATAGRAM_HEADER_MAX_LEN + payload.len());
        Datagram {
            subscribe_id: serve.0,
            group: sequence,
            timestamp,
            payload: payload.clone(),
        }
        .encode(v, &mut buf)?;
        self.push_action(Action::SendDatagram { data: buf.freeze() });
        Ok(())
    }
}
