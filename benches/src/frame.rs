//! The benchmark frame: a fixed header the relay carries opaquely (send time, sequence,
//! group, "measured" flag), padded to the requested frame size. It owns the byte layout
//! only; it must never decide what counts as loss or latency.

use bytes::{BufMut, Bytes, BytesMut};

/// Header bytes at the start of every frame: magic, send time, frame sequence, group
/// sequence, flags.
pub const HEADER_LEN: usize = 4 + 8 + 8 + 8 + 1;
/// Tells our frames from anything else a relay might deliver on the same path.
const MAGIC: [u8; 4] = *b"RBN1";
const FLAG_MEASURED: u8 = 1;

/// What a subscriber learns from one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Publisher's CLOCK_MONOTONIC at write time, ns.
    pub sent_ns: u64,
    /// Frame number within the track, from 0.
    pub sequence: u64,
    pub group: u64,
    /// The frame's group started inside the measured window.
    pub measured: bool,
}

impl Header {
    /// A frame of `size` bytes (at least the header) carrying this header.
    pub fn encode(&self, size: usize) -> Bytes {
        let size = size.max(HEADER_LEN);
        let mut buf = BytesMut::with_capacity(size);
        buf.put_slice(&MAGIC);
        buf.put_u64(self.sent_ns);
        buf.put_u64(self.sequence);
        buf.put_u64(self.group);
        buf.put_u8(if self.measured { FLAG_MEASURED } else { 0 });
        buf.resize(size, 0);
        buf.freeze()
    }

    /// None when the payload is not one of our frames (short or wrong magic).
    pub fn decode(payload: &[u8]) -> Option<Header> {
        if payload.len() < HEADER_LEN || payload[..4] != MAGIC {
            return None;
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&payload[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Some(Header {
            sent_ns: u64_at(4),
            sequence: u64_at(12),
            group: u64_at(20),
            measured: payload[28] & FLAG_MEASURED != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_pads_to_frame_size() {
        let h = Header {
            sent_ns: 123_456_789,
            sequence: 42,
            group: 7,
            measured: true,
        };
        let b = h.encode(4096);
        assert_eq!(b.len(), 4096);
        assert_eq!(Header::decode(&b), Some(h));
    }

    #[test]
    fn foreign_or_short_payload_is_not_a_frame() {
        assert_eq!(Header::decode(b"RBN1"), None);
        assert_eq!(Header::decode(&[0u8; 64]), None);
    }
}
