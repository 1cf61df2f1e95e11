//! The seam between the core and the transports: a transport yields links, a link moves
//! whole frames.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

/// Why a transport could not produce a link, or a link failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The link or transport is closed.
    #[error("link closed")]
    Closed,
    /// The peer refused the connection.
    #[error("connection refused: {0}")]
    Refused(String),
    /// An I/O error underneath.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame was too large for the link.
    #[error("frame of {len} bytes exceeds the link's maximum of {max}")]
    TooLarge {
        /// Frame length.
        len: usize,
        /// The link's maximum.
        max: usize,
    },
    /// The byte stream broke the framing: a header that does not parse.
    #[error("bad frame on the stream: {0}")]
    Framing(#[from] interconnect_proto::DecodeError),
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame")]
    Truncated,
    /// A packet of a packet link (BLE) broke the packet format or its flow control.
    #[error("bad packet: {0}")]
    Packet(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The link was lost underneath, with no close (a BLE supervision timeout).
    #[error("link lost: {0}")]
    Lost(String),
    /// The peer lacks what this transport needs of it (a service without its
    /// characteristics).
    #[error("the peer is not compatible: {0}")]
    Incompatible(String),
    /// The platform's stack failed (the BLE host, BlueZ).
    #[error("{stack}: {source}")]
    Stack {
        /// Which stack.
        stack: &'static str,
        /// Its error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Something that produces links to the peer: a dialer (watch over TCP), a listener
/// (phone over TCP), a BLE central or peripheral, a mock.
///
/// The driver calls [`next_link`](Self::next_link) when it has no link, and waits between
/// failed attempts (capped exponential backoff with jitter), so transports stay simple.
#[async_trait]
pub trait Transport: Send + 'static {
    /// Waits for the next link (dials, or accepts).
    async fn next_link(&mut self) -> Result<Link, TransportError>;

    /// Whether links keep coming while one is up, as on a listener: a watch may
    /// reconnect before this side noticed its old link died. The driver then takes
    /// every link (each [`Link::source`] at a bounded rate); a new one runs its
    /// handshake beside the current one and replaces it once it authenticated the same
    /// device (the newest authenticated link wins), while another device is refused as
    /// busy (4002), or served beside it on a hub of several watches. A dialer keeps the
    /// default, `false`: it is asked for a link only when there is none.
    fn accepts_while_linked(&self) -> bool {
        false
    }

    /// Whether a link, while it is up, delivers every frame in order (TCP; BLE after
    /// reassembly). The session then resends nothing while the link is up (the link
    /// retransmits itself; resending competes with it) and treats a gap as a broken
    /// link, which it drops: what was lost is resent on the next link, from what the
    /// receiver reports. `false` (the default) keeps retransmission timers for links
    /// that lose frames.
    fn is_reliable(&self) -> bool {
        false
    }

    /// Whether a link is a byte stream its receiver cuts into frames by their headers
    /// (TCP), so several frames may be handed to `send` joined in one buffer: the
    /// session then sends a run of small plaintext frames as one. `false` (the default)
    /// for a transport that takes each buffer as one frame (BLE).
    fn is_stream(&self) -> bool {
        false
    }
}

#[async_trait]
impl Transport for Box<dyn Transport> {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        (**self).next_link().await
    }

    fn accepts_while_linked(&self) -> bool {
        (**self).accepts_while_linked()
    }

    fn is_reliable(&self) -> bool {
        (**self).is_reliable()
    }

    fn is_stream(&self) -> bool {
        (**self).is_stream()
    }
}

/// One established link: a sending half, a receiving half, and its frame limit.
pub struct Link {
    /// Sends whole frames.
    pub sender: Box<dyn LinkSender>,
    /// Receives whole frames.
    pub receiver: Box<dyn LinkReceiver>,
    /// Largest frame the link carries; the handshake never negotiates more.
    pub max_frame_len: usize,
    /// Where the link comes from (the peer's IP address on TCP), when the transport
    /// knows: a listener vets the links still in their handshake per source, so
    /// strangers at other addresses cannot push a watch's link out, and in plaintext
    /// mode only a link from the same source may take over a live one. `None` for
    /// point-to-point links (BLE, the mock).
    pub source: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("max_frame_len", &self.max_frame_len)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The sending half of a link.
#[async_trait]
pub trait LinkSender: Send + 'static {
    /// Queues one encoded frame (on a stream transport, see
    /// [`Transport::is_stream`], possibly several back to back). May wait when the
    /// link's buffers are full.
    async fn send(&mut self, frame: Bytes) -> Result<(), TransportError>;
    /// Pushes queued frames out (called after each batch of sends).
    async fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    /// Writes `frame` at once if the link takes it without waiting, and gives back what
    /// it did not write, which must be the next bytes sent (with [`send`](Self::send)).
    /// What it wrote needs no flush. The driver calls it only while nothing waits to be
    /// sent, so a frame need not wait for the writer task to be scheduled. The default
    /// writes nothing: every frame goes through `send`.
    fn try_send(&mut self, frame: Bytes) -> Result<Option<Bytes>, TransportError> {
        Ok(Some(frame))
    }
}

/// What a radio link (BLE) runs with, as its transport knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Radio {
    /// The negotiated ATT MTU.
    pub att_mtu: usize,
    /// The physical layer, when the stack says.
    pub phy: Option<Phy>,
    /// The connection interval in force, when the stack says.
    pub connection_interval: Option<std::time::Duration>,
}

impl Radio {
    /// A radio link of this ATT MTU, its PHY and interval unknown.
    pub fn new(att_mtu: usize) -> Radio {
        Radio {
            att_mtu,
            phy: None,
            connection_interval: None,
        }
    }
}

/// A BLE physical layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phy {
    /// 1 Mbit/s.
    M1,
    /// 2 Mbit/s (Bluetooth 5).
    M2,
    /// Coded, S=8 (long range, 125 kbit/s).
    Coded,
}

/// The receiving half of a link.
///
/// `recv` must be **cancel-safe**: the driver waits on it beside its other sources and
/// drops the future when something else is ready first, so a frame partly read must stay
/// buffered for the next call (as `FramedRead` and `mpsc::Receiver` do).
#[async_trait]
pub trait LinkReceiver: Send + 'static {
    /// The next whole frame; `Ok(None)` when the peer closed the link cleanly.
    ///
    /// The buffer is the caller's alone (a `BytesMut` cut from a shared read buffer is):
    /// the session opens a sealed frame where it lies. A transport holding a `Bytes`
    /// hands it over with `BytesMut::from`, which copies only when something else still
    /// holds the bytes.
    async fn recv(&mut self) -> Result<Option<BytesMut>, TransportError>;

    /// A whole frame already received, taken without waiting; `None` when there is none
    /// at hand (or something only `recv` reports: a failure, the end of the link). The
    /// driver takes a burst of frames through it without a future per frame. The default
    /// has none at hand.
    fn try_recv(&mut self) -> Option<BytesMut> {
        None
    }

    /// The largest frame the session takes from now on (never above the link's own
    /// limit). Before a secure link is authenticated that is a few hundred bytes: a
    /// transport that buffers a frame by the length its header announces should refuse a
    /// longer one before buffering it, so a stranger cannot make it allocate. The
    /// default ignores it (the session still refuses such a frame once read).
    fn limit_frames(&mut self, max_frame_len: usize) {
        let _ = max_frame_len;
    }

    /// What the radio underneath runs with, on a radio link (BLE); `None` (the
    /// default) elsewhere. Shown in [`LinkLimits::radio`](crate::LinkLimits::radio).
    fn radio(&self) -> Option<Radio> {
        None
    }
}
