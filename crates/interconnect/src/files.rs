//! File I/O for transfers, run by the driver off its task: reading and hashing the file
//! being sent, and writing, hashing, verifying and storing the file being received.
//!
//! The sender hashes (BLAKE3) as it reads, so a file is read once and its first byte goes
//! out at once; the digest travels with the last chunk. An earlier design put a SHA-256
//! in the offer, which meant reading the whole file before sending anything, and hashing
//! at 1.7 GB/s on both ends; BLAKE3 runs at about 4.6 GB/s on the same machine, and a
//! 256 MiB transfer spent more than a third of its CPU time in SHA-256.
//!
//! Received data streams into `<files dir>/.partial/<key>.part`, never into memory as a
//! whole. `key` hashes the package, the offered name, size and modification time, so a
//! later offer of the same file (after a link drop, or a restart of either end) finds
//! the partial file and resumes from its length (at most one byte short of the end, so the
//! digest always arrives). When every byte is there the file is synced, its size and
//! digest checked, and it is linked under its sanitised, collision-free final name (never
//! overwriting anything), then the partial is removed. Any failure removes the partial
//! file: a partial that came from other content fails the digest and is not kept.
//!
//! A partial belongs to one transfer at a time: its writer holds an exclusive lock on it
//! from the accept until the file is stored (the lock outlives the link and the removal
//! of the partial name), so a stored file is never written again. An identical offer
//! while another transfer holds the partial gets a fresh partial of its own
//! (`<key>.<ticket>.part`) and is stored beside it under a numbered name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use interconnect_proto::{ChannelId, Code, MAX_FILE_NAME_LEN, TransferId};
use tokio::sync::mpsc;

/// Where and how much a device may receive.
#[derive(Clone, Debug)]
pub struct FilesConfig {
    /// Folder that receives files (created if missing). Partial files live in its
    /// `.partial` subfolder.
    pub dir: PathBuf,
    /// Largest file accepted; larger offers are refused with 4001.
    pub max_file_size: u64,
    /// Free space that must remain on the disk once every transfer in progress is
    /// stored; an offer that would eat into it is refused with 4005.
    pub reserve_free_bytes: u64,
    /// Incoming transfers written at once; an offer beyond is refused with 4002 (busy),
    /// and the sender may offer it again once one ended. Bounds descriptors and threads.
    pub max_incoming: usize,
    /// Partial files (kept so an interrupted transfer can resume) untouched for longer
    /// than this are removed when the next file arrives, so abandoned transfers do not
    /// fill the disk.
    pub partial_max_age: Duration,
    /// Bytes the partial files of transfers not in progress may take: when a transfer
    /// starts writing, the oldest of them go until the rest fit. An empty partial is
    /// never kept (nothing in it to resume).
    pub max_partial_bytes: u64,
}

impl FilesConfig {
    /// Receive into `dir`, files up to 4 GiB, 16 at a time, keeping 64 MiB of the disk
    /// free and partial files for a week, 1 GiB of them at most.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FilesConfig {
            dir: dir.into(),
            max_file_size: 4 << 30,
            reserve_free_bytes: 64 << 20,
            max_incoming: 16,
            partial_max_age: Duration::from_secs(7 * 24 * 3600),
            max_partial_bytes: 1 << 30,
        }
    }
}

/// Makes a file name offered by the peer safe to create inside the files folder: no
/// path separators or `..` (only the last component is kept), no control characters,
/// no leading or trailing dots and spaces, no device names reserved on Windows, at most
/// [`MAX_FILE_NAME_LEN`] bytes with the extension kept. Never empty.
///
/// ```
/// use interconnect::sanitize_file_name;
/// assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
/// assert_eq!(sanitize_file_name("a/b"), "b");
/// assert_eq!(sanitize_file_name("con.txt"), "_con.txt");
/// assert_eq!(sanitize_file_name("..."), "file");
/// assert_eq!(sanitize_file_name("bad\0name\n.txt"), "badname.txt");
/// ```
pub fn sanitize_file_name(offered: &str) -> String {
    let last = offered
        .rsplit(['/', '\\'])
        .find(|part| !part.trim().is_empty())
        .unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| {
            !c.is_control()
                && !is_invisible(*c)
                && !matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*')
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| c == '.' || c.is_whitespace());
    let mut name = if trimmed.is_empty() {
        "file".to_string()
    } else {
        trimmed.to_string()
    };
    let stem = name.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        name.insert(0, '_');
    }
    truncate_keeping_extension(&name, MAX_FILE_NAME_LEN)
}

