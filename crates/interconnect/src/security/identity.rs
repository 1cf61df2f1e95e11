//! The identity's file form, its generation from the system's randomness, and the
//! known-peers file: the parts of a device's identity that touch the disk.

use std::io::{self, Write};
use std::path::Path;

use interconnect_core::{DeviceIdentity, Fingerprint};
use zeroize::Zeroizing;

/// First line of an identity file, so a wrong file is recognised as such.
const IDENTITY_HEADER: &str = "interconnect device identity v1";

/// Why an identity or known-peers file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// The file is not an identity (or known-peers) file of this format.
    #[error("{path} cannot be used: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A [`DeviceIdentity`] made from the system's randomness, and kept in a file.
///
/// The core crate draws no randomness and reads no file; this trait adds both to its
/// key type. Bring it into scope (`use interconnect::IdentityFile`, or the crate's
/// glob import) to call `DeviceIdentity::generate()` and the rest.
///
/// ```
/// use interconnect::{DeviceIdentity, IdentityFile};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("watch.key");
/// let identity = DeviceIdentity::generate();
/// identity.save(&path).unwrap();
/// let loaded = DeviceIdentity::load(&path).unwrap();
/// assert_eq!(loaded.fingerprint(), identity.fingerprint());
/// println!("this watch is {}", identity.fingerprint());
/// ```
pub trait IdentityFile: Sized {
    /// A new key pair from the system's randomness.
    fn generate() -> Self;
    /// Writes the identity to `path`, readable and writable by the owner only. Replaces
    /// the file atomically (write to a temporary file, then rename).
    fn save(&self, path: &Path) -> Result<(), IdentityError>;
    /// Reads an identity written by [`save`](Self::save). The key must match the file's
    /// fingerprint line (a changed digit is an error, not another key), and on Unix the
    /// file must not be readable by group or others (as SSH requires of private keys).
    fn load(path: &Path) -> Result<Self, IdentityError>;
    /// Loads the identity at `path`, or creates and saves a new one if there is none.
    fn load_or_generate(path: &Path) -> Result<Self, IdentityError>;
}

impl IdentityFile for DeviceIdentity {
    fn generate() -> Self {
        DeviceIdentity::from_private_key(rand::random())
    }

    fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let io_error = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = Zeroizing::new(format!(
            "{IDENTITY_HEADER}\nprivate {}\nfingerprint {}\n",
            Zeroizing::new(hex::encode(*self.private_key())).as_str(),
            self.fingerprint()
        ));
        replace_file(path, text.as_bytes()).map_err(io_error)
    }

    fn load(path: &Path) -> Result<Self, IdentityError> {
        let io_error = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        let malformed = |reason| IdentityError::Malformed {
            path: path.display().to_string(),
            reason,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let metadata = std::fs::metadata(path).map_err(io_error)?;
            check_owner(path, &metadata)?;
            if metadata.permissions().mode() & 0o077 != 0 {
                return Err(malformed(
                    "readable by group or others: the private key may have leaked (chmod 600 it, or make a new one)",
                ));
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io_error)?);
        let mut lines = text.lines();
        if lines.next() != Some(IDENTITY_HEADER) {
            return Err(malformed(
                "not an interconnect identity file (no header line)",
            ));
        }
        let hex_key = lines
            .find_map(|l| l.strip_prefix("private "))
            .ok_or_else(|| malformed("no private key line"))?;
        let mut private = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_key.trim(), &mut private[..])
            .map_err(|_| malformed("private key is not 64 hex digits"))?;
        let identity = DeviceIdentity::from_private_key(*private);
        let written: Fingerprint = text
            .lines()
            .find_map(|l| l.strip_prefix("fingerprint "))
            .ok_or_else(|| malformed("no fingerprint line"))?
            .parse()
            .map_err(|_| malformed("the fingerprint line is not a fingerprint"))?;
        if written != identity.fingerprint() {
            return Err(malformed(
                "the private key does not match the fingerprint line (the file was changed)",
            ));
        }
        Ok(identity)
    }

    fn load_or_generate(path: &Path) -> Result<Self, IdentityError> {
        match DeviceIdentity::load(path) {
            Err(IdentityError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    create_private_dir(dir)?;
                }
                let identity = DeviceIdentity::generate();
                identity.save(path)?;
                Ok(identity)
            }
            other => other,
        }
    }
}

