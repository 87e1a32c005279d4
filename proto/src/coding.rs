//! Wire primitives shared by every message: QUIC varints, strings, paths, hop chains, the
//! `[N]` length framing and the decode/encode error types. It owns the bounds on decoded
//! sizes; it must never allocate more than a bound allows or panic on any input.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{ErrorCode, Version, path};

/// Largest value a QUIC varint can carry.
pub const MAX_VARINT: u64 = (1 << 62) - 1;

/// Largest control message body (`[N]`) we accept. A maximal legal message (a 4 KiB path,
/// a 4 KiB track name, 32 hops) is far below it; the reference caps SETUP at 64 KiB.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Longest broadcast path or prefix in bytes; keeps the announce table per session bounded.
pub const MAX_PATH_LEN: usize = 4096;
/// Path segments allowed, exactly the reference's limit (spec 2.2).
pub const MAX_PATH_SEGMENTS: usize = 32;
/// Longest track name in bytes; names are short identifiers (`video`, `catalog.json`).
pub const MAX_TRACK_NAME_LEN: usize = 1024;
/// Hop IDs per announcement, the reference's limit (spec 2.6).
pub const MAX_HOPS: usize = 32;
/// Largest frame payload: the reference's per-frame / per-group cache limit (spec 2.6).
pub const MAX_FRAME_SIZE: u64 = 32 << 20;
/// SETUP parameters allowed, the reference's limit (spec 2.6).
pub const MAX_SETUP_PARAMETERS: usize = 64;
/// Longest GOAWAY URI, the moq-net limit (spec 12.12).
pub const MAX_GOAWAY_URI_LEN: usize = 8192;
/// Largest datagram body (spec 7): receivers drop larger ones.
pub const MAX_DATAGRAM_SIZE: usize = 1200;
/// Largest encoded GROUP header body on any version: three varints of at most 8 bytes (06
/// adds Frame Start to the subscribe id and sequence of 03-05).
pub const MAX_GROUP_HEADER_SIZE: usize = 24;

/// Largest encoded GROUP header body on `v`: 03-05 keep their bound of two varints.
pub const fn max_group_header_size(v: Version) -> usize {
    if v.is_06_or_later() { 24 } else { 16 }
}

/// A decode failure. Decoding is total: every byte sequence gives a value or one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated input: more bytes are needed")]
    Short,
    #[error("{0} bytes left over inside a length-prefixed message")]
    Long(usize),
    #[error("{what} is {size}, over the limit of {max}")]
    TooLarge {
        what: &'static str,
        size: u64,
        max: u64,
    },
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("invalid {what}: {value}")]
    Invalid { what: &'static str, value: u64 },
    #[error("{what} does not exist on {version}")]
    NotInVersion {
        what: &'static str,
        version: Version,
    },
    #[error("duplicate SETUP parameter {0:#x}")]
    DuplicateParameter(u64),
}

impl DecodeError {
    /// The code to reset a stream (or close the session) with after this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge {
                what: "frame size", ..
            } => ErrorCode::FrameTooLarge,
            DecodeError::TooLarge { .. } => ErrorCode::BoundsExceeded,
            DecodeError::NotInVersion { .. } => ErrorCode::Version,
            DecodeError::DuplicateParameter(_) => ErrorCode::Duplicate,
            _ => ErrorCode::Decode,
        }
    }
}

