//! File transfers in the session: commands, frame handlers and scheduling.
//!
//! Transfer ids carry their direction: the watch numbers its transfers with odd ids and
//! the phone with even ones, so a cancel names its transfer without ambiguity.

#[allow(unused_imports)]
use crate::prelude::*;

use crate::time::Instant;

use bytes::{Bytes, BytesMut};
use interconnect_proto::{
    Capabilities, ChannelId, Code, FileAccept, FileAck, FileCancel, FileChunk, FileComplete,
    FileOffer, FileOfferMeta, Frame, MAX_FILE_META_LEN, MAX_FILE_NAME_LEN, Role, TransferId,
    place_head,
};

use super::{CommandError, Session};
use crate::channel::ChannelState;
use crate::config::MAX_FILE_AHEAD;
use crate::event::Event;
use crate::transfer::{
    Chunk, ChunkVerdict, FILE_READ_ROOM, InState, IncomingFile, OutState, OutgoingFile,
};

/// Incoming transfers remembered as answered with a cancel.
const ANSWERED_UNKNOWN: usize = 64;
/// Chunks of an answered transfer between two cancels (more than a file window holds).
const REANSWER_EVERY: u32 = 1024;

impl Session {
    fn owns(&self, transfer: TransferId) -> bool {
        let odd = transfer.0 % 2 == 1;
        odd == (self.config.role == Role::Watch)
    }

    // ---- commands ----

    /// Offers a file on a channel, given its size and modification time (nanoseconds
    /// since the Unix epoch, 0 if unknown). The session asks for its bytes with
    /// [`Event::FileRead`]; the owner answers with [`file_read`](Self::file_read),
    /// hashing as it reads, and hands over the digest with the read that ends the file.
    /// The session reports [`Event::FileProgress`], then [`Event::FileSent`] or
    /// [`Event::FileFailed`].
    pub fn send_file(
        &mut self,
        now: Instant,
        channel: ChannelId,
        name: &str,
        size: u64,
        modified: u64,
    ) -> Result<TransferId, CommandError> {
        self.send_file_with_meta(now, channel, name, size, modified, Bytes::new())
    }

    /// [`send_file`](Self::send_file) with the sending app's metadata about the file (at
    /// most [`MAX_FILE_META_LEN`] bytes), offered with it (`FileOfferMeta`) for the
    /// receiving app to decide on. A peer that does not read metadata
    /// (`Capabilities::FILE_META`) is offered nothing: the send fails with
    /// [`CommandError::NoFileMeta`], at once or once that peer is known.
    pub fn send_file_with_meta(
        &mut self,
        now: Instant,
        channel: ChannelId,
        name: &str,
        size: u64,
        modified: u64,
        meta: Bytes,
    ) -> Result<TransferId, CommandError> {
        if meta.len() > MAX_FILE_META_LEN {
            return Err(CommandError::TooLarge {
                len: meta.len(),
                max: MAX_FILE_META_LEN,
            });
        }
        if !meta.is_empty() && !self.peer_has(Capabilities::FILE_META) {
            return Err(CommandError::NoFileMeta);
        }
        if name.len() > MAX_FILE_NAME_LEN {
            return Err(CommandError::TooLarge {
                len: name.len(),
                max: MAX_FILE_NAME_LEN,
            });
        }
        let open = match self.channels.get(&channel) {
            None => return Err(CommandError::ChannelClosed),
            Some(ch) => match &ch.state() {
                ChannelState::Closed => return Err(CommandError::ChannelClosed),
                // Refused: over, unless the channel reopens by itself (watch side, after
                // the phone app went away); the file then waits for it.
                ChannelState::Idle {
                    last_error: Some(_),
                } if ch.reopen.is_none() => return Err(CommandError::ChannelClosed),
                state => *state == ChannelState::Open,
            },
        };
        if !self.peer_has(Capabilities::FILES) {
            return Err(CommandError::NoFiles);
        }
        self.next_transfer = self.next_transfer.wrapping_add(1);
        let parity = u32::from(self.config.role == Role::Watch);
        let id = TransferId(self.next_transfer.wrapping_mul(2).wrapping_add(parity));
        let mut file = OutgoingFile::new(channel, id, name.into(), size, modified, meta);
        if open && self.is_link_up() {
            self.control.push_back(offer_frame(&file));
            file.offered(now);
        }
        self.outgoing.insert(id, file);
        Ok(id)
    }

