//! The app-facing channel handle: [`Connection`], its events and its state.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use interconnect_proto::{Code, ContentType, Exchange};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot, watch};

mod app_state;
mod durable;
mod events;

use crate::app_state::States;
use crate::command::{Command, ConnSlot, FileDecision};
use crate::error::{Cause, Error};
use crate::inbox;
use crate::sends::{Queue, Sends};
use crate::state::{
    ConnState, Diagnosis, Incoming, LinkLimits, LinkView, Progress, ReadyState, Unread,
};

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, Error> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Error::Serialization(Cause::new(e.to_string(), e)))
}

/// A message queued by [`Connection::send`] (or `try_send`, `send_bytes`), waiting for
/// its outcome: await it for the acknowledgement, or [`cancel`](Self::cancel) it.
///
/// The message was queued when `send` was called, and its send timeout
/// ([`Config::send_timeout`](crate::Config::send_timeout)) runs from then, whenever and
/// however often this is polled: awaited after the deadline, it resolves at once with
/// [`Error::SendTimeout`], the message withdrawn if it had not left. Dropping it leaves
/// the message queued (fire and forget: it is still delivered, or fails unseen).
#[must_use = "the message is queued; await this for its acknowledgement (dropping it leaves the message queued)"]
pub struct Sending {
    shared: Arc<Shared>,
    deadline: tokio::time::Instant,
    /// Where the outcome comes (in the connection's [`Sends`](crate::sends::Sends)), or
    /// the error that kept the message from being queued.
    outcome: Option<Result<u32, Error>>,
    /// Set once the deadline passed: the withdrawal under way.
    expired: Option<Withdrawal>,
    /// The deadline's timer, made the first time the outcome is not ready (most sends
    /// are awaited once the peer acknowledged, and need none).
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for Sending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sending")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Sending {
    fn new(shared: Arc<Shared>, outcome: Result<u32, Error>) -> Sending {
        let deadline = tokio::time::Instant::now() + shared.send_timeout;
        Sending {
            shared,
            deadline,
            outcome: Some(outcome),
            expired: None,
            sleep: None,
        }
    }

    /// Withdraws the message if it has not left yet, and says whether it was withdrawn.
    /// `false`: it is on its way and may still be delivered (the peer app may get it),
    /// or it had already been acknowledged or failed.
    pub async fn cancel(self) -> bool {
        match self.outcome {
            Some(Ok(slot)) => withdraw(&self.shared, slot).await,
            _ => false,
        }
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if let Some(Ok(slot)) = self.outcome.take() {
            self.shared.sends.abandon(slot);
        }
    }
}

/// A send past its deadline: the withdrawal, then the outcome.
type Withdrawal = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// Asks the driver to withdraw a queued message; whether it had not left yet.
async fn withdraw(shared: &Shared, slot: u32) -> bool {
    let (tx, withdrawn) = oneshot::channel();
    let _ = shared.commands.send(Command::CancelSend {
        key: shared.key,
        slot,
        withdrawn: tx,
    });
    withdrawn.await.unwrap_or(false)
}

impl Future for Sending {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(expired) = &mut this.expired {
            return expired.as_mut().poll(cx);
        }
        let slot = match this.outcome {
            Some(Ok(slot)) => slot,
            Some(Err(_)) => {
                let Some(Err(error)) = this.outcome.take() else {
                    return Poll::Ready(Err(Error::Stopped));
                };
                return Poll::Ready(Err(error));
            }
            None => return Poll::Ready(Err(Error::Stopped)),
        };
        if let Poll::Ready(result) = this.shared.sends.poll(slot, cx) {
            this.outcome = None;
            return Poll::Ready(result);
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The deadline passed: withdraw the message if it has not left. The slot stays
        // this future's until the withdrawal settled.
        let shared = this.shared.clone();
        let mut expired: Withdrawal = Box::pin(async move {
            let withdrawn = withdraw(&shared, slot).await;
            // The outcome may have come while the cancel was on its way.
            match shared.sends.try_take(slot) {
                Some(result) => result,
                None => {
                    shared.sends.abandon(slot);
                    Err(Error::SendTimeout { withdrawn })
                }
            }
        });
        this.outcome = None;
        let polled = expired.as_mut().poll(cx);
        this.expired = Some(expired);
        polled
    }
}

