//! The WebTransport-over-HTTP/3 handshake of one connection as a sans-IO state machine,
//! server side and the client side a dialing worker uses: SETTINGS exchange, extended
//! CONNECT (path and query captured, `wt-protocol` negotiated), the response, and the
//! capsules on the CONNECT stream afterwards (CLOSE_WEBTRANSPORT_SESSION). It takes bytes in
//! and returns bytes and decisions out (`poll_output`); it must never touch a socket, a
//! clock or quinn-proto, and never buffer more than `MAX_CONTROL_BUFFER`,
//! `MAX_CONNECT_BUFFER` and `MAX_CAPSULE_BUFFER`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use web_transport_proto::{
    Capsule, CapsuleError, ConnectError, ConnectRequest, ConnectResponse, Settings,
};

use super::framing::frame_header;
use super::{MAX_CAPSULE_BUFFER, MAX_CONNECT_BUFFER, MAX_CONTROL_BUFFER, WtError, frame};

/// Buffers more of the CONNECT stream, refusing a peer that would make it outgrow `limit`.
fn append_bounded(
    buf: &mut BytesMut,
    stream: u64,
    data: &[u8],
    limit: usize,
) -> Result<(), WtError> {
    if buf.len() + data.len() > limit {
        return Err(WtError::TooLarge { stream, limit });
    }
    buf.extend_from_slice(data);
    Ok(())
}

/// A frame of `total` bytes announced on the CONNECT stream must fit in its buffer.
fn fits(stream: u64, total: usize, limit: usize) -> Result<(), WtError> {
    if total > limit {
        return Err(WtError::TooLarge { stream, limit });
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    /// The CONNECT stream's ID; streams and datagrams of this session carry it.
    pub session: u64,
    pub authority: String,
    pub path: String,
    /// The query without `?`, e.g. `jwt=…`; empty when absent.
    pub query: String,
    /// The `wt-protocol` we answered with, chosen from the client's list.
    pub protocol: Option<String>,
}

/// What the glue must do after feeding bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes on a request stream; FIN it when `fin`.
    Send { stream: u64, data: Bytes, fin: bool },
    /// The session is live.
    Ready(SessionRequest),
    /// The peer closed the session (capsule, FIN or reset of the CONNECT stream).
    Closed { code: u32, reason: String },
    /// Client side: the server did not accept our CONNECT. `status` is the HTTP status when
    /// the response carried one.
    Refused { status: Option<u16>, reason: String },
}

#[derive(Debug)]
enum ConnectState {
    /// Waiting for a CONNECT on the first request stream.
    Waiting,
    /// The CONNECT was decoded but the peer's SETTINGS have not arrived.
    Held(Box<ConnectRequest>, u64),
    /// Client side: our CONNECT is out on this stream; waiting for the response HEADERS.
    Requested { stream: u64 },
    /// Accepted; the CONNECT stream now carries capsules.
    Live { stream: u64 },
    /// Rejected or closed.
    Done,
}

/// Server side of one HTTP/3 connection carrying one WebTransport session.
#[derive(Debug)]
pub struct Handshake {
    supported: Vec<String>,
    control: Option<u64>,
    control_buf: BytesMut,
    settings_seen: bool,
    connect: ConnectState,
    connect_stream: Option<u64>,
    connect_buf: BytesMut,
    outputs: std::collections::VecDeque<Output>,
    /// Client side only: the CONNECT we send and what it asked for.
    client: Option<Box<ClientRequest>>,
}

/// What a dialing client asked for; kept to report it with `Ready` and to check the answer.
#[derive(Debug)]
struct ClientRequest {
    request: ConnectRequest,
    offered: Vec<String>,
}

impl Handshake {
    /// `supported`: WebTransport sub-protocols we speak, in our preference order (used only
    /// to filter the client's order).
    pub fn new(supported: Vec<String>) -> Self {
        Self {
            supported,
            control: None,
            control_buf: BytesMut::new(),
            settings_seen: false,
            connect: ConnectState::Waiting,
            connect_stream: None,
            connect_buf: BytesMut::new(),
            outputs: Default::default(),
            client: None,
        }
    }