/// Unicode format characters (category Cf: bidi controls such as U+202E, which makes
/// `\u{202e}gnp.exe` display as "exe.png", zero-width characters, the byte-order mark)
/// and the line and paragraph separators: they change how a name looks, not what it is.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

fn truncate_keeping_extension(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= 16 => name.split_at(dot),
        _ => (name, ""),
    };
    let mut end = max - ext.len();
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}", &stem[..end], ext)
}

/// `name`, or `name (1).ext`, `name (2).ext`, ... : the first that does not exist in `dir`.
fn candidate_names(name: &str) -> impl Iterator<Item = String> + '_ {
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    std::iter::once(name.to_string()).chain((1..).map(move |n| {
        let suffix = format!(" ({n}){ext}");
        let mut end = stem
            .len()
            .min(MAX_FILE_NAME_LEN.saturating_sub(suffix.len()));
        while !stem.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}{}", &stem[..end], suffix)
    }))
}

/// The partial-file key of an offer: package, offered name, size and modification time.
/// A partial copy found under it is resumed; the digest checked at the end proves it
/// belonged to the same content.
pub(crate) fn partial_key(package: &str, name: &str, size: u64, modified: u64) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(package.as_bytes());
    hasher.update(&[0]);
    hasher.update(name.as_bytes());
    hasher.update(&[0]);
    hasher.update(&size.to_le_bytes());
    hasher.update(&modified.to_le_bytes());
    hex::encode(&hasher.finalize().as_bytes()[..16])
}

/// A file opened for sending: its size and modification time, not yet read.
pub(crate) struct PreparedFile {
    pub(crate) file: File,
    pub(crate) name: String,
    pub(crate) size: u64,
    /// Nanoseconds since the Unix epoch, 0 if the platform does not say.
    pub(crate) modified: u64,
}

fn modified_ns(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Opens `path` for sending (blocking). Nothing is read yet: the content is hashed as it
/// is sent.
pub(crate) fn prepare(path: &Path) -> io::Result<PreparedFile> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    Ok(PreparedFile {
        file,
        name: truncate_keeping_extension(&name, MAX_FILE_NAME_LEN),
        size: meta.len(),
        modified: modified_ns(&meta),
    })
}

/// Reads exactly `len` bytes at `offset` from the file's cursor (blocking), into a buffer
/// that is never zeroed first.
fn read_at(mut file: &File, offset: u64, len: u64) -> io::Result<Bytes> {
    file.seek(io::SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(usize::try_from(len).map_err(io::Error::other)?);
    file.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(shrunk());
    }
    Ok(Bytes::from(buf))
}

fn shrunk() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file is shorter than when it was offered",
    )
}

/// The file being sent, read in order and hashed as it goes.
struct SourceReader {
    file: File,
    size: u64,
    modified: u64,
    hasher: blake3::Hasher,
    /// Bytes before this offset are in `hasher`.
    hashed: u64,
    digest: Option<[u8; 32]>,
}