    /// Bytes the owner read for an outgoing transfer, after [`Event::FileRead`], with the
    /// BLAKE3 digest of the whole file when the read reaches its end.
    pub fn file_read(
        &mut self,
        transfer: TransferId,
        offset: u64,
        data: Bytes,
        digest: Option<[u8; 32]>,
    ) {
        self.chunk_read(transfer, offset, Chunk { buf: data, room: 0 }, digest);
    }

    /// Like [`file_read`](Self::file_read), with the bytes read into `buf` after
    /// [`FILE_READ_ROOM`](crate::sans_io::FILE_READ_ROOM) bytes of room, and
    /// [`file_read_tail`](crate::sans_io::file_read_tail) more bytes of capacity after
    /// them: the chunk's frame is then built where the bytes lie, and sealed there when
    /// it is one AEAD segment or the peer reads sealed frames with their tags last, so
    /// they are not copied. A `buf` shorter than the room is
    /// taken as no bytes.
    pub fn file_read_with_room(
        &mut self,
        transfer: TransferId,
        offset: u64,
        buf: Bytes,
        digest: Option<[u8; 32]>,
    ) {
        // A buffer shorter than the room holds no bytes: the read is dropped as empty.
        let room = FILE_READ_ROOM.min(buf.len());
        self.chunk_read(transfer, offset, Chunk { buf, room }, digest);
    }

    fn chunk_read(
        &mut self,
        transfer: TransferId,
        offset: u64,
        chunk: Chunk,
        digest: Option<[u8; 32]>,
    ) {
        if let Some(file) = self.outgoing.get_mut(&transfer) {
            file.on_read(offset, chunk, digest);
        }
        self.request_reads();
    }

    /// Accepts an offered file, resuming at `offset` (bytes already held). The offset is
    /// capped at one byte short of the end, so the last chunk, which carries the file's
    /// digest, always travels.
    pub fn accept_file(&mut self, channel: ChannelId, transfer: TransferId, offset: u64) {
        let Some(file) = self.incoming.get_mut(&(channel, transfer)) else {
            return;
        };
        let Some(offset) = file.accept(offset) else {
            return;
        };
        self.control.push_back(Frame::FileAccept(FileAccept {
            channel,
            transfer,
            offset,
        }));
    }

    /// The owner wrote the incoming bytes up to `end`. When that is the whole file the
    /// owner verifies it and calls [`file_stored`](Self::file_stored) or
    /// [`cancel_file`](Self::cancel_file).
    pub fn file_written(&mut self, channel: ChannelId, transfer: TransferId, end: u64) {
        if let Some(file) = self.incoming.get_mut(&(channel, transfer)) {
            file.on_written(end);
        }
    }

    /// The owner verified and stored the incoming file: the sender is told.
    pub fn file_stored(&mut self, channel: ChannelId, transfer: TransferId) {
        if let Some(file) = self.incoming.get_mut(&(channel, transfer)) {
            file.on_stored();
            self.control
                .push_back(Frame::FileComplete(FileComplete { channel, transfer }));
        }
    }

    /// Refuses an offer or ends a transfer in either direction; the peer is told why.
    pub fn cancel_file(
        &mut self,
        channel: ChannelId,
        transfer: TransferId,
        code: Code,
        reason: &str,
    ) {
        let known = if self.owns(transfer) {
            self.outgoing.remove(&transfer).is_some()
        } else {
            let known = self.incoming.remove(&(channel, transfer)).is_some();
            if known {
                // Chunks still in flight are dropped without a cancel of their own.
                self.remember_answered((channel, transfer));
            }
            known
        };
        if known && self.is_link_up() {
            self.control.push_back(Frame::FileCancel(FileCancel {
                channel,
                transfer,
                code,
                reason: reason.into(),
            }));
        }
    }

    /// Same as [`cancel_file`](Self::cancel_file) for an offer.
    pub fn reject_file(
        &mut self,
        channel: ChannelId,
        transfer: TransferId,
        code: Code,
        reason: &str,
    ) {
        self.cancel_file(channel, transfer, code, reason);
    }

    // ---- lifecycle hooks (called by the channel code) ----

