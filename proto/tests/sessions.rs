//! In-memory simulations: a relay-side (server) and a client-side session wired together
//! by a fake transport that assigns stream IDs and delivers bytes in chosen chunk sizes.
//! They run announce → subscribe → groups → end on every version, plus late join and a
//! publisher that vanishes mid-group.

use std::collections::HashMap;

use bytes::Bytes;
use proto::session::SessionEvent as Event;
use proto::session::*;
use proto::*;

const RELAY_HOP: u64 = 9;
const CLIENT_HOP: u64 = 77;

struct Net {
    s: [Session; 2],
    next_stream: u64,
    /// Chunk size for delivering writes (exercises partial-message buffering).
    chunk: usize,
    closed: [Option<ErrorCode>; 2],
    /// All bytes written by each side, to check payload sharing.
    writes: [Vec<Bytes>; 2],
    events: [Vec<Event>; 2],
    opened: HashMap<u64, bool>,
}

const RELAY: usize = 0;
const CLIENT: usize = 1;

impl Net {
    fn new(v: Version, chunk: usize) -> Net {
        let relay = Session::new(Config {
            version: v,
            perspective: Perspective::Server,
            hop_id: RELAY_HOP,
            setup_path: None,
            setup_role: None,
        });
        let client = Session::new(Config {
            version: v,
            perspective: Perspective::Client,
            hop_id: CLIENT_HOP,
            setup_path: Some("/anon".into()),
            setup_role: None,
        });
        let mut n = Net {
            s: [relay, client],
            next_stream: 0,
            chunk,
            closed: [None, None],
            writes: [vec![], vec![]],
            events: [vec![], vec![]],
            opened: HashMap::new(),
        };
        n.run();
        n
    }

    /// Delivers actions until both sides are quiet (bounded).
    fn run(&mut self) {
        for _ in 0..100_000 {
            let mut progressed = false;
            for side in [RELAY, CLIENT] {
                let peer = 1 - side;
                while let Some(a) = self.s[side].poll_action() {
                    progressed = true;
                    if std::env::var("NETDBG").is_ok() {
                        eprintln!("{side} {a:?}");
                    }
                    match a {
                        Action::OpenUni { token, .. } | Action::OpenBi { token, .. } => {
                            let bidi = matches!(a, Action::OpenBi { .. });
                            let id = StreamId(self.next_stream);
                            self.next_stream += 1;
                            self.s[side].on_stream_bound(token, id);
                            self.opened.insert(id.0, bidi);
                            self.s[peer].on_stream_opened(id, bidi);
                        }
                        Action::Write { stream, data } => {
                            self.writes[side].push(data.clone());
                            let mut rest = data;
                            while !rest.is_empty() {
                                let c = rest.split_to(self.chunk.min(rest.len()));
                                self.s[peer].on_stream_data(stream, c);
                            }
                        }
                        Action::Finish { stream } => self.s[peer].on_stream_finished(stream),
                        Action::Reset { stream, code } => {
                            self.s[peer].on_stream_reset(stream, code)
                        }
                        Action::StopSending { stream, code } => {
                            self.s[peer].on_stop_sending(stream, code)
                        }
                        Action::SendDatagram { data } => self.s[peer].on_datagram(data),
                        Action::SetPriority { .. } => {}
                        Action::Close { code, .. } => {
                            self.closed[side] = Some(code);
                            self.s[peer].on_connection_closed(code);
                        }
                    }
                }
                while let Some(e) = self.s[side].poll_event() {
                    progressed = true;
                    self.events[side].push(e);
                }
            }
            if !progressed {
                return;
            }
        }
        panic!("simulation did not settle");
    }

    fn take(&mut self, side: usize) -> Vec<Event> {
        std::mem::take(&mut self.events[side])
    }
}

fn versions() -> [Version; 4] {
    [
        Version::Lite03,
        Version::Lite04,
        Version::Lite05,
        Version::Lite06,
    ]
}

fn frames_of(events: &[Event]) -> Vec<(u64, Option<u64>, Bytes)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Frame {
                sequence,
                timestamp,
                payload,
                ..
            } => Some((*sequence, *timestamp, payload.clone())),
            _ => None,
        })
        .collect()
}

/// The expected hop chain a client sees for a broadcast the relay publishes locally.
fn chain_for(v: Version) -> Vec<u64> {
    match v {
        Version::Lite03 => vec![0], // count only: the relay counts itself
        _ => vec![RELAY_HOP],
    }
}

#[test]
fn announce_subscribe_groups_end_on_every_version() {
    for v in versions() {
        for chunk in [1, 3, 1500] {
            let mut n = Net::new(v, chunk);
            if v.is_05_or_later() {
                // Each side receives the other's SETUP; the client's carries path and origin.
                let setup = n.take(RELAY);
                assert!(
                    matches!(&setup[..], [Event::Setup(s)] if s.path.as_deref() == Some("/anon") && s.origin == Some(CLIENT_HOP))
                );
                assert!(
                    matches!(&n.take(CLIENT)[..], [Event::Setup(s)] if s.origin == Some(RELAY_HOP) && s.path.is_none())
                );
            }
            n.s[RELAY].announce("/room/alice/", &[]).unwrap();
            let interest = n.s[CLIENT].announce_interest("room").unwrap();
            n.run();
            assert_eq!(
                n.take(RELAY),
                vec![Event::AnnounceInterest {
                    prefix: "room".into(),
                    exclude_hop: if v == Version::Lite03 || v.is_06_or_later() {
                        0
                    } else {
                        CLIENT_HOP
                    }
                }]
            );
            assert_eq!(
                n.take(CLIENT),
                vec![Event::Announced {
                    interest,
                    path: "room/alice".into(),
                    hops: chain_for(v)
                }],
                "{v} chunk {chunk}"
            );

            if v.is_05_or_later() {
                let req = n.s[CLIENT].request_track("room/alice", "video").unwrap();
                n.run();
                let Event::TrackRequested {
                    request,
                    broadcast,
                    track,
                } = n.take(RELAY).remove(0)
                else {
                    panic!()
                };
                assert_eq!(
                    (broadcast.as_str(), track.as_str()),
                    ("room/alice", "video")
                );
                n.s[RELAY]
                    .answer_track(request, TrackInfo::DEFAULT)
                    .unwrap();
                n.run();
                assert_eq!(
                    n.take(CLIENT),
                    vec![Event::TrackInfo {
                        request: req,
                        info: Ok(TrackInfo::DEFAULT)
                    }]
                );
            }

            let sub = n.s[CLIENT]
                .subscribe("room/alice", "video", SubscribeUpdate::latest(2))
                .unwrap();
            n.run();
            let Event::SubscribeRequested { serve, request } = n.take(RELAY).remove(0) else {
                panic!()
            };
            assert_eq!(
                (
                    request.broadcast.as_str(),
                    request.track.as_str(),
                    request.priority
                ),
                ("room/alice", "video", 2)
            );
            n.s[RELAY].accept_subscribe(serve).unwrap();
            n.run();
            if !v.is_05_or_later() {
                // 03/04: SUBSCRIBE_OK comes first and at once.
                assert!(
                    matches!(&n.take(CLIENT)[..], [Event::SubscribeResponse { response: SubscribeResponse::Ok(ok), .. }] if ok.priority == 2)
                );
            } else {
                assert!(
                    n.take(CLIENT).is_empty(),
                    "05 sends SUBSCRIBE_START with the first group"
                );
            }

            let payloads = [
                Bytes::from_static(b"abc"),
                Bytes::from(vec![7u8; 3000]),
                Bytes::new(),
            ];
            for seq in 0..2u64 {
                let g = n.s[RELAY].start_group(serve, seq).unwrap();
                for (i, p) in payloads.iter().enumerate() {
                    n.s[RELAY]
                        .write_frame(g, 1000 * seq + 33 * i as u64, p.clone())
                        .unwrap();
                }
                n.s[RELAY].end_group(g).unwrap();
            }
            n.s[RELAY].end_subscription(serve, 2).unwrap();
            n.run();
            let ev = n.take(CLIENT);
            let frames = frames_of(&ev);
            assert_eq!(frames.len(), 6, "{v} chunk {chunk}: {ev:?}");
            for (k, (seq, ts, p)) in frames.iter().enumerate() {
                assert_eq!(*seq, k as u64 / 3);
                assert_eq!(p, &payloads[k % 3]);
                let want_ts = (v.is_05_or_later()).then_some(1000 * seq + 33 * (k as u64 % 3));
                assert_eq!(*ts, want_ts);
            }
            assert_eq!(
                ev.iter()
                    .filter(|e| matches!(e, Event::GroupStarted { .. }))
                    .count(),
                2
            );
            assert_eq!(
                ev.iter()
                    .filter(|e| matches!(e, Event::GroupEnded { .. }))
                    .count(),
                2
            );
            if v.is_05_or_later() {
                assert!(ev.contains(&Event::SubscribeResponse {
                    subscription: sub,
                    response: SubscribeResponse::Start { group: 0 }
                }));
                assert!(ev.contains(&Event::SubscribeResponse {
                    subscription: sub,
                    response: SubscribeResponse::End { group: 2 }
                }));
            }
            assert_eq!(
                ev.last(),
                Some(&Event::SubscriptionClosed {
                    subscription: sub,
                    code: None
                })
            );

            n.s[RELAY].unannounce("room/alice").unwrap();
            n.run();
            assert_eq!(
                n.take(CLIENT),
                vec![Event::Unannounced {
                    interest,
                    path: "room/alice".into()
                }]
            );
            n.s[CLIENT].stop_interest(interest).unwrap();
            n.run();
            assert_eq!(n.closed, [None, None]);
            // Every transaction finished: no stream state is left on either side.
            assert_eq!(n.s[RELAY].stream_count(), 0, "{v}: relay leaked streams");
            assert_eq!(n.s[CLIENT].stream_count(), 0, "{v}: client leaked streams");
        }
    }
}

