//! The sending side: a file prepared for an offer and read (and hashed) ahead of the
//! window on short blocking tasks.

use super::*;
use bytes::Bytes;
use interconnect_core::sans_io::{FILE_READ_ROOM, file_read_tail};
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

/// Reads exactly `len` bytes at `offset` from the file's cursor (blocking), appended to
/// `buf`, whose capacity is never zeroed first.
fn read_at(mut file: &File, offset: u64, len: u64, buf: &mut Vec<u8>) -> io::Result<()> {
    file.seek(io::SeekFrom::Start(offset))?;
    let start = buf.len();
    buf.reserve_exact(usize::try_from(len).map_err(io::Error::other)?);
    file.take(len).read_to_end(buf)?;
    if ((buf.len() - start) as u64) < len {
        return Err(shrunk());
    }
    Ok(())
}

pub(super) fn shrunk() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file is shorter than when it was offered",
    )
}

/// Bytes the reader takes from the file at a time for chunks shorter than
/// [`ROOM_READ`], at offsets that are multiples of it once reading is in order. Such a
/// chunk is cut from a block without a copy, and the hash sees whole aligned blocks: fed
/// a link's odd-sized chunks, BLAKE3 could not hash eight of its 1 KiB chunks at once
/// and spent more than twice as much per byte. One read per block also replaces one per
/// chunk.
const READ_BLOCK: u64 = 64 * 1024;

/// Chunks of at least this many bytes are read one by one into a buffer with room for
/// their frame's header and trailer: the session frames and seals them where they lie.
/// The session asks for chunks this long in multiples of 8 KiB, so they stay aligned
/// for the hash too.
const ROOM_READ: u64 = 16 * 1024;

/// What a read hands the session.
#[derive(Debug)]
pub(crate) struct ReadChunk {
    /// The bytes, after [`FILE_READ_ROOM`] bytes of room when `with_room`.
    pub(crate) bytes: Bytes,
    /// The bytes were read after room for the frame's header (`file_read_with_room`).
    pub(crate) with_room: bool,
    /// The file's digest, if the bytes end it.
    pub(crate) digest: Option<[u8; 32]>,
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
    /// The last block read and where it starts in the file.
    block: Option<(u64, Bytes)>,
}

impl SourceReader {
    fn new(prepared: PreparedFile) -> Self {
        SourceReader {
            file: prepared.file,
            size: prepared.size,
            modified: prepared.modified,
            hasher: blake3::Hasher::new(),
            hashed: 0,
            digest: None,
            block: None,
        }
    }

    /// The `len` bytes at `offset`, cut from the last block read if it holds them.
    fn cached(&self, offset: u64, len: u64) -> Option<Bytes> {
        let (start, block) = self.block.as_ref()?;
        let from = usize::try_from(offset.checked_sub(*start)?).ok()?;
        let to = from.checked_add(usize::try_from(len).ok()?)?;
        (to <= block.len()).then(|| block.slice(from..to))
    }

    /// Where the block that starts at `offset` and holds `len` bytes from there ends: at
    /// the first multiple of [`READ_BLOCK`] past them, or at the end of the file.
    fn block_end(&self, offset: u64, len: u64) -> u64 {
        offset
            .saturating_add(len)
            .div_ceil(READ_BLOCK)
            .saturating_mul(READ_BLOCK)
            .min(self.size)
    }

    /// The capacity to read `len` bytes at `offset` into: none when the last block
    /// holds them.
    fn capacity(&self, offset: u64, len: u64) -> usize {
        let want = if len >= ROOM_READ {
            let tail = file_read_tail(usize::try_from(len).unwrap_or(usize::MAX));
            len.saturating_add((FILE_READ_ROOM + tail) as u64)
        } else if self.cached(offset, len).is_some() {
            0
        } else {
            self.block_end(offset, len).saturating_sub(offset)
        };
        usize::try_from(want).unwrap_or(0)
    }

