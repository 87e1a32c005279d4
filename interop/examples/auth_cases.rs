//! The same token cases against any relay, printed one outcome per line, so two relays
//! (moq-relayd and moq-relay itself) can be compared by `diff` (`interop/auth-compare.sh`).
//!
//! ```text
//! cargo run -p interop --example auth_cases -- mint DIR
//! cargo run -p interop --example auth_cases -- run DIR 127.0.0.1:4443 FINGERPRINT
//! ```
//!
//! `mint` writes a key directory `DIR/keys` (`hs.jwk` HS256, `ed.jwk` the public half of
//! an EdDSA key, both minted by moq-dev's `moq-token`), one token per case in
//! `DIR/tokens`, and a CA with a client certificate in `DIR/tls` for the mTLS cases. `run` dials each case over WebTransport and raw QUIC (moq-lite-05, the
//! path and token in the CONNECT URL or the SETUP Path, and a SETUP Role where the case
//! names one) with a client that reads the relay's close exactly, and prints
//! `case transport outcome`: `admitted` when the session is still open after a short
//! wait, else `closed code=N`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use interop::TlsTrust;
use interop::rogue::RogueSession;
use moq_token::{Algorithm, Claims, Key, KeyId};
use proto::message::{Message, Setup, UniType};

/// A session still open this long after the handshake counts as admitted.
const ADMITTED: Duration = Duration::from_millis(500);
/// Bound on one handshake or one wait for a close.
const STEP: Duration = Duration::from_secs(20);

/// A token case: name, connection path, the token (by file name) or none, and the
/// moq-lite-05 SETUP Role (`1` publisher, `2` subscriber) or none.
const CASES: &[(&str, &str, Option<&str>, Option<u64>)] = &[
    ("public-path-no-token", "/anon", None, None),
    ("private-path-no-token", "/demo", None, None),
    ("publish-claim", "/demo", Some("publish"), None),
    ("subscribe-claim", "/demo", Some("subscribe"), None),
    ("claim-under-root", "/demo/room", Some("subscribe"), None),
    ("outside-root", "/other", Some("publish"), None),
    ("expired", "/demo", Some("expired"), None),
    ("unknown-kid", "/demo", Some("unknown-kid"), None),
    ("wrong-alg-for-kid", "/demo", Some("wrong-alg"), None),
    ("eddsa-subscribe", "/demo", Some("eddsa"), None),
    ("malformed", "/demo", Some("malformed"), None),
    ("token-on-public-path", "/anon", Some("subscribe"), None),
    (
        "publish-claim-as-publisher",
        "/demo",
        Some("publish"),
        Some(1),
    ),
    (
        "publish-claim-as-subscriber",
        "/demo",
        Some("publish"),
        Some(2),
    ),
    (
        "subscribe-claim-as-publisher",
        "/demo",
        Some("subscribe"),
        Some(1),
    ),
    ("public-as-subscriber", "/anon", None, Some(2)),
];

/// Cases whose client presents `DIR/tls/client.pem` (signed by the CA the relay file
/// names in `[server.tls] root`): name, path, token.
const CERTIFICATE_CASES: &[(&str, &str, Option<&str>)] = &[
    ("client-certificate", "/demo", None),
    (
        "client-certificate-beside-expired-token",
        "/demo",
        Some("expired"),
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["mint", dir] => mint(Path::new(dir)),
        ["run", dir, addr, fingerprint, ref rest @ ..] if rest.len() <= 1 => {
            let certificates = match rest {
                [] => true,
                ["--no-certificates"] => false,
                _ => return usage(),
            };
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|err| err.to_string())
                .and_then(|runtime| {
                    runtime.block_on(run(Path::new(dir), addr, fingerprint, certificates))
                })
        }
        _ => return usage(),
    };
    if let Err(err) = result {
        eprintln!("auth_cases: {err}");
        std::process::exit(1);
    }
}

fn usage() {
    eprintln!(
        "usage: auth_cases mint DIR | auth_cases run DIR HOST:PORT FINGERPRINT [--no-certificates]"
    );
    std::process::exit(2);
}

fn generate(algorithm: Algorithm, kid: &str) -> Result<Key, String> {
    let kid = KeyId::decode(kid).map_err(|err| err.to_string())?;
    Key::generate(algorithm, Some(kid)).map_err(|err| err.to_string())
}

fn write(path: PathBuf, text: &str) -> Result<(), String> {
    std::fs::write(&path, text).map_err(|err| format!("{}: {err}", path.display()))
}

