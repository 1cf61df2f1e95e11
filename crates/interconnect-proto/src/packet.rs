//! The BLE packet format: how a frame crosses the two GATT characteristics of
//! `transport-ble`, fragmented into ATT-payload-sized packets and reassembled. Here, in
//! the `no_std` crate, so a watch firmware shares it; `transport-ble` re-exports it.
//!
//! ```text
//!  bit  7 6 | 5 4 3 2 1 0
//!      kind |  sequence     then the packet body
//! ```
//!
//! One header byte per packet (the limit is two): `kind` 0 = data, the frame continues;
//! 1 = data, last piece of the frame; 2 = credit grant (body: one byte, the number of
//! packets granted; each side may send 32 data packets before the first, and a receiver
//! may grant at any time, the moment the link is up too); 3 is reserved. `sequence` counts data packets modulo 64 per
//! direction, so a lost or reordered packet is detected at once. A frame's length is in
//! its own header (its first 6 bytes), so reassembly checks it against the maximum as
//! soon as those bytes are in, before buffering the rest.

use alloc::vec::Vec;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{FrameHeader, HEADER_LEN};

/// Bytes of header in every packet.
pub const PACKET_HEADER_LEN: usize = 1;
/// Smallest ATT MTU (Bluetooth Core 5.x, Vol 3, Part F, 3.2.8).
pub const MIN_ATT_MTU: usize = 23;
/// Largest ATT MTU worth negotiating: an attribute value is at most 512 bytes, and a
/// write or notification puts 3 bytes of ATT header in front of it (515; stacks ask for
/// 517, the largest a Bluetooth 5 host uses). A larger MTU carries nothing more.
pub const MAX_ATT_MTU: usize = 517;
/// ATT opcode and handle in front of every write or notification payload.
pub const ATT_HEADER_LEN: usize = 3;
/// Largest attribute value (Core 5.x, Vol 3, Part F, 3.2.9): a GATT server drops a
/// longer write and a client cuts a longer notification, so no packet is longer.
pub const MAX_ATTRIBUTE_LEN: usize = 512;

const KIND_MORE: u8 = 0;
const KIND_END: u8 = 1;
const KIND_CREDIT: u8 = 2;

/// The largest packet (ATT payload) for an ATT MTU: `MTU − 3`, at most 512.
pub fn packet_len(att_mtu: usize) -> usize {
    (att_mtu.max(MIN_ATT_MTU) - ATT_HEADER_LEN).min(MAX_ATTRIBUTE_LEN)
}

/// Largest link-layer data PDU payload, with data length extension (Core 5.x, Vol 6,
/// Part B, 2.4.2.21).
pub const MAX_LL_PAYLOAD: usize = 251;

/// L2CAP header in front of every ATT PDU.
pub const L2CAP_HEADER_LEN: usize = 4;

/// The packet a sender uses at this ATT MTU: at most [`packet_len`], and, when a packet
/// takes more than one link-layer PDU, cut so that it fills whole PDUs of 251 bytes.
///
/// A 512-byte packet is 519 bytes with its L2CAP and ATT headers: two full PDUs and a
/// third of 17 bytes, which takes a PDU slot of its own on the air. 495 bytes fill two
/// exactly, and carry about 40% more per second at 2M PHY with DLE. A receiver takes any
/// packet up to [`packet_len`], so this is the sender's choice alone.
///
/// ```
/// use interconnect_proto::packet::{fill_len, packet_len};
/// assert_eq!(fill_len(247), 244); // one PDU: unchanged
/// assert_eq!(fill_len(517), 495); // two PDUs, not three
/// assert!((23..600).all(|mtu| fill_len(mtu) <= packet_len(mtu)));
/// ```
pub fn fill_len(att_mtu: usize) -> usize {
    let limit = packet_len(att_mtu);
    let on_air = limit + ATT_HEADER_LEN + L2CAP_HEADER_LEN;
    if on_air <= MAX_LL_PAYLOAD {
        return limit;
    }
    (on_air / MAX_LL_PAYLOAD) * MAX_LL_PAYLOAD - ATT_HEADER_LEN - L2CAP_HEADER_LEN
}

/// A packet, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// A piece of a frame.
    Data {
        /// Sequence number modulo 64.
        seq: u8,
        /// Whether this piece ends the frame.
        last: bool,
        /// The bytes.
        body: Bytes,
    },
    /// The peer may send this many more data packets.
    Credit(u8),
}

impl Packet {
    /// Decodes a received packet.
    pub fn decode(mut packet: Bytes) -> Result<Packet, PacketError> {
        let Some(&head) = packet.first() else {
            return Err(PacketError::Empty);
        };
        let kind = head >> 6;
        let seq = head & 0x3f;
        let body = packet.split_off(1);
        match kind {
            KIND_MORE | KIND_END => Ok(Packet::Data {
                seq,
                last: kind == KIND_END,
                body,
            }),
            KIND_CREDIT => match body.first() {
                Some(&credits) if body.len() == 1 => Ok(Packet::Credit(credits)),
                _ => Err(PacketError::Malformed("a credit packet carries one byte")),
            },
            _ => Err(PacketError::Malformed("reserved packet kind")),
        }
    }