/// An encode failure: the message cannot be represented on this version or breaks a bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{what} value {value} does not fit in a varint")]
    VarintRange { what: &'static str, value: u64 },
    #[error("{what} is {size}, over the limit of {max}")]
    TooLarge {
        what: &'static str,
        size: u64,
        max: u64,
    },
    #[error("{what} does not exist on {version}")]
    NotInVersion {
        what: &'static str,
        version: Version,
    },
    #[error("invalid {what}")]
    Invalid { what: &'static str },
}

// ---------------------------------------------------------------------------------------
// Varints

/// Number of bytes the shortest encoding of `v` takes (`v` must be ≤ MAX_VARINT).
pub const fn varint_len(v: u64) -> usize {
    if v < 1 << 6 {
        1
    } else if v < 1 << 14 {
        2
    } else if v < 1 << 30 {
        4
    } else {
        8
    }
}

/// Writes the shortest encoding of `v`.
pub fn put_varint(buf: &mut impl BufMut, what: &'static str, v: u64) -> Result<(), EncodeError> {
    if v > MAX_VARINT {
        return Err(EncodeError::VarintRange { what, value: v });
    }
    match varint_len(v) {
        1 => buf.put_u8(v as u8),
        2 => buf.put_u16(0x4000 | v as u16),
        4 => buf.put_u32(0x8000_0000 | v as u32),
        _ => buf.put_u64(0xc000_0000_0000_0000 | v),
    }
    Ok(())
}

/// Reads a varint from the front of `buf`, accepting non-minimal forms. Nothing is consumed
/// when the varint is incomplete.
pub fn get_varint(buf: &mut impl Buf) -> Result<u64, DecodeError> {
    if !buf.has_remaining() {
        return Err(DecodeError::Short);
    }
    let first = *buf.chunk().first().ok_or(DecodeError::Short)?;
    let len = 1usize << (first >> 6);
    if buf.remaining() < len {
        return Err(DecodeError::Short);
    }
    buf.advance(1);
    let mut v = u64::from(first & 0x3f);
    for _ in 1..len {
        v = (v << 8) | u64::from(buf.get_u8());
    }
    Ok(v)
}

/// Reads a varint from the start of a slice without consuming: `(value, length)`.
pub fn peek_varint(b: &[u8]) -> Result<(u64, usize), DecodeError> {
    let first = *b.first().ok_or(DecodeError::Short)?;
    let len = 1usize << (first >> 6);
    if b.len() < len {
        return Err(DecodeError::Short);
    }
    let mut v = u64::from(first & 0x3f);
    for &byte in &b[1..len] {
        v = (v << 8) | u64::from(byte);
    }
    Ok((v, len))
}

// ---------------------------------------------------------------------------------------
// A bounded cursor over one message body.

/// Reads fields from one message body held contiguously. Every read is bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let (v, n) = peek_varint(self.buf)?;
        self.buf = &self.buf[n..];
        Ok(v)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Short)?;
        self.buf = rest;
        Ok(b)
    }

    pub fn bytes(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(n).map_err(|_| DecodeError::Short)?;
        if n > self.buf.len() {
            return Err(DecodeError::Short);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A `(s)` string of at most `max` bytes.
    pub fn string(&mut self, what: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = self.varint()?;
        if len > max as u64 {
            return Err(DecodeError::TooLarge {
                what,
                size: len,
                max: max as u64,
            });
        }
        let raw = self.bytes(len)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8(what))
    }

    /// A broadcast path or prefix: a string, normalized, with at most 32 segments.
    pub fn path(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let raw = self.string(what, MAX_PATH_LEN)?;
        let p = path::normalize(&raw);
        let segments = path::segment_count(&p);
        if segments > MAX_PATH_SEGMENTS {
            return Err(DecodeError::TooLarge {
                what: "path segments",
                size: segments as u64,
                max: MAX_PATH_SEGMENTS as u64,
            });
        }
        Ok(p)
    }

    /// An optional group: 0 = absent, otherwise sequence + 1.
    pub fn opt_group(&mut self) -> Result<Option<u64>, DecodeError> {
        Ok(self.varint()?.checked_sub(1))
    }

    /// A hop chain: count, then `count` IDs (04+) or nothing (03, IDs unknown = 0).
    pub fn hops(&mut self, version: Version) -> Result<Vec<u64>, DecodeError> {
        let count = self.varint()?;
        if count > MAX_HOPS as u64 {
            return Err(DecodeError::TooLarge {
                what: "hop count",
                size: count,
                max: MAX_HOPS as u64,
            });
        }
        if !version.has_hop_ids() {
            return Ok(vec![0; count as usize]);
        }
        let mut hops = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let h = self.varint()?;
            // A chain naming the same non-zero hop twice looped: moq-net 0.3.18 fails to
            // decode it on every version (spec 12.12), and would close a session we
            // forwarded it on, so it never enters our tables. Hop 0 may repeat.
            if h != 0 && hops.contains(&h) {
                return Err(DecodeError::Invalid {
                    what: "repeated hop id",
                    value: h,
                });
            }
            hops.push(h);
        }
        Ok(hops)
    }

    /// Ends a body: leftover bytes are an error (spec 2.4).
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Long(self.buf.len()))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Writers