    /// A channel opened. `fresh` when it started anew (the peer has no state for it):
    /// incoming transfers on it are abandoned; outgoing ones are offered (again).
    pub(super) fn files_on_channel_open(&mut self, now: Instant, channel: ChannelId, fresh: bool) {
        if fresh {
            self.abandon_incoming(channel);
        }
        let up = self.is_link_up();
        if up {
            // Queued while the link was down, for a peer that turns out to take no file,
            // or no metadata.
            let (files, meta) = (
                self.peer_has(Capabilities::FILES),
                self.peer_has(Capabilities::FILE_META),
            );
            let refused: Vec<(TransferId, CommandError)> = self
                .outgoing
                .values()
                .filter(|f| f.channel == channel)
                .filter_map(|f| match (files, meta || f.meta.is_empty()) {
                    (false, _) => Some((f.id, CommandError::NoFiles)),
                    (true, false) => Some((f.id, CommandError::NoFileMeta)),
                    (true, true) => None,
                })
                .collect();
            for (transfer, why) in refused {
                self.outgoing.remove(&transfer);
                self.events.push_back(Event::FileFailed {
                    channel,
                    transfer,
                    outgoing: true,
                    code: why.code(),
                    reason: why.to_string(),
                });
            }
        }
        for file in self.outgoing.values_mut() {
            if file.channel == channel && up {
                if fresh || file.state() == OutState::Queued {
                    file.requeue();
                }
                if file.state() == OutState::Queued {
                    self.control.push_back(offer_frame(file));
                    file.offered(now);
                }
            }
        }
    }

    /// Whether the peer of the link that is up announced `capability` (`true` while no
    /// link is up: the next peer decides).
    /// Whether the peer announced `capability` (assumed while no link is up; what is
    /// queued meanwhile is checked again before it is sent).
    pub(super) fn peer_has(&self, capability: Capabilities) -> bool {
        match &self.link {
            super::LinkState::Up(up) => up.capabilities.contains(capability),
            _ => true,
        }
    }

    /// The link went down: outgoing transfers wait to be offered again.
    pub(super) fn files_on_link_down(&mut self) {
        for file in self.outgoing.values_mut() {
            file.requeue();
        }
        for file in self.incoming.values_mut() {
            file.on_link_down();
        }
    }

    /// Watch side: the phone closed or refused a channel that reopens by itself. Its
    /// outgoing transfers wait to be offered again when it is open (the phone resumes
    /// them from what it holds, as after a link drop); incoming ones end.
    pub(super) fn files_on_channel_paused(&mut self, channel: ChannelId, code: Code) {
        for file in self.outgoing.values_mut().filter(|f| f.channel == channel) {
            file.requeue();
        }
        self.incoming_on_channel_closed(channel, code);
    }

    /// The channel is closed or gone: its transfers end.
    pub(super) fn files_on_channel_closed(&mut self, channel: ChannelId, code: Code) {
        let out: Vec<TransferId> = self
            .outgoing
            .values()
            .filter(|f| f.channel == channel)
            .map(|f| f.id)
            .collect();
        for transfer in out {
            self.outgoing.remove(&transfer);
            self.events.push_back(Event::FileFailed {
                channel,
                transfer,
                outgoing: true,
                code,
                reason: "the channel closed".into(),
            });
        }
        self.incoming_on_channel_closed(channel, code);
    }

    fn incoming_on_channel_closed(&mut self, channel: ChannelId, code: Code) {
        let inc: Vec<(ChannelId, TransferId)> = self
            .incoming
            .keys()
            .filter(|(c, _)| *c == channel)
            .copied()
            .collect();
        for key in inc {
            if let Some(file) = self.incoming.remove(&key)
                && file.state() != InState::Complete
            {
                self.events.push_back(Event::FileFailed {
                    channel,
                    transfer: key.1,
                    outgoing: false,
                    code,
                    reason: "the channel closed".into(),
                });
            }
        }
    }

    /// Drops the incoming transfers on `channel` without failing them: their senders went
    /// away for good, and each partial file is kept so a later offer of the same file
    /// resumes from it.
    pub(super) fn abandon_incoming(&mut self, channel: ChannelId) {
        let keys: Vec<(ChannelId, TransferId)> = self
            .incoming
            .keys()
            .filter(|(c, _)| *c == channel)
            .copied()
            .collect();
        for key in keys {
            if let Some(file) = self.incoming.remove(&key)
                && file.state() != InState::Complete
            {
                self.events.push_back(Event::FileAbandoned {
                    channel,
                    transfer: key.1,
                });
            }
        }
    }

    /// Asks the owner for the reads the windows have room for.
    pub(super) fn request_reads(&mut self) {
        let window = self.send_window();
        let chunk = self.limits().max_chunk_len() as u64;
        for file in self.outgoing.values_mut() {
            while let Some((offset, len)) = file.next_read(window, chunk) {
                self.events.push_back(Event::FileRead {
                    channel: file.channel,
                    transfer: file.id,
                    offset,
                    len,
                });
            }
        }
    }

