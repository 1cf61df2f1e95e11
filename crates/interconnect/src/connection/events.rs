//! A connection's events as the app takes them: what taking one acknowledges, and
//! the durable messages it takes only once.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::command::Command;
use crate::inbox::{self, Mark, Queued};
use crate::state::{ConnectionEvent, Unread};

/// The stream of a connection's events. Ends when the driver stops.
#[derive(Debug)]
pub struct Events {
    pub(super) rx: inbox::Receiver,
    // Not the connection's `Shared`: holding events must not keep the channel.
    pub(super) unread: Arc<Unread>,
    /// Whether the last Open or Close the app took was a Close (`ready_state`).
    pub(super) closed_seen: Arc<AtomicBool>,
    pub(super) commands: mpsc::UnboundedSender<Command>,
    pub(super) key: u64,
}

impl Events {
    /// The next event, or `None` once the driver has stopped. Messages wait here up to
    /// `Config::max_unread`; past that the peer's sends wait until the app took some.
    ///
    /// Taking a message here is what acknowledges it to the sender (with the default
    /// [`Acknowledge::WhenTaken`](crate::Acknowledge::WhenTaken)).
    ///
    /// Taking a durable message first moves the cursor of its sender (on the disk, with
    /// a store: one write), so the app gets each durable message once, whatever either
    /// side's restarts.
    pub async fn next(&mut self) -> Option<ConnectionEvent> {
        loop {
            let queued = match self.rx.try_take() {
                Some(queued) => queued,
                None => self.rx.recv().await?,
            };
            if let Some(event) = self.took(queued) {
                return Some(event);
            }
        }
    }

    /// Tells the driver what the app now has; `None` for a durable message the app took
    /// already (it is acknowledged, and not handed out again).
    #[inline]
    fn took(&self, (event, receipt, mark): Queued) -> Option<ConnectionEvent> {
        let mut fresh = true;
        match mark.map(|m| *m) {
            Some(Mark::Durable {
                cursors,
                scope,
                head,
            }) => match cursors.take(&scope, head.origin, head.seq) {
                Ok(new) => fresh = new,
                Err(error) => tracing::error!(
                    %error,
                    "the cursor of a durable message could not be stored: \
                     it may be given again after a restart"
                ),
            },
            Some(Mark::Delivered { outbox, seq }) => outbox.seen(seq),
            None => {}
        }
        match &event {
            ConnectionEvent::Open { .. } => self.closed_seen.store(false, Ordering::Release),
            ConnectionEvent::Close { .. } => self.closed_seen.store(true, Ordering::Release),
            _ => {}
        }
        if let ConnectionEvent::State { value, .. } = &event {
            // Acknowledged when taken, as a message is; counted as its value's bytes.
            if let Some(receipt) = receipt
                && self.unread.last_taken(receipt)
            {
                let _ = self.commands.send(Command::Taken { key: self.key });
            }
            let len = value.as_ref().map_or(0, |v| v.payload.len());
            if self.unread.taken(len) {
                let _ = self.commands.send(Command::Drained { key: self.key });
            }
        }
        if let ConnectionEvent::Message(message) = &event {
            // One command for a run of messages taken before the driver looked: it
            // acknowledges the latest (acknowledgements are cumulative).
            if let Some(receipt) = receipt
                && self.unread.last_taken(receipt)
            {
                let _ = self.commands.send(Command::Taken { key: self.key });
            }
            if self.unread.taken(message.payload.len()) {
                let _ = self.commands.send(Command::Drained { key: self.key });
            }
        }
        fresh.then_some(event)
    }
}

impl futures_core::Stream for Events {
    type Item = ConnectionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let Some(queued) = std::task::ready!(self.rx.poll_recv(cx)) else {
                return Poll::Ready(None);
            };
            if let Some(event) = self.took(queued) {
                return Poll::Ready(Some(event));
            }
        }
    }
}
