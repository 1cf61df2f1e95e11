//! What the session reports to its owner (`Session::poll_event`).

#[allow(unused_imports)]
use crate::prelude::*;

use bytes::Bytes;
use interconnect_proto::{ChannelId, Code, ContentType, DeviceId, Exchange, Role, TransferId};

use crate::security::{CipherSuite, Fingerprint, PairingCode, SecurityError};

/// Identifies one `send` call, so its outcome can be matched to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SendId(pub u64);

impl SendId {
    /// The first id [`Session::send`](crate::sans_io::Session::send) gives; the ids
    /// below it are for [`Session::send_as`](crate::sans_io::Session::send_as).
    pub const SESSION: SendId = SendId(1 << 63);
}

/// The peer device, as it introduced itself in the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's role.
    pub role: Role,
    /// The peer's device id.
    pub device_id: DeviceId,
    /// The protocol version both sides speak on this link.
    pub version: u8,
    /// Largest frame either side sends on this link.
    pub max_frame_len: usize,
}

/// A received app message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// How the payload is encoded.
    pub content_type: ContentType,
    /// Request/reply correlation.
    pub exchange: Exchange,
    /// The bytes.
    pub payload: Bytes,
    /// Hand it to [`Session::taken`](crate::sans_io::Session::taken) once the app has the
    /// message: with [`Acknowledge::WhenTaken`](crate::Acknowledge::WhenTaken) the peer
    /// gets its acknowledgement only then.
    pub receipt: Receipt,
}

/// Names one delivered message of one channel's life, for
/// [`Session::taken`](crate::sans_io::Session::taken). A receipt of a channel that has since
/// restarted its numbering (the peer restarted) changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub(crate) channel: ChannelId,
    pub(crate) life: u64,
    pub(crate) seq: u64,
}

/// Who ended a channel (see [`ChannelEvent::Close`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClosedBy {
    /// This side: its app closed the channel, or this endpoint shut down.
    Local,
    /// The peer: its app closed the channel, or the peer shut down or refused it.
    Peer,
    /// Neither: the link went down.
    Link,
}

/// Something that happened on one channel, in the vocabulary of the vendor APIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The channel is open. `is_reconnected` is true when it had been open before: it
    /// resumed after a link drop, or (watch) reopened after the phone closed it or
    /// restarted. Nothing unacknowledged is lost either way.
    Open {
        /// Whether the channel had been open before.
        is_reconnected: bool,
    },
    /// The channel closed, or its link went down (1006).
    Close {
        /// Why.
        code: Code,
        /// Detail.
        reason: String,
        /// Who ended it.
        by: ClosedBy,
        /// Whether it opens again by itself: after a link drop, and on the watch after
        /// the phone closed or refused it (the watch reopens it when the phone app is
        /// back). Only this side's own close ends a channel for good.
        reopens: bool,
    },
    /// A message arrived, in order, exactly once.
    Message(Message),
    /// An error concerning the channel (e.g. a refused open: 1001, 1002, 1007).
    Error {
        /// What.
        code: Code,
        /// Detail.
        message: String,
    },
}

