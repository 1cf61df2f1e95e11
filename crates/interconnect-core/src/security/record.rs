//! The record layer of a secure link: sealing and opening frames with explicit
//! nonces, epochs and rekeying, once the Noise handshake (`noise`) produced the keys.
//! Kept apart from the handshake as rustls keeps its record layer.

#[allow(unused_imports)]
use crate::prelude::*;

use bytes::{BufMut, Bytes, BytesMut};
use interconnect_proto::{
    EncodeError, Layout, SEALED_HEADROOM, SEALED_SEGMENT_LEN, SEALED_SEGMENT_PLAINTEXT,
    SEALED_TAG_LEN, SealedForm, SealedMut, encode_sealed, encode_sealed_in_place,
    sealed_ciphertext_len, sealed_segments,
};

use super::transport_key::{AeadError, TransportKey};
use super::{MIN_REKEY_INTERVAL, SecurityError};

/// Most epochs a received nonce may skip (frames of whole epochs lost); beyond it the
/// frame is treated as forged instead of rekeying without bound.
pub(crate) const MAX_EPOCH_SKIP: u64 = 16;

/// Length of a segment's associated data.
pub(crate) const SEGMENT_AD_LEN: usize = 16;

/// The associated data of segment `index` of a sealed frame of `segments` segments whose
/// first nonce is `first`: `first` (u64), `segments` (u32), `index` (u32), little-endian.
/// It binds each segment to its place in its own frame, so no run of segments opens as
/// a frame of its own and no two frames merge into one.
pub(crate) fn segment_ad(first: u64, segments: u32, index: u32) -> [u8; SEGMENT_AD_LEN] {
    let mut ad = [0u8; SEGMENT_AD_LEN];
    ad[..8].copy_from_slice(&first.to_le_bytes());
    ad[8..12].copy_from_slice(&segments.to_le_bytes());
    ad[12..].copy_from_slice(&index.to_le_bytes());
    ad
}

/// The key of epoch `to`, from `key` at epoch `from`: `None` when it is `key` itself.
/// Nothing is committed, so a frame that fails leaves the keys as they were. Boxed: a
/// key schedule is large, and the common `None` then moves as a null pointer instead
/// of a copy of the key's size on every frame.
fn key_at(key: &TransportKey, from: u64, to: u64) -> Option<Box<TransportKey>> {
    let mut next: Option<Box<TransportKey>> = None;
    for _ in from..to {
        next = Some(Box::new(next.as_deref().unwrap_or(key).rekeyed()));
    }
    next
}

/// Sealing and opening with explicit nonces and epoch rekeying.
pub(crate) struct Cipher {
    send: TransportKey,
    recv: TransportKey,
    interval: u64,
    send_next: u64,
    send_epoch: u64,
    recv_next: u64,
    recv_epoch: u64,
    /// A frame failed authentication: open nothing more.
    broken: bool,
}

impl Cipher {
    /// Tests: the send and receive epochs.
    #[cfg(test)]
    pub(crate) fn epochs(&self) -> (u64, u64) {
        (self.send_epoch, self.recv_epoch)
    }

    pub(crate) fn new(send: TransportKey, recv: TransportKey, interval: u64) -> Self {
        Cipher {
            send,
            recv,
            interval: interval.max(u64::from(MIN_REKEY_INTERVAL)),
            send_next: 0,
            send_epoch: 0,
            recv_next: 0,
            recv_epoch: 0,
            broken: false,
        }
    }

    /// The nonces of a frame of `segments` segments: its first, the next after it, and
    /// its epoch. A frame never straddles epochs: one that would starts the next.
    fn nonces(&self, segments: usize) -> Result<(u64, u64, u64), SecurityError> {
        let segments = segments as u64;
        let mut first = self.send_next;
        if segments > 1 && first / self.interval != (first + segments - 1) / self.interval {
            first = (first / self.interval + 1) * self.interval;
        }
        let Some(next) = first.checked_add(segments).filter(|n| *n < u64::MAX / 2) else {
            return Err(SecurityError::Handshake("nonces exhausted".into()));
        };
        Ok((first, next, first / self.interval))
    }