/// An outgoing file transfer: a future that resolves when the receiver verified and
/// stored the file, with progress and cancellation. Dropping it does not cancel the
/// transfer (the file is still sent, as a spawned task would); call
/// [`cancel`](Self::cancel) for that.
///
/// It has no deadline of its own: across link drops it waits and resumes where the
/// receiver's partial file ends, for as long as the endpoint runs; a link that stalls is
/// dropped after the link timeout and the transfer carries on over the next one. To
/// bound it, wrap it in `tokio::time::timeout` and call `cancel` when that expires.
pub struct FileTransfer {
    shared: Arc<Shared>,
    ticket: u64,
    progress: watch::Receiver<Progress>,
    done: Result<oneshot::Receiver<Result<(), Error>>, Error>,
}

impl FileTransfer {
    /// The latest progress.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// A stream of progress updates (the latest one, whenever it changes).
    pub fn progress_stream(&self) -> ProgressStream {
        ProgressStream(tokio_stream::wrappers::WatchStream::new(
            self.progress.clone(),
        ))
    }

    /// Cancels the transfer; the receiver removes its partial file and the transfer
    /// resolves with 4003.
    pub fn cancel(&self) {
        let _ = self.shared.commands.send(Command::CancelFile {
            key: self.shared.key,
            ticket: self.ticket,
        });
    }
}

/// The progress of a [`FileTransfer`] as a [`Stream`](futures_core::Stream): the latest
/// value first, then each change; it ends when the transfer does.
pub struct ProgressStream(tokio_stream::wrappers::WatchStream<Progress>);

impl ProgressStream {
    /// The next progress value (the latest one first); `None` once the transfer ended.
    ///
    /// ```no_run
    /// # async fn f(conn: interconnect::Connection) {
    /// let transfer = conn.send_file("photo.jpg");
    /// let mut progress = transfer.progress_stream();
    /// while let Some(p) = progress.next().await {
    ///     println!("{} of {} bytes", p.bytes_done, p.total);
    /// }
    /// # }
    /// ```
    pub async fn next(&mut self) -> Option<Progress> {
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut self.0), cx)).await
    }
}

impl futures_core::Stream for ProgressStream {
    type Item = Progress;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Progress>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

impl std::fmt::Debug for ProgressStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressStream").finish_non_exhaustive()
    }
}

impl Future for FileTransfer {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.done {
            Err(error) => Poll::Ready(Err(error.clone())),
            Ok(rx) => Pin::new(rx)
                .poll(cx)
                .map(|outcome| outcome.unwrap_or(Err(Error::Stopped))),
        }
    }
}

impl std::fmt::Debug for FileTransfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTransfer")
            .field("progress", &*self.progress.borrow())
            .finish_non_exhaustive()
    }
}

pub use events::Events;

pub(crate) struct Shared {
    pub(crate) key: u64,
    pub(crate) unread: Arc<Unread>,
    pub(crate) closed_seen: Arc<AtomicBool>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) state: watch::Receiver<ConnState>,
    pub(crate) events: std::sync::Mutex<Option<inbox::Receiver>>,
    pub(crate) next_ticket: AtomicU64,
    pub(crate) sends: Arc<Sends>,
    pub(crate) states: Arc<States>,
    pub(crate) outbox: Arc<crate::outbox::Outbox>,
    pub(crate) next_request: AtomicU32,
    pub(crate) send_timeout: Duration,
    pub(crate) package: String,
    /// The link of the driver this handle belongs to (on a hub of several, its watch's).
    pub(crate) link: LinkView,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self
            .commands
            .send(Command::Release { key: self.key })
            .is_err()
        {
            self.sends.stop(); // nothing queued may wait for a driver that is gone
        }
    }
}

