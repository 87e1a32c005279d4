//! Argument checking of the harness that needs no peer: bad URLs, schemes and version
//! names fail before any packet is sent, with an error that names the problem.

use interop::{ConnectOptions, Error, TlsTrust, connect_with};

fn options() -> ConnectOptions {
    ConnectOptions::new(TlsTrust::InsecureSkipVerify)
}

#[tokio::test]
async fn a_scheme_the_client_cannot_dial_is_refused_by_name() {
    let err = connect_with("wss://127.0.0.1:4443/anon", options())
        .await
        .err();
    assert!(
        matches!(&err, Some(Error::UnsupportedScheme(s)) if s == "wss"),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unknown_version_is_refused_by_name() {
    let err = connect_with(
        "https://127.0.0.1:4443/anon",
        options().with_versions(&["moq-lite-99"]),
    )
    .await
    .err();
    assert!(
        matches!(&err, Some(Error::InvalidVersion(v)) if v == "moq-lite-99"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_malformed_url_error_never_echoes_the_token() {
    let err = connect_with("https://[::1/anon?jwt=secret-token", options())
        .await
        .err()
        .expect("malformed url is refused");
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(!err.to_string().contains("secret-token"), "{err}");
}

#[tokio::test]
async fn a_wildcard_subscribe_prefix_is_refused() {
    let mut options = options();
    options.subscribe_prefix = Some("demo/*".into());
    let err = connect_with("https://127.0.0.1:4443/anon", options)
        .await
        .err();
    assert!(matches!(err, Some(Error::InvalidPath { .. })), "{err:?}");
}
