//! HTTP/3 and WebTransport framing that needs no state: the leading varints that say what a
//! stream is, the prefixes we write on streams we open, quarter-stream-ID datagrams, the
//! CLOSE_WEBTRANSPORT_SESSION capsule, our control stream's bytes and HTTP/3 frame headers.
//! Pure functions over byte slices; it must never keep state or allocate beyond its result.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use web_transport_proto::{Capsule, Settings, VarInt};

use super::MAX_STREAM_HEADER;

/// Bidirectional WebTransport stream signal, written as a varint before the session ID.
pub const WT_BIDI: u64 = 0x41;
/// Unidirectional WebTransport stream type.
pub const WT_UNI: u64 = 0x54;

/// What a peer-initiated unidirectional stream is, from its leading varint(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniKind {
    Control,
    QpackEncoder,
    QpackDecoder,
    WebTransport {
        session: u64,
    },
    /// Push, reserved/GREASE or unknown: stop reading it.
    Other(u64),
}

/// What a peer-initiated bidirectional stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiKind {
    WebTransport {
        session: u64,
    },
    /// An HTTP/3 request stream (the CONNECT, or something we reject).
    Request,
}

pub(super) fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    VarInt::decode(buf).ok().map(|v| v.into_inner())
}

/// Classifies a unidirectional stream from its first bytes. `Ok(None)` means more bytes are
/// needed; the usize is how many header bytes to strip.
pub fn parse_uni_header(buf: &[u8]) -> Option<(UniKind, usize)> {
    let mut b = buf;
    let typ = read_varint(&mut b)?;
    let kind = match typ {
        0x00 => UniKind::Control,
        0x02 => UniKind::QpackEncoder,
        0x03 => UniKind::QpackDecoder,
        WT_UNI => UniKind::WebTransport {
            session: read_varint(&mut b)?,
        },
        other => UniKind::Other(other),
    };
    Some((kind, buf.len() - b.len()))
}

/// Classifies a bidirectional stream from its first bytes; `None` means more bytes needed.
pub fn parse_bi_header(buf: &[u8]) -> Option<(BiKind, usize)> {
    let mut b = buf;
    let typ = read_varint(&mut b)?;
    if typ != WT_BIDI {
        return Some((BiKind::Request, 0));
    }
    let session = read_varint(&mut b)?;
    Some((BiKind::WebTransport { session }, buf.len() - b.len()))
}

/// The header a server writes on a stream it opens inside `session`.
pub fn stream_prefix(bidi: bool, session: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(MAX_STREAM_HEADER);
    let typ = if bidi { WT_BIDI } else { WT_UNI };
    VarInt::try_from(typ).unwrap_or_default().encode(&mut b);
    VarInt::try_from(session).unwrap_or_default().encode(&mut b);
    b.freeze()
}

/// Our control stream: type 0x00 and one SETTINGS frame enabling WebTransport (the exact
/// set moq-dev ships, which browsers and moq-dev clients accept).
pub fn control_stream_bytes() -> Bytes {
    let mut settings = Settings::default();
    settings.enable_webtransport(1);
    let mut b = BytesMut::new();
    settings.encode(&mut b);
    b.freeze()
}

/// Prepends the quarter stream ID to a datagram payload.
pub fn encode_datagram(session: u64, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 8);
    VarInt::try_from(session / 4)
        .unwrap_or_default()
        .encode(&mut b);
    b.put_slice(payload);
    b.freeze()
}

/// Strips the quarter stream ID of a received datagram, or `None` if it is not for
/// `session`. The full session ID is accepted too (moq-dev's quirk; identical for session 0).
pub fn decode_datagram(session: u64, mut data: Bytes) -> Option<Bytes> {
    let mut b: &[u8] = &data;
    let id = read_varint(&mut b)?;
    if id != session / 4 && id != session {
        return None;
    }
    let n = data.len() - b.len();
    data.advance(n);
    Some(data)
}

/// A DATA frame carrying a CLOSE_WEBTRANSPORT_SESSION capsule.
pub fn close_capsule(code: u32, reason: &str) -> Bytes {
    // The draft bounds the reason at 1024 bytes; cut on a char boundary.
    let mut end = reason.len().min(1024);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut capsule = BytesMut::new();
    Capsule::CloseWebTransportSession {
        code,
        reason: reason[..end].to_string(),
    }
    .encode(&mut capsule);
    let mut b = BytesMut::with_capacity(capsule.len() + 4);
    VarInt::from_u32(0).encode(&mut b);
    VarInt::try_from(capsule.len() as u64)
        .unwrap_or_default()
        .encode(&mut b);
    b.put_slice(&capsule);
    b.freeze()
}
/// One parsed HTTP/3 frame header: type, payload offset, total frame length.
pub(super) fn frame_header(buf: &[u8]) -> Option<(u64, usize, usize)> {
    let mut b = buf;
    let typ = read_varint(&mut b)?;
    let len = read_varint(&mut b)?;
    let hdr = buf.len() - b.len();
    let total = hdr.checked_add(usize::try_from(len).ok()?)?;
    Some((typ, hdr, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wt::{error_from_http3, error_to_http3};

    #[test]
    fn stream_prefixes_and_headers_round_trip() {
        assert_eq!(&stream_prefix(true, 0)[..], &[0x40, 0x41, 0x00]);
        assert_eq!(&stream_prefix(false, 0)[..], &[0x40, 0x54, 0x00]);
        assert_eq!(
            parse_bi_header(&[0x40, 0x41, 0x00, 0x02]),
            Some((BiKind::WebTransport { session: 0 }, 3))
        );
        assert_eq!(parse_bi_header(&[0x40]), None);
        assert_eq!(parse_bi_header(&[0x01, 0x40]), Some((BiKind::Request, 0)));
        assert_eq!(
            parse_uni_header(&[0x40, 0x54, 0x00, 0x00]),
            Some((UniKind::WebTransport { session: 0 }, 3))
        );
        assert_eq!(parse_uni_header(&[0x00]), Some((UniKind::Control, 1)));
        assert_eq!(parse_uni_header(&[0x02]), Some((UniKind::QpackEncoder, 1)));
        assert_eq!(parse_uni_header(&[0x40, 0x54]), None);
        assert_eq!(parse_uni_header(&[0x01]), Some((UniKind::Other(1), 1)));
    }

    #[test]
    fn datagrams_carry_the_quarter_stream_id() {
        assert_eq!(&encode_datagram(0, b"hi")[..], b"\x00hi");
        assert_eq!(&encode_datagram(8, b"hi")[..], b"\x02hi");
        assert_eq!(
            decode_datagram(8, Bytes::from_static(b"\x02hi")).as_deref(),
            Some(&b"hi"[..])
        );
        assert_eq!(decode_datagram(0, Bytes::from_static(b"\x01hi")), None);
        assert_eq!(decode_datagram(0, Bytes::new()), None);
    }

    #[test]
    fn error_codes_map_as_in_the_spec_table() {
        for (n, h) in [
            (0u32, 0x52e4a40fa8dbu64),
            (2, 0x52e4a40fa8dd),
            (29, 0x52e4a40fa8f8),
            (30, 0x52e4a40fa8fa),
            (31, 0x52e4a40fa8fb),
            (468, 0x52e4a40faabe),
        ] {
            assert_eq!(error_to_http3(n), h);
            assert_eq!(error_from_http3(h), Some(n));
        }
        assert_eq!(error_from_http3(0x100), None);
    }
}