#[test]
fn frame_payloads_are_written_without_copying() {
    let mut n = Net::new(Version::Lite05, 1500);
    n.s[RELAY].announce("a", &[]).unwrap();
    let _ = n.s[CLIENT]
        .subscribe("a", "t", SubscribeUpdate::latest(0))
        .unwrap();
    n.run();
    let Some(Event::SubscribeRequested { serve, .. }) = n
        .take(RELAY)
        .into_iter()
        .find(|e| matches!(e, Event::SubscribeRequested { .. }))
    else {
        panic!()
    };
    let payload = Bytes::from(vec![1u8; 1024]);
    let g = n.s[RELAY].start_group(serve, 0).unwrap();
    n.s[RELAY].write_frame(g, 0, payload.clone()).unwrap();
    n.run();
    assert!(
        n.writes[RELAY]
            .iter()
            .any(|w| w.as_ptr() == payload.as_ptr() && w.len() == payload.len())
    );
    // The receiver gets a slice of the chunk it was handed, not a copy.
    let frames = frames_of(&n.take(CLIENT));
    assert_eq!(frames[0].2, payload);
}

#[test]
fn late_joiner_receives_the_current_group_from_its_first_frame() {
    for v in versions() {
        // One relay, two viewers (two connections). The relay application replays its cached
        // frames of the in-progress group to the late viewer, sharing the same Bytes.
        let mut early = Net::new(v, 7);
        let mut late = Net::new(v, 7);
        let cache: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; 100])).collect();
        let sub_early = early.s[CLIENT]
            .subscribe("b", "video", SubscribeUpdate::latest(1))
            .unwrap();
        early.run();
        let Some(Event::SubscribeRequested { serve: se, .. }) = early
            .take(RELAY)
            .into_iter()
            .find(|e| matches!(e, Event::SubscribeRequested { .. }))
        else {
            panic!()
        };
        let g_early = early.s[RELAY].start_group(se, 5).unwrap();
        for (i, p) in cache[..2].iter().enumerate() {
            early.s[RELAY]
                .write_frame(g_early, i as u64, p.clone())
                .unwrap();
        }
        early.run();

        // The late viewer asks for "latest" mid-group 5 and gets group 5 from frame 0.
        let sub_late = late.s[CLIENT]
            .subscribe("b", "video", SubscribeUpdate::latest(1))
            .unwrap();
        late.run();
        let Some(Event::SubscribeRequested { serve: sl, request }) = late
            .take(RELAY)
            .into_iter()
            .find(|e| matches!(e, Event::SubscribeRequested { .. }))
        else {
            panic!()
        };
        assert_eq!(request.start, None);
        let g_late = late.s[RELAY].start_group(sl, 5).unwrap();
        for (i, p) in cache[..2].iter().enumerate() {
            late.s[RELAY]
                .write_frame(g_late, i as u64, p.clone())
                .unwrap();
        }
        // Live frame 2 goes to both.
        early.s[RELAY]
            .write_frame(g_early, 2, cache[2].clone())
            .unwrap();
        late.s[RELAY]
            .write_frame(g_late, 2, cache[2].clone())
            .unwrap();
        early.s[RELAY].end_group(g_early).unwrap();
        late.s[RELAY].end_group(g_late).unwrap();
        early.run();
        late.run();
        for (net, sub) in [(&mut early, sub_early), (&mut late, sub_late)] {
            let ev = net.take(CLIENT);
            let frames = frames_of(&ev);
            assert_eq!(
                frames.iter().map(|f| f.2.clone()).collect::<Vec<_>>(),
                cache,
                "{v}"
            );
            assert!(frames.iter().all(|f| f.0 == 5));
            assert!(ev.contains(&Event::GroupStarted {
                subscription: sub,
                sequence: 5
            }));
            assert!(ev.contains(&Event::GroupEnded {
                subscription: sub,
                sequence: 5
            }));
            if v.is_05_or_later() {
                assert!(ev.contains(&Event::SubscribeResponse {
                    subscription: sub,
                    response: SubscribeResponse::Start { group: 5 }
                }));
            }
        }
    }
}

/// The client publishes, the relay subscribes to it (the ingest direction).
fn ingest(v: Version) -> (Net, InterestId, SubscriptionId, ServeId) {
    let mut n = Net::new(v, 5);
    n.take(RELAY);
    n.take(CLIENT);
    n.s[CLIENT].announce("cam", &[]).unwrap();
    let interest = n.s[RELAY].announce_interest("").unwrap();
    n.run();
    let ev = n.take(RELAY);
    let hops = if v == Version::Lite03 {
        vec![0]
    } else {
        vec![CLIENT_HOP]
    };
    assert_eq!(
        ev,
        vec![Event::Announced {
            interest,
            path: "cam".into(),
            hops
        }],
        "{v}"
    );
    let sub = n.s[RELAY]
        .subscribe("cam", "video", SubscribeUpdate::latest(0))
        .unwrap();
    n.run();
    let Some(Event::SubscribeRequested { serve, .. }) = n
        .take(CLIENT)
        .into_iter()
        .find(|e| matches!(e, Event::SubscribeRequested { .. }))
    else {
        panic!()
    };
    (n, interest, sub, serve)
}

#[test]
fn publisher_that_vanishes_mid_group_ends_everything_on_the_relay() {
    for v in versions() {
        let (mut n, interest, sub, serve) = ingest(v);
        let g = n.s[CLIENT].start_group(serve, 0).unwrap();
        n.s[CLIENT]
            .write_frame(g, 0, Bytes::from_static(b"key"))
            .unwrap();
        n.run();
        // Half a frame reaches the relay, then the connection dies.
        n.s[CLIENT]
            .write_frame(g, 1, Bytes::from(vec![0u8; 100]))
            .unwrap();
        let mut half = Vec::new();
        while let Some(a) = n.s[CLIENT].poll_action() {
            half.push(a);
        }
        if let Some(Action::Write { stream, data }) = half.into_iter().next() {
            n.s[RELAY].on_stream_data(stream, data); // the frame header only
        }
        n.s[RELAY].on_connection_closed(ErrorCode::Transport);
        n.run();
        let ev = n.take(RELAY);
        assert!(ev.contains(&Event::Frame {
            subscription: sub,
            sequence: 0,
            timestamp: (v.is_05_or_later()).then_some(0),
            payload: Bytes::from_static(b"key")
        }));
        assert!(
            ev.contains(&Event::GroupAborted {
                subscription: sub,
                sequence: 0,
                code: ErrorCode::Transport
            }),
            "{v}: {ev:?}"
        );
        assert!(ev.contains(&Event::SubscriptionClosed {
            subscription: sub,
            code: Some(ErrorCode::Transport)
        }));
        assert!(ev.contains(&Event::Unannounced {
            interest,
            path: "cam".into()
        }));
        assert!(
            !ev.iter()
                .any(|e| matches!(e, Event::Frame { payload, .. } if payload.len() == 100))
        );
        assert!(n.s[RELAY].is_closed());
        assert_eq!(n.s[RELAY].stream_count(), 0);
    }
}

