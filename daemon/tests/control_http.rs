//! The control thread's HTTP listeners through the real binary: the public `[web.http]`
//! routes, the internal `/health` and `/metrics`, the bounds that close a slow or
//! oversized client, and counters that never go back as sessions come and go.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::flow::Flow;
use common::http::{Response, get, parse, request, start, wait_until};
use common::scrape::{assert_histograms_consistent, assert_monotonic, scrape, wait_for};
use tempfile::TempDir;

const CONFIG: &str = "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[web.http]\nlisten = \"127.0.0.1:0\"\n[internal]\nlisten = \"127.0.0.1:0\"\n[runtime]\nworkers = 2\n[auth]\npublic = \"\"\n";

#[test]
fn web_listener_serves_health_and_the_certificate_hash_with_cors() {
    let ops = start(CONFIG);

    let health = get(ops.web, "/health");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(
        health
            .headers
            .get("access-control-allow-origin")
            .map(String::as_str),
        Some("*")
    );
    assert_eq!(
        health.headers.get("content-type").map(String::as_str),
        Some("text/plain; charset=utf-8")
    );

    let certificate = get(ops.web, "/certificate.sha256");
    assert_eq!(certificate.status, 200);
    assert_eq!(
        certificate.body, ops.fingerprint,
        "no newline, the logged hash"
    );
    assert_eq!(certificate.body.len(), 64);
    assert!(
        certificate
            .body
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
    assert_eq!(
        certificate
            .headers
            .get("access-control-allow-origin")
            .map(String::as_str),
        Some("*")
    );

    let unknown = get(ops.web, "/no/such/route");
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.headers["content-type"].starts_with("text/html"),
        "{:?}",
        unknown.headers
    );
    assert_eq!(request(ops.web, "POST", "/health").status, 405);

    // /metrics lives on the internal listener only.
    assert_eq!(get(ops.web, "/metrics").status, 404);
}

