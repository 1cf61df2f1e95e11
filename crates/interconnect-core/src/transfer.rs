//! File transfer state, sans-IO: the sender's window of read-ahead chunks and the
//! receiver's expected offset. Reading and writing the files is the owner's job; the
//! session asks for it with events (`FileRead`, `FileData`) and is told the outcome.

#[allow(unused_imports)]
use crate::prelude::*;

use alloc::collections::VecDeque;
use core::time::Duration;

use crate::time::Instant;

use bytes::{Buf, Bytes};
use interconnect_proto::{
    CHUNK_HEADER_MAX_LEN, CRC_LEN, ChannelId, HEADER_LEN, SEALED_HEADROOM, SEALED_TAG_LEN,
    TransferId, sealed_segments,
};

/// Room a reader leaves in front of a chunk's bytes
/// ([`Session::file_read_with_room`](crate::sans_io::Session::file_read_with_room)): a
/// sealed header's and the chunk frame's own header's.
pub const FILE_READ_ROOM: usize = SEALED_HEADROOM + HEADER_LEN + CHUNK_HEADER_MAX_LEN;

/// Capacity a reader leaves after a chunk of `len` bytes: its sealed frame's tags (one
/// per segment, all after the bytes when the peer reads them so) and CRC trailer.
pub const fn file_read_tail(len: usize) -> usize {
    let frame = len.saturating_add(HEADER_LEN + CHUNK_HEADER_MAX_LEN);
    sealed_segments(frame)
        .saturating_mul(SEALED_TAG_LEN)
        .saturating_add(CRC_LEN)
}

/// Where an outgoing transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutState {
    /// The offer waits to be (re)sent when the channel is open.
    Queued,
    /// Offered; waiting for accept or cancel.
    Offered,
    /// Accepted; chunks flow.
    Sending,
}

/// Bytes read from a file: `buf[room..]`, after `room` bytes left free for the frame's
/// header ([`FILE_READ_ROOM`]), or none.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub(crate) buf: Bytes,
    pub(crate) room: usize,
}

impl Chunk {
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.room
    }

    /// The chunk's bytes from `at` on, without the room (a cut or a partial resend).
    fn from(mut self, at: usize) -> Chunk {
        self.buf.advance(self.room + at);
        Chunk {
            buf: self.buf,
            room: 0,
        }
    }
}

/// Reads end at multiples of this many bytes when a chunk is at least twice as long: so
/// every read starts at one, even after a resume at an odd offset, and a reader that
/// hashes each read as it comes feeds BLAKE3 whole aligned runs of its 1 KiB chunks,
/// eight of which it hashes at once.
pub(crate) const READ_ALIGN: u64 = 8 * 1024;

/// A file this side sends.
#[derive(Debug)]
pub(crate) struct OutgoingFile {
    pub(crate) channel: ChannelId,
    pub(crate) id: TransferId,
    pub(crate) name: String,
    pub(crate) size: u64,
    /// The source's modification time, as offered (see `FileOffer::modified`).
    pub(crate) modified: u64,
    /// The sending app's metadata, offered with every offer of it (empty: none).
    pub(crate) meta: Bytes,
    /// BLAKE3 of the whole file, known once the owner has read (and hashed) its end; it
    /// rides on the chunk that ends the file.
    digest: Option<[u8; 32]>,
    state: OutState,
    /// Every byte before this offset is acknowledged by the receiver.
    pub(crate) acked: u64,
    /// Next offset to put on the wire.
    pub(crate) next: u64,
    /// Chunks read and not sent yet, contiguous from `buf_start`. A chunk leaves when it
    /// is sent: a resend reads its bytes again, so a chunk read with room around it is
    /// the session's alone to seal where it lies.
    buf: VecDeque<Chunk>,
    buf_start: u64,
    /// Offset just past the last buffered byte (kept, not summed: it is read per chunk).
    buf_end: u64,
    /// End of the reads asked for so far.
    requested_end: u64,
    /// When the offer was last sent, or acks last made progress.
    pub(crate) last_progress: Option<Instant>,
    /// Highest offset ever put on the wire: acks beyond it are lies.
    sent_high: u64,
    /// Recent time between acknowledgements; on a slow link the retransmit timer waits
    /// at least twice this, so a chunk still on the air is not sent again.
    ack_gap: Duration,
}

