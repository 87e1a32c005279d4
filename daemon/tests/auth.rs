//! `[auth]` through the real `moq-relayd` binary: keys and tokens minted by moq-dev's own
//! `moq-token` crate, sessions from the reference client (moq-net / moq-tokio) where a
//! flow must work, and from the rogue client where the exact close code matters (it
//! reads the raw WebTransport capsule or QUIC CONNECTION_CLOSE, and on raw QUIC 05 sends
//! a SETUP carrying the path, query and Role we choose). Cases are grouped per relay
//! process: each test starts one.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Running;
use common::sessions::{
    ADMITTED, BOTH, STEP, Via, assert_admitted, assert_refused, open, rogue, target, trust, url,
};
use interop::{AnnounceEvent, Bytes, ConnectOptions, TrackEvent};
use moq_token::{Algorithm, Claims, Key, KeyId};

/// Spec `auth.md` 13 / `moq-relay-0.17.md` 2.7.
const UNAUTHORIZED_014: u64 = 6;
const UNAUTHORIZED_017: u64 = 0x2;

/// A key directory: `hs.jwk` (HS256) and `ed.jwk` (the public half of an EdDSA key).
struct KeyDir {
    dir: tempfile::TempDir,
    hs: Key,
    ed: Key,
}

impl KeyDir {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hs = generate(Algorithm::HS256, "hs");
        let ed = generate(Algorithm::EdDSA, "ed");
        let keys = KeyDir { dir, hs, ed };
        keys.install("hs", &keys.hs.clone());
        keys.install("ed", &keys.ed.to_public().unwrap());
        keys
    }

    fn install(&self, kid: &str, key: &Key) {
        let text = serde_json::to_string(key).unwrap();
        std::fs::write(self.dir.path().join(format!("{kid}.jwk")), text).unwrap();
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }
}

fn generate(algorithm: Algorithm, kid: &str) -> Key {
    Key::generate(algorithm, Some(KeyId::decode(kid).unwrap())).unwrap()
}

fn token(key: &Key, root: &str, put: &[&str], get: &[&str], exp: Option<SystemTime>) -> String {
    let claims = Claims::default()
        .with_root(root)
        .with_publish(put.iter().copied())
        .with_subscribe(get.iter().copied())
        .with_expires(exp);
    key.sign(&claims).unwrap()
}

/// A whole second `secs` from now: `exp` is whole seconds, so the test knows it exactly.
fn whole_seconds_from_now(secs: u64) -> SystemTime {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::from_secs(now.as_secs() + 1 + secs)
}

fn config_014(keys: &KeyDir) -> String {
    format!(
        "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 2\n\
         [auth]\nkey_dir = {:?}\npublic = \"\"\n",
        keys.path()
    )
}

fn config_017(keys: &KeyDir) -> String {
    format!(
        "[listen]\nbind = \"127.0.0.1:0\"\n[listen.tls]\ngenerate = [\"localhost\"]\n[runtime]\nworkers = 2\n\
         [auth]\nkey_dir = {:?}\npublic = \"anon/**\"\n",
        keys.path()
    )
}

/// SIGHUP also reloads the certificate, and `tls.generate` makes a new one: follow it.
fn reloaded_certificate(relay: &mut Running) {
    let line = relay.relay.wait_for_line("certificate reloaded");
    relay.fingerprint = common::fingerprint_in(&line);
}

