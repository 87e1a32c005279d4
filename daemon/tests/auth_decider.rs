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
    ADMITTED, BOTH, STEP, Via, assert_admitted, assert_refused, one_group_crosses, open, rogue,
    rogue_as, target, trust, url,
};
use interop::{Bytes, ConnectOptions};
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
    config_017_trusting(server, None)
}

/// With `ca`, client certificates chaining to it are verified (and reported).
fn config_017_trusting(server: &DeciderServer, ca: Option<&std::path::Path>) -> String {
    let root = ca.map_or(String::new(), |ca| {
        format!("root = [{:?}]\n", ca.display().to_string())
    });
    format!(
        "[listen]\nbind = \"127.0.0.1:0\"\n[listen.tls]\ngenerate = [\"localhost\"]\n{root}[runtime]\nworkers = 2\n\
         [auth]\nurl = \"{}\"\n",
        server.url("/")
    )
}

fn config_014(api: &str) -> String {
    config_014_trusting(api, None)
}

fn config_014_trusting(api: &str, ca: Option<&std::path::Path>) -> String {
    let root = ca.map_or(String::new(), |ca| {
        format!("tls.root = [{:?}]\n", ca.display().to_string())
    });
    format!(
        "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n{root}[runtime]\nworkers = 2\n\
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
        // An alias, answered late: the session's requests must wait for it.
        ("/late", ..) => Reply::json(
            200,
            json!({"subscribe": ["**"], "root": "/demo", "expires": unix_now() + 3600}),
        )
        .after(Duration::from_millis(700)),
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

    one_group_crosses(&relay, "/demo?jwt=good", "/demo?jwt=good", b"decided").await;

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
    one_group_crosses(
        &relay,
        &target("/demo", Some(&put)),
        &target("/demo", Some(&get)),
        b"decided",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_and_fetch_ask_the_auth_server_as_http_requests() {
    let server = DeciderServer::start(auth_server_policy);
    let ops = common::http::start(&format!(
        "{}[web.http]\nlisten = \"127.0.0.1:0\"\n[internal]\nlisten = \"127.0.0.1:0\"\n",
        config_017(&server)
    ));
    let web = ops.web;
    let status = |path: &'static str| {
        tokio::task::spawn_blocking(move || common::http::get(web, path).status)
    };
    assert_eq!(status("/announced/demo?jwt=good").await.unwrap(), 200);
    assert_eq!(status("/announced/demo?jwt=bad").await.unwrap(), 401);
    assert_eq!(status("/announced/broken").await.unwrap(), 502);
    assert_eq!(
        status("/fetch/demo/alice/video?jwt=bad").await.unwrap(),
        401
    );
    let asked = server.wait_for(STEP, |r| {
        path_is(r, "/demo") && r.json()["query"] == "jwt=good"
    });
    let body = asked.json();
    assert_eq!(body["transport"], "http");
    assert_eq!(body["event"], "connect");
    assert!(body.get("role").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_reported_to_the_auth_server_and_named_to_auth_api() {
    let pki = common::pki::Pki::new();
    let peer = pki.client("peer", Duration::from_secs(3600));
    let identity = Some((peer.cert.as_path(), peer.key.as_path()));
    let expires = peer.not_after.duration_since(UNIX_EPOCH).unwrap().as_secs();

    // 0.17: the certificate's facts go to the auth server, which decides.
    let server = DeciderServer::start(auth_server_policy);
    let relay = Running::start(&config_017_trusting(&server, Some(&pki.ca)));
    for via in BOTH {
        let session = rogue_as(&relay, via, "/peer", SETUP_BOTH, identity).await;
        assert!(session.closed(ADMITTED).await.is_err(), "{via:?}: granted");
    }
    let asked = server.wait_for(STEP, |r| path_is(r, "/peer"));
    let tls = &asked.json()["tls"];
    assert_eq!(tls["name"], "peer.test", "{tls}");
    assert_eq!(tls["expires"], expires, "{tls}");
    assert!(
        tls["issuer"]
            .as_str()
            .unwrap()
            .contains("CN=moq-relayd test CA"),
        "{tls}"
    );
    let fingerprint = tls["fingerprint"].as_str().unwrap();
    assert!(
        fingerprint.len() == 64 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit()),
        "{tls}"
    );
    drop(relay);

    // 0.14 auth_api: a WebTransport certificate session asks with mtls=true and gets
    // everything under the alias the API names.
    let api = DeciderServer::start(|request| {
        if query_pairs(&request.target).contains(&("mtls".into(), "true".into())) {
            Reply::json(200, json!({"alias": "tenant"}))
        } else {
            Reply::json(200, json!({}))
        }
    });
    let relay = Running::start(&config_014_trusting(&api.url("/api"), Some(&pki.ca)));
    let session = rogue_as(&relay, Via::WebTransport, "/peer", SETUP_BOTH, identity).await;
    assert!(
        session.closed(ADMITTED).await.is_err(),
        "a certificate session"
    );
    let asked = api.wait_for(STEP, |r| r.target.contains("mtls=true"));
    assert!(asked.target.contains("root=peer"), "{}", asked.target);
    assert!(!asked.target.contains("kid="), "{}", asked.target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_before_the_verdict_wait_for_it_and_an_alias_roots_the_session() {
    let server = DeciderServer::start(auth_server_policy);
    let relay = Running::start(&config_017(&server));
    let options = ConnectOptions::new(trust(&relay));
    let publisher = open(
        &url(&relay, Via::RawQuic05, "/demo?jwt=good"),
        options.publish_only(),
    )
    .await;
    let (_alice, mut tracks) = publisher.publish("alice", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    // The rogue client sends its SETUP and a SUBSCRIBE at once: the SUBSCRIBE reaches
    // the relay while the auth server still thinks (700 ms) and must wait for its
    // grant, which roots the session at `/demo`, rather than be refused.
    for via in BOTH {
        let mut session = rogue(&relay, via, "/late", SETUP_BOTH).await;
        let mut subscribe = bytes::BytesMut::new();
        proto::coding::put_varint(
            &mut subscribe,
            "type",
            proto::message::BidiType::Subscribe.id(),
        )
        .unwrap();
        proto::message::Message::encode(
            &proto::message::Subscribe {
                id: 0,
                broadcast: "alice".into(),
                track: "video".into(),
                priority: 0,
                ordered: false,
                max_latency_ms: 0,
                start: None,
                end: None,
                frame_start: 0,
                frame_end: None,
            },
            proto::Version::Lite05,
            &mut subscribe,
        )
        .unwrap();
        // The relay answers once the track is live: keep it live meanwhile.
        let (answer, ()) = tokio::join!(session.request_bidi(&subscribe, STEP), async {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                track
                    .write_group([Bytes::from_static(b"live")])
                    .expect("group");
            }
        });
        assert!(
            answer.as_ref().is_ok_and(|bytes| !bytes.is_empty()),
            "{via:?}: the early SUBSCRIBE was not answered: {answer:?}"
        );
    }
    publisher.close().await;
}
