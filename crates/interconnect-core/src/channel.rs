//! One channel's state: open/close lifecycle and reliable, ordered, exactly-once delivery
//! (per-direction sequence numbers, cumulative acks, go-back-N resending).

#[allow(unused_imports)]
use crate::prelude::*;

use crate::time::Instant;
use alloc::collections::VecDeque;

use bytes::Bytes;
use interconnect_proto::{ChannelId, Code, ContentType, Data, Exchange};

use crate::event::SendId;

/// Where a channel stands.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// A message waiting for a sequence number.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) id: SendId,
    pub(crate) content_type: ContentType,
    pub(crate) exchange: Exchange,
    pub(crate) payload: Bytes,
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
    pub(crate) state: ChannelState,
    /// The phone app's version, once accepted.
    pub(crate) app_version: Option<u32>,
    /// Whether the channel has been open before (for `is_reconnected`).
    pub(crate) was_open: bool,
    pending: VecDeque<Outgoing>,
    in_flight: VecDeque<InFlight>,
    /// Index into `in_flight` of the next message to (re)transmit.
    send_cursor: usize,
    next_seq: u64,
    /// Highest sequence number received in order.
    pub(crate) received: u64,
    pub(crate) ack_pending: bool,
    /// While the app does not take its messages: the highest sequence number this side
    /// acknowledges, so the sender's window fills and its sends wait.
    pub(crate) ack_limit: Option<u64>,
    /// Last time the peer's acks made progress (or the first send after quiet).
    last_progress: Option<Instant>,
    /// When the pending open was last sent, and whether it asked to resume.
    pub(crate) open_sent: Option<(Instant, bool)>,
    /// With acknowledgements on take: the highest sequence number the app has taken.
    pub(crate) taken: Option<u64>,
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
            send_cursor: 0,
            next_seq: 1,
            received: 0,
            ack_pending: false,
            ack_limit: None,
            last_progress: None,
            open_sent: None,
            taken: None,
            life: next_life(),
            reopen: None,
            resumed: false,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state == ChannelState::Open
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
        max_in_flight: usize,
        fits: impl Fn(&Bytes) -> bool,
    ) -> Result<Option<Data>, Outgoing> {
        if self.send_cursor >= self.in_flight.len() {
            if self.in_flight.len() >= max_in_flight {
                return Ok(None);
            }
            let Some(message) = self.pending.pop_front() else {
                return Ok(None);
            };
            if !fits(&message.payload) {
                return Err(message);
            }
            let seq = self.next_seq;
            self.next_seq += 1;
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

    /// Whether a data frame could be produced now (used for round-robin scheduling).
    pub(crate) fn has_data(&self, max_in_flight: usize) -> bool {
        self.send_cursor < self.in_flight.len()
            || (self.in_flight.len() < max_in_flight && !self.pending.is_empty())
    }

    /// Highest sequence number ever assigned.
    pub(crate) fn last_sent_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Applies a cumulative ack; returns the sends it completes, or `Err` for an ack of a
    /// sequence number never sent.
    pub(crate) fn on_ack(&mut self, now: Instant, seq: u64) -> Result<Vec<SendId>, ()> {
        if seq > self.last_sent_seq() {
            return Err(());
        }
        let mut done = Vec::new();
        while let Some(front) = self.in_flight.front() {
            if front.seq > seq {
                break;
            }
            if let Some(entry) = self.in_flight.pop_front() {
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
        self.ack_pending = true;
        if seq <= self.received {
            Received::Duplicate
        } else if seq == self.received + 1 {
            self.received = seq;
            Received::Deliver
        } else if seq - self.received > max_ahead {
            Received::Impossible
        } else {
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
        while let Some(entry) = self.in_flight.pop_back() {
            self.pending.push_front(entry.message);
        }
        self.next_seq = 1;
        self.received = 0;
        self.taken = self.taken.map(|_| 0);
        self.ack_limit = self.ack_limit.map(|_| 0);
        self.life = next_life();
        self.rewind();
    }

    /// Takes every message the peer has not acknowledged, oldest first, to send again
    /// on another channel.
    pub(crate) fn take_unacknowledged(&mut self) -> Vec<Outgoing> {
        let mut messages: Vec<Outgoing> = self.in_flight.drain(..).map(|e| e.message).collect();
        messages.extend(self.pending.drain(..));
        self.send_cursor = 0;
        messages
    }

    /// Takes every queued and in-flight send, e.g. to fail them on close.
    pub(crate) fn drain_sends(&mut self) -> Vec<SendId> {
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
