//! Routing: which handle a channel, a send or an event belongs to; the state each
//! handle reads; sends waiting for room or for a restarted watch; releasing a handle.

use std::collections::VecDeque;

use interconnect_proto::{ChannelId, Code, Exchange, Role};

use super::durable::durable_mark;
use super::{ConnEntry, Driver, VersionReplyTo, WaitingSend};
use crate::app_state::FLIGHT;
use crate::error::Error;
use crate::outbox::DURABLE;
use crate::sans_io::{ChannelEvent, Outgoing, SendId, Session};
use crate::sends::{self, Queued};
use crate::state::{ConnState, ConnectionEvent, Incoming};

impl Driver {
    /// Sends an app event to the connection that owns `channel`.
    pub(super) fn emit(&self, channel: ChannelId, event: ConnectionEvent) {
        if let Some(entry) = self
            .by_channel
            .get(&channel)
            .and_then(|k| self.conns.get(k))
        {
            entry.slot.events.send((event, None, None));
        }
    }

    /// A send's outcome, to the slot its id names.
    pub(super) fn finish_send(&mut self, id: SendId, result: Result<(), Error>) {
        let (key, slot) = sends::split(id);
        if slot & FLIGHT != 0 {
            return self.state_landed(key, slot & !FLIGHT, result.is_ok());
        }
        if slot & DURABLE != 0 {
            return self.durable_landed(key, slot & !DURABLE, result);
        }
        if let Some(entry) = self.conns.get(&key) {
            entry.slot.sends.complete(slot, result);
        }
    }

    /// Withdraws a send that has not left yet; whether it was withdrawn (it still
    /// waited for room, or had no sequence number yet). A withdrawn send's future, if
    /// it still waits, hears so.
    pub(super) fn cancel_send(&mut self, key: u64, slot: u32) -> bool {
        let Some(entry) = self.conns.get(&key) else {
            return false;
        };
        let mut unsent = false;
        if let Some(waiting) = self.waiting.get_mut(&key) {
            let before = waiting.len();
            waiting.retain(|w| w.slot != slot);
            unsent = waiting.len() < before;
        }
        if !unsent && let Some(channel) = entry.channel {
            unsent = self.session.cancel_send(channel, sends::send_id(key, slot));
        }
        if unsent {
            let withdrawn = Err(Error::SendTimeout { withdrawn: true });
            entry.slot.sends.complete(slot, withdrawn);
        }
        unsent
    }

    /// The connection whose current channel `channel` is, if one is already: its
    /// messages can be queued to the app in a run (`complete_inbound`). Otherwise each
    /// goes through `on_channel_event`.
    pub(super) fn routes(&self, channel: ChannelId) -> Option<u64> {
        let key = *self.by_channel.get(&channel)?;
        let entry = self.conns.get(&key)?;
        (entry.channel == Some(channel)).then_some(key)
    }

    /// Queues the run of messages gathered in `inbound` to their app under one lock,
    /// each as `on_channel_event` would.
    pub(super) fn complete_inbound(&mut self) {
        let Some((channel, key)) = self.inbound.0.take() else {
            return;
        };
        // Nothing between `routes` and now changed the routes: any other event
        // completes the run first.
        let Some(entry) = self.conns.get(&key) else {
            self.inbound.1.clear();
            return;
        };
        let messages = &mut self.inbound.1;
        // Counted unread as one run: the message that filled the bound, if one did,
        // holds the channel's acknowledgements (as `take_in` does for each alone).
        let lens = messages.iter().map(|m| m.payload.len());
        if let Some(at) = entry.slot.unread.queued_run(lens)
            && let Some(message) = messages.get(at)
        {
            tracing::debug!(channel = channel.0, "the app is not reading: acks held");
            self.session.hold_acks(message.receipt);
        }
        let when_taken = self.session.config().acknowledge == crate::Acknowledge::WhenTaken;
        let run = messages.drain(..).map(|message| {
            let receipt = when_taken.then_some(message.receipt);
            (ConnectionEvent::Message(incoming(message)), receipt, None)
        });
        entry.slot.events.send_run(run);
    }

