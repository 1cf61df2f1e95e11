//! The L2CAP link: an LE credit-based connection-oriented channel (CoC, Bluetooth 4.1+)
//! carrying the session's frames as whole SDUs, beside the GATT link of [`crate::link`].
//!
//! The channel's own credits pace the sender and its SDUs arrive whole, so this layer
//! adds no header and no credits of its own: a frame goes as one SDU. A frame longer than
//! the peer's SDU limit is the only one cut, into SDUs of that limit. The receiver reads
//! the channel as a byte stream, splitting frames by the length in their own header, so a
//! peer whose stack offers only a stream (iOS and Android expose the channel as input and
//! output streams, and cut SDUs where they like) is read correctly too; an SDU that holds
//! exactly one frame, the usual case, is passed on without a copy.
//!
//! How a phone finds the channel: the watch listens on an LE PSM (dynamic range
//! 0x0080–0x00FF) and announces it in the read-only characteristic [`PSM_UUID`] of the
//! interconnect service (two bytes, little-endian), the way iOS announces a published
//! channel; a phone reads it after discovery and opens the channel, or uses GATT when the
//! characteristic is absent or the open fails. When the channel ends, the connection is
//! ended too, and the next connection opens a new channel.
//!
//! ## From a phone app
//! Both platforms hand the app the channel as a pair of byte streams, which is why the
//! receiver here reads a stream: write each frame's bytes to the output stream, and split
//! the input stream into frames by their header (6 bytes: version, kind, flags, payload
//! length as `u24` LE; the frame is that length plus 10), exactly as over TCP.
//!
//! - **Android** (API 29+): after GATT discovery, read characteristic `6e1c0004-…` for
//!   the PSM, then `BluetoothDevice.createInsecureL2capChannel(psm)` (the session brings
//!   its own encryption; `createL2capChannel` demands a bonded, encrypted link) and
//!   `BluetoothSocket.connect()` off the main thread. Keep the GATT connection open while
//!   the channel is in use.
//! - **iOS** (11+): after discovery, read the PSM the same way, then
//!   `CBPeripheral.openL2CAPChannel(psm)`; `peripheral(_:didOpen:error:)` hands over a
//!   `CBL2CAPChannel`, whose `inputStream` and `outputStream` must be scheduled on a run
//!   loop and opened. An output stream takes what it has room for: keep the rest of a
//!   frame until `hasSpaceAvailable`.
//!
//! The watch's stack needs LE credit-based channels (a Bluetooth 4.1+ host; the
//! controller is not involved beyond ACL data), a registered dynamic PSM, room to queue
//! the initial credits it grants (64 K-frames here), and a buffer per channel for the SDU
//! limit it announces (1018 bytes on trouble-host, one packet-pool buffer).
//!
//! ## Traps
//! - **An open that is never answered.** Reported with iOS: the open neither succeeds nor
//!   fails. The phone waits 5 s, then uses GATT on the same connection; a phone app
//!   should do the same.
//! - **A channel that ended on a live connection.** Some stacks cannot open the same PSM
//!   again on that connection. Here the end of the channel ends the connection, so every
//!   connection starts with a fresh open.
//! - **Receive credits of 1.** A receiver that grants one credit at a time lets the
//!   sender put one K-frame in flight per round trip, and throughput collapses. Both
//!   sides here grant 64 at the open and give them back 16 at a time.

use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use interconnect::{Link, LinkReceiver, LinkSender, Radio, TransportError};
use interconnect_proto::{FrameHeader, HEADER_LEN};

use crate::link::{BleConfig, PacketReceiver};

/// The characteristic that announces the watch's L2CAP PSM: read, two bytes little-endian.
pub const PSM_UUID: u128 = 0x6e1c0004_4e0b_4b7a_9a0b_1f4c3d2e5a60;

/// The LE PSM a watch listens on unless told otherwise (dynamic range; announced in
/// [`PSM_UUID`], so a phone never assumes it).
pub const DEFAULT_PSM: u16 = 0x0085;

/// Sends whole SDUs on a credit-based channel (the stack segments them and waits for
/// credits).
#[async_trait]
pub trait SduSender: Send + 'static {
    /// Sends one SDU of at most [`sdu_len`](Self::sdu_len) bytes.
    async fn send_sdu(&mut self, sdu: Bytes) -> Result<(), TransportError>;
    /// The largest SDU the peer takes (its MTU for the channel).
    fn sdu_len(&self) -> usize;
    /// What the radio runs with, as far as the stack says.
    fn radio(&self) -> Radio;
}

