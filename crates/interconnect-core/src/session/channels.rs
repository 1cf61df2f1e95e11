//! Channels: the watch's commands (open, send, close), the phone's answers to opens, and
//! the handlers of data, acknowledgements and closes, with the round-robin data scheduler.

#[allow(unused_imports)]
use crate::prelude::*;

use crate::time::Instant;
use core::ops::Bound;

use bytes::Bytes;
use interconnect_proto::{
    Accept, Ack, Capabilities, ChannelId, Close, Code, ContentType, DataHead, Exchange, Frame,
    Open, Reject, Role,
};

use super::{
    CommandError, LinkState, MAX_CLOSED_CHANNELS, MAX_UNACKED, REOPEN_FIRST, REOPEN_MAX, Session,
    truncate_utf8,
};

use crate::channel::{Appended, Channel, ChannelState, Outgoing, Received, Run};
use crate::config::{Acknowledge, MAX_SEQ_AHEAD};
use crate::event::{ChannelEvent, ClosedBy, Event, Message, Receipt, SendId};

/// What lets a channel's next message go ([`Session::data_rules`]).
struct DataRules {
    window: crate::channel::Window,
    max_message: usize,
    states: bool,
    durable: bool,
}

impl DataRules {
    /// Why a message may not go on this link, if it may not.
    fn refuse(&self, m: &Outgoing) -> Option<Code> {
        match m.exchange {
            _ if m.payload.len() > self.max_message => Some(Code::TOO_LARGE),
            Exchange::State if !self.states => Some(Code::OTHERS),
            Exchange::Durable if !self.durable => Some(Code::OTHERS),
            _ => None,
        }
    }
}

impl Session {
    /// Watch side: a channel to the phone app `package`, optionally requiring its
    /// signature. Opens now if the link is up, otherwise when it comes up.
    pub fn open_channel(
        &mut self,
        now: Instant,
        package: &str,
        signature: Option<&str>,
    ) -> Result<ChannelId, CommandError> {
        if self.config.role != Role::Watch {
            return Err(CommandError::WrongRole(self.config.role));
        }
        let id = ChannelId(self.next_channel);
        self.next_channel = self.next_channel.wrapping_add(1).max(1);
        let mut channel = self.new_channel(id, package.into(), signature.map(Into::into));
        if self.is_link_up() {
            self.control.push_back(start_open(&mut channel, now, false));
        }
        self.channels.insert(id, channel);
        Ok(id)
    }

    /// Watch side: tries again to open a channel that was refused (e.g. after the app was
    /// installed). No effect on a channel that is open or opening.
    pub fn retry_open(&mut self, now: Instant, channel: ChannelId) {
        let up = self.is_link_up();
        if let Some(ch) = self.channels.get_mut(&channel)
            && matches!(ch.state(), ChannelState::Idle { .. })
        {
            if up {
                self.control.push_back(start_open(ch, now, false));
            } else {
                ch.go_idle(None);
            }
        }
    }

    /// Queues a message. Its outcome arrives as [`Event::Delivered`] or
    /// [`Event::SendFailed`] with the returned id.
    pub fn send(
        &mut self,
        channel: ChannelId,
        content_type: ContentType,
        exchange: Exchange,
        payload: Bytes,
    ) -> Result<SendId, CommandError> {
        let id = SendId(self.next_send);
        self.send_as(id, channel, content_type, exchange, payload)?;
        self.next_send += 1;
        Ok(id)
    }

    /// Like [`send`](Self::send), with an id the caller chose, so it can find the
    /// send's owner from the id alone (a runtime: the connection and the outcome's
    /// slot) and needs no table of its own. Ids below [`SendId::SESSION`] are the
    /// caller's; it keeps them unique among its sends not yet resolved.
    pub fn send_as(
        &mut self,
        id: SendId,
        channel: ChannelId,
        content_type: ContentType,
        exchange: Exchange,
        payload: Bytes,
    ) -> Result<(), CommandError> {
        let mut result = Ok(());
        let send = Outgoing {
            id,
            content_type,
            exchange,
            payload,
        };
        self.send_run(channel, [send], |_, error| result = Err(error));
        result
    }

