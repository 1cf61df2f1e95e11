//! Encoding and decoding of frames: the header, the postcard payloads, and the raw
//! payload tails of the two bulk kinds.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::head;
use super::*;
use crate::checksum::crc32c;
use crate::error::{DecodeError, EncodeError};
use crate::kind::Kind;
use crate::limits::*;

/// The frame format version written in every header. A decoder rejects any other.
pub const FORMAT_VERSION: u8 = 1;

impl Kind {
    /// The kind for a header byte.
    #[inline]
    pub fn from_u8(byte: u8) -> Result<Kind, DecodeError> {
        Kind::from_byte(byte).ok_or(DecodeError::UnknownKind(byte))
    }
}

/// Flag bit 0: the frame ends with its payload, without the CRC trailer. Only a
/// `Sealed` frame may carry it (its AEAD tags already cover every byte), and only to a
/// peer that announced [`Capabilities::NO_CRC`](crate::Capabilities::NO_CRC).
pub const FLAG_NO_CRC: u8 = 0x01;

/// Flag bit 1: a `Sealed` frame's tags follow all its ciphertexts instead of each its
/// own ([`Layout::TagsLast`](crate::Layout::TagsLast)). Only a `Sealed` frame may carry
/// it, and only to a peer that announced
/// [`Capabilities::TAGS_LAST`](crate::Capabilities::TAGS_LAST).
pub const FLAG_TAGS_LAST: u8 = 0x02;

/// The flags a `Sealed` frame may carry; every other kind carries none.
const SEALED_FLAGS: u8 = FLAG_NO_CRC | FLAG_TAGS_LAST;

/// The 6-byte frame header: version, kind, no flags, payload length (u24 LE).
pub(crate) fn header_bytes(kind: Kind, payload_len: usize) -> [u8; HEADER_LEN] {
    header_bytes_flagged(kind, 0, payload_len)
}

/// The 6-byte frame header with `flags`.
pub(crate) fn header_bytes_flagged(kind: Kind, flags: u8, payload_len: usize) -> [u8; HEADER_LEN] {
    let len = (payload_len as u32).to_le_bytes();
    [FORMAT_VERSION, kind as u8, flags, len[0], len[1], len[2]]
}

/// The postcard sub-header of a [`Handshake`] frame; the message follows it raw.
#[derive(Serialize, Deserialize)]
struct HandshakeHead {
    step: u8,
    offered: u8,
    suite: u8,
    rekey_interval: u32,
}

/// The postcard sub-header of a [`FileChunk`] frame; the data follows it raw.
#[derive(Serialize, Deserialize)]
struct ChunkHead {
    channel: ChannelId,
    transfer: TransferId,
    offset: u64,
    digest: Option<[u8; 32]>,
}

/// Header fields of a frame, read before its payload arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the payload holds.
    pub kind: Kind,
    /// Flag bits: [`FLAG_NO_CRC`], [`FLAG_TAGS_LAST`], both or none.
    pub flags: u8,
    /// Payload length in bytes (excluding header and trailer).
    pub payload_len: usize,
}

impl FrameHeader {
    /// Whole-frame length: header, payload and trailer (if it has one).
    pub const fn frame_len(&self) -> usize {
        match self.has_crc() {
            true => self.payload_len + FRAME_OVERHEAD,
            false => self.payload_len + HEADER_LEN,
        }
    }

    /// Whether the frame ends with a CRC trailer (all but a `Sealed` frame sent with
    /// [`FLAG_NO_CRC`]).
    pub const fn has_crc(&self) -> bool {
        self.flags & FLAG_NO_CRC == 0
    }