/// A file of pinned peer fingerprints, one per line (`#` starts a comment), for trust on
/// first use and pairing to remember peers across runs.
#[derive(Clone, Debug)]
pub struct KnownPeers {
    path: std::path::PathBuf,
}

impl KnownPeers {
    /// The known-peers file at `path` (it need not exist yet).
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        KnownPeers { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pinned fingerprints; none when the file does not exist.
    pub fn load(&self) -> Result<Vec<Fingerprint>, IdentityError> {
        self.parse(&self.read()?)
    }

    /// The file's text; empty when it does not exist. On Unix a file that another user
    /// owns or that others may write is refused: whoever can write it chooses whom this
    /// device trusts.
    fn read(&self) -> Result<String, IdentityError> {
        #[cfg(unix)]
        match std::fs::metadata(&self.path) {
            Ok(metadata) => check_not_shared(&self.path, &metadata)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(IdentityError::Io {
                    path: self.path.display().to_string(),
                    source,
                });
            }
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(IdentityError::Io {
                path: self.path.display().to_string(),
                source,
            }),
        }
    }

    fn parse(&self, text: &str) -> Result<Vec<Fingerprint>, IdentityError> {
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.parse().map_err(|_| IdentityError::Malformed {
                    path: self.path.display().to_string(),
                    reason: "a line is not a fingerprint",
                })
            })
            .collect()
    }

    /// Adds a fingerprint (no effect if already there). The file is rewritten whole
    /// under an exclusive lock (of a `.lock` file beside it) and replaced atomically, so
    /// two processes pinning at once both land and a reader never sees half a file.
    pub fn pin(&self, fingerprint: Fingerprint) -> Result<(), IdentityError> {
        let io_error = |source| IdentityError::Io {
            path: self.path.display().to_string(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("lock"))
            .map_err(io_error)?;
        lock.lock().map_err(io_error)?;
        let mut text = self.read()?;
        if self.parse(&text)?.contains(&fingerprint) {
            return Ok(());
        }
        // Comments and layout of a hand-edited file are kept; the new line is added after
        // a newline of its own.
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("{fingerprint}\n"));
        replace_file(&self.path, text.as_bytes()).map_err(io_error)
    }
}

/// Replaces `path` atomically with `contents`, owner-only (0600 on Unix): written to a
/// new file of a random name beside it, never one that exists (`create_new` does not
/// follow a symbolic link planted there), synced, then renamed over `path`.
fn replace_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Creates `dir` (and its missing parents) owner-only, 0700 on Unix, and refuses one
/// that exists but another user owns or others may write (see [`check_not_shared`]).
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), IdentityError> {
    let io_error = |source| IdentityError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_error)?;
    #[cfg(unix)]
    check_not_shared(dir, &std::fs::metadata(dir).map_err(io_error)?)?;
    Ok(())
}

/// Refuses a file or folder of the device's state that another user owns or that group
/// or others may write: they could swap the key or choose whom this device trusts.
#[cfg(unix)]
fn check_not_shared(path: &Path, metadata: &std::fs::Metadata) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    check_owner(path, metadata)?;
    if metadata.permissions().mode() & 0o022 != 0 {
        return Err(IdentityError::Malformed {
            path: path.display().to_string(),
            reason: "writable by group or others: they could choose whom this device trusts (chmod go-w it)",
        });
    }
    Ok(())
}

#[cfg(unix)]
fn check_owner(path: &Path, metadata: &std::fs::Metadata) -> Result<(), IdentityError> {
    use std::os::unix::fs::MetadataExt;
    if metadata.uid() != rustix::process::geteuid().as_raw() {
        return Err(IdentityError::Malformed {
            path: path.display().to_string(),
            reason: "owned by another user: it is not this device's state to trust",
        });
    }
    Ok(())
}
