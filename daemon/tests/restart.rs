//! Restarts under load, through the real binary: SIGHUP (re-read the file, reload keys
//! and certificates) loses no frame of a running flow; kill -9 loses the sessions, and
//! after a restart on the same port and certificate, reference clients that reconnect
//! resume.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    ANY_PORT, fixed, frame_ids, frames_until, payload, relay_config, session, subscriber,
};
use common::http::{Ops, start};
use interop::{ConnectOptions, TrackSubscriber};

const SUBSCRIBERS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_under_load_loses_no_frame() {
    let relay = start(&relay_config(1, &[], ANY_PORT));
    let publisher = session(&relay, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/cam", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut readers = tokio::task::JoinSet::new();
    let mut sessions = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let (session, sub) = subscriber(&relay, "demo/cam").await;
        sessions.push(session);
        readers.spawn(frames_until(sub, stopped.clone()));
    }
    let writer = tokio::spawn(async move {
        for group in 0..60 {
            track
                .write_group((0..2).map(|frame| payload(group, frame)))
                .expect("group");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        track
    });
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        relay.relay.signal(libc::SIGHUP);
        relay
            .relay
            .wait_for_line("SIGHUP: certificate reloaded for new connections");
    }
    let _track = writer.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    while let Some(seen) = readers.join_next().await {
        let seen = frame_ids(&seen.unwrap());
        let first = seen.first().expect("frames").0;
        let want: Vec<(u64, u64)> = (first..60)
            .flat_map(|group| (0..2).map(move |frame| (group, frame)))
            .collect();
        assert_eq!(seen, want, "a subscriber lost frames across the reloads");
    }
}

/// Connects (retrying while the relay is away, for at most 20 s) and subscribes.
async fn resubscribe(relay: &Ops) -> (interop::Session, TrackSubscriber) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // `subscriber` panics on a failed connect: try it on a task of its own.
        let (quic, fingerprint) = (relay.quic, relay.fingerprint.clone());
        let attempt = tokio::spawn(async move {
            let url = format!("https://{quic}/");
            let options =
                ConnectOptions::new(interop::TlsTrust::Fingerprint(fingerprint)).subscribe_only("");
            let session = interop::connect_with(&url, options).await.ok()?;
            let mut announced = session.announcements().ok()?;
            tokio::time::timeout(Duration::from_secs(5), announced.wait_announced("demo/cam"))
                .await
                .ok()?
                .ok()?;
            let sub = session.subscribe("demo/cam", "video").await.ok()?;
            Some((session, sub))
        });
        match attempt.await {
            Ok(Some(pair)) => return pair,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => panic!("no subscription within 20 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_and_a_restart_clients_that_reconnect_resume() {
    let dir = tempfile::TempDir::new().unwrap();
    let site = fixed(dir.path());
    let config = relay_config(1, &[], &site.server);
    let relay = start(&config);

    // Before: a flow with subscribers reading.
    let publisher = session(&relay, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/cam", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let mut subs = Vec::new();
    for _ in 0..SUBSCRIBERS {
        subs.push(subscriber(&relay, "demo/cam").await);
    }
    track.write_group([payload(0, 0)]).expect("group");
    for (_, sub) in &mut subs {
        common::cluster::next_frame(sub).await;
    }

    // kill -9: no GOAWAY, no close. The same binary comes back on the same port and
    // certificate.
    relay.relay.signal(libc::SIGKILL);
    drop((subs, track, publisher));
    let relay = start(&config);
    let restarted = Instant::now();

    let publisher = session(&relay, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/cam", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let writer = tokio::spawn(async move {
        for group in 1..200 {
            track.write_group([payload(group, 0)]).expect("group");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut resumed = tokio::task::JoinSet::new();
    for _ in 0..SUBSCRIBERS {
        let (session, mut sub) = resubscribe(&relay).await;
        resumed.spawn(async move {
            common::cluster::next_frame(&mut sub).await;
            drop(session);
        });
    }
    while let Some(done) = resumed.join_next().await {
        done.expect("a reconnected subscriber got frames again");
    }
    let took = restarted.elapsed();
    eprintln!(
        "restart: {SUBSCRIBERS} subscribers reading again {took:?} after the relay came back"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    writer.abort();
}
