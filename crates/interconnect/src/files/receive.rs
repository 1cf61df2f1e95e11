//! The receiving side: accepting an offer (space, a claimed partial file), the writer
//! that streams chunks to disk, verifies and stores the file, and the pruning of
//! partial files left by transfers that never came back.

use super::*;
use bytes::Bytes;
use interconnect_proto::{ChannelId, Code, TransferId};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Removes the partial files in `dir` that no transfer is writing (their writers hold a
/// lock), except `keep`: those untouched for longer than `max_age`, then the oldest until
/// the rest take at most `max_bytes` (blocking). Failures are only logged: this is
/// housekeeping.
pub(super) fn prune_partials(dir: &Path, keep: &Path, max_age: Duration, max_bytes: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    let mut kept: Vec<(SystemTime, u64, PathBuf)> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path != keep
                && path
                    .extension()
                    .is_some_and(|e| e == "part" || e == "stored")
        })
        .filter_map(|path| {
            let meta = fs::metadata(&path).ok()?;
            Some((meta.modified().ok()?, meta.len(), path))
        })
        .collect();
    kept.sort();
    let mut total: u64 = kept.iter().map(|(_, len, _)| len).sum();
    for (modified, len, path) in kept {
        let stale = now.duration_since(modified).is_ok_and(|age| age > max_age);
        if !stale && total <= max_bytes {
            continue;
        }
        if remove_unless_written(&path) {
            total -= len;
            tracing::info!(path = %path.display(), stale, "removed a partial file");
        }
    }
}

/// Removes a partial file unless a transfer writes it (holds its lock).
pub(super) fn remove_unless_written(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    if file.try_lock().is_err() {
        return false;
    }
    let removed = fs::remove_file(path);
    drop(file);
    removed.is_ok()
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("file task failed: {e}"))))
}

/// Commands to an incoming file's writer.
pub(crate) enum WriterCmd {
    /// Bytes at an offset, with the file's digest if they end it.
    Data(u64, Bytes, Option<[u8; 32]>),
    /// Stop; remove the partial file if `remove`, then report `failure` if given.
    Abort {
        remove: bool,
        failure: Option<(Code, String)>,
    },
}

/// An accepted incoming file: where it resumes and how to feed its writer.
pub(crate) struct Incoming {
    pub(crate) offset: u64,
    pub(crate) name: String,
    pub(crate) writer: mpsc::UnboundedSender<WriterCmd>,
    /// The partial file this transfer owns; a resumed offer of the same transfer passes
    /// it back to [`claim_partial`].
    pub(crate) part: PathBuf,
}

/// The incoming transfers already being written when an offer arrives.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct InProgress {
    pub(crate) count: usize,
    /// Bytes they still have to write: reserved on the disk.
    pub(crate) bytes: u64,
}

/// Why an offer is refused.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) code: Code,
    pub(crate) reason: String,
}

/// The incoming offer, as the writer needs it.
#[derive(Clone, Debug)]
pub(crate) struct Offer {
    /// Tells this transfer's writer apart from any other (see `IoDone::Written`).
    pub(crate) ticket: u64,
    pub(crate) channel: ChannelId,
    pub(crate) transfer: TransferId,
    pub(crate) package: String,
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) modified: u64,
    /// The sending app's metadata about the file (empty: none).
    pub(crate) meta: bytes::Bytes,
    /// Where the app chose to store it (`None`: the files folder, under a free name).
    pub(crate) target: Option<PathBuf>,
    /// The sending process (the peer's resume token): a stored file offered again by
    /// another one, or in the same transfer, is answered 4009 (its sender restarted, or
    /// the phone did, before the sender heard); by the same one in a new transfer, it is
    /// sent again on purpose and stored again.
    pub(crate) sender: u64,
}

/// The partial file an accepted offer writes, found on the disk by [`claim_partial`].
#[derive(Debug)]
pub(crate) struct Claim {
    pub(crate) part: PathBuf,
    /// The partial, locked; `None` when the writer of an earlier link holds it still
    /// (the new writer locks it once that one let go).
    claimed: Option<File>,
    /// Bytes already there, where the transfer resumes.
    pub(crate) held: u64,
}

