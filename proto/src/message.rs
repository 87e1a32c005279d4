//! One type per moq-lite message, with its per-version encoding (spec sections 4-7).
//! It owns field layout only; it must never keep state across messages (the stream reader
//! and the session do that) and never trust a length or count it has not bounded.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::Version;
use crate::coding::*;

/// A message that travels as `[N]` (or `T|[N]` for the subscribe responses).
pub trait Message: Sized {
    /// True for `T|[N]` messages (a type varint precedes the length).
    const TYPED: bool = false;
    /// Appends the encoded message (with its length prefix) to `buf`.
    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError>;
    /// Decodes one whole message from the front of `buf`. `Short` means more bytes are needed.
    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError>;
}

fn only_05(v: Version, what: &'static str) -> Result<(), EncodeError> {
    if v.is_05_or_later() {
        Ok(())
    } else {
        Err(EncodeError::NotInVersion { what, version: v })
    }
}

fn only_05_dec(v: Version, what: &'static str) -> Result<(), DecodeError> {
    if v.is_05_or_later() {
        Ok(())
    } else {
        Err(DecodeError::NotInVersion { what, version: v })
    }
}

fn not_06(v: Version, what: &'static str) -> Result<(), EncodeError> {
    if v.is_06_or_later() {
        Err(EncodeError::NotInVersion { what, version: v })
    } else {
        Ok(())
    }
}

fn get_u8_flag(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    // The reference reads any non-zero byte as true; we send exactly 0 or 1.
    Ok(r.u8()? != 0)
}

// ---------------------------------------------------------------------------------------
// Stream types

/// Bidirectional stream types (spec 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BidiType {
    Announce,
    Subscribe,
    Fetch,
    Probe,
    GoAway,
    Track,
}

impl BidiType {
    pub const fn id(self) -> u64 {
        match self {
            BidiType::Announce => 0x1,
            BidiType::Subscribe => 0x2,
            BidiType::Fetch => 0x3,
            BidiType::Probe => 0x4,
            BidiType::GoAway => 0x5,
            BidiType::Track => 0x6,
        }
    }

    /// The type for `id` if it exists on `v`. Fetch is 05-only in practice (spec 3.1 note 1).
    pub fn from_id(v: Version, id: u64) -> Option<BidiType> {
        let t = match id {
            0x1 => BidiType::Announce,
            0x2 => BidiType::Subscribe,
            0x3 if v.is_05_or_later() => BidiType::Fetch,
            0x4 => BidiType::Probe,
            0x5 if v != Version::Lite03 => BidiType::GoAway,
            0x6 if v.is_05_or_later() => BidiType::Track,
            _ => return None,
        };
        Some(t)
    }
}

/// Unidirectional stream types (spec 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UniType {
    Group,
    Setup,
}

impl UniType {
    pub const fn id(self) -> u64 {
        match self {
            UniType::Group => 0x0,
            UniType::Setup => 0x1,
        }
    }

    pub fn from_id(v: Version, id: u64) -> Option<UniType> {
        match id {
            0x0 => Some(UniType::Group),
            0x1 if v.is_05_or_later() => Some(UniType::Setup),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Announce stream

/// ANNOUNCE_REQUEST (spec 5.1, 12.5). On 03 and 06 `exclude_hop` is not on the wire and
/// decodes as 0 (06 carries the peer's identity in SETUP `Hop` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub prefix: String,
    pub exclude_hop: u64,
}

impl Message for AnnounceRequest {
    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        put_sized(buf, |b| {
            put_path(b, "prefix", &self.prefix)?;
            if v.has_hop_ids() && !v.is_06_or_later() {
                put_varint(b, "exclude hop", self.exclude_hop)?;
            }
            Ok(())
        })
    }

    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        get_sized(buf, |r| {
            let prefix = r.path("prefix")?;
            let exclude_hop = if v.has_hop_ids() && !v.is_06_or_later() {
                r.varint()?
            } else {
                0
            };
            Ok(AnnounceRequest {
                prefix,
                exclude_hop,
            })
        })
    }
}

/// ANNOUNCE_OK (spec 5.2), 05 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceOk {
    pub hop_id: u64,
    pub active_count: u64,
}

impl Message for AnnounceOk {
    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        only_05(v, "ANNOUNCE_OK")?;
        put_sized(buf, |b| {
            put_varint(b, "hop id", self.hop_id)?;
            put_varint(b, "active count", self.active_count)
        })
    }

    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        only_05_dec(v, "ANNOUNCE_OK")?;
        get_sized(buf, |r| {
            Ok(AnnounceOk {
                hop_id: r.varint()?,
                active_count: r.varint()?,
            })
        })
    }
}

