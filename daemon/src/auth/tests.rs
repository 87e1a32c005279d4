//! Behaviour of the auth module against the spec (`auth.md` 5, 7, 8, 9, 13, 14 and
//! `moq-relay-0.17.md` 2.3, 2.4, 2.7), with keys and tokens minted by moq-dev's own
//! `moq-token` crate wherever it can mint them, and by jsonwebtoken directly for the
//! payloads moq-token refuses to write (`aud`, floats, pattern claims).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moq_token::{Algorithm as Alg, Claims as TokenClaims, KeyId};
use serde_json::json;

use super::*;
use crate::config::{PublicAccess, Strings};

// ------------------------------------------------------------------ fixtures

/// 2026-01-01T00:00:00Z: after the 14.1 token's `iat`, long before its `exp`.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// 14.1's key: the secret `moq-relay-example-secret-32bytes`.
const VECTOR_HS256_JWK: &str = r#"{"kty":"oct","alg":"HS256","k":"bW9xLXJlbGF5LWV4YW1wbGUtc2VjcmV0LTMyYnl0ZXM","kid":"relay-1"}"#;
const VECTOR_HS256_LEGACY: &str = "eyJrdHkiOiJvY3QiLCJhbGciOiJIUzI1NiIsImsiOiJiVzl4TFhKbGJHRjVMV1Y0WVcxd2JHVXRjMlZqY21WMExUTXlZbmwwWlhNIiwia2lkIjoicmVsYXktMSJ9";
const VECTOR_HS256_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiIsImtpZCI6InJlbGF5LTEifQ.eyJyb290IjoiZGVtbyIsInB1dCI6WyJhbGljZSJdLCJnZXQiOlsiIl0sImV4cCI6NDEwMjQ0NDgwMCwiaWF0IjoxNzY3MjI1NjAwfQ.MZ7jpWTCkDDdgcXj96h709WqE69RVcu7nsYuxQjuVXM";
const VECTOR_SECRET: &[u8] = b"moq-relay-example-secret-32bytes";
const VECTOR_EDDSA_JWK: &str = r#"{"alg":"EdDSA","key_ops":["verify"],"kty":"OKP","crv":"Ed25519","x":"v3NDe5m83QbkR3B5_YnGPhulOIN0IlMtao5rJkHjPhA","kid":"ex-1"}"#;
const VECTOR_EDDSA_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSIsImtpZCI6ImV4LTEifQ.eyJyb290IjoiZGVtbyIsInB1dCI6WyJhbGljZSJdfQ.JfOhCRhevermSRS0XgFlSR9QXsv529jTylGXMkLwQfAi-FTpzj75STFjXpC8fwd4W7LrQ2s-zCxfx6HIsJiYBg";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write a key file");
        path
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn with_key(path: &Path) -> AuthConfig {
    AuthConfig {
        key: Some(path.display().to_string()),
        ..AuthConfig::default()
    }
}

fn with_key_dir(path: &Path) -> AuthConfig {
    AuthConfig {
        key_dir: Some(path.display().to_string()),
        ..AuthConfig::default()
    }
}

fn public_config(subscribe: &[&str], publish: &[&str], generation: Generation) -> AuthConfig {
    AuthConfig {
        public: Some(PublicAccess {
            subscribe: Strings(strings(subscribe)),
            publish: Strings(strings(publish)),
            api: None,
        }),
        generation,
        ..AuthConfig::default()
    }
}

fn public(subscribe: &[&str], publish: &[&str]) -> Authenticator {
    Authenticator::new(&public_config(subscribe, publish, Generation::V014))
        .expect("public-only config loads")
}

/// The verifying JWK text for a moq-token key: its public half, or the key itself for
/// HMAC (which has none).
fn verifying_jwk(key: &moq_token::Key) -> String {
    let public = key.to_public().unwrap_or_else(|_| key.clone());
    serde_json::to_string(&public).expect("a JWK serialises")
}

/// RSA key generation in a debug build takes seconds: one key serves every RS/PS test.
fn rsa_key(alg: Alg) -> moq_token::Key {
    static RSA: OnceLock<moq_token::Key> = OnceLock::new();
    let base = RSA.get_or_init(|| {
        moq_token::Key::generate(Alg::RS256, Some(KeyId::decode("rsa").unwrap())).unwrap()
    });
    let mut jwk = base.export();
    jwk.algorithm = alg;
    jwk.import().unwrap()
}

fn mint(alg: Alg, kid: &str) -> moq_token::Key {
    match alg {
        Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => rsa_key(alg),
        _ => moq_token::Key::generate(alg, Some(KeyId::decode(kid).unwrap())).unwrap(),
    }
}

