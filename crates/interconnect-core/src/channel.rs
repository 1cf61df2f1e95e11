//! One channel's state: open/close lifecycle and reliable, ordered, exactly-once delivery
//! (per-direction sequence numbers, cumulative acks, go-back-N resending).

#[allow(unused_imports)]
use crate::prelude::*;

use crate::time::Instant;
use alloc::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use interconnect_proto::{ChannelId, Code, ContentType, Data, DataHead, Exchange};

use crate::event::SendId;

/// Where a channel stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChannelState {
    /// Not open and not trying: before the first link, or after a refusal.
    Idle { last_error: Option<Code> },
    /// Open sent, waiting for accept or reject (watch side).
    Opening,
    /// Open: messages flow.
    Open,
    /// Was open; the link dropped. Resumes on the next link of the same session.
    Suspended,
    /// Closed by either side. Terminal.
    Closed,
}

/// How much a channel keeps in flight (sent, not yet acknowledged): at most this many
/// messages and, past the first, this many payload bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub(crate) messages: usize,
    pub(crate) bytes: usize,
}

/// A message to send: queued by [`Session::send_run`](crate::sans_io::Session::send_run),
/// it waits in its channel for a sequence number.
#[derive(Debug)]
pub struct Outgoing {
    /// The caller's id of the send, which its outcome names.
    pub id: SendId,
    /// How the payload is encoded.
    pub content_type: ContentType,
    /// Request/reply correlation.
    pub exchange: Exchange,
    /// The message bytes.
    pub payload: Bytes,
}

/// Where [`Channel::append_data`] writes: into `buf`, as long as it stays within `limit`
/// bytes, frames whole with their CRC (`whole`: a run of plaintext frames) or without it
/// (a batch to be sealed).
pub(crate) struct Run<'a> {
    pub(crate) buf: &'a mut BytesMut,
    pub(crate) limit: usize,
    pub(crate) whole: bool,
}

/// What [`Channel::append_data`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Appended {
    /// One data frame went into the buffer.
    Frame,
    /// The next one would pass the limit: nothing changed.
    Full,
    /// The channel has nothing the window lets go.
    Nothing,
}

/// A sequenced message, sent at least once or about to be, not yet acknowledged.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) seq: u64,
    pub(crate) message: Outgoing,
}

/// What receiving a data frame means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// The next message in order: deliver it.
    Deliver,
    /// Already delivered; dropped.
    Duplicate,
    /// Ahead of a gap (a frame was lost or reordered); dropped, the sender resends.
    Gap,
    /// Further ahead than any sender may be: a protocol violation.
    Impossible,
}

#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) id: ChannelId,
    pub(crate) package: String,
    /// Signature the watch requires of the phone app.
    pub(crate) signature: Option<String>,
    state: ChannelState,
    /// The phone app's version, once accepted.
    pub(crate) app_version: Option<u32>,
    /// Whether the channel has been open before (for `is_reconnected`).
    pub(crate) was_open: bool,
    pending: VecDeque<Outgoing>,
    in_flight: VecDeque<InFlight>,
    /// Payload bytes in `in_flight`.
    in_flight_bytes: usize,
    /// Index into `in_flight` of the next message to (re)transmit.
    send_cursor: usize,
    next_seq: u64,
    /// Highest sequence number received in order.
    pub(crate) received: u64,
    /// An acknowledgement is due even if it repeats the last one: the peer sent again
    /// what it had (so it missed an acknowledgement), or sent past a gap.
    ack_pending: bool,
    /// The number the last acknowledgement sent carried: one is due when
    /// [`acknowledged`](Self::acknowledged) passes it, never to say it again.
    ack_sent: u64,
    /// While the app does not take its messages: the highest sequence number this side
    /// acknowledges, so the sender's window fills and its sends wait.
    ack_limit: Option<u64>,
    /// Last time the peer's acks made progress (or the first send after quiet).
    last_progress: Option<Instant>,
    /// When the pending open was last sent, and whether it asked to resume.
    pub(crate) open_sent: Option<(Instant, bool)>,
    /// With acknowledgements on take: the highest sequence number the app has taken.
    taken: Option<u64>,
    /// Which numbering of this channel's messages is current: a receipt of an earlier
    /// one (before a restart) is ignored.
    pub(crate) life: u64,
    /// Watch side, after the phone closed or refused a channel that had been open: when
    /// to try opening it again, and the delay after that.
    pub(crate) reopen: Option<(Instant, core::time::Duration)>,
    /// Phone side: the `resumed` of the `Accept` that opened the channel, said again to
    /// a repeated `Open`.
    pub(crate) resumed: bool,
}