    pub(super) fn on_channel_event(&mut self, channel: ChannelId, event: ChannelEvent) {
        let _span = tracing::debug_span!("channel", id = channel.0).entered();
        let key = match self.by_channel.get(&channel) {
            Some(key) => *key,
            None => {
                // Phone side: a new channel for a registered app.
                let Some(package) = self.session.channel_package(channel) else {
                    return;
                };
                let Some(key) = self.by_package.get(package).copied() else {
                    return;
                };
                if let Some(entry) = self.conns.get_mut(&key)
                    && let Some(old) = entry.channel.replace(channel)
                {
                    self.by_channel.remove(&old);
                }
                self.by_channel.insert(channel, key);
                key
            }
        };
        let Some(entry) = self.conns.get_mut(&key) else {
            return;
        };
        if entry.channel != Some(channel) {
            return; // an older channel of this app
        }
        let mut receipt = None;
        let mut mark = None;
        let mut opened = false;
        let app_event = match event {
            ChannelEvent::Open { is_reconnected } => {
                opened = true;
                ConnectionEvent::Open { is_reconnected }
            }
            ChannelEvent::Close {
                code,
                reason,
                by,
                reopens,
            } => {
                if self.session.is_closed(channel) {
                    fail_requests(entry, Error::ConnectionLost);
                }
                ConnectionEvent::Close {
                    code,
                    reason,
                    by,
                    reopens,
                }
            }
            ChannelEvent::Error { code, message } => ConnectionEvent::Error { code, message },
            ChannelEvent::Message(message) if message.exchange == Exchange::State => {
                let (ct, payload, at) = (message.content_type, message.payload, message.receipt);
                return self.on_peer_state(key, channel, ct, payload, at);
            }
            ChannelEvent::Message(mut message) => {
                if message.exchange == Exchange::Durable {
                    let peer = self.session.peer();
                    let marked = durable_mark(peer, &entry.package, &self.cursors, &message);
                    let Some((durable, payload)) = marked else {
                        return self.session.taken(message.receipt);
                    };
                    mark = Some(Box::new(durable));
                    message.payload = payload;
                }
                if let Exchange::Reply(id) = message.exchange {
                    // A reply goes to its request's caller, which takes it at once.
                    self.session.taken(message.receipt);
                    if let Some(waiter) = entry.requests.remove(&id) {
                        let _ = waiter.send(Ok(incoming(message)));
                    }
                    return;
                }
                let (incoming, taken) =
                    take_in(&mut self.session, &entry.slot.unread, channel, message);
                receipt = taken;
                ConnectionEvent::Message(incoming)
            }
        };
        // The state an app reads agrees with the events it was given: open from the
        // Open event on, closed from the Close event on (the session may already be
        // further along; its later events are on their way). Messages leave it alone.
        let open = match app_event {
            ConnectionEvent::Open { .. } => Some(true),
            ConnectionEvent::Close { .. } => Some(false),
            _ => None,
        };
        if let Some(open) = open {
            let state = ConnState {
                open,
                ..self.conn_state(Some(channel))
            };
            if let Some(entry) = self.conns.get_mut(&key) {
                publish(entry, state);
            }
        }
        if let Some(entry) = self.conns.get(&key) {
            entry.slot.events.send((app_event, receipt, mark));
        }
        if opened {
            // Every value again, after this side's origin (see `app_state`).
            self.send_states(key, true);
            self.send_durables(key, true);
        }
    }

    pub(super) fn publish_states(&mut self) {
        let (session, refused) = (&self.session, self.refused);
        for entry in self.conns.values_mut() {
            let mut state = conn_state(session, refused, entry.channel);
            // Only the Open and Close events move `open` (see `on_channel_event`).
            state.open = entry.published.open;
            publish(entry, state);
        }
    }