pub fn put_string(
    buf: &mut BytesMut,
    what: &'static str,
    s: &str,
    max: usize,
) -> Result<(), EncodeError> {
    if s.len() > max {
        return Err(EncodeError::TooLarge {
            what,
            size: s.len() as u64,
            max: max as u64,
        });
    }
    put_varint(buf, what, s.len() as u64)?;
    buf.put_slice(s.as_bytes());
    Ok(())
}

/// Writes a path as given after checking the bounds; callers pass normalized paths.
pub fn put_path(buf: &mut BytesMut, what: &'static str, p: &str) -> Result<(), EncodeError> {
    let segments = path::segment_count(p);
    if segments > MAX_PATH_SEGMENTS {
        return Err(EncodeError::TooLarge {
            what: "path segments",
            size: segments as u64,
            max: MAX_PATH_SEGMENTS as u64,
        });
    }
    put_string(buf, what, p, MAX_PATH_LEN)
}

pub fn put_opt_group(
    buf: &mut BytesMut,
    what: &'static str,
    g: Option<u64>,
) -> Result<(), EncodeError> {
    match g {
        None => put_varint(buf, what, 0),
        Some(g) if g >= MAX_VARINT => Err(EncodeError::VarintRange { what, value: g }),
        Some(g) => put_varint(buf, what, g + 1),
    }
}

pub fn put_hops(buf: &mut BytesMut, version: Version, hops: &[u64]) -> Result<(), EncodeError> {
    if hops.len() > MAX_HOPS {
        return Err(EncodeError::TooLarge {
            what: "hop count",
            size: hops.len() as u64,
            max: MAX_HOPS as u64,
        });
    }
    put_varint(buf, "hop count", hops.len() as u64)?;
    if version.has_hop_ids() {
        for &h in hops {
            put_varint(buf, "hop id", h)?;
        }
    }
    Ok(())
}

/// Writes `[N]`: the body built by `body`, prefixed with its length.
pub fn put_sized(
    buf: &mut BytesMut,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let mut tmp = BytesMut::new();
    body(&mut tmp)?;
    if tmp.len() > MAX_MESSAGE_SIZE {
        return Err(EncodeError::TooLarge {
            what: "message size",
            size: tmp.len() as u64,
            max: MAX_MESSAGE_SIZE as u64,
        });
    }
    put_varint(buf, "message length", tmp.len() as u64)?;
    buf.put_slice(&tmp);
    Ok(())
}

/// Reads `[N]` from `buf` and hands the body to `body`, which must consume all of it.
/// Copies at most MAX_MESSAGE_SIZE bytes, and only once the whole message is present.
pub fn get_sized<T>(
    buf: &mut impl Buf,
    body: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let len = get_varint(buf)?;
    if len > MAX_MESSAGE_SIZE as u64 {
        return Err(DecodeError::TooLarge {
            what: "message size",
            size: len,
            max: MAX_MESSAGE_SIZE as u64,
        });
    }
    let len = len as usize;
    if buf.remaining() < len {
        return Err(DecodeError::Short);
    }
    let raw: Bytes = buf.copy_to_bytes(len);
    let mut r = Reader::new(&raw);
    let v = body(&mut r)?;
    r.finish()?;
    Ok(v)
}

/// Zigzag-encodes a signed timestamp delta (spec 2.3).
pub const fn zigzag(s: i64) -> u64 {
    ((s << 1) ^ (s >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub const fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}