    /// Queues a run of sends on `channel`, in order, each as [`send_as`](Self::send_as)
    /// would; `refused` gets each one that is not queued, with why. The channel is
    /// looked up and the link's limits read once for the run, not for each message.
    pub fn send_run(
        &mut self,
        channel: ChannelId,
        sends: impl IntoIterator<Item = Outgoing>,
        mut refused: impl FnMut(SendId, CommandError),
    ) {
        let max = self.limits().max_message_len();
        let states = self.peer_has(Capabilities::STATE);
        let durable = self.peer_has(Capabilities::DURABLE);
        let max_queued = self.config.max_queued;
        let mut ch = self.channels.get_mut(&channel);
        let closed = match ch.as_deref() {
            None => Some(CommandError::ChannelClosed),
            Some(ch) => match ch.state() {
                ChannelState::Closed => Some(CommandError::ChannelClosed),
                // A channel the phone closed or refused after it had been open waits to
                // reopen; one refused at its first open fails at once, with the refusal.
                ChannelState::Idle {
                    last_error: Some(code),
                } if ch.reopen.is_none() => Some(CommandError::Refused(code)),
                _ => None,
            },
        };
        for send in sends {
            let error = match send.exchange {
                _ if send.payload.len() > max => Some(CommandError::TooLarge {
                    len: send.payload.len(),
                    max,
                }),
                Exchange::State if !states => Some(CommandError::NoState),
                Exchange::Durable if !durable => Some(CommandError::NoDurable),
                _ => closed.clone(),
            };
            let error = match (error, ch.as_deref_mut()) {
                (Some(error), _) => error,
                (None, Some(ch)) if ch.queued() < max_queued => {
                    ch.enqueue(send);
                    continue;
                }
                (None, Some(_)) => CommandError::QueueFull(max_queued),
                (None, None) => CommandError::ChannelClosed,
            };
            refused(send.id, error);
        }
    }

    /// Gives up on a send (e.g. its timeout passed). Returns whether it was withdrawn
    /// before reaching the wire; a message already sent stays in the sequence and may
    /// still be delivered.
    pub fn cancel_send(&mut self, channel: ChannelId, id: SendId) -> bool {
        if self
            .channels
            .get_mut(&channel)
            .is_some_and(|ch| ch.cancel(id))
        {
            return true;
        }
        // Phone side, after the watch restarted: waiting, or moved to the new channel.
        for orphans in self.orphans.values_mut() {
            if let Some(at) = orphans.iter().position(|(_, m)| m.id == id) {
                orphans.remove(at);
                self.orphans.retain(|_, o| !o.is_empty());
                return true;
            }
        }
        self.channels.values_mut().any(|ch| ch.cancel(id))
    }

    /// Closes a channel with a code and reason. Unfinished sends fail with 1006.
    pub fn close(&mut self, channel: ChannelId, code: Code, reason: &str) {
        let up = self.is_link_up();
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if ch.state() == ChannelState::Closed {
            return;
        }
        let notify_peer = matches!(
            ch.state(),
            ChannelState::Open | ChannelState::Opening | ChannelState::Suspended
        );
        // What the app has is acknowledged before the close, so the peer does not send it
        // again to whoever opens this package next.
        if ch.is_open()
            && up
            && let Some(seq) = ch.take_ack()
        {
            self.control.push_back(Frame::Ack(Ack { channel, seq }));
        }
        ch.close();
        let failed = ch.drain_sends();
        self.files_on_channel_closed(channel, Code::CONNECTION_LOST);
        self.note_closed(channel);
        let mut reason = reason.to_string();
        truncate_utf8(&mut reason, interconnect_proto::MAX_REASON_LEN);
        let frame = Close {
            channel,
            code,
            reason: reason.clone(),
        };
        if notify_peer {
            if self.is_link_up() {
                self.control.push_back(Frame::Close(frame));
            } else {
                self.unsent_closes.push(frame);
            }
        }
        for id in failed {
            self.events
                .push_back(Event::SendFailed(channel, id, Code::CONNECTION_LOST));
        }
        self.events.push_back(Event::Channel(
            channel,
            ChannelEvent::Close {
                code,
                reason,
                by: ClosedBy::Local,
                reopens: false,
            },
        ));
    }

