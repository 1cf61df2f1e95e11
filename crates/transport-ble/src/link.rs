//! The packet-link seam and the adapter that turns any packet link into an interconnect
//! [`Link`]: fragmentation, reassembly and credit-based flow control, shared by the
//! simulated radio and BlueZ.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use interconnect::{Link, LinkReceiver, LinkSender, Radio, TransportError};
use tokio::sync::{Mutex, Notify, mpsc};

use crate::packet::{Fragmenter, Packet, PacketError, Reassembler, fill_len};

/// Sends whole ATT payloads (one write without response, or one notification).
#[async_trait]
pub trait PacketSender: Send + 'static {
    /// Sends one packet of at most `packet_len(att_mtu())` bytes.
    async fn send_packet(&mut self, packet: Bytes) -> Result<(), TransportError>;
    /// The negotiated ATT MTU.
    fn att_mtu(&self) -> usize;
    /// What the radio runs with, as far as the stack says (by default the ATT MTU only).
    fn radio(&self) -> Radio {
        Radio::new(self.att_mtu())
    }
}

/// Receives whole ATT payloads.
#[async_trait]
pub trait PacketReceiver: Send + 'static {
    /// The next packet; `Ok(None)` when the link closed; an error when it was lost.
    async fn recv_packet(&mut self) -> Result<Option<Bytes>, TransportError>;
}

/// Both halves of a packet link (a BLE connection with its two characteristics).
pub struct PacketLink {
    /// Sends packets to the peer.
    pub sender: Box<dyn PacketSender>,
    /// Receives the peer's packets.
    pub receiver: Box<dyn PacketReceiver>,
}

/// Settings of the BLE framing layer.
#[derive(Clone, Debug)]
pub struct BleConfig {
    /// Largest frame carried (the session negotiates at most this).
    pub max_frame_len: usize,
    /// Data packets each side may send before the peer grants more: the receive buffer
    /// each side assumes of the other at the start. Both sides must use the same value
    /// (32, as every release has).
    pub credits: u8,
    /// This side's receive window in data packets (at least `credits`): the rest is
    /// granted to the peer as soon as the link is up, and grants go back each time a
    /// quarter of it was consumed, so a sender rarely waits for one. A peer of an earlier
    /// release, which never grants more than `credits`, is sent no more than that. 48 by
    /// default: trouble-host queues 64 packets per connection, credit grants among them.
    pub window: u8,
    /// A frame whose pieces stop arriving for this long fails the link.
    pub stall_timeout: Duration,
}

impl Default for BleConfig {
    fn default() -> Self {
        BleConfig {
            max_frame_len: 64 * 1024,
            credits: 32,
            window: 48,
            stall_timeout: Duration::from_secs(10),
        }
    }
}

/// Send-side credit accounting, shared with the reader that receives grants.
struct Credits {
    available: AtomicU32,
    failed: AtomicBool,
    changed: Notify,
}

impl Credits {
    async fn take(&self) -> Result<(), TransportError> {
        loop {
            let notified = self.changed.notified();
            if self.failed.load(Ordering::Acquire) {
                return Err(TransportError::Closed);
            }
            let current = self.available.load(Ordering::Acquire);
            if current > 0 {
                if self
                    .available
                    .compare_exchange(current, current - 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Ok(());
                }
                continue;
            }
            notified.await;
        }
    }