/// Both halves of a credit-based channel. The receiver yields whole SDUs.
pub struct SduLink {
    /// Sends SDUs to the peer.
    pub sender: Box<dyn SduSender>,
    /// Receives the peer's SDUs.
    pub receiver: Box<dyn PacketReceiver>,
}

/// Turns a credit-based channel into an interconnect link. Dropping either half drops
/// that half of the channel, which a backend takes as the end of the connection.
pub fn into_link(sdus: SduLink, config: &BleConfig) -> Link {
    let sdu_len = sdus.sender.sdu_len().max(1);
    let radio = sdus.sender.radio();
    Link {
        sender: Box::new(CocSender {
            sdus: sdus.sender,
            sdu_len,
        }),
        receiver: Box::new(CocReceiver {
            sdus: sdus.receiver,
            joining: BytesMut::new(),
            max_frame_len: config.max_frame_len,
            stall_timeout: config.stall_timeout,
            radio,
        }),
        source: None,
        max_frame_len: config
            .max_frame_len
            .max(interconnect_proto::MIN_MAX_FRAME_LEN),
    }
}

struct CocSender {
    sdus: Box<dyn SduSender>,
    sdu_len: usize,
}

#[async_trait]
impl LinkSender for CocSender {
    async fn send(&mut self, frame: Bytes) -> Result<(), TransportError> {
        if frame.len() <= self.sdu_len {
            return self.sdus.send_sdu(frame).await;
        }
        let mut rest = frame;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(self.sdu_len));
            self.sdus.send_sdu(piece).await?;
        }
        Ok(())
    }
}

struct CocReceiver {
    sdus: Box<dyn PacketReceiver>,
    /// Bytes received and not yet given out as frames: at most one frame and one SDU.
    joining: BytesMut,
    max_frame_len: usize,
    stall_timeout: Duration,
    radio: Radio,
}

impl CocReceiver {
    /// The whole frame at the front of `joining`, if it is there.
    fn joined(&mut self) -> Result<Option<Bytes>, TransportError> {
        if self.joining.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = FrameHeader::parse(&self.joining, self.max_frame_len)
            .map_err(TransportError::Framing)?;
        if self.joining.len() < header.frame_len() {
            return Ok(None);
        }
        Ok(Some(self.joining.split_to(header.frame_len()).freeze()))
    }

    /// The next SDU; a frame begun and not finished within the stall timeout fails.
    async fn next_sdu(&mut self) -> Result<Bytes, TransportError> {
        let next = if self.joining.is_empty() {
            self.sdus.recv_packet().await
        } else {
            tokio::time::timeout(self.stall_timeout, self.sdus.recv_packet())
                .await
                .map_err(|_| {
                    TransportError::Packet(Box::new(crate::packet::PacketError::Stalled))
                })?
        };
        next?.ok_or(TransportError::Closed)
    }
}

#[async_trait]
impl LinkReceiver for CocReceiver {
    async fn recv(&mut self) -> Result<Option<BytesMut>, TransportError> {
        loop {
            if let Some(frame) = self.joined()? {
                return Ok(Some(BytesMut::from(frame)));
            }
            let sdu = self.next_sdu().await?;
            if self.joining.is_empty()
                && let Ok(header) = FrameHeader::parse(&sdu, self.max_frame_len)
                && header.frame_len() == sdu.len()
            {
                // The usual case: one frame, whole, in one SDU.
                return Ok(Some(BytesMut::from(sdu)));
            }
            self.joining.extend_from_slice(&sdu);
        }
    }

