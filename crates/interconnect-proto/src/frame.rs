//! Frames: the kinds, the message each kind carries, and their encoding.
//!
//! One frame carries one message. Control messages are postcard-encoded structs. The two
//! bulk kinds, [`Data`] and [`FileChunk`], carry a small postcard sub-header followed by
//! their payload as raw bytes to the end of the frame: encoding copies the payload once
//! into the output buffer and decoding returns it as a slice of the received buffer,
//! without a copy. (Serialising the payload as a postcard byte string would add a length
//! prefix that the frame length already gives, and a copy on decode.)

use alloc::string::String;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::checksum::crc32c;
use crate::code::Code;
use crate::error::{DecodeError, EncodeError};
use crate::limits::*;

/// The frame format version written in every header. A decoder rejects any other.
pub const FORMAT_VERSION: u8 = 1;

/// The kind byte of the header: which message the payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Kind {
    /// Session handshake, sent by each side first on every new link.
    Hello = 0x01,
    /// Liveness probe.
    Ping = 0x02,
    /// Answer to a ping.
    Pong = 0x03,
    /// An error report, for the session or one channel.
    Error = 0x04,
    /// Channel open request (watch → phone).
    Open = 0x10,
    /// Channel accepted.
    Accept = 0x11,
    /// Channel refused, with a code.
    Reject = 0x12,
    /// An app message.
    Data = 0x13,
    /// Cumulative acknowledgement of app messages.
    Ack = 0x14,
    /// Channel close, with a code and reason.
    Close = 0x15,
    /// File transfer offer.
    FileOffer = 0x20,
    /// File transfer accepted, with the offset to resume from.
    FileAccept = 0x21,
    /// A piece of a file.
    FileChunk = 0x22,
    /// Cumulative acknowledgement of file bytes held durably.
    FileAck = 0x23,
    /// The receiver verified and stored the file.
    FileComplete = 0x24,
    /// Either side ends a transfer with a code (also a refused offer).
    FileCancel = 0x25,
    /// Asks which version of an app the peer has registered.
    VersionQuery = 0x30,
    /// Answer to a version query.
    VersionReply = 0x31,
    /// One step of the Noise XX handshake that opens a secure link.
    Handshake = 0x40,
    /// A frame encrypted and authenticated with the link's session keys; it holds
    /// another frame (header and payload) of any kind but these two.
    Sealed = 0x41,
}

impl Kind {
    /// Every kind this version defines, in numeric order.
    pub const ALL: [Kind; 20] = [
        Kind::Hello,
        Kind::Ping,
        Kind::Pong,
        Kind::Error,
        Kind::Open,
        Kind::Accept,
        Kind::Reject,
        Kind::Data,
        Kind::Ack,
        Kind::Close,
        Kind::FileOffer,
        Kind::FileAccept,
        Kind::FileChunk,
        Kind::FileAck,
        Kind::FileComplete,
        Kind::FileCancel,
        Kind::VersionQuery,
        Kind::VersionReply,
        Kind::Handshake,
        Kind::Sealed,
    ];

    /// The kind for a header byte.
    pub fn from_u8(byte: u8) -> Result<Kind, DecodeError> {
        match Kind::ALL.iter().find(|k| **k as u8 == byte) {
            Some(kind) => Ok(*kind),
            None => Err(DecodeError::UnknownKind(byte)),
        }
    }
}

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
    /// Everything this version implements.
    pub const ALL: Capabilities = Capabilities(Self::FILES.0 | Self::REQUESTS.0);

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
}

/// Largest AEAD segment of a [`Sealed`] frame, tag included (Noise's message limit).
pub const SEALED_SEGMENT_LEN: usize = 65535;

/// Length of the authentication tag at the end of every sealed segment.
pub const SEALED_TAG_LEN: usize = 16;

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is documented on its message type
pub enum Frame {
    Hello(Hello),
    Ping(Ping),
    Pong(Pong),
    Error(ErrorReport),
    Open(Open),
    Accept(Accept),
    Reject(Reject),
    Data(Data),
    Ack(Ack),
    Close(Close),
    FileOffer(FileOffer),
    FileAccept(FileAccept),
    FileChunk(FileChunk),
    FileAck(FileAck),
    FileComplete(FileComplete),
    FileCancel(FileCancel),
    VersionQuery(VersionQuery),
    VersionReply(VersionReply),
    Handshake(Handshake),
    Sealed(Sealed),
}

