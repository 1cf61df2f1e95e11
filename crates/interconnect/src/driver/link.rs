//! The link pump: link supply with backoff, each link's writer task (a lone frame the
//! driver writes itself while the writer is idle), the vetting of
//! new links beside the current one (probes, eviction, takeover), reading and writing
//! with backpressure, and the loss of a link.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use interconnect_proto::Kind;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Driver;
use crate::sans_io::Event;
use crate::sans_io::Session;
use crate::security::SecurityEvent;
use crate::transport::{Link, LinkSender, Transport, TransportError};

/// How long to wait before asking for a new link after failures.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Fraction of each delay drawn at random (0.0 to 1.0), so many devices that lost
    /// the same peer do not retry in lockstep.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The delay before attempt `failures + 1`: none after zero failures, then `initial`
    /// doubling up to `max`, less up to `jitter` of it at random.
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exp = self
            .initial
            .saturating_mul(1u32 << (failures - 1).min(20))
            .min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        exp.mul_f64(1.0 - jitter * rng.random::<f64>())
    }
}

pub(crate) struct ActiveLink {
    /// Frames to the link's writer task (queued through [`ActiveLink::queue`], which
    /// counts them).
    frames_out: mpsc::Sender<Bytes>,
    /// The link's sender, shared with its writer task, which holds it while it writes.
    sender: Arc<tokio::sync::Mutex<Box<dyn LinkSender>>>,
    /// Frames queued to the writer and not yet written: while none are, and the writer
    /// does not hold the sender, the driver writes a frame itself ([`ActiveLink::send_now`]),
    /// which spares a small message the writer task's turn.
    queued: Arc<AtomicUsize>,
    /// The writer task: on shutdown the driver waits for it to write what is queued.
    pub(super) writer: tokio::task::JoinHandle<()>,
    pub(super) receiver: Box<dyn crate::transport::LinkReceiver>,
    /// The frame limit last handed to the receiver.
    pub(super) limit: usize,
    /// Where the link comes from, when the transport knows.
    pub(super) source: Option<std::net::IpAddr>,
    /// Bytes the link took so far (counted by the writer as the transport takes them).
    pub(super) written: Arc<AtomicU64>,
}

impl ActiveLink {
    /// Starts the link's writer task, in a span naming the link (`n` counts this
    /// driver's links).
    pub(super) fn start(link: Link, n: u64) -> (Self, usize) {
        use tracing::Instrument;
        let (frames_out, frames) = mpsc::channel(WRITE_QUEUE);
        let span = tracing::debug_span!("link", n);
        let written = Arc::default();
        let queued = Arc::default();
        let sender = Arc::new(tokio::sync::Mutex::new(link.sender));
        let writer = tokio::spawn(
            write_frames(
                Arc::clone(&sender),
                frames,
                Arc::clone(&written),
                Arc::clone(&queued),
            )
            .instrument(span),
        );
        let active = ActiveLink {
            frames_out,
            sender,
            queued,
            writer,
            receiver: link.receiver,
            limit: usize::MAX,
            source: link.source,
            written,
        };
        (active, link.max_frame_len)
    }

    /// Ends the link: the writer gets the linger time to send what is queued (an error
    /// report), then is stopped, which closes the socket even when a peer that stopped
    /// reading keeps it full.
    pub(super) fn retire(self) {
        let ActiveLink {
            frames_out, writer, ..
        } = self;
        drop(frames_out);
        tokio::spawn(async move {
            let mut writer = writer;
            if tokio::time::timeout(LINGER, &mut writer).await.is_err() {
                writer.abort();
            }
        });
    }