    /// Watch side: the phone refused the link. Each connection's state says so (so
    /// diagnosis does), and, the first time a lasting refusal with this code comes
    /// since the link was last up, its events say it too.
    pub(super) fn on_link_refused(&mut self, code: Code, lasting: bool, message: &str) {
        let again = self.refused.is_some_and(|(c, _)| c == code);
        self.refused = Some((code, lasting));
        if lasting && !again {
            for entry in self.conns.values() {
                let error = ConnectionEvent::Error {
                    code,
                    message: message.to_string(),
                };
                entry.slot.events.send((error, None, None));
            }
        }
    }

    /// What the session says of a connection's channel.
    pub(super) fn conn_state(&self, channel: Option<ChannelId>) -> ConnState {
        conn_state(&self.session, self.refused, channel)
    }

    /// Sends a version query; its reply goes to `reply`.
    pub(super) fn query_version(&mut self, package: &str, reply: VersionReplyTo) {
        match self.session.query_version(package) {
            Ok(request) => {
                self.version_queries.insert(request, reply);
            }
            Err(error) => {
                let _ = reply.send(Err(error.into()));
            }
        }
    }

    /// A batch of sends a connection queued, in call order: each goes into its
    /// channel's queue, or waits behind those already waiting when it must wait for room
    /// (or, on the phone, for a restarted watch to open the app's channel). The
    /// connection's channel and waiting queue are looked up once for the batch.
    pub(super) fn on_sends(&mut self, key: u64, batch: &mut VecDeque<Queued>) {
        let Some(entry) = self.conns.get(&key) else {
            batch.clear(); // its handles are gone, and their outcomes with them
            return;
        };
        let (channel, sends) = (entry.channel, entry.slot.sends.clone());
        let reopen = self.session.awaits_reopen(&entry.package);
        let mut waiting = self.waiting.remove(&key).unwrap_or_default();
        // Room counted down as sends start (one that fails takes none, so this may
        // say less than there is: what waits for that is admitted before the next
        // transmission, `admit_waiting`).
        let mut room = channel.map_or(usize::MAX, |ch| self.session.room(ch));
        while !batch.is_empty() {
            // The sends that start now, as one run; then those that wait behind them
            // (once one waits, every later one that may wait does).
            let mut run = 0;
            for send in batch.iter() {
                let wait = send.wait
                    && (reopen || channel.is_some() && (!waiting.is_empty() || room == 0));
                if wait {
                    break;
                }
                room = room.saturating_sub(1);
                run += 1;
            }
            if run > 0 {
                self.start_run(key, channel, &sends, batch.drain(..run));
            }
            let waits = batch.iter().take_while(|send| send.wait).count();
            waiting.extend(batch.drain(..waits));
        }
        if !waiting.is_empty() {
            self.waiting.insert(key, waiting);
        }
    }

    /// Puts a run of one connection's sends into its channel's queue, in order; a send
    /// without a channel, or one the session refuses, fails at once.
    fn start_run(
        &mut self,
        key: u64,
        channel: Option<ChannelId>,
        sends: &sends::Sends,
        run: impl Iterator<Item = WaitingSend>,
    ) {
        let Some(channel) = channel else {
            return run.for_each(|send| sends.complete(send.slot, Err(Error::ConnectionLost)));
        };
        let run = run.map(|send| Outgoing {
            id: sends::send_id(key, send.slot),
            content_type: send.content_type,
            exchange: send.exchange,
            payload: send.payload,
        });
        self.session.send_run(channel, run, |id, error| {
            sends.complete(sends::split(id).1, Err(Error::from(error)));
        });
    }

