//! Incremental decoding of a byte stream into frames.

use bytes::{Buf, BytesMut};

use crate::error::DecodeError;
use crate::frame::{Frame, FrameHeader};
use crate::limits::{DEFAULT_MAX_FRAME_LEN, HEADER_LEN, MAX_FRAME_LEN};

/// Splits frames off the front of a stream buffer.
///
/// A two-state reader in the style of `LengthDelimitedCodec`: it parses the header as
/// soon as [`HEADER_LEN`] bytes are there, checks the announced length against the
/// maximum *before* reserving anything, then reserves room for the rest of the frame and
/// waits. Bytes may arrive in pieces of any size; the frames that come out are the same.
///
/// ```
/// use bytes::BytesMut;
/// use interconnect_proto::{Frame, FrameDecoder, Ping};
///
/// let wire = Frame::Ping(Ping { nonce: 7 }).to_bytes(1024).unwrap();
/// let mut decoder = FrameDecoder::new(1024);
/// let mut buf = BytesMut::new();
/// buf.extend_from_slice(&wire[..3]);
/// assert_eq!(decoder.decode(&mut buf), Ok(None)); // waits for more
/// buf.extend_from_slice(&wire[3..]);
/// assert_eq!(decoder.decode(&mut buf), Ok(Some(Frame::Ping(Ping { nonce: 7 }))));
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_len: usize,
    pending: Option<FrameHeader>,
}

impl FrameDecoder {
    /// A decoder accepting frames up to `max_frame_len` bytes (clamped to the format's
    /// hard maximum).
    pub fn new(max_frame_len: usize) -> Self {
        FrameDecoder {
            max_frame_len: max_frame_len.min(MAX_FRAME_LEN),
            pending: None,
        }
    }

    /// The maximum frame length in force.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Changes the maximum, e.g. once the handshake negotiated a smaller one.
    pub fn set_max_frame_len(&mut self, max_frame_len: usize) {
        self.max_frame_len = max_frame_len.min(MAX_FRAME_LEN);
    }

    /// Takes the next whole frame off the front of `src`.
    ///
    /// `Ok(None)` means more bytes are needed; `src` then has room reserved for the rest
    /// of the frame. After an `Err` the stream has lost its framing: drop the link.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let header = match self.pending {
            Some(header) => header,
            None => {
                if src.len() < HEADER_LEN {
                    return Ok(None);
                }
                let header = FrameHeader::parse(src, self.max_frame_len)?;
                self.pending = Some(header);
                header
            }
        };
        let frame_len = header.frame_len();
        if src.len() < frame_len {
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        self.pending = None;
        let frame = src.split_to(frame_len).freeze();
        Frame::decode_checked(header, frame).map(Some)
    }

    /// Like [`decode`](Self::decode), for a stream that has ended: leftover bytes of an
    /// unfinished frame are an error rather than a wait.
    pub fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.has_remaining() => Err(DecodeError::Truncated {
                needed: self.pending.map_or(HEADER_LEN, |h| h.frame_len()),
                available: src.len(),
            }),
            None => Ok(None),
        }
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME_LEN)
    }
}