/// ANNOUNCE status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceStatus {
    Ended,
    Active,
    /// 0x02, accepted on 05 and treated like a duplicate `Active` (spec 5.3).
    Restart,
}

/// ANNOUNCE (spec 5.3). `hops` is the chain as carried on the wire for `v`; on 03 only the
/// count travels, so the IDs decode as 0 (unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub status: AnnounceStatus,
    pub suffix: String,
    pub hops: Vec<u64>,
}

impl Message for Announce {
    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        not_06(v, "status-byte ANNOUNCE")?;
        let status = match self.status {
            AnnounceStatus::Ended => 0u8,
            AnnounceStatus::Active => 1,
            AnnounceStatus::Restart => {
                only_05(v, "ANNOUNCE restart status")?;
                2
            }
        };
        put_sized(buf, |b| {
            b.put_u8(status);
            put_path(b, "suffix", &self.suffix)?;
            put_hops(b, v, &self.hops)
        })
    }

    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        if v.is_06_or_later() {
            return Err(DecodeError::NotInVersion {
                what: "status-byte ANNOUNCE",
                version: v,
            });
        }
        get_sized(buf, |r| {
            let status = match r.u8()? {
                0 => AnnounceStatus::Ended,
                1 => AnnounceStatus::Active,
                2 if v.is_05_or_later() => AnnounceStatus::Restart,
                s => {
                    return Err(DecodeError::Invalid {
                        what: "announce status",
                        value: s.into(),
                    });
                }
            };
            let suffix = r.path("suffix")?;
            let hops = r.hops(v)?;
            Ok(Announce {
                status,
                suffix,
                hops,
            })
        })
    }
}

/// The costs of a route (spec 12.6): lower `warm` wins, `cold` breaks ties. Routes learned
/// over 03/04/05 carry none (moq-net treats them as warm 0, cold 2^62 - 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteCost {
    pub warm: u64,
    pub cold: u64,
}

/// The typed announcements of a 06 Announce stream (spec 12.5), after ANNOUNCE_OK. Each
/// START takes the stream's next Announce ID (counting from 0); END and RESTART name one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce06 {
    /// Type 0.
    Start {
        suffix: String,
        hops: Vec<u64>,
        cost: RouteCost,
    },
    /// Type 1: the broadcast is gone; `id` is retired.
    End { id: u64 },
    /// Type 2: replaces the chain and costs of the live `id` in place.
    Restart {
        id: u64,
        hops: Vec<u64>,
        cost: RouteCost,
    },
    /// A type this version does not know: skipped by its length, assigns no id.
    Unknown { typ: u64 },
}

const ANNOUNCE_START: u64 = 0x0;
const ANNOUNCE_END: u64 = 0x1;
const ANNOUNCE_RESTART: u64 = 0x2;

impl Message for Announce06 {
    const TYPED: bool = true;

    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if !v.is_06_or_later() {
            return Err(EncodeError::NotInVersion {
                what: "typed announcement",
                version: v,
            });
        }
        match self {
            Announce06::Start { suffix, hops, cost } => {
                put_varint(buf, "type", ANNOUNCE_START)?;
                put_sized(buf, |b| {
                    put_path(b, "suffix", suffix)?;
                    put_hops(b, v, hops)?;
                    put_varint(b, "warm cost", cost.warm)?;
                    put_varint(b, "cold cost", cost.cold)
                })
            }
            Announce06::End { id } => {
                put_varint(buf, "type", ANNOUNCE_END)?;
                put_sized(buf, |b| put_varint(b, "announce id", *id))
            }
            Announce06::Restart { id, hops, cost } => {
                put_varint(buf, "type", ANNOUNCE_RESTART)?;
                put_sized(buf, |b| {
                    put_varint(b, "announce id", *id)?;
                    put_hops(b, v, hops)?;
                    put_varint(b, "warm cost", cost.warm)?;
                    put_varint(b, "cold cost", cost.cold)
                })
            }
            Announce06::Unknown { .. } => Err(EncodeError::Invalid {
                what: "unknown announcement type",
            }),
        }
    }

    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        if !v.is_06_or_later() {
            return Err(DecodeError::NotInVersion {
                what: "typed announcement",
                version: v,
            });
        }
        let typ = get_varint(buf)?;
        get_sized(buf, |r| match typ {
            ANNOUNCE_START => Ok(Announce06::Start {
                suffix: r.path("suffix")?,
                hops: r.hops(v)?,
                cost: RouteCost {
                    warm: r.varint()?,
                    cold: r.varint()?,
                },
            }),
            ANNOUNCE_END => Ok(Announce06::End { id: r.varint()? }),
            ANNOUNCE_RESTART => Ok(Announce06::Restart {
                id: r.varint()?,
                hops: r.hops(v)?,
                cost: RouteCost {
                    warm: r.varint()?,
                    cold: r.varint()?,
                },
            }),
            typ => {
                // Skipped by its length (spec 12.5): consume the body unread.
                let rest = r.remaining() as u64;
                r.bytes(rest)?;
                Ok(Announce06::Unknown { typ })
            }
        })
    }
}

