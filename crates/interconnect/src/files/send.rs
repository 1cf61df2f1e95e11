//! The sending side: a file prepared for an offer and read (and hashed) ahead of the
//! window on short blocking tasks.

use super::*;
use bytes::Bytes;
use interconnect_proto::{MAX_FILE_NAME_LEN, TransferId};
use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::path::Path;
use tokio::sync::mpsc;

/// A file opened for sending: its size and modification time, not yet read.
pub(crate) struct PreparedFile {
    pub(crate) file: File,
    pub(crate) name: String,
    pub(crate) size: u64,
    /// Nanoseconds since the Unix epoch, 0 if the platform does not say.
    pub(crate) modified: u64,
}

pub(super) fn modified_ns(meta: &fs::Metadata) -> u64 {
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
pub(super) fn read_at(
    mut file: &File,
    offset: u64,
    len: u64,
    mut buf: Vec<u8>,
) -> io::Result<Bytes> {
    file.seek(io::SeekFrom::Start(offset))?;
    buf.clear();
    buf.reserve_exact(usize::try_from(len).map_err(io::Error::other)?);
    file.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(shrunk());
    }
    Ok(Bytes::from(buf))
}

pub(super) fn shrunk() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file is shorter than when it was offered",
    )
}

/// The file being sent, read in order and hashed as it goes.
pub(super) struct SourceReader {
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
    fn read(
        &mut self,
        offset: u64,
        len: u64,
        buf: Vec<u8>,
    ) -> io::Result<(Bytes, Option<[u8; 32]>)> {
        if self.digest.is_none() && offset > self.hashed {
            // A resume: hash the prefix the receiver already holds.
            self.file.seek(io::SeekFrom::Start(self.hashed))?;
            let want = offset - self.hashed;
            if io::copy(&mut (&self.file).take(want), &mut self.hasher)? < want {
                return Err(shrunk());
            }
            self.hashed = offset;
        }
        let data = read_at(&self.file, offset, len, buf)?;
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
            // The buffer comes from this task's thread, not the blocking pool's: memory
            // a pool thread allocates stays in its own allocator arena once freed
            // elsewhere, and a file's worth of chunks spread over the pool's arenas
            // would keep several times what is in flight.
            let buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            let outcome = tokio::task::spawn_blocking(move || {
                let result = reader.read(offset, len, buf);
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

impl std::fmt::Debug for PreparedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedFile")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish()
    }
}