/// A channel to the peer app: the vendor API's `connect` object.
///
/// On the watch it comes from [`Interconnect::instance`](crate::Interconnect::instance), on
/// the phone from [`Hub::register`](crate::Hub::register); both have the same API. Cheap
/// to clone; the channel closes (watch) or the app detaches (phone) when the last clone
/// is dropped.
#[derive(Clone)]
pub struct Connection {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("package", &self.shared.package)
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

impl Connection {
    /// A new handle for `package` whose commands go to a driver, and what that driver
    /// holds for it.
    pub(crate) fn new(
        key: u64,
        package: &str,
        commands: mpsc::UnboundedSender<Command>,
        link: LinkView,
        max_unread: usize,
        send_timeout: Duration,
        (outbox, unseen): (crate::outbox::Outbox, Vec<u64>),
    ) -> (ConnSlot, Connection) {
        let (events_tx, events) = inbox::inbox();
        let outbox = Arc::new(outbox);
        // Deliveries the app was not told of before this side restarted come first.
        for seq in unseen {
            let event = crate::ConnectionEvent::Delivered { id: seq };
            let mark = crate::inbox::Mark::Delivered {
                outbox: outbox.clone(),
                seq,
            };
            events_tx.send((event, None, Some(Box::new(mark))));
        }
        let unread = Arc::new(Unread::new(max_unread));
        let sends = Arc::new(Sends::default());
        let states = Arc::new(States::load(outbox.store(), outbox.scope.clone()));
        let (state_tx, state) = watch::channel(ConnState {
            connecting: true,
            ..ConnState::default()
        });
        let slot = ConnSlot {
            events: events_tx,
            unread: unread.clone(),
            state: state_tx,
            sends: sends.clone(),
            states: states.clone(),
            outbox: outbox.clone(),
        };
        let conn = Connection {
            shared: Arc::new(Shared {
                key,
                unread,
                closed_seen: Arc::default(),
                commands,
                state,
                events: std::sync::Mutex::new(Some(events)),
                next_ticket: AtomicU64::new(1),
                sends,
                states,
                outbox,
                next_request: AtomicU32::new(1),
                send_timeout,
                package: package.into(),
                link,
            }),
        };
        // Files an earlier run left in the outbox go again.
        for (id, path) in conn.shared.outbox.files() {
            durable::spawn_file(&conn.shared, id, path);
        }
        (slot, conn)
    }

    fn command(&self, command: Command) -> Result<(), Error> {
        self.shared
            .commands
            .send(command)
            .map_err(|_| Error::Stopped)
    }

    /// The package this connection talks to (watch) or registered (phone).
    pub fn package(&self) -> &str {
        &self.shared.package
    }

    /// What the link to this connection's peer device carries, while one is up: the
    /// largest message and frame, the file chunk, on BLE the radio's ATT MTU (and PHY and
    /// connection interval when the stack says), and the bytes per second it moved over
    /// the last seconds. On a hub of several watches, the link of this connection's watch.
    pub fn limits(&self) -> Option<LinkLimits> {
        self.shared.link.limits()
    }

    /// The name the peer device said (`SessionConfig::name`: a watch's "Alice's watch"),
    /// once its link is up and if it has one. On a hub of several watches, this
    /// connection's watch.
    pub fn peer_name(&self) -> Option<String> {
        self.shared.link.peer_name()
    }

    /// The vendor API's `getReadyState`: [`ReadyState::Open`] (1) or [`ReadyState::Closed`] (2).
    /// It follows the channel, and agrees with the [`events`](Self::events) the app took:
    /// closed from the moment the app took a `Close` until it took the next `Open`.
    pub fn ready_state(&self) -> ReadyState {
        let closed_seen = self.shared.closed_seen.load(Ordering::Acquire);
        if !closed_seen && self.shared.state.borrow().open {
            ReadyState::Open
        } else {
            ReadyState::Closed
        }
    }

    /// The events of this connection, in order. One stream per connection: the first
    /// call takes it, later calls (on this handle or a clone) return `None`. Taking a
    /// message from it is what acknowledges the message to the sender (see
    /// [`Acknowledge`](crate::Acknowledge)).
    pub fn events(&self) -> Option<Events> {
        let rx = self
            .shared
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        Some(Events {
            rx,
            unread: self.shared.unread.clone(),
            closed_seen: self.shared.closed_seen.clone(),
            commands: self.shared.commands.clone(),
            key: self.shared.key,
        })
    }