    /// Encodes a credit grant.
    pub fn credit(credits: u8) -> Bytes {
        Bytes::copy_from_slice(&[KIND_CREDIT << 6, credits])
    }
}

/// Why packets could not be reassembled. After any of these the link is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// A packet with no header byte.
    #[error("empty packet")]
    Empty,
    /// A data packet arrived out of sequence: one was lost or reordered.
    #[error("packet {got} arrived where {expected} was expected (lost or reordered)")]
    OutOfOrder {
        /// The sequence number expected.
        expected: u8,
        /// The one that arrived.
        got: u8,
    },
    /// The frame being reassembled is larger than the maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The frame length announced or reached.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The bytes do not form a frame header, or a packet is malformed.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// A frame started but did not finish in time.
    #[error("reassembly stalled")]
    Stalled,
    /// The peer sent more packets than it had credits for.
    #[error("the peer overran its credits")]
    Overrun,
}

/// Cuts frames into packets of at most `packet_len` bytes, numbering them.
#[derive(Debug)]
pub struct Fragmenter {
    next_seq: u8,
}

impl Default for Fragmenter {
    fn default() -> Self {
        Self::new()
    }
}

impl Fragmenter {
    /// Starts at sequence number 0.
    pub fn new() -> Self {
        Fragmenter { next_seq: 0 }
    }

    /// The packets of one frame, each at most `packet_len` bytes (≥ 2).
    pub fn fragment(&mut self, frame: &Bytes, packet_len: usize) -> Vec<Bytes> {
        let body_len = packet_len.max(PACKET_HEADER_LEN + 1) - PACKET_HEADER_LEN;
        let count = frame.len().div_ceil(body_len).max(1);
        let mut packets = Vec::with_capacity(count);
        for i in 0..count {
            let start = i * body_len;
            let end = (start + body_len).min(frame.len());
            let kind = if i + 1 == count { KIND_END } else { KIND_MORE };
            let mut packet = BytesMut::with_capacity(PACKET_HEADER_LEN + end - start);
            packet.put_u8((kind << 6) | self.next_seq);
            packet.put_slice(&frame[start..end]);
            self.next_seq = (self.next_seq + 1) & 0x3f;
            packets.push(packet.freeze());
        }
        packets
    }
}

/// Puts frames back together from data packets, bounded by the maximum frame length.
#[derive(Debug)]
pub struct Reassembler {
    expected_seq: u8,
    buf: BytesMut,
    max_frame_len: usize,
}

impl Reassembler {
    /// Accepts frames up to `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        Reassembler {
            expected_seq: 0,
            buf: BytesMut::new(),
            max_frame_len,
        }
    }

    /// Whether a frame is partly assembled (for the stall timer).
    pub fn in_progress(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Adds one data packet; returns the frame it completes, if any.
    pub fn push(&mut self, seq: u8, last: bool, body: &[u8]) -> Result<Option<Bytes>, PacketError> {
        if seq != self.expected_seq {
            return Err(PacketError::OutOfOrder {
                expected: self.expected_seq,
                got: seq,
            });
        }
        self.expected_seq = (self.expected_seq + 1) & 0x3f;
        let len = self.buf.len() + body.len();
        if len > self.max_frame_len {
            return Err(PacketError::TooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        self.buf.extend_from_slice(body);
        if self.buf.len() >= HEADER_LEN {
            let header =
                FrameHeader::parse(&self.buf, self.max_frame_len).map_err(|e| match e {
                    crate::DecodeError::TooLarge { len, max } => PacketError::TooLarge { len, max },
                    _ => PacketError::Malformed("the packets do not start with a frame header"),
                })?;
            let frame_len = header.frame_len();
            if self.buf.len() > frame_len || (last && self.buf.len() != frame_len) {
                return Err(PacketError::Malformed(
                    "the frame's pieces do not match its length",
                ));
            }
            if self.buf.capacity() < frame_len {
                self.buf.reserve(frame_len - self.buf.len());
            }
            if self.buf.len() == frame_len {
                if !last {
                    return Err(PacketError::Malformed("a complete frame not marked last"));
                }
                return Ok(Some(self.buf.split().freeze()));
            }
        } else if last {
            return Err(PacketError::Malformed("a frame shorter than its header"));
        }
        Ok(None)
    }
}

/// The check the `ble_reassembly` fuzz target runs (and the corpus replay test): packets
/// cut from `data` by its own length bytes go through decoding and reassembly; nothing may
/// panic, and every frame that comes out must be a whole, well-formed frame.
pub fn fuzz_reassembly(data: &[u8]) {
    let mut reassembler = Reassembler::new(4096);
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        match Packet::decode(Bytes::copy_from_slice(packet)) {
            Ok(Packet::Data { seq, last, body }) => match reassembler.push(seq, last, &body) {
                Ok(Some(frame)) => {
                    let header =
                        FrameHeader::parse(&frame, 4096).expect("a whole frame has a valid header");
                    assert_eq!(header.frame_len(), frame.len(), "a frame comes out whole");
                }
                Ok(None) => {}
                Err(_) => return,
            },
            Ok(Packet::Credit(_)) => {}
            Err(_) => return,
        }
    }
}
