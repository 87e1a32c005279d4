//! The subscribing side: announcement discovery under a prefix and track
//! subscriptions, read through the reference client's consumers. It owns turning the
//! client's cursors into plain events (`announced demo/a`, `frame 3 of group 7`,
//! `track finished`), each wait bounded; it must never reorder or drop what the client
//! delivers, since tests compare it byte for byte with what was published.

use std::time::Duration;

use bytes::Bytes;
use moq_net::announce::Kind as AnnounceKind;

use crate::error::{Error, bounded};

/// Frames we accept in one group before calling the relay broken; a test group has a
/// handful, a video GOP a few hundred.
pub const MAX_FRAMES_PER_GROUP: u64 = 1 << 16;

/// A change in what is announced under the subscribe prefix. Paths are absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnnounceEvent {
    /// A broadcast became available.
    Announced(String),
    /// The route to an announced broadcast changed (hops or cost); it is still there.
    Updated(String),
    /// The broadcast is no longer available.
    Ended(String),
}

impl AnnounceEvent {
    /// The broadcast path the event is about.
    pub fn path(&self) -> &str {
        match self {
            Self::Announced(path) | Self::Updated(path) | Self::Ended(path) => path,
        }
    }
}

/// Announcements under the session's subscribe prefix, in the order the client saw
/// them (those already known first).
pub struct Announcements {
    inner: moq_net::announce::Consumer,
    timeout: Duration,
}

impl Announcements {
    pub(crate) fn new(inner: moq_net::announce::Consumer, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    /// The next event, waiting at most the session's op timeout.
    pub async fn next(&mut self) -> Result<AnnounceEvent, Error> {
        let timeout = self.timeout;
        self.next_within(timeout)
            .await?
            .ok_or_else(|| Error::Timeout {
                what: "an announcement".into(),
                after: timeout,
            })
    }

    /// The next event, or `None` if nothing arrives within `within`: the way to check
    /// that something is *not* announced.
    pub async fn next_within(&mut self, within: Duration) -> Result<Option<AnnounceEvent>, Error> {
        match tokio::time::timeout(within, self.inner.next()).await {
            Err(_) => Ok(None),
            Ok(None) => Err(Error::Closed("announcement feed")),
            Ok(Some(update)) => {
                let path = update.prefix.as_str().to_owned();
                Ok(Some(match update.kind {
                    AnnounceKind::Announced => AnnounceEvent::Announced(path),
                    AnnounceKind::Updated => AnnounceEvent::Updated(path),
                    AnnounceKind::Retracted => AnnounceEvent::Ended(path),
                }))
            }
        }
    }

    /// Skip events until `path` is announced (bounded by the op timeout overall).
    pub async fn wait_announced(&mut self, path: &str) -> Result<(), Error> {
        self.wait_for(AnnounceEvent::Announced(path.to_owned()))
            .await
    }

    /// Skip events until `path` ends (bounded by the op timeout overall).
    pub async fn wait_ended(&mut self, path: &str) -> Result<(), Error> {
        self.wait_for(AnnounceEvent::Ended(path.to_owned())).await
    }

    async fn wait_for(&mut self, wanted: AnnounceEvent) -> Result<(), Error> {
        let timeout = self.timeout;
        let what = format!("{wanted:?}");
        bounded(|| what, timeout, async {
            while let Some(update) = self.inner.next().await {
                let path = update.prefix.as_str();
                let hit = match &wanted {
                    AnnounceEvent::Announced(p) | AnnounceEvent::Updated(p) => {
                        update.kind.is_active() && p == path
                    }
                    AnnounceEvent::Ended(p) => !update.kind.is_active() && p == path,
                };
                if hit {
                    return Ok(());
                }
            }
            Err(Error::Closed("announcement feed"))
        })
        .await?
    }
}

/// How to subscribe. The default never skips a group locally unless it is 30 s stale.
/// Where delivery starts is the publisher's choice: up to 05 the newest group; on 06
/// the oldest group still within `max_age`.
#[derive(Clone, Copy, Debug)]
pub struct SubscribeOptions {
    /// Subscriber priority on the wire (higher first).
    pub priority: u8,
    /// Subscriber max age (max latency on 05). The reference client skips, locally,
    /// any group that falls further behind the newest than this in media time, and its
    /// default is zero (live edge only); we default to 30 s so a test sees every
    /// group. Clamped by the client to the track's publisher max age.
    pub max_age: Duration,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            priority: 0,
            max_age: Duration::from_secs(30),
        }
    }
}

