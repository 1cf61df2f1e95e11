//! The error type of the async API.

use interconnect_proto::Code;

/// Why an API call failed. [`Error::code`] gives the stable numeric code of the vendor APIs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No answer in time (204): a reply, a version query, the peer.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A message was not acknowledged within the send timeout (204). `withdrawn`: it
    /// never reached the wire and never will, so sending it again cannot duplicate it.
    /// Otherwise it was sent and may still arrive (once).
    #[error("{}", if *withdrawn {
        "no acknowledgement in time: the message was withdrawn unsent (safe to send again)"
    } else {
        "no acknowledgement in time: the message was sent and may still arrive"
    })]
    SendTimeout {
        /// Whether the message was taken back before it reached the wire.
        withdrawn: bool,
    },
    /// The channel or link is down or closed (1006).
    #[error("connection lost")]
    ConnectionLost,
    /// The peer refused the channel or the operation: 1001, 1002, 1007, ...
    #[error("refused with {code}: {reason}")]
    Refused {
        /// The code.
        code: Code,
        /// The peer's reason.
        reason: String,
    },
    /// The message is larger than the link carries (4001).
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Message size.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The value could not be serialised or a received message not deserialised (1000).
    /// The serde error is its cause's [`source`](std::error::Error::source).
    #[error("serialisation: {0}")]
    Serialization(#[source] Cause),
    /// A file transfer failed or was cancelled: 4001 (too large), 4003 (cancelled), 4004
    /// (verification failed), 4005 (storage), 1006 (channel closed), ...
    #[error("file transfer failed with {code}: {reason}")]
    Transfer {
        /// The code.
        code: Code,
        /// Detail, from whichever side ended the transfer.
        reason: String,
    },
    /// `try_send` found the channel's queue full (`SessionConfig::max_queued` messages):
    /// nothing was queued. `send` waits for room instead (1000).
    #[error("the send queue is full ({max} messages wait)")]
    QueueFull {
        /// The queue's bound.
        max: usize,
    },
    /// A local file could not be read. The `std::io::Error` is its cause's
    /// [`source`](std::error::Error::source).
    #[error("cannot read the file: {0}")]
    Io(#[source] Cause),
    /// The background driver has stopped (the `Interconnect` or `Hub` was shut down).
    #[error("the interconnect driver has stopped")]
    Stopped,
    /// [`Hub::register`](crate::Hub::register) on a hub that serves several watches
    /// ([`Config::max_watches`](crate::Config::max_watches) above 1), where an app
    /// registers with [`Hub::register_watches`](crate::Hub::register_watches).
    #[error("this hub serves several watches: register with Hub::register_watches")]
    SeveralWatches,
    /// [`Hub::register_watches`](crate::Hub::register_watches) (or
    /// [`admit_new_watches`](crate::Hub::admit_new_watches)) on a hub of one watch
    /// ([`Config::max_watches`](crate::Config::max_watches) is 1), where an app registers
    /// with [`Hub::register`](crate::Hub::register).
    #[error("this hub serves one watch: register with Hub::register")]
    OneWatch,
    /// [`Connection::set_state`](crate::Connection::set_state) past a bound of the
    /// connection's state: nothing was changed (1000).
    #[error("the state's {limit} is at most {max}")]
    StateLimit {
        /// Which bound: the number of keys, the bytes of all values, a key's length.
        limit: &'static str,
        /// The bound.
        max: usize,
    },
    /// [`Connection::send_durable`](crate::Connection::send_durable) on an endpoint
    /// with no store ([`Config::store`](crate::Config::store)): nothing was kept (1000).
    #[error("durable messages need a store: set Config::store")]
    NoStore,
    /// The durable outbox is full (its `limit`: messages or bytes); nothing was kept
    /// (1000). It empties as the peer's app takes what it holds.
    #[error("the durable outbox holds at most {max} {limit}")]
    OutboxFull {
        /// Which bound: `"messages"` or `"bytes"`.
        limit: &'static str,
        /// The bound.
        max: usize,
    },
    /// The store could not be read or written (4005): what it reported committed
    /// before is still there.
    #[error("the store failed: {0}")]
    Store(#[source] Cause),
    /// The app cancelled the durable message before it was delivered (1000).
    #[error("cancelled before it was delivered")]
    Cancelled,
    /// Any other failure, with its code.
    #[error("error {code}: {message}")]
    Other {
        /// The code.
        code: Code,
        /// Detail.
        message: String,
    },
}

impl Error {
    /// The stable numeric code: 204, 1000, 1001, 1002, 1006, 1007 or one of ours.
    pub fn code(&self) -> Code {
        match self {
            Error::Timeout(_) | Error::SendTimeout { .. } => Code::TIMEOUT,
            Error::ConnectionLost | Error::Stopped => Code::CONNECTION_LOST,
            Error::Refused { code, .. }
            | Error::Other { code, .. }
            | Error::Transfer { code, .. } => *code,
            Error::Io(_) | Error::Store(_) => Code::STORAGE,
            Error::TooLarge { .. } => Code::TOO_LARGE,
            Error::Serialization(_)
            | Error::QueueFull { .. }
            | Error::SeveralWatches
            | Error::OneWatch
            | Error::StateLimit { .. }
            | Error::NoStore
            | Error::OutboxFull { .. }
            | Error::Cancelled => Code::OTHERS,
        }
    }

    /// An error for a failure the session reported by code.
    pub(crate) fn from_code(code: Code) -> Error {
        match code {
            Code::TIMEOUT => Error::Timeout("the peer"),
            Code::CONNECTION_LOST => Error::ConnectionLost,
            Code::APP_UNINSTALLED | Code::APP_NOT_CONNECTED | Code::SIGNATURE_MISMATCH => {
                Error::Refused {
                    code,
                    reason: code.name().unwrap_or_default().into(),
                }
            }
            code => Error::Other {
                code,
                message: code.name().unwrap_or("error").into(),
            },
        }
    }
}

impl From<crate::sans_io::CommandError> for Error {
    fn from(error: crate::sans_io::CommandError) -> Error {
        use crate::sans_io::CommandError as E;
        match error {
            E::ChannelClosed => Error::ConnectionLost,
            E::TooLarge { len, max } => Error::TooLarge { len, max },
            E::QueueFull(max) => Error::QueueFull { max },
            E::Refused(code) => Error::from_code(code),
            E::NoFiles => Error::Transfer {
                code: Code::OTHERS,
                reason: E::NoFiles.to_string(),
            },
            other => Error::Other {
                code: other.code(),
                message: other.to_string(),
            },
        }
    }
}

/// What an [`Error`] wraps: a message, and the error it came from (a serde or I/O error)
/// as its [`source`](std::error::Error::source). Compared by message.
#[derive(Clone, Debug)]
pub struct Cause {
    message: String,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// A cause that came from `source`, said as `message`.
    pub(crate) fn new(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Cause {
        Cause {
            message: message.into(),
            source: Some(std::sync::Arc::new(source)),
        }
    }

    /// A cause with no error under it.
    pub(crate) fn message(message: impl Into<String>) -> Cause {
        Cause {
            message: message.into(),
            source: None,
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.message == other.message
    }
}

impl Eq for Cause {}
