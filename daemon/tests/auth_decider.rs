//! The external auth deciders through the real `moq-relayd` binary, against an HTTP
//! server the test owns (`common::decider`): moq-relay 0.17's auth server (`[auth] url`:
//! connect, revalidate, end) and 0.14's `auth_api` (the key and public grants per
//! session, verified in the relay). Flows use the reference client; exact close codes
//! the rogue client.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Running;
use common::decider::{DeciderServer, Recorded, Reply};
use common::sessions::{
    ADMITTED, BOTH, STEP, Via, assert_admitted, assert_refused, open, rogue, target, trust, url,
};
use interop::{Bytes, ConnectOptions, TrackEvent};
use moq_token::{Algorithm, Claims, Key, KeyId};
use serde_json::json;

/// moq-relay asks its decider once the moq-lite-05 SETUP is in, so every rogue session
/// here sends one (Role 0: both directions).
const SETUP_BOTH: Option<u64> = Some(0);
const UNAUTHORIZED_014: u64 = 6;
const UNAUTHORIZED_017: u64 = 0x2;
/// 64 + 502: the decider could not be asked or gave no usable answer.
const UNAVAILABLE: u64 = 566;
/// moq-relay's bound on one decision.
const DECISION_TIMEOUT: Duration = Duration::from_secs(10);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn config_017(server: &DeciderServer) -> String {
    format!(
        "[listen]\nbind = \"127.0.0.1:0\"\n[listen.tls]\ngenerate = [\"localhost\"]\n[runtime]\nworkers = 2\n\
         [auth]\nurl = \"{}\"\n",
        server.url("/")
    )
}

fn config_014(api: &str) -> String {
    format!(
        "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 2\n\
         [auth]\nauth_api = \"{api}\"\n"
    )
}

