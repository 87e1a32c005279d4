//! Stale groups (spec 8.5) through the real binary: once a newer group exists, an older
//! one still in flight to a viewer that fell behind is reset when its successor is the
//! viewer's max latency old (at least half a second), even if no further group starts.

mod common;

use std::time::Duration;

use common::cluster::session;
use common::http::start;
use common::scrape::{total, wait_for};
use interop::ConnectOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewers_old_group_is_reset_without_waiting_for_another_group() {
    let relay = start(
        "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 1\n\
         [auth]\npublic = \"\"\n[web.http]\nlisten = \"127.0.0.1:0\"\n[internal]\nlisten = \"127.0.0.1:0\"\n",
    );
    let publisher = session(&relay, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish("demo/cam", &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    // Max latency 0: the relay's floor of half a second applies.
    let stalled = common::bare::stalled_subscriber(&relay, 0).await;
    // Its SUBSCRIBE is served before the first group, so it gets both.
    wait_for(&relay, |m| {
        total(m, "moq_relay_viewers_opened_total", "") >= 1.0
    });
    // Group 0 is four times the viewer's stream window: it stays in flight.
    let frame = interop::Bytes::from(vec![7u8; 16 << 10]);
    track
        .write_group(std::iter::repeat_n(frame.clone(), 4))
        .expect("group 0");
    tokio::time::sleep(Duration::from_millis(50)).await;
    track.write_group([frame]).expect("group 1");
    // And no group after: only the passing of time makes group 0 stale.
    wait_for(&relay, |m| {
        total(m, "moq_relayd_groups_expired_total", "") >= 1.0
    });
    assert!(
        stalled.close_reason().is_none(),
        "the stalled session stays"
    );
}
