//! A deliberately misbehaving client: it completes the QUIC (and, for `https://`, the
//! WebTransport) handshake exactly as the reference client does, then writes whatever
//! bytes a test hands it on fresh streams, so tests can check that a relay closes such
//! a session with a protocol error without disturbing anyone else. It owns only the
//! transport; it must never speak MoQ correctly, since the reference client does that.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use web_transport_moq::noq;

use crate::error::{Error, bounded, redact};
use crate::session::TlsTrust;

/// How the peer ended a rogue session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReason {
    /// The application close code, as sent on raw QUIC or in the WebTransport
    /// CLOSE_SESSION capsule; `None` when the connection ended otherwise (idle, reset).
    pub code: Option<u64>,
    /// The peer's reason text, or the transport's description of the end.
    pub reason: String,
}

/// A transport session that speaks only what the test writes.
pub struct RogueSession {
    session: web_transport_moq::Session,
    endpoint: noq::Endpoint,
    streams: Vec<web_transport_moq::SendStream>,
}

/// Streams a rogue session keeps open; a test writes a handful.
const MAX_STREAMS: usize = 64;

impl RogueSession {
    /// Handshake with `url` (`https://` for WebTransport, `moql://` for raw QUIC),
    /// offering exactly `version` (e.g. `moq-lite-05`).
    pub async fn connect(
        url: &str,
        trust: &TlsTrust,
        version: &str,
        within: Duration,
    ) -> Result<Self, Error> {
        Self::connect_as(url, trust, version, within, None).await
    }