fn mint(dir: &Path) -> Result<(), String> {
    let (keys, tokens) = (dir.join("keys"), dir.join("tokens"));
    for d in [&keys, &tokens] {
        std::fs::create_dir_all(d).map_err(|err| format!("{}: {err}", d.display()))?;
    }
    let hs = generate(Algorithm::HS256, "hs")?;
    let ed = generate(Algorithm::EdDSA, "ed")?;
    let json = |key: &Key| serde_json::to_string(key).map_err(|err| err.to_string());
    write(keys.join("hs.jwk"), &json(&hs)?)?;
    write(
        keys.join("ed.jwk"),
        &json(&ed.to_public().map_err(|e| e.to_string())?)?,
    )?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|err| err.to_string())?;
    let later = Some(UNIX_EPOCH + Duration::from_secs(now.as_secs() + 3600));
    let past = Some(UNIX_EPOCH + Duration::from_secs(1_600_000_000));
    let claims = |put: &[&str], get: &[&str], exp| {
        Claims::default()
            .with_root("demo")
            .with_publish(put.iter().copied())
            .with_subscribe(get.iter().copied())
            .with_expires(exp)
    };
    let sign = |key: &Key, claims: &Claims| key.sign(claims).map_err(|err| err.to_string());
    let stranger = generate(Algorithm::HS256, "nope")?;
    // Signed with an HS256 key under the EdDSA key's kid.
    let wrong_alg = generate(Algorithm::HS256, "ed")?;
    for (name, token) in [
        ("publish", sign(&hs, &claims(&[""], &[], later))?),
        ("subscribe", sign(&hs, &claims(&[], &[""], later))?),
        ("expired", sign(&hs, &claims(&[""], &[""], past))?),
        (
            "unknown-kid",
            sign(&stranger, &claims(&[""], &[""], later))?,
        ),
        ("wrong-alg", sign(&wrong_alg, &claims(&[""], &[""], later))?),
        ("eddsa", sign(&ed, &claims(&[], &[""], later))?),
        ("malformed", "not-a-jwt".to_owned()),
    ] {
        write(tokens.join(format!("{name}.jwt")), &token)?;
    }
    mint_certificates(&dir.join("tls"))
}

/// `ca.pem` and a client certificate it signs (`client.pem`, `client.key`), for the
/// mTLS cases: the relay file names `ca.pem` in `[server.tls] root`.
fn mint_certificates(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let fail = |err: rcgen::Error| err.to_string();
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "auth_cases CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    write(
        dir.join("ca.pem"),
        &ca.self_signed(&ca_key).map_err(fail)?.pem(),
    )?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let mut client = rcgen::CertificateParams::new(vec!["client.test".to_owned()]).map_err(fail)?;
    client
        .distinguished_name
        .push(rcgen::DnType::CommonName, "auth_cases client");
    client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    write(
        dir.join("client.pem"),
        &client.signed_by(&key, &issuer).map_err(fail)?.pem(),
    )?;
    write(dir.join("client.key"), &key.serialize_pem())
}

/// `certificates`: also the cases with a client certificate (a relay file with
/// `[server.tls] root`; 0.17 refuses to start with one under public-only auth).
async fn run(dir: &Path, addr: &str, fingerprint: &str, certificates: bool) -> Result<(), String> {
    let trust = TlsTrust::Fingerprint(fingerprint.trim().to_owned());
    let (cert, key) = (dir.join("tls/client.pem"), dir.join("tls/client.key"));
    let with_certificate = CERTIFICATE_CASES
        .iter()
        .filter(|_| certificates)
        .map(|(name, path, token)| (*name, *path, *token, None, true));
    let cases = CASES
        .iter()
        .map(|(name, path, token, role)| (*name, *path, *token, *role, false))
        .chain(with_certificate);
    for (name, path, token, role, certificate) in cases {
        let target = match token {
            Some(file) => {
                let file = dir.join("tokens").join(format!("{file}.jwt"));
                let jwt = std::fs::read_to_string(&file)
                    .map_err(|err| format!("{}: {err}", file.display()))?;
                format!("{path}?jwt={}", jwt.trim())
            }
            None => path.to_owned(),
        };
        let identity = certificate.then_some((cert.as_path(), key.as_path()));
        for raw in [false, true] {
            let outcome = outcome(addr, &trust, &target, role, identity, raw).await;
            let transport = if raw {
                "raw-quic-05"
            } else {
                "webtransport-05"
            };
            println!("{name} {transport} {outcome}");
        }
    }
    Ok(())
}

async fn outcome(
    addr: &str,
    trust: &TlsTrust,
    target: &str,
    role: Option<u64>,
    identity: Option<(&Path, &Path)>,
    raw: bool,
) -> String {
    let url = if raw {
        format!("moql://{addr}")
    } else {
        format!("https://{addr}{target}")
    };
    let connected = RogueSession::connect_as(&url, trust, "moq-lite-05", STEP, identity).await;
    let mut session = match connected {
        Ok(session) => session,
        Err(err) => return format!("no-session ({err})"),
    };
    // Both relays read a moq-lite-05 SETUP before they decide; on WebTransport the path
    // and token are the CONNECT URL's and the SETUP carries none.
    {
        let mut bytes = bytes::BytesMut::new();
        let setup = Setup {
            path: raw.then(|| target.to_owned()),
            role,
            ..Setup::default()
        };
        let encoded = proto::coding::put_varint(&mut bytes, "type", UniType::Setup.id())
            .map_err(|err| err.to_string())
            .and_then(|()| {
                setup
                    .encode(proto::Version::Lite05, &mut bytes)
                    .map_err(|err| err.to_string())
            });
        if let Err(err) = encoded {
            return format!("no-setup ({err})");
        }
        // A relay that refuses at the CONNECT may close before the SETUP is written:
        // the close below says what it decided.
        let _ = session.send_uni(&bytes).await;
    }
    match session.closed(ADMITTED).await {
        Err(_) => "admitted".to_owned(),
        Ok(close) => match close.code {
            Some(code) => format!("closed code={code}"),
            None => format!("closed ({})", close.reason),
        },
    }
}
