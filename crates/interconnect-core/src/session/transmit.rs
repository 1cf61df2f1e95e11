//! What goes out: the frame scheduler (control frames, acknowledgements, data, file
//! frames, in that order) that feeds `poll_transmit`, and sealed batches, built where
//! they are sealed.

#[allow(unused_imports)]
use crate::prelude::*;

use crate::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use interconnect_proto::{
    Ack, CRC_LEN, Frame, Layout, SEALED_HEADROOM, SEALED_SEGMENT_PLAINTEXT, SEALED_TAG_LEN,
    SealedForm, put_crc,
};

use super::{LinkState, Session, refusal};

use crate::channel::{Appended, Run};

/// Most plaintext bytes sealed in one batch: small frames queued together share one AEAD
/// call up to this size. Larger batches save little more and hold the first frame back
/// while the rest is encrypted.
const BATCH_LEN: usize = 16 * 1024;

/// Frames at least this long (file chunks, large messages) are encoded into an
/// allocation of their own rather than cut from the shared scratch buffer: the frame's
/// bytes then belong to it alone, so a receiver in the same process (the mock link) can
/// decrypt them where they lie, and nothing keeps a large buffer alive for a small frame.
pub(super) const OWN_BUFFER: usize = 16 * 1024;

/// What [`Session::next_of_run`] did.
enum RunNext {
    /// A data frame went into the run.
    Written,
    /// The next data frame would pass the run's limit.
    Full,
    /// This frame is next.
    Frame(Frame),
    /// Nothing is due.
    Done,
}

/// Least room a batch's buffer starts with: most control frames fit.
const SMALL_FRAME: usize = 256;

/// Room the scratch buffer takes at once for frames sent in the clear, each cut from it:
/// a stream of small frames then shares one allocation per block instead of making one
/// (and one more to share it) per frame.
const SCRATCH_BLOCK: usize = 4 * 1024;

