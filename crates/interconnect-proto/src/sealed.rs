//! Building [`Sealed`](crate::Sealed) frames without an intermediate copy, and their size;
//! and building any frame in the buffer its bulk bytes were read into.
//!
//! The encryption itself lives above this crate (it needs the session keys); this module
//! owns only the layout: the outer header, the nonce, room for the ciphertext that the
//! caller fills in place, and the CRC trailer.

use bytes::{Buf, BufMut, BytesMut};

use crate::checksum::crc32c;
use crate::error::EncodeError;
use crate::frame::{
    FLAG_NO_CRC, FLAG_TAGS_LAST, Frame, Layout, SEALED_SEGMENT_LEN, SEALED_TAG_LEN,
    header_bytes_flagged,
};
use crate::kind::Kind;
use crate::limits::{CRC_LEN, FRAME_OVERHEAD, HEADER_LEN, MAX_FRAME_LEN};

/// Largest plaintext of one sealed segment.
pub const SEALED_SEGMENT_PLAINTEXT: usize = SEALED_SEGMENT_LEN - SEALED_TAG_LEN;

/// Most bytes a postcard-encoded nonce takes.
const NONCE_MAX_LEN: usize = 10;

/// Room a plaintext sealed in place ([`encode_sealed_in_place`]) leaves in front of it:
/// the outer header and the longest nonce.
pub const SEALED_HEADROOM: usize = HEADER_LEN + NONCE_MAX_LEN;

/// How many AEAD segments a plaintext of `len` bytes needs (at least one).
pub const fn sealed_segments(len: usize) -> usize {
    if len == 0 {
        1
    } else {
        len.div_ceil(SEALED_SEGMENT_PLAINTEXT)
    }
}

/// Ciphertext length (tags included) for a plaintext of `len` bytes.
pub const fn sealed_ciphertext_len(len: usize) -> usize {
    len + sealed_segments(len) * SEALED_TAG_LEN
}

/// The largest frame length (counted as if sent in the clear, CRC included) whose
/// sealed form fits in `max_frame_len` bytes, whatever its nonce. A secure session
/// announces this as its frame limit.
pub const fn max_unsealed_len(max_frame_len: usize) -> usize {
    let room = max_frame_len.saturating_sub(FRAME_OVERHEAD + NONCE_MAX_LEN);
    room.saturating_sub(sealed_segments(room) * SEALED_TAG_LEN) + CRC_LEN
}

impl Frame {
    /// Appends the frame as it travels inside a sealed frame: header and payload, without
    /// the CRC trailer. `max_frame_len` counts the frame as if sent in the clear.
    pub fn encode_unsealed(
        &self,
        max_frame_len: usize,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if matches!(self, Frame::Handshake(_) | Frame::Sealed(_)) {
            return Err(EncodeError::InvalidField(
                "a sealed frame may not hold this kind",
            ));
        }
        self.encode_without_crc(max_frame_len, dst)
    }

    /// Like [`encode_unsealed`](Self::encode_unsealed), but appends only the part before
    /// the bulk bytes and returns those, which follow it in the plaintext: a sealer reads
    /// them in place rather than from a copy.
    pub fn encode_unsealed_head(
        &self,
        max_frame_len: usize,
        dst: &mut BytesMut,
    ) -> Result<&[u8], EncodeError> {
        if matches!(self, Frame::Handshake(_) | Frame::Sealed(_)) {
            return Err(EncodeError::InvalidField(
                "a sealed frame may not hold this kind",
            ));
        }
        self.encode_head(max_frame_len, dst)
    }
}

/// What goes before a sealed frame's ciphertext: its nonce, encoded, and the payload
/// length, checked against the frame limit.
struct SealedHead {
    nonce: [u8; NONCE_MAX_LEN],
    nonce_len: usize,
    payload_len: usize,
}

impl SealedHead {
    fn new(max_frame_len: usize, nonce: u64, ciphertext_len: usize) -> Result<Self, EncodeError> {
        let mut buf = [0u8; NONCE_MAX_LEN];
        let nonce_len = postcard::to_slice(&nonce, &mut buf)
            .map_err(|_| EncodeError::Serialize)?
            .len();
        let head = SealedHead {
            nonce: buf,
            nonce_len,
            payload_len: nonce_len + ciphertext_len,
        };
        let max = max_frame_len.min(MAX_FRAME_LEN);
        if head.frame_len() > max {
            return Err(EncodeError::TooLarge {
                len: head.frame_len(),
                max,
            });
        }
        Ok(head)
    }

