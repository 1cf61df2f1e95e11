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

use std::io::{self};
use std::path::PathBuf;
use std::time::Duration;

use interconnect_proto::{ChannelId, Code, TransferId};
use std::sync::Arc;

mod names;
mod receive;
mod send;
#[cfg(test)]
mod tests;

pub(crate) use names::partial_key;
pub use names::sanitize_file_name;
use names::{candidate_names, truncate_keeping_extension};
pub(crate) use receive::*;
pub(crate) use send::*;

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
    /// Ask the receiving app about each incoming file first: an offer within the limits
    /// above arrives as [`ConnectionEvent::FileOffered`](crate::ConnectionEvent::FileOffered),
    /// and the app accepts it ([`Connection::accept_file`](crate::Connection::accept_file),
    /// into the folder or a path it chooses) or refuses it with a code and reason its
    /// sender's `send_file` returns ([`Connection::reject_file`](crate::Connection::reject_file)).
    /// An offer the app does not answer within this time is accepted into the folder.
    /// `None` (the default) accepts every offer within the limits at once.
    pub ask: Option<Duration>,
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
            ask: None,
        }
    }
}

/// Where the blocking jobs report: the driver's queue (the driver makes it).
#[derive(Clone)]
pub(crate) struct IoSender(Arc<dyn Fn(IoDone) -> Result<(), IoDone> + Send + Sync>);

impl IoSender {
    /// Reports through `report`, which gives a report back when the driver is gone.
    pub(crate) fn new(
        report: impl Fn(IoDone) -> Result<(), IoDone> + Send + Sync + 'static,
    ) -> IoSender {
        IoSender(Arc::new(report))
    }

    /// Reports `done`; gives it back when the driver is gone.
    pub(crate) fn send(&self, done: IoDone) -> Result<(), IoDone> {
        (self.0)(done)
    }
}

impl std::fmt::Debug for IoSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoSender").finish_non_exhaustive()
    }
}

/// What the blocking jobs report to the driver: file I/O, and saving a pinned peer.
#[derive(Debug)]
pub(crate) enum IoDone {
    /// An outgoing file was opened and hashed.
    Prepared {
        ticket: u64,
        result: io::Result<PreparedFile>,
    },
    /// A read for an outgoing transfer finished.
    Read {
        transfer: TransferId,
        offset: u64,
        result: io::Result<send::ReadChunk>,
    },
    /// A peer pinned by the session is saved in the known-peers file, or could not be.
    Pinned {
        fingerprint: crate::Fingerprint,
        result: Result<(), crate::IdentityError>,
    },
    /// An incoming offer's partial file is claimed, or the offer refused.
    Claimed {
        ticket: u64,
        result: Result<Claim, Refusal>,
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
