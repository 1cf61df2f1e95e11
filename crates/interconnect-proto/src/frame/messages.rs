//! The message each frame kind carries, and the small types they are made of.

use alloc::string::String;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

#[cfg(any(test, feature = "arbitrary"))]
use super::codec::arbitrary_bytes;
use super::head::DataHead;
use crate::code::Code;

/// Identifies a channel on a session; chosen by the side that opens it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[serde(transparent)]
pub struct ChannelId(pub u32);

/// Identifies a file transfer within its channel and direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[serde(transparent)]
pub struct TransferId(pub u32);

/// A device's stable 128-bit identifier, sent in its `Hello`. With a device key it is
/// the first 16 bytes of the key's fingerprint (`DeviceIdentity::device_id` in
/// interconnect-core), so it stays the same across restarts; it names a device in logs
/// and lets a phone tell a returning watch from another. It is not a credential: the
/// key's fingerprint is what a peer pins. Printed as 32 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[serde(transparent)]
pub struct DeviceId(pub [u8; 16]);

impl core::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Which end of the pairing a device is. Independent of who opened the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum Role {
    /// The wearable: opens channels by package.
    Watch,
    /// The phone: a hub where apps register by package.
    Phone,
}

/// Optional protocol features a side supports, as bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[serde(transparent)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// File transfers.
    pub const FILES: Capabilities = Capabilities(1 << 0);
    /// Request/reply exchanges on data messages.
    pub const REQUESTS: Capabilities = Capabilities(1 << 1);
    /// This side opens sealed frames that hold several inner frames, so its peer may
    /// seal a run of small frames at once (one AEAD call instead of one per frame).
    pub const BATCH: Capabilities = Capabilities(1 << 2);
    /// This side reads the metadata of a file offer ([`FileOfferMeta`]).
    pub const FILE_META: Capabilities = Capabilities(1 << 3);
    /// This side reads its peer's device name ([`Name`]).
    pub const NAME: Capabilities = Capabilities(1 << 4);
    /// This side reads state updates (`Data` with [`Exchange::State`]).
    pub const STATE: Capabilities = Capabilities(1 << 5);
    /// This side reads durable messages (`Data` with [`Exchange::Durable`]).
    pub const DURABLE: Capabilities = Capabilities(1 << 6);
    /// This side reads `Sealed` frames sent without their CRC trailer
    /// ([`FLAG_NO_CRC`](crate::FLAG_NO_CRC)): the AEAD tags already prove every byte, so
    /// its peer need not compute a checksum over what it seals.
    pub const NO_CRC: Capabilities = Capabilities(1 << 7);
    /// This side reads `Sealed` frames laid out with their tags last
    /// ([`FLAG_TAGS_LAST`](crate::FLAG_TAGS_LAST)): its peer may then seal a frame of
    /// several segments where its bytes lie, with no gap to open between segments.
    pub const TAGS_LAST: Capabilities = Capabilities(1 << 8);
    /// Everything this version implements.
    pub const ALL: Capabilities = Capabilities(
        Self::FILES.0
            | Self::REQUESTS.0
            | Self::BATCH.0
            | Self::FILE_META.0
            | Self::NAME.0
            | Self::STATE.0
            | Self::DURABLE.0
            | Self::NO_CRC.0
            | Self::TAGS_LAST.0,
    );

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits both sides set.
    pub const fn intersect(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }
}

/// How a message payload is encoded, so the receiver can decode it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum ContentType {
    /// UTF-8 JSON (the vendor APIs' "Object"); the default.
    Json,
    /// postcard, for compact Rust-to-Rust messages.
    Postcard,
    /// Opaque bytes.
    Binary,
}

/// Where a message stands in a request/reply exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum Exchange {
    /// A plain message; nothing answers it.
    OneWay,
    /// A request expecting a reply with the same id.
    Request(u32),
    /// The reply to the request with this id.
    Reply(u32),
    /// A latest-wins state update ([`StateUpdate`](crate::StateUpdate) in the payload),
    /// sent only to a peer that announced [`Capabilities::STATE`].
    State,
    /// A durable message ([`DurableHead`](crate::DurableHead) and then the message in the
    /// payload), sent only to a peer that announced [`Capabilities::DURABLE`].
    Durable,
}

/// Session handshake: both sides send one first on every link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Hello {
    /// Lowest protocol version the sender speaks.
    pub min_version: u8,
    /// Highest protocol version the sender speaks.
    pub max_version: u8,
    /// The sender's role.
    pub role: Role,
    /// The sender's device id.
    pub device_id: DeviceId,
    /// Largest whole frame the sender accepts.
    pub max_frame_len: u32,
    /// Optional features the sender supports.
    pub capabilities: Capabilities,
    /// Identifies the sender's logical session. The same token on a new link means the
    /// sender kept its state, so channels resume; a new token means it started afresh.
    pub resume_token: u64,
}