fn demo_claims() -> TokenClaims {
    TokenClaims::default()
        .with_root("demo")
        .with_publish(["alice"])
        .with_subscribe([""])
}

/// An HS256 token over an arbitrary payload, signed with the 14.1 secret.
fn raw_token(payload: serde_json::Value, kid: Option<&str>) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    let key = jsonwebtoken::EncodingKey::from_secret(VECTOR_SECRET).unwrap();
    jsonwebtoken::encode(&header, &payload, &key).unwrap()
}

fn vector_key_auth(fixture: &Fixture) -> Authenticator {
    let path = fixture.write("relay-1.jwk", VECTOR_HS256_JWK);
    Authenticator::new(&with_key(&path)).unwrap()
}

fn cause(result: Result<Access, Rejection>) -> Cause {
    result.expect_err("refused").cause().clone()
}

fn grants(access: &Access) -> (Vec<String>, Vec<String>) {
    (access.publish.clone(), access.subscribe.clone())
}

// ------------------------------------------------------------------ algorithms

#[test]
fn every_algorithm_family_verifies_tokens_minted_by_moq_token() {
    let fixture = Fixture::new();
    for alg in [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::ES256,
        Alg::ES384,
        Alg::RS256,
        Alg::PS256,
        Alg::PS512,
        Alg::EdDSA,
    ] {
        let key = mint(alg, "k1");
        let path = fixture.write(&format!("{alg:?}.jwk"), &verifying_jwk(&key));
        let auth = Authenticator::new(&with_key(&path)).unwrap();
        let token = key.sign(&demo_claims()).unwrap();
        let access = auth
            .authorize_at("/demo", &format!("jwt={token}"), now())
            .unwrap_or_else(|err| panic!("{alg:?}: {err}"));
        assert_eq!(
            grants(&access),
            (strings(&["alice"]), strings(&[""])),
            "{alg:?}"
        );
        assert_eq!(access.expires, None, "{alg:?}: no exp, never expires");
    }
}

#[test]
fn the_legacy_base64url_key_file_form_loads_as_moq_token_writes_it() {
    let fixture = Fixture::new();
    let key = mint(Alg::ES256, "legacy");
    let path = fixture.dir.path().join("legacy.jwk");
    key.to_public().unwrap().to_file(&path).unwrap();
    let auth = Authenticator::new(&with_key(&path)).unwrap();
    let token = key.sign(&demo_claims()).unwrap();
    assert!(
        auth.authorize_at("/demo", &format!("jwt={token}"), now())
            .is_ok()
    );

    // The spec's own legacy example (9.1), with a trailing newline.
    let legacy = fixture.write("vector.jwk", &format!("{VECTOR_HS256_LEGACY}\n"));
    let auth = Authenticator::new(&with_key(&legacy)).unwrap();
    assert!(
        auth.authorize_at("/demo", &format!("jwt={VECTOR_HS256_TOKEN}"), now())
            .is_ok()
    );
}

#[test]
fn a_token_whose_alg_differs_from_the_keys_is_refused() {
    let fixture = Fixture::new();
    let auth = vector_key_auth(&fixture);
    // Same secret, other HMAC variant: only the header's `alg` differs.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384);
    header.kid = Some("relay-1".into());
    let key = jsonwebtoken::EncodingKey::from_secret(VECTOR_SECRET).unwrap();
    let token = jsonwebtoken::encode(&header, &json!({"root": "demo", "put": ""}), &key).unwrap();
    let refused = auth
        .authorize_at("/demo", &format!("jwt={token}"), now())
        .unwrap_err();
    assert_eq!(refused.reason(), "wrong_algorithm");
    assert_eq!(refused.close_code(), 6);

    // An ES256 key never verifies an HS256 token, even one from its own `kid`.
    let es = mint(Alg::ES256, "relay-1");
    let path = fixture.write("es.jwk", &verifying_jwk(&es));
    let auth = Authenticator::new(&with_key(&path)).unwrap();
    assert_eq!(
        auth.authorize_at("/demo", &format!("jwt={VECTOR_HS256_TOKEN}"), now())
            .unwrap_err()
            .reason(),
        "wrong_algorithm"
    );
}

// ------------------------------------------------------------------ spec 14 vectors

