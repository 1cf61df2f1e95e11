//! File transfer state, sans-IO: the sender's window of read-ahead chunks and the
//! receiver's expected offset. Reading and writing the files is the owner's job; the
//! session asks for it with events (`FileRead`, `FileData`) and is told the outcome.

#[allow(unused_imports)]
use crate::prelude::*;

use alloc::collections::VecDeque;
use core::time::Duration;

use crate::time::Instant;

use bytes::Bytes;
use interconnect_proto::{ChannelId, TransferId};

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

/// A file this side sends.
#[derive(Debug)]
pub(crate) struct OutgoingFile {
    pub(crate) channel: ChannelId,
    pub(crate) id: TransferId,
    pub(crate) name: String,
    pub(crate) size: u64,
    /// The source's modification time, as offered (see `FileOffer::modified`).
    pub(crate) modified: u64,
    /// BLAKE3 of the whole file, known once the owner has read (and hashed) its end; it
    /// rides on the chunk that ends the file.
    digest: Option<[u8; 32]>,
    pub(crate) state: OutState,
    /// Every byte before this offset is acknowledged by the receiver.
    pub(crate) acked: u64,
    /// Next offset to put on the wire.
    pub(crate) next: u64,
    /// Read-ahead chunks, contiguous from `buf_start`.
    buf: VecDeque<Bytes>,
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
    pub(crate) fn new(
        channel: ChannelId,
        id: TransferId,
        name: String,
        size: u64,
        modified: u64,
    ) -> Self {
        OutgoingFile {
            channel,
            id,
            name,
            size,
            modified,
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
        if offset < self.buf_start || offset > self.buf_end || !self.on_boundary(offset) {
            self.buf.clear();
            self.buf_start = offset;
            self.buf_end = offset;
            self.requested_end = offset;
        } else {
            self.drop_before(offset);
        }
    }

    fn on_boundary(&self, offset: u64) -> bool {
        let mut at = self.buf_start;
        for chunk in &self.buf {
            if at == offset {
                return true;
            }
            at += chunk.len() as u64;
        }
        at == offset
    }

    fn drop_before(&mut self, offset: u64) {
        while let Some(front) = self.buf.front() {
            let end = self.buf_start + front.len() as u64;
            if end > offset {
                break;
            }
            self.buf_start = end;
            self.buf.pop_front();
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
        let len = chunk_len.min(self.size - start);
        self.requested_end = start + len;
        Some((start, len))
    }

    /// A read completed, with the file's digest if the read reached its end. Accepted
    /// only if it continues the buffer (a read made stale by a rewind is dropped; the same
    /// bytes are asked for again).
    pub(crate) fn on_read(&mut self, offset: u64, data: Bytes, digest: Option<[u8; 32]>) {
        if digest.is_some() {
            self.digest = digest;
        }
        if offset == self.buf_end && !data.is_empty() {
            self.buf_end += data.len() as u64;
            self.buf.push_back(data);
            self.requested_end = self.requested_end.max(self.buf_end);
        }
    }

    /// The next chunk to transmit, if it is buffered and the window allows: its offset,
    /// its bytes, and the file's digest if it ends the file.
    pub(crate) fn next_chunk(&mut self, window: u64) -> Option<(u64, Bytes, Option<[u8; 32]>)> {
        if self.state != OutState::Sending || self.next - self.acked >= window {
            return None;
        }
        let mut at = self.buf_start;
        for chunk in &self.buf {
            if at == self.next {
                self.next += chunk.len() as u64;
                self.sent_high = self.sent_high.max(self.next);
                let digest = self.digest.filter(|_| self.next == self.size);
                return Some((at, chunk.clone(), digest));
            }
            at += chunk.len() as u64;
        }
        None
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
            self.drop_before(offset);
        }
        true
    }

    /// Link down or channel re-opening: offer again, the receiver says where to resume.
    pub(crate) fn requeue(&mut self) {
        self.state = OutState::Queued;
        self.next = self.acked;
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
                self.next = self.acked;
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
    pub(crate) state: InState,
    /// Next offset expected on the wire.
    pub(crate) expected: u64,
    /// Bytes written by the owner (acknowledged to the sender).
    pub(crate) written: u64,
    /// An acknowledgement of `written` is due.
    pub(crate) ack_pending: bool,
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