    fn nonce(&self) -> &[u8] {
        &self.nonce[..self.nonce_len]
    }

    /// The frame's length counted with a CRC trailer, as limits count it.
    fn frame_len(&self) -> usize {
        self.payload_len + FRAME_OVERHEAD
    }

    /// The frame's length as sent with `trailer`.
    fn len(&self, trailer: Trailer) -> usize {
        match trailer {
            Trailer::Crc => self.frame_len(),
            Trailer::None => self.frame_len() - CRC_LEN,
        }
    }
}

/// Whether a sealed frame ends with a CRC trailer: always, but to a peer that announced
/// [`Capabilities::NO_CRC`](crate::Capabilities::NO_CRC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trailer {
    /// The CRC-32C trailer every frame has, and the header's flags 0.
    Crc,
    /// No trailer, flagged [`FLAG_NO_CRC`](crate::FLAG_NO_CRC): the AEAD tags prove the
    /// bytes.
    None,
}

/// How a sealed frame is sent: what the peer announced it reads decides both parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedForm {
    /// With or without the CRC trailer.
    pub trailer: Trailer,
    /// Where the tags lie.
    pub layout: Layout,
}

impl SealedForm {
    /// The form every peer reads: a CRC trailer, each tag after its segment.
    pub const COMMON: SealedForm = SealedForm {
        trailer: Trailer::Crc,
        layout: Layout::Interleaved,
    };

    /// The form a peer that announced `peer` reads: without the CRC when it set
    /// [`NO_CRC`](crate::Capabilities::NO_CRC), with the tags last when it set
    /// [`TAGS_LAST`](crate::Capabilities::TAGS_LAST).
    pub const fn for_peer(peer: crate::Capabilities) -> SealedForm {
        SealedForm {
            trailer: match peer.contains(crate::Capabilities::NO_CRC) {
                true => Trailer::None,
                false => Trailer::Crc,
            },
            layout: match peer.contains(crate::Capabilities::TAGS_LAST) {
                true => Layout::TagsLast,
                false => Layout::Interleaved,
            },
        }
    }

    /// The header's flags for this form.
    fn flags(self) -> u8 {
        let crc = match self.trailer {
            Trailer::Crc => 0,
            Trailer::None => FLAG_NO_CRC,
        };
        let layout = match self.layout {
            Layout::Interleaved => 0,
            Layout::TagsLast => FLAG_TAGS_LAST,
        };
        crc | layout
    }
}