#[test]
fn internal_listener_serves_health_and_a_parsable_scrape() {
    let ops = start(CONFIG);
    let health = get(ops.internal, "/health");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(get(ops.internal, "/certificate.sha256").status, 404);
    let nodes = get(ops.internal, "/nodes");
    assert_eq!(
        (nodes.status, nodes.body.as_str()),
        (200, "{\"nodes\":[]}"),
        "a standalone relay has no nodes"
    );

    let metrics = scrape(&ops);
    for series in [
        "moq_relay_sessions_opened_total{tier=\"\"}",
        "moq_relay_sessions_closed_total{tier=\"\"}",
        "moq_relay_accept_failures_total{listener=\"web\",class=\"connection\"}",
        "moq_relay_accept_failures_total{listener=\"internal\",class=\"exhausted\"}",
        "moq_relay_accept_stalled_seconds{listener=\"internal\"}",
        "moq_relay_draining_sessions",
        "moq_relayd_handshakes_total{worker=\"0\"}",
        "moq_relayd_handshakes_total{worker=\"1\"}",
        "moq_relayd_missteered_total{worker=\"1\"}",
        "moq_relayd_sessions_opened_total{worker=\"0\"}",
        "moq_relayd_rx_bytes_total{worker=\"1\"}",
        "moq_relayd_groups_dropped_total{worker=\"0\"}",
        "moq_relayd_router_frame_pushes_total{worker=\"1\"}",
        "moq_relayd_router_doorbells_total{worker=\"0\"}",
        "moq_relayd_router_ring_backlog{worker=\"1\"}",
        "moq_relay_stale_groups_total{tier=\"\",role=\"publisher\"}",
        "moq_relayd_sessions_by_version_total{worker=\"0\",transport=\"webtransport\",version=\"moq-lite-06\"}",
        "moq_relayd_sessions_by_version_total{worker=\"1\",transport=\"quic\",version=\"moq-lite-03\"}",
        "moq_relayd_gso_segments_per_send_count{worker=\"0\"}",
        "moq_relayd_frame_latency_seconds_bucket{worker=\"1\",le=\"0.001\"}",
        "moq_relayd_gro_segments_per_receive_bucket{worker=\"1\",le=\"+Inf\"}",
    ] {
        assert!(metrics.contains_key(series), "{series} missing");
    }
    assert_eq!(metrics["moq_relay_draining_sessions"], 0.0);
    assert_histograms_consistent(&metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_never_go_back_as_sessions_open_and_close() {
    let ops = start(CONFIG);
    let before = scrape(&ops);
    let mut flow = Flow::start(&ops).await;
    flow.group(&[100, 200, 300], 7).await;
    // Each worker publishes its counters on its own 100 ms tick: the publisher's worker
    // (role subscriber) and the subscriber's (role publisher) may show at different scrapes.
    let traffic = wait_for(&ops, |m| {
        ["publisher", "subscriber"]
            .iter()
            .all(|role| m[&format!("moq_relay_frames_total{{tier=\"\",role=\"{role}\"}}")] >= 3.0)
    });
    for role in ["publisher", "subscriber"] {
        let frames = traffic[&format!("moq_relay_frames_total{{tier=\"\",role=\"{role}\"}}")];
        let bytes = traffic[&format!("moq_relay_bytes_total{{tier=\"\",role=\"{role}\"}}")];
        let groups = traffic[&format!("moq_relay_groups_total{{tier=\"\",role=\"{role}\"}}")];
        assert!(
            frames >= 3.0 && bytes >= 600.0 && groups >= 1.0,
            "{role}: {frames} {bytes} {groups}"
        );
    }

    let during = wait_for(&ops, |m| {
        m["moq_relay_sessions_opened_total{tier=\"\"}"] >= 2.0
    });
    assert_monotonic(&before, &during);
    // Both sessions came over WebTransport, whatever version each negotiated.
    let webtransport: f64 = during
        .iter()
        .filter(|(series, _)| {
            series.starts_with("moq_relayd_sessions_by_version_total")
                && series.contains("transport=\"webtransport\"")
        })
        .map(|(_, value)| value)
        .sum();
    assert_eq!(webtransport, 2.0);
    // The frames left in GSO batches and came in through GRO completions.
    for name in [
        "moq_relayd_gso_segments_per_send",
        "moq_relayd_gro_segments_per_receive",
    ] {
        let calls: f64 = (0..2)
            .map(|w| during[&format!("{name}_count{{worker=\"{w}\"}}")])
            .sum();
        assert!(calls > 0.0, "{name}: no calls counted");
    }
    assert_histograms_consistent(&during);

    // The first group may have reached the subscriber as a late-join replay, which is not
    // timed; once it has arrived the subscription is live, so every frame of the next
    // group is timed on its way to the subscriber.
    flow.group(&[1, 2, 3], 8).await;
    let timed = |m: &HashMap<String, f64>| -> f64 {
        (0..2)
            .map(|w| m[&format!("moq_relayd_frame_latency_seconds_count{{worker=\"{w}\"}}")])
            .sum()
    };
    let after_live = wait_for(&ops, |m| timed(m) >= 3.0);
    assert_monotonic(&during, &after_live);
    assert_histograms_consistent(&after_live);

    // The announce reached every worker's replica: /announced lists it.
    let announced = wait_until(|| {
        let r = get(ops.web, "/announced");
        (r.status == 200 && r.body.lines().any(|l| l == "demo/cam")).then_some(r)
    });
    assert!(!announced.body.ends_with('\n'), "no trailing newline");
    let scoped = get(ops.web, "/announced/demo");
    assert_eq!((scoped.status, scoped.body.as_str()), (200, "cam"));
    assert_eq!(get(ops.web, "/announced/elsewhere").body, "");

    flow.close().await;
    let after = wait_for(&ops, |m| {
        m["moq_relay_sessions_closed_total{tier=\"\"}"] >= 2.0
    });
    assert_monotonic(&during, &after);
    let later = scrape(&ops);
    assert_monotonic(&after, &later);
    let announces = |kind: &str| {
        later[&format!("moq_relay_announces_{kind}_total{{tier=\"\",role=\"subscriber\"}}")]
    };
    assert!(announces("started") >= 1.0, "{}", announces("started"));
    assert!(
        announces("ended") >= 1.0,
        "the publisher left: {}",
        announces("ended")
    );
    assert!(later["moq_relay_sessions_opened_total{tier=\"\"}"] >= 2.0);
    // The subscriber's subscription and view, and the relay's own subscription to the
    // publisher, each opened and, with both sessions gone, closed.
    let ended = wait_for(&ops, |m| {
        m["moq_relay_subscriptions_closed_total{tier=\"\",role=\"subscriber\"}"] >= 1.0
            && m["moq_relay_viewers_closed_total{tier=\"\",role=\"publisher\"}"] >= 1.0
    });
    for (family, role) in [
        ("subscriptions", "publisher"),
        ("subscriptions", "subscriber"),
        ("viewers", "publisher"),
    ] {
        let count = |event: &str| {
            ended[&format!("moq_relay_{family}_{event}_total{{tier=\"\",role=\"{role}\"}}")]
        };
        assert!(count("opened") >= 1.0, "{family} {role}");
        assert_eq!(count("opened"), count("closed"), "{family} {role}");
    }
    assert!(!ended.contains_key("moq_relay_viewers_opened_total{tier=\"\",role=\"subscriber\"}"));
    let handshakes: f64 = (0..2)
        .map(|w| later[&format!("moq_relayd_handshakes_total{{worker=\"{w}\"}}")])
        .sum();
    assert!(handshakes >= 2.0, "{handshakes}");
}

#[test]
fn oversized_request_head_is_refused_with_431() {
    let ops = start(CONFIG);
    let mut stream = TcpStream::connect(ops.web).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let big = "a".repeat(64 << 10);
    // The relay may answer and close before it has read everything we send.
    let sent = write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"
    );
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    assert!(sent.is_ok() || read.is_ok() || !raw.is_empty());
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 431") || raw.is_empty(),
        "an oversized head gets 431 or a closed connection: {text:?}"
    );
    // The listener still serves others.
    assert_eq!(get(ops.web, "/health").status, 200);
}