    /// Seals the plaintext `head` ‖ `bulk`, segment by segment, each copied once into
    /// `dst` and encrypted there, its tag after it or, laid out with tags last, after
    /// them all. The nonce and epoch advance only when it succeeded.
    pub(crate) fn seal(
        &mut self,
        head: &[u8],
        bulk: &[u8],
        max_frame_len: usize,
        form: SealedForm,
        dst: &mut BytesMut,
    ) -> Result<(), SecurityError> {
        let plain_len = head.len() + bulk.len();
        let segments = sealed_segments(plain_len);
        let count = u32::try_from(segments)
            .map_err(|_| SecurityError::Handshake("frame too large to seal".into()))?;
        let (first, next, epoch) = self.nonces(segments)?;
        let rekeyed = key_at(&self.send, self.send_epoch, epoch);
        let key = rekeyed.as_deref().unwrap_or(&self.send);
        let ct_len = sealed_ciphertext_len(plain_len);
        let sealed = encode_sealed(max_frame_len, dst, first, ct_len, form, |buf| {
            if form.layout == Layout::TagsLast {
                // The whole plaintext and room for the tags, then sealed where it lies.
                let at = buf.len();
                buf.extend_from_slice(head);
                buf.extend_from_slice(bulk);
                buf.put_bytes(0, segments * SEALED_TAG_LEN);
                let (plain, tags) = buf[at..].split_at_mut(plain_len);
                return seal_tags_last(key, first, count, plain, tags);
            }
            let (mut head, mut bulk) = (head, bulk);
            for i in 0..count {
                let start = buf.len();
                let mut want = SEALED_SEGMENT_PLAINTEXT.min(head.len() + bulk.len());
                let from_head = want.min(head.len());
                buf.extend_from_slice(&head[..from_head]);
                head = &head[from_head..];
                want -= from_head;
                buf.extend_from_slice(&bulk[..want]);
                bulk = &bulk[want..];
                let ad = segment_ad(first, count, i);
                let tag = key.seal_in_place(first + u64::from(i), &ad, &mut buf[start..])?;
                buf.extend_from_slice(tag.as_ref());
            }
            Ok::<(), AeadError>(())
        });
        self.sealed(sealed, rekeyed, epoch, next)
    }

    /// What sealing a frame did: on success the key, epoch and next nonce move on;
    /// otherwise nothing does.
    fn sealed<E>(
        &mut self,
        sealed: Result<Result<(), E>, EncodeError>,
        rekeyed: Option<Box<TransportKey>>,
        epoch: u64,
        next: u64,
    ) -> Result<(), SecurityError> {
        match sealed {
            Ok(Ok(())) => {
                if let Some(key) = rekeyed {
                    self.send = *key;
                    tracing::debug!(epoch, "sending key renewed");
                }
                self.send_epoch = epoch;
                self.send_next = next;
                Ok(())
            }
            Ok(Err(_)) => Err(SecurityError::Handshake("sealing failed".into())),
            Err(e) => Err(SecurityError::Handshake(format!("sealed frame: {e}"))),
        }
    }

    /// Seals, in place, the plaintext `buf` holds after
    /// [`SEALED_HEADROOM`](interconnect_proto::SEALED_HEADROOM) bytes of room (one
    /// segment at most, unless `form` puts the tags last), leaving the sealed frame in
    /// `buf`: the bytes [`seal`](Self::seal) writes, without copying the plaintext. The
    /// nonce and epoch advance only when it succeeded.
    pub(crate) fn seal_in_place(
        &mut self,
        buf: &mut BytesMut,
        max_frame_len: usize,
        form: SealedForm,
    ) -> Result<(), SecurityError> {
        let plain_len = buf.len().saturating_sub(SEALED_HEADROOM);
        let segments = match plain_len <= SEALED_SEGMENT_PLAINTEXT {
            true => 1,
            false => sealed_segments(plain_len),
        };
        let count = u32::try_from(segments)
            .map_err(|_| SecurityError::Handshake("frame too large to seal".into()))?;
        let (first, next, epoch) = self.nonces(segments)?;
        let rekeyed = key_at(&self.send, self.send_epoch, epoch);
        let key = rekeyed.as_deref().unwrap_or(&self.send);
        let sealed = encode_sealed_in_place(max_frame_len, buf, first, form, |plain, tags| {
            seal_tags_last(key, first, count, plain, tags)
        });
        self.sealed(sealed, rekeyed, epoch, next)
    }

    /// Opens a frame that may be anyone's (one that arrived before the keys): one that
    /// fails authentication is dropped without breaking the link.
    pub(crate) fn try_open(&mut self, sealed: SealedMut) -> Option<Bytes> {
        if self.broken {
            return None;
        }
        self.open_checked(sealed).ok().flatten()
    }