// ---------------------------------------------------------------------------------------
// Subscribe stream

/// The group and frame range of a SUBSCRIBE or SUBSCRIBE_UPDATE, in the layout of `v`:
/// 03-05 `start + 1, end + 1`; 06 `start (raw), end + 1, frame start, frame end + 1`
/// (spec 12.7). A frame bound that 05 cannot carry is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscribeRange {
    /// `None` = no floor: the latest group (05), or what Max Age allows (06).
    pub start: Option<u64>,
    /// `None` = unbounded; otherwise inclusive.
    pub end: Option<u64>,
    /// 06: first frame of the start group; 0 = its first frame.
    pub frame_start: u64,
    /// 06: last frame (inclusive) of the end group; `None` = through its end.
    pub frame_end: Option<u64>,
}

impl SubscribeRange {
    fn encode(&self, v: Version, b: &mut BytesMut) -> Result<(), EncodeError> {
        if !v.is_06_or_later() {
            if self.frame_start != 0 || self.frame_end.is_some() {
                return Err(EncodeError::NotInVersion {
                    what: "subscribe frame range",
                    version: v,
                });
            }
            put_opt_group(b, "group start", self.start)?;
            return put_opt_group(b, "group end", self.end);
        }
        if self.frame_end.is_some() && self.end.is_none() {
            return Err(EncodeError::Invalid {
                what: "frame end without group end",
            });
        }
        if self.frame_start != 0 && self.start.is_none() {
            // moq-net refuses it too: the frame qualifies a named group.
            return Err(EncodeError::Invalid {
                what: "frame start without group start",
            });
        }
        put_varint(b, "group start", self.start.unwrap_or(0))?;
        put_opt_group(b, "group end", self.end)?;
        put_varint(b, "frame start", self.frame_start)?;
        put_opt_group(b, "frame end", self.frame_end)
    }

    fn decode(v: Version, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if !v.is_06_or_later() {
            return Ok(SubscribeRange {
                start: r.opt_group()?,
                end: r.opt_group()?,
                frame_start: 0,
                frame_end: None,
            });
        }
        let start = r.varint()?;
        let end = r.opt_group()?;
        let frame_start = r.varint()?;
        let frame_end = r.opt_group()?;
        if frame_end.is_some() && end.is_none() {
            // moq-net rejects it as a decode error (spec 12.7).
            return Err(DecodeError::Invalid {
                what: "frame end without group end",
                value: frame_end.unwrap_or(0),
            });
        }
        // 0 is "no floor", the same as an explicit group 0 unless a frame qualifies it.
        let start = (start != 0 || frame_start != 0).then_some(start);
        Ok(SubscribeRange {
            start,
            end,
            frame_start,
            frame_end,
        })
    }
}

/// The Ordered byte of 03-05; gone on 06, where it decodes as `false`.
fn put_ordered(b: &mut BytesMut, v: Version, ordered: bool) {
    if !v.is_06_or_later() {
        b.put_u8(ordered.into());
    }
}

fn get_ordered(v: Version, r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    if v.is_06_or_later() {
        Ok(false)
    } else {
        get_u8_flag(r)
    }
}

/// SUBSCRIBE (spec 5.4, 12.7): identical on 03/04/05; 06 drops `ordered`, reads Group Start
/// raw and adds the frame range. `max_latency_ms` is moq-net's "max age".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub id: u64,
    pub broadcast: String,
    pub track: String,
    pub priority: u8,
    pub ordered: bool,
    pub max_latency_ms: u64,
    /// `None` = start at the latest group.
    pub start: Option<u64>,
    /// `None` = unbounded; otherwise inclusive.
    pub end: Option<u64>,
    /// 06 only: first frame of the start group (0 = whole group).
    pub frame_start: u64,
    /// 06 only: last frame (inclusive) of the end group; `None` = whole group.
    pub frame_end: Option<u64>,
}