#[test]
fn spec_14_1_hs256_vector_scopes_match_the_table() {
    let fixture = Fixture::new();
    let auth = vector_key_auth(&fixture);
    let query = format!("jwt={VECTOR_HS256_TOKEN}");
    let at = |path: &str| auth.authorize_at(path, &query, now());

    let demo = at("/demo").unwrap();
    assert_eq!(demo.root, "demo");
    assert_eq!(grants(&demo), (strings(&["alice"]), strings(&[""])));
    assert!(demo.may_publish("alice") && demo.may_publish("alice/cam"));
    assert!(!demo.may_publish("bob") && demo.may_subscribe("bob"));
    assert_eq!(
        demo.expires,
        Some(UNIX_EPOCH + Duration::from_secs(4_102_444_800))
    );

    let root = at("/").unwrap();
    assert_eq!(
        grants(&root),
        (strings(&["demo/alice"]), strings(&["demo"]))
    );
    let alice = at("/demo/alice").unwrap();
    assert_eq!(grants(&alice), (strings(&[""]), strings(&[""])));
    let bob = at("/demo/bob").unwrap();
    assert_eq!(grants(&bob), (strings(&[]), strings(&[""])));

    let other = at("/other").unwrap_err();
    assert_eq!(other.cause(), &Cause::RootMismatch("other".into()));
    assert_eq!(other.close_code(), 6);

    // `"get": ""` verifies identically to `"get": [""]`.
    let string_form = raw_token(
        json!({"root": "demo", "put": "alice", "get": "", "exp": 4_102_444_800_i64}),
        Some("relay-1"),
    );
    assert_eq!(
        auth.authorize_at("/demo", &format!("jwt={string_form}"), now())
            .unwrap(),
        demo
    );
}

#[test]
fn spec_14_1_vector_verifies_from_a_key_dir_by_kid() {
    let fixture = Fixture::new();
    fixture.write("relay-1.jwk", VECTOR_HS256_JWK);
    // Files no `kid` can name are never read, whatever they hold.
    fixture.write("README.txt", "not a key");
    fixture.write("bad.name.jwk", "not a key");
    let auth = Authenticator::new(&with_key_dir(fixture.path())).unwrap();
    assert!(
        auth.authorize_at("/demo", &format!("jwt={VECTOR_HS256_TOKEN}"), now())
            .is_ok()
    );
}

#[test]
fn spec_14_2_eddsa_vector_verifies_and_a_changed_byte_does_not() {
    let fixture = Fixture::new();
    let path = fixture.write("ex-1.jwk", VECTOR_EDDSA_JWK);
    let auth = Authenticator::new(&with_key(&path)).unwrap();
    let access = auth
        .authorize_at("/demo", &format!("jwt={VECTOR_EDDSA_TOKEN}"), now())
        .unwrap();
    assert_eq!(grants(&access), (strings(&["alice"]), strings(&[])));
    assert!(auth.check_role(&access, Role::Publisher).is_ok());
    let subscriber = auth.check_role(&access, Role::Subscriber).unwrap_err();
    assert_eq!(
        (
            subscriber.status(),
            subscriber.close_code(),
            subscriber.reason()
        ),
        (403, 6, "role_not_granted")
    );

    // `{"root":"demo",...` → `{"root":"demn",...`: one payload byte changed.
    let (header, rest) = VECTOR_EDDSA_TOKEN.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let tampered_payload = payload.replacen("ZGVtbyIs", "ZGVtbiIs", 1);
    assert_ne!(tampered_payload, payload);
    let tampered = format!("{header}.{tampered_payload}.{signature}");
    assert_eq!(
        cause(auth.authorize_at("/demo", &format!("jwt={tampered}"), now())),
        Cause::BadSignature
    );
}

/// 14.3: `key` plus `[auth.public]`. The token decides when present, public access
/// only without one, and a bad token is never public.
#[test]
fn spec_14_3_key_plus_public_prefixes() {
    let fixture = Fixture::new();
    let path = fixture.write("root.jwk", VECTOR_HS256_JWK);
    let config = AuthConfig {
        key: Some(path.display().to_string()),
        ..public_config(
            &["anon", "demo"],
            &["anon", "demo/viewer"],
            Generation::V014,
        )
    };
    let auth = Authenticator::new(&config).unwrap();

    let demo = auth.authorize_at("/demo", "", now()).unwrap();
    assert_eq!(grants(&demo), (strings(&["viewer"]), strings(&[""])));
    assert_eq!(
        cause(auth.authorize_at("/secret", "", now())),
        Cause::NoPublicAccess("secret".into())
    );

    let secret = raw_token(json!({"root": "secret", "get": ""}), None);
    let access = auth
        .authorize_at("/secret", &format!("jwt={secret}"), now())
        .unwrap();
    assert_eq!(grants(&access), (strings(&[]), strings(&[""])));

    let garbage = auth
        .authorize_at("/demo", "jwt=garbage", now())
        .unwrap_err();
    assert_eq!(garbage.reason(), "malformed_token");
    assert_eq!(garbage.close_code(), 6);
}

