//! TCP transport for interconnect: [`TcpDialer`] for the watch, which connects, and
//! [`TcpListener`] for the phone, which accepts.
//!
//! Frames go over the stream back to back, as `interconnect-proto` lays them out; the
//! reader splits the stream with the frame header's length (checked against the maximum
//! before anything is buffered) and leaves decoding, CRC included, to the session.
//! Sockets use `TCP_NODELAY` (a frame is flushed as a whole; Nagle would only add
//! latency) and TCP keepalive; writes go through a bounded buffer and wait when the
//! socket is full.
//!
//! A listener hands every connection to the hub, which by default serves **one watch at
//! a time**: a connection that arrives while a link is up runs its handshake beside it
//! and, once it authenticated the same watch, replaces the old link at once (a watch
//! that reconnected before the phone noticed its old link died); another watch is
//! refused with [`Code::BUSY`](interconnect_proto::Code::BUSY) (4002) after it
//! authenticated, so a stranger can neither push the served watch off nor learn who it
//! is. A hub of several watches (`Config::max_watches`) serves each authenticated watch
//! on its own link from the same listener.
//! Reconnection and backoff are the core driver's job, not the transport's.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use interconnect::{Config, Hub, Interconnect};
//! use interconnect_proto::DeviceId;
//! use transport_tcp::{TcpDialer, TcpListener};
//!
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr();
//! let hub = Hub::new(listener, Config::in_memory(DeviceId([2; 16])));
//! let watch = Interconnect::new(TcpDialer::new(addr), Config::in_memory(DeviceId([1; 16])));
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use interconnect::{Link, LinkReceiver, LinkSender, Transport, TransportError};
use interconnect_proto::{DEFAULT_MAX_FRAME_LEN, FrameHeader, HEADER_LEN};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Bytes of frames held for writing before a send waits for the socket.
pub const WRITE_BUFFER: usize = 256 * 1024;
/// Frames handed to the kernel in one vectored write, at most.
const WRITE_SLICES: usize = 16;
/// Keepalive probes unanswered before the kernel declares the connection dead.
const KEEPALIVE_RETRIES: u32 = 3;

/// Settings shared by the dialer and the listener.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Largest frame carried (the session negotiates at most this).
    pub max_frame_len: usize,
    /// Gives up a connection attempt after this long.
    pub connect_timeout: Duration,
    /// Idle time before TCP keepalive probes, and the time between them (three go
    /// unanswered before the socket fails). The session's own pings notice a silent
    /// link sooner; keepalive also covers a link whose session is not reading.
    pub keepalive: Duration,
    /// `TCP_USER_TIMEOUT` (Linux): data the peer does not acknowledge for this long
    /// fails the socket. Matches the session's default link timeout, so a peer gone
    /// without FIN or RST is noticed by the socket as soon as by the session, even
    /// while writes are stuck.
    pub user_timeout: Option<Duration>,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(10),
            user_timeout: Some(Duration::from_secs(15)),
        }
    }
}

/// The watch side: each `next_link` connects to the phone's address.
#[derive(Clone, Debug)]
pub struct TcpDialer {
    target: Target,
    config: TcpConfig,
}

/// Where a dialer connects.
#[derive(Clone, Debug)]
enum Target {
    Addr(SocketAddr),
    /// `host:port`, looked up again at each dial (an address may change).
    Host(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(addr) => addr.fmt(f),
            Target::Host(host) => f.write_str(host),
        }
    }
}

impl TcpDialer {
    /// Dials `addr` with default settings.
    pub fn new(addr: SocketAddr) -> Self {
        TcpDialer::with_config(addr, TcpConfig::default())
    }

    /// Dials `addr` with these settings.
    pub fn with_config(addr: SocketAddr, config: TcpConfig) -> Self {
        TcpDialer {
            target: Target::Addr(addr),
            config,
        }
    }

    /// Dials `host:port` (a name such as `localhost:7000`, or an address), looking the
    /// name up at each dial and trying its addresses in turn.
    pub fn to_host(host_and_port: impl Into<String>, config: TcpConfig) -> Self {
        TcpDialer {
            target: Target::Host(host_and_port.into()),
            config,
        }
    }
}

