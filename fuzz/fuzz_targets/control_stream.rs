//! Control-stream decoders: byte 0 picks the version, byte 1 the message kind, byte 2 the
//! chunk size; the rest is fed to a `MessageReader` chunk by chunk. Every decoded message
//! must re-encode and decode to itself. DATAGRAM decoding rides here too.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use proto::reader::MessageReader;
use proto::*;

fn check<M: Message + PartialEq + std::fmt::Debug>(v: Version, r: &mut MessageReader) -> bool {
    match r.read::<M>(v) {
        Ok(Some(m)) => {
            let mut out = BytesMut::new();
            m.encode(v, &mut out).expect("a decoded message re-encodes");
            let again = M::decode(v, &mut out.freeze()).expect("re-encoded message decodes");
            assert_eq!(again, m);
            true
        }
        Ok(None) | Err(_) => false,
    }
}

/// 06 announcements: as `check`, except that an unknown type (skipped, never sent) has
/// nothing to re-encode.
fn check_announce06(v: Version, r: &mut MessageReader) -> bool {
    match r.read::<Announce06>(v) {
        Ok(Some(Announce06::Unknown { .. })) => true,
        Ok(Some(m)) => {
            let mut out = BytesMut::new();
            m.encode(v, &mut out).expect("a decoded message re-encodes");
            let again =
                Announce06::decode(v, &mut out.freeze()).expect("re-encoded message decodes");
            assert_eq!(again, m);
            true
        }
        Ok(None) | Err(_) => false,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let v = Version::ALL[data[0] as usize % Version::ALL.len()];
    let kind = data[1] % 13;
    let chunk = (data[2] as usize % 64) + 1;
    let body = &data[3..];
    if kind == 12 {
        if let Ok(d) = Datagram::decode(v, Bytes::copy_from_slice(body)) {
            let mut out = BytesMut::new();
            d.encode(v, &mut out)
                .expect("a decoded datagram re-encodes");
        }
        return;
    }
    let mut r = MessageReader::new();
    // Bound the loop: at most one message per input byte.
    for c in body.chunks(chunk) {
        r.push(c);
        for _ in 0..body.len() + 1 {
            let progressed = match kind {
                0 => r.read_varint().map(|x| x.is_some()).unwrap_or(false),
                1 => check::<AnnounceRequest>(v, &mut r),
                2 => check::<AnnounceOk>(v, &mut r),
                3 if v.is_06_or_later() => check_announce06(v, &mut r),
                3 => check::<Announce>(v, &mut r),
                4 => check::<Subscribe>(v, &mut r),
                5 => check::<SubscribeUpdate>(v, &mut r),
                6 => check::<SubscribeResponse>(v, &mut r),
                7 => check::<TrackRequest>(v, &mut r),
                8 => check::<TrackInfo>(v, &mut r),
                9 => check::<Fetch>(v, &mut r),
                10 => check::<Probe>(v, &mut r) || check::<GoAway>(v, &mut r),
                _ => check::<Setup>(v, &mut r),
            };
            if !progressed {
                break;
            }
        }
        assert!(r.buffered() <= proto::reader::MAX_BUFFERED + chunk);
    }
});