    /// Parses and checks the fixed header at the start of `bytes` against
    /// `max_frame_len`. Needs only [`HEADER_LEN`] bytes.
    #[inline]
    pub fn parse(bytes: &[u8], max_frame_len: usize) -> Result<FrameHeader, DecodeError> {
        let Some(head) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                available: bytes.len(),
            });
        };
        if head[0] != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(head[0]));
        }
        let kind = Kind::from_u8(head[1])?;
        let flags = head[2];
        if flags != 0 && !(flags & !SEALED_FLAGS == 0 && kind == Kind::Sealed) {
            return Err(DecodeError::UnknownFlags(flags));
        }
        let payload_len =
            usize::from(head[3]) | (usize::from(head[4]) << 8) | (usize::from(head[5]) << 16);
        let header = FrameHeader {
            kind,
            flags,
            payload_len,
        };
        if header.frame_len() > max_frame_len {
            return Err(DecodeError::TooLarge {
                len: header.frame_len(),
                max: max_frame_len,
            });
        }
        Ok(header)
    }
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), EncodeError> {
    if value.len() > max {
        Err(EncodeError::FieldTooLong {
            field,
            len: value.len(),
            max,
        })
    } else {
        Ok(())
    }
}

impl Frame {
    /// The frame's kind byte.
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Hello(_) => Kind::Hello,
            Frame::Ping(_) => Kind::Ping,
            Frame::Pong(_) => Kind::Pong,
            Frame::Error(_) => Kind::Error,
            Frame::Name(_) => Kind::Name,
            Frame::Open(_) => Kind::Open,
            Frame::Accept(_) => Kind::Accept,
            Frame::Reject(_) => Kind::Reject,
            Frame::Data(_) => Kind::Data,
            Frame::Ack(_) => Kind::Ack,
            Frame::Close(_) => Kind::Close,
            Frame::FileOffer(_) => Kind::FileOffer,
            Frame::FileAccept(_) => Kind::FileAccept,
            Frame::FileChunk(_) => Kind::FileChunk,
            Frame::FileAck(_) => Kind::FileAck,
            Frame::FileComplete(_) => Kind::FileComplete,
            Frame::FileCancel(_) => Kind::FileCancel,
            Frame::FileOfferMeta(_) => Kind::FileOfferMeta,
            Frame::VersionQuery(_) => Kind::VersionQuery,
            Frame::VersionReply(_) => Kind::VersionReply,
            Frame::Handshake(_) => Kind::Handshake,
            Frame::Sealed(_) => Kind::Sealed,
        }
    }

    /// The channel the frame concerns, if it is a channel frame.
    pub fn channel(&self) -> Option<ChannelId> {
        match self {
            Frame::Hello(_)
            | Frame::Ping(_)
            | Frame::Pong(_)
            | Frame::Name(_)
            | Frame::VersionQuery(_)
            | Frame::VersionReply(_)
            | Frame::Handshake(_)
            | Frame::Sealed(_) => None,
            Frame::Error(m) => m.channel,
            Frame::Open(m) => Some(m.channel),
            Frame::Accept(m) => Some(m.channel),
            Frame::Reject(m) => Some(m.channel),
            Frame::Data(m) => Some(m.channel),
            Frame::Ack(m) => Some(m.channel),
            Frame::Close(m) => Some(m.channel),
            Frame::FileOffer(m) => Some(m.channel),
            Frame::FileAccept(m) => Some(m.channel),
            Frame::FileChunk(m) => Some(m.channel),
            Frame::FileAck(m) => Some(m.channel),
            Frame::FileComplete(m) => Some(m.channel),
            Frame::FileCancel(m) => Some(m.channel),
            Frame::FileOfferMeta(m) => Some(m.offer.channel),
        }
    }

    /// Checks the field limits of the format.
    fn check_fields(&self) -> Result<(), EncodeError> {
        match self {
            Frame::Hello(h) => {
                if h.min_version > h.max_version {
                    return Err(EncodeError::InvalidField("version range is empty"));
                }
                if (h.max_frame_len as usize) < MIN_MAX_FRAME_LEN {
                    return Err(EncodeError::InvalidField(
                        "max_frame_len is below MIN_MAX_FRAME_LEN",
                    ));
                }
                Ok(())
            }
            Frame::Error(m) => check_len("message", &m.message, MAX_REASON_LEN),
            Frame::Name(m) => check_len("name", &m.name, MAX_DEVICE_NAME_LEN),
            Frame::Open(m) => {
                check_len("package", &m.package, MAX_PACKAGE_LEN)?;
                match &m.signature {
                    Some(f) => check_len("signature", f, MAX_SIGNATURE_LEN),
                    None => Ok(()),
                }
            }
            Frame::Reject(m) => check_len("reason", &m.reason, MAX_REASON_LEN),
            Frame::Close(m) => check_len("reason", &m.reason, MAX_REASON_LEN),
            Frame::FileOffer(m) => check_len("name", &m.name, MAX_FILE_NAME_LEN),
            Frame::FileCancel(m) => check_len("reason", &m.reason, MAX_REASON_LEN),
            Frame::FileOfferMeta(m) => {
                check_len("name", &m.offer.name, MAX_FILE_NAME_LEN)?;
                if m.meta.len() > MAX_FILE_META_LEN {
                    return Err(EncodeError::FieldTooLong {
                        field: "meta",
                        len: m.meta.len(),
                        max: MAX_FILE_META_LEN,
                    });
                }
                Ok(())
            }
            Frame::VersionQuery(m) => check_len("package", &m.package, MAX_PACKAGE_LEN),
            _ => Ok(()),
        }
    }

    /// Appends the encoded frame to `dst`.
    ///
    /// Fails, leaving `dst` as it was, when a field breaks a limit or the frame would be
    /// longer than `max_frame_len`.
    pub fn encode(&self, max_frame_len: usize, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let start = dst.len();
        self.encode_without_crc(max_frame_len, dst)?;
        let crc = crc32c(&[&dst[start..]]);
        dst.put_u32_le(crc);
        Ok(())
    }

    /// Appends header and payload, leaving out the CRC trailer (a sealed frame's inner
    /// frame has none); `max_frame_len` still counts the trailer.
    pub(crate) fn encode_without_crc(
        &self,
        max_frame_len: usize,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let bulk = self.encode_head(max_frame_len, dst)?;
        dst.put_slice(bulk);
        Ok(())
    }

    /// The raw bytes a bulk kind carries after its sub-header (empty for other kinds).
    fn bulk(&self) -> &[u8] {
        match self {
            Frame::Data(d) => &d.payload,
            Frame::FileChunk(c) => &c.data,
            Frame::FileOfferMeta(m) => &m.meta,
            Frame::Handshake(h) => &h.message,
            Frame::Sealed(s) => &s.ciphertext,
            _ => &[],
        }
    }

    /// Appends the frame up to its bulk bytes (header with the full length, then the
    /// postcard part) and returns the bulk bytes, which belong right after it. This lets
    /// a sealing caller read the bulk from where it lies instead of copying it first.
    /// `max_frame_len` counts the whole frame with its CRC trailer.
    pub(crate) fn encode_head(
        &self,
        max_frame_len: usize,
        dst: &mut BytesMut,
    ) -> Result<&[u8], EncodeError> {
        if let Frame::Data(d) = self {
            d.head().put(d.payload.len(), max_frame_len, dst)?;
            return Ok(&d.payload);
        }
        let max_frame_len = max_frame_len.min(MAX_FRAME_LEN);
        self.check_fields()?;
        let bulk = self.bulk();
        if bulk.len() + FRAME_OVERHEAD > max_frame_len {
            return Err(EncodeError::TooLarge {
                len: bulk.len() + FRAME_OVERHEAD,
                max: max_frame_len,
            });
        }
        let start = dst.len();
        dst.reserve(HEADER_LEN + CHUNK_HEADER_MAX_LEN + bulk.len() + CRC_LEN);
        dst.put_slice(&header_bytes(self.kind(), 0));
        let written = match self {
            Frame::Hello(m) => serialize(m, dst),
            Frame::Ping(m) => serialize(m, dst),
            Frame::Pong(m) => serialize(m, dst),
            Frame::Error(m) => serialize(m, dst),
            Frame::Name(m) => serialize(m, dst),
            Frame::Open(m) => serialize(m, dst),
            Frame::Accept(m) => serialize(m, dst),
            Frame::Reject(m) => serialize(m, dst),
            // Written by `DataHead::put` above; never reached.
            Frame::Data(_) => Err(EncodeError::InvalidField("data frame")),
            Frame::Ack(m) => {
                head::put_ack(m, dst);
                Ok(())
            }
            Frame::Close(m) => serialize(m, dst),
            Frame::FileOffer(m) => serialize(m, dst),
            Frame::FileAccept(m) => serialize(m, dst),
            Frame::FileChunk(m) => serialize(
                &ChunkHead {
                    channel: m.channel,
                    transfer: m.transfer,
                    offset: m.offset,
                    digest: m.digest,
                },
                dst,
            ),
            Frame::FileAck(m) => serialize(m, dst),
            Frame::FileComplete(m) => serialize(m, dst),
            Frame::FileCancel(m) => serialize(m, dst),
            Frame::FileOfferMeta(m) => serialize(&m.offer, dst),
            Frame::VersionQuery(m) => serialize(m, dst),
            Frame::VersionReply(m) => serialize(m, dst),
            Frame::Handshake(m) => serialize(
                &HandshakeHead {
                    step: m.step,
                    offered: m.offered,
                    suite: m.suite,
                    rekey_interval: m.rekey_interval,
                },
                dst,
            ),
            Frame::Sealed(m) => serialize(&m.nonce, dst),
        };
        let payload_len = dst.len() - start - HEADER_LEN + bulk.len();
        let frame_len = payload_len + FRAME_OVERHEAD;
        if let Err(e) = written {
            dst.truncate(start);
            return Err(e);
        }
        if frame_len > max_frame_len {
            dst.truncate(start);
            return Err(EncodeError::TooLarge {
                len: frame_len,
                max: max_frame_len,
            });
        }
        let flags = match self {
            Frame::Sealed(Sealed {
                layout: Layout::TagsLast,
                ..
            }) => FLAG_TAGS_LAST,
            _ => 0,
        };
        dst[start..start + HEADER_LEN].copy_from_slice(&header_bytes_flagged(
            self.kind(),
            flags,
            payload_len,
        ));
        Ok(bulk)
    }

    /// Encodes the frame into a new buffer.
    pub fn to_bytes(&self, max_frame_len: usize) -> Result<Bytes, EncodeError> {
        let mut dst = BytesMut::new();
        self.encode(max_frame_len, &mut dst)?;
        Ok(dst.freeze())
    }

    /// Decodes exactly one whole frame (header, payload, trailer) held in `frame`.
    ///
    /// Bulk payloads are returned as slices of `frame`, without copying.
    pub fn decode(frame: Bytes, max_frame_len: usize) -> Result<Frame, DecodeError> {
        let header = FrameHeader::parse(&frame, max_frame_len)?;
        check_whole(&header, frame.len())?;
        Frame::decode_checked(header, frame)
    }

    /// Decodes a frame from a buffer the caller has to itself, as [`Frame::decode`]
    /// does, except that a `Sealed` frame keeps its ciphertext in that buffer
    /// ([`OwnedFrame::Sealed`]), to be opened where it lies, and a `Data` frame comes
    /// as its head and payload ([`OwnedFrame::Data`]), without a [`Frame`] around them.
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use interconnect_proto::{DEFAULT_MAX_FRAME_LEN, Frame, Layout, OwnedFrame, Sealed};
    ///
    /// let sealed = Frame::Sealed(Sealed {
    ///     nonce: 7,
    ///     ciphertext: Bytes::from_static(&[0xAB; 20]),
    ///     layout: Layout::Interleaved,
    /// });
    /// let mut bytes = BytesMut::new();
    /// sealed.encode(DEFAULT_MAX_FRAME_LEN, &mut bytes)?;
    /// let Ok(OwnedFrame::Sealed(parts)) = Frame::decode_owned(bytes, DEFAULT_MAX_FRAME_LEN) else {
    ///     panic!("a sealed frame");
    /// };
    /// assert_eq!((parts.nonce, &parts.ciphertext[..]), (7, &[0xAB; 20][..]));
    /// # Ok::<(), interconnect_proto::EncodeError>(())
    /// ```
    pub fn decode_owned(
        mut frame: BytesMut,
        max_frame_len: usize,
    ) -> Result<OwnedFrame, DecodeError> {
        let header = FrameHeader::parse(&frame, max_frame_len)?;
        check_whole(&header, frame.len())?;
        let end = payload_end(&header, &frame)?;
        match header.kind {
            Kind::Sealed => {}
            Kind::Data => {
                let mut frame = frame.freeze();
                frame.truncate(end);
                frame.advance(HEADER_LEN);
                let (head, payload) = Frame::decode_data(frame)?;
                return Ok(OwnedFrame::Data(head, payload));
            }
            kind => {
                let payload = frame.freeze().slice(HEADER_LEN..end);
                return Frame::decode_payload(kind, payload).map(OwnedFrame::Other);
            }
        }
        frame.truncate(end);
        frame.advance(HEADER_LEN);
        let (nonce, at) = deserialize_head::<u64>(Kind::Sealed, &frame)?;
        frame.advance(at);
        Ok(OwnedFrame::Sealed(SealedMut {
            nonce,
            ciphertext: frame,
            layout: Layout::of_flags(header.flags),
        }))
    }

    /// Decodes a frame whose header is parsed and whose length is exactly right.
    pub(crate) fn decode_checked(header: FrameHeader, frame: Bytes) -> Result<Frame, DecodeError> {
        let payload = frame.slice(HEADER_LEN..payload_end(&header, &frame)?);
        match header.kind {
            Kind::Sealed => decode_sealed(payload, header.flags),
            kind => Frame::decode_payload(kind, payload),
        }
    }

    /// Decodes the frame held inside a [`Sealed`] frame once decrypted: header and
    /// payload, no CRC trailer (the AEAD tag already proves it intact). Frames of kind
    /// [`Kind::Handshake`] or [`Kind::Sealed`] are refused there. `max_frame_len` counts
    /// the frame as if sent in the clear (CRC included).
    pub fn decode_unsealed(mut body: Bytes, max_frame_len: usize) -> Result<Frame, DecodeError> {
        let header = inner_header(&body, max_frame_len)?;
        if body.len() != HEADER_LEN + header.payload_len {
            return Err(DecodeError::Malformed {
                kind: header.kind,
                reason: "sealed length differs from the inner header",
            });
        }
        body.advance(HEADER_LEN);
        Frame::decode_payload(header.kind, body)
    }

    /// The frames of a sealed frame's plaintext, in order: one, or several back to back
    /// when the sender batched them (the peer announced [`Capabilities::BATCH`]). Each is
    /// checked as [`decode_unsealed`](Self::decode_unsealed) checks one; the first that
    /// fails ends the run with its error.
    ///
    /// [`Capabilities::BATCH`]: crate::Capabilities::BATCH
    pub fn decode_batch(body: Bytes, max_frame_len: usize) -> Batch {
        Batch {
            rest: body,
            max_frame_len,
            failed: false,
        }
    }

    /// A data frame's payload: its head, and the message bytes after it.
    #[inline]
    fn decode_data(mut payload: Bytes) -> Result<(DataHead, Bytes), DecodeError> {
        let malformed = |reason| DecodeError::Malformed {
            kind: Kind::Data,
            reason,
        };
        let (head, rest) = head::take_data(&payload).map_err(malformed)?;
        payload.advance(rest);
        Ok((head, payload))
    }

    fn decode_payload(kind: Kind, mut payload: Bytes) -> Result<Frame, DecodeError> {
        let frame = match kind {
            Kind::Hello => Frame::Hello(deserialize(kind, &payload)?),
            Kind::Ping => Frame::Ping(deserialize(kind, &payload)?),
            Kind::Pong => Frame::Pong(deserialize(kind, &payload)?),
            Kind::Error => Frame::Error(deserialize(kind, &payload)?),
            Kind::Name => Frame::Name(deserialize(kind, &payload)?),
            Kind::Open => Frame::Open(deserialize(kind, &payload)?),
            Kind::Accept => Frame::Accept(deserialize(kind, &payload)?),
            Kind::Reject => Frame::Reject(deserialize(kind, &payload)?),
            Kind::Data => {
                let (head, payload) = Frame::decode_data(payload)?;
                Frame::Data(Data::with_head(head, payload))
            }
            Kind::Ack => Frame::Ack(
                head::take_ack(&payload)
                    .map_err(|reason| DecodeError::Malformed { kind, reason })?,
            ),
            Kind::Close => Frame::Close(deserialize(kind, &payload)?),
            Kind::FileOffer => Frame::FileOffer(deserialize(kind, &payload)?),
            Kind::FileAccept => Frame::FileAccept(deserialize(kind, &payload)?),
            Kind::FileChunk => {
                let (head, rest) = deserialize_head::<ChunkHead>(kind, &payload)?;
                payload.advance(rest);
                Frame::FileChunk(FileChunk {
                    channel: head.channel,
                    transfer: head.transfer,
                    offset: head.offset,
                    data: payload,
                    digest: head.digest,
                })
            }
            Kind::FileAck => Frame::FileAck(deserialize(kind, &payload)?),
            Kind::FileComplete => Frame::FileComplete(deserialize(kind, &payload)?),
            Kind::FileCancel => Frame::FileCancel(deserialize(kind, &payload)?),
            Kind::FileOfferMeta => {
                let (offer, rest) = deserialize_head::<FileOffer>(kind, &payload)?;
                Frame::FileOfferMeta(FileOfferMeta {
                    offer,
                    meta: payload.slice(rest..),
                })
            }
            Kind::VersionQuery => Frame::VersionQuery(deserialize(kind, &payload)?),
            Kind::VersionReply => Frame::VersionReply(deserialize(kind, &payload)?),
            Kind::Handshake => {
                let (head, rest) = deserialize_head::<HandshakeHead>(kind, &payload)?;
                Frame::Handshake(Handshake {
                    step: head.step,
                    offered: head.offered,
                    suite: head.suite,
                    rekey_interval: head.rekey_interval,
                    message: payload.slice(rest..),
                })
            }
            Kind::Sealed => return decode_sealed(payload, 0),
        };
        frame.check_fields().map_err(|_| DecodeError::Malformed {
            kind,
            reason: "a field breaks its limit",
        })?;
        Ok(frame)
    }
}