    fn grant(&self, n: u32) {
        self.available.fetch_add(n, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// Turns a packet link into an interconnect link. Dropping either half of it ends the
/// whole packet link (both packet halves are dropped, which disconnects a backend that
/// holds the connection through them): a session that let go of one half must not keep
/// the radio link up until a liveness deadline.
pub fn into_link(packets: PacketLink, config: &BleConfig) -> Link {
    let att_mtu = packets.sender.att_mtu();
    let radio = packets.sender.radio();
    let sender: SharedSender = Arc::new(Mutex::new(Some(packets.sender)));
    let credits = Arc::new(Credits {
        available: AtomicU32::new(u32::from(config.credits)),
        failed: AtomicBool::new(false),
        changed: Notify::new(),
    });
    let (frames_tx, frames) = mpsc::channel(8);
    let reader = tokio::spawn(read_packets(
        packets.receiver,
        sender.clone(),
        credits.clone(),
        frames_tx,
        config.clone(),
    ));
    let end = Arc::new(LinkEnd {
        sender: sender.clone(),
        credits: credits.clone(),
        reader: reader.abort_handle(),
    });
    Link {
        sender: Box::new(BleSender {
            sender,
            credits,
            fragmenter: Fragmenter::new(),
            packet_len: fill_len(att_mtu),
            _end: end.clone(),
        }),
        receiver: Box::new(BleReceiver {
            frames,
            radio,
            _end: end,
        }),
        source: None,
        max_frame_len: link_frame_limit(config.max_frame_len, att_mtu),
    }
}

/// Most packets one frame may take. At the smallest MTU and a slow PHY a 64 KiB frame
/// would take half a minute on air, longer than the session's liveness deadline; capping
/// frames at this many packets keeps every frame to a few seconds.
pub const MAX_PACKETS_PER_FRAME: usize = 512;

/// The frame limit a link of this MTU announces.
fn link_frame_limit(configured: usize, att_mtu: usize) -> usize {
    let by_mtu = MAX_PACKETS_PER_FRAME * (fill_len(att_mtu) - crate::packet::PACKET_HEADER_LEN);
    configured
        .min(by_mtu)
        .max(interconnect_proto::MIN_MAX_FRAME_LEN)
}

/// Reads packets: applies credit grants, reassembles frames, grants credits back as
/// packets are consumed. Stops at the first error, failing the link.
async fn read_packets(
    mut receiver: Box<dyn PacketReceiver>,
    sender: SharedSender,
    credits: Arc<Credits>,
    frames: mpsc::Sender<Result<Bytes, TransportError>>,
    config: BleConfig,
) {
    let mut reassembler = Reassembler::new(config.max_frame_len);
    let window = u32::from(config.window.max(config.credits));
    let mut peer_credits = u32::from(config.credits);
    let mut consumed: u32 = 0;
    let outcome: Result<(), TransportError> = async {
        // The window beyond the base the peer assumes, granted at once.
        let extra = window - peer_credits;
        if extra > 0 {
            sender
                .lock()
                .await
                .as_mut()
                .ok_or(TransportError::Closed)?
                .send_packet(Packet::credit(extra as u8))
                .await?;
            peer_credits += extra;
        }
        loop {
            let next = if reassembler.in_progress() {
                tokio::time::timeout(config.stall_timeout, receiver.recv_packet())
                    .await
                    .map_err(|_| error(PacketError::Stalled))?
            } else {
                receiver.recv_packet().await
            };
            let Some(packet) = next? else {
                return Err(TransportError::Closed);
            };
            match Packet::decode(packet).map_err(error)? {
                Packet::Credit(n) => credits.grant(u32::from(n)),
                Packet::Data { seq, last, body } => {
                    if peer_credits == 0 {
                        return Err(error(PacketError::Overrun));
                    }
                    peer_credits -= 1;
                    if let Some(frame) = reassembler.push(seq, last, &body).map_err(error)? {
                        frames
                            .send(Ok(frame))
                            .await
                            .map_err(|_| TransportError::Closed)?;
                    }
                    consumed += 1;
                    if consumed >= window / 4 {
                        let grant = consumed.min(255) as u8;
                        sender
                            .lock()
                            .await
                            .as_mut()
                            .ok_or(TransportError::Closed)?
                            .send_packet(Packet::credit(grant))
                            .await?;
                        peer_credits += u32::from(grant);
                        consumed -= u32::from(grant);
                    }
                }
            }
        }
    }
    .await;
    credits.fail();
    if let Err(e) = outcome {
        tracing::debug!(error = %e, "BLE link failed");
        let _ = frames.send(Err(e)).await;
    }
}

fn error(e: PacketError) -> TransportError {
    TransportError::Packet(Box::new(e))
}

/// The packet sender, shared by the link's sender and its reader (credit grants);
/// `None` once the link ended.
type SharedSender = Arc<Mutex<Option<Box<dyn PacketSender>>>>;

/// Held by both halves of a link: when the first half goes, the link ends.
struct LinkEnd {
    sender: SharedSender,
    credits: Arc<Credits>,
    reader: tokio::task::AbortHandle,
}

impl LinkEnd {
    fn end(&self) {
        self.credits.fail();
        self.reader.abort();
        if let Ok(mut slot) = self.sender.try_lock() {
            drop(slot.take());
            return;
        }
        // A send is under way: drop the packet sender once it is done.
        let sender = self.sender.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { drop(sender.lock().await.take()) });
        }
    }
}

struct BleSender {
    sender: SharedSender,
    credits: Arc<Credits>,
    fragmenter: Fragmenter,
    packet_len: usize,
    _end: Arc<LinkEnd>,
}

impl Drop for BleSender {
    fn drop(&mut self) {
        self._end.end();
    }
}

#[async_trait]
impl LinkSender for BleSender {
    async fn send(&mut self, frame: Bytes) -> Result<(), TransportError> {
        for packet in self.fragmenter.fragment(&frame, self.packet_len) {
            self.credits.take().await?;
            self.sender
                .lock()
                .await
                .as_mut()
                .ok_or(TransportError::Closed)?
                .send_packet(packet)
                .await?;
        }
        Ok(())
    }
}

struct BleReceiver {
    frames: mpsc::Receiver<Result<Bytes, TransportError>>,
    radio: Radio,
    _end: Arc<LinkEnd>,
}

impl Drop for BleReceiver {
    fn drop(&mut self) {
        self._end.end();
    }
}

#[async_trait]
impl LinkReceiver for BleReceiver {
    async fn recv(&mut self) -> Result<Option<BytesMut>, TransportError> {
        match self.frames.recv().await {
            Some(Ok(frame)) => Ok(Some(BytesMut::from(frame))),
            Some(Err(e)) => Err(e),
            None => Err(TransportError::Closed),
        }
    }

    fn radio(&self) -> Option<Radio> {
        Some(self.radio)
    }
}
