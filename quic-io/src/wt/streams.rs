//! What each stream of an `h3` connection is, and where its bytes go. A peer stream is
//! classified from its first bytes (control, QPACK, request, or a WebTransport stream of
//! some session), buffering at most `MAX_STREAM_HEADER` bytes of header; on the client,
//! streams the server opens for our session before we have read its 200 are held (at most
//! `MAX_EARLY_STREAMS`) and handed over in stream-id order once the session is ready. It
//! takes stream IDs, bytes and FIN/reset in and returns [`StreamAction`]s out; it must never
//! touch quinn-proto, a socket or a clock, and never feed the [`super::Handshake`] itself:
//! control and request bytes come back as actions for the glue to route.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use bytes::{Buf, Bytes, BytesMut};

use super::{BiKind, MAX_STREAM_HEADER, UniKind, h3, parse_bi_header, parse_uni_header};

/// Server streams held before the CONNECT response is read; a server opens a handful (MoQ
/// control, announces), so more than this before our session exists is abuse.
pub const MAX_EARLY_STREAMS: usize = 64;

/// Bit 1 of a QUIC stream ID marks a unidirectional stream (RFC 9000 section 2.1).
const STREAM_ID_UNI_BIT: u64 = 0x2;

// The longest stream header is two 8-byte varints: a `Pending` buffer that holds
// `MAX_STREAM_HEADER` bytes always classifies, so it never waits for (or holds) more.
const _: () = assert!(MAX_STREAM_HEADER >= 2 * 8);

fn is_uni(id: u64) -> bool {
    id & STREAM_ID_UNI_BIT != 0
}

/// What a stream of the connection turned out to be.
#[derive(Debug)]
enum Role {
    /// Header not complete yet (at most `MAX_STREAM_HEADER` bytes buffered).
    Pending(BytesMut),
    Control,
    /// QPACK streams and unknown types: read and discard.
    Ignore,
    /// The CONNECT (or another HTTP request) stream.
    Request,
    /// A WebTransport stream of the session: bytes go to the application.
    App,
    /// Client side: a session stream the server opened before we read its 200; delivered to
    /// the application when the session becomes ready (flow control bounds the bytes).
    Early {
        data: Vec<Bytes>,
        fin: bool,
        reset: Option<u64>,
    },
}

/// Where the handshake stands, as far as classifying a stream needs to know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionIds {
    /// The live session's ID ([`super::Handshake::session`]).
    pub live: Option<u64>,
    /// Client side: the ID our CONNECT will have while its response is awaited
    /// ([`super::Handshake::pending_session`]).
    pub pending: Option<u64>,
}

/// What the glue must do after feeding a stream's input. Codes are HTTP/3-space codes, as
/// they are on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamAction<S> {
    /// The peer opened a stream of the live session: tell the application.
    Opened { stream: S, bidi: bool },
    /// Bytes for the application on a session stream, in order.
    Data { stream: S, data: Bytes },
    /// The peer finished a session stream.
    Finished { stream: S },
    /// The peer reset a session stream.
    Reset { stream: S, code: u64 },
    /// Ask the peer to stop sending on this stream; nothing more of it will be delivered.
    Stop { stream: S, code: u64 },
    /// The peer's control stream: `Handshake::on_control_opened`.
    ControlOpened { stream: S },
    /// Bytes on the peer's control stream after its type: `Handshake::on_control_data`.
    ControlData { data: Bytes },
    /// The peer ended its control stream (FIN or reset): a connection error.
    ControlClosed,
    /// Bytes, or the FIN, on a request stream: `Handshake::on_request_data`.
    RequestData { stream: S, data: Bytes, fin: bool },
    /// The peer reset a request stream: `Handshake::on_request_reset`.
    RequestReset { stream: S },
}

/// The roles of one `h3` connection's streams. `S` is the glue's stream ID type (quinn's
/// `StreamId` in the worker, `u64` in tests).
#[derive(Debug)]
pub struct Streams<S> {
    roles: HashMap<S, Role>,
    /// Actions of the last call; the glue drains them (`poll_action`) before the next one,
    /// so this holds at most one input's worth.
    actions: VecDeque<StreamAction<S>>,
    /// The session is ready: its streams go to the application.
    ready: bool,
}

impl<S> Default for Streams<S> {
    fn default() -> Self {
        Self {
            roles: HashMap::new(),
            actions: VecDeque::new(),
            ready: false,
        }
    }
}

