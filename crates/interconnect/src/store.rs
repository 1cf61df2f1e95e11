//! The durable store: one file that holds what must outlive the process: each
//! connection's outbox of durable messages (until the peer's app took them), the
//! deliveries its app has not yet been told of, and the receiver's cursors (per peer,
//! app and sending origin, the highest message number its app took).
//!
//! **Why redb.** Measured on the machines this runs on (`benches/stores`), a durable
//! commit of one small record took 163–178 µs at the median with redb, 85–109 µs with
//! fjall and 222–294 µs with SQLite in WAL mode with full sync. redb is pure Rust, one
//! file, copy-on-write with checksummed pages (a commit is all there or not at all;
//! a torn write is found at open, not read as data), and it left 10 MiB on disk after
//! its records were deleted where fjall's log-structured tree left 32 MiB, which matters
//! more on a watch than 80 µs per commit (and commits are grouped: see below).
//!
//! **Grouped commits.** Writes queue here and one blocking task commits everything
//! queued in one transaction (with redb's immediate durability: an fsync per commit),
//! so a burst of `send_durable` calls costs a few syncs, not one each. A power cut loses
//! nothing a call reported committed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use interconnect_proto::ContentType;
use redb::{ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::error::{Cause, Error};

/// `(scope, seq)` → content type byte, then the message.
const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");
/// `(scope, seq)` → the path of a file to send (UTF-8).
const FILES: TableDefinition<(&str, u64), &str> = TableDefinition::new("files");
/// `(scope, key)` → this side's state value: origin and version (8 bytes each, little
/// endian), removed (1), content type (1), then the value.
const STATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("state");
/// `(scope, key)` → the peer's state value, as `STATE` holds this side's.
const PEER_STATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("peer_state");
/// scope → `(origin, last seq given)`.
const ORIGINS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("origins");
/// `(scope, seq)` delivered, its app not yet told.
const DELIVERED: TableDefinition<(&str, u64), ()> = TableDefinition::new("delivered");
/// `(peer scope, origin)` → the highest number the app took.
const CURSORS: TableDefinition<(&str, u64), u64> = TableDefinition::new("cursors");
/// `"interconnect"` → the format version: a redb file of another program lacks it.
const FORMAT: TableDefinition<&str, u32> = TableDefinition::new("format");
const FORMAT_VERSION: u32 = 1;

/// Origins whose cursors a receiver keeps per peer and app (a sender gets a new origin
/// only when its store is made anew): past it, the lowest goes.
const MAX_ORIGINS: usize = 16;

/// A store could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file is not a store of this library, or it is damaged (truncated, overwritten):
    /// nothing was read from it and nothing written to it.
    #[error("{path} is damaged or not an interconnect store: {cause}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What was found.
        #[source]
        cause: Cause,
    },
    /// Another process (or another `Store` of this one) has the file open.
    #[error("{path} is open in another process")]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be created, read or written.
    #[error("cannot open {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        cause: Cause,
    },
}

/// The file that makes messages durable ([`Connection::send_durable`]): set it in
/// [`Config::store`](crate::Config::store). One per endpoint; cheap to clone.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let store = interconnect::Store::open(dir.path().join("outbox.redb"))?;
/// let mut config = interconnect::Config::in_memory(interconnect::DeviceId([1; 16]));
/// config.store = Some(store);
/// # Ok(()) }
/// ```
///
/// [`Connection::send_durable`]: crate::Connection::send_durable
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: redb::Database,
    path: PathBuf,
    queue: Mutex<Queue>,
    /// Every cursor, read at open and written through.
    cursors: Mutex<HashMap<(String, u64), u64>>,
    /// Woken when the committing task ends.
    idle: Arc<tokio::sync::Notify>,
}

/// Who waits for an op's commit.
type Done = Option<oneshot::Sender<Result<(), Error>>>;

#[derive(Default)]
struct Queue {
    ops: Vec<(Op, Done)>,
    /// A task is committing: it takes what is queued before it ends.
    running: bool,
}

