//! Tokens verified per second: one `Authenticator::authorize_at` per iteration, with a
//! valid token from a `[auth] key` file, for HS256, ES256 and EdDSA (the throughput line,
//! elements = tokens, gives tokens/s). Keys and tokens are minted with moq-token, as
//! moq-dev's tools mint them; the `anonymous` case is the floor without a token.
//!
//! `nice -n 19 cargo bench -p moq-relayd --bench auth -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use moq_relayd::auth::Authenticator;
use moq_relayd::config::{AuthConfig, Generation, PublicAccess, Strings};
use moq_token::{Algorithm, Claims, Key, KeyId};

/// A fixed clock: the token's `exp` is an hour after it.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

fn setup(algorithm: Algorithm, dir: &std::path::Path) -> (Authenticator, String) {
    let key = Key::generate(
        algorithm,
        Some(KeyId::decode("bench").expect("a valid kid")),
    )
    .expect("moq-token generates the key");
    let verifying = key.to_public().unwrap_or_else(|_| key.clone());
    let path = dir.join(format!("{algorithm}.jwk"));
    std::fs::write(
        &path,
        serde_json::to_string(&verifying).expect("a JWK serialises"),
    )
    .expect("write the key file");
    let config = AuthConfig {
        key: Some(path.display().to_string()),
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(&config).expect("the key loads");
    let claims = Claims::default()
        .with_root("room/123")
        .with_publish(["alice"])
        .with_subscribe([""])
        .with_expires(now() + Duration::from_secs(3600));
    let token = key.sign(&claims).expect("moq-token signs");
    (auth, format!("jwt={token}"))
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut group = c.benchmark_group("authorize");
    group.throughput(Throughput::Elements(1));
    for algorithm in [Algorithm::HS256, Algorithm::ES256, Algorithm::EdDSA] {
        let (auth, query) = setup(algorithm, dir.path());
        assert!(
            auth.authorize_at("/room/123", &query, now()).is_ok(),
            "{algorithm}: the bench token must verify"
        );
        group.bench_function(algorithm.to_string(), |b| {
            b.iter(|| auth.authorize_at(black_box("/room/123"), black_box(&query), now()))
        });
    }
    let public = AuthConfig {
        public: Some(PublicAccess {
            subscribe: Strings(vec!["anon".into()]),
            publish: Strings(vec!["anon".into()]),
            api: None,
        }),
        generation: Generation::V014,
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(&public).expect("public access loads");
    group.bench_function("anonymous", |b| {
        b.iter(|| auth.authorize_at(black_box("/anon/room"), black_box(""), now()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