macro_rules! impl_from_message {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for Frame {
            fn from(message: $ty) -> Frame {
                Frame::$variant(message)
            }
        })*
    };
}

impl_from_message!(
    Hello(Hello),
    Ping(Ping),
    Pong(Pong),
    Error(ErrorReport),
    Open(Open),
    Accept(Accept),
    Reject(Reject),
    Data(Data),
    Ack(Ack),
    Close(Close),
    FileOffer(FileOffer),
    FileAccept(FileAccept),
    FileChunk(FileChunk),
    FileAck(FileAck),
    FileComplete(FileComplete),
    FileCancel(FileCancel),
    VersionQuery(VersionQuery),
    VersionReply(VersionReply),
    Handshake(Handshake),
    Sealed(Sealed),
);

/// The 6-byte frame header: version, kind, flags (none), payload length (u24 LE).
pub(crate) fn header_bytes(kind: Kind, payload_len: usize) -> [u8; HEADER_LEN] {
    let len = (payload_len as u32).to_le_bytes();
    [FORMAT_VERSION, kind as u8, 0, len[0], len[1], len[2]]
}

/// The postcard sub-header of a [`Handshake`] frame; the message follows it raw.
#[derive(Serialize, Deserialize)]
struct HandshakeHead {
    step: u8,
    offered: u8,
    suite: u8,
    rekey_interval: u32,
}

/// The postcard sub-header of a [`Data`] frame; the payload follows it raw.
#[derive(Serialize, Deserialize)]
struct DataHead {
    channel: ChannelId,
    seq: u64,
    content_type: ContentType,
    exchange: Exchange,
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
    /// Flag bits (none are defined in format version 1).
    pub flags: u8,
    /// Payload length in bytes (excluding header and trailer).
    pub payload_len: usize,
}

impl FrameHeader {
    /// Whole-frame length: header, payload and trailer.
    pub const fn frame_len(&self) -> usize {
        self.payload_len + FRAME_OVERHEAD
    }

