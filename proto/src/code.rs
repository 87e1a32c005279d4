//! moq-lite error codes: the semantic `ErrorCode`, its number on each version, and the
//! translation of stream codes into the HTTP/3 reserved range that moq-dev applies on the
//! wire (WebTransport always, raw QUIC too). It owns numbers only and must never decide
//! policy (what to reset or close); the session does that.

use crate::Version;

/// Why a stream was reset or stopped, or a session closed. Numbers per spec section 6
/// (the August reference registry), which is what 03/04/05 peers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No longer needed. Sent as 1 on streams (see [`ErrorCode::stream_code`]).
    Cancel,
    RequiredExtension,
    Old,
    Timeout,
    Transport,
    Decode,
    Unauthorized,
    Version,
    UnexpectedStream,
    BoundsExceeded,
    Duplicate,
    NotFound,
    WrongSize,
    ProtocolViolation,
    UnexpectedMessage,
    Unsupported,
    Encode,
    TooManyParameters,
    InvalidRole,
    UnknownAlpn,
    Dropped,
    Closed,
    Lagged,
    FrameTooLarge,
    TimestampMismatch,
    Unroutable,
    Evicted,
    /// Application code n (0..=65535); on the wire 64 + n. The relay sends 64 + HTTP status.
    App(u16),
    /// A number we do not know, kept so it can be surfaced as a "remote error".
    Unknown(u64),
}

/// Base of the HTTP/3 reserved range that WebTransport stream codes are mapped into.
const H3_BASE: u64 = 0x52e4_a40f_a8db;
/// Largest h3 code that still maps back to a u32 WebTransport code.
const H3_MAX: u64 = 0x52e5_ac98_3162;

impl ErrorCode {
    /// The August-registry number (spec section 6). Used for session close on 03-05.
    pub const fn number(self) -> u64 {
        match self {
            ErrorCode::Cancel => 0,
            ErrorCode::RequiredExtension => 1,
            ErrorCode::Old => 2,
            ErrorCode::Timeout => 3,
            ErrorCode::Transport => 4,
            ErrorCode::Decode => 5,
            ErrorCode::Unauthorized => 6,
            ErrorCode::Version => 9,
            ErrorCode::UnexpectedStream => 10,
            ErrorCode::BoundsExceeded => 11,
            ErrorCode::Duplicate => 12,
            ErrorCode::NotFound => 13,
            ErrorCode::WrongSize => 14,
            ErrorCode::ProtocolViolation => 15,
            ErrorCode::UnexpectedMessage => 16,
            ErrorCode::Unsupported => 17,
            ErrorCode::Encode => 18,
            ErrorCode::TooManyParameters => 19,
            ErrorCode::InvalidRole => 20,
            ErrorCode::UnknownAlpn => 21,
            ErrorCode::Dropped => 24,
            ErrorCode::Closed => 25,
            ErrorCode::Lagged => 26,
            ErrorCode::FrameTooLarge => 27,
            ErrorCode::TimestampMismatch => 29,
            ErrorCode::Unroutable => 30,
            ErrorCode::Evicted => 31,
            ErrorCode::App(n) => 64 + n as u64,
            ErrorCode::Unknown(n) => n,
        }
    }