#[test]
fn publisher_reset_of_one_group_keeps_the_subscription() {
    for v in versions() {
        let (mut n, _interest, sub, serve) = ingest(v);
        let g0 = n.s[CLIENT].start_group(serve, 0).unwrap();
        n.s[CLIENT]
            .write_frame(g0, 0, Bytes::from_static(b"x"))
            .unwrap();
        n.s[CLIENT].abort_group(g0, ErrorCode::Dropped).unwrap();
        let g1 = n.s[CLIENT].start_group(serve, 1).unwrap();
        n.s[CLIENT]
            .write_frame(g1, 5, Bytes::from_static(b"y"))
            .unwrap();
        n.s[CLIENT].end_group(g1).unwrap();
        n.run();
        let ev = n.take(RELAY);
        assert!(
            ev.contains(&Event::GroupAborted {
                subscription: sub,
                sequence: 0,
                code: ErrorCode::Dropped
            }),
            "{v}"
        );
        assert!(ev.contains(&Event::GroupEnded {
            subscription: sub,
            sequence: 1
        }));
        assert!(
            !ev.iter()
                .any(|e| matches!(e, Event::SubscriptionClosed { .. }))
        );
    }
}

#[test]
fn subscriber_unsubscribe_resets_open_groups_and_reports_cancel() {
    for v in versions() {
        let mut n = Net::new(v, 64);
        let sub = n.s[CLIENT]
            .subscribe("b", "t", SubscribeUpdate::latest(0))
            .unwrap();
        n.run();
        let Some(Event::SubscribeRequested { serve, .. }) = n
            .take(RELAY)
            .into_iter()
            .find(|e| matches!(e, Event::SubscribeRequested { .. }))
        else {
            panic!()
        };
        let g = n.s[RELAY].start_group(serve, 3).unwrap();
        n.s[RELAY]
            .write_frame(g, 0, Bytes::from_static(b"a"))
            .unwrap();
        n.run();
        n.s[CLIENT].unsubscribe(sub).unwrap();
        n.run();
        let ev = n.take(RELAY);
        assert!(
            ev.contains(&Event::SubscribeCancelled { serve, code: None }),
            "{v}: {ev:?}"
        );
        // Writing after the cancel is refused: the group is gone.
        assert!(
            n.s[RELAY]
                .write_frame(g, 1, Bytes::from_static(b"b"))
                .is_err()
        );
        n.run();
        assert_eq!(n.s[RELAY].stream_count(), 0);
        assert_eq!(n.s[CLIENT].stream_count(), 0);
    }
}

#[test]
fn rejected_subscribe_and_track_surface_the_code() {
    let mut n = Net::new(Version::Lite05, 64);
    let sub = n.s[CLIENT]
        .subscribe("nobody", "t", SubscribeUpdate::latest(0))
        .unwrap();
    let req = n.s[CLIENT].request_track("nobody", "t").unwrap();
    n.run();
    for e in n.take(RELAY) {
        match e {
            Event::SubscribeRequested { serve, .. } => n.s[RELAY]
                .reject_subscribe(serve, ErrorCode::Unroutable)
                .unwrap(),
            Event::TrackRequested { request, .. } => n.s[RELAY]
                .reject_track(request, ErrorCode::NotFound)
                .unwrap(),
            _ => {}
        }
    }
    n.run();
    let ev = n.take(CLIENT);
    assert!(ev.contains(&Event::SubscriptionClosed {
        subscription: sub,
        code: Some(ErrorCode::Unroutable)
    }));
    assert!(ev.contains(&Event::TrackInfo {
        request: req,
        info: Err(ErrorCode::NotFound)
    }));
}

#[test]
fn exclude_hop_and_prefix_filter_what_is_announced() {
    for v in [Version::Lite04, Version::Lite05, Version::Lite06] {
        let mut n = Net::new(v, 64);
        n.take(CLIENT);
        // A broadcast that came through the client itself is never sent back to it.
        n.s[RELAY].announce("room/echo", &[CLIENT_HOP, 5]).unwrap();
        n.s[RELAY].announce("room/bob", &[5]).unwrap();
        n.s[RELAY].announce("roomy", &[]).unwrap();
        let i = n.s[CLIENT].announce_interest("room").unwrap();
        n.run();
        let ev = n.take(CLIENT);
        // 05 sends the stored chain and the receiver appends the ANNOUNCE_OK hop; 04 appends
        // the sender's ID on the wire. Both end up with the same full chain.
        let want_hops = vec![5, RELAY_HOP];
        assert_eq!(
            ev,
            vec![Event::Announced {
                interest: i,
                path: "room/bob".into(),
                hops: want_hops
            }],
            "{v}"
        );
        // A later announce reaches the open interest; a 05 repeat is a replace.
        n.s[RELAY].announce("room/carol", &[]).unwrap();
        n.s[RELAY].announce("room/carol", &[6]).unwrap();
        n.run();
        let ev = n.take(CLIENT);
        let carol: Vec<_> = ev
            .iter()
            .filter(|e| matches!(e, Event::Announced { path, .. } if path == "room/carol"))
            .collect();
        assert_eq!(carol.len(), 2, "{v}: {ev:?}");
        assert_eq!(n.closed, [None, None]);
    }
}

#[test]
fn a_server_hides_dot_segments_below_the_request_prefix_unless_the_prefix_names_them() {
    for v in [
        Version::Lite03,
        Version::Lite04,
        Version::Lite05,
        Version::Lite06,
    ] {
        let mut n = Net::new(v, 64);
        n.take(CLIENT);
        n.s[RELAY].announce(".stats/node/edge", &[]).unwrap();
        n.s[RELAY].announce("room/.private", &[]).unwrap();
        n.s[RELAY].announce("room/bob", &[]).unwrap();
        let everything = n.s[CLIENT].announce_interest("").unwrap();
        let stats = n.s[CLIENT].announce_interest(".stats").unwrap();
        n.run();
        // Announced after the interests: the live path filters too.
        n.s[RELAY].announce(".stats/node/other", &[]).unwrap();
        n.run();
        let mut seen: Vec<(InterestId, String)> = n
            .take(CLIENT)
            .into_iter()
            .filter_map(|e| match e {
                Event::Announced { interest, path, .. } => Some((interest, path)),
                _ => None,
            })
            .collect();
        seen.sort_by(|a, b| a.1.cmp(&b.1));
        let want = vec![
            (stats, ".stats/node/edge".to_string()),
            (stats, ".stats/node/other".to_string()),
            (everything, "room/bob".to_string()),
        ];
        assert_eq!(seen, want, "{v}");
    }
}

#[test]
fn a_server_told_to_show_hidden_paths_announces_them_as_0_14_did() {
    let mut n = Net::new(Version::Lite05, 64);
    n.take(CLIENT);
    n.s[RELAY].show_hidden_paths();
    n.s[RELAY]
        .announce(".internal/origins/relay-b", &[])
        .unwrap();
    n.s[RELAY].announce("room/bob", &[]).unwrap();
    n.s[CLIENT].announce_interest("").unwrap();
    n.run();
    let mut seen: Vec<String> = n
        .take(CLIENT)
        .into_iter()
        .filter_map(|e| match e {
            Event::Announced { path, .. } => Some(path),
            _ => None,
        })
        .collect();
    seen.sort();
    assert_eq!(seen, [".internal/origins/relay-b", "room/bob"]);
}