/// Numbers each life of each channel in this process (see `Channel::life`).
fn next_life() -> u64 {
    // usize: a Cortex-M has no 64-bit atomics; 2^32 lives per process is plenty there.
    static NEXT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(1);
    NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed) as u64
}

impl Channel {
    pub(crate) fn new(id: ChannelId, package: String, signature: Option<String>) -> Self {
        Channel {
            id,
            package,
            signature,
            state: ChannelState::Idle { last_error: None },
            app_version: None,
            was_open: false,
            pending: VecDeque::new(),
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            send_cursor: 0,
            next_seq: 1,
            received: 0,
            ack_pending: false,
            ack_sent: 0,
            ack_limit: None,
            last_progress: None,
            open_sent: None,
            taken: None,
            life: next_life(),
            reopen: None,
            resumed: false,
        }
    }

    /// Acknowledges a message only once the app took it (see [`Channel::on_taken`]).
    pub(crate) fn acknowledge_when_taken(mut self) -> Self {
        self.taken = Some(0);
        self
    }

    pub(crate) fn state(&self) -> ChannelState {
        self.state
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state == ChannelState::Open
    }

    // ---- lifecycle ----

    /// An open was sent at `now` (asking to resume or not): answered, or sent again
    /// after the retransmit timeout.
    pub(crate) fn on_open_sent(&mut self, now: Instant, resume: bool) {
        self.state = ChannelState::Opening;
        self.open_sent = Some((now, resume));
    }

    /// Open, on either side: messages flow, and a later open is a reconnection.
    pub(crate) fn on_opened(&mut self) {
        self.state = ChannelState::Open;
        self.was_open = true;
        self.reopen = None;
    }

    /// Not open and not trying, with the refusal's code if there was one.
    pub(crate) fn go_idle(&mut self, last_error: Option<Code>) {
        self.state = ChannelState::Idle { last_error };
    }

    /// The link dropped: an open channel is suspended (resumes on the next link), one
    /// opening goes idle. Whether it was open.
    pub(crate) fn on_link_down(&mut self) -> bool {
        self.rewind();
        match self.state {
            ChannelState::Open => {
                self.state = ChannelState::Suspended;
                true
            }
            ChannelState::Opening => {
                self.state = ChannelState::Idle { last_error: None };
                false
            }
            _ => false,
        }
    }

    /// Closed for good: nothing reopens it.
    pub(crate) fn close(&mut self) {
        self.state = ChannelState::Closed;
        self.reopen = None;
    }

    // ---- acknowledgements ----

    /// The acknowledgement due, if any (the number acknowledged), now sent.
    pub(crate) fn take_ack(&mut self) -> Option<u64> {
        if !self.has_ack() {
            return None;
        }
        self.ack_pending = false;
        self.ack_sent = self.acknowledged();
        Some(self.ack_sent)
    }

    /// Whether an acknowledgement is due: the number moved, or the peer needs it again.
    pub(crate) fn has_ack(&self) -> bool {
        self.ack_pending || self.acknowledged() > self.ack_sent
    }

    /// The app took the message `seq` (with acknowledgements on take): acknowledged
    /// with everything before it. Numbers not yet received are ignored.
    pub(crate) fn on_taken(&mut self, seq: u64) {
        if seq > self.received {
            return;
        }
        if let Some(taken) = &mut self.taken
            && seq > *taken
        {
            *taken = seq;
        }
    }

    /// Holds acknowledgements at message `seq` (the one that filled the app's bound:
    /// frames opened with it in one batch may be received already), unless held lower.
    pub(crate) fn hold_acks(&mut self, seq: u64) {
        let at = seq.min(self.received);
        self.ack_limit = Some(self.ack_limit.map_or(at, |held| held.min(at)));
    }

    /// Lets held acknowledgements go.
    pub(crate) fn release_acks(&mut self) {
        self.ack_limit = None;
    }

    /// Messages queued or in flight.
    pub(crate) fn queued(&self) -> usize {
        self.pending.len() + self.in_flight.len()
    }

    pub(crate) fn enqueue(&mut self, message: Outgoing) {
        self.pending.push_back(message);
    }