fn event(request: &Recorded) -> String {
    request.json()["event"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn path(request: &Recorded) -> String {
    request.json()["path"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A publisher at `publish_at` publishes `alice`; a subscriber at `subscribe_at`
/// receives a group of it (both the reference client, moq-lite-05).
async fn frames_flow(relay: &Running, publish_at: &str, subscribe_at: &str) {
    let options = ConnectOptions::new(trust(relay));
    let publisher = open(
        &url(relay, Via::RawQuic05, publish_at),
        options.clone().publish_only(),
    )
    .await;
    let (_alice, mut tracks) = publisher.publish("alice", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let subscriber = open(
        &url(relay, Via::WebTransport, subscribe_at),
        options.subscribe_only(""),
    )
    .await;
    let mut announced = subscriber.announcements().expect("announcements");
    announced.wait_announced("alice").await.expect("alice");
    let mut sub = subscriber.subscribe("alice", "video").await.expect("sub");
    track
        .write_group([Bytes::from_static(b"decided")])
        .expect("group");
    match sub.next_within(STEP).await.expect("a frame") {
        TrackEvent::Frame(frame) => assert_eq!(frame.payload, Bytes::from_static(b"decided")),
        other => panic!("expected a frame, got {other:?}"),
    }
    subscriber.close().await;
    publisher.close().await;
}

/// The auth server's policy for the 0.17 tests, by dialed path and token.
fn auth_server_policy(request: &Recorded) -> Reply {
    let body = request.json();
    let event = body["event"].as_str().unwrap_or_default();
    if event == "end" {
        return Reply::status(204);
    }
    let path = body["path"].as_str().unwrap_or_default();
    let query = body["query"].as_str().unwrap_or_default();
    let everything = json!({
        "publish": ["**"],
        "subscribe": ["**"],
        "expires": unix_now() + 3600,
    });
    match (path, query, event) {
        (_, "jwt=bad", _) => Reply::status(403),
        ("/broken", ..) => Reply::status(500),
        ("/garbage", ..) => Reply::json(200, json!({"publish": "not a list"})),
        ("/nothing", ..) => Reply::json(200, json!({"publish": [], "subscribe": []})),
        ("/revoke", _, "revalidate") => Reply::status(401),
        ("/narrow", _, "revalidate") => Reply::json(
            200,
            json!({"subscribe": ["**"], "expires": unix_now() + 3600, "revalidate": 1}),
        ),
        ("/revoke" | "/narrow", ..) => Reply::json(
            200,
            json!({"publish": ["**"], "subscribe": ["**"], "expires": unix_now() + 3600, "revalidate": 1}),
        ),
        ("/hang", ..) => {
            Reply::json(200, everything).after(DECISION_TIMEOUT + Duration::from_secs(3))
        }
        _ => Reply::json(200, everything),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_server_decides_each_session_from_its_request_and_hears_its_end() {
    let server = DeciderServer::start(auth_server_policy);
    let relay = Running::start(&config_017(&server));

    frames_flow(&relay, "/demo?jwt=good", "/demo?jwt=good").await;

    // The connect request says what moq-relay 0.17 says (moq-relay-0.17.md 2.5).
    let connect = server.wait_for(STEP, |r| {
        event(r) == "connect" && r.json()["role"] == "publisher"
    });
    assert_eq!(connect.method, "POST");
    assert_eq!(connect.header("content-type"), Some("application/json"));
    let body = connect.json();
    let id = body["id"].as_str().expect("id");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(body["transport"], "quic");
    assert_eq!(body["path"], "/demo");
    assert_eq!(body["query"], "jwt=good");
    assert_eq!(body["alpn"], "moq-lite-05");
    assert_eq!(body["node"], "");
    assert!(
        body["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{body}"
    );
    assert!(body.get("tls").is_none(), "no client certificate: {body}");
    let subscriber_connect = server.wait_for(STEP, |r| {
        event(r) == "connect" && r.json()["role"] == "subscriber"
    });
    assert_ne!(subscriber_connect.json()["id"], body["id"]);

    // Its end, once the publisher left: same id, why, how long, how much.
    let end = server.wait_for(STEP, |r| event(r) == "end" && r.json()["id"] == body["id"]);
    let end = end.json();
    assert!(end["reason"].is_string(), "{end}");
    assert!(end["duration"].as_f64().unwrap() > 0.0, "{end}");
    assert!(end["bytes"]["sent"].as_u64().is_some(), "{end}");
    assert!(end["bytes"]["received"].as_u64().unwrap() > 0, "{end}");

    // Refusals: 403 is unauthorized (0x2); a failing, unparsable or empty answer is not
    // a grant (502 → 566, or 401 → 0x2 for one that grants nothing).
    assert_refused(&relay, "/demo?jwt=bad", SETUP_BOTH, UNAUTHORIZED_017, "403").await;
    for via in BOTH {
        for path in ["/broken", "/garbage"] {
            let session = rogue(&relay, via, path, SETUP_BOTH).await;
            let close = session.closed(STEP).await.expect("closed");
            assert_eq!(close.code, Some(UNAVAILABLE), "{path} over {via:?}");
            assert_eq!(close.reason, "app code=502", "{path} over {via:?}");
        }
    }
    assert_refused(
        &relay,
        "/nothing",
        SETUP_BOTH,
        UNAUTHORIZED_017,
        "nothing granted",
    )
    .await;
    // No end follows a refused connect.
    assert!(
        !server
            .requests()
            .iter()
            .any(|r| event(r) == "end" && path(r) == "/broken"),
        "an end for a refused session"
    );
    relay.relay.wait_for_line("auth_refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidation_ends_a_session_whose_grant_is_revoked_or_narrowed() {
    let server = DeciderServer::start(auth_server_policy);
    let relay = Running::start(&config_017(&server));
    for (path, reason) in [("/revoke", "refused"), ("/narrow", "grant narrowed")] {
        for via in BOTH {
            let started = Instant::now();
            let session = rogue(&relay, via, path, SETUP_BOTH).await;
            let close = session.closed(STEP).await.expect("closed at revalidation");
            // `revalidate = 1`: asked a second after the grant, answered at once.
            assert!(
                started.elapsed() >= Duration::from_millis(900),
                "{path} over {via:?} closed before its revalidation"
            );
            assert_eq!(close.code, Some(UNAUTHORIZED_017), "{path} over {via:?}");
        }
        let end = server.wait_for(STEP, |r| event(r) == "end" && path_is(r, path));
        assert_eq!(end.json()["reason"], reason, "{path}");
    }
    // A grant kept on revalidation keeps the session.
    let kept = rogue(&relay, Via::WebTransport, "/demo?jwt=good", SETUP_BOTH).await;
    assert!(kept.closed(ADMITTED).await.is_err(), "an ordinary grant");
}

fn path_is(request: &Recorded, wanted: &str) -> bool {
    path(request) == wanted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decider_that_does_not_answer_refuses_after_its_bound_and_others_go_on() {
    let server = DeciderServer::start(auth_server_policy);
    let relay = Running::start(&config_017(&server));
    let started = Instant::now();
    let hanging = rogue(&relay, Via::WebTransport, "/hang", SETUP_BOTH).await;
    // Another session is decided meanwhile: the worker does not wait on the network.
    assert_admitted(
        &relay,
        "/demo?jwt=good",
        SETUP_BOTH,
        "while another ask hangs",
    )
    .await;
    let close = hanging
        .closed(DECISION_TIMEOUT + STEP)
        .await
        .expect("closed once the decision times out");
    let waited = started.elapsed();
    assert_eq!(close.code, Some(UNAVAILABLE));
    assert!(
        waited >= DECISION_TIMEOUT - Duration::from_millis(200),
        "refused after {waited:?}, before the bound"
    );
}

fn generate(algorithm: Algorithm, kid: &str) -> Key {
    Key::generate(algorithm, Some(KeyId::decode(kid).unwrap())).unwrap()
}

fn sign(key: &Key, root: &str, put: &[&str], get: &[&str]) -> String {
    let claims = Claims::default()
        .with_root(root)
        .with_publish(put.iter().copied())
        .with_subscribe(get.iter().copied())
        .with_expires(Some(SystemTime::now() + Duration::from_secs(3600)));
    key.sign(&claims).unwrap()
}

fn query_pairs(target: &str) -> Vec<(String, String)> {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_api_names_the_key_and_public_grants_and_fails_closed() {
    let key = generate(Algorithm::HS256, "hs");
    let key_json = serde_json::to_value(&key).unwrap();
    let server = DeciderServer::start(move |request| {
        let pairs = query_pairs(&request.target);
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        match (get("root"), get("kid")) {
            (Some("deny"), _) => Reply::status(404),
            (Some("hang"), _) => {
                Reply::status(200).after(DECISION_TIMEOUT + Duration::from_secs(3))
            }
            (Some(_), Some("hs")) => Reply::json(200, json!({ "key": key_json }))
                .with_header("Cache-Control", "max-age=60"),
            (Some(root), None) if root.starts_with("anon") => {
                Reply::json(200, json!({"public": {"subscribe": [""], "publish": [""]}}))
            }
            _ => Reply::json(200, json!({})),
        }
    });
    let relay = Running::start(&config_014(&server.url("/api?site=test")));

    // A token verified with the key the API names: publish and subscribe as claimed.
    let put = sign(&key, "demo", &["alice"], &[]);
    let get = sign(&key, "demo", &[], &[""]);
    frames_flow(
        &relay,
        &target("/demo", Some(&put)),
        &target("/demo", Some(&get)),
    )
    .await;
    let asked = server.wait_for(STEP, |r| r.target.contains("kid=hs"));
    assert_eq!(asked.method, "GET");
    assert_eq!(
        query_pairs(&asked.target),
        [
            ("site".into(), "test".into()),
            ("root".into(), "demo".into()),
            ("kid".into(), "hs".into()),
            ("transport".into(), "quic".into()),
        ],
        "{}",
        asked.target
    );
    // The answer said max-age=60: the next sessions with that key and root are decided
    // from the cache.
    let asked_before = server.requests().len();
    assert_admitted(
        &relay,
        &target("/demo", Some(&put)),
        SETUP_BOTH,
        "cached key",
    )
    .await;
    assert_eq!(
        server.requests().len(),
        asked_before,
        "the cached answer was asked again"
    );

    // Paths are form-encoded (`/` as %2F), as 0.14 sends them.
    assert_admitted(
        &relay,
        "/anon/room",
        SETUP_BOTH,
        "public grants from the API",
    )
    .await;
    let anon = server.wait_for(STEP, |r| r.target.contains("root=anon"));
    assert!(anon.target.contains("root=anon%2Froom"), "{}", anon.target);

    // A token the named key does not verify is unauthorized (6); no public grant, a
    // refusing API and a hanging one fail closed (502 → 566).
    let forged = sign(&generate(Algorithm::HS256, "hs"), "demo", &[""], &[""]);
    assert_refused(
        &relay,
        &target("/demo", Some(&forged)),
        SETUP_BOTH,
        UNAUTHORIZED_014,
        "bad signature",
    )
    .await;
    assert_refused(
        &relay,
        "/other",
        SETUP_BOTH,
        UNAUTHORIZED_014,
        "no public grant",
    )
    .await;
    for path in ["/deny", "/hang"] {
        let session = rogue(&relay, Via::RawQuic05, path, SETUP_BOTH).await;
        let close = session
            .closed(DECISION_TIMEOUT + STEP)
            .await
            .expect("closed");
        assert_eq!(close.code, Some(UNAVAILABLE), "{path}");
    }
}

#[test]
fn an_auth_url_excludes_every_other_decider_and_plain_http_leaves_loopback_never() {
    let cases = [
        (
            "[listen]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[auth]\nurl = \"http://127.0.0.1:1/\"\npublic = \"**\"\n",
            "`public` cannot be set beside `url`",
        ),
        (
            "[listen]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[auth]\nurl = \"http://auth.example/\"\n",
            "http:// is allowed only to a loopback host",
        ),
        (
            "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[auth]\nauth_api = \"ftp://auth.example/\"\n",
            "auth.auth_api",
        ),
    ];
    for (config, expected) in cases {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, config).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_moq-relayd"))
            .arg("--check")
            .arg(&path)
            .output()
            .unwrap();
        let message = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{config}: {message}");
        assert!(message.contains(expected), "{config}: {message}");
    }
}
