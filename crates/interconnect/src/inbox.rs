//! A connection's events on their way from the driver to the app's [`Events`] stream.
//!
//! One queue behind a lock: the driver appends an event and wakes the reader only when
//! it waits; the reader takes the whole queue at once into a buffer of its own, so a run
//! of messages costs it one lock, not one per message. The queue is held to the
//! connection's unread bound by the driver (it holds back acknowledgements, so the peer
//! stops sending), and emptied for good once the reader is gone.
//!
//! [`Events`]: crate::Events

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::state::ConnectionEvent;

/// What the driver queues for an app: an event, for a message the receipt that
/// acknowledges it once taken, and what taking it must do besides (boxed: most events
/// have none, and every event is moved several times on its way).
pub(crate) type Queued = (
    ConnectionEvent,
    Option<crate::sans_io::Receipt>,
    Option<Box<Mark>>,
);

/// What taking an event does besides acknowledging it.
pub(crate) enum Mark {
    /// A durable message: the app gets it only if its number is above the cursor of its
    /// origin, which moves (on the disk, with a store) before the app has it.
    Durable {
        cursors: std::sync::Arc<crate::cursors::Cursors>,
        /// The peer and app it came from.
        scope: std::sync::Arc<str>,
        head: interconnect_proto::DurableHead,
    },
    /// A delivery: once the app took the event the store forgets it.
    Delivered {
        outbox: std::sync::Arc<crate::outbox::Outbox>,
        seq: u64,
    },
}

#[derive(Default)]
struct Shared {
    queue: VecDeque<Queued>,
    /// The reader, when it waits for an event.
    waker: Option<Waker>,
    /// The driver let go: once the queue is empty, the stream ends.
    closed: bool,
    /// The reader is gone: events are dropped.
    gone: bool,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock leaves nothing half-written that matters here.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new inbox: the driver's end and the app's end.
pub(crate) fn inbox() -> (Sender, Receiver) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let receiver = Receiver {
        shared: shared.clone(),
        taken: VecDeque::new(),
    };
    (Sender { shared }, receiver)
}

/// The driver's end; dropping it ends the stream once the reader took what is queued.
pub(crate) struct Sender {
    shared: Arc<Mutex<Shared>>,
}

impl Sender {
    /// Queues an event, waking the reader if it waits. Dropped once the reader is gone.
    pub(crate) fn send(&self, event: Queued) {
        let waker = {
            let mut shared = lock(&self.shared);
            if shared.gone {
                return;
            }
            shared.queue.push_back(event);
            shared.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Sender {
    /// Queues a run of events under one lock, waking the reader once.
    pub(crate) fn send_run(&self, events: impl Iterator<Item = Queued>) {
        let waker = {
            let mut shared = lock(&self.shared);
            if shared.gone {
                // Still taken from the run: what it does besides queueing happens.
                events.for_each(drop);
                return;
            }
            shared.queue.extend(events);
            shared.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let waker = {
            let mut shared = lock(&self.shared);
            shared.closed = true;
            shared.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The app's end.
pub(crate) struct Receiver {
    shared: Arc<Mutex<Shared>>,
    /// Events taken from the queue in one lock, not yet handed out.
    taken: VecDeque<Queued>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl Receiver {
    /// The next event; `None` once the driver let go and every event was taken.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Queued>> {
        if let Some(event) = self.taken.pop_front() {
            return Poll::Ready(Some(event));
        }
        let mut shared = lock(&self.shared);
        if !shared.queue.is_empty() {
            // Trade buffers: no copy, and each side keeps an allocation.
            std::mem::swap(&mut shared.queue, &mut self.taken);
            drop(shared);
            return Poll::Ready(self.taken.pop_front());
        }
        if shared.closed {
            return Poll::Ready(None);
        }
        match &shared.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => shared.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next event; `None` once the driver let go and every event was taken.
    /// The next event of the run already taken from the shared queue, if any: no lock
    /// and no waker.
    #[inline]
    pub(crate) fn try_take(&mut self) -> Option<Queued> {
        self.taken.pop_front()
    }

    pub(crate) async fn recv(&mut self) -> Option<Queued> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        shared.gone = true;
        shared.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> Queued {
        let code = interconnect_proto::Code(n as u16);
        let message = String::new();
        (ConnectionEvent::Error { code, message }, None, None)
    }

    fn code(event: Option<Queued>) -> Option<u32> {
        match event {
            Some((ConnectionEvent::Error { code, .. }, _, _)) => Some(u32::from(code.0)),
            _ => None,
        }
    }

    #[tokio::test]
    async fn events_arrive_in_order_and_the_stream_ends_after_the_last() {
        let (tx, mut rx) = inbox();
        tx.send(event(1));
        tx.send(event(2));
        assert_eq!(code(rx.recv().await), Some(1));
        tx.send(event(3));
        drop(tx);
        assert_eq!(code(rx.recv().await), Some(2));
        assert_eq!(code(rx.recv().await), Some(3));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_waiting_reader_is_woken() {
        let (tx, mut rx) = inbox();
        let reader = tokio::spawn(async move { code(rx.recv().await) });
        tokio::task::yield_now().await;
        tx.send(event(7));
        assert_eq!(reader.await.unwrap(), Some(7));
    }

    #[tokio::test]
    async fn a_run_arrives_in_order_behind_what_was_queued() {
        let (tx, mut rx) = inbox();
        tx.send(event(1));
        tx.send_run((2..5).map(event));
        tx.send(event(5));
        for n in 1..=5 {
            assert_eq!(code(rx.recv().await), Some(n));
        }
    }

    #[test]
    fn a_run_to_a_reader_gone_is_still_taken_and_kept_nowhere() {
        let (tx, rx) = inbox();
        drop(rx);
        let mut taken = 0;
        tx.send_run((1..4).map(|n| {
            taken += 1;
            event(n)
        }));
        // What making each event does (counting a message unread, holding acks) is
        // done for each, as when the reader is there.
        assert_eq!(taken, 3);
        assert!(lock(&tx.shared).queue.is_empty());
    }

    #[test]
    fn once_the_reader_is_gone_nothing_is_kept() {
        let (tx, rx) = inbox();
        tx.send(event(1));
        drop(rx);
        tx.send(event(2));
        assert!(lock(&tx.shared).queue.is_empty());
    }
}
