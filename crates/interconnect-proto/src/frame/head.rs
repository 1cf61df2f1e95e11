//! The sub-headers of the frames every message and acknowledgement travels in ([`Data`],
//! [`Ack`]), written and read by hand: byte for byte what postcard makes of them
//! (LEB128 varints, an enum as its variant's index), the same errors for the same
//! input, at a fraction of serde's instructions on the path each message takes.

use bytes::{BufMut, BytesMut};

use super::codec::header_bytes;
use super::{Ack, ChannelId, ContentType, Exchange};
use crate::error::EncodeError;
use crate::kind::Kind;
use crate::limits::{DATA_HEADER_MAX_LEN, FRAME_OVERHEAD, HEADER_LEN, MAX_FRAME_LEN};

/// Appends `value` as a postcard varint.
fn put_varint(dst: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        dst.put_u8(value as u8 | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

/// Appends an [`Ack`] frame's payload.
pub(super) fn put_ack(ack: &Ack, dst: &mut BytesMut) {
    put_varint(dst, u64::from(ack.channel.0));
    put_varint(dst, ack.seq);
}

/// A [`Data`](super::Data) frame's fields before its payload. A sender that keeps its messages
/// elsewhere encodes one under it without building a [`Frame`](super::Frame) (and
/// sharing the payload for it): the path each small message of a batch takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHead {
    /// The channel.
    pub channel: ChannelId,
    /// Per-channel, per-direction sequence number, starting at 1.
    pub seq: u64,
    /// How the payload is encoded.
    pub content_type: ContentType,
    /// Request/reply correlation.
    pub exchange: Exchange,
}

impl DataHead {
    /// How many bytes [`encode_unsealed`](Self::encode_unsealed) appends for a payload
    /// of `payload_len` bytes.
    pub fn unsealed_len(&self, payload_len: usize) -> usize {
        HEADER_LEN + self.sub_header().1 + payload_len
    }

    /// Appends the data frame of this head and `payload` as it goes inside a sealed
    /// frame (no CRC trailer): the bytes, and the errors, of
    /// [`Frame::encode_unsealed`](super::Frame::encode_unsealed) for `Frame::Data` with
    /// these fields. `max_frame_len` counts the trailer.
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use interconnect_proto::{ChannelId, ContentType, Data, DataHead, Exchange, Frame};
    ///
    /// let head = DataHead {
    ///     channel: ChannelId(1),
    ///     seq: 7,
    ///     content_type: ContentType::Binary,
    ///     exchange: Exchange::OneWay,
    /// };
    /// let mut fast = BytesMut::new();
    /// head.encode_unsealed(b"hello", 1024, &mut fast).unwrap();
    /// let data = Data::with_head(head, Bytes::from_static(b"hello"));
    /// let mut framed = BytesMut::new();
    /// Frame::Data(data).encode_unsealed(1024, &mut framed).unwrap();
    /// assert_eq!(fast, framed);
    /// assert_eq!(fast.len(), head.unsealed_len(5));
    /// // Whole, with its CRC: what `Frame::encode` writes.
    /// let (mut whole, mut encoded) = (BytesMut::new(), BytesMut::new());
    /// head.encode(b"hello", 1024, &mut whole).unwrap();
    /// Frame::Data(Data::with_head(head, Bytes::from_static(b"hello")))
    ///     .encode(1024, &mut encoded)
    ///     .unwrap();
    /// assert_eq!(whole, encoded);
    /// ```
    pub fn encode_unsealed(
        &self,
        payload: &[u8],
        max_frame_len: usize,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        self.put(payload.len(), max_frame_len, dst)?;
        dst.extend_from_slice(payload);
        Ok(())
    }

    /// Appends the whole data frame, its CRC trailer included: the bytes
    /// [`Frame::encode`](crate::Frame::encode) writes for it.
    pub fn encode(
        &self,
        payload: &[u8],
        max_frame_len: usize,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let start = dst.len();
        self.encode_unsealed(payload, max_frame_len, dst)?;
        let crc = crate::checksum::crc32c(&[&dst[start..]]);
        dst.put_u32_le(crc);
        Ok(())
    }

    /// Appends the frame header and sub-header of a data frame whose payload has
    /// `payload_len` bytes, once its limits are checked (those of `Frame::encode_head`,
    /// in its order).
    pub(super) fn put(
        &self,
        payload_len: usize,
        max_frame_len: usize,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let max = max_frame_len.min(MAX_FRAME_LEN);
        if payload_len + FRAME_OVERHEAD > max {
            return Err(EncodeError::TooLarge {
                len: payload_len + FRAME_OVERHEAD,
                max,
            });
        }
        // A message is at most `Limits::max_message_len` whatever its sub-header takes,
        // so the limit is one number both ends can compute.
        if payload_len > max.saturating_sub(FRAME_OVERHEAD + DATA_HEADER_MAX_LEN) {
            return Err(EncodeError::TooLarge {
                len: payload_len + FRAME_OVERHEAD + DATA_HEADER_MAX_LEN,
                max,
            });
        }
        let (mut head, sub_len) = self.sub_header();
        let frame_payload = sub_len + payload_len;
        if frame_payload + FRAME_OVERHEAD > max {
            return Err(EncodeError::TooLarge {
                len: frame_payload + FRAME_OVERHEAD,
                max,
            });
        }
        head[..HEADER_LEN].copy_from_slice(&header_bytes(Kind::Data, frame_payload));
        dst.extend_from_slice(&head[..HEADER_LEN + sub_len]);
        Ok(())
    }

    /// The sub-header, written after room for the frame header, and its length.
    #[inline(always)]
    fn sub_header(&self) -> ([u8; HEADER_LEN + DATA_HEADER_MAX_LEN], usize) {
        let mut buf = [0u8; HEADER_LEN + DATA_HEADER_MAX_LEN];
        let mut at = varint_at(&mut buf, HEADER_LEN, u64::from(self.channel.0));
        at = varint_at(&mut buf, at, self.seq);
        let content_type = match self.content_type {
            ContentType::Json => 0,
            ContentType::Postcard => 1,
            ContentType::Binary => 2,
        };
        at = varint_at(&mut buf, at, content_type);
        at = match self.exchange {
            Exchange::OneWay => varint_at(&mut buf, at, 0),
            Exchange::Request(id) => {
                let at = varint_at(&mut buf, at, 1);
                varint_at(&mut buf, at, u64::from(id))
            }
            Exchange::Reply(id) => {
                let at = varint_at(&mut buf, at, 2);
                varint_at(&mut buf, at, u64::from(id))
            }
            Exchange::State => varint_at(&mut buf, at, 3),
            Exchange::Durable => varint_at(&mut buf, at, 4),
        };
        (buf, at - HEADER_LEN)
    }
}

/// Writes `value` as a postcard varint at `at` of `buf`; where it ends. The sub-header's
/// fields take at most 22 of the 32 bytes `buf` has for them.
#[inline(always)]
fn varint_at(buf: &mut [u8], mut at: usize, mut value: u64) -> usize {
    while value >= 0x80 {
        if let Some(byte) = buf.get_mut(at) {
            *byte = value as u8 | 0x80;
        }
        at += 1;
        value >>= 7;
    }
    if let Some(byte) = buf.get_mut(at) {
        *byte = value as u8;
    }
    at + 1
}

/// Reads fields from the front of a payload, failing as postcard fails.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// Why a sub-header does not parse, in postcard's words (see `postcard_reason`).
pub(super) type Reason = &'static str;

const END: Reason = "payload ends inside a field";
const BAD_VARINT: Reason = "bad varint";
const BAD_ENUM: Reason = "undecodable payload";

impl Reader<'_> {
    #[inline]
    fn byte(&mut self) -> Result<u8, Reason> {
        let byte = *self.bytes.get(self.at).ok_or(END)?;
        self.at += 1;
        Ok(byte)
    }

    /// A varint of at most `bits` bits: postcard's limit on its length, and on the bits
    /// its last byte may carry.
    #[inline]
    fn varint(&mut self, bits: u32) -> Result<u64, Reason> {
        // One byte, as channels, kinds and early sequence numbers take: always in range.
        if let Some(&byte) = self.bytes.get(self.at)
            && byte < 0x80
        {
            self.at += 1;
            return Ok(u64::from(byte));
        }
        let max_len = bits.div_ceil(7);
        let last_max = (1u8 << (bits % 7)) - 1;
        let mut value = 0u64;
        for i in 0..max_len {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i == max_len - 1 && byte > last_max {
                    return Err(BAD_VARINT);
                }
                return Ok(value);
            }
        }
        Err(BAD_VARINT)
    }

    #[inline]
    fn u32(&mut self) -> Result<u32, Reason> {
        self.varint(32).map(|v| v as u32)
    }

    #[inline]
    fn u64(&mut self) -> Result<u64, Reason> {
        self.varint(64)
    }
}

