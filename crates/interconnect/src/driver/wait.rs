//! What the driver waits on, and which of it woke the driver.
//!
//! The driver waits on its command queue, its link supply, the link, the links being
//! vetted, room in the write queue and its timer. A `select!` would poll every one of
//! them each time the driver waits, and again when it wakes. Here the command queue, the
//! link supply and the timer are each polled with a waker of their own, which notes its
//! source before it wakes the driver's task: a source whose last poll registered that
//! waker, and which has not woken since, is not polled again (tokio's queues and timers
//! keep a registered waker until they wake it). The link, the links being vetted and the
//! room are polled every time, through futures that live until the driver wakes, as under
//! `select!` (a transport's receive may keep its waker only while its future lives).
//! Sources are polled in turn from a start that moves each time, so none starves another.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::link::Arrival;
use crate::command::Command;
use crate::transport::TransportError;

/// Waits for room in the link's write queue.
pub(super) async fn write_room(
    queue: Option<mpsc::Sender<Bytes>>,
) -> Result<mpsc::OwnedPermit<Bytes>, mpsc::error::SendError<()>> {
    match queue {
        Some(queue) => queue.reserve_owned().await,
        None => std::future::pending().await,
    }
}

const COMMANDS: u8 = 1 << 0;
const LINKS: u8 = 1 << 1;
/// The timer's bit: set it after moving the timer, so it is polled again.
pub(super) const TIMER: u8 = 1 << 2;

/// Sources in the order they take turns.
const TURNS: usize = 6;

/// What woke the driver.
pub(super) enum Woke {
    Command(Option<Command>),
    Arrival(Arrival),
    /// The link supply ended: no more links come.
    LinksClosed,
    Frame(Result<BytesMut, TransportError>),
    Probe(usize, Result<BytesMut, TransportError>),
    Room(Result<mpsc::OwnedPermit<Bytes>, mpsc::error::SendError<()>>),
    Timer,
}

/// What the driver waits on this time; `None` where a source is not waited on.
pub(super) struct Sources<'a, F, P, R, T> {
    pub(super) commands: &'a mut mpsc::UnboundedReceiver<Command>,
    pub(super) links: Option<&'a mut mpsc::Receiver<Arrival>>,
    pub(super) frames: Option<Pin<&'a mut F>>,
    pub(super) probes: Option<Pin<&'a mut P>>,
    pub(super) room: Option<Pin<&'a mut R>>,
    pub(super) timer: Option<Pin<&'a mut T>>,
}

/// The sources' wakers and what they noted.
pub(super) struct Wakes {
    shared: Arc<Shared>,
    commands: Waker,
    links: Waker,
    timer: Waker,
    /// Sources to poll at the next wait whatever woke: their last poll found something
    /// (or none happened yet), so no waker of theirs is registered.
    pub(super) dirty: u8,
    turn: usize,
}

struct Shared {
    /// Sources that woke since the driver last looked.
    woken: AtomicU8,
    /// The driver's task.
    task: Mutex<Option<Waker>>,
}

struct SourceWake {
    shared: Arc<Shared>,
    bit: u8,
}

impl Wake for SourceWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.woken.fetch_or(self.bit, Ordering::AcqRel);
        if let Some(task) = lock(&self.shared.task).as_ref() {
            task.wake_by_ref();
        }
    }
}

fn lock(task: &Mutex<Option<Waker>>) -> std::sync::MutexGuard<'_, Option<Waker>> {
    // Nothing is left half-written by a panic while it is held.
    task.lock().unwrap_or_else(|e| e.into_inner())
}

impl Wakes {
    pub(super) fn new() -> Wakes {
        let shared = Arc::new(Shared {
            woken: AtomicU8::new(0),
            task: Mutex::new(None),
        });
        let waker = |bit| {
            Waker::from(Arc::new(SourceWake {
                shared: shared.clone(),
                bit,
            }))
        };
        Wakes {
            commands: waker(COMMANDS),
            links: waker(LINKS),
            timer: waker(TIMER),
            shared,
            dirty: COMMANDS | LINKS | TIMER,
            turn: 0,
        }
    }