/// One change to the store.
#[derive(Debug)]
pub(crate) enum Op {
    /// A message committed to `scope`'s outbox.
    Put {
        scope: String,
        origin: u64,
        seq: u64,
        content_type: ContentType,
        body: Bytes,
    },
    /// A file committed to `scope`'s outbox (under the same numbers as messages).
    PutFile {
        scope: String,
        origin: u64,
        seq: u64,
        path: String,
    },
    /// The peer's app took it (a message, or a file stored whole): out of the outbox,
    /// into the deliveries not yet told.
    Delivered { scope: String, seq: u64 },
    /// The app was told of the delivery.
    Seen { scope: String, seq: u64 },
    /// The app set (or removed) a state key: its record as `STATE` holds it.
    State {
        scope: String,
        key: String,
        record: Vec<u8>,
    },
    /// A removed key the peer heard of: forgotten.
    StateGone { scope: String, key: String },
    /// The peer's value of a key (`None`: it removed it).
    PeerState {
        scope: String,
        key: String,
        row: Option<Vec<u8>>,
    },
    /// The peer started over: every value it had set is gone.
    PeerStateGone { scope: String },
    /// The app cancelled it before it was delivered.
    Cancel { scope: String, seq: u64 },
}

/// What a scope holds at open.
#[derive(Default)]
pub(crate) struct Loaded {
    /// Its origin and the last number given, if it ever had one.
    pub(crate) origin: Option<(u64, u64)>,
    pub(crate) entries: Vec<(u64, ContentType, Bytes)>,
    pub(crate) files: Vec<(u64, PathBuf)>,
    pub(crate) unseen: Vec<u64>,
}

/// This side's state as a store holds it: origin, version, the value (`None`: removed).
pub(crate) struct StateRow {
    pub(crate) key: String,
    pub(crate) origin: u64,
    pub(crate) version: u64,
    pub(crate) content_type: ContentType,
    pub(crate) value: Option<Bytes>,
}

impl StateRow {
    pub(crate) fn record(&self) -> Vec<u8> {
        let value = self.value.as_deref().unwrap_or_default();
        let mut record = Vec::with_capacity(18 + value.len());
        record.extend_from_slice(&self.origin.to_le_bytes());
        record.extend_from_slice(&self.version.to_le_bytes());
        record.push(u8::from(self.value.is_none()));
        record.push(content_type_byte(self.content_type));
        record.extend_from_slice(value);
        record
    }

    fn read(key: &str, record: &[u8]) -> Option<StateRow> {
        let origin = u64::from_le_bytes(record.get(..8)?.try_into().ok()?);
        let version = u64::from_le_bytes(record.get(8..16)?.try_into().ok()?);
        let removed = *record.get(16)? != 0;
        let content_type = content_type_of(*record.get(17)?)?;
        let value = Bytes::copy_from_slice(record.get(18..)?);
        Some(StateRow {
            key: key.to_owned(),
            origin,
            version,
            content_type,
            value: (!removed).then_some(value),
        })
    }
}

