//! Every *(encoder)* / *(assembled)* byte string of spec/moq-lite.md section 12 (moq-lite-06,
//! as moq-net 0.3.18 writes it): each decodes to the stated message and re-encodes to the
//! same bytes, and the 05 form of the same value is checked next to it where the spec gives
//! both.

use bytes::{Bytes, BytesMut};
use proto::reader::{GroupItem, GroupReader, MessageReader};
use proto::*;

const V5: Version = Version::Lite05;
const V6: Version = Version::Lite06;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn roundtrip<M: Message + PartialEq + std::fmt::Debug>(v: Version, bytes: &str, expected: &M) {
    let raw = hex(bytes);
    let mut buf = Bytes::from(raw.clone());
    let got = M::decode(v, &mut buf).unwrap_or_else(|e| panic!("{v}: {bytes}: {e}"));
    assert_eq!(&got, expected, "{v}: decode {bytes}");
    assert!(buf.is_empty(), "{v}: {bytes} left bytes");
    let mut out = BytesMut::new();
    expected.encode(v, &mut out).unwrap();
    assert_eq!(out.to_vec(), raw, "{v}: encode {expected:?}");
}

fn decode_err<M: Message + std::fmt::Debug>(v: Version, bytes: &str) {
    let r = M::decode(v, &mut Bytes::from(hex(bytes)));
    assert!(r.is_err(), "{v}: {bytes} decoded as {r:?}");
}

#[test]
fn identifier_is_moq_lite_06_and_preferred() {
    assert_eq!(V6.alpn(), "moq-lite-06");
    assert_eq!(V6.webtransport_protocol(), "moq-lite-06");
    assert_eq!(Version::ALL[0], V6);
    assert_eq!(Version::from_alpn("moq-lite-06-wip"), None);
    assert_eq!(Version::from_alpn("moq-lite-07-wip"), None);
    // The published client's default list, newest first (12.1).
    let offer = [
        "moq-lite-06",
        "moq-lite-05",
        "moq-lite-04",
        "moq-lite-03",
        "moql",
    ];
    assert_eq!(Version::choose(offer), Some(V6));
}

#[test]
fn messages_unchanged_from_05_12_2() {
    for v in [V5, V6] {
        roundtrip(v, "01 00", &Setup::default());
        roundtrip(
            v,
            "02 09 01",
            &AnnounceOk {
                hop_id: 9,
                active_count: 1,
            },
        );
        roundtrip(
            v,
            "11 0a 72 6f 6f 6d 2f 61 6c 69 63 65 05 76 69 64 65 6f",
            &TrackRequest {
                broadcast: "room/alice".into(),
                track: "video".into(),
            },
        );
        roundtrip(v, "00 01 2a", &SubscribeResponse::Start { group: 42 });
        roundtrip(v, "01 01 2b", &SubscribeResponse::End { group: 43 });
        roundtrip(
            v,
            "02 03 01 03 00",
            &SubscribeResponse::Drop(SubscribeDrop {
                start: 1,
                end: 3,
                error_code: 0,
            }),
        );
        roundtrip(
            v,
            "05 80 0f 42 40 28",
            &Probe {
                bitrate: 1_000_000,
                rtt_ms: 40,
            },
        );
        roundtrip(v, "01 00", &GoAway { uri: String::new() });
        let d = Datagram::decode(v, Bytes::from(hex("01 02 03 68 69"))).unwrap();
        assert_eq!((d.subscribe_id, d.group, d.timestamp), (1, 2, 3));
    }
}

#[test]
fn setup_parameters_12_4() {
    let one = |s: Setup, bytes: &str| roundtrip(V6, bytes, &s);
    one(
        Setup {
            probe: Some(1),
            ..Setup::default()
        },
        "04 01 01 01 01",
    );
    one(
        Setup {
            cost: Some(100),
            ..Setup::default()
        },
        "05 01 04 02 40 64",
    );
    one(
        Setup {
            cost: Some(0),
            ..Setup::default()
        },
        "04 01 04 01 00",
    );
    one(
        Setup {
            origin: Some(42),
            ..Setup::default()
        },
        "04 01 05 01 2a",
    );
    one(
        Setup {
            role: Some(2),
            ..Setup::default()
        },
        "04 01 03 01 02",
    );
    one(
        Setup {
            path: Some("/anon?jwt=x".into()),
            ..Setup::default()
        },
        "0e 01 02 0b 2f 61 6e 6f 6e 3f 6a 77 74 3d 78",
    );
}

