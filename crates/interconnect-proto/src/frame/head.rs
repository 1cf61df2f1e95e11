//! The sub-headers of the frames every message and acknowledgement travels in ([`Data`],
//! [`Ack`]), written and read by hand: byte for byte what postcard makes of them
//! (LEB128 varints, an enum as its variant's index), the same errors for the same
//! input, at a fraction of serde's instructions on the path each message takes.

use bytes::{BufMut, BytesMut};

use super::{Ack, ChannelId, ContentType, Data, Exchange};

/// Appends `value` as a postcard varint.
fn put_varint(dst: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        dst.put_u8(value as u8 | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

/// Appends the sub-header of a [`Data`] frame (the payload follows it raw).
pub(super) fn put_data(data: &Data, dst: &mut BytesMut) {
    put_varint(dst, u64::from(data.channel.0));
    put_varint(dst, data.seq);
    dst.put_u8(match data.content_type {
        ContentType::Json => 0,
        ContentType::Postcard => 1,
        ContentType::Binary => 2,
    });
    match data.exchange {
        Exchange::OneWay => dst.put_u8(0),
        Exchange::Request(id) => {
            dst.put_u8(1);
            put_varint(dst, u64::from(id));
        }
        Exchange::Reply(id) => {
            dst.put_u8(2);
            put_varint(dst, u64::from(id));
        }
        Exchange::State => dst.put_u8(3),
        Exchange::Durable => dst.put_u8(4),
    }
}

/// Appends an [`Ack`] frame's payload.
pub(super) fn put_ack(ack: &Ack, dst: &mut BytesMut) {
    put_varint(dst, u64::from(ack.channel.0));
    put_varint(dst, ack.seq);
}

/// What a [`Data`] sub-header holds.
pub(super) struct DataHead {
    pub(super) channel: ChannelId,
    pub(super) seq: u64,
    pub(super) content_type: ContentType,
    pub(super) exchange: Exchange,
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
    fn byte(&mut self) -> Result<u8, Reason> {
        let byte = *self.bytes.get(self.at).ok_or(END)?;
        self.at += 1;
        Ok(byte)
    }

    /// A varint of at most `bits` bits: postcard's limit on its length, and on the bits
    /// its last byte may carry.
    fn varint(&mut self, bits: u32) -> Result<u64, Reason> {
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

    fn u32(&mut self) -> Result<u32, Reason> {
        self.varint(32).map(|v| v as u32)
    }

    fn u64(&mut self) -> Result<u64, Reason> {
        self.varint(64)
    }
}

/// Reads a [`Data`] sub-header; returns it and where the payload starts.
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
            let data = Data {
                channel: ChannelId(channel),
                seq,
                content_type,
                exchange,
                payload: bytes::Bytes::new(),
            };
            let mut ours = BytesMut::new();
            put_data(&data, &mut ours);
            let reference = Reference { channel: ChannelId(channel), seq, content_type, exchange };
            prop_assert_eq!(&ours[..], &postcard::to_allocvec(&reference).unwrap()[..]);
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
