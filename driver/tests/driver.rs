//! The session driver against the fake transport: what it does with a full stream, a
//! stopped stream and its hard bound, checked through the bytes and events the other end
//! of the connection sees.

use bytes::Bytes;
use driver::Driver;
use driver::fake::{FakeIo, Side, retarget};
use proto::session::{Session, SessionEvent};
use proto::{ErrorCode, SetupRole, SubscribeUpdate, Version};
use quic_io::Event;

const CLIENT: u64 = 1;
const SERVER: u64 = 2;

/// A client driver and a relay-side session it talks to, each on its own fake transport.
struct Pair {
    client: Driver,
    client_io: FakeIo,
    server: Driver,
    server_io: FakeIo,
}

impl Pair {
    fn new(server_bound: usize) -> Self {
        let mut client_io = FakeIo::new();
        client_io.add_session(CLIENT, Side::Client);
        let mut server_io = FakeIo::new();
        server_io.add_session(SERVER, Side::Server);
        let client = Session::client(Version::Lite05, 11, None, Some(SetupRole::Subscriber));
        let server = Session::relay(Version::Lite05, 22);
        Self {
            client: Driver::new(CLIENT, client, driver::DEFAULT_MAX_PENDING_BYTES),
            client_io,
            server: Driver::new(SERVER, server, server_bound),
            server_io,
        }
    }

    /// Moves everything each side wrote to the other until nothing moves.
    fn pump(&mut self) {
        for _ in 0..1000 {
            self.client.flush(&mut self.client_io);
            self.server.flush(&mut self.server_io);
            let up = self.client_io.take_output();
            let down = self.server_io.take_output();
            let writable = self.server_io.take_writable();
            if up.is_empty() && down.is_empty() && writable.is_empty() {
                return;
            }
            for event in up {
                self.server
                    .on_event(retarget(event, SERVER), &mut self.server_io);
            }
            for event in writable {
                self.server.on_event(event, &mut self.server_io);
            }
            for event in down {
                if let Event::StopSending { stream, code, .. } = event {
                    self.client_io.peer_stopped(CLIENT, stream, code);
                }
                self.client
                    .on_event(retarget(event, CLIENT), &mut self.client_io);
            }
        }
        panic!("the pair never settled");
    }

    fn server_events(&mut self) -> Vec<SessionEvent> {
        std::iter::from_fn(|| self.server.session_mut().poll_event()).collect()
    }

    fn client_events(&mut self) -> Vec<SessionEvent> {
        std::iter::from_fn(|| self.client.session_mut().poll_event()).collect()
    }

    /// The client subscribes to `b/video`; the server accepts and opens group 0.
    fn subscribed_group(&mut self) -> proto::session::GroupId {
        self.client
            .session_mut()
            .subscribe("b", "video", SubscribeUpdate::latest(0))
            .expect("subscribe");
        self.pump();
        let serve = self
            .server_events()
            .into_iter()
            .find_map(|e| match e {
                SessionEvent::SubscribeRequested { serve, .. } => Some(serve),
                _ => None,
            })
            .expect("the server saw the SUBSCRIBE");
        self.server
            .session_mut()
            .accept_subscribe(serve)
            .expect("accept");
        let group = self
            .server
            .session_mut()
            .start_group(serve, 0)
            .expect("group");
        self.pump();
        group
    }
}

fn frames(events: &[SessionEvent]) -> Vec<Bytes> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Frame { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn output_a_full_stream_refuses_waits_and_is_sent_in_order_when_writable() {
    let mut pair = Pair::new(driver::DEFAULT_MAX_PENDING_BYTES);
    let group = pair.subscribed_group();
    pair.client_events();
    pair.server_io.set_budget(SERVER, Some(0));
    let sent: Vec<Bytes> = (0..20u8).map(|i| Bytes::from(vec![i; 100])).collect();
    for (i, frame) in sent.iter().enumerate() {
        let server = pair.server.session_mut();
        server
            .write_frame(group, i as u64, frame.clone())
            .expect("frame");
    }
    pair.pump();
    assert!(frames(&pair.client_events()).is_empty());
    assert!(
        pair.server.pending_bytes() >= 2000,
        "the frames wait in the driver"
    );

    pair.server_io.set_budget(SERVER, Some(750));
    pair.pump();
    let first = frames(&pair.client_events());
    assert!(
        !first.is_empty() && first.len() < sent.len(),
        "a partial budget sends part"
    );
    pair.server_io.set_budget(SERVER, None);
    pair.pump();
    let rest = frames(&pair.client_events());
    let all: Vec<Bytes> = first.into_iter().chain(rest).collect();
    assert_eq!(all, sent);
    assert_eq!(pair.server.pending_bytes(), 0);
}

#[test]
fn a_stream_past_the_hard_bound_is_reset_and_counted_and_the_session_told() {
    let mut pair = Pair::new(1_000);
    let group = pair.subscribed_group();
    pair.client_events();
    pair.server_io.set_budget(SERVER, Some(0));
    let mut refused = false;
    for i in 0..20u64 {
        let frame = Bytes::from(vec![1u8; 100]);
        // Once the driver reset the stream the session refuses the group's frames.
        refused |= pair
            .server
            .session_mut()
            .write_frame(group, i, frame)
            .is_err();
        pair.server.flush(&mut pair.server_io);
        assert!(pair.server.pending_bytes() <= 1_000, "the hard bound holds");
    }
    assert!(refused, "the group outlived the reset");
    assert_eq!(pair.server.counters().overflow_resets, 1);
    pair.server_io.set_budget(SERVER, None);
    pair.pump();
    let events = pair.client_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SessionEvent::GroupAborted { .. })),
        "the subscriber sees the group reset, not a truncated one: {events:?}"
    );
    assert!(pair.server_events().iter().any(|e| matches!(
        e,
        SessionEvent::GroupCancelled {
            code: ErrorCode::Dropped,
            ..
        }
    )));
}

#[test]
fn a_write_to_a_stream_the_peer_stopped_reaches_the_session_as_stop_sending() {
    let mut pair = Pair::new(driver::DEFAULT_MAX_PENDING_BYTES);
    let group = pair.subscribed_group();
    pair.client_events();
    // The client stops the group stream, the newest stream the server opened.
    let group_stream = *pair
        .server_io
        .opened_streams(SERVER)
        .last()
        .expect("group stream");
    pair.server_io.peer_stopped(SERVER, group_stream, 0);
    pair.server
        .session_mut()
        .write_frame(group, 1, Bytes::from_static(b"late"))
        .expect("frame");
    pair.server.flush(&mut pair.server_io);
    let events = pair.server_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SessionEvent::GroupCancelled { .. })),
        "the session learns its group was stopped: {events:?}"
    );
    assert_eq!(
        pair.server.counters().write_failed,
        0,
        "a stop is not a failure"
    );
}