/// Appends a sealed frame with `ciphertext_len` bytes of ciphertext, which `fill` appends
/// to the buffer it is given (encrypting in place there, so nothing is zeroed or copied
/// twice) in the layout `form` names, and the trailer `form` names. Fails, leaving `dst`
/// as it was, when the frame would exceed `max_frame_len`, `fill` fails, or `fill`
/// appends another length than announced.
pub fn encode_sealed<E>(
    max_frame_len: usize,
    dst: &mut BytesMut,
    nonce: u64,
    ciphertext_len: usize,
    form: SealedForm,
    fill: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<Result<(), E>, EncodeError> {
    let start = dst.len();
    let head = SealedHead::new(max_frame_len, nonce, ciphertext_len)?;
    let frame_len = head.frame_len();
    dst.reserve(frame_len);
    dst.put_slice(&header_bytes_flagged(
        Kind::Sealed,
        form.flags(),
        head.payload_len,
    ));
    dst.put_slice(head.nonce());
    let at = dst.len();
    if let Err(e) = fill(dst) {
        dst.truncate(start);
        return Ok(Err(e));
    }
    if dst.len() - at != ciphertext_len {
        dst.truncate(start);
        return Err(EncodeError::InvalidField(
            "the ciphertext is not the announced length",
        ));
    }
    if form.trailer == Trailer::Crc {
        let crc = crc32c(&[&dst[start..]]);
        dst.put_u32_le(crc);
    }
    debug_assert_eq!(dst.len() - start, head.len(form.trailer));
    Ok(Ok(()))
}

/// Seals, in place, the plaintext that `buf` holds after [`SEALED_HEADROOM`] bytes of
/// room: the header and nonce go in the room, the tags after the plaintext (so `buf`
/// should have their room and the trailer's spare, or it grows), `seal` encrypts the
/// plaintext where it lies and writes one tag per segment into the slice it is given,
/// and `buf` ends up holding exactly the sealed frame in `form`, the same bytes
/// [`encode_sealed`] writes. A batch of small frames, or a file chunk read after room
/// for its headers, is thus built once and never copied. A plaintext of more than one
/// segment ([`SEALED_SEGMENT_PLAINTEXT`]) is sealed in place only with its tags last.
/// On failure `buf` holds nothing usable.
pub fn encode_sealed_in_place<E>(
    max_frame_len: usize,
    buf: &mut BytesMut,
    nonce: u64,
    form: SealedForm,
    seal: impl FnOnce(&mut [u8], &mut [u8]) -> Result<(), E>,
) -> Result<Result<(), E>, EncodeError> {
    let Some(plain_len) = buf.len().checked_sub(SEALED_HEADROOM) else {
        return Err(EncodeError::InvalidField("no room for the sealed header"));
    };
    if plain_len > SEALED_SEGMENT_PLAINTEXT && form.layout == Layout::Interleaved {
        return Err(EncodeError::InvalidField(
            "more than one segment to seal in place with interleaved tags",
        ));
    }
    // One segment, the common case, without a division.
    let tags_len = match plain_len <= SEALED_SEGMENT_PLAINTEXT {
        true => SEALED_TAG_LEN,
        false => sealed_segments(plain_len) * SEALED_TAG_LEN,
    };
    let head = SealedHead::new(max_frame_len, nonce, plain_len + tags_len)?;
    let start = SEALED_HEADROOM - HEADER_LEN - head.nonce().len();
    buf[start..start + HEADER_LEN].copy_from_slice(&header_bytes_flagged(
        Kind::Sealed,
        form.flags(),
        head.payload_len,
    ));
    buf[start + HEADER_LEN..SEALED_HEADROOM].copy_from_slice(head.nonce());
    buf.reserve(tags_len + CRC_LEN);
    match tags_len {
        SEALED_TAG_LEN => buf.put_slice(&[0; SEALED_TAG_LEN]),
        _ => buf.put_bytes(0, tags_len),
    }
    let (plain, tags) = buf[SEALED_HEADROOM..].split_at_mut(plain_len);
    if let Err(e) = seal(plain, tags) {
        return Ok(Err(e));
    }
    buf.advance(start);
    if form.trailer == Trailer::Crc {
        let crc = crc32c(&[&buf[..]]);
        buf.put_u32_le(crc);
    }
    debug_assert_eq!(buf.len(), head.len(form.trailer));
    Ok(Ok(()))
}

/// Puts a frame's `head` (what [`Frame::encode_unsealed_head`] appends) into the `room`
/// bytes that `buf` leaves free in front of the frame's bulk bytes, right before them,
/// and drops the rest of the room but `keep` bytes in front of the head (a sealed
/// header's, [`SEALED_HEADROOM`]). `buf` then holds those `keep` bytes, the head and the
/// bulk: a file chunk read after room for its header is framed without a copy.
pub fn place_head(
    buf: &mut BytesMut,
    room: usize,
    head: &[u8],
    keep: usize,
) -> Result<(), EncodeError> {
    let Some(start) = room.checked_sub(head.len() + keep) else {
        return Err(EncodeError::InvalidField("no room for the frame's head"));
    };
    if buf.len() < room {
        return Err(EncodeError::InvalidField("no room for the frame's head"));
    }
    buf[room - head.len()..room].copy_from_slice(head);
    buf.advance(start);
    Ok(())
}

/// Appends the CRC trailer to the frame without it that `buf` holds: `buf` then holds
/// what [`Frame::encode`] writes. The frame stays where it lies only when `buf` has
/// [`CRC_LEN`] bytes of spare capacity; otherwise it grows, and may move.
pub fn put_crc(buf: &mut BytesMut) {
    let crc = crc32c(&[&buf[..]]);
    buf.put_u32_le(crc);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame built after its bulk bytes where they lie has the bytes `encode` writes.
    #[test]
    fn a_frame_built_in_the_room_before_its_bytes_is_the_encoded_frame() {
        use crate::{ChannelId, FileChunk, TransferId};
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let frame = Frame::FileChunk(FileChunk {
            channel: ChannelId(3),
            transfer: TransferId(70_000),
            offset: 1 << 40,
            data: bytes::Bytes::from(data.clone()),
            digest: Some([9; 32]),
        });
        let mut expected = BytesMut::new();
        frame.encode(MAX_FRAME_LEN, &mut expected).unwrap();
        let mut head = BytesMut::new();
        frame
            .encode_unsealed_head(MAX_FRAME_LEN, &mut head)
            .unwrap();
        let room = 100;
        // Capacity for the trailer too, as the runtime's reads leave it: otherwise
        // `put_crc` grows the buffer, and whether the allocator moves it then depends
        // on what else the heap holds.
        let mut buf = BytesMut::with_capacity(room + data.len() + CRC_LEN);
        buf.put_bytes(0, room);
        buf.extend_from_slice(&data);
        let at = buf[room..].as_ptr();
        place_head(&mut buf, room, &head, 0).unwrap();
        put_crc(&mut buf);
        assert_eq!(buf, expected);
        assert_eq!(buf[head.len()..].as_ptr(), at, "the bytes did not move");
        // Kept room in front, for a sealed header.
        let mut buf = BytesMut::new();
        buf.put_bytes(0, room);
        buf.extend_from_slice(&data);
        place_head(&mut buf, room, &head, SEALED_HEADROOM).unwrap();
        assert_eq!(buf.len(), SEALED_HEADROOM + expected.len() - CRC_LEN);
        assert_eq!(buf[SEALED_HEADROOM..], expected[..expected.len() - CRC_LEN]);
        // Too little room: refused, nothing written.
        let mut short = BytesMut::from(&[0u8; 10][..]);
        assert!(place_head(&mut short, 10, &head, 0).is_err());
    }

    /// The forms with and without each flag.
    const FORMS: [SealedForm; 4] = [
        SealedForm::COMMON,
        SealedForm {
            trailer: Trailer::None,
            layout: Layout::Interleaved,
        },
        SealedForm {
            trailer: Trailer::Crc,
            layout: Layout::TagsLast,
        },
        SealedForm {
            trailer: Trailer::None,
            layout: Layout::TagsLast,
        },
    ];

    /// A stand-in cipher: XOR, and a tag of the segment's index and length (never all
    /// zeros, so a tag left unwritten shows).
    fn scramble(index: usize, segment: &mut [u8]) -> [u8; SEALED_TAG_LEN] {
        segment.iter_mut().for_each(|b| *b ^= 0x5a);
        let mut tag = [0xa0 ^ index as u8; SEALED_TAG_LEN];
        tag[1..9].copy_from_slice(&(segment.len() as u64).to_le_bytes());
        tag
    }

    /// The stand-in cipher over a whole plaintext, its tags written into `tags` (an
    /// empty plaintext is one empty segment).
    fn scramble_all(plain: &mut [u8], tags: &mut [u8]) -> Result<(), ()> {
        if plain.is_empty() {
            tags.copy_from_slice(&scramble(0, plain));
            return Ok(());
        }
        let segments = plain.chunks_mut(SEALED_SEGMENT_PLAINTEXT);
        for (i, (segment, tag)) in segments.zip(tags.chunks_mut(SEALED_TAG_LEN)).enumerate() {
            tag.copy_from_slice(&scramble(i, segment));
        }
        Ok(())
    }

    /// In place or not, a sealed frame has the same bytes: in either layout, and in place
    /// with several segments when its tags go last.
    #[test]
    fn sealing_in_place_writes_what_encode_sealed_writes() {
        let cases = [
            (0u64, 0usize),
            (5, 1),
            (300, 77),
            (u64::MAX / 3, 4000),
            (9, SEALED_SEGMENT_PLAINTEXT),
            (10, SEALED_SEGMENT_PLAINTEXT + 1),
            (1 << 20, 3 * SEALED_SEGMENT_PLAINTEXT + 17),
        ];
        for ((nonce, len), form) in cases
            .into_iter()
            .flat_map(|c| FORMS.into_iter().map(move |f| (c, f)))
        {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let segments = sealed_segments(len);
            let mut expected = BytesMut::new();
            encode_sealed(
                MAX_FRAME_LEN,
                &mut expected,
                nonce,
                sealed_ciphertext_len(len),
                form,
                |b| {
                    let mut tags = Vec::new();
                    for (i, part) in plain.chunks(SEALED_SEGMENT_PLAINTEXT).enumerate() {
                        let at = b.len();
                        b.extend_from_slice(part);
                        let tag = scramble(i, &mut b[at..]);
                        match form.layout {
                            Layout::Interleaved => b.extend_from_slice(&tag),
                            Layout::TagsLast => tags.extend_from_slice(&tag),
                        }
                    }
                    if len == 0 {
                        b.extend_from_slice(&scramble(0, &mut []));
                    }
                    b.extend_from_slice(&tags);
                    Ok::<_, ()>(())
                },
            )
            .unwrap()
            .unwrap();
            let mut buf = BytesMut::with_capacity(
                SEALED_HEADROOM + len + segments * SEALED_TAG_LEN + CRC_LEN,
            );
            buf.put_bytes(0, SEALED_HEADROOM);
            buf.extend_from_slice(&plain);
            let at = buf[SEALED_HEADROOM..].as_ptr();
            let in_place =
                encode_sealed_in_place(MAX_FRAME_LEN, &mut buf, nonce, form, scramble_all);
            if segments > 1 && form.layout == Layout::Interleaved {
                assert!(in_place.is_err(), "interleaved tags leave no room in place");
                continue;
            }
            in_place.unwrap().unwrap();
            assert_eq!(buf, expected, "nonce {nonce}, {len} bytes, {form:?}");
            let header = crate::FrameHeader::parse(&buf, MAX_FRAME_LEN).unwrap();
            let nonce_len = header.payload_len - sealed_ciphertext_len(len);
            assert_eq!(
                buf[HEADER_LEN + nonce_len..].as_ptr(),
                at,
                "the bytes did not move"
            );
            // Either form reads back as the same frame, its length told by its header.
            assert_eq!(header.frame_len(), buf.len());
            assert_eq!(header.has_crc(), form.trailer == Trailer::Crc);
            let Ok(Frame::Sealed(sealed)) = Frame::decode(buf.freeze(), MAX_FRAME_LEN) else {
                panic!("not a sealed frame");
            };
            assert_eq!(sealed.nonce, nonce);
            assert_eq!(sealed.layout, form.layout);
            assert_eq!(sealed.ciphertext.len(), sealed_ciphertext_len(len));
        }
    }

    /// Only a sealed frame may go without its CRC or with its tags last; on any other
    /// kind those flags are unknown ones, as is any other flag on a sealed frame.
    #[test]
    fn only_a_sealed_frame_goes_without_its_crc() {
        let ping = Frame::Ping(crate::Ping { nonce: 42 });
        let mut bytes = BytesMut::new();
        ping.encode(MAX_FRAME_LEN, &mut bytes).unwrap();
        let mut tags_last = bytes.clone();
        tags_last[2] = FLAG_TAGS_LAST;
        assert_eq!(
            Frame::decode(tags_last.freeze(), MAX_FRAME_LEN),
            Err(crate::DecodeError::UnknownFlags(FLAG_TAGS_LAST))
        );
        bytes[2] = FLAG_NO_CRC;
        bytes.truncate(bytes.len() - CRC_LEN);
        assert_eq!(
            Frame::decode(bytes.freeze(), MAX_FRAME_LEN),
            Err(crate::DecodeError::UnknownFlags(FLAG_NO_CRC))
        );
        let bare = SealedForm {
            trailer: Trailer::None,
            layout: Layout::Interleaved,
        };
        let mut sealed = BytesMut::new();
        encode_sealed(MAX_FRAME_LEN, &mut sealed, 1, 20, bare, |b| {
            b.put_bytes(7, 20);
            Ok::<_, ()>(())
        })
        .unwrap()
        .unwrap();
        for flags in [0x04, 0x05, 0x80] {
            let mut other = sealed.clone();
            other[2] = flags;
            assert_eq!(
                Frame::decode(other.freeze(), MAX_FRAME_LEN),
                Err(crate::DecodeError::UnknownFlags(flags))
            );
        }
        // With the flag gone, the same bytes lack their trailer.
        let mut unflagged = sealed.clone();
        unflagged[2] = 0;
        assert!(Frame::decode(unflagged.freeze(), MAX_FRAME_LEN).is_err());
    }

    #[test]
    fn sealing_in_place_refuses_what_does_not_fit() {
        let form = SealedForm::COMMON;
        let mut short = BytesMut::from(&[0u8; 3][..]);
        assert!(encode_sealed_in_place(MAX_FRAME_LEN, &mut short, 1, form, scramble_all).is_err());
        let mut long = BytesMut::new();
        long.put_bytes(0, SEALED_HEADROOM + SEALED_SEGMENT_PLAINTEXT + 1);
        assert!(encode_sealed_in_place(MAX_FRAME_LEN, &mut long, 1, form, scramble_all).is_err());
        let mut big = BytesMut::new();
        big.put_bytes(0, SEALED_HEADROOM + 2000);
        assert!(matches!(
            encode_sealed_in_place(1024, &mut big, 1, form, scramble_all),
            Err(EncodeError::TooLarge { .. })
        ));
    }
}