    pub(super) fn files_on_timeout(&mut self, now: Instant) {
        let rto = self.config.retransmit_timeout;
        for file in self.outgoing.values_mut() {
            if file.deadline(rto).is_some_and(|t| now >= t) && file.on_timeout(now) {
                self.control.push_back(offer_frame(file));
            }
        }
        // Sent bytes are not kept: going back means reading them again.
        self.request_reads();
    }

    pub(super) fn files_deadline(&self) -> Option<Instant> {
        let rto = self.config.retransmit_timeout;
        self.outgoing.values().filter_map(|f| f.deadline(rto)).min()
    }

    /// The next file frame: a due acknowledgement, else a chunk, round-robin over
    /// transfers. Called only when no message is waiting, so files never delay messages.
    pub(super) fn next_file_frame(&mut self, now: Instant) -> Option<Frame> {
        if let Some(file) = self.incoming.values_mut().find(|f| f.has_ack())
            && let Some(offset) = file.take_ack()
        {
            return Some(Frame::FileAck(FileAck {
                channel: file.channel,
                transfer: file.id,
                offset,
            }));
        }
        let window = self.send_window();
        let max_chunk = self.limits().max_chunk_len();
        let channels = &self.channels;
        let ready = |f: &&OutgoingFile| {
            f.has_chunk(window) && channels.get(&f.channel).is_some_and(|c| c.is_open())
        };
        let after = self.rr_file;
        let candidate = self
            .outgoing
            .values()
            .filter(|f| after.is_none_or(|a| f.id > a))
            .find(ready)
            .or_else(|| self.outgoing.values().find(ready))
            .map(|f| f.id)?;
        self.rr_file = Some(candidate);
        let file = self.outgoing.get_mut(&candidate)?;
        let (offset, chunk, digest) = file.next_chunk(window, max_chunk)?;
        if file.last_progress.is_none() {
            file.last_progress = Some(now);
        }
        let data = chunk.buf.slice(chunk.room..);
        // The frame is built where the bytes lie when its buffer is the session's alone
        // (see `Session::in_room`).
        self.in_room = (chunk.room > 0).then_some(chunk.buf);
        Some(Frame::FileChunk(FileChunk {
            channel: file.channel,
            transfer: file.id,
            offset,
            data,
            digest,
        }))
    }

    /// Builds `frame` in the buffer its bytes were read into, when it is the file chunk
    /// last taken to be sent, read with room in front (`in_room`), and no one else holds
    /// that buffer: its head goes into the room, `keep` bytes of room stay in front of it
    /// (a sealed header's), and the file's bytes are never copied. Hands `frame` back
    /// otherwise, or when head and bytes come to more than `limit` (a sealed frame of
    /// more than one segment is built elsewhere).
    pub(super) fn build_in_room(
        &mut self,
        frame: Frame,
        max: usize,
        keep: usize,
        limit: usize,
    ) -> Result<BytesMut, Frame> {
        let Frame::FileChunk(chunk) = frame else {
            return Err(frame);
        };
        // The chunk's bytes are those after the room: the same address, the same length.
        let Some(buf) = self
            .in_room
            .take()
            .filter(|buf| {
                buf.get(FILE_READ_ROOM..).map(<[u8]>::as_ptr) == Some(chunk.data.as_ptr())
            })
            .filter(|buf| buf.len() - FILE_READ_ROOM == chunk.data.len())
        else {
            return Err(Frame::FileChunk(chunk));
        };
        let frame = Frame::FileChunk(chunk);
        self.plain.clear();
        match frame.encode_unsealed_head(max, &mut self.plain) {
            Ok(bulk) if self.plain.len() + bulk.len() <= limit => {}
            _ => return Err(frame),
        }
        let Frame::FileChunk(mut chunk) = frame else {
            return Err(frame);
        };
        // The frame's hold on the buffer goes; it is back if another holds it too.
        chunk.data = Bytes::new();
        let mut buf = match buf.try_into_mut() {
            Ok(buf) => buf,
            Err(buf) => {
                chunk.data = buf.slice(FILE_READ_ROOM..);
                return Err(Frame::FileChunk(chunk));
            }
        };
        match place_head(&mut buf, FILE_READ_ROOM, &self.plain, keep) {
            Ok(()) => Ok(buf),
            Err(_) => {
                chunk.data = buf.freeze().slice(FILE_READ_ROOM..);
                Err(Frame::FileChunk(chunk))
            }
        }
    }