    /// Queues `frame` to the writer task.
    pub(super) fn queue(&self, frame: Bytes) -> Result<(), mpsc::error::TrySendError<Bytes>> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let result = self.frames_out.try_send(frame);
        if result.is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        result
    }

    /// Frames the write queue has room for now.
    pub(super) fn queue_room(&self) -> usize {
        self.frames_out.capacity()
    }

    /// The write queue, to wait for room in (see [`ActiveLink::queue_into`]).
    pub(super) fn queue_handle(&self) -> mpsc::Sender<Bytes> {
        self.frames_out.clone()
    }

    /// Queues `frame` into room waited for.
    pub(super) fn queue_into(&self, permit: mpsc::OwnedPermit<Bytes>, frame: Bytes) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        permit.send(frame);
    }

    /// Queues `frame`, waiting for room (on shutdown).
    pub(super) async fn queue_waiting(&mut self, frame: Bytes) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.frames_out.send(frame).await.is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Ends the write queue; the writer writes what is queued, then ends.
    pub(super) fn close_queue(self) -> tokio::task::JoinHandle<()> {
        self.writer
    }

    /// Writes `frame` now, when nothing waits to be written and the link takes it at
    /// once: `Ok(None)` then. Otherwise gives back what is left of it, to be queued.
    pub(super) fn send_now(&self, frame: Bytes) -> Result<Option<Bytes>, TransportError> {
        if self.queued.load(Ordering::Acquire) != 0 {
            return Ok(Some(frame));
        }
        // Held by the writer while it writes (it counts its frames as written only
        // after): then the frame waits its turn in the queue.
        let Ok(mut sender) = self.sender.try_lock() else {
            return Ok(Some(frame));
        };
        let len = frame.len();
        let rest = sender.try_send(frame)?;
        let taken = len - rest.as_ref().map_or(0, Bytes::len);
        self.written.fetch_add(taken as u64, Ordering::Relaxed);
        Ok(rest)
    }

    /// Tells the receiver the session's current frame limit, when it changed.
    pub(super) fn limit_frames(&mut self, session: &Session) {
        let limit = session.max_receive_len();
        if limit != self.limit {
            self.limit = limit;
            self.receiver.limit_frames(limit);
        }
    }
}

/// A link for a driver: raw from its transport, or vetted by a hub's reception.
pub(crate) enum Arrival {
    Link(Link),
    Vetted(Box<Vetted>),
}

/// A link whose peer a hub's reception authenticated (see `Session::vet`), for the
/// driver of that watch, which takes it over.
pub(crate) struct Vetted {
    pub(super) session: Session,
    pub(super) link: ActiveLink,
}

/// A link being vetted beside the current one (see `Session::probe`).
pub(super) struct Probe {
    pub(super) session: Session,
    pub(super) link: ActiveLink,
    /// Frames its peer sent so far: how far its handshake got.
    pub(super) frames: u32,
    /// Which link it is (counts the links started), for a pairing answer.
    pub(super) number: u64,
}

impl Probe {
    /// Hands the probe session a frame its peer sent.
    pub(super) fn take(&mut self, now: crate::time::Instant, frame: BytesMut) {
        self.frames = self.frames.saturating_add(1);
        self.session.handle_frame(now, frame);
        self.link.limit_frames(&self.session);
    }

    /// Moves the probe session's frames to its link; `false` when the link took no more
    /// (its writer is gone or a stranger stopped reading): the probe is then dropped.
    pub(super) fn transmit(&mut self, now: crate::time::Instant) -> bool {
        while let Some(frame) = self.session.poll_transmit(now) {
            if self.link.queue(frame).is_err() {
                return false;
            }
        }
        true
    }
}

/// Links vetted at once. When a new one finds them all taken, one is pushed out: from
/// the source (address) holding the most, the one that got least far, the oldest of
/// those. So strangers that connect and stall, from however many connections, push out
/// each other and never a watch's link from an address of its own; and each of them
/// lasts no longer than `SessionConfig::handshake_step_timeout` per step anyway.
const MAX_PROBES: usize = 32;

/// How long a shutdown waits for the frames already queued (closes, the last hello) to
/// reach the link before the driver ends.
pub(super) const LINGER: Duration = Duration::from_secs(2);

/// Frames queued to a link's writer before the driver holds back.
pub(super) const WRITE_QUEUE: usize = 64;