/// The sender's device name, for its peer to show (a watch's "Alice's watch"): sent once
/// per link after the Hellos, only to a peer that announced [`Capabilities::NAME`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Name {
    /// The name, at most [`MAX_DEVICE_NAME_LEN`](crate::MAX_DEVICE_NAME_LEN) bytes.
    pub name: String,
}

/// Liveness probe; the peer answers with a [`Pong`] carrying the same nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Ping {
    /// Echoed in the pong.
    pub nonce: u64,
}

/// Answer to a [`Ping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Pong {
    /// The ping's nonce.
    pub nonce: u64,
}

/// An error report. Without a channel it concerns the session, and the sender drops the
/// link after sending it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct ErrorReport {
    /// The channel concerned, if any.
    pub channel: Option<ChannelId>,
    /// What went wrong.
    pub code: Code,
    /// Human-readable detail.
    pub message: String,
}

/// Opens (or, on a new link of the same session, resumes) a channel to an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Open {
    /// The channel id chosen by the opener.
    pub channel: ChannelId,
    /// The app's package name.
    pub package: String,
    /// The signature the opener requires of the app (its signing certificate's
    /// fingerprint, as the vendor APIs call it), if any.
    pub signature: Option<String>,
    /// True when the opener had the channel open before the link dropped. Informational:
    /// an acceptor resumes any channel it still holds for this session.
    pub resume: bool,
    /// Highest sequence number the opener has received in order (0: none).
    pub received_seq: u64,
}

/// Accepts an [`Open`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Accept {
    /// The channel.
    pub channel: ChannelId,
    /// The version the app registered.
    pub app_version: u32,
    /// Highest sequence number the acceptor has received in order (0: none).
    pub received_seq: u64,
    /// False when the acceptor has no state for a resumed channel, so it starts afresh.
    pub resumed: bool,
}

/// Refuses an [`Open`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Reject {
    /// The channel.
    pub channel: ChannelId,
    /// Why: 1001, 1002, 1007, ...
    pub code: Code,
    /// Human-readable detail.
    pub reason: String,
}

/// An app message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Data {
    /// The channel.
    pub channel: ChannelId,
    /// Per-channel, per-direction sequence number, starting at 1.
    pub seq: u64,
    /// How the payload is encoded.
    pub content_type: ContentType,
    /// Request/reply correlation.
    pub exchange: Exchange,
    /// The message bytes.
    #[cfg_attr(any(test, feature = "arbitrary"), arbitrary(with = arbitrary_bytes))]
    pub payload: Bytes,
}

impl Data {
    /// A data frame of `head`'s fields carrying `payload`.
    pub fn with_head(head: DataHead, payload: Bytes) -> Data {
        Data {
            channel: head.channel,
            seq: head.seq,
            content_type: head.content_type,
            exchange: head.exchange,
            payload,
        }
    }

    /// Its fields before the payload.
    pub fn head(&self) -> DataHead {
        DataHead {
            channel: self.channel,
            seq: self.seq,
            content_type: self.content_type,
            exchange: self.exchange,
        }
    }
}

/// Cumulative acknowledgement: every message up to `seq` arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Ack {
    /// The channel.
    pub channel: ChannelId,
    /// Highest sequence number received in order.
    pub seq: u64,
}

/// Closes a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Close {
    /// The channel.
    pub channel: ChannelId,
    /// Why.
    pub code: Code,
    /// Human-readable detail.
    pub reason: String,
}

/// Offers a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct FileOffer {
    /// The channel.
    pub channel: ChannelId,
    /// The transfer.
    pub transfer: TransferId,
    /// The file name as the sender has it (the receiver sanitises it).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// When the sender's file was last modified, in nanoseconds since the Unix epoch (0
    /// if unknown). With the name and size it lets the receiver find a partial copy to
    /// resume; the digest on the last chunk proves the content.
    pub modified: u64,
}

/// Offers a file with the sending app's metadata about it (sent instead of a
/// [`FileOffer`] when there is metadata, to a peer that announced
/// [`Capabilities::FILE_META`]): the offer's fields, then the metadata raw to the end of
/// the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct FileOfferMeta {
    /// The offer.
    pub offer: FileOffer,
    /// The app's metadata, at most [`MAX_FILE_META_LEN`](crate::MAX_FILE_META_LEN)
    /// bytes; what it means is the apps' business.
    #[cfg_attr(any(test, feature = "arbitrary"), arbitrary(with = arbitrary_bytes))]
    pub meta: Bytes,
}

/// Accepts a [`FileOffer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct FileAccept {
    /// The channel.
    pub channel: ChannelId,
    /// The transfer.
    pub transfer: TransferId,
    /// Bytes the receiver already holds durably; the sender starts there.
    pub offset: u64,
}

/// A piece of a file at a byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct FileChunk {
    /// The channel.
    pub channel: ChannelId,
    /// The transfer.
    pub transfer: TransferId,
    /// Offset of the first byte of `data` in the file.
    pub offset: u64,
    /// The bytes.
    #[cfg_attr(any(test, feature = "arbitrary"), arbitrary(with = arbitrary_bytes))]
    pub data: Bytes,
    /// BLAKE3 of the whole file: present on the chunk that ends the file, and only there.
    /// Carried at the end rather than in the offer so the sender hashes while it sends
    /// instead of reading the whole file once before the first byte goes out.
    pub digest: Option<[u8; 32]>,
}