// ------------------------------------------------------------------ claims

#[test]
fn claims_are_rebased_onto_the_connection_path_as_in_the_spec_table() {
    let fixture = Fixture::new();
    let auth = vector_key_auth(&fixture);
    let token = raw_token(
        json!({"root": "room/123", "put": ["alice"], "get": ["bob"]}),
        None,
    );
    let at = |path: &str| auth.authorize_at(path, &format!("jwt={token}"), now());
    assert_eq!(
        grants(&at("/room/123").unwrap()),
        (strings(&["alice"]), strings(&["bob"]))
    );
    assert_eq!(
        grants(&at("/room").unwrap()),
        (strings(&["123/alice"]), strings(&["123/bob"]))
    );
    assert_eq!(
        grants(&at("/").unwrap()),
        (strings(&["room/123/alice"]), strings(&["room/123/bob"]))
    );
    assert_eq!(
        grants(&at("/room/123/alice").unwrap()),
        (strings(&[""]), strings(&[]))
    );
    assert_eq!(
        grants(&at("/room/123/bob").unwrap()),
        (strings(&[]), strings(&[""]))
    );
    assert_eq!(
        cause(at("/room/123/carol")),
        Cause::NothingGranted("room/123/carol".into())
    );
    assert_eq!(
        cause(at("/room/1234")),
        Cause::RootMismatch("room/1234".into()),
        "`123` is not a segment prefix of `1234`"
    );
    assert_eq!(cause(at("/other")), Cause::RootMismatch("other".into()));
}

#[test]
fn claim_rules_follow_moq_relay_014() {
    let fixture = Fixture::new();
    let auth = vector_key_auth(&fixture);
    let at = |payload: serde_json::Value| {
        auth.authorize_at("/", &format!("jwt={}", raw_token(payload, None)), now())
    };
    let now_secs = 1_767_225_600_i64;

    // `exp` with no leeway: equal to now still passes, one second earlier does not.
    let at_now = at(json!({"get": "", "exp": now_secs})).unwrap();
    assert_eq!(at_now.expires, Some(now()));
    assert!(matches!(
        cause(at(json!({"get": "", "exp": now_secs - 1}))),
        Cause::Expired(_)
    ));
    // `nbf` is ignored, a future `iat` is accepted, unknown claims are ignored.
    assert!(at(json!({"get": "", "nbf": now_secs + 3600, "iat": now_secs + 3600})).is_ok());
    assert!(at(json!({"get": "", "iss": "x", "sub": "y", "cluster": true})).is_ok());
    // `aud` is fatal: no audience is configured.
    assert_eq!(
        cause(at(json!({"get": "", "aud": "relay"}))),
        Cause::Audience
    );
    // Integers only.
    assert!(matches!(
        cause(at(json!({"get": "", "exp": 1.5}))),
        Cause::InvalidClaims(_)
    ));
    assert!(matches!(
        cause(at(json!({"get": "", "iat": "123"}))),
        Cause::InvalidClaims(_)
    ));
    // Absent, null and [] grant nothing; a token granting nothing is useless.
    assert_eq!(
        cause(at(json!({"put": null, "get": []}))),
        Cause::UselessToken
    );
    assert_eq!(cause(at(json!({"root": "demo"}))), Cause::UselessToken);
}

#[test]
fn pattern_claims_are_read_and_mixing_the_forms_is_refused() {
    let fixture = Fixture::new();
    let auth = vector_key_auth(&fixture);
    let token = raw_token(
        json!({"root": "rooms", "publish": ["*/cam"], "subscribe": ["**"]}),
        None,
    );
    let access = auth
        .authorize_at("/rooms", &format!("jwt={token}"), now())
        .unwrap();
    assert!(access.may_publish("a/cam") && !access.may_publish("a/mic"));
    assert!(!access.may_publish("a/cam/deeper"), "`*` is one segment");
    assert_eq!(
        access.publish,
        strings(&[""]),
        "announce interest from the head"
    );
    // At `/rooms/a`, `*/cam` rebases to exactly `cam`.
    let room = auth
        .authorize_at("/rooms/a", &format!("jwt={token}"), now())
        .unwrap();
    assert!(room.may_publish("cam") && !room.may_publish("mic"));

    let mixed = raw_token(json!({"put": "a", "subscribe": ["**"]}), None);
    assert_eq!(
        cause(auth.authorize_at("/", &format!("jwt={mixed}"), now())),
        Cause::MixedClaims
    );
    let bad = raw_token(json!({"publish": ["/a/**"]}), None);
    assert!(matches!(
        cause(auth.authorize_at("/", &format!("jwt={bad}"), now())),
        Cause::InvalidClaims(_)
    ));
}