impl<S: Copy + Eq + Hash + Into<u64>> Streams<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The peer opened `stream`; what it is will be read from its first bytes.
    pub fn peer_opened(&mut self, stream: S) {
        self.roles.insert(stream, Role::Pending(BytesMut::new()));
    }

    /// We opened our control stream: never the application's.
    pub fn local_control(&mut self, stream: S) {
        self.roles.insert(stream, Role::Control);
    }

    /// We opened the CONNECT request stream (client side).
    pub fn local_request(&mut self, stream: S) {
        self.roles.insert(stream, Role::Request);
    }

    /// We opened a WebTransport stream of the session for the application.
    pub fn local_app(&mut self, stream: S) {
        self.roles.insert(stream, Role::App);
    }

    /// Whether events of `stream` (writable, stopped) are the application's: a session stream
    /// or one we hold no role for. The CONNECT stream is the handshake's to judge.
    pub fn is_app_stream(&self, stream: S) -> bool {
        matches!(self.roles.get(&stream), Some(Role::App) | None)
    }

    /// Whether `session_ready` has been called.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<StreamAction<S>> {
        self.actions.pop_front()
    }

    /// What the peer sent on `stream` in one read: its chunks, then whether it ended with a
    /// FIN or a reset (HTTP/3-space code). `ids` is the handshake's state now.
    pub fn on_input(
        &mut self,
        stream: S,
        chunks: Vec<Bytes>,
        fin: bool,
        reset: Option<u64>,
        ids: SessionIds,
    ) {
        // Drained after every call, so the queue holds one input's worth at most.
        debug_assert!(self.actions.is_empty(), "previous actions not drained");
        let Self {
            roles,
            actions,
            ready,
        } = self;
        let ready = *ready;
        let ended = fin || reset.is_some();
        let role = roles.entry(stream).or_insert(Role::App);
        let mut chunks = chunks.into_iter();
        // Classify a pending stream from its first bytes.
        let mut first: Option<Bytes> = None;
        if let Role::Pending(buf) = role {
            for ch in chunks.by_ref() {
                buf.extend_from_slice(&ch);
                if buf.len() >= MAX_STREAM_HEADER {
                    break;
                }
            }
            let header = if is_uni(stream.into()) {
                parse_uni_header(buf).map(|(k, n)| (Some(k), None, n))
            } else {
                parse_bi_header(buf).map(|(k, n)| (None, Some(k), n))
            };
            let Some((uni, bi, n)) = header else {
                if ended {
                    roles.remove(&stream);
                }
                return;
            };
            let mut rest = std::mem::take(buf);
            rest.advance(n);
            first = Some(rest.freeze());
            // Counted only while a client waits for its 200: never on the server's hot path.
            let early = match (ready, ids.pending) {
                (false, Some(_)) => roles
                    .values()
                    .filter(|r| matches!(r, Role::Early { .. }))
                    .count(),
                _ => 0,
            };
            let classified = match (uni, bi) {
                (Some(UniKind::Control), _) => {
                    actions.push_back(StreamAction::ControlOpened { stream });
                    Role::Control
                }
                (Some(UniKind::WebTransport { session: s }), _)
                | (_, Some(BiKind::WebTransport { session: s })) => {
                    if ids.live == Some(s) && ready {
                        actions.push_back(StreamAction::Opened {
                            stream,
                            bidi: !is_uni(stream.into()),
                        });
                        Role::App
                    } else if !ready && ids.pending == Some(s) && early < MAX_EARLY_STREAMS {
                        Role::Early {
                            data: Vec::new(),
                            fin: false,
                            reset: None,
                        }
                    } else {
                        actions.push_back(StreamAction::Stop {
                            stream,
                            code: h3::WT_BUFFERED_STREAM_REJECTED,
                        });
                        Role::Ignore
                    }
                }
                (_, Some(BiKind::Request)) => Role::Request,
                (Some(UniKind::Other(t)), _) => {
                    tracing::trace!(stream = stream.into(), typ = t, "ignoring uni stream");
                    actions.push_back(StreamAction::Stop {
                        stream,
                        code: h3::NO_ERROR,
                    });
                    Role::Ignore
                }
                _ => Role::Ignore,
            };
            roles.insert(stream, classified);
        }
        let Some(role) = roles.get_mut(&stream) else {
            return;
        };
        let data = first.into_iter().chain(chunks).filter(|b| !b.is_empty());
        match role {
            Role::Pending(_) | Role::Ignore => {}
            Role::Control => {
                actions.extend(data.map(|data| StreamAction::ControlData { data }));
                if ended {
                    actions.push_back(StreamAction::ControlClosed);
                }
            }
            Role::Early {
                data: held,
                fin: f,
                reset: r,
            } => {
                held.extend(data);
                *f |= fin;
                *r = r.or(reset);
            }
            Role::Request => {
                actions.extend(data.map(|data| StreamAction::RequestData {
                    stream,
                    data,
                    fin: false,
                }));
                if fin {
                    actions.push_back(StreamAction::RequestData {
                        stream,
                        data: Bytes::new(),
                        fin: true,
                    });
                }
                if reset.is_some() {
                    actions.push_back(StreamAction::RequestReset { stream });
                }
            }
            Role::App => {
                if ready {
                    actions.extend(data.map(|data| StreamAction::Data { stream, data }));
                    stream_end(actions, stream, fin, reset);
                }
            }
        }
        if ended && !matches!(role, Role::Request | Role::Control | Role::Early { .. }) {
            roles.remove(&stream);
        }
    }

    /// The session is ready: from now on its streams go to the application, starting with
    /// the ones held early (client side), in stream-ID order with their FIN or reset.
    pub fn session_ready(&mut self) {
        self.ready = true;
        let mut ids: Vec<S> = self
            .roles
            .iter()
            .filter(|(_, r)| matches!(r, Role::Early { .. }))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable_by_key(|id| (*id).into());
        for id in ids {
            let Some(Role::Early { data, fin, reset }) = self.roles.insert(id, Role::App) else {
                continue;
            };
            self.actions.push_back(StreamAction::Opened {
                stream: id,
                bidi: !is_uni(id.into()),
            });
            for d in data {
                self.actions.push_back(StreamAction::Data {
                    stream: id,
                    data: d,
                });
            }
            if fin || reset.is_some() {
                self.roles.remove(&id);
            }
            stream_end(&mut self.actions, id, fin, reset);
        }
    }
}