impl Subscribe {
    pub fn range(&self) -> SubscribeRange {
        SubscribeRange {
            start: self.start,
            end: self.end,
            frame_start: self.frame_start,
            frame_end: self.frame_end,
        }
    }
}

impl Message for Subscribe {
    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        put_sized(buf, |b| {
            put_varint(b, "subscribe id", self.id)?;
            put_path(b, "broadcast", &self.broadcast)?;
            put_string(b, "track", &self.track, MAX_TRACK_NAME_LEN)?;
            b.put_u8(self.priority);
            put_ordered(b, v, self.ordered);
            put_varint(b, "max latency", self.max_latency_ms)?;
            self.range().encode(v, b)
        })
    }

    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        get_sized(buf, |r| {
            let id = r.varint()?;
            let broadcast = r.path("broadcast")?;
            let track = r.string("track", MAX_TRACK_NAME_LEN)?;
            let priority = r.u8()?;
            let ordered = get_ordered(v, r)?;
            let max_latency_ms = r.varint()?;
            let range = SubscribeRange::decode(v, r)?;
            Ok(Subscribe {
                id,
                broadcast,
                track,
                priority,
                ordered,
                max_latency_ms,
                start: range.start,
                end: range.end,
                frame_start: range.frame_start,
                frame_end: range.frame_end,
            })
        })
    }
}

/// SUBSCRIBE_UPDATE (spec 5.5, 12.7): replaces all values; the layout of the range and the
/// Ordered byte follow SUBSCRIBE on each version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeUpdate {
    pub priority: u8,
    pub ordered: bool,
    pub max_latency_ms: u64,
    pub start: Option<u64>,
    pub end: Option<u64>,
    /// 06 only, as in [`Subscribe`].
    pub frame_start: u64,
    /// 06 only, as in [`Subscribe`].
    pub frame_end: Option<u64>,
}

impl SubscribeUpdate {
    /// Start at the latest group, no end, unordered, only the latest group matters.
    pub const fn latest(priority: u8) -> Self {
        SubscribeUpdate {
            priority,
            ordered: false,
            max_latency_ms: 0,
            start: None,
            end: None,
            frame_start: 0,
            frame_end: None,
        }
    }

    pub fn range(&self) -> SubscribeRange {
        SubscribeRange {
            start: self.start,
            end: self.end,
            frame_start: self.frame_start,
            frame_end: self.frame_end,
        }
    }
}

impl Message for SubscribeUpdate {
    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        put_sized(buf, |b| {
            b.put_u8(self.priority);
            put_ordered(b, v, self.ordered);
            put_varint(b, "max latency", self.max_latency_ms)?;
            self.range().encode(v, b)
        })
    }

    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        get_sized(buf, |r| {
            let priority = r.u8()?;
            let ordered = get_ordered(v, r)?;
            let max_latency_ms = r.varint()?;
            let range = SubscribeRange::decode(v, r)?;
            Ok(SubscribeUpdate {
                priority,
                ordered,
                max_latency_ms,
                start: range.start,
                end: range.end,
                frame_start: range.frame_start,
                frame_end: range.frame_end,
            })
        })
    }
}

/// The 03/04 SUBSCRIBE_OK body (spec 5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOk {
    pub priority: u8,
    pub ordered: bool,
    pub max_latency_ms: u64,
    pub start: Option<u64>,
    pub end: Option<u64>,
}

/// SUBSCRIBE_DROP (spec 5.6): an inclusive range of groups that will not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeDrop {
    pub start: u64,
    pub end: u64,
    pub error_code: u64,
}

/// The typed publisher → subscriber messages on a Subscribe stream (spec 5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeResponse {
    /// 03/04 type 0: must be the first response.
    Ok(SubscribeOk),
    /// 05 type 0 (SUBSCRIBE_START): the first group that will be delivered.
    Start { group: u64 },
    /// 05 type 1: no group ≥ `group` will be produced (exclusive).
    End { group: u64 },
    /// 03/04 type 1, 05 type 2.
    Drop(SubscribeDrop),
}