impl OutgoingFile {
    pub(crate) fn state(&self) -> OutState {
        self.state
    }

    /// Whether every byte, the digest with the last, went out at least once: only then
    /// can the receiver have verified the file.
    pub(crate) fn all_sent(&self) -> bool {
        self.sent_high >= self.size
    }

    /// The offer went out (again): its answer is awaited from `now`.
    pub(crate) fn offered(&mut self, now: Instant) {
        self.state = OutState::Offered;
        self.last_progress = Some(now);
    }

    pub(crate) fn new(
        channel: ChannelId,
        id: TransferId,
        name: String,
        size: u64,
        modified: u64,
        meta: Bytes,
    ) -> Self {
        OutgoingFile {
            channel,
            id,
            name,
            size,
            modified,
            meta,
            digest: None,
            state: OutState::Queued,
            acked: 0,
            next: 0,
            buf: VecDeque::new(),
            buf_start: 0,
            buf_end: 0,
            requested_end: 0,
            last_progress: None,
            sent_high: 0,
            ack_gap: Duration::ZERO,
        }
    }

    /// The receiver starts (or resumes) at `offset`.
    pub(crate) fn on_accept(&mut self, now: Instant, offset: u64) {
        self.state = OutState::Sending;
        self.acked = offset;
        self.next = offset;
        self.sent_high = self.sent_high.max(offset);
        self.last_progress = Some(now);
        if offset < self.buf_start || offset > self.buf_end {
            self.rewind(offset);
        }
    }

    /// Sending goes back to `offset`, before the chunks in hand: they are dropped and
    /// the bytes from there read again (a read still under way is dropped on arrival).
    fn rewind(&mut self, offset: u64) {
        self.next = offset;
        if offset < self.buf_start || offset > self.buf_end {
            self.buf.clear();
            self.buf_start = offset;
            self.buf_end = offset;
            self.requested_end = offset;
        }
    }

    /// The next read to ask for, if the window has room.
    pub(crate) fn next_read(&mut self, window: u64, chunk_len: u64) -> Option<(u64, u64)> {
        if self.state != OutState::Sending {
            return None;
        }
        let start = self.requested_end.max(self.buf_end);
        if start >= self.size || start - self.acked >= window {
            return None;
        }
        let mut end = start.saturating_add(chunk_len).min(self.size);
        if chunk_len >= 2 * READ_ALIGN && end < self.size {
            end = (end / READ_ALIGN * READ_ALIGN).max(start + 1);
        }
        self.requested_end = end;
        Some((start, end - start))
    }

    /// A read completed, with the file's digest if the read reached its end. Accepted
    /// only if it continues the buffer (a read made stale by a rewind is dropped; the same
    /// bytes are asked for again).
    pub(crate) fn on_read(&mut self, offset: u64, chunk: Chunk, digest: Option<[u8; 32]>) {
        if digest.is_some() {
            self.digest = digest;
        }
        if offset == self.buf_end && chunk.len() > 0 {
            self.buf_end += chunk.len() as u64;
            self.buf.push_back(chunk);
            self.requested_end = self.requested_end.max(self.buf_end);
        }
    }

    /// The next chunk to transmit, if it is buffered and the window allows: its offset,
    /// its bytes, and the file's digest if it ends the file. The chunk leaves the buffer.
    /// A chunk read for a link of larger frames than `max_len` allows is cut to fit (in
    /// place, without a copy), as is one that an acknowledgement overtook.
    pub(crate) fn next_chunk(
        &mut self,
        window: u64,
        max_len: usize,
    ) -> Option<(u64, Chunk, Option<[u8; 32]>)> {
        if self.state != OutState::Sending || self.next - self.acked >= window {
            return None;
        }
        while let Some(front) = self.buf.front() {
            let end = self.buf_start + front.len() as u64;
            if end > self.next {
                break;
            }
            self.buf_start = end;
            self.buf.pop_front();
        }
        if self.buf_start > self.next {
            return None;
        }
        let mut chunk = self.buf.pop_front()?;
        let skip = usize::try_from(self.next - self.buf_start).ok()?;
        if skip > 0 {
            chunk = chunk.from(skip);
        }
        let max_len = max_len.max(1);
        if chunk.len() > max_len {
            // The pieces share the buffer: none has it alone to be framed in, so neither
            // keeps the room.
            let rest = chunk.clone().from(max_len);
            chunk = chunk.from(0);
            chunk.buf.truncate(max_len);
            self.buf.push_front(rest);
        }
        let at = self.next;
        self.next += chunk.len() as u64;
        self.buf_start = self.next;
        self.sent_high = self.sent_high.max(self.next);
        let digest = self.digest.filter(|_| self.next == self.size);
        Some((at, chunk, digest))
    }