/// A postcard output flavor that appends to a `BytesMut`.
struct AppendTo<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.put_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

fn serialize<T: Serialize>(value: &T, dst: &mut BytesMut) -> Result<(), EncodeError> {
    postcard::serialize_with_flavor(value, AppendTo(dst)).map_err(|_| EncodeError::Serialize)
}

fn deserialize<T: DeserializeOwned>(kind: Kind, payload: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = deserialize_head::<T>(kind, payload)?;
    if rest != payload.len() {
        return Err(DecodeError::Malformed {
            kind,
            reason: "bytes after the message",
        });
    }
    Ok(value)
}

/// Deserialises a `T` from the front of `payload`; returns it and where it ended.
fn deserialize_head<T: DeserializeOwned>(
    kind: Kind,
    payload: &[u8],
) -> Result<(T, usize), DecodeError> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, rest)) => Ok((value, payload.len() - rest.len())),
        Err(e) => Err(DecodeError::Malformed {
            kind,
            reason: postcard_reason(&e),
        }),
    }
}

/// A `Sealed` frame's payload: its nonce, then its ciphertext, laid out as `flags` say.
fn decode_sealed(mut payload: Bytes, flags: u8) -> Result<Frame, DecodeError> {
    let (nonce, rest) = deserialize_head::<u64>(Kind::Sealed, &payload)?;
    payload.advance(rest);
    Ok(Frame::Sealed(Sealed {
        nonce,
        ciphertext: payload,
        layout: Layout::of_flags(flags),
    }))
}