/// Writes frames to the link in batches, flushing after each. It runs apart from the
/// driver so that a transport whose send waits (a full socket, BLE credits) never stops
/// the driver from reading: two drivers blocked writing to each other would deadlock.
/// It ends when the driver drops the queue (after writing what is queued) or the link
/// fails (the driver then sees the queue closed).
///
/// It holds the sender while it writes a batch, and counts the batch out of `queued`
/// only once it is flushed: until then the driver queues behind it (see
/// [`ActiveLink::send_now`]), so frames never overtake each other.
async fn write_frames(
    sender: Arc<tokio::sync::Mutex<Box<dyn LinkSender>>>,
    mut frames: mpsc::Receiver<Bytes>,
    written: Arc<AtomicU64>,
    queued: Arc<AtomicUsize>,
) {
    while let Some(frame) = frames.recv().await {
        let mut sender = sender.lock().await;
        let mut count = 1;
        let len = frame.len() as u64;
        if sender.send(frame).await.is_err() {
            return;
        }
        written.fetch_add(len, Ordering::Relaxed);
        while let Ok(frame) = frames.try_recv() {
            count += 1;
            let len = frame.len() as u64;
            if sender.send(frame).await.is_err() {
                return;
            }
            written.fetch_add(len, Ordering::Relaxed);
        }
        if sender.flush().await.is_err() {
            return;
        }
        queued.fetch_sub(count, Ordering::AcqRel);
    }
}

