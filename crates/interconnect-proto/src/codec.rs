//! `tokio_util::codec` adapters, for framing a byte stream such as TCP.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::decoder::FrameDecoder;
use crate::error::{DecodeError, EncodeError};
use crate::frame::Frame;
use crate::limits::DEFAULT_MAX_FRAME_LEN;

/// Encodes [`Frame`]s into and decodes them from a byte stream.
///
/// ```
/// use bytes::BytesMut;
/// use interconnect_proto::{Frame, FrameCodec, Pong};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::new(4096);
/// let mut buf = BytesMut::new();
/// codec.encode(Frame::Pong(Pong { nonce: 1 }), &mut buf).unwrap();
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Pong(Pong { nonce: 1 })));
/// ```
#[derive(Debug, Clone)]
pub struct FrameCodec {
    decoder: FrameDecoder,
    max_send_len: usize,
}

impl FrameCodec {
    /// A codec that sends and accepts frames up to `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        FrameCodec {
            decoder: FrameDecoder::new(max_frame_len),
            max_send_len: max_frame_len,
        }
    }

    /// Changes both maxima, e.g. after the handshake.
    pub fn set_max_frame_len(&mut self, max_frame_len: usize) {
        self.decoder.set_max_frame_len(max_frame_len);
        self.max_send_len = max_frame_len;
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_LEN)
    }
}

/// An error of the codec: I/O underneath, or the frame itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Reading or writing the stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Received bytes are not a valid frame.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A frame could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(self.decoder.decode(src)?)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(self.decoder.decode_eof(src)?)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(frame.encode(self.max_send_len, dst)?)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(frame.encode(self.max_send_len, dst)?)
    }
}
