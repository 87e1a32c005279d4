//! The relay glue without sockets: real router shards and relay workers, each on a
//! `FakeIo`, and moq-lite client sessions (proto, through the same session driver) wired
//! to them in memory. Every step is deterministic: the harness moves events until
//! nothing moves, so a test reads as a sequence of things a peer does and sees.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use driver::Driver;
use driver::fake::{FakeIo, Side, retarget};
use proto::session::{GroupId, ServeId, Session, SessionEvent as MoqEvent, SubscriptionId};
use proto::{SetupRole, SubscribeUpdate, TrackInfo, Version};
use quic_io::{Application, Event as IoEvent, SessionId, SessionInfo, Transport};
use router::{Doorbell, Router};

use super::{OpenClose, RelayWorker};
use crate::auth::Authenticator;
use crate::config::{AuthConfig, Generation};

/// Rounds of event moving before a test calls the system stuck: far above what any
/// test here needs (tens), so hitting it means a loop, not a slow test.
const MAX_PUMP_ROUNDS: usize = 10_000;

const TRACK: &str = "video";

/// Shards here are driven by the harness, which polls every worker each round.
struct NoDoorbell;

impl Doorbell for NoDoorbell {
    fn ring(&self) {}
}

fn open_auth() -> Arc<Authenticator> {
    let config: AuthConfig = toml::from_str(r#"public = """#).expect("auth config");
    Arc::new(Authenticator::new(&config).expect("open auth"))
}

fn router_config() -> router::Config {
    router::Config {
        // No linger: a lost publisher's broadcast ends at once, so tests see the end.
        linger: Duration::ZERO,
        ..router::Config::default()
    }
}

struct Worker {
    relay: RelayWorker,
    io: FakeIo,
    next_session: SessionId,
}

/// One client connection: a moq-lite client session on its own fake transport, and the
/// relay-side session it talks to.
struct Client {
    worker: usize,
    relay_session: SessionId,
    driver: Driver,
    io: FakeIo,
    /// Events this client's session raised, oldest first, not yet looked at.
    events: VecDeque<MoqEvent>,
    /// Publisher side: the relay's subscriptions to us, accepted as they come.
    serves: Vec<ServeId>,
    closed: Option<u64>,
}

/// The client's own session id on its fake transport (one connection each).
const CLIENT_SESSION: SessionId = 1;

struct Relay {
    workers: Vec<Worker>,
    clients: Vec<Client>,
    now: Instant,
}

impl Relay {
    fn new(workers: usize) -> Self {
        Self::with_config(workers, router_config())
    }

    fn with_config(workers: usize, config: router::Config) -> Self {
        Self::with_auth(workers, config, open_auth())
    }

    fn with_auth(workers: usize, config: router::Config, auth: Arc<Authenticator>) -> Self {
        let doorbells = (0..workers)
            .map(|_| Arc::new(NoDoorbell) as Arc<dyn Doorbell>)
            .collect();
        let shards = Router::build(config, doorbells).expect("router");
        let workers = shards
            .into_iter()
            .enumerate()
            .map(|(index, shard)| Worker {
                relay: RelayWorker::new(index, shard, auth.clone(), 7),
                io: FakeIo::new(),
                next_session: 100,
            })
            .collect();
        Self {
            workers,
            clients: Vec::new(),
            now: Instant::now(),
        }
    }

    /// Connects a moq-lite-05 WebTransport client to `worker`; returns its index.
    fn connect(&mut self, worker: usize, role: SetupRole) -> usize {
        self.connect_on(worker, role, Version::Lite05)
    }

    /// Connects a WebTransport client speaking `version` to `worker`; returns its index.
    fn connect_on(&mut self, worker: usize, role: SetupRole, version: Version) -> usize {
        let w = &mut self.workers[worker];
        let relay_session = w.next_session;
        w.next_session += 1;
        w.io.add_session(relay_session, Side::Server);
        let mut io = FakeIo::new();
        io.add_session(CLIENT_SESSION, Side::Client);
        // Distinct per client, as real clients' random ids are: a chain holding the
        // subscriber's own id would be withheld from it (split horizon).
        let hop_id = 1000 + self.clients.len() as u64;
        let session = Session::client(version, hop_id, None, Some(role));
        let ready = IoEvent::SessionReady(SessionInfo {
            id: relay_session,
            transport: Transport::WebTransport {
                protocol: Some(version.alpn().to_owned()),
            },
            authority: Some("relay.test".into()),
            path: "/".into(),
            query: String::new(),
            remote: SocketAddr::from(([127, 0, 0, 1], 9)),
            local: None,
            server_name: None,
            handshake_deadline: None,
            peer_certificate: None,
        });
        Application::<FakeIo>::on_event(&mut w.relay, self.now, ready, &mut w.io);
        self.clients.push(Client {
            worker,
            relay_session,
            driver: Driver::new(CLIENT_SESSION, session, driver::DEFAULT_MAX_PENDING_BYTES),
            io,
            events: VecDeque::new(),
            serves: Vec::new(),
            closed: None,
        });
        self.pump();
        self.clients.len() - 1
    }

    fn client(&mut self, index: usize) -> &mut Session {
        self.clients[index].driver.session_mut()
    }

    /// Moves events between clients and workers until nothing moves.
    fn pump(&mut self) {
        for _ in 0..MAX_PUMP_ROUNDS {
            if !self.round() {
                return;
            }
        }
        panic!("relay still busy after {MAX_PUMP_ROUNDS} rounds");
    }

    fn round(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        // Clients act, and what they did reaches their relay session.
        for client in &mut self.clients {
            client.driver.flush(&mut client.io);
            let worker = &mut self.workers[client.worker];
            for event in client.io.take_output() {
                moved = true;
                if let IoEvent::StopSending { stream, code, .. } = event {
                    worker.io.peer_stopped(client.relay_session, stream, code);
                }
                let event = retarget(event, client.relay_session);
                Application::<FakeIo>::on_event(&mut worker.relay, now, event, &mut worker.io);
            }
            for event in client.io.take_writable() {
                moved = true;
                client.driver.on_event(event, &mut client.io);
            }
        }
        // Workers run their loop iteration, and what they did reaches the clients.
        for (index, worker) in self.workers.iter_mut().enumerate() {
            for event in worker.io.take_writable() {
                moved = true;
                Application::<FakeIo>::on_event(&mut worker.relay, now, event, &mut worker.io);
            }
            Application::<FakeIo>::poll(&mut worker.relay, now, &mut worker.io);
            if !worker.relay.may_park {
                moved = true;
            }
            for event in worker.io.take_output() {
                let session = event.session();
                let Some(client) = self
                    .clients
                    .iter_mut()
                    .find(|c| c.worker == index && c.relay_session == session)
                else {
                    continue;
                };
                moved = true;
                match event {
                    IoEvent::SessionClosed { code, .. } => {
                        client.closed = Some(code);
                        client
                            .driver
                            .session_mut()
                            .on_connection_closed(proto::ErrorCode::from_number(code));
                    }
                    IoEvent::StopSending { stream, code, .. } => {
                        client.io.peer_stopped(CLIENT_SESSION, stream, code);
                        let event = retarget(event_with(stream, code), CLIENT_SESSION);
                        client.driver.on_event(event, &mut client.io);
                    }
                    other => {
                        let event = retarget(other, CLIENT_SESSION);
                        client.driver.on_event(event, &mut client.io);
                    }
                }
            }
        }
        // Clients look at what their sessions raised; publishers accept what is asked.
        for client in &mut self.clients {
            while let Some(event) = client.driver.session_mut().poll_event() {
                moved = true;
                match &event {
                    MoqEvent::SubscribeRequested { serve, .. } => {
                        let serve = *serve;
                        client
                            .driver
                            .session_mut()
                            .accept_subscribe(serve)
                            .expect("accept");
                        client.serves.push(serve);
                    }
                    MoqEvent::TrackRequested { request, .. } => {
                        let request = *request;
                        client
                            .driver
                            .session_mut()
                            .answer_track(request, TrackInfo::DEFAULT)
                            .expect("track info");
                    }
                    MoqEvent::SubscribeCancelled { serve, .. } => {
                        let serve = *serve;
                        client.serves.retain(|s| *s != serve);
                    }
                    _ => {}
                }
                client.events.push_back(event);
            }
        }
        moved
    }

    /// A publisher announces `path` and the relay has routed it.
    fn publish(&mut self, worker: usize, path: &str) -> usize {
        self.publish_on(worker, path, Version::Lite05)
    }

    fn publish_on(&mut self, worker: usize, path: &str, version: Version) -> usize {
        let publisher = self.connect_on(worker, SetupRole::Publisher, version);
        self.client(publisher)
            .announce(path, &[])
            .expect("announce");
        self.pump();
        publisher
    }

    /// A subscriber follows `path` and subscribes to its track once announced.
    fn subscribe(&mut self, worker: usize, path: &str) -> (usize, SubscriptionId) {
        self.subscribe_on(worker, path, Version::Lite05)
    }

    fn subscribe_on(
        &mut self,
        worker: usize,
        path: &str,
        version: Version,
    ) -> (usize, SubscriptionId) {
        let subscriber = self.connect_on(worker, SetupRole::Subscriber, version);
        self.client(subscriber)
            .announce_interest(path)
            .expect("interest");
        self.pump();
        assert!(
            self.take_events(subscriber)
                .iter()
                .any(|e| matches!(e, MoqEvent::Announced { path: p, .. } if p == path)),
            "{path} was not announced to the subscriber on worker {worker}"
        );
        let update = SubscribeUpdate {
            priority: 0,
            ordered: true,
            max_latency_ms: 30_000,
            start: None,
            end: None,
            frame_start: 0,
            frame_end: None,
        };
        let subscription = self
            .client(subscriber)
            .subscribe(path, TRACK, update)
            .expect("subscribe");
        self.pump();
        (subscriber, subscription)
    }

    /// Starts group `sequence` on every relay subscription the publisher serves.
    fn start_group(&mut self, publisher: usize, sequence: u64) -> Vec<GroupId> {
        let serves = self.clients[publisher].serves.clone();
        assert!(!serves.is_empty(), "nobody subscribed to the publisher");
        serves
            .into_iter()
            .map(|serve| {
                self.client(publisher)
                    .start_group(serve, sequence)
                    .expect("group")
            })
            .collect()
    }

    fn write_frame(
        &mut self,
        publisher: usize,
        groups: &[GroupId],
        timestamp: u64,
        payload: &[u8],
    ) {
        for &group in groups {
            let payload = Bytes::copy_from_slice(payload);
            self.client(publisher)
                .write_frame(group, timestamp, payload)
                .expect("frame");
        }
    }

    fn take_events(&mut self, client: usize) -> Vec<MoqEvent> {
        self.clients[client].events.drain(..).collect()
    }

    fn close_client(&mut self, client: usize) {
        self.close_client_now(client);
        self.pump();
    }

    /// The relay learns that `client`'s connection is gone; nothing else runs yet.
    fn close_client_now(&mut self, client: usize) {
        let c = &self.clients[client];
        let worker = &mut self.workers[c.worker];
        let closed = IoEvent::SessionClosed {
            session: c.relay_session,
            code: 0,
            reason: "test closed".into(),
        };
        Application::<FakeIo>::on_event(&mut worker.relay, self.now, closed, &mut worker.io);
        self.clients[client].closed = Some(0);
    }
}

fn event_with(stream: quic_io::StreamId, code: u32) -> IoEvent {
    IoEvent::StopSending {
        session: CLIENT_SESSION,
        stream,
        code,
    }
}

/// (group, timestamp, payload) of every frame in `events`, in order.
fn frames(events: &[MoqEvent], subscription: SubscriptionId) -> Vec<(u64, Option<u64>, Bytes)> {
    events
        .iter()
        .filter_map(|e| match e {
            MoqEvent::Frame {
                subscription: s,
                sequence,
                timestamp,
                payload,
            } if *s == subscription => Some((*sequence, *timestamp, payload.clone())),
            _ => None,
        })
        .collect()
}

fn payload(group: u64, frame: u64) -> Vec<u8> {
    format!("group {group} frame {frame}").into_bytes()
}

#[test]
fn frames_cross_from_a_publisher_on_one_worker_to_a_subscriber_on_another() {
    // 05 to 05, and each pairing with 06 (typed announcements, frame-bounded headers).
    for (published, subscribed) in [
        (Version::Lite05, Version::Lite05),
        (Version::Lite06, Version::Lite06),
        (Version::Lite06, Version::Lite05),
        (Version::Lite05, Version::Lite06),
    ] {
        frames_cross_between(published, subscribed);
    }
}

fn frames_cross_between(published: Version, subscribed: Version) {
    let mut relay = Relay::new(2);
    let publisher = relay.publish_on(0, "live", published);
    let (subscriber, subscription) = relay.subscribe_on(1, "live", subscribed);
    let mut sent = Vec::new();
    for group in 0..3 {
        let groups = relay.start_group(publisher, group);
        for frame in 0..4 {
            // Timestamps out of step with arrival order: the relay must carry them as sent.
            let timestamp = 1_000_000 + group * 100 + (3 - frame);
            relay.write_frame(publisher, &groups, timestamp, &payload(group, frame));
            sent.push((group, Some(timestamp), Bytes::from(payload(group, frame))));
        }
        for g in groups {
            relay.client(publisher).end_group(g).expect("end group");
        }
        relay.pump();
    }
    let events = relay.take_events(subscriber);
    assert_eq!(
        frames(&events, subscription),
        sent,
        "{published} → {subscribed}"
    );
    // The frames crossed: worker 0's shard pushed them to worker 1's.
    assert!(relay.workers[0].relay.shard.stats().frame_pushes >= sent.len() as u64);
}

#[test]
fn a_subscriber_whose_transport_refuses_writes_waits_then_resumes_in_place() {
    let mut relay = Relay::new(1);
    relay.workers[0].relay.max_pending_bytes = 2_000;
    let publisher = relay.publish(0, "live");
    let (subscriber, subscription) = relay.subscribe(0, "live");
    let (fast, fast_subscription) = relay.subscribe(0, "live");
    let relay_session = relay.clients[subscriber].relay_session;
    relay.workers[0].io.set_budget(relay_session, Some(0));

    let groups = relay.start_group(publisher, 0);
    let mut sent = Vec::new();
    for frame in 0..40 {
        let data = vec![frame as u8; 200];
        relay.write_frame(publisher, &groups, frame, &data);
        sent.push((0, Some(frame), Bytes::from(data)));
        relay.pump();
        let pending = relay.workers[0].relay.sessions[&relay_session].pending_bytes();
        assert!(
            pending <= 2_000 + 400,
            "a blocked session's output grew to {pending} bytes past its bound"
        );
    }
    assert!(
        frames(&relay.take_events(subscriber), subscription).is_empty(),
        "a session that cannot write got frames"
    );
    assert_eq!(
        frames(&relay.take_events(fast), fast_subscription),
        sent,
        "the other subscriber must not wait for the slow one"
    );

    relay.workers[0].io.set_budget(relay_session, None);
    relay.pump();
    assert_eq!(
        frames(&relay.take_events(subscriber), subscription),
        sent,
        "the slow subscriber resumes where it stopped, losing nothing"
    );
}

#[test]
fn closing_a_publisher_session_ends_its_broadcast_for_everyone() {
    let mut relay = Relay::new(2);
    let publisher = relay.publish(0, "live");
    let (near, near_sub) = relay.subscribe(0, "live");
    let (far, far_sub) = relay.subscribe(1, "live");
    let groups = relay.start_group(publisher, 0);
    relay.write_frame(publisher, &groups, 1, b"only frame");
    relay.pump();
    relay.close_client(publisher);
    for (client, subscription) in [(near, near_sub), (far, far_sub)] {
        let events = relay.take_events(client);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, MoqEvent::Unannounced { path, .. } if path == "live")),
            "client {client} was not told the broadcast ended: {events:?}"
        );
        assert!(
            events.iter().any(|e| matches!(e, MoqEvent::SubscriptionClosed { subscription: s, .. } if *s == subscription)),
            "client {client}'s subscription did not end: {events:?}"
        );
    }
    for worker in &relay.workers {
        assert!(worker.relay.shard.announced("").is_empty());
    }
}

