//! Encode and decode one GROUP of 1 KiB frames. Criterion reports time per group; the
//! throughput line (elements = frames) gives frames/s, i.e. ns per frame = 1e9 / that.
//!
//! `cargo bench -p proto --bench codec`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use proto::reader::{GroupItem, GroupReader};
use proto::session::{Action, Config, Perspective, Session, SessionEvent as Event, StreamId};
use proto::{FrameHeader, GroupHeader, Message, UniType, Version, coding};

/// Frames per group: a 1 s group of 30 fps video with ~1 KiB frames (audio-sized).
const FRAMES: usize = 100;
const FRAME_SIZE: usize = 1024;

fn encode_group(v: Version, payload: &Bytes, out: &mut Vec<Bytes>) {
    let mut hdr = BytesMut::with_capacity(16);
    coding::put_varint(&mut hdr, "type", UniType::Group.id()).unwrap();
    GroupHeader {
        subscribe_id: 3,
        sequence: 42,
        frame_start: 0,
    }
    .encode(v, &mut hdr)
    .unwrap();
    out.push(hdr.freeze());
    for i in 0..FRAMES {
        let mut fh = BytesMut::with_capacity(FrameHeader::MAX_LEN);
        FrameHeader {
            timestamp_delta: if i == 0 { 1_000_000 } else { 33 },
            size: payload.len() as u64,
        }
        .encode(v, &mut fh)
        .unwrap();
        out.push(fh.freeze());
        out.push(payload.clone());
    }
}

fn wire(v: Version, payload: &Bytes) -> Bytes {
    let mut chunks = Vec::new();
    encode_group(v, payload, &mut chunks);
    let mut all = BytesMut::new();
    for c in chunks {
        all.extend_from_slice(&c);
    }
    all.freeze()
}

fn bench(c: &mut Criterion) {
    let payload = Bytes::from(vec![0xabu8; FRAME_SIZE]);
    let mut g = c.benchmark_group("group_1KiB_frames");
    g.throughput(Throughput::Elements(FRAMES as u64));
    for v in [Version::Lite04, Version::Lite05] {
        g.bench_function(format!("encode/{v}"), |b| {
            let mut out = Vec::with_capacity(2 * FRAMES + 1);
            b.iter(|| {
                out.clear();
                encode_group(v, black_box(&payload), &mut out);
                black_box(&out);
            })
        });
        // The session strips the stream-type byte before the GroupReader sees the stream.
        let bytes = wire(v, &payload).slice(1..);
        // 1200-byte chunks model one QUIC packet per read; 64 KiB models a batched read.
        for chunk in [1200usize, 65536] {
            let chunks: Vec<Bytes> = bytes.chunks(chunk).map(|c| bytes.slice_ref(c)).collect();
            g.bench_function(format!("decode/{v}/chunk{chunk}"), |b| {
                b.iter(|| {
                    let mut r = GroupReader::new(v);
                    let mut frames = 0;
                    for c in &chunks {
                        r.push(c.clone());
                        while let Some(item) = r.next().unwrap() {
                            if let GroupItem::Frame { payload, .. } = item {
                                black_box(payload);
                                frames += 1;
                            }
                        }
                    }
                    assert_eq!(frames, FRAMES);
                })
            });
        }
        // The whole session path: one subscriber, start_group + write_frame + end_group,
        // draining the actions as a transport would.
        g.bench_function(format!("session_send/{v}"), |b| {
            let (mut relay, serve) = served_session(v);
            let mut seq = 0;
            b.iter(|| {
                let grp = relay.start_group(serve, seq).unwrap();
                seq += 1;
                drain(&mut relay);
                for i in 0..FRAMES {
                    relay
                        .write_frame(grp, i as u64 * 33, payload.clone())
                        .unwrap();
                    drain(&mut relay);
                }
                relay.end_group(grp).unwrap();
                drain(&mut relay);
            })
        });
    }
    g.finish();
}

fn drain(s: &mut Session) {
    while let Some(a) = s.poll_action() {
        if let Action::OpenUni { token, .. } = a {
            s.on_stream_bound(token, StreamId(1_000_000 + token.0));
        }
        black_box(a);
    }
}

/// A relay session with one accepted subscription from the peer.
fn served_session(v: Version) -> (Session, proto::session::ServeId) {
    let mut relay = Session::new(Config {
        version: v,
        perspective: Perspective::Server,
        hop_id: 9,
        setup_path: None,
        setup_role: None,
    });
    drain(&mut relay);
    let mut buf = BytesMut::new();
    coding::put_varint(&mut buf, "type", 2).unwrap();
    proto::Subscribe {
        id: 0,
        broadcast: "b".into(),
        track: "t".into(),
        priority: 0,
        ordered: false,
        max_latency_ms: 0,
        start: None,
        end: None,
        frame_start: 0,
        frame_end: None,
    }
    .encode(v, &mut buf)
    .unwrap();
    relay.on_stream_opened(StreamId(0), true);
    relay.on_stream_data(StreamId(0), buf.freeze());
    let Some(Event::SubscribeRequested { serve, .. }) = relay.poll_event() else {
        panic!("no subscribe")
    };
    relay.accept_subscribe(serve).unwrap();
    drain(&mut relay);
    (relay, serve)
}

criterion_group!(benches, bench);
criterion_main!(benches);