#[test]
fn duplicate_active_closes_03_04_sessions_but_replaces_on_05() {
    // 06 has no status byte: its duplicate START is tested below.
    for v in [Version::Lite03, Version::Lite04, Version::Lite05] {
        let mut n = Net::new(v, 64);
        let _i = n.s[RELAY].announce_interest("").unwrap();
        n.run();
        // Hand-craft the peer side: find the Announce stream the relay opened and answer it.
        let stream = StreamId(n.next_stream - 1);
        // (On 05 the client session already answered with ANNOUNCE_OK.)
        let mut buf = bytes::BytesMut::new();
        let a = Announce {
            status: AnnounceStatus::Active,
            suffix: "x".into(),
            hops: vec![0],
        };
        a.encode(v, &mut buf).unwrap();
        a.encode(v, &mut buf).unwrap();
        n.s[RELAY].on_stream_data(stream, buf.freeze());
        n.run();
        let announced = n
            .take(RELAY)
            .iter()
            .filter(|e| matches!(e, Event::Announced { .. }))
            .count();
        if v == Version::Lite05 {
            assert_eq!(announced, 2);
            assert_eq!(n.closed[RELAY], None);
        } else {
            assert_eq!(n.closed[RELAY], Some(ErrorCode::Duplicate), "{v}");
        }
    }
}

#[test]
fn reflected_announcement_is_dropped_by_loop_rule() {
    let v = Version::Lite04;
    let mut n = Net::new(v, 64);
    let _i = n.s[RELAY].announce_interest("").unwrap();
    n.run();
    let stream = StreamId(n.next_stream - 1);
    let mut buf = bytes::BytesMut::new();
    Announce {
        status: AnnounceStatus::Active,
        suffix: "loop".into(),
        hops: vec![RELAY_HOP, 4],
    }
    .encode(v, &mut buf)
    .unwrap();
    n.s[RELAY].on_stream_data(stream, buf.freeze());
    n.run();
    assert!(n.take(RELAY).is_empty());
    assert_eq!(n.s[RELAY].loops_dropped(), 1, "the drop is counted");
}

#[test]
fn malformed_and_unknown_streams_do_not_kill_the_session() {
    let v = Version::Lite05;
    let mut n = Net::new(v, 64);
    n.take(RELAY);
    // Unknown bidi type 0x9: reset with Cancel; unknown uni type: stopped.
    n.s[RELAY].on_stream_opened(StreamId(1000), true);
    n.s[RELAY].on_stream_data(StreamId(1000), Bytes::from_static(&[0x09, 1, 2]));
    n.s[RELAY].on_stream_opened(StreamId(1001), false);
    n.s[RELAY].on_stream_data(StreamId(1001), Bytes::from_static(&[0x07]));
    // A SUBSCRIBE with a bad body: reset with Decode.
    n.s[RELAY].on_stream_opened(StreamId(1002), true);
    n.s[RELAY].on_stream_data(
        StreamId(1002),
        Bytes::from_static(&[0x02, 0x02, 0x00, 0x05]),
    );
    let mut acts = Vec::new();
    while let Some(a) = n.s[RELAY].poll_action() {
        acts.push(a);
    }
    assert!(acts.contains(&Action::Reset {
        stream: StreamId(1000),
        code: ErrorCode::Cancel
    }));
    assert!(acts.contains(&Action::StopSending {
        stream: StreamId(1001),
        code: ErrorCode::UnexpectedStream
    }));
    assert!(acts.contains(&Action::Reset {
        stream: StreamId(1002),
        code: ErrorCode::Decode
    }));
    assert!(!n.s[RELAY].is_closed());
    assert_eq!(n.s[RELAY].stream_count(), 0);
}

#[test]
fn groups_for_unknown_subscriptions_are_stopped_with_cancel() {
    let v = Version::Lite04;
    let mut n = Net::new(v, 64);
    n.s[CLIENT].on_stream_opened(StreamId(500), false);
    n.s[CLIENT].on_stream_data(
        StreamId(500),
        Bytes::from_static(&[0x00, 0x02, 0x2a, 0x01, 0x01, b'z']),
    );
    let a = n.s[CLIENT].poll_action();
    assert_eq!(
        a,
        Some(Action::StopSending {
            stream: StreamId(500),
            code: ErrorCode::Cancel
        })
    );
    assert!(n.s[CLIENT].poll_event().is_none());
}

#[test]
fn second_setup_closes_the_session() {
    let mut n = Net::new(Version::Lite05, 64);
    n.s[RELAY].on_stream_opened(StreamId(900), false);
    n.s[RELAY].on_stream_data(StreamId(900), Bytes::from_static(&[0x01, 0x01, 0x00]));
    n.run();
    assert_eq!(n.closed[RELAY], Some(ErrorCode::ProtocolViolation));
}

#[test]
fn stream_opened_later_flushes_queued_writes_in_order() {
    // The transport may bind the ID after the application already wrote frames.
    let v = Version::Lite04;
    let mut n = Net::new(v, 64);
    let _sub = n.s[CLIENT]
        .subscribe("b", "t", SubscribeUpdate::latest(0))
        .unwrap();
    n.run();
    let Some(Event::SubscribeRequested { serve, .. }) = n
        .take(RELAY)
        .into_iter()
        .find(|e| matches!(e, Event::SubscribeRequested { .. }))
    else {
        panic!()
    };
    n.s[RELAY].accept_subscribe(serve).unwrap();
    let g = n.s[RELAY].start_group(serve, 0).unwrap();
    n.s[RELAY]
        .write_frame(g, 0, Bytes::from_static(b"one"))
        .unwrap();
    n.s[RELAY]
        .write_frame(g, 0, Bytes::from_static(b"two"))
        .unwrap();
    n.s[RELAY].end_group(g).unwrap();
    n.run();
    let frames: Vec<Bytes> = frames_of(&n.take(CLIENT))
        .into_iter()
        .map(|f| f.2)
        .collect();
    assert_eq!(
        frames,
        vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
    );
}

#[test]
fn datagrams_reach_known_subscriptions_only() {
    let mut n = Net::new(Version::Lite05, 64);
    n.take(CLIENT);
    let sub = n.s[CLIENT]
        .subscribe("b", "t", SubscribeUpdate::latest(0))
        .unwrap();
    n.run();
    let Some(Event::SubscribeRequested { serve, .. }) = n
        .take(RELAY)
        .into_iter()
        .find(|e| matches!(e, Event::SubscribeRequested { .. }))
    else {
        panic!()
    };
    n.s[RELAY]
        .send_datagram(serve, 4, 90, &Bytes::from_static(b"hi"))
        .unwrap();
    assert!(
        n.s[RELAY]
            .send_datagram(serve, 5, 91, &Bytes::from(vec![0u8; 1200]))
            .is_err()
    );
    let Some(Action::SendDatagram { data }) = n.s[RELAY].poll_action() else {
        panic!()
    };
    n.s[CLIENT].on_datagram(data.clone());
    // Unknown subscription and garbage: dropped.
    n.s[CLIENT].on_datagram(Bytes::from_static(&[0x3f, 1, 1, 1]));
    n.s[CLIENT].on_datagram(Bytes::from_static(&[0xff]));
    n.run();
    let ev = n.take(CLIENT);
    assert_eq!(
        ev,
        vec![Event::Datagram {
            subscription: sub,
            sequence: 4,
            timestamp: 90,
            payload: Bytes::from_static(b"hi")
        }]
    );
}

#[test]
fn goaway_reaches_the_peer() {
    for v in [Version::Lite04, Version::Lite05, Version::Lite06] {
        let mut n = Net::new(v, 2);
        n.take(CLIENT);
        n.s[RELAY].go_away("https://other.example/").unwrap();
        n.run();
        assert_eq!(
            n.take(CLIENT),
            vec![Event::GoAway {
                uri: "https://other.example/".into()
            }]
        );
    }
    let mut n = Net::new(Version::Lite03, 2);
    assert!(n.s[RELAY].go_away("").is_err());
}