    /// Reads `len` bytes at `offset` (blocking) into `buf`: a long chunk after room for
    /// its frame's header, a short one with the block that starts there unless the last
    /// block holds it. With them, the file's digest if they end the file.
    fn read(&mut self, offset: u64, len: u64, mut buf: Vec<u8>) -> io::Result<ReadChunk> {
        let (bytes, with_room) = if len >= ROOM_READ {
            buf.clear();
            buf.resize(FILE_READ_ROOM, 0);
            self.read_hashed(offset, len, &mut buf)?;
            (Bytes::from(buf), true)
        } else if let Some(bytes) = self.cached(offset, len) {
            (bytes, false)
        } else {
            self.block = None;
            let end = self.block_end(offset, len);
            buf.clear();
            self.read_hashed(offset, end - offset, &mut buf)?;
            self.block = Some((offset, Bytes::from(buf)));
            (self.cached(offset, len).ok_or_else(shrunk)?, false)
        };
        let mut read = ReadChunk {
            bytes,
            with_room,
            digest: None,
        };
        if offset + len != self.size {
            return Ok(read);
        }
        if self.digest.is_none() {
            self.check_unchanged()?;
            self.digest = Some(*self.hasher.finalize().as_bytes());
        }
        read.digest = self.digest;
        Ok(read)
    }