fn content_type_of(byte: u8) -> Option<ContentType> {
    match byte {
        0 => Some(ContentType::Json),
        1 => Some(ContentType::Postcard),
        2 => Some(ContentType::Binary),
        _ => None,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn content_type_byte(content_type: ContentType) -> u8 {
    match content_type {
        ContentType::Json => 0,
        ContentType::Postcard => 1,
        ContentType::Binary => 2,
    }
}

fn storage(error: impl Into<redb::Error>) -> Error {
    let error: redb::Error = error.into();
    Error::Store(Cause::new(error.to_string(), error))
}

impl Store {
    /// Opens the store at `path`, or creates it. Fails with a typed error, and touches
    /// nothing, when the file is damaged or another program's, or open elsewhere.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let damaged = |cause: String| StoreError::Damaged {
            path: path.clone(),
            cause: Cause::message(cause),
        };
        let opened = std::panic::catch_unwind(|| redb::Database::create(&path))
            .map_err(|_| damaged("the database could not read it".into()))?;
        let db = match opened {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::InUse { path });
            }
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                let cause = Cause::new(e.to_string(), e);
                return Err(StoreError::Io { path, cause });
            }
            Err(other) => return Err(damaged(other.to_string())),
        };
        let cursors = Self::check(&db).map_err(|e| match e {
            CheckError::Foreign(why) => damaged(why),
            CheckError::Redb(e) => damaged(e),
        })?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path,
                queue: Mutex::default(),
                cursors: Mutex::new(cursors),
                idle: Arc::default(),
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Creates the tables of a new store, or checks an existing one is ours; reads the
    /// cursors.
    fn check(db: &redb::Database) -> Result<HashMap<(String, u64), u64>, CheckError> {
        let tx = db.begin_write().map_err(CheckError::redb)?;
        {
            let mut format = tx.open_table(FORMAT).map_err(CheckError::redb)?;
            let version = format
                .get("interconnect")
                .map_err(CheckError::redb)?
                .map(|v| v.value());
            let empty = tx.list_tables().map_err(CheckError::redb)?.count() <= 1;
            match version {
                Some(FORMAT_VERSION) => {}
                Some(other) => {
                    return Err(CheckError::Foreign(format!("store format {other}")));
                }
                None if empty => {
                    format
                        .insert("interconnect", FORMAT_VERSION)
                        .map_err(CheckError::redb)?;
                }
                None => return Err(CheckError::Foreign("another program's database".into())),
            }
        }
        tx.open_table(OUTBOX).map_err(CheckError::redb)?;
        tx.open_table(FILES).map_err(CheckError::redb)?;
        tx.open_table(STATE).map_err(CheckError::redb)?;
        tx.open_table(PEER_STATE).map_err(CheckError::redb)?;
        tx.open_table(ORIGINS).map_err(CheckError::redb)?;
        tx.open_table(DELIVERED).map_err(CheckError::redb)?;
        let mut cursors = HashMap::new();
        {
            let table = tx.open_table(CURSORS).map_err(CheckError::redb)?;
            for row in table.iter().map_err(CheckError::redb)? {
                let (key, seq) = row.map_err(CheckError::redb)?;
                let (scope, origin) = key.value();
                cursors.insert((scope.to_owned(), origin), seq.value());
            }
        }
        tx.commit().map_err(CheckError::redb)?;
        Ok(cursors)
    }

    /// What `scope`'s outbox holds.
    pub(crate) fn load(&self, scope: &str) -> Result<Loaded, Error> {
        let tx = self.inner.db.begin_read().map_err(storage)?;
        let mut loaded = Loaded {
            origin: tx
                .open_table(ORIGINS)
                .map_err(storage)?
                .get(scope)
                .map_err(storage)?
                .map(|v| v.value()),
            ..Loaded::default()
        };
        let outbox = tx.open_table(OUTBOX).map_err(storage)?;
        for row in outbox
            .range((scope, 0)..=(scope, u64::MAX))
            .map_err(storage)?
        {
            let (key, value) = row.map_err(storage)?;
            let record = value.value();
            let content_type = record.first().and_then(|b| content_type_of(*b));
            let Some(content_type) = content_type else {
                return Err(Error::Store(Cause::message("a damaged outbox record")));
            };
            let body = Bytes::copy_from_slice(&record[1..]);
            loaded.entries.push((key.value().1, content_type, body));
        }
        let files = tx.open_table(FILES).map_err(storage)?;
        for row in files
            .range((scope, 0)..=(scope, u64::MAX))
            .map_err(storage)?
        {
            let (key, path) = row.map_err(storage)?;
            loaded
                .files
                .push((key.value().1, PathBuf::from(path.value())));
        }
        let delivered = tx.open_table(DELIVERED).map_err(storage)?;
        for row in delivered
            .range((scope, 0)..=(scope, u64::MAX))
            .map_err(storage)?
        {
            loaded.unseen.push(row.map_err(storage)?.0.value().1);
        }
        Ok(loaded)
    }

    /// This side's state values of `scope`, as set last.
    pub(crate) fn load_state(&self, scope: &str) -> Result<Vec<StateRow>, Error> {
        self.load_rows(STATE, scope)
    }

    /// The peer's state values of `scope`, as they arrived last.
    pub(crate) fn load_peer_state(&self, scope: &str) -> Result<Vec<StateRow>, Error> {
        self.load_rows(PEER_STATE, scope)
    }

    fn load_rows(
        &self,
        definition: TableDefinition<(&str, &str), &[u8]>,
        scope: &str,
    ) -> Result<Vec<StateRow>, Error> {
        let tx = self.inner.db.begin_read().map_err(storage)?;
        let table = tx.open_table(definition).map_err(storage)?;
        let mut rows = Vec::new();
        for row in table.range((scope, "")..).map_err(storage)? {
            let (key, record) = row.map_err(storage)?;
            let (row_scope, name) = key.value();
            if row_scope != scope {
                break;
            }
            let row = StateRow::read(name, record.value());
            rows.push(row.ok_or_else(|| Error::Store(Cause::message("a damaged state record")))?);
        }
        Ok(rows)
    }

    /// Queues `op` for the next commit; the receiver hears once it is on the disk.
    pub(crate) fn commit(&self, op: Op) -> oneshot::Receiver<Result<(), Error>> {
        let (tx, rx) = oneshot::channel();
        self.queue(op, Some(tx));
        rx
    }

    /// Queues `op` for the next commit, no one waiting.
    pub(crate) fn submit(&self, op: Op) {
        self.queue(op, None);
    }

    fn queue(&self, op: Op, done: Done) {
        let start = {
            let mut queue = lock(&self.inner.queue);
            queue.ops.push((op, done));
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            let inner = self.inner.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || Inner::run(inner))),
                Err(_) => Inner::run(inner),
            }
        }
    }

    /// Resolves once everything queued is committed (an endpoint's `shutdown` waits
    /// for it, so the file is free once the last handle is dropped).
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !lock(&self.inner.queue).running {
                return;
            }
            notified.await;
        }
    }

    /// The highest number the app took of `origin` from `scope` (a peer and app).
    pub(crate) fn cursor(&self, scope: &str, origin: u64) -> u64 {
        let cursors = lock(&self.inner.cursors);
        let key = (scope.to_owned(), origin);
        cursors.get(&key).copied().unwrap_or(0)
    }

    /// The app takes message `seq` of `origin` from `scope`: `false` if it took it
    /// already; otherwise the cursor is on the disk when this returns.
    pub(crate) fn take(&self, scope: &str, origin: u64, seq: u64) -> Result<bool, Error> {
        let mut cursors = lock(&self.inner.cursors);
        let key = (scope.to_owned(), origin);
        if cursors.get(&key).is_some_and(|&taken| taken >= seq) {
            return Ok(false);
        }
        let tx = self.inner.db.begin_write().map_err(storage)?;
        let mut dropped = None;
        {
            let mut table = tx.open_table(CURSORS).map_err(storage)?;
            table.insert((scope, origin), seq).map_err(storage)?;
            let mut origins: Vec<u64> = cursors
                .keys()
                .filter(|(s, o)| s == scope && *o != origin)
                .map(|(_, o)| *o)
                .collect();
            if origins.len() >= MAX_ORIGINS {
                origins.sort_unstable();
                table.remove((scope, origins[0])).map_err(storage)?;
                dropped = Some(origins[0]);
            }
        }
        tx.commit().map_err(storage)?;
        if let Some(origin) = dropped {
            cursors.remove(&(scope.to_owned(), origin));
        }
        cursors.insert(key, seq);
        Ok(true)
    }
}