#[test]
fn outstanding_requests_are_bounded() {
    let mut n = Net::new(Version::Lite04, 64);
    for i in 0..MAX_OUTSTANDING_REQUESTS {
        n.s[CLIENT]
            .subscribe("b", &format!("t{i}"), SubscribeUpdate::latest(0))
            .unwrap();
        while n.s[CLIENT].poll_action().is_some() {}
    }
    assert!(matches!(
        n.s[CLIENT].subscribe("b", "one-too-many", SubscribeUpdate::latest(0)),
        Err(SessionError::Limit { .. })
    ));
    assert!(matches!(
        n.s[CLIENT].announce_interest(""),
        Err(SessionError::Limit { .. })
    ));
}

#[test]
fn writes_to_a_stream_the_transport_has_not_opened_are_bounded() {
    let v = Version::Lite05;
    let mut n = Net::new(v, 64);
    n.s[CLIENT]
        .subscribe("b", "t", SubscribeUpdate::latest(0))
        .unwrap();
    n.run();
    let Some(Event::SubscribeRequested { serve, .. }) = n
        .take(RELAY)
        .into_iter()
        .find(|e| matches!(e, Event::SubscribeRequested { .. }))
    else {
        panic!()
    };
    let g = n.s[RELAY].start_group(serve, 0).unwrap();
    // The transport never binds the group stream (stream limit): the queue fills, then the
    // caller is told to drop the group instead of buffering without bound.
    let mut refused = false;
    for _ in 0..MAX_QUEUED_CHUNKS {
        if let Err(e) = n.s[RELAY].write_frame(g, 0, Bytes::from_static(b"x")) {
            assert!(matches!(e, SessionError::Backlog { .. }));
            refused = true;
            break;
        }
    }
    assert!(refused);
}

#[test]
fn peer_decode_errors_are_reported_with_their_code() {
    let v = Version::Lite04;
    let mut n = Net::new(v, 64);
    let sub = n.s[CLIENT]
        .subscribe("b", "t", SubscribeUpdate::latest(0))
        .unwrap();
    n.run();
    n.take(RELAY);
    // The publisher answers with a DROP first: on 03/04 SUBSCRIBE_OK must come first.
    let stream = StreamId(n.next_stream - 1);
    n.s[CLIENT].on_stream_data(stream, Bytes::from_static(&[0x01, 0x03, 0x01, 0x03, 0x00]));
    n.run();
    let ev = n.take(CLIENT);
    assert!(
        matches!(
            &ev[0],
            Event::StreamFailed {
                code: ErrorCode::ProtocolViolation,
                ..
            }
        ),
        "{ev:?}"
    );
    assert_eq!(
        ev[1],
        Event::SubscriptionClosed {
            subscription: sub,
            code: Some(ErrorCode::ProtocolViolation)
        }
    );
}

#[test]
fn a_broken_client_announce_stream_is_finished_never_reset() {
    // moq-net closes the whole session when a relay resets its Announce stream (spec 12.12).
    for v in [Version::Lite05, Version::Lite06] {
        let mut n = Net::new(v, 64);
        n.s[RELAY].on_stream_opened(StreamId(700), true);
        let mut buf = bytes::BytesMut::new();
        coding::put_varint(&mut buf, "t", BidiType::Announce.id()).unwrap();
        AnnounceRequest {
            prefix: "".into(),
            exclude_hop: 1,
        }
        .encode(v, &mut buf)
        .unwrap();
        buf.extend_from_slice(&[0x05, 0xff]); // junk after the request
        n.s[RELAY].on_stream_data(StreamId(700), buf.freeze());
        let mut acts = Vec::new();
        while let Some(a) = n.s[RELAY].poll_action() {
            acts.push(a);
        }
        assert!(
            acts.contains(&Action::Finish {
                stream: StreamId(700)
            }),
            "{acts:?}"
        );
        assert!(!acts.iter().any(|a| matches!(
            a,
            Action::Reset {
                stream: StreamId(700),
                ..
            }
        )));
    }
}

#[test]
fn a_group_stream_the_transport_cannot_open_does_not_block_the_end_of_the_track() {
    for v in [Version::Lite05, Version::Lite06] {
        let mut n = Net::new(v, 64);
        let sub = n.s[CLIENT]
            .subscribe("b", "t", SubscribeUpdate::latest(0))
            .unwrap();
        n.run();
        let Some(Event::SubscribeRequested { serve, .. }) = n
            .take(RELAY)
            .into_iter()
            .find(|e| matches!(e, Event::SubscribeRequested { .. }))
        else {
            panic!()
        };
        let g = n.s[RELAY].start_group(serve, 0).unwrap();
        n.s[RELAY]
            .write_frame(g, 0, Bytes::from_static(b"lost"))
            .unwrap();
        n.s[RELAY].end_group(g).unwrap();
        // The transport refuses the stream: the session forgets the group.
        let mut others = Vec::new();
        while let Some(a) = n.s[RELAY].poll_action() {
            match a {
                Action::OpenUni { token, .. } => n.s[RELAY].on_stream_open_failed(token),
                a => others.push(a),
            }
        }
        for a in others {
            if let Action::Write { stream, data } = a {
                n.s[CLIENT].on_stream_data(stream, data);
            }
        }
        n.s[RELAY].end_subscription(serve, 1).unwrap();
        n.run();
        let ev = n.take(CLIENT);
        assert!(
            ev.contains(&Event::SubscriptionClosed {
                subscription: sub,
                code: None
            }),
            "{ev:?}"
        );
        assert_eq!(n.s[RELAY].stream_count(), 0);
    }
}

#[test]
fn a_rejected_frame_leaves_the_group_stream_intact() {
    for v in [Version::Lite05, Version::Lite06] {
        let mut n = Net::new(v, 64);
        let sub = n.s[CLIENT]
            .subscribe("b", "t", SubscribeUpdate::latest(0))
            .unwrap();
        n.run();
        let Some(Event::SubscribeRequested { serve, .. }) = n
            .take(RELAY)
            .into_iter()
            .find(|e| matches!(e, Event::SubscribeRequested { .. }))
        else {
            panic!()
        };
        let g = n.s[RELAY].start_group(serve, 0).unwrap();
        n.s[RELAY]
            .write_frame(g, 10, Bytes::from_static(b"a"))
            .unwrap();
        // A timestamp jump that cannot be encoded as a delta is refused without writing.
        assert!(
            n.s[RELAY]
                .write_frame(g, u64::MAX, Bytes::from_static(b"x"))
                .is_err()
        );
        n.s[RELAY]
            .write_frame(g, 20, Bytes::from_static(b"b"))
            .unwrap();
        n.s[RELAY].end_group(g).unwrap();
        n.run();
        let frames = frames_of(&n.take(CLIENT));
        assert_eq!(
            frames,
            vec![
                (0, Some(10), Bytes::from_static(b"a")),
                (0, Some(20), Bytes::from_static(b"b"))
            ],
            "{sub:?}"
        );
    }
}

