//! The commands handles send the driver, and what the driver holds for a handle.

use bytes::Bytes;
use interconnect_proto::Code;
use tokio::sync::{oneshot, watch};

use crate::error::Error;
use crate::sends::Sends;
use crate::state::{ConnState, Incoming, Progress, Unread};

pub(crate) enum Command {
    Open {
        key: u64,
        package: String,
        signature: Option<String>,
        conn: ConnSlot,
    },
    Register {
        key: u64,
        package: String,
        version: u32,
        signature: Option<String>,
        conn: ConnSlot,
    },
    Retry {
        key: u64,
        done: oneshot::Sender<()>,
    },
    /// The connection queued sends in its `Sends` since the driver last took them.
    Sends {
        key: u64,
    },
    /// The app changed its state (the connection's `States`).
    States {
        key: u64,
    },
    /// The connection's outbox committed messages since the driver last looked.
    Durable {
        key: u64,
    },
    /// A durable file's task is done with it: stored by the peer, or given up.
    DurableFile {
        key: u64,
        id: u64,
        result: Result<(), crate::Error>,
    },
    /// The app cancels a durable message: whether it was.
    CancelDurable {
        key: u64,
        id: u64,
        done: oneshot::Sender<bool>,
    },
    CancelSend {
        key: u64,
        /// The send's slot in the connection's `Sends`.
        slot: u32,
        withdrawn: oneshot::Sender<bool>,
    },
    /// The app took messages from its stream; the latest one's receipt waits in its
    /// `Unread`.
    Taken {
        key: u64,
    },
    AwaitReply {
        key: u64,
        request: u32,
        reply: oneshot::Sender<Result<Incoming, Error>>,
    },
    ForgetReply {
        key: u64,
        request: u32,
    },
    QueryVersion {
        package: String,
        reply: oneshot::Sender<Result<Option<u32>, Error>>,
    },
    Close {
        key: u64,
        code: Code,
        reason: String,
        done: oneshot::Sender<()>,
    },
    SendFile {
        key: u64,
        ticket: u64,
        path: std::path::PathBuf,
        /// The app's metadata about the file (empty: none).
        meta: Bytes,
        progress: watch::Sender<Progress>,
        done: oneshot::Sender<Result<(), Error>>,
    },
    CancelFile {
        key: u64,
        ticket: u64,
    },
    CancelIncoming {
        key: u64,
        transfer: u32,
    },
    /// The app's answer to a `FileOffered`.
    DecideFile {
        key: u64,
        transfer: u32,
        decision: FileDecision,
    },
    Release {
        key: u64,
    },
    /// The app took enough of its unread messages: acknowledge again.
    Drained {
        key: u64,
    },
    ConfirmPairing {
        link: u64,
        accept: bool,
    },
    /// A blocking job (file I/O, saving a pinned peer) is done. Such reports share the
    /// commands' queue so the driver's loop waits on one queue fewer.
    Io(crate::files::IoDone),
    Shutdown,
}

/// What an app decided about an offered file.
pub(crate) enum FileDecision {
    /// Store it in the files folder, or at this path (which must not exist).
    Accept(Option<std::path::PathBuf>),
    /// Refuse it: its sender's `send_file` fails with this code and reason.
    Reject { code: Code, reason: String },
}

/// What the driver holds for one connection handle.
pub(crate) struct ConnSlot {
    pub(crate) events: crate::inbox::Sender,
    pub(crate) unread: std::sync::Arc<Unread>,
    pub(crate) state: watch::Sender<ConnState>,
    pub(crate) sends: std::sync::Arc<Sends>,
    pub(crate) states: std::sync::Arc<crate::app_state::States>,
    pub(crate) outbox: std::sync::Arc<crate::outbox::Outbox>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        // The driver lets go of the connection: nothing queued may wait for it.
        self.sends.stop();
        self.states.stop();
        self.outbox.stop();
    }
}

/// What answers a pairing request: the user's answer, to the driver of `link`.
pub(crate) fn pairing_answer(
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    link: u64,
) -> impl FnOnce(bool) + Send + Sync + 'static {
    move |accept| {
        let _ = commands.send(Command::ConfirmPairing { link, accept });
    }
}