#[test]
fn announce_request_has_no_exclude_hop_on_06() {
    let req = |exclude_hop| AnnounceRequest {
        prefix: "room".into(),
        exclude_hop,
    };
    roundtrip(V5, "06 04 72 6f 6f 6d 2a", &req(42));
    roundtrip(V6, "05 04 72 6f 6f 6d", &req(0));
    // The 05 form has a byte too many on 06.
    decode_err::<AnnounceRequest>(V6, "06 04 72 6f 6f 6d 2a");
}

#[test]
fn typed_announcements_12_5() {
    let start = |hops: Vec<u64>, warm, cold| Announce06::Start {
        suffix: "alice".into(),
        hops,
        cost: RouteCost { warm, cold },
    };
    roundtrip(
        V6,
        "00 0a 05 61 6c 69 63 65 01 07 00 00",
        &start(vec![7], 0, 0),
    );
    roundtrip(
        V6,
        "00 0a 05 61 6c 69 63 65 01 07 03 05",
        &start(vec![7], 3, 5),
    );
    roundtrip(
        V6,
        "00 04 00 00 00 00",
        &Announce06::Start {
            suffix: String::new(),
            hops: vec![],
            cost: RouteCost::default(),
        },
    );
    roundtrip(V6, "01 01 00", &Announce06::End { id: 0 });
    roundtrip(V6, "01 02 41 2c", &Announce06::End { id: 300 });
    roundtrip(
        V6,
        "02 06 00 02 07 08 01 01",
        &Announce06::Restart {
            id: 0,
            hops: vec![7, 8],
            cost: RouteCost { warm: 1, cold: 1 },
        },
    );
    // The same broadcast on 05 has a status byte and no costs.
    roundtrip(
        V5,
        "09 01 05 61 6c 69 63 65 01 07",
        &Announce {
            status: AnnounceStatus::Active,
            suffix: "alice".into(),
            hops: vec![7],
        },
    );
    // 06 refuses the status-byte form, even "ended".
    let ended = Announce {
        status: AnnounceStatus::Ended,
        suffix: "alice".into(),
        hops: vec![],
    };
    assert!(ended.encode(V6, &mut BytesMut::new()).is_err());
    // Unknown types are skipped by their length; a repeated non-zero hop does not decode.
    roundtrip_unknown("09 02 aa bb", 9);
    decode_err::<Announce06>(V6, "00 0b 05 61 6c 69 63 65 02 07 07 00 00");
    assert!(
        Announce06::decode(
            V6,
            &mut Bytes::from(hex("00 0b 05 61 6c 69 63 65 02 00 00 00 00"))
        )
        .is_ok()
    );
}

fn roundtrip_unknown(bytes: &str, typ: u64) {
    let mut b = Bytes::from(hex(bytes));
    assert_eq!(
        Announce06::decode(V6, &mut b).unwrap(),
        Announce06::Unknown { typ }
    );
    assert!(b.is_empty());
}

#[test]
fn announce_exchange_10_3_on_06() {
    let mut sub = MessageReader::new();
    sub.push(&hex("01 05 04 72 6f 6f 6d"));
    assert_eq!(sub.read_varint().unwrap(), Some(BidiType::Announce.id()));
    assert_eq!(
        sub.read::<AnnounceRequest>(V6).unwrap().unwrap().prefix,
        "room"
    );
    let mut publ = MessageReader::new();
    publ.push(&hex(
        "02 09 01 00 0a 05 61 6c 69 63 65 01 07 00 00 02 06 00 02 07 08 01 01 01 01 00",
    ));
    let ok = publ.read::<AnnounceOk>(V6).unwrap().unwrap();
    assert_eq!((ok.hop_id, ok.active_count), (9, 1));
    let Some(Announce06::Start { suffix, hops, .. }) = publ.read(V6).unwrap() else {
        panic!()
    };
    assert_eq!(path::join("room", &suffix), "room/alice");
    assert_eq!([hops, vec![ok.hop_id]].concat(), vec![7, 9]);
    let Some(Announce06::Restart { id: 0, hops, cost }) = publ.read(V6).unwrap() else {
        panic!()
    };
    assert_eq!(
        ([hops, vec![ok.hop_id]].concat(), cost.warm),
        (vec![7, 8, 9], 1)
    );
    assert_eq!(publ.read(V6).unwrap(), Some(Announce06::End { id: 0 }));
    assert_eq!(publ.buffered(), 0);
}