    /// The app has taken the message `receipt` names: with
    /// [`Acknowledge::WhenTaken`](crate::Acknowledge::WhenTaken) it is acknowledged to
    /// the peer now (with everything before it).
    pub fn taken(&mut self, receipt: Receipt) {
        let Some(ch) = self.channels.get_mut(&receipt.channel) else {
            return;
        };
        if ch.life == receipt.life {
            ch.on_taken(receipt.seq);
        }
    }

    pub(super) fn new_channel(
        &self,
        id: ChannelId,
        package: String,
        signature: Option<String>,
    ) -> Channel {
        let channel = Channel::new(id, package, signature);
        if self.config.acknowledge == Acknowledge::WhenTaken {
            channel.acknowledge_when_taken()
        } else {
            channel
        }
    }

    /// What lets a channel's next message go: its window, and the messages refused.
    fn data_rules(&self) -> DataRules {
        DataRules {
            window: crate::channel::Window {
                messages: self.config.max_in_flight,
                bytes: self.config.max_in_flight_bytes,
            },
            max_message: self.limits().max_message_len(),
            // A state update goes only to a peer that reads them (an older one would
            // take the frame for a malformed one and drop the link).
            states: self.peer_has(Capabilities::STATE),
            durable: self.peer_has(Capabilities::DURABLE),
        }
    }

    /// The channel whose turn it is to send data: round-robin over open channels with
    /// something to send. Takes its turn.
    fn data_turn(&mut self, window: crate::channel::Window) -> Option<ChannelId> {
        let ready = |c: &Channel| c.is_open() && c.has_data(window);
        let candidate = if self.channels.len() == 1 {
            // One channel, as a watch app's or a phone hub's single app has: no turns to
            // take, and no range of the map to walk for each frame.
            self.channels
                .iter()
                .find(|(_, c)| ready(c))
                .map(|(id, _)| *id)?
        } else {
            let after = match self.rr_last {
                Some(last) => (Bound::Excluded(last), Bound::Unbounded),
                None => (Bound::Unbounded, Bound::Unbounded),
            };
            self.channels
                .range(after)
                .chain(self.channels.iter())
                .find(|(_, c)| ready(c))
                .map(|(id, _)| *id)?
        };
        self.rr_last = Some(candidate);
        Some(candidate)
    }

    /// Round-robin over open channels with something to send.
    pub(super) fn next_data(&mut self, now: Instant) -> Option<Frame> {
        let rules = self.data_rules();
        loop {
            let candidate = self.data_turn(rules.window)?;
            let ch = self.channels.get_mut(&candidate)?;
            match ch.next_data(now, rules.window, |m| rules.refuse(m)) {
                Ok(data) => return data.map(Frame::Data),
                Err((message, code)) => self
                    .events
                    .push_back(Event::SendFailed(candidate, message.id, code)),
            }
        }
    }

    /// Like [`next_data`](Self::next_data), but appends the frame to `dst` (unsealed)
    /// while `dst` stays within `limit` bytes, without building it: the path of each
    /// message of a sealed batch. A frame that does not fit stays where it was, and so
    /// does the turn. The only channel appends its whole run at once (`Full` or
    /// `Nothing` then says why it ended).
    pub(super) fn append_data(
        &mut self,
        now: Instant,
        max_frame_len: usize,
        run: &mut Run<'_>,
    ) -> Appended {
        let rules = self.data_rules();
        let alone = self.channels.len() == 1;
        loop {
            let last = self.rr_last;
            let Some(candidate) = self.data_turn(rules.window) else {
                return Appended::Nothing;
            };
            let Some(ch) = self.channels.get_mut(&candidate) else {
                return Appended::Nothing;
            };
            let refuse = |m: &Outgoing| rules.refuse(m);
            loop {
                match ch.append_data(now, rules.window, refuse, max_frame_len, run) {
                    // One channel takes no turns: its run goes on until the batch is
                    // full or the channel has nothing more.
                    Ok(Appended::Frame) if alone => {}
                    Ok(Appended::Full) => {
                        self.rr_last = last;
                        return Appended::Full;
                    }
                    Ok(appended) => return appended,
                    Err((message, code)) => {
                        let failed = Event::SendFailed(candidate, message.id, code);
                        self.events.push_back(failed);
                        if !alone {
                            break;
                        }
                    }
                }
            }
        }
    }