#[test]
fn closing_a_subscriber_session_releases_its_router_subscribers_and_fetches() {
    let mut relay = Relay::new(3);
    let publisher = relay.publish(0, "live");
    // Someone on worker 1 wants the track, so worker 0 subscribes upstream and caches.
    relay.subscribe(1, "live");
    let groups = relay.start_group(publisher, 5);
    relay.write_frame(publisher, &groups, 1, b"cached");
    for g in groups {
        relay.client(publisher).end_group(g).expect("end group");
    }
    relay.pump();

    // A session on worker 2, which holds no copy of the group, subscribes and fetches;
    // worker 2 sees its requests but worker 0 does not run yet, so the FETCH waits for
    // the owner's answer.
    let subscriber = relay.connect(2, SetupRole::Subscriber);
    let relay_session = relay.clients[subscriber].relay_session;
    let update = SubscribeUpdate::latest(0);
    relay
        .client(subscriber)
        .subscribe("live", TRACK, update)
        .expect("subscribe");
    relay
        .client(subscriber)
        .fetch("live", TRACK, 0, 5)
        .expect("fetch");
    let client = &mut relay.clients[subscriber];
    client.driver.flush(&mut client.io);
    let worker = &mut relay.workers[2];
    for event in client.io.take_output() {
        let event = retarget(event, relay_session);
        Application::<FakeIo>::on_event(&mut worker.relay, relay.now, event, &mut worker.io);
    }
    let shard = &worker.relay.shard;
    assert_eq!(
        shard.subscriber_count(),
        1,
        "the subscription holds a router subscriber"
    );
    assert_eq!(
        shard.pending_fetch_count(),
        1,
        "the fetch waits for the owner"
    );
    assert_eq!(worker.relay.fetches.len(), 1);
    assert_eq!(worker.relay.subscribers.len(), 1);

    // Released by the close itself, not by the owner's answer arriving later.
    relay.close_client_now(subscriber);
    let worker = &relay.workers[2];
    assert_eq!(worker.relay.shard.subscriber_count(), 0);
    assert_eq!(worker.relay.shard.pending_fetch_count(), 0);
    assert!(worker.relay.subscribers.is_empty());
    assert!(worker.relay.fetches.is_empty());
    assert!(!worker.relay.sessions.contains_key(&relay_session));
    relay.pump();
    assert_eq!(relay.workers[2].relay.shard.pending_fetch_count(), 0);
}

