//! The deciders' wire shapes and grant arithmetic, without a network: what the relay
//! sends an auth server, what it makes of a grant, of an `auth_api` answer and of a
//! `Cache-Control` header.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::auth_api::{Answer, cache_lifetime};
use super::auth_server::{AuthServer, EventBody, WireGrant};
use super::facts::{ClientCertificate, EndFacts, SessionFacts};
use crate::auth::{Cause, Role};
use crate::config::Generation;

fn session(path: &str, role: Role, certificate: Option<ClientCertificate>) -> SessionFacts {
    SessionFacts {
        id: "00112233445566778899aabbccddeeff".into(),
        node: Arc::from("relay-1"),
        transport: "quic",
        remote: Some("127.0.0.1:5000".parse::<SocketAddr>().unwrap()),
        local: None,
        server_name: Some("localhost".into()),
        alpn: Some("moq-lite-05".into()),
        path: path.into(),
        query: String::new(),
        role,
        certificate,
    }
}

fn grant(json: serde_json::Value) -> WireGrant {
    serde_json::from_value(json).unwrap()
}

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

#[test]
fn the_request_body_has_moq_auths_members_in_its_order_and_omits_what_is_absent() {
    let certificate = ClientCertificate {
        name: "peer.test".into(),
        fingerprint: "ab".repeat(32),
        expires: at(1_900_000_000),
        issuer: "CN=test CA".into(),
    };
    let facts = session("/demo/room", Role::Publisher, Some(certificate));
    let connect = serde_json::to_string(&EventBody::new("connect", &facts, None)).unwrap();
    assert_eq!(
        connect,
        r#"{"id":"00112233445566778899aabbccddeeff","event":"connect","node":"relay-1","transport":"quic","remote":"127.0.0.1:5000","server_name":"localhost","alpn":"moq-lite-05","path":"/demo/room","role":"publisher","tls":{"name":"peer.test","fingerprint":"abababababababababababababababababababababababababababababababab","expires":1900000000,"issuer":"CN=test CA"}}"#
    );
    let end = EndFacts {
        reason: "dropped".into(),
        duration: Duration::from_millis(1500),
        sent: 10,
        received: 20,
    };
    let both = session("/", Role::Any, None);
    let ended = serde_json::to_string(&EventBody::new("end", &both, Some(&end))).unwrap();
    assert_eq!(
        ended,
        r#"{"id":"00112233445566778899aabbccddeeff","event":"end","reason":"dropped","duration":1.5,"bytes":{"sent":10,"received":20},"node":"relay-1","transport":"quic","remote":"127.0.0.1:5000","server_name":"localhost","alpn":"moq-lite-05","path":"/"}"#
    );
}

#[test]
fn a_grant_is_taken_at_its_root_or_the_dialed_path_without_rebasing() {
    let now = at(1_000);
    let session = session("/demo", Role::Any, None);
    let decision = grant(serde_json::json!({
        "publish": ["alice/**"], "subscribe": ["**"], "expires": 2_000, "revalidate": 30,
        "tier": "gold", "peer": false, "unknown": 1,
    }))
    .decide(&session, now)
    .unwrap();
    assert_eq!(decision.access.root, "demo");
    assert!(decision.access.may_publish("alice/cam"));
    assert!(!decision.access.may_publish("bob"));
    assert!(decision.access.may_subscribe("anything/below"));
    assert_eq!(decision.access.expires, Some(at(2_000)));
    assert_eq!(decision.revalidate, Some(Duration::from_secs(30)));

    let aliased = grant(serde_json::json!({"subscribe": ["*"], "root": "/tenant/demo/"}))
        .decide(&session, now)
        .unwrap();
    assert_eq!(aliased.access.root, "tenant/demo");
    assert!(aliased.access.may_subscribe("room"));
    assert!(!aliased.access.may_subscribe("room/deeper"));
}