impl SourceReader {
    /// Reads `len` bytes at `offset`; with them, the file's digest if they end the file.
    fn read(&mut self, offset: u64, len: u64) -> io::Result<(Bytes, Option<[u8; 32]>)> {
        if self.digest.is_none() && offset > self.hashed {
            // A resume: hash the prefix the receiver already holds.
            self.file.seek(io::SeekFrom::Start(self.hashed))?;
            let want = offset - self.hashed;
            if io::copy(&mut (&self.file).take(want), &mut self.hasher)? < want {
                return Err(shrunk());
            }
            self.hashed = offset;
        }
        let data = read_at(&self.file, offset, len)?;
        let end = offset + len;
        if self.digest.is_none() && offset <= self.hashed && self.hashed < end {
            let from = usize::try_from(self.hashed - offset).map_err(io::Error::other)?;
            self.hasher.update(&data[from..]);
            self.hashed = end;
        }
        if end != self.size {
            return Ok((data, None));
        }
        if self.digest.is_none() {
            let meta = self.file.metadata()?;
            if meta.len() != self.size || modified_ns(&meta) != self.modified {
                return Err(io::Error::other("the file changed while it was being sent"));
            }
            self.digest = Some(*self.hasher.finalize().as_bytes());
        }
        Ok((data, self.digest))
    }
}

/// Starts the reader of an outgoing file: it answers read requests in order, each read
/// on a short blocking task (a long-lived one would hold a pool thread and, in tests,
/// stop tokio's paused clock), and stops when the request sender is dropped.
pub(crate) fn spawn_reader(
    prepared: PreparedFile,
    transfer: TransferId,
    done: mpsc::UnboundedSender<IoDone>,
) -> mpsc::UnboundedSender<(u64, u64)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, u64)>();
    let mut source = Some(SourceReader {
        file: prepared.file,
        size: prepared.size,
        modified: prepared.modified,
        hasher: blake3::Hasher::new(),
        hashed: 0,
        digest: None,
    });
    tokio::spawn(async move {
        while let Some((offset, len)) = rx.recv().await {
            let Some(mut reader) = source.take() else {
                return;
            };
            let outcome = tokio::task::spawn_blocking(move || {
                let result = reader.read(offset, len);
                (reader, result)
            })
            .await;
            let result = match outcome {
                Ok((reader, result)) => {
                    source = Some(reader);
                    result
                }
                Err(e) => Err(io::Error::other(format!("file task failed: {e}"))),
            };
            let failed = result.is_err();
            let report = IoDone::Read {
                transfer,
                offset,
                result,
            };
            if done.send(report).is_err() || failed {
                return;
            }
        }
    });
    tx
}

/// Removes the partial files in `dir` that no transfer is writing (their writers hold a
/// lock), except `keep`: those untouched for longer than `max_age`, then the oldest until
/// the rest take at most `max_bytes` (blocking). Failures are only logged: this is
/// housekeeping.
fn prune_partials(dir: &Path, keep: &Path, max_age: Duration, max_bytes: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    let mut kept: Vec<(SystemTime, u64, PathBuf)> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path != keep && path.extension().is_some_and(|e| e == "part"))
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
fn remove_unless_written(path: &Path) -> bool {
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

/// What the file tasks report to the driver.
#[derive(Debug)]
pub(crate) enum IoDone {
    /// An outgoing file was opened and hashed.
    Prepared {
        ticket: u64,
        result: io::Result<PreparedFile>,
    },
    /// A read for an outgoing transfer finished (with the digest if it ends the file).
    Read {
        transfer: TransferId,
        offset: u64,
        result: io::Result<(Bytes, Option<[u8; 32]>)>,
    },
    /// Incoming bytes are written up to `end`. Every writer report names its writer's
    /// `ticket`: transfer ids restart with each session, so a report from the writer of
    /// an abandoned transfer must not be taken for a newer transfer with the same ids.
    Written {
        ticket: u64,
        channel: ChannelId,
        transfer: TransferId,
        end: u64,
    },
    /// The incoming file is verified and stored.
    Stored {
        ticket: u64,
        channel: ChannelId,
        transfer: TransferId,
        path: PathBuf,
        name: String,
        size: u64,
    },
    /// The incoming transfer failed; its partial file is gone.
    Failed {
        ticket: u64,
        channel: ChannelId,
        transfer: TransferId,
        code: Code,
        reason: String,
    },
}

impl std::fmt::Debug for PreparedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedFile")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish()
    }
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
    /// it back to [`accept`].
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
pub(crate) struct Refusal {
    pub(crate) code: Code,
    pub(crate) reason: String,
}