    pub(super) fn reject(&mut self, channel: ChannelId, code: Code, reason: String) {
        self.control.push_back(Frame::Reject(Reject {
            channel,
            code,
            reason,
        }));
    }

    /// Phone side: a watch app asks for a channel to one of our apps.
    pub(super) fn on_open(&mut self, now: Instant, open: Open) {
        if self.config.role != Role::Phone {
            return self.protocol_error(Code::PROTOCOL_ERROR, "open sent to a watch".into());
        }
        let Some(app) = self.apps.get(&open.package) else {
            return self.reject(
                open.channel,
                Code::APP_UNINSTALLED,
                format!("no app with package {} is installed", open.package),
            );
        };
        if !app.attached {
            return self.reject(
                open.channel,
                Code::APP_NOT_CONNECTED,
                format!("app {} is not connected", open.package),
            );
        }
        if let Some(wanted) = &open.signature
            && app.signature.as_deref() != Some(wanted.as_str())
        {
            return self.reject(
                open.channel,
                Code::SIGNATURE_MISMATCH,
                format!("app {} has a different signature", open.package),
            );
        }
        let version = app.version;
        if let Some(ch) = self.channels.get(&open.channel)
            && ch.package != open.package
            && ch.state() != ChannelState::Closed
        {
            // A channel id names one package for as long as the channel lives: another
            // package's open on it would inherit the first app's messages.
            return self.reject(
                open.channel,
                Code::PROTOCOL_ERROR,
                format!("channel {} belongs to another package", open.channel.0),
            );
        }
        if let Some(ch) = self.channels.get(&open.channel)
            && ch.is_open()
            && ch.package == open.package
        {
            // The open was sent again (our accept was lost, or the open duplicated):
            // answer again without touching the channel, as the first time (the count
            // received is today's).
            let received_seq = ch.acknowledged();
            self.control.push_back(Frame::Accept(Accept {
                channel: open.channel,
                app_version: version,
                received_seq,
                resumed: ch.resumed,
            }));
            return;
        }
        // One channel per package: a new one replaces an older one.
        let stale: Vec<ChannelId> = self
            .channels
            .values()
            .filter(|c| {
                c.package == open.package
                    && c.id != open.channel
                    && c.state() != ChannelState::Closed
            })
            .map(|c| c.id)
            .collect();
        for id in stale {
            self.close(id, Code::OTHERS, "replaced by a new channel");
        }
        // A channel this side still holds resumes whether or not the open asked for it:
        // the watch may not know that an earlier open was accepted (the accept was lost
        // with the link), and it has then received nothing (`received_seq` is 0).
        let resumable = self.channels.get(&open.channel).is_some_and(|c| {
            c.state() == ChannelState::Suspended
                && c.package == open.package
                && open.received_seq <= c.last_sent_seq()
        });
        let mut delivered = Vec::new();
        let (is_reconnected, received) = if resumable {
            match self.channels.get_mut(&open.channel) {
                Some(ch) => {
                    delivered = ch.resume(now, open.received_seq);
                    ch.on_opened();
                    // What the app has not taken stays the sender's to resend.
                    (true, ch.acknowledged())
                }
                None => (false, 0),
            }
        } else {
            // The watch restarted the channel: what it had not acknowledged is sent
            // again, after what an earlier channel of the package left for this device.
            // What was held for another device fails: it took the channel.
            let mut again =
                self.take_orphans(&open.package, self.peer_owner, Code::CONNECTION_LOST);
            if let Some(mut old) = self.channels.remove(&open.channel)
                && old.package == open.package
            {
                again.extend(old.take_unacknowledged());
                self.files_on_channel_closed(open.channel, Code::CONNECTION_LOST);
            }
            // The signature the watch asked for, checked again if the app registers anew.
            let mut ch = self.new_channel(open.channel, open.package.clone(), open.signature);
            for message in again {
                ch.enqueue(message);
            }
            ch.on_opened();
            self.channels.insert(open.channel, ch);
            (false, 0)
        };
        if let Some(ch) = self.channels.get_mut(&open.channel) {
            ch.was_open = true;
            ch.app_version = Some(version);
            ch.resumed = resumable;
        }
        if !delivered.is_empty() {
            self.events
                .push_back(Event::Delivered(open.channel, delivered));
        }
        self.control.push_back(Frame::Accept(Accept {
            channel: open.channel,
            app_version: version,
            received_seq: received,
            resumed: resumable,
        }));
        self.events.push_back(Event::Channel(
            open.channel,
            ChannelEvent::Open { is_reconnected },
        ));
        self.files_on_channel_open(now, open.channel, !resumable);
    }