// ------------------------------------------------------------------ auth

fn auth_from(toml_text: &str, generation: Generation) -> Arc<Authenticator> {
    let mut config: AuthConfig = toml::from_str(toml_text).expect("auth config");
    config.generation = generation;
    Arc::new(Authenticator::new(&config).expect("auth"))
}

/// One worker on a fake transport, and a WebTransport session arriving at `target`.
fn lone_worker(auth: Arc<Authenticator>) -> (RelayWorker, FakeIo) {
    let doorbells = vec![Arc::new(NoDoorbell) as Arc<dyn Doorbell>];
    let shard = Router::build(router_config(), doorbells)
        .expect("router")
        .pop()
        .expect("one shard");
    (RelayWorker::new(0, shard, auth, 7), FakeIo::new())
}

fn arrive(relay: &mut RelayWorker, io: &mut FakeIo, id: SessionId, path: &str, query: &str) {
    io.add_session(id, Side::Server);
    let ready = IoEvent::SessionReady(SessionInfo {
        id,
        transport: Transport::WebTransport {
            protocol: Some(Version::Lite05.alpn().to_owned()),
        },
        authority: Some("relay.test".into()),
        path: path.into(),
        query: query.into(),
        remote: SocketAddr::from(([127, 0, 0, 1], 9)),
        local: None,
        server_name: None,
        handshake_deadline: None,
        peer_certificate: None,
    });
    Application::<FakeIo>::on_event(relay, Instant::now(), ready, io);
}