/// One frame as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Group sequence number.
    pub group: u64,
    /// Index of the frame inside its group, from 0.
    pub index: u64,
    /// The frame's timestamp in milliseconds (before 05, which carries none, the client
    /// stamps the time the frame arrived).
    pub timestamp_ms: u64,
    /// The payload.
    pub payload: Bytes,
}

impl Received {
    fn new(group: u64, index: u64, frame: moq_net::frame::Frame) -> Self {
        Self {
            group,
            index,
            timestamp_ms: u64::try_from(frame.timestamp.as_millis()).unwrap_or(u64::MAX),
            payload: frame.payload,
        }
    }
}

/// How a track ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackEnd {
    /// The publisher finished it (05: SUBSCRIBE_END, then FIN).
    Finished,
    /// It was aborted: reset by the relay, the publisher gone, or the session closed.
    /// The text is the client's error.
    Aborted(String),
}

/// What [`TrackSubscriber::next`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackEvent {
    /// The next frame of the group being read.
    Frame(Received),
    /// The group ended cleanly after `frames` frames.
    GroupEnd { group: u64, frames: u64 },
    /// The group stream was reset after `frames` frames; the track goes on.
    GroupReset {
        group: u64,
        frames: u64,
        reason: String,
    },
    /// The track is over; every later call returns this again.
    End(TrackEnd),
}

/// A subscription to one track. Groups are read one at a time in the order the client
/// received them, each from its first frame to its end, so frames of one group always
/// come out in order.
pub struct TrackSubscriber {
    broadcast: moq_net::broadcast::Consumer,
    track: String,
    inner: moq_net::track::Subscriber,
    current: Option<(moq_net::group::Consumer, u64)>,
    end: Option<TrackEnd>,
    timeout: Duration,
    label: String,
}

impl TrackSubscriber {
    pub(crate) async fn open(
        origin: &moq_net::origin::Consumer,
        broadcast: &str,
        track: &str,
        options: SubscribeOptions,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let label = format!("{broadcast}/{track}");
        // `routed_broadcast` waits for the announcement; a bare request fails at once
        // with Unroutable when the announcement has not arrived yet.
        let consumer = bounded(
            || format!("broadcast {broadcast:?} to be announced"),
            timeout,
            origin.routed_broadcast(broadcast),
        )
        .await?
        .map_err(|err| Error::moq(format!("resolving broadcast {broadcast:?}"), err))?;
        let track_consumer = consumer
            .track(track)
            .map_err(|err| Error::moq(format!("looking up track {label:?}"), err))?;
        let subscription = moq_net::track::Subscription::default()
            .with_priority(options.priority)
            .with_max_age(options.max_age);
        let inner = bounded(
            || format!("subscription to {label:?} to be accepted"),
            timeout,
            track_consumer.subscribe(subscription),
        )
        .await?
        .map_err(|err| Error::moq(format!("subscribing to {label:?}"), err))?;
        Ok(Self {
            broadcast: consumer,
            track: track.to_owned(),
            inner,
            current: None,
            end: None,
            timeout,
            label,
        })
    }

    /// One past group of this track, whole: from the client's own cache if it holds the
    /// group, otherwise by a moq-lite FETCH (05) to the peer. Waits at most the session's
    /// op timeout. A refused fetch is an `Error::Moq`.
    pub async fn fetch_group(&self, sequence: u64) -> Result<Vec<Received>, Error> {
        let label = &self.label;
        let track = self
            .broadcast
            .track(&self.track)
            .map_err(|err| Error::moq(format!("looking up track {label:?}"), err))?;
        let mut group = bounded(
            || format!("a fetch of group {sequence} of {label:?}"),
            self.timeout,
            track.fetch_group(sequence, None),
        )
        .await?
        .map_err(|err| Error::moq(format!("fetching group {sequence} of {label:?}"), err))?;
        let mut frames = Vec::new();
        loop {
            let index = frames.len() as u64;
            if index > MAX_FRAMES_PER_GROUP {
                return Err(Error::Limit(format!(
                    "fetched group {sequence} of {label:?} has more than {MAX_FRAMES_PER_GROUP} frames"
                )));
            }
            let read = bounded(
                || format!("frame {index} of fetched group {sequence} of {label:?}"),
                self.timeout,
                group.read_frame(),
            )
            .await?
            .map_err(|err| Error::moq(format!("reading fetched group {sequence}"), err))?;
            let Some(frame) = read else {
                return Ok(frames);
            };
            frames.push(Received::new(sequence, index, frame));
        }
    }

