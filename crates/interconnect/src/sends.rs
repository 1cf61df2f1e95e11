//! The sends of one connection: its handles queue them here and tell the driver once per
//! batch, and the driver puts each outcome in the send's slot, where its [`Sending`]
//! future finds it. No channel message, task wakeup, allocation or table entry per send:
//! the session's id of a send names its connection and slot ([`send_id`]), so a stream
//! of small messages costs a few uncontended locks per message.
//!
//! [`Sending`]: crate::Sending

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use interconnect_proto::{ContentType, Exchange};

use crate::error::Error;
use crate::sans_io::SendId;

/// The session's id of a connection's send: its connection's key and its slot, so an
/// outcome finds its way back without a table. Keys are counted from 1 per endpoint;
/// two connections alive at once 2^31 keys apart would share ids, which no app reaches.
pub(crate) fn send_id(key: u64, slot: u32) -> SendId {
    SendId(((key & 0x7fff_ffff) << 32) | u64::from(slot))
}

/// The connection key (its low 31 bits) and slot of a [`send_id`].
pub(crate) fn split(id: SendId) -> (u64, u32) {
    (id.0 >> 32, id.0 as u32)
}

/// A send the driver has not taken yet.
pub(crate) struct Queued {
    pub(crate) content_type: ContentType,
    pub(crate) exchange: Exchange,
    pub(crate) payload: Bytes,
    /// Wait for room when the channel's queue is full (else fail with QueueFull).
    pub(crate) wait: bool,
    /// Where its outcome goes.
    pub(crate) slot: u32,
}

/// Slots a connection keeps allocated once its sends are done (beyond that, the table is
/// let go when it empties).
const KEPT_SLOTS: usize = 1024;

/// One connection's queued sends and the slots of their outcomes.
#[derive(Default)]
pub(crate) struct Sends {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    queued: VecDeque<Queued>,
    /// The driver was told of `queued` and has not taken it since.
    told: bool,
    /// The driver is gone: sends fail at once.
    stopped: bool,
    slots: Vec<Slot>,
    /// Indices of free slots.
    free: Vec<u32>,
}

#[derive(Default)]
enum Slot {
    #[default]
    Free,
    /// No outcome yet; `abandoned` once its future was dropped.
    Waiting {
        waker: Option<Waker>,
        abandoned: bool,
    },
    /// The outcome, until its future takes it.
    Ready(Result<(), Error>),
}

/// Whether a queued send needs the driver told (the first since it last took them).
#[must_use]
pub(crate) enum Queue {
    /// Tell the driver: this is the first send since it last took them.
    Tell,
    /// The driver already knows.
    Told,
    /// The driver is gone; the send failed with [`Error::Stopped`].
    Stopped,
}

impl Sends {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves nothing half-written that matters here.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a send; returns its slot and whether to tell the driver.
    pub(crate) fn queue(
        &self,
        content_type: ContentType,
        exchange: Exchange,
        payload: Bytes,
        wait: bool,
    ) -> (u32, Queue) {
        let mut inner = self.lock();
        let slot = inner.claim();
        if inner.stopped {
            inner.slots[slot as usize] = Slot::Ready(Err(Error::Stopped));
            return (slot, Queue::Stopped);
        }
        inner.queued.push_back(Queued {
            content_type,
            exchange,
            payload,
            wait,
            slot,
        });
        let told = std::mem::replace(&mut inner.told, true);
        (slot, if told { Queue::Told } else { Queue::Tell })
    }

    /// Driver side: takes every queued send, in call order, into `into`.
    pub(crate) fn take_queued(&self, into: &mut VecDeque<Queued>) {
        let mut inner = self.lock();
        inner.told = false;
        if into.is_empty() {
            // Trade buffers: no copy, and each side keeps an allocation.
            std::mem::swap(&mut inner.queued, into);
        } else {
            into.append(&mut inner.queued);
        }
    }