#[test]
fn a_key_scope_caps_what_its_tokens_may_grant() {
    let fixture = Fixture::new();
    let scoped = r#"{"kty":"oct","alg":"HS256","k":"bW9xLXJlbGF5LWV4YW1wbGUtc2VjcmV0LTMyYnl0ZXM","scope":{"root":"project","put":["live"],"get":["watch"]}}"#;
    let path = fixture.write("scoped.jwk", scoped);
    let auth = Authenticator::new(&with_key(&path)).unwrap();
    let verify = |payload: serde_json::Value| {
        auth.authorize_at("/", &format!("jwt={}", raw_token(payload, None)), now())
    };
    assert!(verify(json!({"root": "project/live", "put": ["room1"]})).is_ok());
    assert!(verify(json!({"root": "project", "put": ["live/room1"], "get": ["watch"]})).is_ok());
    for refused in [
        json!({"root": "project/lively", "put": [""]}),
        json!({"root": "project/live", "get": [""]}),
        json!({"root": "", "put": ["project"]}),
    ] {
        assert_eq!(
            cause(verify(refused.clone())),
            Cause::ScopeExceeded,
            "{refused}"
        );
    }
}

// ------------------------------------------------------------------ keys and kid

#[test]
fn key_dir_needs_a_known_safe_kid_and_a_single_key_ignores_it() {
    let fixture = Fixture::new();
    fixture.write("relay-1.jwk", VECTOR_HS256_JWK);
    let dir = Authenticator::new(&with_key_dir(fixture.path())).unwrap();
    let at = |auth: &Authenticator, kid: Option<&str>| {
        let token = raw_token(json!({"get": ""}), kid);
        auth.authorize_at("/", &format!("jwt={token}"), now())
    };
    assert!(at(&dir, Some("relay-1")).is_ok());
    assert_eq!(
        cause(at(&dir, Some("relay-2"))),
        Cause::UnknownKid("relay-2".into())
    );
    assert_eq!(cause(at(&dir, None)), Cause::MissingKid);
    assert_eq!(cause(at(&dir, Some("../relay-1"))), Cause::InvalidKid);
    assert_eq!(
        at(&dir, Some("relay-2")).unwrap_err().reason(),
        "unknown_kid"
    );

    let single = vector_key_auth(&fixture);
    assert!(at(&single, Some("someone-else")).is_ok());
    assert!(at(&single, None).is_ok());
}

#[test]
fn a_key_without_verify_in_key_ops_refuses_every_token() {
    let fixture = Fixture::new();
    let sign_only = r#"{"kty":"oct","alg":"HS256","k":"bW9xLXJlbGF5LWV4YW1wbGUtc2VjcmV0LTMyYnl0ZXM","key_ops":["sign"]}"#;
    let path = fixture.write("sign.jwk", sign_only);
    let auth = Authenticator::new(&with_key(&path)).unwrap();
    assert_eq!(
        cause(auth.authorize_at("/demo", &format!("jwt={VECTOR_HS256_TOKEN}"), now())),
        Cause::KeyCannotVerify
    );
}