/// An output of the session state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed: the peer device is connected.
    LinkUp {
        /// Who the peer is.
        peer: PeerInfo,
        /// Whether the peer kept its session state (channels resume).
        resumed: bool,
    },
    /// The peer device said its name (after its `LinkUp`, on each link, when it has one).
    PeerName(String),
    /// Secure links: the peer device's key passed the trust policy. Sent before its
    /// `LinkUp`.
    PeerAuthenticated {
        /// The peer's key fingerprint.
        fingerprint: Fingerprint,
        /// The suite sealing this link.
        suite: CipherSuite,
        /// The pairing code of this handshake (the watch learns it in step 4, so it may
        /// be absent there when the peer was already trusted).
        code: Option<PairingCode>,
    },
    /// Numeric comparison: show `code` to the user and answer with
    /// `Session::confirm_pairing` before the pairing timeout.
    PairingRequest {
        /// The peer's key fingerprint.
        fingerprint: Fingerprint,
        /// The code both devices show.
        code: PairingCode,
    },
    /// A peer was pinned (trust on first use, or a confirmed pairing): persist it (e.g.
    /// the runtime's `KnownPeers::pin`) to keep trusting it after a restart.
    PeerPinned {
        /// The fingerprint to remember.
        fingerprint: Fingerprint,
    },
    /// The secure layer refused the link; a `DropLink` follows. Nothing from this link
    /// reached a channel.
    Refused(SecurityError),
    /// The session asks its owner to drop the current link (protocol error, timeout).
    /// The owner drops it and calls `Session::link_down`.
    DropLink {
        /// Why.
        code: Code,
        /// Detail.
        reason: String,
    },
    /// The link is down (reported after `Session::link_down`).
    LinkDown,
    /// A channel event. On the phone side the first event of a channel is its `Open`,
    /// and `Session::channel_package` tells which app it belongs to.
    Channel(ChannelId, ChannelEvent),
    /// The peer acknowledged the messages of these sends, in the order they were sent:
    /// one acknowledgement delivers a run of them, handed over in one event.
    Delivered(ChannelId, Vec<SendId>),
    /// This `send` failed: the channel closed (1006), was refused, or the message was
    /// too large (4001).
    SendFailed(ChannelId, SendId, Code),
    /// Sender: read `len` bytes at `offset` of the transfer's file and pass them to
    /// `Session::file_read` (or, read after room for the frame's header,
    /// `Session::file_read_with_room`). The session keeps no bytes once sent: those it
    /// must send again are asked for again.
    FileRead {
        /// The channel.
        channel: ChannelId,
        /// The transfer.
        transfer: TransferId,
        /// Where to read.
        offset: u64,
        /// How much.
        len: u64,
    },
    /// Sender: the receiver holds every byte before `offset`.
    FileProgress {
        /// The channel.
        channel: ChannelId,
        /// The transfer.
        transfer: TransferId,
        /// Bytes acknowledged.
        offset: u64,
    },
    /// Sender: the receiver verified and stored the file.
    FileSent {
        /// The channel.
        channel: ChannelId,
        /// The transfer.
        transfer: TransferId,
    },
    /// Receiver: the peer offers a file; answer with `Session::accept_file` (with the
    /// offset already held) or `Session::reject_file`.
    FileOffered {
        /// The channel.
        channel: ChannelId,
        /// The transfer.
        transfer: TransferId,
        /// The name as the sender has it (not yet sanitised).
        name: String,
        /// Size in bytes.
        size: u64,
        /// The sender's modification time (nanoseconds since the Unix epoch, 0 if
        /// unknown): with name and size, the key of a partial copy to resume.
        modified: u64,
        /// The sending app's metadata about the file (empty: none).
        meta: Bytes,
    },
    /// Receiver: write these bytes (they follow the last ones), then call
    /// `Session::file_written`.
    FileData {
        /// The channel.
        channel: ChannelId,
        /// The transfer.
        transfer: TransferId,
        /// Offset of the first byte.
        offset: u64,
        /// The bytes.
        data: Bytes,
        /// BLAKE3 of the whole file, with the bytes that end it: check it against what
        /// was written before storing the file.
        digest: Option<[u8; 32]>,
    },
    /// Receiver: the sender went away for good (it restarted, or the channel was
    /// replaced). A partial file may be kept to resume a later offer of the same file.
    FileAbandoned {
        /// The channel.
        channel: ChannelId,
        /// The transfer.
        transfer: TransferId,
    },
    /// Either side: the transfer ended without success, and the peer was told (or
    /// told us).
    FileFailed {
        /// The channel.
        channel: ChannelId,
        /// The transfer.
        transfer: TransferId,
        /// Whether this side was sending.
        outgoing: bool,
        /// Why.
        code: Code,
        /// Detail.
        reason: String,
    },
    /// The answer to `Session::query_version`.
    VersionReply {
        /// The query's id.
        request: u32,
        /// The app's version, `None` when no app has that package.
        version: Option<u32>,
    },
}