    pub(crate) fn open(&mut self, sealed: SealedMut) -> Result<Option<Bytes>, SecurityError> {
        if self.broken {
            return Err(SecurityError::BadSealedFrame);
        }
        let opened = self.open_checked(sealed);
        self.broken = opened.is_err();
        opened
    }

    /// Opens a frame where it lies, each segment's plaintext moved down over the tags
    /// before it (or, tags last, the tags split off) as it is decrypted.
    pub(crate) fn open_checked(
        &mut self,
        sealed: SealedMut,
    ) -> Result<Option<Bytes>, SecurityError> {
        if sealed.nonce < self.recv_next {
            return Ok(None);
        }
        let ct_len = sealed.ciphertext.len();
        let segments = ct_len.div_ceil(SEALED_SEGMENT_LEN).max(1) as u64;
        let count = u32::try_from(segments).map_err(|_| SecurityError::BadSealedFrame)?;
        let last_len = ct_len - (segments as usize - 1) * SEALED_SEGMENT_LEN;
        if last_len <= SEALED_TAG_LEN {
            return Err(SecurityError::BadSealedFrame);
        }
        let first = sealed.nonce;
        let epoch = first / self.interval;
        let last = first
            .checked_add(segments - 1)
            .ok_or(SecurityError::BadSealedFrame)?;
        if last / self.interval != epoch || epoch > self.recv_epoch + MAX_EPOCH_SKIP {
            return Err(SecurityError::BadSealedFrame);
        }
        let rekeyed = key_at(&self.recv, self.recv_epoch, epoch);
        let key = rekeyed.as_deref().unwrap_or(&self.recv);
        let mut buf = sealed.ciphertext;
        // A frame of one segment is the same bytes in either layout.
        if count > 1 && sealed.layout == Layout::TagsLast {
            open_tags_last(key, first, count, &mut buf)?;
        } else {
            let mut at = 0;
            for i in 0..count {
                let from = i as usize * SEALED_SEGMENT_LEN;
                let end = (from + SEALED_SEGMENT_LEN).min(buf.len());
                let ad = segment_ad(first, count, i);
                at += key
                    .open_within(first + u64::from(i), &ad, &mut buf[at..end], from - at)
                    .map_err(|_| SecurityError::BadSealedFrame)?;
            }
            buf.truncate(at);
        }
        if let Some(key) = rekeyed {
            self.recv = *key;
            tracing::debug!(epoch, "receiving key renewed");
        }
        self.recv_epoch = epoch;
        self.recv_next = last + 1;
        Ok(Some(buf.freeze()))
    }
}

/// Seals `plain` where it lies as `count` segments from nonce `first`, each segment's tag
/// written in turn into `tags` (their room after the plaintext: a frame of one segment
/// is then laid out as any frame of one segment is).
fn seal_tags_last(
    key: &TransportKey,
    first: u64,
    count: u32,
    plain: &mut [u8],
    tags: &mut [u8],
) -> Result<(), AeadError> {
    if count == 1 {
        // The common case (a batch of small frames), without the iterators.
        let tag = key.seal_in_place(first, &segment_ad(first, 1, 0), plain)?;
        tags.copy_from_slice(&tag);
        return Ok(());
    }
    let segments = plain.chunks_mut(SEALED_SEGMENT_PLAINTEXT);
    for ((i, segment), room) in (0..count)
        .zip(segments)
        .zip(tags.chunks_mut(SEALED_TAG_LEN))
    {
        let ad = segment_ad(first, count, i);
        let tag = key.seal_in_place(first + u64::from(i), &ad, segment)?;
        room.copy_from_slice(&tag);
    }
    Ok(())
}

/// Opens the `count` segments of a frame laid out with its tags last, each where it lies,
/// and leaves `buf` holding their plaintext.
fn open_tags_last(
    key: &TransportKey,
    first: u64,
    count: u32,
    buf: &mut BytesMut,
) -> Result<(), SecurityError> {
    let plain_len = buf.len() - count as usize * SEALED_TAG_LEN;
    let (plain, tags) = buf.split_at_mut(plain_len);
    let segments = plain.chunks_mut(SEALED_SEGMENT_PLAINTEXT);
    for ((i, segment), tag) in (0..count).zip(segments).zip(tags.chunks(SEALED_TAG_LEN)) {
        let ad = segment_ad(first, count, i);
        key.open_in_place(first + u64::from(i), &ad, segment, tag)
            .map_err(|_| SecurityError::BadSealedFrame)?;
    }
    buf.truncate(plain_len);
    Ok(())
}
