//! Every worked byte example of spec/moq-lite.md (and the h3 code table of
//! spec/webtransport.md 7.1): each decodes to the stated message and re-encodes to the same
//! bytes.

use bytes::{Bytes, BytesMut};
use proto::reader::{GroupItem, GroupReader, MessageReader};
use proto::*;

/// The versions of sections 4-11; 06 (section 12) has its own tests in `vectors_06.rs`.
const ALL: [Version; 3] = [Version::Lite03, Version::Lite04, Version::Lite05];

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// Decodes `bytes` as `M` on `v`, checks it equals `expected` and consumed everything, and
/// checks that re-encoding gives the same bytes.
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

#[test]
fn varint_table_encodes_shortest_and_decodes() {
    let table: [(u64, &str); 11] = [
        (0, "00"),
        (37, "25"),
        (63, "3f"),
        (64, "40 40"),
        (300, "41 2c"),
        (500, "41 f4"),
        (15293, "7b bd"),
        (16384, "80 00 40 00"),
        (1_000_000, "80 0f 42 40"),
        (494_878_333, "9d 7f 3e 7d"),
        (1 << 30, "c0 00 00 00 40 00 00 00"),
    ];
    for (v, b) in table {
        let mut out = BytesMut::new();
        coding::put_varint(&mut out, "x", v).unwrap();
        assert_eq!(out.to_vec(), hex(b));
        assert_eq!(coding::get_varint(&mut Bytes::from(hex(b))).unwrap(), v);
    }
    // Non-minimal forms decode; values ≥ 2^62 do not encode.
    assert_eq!(
        coding::get_varint(&mut Bytes::from(hex("40 25"))).unwrap(),
        37
    );
    assert!(coding::put_varint(&mut BytesMut::new(), "x", 1 << 62).is_err());
}

#[test]
fn zigzag_examples_match_spec() {
    for (s, u) in [
        (0i64, 0u64),
        (-1, 1),
        (1, 2),
        (-2, 3),
        (33, 66),
        (-33, 65),
        (1000, 2000),
    ] {
        assert_eq!(coding::zigzag(s), u);
        assert_eq!(coding::unzigzag(u), s);
    }
}

#[test]
fn setup_examples() {
    let v = Version::Lite05;
    roundtrip(v, "01 00", &Setup::default());
    roundtrip(
        v,
        "04 01 01 01 01",
        &Setup {
            probe: Some(1),
            ..Setup::default()
        },
    );
    roundtrip(
        v,
        "11 02 01 01 01 02 0b 2f 61 6e 6f 6e 3f 6a 77 74 3d 78",
        &Setup {
            probe: Some(1),
            path: Some("/anon?jwt=x".into()),
            ..Setup::default()
        },
    );
    // Parameter order may vary on the wire.
    let mut swapped = Bytes::from(hex("11 02 02 0b 2f 61 6e 6f 6e 3f 6a 77 74 3d 78 01 01 01"));
    let s = Setup::decode(v, &mut swapped).unwrap();
    assert_eq!(s.path.as_deref(), Some("/anon?jwt=x"));
    assert_eq!(s.probe, Some(1));
}

#[test]
fn announce_request_examples() {
    roundtrip(
        Version::Lite03,
        "05 04 72 6f 6f 6d",
        &AnnounceRequest {
            prefix: "room".into(),
            exclude_hop: 0,
        },
    );
    for v in [Version::Lite04, Version::Lite05] {
        roundtrip(
            v,
            "06 04 72 6f 6f 6d 2a",
            &AnnounceRequest {
                prefix: "room".into(),
                exclude_hop: 42,
            },
        );
    }
}

#[test]
fn announce_ok_example() {
    roundtrip(
        Version::Lite05,
        "02 09 01",
        &AnnounceOk {
            hop_id: 9,
            active_count: 1,
        },
    );
}

#[test]
fn announce_examples_per_version() {
    let active = |hops: Vec<u64>| Announce {
        status: AnnounceStatus::Active,
        suffix: "alice".into(),
        hops,
    };
    let ended = Announce {
        status: AnnounceStatus::Ended,
        suffix: "alice".into(),
        hops: vec![],
    };
    // 03 carries the count only: the one hop decodes as unknown (0).
    roundtrip(
        Version::Lite03,
        "08 01 05 61 6c 69 63 65 01",
        &active(vec![0]),
    );
    roundtrip(
        Version::Lite04,
        "09 01 05 61 6c 69 63 65 01 07",
        &active(vec![7]),
    );
    roundtrip(
        Version::Lite05,
        "09 01 05 61 6c 69 63 65 01 07",
        &active(vec![7]),
    );
    for v in ALL {
        roundtrip(v, "08 00 05 61 6c 69 63 65 00", &ended);
    }
}

