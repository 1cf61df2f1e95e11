//! The driver's side of durable messages (see `crate::outbox` and `crate::cursors`):
//! handing each connection's committed messages to the session in order, hearing their
//! outcomes, and marking the peer's for the app to take once.

use std::sync::Arc;

use bytes::Bytes;
use interconnect_proto::{Code, DurableHead, Exchange};

use super::Driver;
use crate::cursors::Cursors;
use crate::error::Error;
use crate::inbox::Mark;
use crate::outbox::{DURABLE, Landed};
use crate::sans_io::{CommandError, Message, PeerInfo};
use crate::sends;
use crate::state::ConnectionEvent;

impl Driver {
    /// Hands the session what the connection `key`'s outbox holds ready, if its channel
    /// is open; `opened`: it just opened, so everything goes again (`Outbox::reset`).
    pub(super) fn send_durables(&mut self, key: u64, opened: bool) {
        let Some(entry) = self.conns.get(&key) else {
            return;
        };
        let Some(channel) = entry.channel.filter(|ch| self.session.is_open(*ch)) else {
            return;
        };
        let outbox = entry.slot.outbox.clone();
        if opened {
            outbox.reset();
        }
        let mut refused = false;
        for message in outbox.take_outgoing() {
            if refused {
                // Nothing after a refused one, so numbers stay in order.
                outbox.unsent(message.flight);
                continue;
            }
            let id = sends::send_id(key, DURABLE | message.flight);
            let sent = self.session.send_as(
                id,
                channel,
                message.content_type,
                Exchange::Durable,
                message.payload,
            );
            match sent {
                Ok(()) => continue,
                Err(CommandError::TooLarge { len, max }) => {
                    // Given up (it never fits): the ones after it may go.
                    let too_large = Err(Error::TooLarge { len, max });
                    self.durable_landed(key, message.flight, too_large);
                    continue;
                }
                Err(CommandError::NoDurable) => {
                    outbox.unsent(message.flight);
                    if let Some(entry) = self.conns.get_mut(&key)
                        && !std::mem::replace(&mut entry.no_durable_said, true)
                    {
                        let message = "the peer device reads no durable messages (an earlier \\
                                       release): they stay in the outbox";
                        self.emit(channel, error(Code::OTHERS, message.into()));
                    }
                }
                // Queue full, channel closing: it goes with the next batch or open.
                Err(_) => outbox.unsent(message.flight),
            }
            refused = true;
        }
    }

    /// A durable message's outcome: delivered (the app hears of it and the next go
    /// out), given up, or back in the outbox until the channel opens again.
    pub(super) fn durable_landed(&mut self, key: u64, flight: u32, result: Result<(), Error>) {
        let Some(entry) = self.conns.get(&key) else {
            return;
        };
        let outbox = entry.slot.outbox.clone();
        let failure = result.clone().err();
        match outbox.landed(flight, result) {
            Landed::Delivered(seq, tell) => {
                if tell {
                    let mark = Mark::Delivered {
                        outbox: outbox.clone(),
                        seq,
                    };
                    let event = ConnectionEvent::Delivered { id: seq };
                    entry.slot.events.send((event, None, Some(Box::new(mark))));
                }
                self.send_durables(key, false);
            }
            Landed::GaveUp(seq) => {
                let failure = failure.map(|e| e.to_string()).unwrap_or_default();
                let message = format!("durable message {seq} was given up: {failure}");
                if let Some(channel) = entry.channel {
                    self.emit(channel, error(Code::TOO_LARGE, message));
                }
            }
            // Sending it again now could fail again at once, round and round: it waits
            // for the next open or the next delivery.
            Landed::Again | Landed::Unknown => {}
        }
    }

    /// A durable file's task is done with file `id`: the app hears it was delivered, or
    /// why it was given up.
    pub(super) fn durable_file_landed(&mut self, key: u64, id: u64, result: Result<(), Error>) {
        let Some(entry) = self.conns.get(&key) else {
            return;
        };
        let outbox = entry.slot.outbox.clone();
        let Some(tell) = outbox.file_landed(id, result.clone()) else {
            return;
        };
        let event = match result {
            Ok(()) if !tell => return,
            Ok(()) => {
                let mark = Mark::Delivered { outbox, seq: id };
                let event = ConnectionEvent::Delivered { id };
                return entry.slot.events.send((event, None, Some(Box::new(mark))));
            }
            Err(e) => error(e.code(), format!("durable file {id} was given up: {e}")),
        };
        entry.slot.events.send((event, None, None));
    }

    /// The app cancels its durable message `seq`: withdrawn from the session if it was
    /// handed over and has not left yet; whether it was cancelled.
    pub(super) fn cancel_durable(&mut self, key: u64, seq: u64) -> bool {
        let Some(entry) = self.conns.get(&key) else {
            return false;
        };
        let outbox = entry.slot.outbox.clone();
        if let Some(flight) = outbox.flight_of(seq) {
            let id = sends::send_id(key, DURABLE | flight);
            let withdrawn = entry
                .channel
                .is_some_and(|ch| self.session.cancel_send(ch, id));
            if !withdrawn {
                return false;
            }
            outbox.withdrawn(seq);
        }
        outbox.cancel(seq)
    }
}

/// A durable message from the peer (`peer`, to the app `package`): its mark (the app
/// takes it only once per number) and the message without its head. `None` when it
/// cannot be read, or its app took it already (a resend): it is then acknowledged and
/// dropped here. A resend of one still unread waits in the events and is dropped when
/// taken.
pub(super) fn durable_mark(
    peer: Option<&PeerInfo>,
    package: &str,
    cursors: &Arc<Cursors>,
    message: &Message,
) -> Option<(Mark, Bytes)> {
    let peer = peer?.device_id;
    {
        match DurableHead::decode(message.payload.clone()) {
            Ok((head, payload)) => {
                let scope: Arc<str> = format!("{peer}/{package}").into();
                if cursors.taken(&scope, head.origin) >= head.seq {
                    return None;
                }
                let cursors = cursors.clone();
                let mark = Mark::Durable {
                    cursors,
                    scope,
                    head,
                };
                Some((mark, payload))
            }
            Err(error) => {
                tracing::warn!(%error, "a malformed durable message: dropped");
                None
            }
        }
    }
}

fn error(code: Code, message: String) -> ConnectionEvent {
    ConnectionEvent::Error { code, message }
}