#[test]
fn a_key_file_that_does_not_parse_is_a_start_error_naming_the_file() {
    let fixture = Fixture::new();
    let cases = [
        ("junk.jwk", "this is not a key"),
        ("set.jwk", r#"{"keys":[]}"#),
        ("short.jwk", r#"{"kty":"oct","alg":"HS256","k":"c2hvcnQ"}"#),
        (
            "alg.jwk",
            r#"{"kty":"oct","alg":"ES256","k":"bW9xLXJlbGF5LWV4YW1wbGUtc2VjcmV0LTMyYnl0ZXM"}"#,
        ),
        (
            "b64.jwk",
            r#"{"kty":"oct","alg":"HS256","k":"bW9x+LXJlbGF5LWV4YW1wbGUtc2VjcmV0LTMyYnl0ZXM"}"#,
        ),
        (
            "scope.jwk",
            r#"{"kty":"oct","alg":"HS256","k":"bW9xLXJlbGF5LWV4YW1wbGUtc2VjcmV0LTMyYnl0ZXM","scope":{"root":"x"}}"#,
        ),
        (
            "ops.jwk",
            r#"{"kty":"oct","alg":"HS256","k":"bW9xLXJlbGF5LWV4YW1wbGUtc2VjcmV0LTMyYnl0ZXM","key_ops":["wrap"]}"#,
        ),
        (
            "curve.jwk",
            r#"{"kty":"EC","alg":"ES384","crv":"P-256","x":"AA","y":"AA"}"#,
        ),
    ];
    for (name, text) in cases {
        let path = fixture.write(name, text);
        let err = Authenticator::new(&with_key(&path)).unwrap_err();
        assert!(matches!(err, AuthError::Key { .. }), "{name}: {err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{name}: the error names the file: {err}"
        );
    }
    let missing = fixture.path().join("missing.jwk");
    let err = Authenticator::new(&with_key(&missing)).unwrap_err();
    assert!(err.to_string().contains("missing.jwk"), "{err}");

    // In a key_dir, a bad `{kid}.jwk` fails the whole load and is named too.
    fixture.write("good.jwk", VECTOR_HS256_JWK);
    let err = Authenticator::new(&with_key_dir(fixture.path())).unwrap_err();
    assert!(err.to_string().contains(".jwk"), "{err}");

    // Padded base64url members load (moq-token accepts both spellings).
    let padded = fixture.write(
        "padded.jwk",
        r#"{"kty":"oct","alg":"HS256","k":"bW9xLXJlbGF5LWV4YW1wbGUtc2VjcmV0LTMyYnl0ZXM="}"#,
    );
    assert!(Authenticator::new(&with_key(&padded)).is_ok());
    // No `kty` means `oct`, for keys minted before it was written.
    let no_kty = fixture.write(
        "nokty.jwk",
        r#"{"alg":"HS256","k":"bW9xLXJlbGF5LWV4YW1wbGUtc2VjcmV0LTMyYnl0ZXM"}"#,
    );
    assert!(Authenticator::new(&with_key(&no_kty)).is_ok());
}

#[test]
fn keys_fetched_over_http_are_refused_at_start_not_per_session() {
    let config = AuthConfig {
        key: Some("https://keys.example/root.jwk".into()),
        ..AuthConfig::default()
    };
    let err = Authenticator::new(&config).unwrap_err();
    assert!(
        matches!(err, AuthError::UrlKeys { key: "key", .. }),
        "{err}"
    );
}

#[test]
fn reload_keeps_the_old_keys_when_the_new_ones_fail() {
    let fixture = Fixture::new();
    let old = mint(Alg::EdDSA, "old");
    let new = mint(Alg::EdDSA, "new");
    let path = fixture.write("root.jwk", &verifying_jwk(&old));
    let config = with_key(&path);
    let auth = Authenticator::new(&config).unwrap();
    let old_token = format!("jwt={}", old.sign(&demo_claims()).unwrap());
    let new_token = format!("jwt={}", new.sign(&demo_claims()).unwrap());
    assert!(auth.authorize_at("/demo", &old_token, now()).is_ok());

    fixture.write("root.jwk", "{ half a key");
    let err = auth.reload(&config).unwrap_err();
    assert!(err.to_string().contains("root.jwk"), "{err}");
    assert!(
        auth.authorize_at("/demo", &old_token, now()).is_ok(),
        "a failed reload keeps the keys in force"
    );

    fixture.write("root.jwk", &verifying_jwk(&new));
    auth.reload(&config).unwrap();
    assert_eq!(
        cause(auth.authorize_at("/demo", &old_token, now())),
        Cause::BadSignature
    );
    assert!(auth.authorize_at("/demo", &new_token, now()).is_ok());
}

// ------------------------------------------------------------------ public access

#[test]
fn packaged_public_defaults_match_the_spec_table() {
    let auth = public(&["anon", "demo"], &["anon", "demo/viewer"]);
    let at = |path: &str| auth.authorize_at(path, "", now());
    assert_eq!(
        grants(&at("/").unwrap()),
        (
            strings(&["anon", "demo/viewer"]),
            strings(&["anon", "demo"])
        )
    );
    assert_eq!(
        grants(&at("/demo").unwrap()),
        (strings(&["viewer"]), strings(&[""]))
    );
    assert_eq!(
        grants(&at("/demo/viewer").unwrap()),
        (strings(&[""]), strings(&[""]))
    );
    assert_eq!(
        grants(&at("/anon/x").unwrap()),
        (strings(&[""]), strings(&[""]))
    );
    assert_eq!(cause(at("/secret")), Cause::NoPublicAccess("secret".into()));
    assert_eq!(
        cause(at("/dem")),
        Cause::NoPublicAccess("dem".into()),
        "`dem` is not a segment prefix of `demo`"
    );
}

#[test]
fn everything_public_grants_both_directions_everywhere() {
    let auth = public(&[""], &[""]);
    let access = auth.authorize_at("/any/where", "x=1", now()).unwrap();
    assert_eq!(access.root, "any/where");
    assert!(access.may_publish("cam") && access.may_subscribe("deep/er/path"));
    assert_eq!(access.absolute("cam"), "any/where/cam");
    assert_eq!(access.relative("any/where/cam"), Some("cam"));
    assert_eq!(access.relative("any/whereelse"), None);
}

#[test]
fn no_auth_section_refuses_everyone_with_code_6() {
    let auth = Authenticator::new(&AuthConfig::default()).unwrap();
    assert!(auth.refuses_everyone());
    let err = auth.authorize_at("/", "", now()).unwrap_err();
    assert_eq!((err.close_code(), err.reason()), (6, "no_public_access"));
}

#[test]
fn a_token_is_never_downgraded_to_public_access() {
    let auth = public(&[""], &[""]);
    let err = auth.authorize_at("/", "jwt=&jwt=abc", now()).unwrap_err();
    assert_eq!(err.cause(), &Cause::AuthenticationDisabled);
    // Empty `jwt` values are skipped, so this is anonymous.
    assert!(auth.authorize_at("/", "jwt=", now()).is_ok());
    // Even a valid token is refused without a key source: it cannot be checked.
    let token = format!("jwt={VECTOR_HS256_TOKEN}");
    assert_eq!(
        cause(auth.authorize_at("/demo", &token, now())),
        Cause::AuthenticationDisabled
    );

    // With a key, an expired or forged token on a public path is refused too.
    let fixture = Fixture::new();
    let path = fixture.write("root.jwk", VECTOR_HS256_JWK);
    let config = AuthConfig {
        key: Some(path.display().to_string()),
        ..public_config(&[""], &[""], Generation::V014)
    };
    let auth = Authenticator::new(&config).unwrap();
    let expired = raw_token(json!({"get": "", "exp": 1}), None);
    assert!(matches!(
        cause(auth.authorize_at("/demo", &format!("jwt={expired}"), now())),
        Cause::Expired(_)
    ));
    let forged = format!("{}x", &VECTOR_HS256_TOKEN[..VECTOR_HS256_TOKEN.len() - 1]);
    assert!(
        auth.authorize_at("/demo", &format!("jwt={forged}"), now())
            .is_err()
    );
}

#[test]
fn public_reads_prefixes_in_014_and_patterns_in_017() {
    let at = |auth: &Authenticator, path: &str| auth.authorize_at(path, "", now());
    // 0.14: `""` is everything; `anon/**` is the literal segment `**`.
    let everything_014 =
        Authenticator::new(&public_config(&[""], &[""], Generation::V014)).unwrap();
    assert!(at(&everything_014, "/x/y").is_ok());
    let literal_014 =
        Authenticator::new(&public_config(&["anon/**"], &["anon/**"], Generation::V014)).unwrap();
    assert!(at(&literal_014, "/anon/room").is_err());
    assert!(at(&literal_014, "/anon/**/room").is_ok());

    // 0.17: `**` is everything; `anon/**` admits `/`, `/anon`, `/anon/room`, not `/other`.
    let everything_017 =
        Authenticator::new(&public_config(&["**"], &["**"], Generation::V017)).unwrap();
    let anywhere = at(&everything_017, "/x/y").unwrap();
    assert!(anywhere.may_publish("a/b") && anywhere.may_subscribe(""));
    let anon =
        Authenticator::new(&public_config(&["anon/**"], &["anon/**"], Generation::V017)).unwrap();
    for admitted in ["/", "/anon", "/anon/room"] {
        assert!(at(&anon, admitted).is_ok(), "{admitted}");
    }
    assert!(!at(&anon, "/").unwrap().may_publish("anonymous"));
    assert_eq!(
        cause(at(&anon, "/other")),
        Cause::NoPublicAccess("other".into())
    );
    // A wildcard-free value keeps its 0.14 meaning in a 0.17 file (0.17 would refuse it).
    let prefix_017 = Authenticator::new(&public_config(&["demo"], &[], Generation::V017)).unwrap();
    assert!(at(&prefix_017, "/demo/room").unwrap().may_subscribe("x"));

    // A file that does not say which it is cannot use a value the two read differently.
    let ambiguous = Authenticator::new(&public_config(&["anon/**"], &[], Generation::Unknown));
    assert!(
        matches!(ambiguous, Err(AuthError::Public { .. })),
        "{ambiguous:?}"
    );
    assert!(Authenticator::new(&public_config(&[""], &[""], Generation::Unknown)).is_ok());
}

#[test]
fn flat_017_public_keys_are_patterns_and_ignored_by_a_014_file() {
    let config = |generation| AuthConfig {
        public_subscribe: Strings(strings(&["*/chat"])),
        public_publish: Strings(strings(&["anon/**"])),
        generation,
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(&config(Generation::V017)).unwrap();
    let root = auth.authorize_at("/", "", now()).unwrap();
    assert!(root.may_subscribe("room/chat") && !root.may_subscribe("room/video"));
    assert!(root.may_publish("anon/x") && !root.may_publish("room/chat"));
    let room = auth.authorize_at("/room", "", now()).unwrap();
    assert!(room.may_subscribe("chat") && room.publish.is_empty());

    let ignored = Authenticator::new(&config(Generation::V014)).unwrap();
    assert!(ignored.refuses_everyone());
}

// ------------------------------------------------------------------ refusals

#[test]
fn close_codes_follow_the_config_generation() {
    for (generation, unauthorized) in [
        (Generation::V014, 6),
        (Generation::Unknown, 6),
        (Generation::V017, 2),
    ] {
        let auth = Authenticator::new(&public_config(&["anon"], &[], generation)).unwrap();
        let refused = auth.authorize_at("/secret", "", now()).unwrap_err();
        assert_eq!(refused.close_code(), unauthorized, "{generation:?}");
        assert_eq!(close_code(502, generation), 566);
    }
    let api = AuthConfig {
        auth_api: Some("https://auth.example/".into()),
        ..AuthConfig::default()
    };
    let refused = Authenticator::new(&api)
        .unwrap()
        .authorize_at("/", "", now())
        .unwrap_err();
    assert_eq!((refused.status(), refused.close_code()), (502, 566));
}

#[test]
fn tokens_come_from_the_last_non_empty_form_decoded_jwt() {
    let fixture = Fixture::new();
    let auth = vector_key_auth(&fixture);
    let query = format!("jwt=&jwt=garbage&other=1&jwt={VECTOR_HS256_TOKEN}&jwt=");
    assert!(auth.authorize_at("/demo", &query, now()).is_ok());
    // `%XX` is decoded in the value, as application/x-www-form-urlencoded says.
    let escaped = VECTOR_HS256_TOKEN.replace('.', "%2E");
    assert!(
        auth.authorize_at("/demo", &format!("jwt={escaped}"), now())
            .is_ok()
    );
    let huge = format!("jwt={}", "a".repeat(MAX_TOKEN_BYTES + 1));
    assert_eq!(
        auth.authorize_at("/demo", &huge, now())
            .unwrap_err()
            .reason(),
        "token_too_long"
    );
}

#[test]
fn a_setup_path_splits_into_connection_path_and_query() {
    assert_eq!(split_target("/demo?jwt=abc"), ("/demo", "jwt=abc"));
    assert_eq!(split_target("/demo"), ("/demo", ""));
    assert_eq!(split_target(""), ("/", ""));
    assert_eq!(split_target("?jwt=a?b"), ("/", "jwt=a?b"));
}

#[test]
fn every_cause_has_a_distinct_stable_label() {
    let causes = [
        Cause::NoPublicAccess(String::new()),
        Cause::AuthenticationDisabled,
        Cause::TokenTooLong(0),
        Cause::MalformedToken(String::new()),
        Cause::InvalidClaims(String::new()),
        Cause::MissingKid,
        Cause::InvalidKid,
        Cause::UnknownKid(String::new()),
        Cause::KeyCannotVerify,
        Cause::WrongAlgorithm {
            token: String::new(),
            key: String::new(),
        },
        Cause::BadSignature,
        Cause::Audience,
        Cause::Expired(UNIX_EPOCH),
        Cause::UselessToken,
        Cause::MixedClaims,
        Cause::TooManyGrants,
        Cause::ScopeExceeded,
        Cause::RootMismatch(String::new()),
        Cause::NothingGranted(String::new()),
        Cause::RoleNotGranted("publish"),
        Cause::DeciderUnavailable(String::new()),
        Cause::DeciderRefused(403),
        Cause::InvalidGrant(String::new()),
    ];
    let mut labels: Vec<&str> = causes.iter().map(Cause::label).collect();
    assert!(
        labels
            .iter()
            .all(|label| label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    );
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), causes.len());
    // The per-cause counters are indexed densely, one slot per cause.
    assert_eq!(causes.len(), Cause::COUNT);
    for (expected, cause) in causes.iter().enumerate() {
        assert_eq!(cause.index(), expected, "{cause:?}");
    }
}