#[test]
fn an_invalid_grant_is_unavailable_and_an_empty_one_grants_nothing() {
    let now = at(1_000);
    let session = session("/demo", Role::Any, None);
    let refused = |json| grant(json).decide(&session, now).unwrap_err();
    assert!(matches!(
        refused(serde_json::json!({})),
        Cause::NothingGranted(_)
    ));
    for invalid in [
        serde_json::json!({"publish": ["**"], "expires": 1_000}),
        serde_json::json!({"publish": ["**"], "revalidate": 5}),
        serde_json::json!({"publish": ["**"], "expires": 2_000, "revalidate": 0}),
        serde_json::json!({"publish": ["**"], "mounts": {"a": "b"}}),
    ] {
        let cause = refused(invalid.clone());
        assert!(
            matches!(cause, Cause::InvalidGrant(_)),
            "{invalid}: {cause:?}"
        );
        assert_eq!(cause.status(), 502, "{invalid}");
    }
    assert!(matches!(
        refused(serde_json::json!({"publish": ["/anon/**"]})),
        Cause::DeciderUnavailable(_)
    ));
    // Not integers, not lists: the grant does not parse at all.
    for wrong in [
        serde_json::json!({"publish": "**"}),
        serde_json::json!({"publish": ["**"], "expires": 1.5}),
        serde_json::json!({"publish": null}),
    ] {
        assert!(
            serde_json::from_value::<WireGrant>(wrong.clone()).is_err(),
            "{wrong}"
        );
    }
}

#[test]
fn an_auth_server_url_is_https_loopback_http_or_a_unix_socket() {
    for good in [
        "https://auth.example/decide",
        "http://127.0.0.1:4440/",
        "http://[::1]:4440/",
        "http://localhost/",
        "unix:///run/moq-auth.sock",
    ] {
        assert!(AuthServer::new(good, Generation::V017).is_ok(), "{good}");
    }
    for bad in [
        "http://auth.example/",
        "http://10.0.0.1/",
        "unix://relative.sock",
        "ftp://auth.example/",
        "not a url",
    ] {
        assert!(AuthServer::new(bad, Generation::V017).is_err(), "{bad}");
    }
}

#[test]
fn cache_control_keeps_an_answer_for_its_max_age_unless_told_not_to() {
    assert_eq!(cache_lifetime("max-age=60"), Some(Duration::from_secs(60)));
    assert_eq!(
        cache_lifetime("public, s-maxage=\"30\""),
        Some(Duration::from_secs(30))
    );
    assert_eq!(cache_lifetime("max-age=60, no-store"), None);
    assert_eq!(cache_lifetime("private, max-age=60"), None);
    assert_eq!(cache_lifetime("max-age=0"), None);
    assert_eq!(cache_lifetime("max-age=soon"), None);
}

#[test]
fn an_auth_api_alias_must_keep_the_segment_count_except_for_a_certificate() {
    let now = SystemTime::now();
    let answer = |json| serde_json::from_value::<Answer>(json).unwrap();
    let public = serde_json::json!({"alias": "tenant/room", "public": {"subscribe": [""]}});
    let access = answer(public.clone())
        .decide("/demo/room", None, None, now)
        .unwrap();
    assert_eq!(access.root, "tenant/room");
    assert!(access.publish.is_empty());
    assert!(matches!(
        answer(public).decide("/demo", None, None, now),
        Err(Cause::InvalidGrant(_))
    ));
    let certificate = answer(serde_json::json!({"alias": "a/b/c"}))
        .decide("/x", None, Some(now + Duration::from_secs(60)), now)
        .unwrap();
    assert_eq!(certificate.root, "a/b/c");
    assert!(certificate.may_publish("anything"));
    // A token with no key in the answer, and no public grant without one, refuse.
    assert!(matches!(
        answer(serde_json::json!({})).decide("/x", Some("a.b.c"), None, now),
        Err(Cause::UnknownKid(_))
    ));
    assert!(matches!(
        answer(serde_json::json!({})).decide("/x", None, None, now),
        Err(Cause::NoPublicAccess(_))
    ));
}