fn subscribe(id: u64) -> Subscribe {
    Subscribe {
        id,
        broadcast: "room/alice".into(),
        track: "video".into(),
        priority: 2,
        ordered: false,
        max_latency_ms: 500,
        start: None,
        end: None,
        frame_start: 0,
        frame_end: None,
    }
}

const NAMES: &str = "0a 72 6f 6f 6d 2f 61 6c 69 63 65 05 76 69 64 65 6f";

#[test]
fn subscribe_12_7() {
    roundtrip(
        V5,
        &format!("18 00 {NAMES} 02 00 41 f4 00 00"),
        &subscribe(0),
    );
    roundtrip(
        V6,
        &format!("19 00 {NAMES} 02 41 f4 00 00 00 00"),
        &subscribe(0),
    );
    // An explicit start at group 0 is "no floor" on 06 (the same bytes).
    let zero = Subscribe {
        start: Some(0),
        ..subscribe(0)
    };
    roundtrip(V5, &format!("18 00 {NAMES} 02 00 41 f4 01 00"), &zero);
    let mut out = BytesMut::new();
    zero.encode(V6, &mut out).unwrap();
    assert_eq!(
        out.to_vec(),
        hex(&format!("19 00 {NAMES} 02 41 f4 00 00 00 00"))
    );
    // ID 300, groups 5..=9.
    let ranged = Subscribe {
        start: Some(5),
        end: Some(9),
        ..subscribe(300)
    };
    roundtrip(V5, &format!("19 41 2c {NAMES} 02 00 41 f4 06 0a"), &ranged);
    roundtrip(
        V6,
        &format!("1a 41 2c {NAMES} 02 41 f4 05 0a 00 00"),
        &ranged,
    );
    // Frame 3 of group 5 through frame 7 of group 9: 06 only.
    let framed = Subscribe {
        frame_start: 3,
        frame_end: Some(7),
        ..ranged.clone()
    };
    roundtrip(
        V6,
        &format!("1a 41 2c {NAMES} 02 41 f4 05 0a 03 08"),
        &framed,
    );
    assert!(framed.encode(V5, &mut BytesMut::new()).is_err());
    // A frame end without a group end is malformed.
    decode_err::<Subscribe>(V6, &format!("1a 00 {NAMES} 02 41 f4 00 00 00 08"));
}

#[test]
fn subscribe_update_12_7() {
    let upd = |start, end| SubscribeUpdate {
        priority: 7,
        ordered: false,
        max_latency_ms: 1000,
        start,
        end,
        frame_start: 0,
        frame_end: None,
    };
    roundtrip(V5, "06 07 00 43 e8 00 00", &upd(None, None));
    roundtrip(V6, "07 07 43 e8 00 00 00 00", &upd(None, None));
    roundtrip(V5, "06 07 00 43 e8 05 0a", &upd(Some(4), Some(9)));
    roundtrip(V6, "07 07 43 e8 04 0a 00 00", &upd(Some(4), Some(9)));
}

#[test]
fn track_info_12_8() {
    let info = |priority| TrackInfo {
        priority,
        ordered: false,
        max_latency_ms: 5000,
        timescale: 1000,
    };
    roundtrip(V5, "06 02 00 53 88 43 e8", &info(2));
    roundtrip(V6, "05 02 53 88 43 e8", &info(2));
    roundtrip(V5, "06 7f 00 53 88 43 e8", &info(127));
    roundtrip(V6, "05 7f 53 88 43 e8", &info(127));
}

#[test]
fn fetch_12_9() {
    let fetch = |frame_start, frame_end| Fetch {
        broadcast: "room/alice".into(),
        track: "video".into(),
        priority: 2,
        group: 7,
        frame_start,
        frame_end,
    };
    roundtrip(V5, &format!("13 {NAMES} 02 07"), &fetch(0, None));
    roundtrip(V6, &format!("15 {NAMES} 02 07 00 00"), &fetch(0, None));
    roundtrip(V6, &format!("15 {NAMES} 02 07 02 07"), &fetch(2, Some(6)));
    // A range that ends before it starts.
    decode_err::<Fetch>(V6, &format!("15 {NAMES} 02 07 05 03"));
}