    /// Inverse of [`ErrorCode::number`]; unassigned numbers become `Unknown`.
    pub const fn from_number(n: u64) -> ErrorCode {
        match n {
            0 => ErrorCode::Cancel,
            1 => ErrorCode::RequiredExtension,
            2 => ErrorCode::Old,
            3 => ErrorCode::Timeout,
            4 => ErrorCode::Transport,
            5 => ErrorCode::Decode,
            6 => ErrorCode::Unauthorized,
            9 => ErrorCode::Version,
            10 => ErrorCode::UnexpectedStream,
            11 => ErrorCode::BoundsExceeded,
            12 => ErrorCode::Duplicate,
            13 => ErrorCode::NotFound,
            14 => ErrorCode::WrongSize,
            15 => ErrorCode::ProtocolViolation,
            16 => ErrorCode::UnexpectedMessage,
            17 => ErrorCode::Unsupported,
            18 => ErrorCode::Encode,
            19 => ErrorCode::TooManyParameters,
            20 => ErrorCode::InvalidRole,
            21 => ErrorCode::UnknownAlpn,
            24 => ErrorCode::Dropped,
            25 => ErrorCode::Closed,
            26 => ErrorCode::Lagged,
            27 => ErrorCode::FrameTooLarge,
            29 => ErrorCode::TimestampMismatch,
            30 => ErrorCode::Unroutable,
            31 => ErrorCode::Evicted,
            n if n >= 64 && n < 64 + 65536 => ErrorCode::App((n - 64) as u16),
            n => ErrorCode::Unknown(n),
        }
    }

    /// The moq stream code (before h3 translation) to put in RESET_STREAM / STOP_SENDING.
    ///
    /// Cancel is sent as 1: published clients (moq-net 0.3.18) read 0 as "internal error"
    /// while August peers log 1 as a harmless remote error (spec 12.11 recommendation).
    /// On 06 the peer is certainly a 0.3.18-era stack, so its stream registry is used.
    pub const fn stream_code(self, version: Version) -> u64 {
        if version.is_06_or_later() {
            return self.stream_code_06();
        }
        match self {
            ErrorCode::Cancel => 1,
            other => other.number(),
        }
    }

    /// moq-net 0.3.18's stream registry (spec 12.11), as its `From<&Error> for StreamError`
    /// folds the same conditions.
    const fn stream_code_06(self) -> u64 {
        match self {
            ErrorCode::Cancel | ErrorCode::Dropped => 0x1,
            ErrorCode::Timeout => 0x2,
            // Session-scope reasons are flattened to "session closed"; the close says why.
            ErrorCode::Closed
            | ErrorCode::Unauthorized
            | ErrorCode::Version
            | ErrorCode::UnknownAlpn
            | ErrorCode::TooManyParameters
            | ErrorCode::ProtocolViolation
            | ErrorCode::UnexpectedMessage => 0x3,
            ErrorCode::Lagged => 0x5,
            ErrorCode::Decode | ErrorCode::BoundsExceeded => 0x12,
            ErrorCode::NotFound => 0x33,
            ErrorCode::Old => 0x34,
            ErrorCode::Evicted => 0x35,
            ErrorCode::Unroutable => 0x36,
            ErrorCode::WrongSize => 0x37,
            ErrorCode::FrameTooLarge => 0x38,
            ErrorCode::TimestampMismatch => 0x39,
            ErrorCode::App(n) => 64 + n as u64,
            ErrorCode::Unknown(n) => n,
            _ => 0x0, // internal error
        }
    }

    /// Reads a received moq stream code (after h3 untranslation). 0 and 1 both read as
    /// Cancel, because the two registries disagree on which one means "no longer needed"
    /// (on 06 too: 0 is moq-net's "internal", but nothing the relay does differs for it).
    pub const fn from_stream_code(code: u64, version: Version) -> ErrorCode {
        if version.is_06_or_later() {
            return match code {
                0x0 | 0x1 => ErrorCode::Cancel,
                0x2 | 0x31 => ErrorCode::Timeout,
                0x3 | 0x4 => ErrorCode::Closed,
                0x5 => ErrorCode::Lagged,
                0x12 => ErrorCode::Decode,
                0x32 => ErrorCode::BoundsExceeded,
                0x33 => ErrorCode::NotFound,
                0x34 => ErrorCode::Old,
                0x35 => ErrorCode::Evicted,
                0x36 => ErrorCode::Unroutable,
                0x37 => ErrorCode::WrongSize,
                0x38 => ErrorCode::FrameTooLarge,
                0x39 => ErrorCode::TimestampMismatch,
                n if n >= 64 && n < 64 + 65536 => ErrorCode::App((n - 64) as u16),
                n => ErrorCode::Unknown(n),
            };
        }
        match code {
            0 | 1 => ErrorCode::Cancel,
            n => ErrorCode::from_number(n),
        }
    }

