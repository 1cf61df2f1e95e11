//! The connection's durable messages (see `crate::outbox`): committing them, waiting for
//! their delivery, listing and cancelling what is still on its way.

use bytes::Bytes;
use interconnect_proto::{ContentType, MAX_DURABLE_HEAD_LEN};
use tokio::sync::oneshot;

use crate::command::Command;
use crate::error::Error;
use crate::outbox::Outstanding;

impl super::Connection {
    /// Sends `value` (as JSON) as a durable message: returns its id once it is committed
    /// to the store ([`Config::store`](crate::Config::store)). From then on it is
    /// delivered to the peer's app exactly once, in order with this connection's other
    /// durable messages, over this link or a later one, even if this process or the
    /// peer's is killed and restarted meanwhile. No timeout drops it: only
    /// [`cancel_durable`](Self::cancel_durable) does. The peer's app taking it gives a
    /// [`ConnectionEvent::Delivered`](crate::ConnectionEvent::Delivered) with the id
    /// (and [`delivered`](Self::delivered) resolves).
    ///
    /// The three ways to send, side by side: [`send`](Self::send) is live (it fails
    /// with 204 or 1006 when the peer's app does not take it in time; nothing is kept);
    /// `send_durable` is kept until delivered; [`set_state`](Self::set_state) delivers
    /// only a key's newest value.
    ///
    /// Fails with [`Error::NoStore`] without a store, [`Error::OutboxFull`] past
    /// [`MAX_OUTBOX_MESSAGES`](crate::MAX_OUTBOX_MESSAGES) or
    /// [`MAX_OUTBOX_BYTES`](crate::MAX_OUTBOX_BYTES), [`Error::TooLarge`] for a message
    /// the link cannot carry, and [`Error::Store`] when the commit failed (a full disk):
    /// in each case nothing was kept.
    ///
    /// ```no_run
    /// # async fn f(conn: interconnect::Connection) -> Result<(), interconnect::Error> {
    /// let id = conn.send_durable(&serde_json::json!({ "steps": 4210 })).await?;
    /// // On the disk now: a crash of either end loses nothing.
    /// conn.delivered(id).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_durable<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<u64, Error> {
        self.send_durable_bytes(ContentType::Json, super::to_json(value)?)
            .await
    }

    /// Sends raw bytes with a content type as a durable message; as
    /// [`send_durable`](Self::send_durable).
    pub async fn send_durable_bytes(
        &self,
        content_type: ContentType,
        payload: Bytes,
    ) -> Result<u64, Error> {
        if let Some(limits) = self.limits() {
            let max = limits.max_message_len.saturating_sub(MAX_DURABLE_HEAD_LEN);
            if payload.len() > max {
                let len = payload.len();
                return Err(Error::TooLarge { len, max });
            }
        }
        let shared = &self.shared;
        let (id, tell) = shared.outbox.push(content_type, payload).await?;
        if tell {
            let _ = shared.commands.send(Command::Durable { key: shared.key });
        }
        Ok(id)
    }

    /// Sends the file at `path` durably: returns its id once the outbox holds it (its
    /// path, committed to the store). From then on it is sent, and resumed where the
    /// peer's partial file stops, over this link or later ones and after a restart of
    /// this process on the same store (any handle of the same app starts it again),
    /// until the peer stored it whole; then a
    /// [`ConnectionEvent::Delivered`](crate::ConnectionEvent::Delivered) with the id.
    /// [`outstanding`](Self::outstanding) shows its progress. The file must stay where
    /// it is, unchanged, until then; one that can no longer be read, or that the peer's
    /// app refuses, is given up with an `Error` event.
    pub async fn send_file_durable(&self, path: impl AsRef<std::path::Path>) -> Result<u64, Error> {
        let path = std::fs::canonicalize(path.as_ref()).map_err(|e| {
            Error::Io(crate::Cause::new(
                format!("{}: {e}", path.as_ref().display()),
                e,
            ))
        })?;
        if !path.is_file() {
            let message = format!("{} is not a file", path.display());
            return Err(Error::Io(crate::Cause::message(message)));
        }
        let id = self.shared.outbox.push_file(path.clone()).await?;
        spawn_file(&self.shared, id, path);
        Ok(id)
    }

    /// Resolves once the peer's app took the durable message `id` (at once if it is no
    /// longer in the outbox: delivered before, or cancelled). Fails with
    /// [`Error::Cancelled`] if it is cancelled meanwhile, and with [`Error::Stopped`]
    /// when this endpoint stops first (the message stays in the store for the next run).
    pub async fn delivered(&self, id: u64) -> Result<(), Error> {
        let waiting = self.shared.outbox.wait(id);
        waiting.await.unwrap_or(Err(Error::Stopped))
    }

    /// The durable messages not yet delivered, oldest first.
    pub fn outstanding(&self) -> Vec<Outstanding> {
        self.shared.outbox.outstanding()
    }

    /// The id the last durable message of this connection's outbox got (0 if none ever
    /// did), also in an earlier run on the same store: where an app that restarted
    /// stood.
    pub fn last_durable_id(&self) -> u64 {
        self.shared.outbox.last_id()
    }

    /// Cancels the durable message `id`: `true` if it was still in the outbox and had
    /// not left (it is then never delivered); `false` if it was delivered, unknown, or
    /// already on the link (it may then still arrive, once). A durable file is not
    /// cancelled here (`false`): it goes until stored or given up.
    pub async fn cancel_durable(&self, id: u64) -> Result<bool, Error> {
        let (done, cancelled) = oneshot::channel();
        let key = self.shared.key;
        self.shared
            .commands
            .send(Command::CancelDurable { key, id, done })
            .map_err(|_| Error::Stopped)?;
        cancelled.await.map_err(|_| Error::Stopped)
    }
}