    /// Polls the sources due, one after another from this turn's start: what the first
    /// ready one gave, or `Pending` with every source's waker registered.
    pub(super) fn poll<F, P, R, T>(
        &mut self,
        cx: &mut Context<'_>,
        s: &mut Sources<'_, F, P, R, T>,
    ) -> Poll<Woke>
    where
        F: Future<Output = Result<BytesMut, TransportError>>,
        P: Future<Output = (usize, Result<BytesMut, TransportError>)>,
        R: Future<Output = Result<mpsc::OwnedPermit<Bytes>, mpsc::error::SendError<()>>>,
        T: Future<Output = ()>,
    {
        {
            // Before anything is polled, so no wake after this is missed.
            let mut task = lock(&self.shared.task);
            match task.as_ref() {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => *task = Some(cx.waker().clone()),
            }
        }
        self.dirty |= self.shared.woken.swap(0, Ordering::AcqRel);
        let start = self.turn;
        self.turn = (self.turn + 1) % TURNS;
        for k in 0..TURNS {
            let woke = match (start + k) % TURNS {
                0 if self.dirty & COMMANDS != 0 => {
                    let mut own = Context::from_waker(&self.commands);
                    match s.commands.poll_recv(&mut own) {
                        Poll::Ready(command) => Some(Woke::Command(command)),
                        Poll::Pending => {
                            self.dirty &= !COMMANDS;
                            None
                        }
                    }
                }
                1 if self.dirty & LINKS != 0 => match s.links.as_mut() {
                    Some(links) => match links.poll_recv(&mut Context::from_waker(&self.links)) {
                        Poll::Ready(Some(arrival)) => Some(Woke::Arrival(arrival)),
                        Poll::Ready(None) => Some(Woke::LinksClosed),
                        Poll::Pending => {
                            self.dirty &= !LINKS;
                            None
                        }
                    },
                    None => None,
                },
                2 => match s.frames.as_mut().map(|f| f.as_mut().poll(cx)) {
                    Some(Poll::Ready(frame)) => Some(Woke::Frame(frame)),
                    _ => None,
                },
                3 => match s.probes.as_mut().map(|p| p.as_mut().poll(cx)) {
                    Some(Poll::Ready((i, frame))) => Some(Woke::Probe(i, frame)),
                    _ => None,
                },
                4 => match s.room.as_mut().map(|r| r.as_mut().poll(cx)) {
                    Some(Poll::Ready(room)) => Some(Woke::Room(room)),
                    _ => None,
                },
                5 if self.dirty & TIMER != 0 => match s.timer.as_mut() {
                    Some(timer) => match timer.as_mut().poll(&mut Context::from_waker(&self.timer))
                    {
                        Poll::Ready(()) => Some(Woke::Timer),
                        Poll::Pending => {
                            self.dirty &= !TIMER;
                            None
                        }
                    },
                    None => None,
                },
                _ => None,
            };
            if let Some(woke) = woke {
                return Poll::Ready(woke);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A timer stand-in: counts its polls and keeps the waker it was given.
    #[derive(Default)]
    struct Counted {
        polls: AtomicUsize,
        waker: Mutex<Option<Waker>>,
        ready: std::sync::atomic::AtomicBool,
    }

    struct Probe<'a>(&'a Counted);

    impl Future for Probe<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::Relaxed);
            *lock(&self.0.waker) = Some(cx.waker().clone());
            if self.0.ready.load(Ordering::Relaxed) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    type Frames = std::future::Ready<Result<BytesMut, TransportError>>;
    type Never<O> = std::future::Pending<O>;
    type Room = Never<Result<mpsc::OwnedPermit<Bytes>, mpsc::error::SendError<()>>>;
    type Probes = Never<(usize, Result<BytesMut, TransportError>)>;

    fn poll_once<F>(
        wakes: &mut Wakes,
        s: &mut Sources<'_, F, Probes, Room, Probe<'_>>,
    ) -> Poll<Woke>
    where
        F: Future<Output = Result<BytesMut, TransportError>>,
    {
        wakes.poll(&mut Context::from_waker(Waker::noop()), s)
    }

    #[test]
    fn a_source_is_polled_again_only_once_it_woke() {
        let counted = Counted::default();
        let timer = Probe(&counted);
        let (_tx, mut commands) = mpsc::unbounded_channel();
        let mut wakes = Wakes::new();
        tokio::pin!(timer);
        let mut s: Sources<'_, Frames, _, Room, _> = Sources {
            commands: &mut commands,
            links: None,
            frames: None,
            probes: None,
            room: None,
            timer: Some(timer.as_mut()),
        };
        assert!(poll_once(&mut wakes, &mut s).is_pending());
        assert_eq!(counted.polls.load(Ordering::Relaxed), 1);
        // Nothing woke it: not polled.
        for _ in 0..TURNS {
            assert!(poll_once(&mut wakes, &mut s).is_pending());
        }
        assert_eq!(counted.polls.load(Ordering::Relaxed), 1);
        // Woken by its own waker: polled, and found ready.
        counted.ready.store(true, Ordering::Relaxed);
        lock(&counted.waker).take().expect("registered").wake();
        assert!(matches!(
            poll_once(&mut wakes, &mut s),
            Poll::Ready(Woke::Timer)
        ));
        assert_eq!(counted.polls.load(Ordering::Relaxed), 2);
        // Ready last time: polled again at the next wait, woken or not.
        counted.ready.store(false, Ordering::Relaxed);
        assert!(poll_once(&mut wakes, &mut s).is_pending());
        assert_eq!(counted.polls.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn sources_always_ready_take_turns() {
        let counted = Counted::default();
        counted.ready.store(true, Ordering::Relaxed);
        let timer = Probe(&counted);
        let (tx, mut commands) = mpsc::unbounded_channel();
        for _ in 0..100 {
            tx.send(Command::Shutdown).expect("open");
        }
        let frames = std::future::ready(Ok(BytesMut::new()));
        let mut wakes = Wakes::new();
        tokio::pin!(timer, frames);
        let (mut got_command, mut got_frame, mut got_timer) = (0, 0, 0);
        for _ in 0..TURNS * 4 {
            // A fresh frame future each wait, as the driver makes.
            frames.set(std::future::ready(Ok(BytesMut::new())));
            let mut s: Sources<'_, Frames, _, Room, _> = Sources {
                commands: &mut commands,
                links: None,
                frames: Some(frames.as_mut()),
                probes: None,
                room: None,
                timer: Some(timer.as_mut()),
            };
            match poll_once(&mut wakes, &mut s) {
                Poll::Ready(Woke::Command(_)) => got_command += 1,
                Poll::Ready(Woke::Frame(_)) => got_frame += 1,
                Poll::Ready(Woke::Timer) => got_timer += 1,
                _ => panic!("a source was ready"),
            }
        }
        assert!(got_command >= 4 && got_frame >= 4 && got_timer >= 4);
    }
}