/// The checks of an offer that need no disk: the count of incoming files and the size
/// limit. A resumed transfer replaces its own earlier writer, so it is never over the
/// count.
pub(crate) fn admit(
    config: &FilesConfig,
    size: u64,
    others: usize,
    resumes: bool,
) -> Result<(), Refusal> {
    if !resumes && others >= config.max_incoming {
        return Err(Refusal {
            code: Code::BUSY,
            reason: format!(
                "{others} incoming files are being received; offer it again when one ended"
            ),
        });
    }
    if size > config.max_file_size {
        return Err(Refusal {
            code: Code::TOO_LARGE,
            reason: format!(
                "file of {size} bytes exceeds the receiver's limit of {}",
                config.max_file_size
            ),
        });
    }
    Ok(())
}

/// Finds (and locks) the partial file an admitted offer writes and checks the free
/// space for the rest of it (blocking: run it off the async threads).
///
/// `resumes` is the partial of this same transfer's earlier writer (the peer offered it
/// again after a link drop): the new writer waits for the old one to let go of it.
/// `live` lists the partials that transfers in progress own, to tell them from those
/// whose writers are only finishing (abandoned by a sender that restarted): a new offer
/// waits for the latter and resumes from them, but gets a partial of its own beside the
/// former. Claims must not run concurrently, so that `live` stays true.
pub(crate) fn claim_partial(
    config: &FilesConfig,
    offer: &Offer,
    resumes: Option<PathBuf>,
    live: &[PathBuf],
    others: InProgress,
) -> Result<Claim, Refusal> {
    let storage = |e: io::Error| Refusal {
        code: Code::STORAGE,
        reason: format!("cannot prepare the files folder: {e}"),
    };
    let partial_dir = config.dir.join(".partial");
    fs::create_dir_all(&partial_dir).map_err(storage)?;
    let key = partial_key(&offer.package, &offer.name, offer.size, offer.modified);
    if resumes.is_none()
        && let Some(name) = already_stored(
            &partial_dir.join(format!("{key}.stored")),
            offer.size,
            offer.sender,
            offer.transfer,
        )
    {
        return Err(Refusal {
            code: Code::ALREADY_STORED,
            reason: format!("already stored as {name}"),
        });
    }
    let (part, claimed) = match resumes {
        Some(part) => (part, None),
        None => claim(&partial_dir, &key, offer.ticket, &|p| {
            live.iter().any(|l| l == p)
        })
        .map_err(storage)?,
    };
    // At most one byte short of the end: the last chunk brings the digest.
    let held = match &claimed {
        Some(file) => file.metadata().map(|m| m.len()),
        None => fs::metadata(&part).map(|m| m.len()),
    }
    .map(|len| len.min(offer.size.saturating_sub(1)))
    .unwrap_or(0);
    let claim = Claim {
        part,
        claimed,
        held,
    };
    let available = fs4::available_space(&config.dir).map_err(storage)?;
    if let Err(needed) = check_space(available, offer.size - held, others.bytes, config) {
        release(claim);
        return Err(Refusal {
            code: Code::STORAGE,
            reason: format!(
                "not enough free space: {needed} bytes needed (this file, the {} in progress \
                 and the {} reserved), {available} available",
                others.count, config.reserve_free_bytes
            ),
        });
    }
    Ok(claim)
}