    pub(crate) fn has_chunk(&self, window: u64) -> bool {
        self.state == OutState::Sending
            && self.next - self.acked < window
            && self.next < self.buf_end
    }

    /// A cumulative ack; `false` if it acknowledges bytes never sent.
    pub(crate) fn on_ack(&mut self, now: Instant, offset: u64) -> bool {
        if offset > self.sent_high || offset > self.size {
            return false;
        }
        if offset > self.acked {
            self.acked = offset;
            if let Some(previous) = self.last_progress {
                let gap = now.saturating_duration_since(previous);
                self.ack_gap = (self.ack_gap * 7 / 8).max(gap);
            }
            self.last_progress = Some(now);
            self.next = self.next.max(offset);
        }
        true
    }

    /// Link down or channel re-opening: offer again, the receiver says where to resume.
    pub(crate) fn requeue(&mut self) {
        self.state = OutState::Queued;
        self.rewind(self.acked);
        self.last_progress = None;
    }

    /// When to resend if nothing progresses: the offer while unanswered or while all
    /// bytes are acknowledged but no verdict came; the window while bytes are in flight.
    pub(crate) fn deadline(&self, rto: Duration) -> Option<Instant> {
        let waiting = match self.state {
            OutState::Queued => false,
            OutState::Offered => true,
            OutState::Sending => self.next > self.acked || self.acked == self.size,
        };
        if waiting {
            self.last_progress.map(|t| t + rto.max(self.ack_gap * 2))
        } else {
            None
        }
    }

    /// No progress for a while. Returns whether the offer must be sent again (the
    /// receiver answers a repeated offer with where it stands, or with its verdict);
    /// otherwise sending goes back to the last acknowledged byte.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> bool {
        self.last_progress = Some(now);
        match self.state {
            OutState::Sending if self.acked < self.size => {
                self.rewind(self.acked);
                false
            }
            OutState::Queued => false,
            _ => {
                self.state = OutState::Offered;
                true
            }
        }
    }
}

/// Where an incoming transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InState {
    /// Offered; the owner decides whether to accept.
    Deciding,
    /// Accepted; chunks arrive.
    Receiving,
    /// All bytes written; the owner verifies and stores the file.
    Verifying,
    /// Stored; kept to answer a repeated chunk or offer with the verdict.
    Complete,
}

/// A file this side receives.
#[derive(Debug)]
pub(crate) struct IncomingFile {
    pub(crate) channel: ChannelId,
    pub(crate) id: TransferId,
    pub(crate) size: u64,
    state: InState,
    /// Next offset expected on the wire.
    expected: u64,
    /// Bytes written by the owner (acknowledged to the sender).
    written: u64,
    /// An acknowledgement of `written` is due.
    ack_pending: bool,
}

/// What an arriving chunk means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkVerdict {
    /// The next bytes: hand them to the owner.
    Write,
    /// A repeat or a chunk after a gap: dropped, the current offset is acknowledged again.
    Ignore,
    /// Bytes beyond the offered size or far outside any window: the sender lies.
    Violation(&'static str),
}

impl IncomingFile {
    /// An offer of `size` bytes, waiting for the owner's decision.
    pub(crate) fn new(channel: ChannelId, id: TransferId, size: u64) -> Self {
        IncomingFile {
            channel,
            id,
            size,
            state: InState::Deciding,
            expected: 0,
            written: 0,
            ack_pending: false,
        }
    }

    pub(crate) fn state(&self) -> InState {
        self.state
    }

    /// Next offset expected on the wire.
    pub(crate) fn expected(&self) -> u64 {
        self.expected
    }