impl Session {
    /// The next frame to put on the link, encoded: one frame, or on a
    /// [`stream_link`](crate::SessionConfig::stream_link) in plaintext a run of small
    /// frames back to back.
    ///
    /// A secure session fails closed: whatever state an error left it in, nothing leaves
    /// in the clear but handshake steps and, before keys exist, the fixed refusal.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        loop {
            if let Some(step) = self.secure.as_mut().and_then(|s| s.out.pop_front()) {
                match step.encode(self.wire_max, &mut self.scratch) {
                    Ok(()) => return Some(self.scratch.split().freeze()),
                    Err(error) => tracing::warn!(%error, "handshake frame not sent"),
                }
                continue;
            }
            let frame = self.next_frame(now)?;
            let max = self.limits().max_frame_len;
            let frame = match &self.secure {
                None => frame,
                Some(secure) if secure.is_established() => {
                    match self.seal(frame, max, now) {
                        Ok(frame) => return Some(frame),
                        Err(error) => tracing::warn!(%error, "frame not sealed"),
                    }
                    continue;
                }
                Some(_) => match frame {
                    Frame::Error(report) => refusal(report.code),
                    other => {
                        tracing::debug!(kind = ?other.kind(), "no session keys: frame not sent");
                        continue;
                    }
                },
            };
            let frame = if self.in_room.is_some() {
                match self.build_in_room(frame, max, 0, usize::MAX) {
                    Ok(mut buf) => {
                        put_crc(&mut buf);
                        return Some(buf.freeze());
                    }
                    Err(frame) => frame,
                }
            } else {
                frame
            };
            let large = match &frame {
                Frame::FileChunk(chunk) => chunk.data.len() >= OWN_BUFFER,
                Frame::Data(data) => data.payload.len() >= OWN_BUFFER,
                _ => false,
            };
            let mut own = BytesMut::new();
            if !large && self.scratch.capacity() - self.scratch.len() < SMALL_FRAME {
                self.scratch.reserve(SCRATCH_BLOCK);
            }
            let dst = if large { &mut own } else { &mut self.scratch };
            match frame.encode(max, dst) {
                Ok(()) if large => return Some(own.freeze()),
                Ok(()) if self.config.stream_link => {
                    self.join_plain(now, max);
                    return Some(self.scratch.split().freeze());
                }
                Ok(()) => return Some(self.scratch.split().freeze()),
                Err(error) => tracing::warn!(%error, kind = ?frame.kind(), "frame not sent"),
            }
        }
    }

    /// Seals `first`, with the frames queued behind it when the peer opens batches and
    /// they fit in [`BATCH_LEN`]; the error says why it was not (for the log).
    ///
    /// The batch is built in `scratch` behind room for the sealed header and sealed
    /// where it lies, so its bytes are written once. Room is reserved by the size of the
    /// last batch (a batch that outgrows it grows once, to its limit): a stream of full
    /// batches grows no buffer while it is built, and a watch exchanging a few small
    /// frames holds no batch-sized one. Data frames are written straight from their
    /// channel's queue (`append_data`), and one that would not fit stays there; any other
    /// frame that would not fit goes back to the head of the control queue, its bulk
    /// bytes never copied. A frame too large to share a batch is sealed alone, its bulk
    /// bytes read in place.
    pub(super) fn seal(&mut self, first: Frame, max: usize, now: Instant) -> Result<Bytes, String> {
        let kind = first.kind();
        let form = self.sealed_form();
        // What may be sealed where it lies: one segment, or any length with tags last.
        let in_place = match form.layout {
            Layout::Interleaved => SEALED_SEGMENT_PLAINTEXT,
            Layout::TagsLast => usize::MAX,
        };
        // A file chunk read with room for its headers is sealed where it was read.
        let first = if self.in_room.is_some() {
            match self.build_in_room(first, max, SEALED_HEADROOM, in_place) {
                Ok(mut buf) => {
                    let secure = self.secure.as_mut().ok_or("no secure layer")?;
                    secure
                        .seal_in_place(&mut buf, self.wire_max, form)
                        .map_err(|e| format!("{kind:?}: {e}"))?;
                    return Ok(buf.freeze());
                }
                Err(frame) => frame,
            }
        } else {
            first
        };
        let room = match &self.link {
            LinkState::Up(up) if up.batch => up.limits.max_frame_len.saturating_sub(CRC_LEN),
            _ => 0,
        }
        .min(BATCH_LEN);
        let expected = self.batch_hint.min(room).max(SMALL_FRAME);
        let mut buf = core::mem::take(&mut self.scratch);
        buf.clear();
        buf.reserve(SEALED_HEADROOM + expected + SEALED_TAG_LEN + CRC_LEN);
        buf.put_bytes(0, SEALED_HEADROOM);
        let mut bulk = first
            .encode_unsealed_head(max, &mut buf)
            .map_err(|e| format!("{kind:?}: {e}"))?;
        let plain = |buf: &BytesMut| buf.len() - SEALED_HEADROOM;
        if plain(&buf) + bulk.len() < room {
            buf.extend_from_slice(bulk);
            bulk = &[];
            let limit = SEALED_HEADROOM + room;
            loop {
                // A batch that outgrew the room reserved for it grows once to its limit,
                // not by doublings that each copy what it holds.
                if buf.capacity() - buf.len() < SMALL_FRAME {
                    buf.reserve((limit + SEALED_TAG_LEN + CRC_LEN).saturating_sub(buf.len()));
                }
                let mut run = Run {
                    buf: &mut buf,
                    limit,
                    whole: false,
                };
                let next = match self.next_of_run(now, max, &mut run) {
                    RunNext::Written => continue,
                    RunNext::Full | RunNext::Done => break,
                    RunNext::Frame(next) => next,
                };
                let mark = buf.len();
                match next.encode_unsealed_head(max, &mut buf) {
                    Ok(tail) if plain(&buf) + tail.len() <= room => buf.extend_from_slice(tail),
                    Ok(_) => {
                        buf.truncate(mark);
                        self.control.push_front(next);
                        break;
                    }
                    Err(error) => tracing::warn!(%error, kind = ?next.kind(), "frame not sent"),
                }
            }
        }
        let secure = self.secure.as_mut().ok_or("no secure layer")?;
        if bulk.is_empty() && plain(&buf) <= in_place {
            self.batch_hint = plain(&buf);
            let sealed = secure.seal_in_place(&mut buf, self.wire_max, form);
            let frame = buf.split().freeze();
            self.scratch = buf;
            sealed.map_err(|e| format!("{kind:?}: {e}"))?;
            return Ok(frame);
        }
        // Bulk bytes of their own: the head moves aside and the bulk is read in place.
        self.plain.clear();
        self.plain.extend_from_slice(&buf[SEALED_HEADROOM..]);
        buf.clear();
        self.scratch = buf;
        if bulk.len() >= OWN_BUFFER {
            let mut own = BytesMut::new();
            secure
                .seal(&self.plain, bulk, self.wire_max, form, &mut own)
                .map_err(|e| format!("{kind:?}: {e}"))?;
            return Ok(own.freeze());
        }
        secure
            .seal(&self.plain, bulk, self.wire_max, form, &mut self.scratch)
            .map_err(|e| format!("{kind:?}: {e}"))?;
        Ok(self.scratch.split().freeze())
    }

    /// Stream links in plaintext: the frames queued behind the one at the start of
    /// `scratch` join it there, each whole with its CRC, up to [`BATCH_LEN`] bytes, so a
    /// run of small frames leaves as one buffer (the peer's reader cuts it by the
    /// headers). As in a sealed batch, data frames are written straight from their
    /// channel, and any other frame that would not fit (a file chunk never does) goes
    /// back to the head of the control queue.
    fn join_plain(&mut self, now: Instant, max: usize) {
        let limit = BATCH_LEN.min(max);
        let mut buf = core::mem::take(&mut self.scratch);
        while buf.len() < limit {
            if buf.capacity() - buf.len() < SMALL_FRAME {
                buf.reserve(limit.saturating_sub(buf.len()).max(SMALL_FRAME));
            }
            let mut run = Run {
                buf: &mut buf,
                limit,
                whole: true,
            };
            let next = match self.next_of_run(now, max, &mut run) {
                RunNext::Written => continue,
                RunNext::Full | RunNext::Done => break,
                RunNext::Frame(next) => next,
            };
            if matches!(next, Frame::FileChunk(_)) {
                self.control.push_front(next);
                break;
            }
            let mark = buf.len();
            match next.encode(max, &mut buf) {
                Ok(()) if buf.len() <= limit => {}
                Ok(()) => {
                    buf.truncate(mark);
                    self.control.push_front(next);
                    break;
                }
                Err(error) => tracing::warn!(%error, kind = ?next.kind(), "frame not sent"),
            }
        }
        self.scratch = buf;
    }

    /// The next frame of a run being built (a sealed batch, or plaintext frames joined),
    /// in [`next_frame`](Self::next_frame)'s order: control, acknowledgements, data,
    /// files. Data frames are written straight from their channel into the run while
    /// nothing else is due; any other frame is handed back to be written.
    fn next_of_run(&mut self, now: Instant, max: usize, run: &mut Run<'_>) -> RunNext {
        let next = match self.data_due() {
            true => match self.append_data(now, max, run) {
                Appended::Frame => return RunNext::Written,
                Appended::Full => return RunNext::Full,
                Appended::Nothing => self.next_file_frame(now),
            },
            false => self.next_frame(now),
        };
        next.map_or(RunNext::Done, RunNext::Frame)
    }

    /// How sealed frames go on this link: without the CRC, and with their tags last,
    /// once the peer's `Hello` said it reads them so (the AEAD tags prove the bytes; the
    /// plaintext is sealed where it lies); in the form every peer reads until then, and
    /// to a peer that did not.
    fn sealed_form(&self) -> SealedForm {
        match &self.link {
            LinkState::Up(up) => SealedForm::for_peer(up.capabilities),
            _ => SealedForm::COMMON,
        }
    }

    /// Whether the next frame [`next_frame`](Self::next_frame) would give is data, if
    /// any is ready: no farewell, control frame or acknowledgement comes first.
    fn data_due(&self) -> bool {
        !self.farewell
            && self.control.is_empty()
            && self.is_link_up()
            && !self.channels.values().any(|c| c.has_ack())
    }

    pub(super) fn next_frame(&mut self, now: Instant) -> Option<Frame> {
        if self.farewell {
            // Only the error report goes out on a link being dropped; the data and file
            // schedulers resend on the next link.
            while let Some(frame) = self.control.pop_front() {
                if matches!(frame, Frame::Error(_)) {
                    return Some(frame);
                }
            }
            return None;
        }
        if let Some(frame) = self.control.pop_front() {
            return Some(frame);
        }
        if !self.is_link_up() {
            return None;
        }
        if let Some(ch) = self.channels.values_mut().find(|c| c.has_ack())
            && let Some(seq) = ch.take_ack()
            && ch.is_open()
        {
            return Some(Frame::Ack(Ack {
                channel: ch.id,
                seq,
            }));
        }
        if let Some(frame) = self.next_data(now) {
            return Some(frame);
        }
        self.next_file_frame(now)
    }
}
