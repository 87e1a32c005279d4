//! moq-relay 0.17's `GET /sessions` and `POST /sessions/revalidate` on the internal
//! listener, through the real binary: each reference-client session listed as it dialed,
//! the filter grammar and its 400s, and a nudge that re-checks credentials against the
//! keys a SIGHUP loaded.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::http::{Ops, get, request, start, wait_until};
use interop::{ConnectOptions, Session, TlsTrust, connect_with};
use moq_token::{Algorithm, Claims, Key, KeyId};
use serde_json::Value;

/// One step's bound on a loaded 2-core machine.
const STEP: Duration = Duration::from_secs(20);
/// How long a session must stay open to count as kept.
const KEPT: Duration = Duration::from_millis(400);

fn config(auth: &str) -> String {
    format!(
        "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[web.http]\nlisten = \"127.0.0.1:0\"\n[internal]\nlisten = \"127.0.0.1:0\"\n[stats]\nnode = \"edge-1\"\n[runtime]\nworkers = 2\n[auth]\n{auth}"
    )
}

async fn connect(url: &str, options: ConnectOptions) -> Session {
    connect_with(url, options)
        .await
        .unwrap_or_else(|err| panic!("connect {}: {err}", url.split('?').next().unwrap()))
}

fn trust(ops: &Ops) -> TlsTrust {
    TlsTrust::Fingerprint(ops.fingerprint.clone())
}