enum CheckError {
    Foreign(String),
    Redb(String),
}

impl CheckError {
    fn redb(error: impl Into<redb::Error>) -> CheckError {
        CheckError::Redb(error.into().to_string())
    }
}

impl Inner {
    /// Commits what is queued, in batches, until nothing is. Lets go of the store before
    /// it tells the last batch's callers, so a store nothing else holds is closed by
    /// then.
    fn run(inner: Arc<Inner>) {
        let mut batch = std::mem::take(&mut lock(&inner.queue).ops);
        loop {
            let (ops, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let result = inner.apply(&ops);
            if let Err(error) = &result {
                tracing::error!(path = %inner.path.display(), %error, "a store commit failed");
            }
            batch = {
                let mut queue = lock(&inner.queue);
                queue.running = !queue.ops.is_empty();
                std::mem::take(&mut queue.ops)
            };
            if batch.is_empty() {
                let idle = inner.idle.clone();
                drop(inner);
                idle.notify_waiters();
                for waiter in waiters.into_iter().flatten() {
                    let _ = waiter.send(result.clone());
                }
                return;
            }
            for waiter in waiters.into_iter().flatten() {
                let _ = waiter.send(result.clone());
            }
        }
    }

    fn apply(&self, ops: &[Op]) -> Result<(), Error> {
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut outbox = tx.open_table(OUTBOX).map_err(storage)?;
            let mut files = tx.open_table(FILES).map_err(storage)?;
            let mut state = tx.open_table(STATE).map_err(storage)?;
            let mut peer_state = tx.open_table(PEER_STATE).map_err(storage)?;
            let mut origins = tx.open_table(ORIGINS).map_err(storage)?;
            let mut delivered = tx.open_table(DELIVERED).map_err(storage)?;
            let mut record = Vec::new();
            for op in ops {
                match op {
                    Op::Put {
                        scope,
                        origin,
                        seq,
                        content_type,
                        body,
                    } => {
                        record.clear();
                        record.push(content_type_byte(*content_type));
                        record.extend_from_slice(body);
                        outbox
                            .insert((scope.as_str(), *seq), record.as_slice())
                            .map_err(storage)?;
                        origins
                            .insert(scope.as_str(), (*origin, *seq))
                            .map_err(storage)?;
                    }
                    Op::PutFile {
                        scope,
                        origin,
                        seq,
                        path,
                    } => {
                        files
                            .insert((scope.as_str(), *seq), path.as_str())
                            .map_err(storage)?;
                        origins
                            .insert(scope.as_str(), (*origin, *seq))
                            .map_err(storage)?;
                    }
                    Op::Delivered { scope, seq } => {
                        outbox.remove((scope.as_str(), *seq)).map_err(storage)?;
                        files.remove((scope.as_str(), *seq)).map_err(storage)?;
                        delivered
                            .insert((scope.as_str(), *seq), ())
                            .map_err(storage)?;
                    }
                    Op::State { scope, key, record } => {
                        state
                            .insert((scope.as_str(), key.as_str()), record.as_slice())
                            .map_err(storage)?;
                    }
                    Op::StateGone { scope, key } => {
                        state
                            .remove((scope.as_str(), key.as_str()))
                            .map_err(storage)?;
                    }
                    Op::PeerState { scope, key, row } => {
                        let at = (scope.as_str(), key.as_str());
                        match row {
                            Some(row) => {
                                drop(peer_state.insert(at, row.as_slice()).map_err(storage)?)
                            }
                            None => drop(peer_state.remove(at).map_err(storage)?),
                        }
                    }
                    Op::PeerStateGone { scope } => {
                        let mut keys = Vec::new();
                        for row in peer_state.range((scope.as_str(), "")..).map_err(storage)? {
                            let (key, _) = row.map_err(storage)?;
                            let (row_scope, name) = key.value();
                            if row_scope != scope {
                                break;
                            }
                            keys.push(name.to_owned());
                        }
                        for key in keys {
                            peer_state
                                .remove((scope.as_str(), key.as_str()))
                                .map_err(storage)?;
                        }
                    }
                    Op::Seen { scope, seq } => {
                        delivered.remove((scope.as_str(), *seq)).map_err(storage)?;
                    }
                    Op::Cancel { scope, seq } => {
                        outbox.remove((scope.as_str(), *seq)).map_err(storage)?;
                        files.remove((scope.as_str(), *seq)).map_err(storage)?;
                    }
                }
            }
        }
        tx.commit().map_err(storage)
    }
}
