//! What the stats broadcasts count, per broadcast path and per auth root, and their JSON:
//! moq-net 0.3's `stats::Traffic` and `stats::Presence` as moq-relay 0.17 serializes them
//! (every field written, zeros too, with the legacy duplicate names after each canonical
//! one, so readers of either spelling decode them).

use serde::Serialize;

/// Media and requests in one direction for one broadcast path. Cumulative: the relay only
/// adds to it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    /// Broadcasts announced (ingress: by a publishing session here).
    pub announces_started: u64,
    pub announces_ended: u64,
    /// Sessions viewing the broadcast: a session's first subscription to it starts one,
    /// its last ends it (egress only).
    pub broadcasts_started: u64,
    pub broadcasts_ended: u64,
    /// Track subscriptions: subscribers' on the egress side, the relay's own upstream ones
    /// on the ingress side.
    pub subscriptions_started: u64,
    pub subscriptions_ended: u64,
    pub fetches: u64,
    pub bytes: u64,
    pub frames: u64,
    pub groups: u64,
    pub datagrams: u64,
}

impl Side {
    pub fn add(&mut self, other: &Side) {
        self.announces_started += other.announces_started;
        self.announces_ended += other.announces_ended;
        self.broadcasts_started += other.broadcasts_started;
        self.broadcasts_ended += other.broadcasts_ended;
        self.subscriptions_started += other.subscriptions_started;
        self.subscriptions_ended += other.subscriptions_ended;
        self.fetches += other.fetches;
        self.bytes += other.bytes;
        self.frames += other.frames;
        self.groups += other.groups;
        self.datagrams += other.datagrams;
    }

    pub fn is_zero(&self) -> bool {
        *self == Side::default()
    }

    pub fn frame(&mut self, payload_len: usize) {
        self.frames += 1;
        self.bytes += payload_len as u64;
    }

    pub fn json(&self, announced_bytes: u64) -> TrafficJson {
        TrafficJson {
            announces_started: self.announces_started,
            announced: self.announces_started,
            announces_ended: self.announces_ended,
            announced_closed: self.announces_ended,
            announced_bytes,
            broadcasts_started: self.broadcasts_started,
            broadcasts: self.broadcasts_started,
            broadcasts_ended: self.broadcasts_ended,
            broadcasts_closed: self.broadcasts_ended,
            subscriptions_started: self.subscriptions_started,
            subscriptions: self.subscriptions_started,
            subscriptions_ended: self.subscriptions_ended,
            subscriptions_closed: self.subscriptions_ended,
            fetches: self.fetches,
            bytes: self.bytes,
            frames: self.frames,
            groups: self.groups,
            datagrams: self.datagrams,
            // Datagrams are never held, and skipped groups are counted per worker only
            // (`moq_relay_stale_*`), not per path.
            stale: StaleJson::default(),
        }
    }
}

/// Both directions of one broadcast path: `egress` is what the relay sent to subscribers
/// (the `publisher.json` track), `ingress` what it received from publishers
/// (`subscriber.json`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PathCounts {
    pub egress: Side,
    pub ingress: Side,
}

impl PathCounts {
    pub fn add(&mut self, other: &PathCounts) {
        self.egress.add(&other.egress);
        self.ingress.add(&other.ingress);
    }
}

/// Sessions admitted under one auth root.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    pub started: u64,
    pub ended: u64,
}

impl Presence {
    pub fn add(&mut self, other: &Presence) {
        self.started += other.started;
        self.ended += other.ended;
    }

    pub fn json(&self) -> PresenceJson {
        PresenceJson {
            sessions_started: self.started,
            sessions: self.started,
            sessions_ended: self.ended,
            sessions_closed: self.ended,
        }
    }
}

/// moq-net's `Traffic` on the wire, field for field in its order.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TrafficJson {
    announces_started: u64,
    announced: u64,
    announces_ended: u64,
    announced_closed: u64,
    announced_bytes: u64,
    broadcasts_started: u64,
    broadcasts: u64,
    broadcasts_ended: u64,
    broadcasts_closed: u64,
    subscriptions_started: u64,
    subscriptions: u64,
    subscriptions_ended: u64,
    subscriptions_closed: u64,
    fetches: u64,
    bytes: u64,
    frames: u64,
    groups: u64,
    datagrams: u64,
    stale: StaleJson,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
struct StaleJson {
    bytes: u64,
    frames: u64,
    groups: u64,
    datagrams: u64,
}

/// moq-net's `Presence` on the wire.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PresenceJson {
    sessions_started: u64,
    sessions: u64,
    sessions_ended: u64,
    sessions_closed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_json_carries_canonical_and_legacy_names_in_moq_nets_order() {
        let side = Side {
            announces_started: 1,
            subscriptions_started: 3,
            subscriptions_ended: 2,
            bytes: 5,
            frames: 1,
            groups: 1,
            ..Side::default()
        };
        let text = serde_json::to_string(&side.json(8)).unwrap();
        assert_eq!(
            text,
            "{\"announces_started\":1,\"announced\":1,\"announces_ended\":0,\"announced_closed\":0,\
             \"announced_bytes\":8,\"broadcasts_started\":0,\"broadcasts\":0,\"broadcasts_ended\":0,\
             \"broadcasts_closed\":0,\"subscriptions_started\":3,\"subscriptions\":3,\
             \"subscriptions_ended\":2,\"subscriptions_closed\":2,\"fetches\":0,\"bytes\":5,\
             \"frames\":1,\"groups\":1,\"datagrams\":0,\
             \"stale\":{\"bytes\":0,\"frames\":0,\"groups\":0,\"datagrams\":0}}"
        );
        let presence = Presence {
            started: 2,
            ended: 1,
        };
        assert_eq!(
            serde_json::to_string(&presence.json()).unwrap(),
            "{\"sessions_started\":2,\"sessions\":2,\"sessions_ended\":1,\"sessions_closed\":1}"
        );
    }
}