/// Refuses a frame shorter or longer than its header says.
fn check_whole(header: &FrameHeader, len: usize) -> Result<(), DecodeError> {
    let frame_len = header.frame_len();
    if len < frame_len {
        return Err(DecodeError::Truncated {
            needed: frame_len,
            available: len,
        });
    }
    if len > frame_len {
        return Err(DecodeError::Malformed {
            kind: header.kind,
            reason: "bytes after the frame's end",
        });
    }
    Ok(())
}

/// Where a whole frame's payload ends, once its CRC trailer (if it has one) is checked.
fn payload_end(header: &FrameHeader, frame: &[u8]) -> Result<usize, DecodeError> {
    if !header.has_crc() {
        return Ok(frame.len());
    }
    let crc_at = frame.len() - CRC_LEN;
    let (body, trailer) = frame.split_at(crc_at);
    let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let actual = crc32c(&[body]);
    if expected != actual {
        return Err(DecodeError::BadCrc { expected, actual });
    }
    Ok(crc_at)
}

impl Layout {
    /// The layout a `Sealed` frame's header flags announce.
    fn of_flags(flags: u8) -> Layout {
        match flags & FLAG_TAGS_LAST {
            0 => Layout::Interleaved,
            _ => Layout::TagsLast,
        }
    }
}

