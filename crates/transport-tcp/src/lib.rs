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
//! A listener serves **one watch at a time**: while a link is up, a second connection is
//! answered with an error frame carrying [`Code::BUSY`] (4002) and closed, never silently
//! dropped. Reconnection and backoff are the core driver's job, not the transport's.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use interconnect_core::{Config, Hub, Interconnect};
//! use interconnect_proto::DeviceId;
//! use transport_tcp::{TcpDialer, TcpListener};
//!
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr();
//! let hub = Hub::new(listener, Config::new(DeviceId([2; 16])));
//! let watch = Interconnect::new(TcpDialer::new(addr), Config::new(DeviceId([1; 16])));
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use interconnect_core::{Link, LinkReceiver, LinkSender, Transport, TransportError};
use interconnect_proto::{
    Code, DEFAULT_MAX_FRAME_LEN, ErrorReport, Frame, FrameHeader, HEADER_LEN,
};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

/// Bytes buffered for writing before a send waits for the socket.
const WRITE_BUFFER: usize = 256 * 1024;
/// TCP keepalive idle time and probe interval.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Settings shared by the dialer and the listener.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Largest frame carried (the session negotiates at most this).
    pub max_frame_len: usize,
    /// Gives up a connection attempt after this long.
    pub connect_timeout: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The watch side: each `next_link` connects to the phone's address.
#[derive(Clone, Debug)]
pub struct TcpDialer {
    addr: SocketAddr,
    config: TcpConfig,
}

impl TcpDialer {
    /// Dials `addr` with default settings.
    pub fn new(addr: SocketAddr) -> Self {
        TcpDialer {
            addr,
            config: TcpConfig::default(),
        }
    }

    /// Dials `addr` with these settings.
    pub fn with_config(addr: SocketAddr, config: TcpConfig) -> Self {
        TcpDialer { addr, config }
    }
}

#[async_trait]
impl Transport for TcpDialer {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        let stream =
            tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(self.addr))
                .await
                .map_err(|_| {
                    TransportError::Other(format!("connecting to {} timed out", self.addr))
                })??;
        tracing::debug!(peer = %self.addr, "connected");
        link(stream, self.config.max_frame_len, None)
    }
}

/// The phone side: accepts watches on a bound address, one at a time.
pub struct TcpListener {
    local_addr: SocketAddr,
    links: mpsc::Receiver<Link>,
    accept_task: tokio::task::JoinHandle<()>,
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
        let (tx, links) = mpsc::channel(1);
        let accept_task = tokio::spawn(accept_loop(listener, config, tx));
        Ok(TcpListener {
            local_addr,
            links,
            accept_task,
        })
    }

    /// The address bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

#[async_trait]
impl Transport for TcpListener {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        self.links.recv().await.ok_or(TransportError::Closed)
    }
}

/// Accepts connections; hands one at a time to the hub and refuses the others.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    config: TcpConfig,
    links: mpsc::Sender<Link>,
) {
    let active = Arc::new(AtomicBool::new(false));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if active.swap(true, Ordering::AcqRel) {
            tracing::info!(%peer, "refused: another watch is connected");
            tokio::spawn(refuse(stream, config.max_frame_len));
            continue;
        }
        tracing::debug!(%peer, "accepted");
        match link(stream, config.max_frame_len, Some(active.clone())) {
            Ok(link) => {
                if links.send(link).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                active.store(false, Ordering::Release);
                tracing::warn!(%error, "cannot set up the accepted connection");
            }
        }
    }
}

/// Tells a second watch why it is not served, then closes.
async fn refuse(mut stream: TcpStream, max_frame_len: usize) {
    let report = Frame::Error(ErrorReport {
        channel: None,
        code: Code::BUSY,
        message: "another watch is connected to this phone".into(),
    });
    if let Ok(bytes) = report.to_bytes(max_frame_len) {
        let _ = stream.write_all(&bytes).await;
    }
    let _ = stream.shutdown().await;
}