    /// [`connect`](Self::connect) presenting a client certificate: PEM chain and key.
    pub async fn connect_as(
        url: &str,
        trust: &TlsTrust,
        version: &str,
        within: Duration,
        client_identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self, Error> {
        let parsed = url::Url::parse(url).map_err(|err| Error::InvalidUrl {
            url: url.split('?').next().unwrap_or_default().to_owned(),
            reason: err.to_string(),
        })?;
        let shown = redact(&parsed);
        let raw = match parsed.scheme() {
            "https" => false,
            "moql" | "moqt" => true,
            other => return Err(Error::UnsupportedScheme(other.to_owned())),
        };
        let host = parsed
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let port = parsed.port().unwrap_or(443);
        let addr: SocketAddr = format!("{}:{port}", parsed.host_str().unwrap_or_default())
            .parse()
            .map_err(|_| Error::InvalidUrl {
                url: shown.clone(),
                reason: "the rogue client needs an IP literal host".into(),
            })?;

        let mut tls = moq_tokio::tls::Connect::default();
        match trust {
            TlsTrust::InsecureSkipVerify => tls.insecure = Some(true),
            TlsTrust::Fingerprint(hex) => tls.fingerprint = vec![hex.replace(':', "")],
        }
        if let Some((cert, key)) = client_identity {
            tls.cert = Some(cert.to_owned());
            tls.key = Some(key.to_owned());
        }
        let mut tls = tls.build().map_err(|err| Error::Setup {
            what: "rogue client TLS",
            source: moq_tokio::Error::from(err),
        })?;
        tls.alpn_protocols = vec![match raw {
            true => version.as_bytes().to_vec(),
            false => web_transport_moq::ALPN.as_bytes().to_vec(),
        }];
        let quic: noq::crypto::rustls::QuicClientConfig =
            tls.try_into()
                .map_err(|err: noq::crypto::rustls::NoInitialCipherSuite| {
                    Error::Rogue(err.to_string())
                })?;
        let config = noq::ClientConfig::new(Arc::new(quic));

        let bind: SocketAddr = match addr {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        };
        let endpoint = noq::Endpoint::client(bind).map_err(|err| Error::Rogue(err.to_string()))?;
        let handshake = async {
            let connecting = endpoint
                .connect_with(config, addr, &host)
                .map_err(|err| Error::Rogue(err.to_string()))?;
            let conn = connecting
                .await
                .map_err(|err| Error::Rogue(err.to_string()))?;
            match raw {
                true => Ok(web_transport_moq::Session::raw(conn)),
                false => {
                    let request = web_transport_moq::proto::ConnectRequest::new(parsed.clone())
                        .with_protocol(version.to_owned());
                    web_transport_moq::Session::connect(conn, request)
                        .await
                        .map_err(|err| Error::Rogue(err.to_string()))
                }
            }
        };
        let session = bounded(
            || format!("rogue handshake with {shown}"),
            within,
            handshake,
        )
        .await??;
        Ok(Self {
            session,
            endpoint,
            streams: Vec::new(),
        })
    }

    /// Open a bidirectional stream and write `bytes` on it, leaving it open (the way
    /// a client's first control stream stays open).
    pub async fn send_bidi(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.open_bidi_with(bytes).await.map(drop)
    }

    /// Opens a bidirectional stream, writes `bytes` and keeps the sending side open;
    /// returns the receiving side.
    async fn open_bidi_with(
        &mut self,
        bytes: &[u8],
    ) -> Result<web_transport_moq::RecvStream, Error> {
        if self.streams.len() >= MAX_STREAMS {
            return Err(Error::Limit(format!(
                "rogue session keeps {MAX_STREAMS} streams"
            )));
        }
        let (mut send, recv) = self
            .session
            .open_bi()
            .await
            .map_err(|err| Error::Rogue(err.to_string()))?;
        send.write_all(bytes)
            .await
            .map_err(|err| Error::Rogue(err.to_string()))?;
        self.streams.push(send);
        Ok(recv)
    }

    /// Open a bidirectional stream, write `bytes` on it (left open), and wait (bounded
    /// by `within`) for the first bytes the peer answers on it. An error when the peer
    /// resets or ends the stream instead (a refused request).
    pub async fn request_bidi(&mut self, bytes: &[u8], within: Duration) -> Result<Vec<u8>, Error> {
        let mut recv = self.open_bidi_with(bytes).await?;
        let answer = bounded(
            || "the relay to answer the request".into(),
            within,
            recv.read_chunk(64 << 10),
        )
        .await?
        .map_err(|err| Error::Rogue(format!("request refused: {err}")))?;
        answer
            .map(|chunk| chunk.to_vec())
            .ok_or_else(|| Error::Rogue("request stream ended unanswered".into()))
    }

    /// Open a unidirectional stream, write `bytes` and finish it.
    pub async fn send_uni(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut send = self
            .session
            .open_uni()
            .await
            .map_err(|err| Error::Rogue(err.to_string()))?;
        send.write_all(bytes)
            .await
            .map_err(|err| Error::Rogue(err.to_string()))?;
        send.finish().map_err(|err| Error::Rogue(err.to_string()))?;
        Ok(())
    }

    /// Wait (bounded by `within`) for the peer to close the session.
    pub async fn closed(&self, within: Duration) -> Result<CloseReason, Error> {
        let err = bounded(
            || "the relay to close the rogue session".into(),
            within,
            self.session.closed(),
        )
        .await?;
        Ok(close_reason(&err))
    }
}

impl Drop for RogueSession {
    fn drop(&mut self) {
        self.endpoint.close(noq::VarInt::from_u32(0), b"rogue done");
    }
}

fn close_reason(err: &web_transport_moq::SessionError) -> CloseReason {
    use web_transport_moq::{SessionError, WebTransportError};
    match err {
        SessionError::WebTransportError(WebTransportError::Closed(code, reason)) => CloseReason {
            code: Some(u64::from(*code)),
            reason: reason.clone(),
        },
        SessionError::ConnectionError(noq::ConnectionError::ApplicationClosed(close)) => {
            CloseReason {
                code: Some(close.error_code.into_inner()),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            }
        }
        other => CloseReason {
            code: None,
            reason: other.to_string(),
        },
    }
}