/// Starts the task that sends durable file `id` until the peer stored it (see
/// [`Connection::send_file_durable`](super::Connection::send_file_durable)).
pub(crate) fn spawn_file(
    shared: &std::sync::Arc<super::Shared>,
    id: u64,
    path: std::path::PathBuf,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(id, "no runtime: the durable file waits for the next start");
        return;
    };
    runtime.spawn(send_file(std::sync::Arc::downgrade(shared), id, path));
}

/// Sends file `id`, again after each failure once the channel is open, until it is
/// stored, given up or cancelled, or the endpoint stops (the file then waits in the
/// store for the next run). It holds the connection meanwhile.
async fn send_file(shared: std::sync::Weak<super::Shared>, id: u64, path: std::path::PathBuf) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let conn = super::Connection { shared };
        let Some(stop) = conn.shared.outbox.file_stop(id) else {
            return; // delivered, given up or cancelled
        };
        let opened = tokio::select! {
            opened = conn.opened() => opened,
            () = stop.notified() => return,
        };
        if !opened {
            return;
        }
        let mut transfer = conn.send_file(&path);
        conn.shared
            .outbox
            .file_attempt(id, transfer.progress.clone());
        let outcome = tokio::select! {
            outcome = &mut transfer => outcome,
            () = stop.notified() => return transfer.cancel(),
        };
        let result = match outcome {
            Err(Error::Stopped) => return,
            // It can never go: unreadable, refused by the peer's app, too large.
            Err(error @ (Error::Io(_) | Error::TooLarge { .. })) => Err(error),
            Err(Error::Transfer { code, reason })
                if code != interconnect_proto::Code::CONNECTION_LOST
                    && code != interconnect_proto::Code::TIMEOUT =>
            {
                Err(Error::Transfer { code, reason })
            }
            Err(error) => {
                tracing::debug!(id, %error, "a durable file's attempt failed: again");
                // Not at once: a failure that repeats must not spin.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            Ok(()) => Ok(()),
        };
        let key = conn.shared.key;
        let _ = conn
            .shared
            .commands
            .send(Command::DurableFile { key, id, result });
        return;
    }
}

impl super::Connection {
    /// Waits until the channel is open; `false` once it never will be (closed for good,
    /// or the driver stopped).
    async fn opened(&self) -> bool {
        let mut state = self.shared.state.clone();
        let open = state.wait_for(|s| s.open || s.closed).await;
        open.is_ok_and(|s| s.open)
    }
}