/// `GET /sessions?query` as JSON (status 200 asserted).
fn sessions(ops: &Ops, query: &str) -> Vec<Value> {
    let response = get(ops.internal, &format!("/sessions?{query}"));
    assert_eq!(response.status, 200, "/sessions?{query}: {}", response.body);
    assert_eq!(response.headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(&response.body).expect("JSON");
    body["sessions"]
        .as_array()
        .expect("a sessions array")
        .clone()
}

fn paths(list: &[Value]) -> Vec<String> {
    let mut paths: Vec<String> = list
        .iter()
        .map(|s| s["path"].as_str().unwrap().to_owned())
        .collect();
    paths.sort();
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_lists_each_session_as_it_dialed_and_the_filter_selects() {
    let ops = start(&config("public = \"\"\n"));
    let subscriber = connect(
        &format!("https://{}/anon/room", ops.quic),
        ConnectOptions::new(trust(&ops)).subscribe_only(""),
    )
    .await;
    let publisher = connect(
        &format!("moql://{}/live", ops.quic),
        ConnectOptions::new(trust(&ops)).publish_only(),
    )
    .await;

    // The raw QUIC path is known once its SETUP arrived.
    let all = wait_until(|| {
        let list = sessions(&ops, "");
        (paths(&list) == ["/anon/room", "/live"]).then_some(list)
    });
    let started_bound = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for session in &all {
        let id = session["id"].as_str().unwrap();
        assert!(
            id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        assert_eq!(session["node"], "edge-1");
        assert_eq!(session["transport"], "quic");
        let remote: std::net::SocketAddr = session["remote"].as_str().unwrap().parse().unwrap();
        assert!(remote.ip().is_loopback(), "{remote}");
        assert_eq!(session["local"], ops.quic.to_string());
        let started = session["started"].as_u64().unwrap();
        assert!(started <= started_bound && started + 60 > started_bound);
        // Credentials are never listed.
        assert!(session.get("query").is_none() && session.get("token").is_none());
    }
    let by_path = |path: &str| all.iter().find(|s| s["path"] == path).unwrap().clone();
    let (wt, raw) = (by_path("/anon/room"), by_path("/live"));
    assert_eq!(wt["alpn"], subscriber.version_name().unwrap());
    assert_eq!(raw["alpn"], publisher.version_name().unwrap());
    assert_eq!(wt["role"], "subscriber");
    assert_eq!(raw["role"], "publisher");
    // No SNI for an IP address: the CONNECT's host stands in, as 0.17 does.
    assert_eq!(wt["server_name"], "127.0.0.1");
    assert!(raw.get("server_name").is_none(), "{raw}");

    assert_eq!(paths(&sessions(&ops, "path=anon/**")), ["/anon/room"]);
    assert_eq!(paths(&sessions(&ops, "role=publisher")), ["/live"]);
    assert_eq!(sessions(&ops, "remote=127.0.0.0/8&transport=quic").len(), 2);
    assert!(sessions(&ops, "remote=10.0.0.0/8").is_empty());
    assert!(sessions(&ops, "transport=websocket").is_empty());
    let id = wt["id"].as_str().unwrap();
    assert_eq!(paths(&sessions(&ops, &format!("id={id}"))), ["/anon/room"]);
    assert_eq!(
        paths(&sessions(&ops, &format!("local={}&node=edge-1", ops.quic))).len(),
        2
    );

    for (query, body) in [
        ("query=jwt", "unknown filter field: query"),
        ("colour=red", "unknown filter field: colour"),
        (
            "remote=10.0.0.0/40",
            "invalid remote: invalid remote CIDR: 10.0.0.0/40",
        ),
        ("role=both", "invalid role: both"),
    ] {
        let response = get(ops.internal, &format!("/sessions?{query}"));
        assert_eq!((response.status, response.body.as_str()), (400, body));
    }
    assert_eq!(request(ops.internal, "POST", "/sessions").status, 405);
    assert_eq!(get(ops.internal, "/sessions/revalidate").status, 405);
    // Only the internal listener has them.
    assert_eq!(get(ops.web, "/sessions").status, 404);

    subscriber.close().await;
    wait_until(|| (paths(&sessions(&ops, "")) == ["/live"]).then_some(()));
    drop(publisher);
}

fn token(key: &Key, root: &str) -> String {
    let exp = SystemTime::now() + Duration::from_secs(3600);
    let claims = Claims::default()
        .with_root(root)
        .with_subscribe([""])
        .with_expires(Some(exp));
    key.sign(&claims).unwrap()
}

fn revalidate(ops: &Ops, query: &str) -> (u16, Vec<String>) {
    let response = request(
        ops.internal,
        "POST",
        &format!("/sessions/revalidate?{query}"),
    );
    let body: Value = serde_json::from_str(&response.body)
        .unwrap_or_else(|_| panic!("JSON from revalidate: {}", response.body));
    let mut ids: Vec<String> = body["ids"]
        .as_array()
        .expect("an ids array")
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    (response.status, ids)
}

/// Rotating a key and nudging: a session whose token the current keys no longer verify
/// is closed, one that needs no token is kept, and a filter that matches nothing is 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidate_closes_sessions_the_reloaded_keys_no_longer_admit() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("relay.jwk");
    let old = Key::generate(Algorithm::HS256, Some(KeyId::decode("k").unwrap())).unwrap();
    std::fs::write(&key_path, serde_json::to_string(&old).unwrap()).unwrap();
    let ops = start(&config(&format!(
        "key = {:?}\npublic = \"anon\"\n",
        key_path.display().to_string()
    )));

    let url = format!("https://{}/room?jwt={}", ops.quic, token(&old, "room"));
    let with_token = connect(&url, ConnectOptions::new(trust(&ops)).subscribe_only("")).await;
    let public = connect(
        &format!("https://{}/anon", ops.quic),
        ConnectOptions::new(trust(&ops)).subscribe_only(""),
    )
    .await;
    // Listed from the handshake on, admitted (its role known) once its SETUP is in: a
    // re-check only concerns admitted sessions.
    let listed = wait_until(|| {
        let list = sessions(&ops, "");
        (list.len() == 2 && list.iter().all(|s| s["role"] == "subscriber")).then_some(list)
    });
    let id_at = |path: &str| {
        listed.iter().find(|s| s["path"] == path).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (token_id, public_id) = (id_at("/room"), id_at("/anon"));

    // Before any change a re-check keeps both.
    let (status, ids) = revalidate(&ops, "");
    assert_eq!(status, 202);
    let mut both = vec![token_id.clone(), public_id.clone()];
    both.sort();
    assert_eq!(ids, both);
    assert!(with_token.closed(KEPT).await.is_err(), "closed while valid");

    // The key is replaced: the old token no longer verifies, once asked.
    let new = Key::generate(Algorithm::HS256, Some(KeyId::decode("k").unwrap())).unwrap();
    std::fs::write(&key_path, serde_json::to_string(&new).unwrap()).unwrap();
    ops.relay.signal(libc::SIGHUP);
    ops.relay.wait_for_line("SIGHUP: [auth] reloaded");
    assert!(
        with_token.closed(KEPT).await.is_err(),
        "a reload alone keeps admitted sessions"
    );
    assert_eq!(revalidate(&ops, "path=nowhere/**"), (200, vec![]));
    assert_eq!(
        revalidate(&ops, "path=anon"),
        (202, vec![public_id.clone()])
    );
    assert_eq!(revalidate(&ops, "path=room"), (202, vec![token_id.clone()]));
    let closed = with_token.closed(STEP).await;
    assert!(
        matches!(closed, Ok(Err(_))),
        "the session with the old token was not closed: {closed:?}"
    );
    ops.relay
        .wait_for_line("revalidation refused the session; closed");
    assert!(
        public.closed(KEPT).await.is_err(),
        "the public session was closed"
    );
    wait_until(|| (paths(&sessions(&ops, "")) == ["/anon"]).then_some(()));
    let response = get(ops.internal, "/sessions/revalidate?x=1");
    assert_eq!(response.status, 405);
    let response = request(ops.internal, "POST", "/sessions/revalidate?x=1");
    assert_eq!(
        (response.status, response.body.as_str()),
        (400, "unknown filter field: x")
    );
}
