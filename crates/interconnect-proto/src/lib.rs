//! The wire format of **interconnect**: frames, the messages they carry, hard limits, the
//! stable status codes, and an incremental decoder. No I/O, no clock, no tokio (unless the
//! `codec` feature asks for its `tokio_util::codec` adapter), and `no_std + alloc` with
//! default features off, so watch firmware can share it.
//!
//! ```
//! use bytes::Bytes;
//! use interconnect_proto::{ChannelId, ContentType, Data, Exchange, Frame, Limits};
//!
//! let limits = Limits::default();
//! let frame = Frame::Data(Data {
//!     channel: ChannelId(1),
//!     seq: 1,
//!     content_type: ContentType::Json,
//!     exchange: Exchange::OneWay,
//!     payload: Bytes::from_static(br#"{"steps":1234}"#),
//! });
//! let wire = frame.to_bytes(limits.max_frame_len).unwrap();
//! assert_eq!(Frame::decode(wire, limits.max_frame_len).unwrap(), frame);
//! ```
//!
//! The byte layout is specified in [`spec`].
//!
//! ## Design notes
//! - **6-byte header, 24-bit length.** The design outline allowed up to 8 bytes; 6 is
//!   enough for version, kind, flags and a 16 MiB length, and every byte counts on a
//!   20-byte BLE packet.
//! - **One kind byte per message** rather than one "message" kind with a postcard enum
//!   tag: the header alone says what follows, unknown kinds are rejected before the
//!   payload is read, and each kind's decoding is a single postcard call.
//! - **Bulk payloads are raw.** `Data` and `FileChunk` put their bytes after a postcard
//!   sub-header, so encoding copies them once and decoding slices the received buffer.
//! - **CRC-32C.** With `std`, through the `crc32c` crate (hardware instruction), without
//!   it through the `crc` crate (see the `checksum` notes in the source: only the hardware
//!   path keeps 64 KiB encode + decode within 0.4 × memcpy). A `Sealed` frame may go
//!   without it ([`FLAG_NO_CRC`], to a peer announcing [`Capabilities::NO_CRC`]): its
//!   AEAD tags prove the bytes.
//! - **Tags last.** A `Sealed` frame of several segments may carry its tags after all its
//!   ciphertexts ([`FLAG_TAGS_LAST`], to a peer announcing [`Capabilities::TAGS_LAST`]),
//!   so a plaintext is sealed where it lies ([`encode_sealed_in_place`]) instead of
//!   copied to open a gap for each tag.
//!
//! ## What this crate does not do
//! It does not fragment frames for small-MTU links (that is `transport-ble`), keep any
//! session state (that is `interconnect-core`), or encrypt (the reserved kinds `0x40` and
//! `0x41` are for the security stage).
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

mod checksum;
mod code;
#[cfg(feature = "codec")]
mod codec;
mod decoder;
mod durable;
mod error;
mod frame;
#[cfg(any(test, feature = "arbitrary"))]
pub mod fuzzing;
mod kind;
mod limits;
pub mod packet;
mod sealed;
mod state;

pub use code::Code;
#[cfg(feature = "codec")]
pub use codec::{CodecError, FrameCodec};
pub use decoder::FrameDecoder;
pub use durable::{DurableHead, MAX_DURABLE_HEAD_LEN};
pub use error::{DecodeError, EncodeError};
pub use frame::{
    Accept, Ack, Batch, Capabilities, ChannelId, Close, ContentType, Data, DataHead, DeviceId,
    ErrorReport, Exchange, FLAG_NO_CRC, FLAG_TAGS_LAST, FORMAT_VERSION, FileAccept, FileAck,
    FileCancel, FileChunk, FileComplete, FileOffer, FileOfferMeta, Frame, FrameHeader, Handshake,
    Hello, InnerFrame, Layout, Name, Open, OwnedFrame, Ping, Pong, Reject, Role,
    SEALED_SEGMENT_LEN, SEALED_TAG_LEN, Sealed, SealedMut, TransferId, VersionQuery, VersionReply,
};
pub use kind::Kind;
pub use limits::*;
pub use sealed::{
    SEALED_HEADROOM, SEALED_SEGMENT_PLAINTEXT, SealedForm, Trailer, encode_sealed,
    encode_sealed_in_place, max_unsealed_len, place_head, put_crc, sealed_ciphertext_len,
    sealed_segments,
};
pub use state::StateUpdate;

/// Protocol versions this build speaks (negotiated in [`Hello`]).
pub const PROTOCOL_VERSIONS: core::ops::RangeInclusive<u8> = 1..=1;

#[doc = include_str!("../WIRE.md")]
pub mod spec {}