impl Message for SubscribeResponse {
    const TYPED: bool = true;

    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let lite05 = v.is_05_or_later();
        match self {
            SubscribeResponse::Ok(ok) => {
                if lite05 {
                    return Err(EncodeError::NotInVersion {
                        what: "03/04 SUBSCRIBE_OK",
                        version: v,
                    });
                }
                put_varint(buf, "type", 0)?;
                put_sized(buf, |b| {
                    b.put_u8(ok.priority);
                    b.put_u8(ok.ordered.into());
                    put_varint(b, "max latency", ok.max_latency_ms)?;
                    put_opt_group(b, "group start", ok.start)?;
                    put_opt_group(b, "group end", ok.end)
                })
            }
            SubscribeResponse::Start { group } => {
                only_05(v, "SUBSCRIBE_START")?;
                put_varint(buf, "type", 0)?;
                put_sized(buf, |b| put_varint(b, "group", *group))
            }
            SubscribeResponse::End { group } => {
                only_05(v, "SUBSCRIBE_END")?;
                put_varint(buf, "type", 1)?;
                put_sized(buf, |b| put_varint(b, "group", *group))
            }
            SubscribeResponse::Drop(d) => {
                put_varint(buf, "type", if lite05 { 2 } else { 1 })?;
                put_sized(buf, |b| {
                    put_varint(b, "drop start", d.start)?;
                    put_varint(b, "drop end", d.end)?;
                    put_varint(b, "drop code", d.error_code)
                })
            }
        }
    }

    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        let typ = get_varint(buf)?;
        let drop_body = |r: &mut Reader<'_>| {
            Ok(SubscribeResponse::Drop(SubscribeDrop {
                start: r.varint()?,
                end: r.varint()?,
                error_code: r.varint()?,
            }))
        };
        match (v.is_05_or_later(), typ) {
            (false, 0) => get_sized(buf, |r| {
                Ok(SubscribeResponse::Ok(SubscribeOk {
                    priority: r.u8()?,
                    ordered: get_u8_flag(r)?,
                    max_latency_ms: r.varint()?,
                    start: r.opt_group()?,
                    end: r.opt_group()?,
                }))
            }),
            (false, 1) | (true, 2) => get_sized(buf, drop_body),
            (true, 0) => get_sized(buf, |r| Ok(SubscribeResponse::Start { group: r.varint()? })),
            (true, 1) => get_sized(buf, |r| Ok(SubscribeResponse::End { group: r.varint()? })),
            (_, t) => Err(DecodeError::Invalid {
                what: "subscribe response type",
                value: t,
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Track and Fetch streams (05)

/// TRACK (spec 5.7), 05 only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRequest {
    pub broadcast: String,
    pub track: String,
}

impl Message for TrackRequest {
    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        only_05(v, "TRACK")?;
        put_sized(buf, |b| {
            put_path(b, "broadcast", &self.broadcast)?;
            put_string(b, "track", &self.track, MAX_TRACK_NAME_LEN)
        })
    }

    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        only_05_dec(v, "TRACK")?;
        get_sized(buf, |r| {
            Ok(TrackRequest {
                broadcast: r.path("broadcast")?,
                track: r.string("track", MAX_TRACK_NAME_LEN)?,
            })
        })
    }
}

/// TRACK_INFO (spec 5.8, 12.8), 05 and 06 (no Ordered byte on 06). `timescale` is never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackInfo {
    pub priority: u8,
    pub ordered: bool,
    pub max_latency_ms: u64,
    pub timescale: u64,
}

impl TrackInfo {
    /// What the reference assumes for tracks with no TRACK_INFO (bridged from 03/04).
    pub const DEFAULT: TrackInfo = TrackInfo {
        priority: 0,
        ordered: false,
        max_latency_ms: 5000,
        timescale: 1000,
    };
}

impl Message for TrackInfo {
    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        only_05(v, "TRACK_INFO")?;
        if self.timescale == 0 {
            return Err(EncodeError::Invalid {
                what: "timescale 0",
            });
        }
        put_sized(buf, |b| {
            b.put_u8(self.priority);
            put_ordered(b, v, self.ordered);
            put_varint(b, "max latency", self.max_latency_ms)?;
            put_varint(b, "timescale", self.timescale)
        })
    }

    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        only_05_dec(v, "TRACK_INFO")?;
        get_sized(buf, |r| {
            let info = TrackInfo {
                priority: r.u8()?,
                ordered: get_ordered(v, r)?,
                max_latency_ms: r.varint()?,
                timescale: r.varint()?,
            };
            if info.timescale == 0 {
                return Err(DecodeError::Invalid {
                    what: "timescale",
                    value: 0,
                });
            }
            Ok(info)
        })
    }
}

