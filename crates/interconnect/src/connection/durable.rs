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
    /// already on the link (it may then still arrive, once).
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