    fn radio(&self) -> Option<Radio> {
        Some(self.radio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// A channel in memory: what one side sends as SDUs, the other receives.
    struct Sdus {
        tx: mpsc::Sender<Bytes>,
        sdu_len: usize,
    }

    #[async_trait]
    impl SduSender for Sdus {
        async fn send_sdu(&mut self, sdu: Bytes) -> Result<(), TransportError> {
            assert!(sdu.len() <= self.sdu_len, "an SDU over the limit");
            self.tx.send(sdu).await.map_err(|_| TransportError::Closed)
        }
        fn sdu_len(&self) -> usize {
            self.sdu_len
        }
        fn radio(&self) -> Radio {
            Radio::new(23)
        }
    }

    struct SdusIn(mpsc::Receiver<Bytes>);

    #[async_trait]
    impl PacketReceiver for SdusIn {
        async fn recv_packet(&mut self) -> Result<Option<Bytes>, TransportError> {
            Ok(self.0.recv().await)
        }
    }

    /// A link whose SDUs the test sees (`sent`) and makes (`inject`).
    fn pair(sdu_len: usize) -> (Link, mpsc::Receiver<Bytes>, mpsc::Sender<Bytes>) {
        let (tx, sent) = mpsc::channel(1024);
        let (inject, rx) = mpsc::channel(1024);
        let link = into_link(
            SduLink {
                sender: Box::new(Sdus { tx, sdu_len }),
                receiver: Box::new(SdusIn(rx)),
            },
            &BleConfig::default(),
        );
        (link, sent, inject)
    }

    fn frame(len: usize) -> Bytes {
        let payload = len - interconnect_proto::FRAME_OVERHEAD;
        let mut frame = vec![
            interconnect_proto::FORMAT_VERSION,
            interconnect_proto::Kind::Data as u8,
            0,
            payload as u8,
            (payload >> 8) as u8,
            (payload >> 16) as u8,
        ];
        frame.extend((0..len - HEADER_LEN).map(|i| (i * 13) as u8));
        Bytes::from(frame)
    }

    #[tokio::test]
    async fn a_frame_goes_whole_and_is_cut_only_past_the_limit() {
        let (mut link, mut sent, inject) = pair(100);
        for len in [10, 100, 101, 250, 64 * 1024] {
            let frame = frame(len);
            link.sender.send(frame.clone()).await.unwrap();
            let mut pieces = Vec::new();
            while let Ok(sdu) = sent.try_recv() {
                pieces.push(sdu);
            }
            assert_eq!(pieces.len(), len.div_ceil(100), "{len} bytes");
            for piece in pieces {
                inject.send(piece).await.unwrap();
            }
            assert_eq!(link.receiver.recv().await.unwrap().unwrap(), frame);
        }
    }

    /// A peer that writes a byte stream (iOS, Android) cuts SDUs anywhere: frames split
    /// across SDUs and several in one come out the same.
    #[tokio::test]
    async fn sdus_cut_anywhere_give_the_same_frames() {
        let frames: Vec<Bytes> = [10, 11, 500, 12, 64 * 1024, 13].map(frame).into();
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        for cut in [1, 7, 100, 1018, stream.len()] {
            let (mut link, _sent, inject) = pair(100);
            let sender = tokio::spawn({
                let stream = stream.clone();
                async move {
                    for piece in stream.chunks(cut) {
                        inject.send(Bytes::copy_from_slice(piece)).await.unwrap();
                    }
                    inject
                }
            });
            for expected in &frames {
                let got = link.receiver.recv().await.unwrap().unwrap();
                assert_eq!(&got, expected, "SDUs of {cut} bytes");
            }
            drop(sender.await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_bad_header_fails_the_link() {
        let (mut other, _sent, inject) = pair(100);
        inject.send(Bytes::from_static(&[9; 20])).await.unwrap();
        assert!(matches!(
            other.receiver.recv().await,
            Err(TransportError::Framing(_))
        ));
    }

    proptest::proptest! {
        /// Whatever a hostile peer sends, cut anyhow: the receiver never panics and gives
        /// out only frames that parse whole, then fails or ends.
        #[test]
        fn any_bytes_cut_anyhow_give_only_whole_frames(
            sdus in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..40),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
            runtime.block_on(async {
                let (mut link, _sent, inject) = pair(100);
                for sdu in &sdus {
                    inject.send(Bytes::copy_from_slice(sdu)).await.unwrap();
                }
                drop(inject);
                while let Ok(Some(frame)) = link.receiver.recv().await {
                    let header = FrameHeader::parse(&frame, BleConfig::default().max_frame_len);
                    proptest::prop_assert!(header.is_ok_and(|h| h.frame_len() == frame.len()));
                }
                Ok(())
            })?;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_whose_pieces_stop_fails_after_the_stall_timeout() {
        let (mut link, _sent, inject) = pair(100);
        inject.send(frame(300).slice(..100)).await.unwrap();
        let failed = link.receiver.recv().await;
        assert!(
            matches!(failed, Err(TransportError::Packet(_))),
            "{failed:?}"
        );
        drop(inject);
    }
}
