//! Incremental readers: they accept a stream's bytes in arbitrary chunks and yield whole
//! messages. `MessageReader` serves control streams; `GroupReader` serves Group streams and
//! Fetch responses, handing out frame payloads as zero-copy slices of the received chunks
//! whenever a payload lies within one chunk. Neither buffers more than its bound, and
//! neither may ever panic on input.

use bytes::{Buf, Bytes, BytesMut};

use crate::Version;
use crate::coding::{
    DecodeError, MAX_GROUP_HEADER_SIZE, MAX_MESSAGE_SIZE, max_group_header_size, peek_varint,
};
use crate::message::{FrameHeader, GroupHeader, Message};

/// Bytes a partial message may occupy: the largest body plus a type and a length varint.
pub const MAX_BUFFERED: usize = MAX_MESSAGE_SIZE + 16;

/// If `b` starts with a complete `[N]` (or `T|[N]`) message, its total encoded length.
fn complete_len(b: &[u8], typed: bool, max_body: usize) -> Result<Option<usize>, DecodeError> {
    let mut at = 0;
    if typed {
        match peek_varint(b) {
            Ok((_, n)) => at = n,
            Err(DecodeError::Short) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    let (len, n) = match peek_varint(&b[at..]) {
        Ok(x) => x,
        Err(DecodeError::Short) => return Ok(None),
        Err(e) => return Err(e),
    };
    if len > max_body as u64 {
        return Err(DecodeError::TooLarge {
            what: "message size",
            size: len,
            max: max_body as u64,
        });
    }
    let total = at + n + len as usize;
    Ok((b.len() >= total).then_some(total))
}

/// Buffers a control stream and yields whole messages. Holds at most [`MAX_BUFFERED`] bytes
/// of an incomplete message: a longer declared length is rejected at once.
#[derive(Debug, Default)]
pub struct MessageReader {
    buf: BytesMut,
}

impl MessageReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes. Callers drain with `read_*` after each push; what stays
    /// buffered afterwards is at most one incomplete message, whose declared length `read`
    /// has already checked against [`MAX_MESSAGE_SIZE`], so it never exceeds [`MAX_BUFFERED`].
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Number of bytes held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Reads one varint (a stream type), or `None` if incomplete.
    pub fn read_varint(&mut self) -> Result<Option<u64>, DecodeError> {
        match peek_varint(&self.buf) {
            Ok((v, n)) => {
                self.buf.advance(n);
                Ok(Some(v))
            }
            Err(DecodeError::Short) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads one whole message, or `None` if more bytes are needed.
    pub fn read<M: Message>(&mut self, v: Version) -> Result<Option<M>, DecodeError> {
        let Some(total) = complete_len(&self.buf, M::TYPED, MAX_MESSAGE_SIZE)? else {
            return Ok(None);
        };
        let mut msg = self.buf.split_to(total).freeze();
        let m = M::decode(v, &mut msg)?;
        if msg.has_remaining() {
            return Err(DecodeError::Long(msg.remaining()));
        }
        Ok(Some(m))
    }

    /// Takes every buffered byte (used to hand a stream's tail to a `GroupReader`).
    pub fn take_rest(&mut self) -> Bytes {
        self.buf.split().freeze()
    }
}

/// What a Group stream (or Fetch response) yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupItem {
    Header(GroupHeader),
    Frame {
        timestamp_delta: i64,
        payload: Bytes,
    },
}

#[derive(Debug)]
enum GroupState {
    Header,
    FrameHeader,
    Payload {
        delta: i64,
        size: usize,
        acc: BytesMut,
    },
}

/// Largest partial header kept between chunks: a GROUP header (length varint + body) or a
/// frame header, whichever is longer.
const MAX_PARTIAL_HEADER: usize = 8 + MAX_GROUP_HEADER_SIZE;

/// Parses a Group stream after its stream type: the GROUP header, then frames.
///
/// Payloads that lie within one pushed chunk are returned as slices of it (no copy); only a
/// payload split across chunks is assembled, into one allocation of exactly its size, which
/// is bounded by `MAX_FRAME_SIZE`.
#[derive(Debug)]
pub struct GroupReader {
    version: Version,
    state: GroupState,
    partial: BytesMut,
    cur: Bytes,
}

impl GroupReader {
    /// A reader that expects the GROUP header first.
    pub fn new(version: Version) -> Self {
        GroupReader {
            version,
            state: GroupState::Header,
            partial: BytesMut::new(),
            cur: Bytes::new(),
        }
    }

    /// A reader that expects frames only (a Fetch response).
    pub fn frames_only(version: Version) -> Self {
        GroupReader {
            state: GroupState::FrameHeader,
            ..GroupReader::new(version)
        }
    }

    /// Appends a chunk. Call [`GroupReader::next`] until it returns `None` before pushing
    /// again, so at most one chunk is held.
    pub fn push(&mut self, data: Bytes) {
        if self.cur.is_empty() {
            self.cur = data;
        } else {
            // The caller did not drain; keep correctness at the cost of one copy.
            let mut joined = BytesMut::with_capacity(self.cur.len() + data.len());
            joined.extend_from_slice(&self.cur);
            joined.extend_from_slice(&data);
            self.cur = joined.freeze();
        }
    }

    /// True when the stream may end here: the header was read and no frame is half done.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, GroupState::FrameHeader)
            && self.partial.is_empty()
            && self.cur.is_empty()
    }

    /// Checks the stream end (FIN): an error if it cut a header or payload short.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.at_boundary() {
            Ok(())
        } else {
            Err(DecodeError::Short)
        }
    }

    /// The next header or frame, or `None` when more bytes are needed.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<GroupItem>, DecodeError> {
        match &mut self.state {
            GroupState::Payload { delta, size, acc } => {
                if acc.is_empty() && self.cur.len() >= *size {
                    let payload = self.cur.split_to(*size);
                    let delta = *delta;
                    self.state = GroupState::FrameHeader;
                    return Ok(Some(GroupItem::Frame {
                        timestamp_delta: delta,
                        payload,
                    }));
                }
                if acc.capacity() == 0 {
                    acc.reserve(*size);
                }
                let take = (*size - acc.len()).min(self.cur.len());
                acc.extend_from_slice(&self.cur[..take]);
                self.cur.advance(take);
                if acc.len() < *size {
                    return Ok(None);
                }
                let payload = std::mem::take(acc).freeze();
                let delta = *delta;
                self.state = GroupState::FrameHeader;
                Ok(Some(GroupItem::Frame {
                    timestamp_delta: delta,
                    payload,
                }))
            }
            GroupState::Header | GroupState::FrameHeader => self.next_header(),
        }
    }

    fn parse_header(&self, b: &[u8]) -> Result<Option<(Parsed, usize)>, DecodeError> {
        match self.state {
            GroupState::Header => {
                let Some(total) = complete_len(b, false, max_group_header_size(self.version))?
                else {
                    return Ok(None);
                };
                let mut msg = &b[..total];
                let h = GroupHeader::decode(self.version, &mut msg)?;
                Ok(Some((Parsed::Group(h), total)))
            }
            _ => match FrameHeader::decode_slice(self.version, b) {
                Ok((h, n)) => Ok(Some((Parsed::Frame(h), n))),
                Err(DecodeError::Short) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    fn next_header(&mut self) -> Result<Option<GroupItem>, DecodeError> {
        let parsed = if self.partial.is_empty() {
            let r = self.parse_header(&self.cur)?;
            if let Some((_, n)) = &r {
                self.cur.advance(*n);
            }
            r
        } else {
            let old = self.partial.len();
            let k = (MAX_PARTIAL_HEADER - old).min(self.cur.len());
            let mut tmp = [0u8; MAX_PARTIAL_HEADER];
            tmp[..old].copy_from_slice(&self.partial);
            tmp[old..old + k].copy_from_slice(&self.cur[..k]);
            let r = self.parse_header(&tmp[..old + k])?;
            if let Some((_, n)) = &r {
                // Parsing the old bytes alone was short, so the header ends inside `cur`.
                self.cur.advance(n.saturating_sub(old));
                self.partial.clear();
            }
            r
        };
        match parsed {
            Some((Parsed::Group(h), _)) => {
                self.state = GroupState::FrameHeader;
                Ok(Some(GroupItem::Header(h)))
            }
            Some((Parsed::Frame(h), _)) => {
                // Bounded by MAX_FRAME_SIZE in decode_slice, so it fits in usize.
                let size = h.size as usize;
                if size == 0 {
                    return Ok(Some(GroupItem::Frame {
                        timestamp_delta: h.timestamp_delta,
                        payload: Bytes::new(),
                    }));
                }
                self.state = GroupState::Payload {
                    delta: h.timestamp_delta,
                    size,
                    acc: BytesMut::new(),
                };
                self.next()
            }
            None => {
                if self.partial.len() + self.cur.len() >= MAX_PARTIAL_HEADER {
                    return Err(DecodeError::TooLarge {
                        what: "header",
                        size: (self.partial.len() + self.cur.len()) as u64,
                        max: MAX_PARTIAL_HEADER as u64,
                    });
                }
                self.partial.extend_from_slice(&self.cur);
                self.cur = Bytes::new();
                Ok(None)
            }
        }
    }
}

enum Parsed {
    Group(GroupHeader),
    Frame(FrameHeader),
}