/// The incoming offer, as the writer needs it.
pub(crate) struct Offer {
    /// Tells this transfer's writer apart from any other (see `IoDone::Written`).
    pub(crate) ticket: u64,
    pub(crate) channel: ChannelId,
    pub(crate) transfer: TransferId,
    pub(crate) package: String,
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) modified: u64,
}

/// Checks an offer against the limits and the disk, finds a partial file to resume, and
/// starts the writer (on a blocking thread) that reports through `done`.
///
/// `resumes` is the partial of this same transfer's earlier writer (the peer offered it
/// again after a link drop): the new writer waits for the old one to let go of it.
/// `live` tells the partials that transfers in progress own from those whose writers
/// are only finishing (abandoned by a sender that restarted): a new offer waits for
/// the latter and resumes from them, but gets a partial of its own beside the former.
pub(crate) fn accept(
    config: &FilesConfig,
    offer: Offer,
    resumes: Option<PathBuf>,
    live: &dyn Fn(&Path) -> bool,
    others: InProgress,
    done: mpsc::UnboundedSender<IoDone>,
) -> Result<Incoming, Refusal> {
    // A resumed transfer replaces its own earlier writer, so it is never over the limit.
    if resumes.is_none() && others.count >= config.max_incoming {
        return Err(Refusal {
            code: Code::BUSY,
            reason: format!(
                "{} incoming files are being received; offer it again when one ended",
                others.count
            ),
        });
    }
    if offer.size > config.max_file_size {
        return Err(Refusal {
            code: Code::TOO_LARGE,
            reason: format!(
                "file of {} bytes exceeds the receiver's limit of {}",
                offer.size, config.max_file_size
            ),
        });
    }
    let storage = |e: io::Error| Refusal {
        code: Code::STORAGE,
        reason: format!("cannot prepare the files folder: {e}"),
    };
    let partial_dir = config.dir.join(".partial");
    fs::create_dir_all(&partial_dir).map_err(storage)?;
    let key = partial_key(&offer.package, &offer.name, offer.size, offer.modified);
    let (part, claimed) = match resumes {
        Some(part) => (part, None),
        None => claim(&partial_dir, &key, offer.ticket, live).map_err(storage)?,
    };
    // At most one byte short of the end: the last chunk brings the digest.
    let held = match &claimed {
        Some(file) => file.metadata().map(|m| m.len()),
        None => fs::metadata(&part).map(|m| m.len()),
    }
    .map(|len| len.min(offer.size.saturating_sub(1)))
    .unwrap_or(0);
    let available = fs4::available_space(&config.dir).map_err(storage)?;
    if let Err(needed) = check_space(available, offer.size - held, others.bytes, config) {
        // An empty partial (made by the claim) holds nothing worth keeping.
        if let Some(file) = &claimed
            && file.metadata().is_ok_and(|m| m.len() == 0)
        {
            let _ = fs::remove_file(&part);
        }
        return Err(Refusal {
            code: Code::STORAGE,
            reason: format!(
                "not enough free space: {needed} bytes needed (this file, the {} in progress \
                 and the {} reserved), {available} available",
                others.count, config.reserve_free_bytes
            ),
        });
    }
    let name = sanitize_file_name(&offer.name);
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = Writer {
        partial_max_age: config.partial_max_age,
        max_partial_bytes: config.max_partial_bytes,
        ticket: offer.ticket,
        channel: offer.channel,
        transfer: offer.transfer,
        part: part.clone(),
        claimed: std::sync::Mutex::new(claimed),
        dir: config.dir.clone(),
        name: name.clone(),
        size: offer.size,
        start: held,
    };
    tokio::spawn(writer.run(rx, done));
    Ok(Incoming {
        offset: held,
        name,
        writer: tx,
        part,
    })
}

