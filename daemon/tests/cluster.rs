//! Relay links through the real binary: moq-relayd processes on loopback, one dialing
//! another with `[cluster] connect` from its upstream core, and reference-client
//! publishers and subscribers on either side (spec `cluster.md` 3, 8).

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    ANY_PORT, STEP, a_frame_reaches, fixed_server, frames_until, link, next_frame, payload, relay,
    relay_config, session, subscriber,
};
use common::http::{Ops, start};
use common::scrape::{scrape, wait_for};
use interop::{ConnectOptions, TlsTrust, TrackEvent, TrackSubscriber, connect_with};
/// Groups the publisher writes, one every `GROUP_INTERVAL`, and frames in each.
const GROUPS: u64 = 15;
const FRAMES: u64 = 3;
const GROUP_INTERVAL: Duration = Duration::from_millis(100);
/// A subscriber joins at the live edge, which the first groups may pass while its
/// subscription crosses the link; from then on it must miss nothing.
const MISSABLE: u64 = 5;

/// From the first group it sees (at most `MISSABLE` in) to the last, every group whole
/// and in order, each frame's bytes as written.
async fn expect_groups(sub: &mut TrackSubscriber) {
    let mut expected: Option<(u64, u64)> = None;
    loop {
        let event = tokio::time::timeout(STEP, sub.next())
            .await
            .expect("in time")
            .expect("event");
        match event {
            TrackEvent::Frame(got) => {
                if expected.is_none() {
                    assert!(got.group <= MISSABLE, "joined at group {}", got.group);
                }
                let (group, frame) = *expected.get_or_insert((got.group, 0));
                assert_eq!((got.group, got.index), (group, frame), "frame order");
                assert_eq!(got.payload, payload(group, frame));
                expected = Some((group, frame + 1));
            }
            TrackEvent::GroupEnd { group: ended, .. } => {
                let Some((group, frames)) = expected else {
                    // The end of a group joined after its frames: not one of ours to check.
                    continue;
                };
                assert_eq!((ended, frames), (group, FRAMES), "group end");
                if group == GROUPS - 1 {
                    return;
                }
                expected = Some((group + 1, 0));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Publishes `broadcast` on `origin`, subscribes `subscribers` sessions on `edge`, and
/// checks every frame arrives in order at each.
async fn frames_cross(origin: &Ops, edge: &Ops, broadcast: &str, subscribers: usize) {
    let publisher = session(origin, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish(broadcast, &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let mut subs = Vec::new();
    for _ in 0..subscribers {
        subs.push(subscriber(edge, broadcast).await);
    }
    let writer = tokio::spawn(async move {
        for group in 0..GROUPS {
            track
                .write_group((0..FRAMES).map(|frame| payload(group, frame)))
                .expect("group");
            tokio::time::sleep(GROUP_INTERVAL).await;
        }
        track
    });
    // Every subscriber reads at once: one left unread falls behind and is skipped ahead.
    let mut readers = tokio::task::JoinSet::new();
    for (session, mut sub) in subs {
        readers.spawn(async move {
            expect_groups(&mut sub).await;
            drop(sub);
            session.close().await;
        });
    }
    while let Some(read) = readers.join_next().await {
        read.expect("a subscriber saw every group in order");
    }
    let _track = writer.await.expect("writer");
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_relay_serves_its_subscribers_from_one_upstream_subscription() {
    let origin = relay(1, &[]);
    let leaf = relay(2, &[&origin]);
    leaf.relay.wait_for_line("cluster link established");

    frames_cross(&origin, &leaf, "demo/cam", 10).await;

    // Ten subscribers over the leaf's two workers; the origin served one subscription:
    // the leaf's link (role "publisher" counts the subscriptions the relay serves).
    let served = "moq_relay_subscriptions_opened_total{tier=\"\",role=\"publisher\"}";
    let leaf_metrics = wait_for(&leaf, |m| m.get(served).copied() == Some(10.0));
    assert_eq!(leaf_metrics[served], 10.0);
    // And the leaf made one subscription upstream, on its link (role "subscriber"
    // counts the subscriptions the relay makes; the upstream core's count in).
    let made = "moq_relay_subscriptions_opened_total{tier=\"\",role=\"subscriber\"}";
    assert_eq!(
        leaf_metrics[made], 1.0,
        "one upstream subscription for ten subscribers"
    );
    let origin_metrics = scrape(&origin);
    assert_eq!(
        origin_metrics[served], 1.0,
        "the origin served the link alone"
    );

    // The leaf's view of its link: `/nodes` (0.17's shape with 0.14's fields) and rows.
    let peer = format!("https://{}/", origin.quic);
    let nodes = common::http::get(leaf.internal, "/nodes");
    assert_eq!(nodes.status, 200);
    let nodes: serde_json::Value = serde_json::from_str(&nodes.body).unwrap();
    assert_eq!(nodes["nodes"][0]["node"], peer.as_str(), "{nodes}");
    assert_eq!(nodes["nodes"][0]["connections"][0]["direction"], "outbound");
    assert_eq!(
        common::http::get(origin.internal, "/nodes").body,
        r#"{"nodes":[]}"#
    );
    let up = format!("moq_relayd_cluster_link_up{{peer=\"{peer}\"}}");
    let dials = format!("moq_relayd_cluster_link_dials_total{{peer=\"{peer}\"}}");
    assert_eq!(leaf_metrics[&up], 1.0);
    assert_eq!(leaf_metrics[&dials], 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_carries_broadcasts_both_ways() {
    let origin = relay(1, &[]);
    let leaf = relay(2, &[&origin]);
    leaf.relay.wait_for_line("cluster link established");
    // A publisher on the dialing side reaches a subscriber on the accepting side.
    frames_cross(&leaf, &origin, "from/leaf", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_three_relays_carries_every_frame_and_announces_nothing_back() {
    let origin = relay(1, &[]);
    let middle = relay(2, &[&origin]);
    let leaf = relay(3, &[&middle]);
    middle.relay.wait_for_line("cluster link established");
    leaf.relay.wait_for_line("cluster link established");

    frames_cross(&origin, &leaf, "demo/chain", 50).await;

    // One subscription per hop: the origin served the middle's link, the middle the
    // leaf's link, the leaf its fifty subscribers.
    let served = "moq_relay_subscriptions_opened_total{tier=\"\",role=\"publisher\"}";
    assert_eq!(scrape(&origin)[served], 1.0, "origin");
    assert_eq!(scrape(&middle)[served], 1.0, "middle");
    assert_eq!(scrape(&leaf)[served], 50.0, "leaf");
    // Announces made at the origin: its one publisher, never one reflected back down the
    // chain (they are counted as a session publishes).
    let started = "moq_relay_announces_started_total{tier=\"\",role=\"subscriber\"}";
    assert_eq!(scrape(&origin)[started], 1.0, "origin announces");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_origin_is_redialed_and_its_subscribers_resume() {
    // The origin keeps its port and certificate across the restart.
    let dir = tempfile::TempDir::new().unwrap();
    let server = fixed_server(dir.path());
    let origin = start(&relay_config(1, &[], &server));
    let leaf = relay(2, &[&origin]);
    leaf.relay.wait_for_line("cluster link established");
    let publisher = session(&origin, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/cam", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let (_subscriber, mut sub) = subscriber(&leaf, "demo/cam").await;
    track.write_group([payload(0, 0)]).expect("group");
    next_frame(&mut sub).await;

    // The origin dies with its publisher, saying nothing; the leaf learns it when the
    // link goes silent (5 s). The origin comes back on the same port, and so does the
    // publisher. The leaf redials (1 s backoff, doubling) and its subscriber, still
    // subscribed (the broadcast lingers 10 s), gets the new publisher's frames.
    drop(origin);
    drop(publisher);
    let restarted = Instant::now();
    let origin = start(&relay_config(1, &[], &server));
    let publisher = session(&origin, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/cam", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    leaf.relay.wait_for_line("cluster link established");
    a_frame_reaches(track, &mut sub).await;
    let resumed = restarted.elapsed();
    let failures = format!(
        "moq_relayd_cluster_link_failures_total{{peer=\"https://{}/\"}}",
        origin.quic
    );
    assert!(scrape(&leaf)[&failures] >= 1.0, "the lost link was counted");
    // Silence bound (5 s) + two redials (at most 1 s and 2 s) + 1 s.
    assert!(
        resumed < Duration::from_secs(9),
        "resumed after {resumed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_presents_the_cluster_token_and_a_refused_one_is_retried() {
    use moq_token::{Algorithm, Claims, Key, KeyId};
    let dir = tempfile::TempDir::new().unwrap();
    let key = Key::generate(Algorithm::HS256, Some(KeyId::decode("cluster").unwrap())).unwrap();
    let key_path = dir.path().join("cluster.jwk");
    std::fs::write(&key_path, serde_json::to_string(&key).unwrap()).unwrap();
    let everything = Claims::default()
        .with_root("")
        .with_publish([""])
        .with_subscribe([""]);
    let token_path = dir.path().join("cluster.jwt");
    std::fs::write(&token_path, key.sign(&everything).unwrap()).unwrap();
    let stranger = Key::generate(Algorithm::HS256, None).unwrap();
    let bad_token_path = dir.path().join("bad.jwt");
    std::fs::write(&bad_token_path, stranger.sign(&everything).unwrap()).unwrap();

    // The origin admits no one without a token; its own clients carry one too.
    let origin = start(
        &relay_config(
            1,
            &[],
            "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n",
        )
        .replace(
            "public = \"\"",
            &format!("key = {:?}", key_path.display().to_string()),
        ),
    );
    let with_token = |token: &std::path::Path| {
        relay_config(2, &[link(&origin, 0)], ANY_PORT).replace(
            "linger = \"10s\"\n",
            &format!(
                "linger = \"10s\"\ntoken = {:?}\n",
                token.display().to_string()
            ),
        )
    };
    let refused = start(&with_token(&bad_token_path));
    refused.relay.wait_for_line("cluster link down; redialing");
    refused.relay.wait_for_line("cluster link down; redialing");
    drop(refused);

    let leaf = start(&with_token(&token_path));
    leaf.relay.wait_for_line("cluster link established");
    // The origin's publisher presents the same token in its URL.
    let token = std::fs::read_to_string(&token_path).unwrap();
    let url = format!("https://{}/?jwt={token}", origin.quic);
    let publisher = connect_with(
        &url,
        ConnectOptions::new(TlsTrust::Fingerprint(origin.fingerprint.clone())).publish_only(),
    )
    .await
    .expect("publisher with a token");
    let (_broadcast, mut tracks) = publisher.publish("demo/cam", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let (_subscriber, mut sub) = subscriber(&leaf, "demo/cam").await;
    a_frame_reaches(track, &mut sub).await;
}

/// No frame came twice, and each group's frames came in order. (Groups are streams of
/// their own, which QUIC does not order among themselves.)
fn assert_no_frame_twice(seen: &[(u64, u64, Instant)]) {
    let mut next_index: std::collections::HashMap<u64, u64> = Default::default();
    for &(group, index, _) in seen {
        let next = next_index.entry(group).or_insert(index);
        assert_eq!(
            index, *next,
            "frame {group}.{index}: a group came twice, or out of order"
        );
        *next += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_triangle_a_standby_route_takes_over_and_a_rejoined_relay_wins_back() {
    // A (1) holds the publisher. B (2) dials A. C (3) dials B at cost 0 and A at cost 10:
    // C feeds from the longer but cheaper route through B, and keeps A's as a standby.
    let a = relay(1, &[]);
    let b_dir = tempfile::TempDir::new().unwrap();
    let b_server = fixed_server(b_dir.path());
    let b = start(&relay_config(2, &[link(&a, 0)], &b_server));
    let (b_addr, b_pin) = (b.quic, b.fingerprint.clone());
    let c_links = [(b_addr, b_pin.as_str(), 0), link(&a, 10)];
    let c = start(&relay_config(3, &c_links, ANY_PORT));
    b.relay.wait_for_line("cluster link established");
    c.relay.wait_for_line("cluster link established");
    c.relay.wait_for_line("cluster link established");

    let publisher = session(&a, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/tri", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let writer = tokio::spawn(async move {
        // Bounded: far longer than the test needs.
        for group in 0..600 {
            track
                .write_group((0..FRAMES).map(|frame| payload(group, frame)))
                .expect("group");
            tokio::time::sleep(GROUP_INTERVAL).await;
        }
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut sessions = Vec::new();
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (session, sub) = subscriber(&c, "demo/tri").await;
        sessions.push(session);
        readers.spawn(frames_until(sub, stopped.clone()));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // One subscription per hop, through B; each announcement arrived once per link and
    // nothing came back around the triangle.
    let served = "moq_relay_subscriptions_opened_total{tier=\"\",role=\"publisher\"}";
    assert_eq!(scrape(&a)[served], 1.0, "A served B's link alone");
    assert_eq!(scrape(&b)[served], 1.0, "B served C's link alone");
    assert_eq!(scrape(&c)[served], 50.0);
    let made = "moq_relay_subscriptions_opened_total{tier=\"\",role=\"subscriber\"}";
    assert_eq!(scrape(&c)[made], 1.0, "C subscribed upstream once");
    // Announcements heard, and those still live: A only its publisher's (every route
    // elsewhere runs through A); B A's link's, and C's offer of its route through A for
    // as long as C used that route; C one route per link.
    let started = "moq_relay_announces_started_total{tier=\"\",role=\"subscriber\"}";
    let ended = "moq_relay_announces_ended_total{tier=\"\",role=\"subscriber\"}";
    let live = |ops: &Ops| {
        let metrics = scrape(ops);
        (metrics[started], metrics[started] - metrics[ended])
    };
    assert_eq!(live(&a), (1.0, 1.0), "A");
    let (heard, held) = live(&b);
    assert!(heard <= 2.0 && held == 1.0, "B heard {heard}, holds {held}");
    assert_eq!(live(&c), (2.0, 2.0), "C");
    // (C may have heard A's route first and moved to B's cheaper one once it came.)
    let reroutes = "moq_relayd_broadcast_reroutes_total";
    let settled = scrape(&c)[reroutes];
    assert!(settled <= 1.0, "{settled} reroutes before anything failed");

    // B dies saying nothing: C hears its link go silent (5 s after its next keep-alive)
    // and moves the broadcast to A's route; its subscribers stay subscribed.
    drop(b);
    let killed = Instant::now();
    wait_for(&c, |m| m.get(reroutes) == Some(&(settled + 1.0)));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // B comes back on its port and certificate; C redials it and the cheaper route
    // through B wins again.
    let b = start(&relay_config(2, &[link(&a, 0)], &b_server));
    b.relay.wait_for_line("cluster link established");
    wait_for(&c, |m| m.get(reroutes) == Some(&(settled + 2.0)));
    let rejoined = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.send(true).unwrap();

    // C's link to B is declared dead after its idle timeout, counted from C's first
    // keep-alive after B's last packet (RFC 9000 10.1): at most idle + keep-alive.
    let silence = moq_relayd::cluster::LINK_IDLE_TIMEOUT + moq_relayd::cluster::LINK_KEEP_ALIVE;
    let mut slowest = Duration::ZERO;
    while let Some(read) = readers.join_next().await {
        let seen = read.expect("a subscriber read");
        assert_no_frame_twice(&seen);
        let after_kill = seen
            .iter()
            .find(|(_, _, at)| *at > killed + Duration::from_millis(100))
            .expect("frames after B died");
        let gap = after_kill.2 - killed;
        slowest = slowest.max(gap);
        assert!(
            gap < silence + Duration::from_secs(1),
            "frames resumed {gap:?} after B died"
        );
        assert!(
            seen.iter().any(|(_, _, at)| *at > rejoined),
            "frames after B rejoined"
        );
    }
    eprintln!("failover: the last of 50 subscribers had frames again {slowest:?} after B died");
    writer.abort();
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_presents_its_client_certificate_to_a_peer_that_admits_relays_by_it() {
    // The origin admits everyone to `anon/` only; a certificate from its CA gets
    // everything (spec `auth.md` 11, `cluster.md` 4). The publisher has one.
    let pki = common::pki::Pki::new();
    let origin_server = format!(
        "{ANY_PORT}tls.root = [{:?}]\n",
        pki.ca.display().to_string()
    );
    let origin =
        start(&relay_config(1, &[], &origin_server).replace("public = \"\"", "public = \"anon\""));
    let publisher_cert = pki.client("publisher", Duration::from_secs(3600));
    let publisher = connect_with(
        &format!("https://{}/", origin.quic),
        ConnectOptions::new(TlsTrust::Fingerprint(origin.fingerprint.clone()))
            .with_client_identity(&publisher_cert.cert, &publisher_cert.key)
            .publish_only(),
    )
    .await
    .expect("publisher with a certificate");
    let (_broadcast, mut tracks) = publisher.publish("demo/cam", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();

    // Without a certificate the link is a public session: `demo/cam` never crosses.
    let stranger = relay(2, &[&origin]);
    stranger.relay.wait_for_line("cluster link established");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let announced = common::http::get(stranger.web, "/announced");
    assert!(
        !announced.body.contains("demo/cam"),
        "crossed without a certificate: {}",
        announced.body
    );

    let relay_cert = pki.client("leaf", Duration::from_secs(3600));
    let leaf = start(&format!(
        "{}cert = {:?}\nkey = {:?}\n",
        relay_config(3, &[link(&origin, 0)], ANY_PORT),
        relay_cert.cert.display().to_string(),
        relay_cert.key.display().to_string()
    ));
    leaf.relay.wait_for_line("cluster link established");
    let (_subscriber, mut sub) = subscriber(&leaf, "demo/cam").await;
    a_frame_reaches(track, &mut sub).await;
}
