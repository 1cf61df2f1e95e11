//! A connection's durable outbox ([`Connection::send_durable`]): the messages committed
//! to the store and not yet taken by the peer's app, mirrored in memory (bounded by
//! [`MAX_OUTBOX_MESSAGES`] and [`MAX_OUTBOX_BYTES`]) so the driver reads no file.
//!
//! Each message gets the next number of its outbox (`seq`, from 1, never reused) and
//! travels as a message of the channel with [`Exchange::Durable`], under the outbox's
//! origin and its number ([`DurableHead`]); the receiver takes each number once. The
//! driver hands the session the committed messages in order, at most
//! [`MAX_IN_FLIGHT`] at once, and never a message after one that is still being
//! committed, so numbers reach the peer in order. A message the session gave up (the
//! channel closed, the peer restarted) goes again when the channel opens; nothing but
//! the app's cancel or the peer app's taking it removes it.
//!
//! [`Connection::send_durable`]: crate::Connection::send_durable
//! [`Exchange::Durable`]: interconnect_proto::Exchange::Durable

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use interconnect_proto::{ContentType, DurableHead};
use tokio::sync::oneshot;

use crate::error::Error;
use crate::store::{Op, Store};

/// Most messages (and files) a connection's outbox holds; past it `send_durable` fails with
/// [`Error::OutboxFull`].
pub const MAX_OUTBOX_MESSAGES: usize = 10_000;
/// Most bytes of messages a connection's outbox holds, all together.
pub const MAX_OUTBOX_BYTES: usize = 16 << 20;
/// Durable messages handed to the session at once.
pub(crate) const MAX_IN_FLIGHT: usize = 256;
/// `Delivered` events that wait for the app at most: past it a delivery is reported by
/// `delivered(id)` and `outstanding()` alone (an app that never reads its events cannot
/// grow them, or the store, without bound).
pub const MAX_UNTOLD_DELIVERIES: usize = 1024;
/// The send ids of durable messages have this bit in their slot (apart from messages'
/// slots and state updates' flights); below it, a number of the flight.
pub(crate) const DURABLE: u32 = 1 << 30;

/// One durable message the outbox holds.
struct Entry {
    content_type: ContentType,
    body: Bytes,
    /// On the disk (a message still being committed holds back the ones after it).
    committed: bool,
    /// Handed to the session under this flight number.
    flight: Option<u32>,
}

/// A durable file: sent (and resumed) by a task of its own until the peer stored it.
struct FileEntry {
    path: std::path::PathBuf,
    /// The current attempt's progress.
    progress: Option<tokio::sync::watch::Receiver<crate::Progress>>,
    /// Tells the file's task the app cancelled it.
    stop: std::sync::Arc<tokio::sync::Notify>,
}

impl FileEntry {
    fn new(path: std::path::PathBuf) -> FileEntry {
        FileEntry {
            path,
            progress: None,
            stop: std::sync::Arc::default(),
        }
    }
}

/// What the app reads of an outbox entry ([`Connection::outstanding`]).
///
/// [`Connection::outstanding`]: crate::Connection::outstanding
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Outstanding {
    /// The id `send_durable` returned.
    pub id: u64,
    /// Bytes of the message.
    pub len: usize,
    /// Handed to the link: it may be on the wire or with the peer already.
    pub on_its_way: bool,
    /// For a file ([`Connection::send_file_durable`]): its path and how far the current
    /// attempt got (`len` is then its size once known).
    ///
    /// [`Connection::send_file_durable`]: crate::Connection::send_file_durable
    pub file: Option<(std::path::PathBuf, crate::Progress)>,
}