#[test]
fn a_refused_session_is_closed_with_its_generation_code_counted_and_released() {
    for (generation, code) in [(Generation::V014, 6), (Generation::V017, 0x2)] {
        let (mut relay, mut io) = lone_worker(auth_from(r#"public = "anon""#, generation));
        arrive(&mut relay, &mut io, 1, "/other", "");
        assert_eq!(io.closed(1), Some(&(code, "unauthorized".to_owned())));
        // quic-io raises no SessionClosed for our own close: the relay released it.
        assert!(relay.sessions.is_empty(), "{generation:?}");
        let counters = relay.counters();
        assert_eq!(counters.sessions_closed, 1);
        assert_eq!(counters.auth_refusals.get("no_public_access"), 1);
        assert_eq!(counters.auth_refusals.total(), 1);

        arrive(&mut relay, &mut io, 2, "/anon", "");
        assert_eq!(io.closed(2), None, "public access at /anon");
        assert_eq!(relay.sessions.len(), 1);
    }
}

#[test]
fn a_session_is_closed_when_its_token_expires_and_not_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = moq_token::Key::generate(
        moq_token::Algorithm::HS256,
        Some(moq_token::KeyId::decode("k").expect("kid")),
    )
    .expect("key");
    let path = dir.path().join("k.jwk");
    key.to_file(&path).expect("key file");
    let exp = std::time::SystemTime::now() + Duration::from_secs(3);
    let claims = moq_token::Claims::default()
        .with_subscribe([""])
        .with_expires(exp);
    let token = key.sign(&claims).expect("token");
    let auth = auth_from(
        &format!("key = {:?}", path.display().to_string()),
        Generation::V014,
    );
    let (mut relay, mut io) = lone_worker(auth);
    let start = Instant::now();
    arrive(&mut relay, &mut io, 1, "/", &format!("jwt={token}"));
    assert_eq!(io.closed(1), None, "a valid token is admitted");

    Application::<FakeIo>::poll(&mut relay, start, &mut io);
    assert_eq!(io.closed(1), None);
    // `exp` is whole seconds, so the deadline is within a second of the 3 s asked for.
    let wake = Application::<FakeIo>::timeout(&relay).expect("a deadline for the expiry");
    let left = wake - start;
    assert!(
        left > Duration::from_secs(1) && left <= Duration::from_secs(4),
        "{left:?}"
    );

    Application::<FakeIo>::poll(&mut relay, wake - Duration::from_millis(1), &mut io);
    assert_eq!(io.closed(1), None, "closed before its exp");
    Application::<FakeIo>::poll(&mut relay, wake, &mut io);
    assert_eq!(io.closed(1), Some(&(6, "unauthorized".to_owned())));
    assert!(relay.sessions.is_empty());
    assert!(relay.expiries.is_empty());
    assert_eq!(relay.counters().sessions_expired, 1);
}

#[test]
fn a_webtransport_05_subscriber_role_without_a_subscribe_grant_is_refused_as_403() {
    let auth = auth_from("[public]\npublish = \"\"\n", Generation::V017);
    let mut relay = Relay::with_auth(1, router_config(), auth);
    let publisher = relay.connect(0, SetupRole::Publisher);
    let subscriber = relay.connect(0, SetupRole::Subscriber);
    assert_eq!(relay.clients[publisher].closed, None);
    assert_eq!(relay.clients[subscriber].closed, Some(0x2));
    let counters = relay.workers[0].relay.counters();
    assert_eq!(counters.auth_refusals.get("role_not_granted"), 1);
    assert_eq!(relay.workers[0].relay.sessions.len(), 1);
}

#[test]
fn a_05_setup_role_wires_only_the_direction_it_asks_for() {
    // Everyone may do everything; the Role alone narrows (spec `auth.md` 6.1).
    let mut relay = Relay::new(1);
    let publisher = relay.connect(0, SetupRole::Publisher);
    let subscriber = relay.connect(0, SetupRole::Subscriber);
    let both = relay.connect(0, SetupRole::Both);
    let asked = |relay: &mut Relay, client: usize| {
        relay
            .take_events(client)
            .iter()
            .any(|e| matches!(e, MoqEvent::AnnounceInterest { .. }))
    };
    assert!(
        asked(&mut relay, publisher),
        "a publisher is asked for announcements"
    );
    assert!(!asked(&mut relay, subscriber), "a subscriber never is");
    assert!(asked(&mut relay, both));
    let worker = &relay.workers[0].relay;
    let following: Vec<SessionId> = worker.queries.values().copied().collect();
    let session = |client: usize| relay.clients[client].relay_session;
    assert!(
        !following.contains(&session(publisher)),
        "a publisher is told nothing"
    );
    assert!(following.contains(&session(subscriber)));
    assert!(following.contains(&session(both)));
}

#[test]
fn a_05_track_request_then_subscribe_keeps_one_upstream_subscription() {
    let mut relay = Relay::new(2);
    let publisher = relay.publish(0, "live");
    let subscriber = relay.connect(1, SetupRole::Subscriber);
    // As moq-dev's clients do on 05: TRACK first, SUBSCRIBE once the info is in.
    relay
        .client(subscriber)
        .request_track("live", TRACK)
        .expect("track request");
    relay.pump();
    let events = relay.take_events(subscriber);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, MoqEvent::TrackInfo { info: Ok(_), .. })),
        "no TRACK_INFO: {events:?}"
    );
    let update = SubscribeUpdate::latest(0);
    let subscription = relay
        .client(subscriber)
        .subscribe("live", TRACK, update)
        .expect("subscribe");
    relay.pump();
    let groups = relay.start_group(publisher, 0);
    relay.write_frame(publisher, &groups, 7, b"one");
    relay.pump();

    let upstream_subscribes = relay
        .take_events(publisher)
        .iter()
        .filter(|e| matches!(e, MoqEvent::SubscribeRequested { .. }))
        .count();
    assert_eq!(
        upstream_subscribes, 1,
        "the track's demand lapsed between TRACK and SUBSCRIBE"
    );
    let got = frames(&relay.take_events(subscriber), subscription);
    assert_eq!(got, vec![(0, Some(7), Bytes::from_static(b"one"))]);
    // The hold ends with its subscription: only the SUBSCRIBE's subscriber is left.
    assert_eq!(relay.workers[1].relay.shard.subscriber_count(), 1);
    assert!(relay.workers[1].relay.holds.is_empty());
}

