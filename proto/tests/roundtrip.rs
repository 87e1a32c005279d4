//! Property tests: encode → decode round-trips every message on every version where it
//! exists, and truncated, oversized and random inputs give errors (never a panic).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proto::coding::{MAX_FRAME_SIZE, MAX_HOPS, MAX_MESSAGE_SIZE, MAX_VARINT, put_varint};
use proto::reader::{GroupItem, GroupReader, MessageReader};
use proto::*;

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![
        Just(Version::Lite03),
        Just(Version::Lite04),
        Just(Version::Lite05),
        Just(Version::Lite06)
    ]
}

/// What a range decodes as on `v`: no frame bounds before 06; on 06 a start of group 0
/// with no frame is "no floor" and a frame end needs a group end (spec 12.7).
fn range_on(v: Version, mut r: SubscribeRange) -> SubscribeRange {
    if !v.is_06_or_later() {
        r.frame_start = 0;
        r.frame_end = None;
        return r;
    }
    if r.end.is_none() {
        r.frame_end = None;
    }
    if r.start == Some(0) && r.frame_start == 0 {
        r.start = None;
    }
    if r.start.is_none() && r.frame_start != 0 {
        r.start = Some(0);
    }
    r
}

fn varint() -> impl Strategy<Value = u64> {
    prop_oneof![0..64u64, 0..16384u64, 0..(1u64 << 30), 0..=MAX_VARINT]
}

fn opt_group() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(None), (0..MAX_VARINT).prop_map(Some)]
}

/// Normalized paths of up to 32 segments.
fn path() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9._-]{1,8}", 0..=32).prop_map(|s| s.join("/"))
}

fn name() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn hops(v: Version) -> impl Strategy<Value = Vec<u64>> {
    let ids = if v.has_hop_ids() {
        varint().boxed()
    } else {
        Just(0u64).boxed()
    };
    let unique = v.has_hop_ids();
    prop::collection::vec(ids, 0..=MAX_HOPS).prop_map(move |mut h| {
        if unique {
            // A chain naming a non-zero hop twice does not decode (spec 12.12).
            let mut seen = std::collections::HashSet::new();
            h.retain(|x| *x == 0 || seen.insert(*x));
        }
        h
    })
}