#[test]
fn fetch_serves_one_cached_group_with_timestamps_from_zero() {
    for v in [Version::Lite05, Version::Lite06] {
        let mut n = Net::new(v, 3);
        n.take(RELAY);
        n.take(CLIENT);
        let f = n.s[CLIENT].fetch("room/alice", "video", 2, 7).unwrap();
        n.run();
        let ev = n.take(RELAY);
        let Some(Event::FetchRequested { request, fetch }) = ev.into_iter().next() else {
            panic!()
        };
        assert_eq!(
            *fetch,
            Fetch {
                broadcast: "room/alice".into(),
                track: "video".into(),
                priority: 2,
                group: 7,
                frame_start: 0,
                frame_end: None,
            }
        );
        n.s[RELAY]
            .fetch_frame(request, 1000, Bytes::from_static(b"abc"))
            .unwrap();
        n.s[RELAY]
            .fetch_frame(request, 1033, Bytes::from_static(b"de"))
            .unwrap();
        n.s[RELAY].end_fetch(request).unwrap();
        n.run();
        assert_eq!(
            n.take(CLIENT),
            vec![
                Event::FetchFrame {
                    fetch: f,
                    timestamp: 1000,
                    payload: Bytes::from_static(b"abc")
                },
                Event::FetchFrame {
                    fetch: f,
                    timestamp: 1033,
                    payload: Bytes::from_static(b"de")
                },
                Event::FetchEnded {
                    fetch: f,
                    code: None
                },
            ]
        );
        assert_eq!(n.s[RELAY].stream_count(), 0);
        assert_eq!(n.s[CLIENT].stream_count(), 0);

        // A fetch the relay cannot serve is reset; before 05 there is no FETCH at all.
        let f2 = n.s[CLIENT].fetch("gone", "video", 0, 1).unwrap();
        n.run();
        let Some(Event::FetchRequested { request, .. }) = n.take(RELAY).into_iter().next() else {
            panic!()
        };
        n.s[RELAY]
            .reject_fetch(request, ErrorCode::NotFound)
            .unwrap();
        n.run();
        assert_eq!(
            n.take(CLIENT),
            vec![Event::FetchEnded {
                fetch: f2,
                code: Some(ErrorCode::NotFound)
            }]
        );
        let mut old = Net::new(Version::Lite04, 64);
        assert!(old.s[CLIENT].fetch("a", "b", 0, 0).is_err());
        // A 04 peer that opens a Fetch stream anyway is reset, and the session lives on.
        old.s[RELAY].on_stream_opened(StreamId(77), true);
        old.s[RELAY].on_stream_data(StreamId(77), Bytes::from_static(&[0x03, 0x00]));
        old.run();
        assert!(!old.s[RELAY].is_closed());
    }
}

#[test]
fn a_cancelled_fetch_is_reported() {
    for v in [Version::Lite05, Version::Lite06] {
        let mut n = Net::new(v, 64);
        n.take(RELAY);
        let f = n.s[CLIENT].fetch("a", "v", 0, 1).unwrap();
        n.run();
        let Some(Event::FetchRequested { request, .. }) = n.take(RELAY).into_iter().next() else {
            panic!()
        };
        n.s[RELAY]
            .fetch_frame(request, 0, Bytes::from_static(b"x"))
            .unwrap();
        n.run();
        // The client goes away from this fetch: reset of its side.
        let stream = StreamId(n.next_stream - 1);
        n.s[RELAY].on_stream_reset(stream, ErrorCode::Cancel);
        n.run();
        assert_eq!(
            n.take(RELAY),
            vec![Event::FetchCancelled {
                request,
                code: ErrorCode::Cancel
            }]
        );
        assert!(
            n.s[RELAY]
                .fetch_frame(request, 1, Bytes::from_static(b"y"))
                .is_err()
        );
        let _ = f;
    }
}

#[test]
fn a_route_change_through_the_peer_withdraws_the_broadcast_from_it() {
    for v in [Version::Lite04, Version::Lite05, Version::Lite06] {
        let mut n = Net::new(v, 64);
        n.take(CLIENT);
        let i = n.s[CLIENT].announce_interest("").unwrap();
        n.s[RELAY].announce("x", &[5]).unwrap();
        n.run();
        assert_eq!(n.take(CLIENT).len(), 1);
        // Failover: the new route came through the client itself.
        n.s[RELAY].announce("x", &[CLIENT_HOP]).unwrap();
        n.run();
        assert_eq!(
            n.take(CLIENT),
            vec![Event::Unannounced {
                interest: i,
                path: "x".into()
            }],
            "{v}"
        );
    }
}

#[test]
fn setup_origin_filters_like_exclude_hop_on_05() {
    // A 05 peer whose ANNOUNCE_REQUEST carries exclude hop 0 but whose SETUP names its origin.
    let v = Version::Lite05;
    let mut n = Net::new(v, 64);
    n.s[RELAY].announce("mine", &[CLIENT_HOP]).unwrap();
    n.s[RELAY].announce("theirs", &[5]).unwrap();
    n.s[RELAY].on_stream_opened(StreamId(600), true);
    let mut buf = bytes::BytesMut::new();
    coding::put_varint(&mut buf, "t", BidiType::Announce.id()).unwrap();
    AnnounceRequest {
        prefix: "".into(),
        exclude_hop: 0,
    }
    .encode(v, &mut buf)
    .unwrap();
    n.s[RELAY].on_stream_data(StreamId(600), buf.freeze());
    let mut written = bytes::BytesMut::new();
    while let Some(a) = n.s[RELAY].poll_action() {
        if let Action::Write {
            stream: StreamId(600),
            data,
        } = a
        {
            written.extend_from_slice(&data);
        }
    }
    let mut r = reader::MessageReader::new();
    r.push(&written);
    assert_eq!(r.read::<AnnounceOk>(v).unwrap().unwrap().active_count, 1);
    assert_eq!(r.read::<Announce>(v).unwrap().unwrap().suffix, "theirs");
    assert_eq!(r.buffered(), 0);
}

#[test]
fn subscribe_update_reprioritizes_open_groups() {
    for v in [Version::Lite05, Version::Lite06] {
        let mut n = Net::new(v, 64);
        let sub = n.s[CLIENT]
            .subscribe("b", "t", SubscribeUpdate::latest(1))
            .unwrap();
        n.run();
        let Some(Event::SubscribeRequested { serve, .. }) = n
            .take(RELAY)
            .into_iter()
            .find(|e| matches!(e, Event::SubscribeRequested { .. }))
        else {
            panic!()
        };
        let _g = n.s[RELAY].start_group(serve, 4).unwrap();
        n.run();
        n.s[CLIENT]
            .update_subscription(sub, SubscribeUpdate::latest(200))
            .unwrap();
        // Deliver the update by hand to see the relay's actions.
        let mut upd = None;
        while let Some(a) = n.s[CLIENT].poll_action() {
            if let Action::Write { stream, data } = a {
                upd = Some((stream, data));
            }
        }
        let (stream, data) = upd.unwrap();
        n.s[RELAY].on_stream_data(stream, data);
        let acts: Vec<Action> = std::iter::from_fn(|| n.s[RELAY].poll_action()).collect();
        assert!(acts.iter().any(|a| matches!(a, Action::SetPriority { priority, .. } if *priority == group_priority(200, 4))), "{acts:?}");
        assert!(
            matches!(n.s[RELAY].poll_event(), Some(Event::SubscribeUpdated { update, .. }) if update.priority == 200)
        );
    }
}

// ---------------------------------------------------------------------------------------
// moq-lite-06 (spec 12): typed announcements with implicit IDs

const V6: Version = Version::Lite06;

/// The relay opens an Announce stream to the client (which answers ANNOUNCE_OK, hop 77, no
/// broadcasts); returns the net, the interest and the stream to hand-craft announcements on.
fn relay_interest_06() -> (Net, InterestId, StreamId) {
    let mut n = Net::new(V6, 64);
    n.take(RELAY);
    n.take(CLIENT);
    let i = n.s[RELAY].announce_interest("room").unwrap();
    n.run();
    assert!(n.take(RELAY).is_empty());
    let stream = StreamId(n.next_stream - 1);
    (n, i, stream)
}

fn feed_06(n: &mut Net, stream: StreamId, msgs: &[Announce06]) {
    let mut buf = bytes::BytesMut::new();
    for m in msgs {
        m.encode(V6, &mut buf).unwrap();
    }
    n.s[RELAY].on_stream_data(stream, buf.freeze());
    n.run();
}

fn start(suffix: &str, hops: Vec<u64>) -> Announce06 {
    Announce06::Start {
        suffix: suffix.into(),
        hops,
        cost: RouteCost::default(),
    }
}

/// Every byte the relay wrote on `stream` since the last drain.
fn drain_writes(n: &mut Net, stream: StreamId) -> Vec<u8> {
    let mut written = Vec::new();
    while let Some(a) = n.s[RELAY].poll_action() {
        if let Action::Write { stream: s, data } = a
            && s == stream
        {
            written.extend_from_slice(&data);
        }
    }
    written
}