    /// Removes a message that has not been given a sequence number yet; a sequenced one
    /// stays (the receiver expects every sequence number) and `false` is returned.
    pub(crate) fn cancel(&mut self, id: SendId) -> bool {
        match self.pending.iter().position(|m| m.id == id) {
            Some(at) => {
                self.pending.remove(at);
                true
            }
            None => false,
        }
    }

    /// The next data frame to put on the wire, if the window allows one.
    /// `fits` says whether a payload fits the link; an unsequenced message that does
    /// not is returned in `Err` so the caller can fail it.
    pub(crate) fn next_data(
        &mut self,
        now: Instant,
        window: Window,
        refuse: impl Fn(&Outgoing) -> Option<Code>,
    ) -> Result<Option<Data>, (Outgoing, Code)> {
        if self.send_cursor >= self.in_flight.len() {
            if !self.window_open(window) {
                return Ok(None);
            }
            let Some(message) = self.pending.pop_front() else {
                return Ok(None);
            };
            if let Some(code) = refuse(&message) {
                return Err((message, code));
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.in_flight_bytes += message.payload.len();
            self.in_flight.push_back(InFlight { seq, message });
        }
        let entry = &self.in_flight[self.send_cursor];
        self.send_cursor += 1;
        if self.last_progress.is_none() {
            self.last_progress = Some(now);
        }
        Ok(Some(Data {
            channel: self.id,
            seq: entry.seq,
            content_type: entry.message.content_type,
            exchange: entry.message.exchange,
            payload: entry.message.payload.clone(),
        }))
    }

    /// Like [`next_data`](Self::next_data), but appends the frame to `dst` (unsealed,
    /// no CRC) instead of building it, and only if `dst` stays within `limit` bytes;
    /// else nothing changes. Sealed batches of small messages take this path: no frame
    /// and no share of the payload per message.
    pub(crate) fn append_data(
        &mut self,
        now: Instant,
        window: Window,
        refuse: impl Fn(&Outgoing) -> Option<Code>,
        max_frame_len: usize,
        run: &mut Run<'_>,
    ) -> Result<Appended, (Outgoing, Code)> {
        let resend = self.send_cursor < self.in_flight.len();
        let (seq, message) = if resend {
            let entry = &self.in_flight[self.send_cursor];
            (entry.seq, &entry.message)
        } else {
            if !self.window_open(window) {
                return Ok(Appended::Nothing);
            }
            let refused = match self.pending.front() {
                Some(message) => refuse(message),
                None => return Ok(Appended::Nothing),
            };
            if let Some(code) = refused {
                return match self.pending.pop_front() {
                    Some(message) => Err((message, code)),
                    None => Ok(Appended::Nothing),
                };
            }
            let Some(message) = self.pending.front() else {
                return Ok(Appended::Nothing);
            };
            (self.next_seq, message)
        };
        let head = DataHead {
            channel: self.id,
            seq,
            content_type: message.content_type,
            exchange: message.exchange,
        };
        let mark = run.buf.len();
        let encoded = match run.whole {
            true => head.encode(&message.payload, max_frame_len, run.buf),
            false => head.encode_unsealed(&message.payload, max_frame_len, run.buf),
        };
        match encoded {
            Ok(()) if run.buf.len() > run.limit => {
                run.buf.truncate(mark);
                return Ok(Appended::Full);
            }
            Ok(()) => {}
            // As `next_data`'s frame would be: sequenced, and not sent.
            Err(error) => tracing::warn!(%error, "data frame not sent"),
        }
        if !resend && let Some(message) = self.pending.pop_front() {
            self.next_seq += 1;
            self.in_flight_bytes += message.payload.len();
            self.in_flight.push_back(InFlight { seq, message });
        }
        self.send_cursor += 1;
        if self.last_progress.is_none() {
            self.last_progress = Some(now);
        }
        Ok(Appended::Frame)
    }

    /// Whether a data frame could be produced now (used for round-robin scheduling).
    pub(crate) fn has_data(&self, window: Window) -> bool {
        self.send_cursor < self.in_flight.len()
            || (self.window_open(window) && !self.pending.is_empty())
    }

    /// Whether the window has room for one more message (always for the first, however
    /// large).
    fn window_open(&self, window: Window) -> bool {
        self.in_flight.is_empty()
            || (self.in_flight.len() < window.messages && self.in_flight_bytes < window.bytes)
    }

    /// Highest sequence number ever assigned.
    pub(crate) fn last_sent_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Applies a cumulative ack; returns the sends it completes, in order, or `Err` for
    /// an ack of a sequence number never sent.
    pub(crate) fn on_ack(&mut self, now: Instant, seq: u64) -> Result<Vec<SendId>, ()> {
        if seq > self.last_sent_seq() {
            return Err(());
        }
        // In flight are consecutive sequence numbers: the run's length is known.
        let count = self
            .in_flight
            .front()
            .map_or(0, |front| (seq + 1).saturating_sub(front.seq));
        let mut done = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        while let Some(front) = self.in_flight.front() {
            if front.seq > seq {
                break;
            }
            if let Some(entry) = self.in_flight.pop_front() {
                self.in_flight_bytes -= entry.message.payload.len();
                done.push(entry.message.id);
            }
            self.send_cursor = self.send_cursor.saturating_sub(1);
        }
        if !done.is_empty() {
            self.last_progress = if self.in_flight.is_empty() {
                None
            } else {
                Some(now)
            };
        }
        Ok(done)
    }

    /// Classifies an arriving data sequence number and advances the receive state.
    pub(crate) fn on_data(&mut self, seq: u64, max_ahead: u64) -> Received {
        if seq <= self.received {
            self.ack_pending = true;
            Received::Duplicate
        } else if seq == self.received + 1 {
            self.received = seq;
            Received::Deliver
        } else if seq - self.received > max_ahead {
            Received::Impossible
        } else {
            self.ack_pending = true;
            Received::Gap
        }
    }

    /// What this side acknowledges: everything received in order, or less while held.
    pub(crate) fn acknowledged(&self) -> u64 {
        let held = self.ack_limit.unwrap_or(u64::MAX);
        let taken = self.taken.unwrap_or(u64::MAX);
        self.received.min(held).min(taken)
    }

    /// The link dropped: everything in flight must be sent again on the next link.
    pub(crate) fn rewind(&mut self) {
        self.send_cursor = 0;
        self.last_progress = None;
        self.ack_pending = false;
    }

    /// The peer resumed the channel and holds everything up to `peer_received`.
    pub(crate) fn resume(&mut self, now: Instant, peer_received: u64) -> Vec<SendId> {
        self.rewind();
        let done = self.on_ack(now, peer_received.min(self.last_sent_seq()));
        done.unwrap_or_default()
    }

    /// The peer has no state for this channel: start both directions afresh, sending
    /// unacknowledged messages again under new sequence numbers.
    pub(crate) fn restart(&mut self) {
        self.in_flight_bytes = 0;
        while let Some(entry) = self.in_flight.pop_back() {
            self.pending.push_front(entry.message);
        }
        self.next_seq = 1;
        self.received = 0;
        self.ack_sent = 0;
        self.taken = self.taken.map(|_| 0);
        self.ack_limit = self.ack_limit.map(|_| 0);
        self.life = next_life();
        self.rewind();
    }

    /// Takes every message the peer has not acknowledged, oldest first, to send again
    /// on another channel.
    pub(crate) fn take_unacknowledged(&mut self) -> Vec<Outgoing> {
        self.in_flight_bytes = 0;
        let mut messages: Vec<Outgoing> = self.in_flight.drain(..).map(|e| e.message).collect();
        messages.extend(self.pending.drain(..));
        self.send_cursor = 0;
        messages
    }

    /// Takes every queued and in-flight send, e.g. to fail them on close.
    pub(crate) fn drain_sends(&mut self) -> Vec<SendId> {
        self.in_flight_bytes = 0;
        let mut ids: Vec<SendId> = self.in_flight.drain(..).map(|e| e.message.id).collect();
        ids.extend(self.pending.drain(..).map(|m| m.id));
        self.send_cursor = 0;
        ids
    }

    /// When unacknowledged messages are due to be resent.
    pub(crate) fn retransmit_deadline(&self, rto: core::time::Duration) -> Option<Instant> {
        if self.in_flight.is_empty() || !self.is_open() {
            return None;
        }
        self.last_progress.map(|t| t + rto)
    }

    /// Go back to the first unacknowledged message (no ack progress for too long).
    pub(crate) fn on_retransmit_timeout(&mut self, now: Instant) {
        self.send_cursor = 0;
        self.last_progress = Some(now);
    }
}

#[cfg(test)]
mod tests;
