//! Bytes of control streams, by the class of message they carry: what moq-relay 0.17
//! reports as `moq_relay_control_{tx,rx}_bytes_total{class}`. Group streams carry
//! media and are not counted; a FETCH stream is counted whole as class `fetch`, the
//! frames it answers with included.

use super::slots::Kind;

/// moq-relay's control classes that moq-lite streams carry (its `auth` and `other`
/// classes have no moq-lite stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlClass {
    Session,
    Announce,
    TrackInfo,
    Subscribe,
    Fetch,
    Probe,
    GoAway,
}

impl ControlClass {
    pub const ALL: [ControlClass; 7] = [
        ControlClass::Session,
        ControlClass::Announce,
        ControlClass::TrackInfo,
        ControlClass::Subscribe,
        ControlClass::Fetch,
        ControlClass::Probe,
        ControlClass::GoAway,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// The `class` label moq-relay prints.
    pub const fn label(self) -> &'static str {
        match self {
            ControlClass::Session => "session",
            ControlClass::Announce => "announce",
            ControlClass::TrackInfo => "track_info",
            ControlClass::Subscribe => "subscribe",
            ControlClass::Fetch => "fetch",
            ControlClass::Probe => "probe",
            ControlClass::GoAway => "goaway",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }

    /// The class of a stream's messages; `None` for media and for a stream whose type
    /// has not arrived yet.
    pub(super) fn of(kind: &Kind) -> Option<ControlClass> {
        Some(match kind {
            Kind::UniUnknown(_) | Kind::BidiUnknown(_) => return None,
            Kind::GroupIn { .. } | Kind::GroupOut { .. } => return None,
            Kind::SetupIn(_) | Kind::SetupOut => ControlClass::Session,
            Kind::InterestIn { .. } | Kind::InterestOut { .. } => ControlClass::Announce,
            Kind::SubscribeIn { .. } | Kind::SubscribeOut { .. } => ControlClass::Subscribe,
            Kind::TrackIn { .. } | Kind::TrackOut { .. } => ControlClass::TrackInfo,
            Kind::FetchIn { .. } | Kind::FetchOut { .. } => ControlClass::Fetch,
            Kind::Drain { goaway: true, .. } => ControlClass::GoAway,
            Kind::Drain { goaway: false, .. } => ControlClass::Probe,
        })
    }
}

/// Cumulative control-stream bytes of one session, each direction by class.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ControlBytes {
    pub tx: [u64; ControlClass::COUNT],
    pub rx: [u64; ControlClass::COUNT],
}

impl ControlBytes {
    pub fn sent(&self, class: ControlClass) -> u64 {
        self.tx[class.index()]
    }

    pub fn received(&self, class: ControlClass) -> u64 {
        self.rx[class.index()]
    }

    pub(super) fn add_sent(&mut self, class: ControlClass, bytes: usize) {
        self.tx[class.index()] += bytes as u64;
    }

    pub(super) fn add_received(&mut self, class: ControlClass, bytes: usize) {
        self.rx[class.index()] += bytes as u64;
    }

    /// Adds `other` into `self` (a worker's total over its sessions).
    pub fn add(&mut self, other: &ControlBytes) {
        for (mine, theirs) in self.tx.iter_mut().zip(other.tx) {
            *mine += theirs;
        }
        for (mine, theirs) in self.rx.iter_mut().zip(other.rx) {
            *mine += theirs;
        }
    }
}