    // ---- frames ----

    pub(super) fn on_file_offer(&mut self, offer: FileOffer, meta: Bytes) {
        if !self.is_open(offer.channel) {
            return;
        }
        let key = (offer.channel, offer.transfer);
        if self.owns(offer.transfer) {
            return self.protocol_error(
                Code::PROTOCOL_ERROR,
                "offer with one of our transfer ids".into(),
            );
        }
        if let Some(file) = self.incoming.get(&key) {
            if file.size != offer.size {
                // Another file under an id in use: refused, the held one goes on.
                self.control.push_back(Frame::FileCancel(FileCancel {
                    channel: offer.channel,
                    transfer: offer.transfer,
                    code: Code::PROTOCOL_ERROR,
                    reason: "this transfer id names another file".into(),
                }));
                return;
            }
            // A repeated offer: say where we stand.
            let answer = match file.state() {
                InState::Deciding | InState::Verifying => None,
                InState::Receiving => Some(Frame::FileAccept(FileAccept {
                    channel: offer.channel,
                    transfer: offer.transfer,
                    offset: file.expected(),
                })),
                InState::Complete => Some(Frame::FileComplete(FileComplete {
                    channel: offer.channel,
                    transfer: offer.transfer,
                })),
            };
            if let Some(frame) = answer {
                self.control.push_back(frame);
            }
            return;
        }
        self.incoming.insert(
            key,
            IncomingFile::new(offer.channel, offer.transfer, offer.size),
        );
        self.events.push_back(Event::FileOffered {
            channel: offer.channel,
            transfer: offer.transfer,
            name: offer.name,
            size: offer.size,
            modified: offer.modified,
            meta,
        });
    }

    pub(super) fn on_file_accept(&mut self, now: Instant, accept: FileAccept) {
        let Some(file) = self.outgoing.get_mut(&accept.transfer) else {
            return;
        };
        if file.channel != accept.channel || file.state() != OutState::Offered {
            return;
        }
        if accept.offset > file.size {
            let (channel, transfer) = (file.channel, file.id);
            return self.fail_file(
                channel,
                transfer,
                true,
                Code::PROTOCOL_ERROR,
                "the receiver accepted at an offset beyond the file",
            );
        }
        file.on_accept(now, accept.offset);
        let (channel, transfer, offset) = (file.channel, file.id, accept.offset);
        self.events.push_back(Event::FileProgress {
            channel,
            transfer,
            offset,
        });
        self.request_reads();
    }

    /// Bytes of one outgoing transfer in flight: the configured window, within the
    /// protocol's bound.
    fn send_window(&self) -> u64 {
        self.config.file_window.min(MAX_FILE_AHEAD)
    }

    /// File bytes received and handed to the owner, not yet reported written.
    pub(super) fn unwritten(&self) -> u64 {
        self.incoming.values().map(IncomingFile::unwritten).sum()
    }

    pub(super) fn on_file_chunk(&mut self, chunk: FileChunk) {
        let key = (chunk.channel, chunk.transfer);
        let Some(file) = self.incoming.get_mut(&key) else {
            if self.is_open(chunk.channel) && !self.owns(chunk.transfer) && self.answer_unknown(key)
            {
                // A transfer we do not know (cancelled, or finished long ago): stop it,
                // once for all the chunks in flight.
                self.control.push_back(Frame::FileCancel(FileCancel {
                    channel: chunk.channel,
                    transfer: chunk.transfer,
                    code: Code::CANCELLED,
                    reason: "unknown transfer".into(),
                }));
            }
            return;
        };
        let gap = file.state() == InState::Receiving && chunk.offset > file.expected();
        match file.on_chunk(
            chunk.offset,
            chunk.data.len() as u64,
            chunk.digest.is_some(),
            MAX_FILE_AHEAD,
        ) {
            ChunkVerdict::Write => self.events.push_back(Event::FileData {
                channel: chunk.channel,
                transfer: chunk.transfer,
                offset: chunk.offset,
                data: chunk.data,
                digest: chunk.digest,
            }),
            ChunkVerdict::Ignore if gap && self.config.reliable_link => {
                self.drop_link(
                    Code::PROTOCOL_ERROR,
                    "file bytes are missing on a link that does not lose frames".into(),
                );
            }
            ChunkVerdict::Ignore => {
                if file.state() == InState::Complete {
                    self.control.push_back(Frame::FileComplete(FileComplete {
                        channel: chunk.channel,
                        transfer: chunk.transfer,
                    }));
                } else {
                    file.ack_again();
                }
            }
            ChunkVerdict::Violation(reason) => {
                self.fail_file(
                    chunk.channel,
                    chunk.transfer,
                    false,
                    Code::PROTOCOL_ERROR,
                    reason,
                );
            }
        }
    }

