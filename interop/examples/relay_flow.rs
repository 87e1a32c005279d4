//! One broadcast across two relays, for scripts that link different relays
//! (`interop/cluster-compare.sh`): a reference-client publisher on one, a subscriber on
//! the other, and a line saying whether every group came through.
//!
//! ```text
//! cargo run -p interop --example relay_flow -- PUB_URL PUB_FINGERPRINT SUB_URL SUB_FINGERPRINT NAME
//! ```
//!
//! Prints `ok NAME groups=N` (exit 0) or `failed NAME: why` (exit 1). The subscriber
//! waits for the announcement (it crosses the link), subscribes, and then needs every
//! group from the first it sees to the last, in order and whole.

use std::process::ExitCode;
use std::time::Duration;

use interop::{Bytes, ConnectOptions, TlsTrust, TrackEvent, connect_with};

/// Groups written, one every `INTERVAL`, and frames in each.
const GROUPS: u64 = 20;
const FRAMES: u64 = 3;
const INTERVAL: Duration = Duration::from_millis(100);
/// A subscriber may join this many groups late (its subscription crosses the link).
const MISSABLE: u64 = 8;
/// Bound on each step.
const STEP: Duration = Duration::from_secs(20);

fn payload(group: u64, frame: u64) -> Bytes {
    Bytes::from(format!("{group}/{frame}").into_bytes())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pub_url, pub_pin, sub_url, sub_pin, name] = args.as_slice() else {
        eprintln!("usage: relay_flow PUB_URL PUB_FINGERPRINT SUB_URL SUB_FINGERPRINT NAME");
        return ExitCode::from(2);
    };
    match flow(pub_url, pub_pin, sub_url, sub_pin, name).await {
        Ok(groups) => {
            println!("ok {name} groups={groups}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("failed {name}: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn flow(
    pub_url: &str,
    pub_pin: &str,
    sub_url: &str,
    sub_pin: &str,
    name: &str,
) -> Result<u64, String> {
    let publisher = connect_with(
        pub_url,
        ConnectOptions::new(TlsTrust::Fingerprint(pub_pin.to_owned())).publish_only(),
    )
    .await
    .map_err(|err| format!("publisher: {err}"))?;
    let (_broadcast, mut tracks) = publisher
        .publish(name, &["video"])
        .map_err(|err| format!("publish: {err}"))?;
    let track = tracks.pop().ok_or("no track")?;
    let subscriber = connect_with(
        sub_url,
        ConnectOptions::new(TlsTrust::Fingerprint(sub_pin.to_owned())).subscribe_only(""),
    )
    .await
    .map_err(|err| format!("subscriber: {err}"))?;
    let mut announced = subscriber
        .announcements()
        .map_err(|err| format!("announcements: {err}"))?;
    tokio::time::timeout(STEP, announced.wait_announced(name))
        .await
        .map_err(|_| "not announced across the link in time".to_owned())?
        .map_err(|err| format!("announced: {err}"))?;
    let mut sub = subscriber
        .subscribe(name, "video")
        .await
        .map_err(|err| format!("subscribe: {err}"))?;
    let writer = tokio::spawn(async move {
        for group in 0..GROUPS {
            if track
                .write_group((0..FRAMES).map(|frame| payload(group, frame)))
                .is_err()
            {
                return;
            }
            tokio::time::sleep(INTERVAL).await;
        }
    });
    let mut expected: Option<(u64, u64)> = None;
    let mut groups = 0;
    loop {
        let event = tokio::time::timeout(STEP, sub.next())
            .await
            .map_err(|_| format!("stalled after {groups} groups"))?
            .map_err(|err| format!("track: {err}"))?;
        match event {
            TrackEvent::Frame(frame) => {
                if expected.is_none() && frame.group > MISSABLE {
                    return Err(format!("joined at group {}", frame.group));
                }
                let (group, index) = *expected.get_or_insert((frame.group, 0));
                if (frame.group, frame.index) != (group, index)
                    || frame.payload != payload(group, index)
                {
                    return Err(format!(
                        "expected group {group} frame {index}, got group {} frame {}",
                        frame.group, frame.index
                    ));
                }
                expected = Some((group, index + 1));
            }
            TrackEvent::GroupEnd { group, .. } => {
                let Some((want, frames)) = expected else {
                    continue;
                };
                if (group, frames) != (want, FRAMES) {
                    return Err(format!("group {group} ended after {frames} frames"));
                }
                groups += 1;
                if group == GROUPS - 1 {
                    break;
                }
                expected = Some((group + 1, 0));
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    writer.abort();
    subscriber.close().await;
    publisher.close().await;
    Ok(groups)
}