#[async_trait]
impl Transport for TcpDialer {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        let connect = async {
            match &self.target {
                Target::Addr(addr) => TcpStream::connect(addr).await,
                Target::Host(host) => TcpStream::connect(host.as_str()).await,
            }
        };
        let stream = tokio::time::timeout(self.config.connect_timeout, connect)
            .await
            .map_err(|_| {
                TransportError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {} timed out", self.target),
                ))
            })??;
        tracing::debug!(peer = %self.target, "connected");
        link(stream, &self.config)
    }

    fn is_reliable(&self) -> bool {
        true
    }

    fn is_stream(&self) -> bool {
        true
    }
}

/// The phone side: accepts watches on a bound address, one at a time.
pub struct TcpListener {
    local_addr: SocketAddr,
    listener: tokio::net::TcpListener,
    config: TcpConfig,
}

impl TcpListener {
    /// Binds `addr` (use port 0 for an ephemeral port) with default settings.
    pub async fn bind(addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<Self> {
        Self::bind_with_config(addr, TcpConfig::default()).await
    }

    /// Binds `addr` with these settings.
    pub async fn bind_with_config(
        addr: impl tokio::net::ToSocketAddrs,
        config: TcpConfig,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(TcpListener {
            local_addr,
            listener,
            config,
        })
    }

    /// The address bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// Accepts in `next_link`, on the hub's own task (no task of its own): the socket is
/// released when the hub is, so a port is free again once `Hub::shutdown` returned.
#[async_trait]
impl Transport for TcpListener {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        loop {
            let (stream, peer) = self.listener.accept().await.map_err(TransportError::Io)?;
            tracing::debug!(%peer, "accepted");
            match link(stream, &self.config) {
                Ok(link) => return Ok(link),
                Err(error) => tracing::warn!(%error, "cannot set up the accepted connection"),
            }
        }
    }

    fn accepts_while_linked(&self) -> bool {
        true
    }

    fn is_reliable(&self) -> bool {
        true
    }

    fn is_stream(&self) -> bool {
        true
    }
}

/// Applies the socket options every link uses: `TCP_NODELAY`, keepalive probes after
/// `keepalive` of silence, and (Linux) `TCP_USER_TIMEOUT`, so a write the peer does not
/// acknowledge for `user_timeout` fails the socket instead of waiting for the kernel's
/// retransmissions (about 15 minutes by default). Public so a test, or an app that
/// makes its own streams, can check or reuse them.
pub fn configure(stream: &TcpStream, config: &TcpConfig) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(config.keepalive)
        .with_interval(config.keepalive);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let keepalive = keepalive.with_retries(KEEPALIVE_RETRIES);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket.set_tcp_user_timeout(config.user_timeout)?;
    Ok(())
}

fn link(stream: TcpStream, config: &TcpConfig) -> Result<Link, TransportError> {
    configure(&stream, config)?;
    let source = stream.peer_addr().ok().map(|a| a.ip());
    let (read, write) = stream.into_split();
    Ok(Link {
        sender: Box::new(TcpSender {
            write,
            pending: std::collections::VecDeque::new(),
            small: BytesMut::new(),
            pending_len: 0,
        }),
        receiver: Box::new(TcpReceiver {
            frames: FrameReader::new(read, config.max_frame_len),
        }),
        max_frame_len: config.max_frame_len,
        source,
    })
}

/// Holds the frames of a batch and hands them to the kernel together, in vectored
/// writes: a large frame (a sealed batch, a file chunk) is written from its own buffer,
/// never copied, and so are the first few of a batch; small ones after those are
/// gathered into one buffer, so a long run of them costs one slice and one system call.
struct TcpSender {
    write: OwnedWriteHalf,
    /// Frames taken and not yet written, in order; the first may be partly written.
    pending: std::collections::VecDeque<Bytes>,
    /// Small frames gathered after the last of `pending`.
    small: BytesMut,
    /// Bytes in `pending` and `small`.
    pending_len: usize,
}

/// Frames shorter than this are copied into the gathering buffer.
const GATHER_BELOW: usize = 2048;

impl TcpSender {
    fn gathered(&mut self) {
        if !self.small.is_empty() {
            self.pending.push_back(self.small.split().freeze());
        }
    }