/// A publisher with `publish_token` publishes `alice` and `bob` at `/demo`; a
/// subscriber with `subscribe_token` at `/demo` receives `alice`'s frames and is never
/// told about `bob`, which the publisher's claim does not cover.
async fn publish_and_subscribe_as_the_claims_allow(
    relay: &Running,
    via: Via,
    publish_token: &str,
    subscribe_token: &str,
) {
    let options = ConnectOptions::new(trust(relay));
    let publisher = open(
        &url(relay, via, &target("/demo", Some(publish_token))),
        options.clone().publish_only(),
    )
    .await;
    let (_alice, mut tracks) = publisher.publish("alice", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let (_bob, _bob_tracks) = publisher.publish("bob", &["video"]).expect("publish");

    let subscriber = open(
        &url(relay, via, &target("/demo", Some(subscribe_token))),
        options.subscribe_only(""),
    )
    .await;
    let mut announced = subscriber.announcements().expect("announcements");
    announced.wait_announced("alice").await.expect("alice");
    let mut sub = subscriber.subscribe("alice", "video").await.expect("sub");
    track
        .write_group([Bytes::from_static(b"granted")])
        .expect("group");
    match sub.next_within(STEP).await.expect("a frame") {
        TrackEvent::Frame(frame) => assert_eq!(frame.payload, Bytes::from_static(b"granted")),
        other => panic!("{via:?}: expected a frame, got {other:?}"),
    }
    while let Some(event) = announced.next_within(ADMITTED).await.expect("feed") {
        assert_ne!(
            event,
            AnnounceEvent::Announced("bob".into()),
            "{via:?}: a broadcast outside the publisher's claim was routed"
        );
    }
    subscriber.close().await;
    publisher.close().await;
}

/// When the session at `target` is closed, compared with `exp`: (how late, code).
async fn expiry(relay: &Running, via: Via, target: &str, exp: SystemTime) -> (Duration, u64) {
    let session = rogue(relay, via, target, None).await;
    let left = exp.duration_since(SystemTime::now()).unwrap_or_default();
    let close = session.closed(left + STEP).await.expect("closed at exp");
    (
        late_by(SystemTime::now(), exp),
        close.code.expect("an application close"),
    )
}

/// How long after `exp` something was seen; a few milliseconds early is clock mapping
/// (the relay's deadline is monotonic), more is a session closed before its time.
fn late_by(seen: SystemTime, exp: SystemTime) -> Duration {
    match seen.duration_since(exp) {
        Ok(late) => late,
        Err(early) if early.duration() <= Duration::from_millis(20) => Duration::ZERO,
        Err(early) => panic!("closed {:?} before exp", early.duration()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_access_on_a_014_relay_over_webtransport_and_raw_quic_05() {
    let keys = KeyDir::new();
    let relay = Running::start(&config_014(&keys));
    let later = Some(whole_seconds_from_now(3600));

    // Publish and subscribe as each claim allows, relative to the token root.
    let put = token(&keys.hs, "demo", &["alice"], &[], later);
    let get = token(&keys.ed, "demo", &[], &[""], later);
    for via in BOTH {
        publish_and_subscribe_as_the_claims_allow(&relay, via, &put, &get).await;
    }

    // `public = ""` admits anyone without a token, anywhere.
    assert_admitted(&relay, "/anywhere", None, "no token, public").await;
    assert_admitted(&relay, &target("/demo", Some(&put)), None, "a valid token").await;

    // A present but bad token is refused: it never falls back to the public grant.
    let code = UNAUTHORIZED_014;
    let past = Some(UNIX_EPOCH + Duration::from_secs(1_600_000_000));
    let expired = token(&keys.hs, "demo", &["alice"], &[], past);
    let wrong_alg = token(&generate(Algorithm::HS256, "ed"), "demo", &[""], &[], later);
    let unknown_kid = token(
        &generate(Algorithm::HS256, "nope"),
        "demo",
        &[""],
        &[],
        later,
    );
    let cases = [
        (target("/other", Some(&put)), "outside the token root"),
        (target("/demo", Some(&expired)), "an expired token"),
        (
            target("/demo", Some(&wrong_alg)),
            "a token whose alg is not its key's",
        ),
        (target("/demo", Some(&unknown_kid)), "an unknown kid"),
        (target("/demo", Some("not-a-jwt")), "a malformed token"),
    ];
    for (target, why) in &cases {
        assert_refused(&relay, target, None, code, why).await;
    }

    // moq-lite-05 SETUP Role (spec 6.1): a subscriber needs a subscribe grant (403).
    let demo_put = target("/demo", Some(&put));
    assert_refused(
        &relay,
        &demo_put,
        Some(2),
        code,
        "subscriber role, put only",
    )
    .await;
    assert_admitted(&relay, &demo_put, Some(1), "publisher role, put").await;

    // Each refusal was logged once with its cause.
    relay.relay.wait_for_line("root_mismatch");
    relay.relay.wait_for_line("wrong_algorithm");
    relay.relay.wait_for_line("role_not_granted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_closes_its_session_within_a_second_and_sighup_loads_new_keys() {
    let keys = KeyDir::new();
    let mut relay = Running::start(&config_014(&keys));

    // Expiry mid-session, both transports at once, and the reference client sees it.
    let exp = whole_seconds_from_now(2);
    let short = token(&keys.hs, "demo", &[""], &[""], Some(exp));
    let demo = target("/demo", Some(&short));
    let client = open(
        &url(&relay, Via::WebTransport, &demo),
        ConnectOptions::new(trust(&relay)).subscribe_only(""),
    )
    .await;
    let (wt, raw, seen) = tokio::join!(
        expiry(&relay, Via::WebTransport, &demo, exp),
        expiry(&relay, Via::RawQuic05, &demo, exp),
        async {
            let left = exp.duration_since(SystemTime::now()).unwrap_or_default();
            let closed = client.closed(left + STEP).await;
            (closed, SystemTime::now())
        },
    );
    for (via, (late, code)) in [(Via::WebTransport, wt), (Via::RawQuic05, raw)] {
        assert_eq!(code, UNAUTHORIZED_014, "{via:?}");
        assert!(
            late <= Duration::from_secs(1),
            "{via:?} closed {late:?} after exp"
        );
    }
    let (closed, at) = seen;
    let reason = closed.expect("the reference client saw its session end");
    eprintln!("the reference client saw: {reason:?}");
    // A 0.14 file gets moq-relay 0.14's code 6, which moq-net 0.3 (the 0.17 registry)
    // reads as "key-value formatting error" (`moq-lite.md` 12.11): only assert that it is
    // not a clean close.
    assert!(
        reason.is_err(),
        "an expiry is not a clean close: {reason:?}"
    );
    let late = late_by(at, exp);
    assert!(
        late <= Duration::from_secs(1),
        "the client saw it {late:?} after exp"
    );
    relay
        .relay
        .wait_for_line("credential expired; session closed");

    // SIGHUP: a key added to key_dir verifies once reloaded; admitted sessions stay.
    let later = Some(whole_seconds_from_now(3600));
    let rotated = generate(Algorithm::HS256, "hs2");
    let new_token = target("/", Some(&token(&rotated, "", &[""], &[""], later)));
    let old_token = target("/", Some(&token(&keys.hs, "", &[""], &[""], later)));
    let before = rogue(&relay, Via::WebTransport, &old_token, None).await;
    assert_refused(&relay, &new_token, None, UNAUTHORIZED_014, "not yet loaded").await;
    keys.install("hs2", &rotated);
    relay.relay.signal(libc::SIGHUP);
    relay.relay.wait_for_line("SIGHUP: [auth] reloaded");
    reloaded_certificate(&mut relay);
    assert_admitted(&relay, &new_token, None, "a reloaded key").await;
    assert!(
        before.closed(ADMITTED).await.is_err(),
        "a session admitted before SIGHUP keeps running"
    );
    std::fs::write(keys.dir.path().join("hs2.jwk"), "not a key").unwrap();
    relay.relay.signal(libc::SIGHUP);
    relay
        .relay
        .wait_for_line("SIGHUP: keeping the current [auth] keys");
    reloaded_certificate(&mut relay);
    assert_admitted(&relay, &new_token, None, "keys kept after a failed reload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_017_relay_closes_refusals_with_0x2_and_keeps_public_patterns_tokenless() {
    let keys = KeyDir::new();
    let relay = Running::start(&config_017(&keys));
    let later = Some(whole_seconds_from_now(3600));
    let code = UNAUTHORIZED_017;

    // `public = "anon/**"`: the subtree without a token, nothing else.
    assert_admitted(&relay, "/anon/room", None, "public subtree").await;
    assert_refused(&relay, "/other", None, code, "no token outside public").await;
    // A bad token at a public path is refused, never downgraded.
    let past = Some(UNIX_EPOCH + Duration::from_secs(1_600_000_000));
    let expired = token(&keys.hs, "anon", &[""], &[""], past);
    assert_refused(
        &relay,
        &target("/anon", Some(&expired)),
        None,
        code,
        "expired",
    )
    .await;
    assert_refused(&relay, &target("/anon", Some("x")), None, code, "bad token").await;
    // A valid token decides on its own claims.
    let put = token(&keys.hs, "demo", &["alice"], &[], later);
    let get = token(&keys.hs, "demo", &[], &[""], later);
    assert_admitted(&relay, &target("/demo", Some(&put)), None, "valid token").await;
    assert_refused(&relay, &target("/other", Some(&put)), None, code, "root").await;
    publish_and_subscribe_as_the_claims_allow(&relay, Via::RawQuic05, &put, &get).await;

    // Expiry mid-session closes with 0.17's code too, which the reference client (moq-net
    // 0.3) reads as Unauthorized.
    let exp = whole_seconds_from_now(1);
    let short = target(
        "/demo",
        Some(&token(&keys.hs, "demo", &[""], &[], Some(exp))),
    );
    let client = open(
        &url(&relay, Via::RawQuic05, &short),
        ConnectOptions::new(trust(&relay)).publish_only(),
    )
    .await;
    let (late, closed_with) = expiry(&relay, Via::WebTransport, &short, exp).await;
    assert_eq!(closed_with, code);
    assert!(late <= Duration::from_secs(1), "closed {late:?} after exp");
    let seen = client
        .closed(STEP)
        .await
        .expect("the client saw its session end");
    assert_eq!(seen, Err("unauthorized".to_owned()));
}
