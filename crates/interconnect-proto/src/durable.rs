//! The head of a durable message: a `Data` frame whose exchange is
//! [`Exchange::Durable`](crate::Exchange::Durable) carries the sender's origin and the
//! message's number in its outbox before the message itself. The sub-header is postcard
//! `{ origin: u64, seq: u64 }`; the message follows it raw, to the end of the payload, in
//! the frame's content type.
//!
//! The channel's own sequence numbers start over with each session; these do not. They
//! name the message in the sender's store, so a receiver that keeps, per origin, the
//! highest number its app took recognises a message sent again after either end
//! restarted, and drops it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::kind::Kind;

/// Where a durable message comes from and its place in that sender's outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DurableHead {
    /// Names the sender's outbox (a random number drawn when its store made it): numbers
    /// of another origin are another sequence.
    pub origin: u64,
    /// Rises by one with each message committed to the outbox, from 1; a receiver takes
    /// only numbers above the highest it took of this origin (one the sender's app
    /// cancelled leaves a gap).
    pub seq: u64,
}

/// The longest a head takes: two varints of ten bytes.
pub const MAX_DURABLE_HEAD_LEN: usize = 20;

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8(value as u8 | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

impl DurableHead {
    /// The payload of the `Data` frame that carries `message` under this head.
    pub fn encode(&self, message: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(MAX_DURABLE_HEAD_LEN + message.len());
        put_varint(&mut out, self.origin);
        put_varint(&mut out, self.seq);
        out.put_slice(message);
        out.freeze()
    }

    /// Reads the payload of a `Data` frame with
    /// [`Exchange::Durable`](crate::Exchange::Durable): the head and the message.
    pub fn decode(payload: Bytes) -> Result<(DurableHead, Bytes), DecodeError> {
        let (head, rest) = postcard::take_from_bytes::<(u64, u64)>(&payload).map_err(|_| {
            DecodeError::Malformed {
                kind: Kind::Data,
                reason: "undecodable durable head",
            }
        })?;
        let at = payload.len() - rest.len();
        let (origin, seq) = head;
        Ok((DurableHead { origin, seq }, payload.slice(at..)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_reads_back_as_postcard_writes_it() {
        for (origin, seq) in [(0, 1), (u64::MAX, u64::MAX), (3_417_117_287, 300)] {
            let head = DurableHead { origin, seq };
            let encoded = head.encode(b"{\"n\":1}");
            let postcard = [
                postcard::to_allocvec(&(origin, seq)).unwrap(),
                b"{\"n\":1}".to_vec(),
            ]
            .concat();
            assert_eq!(&encoded[..], &postcard[..]);
            let (again, message) = DurableHead::decode(encoded).unwrap();
            assert_eq!(again, head);
            assert_eq!(&message[..], b"{\"n\":1}");
        }
        assert!(DurableHead::decode(Bytes::from_static(&[0x80])).is_err());
        assert!(DurableHead::decode(Bytes::from_static(&[1])).is_err());
        assert!(DurableHead::decode(Bytes::new()).is_err());
    }
}