/// Asks the transport for a link each time the driver requests one, after the requested
/// delay, retrying failed attempts with the same delay.
pub(super) async fn supply_links<T: Transport>(
    mut transport: T,
    mut requests: mpsc::Receiver<Duration>,
    links: mpsc::Sender<Arrival>,
) {
    if transport.accepts_while_linked() {
        // A listener hands over every link; the driver vets them.
        drop(requests);
        loop {
            match transport.next_link().await {
                Ok(link) => {
                    if links.send(Arrival::Link(link)).await.is_err() {
                        return;
                    }
                }
                Err(TransportError::Closed) => return,
                Err(error) => {
                    tracing::debug!(%error, "no link");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    while let Some(delay) = requests.recv().await {
        tokio::time::sleep(delay).await;
        loop {
            match transport.next_link().await {
                Ok(link) => {
                    if links.send(Arrival::Link(link)).await.is_err() {
                        return;
                    }
                    break;
                }
                Err(error) => {
                    tracing::debug!(%error, "no link");
                    tokio::time::sleep(delay.max(Duration::from_millis(100))).await;
                }
            }
        }
    }
}

pub(super) async fn recv_frame(link: &mut Option<ActiveLink>) -> Result<BytesMut, TransportError> {
    match link {
        Some(link) => match link.receiver.recv().await {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(TransportError::Closed),
            Err(error) => Err(error),
        },
        None => std::future::pending().await,
    }
}

/// The next frame (or failure) from any link being vetted, with its index.
pub(super) async fn recv_probe(probes: &mut [Probe]) -> (usize, Result<BytesMut, TransportError>) {
    let mut receiving: Vec<_> = probes.iter_mut().map(|p| p.link.receiver.recv()).collect();
    std::future::poll_fn(|cx| {
        for (i, future) in receiving.iter_mut().enumerate() {
            if let std::task::Poll::Ready(result) = future.as_mut().poll(cx) {
                let result = match result {
                    Ok(Some(frame)) => Ok(frame),
                    Ok(None) => Err(TransportError::Closed),
                    Err(error) => Err(error),
                };
                return std::task::Poll::Ready((i, result));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Pushes one probe out when more than [`MAX_PROBES`] are vetted.
pub(super) fn crowd_out(probes: &mut Vec<Probe>) {
    if probes.len() > MAX_PROBES {
        let victim = evictee(probes);
        tracing::debug!(source = ?probes[victim].link.source, "too many links being vetted: one pushed out");
        probes.remove(victim).link.retire();
    }
}

/// Which probe to push out when too many are vetted: from the source holding the most,
/// the one that got least far, the oldest of those (see `MAX_PROBES`).
fn evictee(probes: &[Probe]) -> usize {
    let crowd = |probe: &Probe| {
        probes
            .iter()
            .filter(|p| p.link.source == probe.link.source)
            .count()
    };
    (0..probes.len())
        .min_by_key(|&i| (std::cmp::Reverse(crowd(&probes[i])), probes[i].frames, i))
        .unwrap_or(0)
}

/// Polls a cancel-safe receive once: the frame if one is ready now, `None` otherwise.
pub(super) fn poll_once(
    future: impl std::future::Future<Output = Result<Option<BytesMut>, TransportError>>,
) -> Option<Result<BytesMut, TransportError>> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Ok(Some(frame))) => Some(Ok(frame)),
        std::task::Poll::Ready(Ok(None)) => Some(Err(TransportError::Closed)),
        std::task::Poll::Ready(Err(error)) => Some(Err(error)),
        std::task::Poll::Pending => None,
    }
}

impl Driver {
    /// Handles a received frame and whatever else already waits, so that one batch of
    /// frames produces one batch of acknowledgements.
    pub(super) fn on_frames(&mut self, first: Result<BytesMut, TransportError>) {
        let mut next = Some(first);
        let mut budget = 64;
        // One reading of the clock for the batch: its frames arrived together.
        let now = self.clock.now();
        // A message in the clear waits for the batch's end, so a run of them reaches the
        // app's inbox as one; other events are acted on now (an offer must be accepted
        // before its first chunk is handled). Frames go out after the batch.
        let mut deferred = false;
        while let Some(item) = next.take() {
            let frame = match item {
                Ok(frame) => frame,
                Err(error) => return self.lose_link(&format!("link failed: {error}")),
            };
            self.sampler.received(frame.len());
            let message = frame.get(1) == Some(&(Kind::Data as u8));
            self.session.handle_frame(now, frame);
            if let Some(link) = &mut self.link {
                link.limit_frames(&self.session);
            }
            deferred |= message;
            if !message {
                self.drain_events();
            }
            budget -= 1;
            if budget > 0 && !self.session.input_paused() {
                next = self
                    .link
                    .as_mut()
                    .and_then(|l| match l.receiver.try_recv() {
                        Some(frame) => Some(Ok(frame)),
                        None => poll_once(l.receiver.recv()),
                    });
            }
        }
        if deferred {
            self.drain_events();
        }
    }

    /// When a write queue that takes nothing makes the link dead.
    pub(super) fn write_deadline(&self) -> Option<Instant> {
        self.held_since
            .map(|since| since + self.session.config().link_timeout)
    }

    pub(super) fn request_link(&mut self) {
        let delay = self.backoff.delay(self.failures, &mut self.rng);
        let _ = self.link_requests.try_send(delay);
    }

    pub(super) fn on_arrival(&mut self, arrival: Arrival) -> bool {
        match arrival {
            Arrival::Link(link) => self.on_new_link(link),
            Arrival::Vetted(vetted) => {
                let Vetted { session, link } = *vetted;
                // The reception registered this watch's apps before it handed the link
                // over: those commands are queued already and must be handled first.
                while !self.commands.is_empty() {
                    if self.take_commands() {
                        link.retire();
                        return true;
                    }
                }
                self.adopt(session, link);
            }
        }
        false
    }

    fn on_new_link(&mut self, link: Link) {
        if self.listener && !self.admission.admit(link.source, Instant::now().into_std()) {
            // Dropped unread: the source starts handshakes faster than any watch does.
            return tracing::debug!(source = ?link.source, "a source connecting too often: closed at once");
        }
        if self.link.is_some() {
            // A link is up or in its handshake: the newcomer is vetted beside it and
            // never retires it (a stranger that connects cannot push a link out).
            return self.start_probe(link);
        }
        self.link_number += 1;
        self.links_started += 1;
        let (mut active, max_frame_len) = ActiveLink::start(link, self.links_started);
        self.session.link_up(self.clock.now(), max_frame_len);
        self.held_frame = None;
        self.held_since = None;
        active.limit_frames(&self.session);
        self.link = Some(active);
        // Counted as a failure until the handshake completes.
        self.failures = self.failures.saturating_add(1);
    }

    /// A link arrived while one is up: vet it beside the current one.
    pub(super) fn start_probe(&mut self, link: Link) {
        self.links_started += 1;
        let (mut active, max_frame_len) = ActiveLink::start(link, self.links_started);
        let session = self.session.probe(self.clock.now(), max_frame_len);
        active.limit_frames(&session);
        self.probes.push(Probe {
            session,
            link: active,
            frames: 0,
            number: self.links_started,
        });
        let newest = self.probes.len() - 1;
        self.service_probe(newest);
        crowd_out(&mut self.probes);
    }

    pub(super) fn on_probe_frame(&mut self, i: usize, frame: Result<BytesMut, TransportError>) {
        match frame {
            Ok(frame) => {
                self.probes[i].take(self.clock.now(), frame);
                self.service_probe(i);
            }
            Err(error) => {
                tracing::debug!(%error, "a link being vetted failed");
                self.probes.remove(i).link.retire();
            }
        }
    }

    /// Moves a probe's output to its link and acts once its peer is known: the same
    /// device takes over the session, another is refused as busy.
    pub(super) fn service_probe(&mut self, i: usize) {
        let mut dropped = false;
        while let Some(event) = self.probes[i].session.poll_event() {
            match event {
                Event::DropLink { code, reason } => {
                    tracing::info!(%code, %reason, "a second link refused");
                    dropped = true;
                }
                Event::Refused(error) => {
                    tracing::warn!(%error, "a second link refused");
                    self.report(SecurityEvent::Refused(error));
                }
                Event::PeerAuthenticated { fingerprint, .. } => {
                    tracing::debug!(peer = %fingerprint, "a second link authenticated");
                }
                _ => {}
            }
        }
        let ready = self.probes[i].session.probed_peer().is_some() && !dropped;
        if ready && self.session.is_link_up() {
            let probe = &self.probes[i];
            if !self.session.is_same_peer(&probe.session) {
                tracing::info!("another device connected while one is served: refused (busy)");
                self.probes[i].session.refuse_as_busy();
                dropped = true;
            } else if !self.session.is_secure()
                && probe.link.source != self.link.as_ref().and_then(|l| l.source)
            {
                // Plaintext proves nothing: a device id is read off the wire. Only a
                // link from the same source replaces a live one; from elsewhere the
                // watch is served once its old link is found dead.
                tracing::info!(
                    "a plaintext link from another source claims the served device: refused (busy)"
                );
                self.probes[i].session.refuse_as_busy();
                dropped = true;
            }
        }
        // Sent even when it is dropped: a refusal must reach the peer first.
        let taken = self.probes[i].transmit(self.clock.now());
        if dropped || !taken {
            self.probes.remove(i).link.retire();
        } else if ready {
            let Probe { session, link, .. } = self.probes.remove(i);
            tracing::info!("the peer came back on a new link: it replaces the current one");
            self.adopt(session, link);
        }
    }

    /// Moves the session to an authenticated link (the newest wins).
    fn adopt(&mut self, probe: Session, mut link: ActiveLink) {
        if let Some(old) = self.link.take() {
            old.retire();
        }
        self.held_frame = None;
        self.held_since = None;
        self.link_number += 1;
        self.session.take_over(self.clock.now(), probe);
        link.limit_frames(&self.session);
        self.link = Some(link);
    }

    pub(super) fn lose_link(&mut self, why: &str) {
        self.held_frame = None;
        self.held_since = None;
        // Best effort: when the session dropped the link, let the peer read why (the
        // session then yields its error report and nothing else).
        if let Some(link) = self.link.as_ref().filter(|_| self.session.is_dropping()) {
            while let Some(frame) = self.session.poll_transmit(self.clock.now()) {
                if link.queue(frame).is_err() {
                    break;
                }
            }
        }
        if let Some(link) = self.link.take() {
            link.retire();
            tracing::info!(reason = why, "link lost");
            self.session.link_down(self.clock.now());
            self.request_link();
        }
    }

    /// Moves frames from the session to the write queue while it has room; the first
    /// frame that does not fit is held until it does. A run of one frame is written at
    /// once when nothing waits to be written ([`ActiveLink::send_now`]), sparing it the
    /// writer task's turn; a longer run goes through the queue, so the writer hands it
    /// to the link in one batch (one system call on TCP).
    pub(super) fn transmit(&mut self) {
        let Some(link) = self.link.as_ref() else {
            self.held_frame = None;
            self.held_since = None;
            while self.session.poll_transmit(self.clock.now()).is_some() {}
            return;
        };
        let mut closed = false;
        // One reading of the clock for the run: the frames leave together.
        let now = self.clock.now();
        // The run's first frame, kept back while it may be alone: only when the queue
        // has room for it and the next, so neither is refused if one follows.
        let mut lone = None;
        let mut first = true;
        loop {
            let frame = match self.held_frame.take() {
                Some(frame) => frame,
                None => match self.session.poll_transmit(now) {
                    Some(frame) => frame,
                    None => break,
                },
            };
            if std::mem::take(&mut first) && link.queue_room() >= 2 {
                lone = Some(frame);
                continue;
            }
            let queued = match lone.take() {
                Some(lone) => link.queue(lone).and_then(|()| link.queue(frame)),
                None => link.queue(frame),
            };
            match queued {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(frame)) => {
                    self.held_frame = Some(frame);
                    self.held_since.get_or_insert_with(Instant::now);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    closed = true;
                    break;
                }
            }
        }
        if let Some(frame) = lone {
            match link.send_now(frame) {
                Ok(None) => {}
                Ok(Some(rest)) => match link.queue(rest) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(rest)) => {
                        self.held_frame = Some(rest);
                        self.held_since.get_or_insert_with(Instant::now);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
                },
                Err(error) => {
                    tracing::debug!(%error, "link write failed");
                    closed = true;
                }
            }
        }
        if closed {
            self.lose_link("the link's writer stopped (send failed)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::LinkReceiver;

    type Log = Arc<std::sync::Mutex<Vec<(u8, &'static str)>>>;

    /// A sender whose `send` waits for a permit; it logs each frame's first byte and who
    /// wrote it (the writer task or the driver).
    struct Gated {
        log: Log,
        gate: Arc<tokio::sync::Semaphore>,
    }

    #[async_trait::async_trait]
    impl LinkSender for Gated {
        async fn send(&mut self, frame: Bytes) -> Result<(), TransportError> {
            self.gate.acquire().await.expect("open").forget();
            self.log.lock().expect("log").push((frame[0], "writer"));
            Ok(())
        }

        fn try_send(&mut self, frame: Bytes) -> Result<Option<Bytes>, TransportError> {
            self.log.lock().expect("log").push((frame[0], "driver"));
            Ok(None)
        }
    }

    struct Silent;

    #[async_trait::async_trait]
    impl LinkReceiver for Silent {
        async fn recv(&mut self) -> Result<Option<BytesMut>, TransportError> {
            std::future::pending().await
        }
    }

    /// A sender whose link failed: a write at once fails.
    struct Broken;

    #[async_trait::async_trait]
    impl LinkSender for Broken {
        async fn send(&mut self, _: Bytes) -> Result<(), TransportError> {
            Err(TransportError::Closed)
        }

        fn try_send(&mut self, _: Bytes) -> Result<Option<Bytes>, TransportError> {
            Err(TransportError::Closed)
        }
    }

    /// A link over `sender` that receives nothing, started.
    fn started(sender: impl LinkSender) -> ActiveLink {
        let link = Link {
            sender: Box::new(sender),
            receiver: Box::new(Silent),
            max_frame_len: 1024,
            source: None,
        };
        ActiveLink::start(link, 0).0
    }

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n; 8])
    }

    #[tokio::test]
    async fn a_frame_written_at_once_never_overtakes_a_queued_one() {
        let (log, gate) = (Log::default(), Arc::new(tokio::sync::Semaphore::new(0)));
        let sender = Gated {
            log: log.clone(),
            gate: gate.clone(),
        };
        let link = started(sender);
        // Nothing queued: written at once.
        assert_eq!(link.send_now(frame(1)).expect("sent"), None);
        // Queued, its writer not run yet (the sender is free): the next frame waits.
        link.queue(frame(2)).expect("room");
        assert_eq!(link.send_now(frame(3)).expect("sent"), Some(frame(3)));
        link.queue(frame(3)).expect("room");
        // The writer holds the sender while it waits to write: the next frame waits too.
        tokio::task::yield_now().await;
        assert_eq!(link.send_now(frame(4)).expect("sent"), Some(frame(4)));
        link.queue(frame(4)).expect("room");
        gate.add_permits(3);
        for _ in 0..100 {
            if link.queued.load(Ordering::Acquire) == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        // All written and flushed: at once again.
        assert_eq!(link.send_now(frame(5)).expect("sent"), None);
        let log = log.lock().expect("log").clone();
        assert_eq!(
            log,
            [
                (1, "driver"),
                (2, "writer"),
                (3, "writer"),
                (4, "writer"),
                (5, "driver")
            ]
        );
        assert_eq!(link.written.load(Ordering::Relaxed), 5 * 8);
    }

    /// A failed write at once is the link's failure (the driver then drops the link),
    /// and counts nothing as written.
    #[tokio::test]
    async fn a_write_at_once_that_fails_says_so() {
        let link = started(Broken);
        assert!(matches!(
            link.send_now(frame(1)),
            Err(TransportError::Closed)
        ));
        assert_eq!(link.written.load(Ordering::Relaxed), 0);
    }
}