fn stream_end<S>(
    actions: &mut VecDeque<StreamAction<S>>,
    stream: S,
    fin: bool,
    reset: Option<u64>,
) {
    if let Some(code) = reset {
        actions.push_back(StreamAction::Reset { stream, code });
    } else if fin {
        actions.push_back(StreamAction::Finished { stream });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wt::stream_prefix;

    type A = StreamAction<u64>;

    /// Client-initiated bidi 0 is the CONNECT stream and so the session ID in these tests.
    const LIVE: SessionIds = SessionIds {
        live: Some(0),
        pending: None,
    };
    const NONE: SessionIds = SessionIds {
        live: None,
        pending: None,
    };
    const PENDING: SessionIds = SessionIds {
        live: None,
        pending: Some(0),
    };

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    fn actions(s: &mut Streams<u64>) -> Vec<A> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    /// `prefix` then `payload` as one chunk.
    fn with(prefix: Bytes, payload: &[u8]) -> Vec<Bytes> {
        let mut v = prefix.to_vec();
        v.extend_from_slice(payload);
        vec![Bytes::from(v)]
    }

    fn ready_server() -> Streams<u64> {
        let mut s = Streams::new();
        s.session_ready();
        assert!(actions(&mut s).is_empty());
        s
    }

    #[test]
    fn peer_control_stream_goes_to_the_handshake_and_its_end_is_an_error() {
        let mut s = Streams::new();
        s.peer_opened(2);
        // Type 0x00, then an empty SETTINGS frame.
        s.on_input(2, vec![b(&[0x00, 0x04, 0x00])], false, None, NONE);
        assert_eq!(
            actions(&mut s),
            vec![
                A::ControlOpened { stream: 2 },
                A::ControlData {
                    data: b(&[0x04, 0x00])
                }
            ]
        );
        assert!(!s.is_app_stream(2));
        s.on_input(2, vec![], true, None, NONE);
        assert_eq!(actions(&mut s), vec![A::ControlClosed]);
        // Still the control stream: a second one would be the handshake's error to raise.
        assert!(!s.is_app_stream(2));
    }

    #[test]
    fn session_uni_and_bi_streams_with_the_live_session_id_go_to_the_app() {
        let mut s = ready_server();
        s.peer_opened(2);
        s.on_input(2, with(stream_prefix(false, 0), b"hi"), false, None, LIVE);
        assert_eq!(
            actions(&mut s),
            vec![
                A::Opened {
                    stream: 2,
                    bidi: false
                },
                A::Data {
                    stream: 2,
                    data: b(b"hi")
                }
            ]
        );
        s.peer_opened(4);
        s.on_input(4, with(stream_prefix(true, 0), b"yo"), true, None, LIVE);
        assert_eq!(
            actions(&mut s),
            vec![
                A::Opened {
                    stream: 4,
                    bidi: true
                },
                A::Data {
                    stream: 4,
                    data: b(b"yo")
                },
                A::Finished { stream: 4 }
            ]
        );
        s.on_input(2, vec![b(b"more")], false, Some(7), LIVE);
        assert_eq!(
            actions(&mut s),
            vec![
                A::Data {
                    stream: 2,
                    data: b(b"more")
                },
                A::Reset { stream: 2, code: 7 }
            ]
        );
    }

    #[test]
    fn session_streams_with_a_wrong_session_id_are_stopped_and_ignored() {
        let mut s = ready_server();
        for (id, bidi) in [(2u64, false), (4, true)] {
            s.peer_opened(id);
            s.on_input(id, with(stream_prefix(bidi, 8), b"x"), false, None, LIVE);
            assert_eq!(
                actions(&mut s),
                vec![A::Stop {
                    stream: id,
                    code: h3::WT_BUFFERED_STREAM_REJECTED
                }]
            );
            s.on_input(id, vec![b(b"ignored")], true, None, LIVE);
            assert!(actions(&mut s).is_empty());
        }
        // Before the session is ready (server side: nothing pending) too.
        let mut s = Streams::new();
        s.peer_opened(2);
        s.on_input(2, with(stream_prefix(false, 0), b""), false, None, PENDING);
        assert!(actions(&mut s).is_empty(), "held early, not stopped");
        let mut s = Streams::new();
        s.peer_opened(2);
        s.on_input(2, with(stream_prefix(false, 0), b""), false, None, NONE);
        assert_eq!(
            actions(&mut s),
            vec![A::Stop {
                stream: 2,
                code: h3::WT_BUFFERED_STREAM_REJECTED
            }]
        );
    }

    #[test]
    fn unknown_uni_type_is_stopped_with_h3_no_error_and_qpack_is_ignored() {
        let mut s = ready_server();
        s.peer_opened(2);
        // 0x21: a reserved (GREASE) stream type.
        s.on_input(2, vec![b(&[0x21, 1, 2, 3])], false, None, LIVE);
        assert_eq!(
            actions(&mut s),
            vec![A::Stop {
                stream: 2,
                code: h3::NO_ERROR
            }]
        );
        s.peer_opened(6);
        s.on_input(6, vec![b(&[0x02, 0xaa])], false, None, LIVE);
        assert!(actions(&mut s).is_empty());
        assert!(!s.is_app_stream(6));
    }

    #[test]
    fn request_stream_bytes_fin_and_reset_go_to_the_handshake() {
        let mut s = Streams::new();
        s.peer_opened(0);
        // The chunks of the read that classifies the stream come out joined (they were
        // gathered to read its header); later reads keep their chunks.
        s.on_input(0, vec![b(&[0x01, 0x02]), b(&[0xaa])], false, None, NONE);
        assert_eq!(
            actions(&mut s),
            vec![A::RequestData {
                stream: 0,
                data: b(&[0x01, 0x02, 0xaa]),
                fin: false
            }]
        );
        s.on_input(0, vec![b(&[0xbb]), b(&[0xcc])], true, None, NONE);
        assert_eq!(
            actions(&mut s),
            vec![
                A::RequestData {
                    stream: 0,
                    data: b(&[0xbb]),
                    fin: false
                },
                A::RequestData {
                    stream: 0,
                    data: b(&[0xcc]),
                    fin: false
                },
                A::RequestData {
                    stream: 0,
                    data: Bytes::new(),
                    fin: true
                },
            ]
        );
        s.on_input(0, vec![], false, Some(3), NONE);
        assert_eq!(actions(&mut s), vec![A::RequestReset { stream: 0 }]);
    }

    #[test]
    fn header_split_across_chunks_and_reads_is_buffered_until_whole() {
        let mut s = ready_server();
        s.peer_opened(2);
        // 0x40 0x54: the two-byte encoding of type 0x54; then session 0.
        s.on_input(2, vec![b(&[0x40])], false, None, LIVE);
        assert!(actions(&mut s).is_empty());
        s.on_input(2, vec![b(&[0x54])], false, None, LIVE);
        assert!(actions(&mut s).is_empty());
        s.on_input(2, vec![b(&[0x00]), b(b"ab")], false, None, LIVE);
        assert_eq!(
            actions(&mut s),
            vec![
                A::Opened {
                    stream: 2,
                    bidi: false
                },
                A::Data {
                    stream: 2,
                    data: b(b"ab")
                }
            ]
        );
        // A stream that ends inside its header is forgotten.
        s.peer_opened(6);
        s.on_input(6, vec![b(&[0x40])], true, None, LIVE);
        assert!(actions(&mut s).is_empty());
        assert!(s.is_app_stream(6), "no role kept");
    }

    #[test]
    fn header_buffer_stops_at_max_stream_header() {
        let mut s = ready_server();
        s.peer_opened(4);
        // The longest header there is: two 8-byte varints (type 0x41, session 0).
        let mut header = vec![0xc0, 0, 0, 0, 0, 0, 0, 0x41];
        header.extend_from_slice(&[0xc0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(header.len(), MAX_STREAM_HEADER);
        // One byte per chunk: the chunks after the header are not copied into the header
        // buffer but delivered as they came.
        let mut chunks: Vec<Bytes> = header.iter().map(|x| b(&[*x])).collect();
        chunks.push(b(b"p1"));
        chunks.push(b(b"p2"));
        s.on_input(4, chunks, false, None, LIVE);
        assert_eq!(
            actions(&mut s),
            vec![
                A::Opened {
                    stream: 4,
                    bidi: true
                },
                A::Data {
                    stream: 4,
                    data: b(b"p1")
                },
                A::Data {
                    stream: 4,
                    data: b(b"p2")
                }
            ]
        );
        // A first chunk longer than the header: the rest of it is data.
        s.peer_opened(8);
        let mut long = header.clone();
        long.extend_from_slice(b"tail");
        s.on_input(8, vec![Bytes::from(long)], false, None, LIVE);
        assert_eq!(
            actions(&mut s)[1],
            A::Data {
                stream: 8,
                data: b(b"tail")
            }
        );
    }

    #[test]
    fn early_streams_are_held_then_released_in_stream_id_order_with_fin_and_reset() {
        let mut s = Streams::new();
        s.local_request(0);
        for (id, payload, fin, reset) in [
            (7u64, &b"seven"[..], true, None),
            (3, b"three", false, None),
            (1, b"one", false, Some(5)),
        ] {
            s.peer_opened(id);
            let bidi = !is_uni(id);
            s.on_input(
                id,
                with(stream_prefix(bidi, 0), payload),
                fin,
                reset,
                PENDING,
            );
            assert!(actions(&mut s).is_empty(), "stream {id} held");
        }
        s.on_input(3, vec![b(b"+more")], false, None, PENDING);
        assert!(actions(&mut s).is_empty());
        s.session_ready();
        assert!(s.is_ready());
        assert_eq!(
            actions(&mut s),
            vec![
                A::Opened {
                    stream: 1,
                    bidi: true
                },
                A::Data {
                    stream: 1,
                    data: b(b"one")
                },
                A::Reset { stream: 1, code: 5 },
                A::Opened {
                    stream: 3,
                    bidi: false
                },
                A::Data {
                    stream: 3,
                    data: b(b"three")
                },
                A::Data {
                    stream: 3,
                    data: b(b"+more")
                },
                A::Opened {
                    stream: 7,
                    bidi: false
                },
                A::Data {
                    stream: 7,
                    data: b(b"seven")
                },
                A::Finished { stream: 7 },
            ]
        );
        // The released stream that is still open now delivers directly.
        s.on_input(3, vec![b(b"live")], false, None, LIVE);
        assert_eq!(
            actions(&mut s),
            vec![A::Data {
                stream: 3,
                data: b(b"live")
            }]
        );
    }

    #[test]
    fn more_than_max_early_streams_are_refused() {
        let mut s = Streams::new();
        let uni = |n: u64| 3 + 4 * n;
        for n in 0..MAX_EARLY_STREAMS as u64 {
            s.peer_opened(uni(n));
            s.on_input(
                uni(n),
                with(stream_prefix(false, 0), b""),
                false,
                None,
                PENDING,
            );
            assert!(actions(&mut s).is_empty());
        }
        let extra = uni(MAX_EARLY_STREAMS as u64);
        s.peer_opened(extra);
        s.on_input(
            extra,
            with(stream_prefix(false, 0), b"x"),
            false,
            None,
            PENDING,
        );
        assert_eq!(
            actions(&mut s),
            vec![A::Stop {
                stream: extra,
                code: h3::WT_BUFFERED_STREAM_REJECTED
            }]
        );
        s.session_ready();
        let opened = actions(&mut s)
            .iter()
            .filter(|a| matches!(a, A::Opened { .. }))
            .count();
        assert_eq!(opened, MAX_EARLY_STREAMS);
    }
}