/// FETCH (spec 5.9, 12.9), 05 and 06 in practice. The frame range is 06 only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub broadcast: String,
    pub track: String,
    pub priority: u8,
    pub group: u64,
    /// 06: index of the first frame wanted (0 = from the start).
    pub frame_start: u64,
    /// 06: index of the last frame wanted (inclusive); `None` = through the end.
    pub frame_end: Option<u64>,
}

impl Message for Fetch {
    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        only_05(v, "FETCH")?;
        put_sized(buf, |b| {
            put_path(b, "broadcast", &self.broadcast)?;
            put_string(b, "track", &self.track, MAX_TRACK_NAME_LEN)?;
            b.put_u8(self.priority);
            put_varint(b, "group", self.group)?;
            if v.is_06_or_later() {
                if self.frame_end.is_some_and(|e| e < self.frame_start) {
                    return Err(EncodeError::Invalid {
                        what: "fetch frame range ends before it starts",
                    });
                }
                put_varint(b, "frame start", self.frame_start)?;
                put_opt_group(b, "frame end", self.frame_end)
            } else if self.frame_start != 0 || self.frame_end.is_some() {
                Err(EncodeError::NotInVersion {
                    what: "fetch frame range",
                    version: v,
                })
            } else {
                Ok(())
            }
        })
    }

    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        only_05_dec(v, "FETCH")?;
        get_sized(buf, |r| {
            let broadcast = r.path("broadcast")?;
            let track = r.string("track", MAX_TRACK_NAME_LEN)?;
            let priority = r.u8()?;
            let group = r.varint()?;
            let (frame_start, frame_end) = if v.is_06_or_later() {
                (r.varint()?, r.opt_group()?)
            } else {
                (0, None)
            };
            if let Some(e) = frame_end
                && e < frame_start
            {
                return Err(DecodeError::Invalid {
                    what: "fetch frame end before start",
                    value: e,
                });
            }
            Ok(Fetch {
                broadcast,
                track,
                priority,
                group,
                frame_start,
                frame_end,
            })
        })
    }
}

// ---------------------------------------------------------------------------------------
// Group streams

/// GROUP header (spec 5.10, 12.10), after the `00` stream type. `frame_start` is on the
/// wire on 06 only: the index of the first frame on the stream (0 = the whole group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupHeader {
    pub subscribe_id: u64,
    pub sequence: u64,
    pub frame_start: u64,
}

impl Message for GroupHeader {
    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if !v.is_06_or_later() && self.frame_start != 0 {
            return Err(EncodeError::NotInVersion {
                what: "partial group",
                version: v,
            });
        }
        put_sized(buf, |b| {
            put_varint(b, "subscribe id", self.subscribe_id)?;
            put_varint(b, "group sequence", self.sequence)?;
            if v.is_06_or_later() {
                put_varint(b, "frame start", self.frame_start)?;
            }
            Ok(())
        })
    }

    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        get_sized(buf, |r| {
            Ok(GroupHeader {
                subscribe_id: r.varint()?,
                sequence: r.varint()?,
                frame_start: if v.is_06_or_later() { r.varint()? } else { 0 },
            })
        })
    }
}

/// The prefix of a FRAME (spec 5.11): on 05 a zigzag timestamp delta, then the payload
/// length. The payload itself is carried separately so it is never copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Ignored (and not sent) before 05.
    pub timestamp_delta: i64,
    pub size: u64,
}

/// Valid range of a zigzag timestamp delta (spec 2.3).
pub const MAX_TIMESTAMP_DELTA: i64 = (1 << 61) - 1;

impl FrameHeader {
    /// Largest encoded frame header: two 8-byte varints.
    pub const MAX_LEN: usize = 16;

    /// Writes nothing at all when it fails.
    pub fn encode(&self, v: Version, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        if self.size > MAX_FRAME_SIZE {
            return Err(EncodeError::TooLarge {
                what: "frame size",
                size: self.size,
                max: MAX_FRAME_SIZE,
            });
        }
        if v.is_05_or_later() {
            if !(-MAX_TIMESTAMP_DELTA - 1..=MAX_TIMESTAMP_DELTA).contains(&self.timestamp_delta) {
                return Err(EncodeError::Invalid {
                    what: "timestamp delta out of range",
                });
            }
            put_varint(buf, "timestamp delta", zigzag(self.timestamp_delta))?;
        }
        put_varint(buf, "frame size", self.size)
    }