#[test]
fn a_slow_trickle_is_closed_within_the_header_deadline() {
    let ops = start(CONFIG);
    let mut stream = TcpStream::connect(ops.internal).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    stream.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    // One header byte a second: the head never completes.
    let mut closed = false;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(1));
        if stream.write_all(b"X").is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 512];
        stream
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        match stream.read(&mut probe) {
            Ok(0) => {
                closed = true;
                break;
            }
            // A 408 or similar before the close is fine too.
            Ok(_) => {
                closed = true;
                break;
            }
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(closed, "the trickle was still open after {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(15),
        "closed only after {elapsed:?}"
    );
    assert_eq!(get(ops.internal, "/health").status, 200);
}

#[test]
fn certificate_hash_follows_a_sighup_reload() {
    let ops = start(CONFIG);
    assert_eq!(get(ops.web, "/certificate.sha256").body, ops.fingerprint);
    ops.relay.signal(libc::SIGHUP);
    let line = ops.relay.wait_for_line("certificate reloaded");
    let reloaded = common::fingerprint_in(&line);
    // A generated certificate is new on every load.
    assert_ne!(reloaded, ops.fingerprint);
    let served = wait_until(|| {
        let body = get(ops.web, "/certificate.sha256").body;
        (body == reloaded).then_some(body)
    });
    assert_eq!(served, reloaded);
}

#[test]
fn web_listener_may_share_the_quic_port_number() {
    // Find a port free for both UDP and TCP, then give it to both listeners.
    let port = (0..50)
        .find_map(|_| {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
            let port = udp.local_addr().ok()?.port();
            std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
            Some(port)
        })
        .expect("a port free on UDP and TCP");
    let config = format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\ntls.generate = [\"localhost\"]\n[web.http]\nlisten = \"127.0.0.1:{port}\"\n[internal]\nlisten = \"127.0.0.1:0\"\n[runtime]\nworkers = 1\n[auth]\npublic = \"\"\n"
    );
    let ops = start(&config);
    assert_eq!(ops.quic.port(), port);
    assert_eq!(ops.web.port(), port);
    assert_eq!(get(ops.web, "/certificate.sha256").body, ops.fingerprint);
}