fn subscribe_10_1() -> Subscribe {
    Subscribe {
        id: 0,
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

#[test]
fn subscribe_worked_example_is_identical_on_every_version() {
    for v in ALL {
        roundtrip(
            v,
            "18 00 0a 72 6f 6f 6d 2f 61 6c 69 63 65 05 76 69 64 65 6f 02 00 41 f4 00 00",
            &subscribe_10_1(),
        );
        roundtrip(
            v,
            "19 41 2c 0a 72 6f 6f 6d 2f 61 6c 69 63 65 05 76 69 64 65 6f 02 00 41 f4 06 0a",
            &Subscribe {
                id: 300,
                start: Some(5),
                end: Some(9),
                ..subscribe_10_1()
            },
        );
    }
}

#[test]
fn subscribe_stream_with_type_byte_reads_incrementally() {
    let raw = hex("02 18 00 0a 72 6f 6f 6d 2f 61 6c 69 63 65 05 76 69 64 65 6f 02 00 41 f4 00 00");
    let mut r = MessageReader::new();
    for b in &raw[..raw.len() - 1] {
        r.push(std::slice::from_ref(b));
    }
    assert_eq!(r.read_varint().unwrap(), Some(2));
    assert_eq!(r.read::<Subscribe>(Version::Lite05).unwrap(), None);
    r.push(&raw[raw.len() - 1..]);
    assert_eq!(
        r.read::<Subscribe>(Version::Lite05).unwrap(),
        Some(subscribe_10_1())
    );
}

#[test]
fn subscribe_update_example() {
    for v in ALL {
        roundtrip(
            v,
            "06 07 01 43 e8 01 00",
            &SubscribeUpdate {
                priority: 7,
                ordered: true,
                max_latency_ms: 1000,
                start: Some(0),
                end: None,
                frame_start: 0,
                frame_end: None,
            },
        );
    }
}

#[test]
fn subscribe_responses_per_version() {
    for v in [Version::Lite03, Version::Lite04] {
        roundtrip(
            v,
            "00 05 02 00 00 00 00",
            &SubscribeResponse::Ok(SubscribeOk {
                priority: 2,
                ordered: false,
                max_latency_ms: 0,
                start: None,
                end: None,
            }),
        );
        roundtrip(
            v,
            "01 03 01 03 00",
            &SubscribeResponse::Drop(SubscribeDrop {
                start: 1,
                end: 3,
                error_code: 0,
            }),
        );
    }
    let v = Version::Lite05;
    roundtrip(v, "00 01 2a", &SubscribeResponse::Start { group: 42 });
    roundtrip(v, "01 01 2b", &SubscribeResponse::End { group: 43 });
    roundtrip(v, "00 01 07", &SubscribeResponse::Start { group: 7 });
    roundtrip(v, "01 01 0a", &SubscribeResponse::End { group: 10 });
    roundtrip(
        v,
        "02 03 01 03 00",
        &SubscribeResponse::Drop(SubscribeDrop {
            start: 1,
            end: 3,
            error_code: 0,
        }),
    );
}

#[test]
fn track_and_track_info_examples() {
    let v = Version::Lite05;
    roundtrip(
        v,
        "11 0a 72 6f 6f 6d 2f 61 6c 69 63 65 05 76 69 64 65 6f",
        &TrackRequest {
            broadcast: "room/alice".into(),
            track: "video".into(),
        },
    );
    roundtrip(v, "06 00 00 53 88 43 e8", &TrackInfo::DEFAULT);
    roundtrip(
        v,
        "06 02 00 53 88 43 e8",
        &TrackInfo {
            priority: 2,
            ..TrackInfo::DEFAULT
        },
    );
}

#[test]
fn fetch_example() {
    roundtrip(
        Version::Lite05,
        "13 0a 72 6f 6f 6d 2f 61 6c 69 63 65 05 76 69 64 65 6f 02 07",
        &Fetch {
            broadcast: "room/alice".into(),
            track: "video".into(),
            priority: 2,
            group: 7,
            frame_start: 0,
            frame_end: None,
        },
    );
}

#[test]
fn probe_and_goaway_examples() {
    roundtrip(
        Version::Lite03,
        "04 80 0f 42 40",
        &Probe {
            bitrate: 1_000_000,
            rtt_ms: 0,
        },
    );
    for v in [Version::Lite04, Version::Lite05] {
        roundtrip(
            v,
            "05 80 0f 42 40 28",
            &Probe {
                bitrate: 1_000_000,
                rtt_ms: 40,
            },
        );
        roundtrip(v, "01 00", &GoAway { uri: String::new() });
    }
}

#[test]
fn datagram_example() {
    let d = Datagram::decode(Version::Lite05, Bytes::from(hex("01 02 03 68 69"))).unwrap();
    assert_eq!(
        d,
        Datagram {
            subscribe_id: 1,
            group: 2,
            timestamp: 3,
            payload: Bytes::from_static(b"hi")
        }
    );
    let mut out = BytesMut::new();
    d.encode(Version::Lite05, &mut out).unwrap();
    assert_eq!(out.to_vec(), hex("01 02 03 68 69"));
}

/// Encodes a group stream the way the session does: type, header, frame headers + payloads.
fn encode_group(v: Version, frames: &[(i64, &[u8])]) -> Vec<u8> {
    let mut out = BytesMut::new();
    coding::put_varint(&mut out, "type", UniType::Group.id()).unwrap();
    GroupHeader {
        subscribe_id: 0,
        sequence: 7,
        frame_start: 0,
    }
    .encode(v, &mut out)
    .unwrap();
    for (delta, p) in frames {
        FrameHeader {
            timestamp_delta: *delta,
            size: p.len() as u64,
        }
        .encode(v, &mut out)
        .unwrap();
        out.extend_from_slice(p);
    }
    out.to_vec()
}

fn decode_group(v: Version, raw: &[u8], chunk: usize) -> Vec<GroupItem> {
    let mut t = MessageReader::new();
    t.push(&raw[..1]);
    assert_eq!(t.read_varint().unwrap(), Some(0));
    let mut g = GroupReader::new(v);
    let mut items = Vec::new();
    for c in raw[1..].chunks(chunk) {
        g.push(Bytes::copy_from_slice(c));
        while let Some(item) = g.next().unwrap() {
            items.push(item);
        }
    }
    g.finish().unwrap();
    items
}

#[test]
fn group_stream_worked_example_05_and_03_04() {
    let v5 = "00 02 00 07 47 d0 03 61 62 63 40 42 02 64 65";
    let v34 = "00 02 00 07 03 61 62 63 02 64 65";
    let frames: [(i64, &[u8]); 2] = [(1000, b"abc"), (33, b"de")];
    assert_eq!(encode_group(Version::Lite05, &frames), hex(v5));
    for v in [Version::Lite03, Version::Lite04] {
        assert_eq!(encode_group(v, &frames), hex(v34));
    }
    for (v, raw) in [
        (Version::Lite05, v5),
        (Version::Lite04, v34),
        (Version::Lite03, v34),
    ] {
        for chunk in [1, 2, 3, 100] {
            let items = decode_group(v, &hex(raw), chunk);
            let want_delta = |d: i64| if v == Version::Lite05 { d } else { 0 };
            assert_eq!(
                items,
                vec![
                    GroupItem::Header(GroupHeader {
                        subscribe_id: 0,
                        sequence: 7,
                        frame_start: 0,
                    }),
                    GroupItem::Frame {
                        timestamp_delta: want_delta(1000),
                        payload: Bytes::from_static(b"abc")
                    },
                    GroupItem::Frame {
                        timestamp_delta: want_delta(33),
                        payload: Bytes::from_static(b"de")
                    },
                ],
                "{v} chunk {chunk}"
            );
        }
    }
}

#[test]
fn announce_exchange_10_3() {
    let v = Version::Lite05;
    let mut sub = MessageReader::new();
    sub.push(&hex("01 06 04 72 6f 6f 6d 2a"));
    assert_eq!(sub.read_varint().unwrap(), Some(BidiType::Announce.id()));
    assert_eq!(
        sub.read::<AnnounceRequest>(v).unwrap(),
        Some(AnnounceRequest {
            prefix: "room".into(),
            exclude_hop: 42
        })
    );
    let mut publ = MessageReader::new();
    publ.push(&hex(
        "02 09 01 09 01 05 61 6c 69 63 65 01 07 08 00 05 61 6c 69 63 65 00",
    ));
    let ok = publ.read::<AnnounceOk>(v).unwrap().unwrap();
    assert_eq!(
        ok,
        AnnounceOk {
            hop_id: 9,
            active_count: 1
        }
    );
    let a = publ.read::<Announce>(v).unwrap().unwrap();
    let mut chain = a.hops.clone();
    chain.push(ok.hop_id);
    assert_eq!(chain, vec![7, 9]);
    assert_eq!(path::join("room", &a.suffix), "room/alice");
    assert_eq!(
        publ.read::<Announce>(v).unwrap().unwrap().status,
        AnnounceStatus::Ended
    );
    assert_eq!(publ.buffered(), 0);
}

#[test]
fn h3_code_table_from_webtransport_spec() {
    let table: [(u32, u64); 10] = [
        (0, 0x52e4a40fa8db),
        (1, 0x52e4a40fa8dc),
        (2, 0x52e4a40fa8dd),
        (6, 0x52e4a40fa8e1),
        (13, 0x52e4a40fa8e8),
        (29, 0x52e4a40fa8f8),
        (30, 0x52e4a40fa8fa),
        (31, 0x52e4a40fa8fb),
        (64, 0x52e4a40fa91d),
        (468, 0x52e4a40faabe),
    ];
    for (n, h) in table {
        assert_eq!(to_h3_code(n), h);
        assert_eq!(from_h3_code(h), Some(n));
    }
    // The skipped GREASE codepoint and values outside the range are not WebTransport codes.
    assert_eq!(from_h3_code(0x52e4a40fa8f9), None);
    assert_eq!(from_h3_code(7), None);
    assert_eq!(from_h3_code(0x52e5ac983162), Some(u32::MAX));
    // Reset with Old (2) appears as 0x52e4a40fa8dd on the wire; literal codes are accepted.
    assert_eq!(
        stream_code_to_wire(ErrorCode::Old, Version::Lite05),
        0x52e4a40fa8dd
    );
    assert_eq!(
        stream_code_from_wire(0x52e4a40fa8dd, Version::Lite05),
        ErrorCode::Old
    );
    assert_eq!(
        stream_code_from_wire(13, Version::Lite04),
        ErrorCode::NotFound
    );
    assert_eq!(
        stream_code_from_wire(0x52e4a40fa8db, Version::Lite05),
        ErrorCode::Cancel
    );
    assert_eq!(
        stream_code_from_wire(0x52e4a40fa8dc, Version::Lite05),
        ErrorCode::Cancel
    );
    assert_eq!(ErrorCode::from_number(468), ErrorCode::App(404));
}

#[test]
fn versions_map_to_alpn_and_webtransport_strings() {
    for v in ALL {
        assert_eq!(Version::from_alpn(v.alpn()), Some(v));
        assert_eq!(
            Version::from_webtransport_protocol(v.webtransport_protocol()),
            Some(v)
        );
    }
    assert_eq!(Version::from_alpn("moq-lite-06"), Some(Version::Lite06));
    assert_eq!(Version::from_alpn("moq-lite-06-wip"), None);
    assert_eq!(Version::from_alpn("moql"), None);
    let offer = [
        "moq-lite-06",
        "moq-lite-05",
        "moq-lite-04",
        "moq-lite-03",
        "moql",
    ];
    assert_eq!(Version::choose(offer), Some(Version::Lite06));
    assert_eq!(
        Version::choose(["moq-lite-06-wip", "moq-lite-03"]),
        Some(Version::Lite03)
    );
}

#[test]
fn a_hop_chain_that_repeats_a_non_zero_hop_does_not_decode() {
    // moq-net 0.3.18 rejects it on every version (spec 12.12); hop 0 may repeat.
    for v in [Version::Lite04, Version::Lite05] {
        let looped = Announce::decode(v, &mut Bytes::from(hex("0a 01 05 61 6c 69 63 65 02 07 07")));
        assert!(looped.is_err(), "{v}: {looped:?}");
        roundtrip(
            v,
            "0a 01 05 61 6c 69 63 65 02 00 00",
            &Announce {
                status: AnnounceStatus::Active,
                suffix: "alice".into(),
                hops: vec![0, 0],
            },
        );
    }
}
