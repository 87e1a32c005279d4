//! A relay-side session fed an arbitrary sequence of transport events (streams opened,
//! data, FIN, reset, STOP_SENDING), with an application that answers every request. The
//! session must never panic and must keep its bounds.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use proto::session::*;
use proto::session::SessionEvent as Event;
use proto::{ErrorCode, SubscribeUpdate, TrackInfo, Version};

fuzz_target!(|data: &[u8]| {
    let Some((&head, mut rest)) = data.split_first() else {
        return;
    };
    let v = Version::ALL[head as usize % Version::ALL.len()];
    let mut s = Session::new(Config {
        version: v,
        perspective: if head & 0x80 != 0 {
            Perspective::Client
        } else {
            Perspective::Server
        },
        hop_id: 9,
        setup_path: None,
        setup_role: None,
    });
    let _ = s.announce("room/alice", &[3]);
    let _ = s.announce_interest("room");
    let _ = s.subscribe("room/alice", "video", SubscribeUpdate::latest(1));
    let _ = s.fetch("room/alice", "video", 1, 3);
    let _ = s.request_track("room/alice", "video");
    let mut next_local = 1 << 40;
    // Each op consumes ≥ 2 bytes, so the input length bounds the loop.
    while rest.len() >= 2 {
        let (op, sid) = (rest[0], StreamId(u64::from(rest[1] % 16)));
        rest = &rest[2..];
        match op % 8 {
            0 => s.on_stream_opened(sid, op & 0x80 != 0),
            1 | 2 => {
                let n = (rest.first().copied().unwrap_or(0) as usize % 48)
                    .min(rest.len().saturating_sub(1));
                let chunk = Bytes::copy_from_slice(rest.get(1..1 + n).unwrap_or(&[]));
                rest = rest.get(1 + n..).unwrap_or(&[]);
                s.on_stream_data(sid, chunk);
            }
            3 => s.on_stream_finished(sid),
            4 => s.on_stream_reset(sid, ErrorCode::from_number(u64::from(op >> 3))),
            5 => s.on_stop_sending(sid, ErrorCode::Cancel),
            6 => {
                let _ = s.announce(if op & 0x80 != 0 { "room/bob" } else { "other" }, &[]);
                let _ = s.unannounce("room/alice");
            }
            _ => s.on_connection_closed(ErrorCode::Transport),
        }
        while let Some(a) = s.poll_action() {
            match a {
                Action::OpenUni { token, .. } | Action::OpenBi { token, .. } => {
                    next_local += 1;
                    if op & 0x40 != 0 {
                        s.on_stream_open_failed(token);
                    } else {
                        s.on_stream_bound(token, StreamId(next_local));
                    }
                }
                _ => {}
            }
        }
        while let Some(e) = s.poll_event() {
            match e {
                Event::SubscribeRequested { serve, .. } => {
                    if op & 1 == 0 {
                        let _ = s.reject_subscribe(serve, ErrorCode::NotFound);
                    } else if let Ok(g) = s.start_group(serve, 0) {
                        let _ = s.write_frame(g, 5, Bytes::from_static(b"frame"));
                        let _ = if op & 2 == 0 {
                            s.end_group(g)
                        } else {
                            s.abort_group(g, ErrorCode::Old)
                        };
                        let _ = s.end_subscription(serve, 1);
                    }
                }
                Event::TrackRequested { request, .. } => {
                    let _ = s.answer_track(request, TrackInfo::DEFAULT);
                }
                Event::FetchRequested { request, .. } => {
                    let _ = s.fetch_frame(request, 7, Bytes::from_static(b"cached"));
                    let _ = if op & 4 == 0 {
                        s.end_fetch(request)
                    } else {
                        s.reject_fetch(request, ErrorCode::NotFound)
                    };
                }
                _ => {}
            }
        }
        assert!(s.stream_count() <= MAX_STREAMS);
    }
});