pub(crate) struct Outbox {
    store: Option<Store>,
    /// The store's key of this outbox: the app's package, and the watch's device id on
    /// a hub of several watches.
    pub(crate) scope: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The store could not be read: every send fails with it.
    broken: Option<Error>,
    origin: u64,
    last_seq: u64,
    entries: BTreeMap<u64, Entry>,
    files: BTreeMap<u64, FileEntry>,
    bytes: usize,
    in_flight: usize,
    flights: HashMap<u32, u64>,
    next_flight: u32,
    /// The driver was told and has not looked since.
    told: bool,
    /// `Delivered` events queued for the app and not taken yet.
    untold: usize,
    /// The driver let go: nothing will be delivered through this handle any more.
    stopped: bool,
    waiters: HashMap<u64, Vec<oneshot::Sender<Result<(), Error>>>>,
}

impl Inner {
    /// Whether one more entry may come in: the store was read, the driver is there,
    /// and the outbox holds fewer than [`MAX_OUTBOX_MESSAGES`] messages and files.
    fn admit(&self) -> Result<(), Error> {
        if let Some(error) = &self.broken {
            return Err(error.clone());
        }
        if self.stopped {
            return Err(Error::Stopped);
        }
        if self.entries.len() + self.files.len() >= MAX_OUTBOX_MESSAGES {
            return Err(Error::OutboxFull {
                limit: "messages",
                max: MAX_OUTBOX_MESSAGES,
            });
        }
        Ok(())
    }
}