    /// Writes every pending frame, waiting for the socket as needed.
    async fn write_pending(&mut self) -> Result<(), TransportError> {
        if !self.pending.is_empty() {
            self.gathered();
        }
        while let Some(first) = self.pending.front() {
            let mut written = if self.pending.len() == 1 {
                self.write.write(first).await?
            } else {
                let mut slices = [std::io::IoSlice::new(&[]); WRITE_SLICES];
                let count = self.pending.len().min(WRITE_SLICES);
                for (slice, frame) in slices.iter_mut().zip(&self.pending) {
                    *slice = std::io::IoSlice::new(frame);
                }
                self.write.write_vectored(&slices[..count]).await?
            };
            if written == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            self.pending_len -= written;
            while let Some(front) = self.pending.front_mut() {
                if written < front.len() {
                    bytes::Buf::advance(front, written);
                    break;
                }
                written -= front.len();
                self.pending.pop_front();
            }
        }
        // Small frames alone: written from the gathering buffer itself.
        while !self.small.is_empty() {
            let written = self.write.write(&self.small).await?;
            if written == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            self.pending_len -= written;
            bytes::Buf::advance(&mut self.small, written);
        }
        Ok(())
    }
}

#[async_trait]
impl LinkSender for TcpSender {
    async fn send(&mut self, frame: Bytes) -> Result<(), TransportError> {
        if frame.is_empty() {
            // Nothing to write (a write of nothing would read as a closed socket).
            return Ok(());
        }
        self.pending_len += frame.len();
        // The first few frames of a batch go as slices of their own (a lone frame is
        // never copied); small ones after them are gathered.
        let gather = !self.small.is_empty() || self.pending.len() >= WRITE_SLICES / 2;
        if frame.len() < GATHER_BELOW && gather {
            self.small.extend_from_slice(&frame);
        } else {
            self.gathered();
            self.pending.push_back(frame);
        }
        if self.pending_len >= WRITE_BUFFER || self.pending.len() >= WRITE_SLICES {
            self.write_pending().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.write_pending().await
    }

    fn try_send(&mut self, frame: Bytes) -> Result<Option<Bytes>, TransportError> {
        if self.pending_len > 0 {
            // Behind bytes not yet written: in order, through `send`.
            return Ok(Some(frame));
        }
        if frame.is_empty() {
            return Ok(None);
        }
        match self.write.try_write(&frame) {
            Ok(written) if written == frame.len() => Ok(None),
            Ok(written) => Ok(Some(frame.slice(written..))),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Ok(Some(frame)),
            Err(error) => Err(error.into()),
        }
    }
}

struct TcpReceiver {
    frames: FrameReader,
}

#[async_trait]
impl LinkReceiver for TcpReceiver {
    async fn recv(&mut self) -> Result<Option<BytesMut>, TransportError> {
        self.frames.next().await
    }

    fn try_recv(&mut self) -> Option<BytesMut> {
        self.frames.buffered()
    }

    fn limit_frames(&mut self, max_frame_len: usize) {
        self.frames.max_frame_len = max_frame_len.min(self.frames.link_max);
    }
}

/// Frames at least this long are read into a buffer of their own (a file chunk of a link
/// of 64 KiB frames is one).
const LARGE_FRAME: usize = 16 * 1024;
/// Room the shared read buffer keeps for small frames.
const READ_BUFFER: usize = 64 * 1024;

/// Splits the byte stream into whole frames by their header, without decoding them.
///
/// Small frames are cut from one shared read buffer, each a `BytesMut` of its own range
/// (the secure layer decrypts it where it lies). A large frame (a file chunk) gets an
/// allocation of exactly its length, and the stream is read straight into it: nothing is
/// copied when a shared buffer would have had to grow, and it keeps no other frame's
/// memory alive. State lives in the struct, so a `next` cancelled mid-frame loses
/// nothing.
struct FrameReader {
    read: OwnedReadHalf,
    /// The largest frame taken now (the session lowers it before authentication).
    max_frame_len: usize,
    /// The link's own limit.
    link_max: usize,
    buf: BytesMut,
    /// A large frame being filled, with its full length.
    large: Option<(BytesMut, usize)>,
    /// The last frame was large: the next read takes only a header, since what follows
    /// it is likely another large frame, whose bytes would otherwise land in the shared
    /// buffer and be copied out of it.
    after_large: bool,
}

impl FrameReader {
    fn new(read: OwnedReadHalf, max_frame_len: usize) -> Self {
        FrameReader {
            read,
            max_frame_len,
            link_max: max_frame_len,
            buf: BytesMut::new(),
            large: None,
            after_large: false,
        }
    }

