//! The driver's side of latest-wins app state (see `crate::app_state`): handing each
//! connection's newest values to the session, one update per key on its way, and
//! applying the peer's.

use interconnect_proto::{ChannelId, Code, ContentType, Exchange, StateUpdate};

use super::Driver;
use crate::app_state::FLIGHT;
use crate::sans_io::{CommandError, Receipt};
use crate::sends;
use crate::state::ConnectionEvent;

impl Driver {
    /// Sends what the connection `key` changed, if its channel is open. `all`: the
    /// channel opened, so this side's origin and every value go again.
    pub(super) fn send_states(&mut self, key: u64, all: bool) {
        let Some(entry) = self.conns.get(&key) else {
            return;
        };
        let Some(channel) = entry.channel.filter(|ch| self.session.is_open(*ch)) else {
            return;
        };
        let states = entry.slot.states.clone();
        for update in states.take_outgoing(all) {
            let id = sends::send_id(key, FLIGHT | update.flight);
            let sent = self.session.send_as(
                id,
                channel,
                update.content_type,
                Exchange::State,
                update.payload,
            );
            match sent {
                Ok(()) => {}
                Err(CommandError::TooLarge { len, max }) => {
                    // It never fits this link: given up, and the app told.
                    states.landed(update.flight, true);
                    let message = format!("a state value of {len} bytes exceeds the link's {max}");
                    self.emit(channel, error(Code::TOO_LARGE, message));
                }
                Err(CommandError::NoState) => {
                    states.unsent(update.flight);
                    if let Some(entry) = self.conns.get_mut(&key)
                        && !std::mem::replace(&mut entry.no_state_said, true)
                    {
                        let message = "the peer device reads no state (an earlier release): \\
                                       state is not sent to it";
                        self.emit(channel, error(Code::OTHERS, message.into()));
                    }
                }
                // Queue full, channel closing: it goes with the next batch.
                Err(_) => states.unsent(update.flight),
            }
        }
    }

    /// A state update's outcome: delivered, the key's newer value (if any) follows.
    pub(super) fn state_landed(&mut self, key: u64, flight: u32, delivered: bool) {
        let Some(entry) = self.conns.get(&key) else {
            return;
        };
        entry.slot.states.landed(flight, delivered);
        // A failed update waits for the next change or the next open: sending it again
        // now could fail again at once, round and round.
        if delivered {
            self.send_states(key, false);
        }
    }

    /// The peer's state update, a message of `channel`, arrived: one `State` event per
    /// key it changed, the last carrying its receipt (acknowledged when the app took it,
    /// as a message is). One that changes nothing (an older version, past the bounds,
    /// malformed) is acknowledged here.
    pub(super) fn on_peer_state(
        &mut self,
        key: u64,
        channel: ChannelId,
        content_type: ContentType,
        payload: bytes::Bytes,
        receipt: Receipt,
    ) {
        let Some(entry) = self.conns.get(&key) else {
            return;
        };
        let changes = match StateUpdate::decode(payload) {
            Ok(update) => entry.slot.states.apply(content_type, update),
            Err(error) => {
                tracing::warn!(channel = channel.0, %error, "a malformed state update: ignored");
                Vec::new()
            }
        };
        if changes.is_empty() {
            return self.session.taken(receipt);
        }
        let when_taken = self.session.config().acknowledge == crate::Acknowledge::WhenTaken;
        let last = changes.len() - 1;
        for (i, (name, value)) in changes.into_iter().enumerate() {
            let len = value.as_ref().map_or(0, |v| v.payload.len());
            if entry.slot.unread.queued(len) {
                self.session.hold_acks(receipt);
            }
            let event = ConnectionEvent::State { key: name, value };
            let receipt = (i == last && when_taken).then_some(receipt);
            entry.slot.events.send((event, receipt, None));
        }
    }
}

fn error(code: Code, message: String) -> ConnectionEvent {
    ConnectionEvent::Error { code, message }
}