    /// The driver is gone: every send without an outcome fails with [`Error::Stopped`],
    /// and so does every later one.
    pub(crate) fn stop(&self) {
        let mut wake = Vec::new();
        {
            let mut inner = self.lock();
            inner.stopped = true;
            inner.queued.clear();
            let Inner { slots, free, .. } = &mut *inner;
            for (at, slot) in slots.iter_mut().enumerate() {
                match std::mem::take(slot) {
                    Slot::Waiting {
                        abandoned: true, ..
                    } => free.push(at as u32),
                    Slot::Waiting { waker, .. } => {
                        *slot = Slot::Ready(Err(Error::Stopped));
                        wake.extend(waker);
                    }
                    other => *slot = other,
                }
            }
        }
        wake.into_iter().for_each(Waker::wake);
    }

    /// A future's poll: the outcome once there is one (the slot is then free).
    pub(crate) fn poll(&self, slot: u32, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut inner = self.lock();
        match &mut inner.slots[slot as usize] {
            Slot::Waiting { waker, .. } => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Slot::Ready(_) => Poll::Ready(inner.release(slot)),
            Slot::Free => Poll::Ready(Err(Error::Stopped)),
        }
    }

    /// The outcome if there is one (the slot is then free).
    pub(crate) fn try_take(&self, slot: u32) -> Option<Result<(), Error>> {
        let mut inner = self.lock();
        match inner.slots[slot as usize] {
            Slot::Ready(_) => Some(inner.release(slot)),
            _ => None,
        }
    }

    /// The future was dropped: its slot is freed now or once the outcome comes.
    pub(crate) fn abandon(&self, slot: u32) {
        let mut inner = self.lock();
        match &mut inner.slots[slot as usize] {
            Slot::Waiting { abandoned, waker } => {
                *abandoned = true;
                *waker = None;
            }
            Slot::Ready(_) => {
                let _ = inner.release(slot);
            }
            Slot::Free => {}
        }
    }

    /// Gives a send its outcome (nothing when its slot has none pending).
    pub(crate) fn complete(&self, slot: u32, result: Result<(), Error>) {
        let waker = self.lock().complete(slot, result);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Gives each of these sends success, under one lock (an acknowledgement delivers
    /// a run of messages at once).
    pub(crate) fn complete_delivered(&self, slots: &[u32]) {
        let mut wake = Vec::new();
        {
            let mut inner = self.lock();
            for &slot in slots {
                wake.extend(inner.complete(slot, Ok(())));
            }
        }
        wake.into_iter().for_each(Waker::wake);
    }
}

impl Inner {
    /// Puts an outcome in a slot; the waker to wake once the lock is let go.
    fn complete(&mut self, slot: u32, result: Result<(), Error>) -> Option<Waker> {
        let entry = self.slots.get_mut(slot as usize)?;
        match entry {
            Slot::Waiting {
                abandoned: true, ..
            } => {
                *entry = Slot::Free;
                self.free.push(slot);
                self.shrink_when_idle();
                None
            }
            Slot::Waiting { waker, .. } => {
                let waker = waker.take();
                *entry = Slot::Ready(result);
                waker
            }
            _ => None,
        }
    }

    fn claim(&mut self) -> u32 {
        let waiting = Slot::Waiting {
            waker: None,
            abandoned: false,
        };
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = waiting;
                slot
            }
            None => {
                self.slots.push(waiting);
                // Slots are bounded by the sends alive at once, far below u32::MAX.
                (self.slots.len() - 1) as u32
            }
        }
    }

    fn release(&mut self, slot: u32) -> Result<(), Error> {
        self.free.push(slot);
        let result = match std::mem::take(&mut self.slots[slot as usize]) {
            Slot::Ready(result) => result,
            _ => Err(Error::Stopped),
        };
        self.shrink_when_idle();
        result
    }