#[test]
fn announce_start_restart_end_by_implicit_id_on_06() {
    let (mut n, i, stream) = relay_interest_06();
    feed_06(
        &mut n,
        stream,
        &[start("alice", vec![7]), start("bob", vec![])],
    );
    assert_eq!(
        n.take(RELAY),
        vec![
            Event::Announced {
                interest: i,
                path: "room/alice".into(),
                hops: vec![7, CLIENT_HOP]
            },
            Event::Announced {
                interest: i,
                path: "room/bob".into(),
                hops: vec![CLIENT_HOP]
            },
        ]
    );
    // RESTART id 0 replaces alice's chain in place; END id 1 retires bob.
    feed_06(
        &mut n,
        stream,
        &[
            Announce06::Restart {
                id: 0,
                hops: vec![7, 8],
                cost: RouteCost { warm: 1, cold: 1 },
            },
            Announce06::End { id: 1 },
        ],
    );
    assert_eq!(
        n.take(RELAY),
        vec![
            Event::Announced {
                interest: i,
                path: "room/alice".into(),
                hops: vec![7, 8, CLIENT_HOP]
            },
            Event::Unannounced {
                interest: i,
                path: "room/bob".into()
            },
        ]
    );
    assert_eq!(n.closed, [None, None]);
}

#[test]
fn a_looped_start_still_takes_an_id_on_06() {
    let (mut n, i, stream) = relay_interest_06();
    // id 0 is our own broadcast reflected back: dropped, but the counter moves on.
    feed_06(
        &mut n,
        stream,
        &[start("echo", vec![RELAY_HOP]), start("bob", vec![5])],
    );
    assert_eq!(
        n.take(RELAY),
        vec![Event::Announced {
            interest: i,
            path: "room/bob".into(),
            hops: vec![5, CLIENT_HOP]
        }]
    );
    assert_eq!(n.s[RELAY].loops_dropped(), 1, "the drop is counted");
    // END of the dropped id 0 is legal and silent; END id 1 is bob.
    feed_06(
        &mut n,
        stream,
        &[Announce06::End { id: 0 }, Announce06::End { id: 1 }],
    );
    assert_eq!(
        n.take(RELAY),
        vec![Event::Unannounced {
            interest: i,
            path: "room/bob".into()
        }]
    );
    assert_eq!(n.closed, [None, None]);
}

#[test]
fn unknown_announcement_types_are_skipped_and_take_no_id_on_06() {
    let (mut n, i, stream) = relay_interest_06();
    // Type 9, length 2, two bytes of body; then START (id 0) and END id 0.
    let mut buf = bytes::BytesMut::from(&[0x09, 0x02, 0xaa, 0xbb][..]);
    start("alice", vec![]).encode(V6, &mut buf).unwrap();
    Announce06::End { id: 0 }.encode(V6, &mut buf).unwrap();
    n.s[RELAY].on_stream_data(stream, buf.freeze());
    n.run();
    let ev = n.take(RELAY);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(
        ev[1],
        Event::Unannounced {
            interest: i,
            path: "room/alice".into()
        }
    );
    assert_eq!(n.closed, [None, None]);
}

#[test]
fn a_second_start_of_a_live_suffix_closes_a_06_session() {
    let (mut n, _i, stream) = relay_interest_06();
    feed_06(&mut n, stream, &[start("x", vec![]), start("x", vec![])]);
    assert_eq!(n.closed[RELAY], Some(ErrorCode::ProtocolViolation));
}

#[test]
fn end_or_restart_of_an_unknown_id_closes_a_06_session() {
    for bad in [
        Announce06::End { id: 3 },
        Announce06::Restart {
            id: 0,
            hops: vec![],
            cost: RouteCost::default(),
        },
    ] {
        let (mut n, _i, stream) = relay_interest_06();
        feed_06(&mut n, stream, &[bad]);
        assert_eq!(n.closed[RELAY], Some(ErrorCode::ProtocolViolation));
    }
    // A retired id is unknown too.
    let (mut n, _i, stream) = relay_interest_06();
    feed_06(
        &mut n,
        stream,
        &[
            start("x", vec![]),
            Announce06::End { id: 0 },
            Announce06::End { id: 0 },
        ],
    );
    assert_eq!(n.closed[RELAY], Some(ErrorCode::ProtocolViolation));
}

#[test]
fn the_relay_answers_a_06_announce_stream_with_typed_messages_and_ids() {
    let mut n = Net::new(V6, 64);
    n.take(RELAY);
    n.s[RELAY].announce("room/alice", &[7]).unwrap();
    n.s[RELAY].announce("room/mine", &[CLIENT_HOP]).unwrap(); // the peer's own: never sent
    n.s[RELAY].on_stream_opened(StreamId(600), true);
    // The 06 ANNOUNCE_REQUEST of spec 12.5: prefix only.
    n.s[RELAY].on_stream_data(
        StreamId(600),
        Bytes::from_static(&[0x01, 0x05, 0x04, b'r', b'o', b'o', b'm']),
    );
    // ANNOUNCE_OK hop 9, 1 active; START id 0 "alice" chain [7], costs 1/1 (one hop).
    assert_eq!(
        drain_writes(&mut n, StreamId(600)),
        [
            &[0x02, 0x09, 0x01][..],
            &[
                0x00, 0x0a, 0x05, b'a', b'l', b'i', b'c', b'e', 0x01, 0x07, 0x01, 0x01
            ],
        ]
        .concat()
    );
    // A route change is a RESTART of id 0; a new broadcast takes id 1; ends are by id.
    n.s[RELAY].announce("room/alice", &[7, 8]).unwrap();
    n.s[RELAY].announce("room/bob", &[]).unwrap();
    n.s[RELAY].unannounce("room/alice").unwrap();
    assert_eq!(
        drain_writes(&mut n, StreamId(600)),
        [
            &[0x02, 0x06, 0x00, 0x02, 0x07, 0x08, 0x02, 0x02][..],
            &[0x00, 0x07, 0x03, b'b', b'o', b'b', 0x00, 0x00, 0x00],
            &[0x01, 0x01, 0x00],
        ]
        .concat()
    );
    // Re-announcing after END takes a fresh id (2): ids are never reused.
    n.s[RELAY].announce("room/alice", &[]).unwrap();
    let w = drain_writes(&mut n, StreamId(600));
    let mut r = reader::MessageReader::new();
    r.push(&w);
    assert!(matches!(
        r.read::<Announce06>(V6).unwrap(),
        Some(Announce06::Start { suffix, .. }) if suffix == "alice"
    ));
    n.s[RELAY].unannounce("room/alice").unwrap();
    assert_eq!(drain_writes(&mut n, StreamId(600)), [0x01, 0x01, 0x02]);
}

#[test]
fn a_06_announce_request_waits_for_the_peers_setup_hop() {
    // No Setup stream from the peer yet: the request is held, then answered without the
    // broadcasts whose chain holds the peer's Hop (12.4: the only exclusion id on 06).
    let mut relay = Session::relay(V6, RELAY_HOP);
    relay.announce("mine", &[CLIENT_HOP]).unwrap();
    relay.announce("theirs", &[5]).unwrap();
    relay.on_stream_opened(StreamId(1), true);
    relay.on_stream_data(StreamId(1), Bytes::from_static(&[0x01, 0x01, 0x00]));
    let writes = |s: &mut Session| {
        let mut w = Vec::new();
        while let Some(a) = s.poll_action() {
            if let Action::Write {
                stream: StreamId(1),
                data,
            } = a
            {
                w.extend_from_slice(&data);
            }
        }
        w
    };
    assert!(writes(&mut relay).is_empty());
    relay.on_stream_opened(StreamId(3), false);
    let mut setup = bytes::BytesMut::from(&[0x01][..]);
    Setup {
        origin: Some(CLIENT_HOP),
        ..Setup::default()
    }
    .encode(V6, &mut setup)
    .unwrap();
    relay.on_stream_data(StreamId(3), setup.freeze());
    let w = writes(&mut relay);
    let mut r = reader::MessageReader::new();
    r.push(&w);
    assert_eq!(r.read::<AnnounceOk>(V6).unwrap().unwrap().active_count, 1);
    assert!(matches!(
        r.read::<Announce06>(V6).unwrap(),
        Some(Announce06::Start { suffix, .. }) if suffix == "theirs"
    ));
    assert_eq!(r.buffered(), 0);
}