    /// The session close code (QUIC CONNECTION_CLOSE / WebTransport capsule), untranslated.
    /// On 06, moq-net 0.3.18's session registry (spec 12.11).
    pub const fn session_code(self, version: Version) -> u64 {
        if !version.is_06_or_later() {
            return self.number();
        }
        match self {
            ErrorCode::Cancel | ErrorCode::Closed | ErrorCode::Dropped => 0x0,
            ErrorCode::Unauthorized => 0x2,
            ErrorCode::ProtocolViolation
            | ErrorCode::UnexpectedMessage
            | ErrorCode::UnexpectedStream
            | ErrorCode::Duplicate
            | ErrorCode::Decode
            | ErrorCode::Encode
            | ErrorCode::WrongSize
            | ErrorCode::BoundsExceeded => 0x3,
            ErrorCode::TooManyParameters => 0x6,
            ErrorCode::Timeout => 0x11,
            ErrorCode::Version | ErrorCode::UnknownAlpn => 0x15,
            ErrorCode::App(n) => 64 + n as u64,
            ErrorCode::Unknown(n) => n,
            _ => 0x1, // internal error
        }
    }

    /// Reads a received session close code: the section 6 numbers before 06, moq-net
    /// 0.3.18's session registry on 06.
    pub const fn from_session_code(code: u64, version: Version) -> ErrorCode {
        if !version.is_06_or_later() {
            return ErrorCode::from_number(code);
        }
        match code {
            0x0 => ErrorCode::Cancel,
            0x1 => ErrorCode::Transport,
            0x2 => ErrorCode::Unauthorized,
            0x3 => ErrorCode::ProtocolViolation,
            0x6 => ErrorCode::TooManyParameters,
            0x10 | 0x11 => ErrorCode::Timeout,
            0x15 => ErrorCode::Version,
            n if n >= 64 && n < 64 + 65536 => ErrorCode::App((n - 64) as u16),
            n => ErrorCode::Unknown(n),
        }
    }

    /// True for codes that mean "not needed any more" rather than a failure.
    pub const fn is_benign(self) -> bool {
        matches!(self, ErrorCode::Cancel)
    }
}

/// Maps a WebTransport (u32) application code into the HTTP/3 reserved range, skipping the
/// GREASE codepoints. moq-dev applies this to stream codes on WebTransport and raw QUIC alike.
pub const fn to_h3_code(n: u32) -> u64 {
    H3_BASE + n as u64 + (n as u64 / 0x1e)
}

/// Inverse of [`to_h3_code`]; `None` for values outside the range (take those literally) and
/// for GREASE codepoints inside it.
pub const fn from_h3_code(h: u64) -> Option<u32> {
    if h < H3_BASE || h > H3_MAX {
        return None;
    }
    let d = h - H3_BASE;
    // Every 0x1f-th value after the base is a GREASE codepoint, not a WebTransport code.
    if d % 0x1f == 0x1e {
        return None;
    }
    let n = d - d / 0x1f;
    if n > u32::MAX as u64 {
        return None;
    }
    Some(n as u32)
}

/// Wire value for a stream reset with `code` on `version`: translated into the h3 range.
pub fn stream_code_to_wire(code: ErrorCode, version: Version) -> u64 {
    let n = code.stream_code(version);
    // Codes above u32 cannot travel as WebTransport codes; Unknown is the only way to get one.
    to_h3_code(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Reads a stream reset code from the wire: untranslate inside the h3 range, and take codes
/// outside it literally (a raw-QUIC peer that does not translate).
pub fn stream_code_from_wire(wire: u64, version: Version) -> ErrorCode {
    let n = from_h3_code(wire).map_or(wire, u64::from);
    ErrorCode::from_stream_code(n, version)
}