    /// Watch side: the phone accepted our open.
    pub(super) fn on_accept(&mut self, now: Instant, accept: Accept) {
        let Some(ch) = self.channels.get_mut(&accept.channel) else {
            return;
        };
        if ch.state() != ChannelState::Opening {
            return;
        }
        let delivered = if accept.resumed {
            if accept.received_seq > ch.last_sent_seq() {
                return self.protocol_error(
                    Code::PROTOCOL_ERROR,
                    "accept acknowledges messages never sent".into(),
                );
            }
            ch.resume(now, accept.received_seq)
        } else {
            ch.restart();
            Vec::new()
        };
        // Reopened after a link drop, or after the phone closed it or restarted.
        let is_reconnected = ch.was_open;
        ch.on_opened();
        ch.app_version = Some(accept.app_version);
        let id = ch.id;
        if !delivered.is_empty() {
            self.events.push_back(Event::Delivered(id, delivered));
        }
        self.events
            .push_back(Event::Channel(id, ChannelEvent::Open { is_reconnected }));
        self.files_on_channel_open(now, id, !accept.resumed);
    }

    /// Watch side: the phone refused our open.
    pub(super) fn on_reject(&mut self, now: Instant, reject: Reject) {
        let Some(ch) = self.channels.get_mut(&reject.channel) else {
            return;
        };
        if ch.state() != ChannelState::Opening {
            return;
        }
        ch.go_idle(Some(reject.code));
        // A channel that had been open waits for the phone app to come back (its sends
        // wait too); one refused at its first open is over.
        let reopens = ch.was_open;
        let announced = ch.reopen.is_some();
        if reopens {
            ch.restart();
            let delay = ch
                .reopen
                .map_or(REOPEN_FIRST, |(_, d)| (d * 2).min(REOPEN_MAX));
            ch.reopen = Some((now + delay, delay));
        } else {
            for send in ch.drain_sends() {
                self.events
                    .push_back(Event::SendFailed(reject.channel, send, reject.code));
            }
        }
        if reopens {
            self.files_on_channel_paused(reject.channel, reject.code);
        } else {
            self.files_on_channel_closed(reject.channel, reject.code);
        }
        if announced {
            return tracing::debug!(channel = reject.channel.0, code = %reject.code, "reopen refused");
        }
        if reopens {
            self.events.push_back(Event::Channel(
                reject.channel,
                ChannelEvent::Close {
                    code: reject.code,
                    reason: reject.reason.clone(),
                    by: ClosedBy::Peer,
                    reopens: true,
                },
            ));
        }
        self.events.push_back(Event::Channel(
            reject.channel,
            ChannelEvent::Error {
                code: reject.code,
                message: reject.reason,
            },
        ));
    }

    pub(super) fn on_data(&mut self, data: DataHead, payload: Bytes) {
        // One number both ways: a message this side could not send is not taken either,
        // even when the peer's sub-header left room for it in the frame.
        if let LinkState::Up(up) = &self.link
            && payload.len() > up.limits.max_message_len()
        {
            let max = up.limits.max_message_len();
            return self.protocol_error(
                Code::TOO_LARGE,
                format!(
                    "message of {} bytes exceeds the maximum of {max}",
                    payload.len()
                ),
            );
        }
        let Some(ch) = self.channels.get_mut(&data.channel) else {
            return tracing::debug!(channel = data.channel.0, "data for an unknown channel");
        };
        if ch.state() == ChannelState::Closed {
            // Our close was lost: say it again.
            self.control.push_back(Frame::Close(Close {
                channel: data.channel,
                code: Code::OTHERS,
                reason: "channel is closed".into(),
            }));
            return;
        }
        if !ch.is_open() {
            return;
        }
        let unacked = ch.received.saturating_sub(ch.acknowledged());
        if unacked >= MAX_UNACKED && data.seq > ch.received {
            return self.protocol_error(
                Code::TOO_LARGE,
                format!(
                    "{unacked} messages unacknowledged on channel {}: the peer sends past \
                     the receive window",
                    data.channel.0
                ),
            );
        }
        match ch.on_data(data.seq, MAX_SEQ_AHEAD) {
            Received::Deliver => self.events.push_back(Event::Channel(
                data.channel,
                ChannelEvent::Message(Message {
                    content_type: data.content_type,
                    exchange: data.exchange,
                    payload,
                    receipt: Receipt {
                        channel: data.channel,
                        life: ch.life,
                        seq: data.seq,
                    },
                }),
            )),
            Received::Gap if self.config.reliable_link => self.drop_link(
                Code::PROTOCOL_ERROR,
                "a message is missing on a link that does not lose frames".into(),
            ),
            Received::Duplicate | Received::Gap => {}
            Received::Impossible => {
                let expected = ch.received + 1;
                self.protocol_error(
                    Code::PROTOCOL_ERROR,
                    format!(
                        "sequence number {} on channel {} is far beyond the expected {expected}",
                        data.seq, data.channel.0
                    ),
                );
            }
        }
    }