#[test]
fn a_06_fetch_of_a_frame_range_gets_exactly_those_frames_or_a_reset() {
    let mut relay = Relay::new(1);
    let publisher = relay.publish(0, "live");
    relay.subscribe(0, "live");
    let groups = relay.start_group(publisher, 5);
    for frame in 0..4 {
        relay.write_frame(publisher, &groups, 10 * frame, &payload(5, frame));
    }
    for g in groups {
        relay.client(publisher).end_group(g).expect("end group");
    }
    relay.pump();

    let fetcher = relay.connect_on(0, SetupRole::Subscriber, Version::Lite06);
    let middle = relay
        .client(fetcher)
        .fetch_frames("live", TRACK, 0, 5, 1, Some(2))
        .expect("fetch");
    let past_the_end = relay
        .client(fetcher)
        .fetch_frames("live", TRACK, 0, 5, 9, None)
        .expect("fetch");
    relay.pump();
    let events = relay.take_events(fetcher);
    let got: Vec<(u64, Bytes)> = events
        .iter()
        .filter_map(|e| match e {
            MoqEvent::FetchFrame {
                fetch,
                timestamp,
                payload,
            } if *fetch == middle => Some((*timestamp, payload.clone())),
            _ => None,
        })
        .collect();
    let want: Vec<(u64, Bytes)> = (1..=2)
        .map(|frame| (10 * frame, Bytes::from(payload(5, frame))))
        .collect();
    assert_eq!(got, want, "frames 1..=2 of group 5, timestamps intact");
    assert!(events.contains(&MoqEvent::FetchEnded {
        fetch: middle,
        code: None
    }));
    // Group 5 has no frame 9: no shifted run, a reset ("too far behind" on 06).
    assert!(
        events.contains(&MoqEvent::FetchEnded {
            fetch: past_the_end,
            code: Some(proto::ErrorCode::Lagged)
        }),
        "{events:?}"
    );
}