/// Whether `file` more bytes fit beside the `others` bytes the transfers in progress will
/// still write, leaving the reserve free; `Err` with the bytes needed otherwise.
fn check_space(available: u64, file: u64, others: u64, config: &FilesConfig) -> Result<(), u64> {
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
fn claim(
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
fn try_claim(path: &Path) -> io::Result<Option<File>> {
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

fn open_partial(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
}

/// Whether `path` still names the file `file` has open.
fn is_named(file: &File, path: &Path) -> bool {
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

struct Writer {
    partial_max_age: Duration,
    max_partial_bytes: u64,
    ticket: u64,
    channel: ChannelId,
    transfer: TransferId,
    part: PathBuf,
    /// The partial, locked by `accept`; `None` when resuming, until the writer of the
    /// transfer's earlier link let go of it.
    claimed: std::sync::Mutex<Option<File>>,
    dir: PathBuf,
    name: String,
    size: u64,
    start: u64,
}

/// The partial file being written, the hash of what it holds, and the digest the sender
/// announced with the last chunk.
struct Partial {
    file: File,
    hasher: blake3::Hasher,
    at: u64,
    expected: Option<[u8; 32]>,
}

impl Writer {
    async fn run(
        self,
        mut commands: mpsc::UnboundedReceiver<WriterCmd>,
        done: mpsc::UnboundedSender<IoDone>,
    ) {
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
        done: &mpsc::UnboundedSender<IoDone>,
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

    /// Links the verified partial file under the first free name, then removes it.
    fn store(&self) -> io::Result<(PathBuf, String)> {
        for name in candidate_names(&self.name).take(10_000) {
            let path = self.dir.join(&name);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_inside_the_folder() {
        for hostile in [
            "../../etc/passwd",
            "a/b",
            "/abs/path",
            "..",
            ".",
            "",
            "\\\\server\\share\\x",
        ] {
            let name = sanitize_file_name(hostile);
            assert!(!name.contains('/') && !name.contains('\\') && name != ".." && name != ".");
            assert!(!name.is_empty());
        }
        assert_eq!(sanitize_file_name("con"), "_con");
        assert_eq!(sanitize_file_name("LPT1.log"), "_LPT1.log");
        assert_eq!(sanitize_file_name("COMA"), "COMA");
        let long = format!("{}.txt", "é".repeat(200));
        let cut = sanitize_file_name(&long);
        assert!(cut.len() <= MAX_FILE_NAME_LEN && cut.ends_with(".txt"));
    }

    #[test]
    fn invisible_and_direction_changing_characters_are_removed() {
        // Displayed as "exe.png", it is an .exe.
        assert_eq!(sanitize_file_name("\u{202e}gnp.exe"), "gnp.exe");
        assert_eq!(
            sanitize_file_name("re\u{200b}port\u{feff}.pdf"),
            "report.pdf"
        );
        assert_eq!(
            sanitize_file_name("a\u{2066}b\u{2069}\u{200d}.txt"),
            "ab.txt"
        );
        assert_eq!(sanitize_file_name("\u{200b}\u{202e}"), "file");
        // Visible letters of any script stay.
        assert_eq!(sanitize_file_name("фото 照片.jpg"), "фото 照片.jpg");
    }

    #[test]
    fn the_space_of_transfers_in_progress_is_reserved() {
        let mut config = FilesConfig::new("/unused");
        config.reserve_free_bytes = 64 << 20;
        let mib = |n: u64| n << 20;
        // 100 MiB free, 64 MiB reserved: one 30 MiB file fits, a second beside it not.
        assert_eq!(check_space(mib(100), mib(30), 0, &config), Ok(()));
        assert_eq!(
            check_space(mib(100), mib(30), mib(30), &config),
            Err(mib(124))
        );
        // Once the first has written 25 MiB, 5 MiB of it are left to reserve.
        assert_eq!(check_space(mib(75), mib(5), mib(5), &config), Ok(()));
        assert_eq!(check_space(u64::MAX, u64::MAX, u64::MAX, &config), Ok(()));
    }

    #[test]
    fn collisions_get_numbered_names() {
        let mut names = candidate_names("photo.jpg");
        assert_eq!(names.next().as_deref(), Some("photo.jpg"));
        assert_eq!(names.next().as_deref(), Some("photo (1).jpg"));
        assert_eq!(
            candidate_names("README").nth(2).as_deref(),
            Some("README (2)")
        );
    }
}