    /// Bytes the chunks in flight may still bring beyond what is written.
    pub(crate) fn unwritten(&self) -> u64 {
        self.expected.saturating_sub(self.written)
    }

    /// The owner accepted the offer, holding `offset` bytes already: where the sender
    /// starts (at most one byte short of the end, so the digest always arrives), or
    /// `None` if the offer was not waiting for a decision.
    pub(crate) fn accept(&mut self, offset: u64) -> Option<u64> {
        if self.state != InState::Deciding {
            return None;
        }
        let offset = offset.min(self.size.saturating_sub(1));
        self.state = if offset == self.size {
            InState::Verifying
        } else {
            InState::Receiving
        };
        self.expected = offset;
        self.written = offset;
        Some(offset)
    }

    /// The owner wrote up to `end`: acknowledged, and verified next if that is all of
    /// it. An `end` that goes back or past what arrived is ignored.
    pub(crate) fn on_written(&mut self, end: u64) {
        if end > self.written && end <= self.expected {
            self.written = end;
            self.ack_pending = true;
            if end == self.size {
                self.state = InState::Verifying;
            }
        }
    }

    /// The owner stored the file.
    pub(crate) fn on_stored(&mut self) {
        self.state = InState::Complete;
    }

    /// The link dropped: chunks in flight are gone, so the next offer is answered with
    /// what is written; no acknowledgement is due on the next link before that.
    pub(crate) fn on_link_down(&mut self) {
        self.ack_pending = false;
        if self.state == InState::Receiving {
            self.expected = self.expected.max(self.written);
        }
    }

    /// A chunk was ignored (a repeat, or after a gap): the written offset is
    /// acknowledged again while receiving, so the sender goes back to it.
    pub(crate) fn ack_again(&mut self) {
        self.ack_pending = self.state == InState::Receiving;
    }

    /// The acknowledgement due, if any: the offset written.
    pub(crate) fn take_ack(&mut self) -> Option<u64> {
        core::mem::take(&mut self.ack_pending).then_some(self.written)
    }

    pub(crate) fn has_ack(&self) -> bool {
        self.ack_pending
    }

