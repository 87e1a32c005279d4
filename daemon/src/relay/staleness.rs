//! The groups one served subscription may still have in flight, and when a newer group
//! makes them stale (spec 8.5, moq-net's `Error::Old`): once a newer group exists, a
//! group whose successor started at least the subscriber's max latency ago is not worth
//! its bytes, open or ended. A relay that falls behind (a slow viewer, or its own core
//! saturated) then sends the newest groups instead of a growing backlog of old ones.
//! Judged on when the groups reached this relay; the newest group is never stale. It
//! never touches a stream itself: it names the stale groups to its caller, which resets
//! an open one through the session and an ended one by the stream the session kept.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Groups remembered per subscription. Older ones are forgotten, never expired: with a
/// long max latency and short groups some stale data may then still go out.
pub const MAX_RECENT_GROUPS: usize = 64;

#[derive(Debug, Default)]
pub struct RecentGroups {
    /// In the order they started.
    groups: VecDeque<Recent>,
}

#[derive(Debug)]
struct Recent {
    sequence: u64,
    started: Instant,
}

impl RecentGroups {
    /// Group `sequence` started at `now`. Calls `stale(sequence)` for each older group
    /// that is stale now, and forgets it.
    pub fn start(
        &mut self,
        sequence: u64,
        now: Instant,
        max_latency: Duration,
        stale: impl FnMut(u64),
    ) {
        self.groups.push_back(Recent {
            sequence,
            started: now,
        });
        self.expire(now, max_latency, stale);
        if self.groups.len() > MAX_RECENT_GROUPS {
            self.groups.pop_front();
        }
        debug_assert!(self.groups.len() <= MAX_RECENT_GROUPS);
    }

    /// Calls `stale(sequence)` for each group that is stale at `now`, and forgets it:
    /// between group starts too, so a long group's predecessor goes at its due time
    /// rather than when the next group starts. The newest group is never stale.
    pub fn expire(&mut self, now: Instant, max_latency: Duration, mut stale: impl FnMut(u64)) {
        while self.groups.len() > 1 {
            if now.saturating_duration_since(self.groups[1].started) < max_latency {
                break;
            }
            if let Some(oldest) = self.groups.pop_front() {
                stale(oldest.sequence);
            }
        }
    }

    /// Whether a group may still go stale: one that has a successor.
    pub fn has_older_groups(&self) -> bool {
        self.groups.len() > 1
    }

    /// Group `sequence` is gone otherwise (reset, dropped): nothing left to expire.
    pub fn forget(&mut self, sequence: u64) {
        self.groups.retain(|g| g.sequence != sequence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(recent: &mut RecentGroups, sequence: u64, at: Instant, max: Duration) -> Vec<u64> {
        let mut stale = Vec::new();
        recent.start(sequence, at, max, |s| stale.push(s));
        stale
    }

    #[test]
    fn with_max_latency_zero_every_older_group_is_stale_once_a_newer_starts() {
        let t = Instant::now();
        let mut recent = RecentGroups::default();
        assert!(starts(&mut recent, 1, t, Duration::ZERO).is_empty());
        assert_eq!(
            starts(&mut recent, 2, t + Duration::from_millis(5), Duration::ZERO),
            [1]
        );
    }

    #[test]
    fn a_group_goes_stale_once_its_successor_started_max_latency_ago() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let max = ms(500);
        let mut recent = RecentGroups::default();
        assert!(starts(&mut recent, 1, t, max).is_empty());
        // Group 2 started at 100 ms: group 1 is stale from 600 ms on, not before.
        assert!(starts(&mut recent, 2, t + ms(100), max).is_empty());
        assert!(starts(&mut recent, 3, t + ms(599), max).is_empty());
        assert_eq!(starts(&mut recent, 4, t + ms(600), max), [1]);
        // Group 3 started at 599 ms, so 2 is stale at 1099 ms; 3 and 4 stay.
        assert_eq!(starts(&mut recent, 5, t + ms(1099), max), [2]);
        assert!(starts(&mut recent, 6, t + ms(1099), max).is_empty());
    }

    #[test]
    fn the_newest_group_is_never_stale_and_a_forgotten_one_is_not_named() {
        let t = Instant::now();
        let mut recent = RecentGroups::default();
        starts(&mut recent, 1, t, Duration::ZERO);
        starts(&mut recent, 2, t, Duration::ZERO);
        recent.forget(2);
        assert!(starts(&mut recent, 3, t, Duration::ZERO).is_empty());
        assert_eq!(starts(&mut recent, 4, t, Duration::ZERO), [3]);
    }

    #[test]
    fn between_starts_a_group_goes_stale_at_its_due_time_and_the_newest_never() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let max = ms(500);
        let mut recent = RecentGroups::default();
        assert!(starts(&mut recent, 1, t, max).is_empty());
        assert!(starts(&mut recent, 2, t + ms(2000), max).is_empty());
        let mut stale = Vec::new();
        recent.expire(t + ms(2499), max, |s| stale.push(s));
        assert!(stale.is_empty());
        assert!(recent.has_older_groups());
        recent.expire(t + ms(2500), max, |s| stale.push(s));
        assert_eq!(stale, [1]);
        assert!(!recent.has_older_groups());
        // Alone, even at max latency 0 and long after, group 2 stays.
        recent.expire(t + ms(60_000), Duration::ZERO, |s| stale.push(s));
        assert_eq!(stale, [1]);
    }

    #[test]
    fn memory_is_bounded_whatever_the_max_latency() {
        let t = Instant::now();
        let mut recent = RecentGroups::default();
        for sequence in 0..10 * MAX_RECENT_GROUPS as u64 {
            starts(&mut recent, sequence, t, Duration::from_secs(3600));
        }
        assert_eq!(recent.groups.len(), MAX_RECENT_GROUPS);
    }
}
