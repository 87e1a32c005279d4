//! Fan-out of a track's steps on one shard: appending them once to the track's shared log
//! for local subscribers (with the byte-bound scan and the idle/ready hand-off), and
//! pushing them once per interested shard. It must never copy a payload, never do work
//! per local subscriber on the per-frame path beyond waking idle ones, and never let a
//! full ring block the publisher: that shard loses the group and is told so later.

use std::collections::VecDeque;

use super::{Msg, Peer, Remote, Shard, Stats, Track, push_data};
use crate::Config;
use crate::log::{Entry, Frame, Log};
use crate::slab::{Key, Slab};
use crate::subscriber::Subscriber;

/// Local fan-out step appended to a track's log.
pub(super) enum Ev {
    Start(u64),
    Frame(Frame),
    End(u64),
    AbortBelow(u64),
    Restart,
}

impl Shard {
    /// Appends one step to the track's log: O(1) however many local subscribers read
    /// it, except for the subscriber scan (at each group start, or when the log grew
    /// past the point where some subscriber could be over its bound) and waking the
    /// subscribers that had read everything.
    pub(super) fn fan_local(&mut self, tk: Key, ev: Ev) {
        let Self {
            tracks,
            logs,
            subs,
            ready_subs,
            config,
            ..
        } = self;
        let Some(t) = tracks.get_mut(tk) else {
            return;
        };
        let Some(log) = logs.get_mut(t.log) else {
            return;
        };
        let scan = match ev {
            Ev::Frame(f) => {
                return append_frame(t, log, subs, ready_subs, config, f);
            }
            Ev::Start(g) => {
                t.next_seq = t.next_seq.max(g.saturating_add(1));
                let i = log.push(Entry::Start(g));
                log.cache.start(g, i);
                true
            }
            Ev::End(g) => {
                log.cache.end(g);
                log.push(Entry::End(g));
                false
            }
            Ev::AbortBelow(b) => {
                log.cache.abort_below(b);
                log.push(Entry::AbortBelow(b));
                // Applied now, so that queued entries of the aborted groups are never
                // handed out; a subscriber still behind a restart meets the entry in
                // order instead (group numbers before and after it are unrelated).
                for &sk in &t.subs {
                    if let Some(s) = subs.get_mut(sk)
                        && s.past(log.last_restart)
                    {
                        s.abort_below(b);
                    }
                }
                true
            }
            Ev::Restart => {
                log.cache.clear();
                let i = log.push(Entry::Restart);
                log.last_restart = Some(i);
                true
            }
        };
        if scan || log.total() >= log.check_at {
            scan_log(log, &t.subs, subs, config);
        }
        wake_idle(log, subs, ready_subs);
    }

    /// Pushes one message per interested shard for `group`; a shard whose ring has no
    /// room loses the whole group (and is told so once there is room).
    pub(super) fn fan_remote(
        &mut self,
        tk: Key,
        group: u64,
        is_frame: bool,
        make: impl Fn(Key) -> Msg,
    ) {
        let Self {
            tracks,
            peers,
            stats,
            notice_tracks,
            ..
        } = self;
        let Some(t) = tracks.get_mut(tk) else {
            return;
        };
        let mut dropped = false;
        for r in &mut t.remotes {
            if group < r.floor {
                continue;
            }
            let Some(p) = peers[r.shard].as_mut() else {
                continue;
            };
            if push_data(p, r, make(r.slot)) {
                if is_frame {
                    stats.frame_pushes += 1;
                }
                continue;
            }
            r.floor = group.saturating_add(1);
            r.notice = Some(r.floor);
            stats.ring_groups_dropped += 1;
            dropped = true;
        }
        if dropped && !t.notice_pending {
            t.notice_pending = true;
            notice_tracks.push(tk);
        }
    }

    pub(super) fn drop_for_remotes(&mut self, tk: Key, below: u64) {
        let Some(t) = self.tracks.get_mut(tk) else {
            return;
        };
        if t.remotes.is_empty() {
            return;
        }
        for r in &mut t.remotes {
            r.floor = r.floor.max(below);
            r.notice = Some(r.floor);
        }
        if !t.notice_pending {
            t.notice_pending = true;
            self.notice_tracks.push(tk);
        }
    }
}

