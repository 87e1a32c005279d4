//! Closing 10 000 sessions on one relay worker, each holding a subscription: the cost of
//! a mass disconnect. Runs the real `RelayWorker` on the fake transport (no sockets), so
//! the figure is the relay's own bookkeeping. Before per-session indexes every close
//! scanned every subscriber on the worker (O(N²) for a mass disconnect).
//!
//! `cargo bench -p moq-relayd --bench session_close`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use driver::fake::{FakeIo, Side, retarget};
use driver::{DEFAULT_MAX_PENDING_BYTES, Driver};
use moq_relayd::auth::Authenticator;
use moq_relayd::config::AuthConfig;
use moq_relayd::relay::RelayWorker;
use proto::session::{Session, SessionEvent as MoqEvent};
use proto::{SetupRole, SubscribeUpdate, TrackInfo, Version};
use quic_io::{Application, Event, SessionId, SessionInfo, Transport};
use router::{Doorbell, Router};

const SESSIONS: u64 = 10_000;
/// Rounds of the publisher's handshake with the relay; it settles in a handful.
const MAX_ROUNDS: usize = 100;

struct NoDoorbell;

impl Doorbell for NoDoorbell {
    fn ring(&self) {}
}

fn ready(id: SessionId) -> Event {
    Event::SessionReady(SessionInfo {
        id,
        transport: Transport::WebTransport {
            protocol: Some(Version::Lite05.alpn().to_owned()),
        },
        authority: Some("relay.bench".into()),
        path: "/".into(),
        query: String::new(),
        remote: SocketAddr::from(([127, 0, 0, 1], 9)),
        local: None,
        server_name: None,
        handshake_deadline: None,
        peer_certificate: None,
    })
}

/// A worker with one publisher of `live` and `SESSIONS` subscribers of its track.
fn loaded_worker() -> (RelayWorker, FakeIo) {
    let doorbells = vec![Arc::new(NoDoorbell) as Arc<dyn Doorbell>];
    let config = router::Config {
        max_subscribers: 2 * SESSIONS as usize,
        ..router::Config::default()
    };
    let shard = Router::build(config, doorbells)
        .expect("router")
        .pop()
        .expect("one shard");
    let auth: AuthConfig = toml::from_str(r#"public = """#).expect("auth");
    let mut relay = RelayWorker::new(
        0,
        shard,
        Arc::new(Authenticator::new(&auth).expect("auth")),
        7,
    );
    let mut io = FakeIo::new();
    let now = Instant::now();

    // The publisher: a real client session, pumped until the relay has its broadcast.
    let publisher_id = SESSIONS;
    io.add_session(publisher_id, Side::Server);
    Application::<FakeIo>::on_event(&mut relay, now, ready(publisher_id), &mut io);
    let mut publisher_io = FakeIo::new();
    publisher_io.add_session(1, Side::Client);
    let mut publisher = Driver::new(
        1,
        Session::client(Version::Lite05, 2, None, Some(SetupRole::Publisher)),
        DEFAULT_MAX_PENDING_BYTES,
    );
    publisher
        .session_mut()
        .announce("live", &[])
        .expect("announce");
    for _ in 0..MAX_ROUNDS {
        publisher.flush(&mut publisher_io);
        for event in publisher_io.take_output() {
            let event = retarget(event, publisher_id);
            Application::<FakeIo>::on_event(&mut relay, now, event, &mut io);
        }
        Application::<FakeIo>::poll(&mut relay, now, &mut io);
        for event in io.take_output() {
            publisher.on_event(retarget(event, 1), &mut publisher_io);
        }
        while let Some(event) = publisher.session_mut().poll_event() {
            match event {
                MoqEvent::SubscribeRequested { serve, .. } => {
                    publisher
                        .session_mut()
                        .accept_subscribe(serve)
                        .expect("accept");
                }
                MoqEvent::TrackRequested { request, .. } => {
                    let answer = publisher
                        .session_mut()
                        .answer_track(request, TrackInfo::DEFAULT);
                    answer.expect("track info");
                }
                _ => {}
            }
        }
    }

    // Subscribers: each sends its SUBSCRIBE; what the relay answers is not needed here.
    for id in 0..SESSIONS {
        io.add_session(id, Side::Server);
        Application::<FakeIo>::on_event(&mut relay, now, ready(id), &mut io);
        let mut client_io = FakeIo::new();
        client_io.add_session(1, Side::Client);
        let session = Session::client(Version::Lite05, 3, None, Some(SetupRole::Subscriber));
        let mut client = Driver::new(1, session, DEFAULT_MAX_PENDING_BYTES);
        let update = SubscribeUpdate::latest(0);
        client
            .session_mut()
            .subscribe("live", "video", update)
            .expect("subscribe");
        client.flush(&mut client_io);
        for event in client_io.take_output() {
            Application::<FakeIo>::on_event(&mut relay, now, retarget(event, id), &mut io);
        }
        io.take_output();
    }
    Application::<FakeIo>::poll(&mut relay, now, &mut io);
    io.take_output();
    assert_eq!(
        relay.counters().sessions_opened,
        SESSIONS + 1,
        "every session was set up"
    );
    (relay, io)
}

fn close_all(c: &mut Criterion) {
    let mut group = c.benchmark_group("session_close");
    group.sample_size(10);
    group.bench_function("close_10000_subscribed_sessions", |b| {
        b.iter_batched(
            loaded_worker,
            |(mut relay, mut io)| {
                let now = Instant::now();
                for id in 0..SESSIONS {
                    let closed = Event::SessionClosed {
                        session: id,
                        code: 0,
                        reason: String::new(),
                    };
                    Application::<FakeIo>::on_event(&mut relay, now, closed, &mut io);
                }
                assert_eq!(relay.counters().sessions_closed, SESSIONS);
                (relay, io)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, close_all);
criterion_main!(benches);