/// A frame decoded by [`Frame::decode_owned`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnedFrame {
    /// A `Sealed` frame, its ciphertext still in the buffer it arrived in.
    Sealed(SealedMut),
    /// A `Data` frame's head and payload.
    Data(DataHead, Bytes),
    /// Any other frame.
    Other(Frame),
}

impl From<OwnedFrame> for Frame {
    fn from(frame: OwnedFrame) -> Frame {
        match frame {
            OwnedFrame::Sealed(sealed) => Frame::Sealed(sealed.into()),
            OwnedFrame::Data(head, payload) => Frame::Data(Data::with_head(head, payload)),
            OwnedFrame::Other(frame) => frame,
        }
    }
}

fn postcard_reason(error: &postcard::Error) -> &'static str {
    use postcard::Error as E;
    match error {
        E::DeserializeUnexpectedEnd => "payload ends inside a field",
        E::DeserializeBadVarint => "bad varint",
        E::DeserializeBadBool => "bad bool",
        E::DeserializeBadUtf8 => "string is not UTF-8",
        E::DeserializeBadOption => "bad option tag",
        E::DeserializeBadEnum => "unknown enum variant",
        _ => "undecodable payload",
    }
}

#[cfg(any(test, feature = "arbitrary"))]
pub(super) fn arbitrary_bytes(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Bytes> {
    let bytes: alloc::vec::Vec<u8> = arbitrary::Arbitrary::arbitrary(u)?;
    Ok(Bytes::from(bytes))
}

/// The header of a frame inside a sealed frame, which may be neither sealed nor a
/// handshake step.
#[inline]
fn inner_header(bytes: &[u8], max_frame_len: usize) -> Result<FrameHeader, DecodeError> {
    let header = FrameHeader::parse(bytes, max_frame_len)?;
    if matches!(header.kind, Kind::Handshake | Kind::Sealed) {
        return Err(DecodeError::Malformed {
            kind: header.kind,
            reason: "a sealed frame may not hold this kind",
        });
    }
    Ok(header)
}

/// The inner frames of one sealed frame's plaintext ([`Frame::decode_batch`]).
#[derive(Debug)]
pub struct Batch {
    rest: Bytes,
    max_frame_len: usize,
    failed: bool,
}

/// An inner frame of a batch as [`Batch::next_inner`] gives it.
#[derive(Debug)]
pub enum InnerFrame {
    /// A data frame, as its head and message bytes: nothing more is built for each of
    /// the small messages a batch holds.
    Data(DataHead, Bytes),
    /// Any other frame.
    Other(Frame),
}

impl Batch {
    /// The next inner frame, a data frame as its head and payload; checked as
    /// [`next`](Iterator::next) checks it, with the same errors.
    #[inline]
    pub fn next_inner(&mut self) -> Option<Result<InnerFrame, DecodeError>> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let header = match inner_header(&self.rest, self.max_frame_len) {
            Ok(header) => header,
            Err(error) => {
                self.failed = true;
                return Some(Err(error));
            }
        };
        if self.rest.len() < HEADER_LEN + header.payload_len {
            self.failed = true;
            return Some(Err(DecodeError::Malformed {
                kind: header.kind,
                reason: "sealed length differs from the inner header",
            }));
        }
        self.rest.advance(HEADER_LEN);
        let payload = self.rest.split_to(header.payload_len);
        let inner = match header.kind {
            Kind::Data => Frame::decode_data(payload).map(|(head, p)| InnerFrame::Data(head, p)),
            kind => Frame::decode_payload(kind, payload).map(InnerFrame::Other),
        };
        self.failed = inner.is_err();
        Some(inner)
    }
}

impl Iterator for Batch {
    type Item = Result<Frame, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let inner = self.next_inner()?;
        Some(inner.map(|inner| match inner {
            InnerFrame::Data(head, payload) => Frame::Data(Data::with_head(head, payload)),
            InnerFrame::Other(frame) => frame,
        }))
    }
}
