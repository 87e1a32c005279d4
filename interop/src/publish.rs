//! The publishing side: a broadcast, its tracks and their groups, written through the
//! reference client's producers. It owns frame timestamps (milliseconds since the
//! track was created, so the client's max-age logic sees real media time) and must
//! never block: writes land in the client's cache and go out as the relay reads them.

use std::time::Instant;

use bytes::Bytes;
use moq_net::Timestamp;

use crate::error::Error;

/// A broadcast this session publishes. Dropping it, or [`BroadcastPublisher::finish`],
/// unannounces it.
pub struct BroadcastPublisher {
    path: String,
    inner: moq_net::broadcast::Producer,
}

impl BroadcastPublisher {
    pub(crate) fn new(path: String, inner: moq_net::broadcast::Producer) -> Self {
        Self { path, inner }
    }

    /// The broadcast path, relative to the session's root.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Add a track with the client's default track info (priority 127, millisecond
    /// timescale, default max age).
    pub fn create_track(&self, name: &str) -> Result<TrackPublisher, Error> {
        let inner = self.inner.create_track(name, None).map_err(|err| {
            Error::moq(format!("creating track {name:?} in {:?}", self.path), err)
        })?;
        Ok(TrackPublisher {
            name: name.to_owned(),
            inner,
            epoch: Instant::now(),
        })
    }

    /// Advertise the broadcast to the relay (ANNOUNCE active).
    pub fn announce(&self) -> Result<(), Error> {
        self.inner
            .announce(Default::default())
            .map_err(|err| Error::moq(format!("announcing {:?}", self.path), err))
    }

    /// Withdraw the advertisement but keep the broadcast (ANNOUNCE ended).
    pub fn unannounce(&self) {
        self.inner.unannounce();
    }

    /// End the broadcast cleanly: unannounce; tracks already subscribed end with their
    /// own finish.
    pub fn finish(self) {
        self.inner.close();
    }
}

/// One track of a published broadcast.
pub struct TrackPublisher {
    name: String,
    inner: moq_net::track::Producer,
    epoch: Instant,
}

impl TrackPublisher {
    /// The track name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Start the next group (sequence = previous + 1, or 0).
    pub fn append_group(&self) -> Result<GroupPublisher, Error> {
        let inner = self
            .inner
            .append_group()
            .map_err(|err| Error::moq(format!("appending a group to {:?}", self.name), err))?;
        Ok(GroupPublisher {
            inner,
            epoch: self.epoch,
            frames: 0,
        })
    }

    /// Write a whole group: start it, write each frame, finish it. Returns its sequence.
    pub fn write_group<I>(&self, frames: I) -> Result<u64, Error>
    where
        I: IntoIterator<Item = Bytes>,
    {
        let mut group = self.append_group()?;
        for frame in frames {
            group.write_frame(frame)?;
        }
        let sequence = group.sequence();
        group.finish()?;
        Ok(sequence)
    }

    /// The highest group sequence written so far.
    pub fn latest(&self) -> Option<u64> {
        self.inner.latest()
    }

    /// End the track after the last group written (SUBSCRIBE_END on 05, then FIN).
    pub fn finish(&self) -> Result<(), Error> {
        self.inner
            .finish()
            .map_err(|err| Error::moq(format!("finishing track {:?}", self.name), err))
    }

    /// Abort the track with an application error code (a reset subscribe stream).
    pub fn abort(self, code: u16) -> Result<(), Error> {
        let name = self.name;
        self.inner
            .abort(moq_net::Error::App(code))
            .map_err(|err| Error::moq(format!("aborting track {name:?}"), err))
    }
}

/// A group being written. Frames go out as they are written; the group stream ends
/// (FIN) on [`GroupPublisher::finish`], or is reset on drop or
/// [`GroupPublisher::abort`].
pub struct GroupPublisher {
    inner: moq_net::group::Producer,
    epoch: Instant,
    frames: u64,
}

impl GroupPublisher {
    /// This group's sequence number.
    pub fn sequence(&self) -> u64 {
        self.inner.sequence
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Append one frame. Its timestamp is the time since the track was created.
    pub fn write_frame(&mut self, payload: Bytes) -> Result<(), Error> {
        let millis = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.write_frame_at(millis, payload)
    }

    /// Append one frame with the given timestamp in milliseconds (the track's default
    /// timescale); it need not grow within the group (B-frames).
    pub fn write_frame_at(&mut self, millis: u64, payload: Bytes) -> Result<(), Error> {
        let timestamp = Timestamp::from_millis(millis).unwrap_or(Timestamp::ZERO);
        let sequence = self.inner.sequence;
        self.inner.write_frame(timestamp, payload).map_err(|err| {
            Error::moq(
                format!("writing frame {} of group {sequence}", self.frames),
                err,
            )
        })?;
        self.frames += 1;
        Ok(())
    }

    /// End the group cleanly.
    pub fn finish(self) -> Result<(), Error> {
        let sequence = self.inner.sequence;
        self.inner
            .finish()
            .map_err(|err| Error::moq(format!("finishing group {sequence}"), err))
    }

    /// Abandon the group with an application error code.
    pub fn abort(self, code: u16) -> Result<(), Error> {
        let sequence = self.inner.sequence;
        self.inner
            .abort(moq_net::Error::App(code))
            .map_err(|err| Error::moq(format!("aborting group {sequence}"), err))
    }
}
