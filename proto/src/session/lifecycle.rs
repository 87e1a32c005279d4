//! How streams and transactions end: the transport binding or failing to open a stream we
//! asked for, the peer stopping or breaking a stream, and the connection going away.
//!
//! `fail_recv` is the one teardown path: whatever kind a stream was, it reports what the
//! application loses (Unannounced, GroupAborted, SubscriptionClosed, FetchEnded, …) exactly
//! once and closes our side. It must never leave a transaction without its closing event,
//! nor reset a broken Announce stream the peer opened (moq-net closes the session on that).

use super::{
    Action, FetchServeId, GroupId, Heard, Kind, OpenToken, Out, ServeId, Session, SessionEvent,
    StreamId,
};
use crate::{ErrorCode, path};

impl Session {
    /// The transport opened a stream we asked for with `token`.
    pub fn on_stream_bound(&mut self, token: OpenToken, stream: StreamId) {
        let slot = token.0;
        let Some(s) = self.slots.get_mut(&slot) else {
            // Nothing to say any more (cancelled before it opened): finish it at once.
            self.push_action(Action::Finish { stream });
            return;
        };
        // The transport binds each token once.
        debug_assert!(s.id.is_none(), "token {token:?} bound twice");
        s.id = Some(stream);
        let queued = std::mem::take(&mut s.queued);
        // A group ended before its stream existed counts as handed off only now.
        let finished_group = match s.kind {
            Kind::GroupOut { serve, .. } if !s.send_open => Some(serve),
            _ => None,
        };
        let prev = self.by_id.insert(stream, slot);
        // The transport never hands out a stream ID that is still in use.
        debug_assert!(prev.is_none(), "stream {stream:?} bound while in use");
        for out in queued {
            let a = match out {
                Out::Data(data) => Action::Write { stream, data },
                Out::Fin => Action::Finish { stream },
                Out::Reset(code) => Action::Reset { stream, code },
            };
            self.push_action(a);
        }
        self.maybe_remove(slot);
        if let Some(serve) = finished_group {
            self.group_gone(serve, slot);
        }
    }

    /// The transport could not open the stream for `token` (e.g. the peer's stream limit
    /// will not grow). The transaction fails as if the peer had reset it.
    pub fn on_stream_open_failed(&mut self, token: OpenToken) {
        let slot = token.0;
        if let Some(s) = self.slots.get_mut(&slot) {
            s.queued.clear();
            s.send_open = false;
        }
        self.fail_recv(slot, Some(ErrorCode::Transport));
        if let Some(s) = self.slots.remove(&slot)
            && let Kind::GroupOut { serve, .. } = s.kind
        {
            self.group_gone(serve, slot);
        }
    }

    /// The peer no longer reads a stream we write.
    pub fn on_stop_sending(&mut self, stream: StreamId, code: ErrorCode) {
        if self.closed {
            return;
        }
        let Some(&slot) = self.by_id.get(&stream) else {
            return;
        };
        let kind_serve = match self.slots.get(&slot).map(|s| &s.kind) {
            Some(Kind::GroupOut { serve, .. }) => Some((*serve, true)),
            Some(Kind::SubscribeIn {
                serve: Some(serve), ..
            }) => Some((*serve, false)),
            Some(Kind::FetchIn { asked: true, .. }) => {
                self.send(slot, Out::Reset(code));
                self.emit(SessionEvent::FetchCancelled {
                    request: FetchServeId(slot),
                    code,
                });
                self.stop(slot, ErrorCode::Cancel);
                return;
            }
            _ => None,
        };
        self.send(slot, Out::Reset(code));
        match kind_serve {
            Some((serve, true)) => {
                self.group_gone(serve, slot);
                self.emit(SessionEvent::GroupCancelled {
                    serve,
                    group: GroupId(slot),
                    code,
                });
            }
            Some((_, false)) => self.fail_recv(slot, Some(code)),
            None => {}
        }
    }

    /// The connection is gone (closed by either side, idle timeout). Every transaction
    /// ends: the application gets the same events as if each stream had been reset with
    /// `code` (Unannounced, GroupAborted, SubscriptionClosed, SubscribeCancelled, …).
    pub fn on_connection_closed(&mut self, code: ErrorCode) {
        let mut slots: Vec<u64> = self.slots.keys().copied().collect();
        slots.sort_unstable();
        for slot in slots {
            if self.slots.get(&slot).is_some_and(|s| s.recv_open) {
                self.fail_recv(slot, Some(code));
            } else if let Some(Kind::GroupOut { serve, .. }) =
                self.slots.get(&slot).map(|s| &s.kind)
            {
                let serve = *serve;
                self.group_gone(serve, slot);
            }
        }
        let serves: Vec<ServeId> = self.serves.keys().copied().collect();
        for serve in serves {
            self.cancel_serve(serve, Some(code));
        }
        // Nothing can be sent any more.
        self.actions.clear();
        self.closed = true;
        self.slots.clear();
        self.by_id.clear();
        self.subs.clear();
        self.interests.clear();
        self.tracks.clear();
    }

