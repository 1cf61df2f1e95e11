//! The payload of a latest-wins state update: a `Data` frame whose exchange is
//! [`Exchange::State`](crate::Exchange::State) carries, instead of an app message, the
//! key, the sender's origin, the version and the new value (or its removal). The
//! sub-header is postcard `{ key: String, origin: u64, version: u64, removed: bool }`; the
//! value follows it raw, to the end of the payload (empty when removed), in the frame's
//! content type.

use alloc::borrow::ToOwned;
use alloc::string::String;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::kind::Kind;
use crate::limits::MAX_STATE_KEY_LEN;

/// One key's new value, as a state update carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateUpdate {
    /// The key, at most [`MAX_STATE_KEY_LEN`] bytes. The empty key names no value: an
    /// update with it only announces `origin` (the sender sends one each time its channel
    /// opens).
    pub key: String,
    /// Names the sender's state as a whole (a random number per process, or per store):
    /// an update from another origin means the sender started over, and the receiver
    /// drops what it held of the old one.
    pub origin: u64,
    /// Counts up per key within an origin: an update older than one already applied is
    /// ignored.
    pub version: u64,
    /// The value in the frame's content type; `None` when the key was removed.
    pub value: Option<Bytes>,
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8(value as u8 | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

#[derive(Serialize, Deserialize)]
struct Head<'a> {
    key: &'a str,
    origin: u64,
    version: u64,
    removed: bool,
}

impl StateUpdate {
    /// The payload of the `Data` frame that carries this update.
    pub fn encode(&self) -> Bytes {
        let value = self.value.as_deref().unwrap_or_default();
        let mut out = BytesMut::with_capacity(self.key.len() + 22 + value.len());
        // The postcard encoding of `Head`, written out: varint length and the key's
        // bytes, varint origin, varint version, the flag.
        put_varint(&mut out, self.key.len() as u64);
        out.put_slice(self.key.as_bytes());
        put_varint(&mut out, self.origin);
        put_varint(&mut out, self.version);
        out.put_u8(u8::from(self.value.is_none()));
        out.put_slice(value);
        out.freeze()
    }

    /// Reads the payload of a `Data` frame with [`Exchange::State`](crate::Exchange::State).
    pub fn decode(payload: Bytes) -> Result<StateUpdate, DecodeError> {
        let malformed = |reason| DecodeError::Malformed {
            kind: Kind::Data,
            reason,
        };
        let (head, rest) = postcard::take_from_bytes::<Head>(&payload)
            .map_err(|_| malformed("undecodable state update"))?;
        if head.key.len() > MAX_STATE_KEY_LEN {
            return Err(malformed("state key too long"));
        }
        if head.removed && !rest.is_empty() {
            return Err(malformed("a removed state key with a value"));
        }
        let at = payload.len() - rest.len();
        Ok(StateUpdate {
            key: head.key.to_owned(),
            origin: head.origin,
            version: head.version,
            value: (!head.removed).then(|| payload.slice(at..)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_reads_back_and_a_removal_has_no_value() {
        for value in [
            Some(Bytes::from_static(b"{\"hr\":72}")),
            Some(Bytes::new()),
            None,
        ] {
            let update = StateUpdate {
                key: "heart-rate".into(),
                origin: u64::MAX - 5,
                version: 300,
                value,
            };
            let head = Head {
                key: &update.key,
                origin: update.origin,
                version: update.version,
                removed: update.value.is_none(),
            };
            let encoded = update.encode();
            let value = update.value.as_deref().unwrap_or_default();
            let postcard = [postcard::to_allocvec(&head).unwrap(), value.to_vec()].concat();
            assert_eq!(&encoded[..], &postcard[..], "the bytes postcard writes");
            assert_eq!(StateUpdate::decode(encoded), Ok(update));
        }
        // key "k", origin 2, version 1, removed, then a stray byte.
        assert!(StateUpdate::decode(Bytes::from_static(&[1, b'k', 2, 1, 1, 9])).is_err());
        let long = StateUpdate {
            key: "k".repeat(MAX_STATE_KEY_LEN + 1),
            origin: 1,
            version: 1,
            value: None,
        };
        assert!(StateUpdate::decode(long.encode()).is_err());
        assert!(StateUpdate::decode(Bytes::from_static(&[5, b'k'])).is_err());
    }
}
