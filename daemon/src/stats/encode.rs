//! The `.json.z` siblings' payload: moq-json's snapshot encoding with DEFLATE, reduced to
//! what a reader needs. Each group is one raw DEFLATE stream (no zlib header) sync-flushed
//! after each frame, with the flush's `00 00 ff ff` tail removed; the reader treats a
//! group's first frame as a full snapshot. Every group here holds one frame, the whole
//! JSON, so there are no deltas to write.

use flate2::{Compress, Compression, FlushCompress, Status};

/// The tail a sync flush ends with; moq-flate strips it and its reader appends it again.
const SYNC_FLUSH_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// moq-json's level (moq-flate `Compress::new(level 6, false)`).
const LEVEL: u32 = 6;

/// One snapshot frame: `json` deflated as a group's first and only frame.
pub fn deflate_snapshot(json: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new(Compression::new(LEVEL), false);
    // DEFLATE's worst case is the input plus 5 bytes per 16 KiB stored block; the slack
    // covers the block headers and the flush.
    let mut out = Vec::with_capacity(json.len() + json.len() / 16 + 64);
    loop {
        let consumed = compress.total_in() as usize;
        let status = compress.compress_vec(&json[consumed..], &mut out, FlushCompress::Sync);
        let done = compress.total_in() as usize == json.len() && out.ends_with(&SYNC_FLUSH_TAIL);
        match status {
            Ok(Status::Ok | Status::StreamEnd | Status::BufError) if done => break,
            // Out of room before the flush finished: give it more and go on.
            Ok(_) => out.reserve(out.capacity().max(64)),
            // Compressing bytes in memory has no failure mode of its own; an error here
            // would be flate2's bug, and the plain track still carries the value.
            Err(_) => return Vec::new(),
        }
    }
    debug_assert!(out.ends_with(&SYNC_FLUSH_TAIL));
    out.truncate(out.len() - SYNC_FLUSH_TAIL.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn inflate(payload: &[u8]) -> Vec<u8> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&SYNC_FLUSH_TAIL);
        let mut decompress = Decompress::new(false);
        let mut out = Vec::with_capacity(1 << 20);
        decompress
            .decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn an_empty_object_deflates_to_moq_jsons_bytes() {
        // Python: compressobj(6, DEFLATED, -15).compress(b"{}") + flush(Z_SYNC_FLUSH),
        // tail stripped (the research note's vector).
        assert_eq!(deflate_snapshot(b"{}"), [0xaa, 0xae, 0x05, 0x00]);
    }

    #[test]
    fn a_large_snapshot_round_trips() {
        let json: String = (0..5000)
            .map(|i| format!("\"demo/room-{i}\":{{\"bytes\":{}}},", i * 7919))
            .collect();
        let json = format!("{{{}}}", json.trim_end_matches(','));
        let payload = deflate_snapshot(json.as_bytes());
        assert!(payload.len() < json.len());
        assert_eq!(inflate(&payload), json.as_bytes());
    }
}