#[test]
fn a_partial_group_we_never_asked_for_is_refused_on_06() {
    let (mut n, _interest, sub, _serve) = ingest(V6);
    n.take(RELAY);
    let mut buf = bytes::BytesMut::from(&[UniType::Group.id() as u8][..]);
    GroupHeader {
        subscribe_id: sub.0,
        sequence: 3,
        frame_start: 4,
    }
    .encode(V6, &mut buf)
    .unwrap();
    n.s[RELAY].on_stream_opened(StreamId(900), false);
    n.s[RELAY].on_stream_data(StreamId(900), buf.freeze());
    let mut stopped = false;
    while let Some(a) = n.s[RELAY].poll_action() {
        stopped |= matches!(
            a,
            Action::StopSending {
                stream: StreamId(900),
                code: ErrorCode::Unsupported
            }
        );
    }
    assert!(stopped);
    n.run();
    assert!(
        !n.take(RELAY)
            .iter()
            .any(|e| matches!(e, Event::GroupStarted { .. }))
    );
    assert_eq!(n.closed, [None, None]);
}

#[test]
fn control_bytes_are_counted_by_class_and_each_side_counts_what_the_other_sent() {
    for v in versions() {
        let mut counted = Vec::new();
        // One byte at a time puts a stream's type byte in a chunk of its own.
        for chunk in [1, 1500] {
            let mut n = Net::new(v, chunk);
            n.s[RELAY].announce("/room/alice/", &[]).unwrap();
            n.s[CLIENT].announce_interest("room").unwrap();
            n.run();
            n.take(RELAY);
            n.s[CLIENT]
                .subscribe("room/alice", "video", SubscribeUpdate::latest(2))
                .unwrap();
            n.run();
            let Event::SubscribeRequested { serve, .. } = n.take(RELAY).remove(0) else {
                panic!("{v}: no SubscribeRequested")
            };
            n.s[RELAY].accept_subscribe(serve).unwrap();
            let group = n.s[RELAY].start_group(serve, 0).unwrap();
            n.s[RELAY]
                .write_frame(group, 0, Bytes::from(vec![1u8; 5000]))
                .unwrap();
            n.s[RELAY].end_group(group).unwrap();
            n.run();

            let (relay, client) = (n.s[RELAY].control_bytes(), n.s[CLIENT].control_bytes());
            for class in ControlClass::ALL {
                assert_eq!(relay.sent(class), client.received(class), "{v} {class:?}");
                assert_eq!(client.sent(class), relay.received(class), "{v} {class:?}");
            }
            for class in [ControlClass::Announce, ControlClass::Subscribe] {
                assert!(
                    relay.sent(class) > 0 && client.sent(class) > 0,
                    "{v} {class:?}"
                );
            }
            assert_eq!(
                relay.sent(ControlClass::Session) > 0,
                v.is_05_or_later(),
                "{v}: SETUP is a stream of its own from 05 on"
            );
            for class in [ControlClass::Fetch, ControlClass::GoAway] {
                assert_eq!(
                    relay.sent(class) + relay.received(class),
                    0,
                    "{v} {class:?}"
                );
            }
            // The group's 5000 bytes are media: every control byte the relay sent is
            // a small message, far below the frame.
            let relay_control: u64 = relay.tx.iter().sum();
            let relay_written: usize = n.writes[RELAY].iter().map(Bytes::len).sum();
            assert!(relay_written as u64 >= relay_control + 5000, "{v}");
            assert!(relay_control < 1000, "{v}: {relay:?}");
            counted.push((relay, client));
        }
        assert_eq!(
            counted[0], counted[1],
            "{v}: the chunking changed the counts"
        );
    }
}

#[test]
fn past_the_peers_subscription_limit_a_subscribe_is_refused_and_the_session_stays() {
    for v in versions() {
        let mut n = Net::new(v, 64);
        n.s[RELAY].limit_peer(2, usize::MAX);
        let subs: Vec<_> = (0..3)
            .map(|i| {
                n.s[CLIENT]
                    .subscribe("room", &format!("t{i}"), SubscribeUpdate::latest(0))
                    .unwrap()
            })
            .collect();
        n.run();
        let asked = n
            .take(RELAY)
            .into_iter()
            .filter(|e| matches!(e, Event::SubscribeRequested { .. }))
            .count();
        assert_eq!(asked, 2, "{v}: only two reach the relay");
        assert_eq!(n.s[RELAY].subscriptions_over_limit(), 1, "{v}");
        let closed: Vec<_> = n
            .take(CLIENT)
            .into_iter()
            .filter_map(|e| match e {
                Event::SubscriptionClosed { subscription, code } => Some((subscription, code)),
                _ => None,
            })
            .collect();
        assert_eq!(
            closed,
            vec![(subs[2], Some(ErrorCode::BoundsExceeded))],
            "{v}: the third is refused with its code"
        );
        assert_eq!(n.closed, [None, None], "{v}: the session stays");
    }
}

#[test]
fn past_the_peers_broadcast_limit_an_announcement_is_ignored_and_counted() {
    for v in versions() {
        let mut n = Net::new(v, 64);
        n.s[RELAY].limit_peer(usize::MAX, 2);
        let i = n.s[RELAY].announce_interest("").unwrap();
        for path in ["a", "b", "c"] {
            n.s[CLIENT].announce(path, &[]).unwrap();
        }
        n.run();
        let announced: Vec<String> = n
            .take(RELAY)
            .into_iter()
            .filter_map(|e| match e {
                Event::Announced { interest, path, .. } if interest == i => Some(path),
                _ => None,
            })
            .collect();
        assert_eq!(announced, ["a", "b"], "{v}");
        assert_eq!(n.s[RELAY].announces_over_limit(), 1, "{v}");
        // The ignored one ending is no error; a slot freed takes the next announcement.
        n.s[CLIENT].unannounce("c").unwrap();
        n.s[CLIENT].unannounce("a").unwrap();
        n.s[CLIENT].announce("d", &[]).unwrap();
        n.run();
        let after: Vec<_> = n
            .take(RELAY)
            .into_iter()
            .filter_map(|e| match e {
                Event::Announced { path, .. } => Some(format!("+{path}")),
                Event::Unannounced { path, .. } => Some(format!("-{path}")),
                _ => None,
            })
            .collect();
        assert_eq!(after, ["-a", "+d"], "{v}");
        assert_eq!(n.closed, [None, None], "{v}");
    }
}

#[test]
fn an_ended_group_keeps_its_stream_for_a_stale_reset_and_an_open_one_does_not() {
    for v in versions() {
        let mut n = Net::new(v, 64);
        n.s[CLIENT]
            .subscribe("b", "video", SubscribeUpdate::latest(0))
            .unwrap();
        n.run();
        let Some(Event::SubscribeRequested { serve, request }) = n
            .take(RELAY)
            .into_iter()
            .find(|e| matches!(e, Event::SubscribeRequested { .. }))
        else {
            panic!("{v}: no subscription")
        };
        assert_eq!(
            n.s[RELAY].serve_max_latency(serve),
            Some(std::time::Duration::from_millis(request.max_latency_ms))
        );
        let first = n.s[RELAY].start_group(serve, 1).unwrap();
        n.s[RELAY]
            .write_frame(first, 0, Bytes::from_static(b"a"))
            .unwrap();
        n.s[RELAY].end_group(first).unwrap();
        let second = n.s[RELAY].start_group(serve, 2).unwrap();
        n.s[RELAY]
            .write_frame(second, 0, Bytes::from_static(b"b"))
            .unwrap();
        n.run();
        let stream = n.s[RELAY].take_ended_group_stream(serve, 1);
        assert!(stream.is_some(), "{v}: group 1 ended on a bound stream");
        assert_eq!(
            n.s[RELAY].take_ended_group_stream(serve, 1),
            None,
            "{v}: taken once"
        );
        assert_eq!(
            n.s[RELAY].take_ended_group_stream(serve, 2),
            None,
            "{v}: still open"
        );
    }
}