    /// Fails when the file's length or modification time is not what was offered.
    fn check_unchanged(&self) -> io::Result<()> {
        let meta = self.file.metadata()?;
        if meta.len() != self.size || modified_ns(&meta) != self.modified {
            return Err(io::Error::other("the file changed while it was being sent"));
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset`, appended to `buf`, and hashes what of them the
    /// hash has not seen.
    fn read_hashed(&mut self, offset: u64, len: u64, buf: &mut Vec<u8>) -> io::Result<()> {
        if offset < self.hashed {
            // Bytes sent before, read again for a resend: they must be the bytes hashed.
            self.check_unchanged()?;
        }
        if self.digest.is_none() && offset > self.hashed {
            // A resume: hash the prefix the receiver already holds.
            self.file.seek(io::SeekFrom::Start(self.hashed))?;
            let want = offset - self.hashed;
            if io::copy(&mut (&self.file).take(want), &mut self.hasher)? < want {
                return Err(shrunk());
            }
            self.hashed = offset;
        }
        let start = buf.len();
        read_at(&self.file, offset, len, buf)?;
        let end = offset + len;
        if self.digest.is_none() && offset <= self.hashed && self.hashed < end {
            let from = usize::try_from(self.hashed - offset).map_err(io::Error::other)?;
            self.hasher.update(&buf[start + from..]);
            self.hashed = end;
        }
        Ok(())
    }
}

/// Starts the reader of an outgoing file: it answers read requests in order, from the
/// block in hand or with a block read on a short blocking task (a long-lived one would
/// hold a pool thread and, in tests, stop tokio's paused clock), and stops when the
/// request sender is dropped.
pub(crate) fn spawn_reader(
    prepared: PreparedFile,
    transfer: TransferId,
    done: IoSender,
) -> mpsc::UnboundedSender<(u64, u64)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, u64)>();
    let mut source = Some(SourceReader::new(prepared));
    tokio::spawn(async move {
        while let Some((offset, len)) = rx.recv().await {
            let Some(mut reader) = source.take() else {
                return;
            };
            let want = reader.capacity(offset, len);
            // The read that ends the file checks the file's metadata: blocking too.
            let ends = offset.saturating_add(len) == reader.size && reader.digest.is_none();
            let result = if want == 0 && !ends {
                let result = reader.read(offset, len, Vec::new());
                source = Some(reader);
                result
            } else {
                // The buffer comes from this task's thread, not the blocking pool's:
                // memory a pool thread allocates stays in its own allocator arena once
                // freed elsewhere, and a file's worth of chunks spread over the pool's
                // arenas would keep several times what is in flight.
                let buf = Vec::with_capacity(want);
                let outcome = tokio::task::spawn_blocking(move || {
                    let result = reader.read(offset, len, buf);
                    (reader, result)
                })
                .await;
                match outcome {
                    Ok((reader, result)) => {
                        source = Some(reader);
                        result
                    }
                    Err(e) => Err(io::Error::other(format!("file task failed: {e}"))),
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `len` bytes that differ from block to block, opened for sending.
    fn source(len: usize) -> (tempfile::TempDir, Vec<u8>, SourceReader) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 1000) as u8).collect();
        fs::write(&path, &bytes).unwrap();
        (dir, bytes, SourceReader::new(prepare(&path).unwrap()))
    }

    /// Reads the file in chunks of `chunk` bytes from `start`, as the session asks.
    fn read_from(reader: &mut SourceReader, start: u64, chunk: u64) -> (Vec<u8>, [u8; 32]) {
        let (mut got, mut at) = (Vec::new(), start);
        while at < reader.size {
            let len = chunk.min(reader.size - at);
            let read = reader.read(at, len, Vec::new()).unwrap();
            let (data, digest) = (read.bytes, read.digest);
            let data = if read.with_room {
                assert!(len >= ROOM_READ, "only long chunks get room");
                data.slice(FILE_READ_ROOM..)
            } else {
                data
            };
            assert_eq!(data.len() as u64, len);
            got.extend_from_slice(&data);
            at += len;
            let hashed = reader.hashed;
            assert!(
                hashed.is_multiple_of(8 * 1024) || hashed == reader.size,
                "the hash sees whole aligned runs: {hashed}"
            );
            if at == reader.size {
                return (got, digest.expect("the last chunk carries the digest"));
            }
            assert_eq!(digest, None, "only the last chunk carries the digest");
        }
        unreachable!("an empty file")
    }

    #[test]
    fn chunks_of_any_size_are_read_whole_and_hashed_once() {
        let len = 3 * READ_BLOCK as usize + 4321;
        for chunk in [1000, 4040, ROOM_READ - 1, 5 * 8192, READ_BLOCK, 1 << 20] {
            let (_dir, bytes, mut reader) = source(len);
            let (got, digest) = read_from(&mut reader, 0, chunk);
            assert!(got == bytes, "chunks of {chunk} bytes");
            assert_eq!(digest, *blake3::hash(&bytes).as_bytes(), "chunk {chunk}");
        }
    }

    #[test]
    fn a_resume_hashes_the_prefix_and_a_rewind_reads_again() {
        let len = 2 * READ_BLOCK as usize + 99;
        let (_dir, bytes, mut reader) = source(len);
        // The receiver holds 70,001 bytes: sending resumes there.
        let (got, digest) = read_from(&mut reader, 70_001, 5000);
        assert!(got[..] == bytes[70_001..]);
        assert_eq!(digest, *blake3::hash(&bytes).as_bytes());
        // A link drop sends the sender back to bytes read before: they are read again,
        // and the digest stays that of the file.
        let (got, digest) = read_from(&mut reader, 12_345, 3000);
        assert!(got[..] == bytes[12_345..]);
        assert_eq!(digest, *blake3::hash(&bytes).as_bytes());
    }

    #[test]
    fn bytes_read_again_for_a_resend_from_a_changed_file_fail_the_read() {
        let (dir, bytes, mut reader) = source(3 * READ_BLOCK as usize);
        let (_, digest) = read_from(&mut reader, 0, 2 * ROOM_READ);
        assert_eq!(digest, *blake3::hash(&bytes).as_bytes());
        // Rewritten in place, same length, a later modification time.
        let file = fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("f.bin"))
            .unwrap();
        file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        for len in [ROOM_READ, 1000] {
            let error = reader.read(READ_BLOCK + 3, len, Vec::new()).unwrap_err();
            assert_eq!(
                error.to_string(),
                "the file changed while it was being sent"
            );
        }
    }

    #[test]
    fn a_file_that_shrank_fails_the_read() {
        let (dir, _bytes, mut reader) = source(3 * READ_BLOCK as usize);
        reader.read(0, 1000, Vec::new()).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("f.bin"))
            .unwrap()
            .set_len(READ_BLOCK + 10)
            .unwrap();
        let error = reader.read(READ_BLOCK, 1000, Vec::new()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        let error = reader.read(READ_BLOCK, ROOM_READ, Vec::new()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