#[test]
fn connections_past_the_limit_are_closed_at_once_and_counted() {
    let ops = start(CONFIG);
    // moq-relayd's bound per listener (control::MAX_CONNECTIONS_PER_LISTENER).
    const LIMIT: usize = 256;
    let idle: Vec<TcpStream> = (0..LIMIT)
        .map(|_| TcpStream::connect(ops.internal).unwrap())
        .collect();
    // Let the relay accept them all before the one over the limit arrives.
    std::thread::sleep(Duration::from_millis(500));
    let mut extra = TcpStream::connect(ops.internal).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = extra.read(&mut buf);
    // Closed unread: an end of stream, or a reset if the close raced our connect.
    let closed = match &read {
        Ok(0) => true,
        Err(err) => err.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    assert!(closed, "the connection over the limit was served: {read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed only after {:?}",
        started.elapsed()
    );
    drop(idle);
    // The relay sees the idle ones hang up and frees their slots.
    std::thread::sleep(Duration::from_secs(1));
    let metrics = scrape(&ops);
    let refused = metrics["moq_relayd_http_connections_refused_total{listener=\"internal\"}"];
    assert!(refused >= 1.0, "{refused}");
}

/// A self-signed certificate for `localhost` written as PEM files in `dir`; returns its
/// DER for the client to trust.
fn write_certificate(dir: &std::path::Path) -> rustls::pki_types::CertificateDer<'static> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("web.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("web.key"), key.serialize_pem()).unwrap();
    cert.der().clone()
}

/// One HTTPS GET trusting only `trusted`; returns the response, the leaf the server
/// presented and the ALPN it chose.
async fn https_get(
    addr: SocketAddr,
    trusted: &rustls::pki_types::CertificateDer<'static>,
    path: &str,
) -> Result<(Response, Vec<u8>, Option<Vec<u8>>), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    let leaf = session.peer_certificates().unwrap()[0].to_vec();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut raw))
        .await
        .map_err(|_| "response timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok((parse(&raw), leaf, alpn))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_web_routes_with_its_certificate_and_follows_a_reload() {
    let dir = TempDir::new().unwrap();
    let first = write_certificate(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let https: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = CONFIG.replace(
        "[internal]",
        &format!(
            "[web.https]\nlisten = \"{https}\"\ncert = {:?}\nkey = {:?}\n[internal]",
            dir.path().join("web.pem").display().to_string(),
            dir.path().join("web.key").display().to_string()
        ),
    );
    let ops = start(&config);

    let (health, leaf, alpn) = https_get(https, &first, "/health").await.unwrap();
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(leaf, first.to_vec());
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(health.headers["access-control-allow-origin"], "*");
    // The same routes as over plain HTTP: the QUIC certificate's hash, not the web one's.
    let (hash, _, _) = https_get(https, &first, "/certificate.sha256")
        .await
        .unwrap();
    assert_eq!(
        (hash.status, hash.body.as_str()),
        (200, ops.fingerprint.as_str())
    );
    let (missing, _, _) = https_get(https, &first, "/nothing").await.unwrap();
    assert_eq!(missing.status, 404);

    // Plain HTTP on the TLS port gets no HTTP answer, and the connection ends.
    let started = Instant::now();
    let mut plain = TcpStream::connect(https).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(plain, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw);
    assert!(!String::from_utf8_lossy(&raw).starts_with("HTTP/"));
    assert!(started.elapsed() < Duration::from_secs(12));

    // SIGHUP re-reads the files: new connections get the new leaf.
    let second = write_certificate(dir.path());
    ops.relay.signal(libc::SIGHUP);
    ops.relay.wait_for_line("SIGHUP: [web.https] reloaded");
    let (health, leaf, _) = https_get(https, &second, "/health").await.unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(leaf, second.to_vec());
    assert!(
        https_get(https, &first, "/health").await.is_err(),
        "the old certificate is still served"
    );
}