fn rt<M: Message + PartialEq + std::fmt::Debug>(v: Version, m: &M) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    m.encode(v, &mut buf)
        .map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    let encoded = buf.freeze();
    let mut b = encoded.clone();
    let back = M::decode(v, &mut b).map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    prop_assert_eq!(&back, m);
    prop_assert!(b.is_empty());
    // Every strict prefix is "need more bytes" for the incremental reader, never a value.
    for cut in [0, encoded.len() / 2, encoded.len() - 1] {
        let mut r = MessageReader::new();
        r.push(&encoded[..cut]);
        prop_assert_eq!(r.read::<M>(v).ok().flatten(), None);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn announce_request_roundtrips(v in version(), prefix in path(), hop in varint()) {
        let exclude_hop = if v.has_hop_ids() && !v.is_06_or_later() { hop } else { 0 };
        rt(v, &AnnounceRequest { prefix, exclude_hop })?;
    }

    #[test]
    fn announce_ok_roundtrips(hop_id in varint(), active_count in varint()) {
        rt(Version::Lite05, &AnnounceOk { hop_id, active_count })?;
        rt(Version::Lite06, &AnnounceOk { hop_id, active_count })?;
    }

    #[test]
    fn typed_announcements_roundtrip_on_06(hops in hops(Version::Lite06), suffix in path(),
        id in varint(), warm in varint(), cold in varint()) {
        let v = Version::Lite06;
        let cost = RouteCost { warm, cold };
        rt(v, &Announce06::Start { suffix, hops: hops.clone(), cost })?;
        rt(v, &Announce06::End { id })?;
        rt(v, &Announce06::Restart { id, hops, cost })?;
    }

    #[test]
    fn announce_roundtrips((v, hops) in version().prop_flat_map(|v| (Just(v), hops(v))), suffix in path(), st in 0..3u8) {
        prop_assume!(!v.is_06_or_later());
        let status = match st {
            0 => AnnounceStatus::Ended,
            2 if v == Version::Lite05 => AnnounceStatus::Restart,
            _ => AnnounceStatus::Active,
        };
        rt(v, &Announce { status, suffix, hops })?;
    }

    #[test]
    fn subscribe_roundtrips(v in version(), id in varint(), broadcast in path(), track in name(),
        priority in any::<u8>(), ordered in any::<bool>(), max_latency_ms in varint(),
        start in opt_group(), end in opt_group(), frame_start in varint(), frame_end in opt_group()) {
        let r = range_on(v, SubscribeRange { start, end, frame_start, frame_end });
        let ordered = ordered && !v.is_06_or_later();
        rt(v, &Subscribe { id, broadcast, track, priority, ordered, max_latency_ms,
            start: r.start, end: r.end, frame_start: r.frame_start, frame_end: r.frame_end })?;
    }

    #[test]
    fn subscribe_update_roundtrips(v in version(), priority in any::<u8>(), ordered in any::<bool>(),
        max_latency_ms in varint(), start in opt_group(), end in opt_group(),
        frame_start in varint(), frame_end in opt_group()) {
        let r = range_on(v, SubscribeRange { start, end, frame_start, frame_end });
        let ordered = ordered && !v.is_06_or_later();
        rt(v, &SubscribeUpdate { priority, ordered, max_latency_ms,
            start: r.start, end: r.end, frame_start: r.frame_start, frame_end: r.frame_end })?;
    }

    #[test]
    fn subscribe_responses_roundtrip(v in version(), priority in any::<u8>(), ordered in any::<bool>(),
        lat in varint(), start in opt_group(), end in opt_group(), a in varint(), b in varint(), c in varint()) {
        let drop = SubscribeResponse::Drop(SubscribeDrop { start: a, end: b, error_code: c });
        rt(v, &drop)?;
        if v.is_05_or_later() {
            rt(v, &SubscribeResponse::Start { group: a })?;
            rt(v, &SubscribeResponse::End { group: b })?;
        } else {
            rt(v, &SubscribeResponse::Ok(SubscribeOk { priority, ordered, max_latency_ms: lat, start, end }))?;
        }
    }

    #[test]
    fn track_messages_roundtrip(broadcast in path(), track in name(), priority in any::<u8>(),
        ordered in any::<bool>(), max_latency_ms in varint(), timescale in 1..=MAX_VARINT, group in varint(),
        lite06 in any::<bool>(), frame_start in 0..MAX_VARINT / 2, len in prop::option::of(0..MAX_VARINT / 2)) {
        let v = if lite06 { Version::Lite06 } else { Version::Lite05 };
        let ordered = ordered && !lite06;
        let (frame_start, frame_end) = if lite06 {
            (frame_start, len.map(|l| frame_start + l))
        } else {
            (0, None)
        };
        rt(v, &TrackRequest { broadcast: broadcast.clone(), track: track.clone() })?;
        rt(v, &TrackInfo { priority, ordered, max_latency_ms, timescale })?;
        rt(v, &Fetch { broadcast, track, priority, group, frame_start, frame_end })?;
    }

    #[test]
    fn probe_goaway_setup_roundtrip(v in version(), bitrate in varint(), rtt in varint(), uri in name(),
        probe in prop::option::of(varint()), spath in prop::option::of(name()), role in prop::option::of(varint()),
        cost in prop::option::of(varint()), origin in prop::option::of(varint())) {
        rt(v, &Probe { bitrate, rtt_ms: if v == Version::Lite03 { 0 } else { rtt } })?;
        if v != Version::Lite03 {
            rt(v, &GoAway { uri })?;
        }
        if v.is_05_or_later() {
            rt(v, &Setup { probe, path: spath, role, cost, origin })?;
        }
    }

    #[test]
    fn group_stream_roundtrips_at_any_chunking(v in version(), sub in varint(), seq in varint(), fs in varint(),
        frames in prop::collection::vec((-(1i64 << 40)..(1i64 << 40), prop::collection::vec(any::<u8>(), 0..300)), 0..8),
        chunk in 1..64usize) {
        let mut out = BytesMut::new();
        let frame_start = if v.is_06_or_later() { fs } else { 0 };
        let header = GroupHeader { subscribe_id: sub, sequence: seq, frame_start };
        header.encode(v, &mut out).unwrap();
        for (d, p) in &frames {
            FrameHeader { timestamp_delta: *d, size: p.len() as u64 }.encode(v, &mut out).unwrap();
            out.extend_from_slice(p);
        }
        let mut g = GroupReader::new(v);
        let mut items = Vec::new();
        for c in out.chunks(chunk) {
            g.push(Bytes::copy_from_slice(c));
            while let Some(i) = g.next().unwrap() { items.push(i); }
        }
        g.finish().unwrap();
        prop_assert_eq!(&items[0], &GroupItem::Header(header));
        prop_assert_eq!(items.len(), frames.len() + 1);
        for (item, (d, p)) in items[1..].iter().zip(&frames) {
            let want = if v.is_05_or_later() { *d } else { 0 };
            prop_assert_eq!(item, &GroupItem::Frame { timestamp_delta: want, payload: Bytes::copy_from_slice(p) });
        }
    }

    #[test]
    fn random_bytes_never_panic_any_decoder(v in version(), data in prop::collection::vec(any::<u8>(), 0..200)) {
        let b = || Bytes::copy_from_slice(&data);
        let _ = AnnounceRequest::decode(v, &mut b());
        let _ = AnnounceOk::decode(v, &mut b());
        let _ = Announce::decode(v, &mut b());
        let _ = Announce06::decode(v, &mut b());
        let _ = Subscribe::decode(v, &mut b());
        let _ = SubscribeUpdate::decode(v, &mut b());
        let _ = SubscribeResponse::decode(v, &mut b());
        let _ = TrackRequest::decode(v, &mut b());
        let _ = TrackInfo::decode(v, &mut b());
        let _ = Fetch::decode(v, &mut b());
        let _ = Probe::decode(v, &mut b());
        let _ = GoAway::decode(v, &mut b());
        let _ = Setup::decode(v, &mut b());
        let _ = GroupHeader::decode(v, &mut b());
        let _ = FrameHeader::decode(v, &mut b());
        let _ = Datagram::decode(v, b());
        let mut g = GroupReader::new(v);
        g.push(b());
        while let Ok(Some(_)) = g.next() {}
    }
}