/// Reads a [`Data`] sub-header; returns it and where the payload starts.
#[inline]
pub(super) fn take_data(bytes: &[u8]) -> Result<(DataHead, usize), Reason> {
    let mut r = Reader { bytes, at: 0 };
    let channel = ChannelId(r.u32()?);
    let seq = r.u64()?;
    let content_type = match r.u32()? {
        0 => ContentType::Json,
        1 => ContentType::Postcard,
        2 => ContentType::Binary,
        _ => return Err(BAD_ENUM),
    };
    let exchange = match r.u32()? {
        0 => Exchange::OneWay,
        1 => Exchange::Request(r.u32()?),
        2 => Exchange::Reply(r.u32()?),
        3 => Exchange::State,
        4 => Exchange::Durable,
        _ => return Err(BAD_ENUM),
    };
    let head = DataHead {
        channel,
        seq,
        content_type,
        exchange,
    };
    Ok((head, r.at))
}

/// Reads an [`Ack`] frame's payload, which must end with it.
pub(super) fn take_ack(bytes: &[u8]) -> Result<Ack, Reason> {
    let mut r = Reader { bytes, at: 0 };
    let ack = Ack {
        channel: ChannelId(r.u32()?),
        seq: r.u64()?,
    };
    if r.at != bytes.len() {
        return Err("bytes after the message");
    }
    Ok(ack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    /// What postcard makes of the same fields: the reference the hand-written code
    /// must match byte for byte.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Reference {
        channel: ChannelId,
        seq: u64,
        content_type: ContentType,
        exchange: Exchange,
    }

    fn exchange() -> impl Strategy<Value = Exchange> {
        prop_oneof![
            Just(Exchange::OneWay),
            any::<u32>().prop_map(Exchange::Request),
            any::<u32>().prop_map(Exchange::Reply),
            Just(Exchange::State),
            Just(Exchange::Durable),
        ]
    }

    fn content_type() -> impl Strategy<Value = ContentType> {
        prop_oneof![
            Just(ContentType::Json),
            Just(ContentType::Postcard),
            Just(ContentType::Binary),
        ]
    }

    proptest! {
        #[test]
        fn data_heads_are_the_bytes_postcard_writes(
            channel in any::<u32>(),
            seq in prop_oneof![any::<u64>(), 0..300u64],
            content_type in content_type(),
            exchange in exchange(),
        ) {
            let head = DataHead { channel: ChannelId(channel), seq, content_type, exchange };
            let payload = [0xa5u8; 3];
            let mut ours = BytesMut::new();
            head.encode_unsealed(&payload, MAX_FRAME_LEN, &mut ours).unwrap();
            prop_assert_eq!(ours.len(), head.unsealed_len(payload.len()));
            let reference = Reference { channel: ChannelId(channel), seq, content_type, exchange };
            let sub = postcard::to_allocvec(&reference).unwrap();
            prop_assert_eq!(&ours[HEADER_LEN..ours.len() - payload.len()], &sub[..]);
            prop_assert_eq!(&ours[..HEADER_LEN], &header_bytes(Kind::Data, sub.len() + payload.len())[..]);
            prop_assert_eq!(&ours[ours.len() - payload.len()..], &payload[..]);
            let ack = Ack { channel: ChannelId(channel), seq };
            let mut ours = BytesMut::new();
            put_ack(&ack, &mut ours);
            prop_assert_eq!(&ours[..], &postcard::to_allocvec(&ack).unwrap()[..]);
        }

        #[test]
        fn any_bytes_read_as_postcard_reads_them(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            let ours = take_data(&bytes).map(|(h, at)| {
                (Reference { channel: h.channel, seq: h.seq, content_type: h.content_type, exchange: h.exchange }, at)
            });
            let theirs = postcard::take_from_bytes::<Reference>(&bytes)
                .map(|(r, rest)| (r, bytes.len() - rest.len()));
            prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?} vs {:?}", ours.as_ref().err(), theirs.as_ref().err());
            if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                prop_assert_eq!(ours, theirs);
            }
            let ours = take_ack(&bytes);
            // The codec refuses bytes after a control message's fields.
            let theirs = postcard::take_from_bytes::<Ack>(&bytes)
                .ok()
                .filter(|(_, rest)| rest.is_empty())
                .map(|(ack, _)| ack);
            prop_assert_eq!(ours.ok(), theirs);
        }
    }

    #[test]
    fn postcard_limits_on_varints_hold() {
        // u32: five bytes at most, the fifth carrying four bits.
        assert!(take_ack(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0]).is_ok());
        assert_eq!(
            take_ack(&[0xff, 0xff, 0xff, 0xff, 0x1f, 0]).err(),
            Some(BAD_VARINT)
        );
        assert_eq!(
            take_ack(&[0x80, 0x80, 0x80, 0x80, 0x80, 0]).err(),
            Some(BAD_VARINT)
        );
        assert_eq!(take_ack(&[0x80]).err(), Some(END));
        assert_eq!(take_ack(&[1, 2, 3]).err(), Some("bytes after the message"));
    }
}
