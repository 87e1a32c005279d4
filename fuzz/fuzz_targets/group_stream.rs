//! Group-stream decoder: byte 0 picks the version, byte 1 the chunk size and whether the
//! reader expects a header (Group stream) or frames only (Fetch response).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use proto::Version;
use proto::reader::{GroupItem, GroupReader};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let v = Version::ALL[data[0] as usize % Version::ALL.len()];
    let chunk = (data[1] as usize % 128) + 1;
    let mut g = if data[1] & 0x80 != 0 {
        GroupReader::frames_only(v)
    } else {
        GroupReader::new(v)
    };
    let body = &data[2..];
    let mut total = 0usize;
    for c in body.chunks(chunk) {
        g.push(Bytes::copy_from_slice(c));
        // Each item consumes at least one byte, so the body length bounds the loop.
        for _ in 0..body.len() + 1 {
            match g.next() {
                Ok(Some(GroupItem::Frame { payload, .. })) => total += payload.len(),
                Ok(Some(GroupItem::Header(_))) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert!(total <= body.len());
    let _ = g.finish();
});