    /// Once every slot is free again, a table a burst of sends grew large is let go, so
    /// the memory of a peak does not stay with the connection.
    fn shrink_when_idle(&mut self) {
        if self.slots.len() > KEPT_SLOTS && self.free.len() == self.slots.len() {
            self.slots = Vec::new();
            self.free = Vec::new();
        }
        if self.queued.is_empty() && self.queued.capacity() > KEPT_SLOTS {
            self.queued = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(sends: &Sends) -> u32 {
        let (slot, _) = sends.queue(ContentType::Binary, Exchange::OneWay, Bytes::new(), true);
        slot
    }

    #[test]
    fn the_driver_is_told_once_per_batch() {
        let sends = Sends::default();
        let first = sends.queue(ContentType::Binary, Exchange::OneWay, Bytes::new(), true);
        let second = sends.queue(ContentType::Binary, Exchange::OneWay, Bytes::new(), true);
        assert!(matches!(first.1, Queue::Tell));
        assert!(matches!(second.1, Queue::Told));
        let mut taken = VecDeque::new();
        sends.take_queued(&mut taken);
        assert_eq!(taken.iter().map(|q| q.slot).collect::<Vec<_>>(), [0, 1]);
        let third = sends.queue(ContentType::Binary, Exchange::OneWay, Bytes::new(), true);
        assert!(matches!(third.1, Queue::Tell));
    }

    #[test]
    fn an_outcome_reaches_its_future_and_frees_the_slot() {
        let sends = Sends::default();
        let slot = queue(&sends);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(sends.poll(slot, &mut cx).is_pending());
        sends.complete(slot, Ok(()));
        assert!(matches!(sends.poll(slot, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(queue(&sends), slot, "the slot is used again");
    }

    #[test]
    fn a_run_of_deliveries_completes_every_slot_and_frees_the_abandoned() {
        let sends = Sends::default();
        let slots: Vec<u32> = (0..4).map(|_| queue(&sends)).collect();
        sends.abandon(slots[1]);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(sends.poll(slots[2], &mut cx).is_pending());
        sends.complete_delivered(&slots);
        for &slot in [slots[0], slots[2], slots[3]].iter() {
            assert!(matches!(sends.try_take(slot), Some(Ok(()))));
        }
        assert_eq!(queue(&sends), slots[3], "the last freed slot is used again");
        assert_eq!(queue(&sends), slots[2]);
        assert_eq!(queue(&sends), slots[0]);
        assert_eq!(queue(&sends), slots[1], "the abandoned slot was freed");
    }

    #[test]
    fn a_dropped_future_frees_its_slot_once_the_outcome_comes() {
        let sends = Sends::default();
        let kept = queue(&sends);
        let dropped = queue(&sends);
        sends.abandon(dropped);
        sends.complete(dropped, Ok(()));
        assert_eq!(queue(&sends), dropped, "freed by the outcome");
        sends.complete(kept, Err(Error::ConnectionLost));
        assert!(matches!(
            sends.try_take(kept),
            Some(Err(Error::ConnectionLost))
        ));
        assert!(sends.try_take(kept).is_none(), "taken once");
    }

    #[test]
    fn after_stop_every_send_without_an_outcome_fails_and_later_ones_too() {
        let sends = Sends::default();
        let queued = queue(&sends);
        let mut taken = VecDeque::new();
        sends.take_queued(&mut taken);
        let waiting = queue(&sends);
        sends.stop();
        assert!(matches!(sends.try_take(queued), Some(Err(Error::Stopped))));
        assert!(matches!(sends.try_take(waiting), Some(Err(Error::Stopped))));
        let (later, queue) = sends.queue(ContentType::Binary, Exchange::OneWay, Bytes::new(), true);
        assert!(matches!(queue, Queue::Stopped));
        assert!(matches!(sends.try_take(later), Some(Err(Error::Stopped))));
    }

    #[test]
    fn a_burst_leaves_no_large_table_behind() {
        let sends = Sends::default();
        let slots: Vec<u32> = (0..5_000).map(|_| queue(&sends)).collect();
        let mut taken = VecDeque::new();
        sends.take_queued(&mut taken);
        for &slot in &slots {
            sends.complete(slot, Ok(()));
        }
        for &slot in &slots {
            assert!(sends.try_take(slot).is_some());
        }
        let inner = sends.lock();
        assert!(
            inner.slots.capacity() <= KEPT_SLOTS,
            "{}",
            inner.slots.capacity()
        );
        assert!(inner.queued.capacity() <= KEPT_SLOTS);
    }

    #[test]
    fn a_send_id_names_its_connection_and_slot() {
        let id = send_id(7, 300);
        assert!(id < SendId::SESSION, "below the session's own ids");
        assert_eq!(split(id), (7, 300));
        assert_eq!(split(send_id(u64::MAX, u32::MAX)), (0x7fff_ffff, u32::MAX));
    }
}
