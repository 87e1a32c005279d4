//! Bare moq-lite-05 subscribers from a plain `quinn` endpoint writing the few messages
//! themselves: cheap enough to hold or churn a thousand sessions, where the reference
//! client's per-session tasks and timers would make a debug-built client the bottleneck.

use std::net::SocketAddr;

use super::http::Ops;

use bytes::{BufMut, BytesMut};
use proto::Version;
use proto::message::{AnnounceRequest, BidiType, Message, Setup, UniType};

/// A client TLS config offering moq-lite-05 (raw QUIC) that trusts only the relay's
/// certificate with this SHA-256 fingerprint (hex, as the relay logs it).
pub fn bare_client_config(fingerprint: &str) -> quinn::ClientConfig {
    client_config_offering(fingerprint, &["moq-lite-05"])
}

/// The same, offering `alpns` (`h3` for a WebTransport connection).
pub fn client_config_offering(fingerprint: &str, alpns: &[&str]) -> quinn::ClientConfig {
    let quic = quic_io::Config::new("127.0.0.1:0".parse().unwrap());
    quic_io::tls::client_config(
        quic_io::tls::ServerVerify::Sha256(vec![fingerprint_bytes(fingerprint)]),
        alpns,
        &quic,
    )
    .expect("client TLS config")
}

pub fn fingerprint_bytes(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex fingerprint");
    }
    out
}

/// What an idle subscriber keeps: the connection and its open announce stream.
pub struct IdleSubscriber {
    pub connection: quinn::Connection,
    _announce: (quinn::SendStream, quinn::RecvStream),
}

/// A default moq-lite-05 SETUP on a uni stream of its own, finished.
pub async fn send_setup(connection: &quinn::Connection) -> Result<(), String> {
    let mut setup = BytesMut::new();
    setup.put_u8(UniType::Setup.id() as u8);
    Setup::default()
        .encode(Version::Lite05, &mut setup)
        .map_err(|e| e.to_string())?;
    let mut uni = connection.open_uni().await.map_err(|e| e.to_string())?;
    uni.write_all(&setup).await.map_err(|e| e.to_string())?;
    uni.finish().map_err(|e| e.to_string())
}

/// A moq-lite-05 subscriber session: SETUP on its uni stream, then an announce request
/// for `demo`, held open once the relay has answered it.
pub async fn idle_subscriber(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    relay: SocketAddr,
) -> Result<IdleSubscriber, String> {
    let v = Version::Lite05;
    let connection = endpoint
        .connect_with(config, relay, "localhost")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| format!("handshake: {e}"))?;

    send_setup(&connection).await?;

    let mut request = BytesMut::new();
    request.put_u8(BidiType::Announce.id() as u8);
    AnnounceRequest {
        prefix: "demo".into(),
        exclude_hop: 0,
    }
    .encode(v, &mut request)
    .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&request).await.map_err(|e| e.to_string())?;
    // On 05 the relay answers ANNOUNCE_OK: the session is set up and being served.
    let mut answer = [0u8; 64];
    match recv.read(&mut answer).await {
        Ok(Some(n)) if n > 0 => {}
        other => return Err(format!("no ANNOUNCE_OK: {other:?}")),
    }
    Ok(IdleSubscriber {
        connection,
        _announce: (send, recv),
    })
}

/// Dials `count` idle subscribers at once, the `i`-th from `endpoints[(first + i) % len]`,
/// each bounded by 10 s; panics naming the first that fails.
pub async fn dial_batch(
    endpoints: &std::sync::Arc<Vec<quinn::Endpoint>>,
    client: &quinn::ClientConfig,
    relay: SocketAddr,
    first: usize,
    count: usize,
) -> Vec<IdleSubscriber> {
    let mut dials = tokio::task::JoinSet::new();
    for index in first..first + count {
        let endpoints = endpoints.clone();
        let client = client.clone();
        dials.spawn(async move {
            let endpoint = &endpoints[index % endpoints.len()];
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                idle_subscriber(endpoint, client, relay),
            )
            .await
            .map_err(|_| "timed out".to_owned())
            .and_then(|r| r)
            .map_err(|e| format!("session {index}: {e}"))
        });
    }
    let mut sessions = Vec::with_capacity(count);
    while let Some(result) = dials.join_next().await {
        sessions.push(result.expect("dial task").expect("idle session"));
    }
    sessions
}

/// A moq-lite-05 subscriber to `demo/cam` `video` asking for `max_latency_ms` that never
/// reads its group streams, with 64 KiB of connection flow control (16 KiB per stream):
/// the relay's output to it backs up at once.
pub async fn stalled_subscriber(relay: &Ops, max_latency_ms: u64) -> quinn::Connection {
    use proto::message::Message;
    let mut quic = quic_io::Config::new("127.0.0.1:0".parse().unwrap());
    quic.quic.receive_window = Some(64 << 10);
    quic.quic.stream_receive_window = Some(16 << 10);
    let config = quic_io::tls::client_config(
        quic_io::tls::ServerVerify::Sha256(vec![fingerprint_bytes(&relay.fingerprint)]),
        &["moq-lite-05"],
        &quic,
    )
    .expect("client TLS config");
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connection = endpoint
        .connect_with(config, relay.quic, "localhost")
        .unwrap()
        .await
        .expect("handshake");
    let v = proto::Version::Lite05;
    send_setup(&connection).await.expect("SETUP");
    let mut subscribe = bytes::BytesMut::new();
    subscribe.extend_from_slice(&[proto::message::BidiType::Subscribe.id() as u8]);
    proto::message::Subscribe {
        id: 0,
        broadcast: "demo/cam".into(),
        track: "video".into(),
        priority: 0,
        ordered: false,
        max_latency_ms,
        start: None,
        end: None,
        frame_start: 0,
        frame_end: None,
    }
    .encode(v, &mut subscribe)
    .unwrap();
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(&subscribe).await.unwrap();
    // Held open (not read) for as long as the connection lives.
    std::mem::forget((send, recv, endpoint));
    connection
}