/// Cumulative acknowledgement of file bytes the receiver holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct FileAck {
    /// The channel.
    pub channel: ChannelId,
    /// The transfer.
    pub transfer: TransferId,
    /// Every byte before this offset has arrived.
    pub offset: u64,
}

/// The receiver verified size and hash and stored the file under its final name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct FileComplete {
    /// The channel.
    pub channel: ChannelId,
    /// The transfer.
    pub transfer: TransferId,
}

/// Ends a transfer without success (from either side), or refuses an offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct FileCancel {
    /// The channel.
    pub channel: ChannelId,
    /// The transfer.
    pub transfer: TransferId,
    /// Why.
    pub code: Code,
    /// Human-readable detail.
    pub reason: String,
}

/// Asks for the version of the app registered for a package on the peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct VersionQuery {
    /// Correlates the reply.
    pub request: u32,
    /// The package.
    pub package: String,
}

/// Answer to a [`VersionQuery`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct VersionReply {
    /// The query's id.
    pub request: u32,
    /// The registered version, `None` when no app has that package.
    pub version: Option<u32>,
}

/// One step of the Noise XX handshake (see the crate docs on security).
///
/// Step 1 (watch → phone) carries the offer: the suites the watch allows, the one it
/// chose and the rekey interval; both sides mix these bytes into the Noise prologue,
/// so a changed offer fails the handshake. Steps 2 and 3 carry the Noise messages,
/// step 4 (phone → watch) the phone's pairing nonce.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Handshake {
    /// 1 to 4.
    pub step: u8,
    /// Bit set of the cipher suites the watch allows (step 1; 0 otherwise).
    pub offered: u8,
    /// The suite the watch chose (step 1; 0 otherwise).
    pub suite: u8,
    /// Nonces per key before both sides rekey (step 1; 0 otherwise).
    pub rekey_interval: u32,
    /// The Noise message or nonce, raw to the end of the frame.
    #[cfg_attr(any(test, feature = "arbitrary"), arbitrary(with = arbitrary_bytes))]
    pub message: Bytes,
}

/// An encrypted frame: AEAD segments of at most [`SEALED_SEGMENT_LEN`] bytes each,
/// numbered by consecutive nonces from `nonce`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Sealed {
    /// Nonce of the first segment; nonces only grow on a link.
    pub nonce: u64,
    /// Ciphertext and tags, raw to the end of the frame.
    #[cfg_attr(any(test, feature = "arbitrary"), arbitrary(with = arbitrary_bytes))]
    pub ciphertext: Bytes,
    /// Where the tags lie in `ciphertext` (the header's [`FLAG_TAGS_LAST`]).
    ///
    /// [`FLAG_TAGS_LAST`]: crate::FLAG_TAGS_LAST
    pub layout: Layout,
}

/// A [`Sealed`] frame taken apart in a buffer its receiver has to itself (see
/// [`Frame::decode_owned`](crate::Frame::decode_owned)): the ciphertext still lies where
/// it arrived, so it is opened there, without a copy, even when it was cut from a read
/// buffer shared with the frames around it (a `Bytes` cut that way would have to be
/// copied to be written to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedMut {
    /// Nonce of the first segment.
    pub nonce: u64,
    /// Ciphertext and tags, raw to the end of the frame.
    pub ciphertext: BytesMut,
    /// Where the tags lie in `ciphertext`.
    pub layout: Layout,
}

impl From<Sealed> for SealedMut {
    /// Takes the ciphertext's buffer over when nothing else holds it; copies it otherwise.
    fn from(sealed: Sealed) -> SealedMut {
        SealedMut {
            nonce: sealed.nonce,
            ciphertext: BytesMut::from(sealed.ciphertext),
            layout: sealed.layout,
        }
    }
}

impl From<SealedMut> for Sealed {
    fn from(sealed: SealedMut) -> Sealed {
        Sealed {
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext.freeze(),
            layout: sealed.layout,
        }
    }
}

/// Where a [`Sealed`] frame's tags lie. A frame of one segment is the same bytes either
/// way: its ciphertext, then its tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum Layout {
    /// Each segment's tag right after its ciphertext, as every peer reads them.
    #[default]
    Interleaved,
    /// The ciphertexts of all segments back to back, then their tags in the same
    /// order: the plaintext is sealed where it lies, to a peer that announced
    /// [`Capabilities::TAGS_LAST`].
    TagsLast,
}

/// Largest AEAD segment of a [`Sealed`] frame, tag included (Noise's message limit).
pub const SEALED_SEGMENT_LEN: usize = 65535;

/// Length of the authentication tag at the end of every sealed segment.
pub const SEALED_TAG_LEN: usize = 16;