#[test]
fn group_stream_12_10() {
    let header = |frame_start| GroupHeader {
        subscribe_id: 0,
        sequence: 7,
        frame_start,
    };
    roundtrip(V5, "02 00 07", &header(0));
    roundtrip(V6, "03 00 07 00", &header(0));
    roundtrip(V6, "03 00 07 04", &header(4));
    assert!(header(4).encode(V5, &mut BytesMut::new()).is_err());
    // The 10.2 stream on 06 (assembled), read at every chunking.
    let raw = hex("00 03 00 07 00 47 d0 03 61 62 63 40 42 02 64 65");
    for chunk in [1, 2, 3, 100] {
        let mut g = GroupReader::new(V6);
        let mut items = Vec::new();
        for c in raw[1..].chunks(chunk) {
            g.push(Bytes::copy_from_slice(c));
            while let Some(i) = g.next().unwrap() {
                items.push(i);
            }
        }
        g.finish().unwrap();
        assert_eq!(
            items,
            vec![
                GroupItem::Header(header(0)),
                GroupItem::Frame {
                    timestamp_delta: 1000,
                    payload: Bytes::from_static(b"abc")
                },
                GroupItem::Frame {
                    timestamp_delta: 33,
                    payload: Bytes::from_static(b"de")
                },
            ],
            "chunk {chunk}"
        );
    }
}

#[test]
fn error_codes_use_the_moq_net_registries_on_06_12_11() {
    // (code, stream code on 06, session code on 06, stream / session code on 05)
    let table = [
        (ErrorCode::Cancel, 0x1, 0x0, 1, 0),
        (ErrorCode::Timeout, 0x2, 0x11, 3, 3),
        (ErrorCode::Lagged, 0x5, 0x1, 26, 26),
        (ErrorCode::Decode, 0x12, 0x3, 5, 5),
        (ErrorCode::ProtocolViolation, 0x3, 0x3, 15, 15),
        (ErrorCode::Unauthorized, 0x3, 0x2, 6, 6),
        (ErrorCode::NotFound, 0x33, 0x1, 13, 13),
        (ErrorCode::Old, 0x34, 0x1, 2, 2),
        (ErrorCode::Evicted, 0x35, 0x1, 31, 31),
        (ErrorCode::Unroutable, 0x36, 0x1, 30, 30),
        (ErrorCode::WrongSize, 0x37, 0x3, 14, 14),
        (ErrorCode::FrameTooLarge, 0x38, 0x1, 27, 27),
        (ErrorCode::TimestampMismatch, 0x39, 0x1, 29, 29),
        (ErrorCode::Version, 0x3, 0x15, 9, 9),
        (ErrorCode::App(403), 467, 467, 467, 467),
    ];
    for (code, s6, c6, s5, c5) in table {
        assert_eq!(code.stream_code(V6), s6, "{code:?} stream on 06");
        assert_eq!(code.session_code(V6), c6, "{code:?} session on 06");
        assert_eq!(code.stream_code(V5), s5, "{code:?} stream on 05");
        assert_eq!(code.session_code(V5), c5, "{code:?} session on 05");
    }
    // What a moq-net peer sends reads back as the condition it names.
    for (wire, code) in [
        (0x0, ErrorCode::Cancel),
        (0x1, ErrorCode::Cancel),
        (0x5, ErrorCode::Lagged),
        (0x12, ErrorCode::Decode),
        (0x33, ErrorCode::NotFound),
        (0x34, ErrorCode::Old),
        (0x36, ErrorCode::Unroutable),
        (0x20, ErrorCode::Unknown(0x20)),
    ] {
        assert_eq!(
            ErrorCode::from_stream_code(wire, V6),
            code,
            "stream {wire:#x}"
        );
    }
    for (wire, code) in [
        (0x0, ErrorCode::Cancel),
        (0x2, ErrorCode::Unauthorized),
        (0x3, ErrorCode::ProtocolViolation),
        (0x15, ErrorCode::Version),
        (64 + 401, ErrorCode::App(401)),
    ] {
        assert_eq!(
            ErrorCode::from_session_code(wire, V6),
            code,
            "session {wire:#x}"
        );
    }
    assert_eq!(
        ErrorCode::from_session_code(15, V5),
        ErrorCode::ProtocolViolation
    );
}