fn lock(mutex: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the driver hands the session.
pub(crate) struct Outgoing {
    pub(crate) flight: u32,
    pub(crate) content_type: ContentType,
    pub(crate) payload: Bytes,
}

/// A flight's end, as the driver reports it.
pub(crate) enum Landed {
    /// The peer's app took message `seq`; `true`: the app is told with an event.
    Delivered(u64, bool),
    /// Message `seq` can never be sent (larger than the link carries): given up.
    GaveUp(u64),
    /// The session let it go (the channel closed): it goes again on the next open.
    Again,
    /// Not a flight of this outbox (the handle was let go meanwhile).
    Unknown,
}

impl Outbox {
    /// The outbox of `scope`, as the store holds it, and the deliveries its app was not
    /// told of yet. Without a store, an outbox whose sends fail with
    /// [`Error::NoStore`].
    pub(crate) fn load(store: Option<Store>, scope: String) -> (Outbox, Vec<u64>) {
        let mut inner = Inner {
            origin: rand::random::<u64>() | 1,
            ..Inner::default()
        };
        let mut unseen = Vec::new();
        if let Some(store) = &store {
            match store.load(&scope) {
                Ok(loaded) => {
                    if let Some((origin, last)) = loaded.origin {
                        inner.origin = origin;
                        inner.last_seq = last;
                    }
                    for (seq, path) in loaded.files {
                        inner.last_seq = inner.last_seq.max(seq);
                        inner.files.insert(seq, FileEntry::new(path));
                    }
                    for (seq, content_type, body) in loaded.entries {
                        inner.bytes += body.len();
                        inner.last_seq = inner.last_seq.max(seq);
                        let entry = Entry {
                            content_type,
                            body,
                            committed: true,
                            flight: None,
                        };
                        inner.entries.insert(seq, entry);
                    }
                    inner.untold = loaded.unseen.len();
                    unseen = loaded.unseen;
                }
                Err(error) => {
                    tracing::error!(%scope, %error, "the outbox could not be read");
                    inner.broken = Some(error);
                }
            }
        }
        let outbox = Outbox {
            store,
            scope,
            inner: Mutex::new(inner),
        };
        (outbox, unseen)
    }

    /// The store this outbox keeps its messages in, if any.
    pub(crate) fn store(&self) -> Option<Store> {
        self.store.clone()
    }

    /// Commits a message; its number once it is on the disk, and whether the driver
    /// must be told.
    pub(crate) async fn push(
        &self,
        content_type: ContentType,
        body: Bytes,
    ) -> Result<(u64, bool), Error> {
        let store = self.store.as_ref().ok_or(Error::NoStore)?;
        let (seq, committed) = {
            let mut inner = lock(&self.inner);
            inner.admit()?;
            if inner.bytes + body.len() > MAX_OUTBOX_BYTES {
                return Err(Error::OutboxFull {
                    limit: "bytes",
                    max: MAX_OUTBOX_BYTES,
                });
            }
            inner.last_seq += 1;
            let seq = inner.last_seq;
            inner.bytes += body.len();
            let entry = Entry {
                content_type,
                body: body.clone(),
                committed: false,
                flight: None,
            };
            inner.entries.insert(seq, entry);
            // Queued under the lock: the store commits in the order numbers are given.
            let op = Op::Put {
                scope: self.scope.clone(),
                origin: inner.origin,
                seq,
                content_type,
                body,
            };
            (seq, store.commit(op))
        };
        let result = committed
            .await
            .unwrap_or_else(|_| Err(Error::Store(crate::Cause::message("the store stopped"))));
        let mut inner = lock(&self.inner);
        match result {
            Ok(()) => {
                if let Some(entry) = inner.entries.get_mut(&seq) {
                    entry.committed = true;
                }
                Ok((seq, !std::mem::replace(&mut inner.told, true)))
            }
            Err(error) => {
                if let Some(entry) = inner.entries.remove(&seq) {
                    inner.bytes -= entry.body.len();
                }
                Err(error)
            }
        }
    }

    /// Driver side: the committed messages to hand the session now, in order (none after
    /// one still being committed), keeping at most [`MAX_IN_FLIGHT`] handed over.
    pub(crate) fn take_outgoing(&self) -> Vec<Outgoing> {
        let mut inner = lock(&self.inner);
        inner.told = false;
        let Inner {
            origin,
            entries,
            in_flight,
            flights,
            next_flight,
            ..
        } = &mut *inner;
        let mut out = Vec::new();
        for (&seq, entry) in entries.iter_mut() {
            if !entry.committed || *in_flight >= MAX_IN_FLIGHT {
                break;
            }
            if entry.flight.is_some() {
                continue;
            }
            let flight = *next_flight;
            *next_flight = (*next_flight + 1) % DURABLE;
            entry.flight = Some(flight);
            flights.insert(flight, seq);
            *in_flight += 1;
            let head = DurableHead {
                origin: *origin,
                seq,
            };
            out.push(Outgoing {
                flight,
                content_type: entry.content_type,
                payload: head.encode(&entry.body),
            });
        }
        out
    }

    /// Driver side: the channel opened. What was handed to the session before goes
    /// again, in order, with what follows it: a flight of the old channel may have been
    /// lost (the peer restarted) and its failure not heard yet, and sending newer
    /// messages first would put numbers out of order (the receiver would drop the older
    /// ones as taken). Outcomes of the old flights are ignored; a copy the peer holds
    /// already is acknowledged and dropped by its cursor.
    pub(crate) fn reset(&self) {
        let mut inner = lock(&self.inner);
        inner.flights.clear();
        inner.in_flight = 0;
        for entry in inner.entries.values_mut() {
            entry.flight = None;
        }
    }

    /// Driver side: the session refused a flight at once (the channel is not open, the
    /// peer reads no durable messages): it goes with the next batch.
    pub(crate) fn unsent(&self, flight: u32) {
        self.landed(flight, Err(Error::ConnectionLost));
    }

    /// Driver side: a flight's outcome. A delivered message leaves the store's outbox
    /// (its delivery is kept until the app was told).
    pub(crate) fn landed(&self, flight: u32, result: Result<(), Error>) -> Landed {
        let mut inner = lock(&self.inner);
        let Some(seq) = inner.flights.remove(&flight) else {
            return Landed::Unknown;
        };
        inner.in_flight -= 1;
        let gave_up = matches!(result, Err(Error::TooLarge { .. }));
        if result.is_err() && !gave_up {
            if let Some(entry) = inner.entries.get_mut(&seq) {
                entry.flight = None;
            }
            return Landed::Again;
        }
        if let Some(entry) = inner.entries.remove(&seq) {
            inner.bytes -= entry.body.len();
        }
        for waiter in inner.waiters.remove(&seq).unwrap_or_default() {
            let _ = waiter.send(result.clone());
        }
        let tell = !gave_up && inner.untold < MAX_UNTOLD_DELIVERIES;
        inner.untold += usize::from(tell);
        let scope = self.scope.clone();
        if let Some(store) = &self.store {
            // Kept until the app is told; otherwise simply gone from the outbox.
            store.submit(match tell {
                true => Op::Delivered { scope, seq },
                false => Op::Cancel { scope, seq },
            });
        }
        if gave_up {
            Landed::GaveUp(seq)
        } else {
            Landed::Delivered(seq, tell)
        }
    }

    /// The app was told of the delivery of `seq`: the store forgets it.
    pub(crate) fn seen(&self, seq: u64) {
        if let Some(store) = &self.store {
            let scope = self.scope.clone();
            store.submit(Op::Seen { scope, seq });
        }
        let mut inner = lock(&self.inner);
        inner.untold = inner.untold.saturating_sub(1);
    }

    /// The flight number message `seq` travels under, if it was handed to the session.
    pub(crate) fn flight_of(&self, seq: u64) -> Option<u32> {
        lock(&self.inner).entries.get(&seq).and_then(|e| e.flight)
    }

    /// The app cancels `seq`: `true` if it was in the outbox and not on its way (the
    /// driver withdraws one on its way first, with [`Outbox::withdrawn`]).
    pub(crate) fn cancel(&self, seq: u64) -> bool {
        let mut inner = lock(&self.inner);
        if let Some(file) = inner.files.remove(&seq) {
            // Its task stops the transfer under way (the peer drops its partial file).
            file.stop.notify_one();
            for waiter in inner.waiters.remove(&seq).unwrap_or_default() {
                let _ = waiter.send(Err(Error::Cancelled));
            }
            if let Some(store) = &self.store {
                let scope = self.scope.clone();
                store.submit(Op::Cancel { scope, seq });
            }
            return true;
        }
        match inner.entries.get(&seq) {
            Some(entry) if entry.committed && entry.flight.is_none() => {}
            _ => return false,
        }
        if let Some(entry) = inner.entries.remove(&seq) {
            inner.bytes -= entry.body.len();
        }
        for waiter in inner.waiters.remove(&seq).unwrap_or_default() {
            let _ = waiter.send(Err(Error::Cancelled));
        }
        if let Some(store) = &self.store {
            let scope = self.scope.clone();
            store.submit(Op::Cancel { scope, seq });
        }
        true
    }

    /// Driver side: the session withdrew the flight of `seq` unsent (for a cancel).
    pub(crate) fn withdrawn(&self, seq: u64) {
        let mut inner = lock(&self.inner);
        let flight = inner.entries.get_mut(&seq).and_then(|e| e.flight.take());
        if let Some(flight) = flight {
            inner.flights.remove(&flight);
            inner.in_flight -= 1;
        }
    }

    /// What the outbox holds, oldest first.
    pub(crate) fn outstanding(&self) -> Vec<Outstanding> {
        let inner = lock(&self.inner);
        let committed = inner.entries.iter().filter(|(_, e)| e.committed);
        let messages = committed.map(|(&id, e)| Outstanding {
            id,
            len: e.body.len(),
            on_its_way: e.flight.is_some(),
            file: None,
        });
        let files = inner.files.iter().map(|(&id, f)| {
            let progress = f.progress.as_ref().map(|p| *p.borrow()).unwrap_or_default();
            Outstanding {
                id,
                len: progress.total as usize,
                on_its_way: f.progress.is_some(),
                file: Some((f.path.clone(), progress)),
            }
        });
        let mut all: Vec<Outstanding> = messages.chain(files).collect();
        all.sort_by_key(|o| o.id);
        all
    }

    /// Commits a file to send; its number once it is on the disk. The caller starts the
    /// task that sends it.
    pub(crate) async fn push_file(&self, path: std::path::PathBuf) -> Result<u64, Error> {
        let store = self.store.as_ref().ok_or(Error::NoStore)?;
        let text = path.to_str().map(str::to_owned).ok_or_else(|| {
            Error::Io(crate::Cause::message(format!(
                "{} is not UTF-8: the store keeps paths as text",
                path.display()
            )))
        })?;
        let (seq, committed) = {
            let mut inner = lock(&self.inner);
            inner.admit()?;
            inner.last_seq += 1;
            let seq = inner.last_seq;
            let op = Op::PutFile {
                scope: self.scope.clone(),
                origin: inner.origin,
                seq,
                path: text,
            };
            (seq, store.commit(op))
        };
        let result = committed
            .await
            .unwrap_or_else(|_| Err(Error::Store(crate::Cause::message("the store stopped"))));
        result?;
        lock(&self.inner).files.insert(seq, FileEntry::new(path));
        Ok(seq)
    }

    /// The files waiting to be sent, as a restarted endpoint found them.
    pub(crate) fn files(&self) -> Vec<(u64, std::path::PathBuf)> {
        let inner = lock(&self.inner);
        inner
            .files
            .iter()
            .map(|(&seq, f)| (seq, f.path.clone()))
            .collect()
    }

    /// What tells file `seq`'s task the app cancelled it; `None` once it is no longer
    /// in the outbox.
    pub(crate) fn file_stop(&self, seq: u64) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        lock(&self.inner).files.get(&seq).map(|f| f.stop.clone())
    }

    /// A new attempt at file `seq` started: its progress.
    pub(crate) fn file_attempt(
        &self,
        seq: u64,
        progress: tokio::sync::watch::Receiver<crate::Progress>,
    ) {
        if let Some(file) = lock(&self.inner).files.get_mut(&seq) {
            file.progress = Some(progress);
        }
    }

    /// File `seq` was stored by the peer (`Ok`), or can never be (given up): it leaves
    /// the outbox. `None` if it was not there; else whether the app is told of the
    /// delivery with an event (see [`MAX_UNTOLD_DELIVERIES`]).
    pub(crate) fn file_landed(&self, seq: u64, result: Result<(), Error>) -> Option<bool> {
        let mut inner = lock(&self.inner);
        inner.files.remove(&seq)?;
        let tell = result.is_ok() && inner.untold < MAX_UNTOLD_DELIVERIES;
        inner.untold += usize::from(tell);
        for waiter in inner.waiters.remove(&seq).unwrap_or_default() {
            let _ = waiter.send(result.clone());
        }
        if let Some(store) = &self.store {
            let scope = self.scope.clone();
            store.submit(match tell {
                true => Op::Delivered { scope, seq },
                false => Op::Cancel { scope, seq },
            });
        }
        Some(tell)
    }

    /// The last number given (0 when none ever was): where an app that restarted stood.
    pub(crate) fn last_id(&self) -> u64 {
        lock(&self.inner).last_seq
    }

    /// Resolves when `seq` was delivered (at once when it is no longer in the outbox:
    /// delivered, or cancelled).
    pub(crate) fn wait(&self, seq: u64) -> oneshot::Receiver<Result<(), Error>> {
        let (tx, rx) = oneshot::channel();
        let mut inner = lock(&self.inner);
        if inner.stopped {
            let _ = tx.send(Err(Error::Stopped));
        } else if inner.entries.contains_key(&seq) || inner.files.contains_key(&seq) {
            inner.waiters.entry(seq).or_default().push(tx);
        } else {
            let _ = tx.send(Ok(()));
        }
        rx
    }

    /// The driver let go: waiting futures hear [`Error::Stopped`] (the messages stay in
    /// the store for the next run).
    pub(crate) fn stop(&self) {
        let mut inner = lock(&self.inner);
        inner.stopped = true;
        for (_, waiters) in inner.waiters.drain() {
            for waiter in waiters {
                let _ = waiter.send(Err(Error::Stopped));
            }
        }
    }
}