    /// The next frame if it is in the buffer whole (`next` starts here). A header that
    /// does not parse is left for `next` to report.
    fn buffered(&mut self) -> Option<BytesMut> {
        if let Some((frame, len)) = &self.large {
            if frame.len() != *len {
                return None;
            }
            let (frame, _) = self.large.take()?;
            self.after_large = true;
            return Some(frame);
        }
        let len = FrameHeader::parse(&self.buf, self.max_frame_len)
            .ok()?
            .frame_len();
        if self.buf.len() < len {
            return None;
        }
        self.after_large = false;
        Some(self.buf.split_to(len))
    }

    async fn next(&mut self) -> Result<Option<BytesMut>, TransportError> {
        use bytes::BufMut;
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(frame) = self.buffered() {
                return Ok(Some(frame));
            }
            // What is buffered is not a whole frame yet.
            if let Some((frame, len)) = &mut self.large {
                let want = *len - frame.len();
                if self.read.read_buf(&mut frame.limit(want)).await? == 0 {
                    return Err(TransportError::Truncated);
                }
                continue;
            }
            if self.buf.len() >= HEADER_LEN {
                let len = FrameHeader::parse(&self.buf, self.max_frame_len)?.frame_len();
                // A small frame: the reads that complete it may take what follows too.
                self.after_large &= len >= LARGE_FRAME;
                if len >= LARGE_FRAME {
                    let mut frame = BytesMut::with_capacity(len);
                    frame.extend_from_slice(&self.buf);
                    self.buf.clear();
                    self.large = Some((frame, len));
                    continue;
                }
            }
            if self.buf.capacity() - self.buf.len() < READ_BUFFER / 4 {
                self.buf.reserve(READ_BUFFER);
            }
            let room = if self.after_large {
                HEADER_LEN.saturating_sub(self.buf.len()).max(1)
            } else {
                usize::MAX
            };
            if self.read.read_buf(&mut (&mut self.buf).limit(room)).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(TransportError::Truncated)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use interconnect_proto::{ChannelId, ContentType, Data, Exchange, Frame};

    fn frame(len: usize, fill: u8) -> Bytes {
        Frame::Data(Data {
            channel: ChannelId(1),
            seq: u64::from(fill),
            content_type: ContentType::Binary,
            exchange: Exchange::OneWay,
            payload: Bytes::from(vec![fill; len]),
        })
        .to_bytes(DEFAULT_MAX_FRAME_LEN)
        .unwrap()
    }

    /// The two ends of a link over a loopback socket pair.
    async fn linked() -> (Box<dyn LinkSender>, Box<dyn LinkReceiver>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dial = TcpStream::connect(listener.local_addr().unwrap());
        let (dialed, accepted) = tokio::join!(dial, listener.accept());
        let config = TcpConfig::default();
        let sender = link(dialed.unwrap(), &config).unwrap().sender;
        (sender, link(accepted.unwrap().0, &config).unwrap().receiver)
    }

    /// Sends `sent` over a loopback socket pair (flushing after every `flush_every`
    /// frames, and at the end) and returns what the other end read.
    async fn carried(sent: &[Bytes], flush_every: usize) -> Vec<Bytes> {
        let (mut sender, mut receiver) = linked().await;
        let write = async {
            for (i, frame) in sent.iter().enumerate() {
                sender.send(frame.clone()).await.unwrap();
                if (i + 1) % flush_every == 0 {
                    sender.flush().await.unwrap();
                }
            }
            sender.flush().await.unwrap();
        };
        let read = async {
            let mut got = Vec::new();
            for _ in sent.iter().filter(|f| !f.is_empty()) {
                got.push(receiver.recv().await.unwrap().unwrap().freeze());
            }
            got
        };
        tokio::join!(write, read).1
    }

    /// Large frames go from their own buffers and small ones are gathered; either way
    /// each leaves after the frames sent before it.
    #[tokio::test]
    async fn large_and_small_frames_arrive_in_the_order_sent() {
        let sent = [
            frame(10, 1),
            frame(LARGE_FRAME, 2),
            frame(20, 3),
            frame(30, 4),
            frame(200 * 1024, 5),
            frame(40, 6),
        ];
        assert_eq!(carried(&sent, usize::MAX).await, sent);
    }

    /// A run of large frames (a file's chunks) is read frame by frame into buffers of
    /// their own: none shares its allocation with the bytes read after it, so none keeps
    /// another's memory alive.
    #[tokio::test]
    async fn frames_after_a_large_one_arrive_in_buffers_of_their_own() {
        let sizes = [LARGE_FRAME, 60_000, 20_000, 10, 50_000, 64 * 1024];
        let sent: Vec<Bytes> = (0..60)
            .map(|i| frame(sizes[i % sizes.len()], i as u8))
            .collect();
        let got = carried(&sent, 1).await;
        assert!(got == sent, "a frame arrived changed or out of order");
        for (i, frame) in got.into_iter().enumerate().skip(1) {
            if frame.len() >= LARGE_FRAME && sent[i - 1].len() >= LARGE_FRAME {
                assert!(frame.is_unique(), "frame {i} shares its buffer");
            }
        }
    }

    /// An empty send writes nothing and is no error; the frames around it arrive.
    #[tokio::test]
    async fn an_empty_send_is_not_a_failure() {
        let sent = [Bytes::new(), frame(10, 1), Bytes::new()];
        let got = carried(&sent, 1).await;
        assert_eq!(got, [sent[1].clone()]);
    }

    /// Far more than the socket buffers hold, in frames of many sizes.
    fn mixed_frames() -> Vec<Bytes> {
        let sizes = [1usize, 64, 700, 4_000, 65_000, 3, 200_000, 17, 9_999];
        (0..400)
            .map(|i| frame(sizes[i % sizes.len()], i as u8))
            .collect()
    }

    /// Frames written at once where the socket takes them (as the driver does while
    /// nothing is queued) and the rest through `send`: with far more than the socket
    /// buffers hold, some are taken in part or not at all, and every frame still arrives
    /// whole and in order.
    #[tokio::test]
    async fn frames_written_at_once_or_in_part_arrive_whole_and_in_order() {
        let sent = mixed_frames();
        let (mut sender, mut receiver) = linked().await;
        let write = async {
            let mut left_over = 0;
            for frame in &sent {
                if let Some(rest) = sender.try_send(frame.clone()).unwrap() {
                    left_over += 1;
                    sender.send(rest).await.unwrap();
                    sender.flush().await.unwrap();
                }
            }
            left_over
        };
        let read = async {
            let mut got = Vec::new();
            for _ in &sent {
                got.push(receiver.recv().await.unwrap().unwrap());
            }
            got
        };
        let (left_over, got) = tokio::join!(write, read);
        assert!(got == sent, "a frame arrived changed or out of order");
        assert!(left_over > 0, "the socket took every frame at once");
    }

    /// Far more than the socket buffers hold, in frames of many sizes, so the kernel
    /// takes the vectored writes in pieces cut anywhere: every frame arrives whole.
    #[tokio::test]
    async fn frames_written_in_pieces_arrive_whole_and_in_order() {
        let sent = mixed_frames();
        assert!(
            carried(&sent, 7).await == sent,
            "a frame arrived changed or out of order"
        );
    }

    /// Frames taken at hand (`try_recv`) and waited for (`recv`), in any mix, arrive
    /// whole and in order, large ones too; a burst read at once is taken without waiting.
    #[tokio::test]
    async fn frames_taken_at_hand_or_waited_for_arrive_whole_and_in_order() {
        let sent = mixed_frames();
        let (mut sender, mut receiver) = linked().await;
        let write = async {
            for frame in &sent {
                sender.send(frame.clone()).await.unwrap();
            }
            sender.flush().await.unwrap();
        };
        let read = async {
            let (mut got, mut at_hand) = (Vec::new(), 0);
            while got.len() < sent.len() {
                match receiver.try_recv() {
                    Some(frame) => {
                        at_hand += 1;
                        got.push(frame.freeze());
                    }
                    None => got.push(receiver.recv().await.unwrap().unwrap().freeze()),
                }
            }
            assert!(receiver.try_recv().is_none(), "nothing more at hand");
            (got, at_hand)
        };
        let (_, (got, at_hand)) = tokio::join!(write, read);
        assert!(got == sent, "a frame arrived changed or out of order");
        assert!(at_hand > 0, "no frame was at hand");
    }
}