    /// Parses and checks the fixed header at the start of `bytes` against
    /// `max_frame_len`. Needs only [`HEADER_LEN`] bytes.
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
        if head[2] != 0 {
            return Err(DecodeError::UnknownFlags(head[2]));
        }
        let payload_len =
            usize::from(head[3]) | (usize::from(head[4]) << 8) | (usize::from(head[5]) << 16);
        let header = FrameHeader {
            kind,
            flags: 0,
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
        let max_frame_len = max_frame_len.min(MAX_FRAME_LEN);
        self.check_fields()?;
        let bulk = self.bulk();
        if bulk.len() + FRAME_OVERHEAD > max_frame_len {
            return Err(EncodeError::TooLarge {
                len: bulk.len() + FRAME_OVERHEAD,
                max: max_frame_len,
            });
        }
        // A message is at most `Limits::max_message_len` whatever its sub-header takes, so
        // the limit is one number both ends can compute.
        let max_message = max_frame_len.saturating_sub(FRAME_OVERHEAD + DATA_HEADER_MAX_LEN);
        if let Frame::Data(d) = self
            && d.payload.len() > max_message
        {
            return Err(EncodeError::TooLarge {
                len: d.payload.len() + FRAME_OVERHEAD + DATA_HEADER_MAX_LEN,
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
            Frame::Open(m) => serialize(m, dst),
            Frame::Accept(m) => serialize(m, dst),
            Frame::Reject(m) => serialize(m, dst),
            Frame::Data(m) => serialize(
                &DataHead {
                    channel: m.channel,
                    seq: m.seq,
                    content_type: m.content_type,
                    exchange: m.exchange,
                },
                dst,
            ),
            Frame::Ack(m) => serialize(m, dst),
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
        dst[start..start + HEADER_LEN].copy_from_slice(&header_bytes(self.kind(), payload_len));
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
        let frame_len = header.frame_len();
        if frame.len() < frame_len {
            return Err(DecodeError::Truncated {
                needed: frame_len,
                available: frame.len(),
            });
        }
        if frame.len() > frame_len {
            return Err(DecodeError::Malformed {
                kind: header.kind,
                reason: "bytes after the CRC trailer",
            });
        }
        Frame::decode_checked(header, frame)
    }

    /// Decodes a frame whose header is parsed and whose length is exactly right.
    pub(crate) fn decode_checked(header: FrameHeader, frame: Bytes) -> Result<Frame, DecodeError> {
        let crc_at = frame.len() - CRC_LEN;
        let (body, trailer) = frame.split_at(crc_at);
        let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let actual = crc32c(&[body]);
        if expected != actual {
            return Err(DecodeError::BadCrc { expected, actual });
        }
        Frame::decode_payload(header.kind, frame.slice(HEADER_LEN..crc_at))
    }

    /// Decodes the frame held inside a [`Sealed`] frame once decrypted: header and
    /// payload, no CRC trailer (the AEAD tag already proves it intact). Frames of kind
    /// [`Kind::Handshake`] or [`Kind::Sealed`] are refused there. `max_frame_len` counts
    /// the frame as if sent in the clear (CRC included).
    pub fn decode_unsealed(body: Bytes, max_frame_len: usize) -> Result<Frame, DecodeError> {
        let header = FrameHeader::parse(&body, max_frame_len)?;
        if matches!(header.kind, Kind::Handshake | Kind::Sealed) {
            return Err(DecodeError::Malformed {
                kind: header.kind,
                reason: "a sealed frame may not hold this kind",
            });
        }
        if body.len() != HEADER_LEN + header.payload_len {
            return Err(DecodeError::Malformed {
                kind: header.kind,
                reason: "sealed length differs from the inner header",
            });
        }
        Frame::decode_payload(header.kind, body.slice(HEADER_LEN..))
    }

    fn decode_payload(kind: Kind, payload: Bytes) -> Result<Frame, DecodeError> {
        let frame = match kind {
            Kind::Hello => Frame::Hello(deserialize(kind, &payload)?),
            Kind::Ping => Frame::Ping(deserialize(kind, &payload)?),
            Kind::Pong => Frame::Pong(deserialize(kind, &payload)?),
            Kind::Error => Frame::Error(deserialize(kind, &payload)?),
            Kind::Open => Frame::Open(deserialize(kind, &payload)?),
            Kind::Accept => Frame::Accept(deserialize(kind, &payload)?),
            Kind::Reject => Frame::Reject(deserialize(kind, &payload)?),
            Kind::Data => {
                let (head, rest) = deserialize_head::<DataHead>(kind, &payload)?;
                Frame::Data(Data {
                    channel: head.channel,
                    seq: head.seq,
                    content_type: head.content_type,
                    exchange: head.exchange,
                    payload: payload.slice(rest..),
                })
            }
            Kind::Ack => Frame::Ack(deserialize(kind, &payload)?),
            Kind::Close => Frame::Close(deserialize(kind, &payload)?),
            Kind::FileOffer => Frame::FileOffer(deserialize(kind, &payload)?),
            Kind::FileAccept => Frame::FileAccept(deserialize(kind, &payload)?),
            Kind::FileChunk => {
                let (head, rest) = deserialize_head::<ChunkHead>(kind, &payload)?;
                Frame::FileChunk(FileChunk {
                    channel: head.channel,
                    transfer: head.transfer,
                    offset: head.offset,
                    data: payload.slice(rest..),
                    digest: head.digest,
                })
            }
            Kind::FileAck => Frame::FileAck(deserialize(kind, &payload)?),
            Kind::FileComplete => Frame::FileComplete(deserialize(kind, &payload)?),
            Kind::FileCancel => Frame::FileCancel(deserialize(kind, &payload)?),
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
            Kind::Sealed => {
                let (nonce, rest) = deserialize_head::<u64>(kind, &payload)?;
                Frame::Sealed(Sealed {
                    nonce,
                    ciphertext: payload.slice(rest..),
                })
            }
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
fn arbitrary_bytes(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Bytes> {
    let bytes: alloc::vec::Vec<u8> = arbitrary::Arbitrary::arbitrary(u)?;
    Ok(Bytes::from(bytes))
}
