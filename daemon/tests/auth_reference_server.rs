//! moq-relayd with `[auth] url` pointed at moq-dev's own reference auth server (the
//! published `moq-auth` crate's `serve::Server`, what `moq auth serve` runs): its keys,
//! its tokens, its public and certificate rules decide, and moq-relayd must carry them
//! out as moq-relay 0.17 does (spec `moq-relay-0.17.md` 2.5, 2.6).

mod common;

use std::time::{Duration, SystemTime};

use common::Running;
use common::sessions::{
    ADMITTED, BOTH, STEP, assert_admitted, assert_refused, one_group_crosses, rogue_as,
};
use moq_auth::serve::{Keys, Policy, Server};
use moq_auth::{Algorithm, Claims, Key, KeyId, Pattern, Permissions};

/// moq-relay asks its decider after the moq-lite-05 SETUP: every rogue session sends one.
const SETUP_BOTH: Option<u64> = Some(0);
const UNAUTHORIZED_017: u64 = 0x2;

fn patterns(list: &[&str]) -> Vec<Pattern> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

/// The reference server on 127.0.0.1: keys from `dir`, `anon/**` for anyone, and
/// everything under `peers/**` for a verified certificate.
async fn reference_server(dir: &std::path::Path) -> std::net::SocketAddr {
    let mut policy = Policy::default();
    policy.keys = Some(Keys::Dir(dir.to_owned()));
    policy.public = Permissions::new(
        patterns(&["anon/**"]).into_iter().collect(),
        patterns(&["anon/**"]).into_iter().collect(),
    );
    policy.mtls = Permissions::new(
        patterns(&["peers/**"]).into_iter().collect(),
        patterns(&["peers/**"]).into_iter().collect(),
    );
    let server = Server::new(policy).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve(listener).await });
    addr
}

fn sign(key: &Key, root: &str, publish: &[&str], subscribe: &[&str], ttl: Duration) -> String {
    let claims = Claims::default()
        .with_root(root)
        .with_publish(patterns(publish))
        .with_subscribe(patterns(subscribe))
        .with_expires(SystemTime::now() + ttl);
    key.sign(&claims).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_auth_server_decides_and_moq_relayd_carries_it_out() {
    let keys = tempfile::TempDir::new().unwrap();
    let key = Key::generate(Algorithm::HS256, Some(KeyId::decode("k1").unwrap())).unwrap();
    key.to_file(keys.path().join("k1.jwk")).unwrap();
    let auth = reference_server(keys.path()).await;
    let pki = common::pki::Pki::new();
    let relay = Running::start(&format!(
        "[listen]\nbind = \"127.0.0.1:0\"\n[listen.tls]\ngenerate = [\"localhost\"]\nroot = [{:?}]\n\
         [runtime]\nworkers = 2\n[auth]\nurl = \"http://{auth}/\"\n",
        pki.ca.display().to_string()
    ));

    // Its tokens: publish and subscribe as the patterns allow.
    let hour = Duration::from_secs(3600);
    let put = sign(&key, "demo", &["alice/**"], &[], hour);
    let get = sign(&key, "demo", &[], &["**"], hour);
    one_group_crosses(
        &relay,
        &format!("/demo?jwt={put}"),
        &format!("/demo?jwt={get}"),
        b"reference",
    )
    .await;

    // Its public rule, rooted at `/`; and its refusals, closed with 0.17's 0x2.
    assert_admitted(&relay, "/anon/room", SETUP_BOTH, "public pattern").await;
    let code = UNAUTHORIZED_017;
    assert_refused(
        &relay,
        "/other",
        SETUP_BOTH,
        code,
        "outside the public rule",
    )
    .await;
    assert_refused(
        &relay,
        &format!("/other?jwt={put}"),
        SETUP_BOTH,
        code,
        "root",
    )
    .await;
    let stranger = Key::generate(Algorithm::HS256, Some(KeyId::decode("k1").unwrap())).unwrap();
    let forged = sign(&stranger, "demo", &["**"], &["**"], hour);
    assert_refused(
        &relay,
        &format!("/demo?jwt={forged}"),
        SETUP_BOTH,
        code,
        "signature",
    )
    .await;
    let unknown = Key::generate(Algorithm::HS256, Some(KeyId::decode("k2").unwrap())).unwrap();
    let unknown = sign(&unknown, "demo", &["**"], &["**"], hour);
    assert_refused(
        &relay,
        &format!("/demo?jwt={unknown}"),
        SETUP_BOTH,
        code,
        "kid",
    )
    .await;

    // A verified certificate: the server reads the facts we report and grants `peers/**`.
    let peer = pki.client("peer", hour);
    let identity = Some((peer.cert.as_path(), peer.key.as_path()));
    for via in BOTH {
        let admitted = rogue_as(&relay, via, "/peers/a", SETUP_BOTH, identity).await;
        assert!(
            admitted.closed(ADMITTED).await.is_err(),
            "{via:?}: a certificate peer"
        );
        let refused = rogue_as(&relay, via, "/other", SETUP_BOTH, identity).await;
        let close = refused.closed(STEP).await.expect("refused");
        assert_eq!(
            close.code,
            Some(code),
            "{via:?}: a certificate outside its rule"
        );
        // A token beside a certificate is refused (neither can safely win).
        let both = rogue_as(
            &relay,
            via,
            &format!("/peers/a?jwt={get}"),
            SETUP_BOTH,
            identity,
        )
        .await;
        let close = both.closed(STEP).await.expect("refused");
        assert_eq!(
            close.code,
            Some(code),
            "{via:?}: a token beside a certificate"
        );
    }
}