    /// Moves waiting sends into their channels' queues while there is room, in call
    /// order. A send whose future was dropped goes too (fire and forget); one that timed
    /// out left the queue when it was withdrawn (`cancel_send`).
    pub(super) fn admit_waiting(&mut self) {
        let keys: Vec<u64> = self.waiting.keys().copied().collect();
        for key in keys {
            let Some(entry) = self.conns.get(&key) else {
                self.waiting.remove(&key);
                continue;
            };
            if self.session.awaits_reopen(&entry.package) {
                continue; // until the restarted watch opens the app's channel
            }
            let (channel, sends) = (entry.channel, entry.slot.sends.clone());
            let Some(mut waiting) = self.waiting.remove(&key) else {
                continue;
            };
            // Without a channel every send fails at once (`start_run`).
            let room = channel.map_or(usize::MAX, |ch| self.session.room(ch));
            self.start_run(
                key,
                channel,
                &sends,
                waiting.drain(..room.min(waiting.len())),
            );
            if !waiting.is_empty() {
                self.waiting.insert(key, waiting);
            }
        }
    }

    /// The last handle of a connection is gone: close its channel (watch) or detach the
    /// app (phone).
    pub(super) fn release(&mut self, key: u64) {
        let Some(entry) = self.conns.remove(&key) else {
            return;
        };
        for send in self.waiting.remove(&key).into_iter().flatten() {
            entry
                .slot
                .sends
                .complete(send.slot, Err(Error::ConnectionLost));
        }
        match self.session.config().role {
            Role::Watch => {
                if let Some(ch) = entry.channel {
                    self.session.close(ch, Code::OTHERS, "connection released");
                    self.by_channel.remove(&ch);
                }
            }
            Role::Phone => {
                if self.by_package.get(&entry.package) == Some(&key) {
                    self.by_package.remove(&entry.package);
                    self.session.set_app_attached(&entry.package, false);
                }
                if let Some(ch) = entry.channel {
                    self.by_channel.remove(&ch);
                }
            }
        }
    }
}

pub(super) fn fail_requests(entry: &mut ConnEntry, error: Error) {
    for (_, waiter) in entry.requests.drain() {
        let _ = waiter.send(Err(error.clone()));
    }
}

/// Publishes a connection's state, waking its watchers only on a change.
pub(super) fn publish(entry: &mut ConnEntry, state: ConnState) {
    if entry.published == state {
        return;
    }
    entry.published = state.clone();
    entry.slot.state.send_replace(state);
}

/// What the session says of a connection's channel.
fn conn_state(
    session: &Session,
    refused: Option<(Code, bool)>,
    channel: Option<ChannelId>,
) -> ConnState {
    match channel {
        Some(ch) => {
            let status = session.channel_status(ch);
            ConnState {
                open: status.open,
                connecting: status.connecting,
                last_error: status.last_error,
                closed: status.closed,
                app_version: status.app_version,
                refused,
            }
        }
        // Phone side before the watch opened a channel: waiting for it.
        None => ConnState {
            connecting: true,
            ..ConnState::default()
        },
    }
}

/// A message on its way to its app's inbox: counted unread (the peer's acknowledgements
/// are held once the app does not read), with the receipt that acknowledges it once the
/// app took it, under `Acknowledge::WhenTaken`.
fn take_in(
    session: &mut Session,
    unread: &crate::state::Unread,
    channel: ChannelId,
    message: crate::sans_io::Message,
) -> (Incoming, Option<crate::sans_io::Receipt>) {
    if unread.queued(message.payload.len()) {
        tracing::debug!(channel = channel.0, "the app is not reading: acks held");
        session.hold_acks(message.receipt);
    }
    let when_taken = session.config().acknowledge == crate::Acknowledge::WhenTaken;
    let receipt = when_taken.then_some(message.receipt);
    (incoming(message), receipt)
}

/// What the app gets of a message.
fn incoming(message: crate::sans_io::Message) -> Incoming {
    Incoming {
        content_type: message.content_type,
        payload: message.payload,
        request_id: match message.exchange {
            Exchange::Request(id) => Some(id),
            _ => None,
        },
    }
}