    /// The next event, waiting at most the session's op timeout.
    pub async fn next(&mut self) -> Result<TrackEvent, Error> {
        let timeout = self.timeout;
        self.next_within(timeout).await
    }

    /// The next event, waiting at most `within`.
    pub async fn next_within(&mut self, within: Duration) -> Result<TrackEvent, Error> {
        if let Some(end) = &self.end {
            return Ok(TrackEvent::End(end.clone()));
        }
        let label = &self.label;
        if self.current.is_none() {
            let next = bounded(
                || format!("the next group of {label:?}"),
                within,
                self.inner.recv_group(),
            )
            .await?;
            match next {
                Ok(Some(group)) => self.current = Some((group, 0)),
                Ok(None) => return Ok(self.finish(TrackEnd::Finished)),
                Err(err) => return Ok(self.finish(TrackEnd::Aborted(err.to_string()))),
            }
        }
        let Some((group, index)) = self.current.as_mut() else {
            return Err(Error::Closed("group"));
        };
        let sequence = group.sequence;
        let read = bounded(
            || format!("frame {index} of group {sequence} of {label:?}"),
            within,
            group.read_frame(),
        )
        .await?;
        match read {
            Ok(Some(frame)) => {
                if *index >= MAX_FRAMES_PER_GROUP {
                    return Err(Error::Limit(format!(
                        "group {sequence} of {label:?} has more than {MAX_FRAMES_PER_GROUP} frames"
                    )));
                }
                let received = Received::new(sequence, *index, frame);
                *index += 1;
                Ok(TrackEvent::Frame(received))
            }
            Ok(None) => {
                let frames = *index;
                self.current = None;
                Ok(TrackEvent::GroupEnd {
                    group: sequence,
                    frames,
                })
            }
            Err(err) => {
                let frames = *index;
                self.current = None;
                Ok(TrackEvent::GroupReset {
                    group: sequence,
                    frames,
                    reason: err.to_string(),
                })
            }
        }
    }

    /// Read the rest of the current group, or the whole next one. Returns the group
    /// sequence and its frames, or the track's end. A reset group is returned with the
    /// frames that arrived and `complete == false`.
    pub async fn next_group(&mut self) -> Result<Result<ReceivedGroup, TrackEnd>, Error> {
        let mut frames = Vec::new();
        loop {
            match self.next().await? {
                TrackEvent::Frame(frame) => frames.push(frame.payload),
                TrackEvent::GroupEnd { group, .. } => {
                    return Ok(Ok(ReceivedGroup {
                        sequence: group,
                        frames,
                        complete: true,
                    }));
                }
                TrackEvent::GroupReset { group, .. } => {
                    return Ok(Ok(ReceivedGroup {
                        sequence: group,
                        frames,
                        complete: false,
                    }));
                }
                TrackEvent::End(end) => return Ok(Err(end)),
            }
        }
    }

    /// Wait (bounded by `within`) for the broadcast this track belongs to to end, as
    /// when its publisher leaves or crashes. Returns the client's reason.
    pub async fn broadcast_ended(&self, within: Duration) -> Result<String, Error> {
        let label = &self.label;
        let reason = bounded(
            || format!("the broadcast of {label:?} to end"),
            within,
            self.broadcast.closed(),
        )
        .await?;
        Ok(reason.to_string())
    }

    fn finish(&mut self, end: TrackEnd) -> TrackEvent {
        self.end = Some(end.clone());
        TrackEvent::End(end)
    }
}

/// A whole group as read by [`TrackSubscriber::next_group`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedGroup {
    /// Group sequence number.
    pub sequence: u64,
    /// Frame payloads in order.
    pub frames: Vec<Bytes>,
    /// False if the group stream was reset before its end.
    pub complete: bool,
}