    /// Watch side: the version of the app registered on the phone for this package, or
    /// `None` when no such app is installed. Waits for a link in progress (as
    /// [`diagnosis`](Self::diagnosis) does), within the send timeout (then 204). On the
    /// phone it fails (1000): a watch registers no apps.
    pub async fn peer_client_version(&self) -> Result<Option<u32>, Error> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::QueryVersion {
            package: self.shared.package.clone(),
            reply: tx,
        })?;
        match tokio::time::timeout(self.shared.send_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout("the version reply")),
        }
    }

    /// [`peer_client_version`](Self::peer_client_version) in the vendor API's form: the version,
    /// or -1 when the app is not installed.
    pub async fn peer_client_version_code(&self) -> Result<i64, Error> {
        Ok(self.peer_client_version().await?.map_or(-1, i64::from))
    }

    /// The vendor API's `diagnosis`: 0 when the channel is open, waiting up to `timeout` (10 s
    /// if `None`) for a connect in progress; otherwise the refusal's code (1001, and 1002
    /// or 1007 which [`Diagnosis::status`] reports as 1000). On the watch, a phone that
    /// refuses the link itself says so: 4007 (this watch's key is not trusted there) or
    /// 4008 at once; 4002 (it serves another watch) if that is still so at the timeout;
    /// 204 if nothing answered in time. A channel that was refused earlier is retried
    /// first, so installing the phone app and diagnosing again succeeds.
    pub async fn diagnosis(&self, timeout: Option<Duration>) -> Diagnosis {
        let timeout = timeout.unwrap_or(Duration::from_secs(10));
        let (tx, rx) = oneshot::channel();
        if self
            .command(Command::Retry {
                key: self.shared.key,
                done: tx,
            })
            .is_err()
            || rx.await.is_err()
        {
            return Diagnosis {
                code: Code::CONNECTION_LOST,
            };
        }
        let mut state = self.shared.state.clone();
        let settled = tokio::time::timeout(timeout, async {
            loop {
                let code = {
                    let s = state.borrow_and_update();
                    if s.open {
                        Some(Code::OK)
                    } else if s.closed {
                        Some(Code::CONNECTION_LOST)
                    } else if let Some((code, true)) = s.refused {
                        // The phone will not have this watch: waiting cannot help.
                        Some(code)
                    } else if !s.connecting {
                        Some(s.last_error.unwrap_or(Code::OTHERS))
                    } else {
                        None
                    }
                };
                if let Some(code) = code {
                    return code;
                }
                if state.changed().await.is_err() {
                    return Code::CONNECTION_LOST;
                }
            }
        })
        .await;
        // Out of time: a refusal seen meanwhile (4002, the phone serves another watch)
        // says more than 204.
        let refused = self.shared.state.borrow().refused.map(|(code, _)| code);
        Diagnosis {
            code: settled.unwrap_or(refused.unwrap_or(Code::TIMEOUT)),
        }
    }

    /// Sends `value` as JSON (the vendor API's "Object") and resolves when the peer acknowledged
    /// it. Fails with 204 after the send timeout, 1006 if the channel is closed.
    ///
    /// A phone app's message outlives the watch process: if the watch dies and starts
    /// again, what its app had not taken, and what is sent until the new watch opens the
    /// package, goes to the new watch (or fails with 204 at the send timeout, withdrawn).
    /// A watch that closes the channel (its app's `close`, or a clean shutdown) says
    /// so: then the unacknowledged messages fail with 1006.
    ///
    /// The message is queued when this is called, not when the future is first polled, so
    /// messages go out in call order even when their futures are awaited concurrently;
    /// the send timeout ([`Config::send_timeout`](crate::Config::send_timeout), 10 s by
    /// default) runs from the call too. At the timeout a message that has not left is
    /// withdrawn ([`Error::SendTimeout`] says whether); one already on its way may still
    /// be delivered. [`Sending::cancel`] withdraws it earlier.
    ///
    /// What a sender's death does: the queue lives in this process's memory, so a watch
    /// (or phone) that dies holding unacknowledged messages loses them; only the other
    /// side's messages outlive it (see above).
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Sending {
        match to_json(value) {
            Ok(payload) => self.start_send(ContentType::Json, Exchange::OneWay, payload),
            Err(error) => Sending::new(self.shared.clone(), Err(error)),
        }
    }

    /// Like [`send`](Self::send), but when the channel's queue is full
    /// (`SessionConfig::max_queued` messages beyond those in flight) it resolves at once
    /// with [`Error::QueueFull`] instead of waiting for room.
    pub fn try_send<T: Serialize + ?Sized>(&self, value: &T) -> Sending {
        match to_json(value) {
            Ok(payload) => {
                self.start_send_with(ContentType::Json, Exchange::OneWay, payload, false)
            }
            Err(error) => Sending::new(self.shared.clone(), Err(error)),
        }
    }

    /// Sends raw bytes with a content type; resolves on the acknowledgement. Queued at
    /// call time, like [`send`](Self::send); waits for room when the queue is full.
    pub fn send_bytes(&self, content_type: ContentType, payload: Bytes) -> Sending {
        self.start_send(content_type, Exchange::OneWay, payload)
    }

    /// Queues a message now (waiting for room if the queue is full); the returned value
    /// waits for its outcome.
    fn start_send(&self, content_type: ContentType, exchange: Exchange, payload: Bytes) -> Sending {
        self.start_send_with(content_type, exchange, payload, true)
    }

    fn start_send_with(
        &self,
        content_type: ContentType,
        exchange: Exchange,
        payload: Bytes,
        wait: bool,
    ) -> Sending {
        let shared = &self.shared;
        let (slot, queue) = shared.sends.queue(content_type, exchange, payload, wait);
        if let Queue::Tell = queue {
            // The first since the driver last took them: one command for the batch. A
            // driver that is gone fails what is queued (`Sends::stop`).
            if self.command(Command::Sends { key: shared.key }).is_err() {
                shared.sends.stop();
            }
        }
        Sending::new(shared.clone(), Ok(slot))
    }

    /// Sends `value` as JSON as a request and waits up to `timeout` for the peer's reply,
    /// decoded as `R`. Several requests may be in flight at once.
    pub fn request<T, R>(
        &self,
        value: &T,
        timeout: Duration,
    ) -> impl Future<Output = Result<R, Error>> + Send + 'static + use<T, R>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let reply = to_json(value).map(|p| self.request_bytes(ContentType::Json, p, timeout));
        async move { reply?.await?.decode() }
    }

    /// Sends a request with raw bytes and waits for the reply message. Queued at call
    /// time.
    pub fn request_bytes(
        &self,
        content_type: ContentType,
        payload: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Incoming, Error>> + Send + 'static + use<> {
        let id = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let key = self.shared.key;
        let registered = self.command(Command::AwaitReply {
            key,
            request: id,
            reply: tx,
        });
        let sent = self.start_send(content_type, Exchange::Request(id), payload);
        let shared = self.shared.clone();
        async move {
            registered?;
            let exchange = async {
                sent.await?;
                rx.await.map_err(|_| Error::Stopped)?
            };
            let outcome = tokio::time::timeout(timeout, exchange).await;
            let _ = shared
                .commands
                .send(Command::ForgetReply { key, request: id });
            outcome.unwrap_or(Err(Error::Timeout("the reply")))
        }
    }

    /// Answers a request message with `value` as JSON.
    pub fn reply<T: Serialize + ?Sized>(
        &self,
        request: &Incoming,
        value: &T,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static + use<T> {
        let pending = to_json(value).map(|p| self.reply_bytes(request, ContentType::Json, p));
        async move { pending?.await }
    }

    /// Answers a request message with raw bytes.
    pub fn reply_bytes(
        &self,
        request: &Incoming,
        content_type: ContentType,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static + use<> {
        let pending = match request.request_id {
            Some(id) => Ok(self.start_send(content_type, Exchange::Reply(id), payload)),
            None => Err(Error::Other {
                code: Code::OTHERS,
                message: "the message is not a request".into(),
            }),
        };
        async move { pending?.await }
    }

    /// The vendor API's `sendFile`: sends the file at `path`, streamed from disk. The returned
    /// [`FileTransfer`] resolves when the receiver has verified and stored it; it reports
    /// progress and can be cancelled. Queued at call time; several transfers may run at
    /// once, and messages are never held up behind them. A link drop, and on the watch
    /// the phone app going away and coming back, only pause it: it resumes from what the
    /// receiver holds.
    pub fn send_file(&self, path: impl AsRef<std::path::Path>) -> FileTransfer {
        self.start_file(path.as_ref(), Ok(Bytes::new()))
    }

    /// [`send_file`](Self::send_file) with the app's metadata about the file (a value
    /// serialised as JSON, at most 4,096 bytes): the receiving app gets it with the offer
    /// ([`ConnectionEvent::FileOffered`](crate::ConnectionEvent::FileOffered) or [`ConnectionEvent::FileIncoming`](crate::ConnectionEvent::FileIncoming)'s `meta`,
    /// read with [`decode_meta`](crate::decode_meta)) and may decide on it. A peer that
    /// does not read metadata (an earlier release) is not offered the file: the transfer
    /// fails with 1000 rather than arrive without it.
    pub fn send_file_with_meta<T: Serialize + ?Sized>(
        &self,
        path: impl AsRef<std::path::Path>,
        meta: &T,
    ) -> FileTransfer {
        self.start_file(path.as_ref(), to_json(meta))
    }

    fn start_file(&self, path: &std::path::Path, meta: Result<Bytes, Error>) -> FileTransfer {
        let ticket = self.shared.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (progress_tx, progress) = watch::channel(Progress::default());
        let (tx, done) = oneshot::channel();
        let queued = meta.and_then(|meta| {
            self.command(Command::SendFile {
                key: self.shared.key,
                ticket,
                path: path.to_path_buf(),
                meta,
                progress: progress_tx,
                done: tx,
            })
        });
        FileTransfer {
            shared: self.shared.clone(),
            ticket,
            progress,
            done: queued.map(|()| done),
        }
    }

    /// Refuses or stops an incoming file announced by [`ConnectionEvent::FileIncoming`](crate::ConnectionEvent::FileIncoming);
    /// its partial file is removed and the sender gets 4003.
    pub fn cancel_incoming(&self, transfer: u32) -> Result<(), Error> {
        self.command(Command::CancelIncoming {
            key: self.shared.key,
            transfer,
        })
    }

    /// Accepts a file announced by [`ConnectionEvent::FileOffered`](crate::ConnectionEvent::FileOffered): stored in the files
    /// folder (`path` `None`), or at `path`, which must not exist yet (a file there is
    /// never replaced: the transfer then fails with 4005 on both sides). An offer no
    /// longer waiting (answered, timed out, withdrawn) is left as it is.
    pub fn accept_file(&self, transfer: u32, path: Option<PathBuf>) -> Result<(), Error> {
        self.command(Command::DecideFile {
            key: self.shared.key,
            transfer,
            decision: FileDecision::Accept(path),
        })
    }

    /// Refuses a file announced by [`ConnectionEvent::FileOffered`](crate::ConnectionEvent::FileOffered) before any of its
    /// bytes travel: the sender's `send_file` fails with
    /// [`Error::Transfer`] carrying this code and reason (4003, cancelled, is the usual
    /// code; the seed codes and ours all pass).
    pub fn reject_file(&self, transfer: u32, code: Code, reason: &str) -> Result<(), Error> {
        self.command(Command::DecideFile {
            key: self.shared.key,
            transfer,
            decision: FileDecision::Reject {
                code,
                reason: reason.into(),
            },
        })
    }

    /// Closes the channel with a code and reason; both sides get a close event. Sends not
    /// yet acknowledged fail with 1006.
    pub async fn close(&self, code: Code, reason: &str) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Close {
            key: self.shared.key,
            code,
            reason: reason.into(),
            done: tx,
        })?;
        rx.await.map_err(|_| Error::Stopped)
    }
}