    pub(super) fn on_file_ack(&mut self, now: Instant, ack: FileAck) {
        let Some(file) = self.outgoing.get_mut(&ack.transfer) else {
            return;
        };
        if file.channel != ack.channel || file.state() != OutState::Sending {
            return;
        }
        if !file.on_ack(now, ack.offset) {
            return self.fail_file(
                ack.channel,
                ack.transfer,
                true,
                Code::PROTOCOL_ERROR,
                "the receiver acknowledged bytes never sent",
            );
        }
        self.events.push_back(Event::FileProgress {
            channel: ack.channel,
            transfer: ack.transfer,
            offset: ack.offset,
        });
        self.request_reads();
    }

    pub(super) fn on_file_complete(&mut self, complete: FileComplete) {
        // The last acknowledgements may have been lost: a verdict after the last byte
        // went out stands for them (the receiver verified the digest it carried).
        let done = self.outgoing.get(&complete.transfer).is_some_and(|f| {
            f.channel == complete.channel && f.all_sent() && f.state() == OutState::Sending
        });
        if done {
            self.outgoing.remove(&complete.transfer);
            self.events.push_back(Event::FileSent {
                channel: complete.channel,
                transfer: complete.transfer,
            });
        } else if let Some(file) = self.outgoing.get(&complete.transfer)
            && file.channel == complete.channel
            && file.state() == OutState::Offered
        {
            // Answer to a repeated offer of a file the receiver already stored.
            self.outgoing.remove(&complete.transfer);
            self.events.push_back(Event::FileSent {
                channel: complete.channel,
                transfer: complete.transfer,
            });
        }
    }

    pub(super) fn on_file_cancel(&mut self, cancel: FileCancel) {
        let outgoing = self.owns(cancel.transfer);
        let known = if outgoing {
            self.outgoing
                .get(&cancel.transfer)
                .is_some_and(|f| f.channel == cancel.channel)
                && self.outgoing.remove(&cancel.transfer).is_some()
        } else {
            self.incoming
                .remove(&(cancel.channel, cancel.transfer))
                .is_some_and(|f| f.state() != InState::Complete)
        };
        if known {
            self.events.push_back(Event::FileFailed {
                channel: cancel.channel,
                transfer: cancel.transfer,
                outgoing,
                code: cancel.code,
                reason: cancel.reason,
            });
        }
    }

    /// Notes an incoming transfer whose sender was told to stop (bounded: the oldest
    /// goes first).
    fn remember_answered(&mut self, key: (ChannelId, TransferId)) {
        self.answered_unknown.retain(|(k, _)| *k != key);
        if self.answered_unknown.len() == ANSWERED_UNKNOWN {
            self.answered_unknown.pop_front();
        }
        self.answered_unknown.push_back((key, 0));
    }

    /// Whether a chunk of a transfer this side does not hold gets a cancel: the first
    /// does, then one in `REANSWER_EVERY`.
    fn answer_unknown(&mut self, key: (ChannelId, TransferId)) -> bool {
        match self.answered_unknown.iter_mut().find(|(k, _)| *k == key) {
            Some((_, since)) => {
                *since += 1;
                *since % REANSWER_EVERY == 0
            }
            None => {
                self.remember_answered(key);
                true
            }
        }
    }

    /// Ends a transfer because of the peer: tell it and the owner.
    fn fail_file(
        &mut self,
        channel: ChannelId,
        transfer: TransferId,
        outgoing: bool,
        code: Code,
        reason: &str,
    ) {
        self.cancel_file(channel, transfer, code, reason);
        self.events.push_back(Event::FileFailed {
            channel,
            transfer,
            outgoing,
            code,
            reason: reason.into(),
        });
    }
}

fn offer_frame(file: &OutgoingFile) -> Frame {
    let offer = FileOffer {
        channel: file.channel,
        transfer: file.id,
        name: file.name.clone(),
        size: file.size,
        modified: file.modified,
    };
    match file.meta.is_empty() {
        true => Frame::FileOffer(offer),
        false => Frame::FileOfferMeta(FileOfferMeta {
            offer,
            meta: file.meta.clone(),
        }),
    }
}