#[test]
fn a_burst_of_concurrent_groups_from_a_publisher_reaches_a_subscriber_whole() {
    // What a moq-lite-06 publisher does when the relay's upstream SUBSCRIBE reaches back
    // over its cache: every cached group at once, each on its own stream.
    let mut relay = Relay::new(2);
    let publisher = relay.connect_on(0, SetupRole::Publisher, Version::Lite06);
    relay
        .client(publisher)
        .announce("live", &[])
        .expect("announce");
    relay.pump();
    let (subscriber, subscription) = relay.subscribe(1, "live");
    const BURST: u64 = 24;
    let groups: Vec<Vec<GroupId>> = (0..BURST)
        .map(|g| relay.start_group(publisher, g))
        .collect();
    for (g, ids) in groups.iter().enumerate() {
        relay.write_frame(publisher, ids, g as u64, &payload(g as u64, 0));
    }
    for ids in groups {
        for id in ids {
            relay.client(publisher).end_group(id).expect("end group");
        }
    }
    relay.pump();
    let events = relay.take_events(subscriber);
    let aborted: Vec<&MoqEvent> = events
        .iter()
        .filter(|e| matches!(e, MoqEvent::GroupAborted { .. }))
        .collect();
    assert!(
        aborted.is_empty(),
        "groups reset under the subscriber: {aborted:?}"
    );
    assert_eq!(frames(&events, subscription).len(), BURST as usize);
}