    /// Resets our side, stops theirs, and reports what the transaction loses.
    pub(super) fn fail_stream(&mut self, slot: u64, code: ErrorCode, why: String) {
        self.emit(SessionEvent::StreamFailed { code, reason: why });
        let Some(s) = self.slots.get(&slot) else {
            return;
        };
        // A broken Announce stream the peer opened must not be reset (moq-net closes the
        // session on that); FIN it instead.
        let is_interest_in = matches!(s.kind, Kind::InterestIn { .. });
        let stop = s.id.filter(|_| s.recv_open);
        self.send(
            slot,
            if is_interest_in {
                Out::Fin
            } else {
                Out::Reset(code)
            },
        );
        if let Some(stream) = stop {
            self.push_action(Action::StopSending { stream, code });
        }
        self.fail_recv(slot, Some(code));
    }

    /// The receive side ended abnormally (`Some(code)`) or by FIN (`None`, only from
    /// `process`): tell the application and tear the transaction down.
    pub(super) fn fail_recv(&mut self, slot: u64, code: Option<ErrorCode>) {
        let Some(s) = self.slots.get_mut(&slot) else {
            return;
        };
        s.recv_open = false;
        if code.is_none() && matches!(s.kind, Kind::FetchIn { asked: true, .. }) {
            // The fetcher has nothing more to say; we keep writing the response.
            self.maybe_remove(slot);
            return;
        }
        let kind = std::mem::replace(&mut s.kind, Kind::SetupOut);
        match kind {
            Kind::FetchIn { asked: true, .. } => {
                self.send(slot, Out::Reset(ErrorCode::Cancel));
                self.emit(SessionEvent::FetchCancelled {
                    request: FetchServeId(slot),
                    code: code.unwrap_or(ErrorCode::Cancel),
                });
            }
            Kind::FetchOut { id, .. } => {
                self.emit(SessionEvent::FetchEnded { fetch: id, code });
                self.send(
                    slot,
                    if code.is_some() {
                        Out::Reset(ErrorCode::Cancel)
                    } else {
                        Out::Fin
                    },
                );
            }
            Kind::GroupIn {
                target: Some((subscription, sequence)),
                ..
            } => {
                let code = code.unwrap_or(ErrorCode::WrongSize);
                self.emit(SessionEvent::GroupAborted {
                    subscription,
                    sequence,
                    code,
                });
            }
            Kind::InterestOut { id, heard, .. } => {
                let Heard { prefix, active, .. } = *heard;
                let pending = self.interests.remove(&id);
                // An interest leaves the map only here (the kind is replaced, so once).
                debug_assert_eq!(pending, Some(slot), "interest {id:?} not registered");
                let mut paths: Vec<String> = active.into_iter().collect();
                paths.sort();
                for p in paths {
                    self.emit(SessionEvent::Unannounced {
                        interest: id,
                        path: path::join(&prefix, &p),
                    });
                }
                self.emit(SessionEvent::InterestEnded { interest: id, code });
                self.send(
                    slot,
                    if code.is_some() {
                        Out::Reset(ErrorCode::Cancel)
                    } else {
                        Out::Fin
                    },
                );
            }
            Kind::SubscribeOut { id, .. } => {
                // Not asserted: `unsubscribe` removes the ID first, and a stream it left
                // unopened still fails here if the transport cannot open it.
                self.subs.remove(&id);
                self.emit(SessionEvent::SubscriptionClosed {
                    subscription: id,
                    code,
                });
                self.send(
                    slot,
                    if code.is_some() {
                        Out::Reset(ErrorCode::Cancel)
                    } else {
                        Out::Fin
                    },
                );
            }
            Kind::TrackOut { id, .. } => {
                let pending = self.tracks.remove(&id);
                // An answered request is a Drain by now, so a TrackOut is still pending.
                debug_assert_eq!(pending, Some(slot), "track request {id:?} not pending");
                self.emit(SessionEvent::TrackInfo {
                    request: id,
                    info: Err(code.unwrap_or(ErrorCode::UnexpectedMessage)),
                });
                self.send(slot, Out::Reset(ErrorCode::Cancel));
            }
            Kind::SubscribeIn {
                serve: Some(serve), ..
            } => {
                self.cancel_serve(serve, code);
            }
            Kind::InterestIn { .. } | Kind::TrackIn { .. } | Kind::Drain { .. } => {
                self.send(slot, Out::Fin);
            }
            Kind::GroupOut { serve, .. } => {
                self.group_gone(serve, slot);
            }
            Kind::SubscribeIn { serve: None, .. } | Kind::BidiUnknown(_) => {
                self.send(slot, Out::Reset(ErrorCode::Cancel))
            }
            _ => {}
        }
        if let Some(s) = self.slots.get_mut(&slot) {
            s.recv_open = false;
        }
        self.maybe_remove(slot);
    }
}
