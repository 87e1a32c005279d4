//! One link's life: waiting to dial, dialing, up; and moq-relay's redial schedules:
//! 0.14's (spec `cluster.md` 3.2) 1 s doubling to 10 s, each wait jittered to 50-100 %;
//! 0.17's (`moq-relay-0.17.md` 5.2) a wait uniform below a ceiling of 1 s doubling to
//! 30 s. Both reset only after a session that lasted 10 s, so a peer that accepts and
//! then drops at once is not hammered.

use std::time::{Duration, Instant};

use quic_io::SessionId;

use super::peer::Peer;

const FIRST_DELAY: Duration = Duration::from_secs(1);

/// Which moq-relay's redial schedule a link follows (by the configuration's generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// delay × U(0.5, 1), delay doubling to 10 s.
    V014,
    /// U(0, ceiling), ceiling doubling to 30 s.
    V017,
}

impl Schedule {
    fn max_delay(self) -> Duration {
        match self {
            Schedule::V014 => Duration::from_secs(10),
            Schedule::V017 => Duration::from_secs(30),
        }
    }

    fn wait(self, delay: Duration, spread: f64) -> Duration {
        let spread = spread.clamp(0.0, 1.0);
        match self {
            Schedule::V014 => delay.mul_f64(0.5 + 0.5 * spread),
            Schedule::V017 => delay.mul_f64(spread),
        }
    }
}
/// A session that lasted this long was stable: the next redial starts from 1 s again.
const STABLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Waiting {
        due: Instant,
    },
    Dialing {
        session: SessionId,
    },
    Up {
        session: SessionId,
        since: Instant,
    },
    /// Closed because the peer (origin `peer`) dials us too and its link is kept; dialed
    /// again when that one goes.
    Yielded {
        peer: u64,
    },
}

/// What wants a link: `[cluster] connect` (for good), or a source that may take it
/// back (`connect_api`'s list, or mesh gossip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Config,
    Api,
    Gossip,
}

#[derive(Debug)]
pub struct Link {
    pub peer: Peer,
    pub state: State,
    pub owner: Owner,
    delay: Duration,
    schedule: Schedule,
}

impl Link {
    /// A link to dial at once.
    pub fn new(peer: Peer, schedule: Schedule, now: Instant) -> Link {
        Link {
            peer,
            state: State::Waiting { due: now },
            owner: Owner::Config,
            delay: FIRST_DELAY,
            schedule,
        }
    }

    pub fn session(&self) -> Option<SessionId> {
        match self.state {
            State::Dialing { session } | State::Up { session, .. } => Some(session),
            State::Waiting { .. } | State::Yielded { .. } => None,
        }
    }

    pub fn due(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { due } => Some(due),
            _ => None,
        }
    }

    /// The dial failed or the session ended at `now`; `spread` in [0, 1) draws the
    /// jitter. Returns how long until the next dial.
    pub fn ended(&mut self, now: Instant, spread: f64) -> Duration {
        if let State::Up { since, .. } = self.state
            && now.duration_since(since) >= STABLE
        {
            self.delay = FIRST_DELAY;
        }
        let wait = self.schedule.wait(self.delay, spread);
        self.delay = (self.delay * 2).min(self.schedule.max_delay());
        self.state = State::Waiting { due: now + wait };
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(now: Instant) -> Link {
        link_with(Schedule::V014, now)
    }

    fn link_with(schedule: Schedule, now: Instant) -> Link {
        Link::new(
            Peer::parse("https://127.0.0.1:1/", None).unwrap(),
            schedule,
            now,
        )
    }

    #[test]
    fn the_017_schedule_waits_below_a_ceiling_that_doubles_to_thirty_seconds() {
        let now = Instant::now();
        let mut link = link_with(Schedule::V017, now);
        let ceilings: Vec<u64> = (0..7)
            .map(|_| {
                link.state = State::Dialing { session: 1 };
                link.ended(now, 1.0).as_secs()
            })
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 30, 30]);
        link.state = State::Dialing { session: 1 };
        assert_eq!(link.ended(now, 0.0), Duration::ZERO, "uniform from zero");
    }

    #[test]
    fn redials_back_off_from_one_second_to_ten_with_jitter() {
        let now = Instant::now();
        let mut link = link(now);
        assert_eq!(link.due(), Some(now));
        let waits: Vec<Duration> = (0..6)
            .map(|_| {
                link.state = State::Dialing { session: 1 };
                link.ended(now, 1.0)
            })
            .collect();
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
        link.state = State::Dialing { session: 1 };
        assert_eq!(
            link.ended(now, 0.0),
            Duration::from_secs(5),
            "half, at least"
        );
    }

    #[test]
    fn only_a_session_that_lasted_resets_the_delay() {
        let now = Instant::now();
        let mut link = link(now);
        for _ in 0..4 {
            link.state = State::Up {
                session: 1,
                since: now,
            };
            link.ended(now + Duration::from_secs(1), 1.0);
        }
        link.state = State::Up {
            session: 1,
            since: now,
        };
        assert_eq!(
            link.ended(now + Duration::from_secs(2), 1.0),
            Duration::from_secs(10)
        );
        link.state = State::Up {
            session: 2,
            since: now,
        };
        assert_eq!(link.ended(now + STABLE, 1.0), FIRST_DELAY);
    }
}