#[test]
fn a_06_upstream_subscription_starts_at_the_live_edge_and_widens_at_its_first_group() {
    let mut relay = Relay::new(2);
    let publisher = relay.connect_on(0, SetupRole::Publisher, Version::Lite06);
    relay
        .client(publisher)
        .announce("live", &[])
        .expect("announce");
    relay.pump();
    relay.subscribe(1, "live");
    let asked: Vec<u64> = relay
        .take_events(publisher)
        .iter()
        .filter_map(|e| match e {
            MoqEvent::SubscribeRequested { request, .. } => Some(request.max_latency_ms),
            _ => None,
        })
        .collect();
    // A 06 Max Age also reaches back over the publisher's cache: 0 asks for the live edge.
    assert_eq!(asked, vec![0], "one upstream SUBSCRIBE, at the live edge");
    let groups = relay.start_group(publisher, 41);
    relay.write_frame(publisher, &groups, 1, b"first");
    relay.pump();
    let widened: Vec<(Option<u64>, u64)> = relay
        .take_events(publisher)
        .iter()
        .filter_map(|e| match e {
            MoqEvent::SubscribeUpdated { update, .. } => {
                Some((update.start, update.max_latency_ms))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        widened,
        vec![(Some(41), super::publish::UPSTREAM_MAX_AGE_MS)],
        "the first group widens the budget with itself as the floor"
    );
}

#[test]
fn subscriptions_and_viewers_are_counted_open_and_closed_on_each_side() {
    let mut relay = Relay::new(1);
    let publisher = relay.publish(0, "live");
    let (subscriber, first) = relay.subscribe(0, "live");
    let second = relay
        .client(subscriber)
        .subscribe("live", TRACK, SubscribeUpdate::latest(0))
        .expect("a second subscription to the same track");
    relay.pump();
    // (subscriptions opened, closed, viewers opened, closed) on the serving side, and
    // (opened, closed) of the relay's own upstream subscriptions.
    let egress = |relay: &Relay| {
        let tally = relay.workers[0].relay.counters.egress_subscriptions;
        let (s, v) = (tally.subscriptions, tally.viewers);
        (s.opened, s.closed, v.opened, v.closed)
    };
    let ingress = |relay: &Relay| {
        let OpenClose { opened, closed } = relay.workers[0].relay.counters.ingress_subscriptions;
        (opened, closed)
    };
    assert_eq!(
        egress(&relay),
        (2, 0, 1, 0),
        "two subscriptions, one viewer"
    );
    assert_eq!(
        ingress(&relay),
        (1, 0),
        "one upstream subscription for both"
    );

    relay
        .client(subscriber)
        .unsubscribe(first)
        .expect("unsubscribe");
    relay.pump();
    assert_eq!(
        egress(&relay),
        (2, 1, 1, 0),
        "still a viewer through the second"
    );

    relay.close_client_now(subscriber);
    relay.pump();
    assert_eq!(
        egress(&relay),
        (2, 2, 1, 1),
        "the close ends {second:?} and the viewer"
    );
    relay.close_client(publisher);
    assert_eq!(ingress(&relay), (1, 1));
}

#[test]
fn announcements_past_max_hops_are_dropped_and_counted() {
    // (A loop never reaches the relay from these clients: they leave out a chain through
    // the relay themselves. proto's tests count the relay-side drop.)
    let mut relay = Relay::new(1);
    relay.workers[0].relay.set_max_hops(3);
    let publisher = relay.connect(0, SetupRole::Publisher);
    // The announcer's own hop joins the chain: four hops, then two.
    for (path, hops) in [("far", vec![1, 2, 3]), ("near", vec![1])] {
        relay
            .client(publisher)
            .announce(path, &hops)
            .expect("announce");
    }
    relay.pump();
    let routed = relay.workers[0].relay.shard.announced("");
    let routed: Vec<String> = routed.iter().map(|path| path.to_string()).collect();
    assert_eq!(routed, ["near"], "only the chain within max_hops");
    assert_eq!(relay.workers[0].relay.counters().announces_too_long, 1);
}

/// Two sessions on worker 0 reaching one publisher (id 50, the first hop of both
/// chains; the relay itself is 7): `near` directly, `far` through one more relay. What reaches a subscriber on
/// worker 1 is routed through one of them.
fn two_routes_to_one_publisher(relay: &mut Relay) -> (usize, usize) {
    let near = route_to_live(relay, &[50]);
    let far = route_to_live(relay, &[50, 8]);
    (near, far)
}

/// A session on worker 0 announcing `live` with `chain` before its own hop.
fn route_to_live(relay: &mut Relay, chain: &[u64]) -> usize {
    let session = relay.connect(0, SetupRole::Publisher);
    relay
        .client(session)
        .announce("live", chain)
        .expect("announce");
    relay.pump();
    session
}

/// The group of each frame that reached `subscription`, in order (these tests write
/// one frame per group, so a group delivered twice shows twice).
fn groups_seen(events: &[MoqEvent], subscription: SubscriptionId) -> Vec<u64> {
    frames(events, subscription)
        .into_iter()
        .map(|(group, _, _)| group)
        .collect()
}

#[test]
fn the_shorter_route_feeds_and_a_standby_takes_over_without_a_group_twice() {
    // A one-group cache: the standby's copy of group 1 is no longer cached when it comes,
    // so only the route's floor keeps it out.
    let mut relay = Relay::with_config(
        2,
        router::Config {
            cache_max_groups: 1,
            ..router_config()
        },
    );
    let (near, far) = two_routes_to_one_publisher(&mut relay);
    assert_eq!(relay.workers[0].relay.routes.standby_count(), 1);
    let (viewer, subscription) = relay.subscribe(1, "live");
    assert!(
        relay.clients[far].serves.is_empty(),
        "only the shortest route is subscribed"
    );
    for group in [1, 2] {
        let groups = relay.start_group(near, group);
        relay.write_frame(near, &groups, group, &payload(group, 0));
        if group == 1 {
            relay.client(near).end_group(groups[0]).expect("end");
        }
    }
    relay.pump();

    // The near route dies with group 2 open: the far one takes over, and its copies of
    // groups the subscriber already had are not delivered again.
    relay.close_client(near);
    assert_eq!(relay.workers[0].relay.counters().reroutes, 1);
    assert_eq!(
        relay.clients[far].serves.len(),
        1,
        "the standby is subscribed"
    );
    for group in [1, 2, 3] {
        let groups = relay.start_group(far, group);
        relay.write_frame(far, &groups, group, &payload(group, 0));
        relay.client(far).end_group(groups[0]).expect("end");
    }
    relay.pump();
    let events = relay.take_events(viewer);
    assert_eq!(groups_seen(&events, subscription), [1, 2, 3]);
    assert!(
        !events.iter().any(|e| matches!(
            e,
            MoqEvent::Unannounced { .. } | MoqEvent::SubscriptionClosed { .. }
        )),
        "the subscriber never saw the broadcast go: {events:?}"
    );
    let hops = relay.workers[1].relay.shard.route_hops("live");
    assert_eq!(hops.as_deref().map(<[u64]>::len), Some(3), "[50, 8, far]");

    // The last route goes: now the broadcast ends.
    relay.close_client(far);
    let events = relay.take_events(viewer);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, MoqEvent::Unannounced { path, .. } if path == "live")),
        "{events:?}"
    );
}