    /// Client side of one HTTP/3 connection that will carry one WebTransport session to
    /// `https://{authority}{path_and_query}`, offering `protocols` (our preference first) in
    /// `wt-available-protocols`. Fails here, before any packet is sent, if the target or a
    /// protocol cannot be encoded.
    pub fn client(
        authority: &str,
        path_and_query: &str,
        protocols: &[&str],
    ) -> Result<Self, WtError> {
        if !path_and_query.starts_with('/') {
            return Err(WtError::BadTarget(format!(
                "path {path_and_query:?} must start with '/'"
            )));
        }
        let url: url::Url = format!("https://{authority}{path_and_query}")
            .parse()
            .map_err(|e: url::ParseError| WtError::BadTarget(e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(WtError::BadTarget(format!("no host in {authority:?}")));
        }
        let offered: Vec<String> = protocols.iter().map(|p| p.to_string()).collect();
        let request = ConnectRequest::new(url).with_protocols(offered.clone());
        // Encode once now so a bad protocol string is an error of the call, not of the wire.
        request
            .encode(&mut BytesMut::new())
            .map_err(|e| WtError::BadTarget(e.to_string()))?;
        let mut h = Self::new(Vec::new());
        h.client = Some(Box::new(ClientRequest { request, offered }));
        Ok(h)
    }

    /// Client side: the request stream the glue opened for the CONNECT; returns the HEADERS
    /// frame to write on it (not finished: the stream carries capsules afterwards). Empty for
    /// a server-side handshake or a second call.
    pub fn start_request(&mut self, stream: u64) -> Bytes {
        let Some(c) = &self.client else {
            return Bytes::new();
        };
        if !matches!(self.connect, ConnectState::Waiting) {
            return Bytes::new();
        }
        let mut b = BytesMut::new();
        if c.request.encode(&mut b).is_err() {
            // `client()` already encoded this exact request successfully.
            return Bytes::new();
        }
        self.connect_stream = Some(stream);
        self.connect = ConnectState::Requested { stream };
        b.freeze()
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Is this the live session's CONNECT stream?
    pub fn is_connect_stream(&self, stream: u64) -> bool {
        self.connect_stream == Some(stream)
    }

    /// The live session's ID, once accepted.
    pub fn session(&self) -> Option<u64> {
        match self.connect {
            ConnectState::Live { stream } => Some(stream),
            _ => None,
        }
    }

    /// Client side: the session ID our CONNECT will have, while the response is awaited.
    /// The server may open session streams right behind its 200, and they can be read first.
    pub fn pending_session(&self) -> Option<u64> {
        match self.connect {
            ConnectState::Requested { stream } => Some(stream),
            _ => None,
        }
    }

    /// Both session IDs, as [`super::Streams`] needs them to classify a stream.
    pub fn session_ids(&self) -> super::SessionIds {
        super::SessionIds {
            live: self.session(),
            pending: self.pending_session(),
        }
    }

    /// A peer uni stream turned out to be a control stream.
    pub fn on_control_opened(&mut self, stream: u64) -> Result<(), WtError> {
        if self.control.is_some() {
            return Err(WtError::DuplicateControl(stream));
        }
        self.control = Some(stream);
        Ok(())
    }

    /// Bytes on the peer's control stream, after its type byte.
    pub fn on_control_data(&mut self, data: &[u8], fin: bool) -> Result<(), WtError> {
        if self.control_buf.len() + data.len() > MAX_CONTROL_BUFFER {
            return Err(WtError::TooLarge {
                stream: self.control.unwrap_or(0),
                limit: MAX_CONTROL_BUFFER,
            });
        }
        self.control_buf.extend_from_slice(data);
        while let Some((typ, _, total)) = frame_header(&self.control_buf) {
            if total > MAX_CONTROL_BUFFER {
                return Err(WtError::TooLarge {
                    stream: self.control.unwrap_or(0),
                    limit: MAX_CONTROL_BUFFER,
                });
            }
            if self.control_buf.len() < total {
                break;
            }
            let frame = self.control_buf.split_to(total);
            match (typ, self.settings_seen) {
                (frame::SETTINGS, false) => {
                    let mut whole = BytesMut::with_capacity(total + 1);
                    whole.put_u8(0);
                    whole.put_slice(&frame);
                    let settings = Settings::decode(&mut whole.freeze())
                        .map_err(|e| WtError::BadSettings(e.to_string()))?;
                    if settings.supports_webtransport() == 0 {
                        return Err(WtError::NoWebTransport);
                    }
                    self.settings_seen = true;
                    // Only a held CONNECT moves on; any other state (a client's pending
                    // request, a live session) must survive late SETTINGS untouched.
                    if matches!(self.connect, ConnectState::Held(..))
                        && let ConnectState::Held(req, stream) =
                            std::mem::replace(&mut self.connect, ConnectState::Waiting)
                    {
                        self.answer(*req, stream);
                    }
                }
                (frame::SETTINGS, true) => return Err(WtError::DuplicateSettings),
                (other, false) => return Err(WtError::MissingSettings(other)),
                // DATA, HEADERS are not allowed on the control stream (RFC 9114 7.2).
                (frame::DATA | frame::HEADERS, true) => {
                    return Err(WtError::FrameUnexpected {
                        stream: self.control.unwrap_or(0),
                        frame: typ,
                    });
                }
                // GOAWAY, MAX_PUSH_ID, GREASE, unknown: nothing to do for one session.
                _ => {}
            }
        }
        if fin {
            return Err(WtError::ControlClosed);
        }
        Ok(())
    }

    /// Bytes on a peer-initiated request (non-WebTransport bidi) stream.
    pub fn on_request_data(&mut self, stream: u64, data: &[u8], fin: bool) -> Result<(), WtError> {
        match self.connect {
            ConnectState::Waiting => {}
            ConnectState::Live { stream: s } if s == stream => {
                return self.on_capsule_data(stream, data, fin);
            }
            ConnectState::Held(_, s) if s == stream => return Ok(()),
            ConnectState::Requested { stream: s } if s == stream => {
                return self.on_response_data(stream, data, fin);
            }
            // RFC 9114 6.1: servers never open bidirectional streams.
            _ if self.client.is_some() => return Err(WtError::ServerRequestStream(stream)),
            _ => {
                // A second request on a one-session connection: refuse it.
                self.outputs.push_back(Output::Send {
                    stream,
                    data: response_bytes(
                        web_transport_proto::http::StatusCode::TOO_MANY_REQUESTS,
                        None,
                    ),
                    fin: true,
                });
                return Ok(());
            }
        }
        append_bounded(&mut self.connect_buf, stream, data, MAX_CONNECT_BUFFER)?;
        let Some((typ, _, total)) = frame_header(&self.connect_buf) else {
            return Ok(());
        };
        if typ == frame::SETTINGS || typ == frame::GOAWAY {
            // SETTINGS or GOAWAY on a request stream is a connection error (RFC 9114 7.2.4).
            return Err(WtError::FrameUnexpected { stream, frame: typ });
        }
        if typ != frame::HEADERS {
            self.reject(stream, web_transport_proto::http::StatusCode::BAD_REQUEST);
            return Ok(());
        }
        fits(stream, total, MAX_CONNECT_BUFFER)?;
        if self.connect_buf.len() < total {
            if fin {
                self.reject(stream, web_transport_proto::http::StatusCode::BAD_REQUEST);
            }
            return Ok(());
        }
        let mut frame = self.connect_buf.split_to(total).freeze();
        self.connect_buf = BytesMut::new();
        match ConnectRequest::decode(&mut frame) {
            Ok(req) => {
                self.connect_stream = Some(stream);
                if self.settings_seen {
                    self.answer(req, stream);
                } else {
                    self.connect = ConnectState::Held(Box::new(req), stream);
                }
            }
            Err(ConnectError::FieldSectionTooLarge | ConnectError::FrameTooLarge) => {
                return Err(WtError::TooLarge {
                    stream,
                    limit: MAX_CONNECT_BUFFER,
                });
            }
            Err(e) => {
                tracing::debug!(stream, error = %e, "rejecting CONNECT");
                self.reject(stream, web_transport_proto::http::StatusCode::BAD_REQUEST);
            }
        }
        Ok(())
    }

    /// The peer reset the request stream `stream`.
    pub fn on_request_reset(&mut self, stream: u64) {
        if self.connect_stream == Some(stream) {
            self.finish(0, String::new());
        }
    }

    fn reject(&mut self, stream: u64, status: web_transport_proto::http::StatusCode) {
        self.connect = ConnectState::Done;
        self.connect_buf = BytesMut::new();
        self.outputs.push_back(Output::Send {
            stream,
            data: response_bytes(status, None),
            fin: true,
        });
    }

    fn answer(&mut self, req: ConnectRequest, stream: u64) {
        let protocol = req
            .protocols
            .iter()
            .find(|p| self.supported.iter().any(|s| s == *p))
            .cloned();
        self.outputs.push_back(Output::Send {
            stream,
            data: response_bytes(
                web_transport_proto::http::StatusCode::OK,
                protocol.as_deref(),
            ),
            fin: false,
        });
        let authority = match req.url.port() {
            Some(p) => format!("{}:{p}", req.url.host_str().unwrap_or_default()),
            None => req.url.host_str().unwrap_or_default().to_string(),
        };
        self.outputs.push_back(Output::Ready(SessionRequest {
            session: stream,
            authority,
            path: req.url.path().to_string(),
            query: req.url.query().unwrap_or_default().to_string(),
            protocol,
        }));
        self.connect = ConnectState::Live { stream };
    }

    /// Client side: bytes of the CONNECT response (and any capsules right behind it).
    fn on_response_data(&mut self, stream: u64, data: &[u8], fin: bool) -> Result<(), WtError> {
        append_bounded(&mut self.connect_buf, stream, data, MAX_CONNECT_BUFFER)?;
        let Some((typ, _, total)) = frame_header(&self.connect_buf) else {
            if fin {
                self.refuse(None, "CONNECT stream ended before a response".into());
            }
            return Ok(());
        };
        if typ != frame::HEADERS {
            // RFC 9114 4.1: a response starts with HEADERS.
            return Err(WtError::FrameUnexpected { stream, frame: typ });
        }
        fits(stream, total, MAX_CONNECT_BUFFER)?;
        if self.connect_buf.len() < total {
            if fin {
                self.refuse(None, "CONNECT stream ended inside the response".into());
            }
            return Ok(());
        }
        let mut frame = self.connect_buf.split_to(total).freeze();
        let resp = match ConnectResponse::decode(&mut frame) {
            Ok(r) if r.status == web_transport_proto::http::StatusCode::OK => r,
            Ok(r) => {
                self.refuse(Some(r.status.as_u16()), format!("status {}", r.status));
                return Ok(());
            }
            Err(ConnectError::WrongStatus(Some(s))) => {
                self.refuse(Some(s.as_u16()), format!("status {s}"));
                return Ok(());
            }
            Err(e) => {
                self.refuse(None, format!("malformed response: {e}"));
                return Ok(());
            }
        };
        let Some(client) = self.client.take() else {
            return Ok(());
        };
        if let Some(p) = &resp.protocol
            && !client.offered.iter().any(|o| o == p)
        {
            self.refuse(
                Some(200),
                format!("server chose wt-protocol {p:?}, not offered"),
            );
            return Ok(());
        }
        let url = &client.request.url;
        self.outputs.push_back(Output::Ready(SessionRequest {
            session: stream,
            authority: url.authority().to_string(),
            path: url.path().to_string(),
            query: url.query().unwrap_or_default().to_string(),
            protocol: resp.protocol,
        }));
        self.connect = ConnectState::Live { stream };
        // Capsules (a CLOSE) may ride right behind the response.
        if !self.connect_buf.is_empty() || fin {
            return self.on_capsule_data(stream, &[], fin);
        }
        Ok(())
    }

    fn refuse(&mut self, status: Option<u16>, reason: String) {
        self.connect = ConnectState::Done;
        self.connect_buf = BytesMut::new();
        self.outputs.push_back(Output::Refused {
            status,
            reason: format!("WebTransport CONNECT refused: {reason}"),
        });
    }

    fn on_capsule_data(&mut self, stream: u64, data: &[u8], fin: bool) -> Result<(), WtError> {
        append_bounded(&mut self.connect_buf, stream, data, MAX_CAPSULE_BUFFER)?;
        // Unwrap DATA frames into capsules, in place: frames first, then capsules.
        while let Some((typ, hdr, total)) = frame_header(&self.connect_buf) {
            fits(stream, total, MAX_CAPSULE_BUFFER)?;
            if self.connect_buf.len() < total {
                break;
            }
            let mut frame = self.connect_buf.split_to(total);
            if typ != frame::DATA {
                continue;
            }
            frame.advance(hdr);
            let mut payload = frame.freeze();
            while payload.has_remaining() {
                match Capsule::decode(&mut payload) {
                    Ok(Capsule::CloseWebTransportSession { code, reason }) => {
                        self.finish(code, reason);
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(CapsuleError::UnexpectedEnd) | Err(_) => {
                        // Capsules split across DATA frames are legal but no client does
                        // it for CLOSE; treat an unreadable capsule as the session gone.
                        self.finish(0, String::new());
                        return Ok(());
                    }
                }
            }
        }
        if fin {
            self.finish(0, String::new());
        }
        Ok(())
    }

    fn finish(&mut self, code: u32, reason: String) {
        if matches!(self.connect, ConnectState::Done) {
            return;
        }
        self.connect = ConnectState::Done;
        self.outputs.push_back(Output::Closed { code, reason });
    }
}

fn response_bytes(status: web_transport_proto::http::StatusCode, protocol: Option<&str>) -> Bytes {
    let mut resp = ConnectResponse::new(status);
    if let Some(p) = protocol {
        resp = resp.with_protocol(p);
    }
    let mut b = BytesMut::new();
    if resp.encode(&mut b).is_err() {
        // Only a protocol string that is not a valid sf-string fails; ours come from the
        // client's parsed list, so fall back to no protocol rather than fail the session.
        b.clear();
        let plain = ConnectResponse::new(status).encode(&mut b);
        // A status alone has nothing that can fail to encode.
        debug_assert!(plain.is_ok(), "status-only response failed to encode");
    }
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wt::{close_capsule, control_stream_bytes, h3};
    use web_transport_proto::VarInt;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    fn supported() -> Vec<String> {
        vec![
            "moq-lite-05".into(),
            "moq-lite-04".into(),
            "moq-lite-03".into(),
        ]
    }

    /// The moq-dev control stream from spec section 2.2, minus the type byte.
    const PEER_SETTINGS: &str =
        "04 1c 08 01 33 01 80 ff d2 77 01 c0 00 00 00 c6 71 70 6a 01 ab 60 37 42 01 ab 60 37 43 01";

    const BROWSER_CONNECT: &str = "01 40 c8 00 00 cf d7 50 90 b0 b4 0f d2 e5 f2 3a 6b a0 ab 90 f4 dc 69 a6 99 51 ae 60 75 1e a6 2c 39 e9 ff 3a 78 4c 05 f5 96 78 f1 10 da 8d 97 27 0f 79 03 a4 d9 5f 5c be b2 fa 8c 4f 83 27 43 9b 9f 26 fb c6 6c af ae 83 4d 2f 00 b9 5d 87 49 c8 7a 3f 89 f0 58 d3 60 ea 45 67 b1 3f 5f 4b 91 9d 29 ad 17 18 60 75 d6 b9 7c 8e 9a e8 2a e4 3d 3f 2f 09 f0 95 87 dc 66 a0 71 d0 55 ab b0 e9 39 0f 42 3f a3 fe 69 3f 65 a8 32 4a b0 1b fe 7e 94 fe 69 3f 65 a8 32 4a b0 1a fe 7e 94 fe 69 3f 65 a8 32 4a b0 19 fe 7f 5f 50 a2 d0 7f 66 a2 81 b0 da e0 53 fa fc 08 7e d4 ce 6a ad f2 a7 97 9c 89 c6 bf b5 2f 4f 61 e9 2b 01 68 4b 83";

    fn ready(h: &mut Handshake) -> (Vec<Output>, Option<SessionRequest>) {
        let mut outs = Vec::new();
        let mut req = None;
        while let Some(o) = h.poll_output() {
            if let Output::Ready(r) = &o {
                req = Some(r.clone());
            }
            outs.push(o);
        }
        (outs, req)
    }

    #[test]
    fn control_stream_matches_the_moq_dev_settings_set() {
        let b = control_stream_bytes();
        assert_eq!(b[0], 0x00);
        assert_eq!(b[1], 0x04);
        // Parse back: the server's own SETTINGS must satisfy the acceptance rule.
        let mut h = Handshake::new(supported());
        h.on_control_opened(3).unwrap();
        h.on_control_data(&b[1..], false).unwrap();
    }

    #[test]
    fn huffman_coded_browser_connect_yields_path_query_and_protocol() {
        let mut h = Handshake::new(supported());
        h.on_control_opened(2).unwrap();
        h.on_control_data(&hex(PEER_SETTINGS), false).unwrap();
        let bytes = hex(BROWSER_CONNECT);
        // Fed in two pieces to exercise buffering.
        h.on_request_data(0, &bytes[..50], false).unwrap();
        assert!(h.poll_output().is_none());
        h.on_request_data(0, &bytes[50..], false).unwrap();
        let (outs, req) = ready(&mut h);
        let req = req.unwrap();
        assert_eq!(req.session, 0);
        assert_eq!(req.authority, "relay.example.com:4443");
        assert_eq!(req.path, "/anon/room");
        assert_eq!(
            req.query,
            "jwt=eyJhbGciOiJIUzI1NiJ9.eyJyb290IjoiYW5vbiJ9.sig"
        );
        assert_eq!(req.protocol.as_deref(), Some("moq-lite-05"));
        match &outs[0] {
            Output::Send {
                stream: 0,
                data,
                fin: false,
            } => {
                // `:status 200` and `wt-protocol: "moq-lite-05"` are in the response.
                let resp = ConnectResponse::decode(&mut data.clone()).unwrap();
                assert_eq!(resp.status, 200);
                assert_eq!(resp.protocol.as_deref(), Some("moq-lite-05"));
            }
            o => panic!("unexpected {o:?}"),
        }
        assert_eq!(h.session(), Some(0));
    }

    #[test]
    fn minimal_huffman_connect_decodes_root_path() {
        let mut h = Handshake::new(supported());
        h.on_control_opened(2).unwrap();
        h.on_control_data(&hex(PEER_SETTINGS), false).unwrap();
        h.on_request_data(
            0,
            &hex("01 24 00 00 cf 2f 00 b9 5d 87 49 c8 7a 3f 89 f0 58 d3 60 ea 45 67 b1 3f d7 50 8a a0 e4 1d 13 9d 09 b8 d3 4d 33 c1"),
            false,
        )
        .unwrap();
        let req = ready(&mut h).1.unwrap();
        assert_eq!(req.authority, "localhost:4443");
        assert_eq!(req.path, "/");
        assert_eq!(req.query, "");
        assert_eq!(req.protocol, None);
    }

    #[test]
    fn huffman_response_vector_decodes() {
        let resp = ConnectResponse::decode(
            &mut &hex(
                "01 19 00 00 d9 2f 01 f0 95 ab b0 e9 39 0f 47 8b fe 69 3f 65 a8 32 4a b0 1b fe 7f",
            )[..],
        )
        .unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.protocol.as_deref(), Some("moq-lite-05"));
    }

    #[test]
    fn connect_is_held_until_peer_settings_arrive() {
        let mut h = Handshake::new(supported());
        h.on_request_data(0, &plain_connect(true), false).unwrap();
        assert!(h.poll_output().is_none());
        h.on_control_opened(2).unwrap();
        h.on_control_data(&hex(PEER_SETTINGS), false).unwrap();
        let req = ready(&mut h).1.unwrap();
        assert_eq!(req.path, "/anon");
        assert_eq!(req.query, "jwt=abc");
        assert_eq!(req.protocol.as_deref(), Some("moq-lite-05"));
    }

    /// The moq-dev client's CONNECT of spec section 4.1, optionally without `:protocol`.
    fn plain_connect(with_protocol: bool) -> Vec<u8> {
        let mut fs = vec![0u8, 0];
        fs.push(0x50);
        fs.push(22);
        fs.extend_from_slice(b"relay.example.com:4443");
        fs.push(0xcf);
        if with_protocol {
            fs.extend_from_slice(&[0x27, 0x02]);
            fs.extend_from_slice(b":protocol");
            fs.push(12);
            fs.extend_from_slice(b"webtransport");
        }
        fs.push(0xd7);
        fs.push(0x51);
        fs.push(13);
        fs.extend_from_slice(b"/anon?jwt=abc");
        fs.extend_from_slice(&[0x27, 0x0f]);
        fs.extend_from_slice(b"wt-available-protocols");
        let v = b"\"moq-lite-05\", \"moq-lite-04\"";
        fs.push(v.len() as u8);
        fs.extend_from_slice(v);
        let mut out = vec![0x01];
        VarInt::try_from(fs.len() as u64).unwrap().encode(&mut out);
        out.extend_from_slice(&fs);
        out
    }

    #[test]
    fn spec_connect_vector_has_declared_length() {
        // Spec 4.1 says `01 40 78`: a 120-byte field section.
        let b = plain_connect(true);
        assert_eq!(&b[..3], &[0x01, 0x40, 0x78]);
    }

    #[test]
    fn connect_without_protocol_is_answered_400_and_finished() {
        let mut h = Handshake::new(supported());
        h.on_control_opened(2).unwrap();
        h.on_control_data(&hex(PEER_SETTINGS), false).unwrap();
        h.on_request_data(0, &plain_connect(false), false).unwrap();
        match h.poll_output() {
            Some(Output::Send {
                stream: 0,
                data,
                fin: true,
            }) => {
                // `ff 04` is the static index of `:status 400`.
                assert!(matches!(
                    ConnectResponse::decode(&mut data.clone()),
                    Err(ConnectError::WrongStatus(Some(s))) if s == 400
                ));
                assert!(data.windows(2).any(|w| w == [0xff, 0x04]));
            }
            o => panic!("unexpected {o:?}"),
        }
        assert!(h.poll_output().is_none());
        assert_eq!(h.session(), None);
    }

    #[test]
    fn settings_on_a_request_stream_is_frame_unexpected() {
        let mut h = Handshake::new(supported());
        let err = h
            .on_request_data(0, &hex(PEER_SETTINGS), false)
            .unwrap_err();
        assert_eq!(
            err,
            WtError::FrameUnexpected {
                stream: 0,
                frame: 4
            }
        );
        assert_eq!(err.h3_code(), h3::FRAME_UNEXPECTED);
    }

    #[test]
    fn control_stream_must_start_with_settings_once() {
        let mut h = Handshake::new(supported());
        h.on_control_opened(2).unwrap();
        assert_eq!(
            h.on_control_data(&[0x07, 0x01, 0x00], false),
            Err(WtError::MissingSettings(7))
        );
        let mut h = Handshake::new(supported());
        h.on_control_opened(2).unwrap();
        let mut twice = hex(PEER_SETTINGS);
        twice.extend(hex(PEER_SETTINGS));
        assert_eq!(
            h.on_control_data(&twice, false),
            Err(WtError::DuplicateSettings)
        );
        assert_eq!(h.on_control_opened(6), Err(WtError::DuplicateControl(6)));
    }

    #[test]
    fn settings_without_datagrams_are_refused() {
        let mut h = Handshake::new(supported());
        h.on_control_opened(2).unwrap();
        // Only ENABLE_CONNECT_PROTOCOL.
        assert_eq!(
            h.on_control_data(&[0x04, 0x02, 0x08, 0x01], false),
            Err(WtError::NoWebTransport)
        );
    }

    #[test]
    fn close_capsule_matches_spec_bytes_and_is_understood() {
        let b = close_capsule(6, "unauthorized");
        assert_eq!(
            &b[..],
            &hex("00 13 68 43 10 00 00 00 06 75 6e 61 75 74 68 6f 72 69 7a 65 64")[..]
        );
        let mut h = Handshake::new(supported());
        h.on_control_opened(2).unwrap();
        h.on_control_data(&hex(PEER_SETTINGS), false).unwrap();
        h.on_request_data(0, &plain_connect(true), false).unwrap();
        let _ = ready(&mut h);
        h.on_request_data(0, &b[..5], false).unwrap();
        assert!(h.poll_output().is_none());
        h.on_request_data(0, &b[5..], false).unwrap();
        assert_eq!(
            h.poll_output(),
            Some(Output::Closed {
                code: 6,
                reason: "unauthorized".into()
            })
        );
    }

    #[test]
    fn connect_stream_fin_closes_with_code_zero() {
        let mut h = Handshake::new(supported());
        h.on_control_opened(2).unwrap();
        h.on_control_data(&hex(PEER_SETTINGS), false).unwrap();
        h.on_request_data(0, &plain_connect(true), false).unwrap();
        let _ = ready(&mut h);
        h.on_request_data(0, &[], true).unwrap();
        assert_eq!(
            h.poll_output(),
            Some(Output::Closed {
                code: 0,
                reason: String::new()
            })
        );
    }

    fn drain(h: &mut Handshake) -> Vec<Output> {
        std::iter::from_fn(|| h.poll_output()).collect()
    }

    /// Runs our client CONNECT through our server side; returns the client and the bytes the
    /// server answered on the request stream.
    fn client_against_server(path_and_query: &str, offer: &[&str]) -> (Handshake, Bytes) {
        let mut c = Handshake::client("relay.example.com:4443", path_and_query, offer).unwrap();
        let req = c.start_request(0);
        assert_eq!(req[0], 0x01, "CONNECT is a HEADERS frame");
        let mut s = Handshake::new(supported());
        let ctrl = control_stream_bytes();
        s.on_control_opened(2).unwrap();
        s.on_control_data(&ctrl[1..], false).unwrap();
        s.on_request_data(0, &req, false).unwrap();
        let mut answer = None;
        for o in drain(&mut s) {
            if let Output::Send {
                stream: 0, data, ..
            } = o
            {
                answer = Some(data);
            }
        }
        c.on_control_opened(3).unwrap();
        c.on_control_data(&ctrl[1..], false).unwrap();
        (c, answer.expect("server answered"))
    }

    #[test]
    fn client_connect_is_accepted_by_our_server_with_path_query_and_protocol() {
        let (mut c, answer) =
            client_against_server("/anon/room?jwt=abc.def", &["moq-lite-04", "moq-lite-03"]);
        // Byte by byte, to prove the response is buffered until whole.
        for b in answer.iter() {
            assert!(c.poll_output().is_none());
            c.on_request_data(0, &[*b], false).unwrap();
        }
        let outs = drain(&mut c);
        assert_eq!(
            outs,
            vec![Output::Ready(SessionRequest {
                session: 0,
                authority: "relay.example.com:4443".into(),
                path: "/anon/room".into(),
                query: "jwt=abc.def".into(),
                protocol: Some("moq-lite-04".into()),
            })]
        );
        assert_eq!(c.session(), Some(0));
        assert!(c.is_connect_stream(0));
    }

    #[test]
    fn server_sees_the_client_path_query_and_first_offered_protocol() {
        let mut c = Handshake::client("localhost:4443", "/a?jwt=x", &["moq-lite-05"]).unwrap();
        let req = c.start_request(4);
        let mut s = Handshake::new(supported());
        s.on_control_opened(3).unwrap();
        s.on_control_data(&control_stream_bytes()[1..], false)
            .unwrap();
        s.on_request_data(4, &req, false).unwrap();
        let req = ready(&mut s).1.unwrap();
        assert_eq!(req.authority, "localhost:4443");
        assert_eq!((req.path.as_str(), req.query.as_str()), ("/a", "jwt=x"));
        assert_eq!(req.protocol.as_deref(), Some("moq-lite-05"));
    }

    #[test]
    fn capsule_right_behind_the_response_closes_the_client_session() {
        let (mut c, answer) = client_against_server("/", &["moq-lite-05"]);
        let mut both = answer.to_vec();
        both.extend_from_slice(&close_capsule(9, "go away"));
        c.on_request_data(0, &both, false).unwrap();
        let outs = drain(&mut c);
        assert!(matches!(outs[0], Output::Ready(_)));
        assert_eq!(
            outs[1],
            Output::Closed {
                code: 9,
                reason: "go away".into()
            }
        );
    }

    #[test]
    fn non_200_response_refuses_the_client_session_with_its_status() {
        let (mut c, _) = client_against_server("/", &["moq-lite-05"]);
        let resp = response_bytes(web_transport_proto::http::StatusCode::NOT_FOUND, None);
        c.on_request_data(0, &resp, true).unwrap();
        match drain(&mut c).as_slice() {
            [Output::Refused { status, reason }] => {
                assert_eq!(*status, Some(404));
                assert!(reason.contains("404"), "{reason}");
            }
            o => panic!("unexpected {o:?}"),
        }
        assert_eq!(c.session(), None);
    }

    #[test]
    fn client_refuses_a_protocol_it_did_not_offer() {
        let (mut c, _) = client_against_server("/", &["moq-lite-03"]);
        let resp = response_bytes(
            web_transport_proto::http::StatusCode::OK,
            Some("moq-lite-05"),
        );
        c.on_request_data(0, &resp, false).unwrap();
        assert!(matches!(
            drain(&mut c).as_slice(),
            [Output::Refused {
                status: Some(200),
                ..
            }]
        ));
    }

    #[test]
    fn connect_stream_ending_before_a_response_refuses_without_status() {
        let (mut c, answer) = client_against_server("/", &[]);
        c.on_request_data(0, &answer[..3], true).unwrap();
        assert!(matches!(
            drain(&mut c).as_slice(),
            [Output::Refused { status: None, .. }]
        ));
    }

    #[test]
    fn client_rejects_server_request_streams_and_data_before_headers() {
        let (mut c, _) = client_against_server("/", &[]);
        assert_eq!(
            c.on_request_data(1, &[0x01, 0x00], false),
            Err(WtError::ServerRequestStream(1))
        );
        assert_eq!(
            c.on_request_data(0, &[0x00, 0x01, 0xaa], false),
            Err(WtError::FrameUnexpected {
                stream: 0,
                frame: 0
            })
        );
    }

    #[test]
    fn bad_client_targets_fail_before_anything_is_sent() {
        assert!(matches!(
            Handshake::client("localhost:4443", "no-slash", &[]),
            Err(WtError::BadTarget(_))
        ));
        assert!(matches!(
            Handshake::client("", "/", &[]),
            Err(WtError::BadTarget(_))
        ));
        assert!(matches!(
            Handshake::client("localhost", "/", &["caf\u{e9}"]),
            Err(WtError::BadTarget(_))
        ));
        // A server-side handshake has no request to start.
        assert!(Handshake::new(supported()).start_request(0).is_empty());
    }
}