/// Late join for a new local subscriber: the newest cached group from its first frame.
pub(super) fn join_at_newest(log: &Log, s: &mut Subscriber) {
    if let Some(g) = log.cache.newest() {
        s.join(g.seq, g.start, log.end());
    }
}

/// Moves every subscriber of `log` that had read everything to the ready queue (each
/// is in exactly one of the two, so the queue stays bounded by the subscriber count).
#[inline]
pub(super) fn wake_idle(log: &mut Log, subs: &mut Slab<Subscriber>, ready: &mut VecDeque<Key>) {
    if log.idle.is_empty() {
        return;
    }
    for sk in log.idle.drain(..) {
        if let Some(s) = subs.get_mut(sk)
            && !s.in_ready
        {
            s.in_ready = true;
            ready.push_back(sk);
        }
    }
}

/// Appends a frame to a track's log: the whole per-frame cost of local fan-out, however
/// many subscribers read the track.
#[inline(always)]
pub(super) fn append_frame(
    t: &Track,
    log: &mut Log,
    subs: &mut Slab<Subscriber>,
    ready: &mut VecDeque<Key>,
    config: &Config,
    frame: Frame,
) {
    log.cache.frame(frame.group, frame.payload.len());
    log.push(Entry::Frame(frame));
    if log.total() >= log.check_at {
        scan_log(log, &t.subs, subs, config);
    }
    wake_idle(log, subs, ready);
}

/// Walks a track's subscribers: drops the oldest groups of any that is over its byte
/// bound, sets when the next such walk is due, and trims the log to what the slowest
/// subscriber and the late-join cache still need (and to its hard bound: the cache bound
/// plus one subscriber bound).
fn scan_log(log: &mut Log, readers: &[Key], subs: &mut Slab<Subscriber>, config: &Config) {
    let mut keep = log.end();
    let mut limit = u64::MAX;
    for &sk in readers {
        if let Some(s) = subs.get_mut(sk) {
            s.enforce_bound(log);
            keep = keep.min(s.cursor());
            limit = limit.min(s.limit(log));
        }
    }
    let cap = (config.cache_max_bytes as u64).saturating_add(config.subscriber_max_bytes as u64);
    // Each pass forgets one cached group: bounded by the cache's group count.
    loop {
        log.trim(keep.min(log.cache.keep_from().unwrap_or(u64::MAX)));
        if log.held() <= cap || log.cache.keep_from().is_none() {
            break;
        }
        log.cache.forget_oldest_start();
    }
    // Walk again at the latest after one subscriber bound of appends, so that a log
    // without readers is trimmed too.
    let periodic = log
        .total()
        .saturating_add(config.subscriber_max_bytes as u64);
    log.check_at = limit.saturating_add(1).min(periodic);
}

/// Late join for a shard that just subscribed: the newest cached group through its
/// ring. If the ring fills, the shard simply starts at a later group.
pub(super) fn replay_newest(log: &Log, r: &mut Remote, p: &mut Peer, stats: &mut Stats) {
    let Some(g) = log.cache.newest() else { return };
    let reserve = p.reserve;
    let slot = r.slot;
    let seq = g.seq;
    if p.try_data(Msg::GroupStart { slot, group: seq }, reserve)
        .is_err()
    {
        r.floor = seq.saturating_add(1);
        return;
    }
    let frames = log.iter_from(g.start).filter_map(|e| match e {
        Entry::Frame(f) if f.group == seq => Some(f),
        _ => None,
    });
    for f in frames {
        // A late join's copy: its arrival is not news (see `ArrivalTick::UNKNOWN`).
        let msg = Msg::Frame {
            slot,
            frame: Frame {
                arrived: 0,
                ..f.clone()
            },
        };
        if p.try_data(msg, reserve).is_err() {
            r.floor = seq.saturating_add(1);
            p.send_control(Msg::Dropped {
                slot,
                below: seq.saturating_add(1),
            });
            return;
        }
        stats.replay_pushes += 1;
    }
    if g.ended {
        p.send_control(Msg::GroupEnd { slot, group: seq });
    }
}