    pub(crate) fn on_chunk(
        &mut self,
        offset: u64,
        len: u64,
        has_digest: bool,
        max_ahead: u64,
    ) -> ChunkVerdict {
        let Some(end) = offset.checked_add(len).filter(|end| *end <= self.size) else {
            return ChunkVerdict::Violation("the sender sent more bytes than it offered");
        };
        if has_digest != (end == self.size) {
            return ChunkVerdict::Violation(if has_digest {
                "a file digest on a chunk that does not end the file"
            } else {
                "the last chunk of a file carries no digest"
            });
        }
        if offset > self.expected.saturating_add(max_ahead) {
            return ChunkVerdict::Violation("a chunk at an offset far beyond the window");
        }
        if self.state != InState::Receiving || offset != self.expected || len == 0 {
            return ChunkVerdict::Ignore;
        }
        self.expected += len;
        ChunkVerdict::Write
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(size: u64) -> IncomingFile {
        IncomingFile::new(ChannelId(1), TransferId(2), size)
    }

    #[test]
    fn an_incoming_file_resumes_short_of_its_end_and_is_verified_once_written() {
        let mut file = incoming(100);
        assert_eq!(file.state(), InState::Deciding);
        assert_eq!(
            file.on_chunk(0, 10, false, 1000),
            ChunkVerdict::Ignore,
            "not accepted"
        );
        // Everything held already: resumed one byte short, so the digest still comes.
        assert_eq!(file.accept(100), Some(99));
        assert_eq!(file.accept(0), None, "decided once");
        assert_eq!(file.state(), InState::Receiving);
        assert_eq!(file.on_chunk(99, 1, true, 1000), ChunkVerdict::Write);
        file.on_written(100);
        assert_eq!(file.state(), InState::Verifying);
        assert_eq!(file.take_ack(), Some(100));
        file.on_stored();
        assert_eq!(file.state(), InState::Complete);
    }

    #[test]
    fn incoming_chunks_in_order_are_written_and_lies_are_violations() {
        let mut file = incoming(30);
        file.accept(0);
        assert_eq!(file.on_chunk(0, 10, false, 100), ChunkVerdict::Write);
        assert_eq!(
            file.on_chunk(0, 10, false, 100),
            ChunkVerdict::Ignore,
            "a repeat"
        );
        assert_eq!(
            file.on_chunk(20, 10, true, 100),
            ChunkVerdict::Ignore,
            "after a gap"
        );
        assert!(matches!(
            file.on_chunk(10, 30, false, 100),
            ChunkVerdict::Violation(_)
        ));
        assert!(matches!(
            file.on_chunk(10, 20, false, 100),
            ChunkVerdict::Violation(_)
        ));
        assert!(matches!(
            file.on_chunk(10, 10, true, 100),
            ChunkVerdict::Violation(_)
        ));
        // Written back or beyond what arrived: ignored.
        file.on_written(15);
        assert_eq!(file.take_ack(), None);
        file.on_written(10);
        assert_eq!(file.take_ack(), Some(10));
        assert_eq!(file.unwritten(), 0);
    }

    #[test]
    fn a_link_drop_takes_the_incoming_file_back_to_what_is_written() {
        let mut file = incoming(30);
        file.accept(0);
        file.on_chunk(0, 10, false, 100);
        file.on_chunk(10, 10, false, 100);
        file.on_written(10);
        file.on_link_down();
        assert_eq!(file.take_ack(), None, "no ack carried to the next link");
        assert_eq!(
            file.expected(),
            20,
            "the arrived bytes are still being written"
        );
        file.ack_again();
        assert_eq!(file.take_ack(), Some(10));
    }

    #[test]
    fn an_outgoing_file_sends_within_its_window_and_refuses_acks_of_unsent_bytes() {
        let mut file =
            OutgoingFile::new(ChannelId(1), TransferId(1), "f".into(), 30, 0, Bytes::new());
        assert_eq!(file.state(), OutState::Queued);
        file.offered(Instant::from_secs(1));
        assert_eq!(file.state(), OutState::Offered);
        file.on_accept(Instant::from_secs(2), 0);
        assert_eq!(file.next_read(20, 10), Some((0, 10)));
        assert_eq!(file.next_read(20, 10), Some((10, 10)));
        assert_eq!(
            file.next_read(20, 10),
            None,
            "read ahead only as far as the window"
        );
        file.on_read(0, plain(vec![1; 10]), None);
        file.on_read(10, plain(vec![2; 10]), None);
        assert_eq!(file.next_chunk(20, 1000).map(|c| c.0), Some(0));
        assert_eq!(file.next_chunk(20, 1000).map(|c| c.0), Some(10));
        assert!(!file.has_chunk(20));
        assert!(!file.on_ack(Instant::from_secs(3), 25), "bytes never sent");
        assert!(file.on_ack(Instant::from_secs(3), 20));
        assert_eq!(file.acked, 20);
    }

    #[test]
    fn a_chunk_read_for_larger_frames_is_cut_to_fit_the_link() {
        let mut file = sending(10, 0);
        assert_eq!(file.next_read(100, 10), Some((0, 10)));
        file.on_read(0, plain(b"0123456789".to_vec()), Some([9; 32]));
        let (at, chunk, digest) = file.next_chunk(100, 4).unwrap();
        assert_eq!((at, bytes(&chunk), digest), (0, &b"0123"[..], None));
        let (at, chunk, _) = file.next_chunk(100, 4).unwrap();
        assert_eq!((at, bytes(&chunk)), (4, &b"4567"[..]));
        let (at, chunk, digest) = file.next_chunk(100, 4).unwrap();
        assert_eq!((at, bytes(&chunk), digest), (8, &b"89"[..], Some([9; 32])));
        assert!(file.all_sent());
    }

    #[test]
    fn a_chunk_read_with_room_and_cut_to_fit_keeps_no_room() {
        let mut file = sending(10, 0);
        assert_eq!(file.next_read(100, 10), Some((0, 10)));
        let mut buf = vec![0; 3];
        buf.extend_from_slice(b"0123456789");
        file.on_read(
            0,
            Chunk {
                buf: Bytes::from(buf),
                room: 3,
            },
            None,
        );
        let (_, first, _) = file.next_chunk(100, 6).unwrap();
        assert_eq!((first.room, bytes(&first)), (0, &b"012345"[..]));
        let (_, rest, _) = file.next_chunk(100, 6).unwrap();
        assert_eq!((rest.room, bytes(&rest)), (0, &b"6789"[..]));
    }

    #[test]
    fn a_sent_chunk_leaves_and_a_resend_reads_its_bytes_again() {
        let mut file = sending(30, 0);
        for _ in 0..3 {
            let (offset, len) = file.next_read(100, 10).unwrap();
            let room = Chunk {
                buf: Bytes::from(vec![offset as u8; 4 + len as usize]),
                room: 4,
            };
            file.on_read(offset, room, None);
        }
        let (_, first, _) = file.next_chunk(100, 100).unwrap();
        assert_eq!(
            (first.room, first.len()),
            (4, 10),
            "the room travels with the chunk"
        );
        assert!(file.next_chunk(100, 100).is_some());
        assert_eq!(file.buf.len(), 1, "sent chunks are not kept");
        assert!(file.on_ack(Instant::from_secs(1), 10));
        // No progress: sending goes back to the acknowledged byte and reads it again.
        assert!(!file.on_timeout(Instant::from_secs(9)));
        assert_eq!(file.next, 10);
        assert!(
            file.next_chunk(100, 100).is_none(),
            "the bytes must be read again"
        );
        assert_eq!(file.next_read(100, 10), Some((10, 10)));
        file.on_read(20, plain(vec![0; 10]), None);
        assert!(
            file.next_chunk(100, 100).is_none(),
            "a stale read is dropped"
        );
        file.on_read(10, plain(vec![7; 10]), None);
        let (at, chunk, _) = file.next_chunk(100, 100).unwrap();
        assert_eq!((at, bytes(&chunk)), (10, &[7; 10][..]));
    }

    #[test]
    fn an_acknowledgement_inside_a_chunk_sends_the_rest_of_it() {
        let mut file = sending(20, 0);
        assert_eq!(file.next_read(100, 20), Some((0, 20)));
        file.on_read(0, plain((0..20).collect()), Some([1; 32]));
        file.next_chunk(100, 100).unwrap();
        // The link dropped; the receiver, resuming, holds 7 bytes; the chunk is read
        // again whole (a reader answers what it is asked) and only its rest goes out.
        file.requeue();
        file.on_accept(Instant::ZERO, 7);
        assert_eq!(file.next_read(100, 20), Some((7, 13)));
        file.on_read(7, plain((7..20).collect()), Some([1; 32]));
        assert!(file.on_ack(Instant::ZERO, 7));
        let (at, chunk, digest) = file.next_chunk(100, 100).unwrap();
        assert_eq!(
            (at, bytes(&chunk), digest),
            (7, &(7..20).collect::<Vec<u8>>()[..], Some([1; 32]))
        );
    }

    #[test]
    fn reads_end_at_aligned_offsets_when_chunks_are_large() {
        let size = 10 * READ_ALIGN;
        // A resume at an odd offset: the first read ends at a multiple, the rest follow.
        let mut file = sending(size, 1000);
        let chunk = 3 * READ_ALIGN - 50;
        assert_eq!(
            file.next_read(u64::MAX, chunk),
            Some((1000, 3 * READ_ALIGN - 1000))
        );
        assert_eq!(
            file.next_read(u64::MAX, chunk),
            Some((3 * READ_ALIGN, 2 * READ_ALIGN))
        );
        // Small chunks are read as they are.
        let mut file = sending(size, 1000);
        assert_eq!(file.next_read(u64::MAX, 5000), Some((1000, 5000)));
    }

    /// A file of `size` bytes, offered, accepted from `offset`.
    fn sending(size: u64, offset: u64) -> OutgoingFile {
        let mut file = OutgoingFile::new(
            ChannelId(1),
            TransferId(1),
            "f".into(),
            size,
            0,
            Bytes::new(),
        );
        file.offered(Instant::ZERO);
        file.on_accept(Instant::ZERO, offset);
        file
    }

    fn plain(bytes: Vec<u8>) -> Chunk {
        Chunk {
            buf: Bytes::from(bytes),
            room: 0,
        }
    }

    fn bytes(chunk: &Chunk) -> &[u8] {
        &chunk.buf[chunk.room..]
    }
}