fn link(
    stream: TcpStream,
    max_frame_len: usize,
    active: Option<Arc<AtomicBool>>,
) -> Result<Link, TransportError> {
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE)
        .with_interval(KEEPALIVE);
    socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
    let (read, write) = stream.into_split();
    let guard = active.map(ActiveGuard);
    Ok(Link {
        sender: Box::new(TcpSender {
            writer: BufWriter::with_capacity(WRITE_BUFFER, write),
        }),
        receiver: Box::new(TcpReceiver {
            frames: FrameReader::new(read, max_frame_len),
            _guard: guard,
        }),
        max_frame_len,
    })
}

/// Marks the listener free again when the link's receiving half is dropped.
struct ActiveGuard(Arc<AtomicBool>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

struct TcpSender {
    writer: BufWriter<OwnedWriteHalf>,
}

#[async_trait]
impl LinkSender for TcpSender {
    async fn send(&mut self, frame: Bytes) -> Result<(), TransportError> {
        self.writer.write_all(&frame).await?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.writer.flush().await?;
        Ok(())
    }
}

struct TcpReceiver {
    frames: FrameReader,
    _guard: Option<ActiveGuard>,
}

#[async_trait]
impl LinkReceiver for TcpReceiver {
    async fn recv(&mut self) -> Result<Option<Bytes>, TransportError> {
        self.frames.next().await
    }

    fn limit_frames(&mut self, max_frame_len: usize) {
        self.frames.max_frame_len = max_frame_len.min(self.frames.link_max);
    }
}

/// Frames at least this long are read into a buffer of their own.
const LARGE_FRAME: usize = 64 * 1024;
/// Room the shared read buffer keeps for small frames.
const READ_BUFFER: usize = 64 * 1024;

/// Splits the byte stream into whole frames by their header, without decoding them.
///
/// Small frames are cut from one shared read buffer. A large frame (a file chunk) gets an
/// allocation of exactly its length, and the stream is read straight into it: nothing is
/// copied when a shared buffer would have had to grow, and the frame's bytes belong to it
/// alone, so the secure layer can decrypt them where they lie. State lives in the struct,
/// so a `next` cancelled mid-frame loses nothing.
struct FrameReader {
    read: OwnedReadHalf,
    /// The largest frame taken now (the session lowers it before authentication).
    max_frame_len: usize,
    /// The link's own limit.
    link_max: usize,
    buf: BytesMut,
    /// A large frame being filled, with its full length.
    large: Option<(BytesMut, usize)>,
}

impl FrameReader {
    fn new(read: OwnedReadHalf, max_frame_len: usize) -> Self {
        FrameReader {
            read,
            max_frame_len,
            link_max: max_frame_len,
            buf: BytesMut::new(),
            large: None,
        }
    }

    async fn next(&mut self) -> Result<Option<Bytes>, TransportError> {
        use bytes::BufMut;
        use tokio::io::AsyncReadExt;
        loop {
            if let Some((frame, len)) = &mut self.large {
                if frame.len() == *len {
                    let (frame, _) = self.large.take().expect("checked just above");
                    return Ok(Some(frame.freeze()));
                }
                let want = *len - frame.len();
                if self.read.read_buf(&mut frame.limit(want)).await? == 0 {
                    return Err(TransportError::Other(
                        "the stream ended inside a frame".into(),
                    ));
                }
                continue;
            }
            if self.buf.len() >= HEADER_LEN {
                let header = FrameHeader::parse(&self.buf, self.max_frame_len)
                    .map_err(|e| TransportError::Other(format!("bad frame on the stream: {e}")))?;
                let len = header.frame_len();
                if self.buf.len() >= len {
                    return Ok(Some(self.buf.split_to(len).freeze()));
                }
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
            if self.read.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(TransportError::Other(
                        "the stream ended inside a frame".into(),
                    ))
                };
            }
        }
    }
}
