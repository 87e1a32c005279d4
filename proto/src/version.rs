//! The moq-lite versions this crate speaks and their identifiers (ALPN / WebTransport
//! protocol strings). It owns version selection only; it must never guess a version from
//! message bytes: from 03 on the version is fixed by the transport handshake.

use std::fmt;

/// A negotiated moq-lite version. New versions (06) are added here and then handled in every
/// `match` the compiler points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    Lite03,
    Lite04,
    Lite05,
    /// The final moq-lite-06 of the published clients (spec 12), not `moq-lite-06-wip`.
    Lite06,
}

impl Version {
    /// Every supported version, newest first: the order a server prefers and a client offers.
    pub const ALL: [Version; 4] = [
        Version::Lite06,
        Version::Lite05,
        Version::Lite04,
        Version::Lite03,
    ];

    /// The identifier used both as the raw-QUIC ALPN and as a `wt-available-protocols` entry.
    pub const fn alpn(self) -> &'static str {
        match self {
            Version::Lite03 => "moq-lite-03",
            Version::Lite04 => "moq-lite-04",
            Version::Lite05 => "moq-lite-05",
            Version::Lite06 => "moq-lite-06",
        }
    }

    /// Parses an ALPN identifier. Unknown identifiers (including `moq-lite-06-wip`, `moql`, `h3`)
    /// yield `None` so the caller never claims a version it does not implement.
    pub fn from_alpn(alpn: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.alpn() == alpn)
    }

    /// The WebTransport protocol string (`wt-protocol` value); identical to the ALPN.
    pub const fn webtransport_protocol(self) -> &'static str {
        self.alpn()
    }

    /// Parses a WebTransport protocol string (already unquoted from the structured field).
    pub fn from_webtransport_protocol(s: &str) -> Option<Version> {
        Version::from_alpn(s)
    }

    /// Server-side choice over WebTransport: walk the client's list in its order and take the
    /// first entry we support (the reference server lets client preference win).
    pub fn choose<'a>(client_offer: impl IntoIterator<Item = &'a str>) -> Option<Version> {
        client_offer.into_iter().find_map(Version::from_alpn)
    }

    /// 04 added hop IDs to announcements and the exclude hop to ANNOUNCE_REQUEST.
    pub const fn has_hop_ids(self) -> bool {
        !matches!(self, Version::Lite03)
    }

    /// 05 added Setup streams, ANNOUNCE_OK, TRACK, FETCH, timestamps and datagrams.
    pub const fn is_05_or_later(self) -> bool {
        matches!(self, Version::Lite05 | Version::Lite06)
    }

    /// 06 (spec 12.3): typed announcements with implicit ids and route costs, no Exclude
    /// Hop, no Ordered byte, a raw Group Start and frame ranges in SUBSCRIBE, FETCH and GROUP.
    pub const fn is_06_or_later(self) -> bool {
        matches!(self, Version::Lite06)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alpn())
    }
}