    pub(super) fn on_ack(&mut self, now: Instant, ack: Ack) {
        let Some(ch) = self.channels.get_mut(&ack.channel) else {
            return;
        };
        if !ch.is_open() {
            return;
        }
        match ch.on_ack(now, ack.seq) {
            Ok(done) if done.is_empty() => {}
            Ok(done) => self.events.push_back(Event::Delivered(ack.channel, done)),
            Err(()) => {
                let sent = ch.last_sent_seq();
                self.protocol_error(
                    Code::PROTOCOL_ERROR,
                    format!(
                        "ack of sequence number {} on channel {}, only {sent} were sent",
                        ack.seq, ack.channel.0
                    ),
                );
            }
        }
    }

    /// Remembers a closed channel; on a phone, frees the oldest beyond the ones kept.
    pub(super) fn note_closed(&mut self, channel: ChannelId) {
        if self.config.role != Role::Phone {
            return;
        }
        self.closed.retain(|id| *id != channel);
        self.closed.push_back(channel);
        while self.closed.len() > MAX_CLOSED_CHANNELS {
            if let Some(old) = self.closed.pop_front()
                && self
                    .channels
                    .get(&old)
                    .is_some_and(|c| c.state() == ChannelState::Closed)
            {
                self.channels.remove(&old);
            }
        }
    }

    pub(super) fn on_close(&mut self, now: Instant, close: Close) {
        let Some(ch) = self.channels.get_mut(&close.channel) else {
            return;
        };
        if ch.state() == ChannelState::Closed {
            return;
        }
        let reopens = self.config.role == Role::Watch && ch.was_open;
        if reopens {
            // The phone app closed, or the phone is shutting down: open again when it
            // is back (at the next link, or after `REOPEN_FIRST`), sends waiting.
            if ch.reopen.is_some() && !ch.is_open() {
                return;
            }
            ch.restart();
            ch.go_idle(None);
            ch.reopen = Some((now + REOPEN_FIRST, REOPEN_FIRST));
        } else {
            ch.close();
            for send in ch.drain_sends() {
                self.events.push_back(Event::SendFailed(
                    close.channel,
                    send,
                    Code::CONNECTION_LOST,
                ));
            }
        }
        if reopens {
            self.files_on_channel_paused(close.channel, Code::CONNECTION_LOST);
        } else {
            self.files_on_channel_closed(close.channel, Code::CONNECTION_LOST);
            self.note_closed(close.channel);
        }
        self.events.push_back(Event::Channel(
            close.channel,
            ChannelEvent::Close {
                code: close.code,
                reason: close.reason,
                by: ClosedBy::Peer,
                reopens,
            },
        ));
    }
}

/// Builds the open frame for a channel and marks it opening, so a lost open or a lost
/// answer is sent again after the retransmit timeout.
pub(super) fn start_open(ch: &mut Channel, now: Instant, resume: bool) -> Frame {
    ch.on_open_sent(now, resume);
    open_frame(ch, resume)
}

fn open_frame(ch: &Channel, resume: bool) -> Frame {
    Frame::Open(Open {
        channel: ch.id,
        package: ch.package.clone(),
        signature: ch.signature.clone(),
        resume,
        received_seq: if resume { ch.acknowledged() } else { 0 },
    })
}