    /// Decodes only the header from a contiguous slice: `(header, bytes used)`. Nothing is
    /// consumed; `Short` means more bytes are needed. The incremental reader uses this.
    pub fn decode_slice(v: Version, b: &[u8]) -> Result<(Self, usize), DecodeError> {
        let (delta, used) = if v.is_05_or_later() {
            let (z, n) = peek_varint(b)?;
            (unzigzag(z), n)
        } else {
            (0, 0)
        };
        let (size, n) = peek_varint(&b[used..])?;
        if size > MAX_FRAME_SIZE {
            return Err(DecodeError::TooLarge {
                what: "frame size",
                size,
                max: MAX_FRAME_SIZE,
            });
        }
        Ok((
            FrameHeader {
                timestamp_delta: delta,
                size,
            },
            used + n,
        ))
    }

    /// Decodes only the header from `buf`; the caller then takes `size` payload bytes. On
    /// `Short` part of the header may have been consumed: use [`FrameHeader::decode_slice`]
    /// to resume on partial input.
    pub fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        let delta = if v.is_05_or_later() {
            unzigzag(get_varint(buf)?)
        } else {
            0
        };
        let size = get_varint(buf)?;
        if size > MAX_FRAME_SIZE {
            return Err(DecodeError::TooLarge {
                what: "frame size",
                size,
                max: MAX_FRAME_SIZE,
            });
        }
        Ok(FrameHeader {
            timestamp_delta: delta,
            size,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Probe and GoAway

/// PROBE (spec 5.12). `rtt_ms` is not on the wire on 03 and decodes as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub bitrate: u64,
    pub rtt_ms: u64,
}

impl Message for Probe {
    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        put_sized(buf, |b| {
            put_varint(b, "bitrate", self.bitrate)?;
            if v.has_hop_ids() {
                put_varint(b, "rtt", self.rtt_ms)?;
            }
            Ok(())
        })
    }

    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        get_sized(buf, |r| {
            let bitrate = r.varint()?;
            let rtt_ms = if v.has_hop_ids() { r.varint()? } else { 0 };
            Ok(Probe { bitrate, rtt_ms })
        })
    }
}

/// GOAWAY (spec 5.13), 04 and 05. An empty URI means no redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    pub uri: String,
}

impl Message for GoAway {
    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if v == Version::Lite03 {
            return Err(EncodeError::NotInVersion {
                what: "GOAWAY",
                version: v,
            });
        }
        put_sized(buf, |b| {
            put_string(b, "goaway uri", &self.uri, MAX_GOAWAY_URI_LEN)
        })
    }

    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        if v == Version::Lite03 {
            return Err(DecodeError::NotInVersion {
                what: "GOAWAY",
                version: v,
            });
        }
        get_sized(buf, |r| {
            Ok(GoAway {
                uri: r.string("goaway uri", MAX_GOAWAY_URI_LEN)?,
            })
        })
    }
}

// ---------------------------------------------------------------------------------------
// SETUP (05)

/// SETUP role parameter values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupRole {
    Both,
    Publisher,
    Subscriber,
}

/// SETUP (spec 4.2), 05 only. Unknown parameters are ignored on decode; parameters are
/// encoded in ascending ID order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Setup {
    /// 0x1: 0 none, 1 report, ≥2 increase.
    pub probe: Option<u64>,
    /// 0x2: request target incl. `?query`, client only on URI-less bindings. Not normalized.
    pub path: Option<String>,
    /// 0x3: 0 both, 1 publisher, 2 subscriber (kept raw; see [`Setup::role`]).
    pub role: Option<u64>,
    /// 0x4: routing cost (06 concept); ignored on 05.
    pub cost: Option<u64>,
    /// 0x5: the sender's hop ID.
    pub origin: Option<u64>,
}

impl Setup {
    /// The role hint; absent or unknown values mean Both.
    pub fn role(&self) -> SetupRole {
        match self.role {
            Some(1) => SetupRole::Publisher,
            Some(2) => SetupRole::Subscriber,
            _ => SetupRole::Both,
        }
    }
}

fn varint_param(value: &[u8], id: u64) -> Result<u64, DecodeError> {
    let mut r = Reader::new(value);
    let v = r.varint().map_err(|_| DecodeError::Invalid {
        what: "setup parameter",
        value: id,
    })?;
    r.finish()?;
    Ok(v)
}