#[test]
fn truncated_messages_are_short_errors() {
    let v = Version::Lite05;
    let mut full = BytesMut::new();
    Subscribe {
        id: 1,
        broadcast: "a/b".into(),
        track: "t".into(),
        priority: 1,
        ordered: true,
        max_latency_ms: 10,
        start: Some(3),
        end: None,
        frame_start: 0,
        frame_end: None,
    }
    .encode(v, &mut full)
    .unwrap();
    for cut in 0..full.len() {
        assert_eq!(
            Subscribe::decode(v, &mut Bytes::copy_from_slice(&full[..cut])),
            Err(DecodeError::Short)
        );
    }
}

#[test]
fn body_shorter_or_longer_than_its_length_is_an_error() {
    let v = Version::Lite05;
    // ANNOUNCE_OK claims 3 bytes but holds 2 varints + 1 extra byte: Long.
    assert_eq!(
        AnnounceOk::decode(v, &mut Bytes::from_static(&[3, 9, 1, 0])),
        Err(DecodeError::Long(1))
    );
    // Claims 1 byte, needs 2 varints: Short inside the body.
    assert_eq!(
        AnnounceOk::decode(v, &mut Bytes::from_static(&[1, 9])),
        Err(DecodeError::Short)
    );
}

#[test]
fn oversized_inputs_are_rejected() {
    let v = Version::Lite05;
    // A declared message length over the bound fails at once, before the body arrives.
    let mut big = BytesMut::new();
    put_varint(&mut big, "len", MAX_MESSAGE_SIZE as u64 + 1).unwrap();
    let mut r = MessageReader::new();
    r.push(&big);
    assert!(matches!(
        r.read::<Subscribe>(v),
        Err(DecodeError::TooLarge { .. })
    ));
    // Frames over MAX_FRAME_SIZE.
    let mut f = BytesMut::new();
    put_varint(&mut f, "len", MAX_FRAME_SIZE + 1).unwrap();
    assert!(matches!(
        FrameHeader::decode(Version::Lite04, &mut f.freeze()),
        Err(e @ DecodeError::TooLarge { .. }) if e.code() == ErrorCode::FrameTooLarge
    ));
    // 33 hops.
    let mut a = BytesMut::new();
    let hops = vec![1u64; MAX_HOPS + 1];
    assert!(
        Announce {
            status: AnnounceStatus::Active,
            suffix: "x".into(),
            hops: hops.clone()
        }
        .encode(v, &mut a)
        .is_err()
    );
    let mut body = vec![1u8, 1, b'x', 33];
    body.extend(std::iter::repeat_n(1u8, 33));
    let mut msg = vec![body.len() as u8];
    msg.extend(body);
    assert!(matches!(
        Announce::decode(v, &mut Bytes::from(msg)),
        Err(DecodeError::TooLarge { .. })
    ));
    // 33 path segments, both ways.
    let deep = vec!["a"; 33].join("/");
    assert!(
        AnnounceRequest {
            prefix: deep.clone(),
            exclude_hop: 0
        }
        .encode(v, &mut BytesMut::new())
        .is_err()
    );
    let mut body = BytesMut::new();
    put_varint(&mut body, "len", deep.len() as u64).unwrap();
    body.extend_from_slice(deep.as_bytes());
    body.extend_from_slice(&[0]);
    let mut raw = BytesMut::new();
    put_varint(&mut raw, "len", body.len() as u64).unwrap();
    raw.extend_from_slice(&body);
    assert!(matches!(
        AnnounceRequest::decode(v, &mut raw.freeze()),
        Err(DecodeError::TooLarge { .. })
    ));
    // Oversized datagram, and 65 SETUP parameters.
    assert!(Datagram::decode(v, Bytes::from(vec![0u8; 1201])).is_err());
    let mut setup = vec![65u8];
    for i in 0..65u8 {
        setup.extend([0x30 + (i % 8), 0]);
    }
    let mut msg = BytesMut::new();
    put_varint(&mut msg, "len", setup.len() as u64).unwrap();
    msg.extend_from_slice(&setup);
    assert!(matches!(
        Setup::decode(v, &mut msg.freeze()),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn invalid_fields_are_rejected() {
    let v = Version::Lite05;
    // Invalid UTF-8 in a path; duplicate SETUP parameter; TRACK_INFO timescale 0; status 2 on 04;
    // a group stream cut mid-frame.
    assert_eq!(
        AnnounceRequest::decode(v, &mut Bytes::from_static(&[3, 1, 0xff, 0])),
        Err(DecodeError::Utf8("prefix"))
    );
    assert_eq!(
        Setup::decode(v, &mut Bytes::from_static(&[7, 2, 1, 1, 1, 1, 1, 1])),
        Err(DecodeError::DuplicateParameter(1))
    );
    assert!(TrackInfo::decode(v, &mut Bytes::from_static(&[4, 0, 0, 0, 0])).is_err());
    assert!(Announce::decode(Version::Lite04, &mut Bytes::from_static(&[3, 2, 0, 0])).is_err());
    assert!(
        SubscribeResponse::decode(Version::Lite04, &mut Bytes::from_static(&[2, 1, 0])).is_err()
    );
    assert!(TrackRequest::decode(Version::Lite04, &mut Bytes::from_static(&[2, 0, 0])).is_err());
    let mut g = GroupReader::new(Version::Lite04);
    g.push(Bytes::from_static(&[2, 0, 7, 5, b'a', b'b']));
    assert!(matches!(g.next(), Ok(Some(GroupItem::Header(_)))));
    assert_eq!(g.next(), Ok(None));
    assert_eq!(g.finish(), Err(DecodeError::Short));
    // A GROUP header that declares a long body.
    let mut g = GroupReader::new(v);
    g.push(Bytes::from_static(&[40, 0, 0]));
    assert!(g.next().is_err());
}