/// The name of the file a `.stored` marker names, if it is still there with `size` bytes
/// and the offer is not a new sending of it: the same transfer offered again (the phone
/// restarted before its sender heard the file was stored) or the file offered by another
/// sending process (the sender restarted before it heard). The marker then names this
/// sender and transfer: they have heard now. The same process offering the file in a new
/// transfer sends it again on purpose: it is stored again.
pub(super) fn already_stored(
    marker: &Path,
    size: u64,
    sender: u64,
    transfer: TransferId,
) -> Option<String> {
    let text = fs::read_to_string(marker).ok()?;
    let (by, path) = text.split_once('\n')?;
    // A marker of an earlier release names its sender alone.
    let (by, by_transfer) = match by.split_once(' ') {
        Some((by, t)) => (by, Some(TransferId(t.parse().ok()?))),
        None => (by, None),
    };
    if by.parse::<u64>().ok()? == sender && by_transfer != Some(transfer) {
        return None;
    }
    let path = PathBuf::from(path);
    let stored = fs::metadata(&path).ok()?;
    if !stored.is_file() || stored.len() != size {
        return None;
    }
    let _ = write_marker(marker, sender, transfer, &path);
    path.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Writes the marker of a file stored at `path` by `sender`'s `transfer`, whole or not
/// at all (a process killed mid-write leaves the marker it had; what it was writing is
/// pruned with the markers).
pub(super) fn write_marker(
    marker: &Path,
    sender: u64,
    transfer: TransferId,
    path: &Path,
) -> io::Result<()> {
    let next = marker.with_extension("next.stored");
    fs::write(
        &next,
        format!("{sender} {}\n{}", transfer.0, path.to_string_lossy()),
    )?;
    fs::rename(&next, marker)
}

/// Lets go of a claim no writer will use (blocking). An empty partial (made by the
/// claim) holds nothing worth keeping.
pub(crate) fn release(claim: Claim) {
    if let Some(file) = &claim.claimed
        && file.metadata().is_ok_and(|m| m.len() == 0)
    {
        let _ = fs::remove_file(&claim.part);
    }
}

/// Starts the writer of an accepted offer (its file work runs on blocking threads); it
/// reports through `done`.
pub(crate) fn start_writer(
    config: &FilesConfig,
    offer: Offer,
    claim: Claim,
    done: IoSender,
) -> Incoming {
    let name = sanitize_file_name(&offer.name);
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = Writer {
        partial_max_age: config.partial_max_age,
        max_partial_bytes: config.max_partial_bytes,
        ticket: offer.ticket,
        channel: offer.channel,
        transfer: offer.transfer,
        part: claim.part.clone(),
        claimed: std::sync::Mutex::new(claim.claimed),
        dir: config.dir.clone(),
        name: name.clone(),
        size: offer.size,
        start: claim.held,
        sender: offer.sender,
        marker: config.dir.join(".partial").join(format!(
            "{}.stored",
            partial_key(&offer.package, &offer.name, offer.size, offer.modified)
        )),
        target: offer.target,
    };
    tokio::spawn(writer.run(rx, done));
    Incoming {
        offset: claim.held,
        name,
        writer: tx,
        part: claim.part,
    }
}

/// Whether `file` more bytes fit beside the `others` bytes the transfers in progress will
/// still write, leaving the reserve free; `Err` with the bytes needed otherwise.
pub(super) fn check_space(
    available: u64,
    file: u64,
    others: u64,
    config: &FilesConfig,
) -> Result<(), u64> {
    let needed = file
        .saturating_add(others)
        .saturating_add(config.reserve_free_bytes);
    if available < needed {
        Err(needed)
    } else {
        Ok(())
    }
}

/// Takes the partial file of `key` for one transfer: `<key>.part` when no transfer in
/// progress holds it (locked now, or `None`: the writer locks it once a finishing one let
/// go), else a fresh `<key>.<ticket>.part`, locked.
pub(super) fn claim(
    dir: &Path,
    key: &str,
    ticket: u64,
    live: &dyn Fn(&Path) -> bool,
) -> io::Result<(PathBuf, Option<File>)> {
    let shared = dir.join(format!("{key}.part"));
    if let Some(file) = try_claim(&shared)? {
        return Ok((shared, Some(file)));
    }
    if !live(&shared) {
        return Ok((shared, None));
    }
    for n in 0..64u64 {
        let own = dir.join(format!("{key}.{}.part", ticket.wrapping_add(n)));
        if let Some(file) = try_claim(&own)? {
            // Whatever an earlier run left under this name is not this transfer's.
            file.set_len(0)?;
            return Ok((own, Some(file)));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        "every partial file for this offer is in use",
    ))
}

/// Opens and locks `path`, or `None` if another writer holds it. The lock is checked to
/// be on the file the name still points to (its last owner may have just stored it).
pub(super) fn try_claim(path: &Path) -> io::Result<Option<File>> {
    for _ in 0..8 {
        let file = open_partial(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        if is_named(&file, path) {
            return Ok(Some(file));
        }
    }
    Ok(None)
}

pub(super) fn open_partial(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
}

/// Whether `path` still names the file `file` has open.
pub(super) fn is_named(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

pub(super) struct Writer {
    partial_max_age: Duration,
    max_partial_bytes: u64,
    ticket: u64,
    channel: ChannelId,
    transfer: TransferId,
    part: PathBuf,
    /// The partial, locked by `claim_partial`; `None` when resuming, until the writer of the
    /// transfer's earlier link let go of it.
    claimed: std::sync::Mutex<Option<File>>,
    dir: PathBuf,
    name: String,
    size: u64,
    start: u64,
    /// Where the app chose to store the file (`None`: `dir`, under a free name).
    target: Option<PathBuf>,
    /// Written just before the file gets its name, naming it, its sender and its
    /// transfer: a later offer of the same transfer, or of the same file by a restarted
    /// sender, is answered 4009, already stored.
    marker: PathBuf,
    sender: u64,
}

/// The partial file being written, the hash of what it holds, and the digest the sender
/// announced with the last chunk.
pub(super) struct Partial {
    file: File,
    hasher: blake3::Hasher,
    at: u64,
    expected: Option<[u8; 32]>,
}

impl Writer {
    async fn run(self, mut commands: mpsc::UnboundedReceiver<WriterCmd>, done: IoSender) {
        let (ticket, channel, transfer) = (self.ticket, self.channel, self.transfer);
        let writer = Arc::new(self);
        let outcome = writer.clone().write(&mut commands, &done).await;
        let report = match outcome {
            Ok(Some((path, name))) => IoDone::Stored {
                ticket,
                channel,
                transfer,
                path,
                name,
                size: writer.size,
            },
            Ok(None) => return,
            Err((code, reason)) => {
                let part = writer.part.clone();
                let _ = blocking(move || fs::remove_file(part)).await;
                IoDone::Failed {
                    ticket,
                    channel,
                    transfer,
                    code,
                    reason,
                }
            }
        };
        let _ = done.send(report);
    }

    /// Writes until the file is complete (`Ok(Some)`), aborted (`Ok(None)`) or failed.
    async fn write(
        self: Arc<Self>,
        commands: &mut mpsc::UnboundedReceiver<WriterCmd>,
        done: &IoSender,
    ) -> Result<Option<(PathBuf, String)>, (Code, String)> {
        let storage =
            |what: &'static str| move |e: io::Error| (Code::STORAGE, format!("{what}: {e}"));
        let this = self.clone();
        let mut partial = blocking(move || this.open())
            .await
            .map_err(storage("cannot open the partial file"))?;
        while partial.at < self.size {
            match commands.recv().await {
                Some(WriterCmd::Data(offset, data, digest)) => {
                    if offset != partial.at {
                        continue;
                    }
                    partial = blocking(move || {
                        partial.file.write_all(&data)?;
                        partial.hasher.update(&data);
                        partial.at += data.len() as u64;
                        partial.expected = partial.expected.or(digest);
                        Ok(partial)
                    })
                    .await
                    .map_err(storage("cannot write the partial file"))?;
                    let _ = done.send(IoDone::Written {
                        ticket: self.ticket,
                        channel: self.channel,
                        transfer: self.transfer,
                        end: partial.at,
                    });
                }
                Some(WriterCmd::Abort { remove, failure }) => {
                    // An empty partial holds nothing to resume from.
                    if remove || partial.at == 0 {
                        let part = self.part.clone();
                        let _ = blocking(move || fs::remove_file(part)).await;
                    }
                    return match failure {
                        Some(failure) => Err(failure),
                        None => Ok(None),
                    };
                }
                None => return Ok(None),
            }
        }
        let this = self.clone();
        blocking(move || this.finish(partial))
            .await
            .map(Some)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData {
                    (Code::INTEGRITY, e.to_string())
                } else {
                    (Code::STORAGE, format!("cannot store the file: {e}"))
                }
            })
    }

    /// Opens the partial file at the offset accepted, hashing what it already holds.
    fn open(&self) -> io::Result<Partial> {
        let claimed = self
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let file = match claimed {
            Some(file) => file,
            None => loop {
                let file = open_partial(&self.part)?;
                file.lock()?;
                if is_named(&file, &self.part) {
                    break file;
                }
            },
        };
        if let Some(dir) = self.part.parent() {
            prune_partials(
                dir,
                &self.part,
                self.partial_max_age,
                self.max_partial_bytes,
            );
        }
        file.set_len(self.start)?;
        let mut hasher = blake3::Hasher::new();
        if self.start > 0 {
            io::copy(&mut (&file).take(self.start), &mut hasher)?;
        }
        let mut file = file;
        file.seek(io::SeekFrom::Start(self.start))?;
        // An empty file has nothing to carry a digest: it is the digest of nothing.
        let expected = (self.size == 0).then(|| *blake3::hash(&[]).as_bytes());
        Ok(Partial {
            file,
            hasher,
            at: self.start,
            expected,
        })
    }

    /// Syncs, verifies size and hash (`InvalidData` if they are wrong) and stores.
    fn finish(&self, partial: Partial) -> io::Result<(PathBuf, String)> {
        partial.file.sync_all()?;
        let digest = *partial.hasher.finalize().as_bytes();
        if Some(digest) != partial.expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the received file does not match the digest the sender announced",
            ));
        }
        let len = partial.file.metadata()?.len();
        if len != self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the received file has {len} bytes, {} were offered",
                    self.size
                ),
            ));
        }
        // Stored while still locked: no other transfer takes this file meanwhile.
        let stored = self.store();
        drop(partial.file);
        stored
    }

    /// Marks the file as stored at `path` before it is: a process killed between the
    /// two leaves a marker of a file that is not there, which answers nothing (the
    /// partial is resumed and stored), never a stored file without its marker, which
    /// a repeated offer would store again.
    fn mark(&self, path: &Path) {
        if let Err(error) = write_marker(&self.marker, self.sender, self.transfer, path) {
            tracing::warn!(%error, "the marker of a stored file could not be written");
        }
    }

    /// Links the verified partial file under the first free name (or at the path the
    /// app chose, which must not exist), then removes it.
    fn store(&self) -> io::Result<(PathBuf, String)> {
        if let Some(target) = &self.target {
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if target.exists() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            self.mark(target);
            match fs::hard_link(&self.part, target) {
                Ok(()) => {}
                // Another file system: copied into a new file (never over one).
                Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                    let mut to = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(target)?;
                    io::copy(&mut File::open(&self.part)?, &mut to)?;
                    to.sync_all()?;
                }
                Err(e) => return Err(e),
            }
            fs::remove_file(&self.part)?;
            return Ok((target.clone(), name));
        }
        for name in candidate_names(&self.name).take(10_000) {
            let path = self.dir.join(&name);
            if path.exists() {
                continue;
            }
            self.mark(&path);
            match fs::hard_link(&self.part, &path) {
                Ok(()) => {
                    fs::remove_file(&self.part)?;
                    if let Ok(dir) = File::open(&self.dir) {
                        let _ = dir.sync_all();
                    }
                    return Ok((path, name));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    if path.exists() {
                        continue;
                    }
                    fs::rename(&self.part, &path)?;
                    return Ok((path, name));
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free file name",
        ))
    }
}