impl Message for Setup {
    fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        only_05(v, "SETUP")?;
        put_sized(buf, |b| {
            let mut params: Vec<(u64, BytesMut)> = Vec::new();
            let mut varint = |id: u64, val: Option<u64>| -> Result<(), EncodeError> {
                if let Some(val) = val {
                    let mut tmp = BytesMut::new();
                    put_varint(&mut tmp, "setup parameter", val)?;
                    params.push((id, tmp));
                }
                Ok(())
            };
            varint(0x1, self.probe)?;
            varint(0x3, self.role)?;
            varint(0x4, self.cost)?;
            varint(0x5, self.origin)?;
            if let Some(p) = &self.path {
                if p.len() > MAX_PATH_LEN {
                    return Err(EncodeError::TooLarge {
                        what: "setup path",
                        size: p.len() as u64,
                        max: MAX_PATH_LEN as u64,
                    });
                }
                params.push((0x2, BytesMut::from(p.as_bytes())));
            }
            params.sort_by_key(|(id, _)| *id);
            put_varint(b, "parameter count", params.len() as u64)?;
            for (id, val) in params {
                put_varint(b, "parameter id", id)?;
                put_varint(b, "parameter length", val.len() as u64)?;
                b.put_slice(&val);
            }
            Ok(())
        })
    }

    fn decode(v: Version, buf: &mut impl Buf) -> Result<Self, DecodeError> {
        only_05_dec(v, "SETUP")?;
        get_sized(buf, |r| {
            let count = r.varint()?;
            if count > MAX_SETUP_PARAMETERS as u64 {
                return Err(DecodeError::TooLarge {
                    what: "setup parameter count",
                    size: count,
                    max: MAX_SETUP_PARAMETERS as u64,
                });
            }
            let mut setup = Setup::default();
            // IDs seen so far, to reject duplicates; bounded by MAX_SETUP_PARAMETERS.
            let mut seen: Vec<u64> = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let id = r.varint()?;
                let len = r.varint()?;
                let value = r.bytes(len)?;
                if seen.contains(&id) {
                    return Err(DecodeError::DuplicateParameter(id));
                }
                seen.push(id);
                match id {
                    0x1 => setup.probe = Some(varint_param(value, id)?),
                    0x2 => {
                        if value.len() > MAX_PATH_LEN {
                            return Err(DecodeError::TooLarge {
                                what: "setup path",
                                size: value.len() as u64,
                                max: MAX_PATH_LEN as u64,
                            });
                        }
                        let s = std::str::from_utf8(value)
                            .map_err(|_| DecodeError::Utf8("setup path"))?;
                        setup.path = Some(s.to_owned());
                    }
                    0x3 => setup.role = Some(varint_param(value, id)?),
                    0x4 => setup.cost = Some(varint_param(value, id)?),
                    0x5 => setup.origin = Some(varint_param(value, id)?),
                    _ => {} // Unknown parameters must be ignored (spec 4.2).
                }
            }
            Ok(setup)
        })
    }
}

// ---------------------------------------------------------------------------------------
// DATAGRAM (05)

/// A DATAGRAM body (spec 7): a whole single-frame group. `payload` shares the input buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub subscribe_id: u64,
    pub group: u64,
    /// Absolute, in the track's timescale.
    pub timestamp: u64,
    pub payload: Bytes,
}

impl Datagram {
    pub fn encode(&self, v: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        only_05(v, "DATAGRAM")?;
        let start = buf.len();
        put_varint(buf, "subscribe id", self.subscribe_id)?;
        put_varint(buf, "group", self.group)?;
        put_varint(buf, "timestamp", self.timestamp)?;
        buf.put_slice(&self.payload);
        let size = buf.len() - start;
        if size > MAX_DATAGRAM_SIZE {
            buf.truncate(start);
            return Err(EncodeError::TooLarge {
                what: "datagram",
                size: size as u64,
                max: MAX_DATAGRAM_SIZE as u64,
            });
        }
        Ok(())
    }

    /// Decodes a whole datagram; the payload is a zero-copy slice of `data`.
    pub fn decode(v: Version, mut data: Bytes) -> Result<Self, DecodeError> {
        only_05_dec(v, "DATAGRAM")?;
        if data.len() > MAX_DATAGRAM_SIZE {
            return Err(DecodeError::TooLarge {
                what: "datagram",
                size: data.len() as u64,
                max: MAX_DATAGRAM_SIZE as u64,
            });
        }
        let subscribe_id = get_varint(&mut data)?;
        let group = get_varint(&mut data)?;
        let timestamp = get_varint(&mut data)?;
        Ok(Datagram {
            subscribe_id,
            group,
            timestamp,
            payload: data,
        })
    }
}