#[test]
fn a_better_route_arriving_later_takes_over_and_the_old_one_is_unsubscribed() {
    let mut relay = Relay::new(1);
    let far = route_to_live(&mut relay, &[50, 8]);
    let (viewer, subscription) = relay.subscribe(0, "live");
    let groups = relay.start_group(far, 1);
    relay.write_frame(far, &groups, 1, &payload(1, 0));
    relay.client(far).end_group(groups[0]).expect("end");
    relay.pump();

    let near = route_to_live(&mut relay, &[50]);
    assert_eq!(relay.workers[0].relay.counters().reroutes, 1);
    assert!(
        relay.clients[far].serves.is_empty(),
        "the far route was let go"
    );
    let groups = relay.start_group(near, 2);
    relay.write_frame(near, &groups, 2, &payload(2, 0));
    relay.pump();
    assert_eq!(
        groups_seen(&relay.take_events(viewer), subscription),
        [1, 2]
    );
}

#[test]
fn another_publisher_of_a_routed_path_is_refused_and_counted() {
    let mut relay = Relay::new(1);
    let first = relay.publish(0, "live");
    let second = relay.publish(0, "live");
    assert_ne!(first, second);
    assert_eq!(relay.workers[0].relay.counters().announces_refused, 1);
    assert_eq!(relay.workers[0].relay.routes.standby_count(), 0);
}
