//! The tokio driver: one task per device that runs the [`Session`] over a [`Transport`].
//!
//! In a loop it feeds received frames, commands and timeouts into the session, drains
//! frames to the link and routes events to the connections. A second task per device asks
//! the transport for links (with backoff). The driver reads the link itself (receivers
//! are cancel-safe), which saves a task hop per frame: on a multi-threaded runtime every
//! hop is a cross-thread wake-up, and small-message latency is mostly hops.
//!
//! Dead links: the session drops a link from which nothing arrived for
//! `SessionConfig::link_timeout` (it pings every `ping_interval` so an idle link still
//! talks), and the driver drops one whose write queue took nothing for the same time,
//! however much the peer still sends. While 256 control frames (replies the peer's input
//! caused) wait to leave, the driver stops reading the link: a peer that sends without
//! reading is held back, not buffered. A listener's connection that arrives while a link
//! is up is vetted beside it (`Session::probe`): the same device takes over at once,
//! another is refused with 4002 once authenticated.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use interconnect_proto::{ChannelId, Code, ContentType, Exchange, Role, TransferId};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::connection::{ConnState, ConnectionEvent, Incoming, Progress};
use crate::error::Error;
use crate::event::{ChannelEvent, Event, SendId};
use crate::files::{self, FilesConfig, IoDone, Offer, WriterCmd};
use crate::security::{KnownPeers, PairingRequest, SecurityEvent};
use crate::session::Session;
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
    Send {
        key: u64,
        ticket: u64,
        content_type: ContentType,
        exchange: Exchange,
        payload: Bytes,
        /// Wait for room when the channel's queue is full (else fail with QueueFull).
        wait: bool,
        done: oneshot::Sender<Result<(), Error>>,
    },
    CancelSend {
        key: u64,
        ticket: u64,
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
    Shutdown,
}

/// An outgoing file, from `send_file` until the receiver's verdict.
struct OutFile {
    key: u64,
    ticket: u64,
    /// Read requests to this transfer's reader, which answers them in order.
    reader: Option<mpsc::UnboundedSender<(u64, u64)>>,
    progress: watch::Sender<Progress>,
    done: oneshot::Sender<Result<(), Error>>,
    started: Instant,
}

/// What the driver holds for one connection handle.
pub(crate) struct ConnSlot {
    pub(crate) events: mpsc::UnboundedSender<crate::connection::Queued>,
    pub(crate) unread: std::sync::Arc<crate::connection::Unread>,
    pub(crate) state: watch::Sender<ConnState>,
}

struct ConnEntry {
    slot: ConnSlot,
    package: String,
    channel: Option<ChannelId>,
    requests: HashMap<u32, oneshot::Sender<Result<Incoming, Error>>>,
}

struct PendingSend {
    key: u64,
    ticket: u64,
    done: oneshot::Sender<Result<(), Error>>,
}

struct ActiveLink {
    /// Frames to the link's writer task.
    frames_out: mpsc::Sender<Bytes>,
    /// The writer task: on shutdown the driver waits for it to write what is queued.
    writer: tokio::task::JoinHandle<()>,
    receiver: Box<dyn crate::transport::LinkReceiver>,
    /// The frame limit last handed to the receiver.
    limit: usize,
    /// Where the link comes from, when the transport knows.
    source: Option<std::net::IpAddr>,
}

impl ActiveLink {
    /// Starts the link's writer task, in a span naming the link (`n` counts this
    /// driver's links).
    fn start(link: Link, n: u64) -> (Self, usize) {
        use tracing::Instrument;
        let (frames_out, frames) = mpsc::channel(WRITE_QUEUE);
        let span = tracing::debug_span!("link", n);
        let writer = tokio::spawn(write_frames(link.sender, frames).instrument(span));
        let active = ActiveLink {
            frames_out,
            writer,
            receiver: link.receiver,
            limit: usize::MAX,
            source: link.source,
        };
        (active, link.max_frame_len)
    }

    /// Ends the link: the writer gets the linger time to send what is queued (an error
    /// report), then is stopped, which closes the socket even when a peer that stopped
    /// reading keeps it full.
    fn retire(self) {
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

    /// Tells the receiver the session's current frame limit, when it changed.
    fn limit_frames(&mut self, session: &Session) {
        let limit = session.max_receive_len();
        if limit != self.limit {
            self.limit = limit;
            self.receiver.limit_frames(limit);
        }
    }
}

/// A send waiting for room in its channel's queue.
struct WaitingSend {
    ticket: u64,
    content_type: ContentType,
    exchange: Exchange,
    payload: Bytes,
    done: oneshot::Sender<Result<(), Error>>,
}

/// An incoming file reports its progress to the app each time this much more is written.
const PROGRESS_STEP: u64 = 1 << 20;

/// An incoming file being written.
struct Receiving {
    /// Tells this writer's reports apart (see `IoDone::Written`).
    ticket: u64,
    commands: mpsc::UnboundedSender<WriterCmd>,
    /// The partial file it owns.
    part: std::path::PathBuf,
    /// Bytes written so far.
    written: u64,
    /// The file's size.
    size: u64,
}

impl Receiving {
    /// Bytes still to come, reserved on the disk against other offers.
    fn left(&self) -> u64 {
        self.size.saturating_sub(self.written)
    }
}

/// A link being vetted beside the current one (see `Session::probe`).
struct Probe {
    session: Session,
    link: ActiveLink,
    /// Frames its peer sent so far: how far its handshake got.
    frames: u32,
}

/// Where a version query's answer goes.
type VersionReplyTo = oneshot::Sender<Result<Option<u32>, Error>>;

/// Version queries that wait for a link; more fail with 1006.
const MAX_WAITING_QUERIES: usize = 256;

/// Links vetted at once. When a new one finds them all taken, one is pushed out: from
/// the source (address) holding the most, the one that got least far, the oldest of
/// those. So strangers that connect and stall, from however many connections, push out
/// each other and never a watch's link from an address of its own; and each of them
/// lasts no longer than `SessionConfig::handshake_step_timeout` per step anyway.
const MAX_PROBES: usize = 32;

/// How long a shutdown waits for the frames already queued (closes, the last hello) to
/// reach the link before the driver ends.
const LINGER: Duration = Duration::from_secs(2);

/// Frames queued to a link's writer before the driver holds back.
const WRITE_QUEUE: usize = 64;

/// Writes frames to the link in batches, flushing after each. It runs apart from the
/// driver so that a transport whose send waits (a full socket, BLE credits) never stops
/// the driver from reading: two drivers blocked writing to each other would deadlock.
/// It ends when the driver drops the queue (after writing what is queued) or the link
/// fails (the driver then sees the queue closed).
async fn write_frames(mut sender: Box<dyn LinkSender>, mut frames: mpsc::Receiver<Bytes>) {
    while let Some(frame) = frames.recv().await {
        if sender.send(frame).await.is_err() {
            return;
        }
        while let Ok(frame) = frames.try_recv() {
            if sender.send(frame).await.is_err() {
                return;
            }
        }
        if sender.flush().await.is_err() {
            return;
        }
    }
}

/// Security events queued for the owner before new ones are dropped (a dropped pairing
/// request is a rejected one).
const SECURITY_EVENTS: usize = 32;

/// What the driver publishes about the link.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LinkStatus {
    pub(crate) peer: PeerDeviceStatus,
    /// Links that came up so far. A link can come up and go again within one turn of
    /// the driver (a peer that leaves right after the handshake), and a watch channel
    /// keeps only the last value: the count lets a waiter see such a link anyway.
    pub(crate) links_up: u64,
}

/// Whether the link to the peer device is up (the vendor API's `getPeerDeviceStatus`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerDeviceStatus {
    /// 0: not connected.
    #[default]
    Disconnected = 0,
    /// 1: connected (link up, handshake done).
    Connected = 1,
}

impl PeerDeviceStatus {
    /// The vendor API's value, 0 or 1.
    pub fn code(self) -> u8 {
        self as u8
    }
}

pub(crate) struct Driver {
    session: Session,
    commands: mpsc::UnboundedReceiver<Command>,
    status: watch::Sender<LinkStatus>,
    link: Option<ActiveLink>,
    /// New links vetted beside the current one, oldest first.
    probes: Vec<Probe>,
    /// Which sources may start a handshake now (see `admission`).
    admission: crate::admission::Admission,
    /// Links come from a listener (`Transport::accepts_while_linked`): only then is a
    /// source held to its rate (a dialer's links all come from the one phone).
    listener: bool,
    link_requests: mpsc::Sender<Duration>,
    new_links: mpsc::Receiver<Link>,
    conns: HashMap<u64, ConnEntry>,
    by_channel: HashMap<ChannelId, u64>,
    by_package: HashMap<String, u64>,
    sends: HashMap<SendId, PendingSend>,
    /// Sends waiting for room in their channel's queue, per connection, in call order.
    waiting: HashMap<u64, std::collections::VecDeque<WaitingSend>>,
    tickets: HashMap<(u64, u64), (ChannelId, SendId)>,
    version_queries: HashMap<u32, VersionReplyTo>,
    /// Version queries asked while the link is down (package, reply), sent when it
    /// comes up.
    waiting_queries: Vec<(String, VersionReplyTo)>,
    backoff: Backoff,
    failures: u32,
    rng: SmallRng,
    files: Option<FilesConfig>,
    io_tx: mpsc::UnboundedSender<IoDone>,
    io_rx: mpsc::UnboundedReceiver<IoDone>,
    /// Outgoing files being opened and hashed, by ticket.
    preparing: HashMap<u64, OutFile>,
    outgoing_files: HashMap<TransferId, OutFile>,
    /// Incoming files being written, by transfer.
    writers: HashMap<(ChannelId, TransferId), Receiving>,
    /// The next writer's ticket.
    next_ticket: u64,
    /// A frame the session produced that the write queue had no room for.
    held_frame: Option<Bytes>,
    /// Since when the write queue has taken nothing: a link whose writes do not drain for
    /// the link timeout is dead, whatever it still delivers.
    held_since: Option<Instant>,
    /// Counts links, so a pairing answer applies only to the link that asked.
    link_number: u64,
    /// Counts every link started, probes too (names each link's span).
    links_started: u64,
    commands_tx: mpsc::UnboundedSender<Command>,
    security_events: mpsc::Sender<SecurityEvent>,
    /// Watch side: the link's last refusal since it was last up, and whether lasting.
    refused: Option<(Code, bool)>,
    /// Security events dropped and not said yet (shared with the stream, which says
    /// them when its queue ran empty).
    security_missed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    known_peers: Option<KnownPeers>,
}

pub(crate) struct DriverParts {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) security_events: crate::SecurityEvents,
    pub(crate) status: watch::Receiver<LinkStatus>,
    pub(crate) task: JoinHandle<()>,
}

/// Spawns the driver and the link supplier for `transport`.
pub(crate) fn spawn<T: Transport>(
    session: Session,
    transport: T,
    backoff: Backoff,
    seed: u64,
    files: Option<FilesConfig>,
    known_peers: Option<KnownPeers>,
) -> DriverParts {
    let (security_tx, security_rx) = mpsc::channel(SECURITY_EVENTS);
    let security_missed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let security_events = crate::SecurityEvents {
        rx: security_rx,
        missed: security_missed.clone(),
    };
    let (io_tx, io_rx) = mpsc::unbounded_channel();
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (status_tx, status) = watch::channel(LinkStatus::default());
    let (link_requests, requests_rx) = mpsc::channel(1);
    let (links_tx, new_links) = mpsc::channel(1);
    let listener = transport.accepts_while_linked();
    let supplier = tokio::spawn(supply_links(transport, requests_rx, links_tx));
    let driver = Driver {
        session,
        commands,
        status: status_tx,
        link: None,
        probes: Vec::new(),
        admission: Default::default(),
        listener,
        link_requests,
        new_links,
        conns: HashMap::new(),
        by_channel: HashMap::new(),
        by_package: HashMap::new(),
        sends: HashMap::new(),
        waiting: HashMap::new(),
        tickets: HashMap::new(),
        version_queries: HashMap::new(),
        waiting_queries: Vec::new(),
        backoff,
        failures: 0,
        rng: SmallRng::seed_from_u64(seed),
        files,
        io_tx,
        io_rx,
        preparing: HashMap::new(),
        outgoing_files: HashMap::new(),
        writers: HashMap::new(),
        next_ticket: 0,
        held_frame: None,
        held_since: None,
        link_number: 0,
        links_started: 0,
        commands_tx: commands_tx.clone(),
        security_events: security_tx,
        security_missed,
        refused: None,
        known_peers,
    };
    let span = tracing::info_span!(
        "interconnect",
        role = ?driver.session.config().role,
        device = %driver.session.config().device_id,
    );
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            driver.run().await;
            // Awaited, so the transport (a listening socket) is gone when shutdown returns.
            supplier.abort();
            let _ = supplier.await;
        },
        span,
    ));
    DriverParts {
        commands: commands_tx,
        security_events,
        status,
        task,
    }
}

/// Asks the transport for a link each time the driver requests one, after the requested
/// delay, retrying failed attempts with the same delay.
async fn supply_links<T: Transport>(
    mut transport: T,
    mut requests: mpsc::Receiver<Duration>,
    links: mpsc::Sender<Link>,
) {
    if transport.accepts_while_linked() {
        // A listener hands over every link; the driver vets them.
        drop(requests);
        loop {
            match transport.next_link().await {
                Ok(link) => {
                    if links.send(link).await.is_err() {
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
                    if links.send(link).await.is_err() {
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

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Driver {
    async fn run(mut self) {
        self.request_link();
        // One timer, re-armed only when the session's deadline moves: registering a new
        // timer on every pass costs more than the rest of a small message's handling.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            let deadline = self
                .probes
                .iter()
                .filter_map(|p| p.session.poll_timeout())
                .chain(self.session.poll_timeout())
                .map(Instant::from_std)
                .chain(self.write_deadline())
                .min();
            if let Some(deadline) = deadline
                && armed != Some(deadline)
            {
                timer.as_mut().reset(deadline);
                armed = Some(deadline);
            }
            // A frame waits for room in the write queue: wait for room too.
            let held_for = match (&self.held_frame, &self.link) {
                (Some(_), Some(link)) => Some(link.frames_out.clone()),
                _ => None,
            };
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => {
                        self.close_all().await;
                        break;
                    }
                    Some(command) => self.on_command(command),
                },
                Some(link) = self.new_links.recv() => self.on_new_link(link),
                Some(done) = self.io_rx.recv() => self.on_io(done),
                // Backpressure: while the replies the peer's frames caused cannot leave,
                // its frames stay in the socket.
                frame = recv_frame(&mut self.link), if !self.session.input_paused() => {
                    self.on_frames(frame);
                }
                (i, frame) = recv_probe(&mut self.probes), if !self.probes.is_empty() => {
                    self.on_probe_frame(i, frame);
                }
                room = write_room(held_for.clone()), if held_for.is_some() => {
                    self.held_since = None;
                    match (room, self.held_frame.take()) {
                        (Ok(permit), Some(frame)) => { permit.send(frame); }
                        _ => self.lose_link("the link's writer stopped (send failed)"),
                    }
                }
                () = &mut timer, if deadline.is_some() => {
                    armed = None;
                    if self.write_deadline().is_some_and(|d| d <= Instant::now()) {
                        self.lose_link("writes made no progress for the link timeout");
                    }
                    self.session.handle_timeout(now());
                    for i in (0..self.probes.len()).rev() {
                        self.probes[i].session.handle_timeout(now());
                        self.service_probe(i);
                    }
                }
            }
            self.flush().await;
        }
        self.stop();
    }

    /// Handles a received frame and whatever else already waits, so that one batch of
    /// frames produces one batch of acknowledgements.
    fn on_frames(&mut self, first: Result<Bytes, TransportError>) {
        let mut next = Some(first);
        let mut budget = 64;
        while let Some(item) = next.take() {
            match item {
                Ok(frame) => self.session.handle_frame(now(), frame),
                Err(error) => return self.lose_link(&format!("link failed: {error}")),
            }
            if let Some(link) = &mut self.link {
                link.limit_frames(&self.session);
            }
            // Act on events now (an offer must be accepted before its first chunk is
            // handled); frames go out after the batch.
            while let Some(event) = self.session.poll_event() {
                self.on_event(event);
            }
            budget -= 1;
            if budget > 0 && !self.session.input_paused() {
                next = self
                    .link
                    .as_mut()
                    .and_then(|l| poll_once(l.receiver.recv()));
            }
        }
    }

    /// When a write queue that takes nothing makes the link dead.
    fn write_deadline(&self) -> Option<Instant> {
        self.held_since
            .map(|since| since + self.session.config().link_timeout)
    }

    fn request_link(&mut self) {
        let delay = self.backoff.delay(self.failures, &mut self.rng);
        let _ = self.link_requests.try_send(delay);
    }

    fn on_new_link(&mut self, link: Link) {
        if self.listener && !self.admission.admit(link.source, now()) {
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
        self.session.link_up(now(), max_frame_len);
        self.held_frame = None;
        self.held_since = None;
        active.limit_frames(&self.session);
        self.link = Some(active);
        // Counted as a failure until the handshake completes.
        self.failures = self.failures.saturating_add(1);
    }

    /// A link arrived while one is up: vet it beside the current one.
    fn start_probe(&mut self, link: Link) {
        self.links_started += 1;
        let (mut active, max_frame_len) = ActiveLink::start(link, self.links_started);
        let session = self.session.probe(now(), max_frame_len);
        active.limit_frames(&session);
        self.probes.push(Probe {
            session,
            link: active,
            frames: 0,
        });
        let newest = self.probes.len() - 1;
        self.service_probe(newest);
        if self.probes.len() > MAX_PROBES {
            let victim = evictee(&self.probes);
            tracing::debug!(source = ?self.probes[victim].link.source, "too many links being vetted: one pushed out");
            self.probes.remove(victim).link.retire();
        }
    }

    fn on_probe_frame(&mut self, i: usize, frame: Result<Bytes, TransportError>) {
        match frame {
            Ok(frame) => {
                let probe = &mut self.probes[i];
                probe.frames = probe.frames.saturating_add(1);
                probe.session.handle_frame(now(), frame);
                probe.link.limit_frames(&probe.session);
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
    fn service_probe(&mut self, i: usize) {
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
        let probe = &mut self.probes[i];
        while let Some(frame) = probe.session.poll_transmit(now()) {
            if probe.link.frames_out.try_send(frame).is_err() {
                dropped = true;
                break;
            }
        }
        if dropped {
            self.probes.remove(i).link.retire();
        } else if ready {
            let Probe { session, link, .. } = self.probes.remove(i);
            tracing::info!("the peer came back on a new link: it replaces the current one");
            if let Some(old) = self.link.take() {
                old.retire();
            }
            self.held_frame = None;
            self.held_since = None;
            self.link_number += 1;
            self.session.take_over(now(), session);
            let mut link = link;
            link.limit_frames(&self.session);
            self.link = Some(link);
        }
    }

    fn lose_link(&mut self, why: &str) {
        self.held_frame = None;
        self.held_since = None;
        // Best effort: when the session dropped the link, let the peer read why (the
        // session then yields its error report and nothing else).
        if let Some(link) = self.link.as_ref().filter(|_| self.session.is_dropping()) {
            while let Some(frame) = self.session.poll_transmit(now()) {
                if link.frames_out.try_send(frame).is_err() {
                    break;
                }
            }
        }
        if let Some(link) = self.link.take() {
            link.retire();
            tracing::info!(reason = why, "link lost");
            self.session.link_down(now());
            self.request_link();
        }
    }

    /// Drains the session: frames to the link, then events to the connections.
    async fn flush(&mut self) {
        loop {
            if !self.waiting.is_empty() {
                self.admit_waiting();
            }
            self.transmit();
            let mut any = false;
            while let Some(event) = self.session.poll_event() {
                any = true;
                self.on_event(event);
            }
            if !any {
                break;
            }
        }
        self.publish_states();
    }

    /// Moves frames from the session to the write queue while it has room; the first
    /// frame that does not fit is held until it does.
    fn transmit(&mut self) {
        let Some(link) = self.link.as_ref() else {
            self.held_frame = None;
            self.held_since = None;
            while self.session.poll_transmit(now()).is_some() {}
            return;
        };
        let mut closed = false;
        loop {
            let frame = match self.held_frame.take() {
                Some(frame) => frame,
                None => match self.session.poll_transmit(now()) {
                    Some(frame) => frame,
                    None => break,
                },
            };
            match link.frames_out.try_send(frame) {
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
        if closed {
            self.lose_link("the link's writer stopped (send failed)");
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::LinkUp { .. } => {
                self.failures = 0;
                self.refused = None;
                self.status.send_modify(|s| {
                    s.peer = PeerDeviceStatus::Connected;
                    s.links_up += 1;
                });
                for (package, reply) in std::mem::take(&mut self.waiting_queries) {
                    if !reply.is_closed() {
                        self.query_version(&package, reply);
                    }
                }
            }
            Event::LinkDown => {
                self.status
                    .send_modify(|s| s.peer = PeerDeviceStatus::Disconnected);
            }
            Event::PeerAuthenticated {
                fingerprint,
                suite,
                code,
            } => {
                tracing::info!(peer = %fingerprint, %suite, "peer device authenticated");
                self.report(SecurityEvent::Authenticated {
                    fingerprint,
                    suite,
                    code,
                });
            }
            Event::PairingRequest { fingerprint, code } => {
                let request = PairingRequest::new(
                    fingerprint,
                    code,
                    self.link_number,
                    self.commands_tx.clone(),
                );
                // Unheard (no one listens, or the queue is full): the request is dropped,
                // which rejects it.
                self.report(SecurityEvent::PairingRequest(request));
            }
            Event::PeerPinned { fingerprint } => {
                if let Some(known) = &self.known_peers
                    && let Err(error) = known.pin(fingerprint)
                {
                    tracing::error!(%error, peer = %fingerprint, "the pinned peer could not be saved");
                    self.report(SecurityEvent::PinNotSaved { fingerprint, error });
                    return;
                }
                tracing::info!(peer = %fingerprint, "peer device pinned");
                self.report(SecurityEvent::Pinned { fingerprint });
            }
            Event::Refused(error) => {
                // A passing refusal (the phone is busy) is expected; the link is tried
                // again. A lasting one needs the user.
                let lasting = error.is_lasting();
                if lasting {
                    tracing::warn!(%error, "link refused");
                } else {
                    tracing::info!(%error, "link refused for now; trying again");
                }
                // What the phone decided (not a broken link, nor a refusal in the clear
                // that anyone could send) is the watch app's business too.
                let busy = matches!(
                    error,
                    crate::SecurityError::RefusedByPeer {
                        code: Code::BUSY,
                        authenticated: true,
                        ..
                    }
                );
                if self.session.config().role == Role::Watch && (lasting || busy) {
                    self.on_link_refused(error.code(), lasting, &error.to_string());
                }
                self.report(SecurityEvent::Refused(error));
            }
            Event::DropLink { code, reason } => {
                self.lose_link(&format!("{code}: {reason}"));
            }
            Event::Channel(channel, event) => self.on_channel_event(channel, event),
            Event::Delivered(_, id) => self.finish_send(id, Ok(())),
            Event::SendFailed(_, id, code) => self.finish_send(id, Err(Error::from_code(code))),
            Event::VersionReply { request, version } => {
                if let Some(reply) = self.version_queries.remove(&request) {
                    let _ = reply.send(Ok(version));
                }
            }
            Event::FileRead {
                transfer,
                offset,
                len,
                ..
            } => {
                if let Some(reader) = self
                    .outgoing_files
                    .get(&transfer)
                    .and_then(|o| o.reader.as_ref())
                {
                    let _ = reader.send((offset, len));
                }
            }
            Event::FileProgress {
                transfer, offset, ..
            } => {
                if let Some(out) = self.outgoing_files.get(&transfer) {
                    let elapsed = out.started.elapsed().as_secs_f64();
                    out.progress.send_modify(|p| {
                        p.bytes_done = offset;
                        p.rate = if elapsed > 0.0 {
                            offset as f64 / elapsed
                        } else {
                            0.0
                        };
                    });
                }
            }
            Event::FileSent { transfer, .. } => {
                if let Some(out) = self.outgoing_files.remove(&transfer) {
                    out.progress.send_modify(|p| p.bytes_done = p.total);
                    let _ = out.done.send(Ok(()));
                }
            }
            Event::FileFailed {
                channel,
                transfer,
                outgoing,
                code,
                reason,
            } => {
                if outgoing {
                    if let Some(out) = self.outgoing_files.remove(&transfer) {
                        let _ = out.done.send(Err(Error::Transfer { code, reason }));
                    }
                } else {
                    // The error reaches the app once the partial file is gone: the
                    // writer reports `Failed`, and stays listed until then so the report
                    // is known for its own.
                    let abort = WriterCmd::Abort {
                        remove: true,
                        failure: Some((code, reason)),
                    };
                    let unsent = match self.writers.get(&(channel, transfer)) {
                        Some(receiving) => receiving.commands.send(abort).err().map(|e| e.0),
                        None => Some(abort),
                    };
                    if let Some(WriterCmd::Abort {
                        failure: Some((code, message)),
                        ..
                    }) = unsent
                    {
                        self.writers.remove(&(channel, transfer));
                        self.emit(channel, ConnectionEvent::Error { code, message });
                    }
                }
            }
            Event::FileOffered {
                channel,
                transfer,
                name,
                size,
                modified,
            } => self.on_file_offered(channel, transfer, name, size, modified),
            Event::FileData {
                channel,
                transfer,
                offset,
                data,
                digest,
            } => {
                if let Some(receiving) = self.writers.get(&(channel, transfer)) {
                    let _ = receiving
                        .commands
                        .send(WriterCmd::Data(offset, data, digest));
                }
            }
            Event::FileAbandoned { channel, transfer } => {
                if let Some(receiving) = self.writers.remove(&(channel, transfer)) {
                    let _ = receiving.commands.send(WriterCmd::Abort {
                        remove: false,
                        failure: None,
                    });
                }
            }
        }
    }

    /// Sends an app event to the connection that owns `channel`.
    fn emit(&self, channel: ChannelId, event: ConnectionEvent) {
        if let Some(entry) = self
            .by_channel
            .get(&channel)
            .and_then(|k| self.conns.get(k))
        {
            let _ = entry.slot.events.send((event, None));
        }
    }

    fn on_file_offered(
        &mut self,
        channel: ChannelId,
        transfer: TransferId,
        name: String,
        size: u64,
        modified: u64,
    ) {
        let Some(config) = &self.files else {
            return self.session.reject_file(
                channel,
                transfer,
                Code::OTHERS,
                "this device does not accept files",
            );
        };
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let offer = Offer {
            ticket,
            channel,
            transfer,
            package: self
                .session
                .channel_package(channel)
                .unwrap_or_default()
                .to_string(),
            name,
            size,
            modified,
        };
        // Offered again after a link drop: the earlier writer's partial, once it let go.
        let resumes = self
            .writers
            .remove(&(channel, transfer))
            .map(|receiving| receiving.part);
        let others = files::InProgress {
            count: self.writers.len(),
            bytes: self.writers.values().map(Receiving::left).sum(),
        };
        let writers = &self.writers;
        let live = |path: &std::path::Path| writers.values().any(|r| r.part == path);
        match files::accept(config, offer, resumes, &live, others, self.io_tx.clone()) {
            Ok(incoming) => {
                self.session.accept_file(channel, transfer, incoming.offset);
                self.writers.insert(
                    (channel, transfer),
                    Receiving {
                        ticket,
                        commands: incoming.writer,
                        part: incoming.part,
                        written: incoming.offset,
                        size,
                    },
                );
                self.emit(
                    channel,
                    ConnectionEvent::FileIncoming {
                        transfer: transfer.0,
                        name: incoming.name,
                        size,
                        offset: incoming.offset,
                    },
                );
            }
            Err(refusal) => {
                self.session
                    .reject_file(channel, transfer, refusal.code, &refusal.reason);
                self.emit(
                    channel,
                    ConnectionEvent::Error {
                        code: refusal.code,
                        message: refusal.reason,
                    },
                );
            }
        }
    }

    fn on_io(&mut self, done: IoDone) {
        match done {
            IoDone::Prepared { ticket, result } => {
                let Some(mut out) = self.preparing.remove(&ticket) else {
                    return;
                };
                let prepared = match result {
                    Ok(prepared) => prepared,
                    Err(e) => {
                        let _ = out
                            .done
                            .send(Err(Error::Io(crate::error::Cause::new(e.to_string(), e))));
                        return;
                    }
                };
                let Some(channel) = self.conns.get(&out.key).and_then(|e| e.channel) else {
                    let _ = out.done.send(Err(Error::ConnectionLost));
                    return;
                };
                match self.session.send_file(
                    now(),
                    channel,
                    &prepared.name,
                    prepared.size,
                    prepared.modified,
                ) {
                    Ok(transfer) => {
                        out.progress.send_modify(|p| p.total = prepared.size);
                        out.reader =
                            Some(files::spawn_reader(prepared, transfer, self.io_tx.clone()));
                        out.started = Instant::now();
                        self.outgoing_files.insert(transfer, out);
                    }
                    Err(error) => {
                        let _ = out.done.send(Err(error.into()));
                    }
                }
            }
            IoDone::Read {
                transfer,
                offset,
                result,
            } => match result {
                Ok((data, digest)) => self.session.file_read(transfer, offset, data, digest),
                Err(e) => {
                    let channel = self.outgoing_transfer_channel(transfer);
                    let reason = format!("cannot read the file: {e}");
                    if let Some(channel) = channel {
                        self.session
                            .cancel_file(channel, transfer, Code::STORAGE, &reason);
                    }
                    if let Some(out) = self.outgoing_files.remove(&transfer) {
                        // `Error::Io` says "cannot read the file" itself.
                        let _ = out
                            .done
                            .send(Err(Error::Io(crate::error::Cause::new(e.to_string(), e))));
                    }
                }
            },
            IoDone::Written {
                ticket,
                channel,
                transfer,
                end,
            } => {
                if self.is_current_writer(ticket, channel, transfer) {
                    let mut progress = None;
                    if let Some(receiving) = self.writers.get_mut(&(channel, transfer)) {
                        // One progress event per `PROGRESS_STEP` written (the stored
                        // file's own event ends it).
                        let step = |n: u64| n / PROGRESS_STEP;
                        if step(end) > step(receiving.written) && end < receiving.size {
                            progress = Some(ConnectionEvent::FileProgress {
                                transfer: transfer.0,
                                bytes_done: end,
                                total: receiving.size,
                            });
                        }
                        receiving.written = end;
                    }
                    if let Some(event) = progress {
                        self.emit(channel, event);
                    }
                    self.session.file_written(channel, transfer, end);
                }
            }
            IoDone::Stored {
                ticket,
                channel,
                transfer,
                path,
                name,
                size,
            } => {
                if !self.is_current_writer(ticket, channel, transfer) {
                    // Finished just as its sender went away; the channel id may belong
                    // to another app now, so no event: the file is in the folder.
                    tracing::info!(path = %path.display(), "stored a file whose sender had gone");
                    return;
                }
                self.writers.remove(&(channel, transfer));
                self.session.file_stored(channel, transfer);
                self.emit(
                    channel,
                    ConnectionEvent::File {
                        transfer: transfer.0,
                        path,
                        name,
                        size,
                    },
                );
            }
            IoDone::Failed {
                ticket,
                channel,
                transfer,
                code,
                reason,
            } => {
                if !self.is_current_writer(ticket, channel, transfer) {
                    // An abandoned transfer's writer: its sender is gone, and a transfer
                    // now using the same ids is not this one.
                    tracing::debug!(%code, %reason, "abandoned incoming file failed");
                    return;
                }
                self.writers.remove(&(channel, transfer));
                self.session.cancel_file(channel, transfer, code, &reason);
                self.emit(
                    channel,
                    ConnectionEvent::Error {
                        code,
                        message: reason,
                    },
                );
            }
        }
    }

    fn is_current_writer(&self, ticket: u64, channel: ChannelId, transfer: TransferId) -> bool {
        self.writers
            .get(&(channel, transfer))
            .is_some_and(|receiving| receiving.ticket == ticket)
    }

    fn outgoing_transfer_channel(&self, transfer: TransferId) -> Option<ChannelId> {
        let key = self.outgoing_files.get(&transfer)?.key;
        self.conns.get(&key)?.channel
    }

    fn finish_send(&mut self, id: SendId, result: Result<(), Error>) {
        if let Some(pending) = self.sends.remove(&id) {
            self.tickets.remove(&(pending.key, pending.ticket));
            let _ = pending.done.send(result);
        }
    }

    fn on_channel_event(&mut self, channel: ChannelId, event: ChannelEvent) {
        let _span = tracing::debug_span!("channel", id = channel.0).entered();
        let key = match self.by_channel.get(&channel) {
            Some(key) => *key,
            None => {
                // Phone side: a new channel for a registered app.
                let Some(package) = self.session.channel_package(channel) else {
                    return;
                };
                let Some(key) = self.by_package.get(package).copied() else {
                    return;
                };
                if let Some(entry) = self.conns.get_mut(&key)
                    && let Some(old) = entry.channel.replace(channel)
                {
                    self.by_channel.remove(&old);
                }
                self.by_channel.insert(channel, key);
                key
            }
        };
        let Some(entry) = self.conns.get_mut(&key) else {
            return;
        };
        if entry.channel != Some(channel) {
            return; // an older channel of this app
        }
        let mut receipt = None;
        let app_event = match event {
            ChannelEvent::Open { is_reconnected } => ConnectionEvent::Open { is_reconnected },
            ChannelEvent::Close {
                code,
                reason,
                by,
                reopens,
            } => {
                if self.session.is_closed(channel) {
                    fail_requests(entry, Error::ConnectionLost);
                }
                ConnectionEvent::Close {
                    code,
                    reason,
                    by,
                    reopens,
                }
            }
            ChannelEvent::Error { code, message } => ConnectionEvent::Error { code, message },
            ChannelEvent::Message(message) => {
                let incoming = Incoming {
                    content_type: message.content_type,
                    payload: message.payload,
                    request_id: match message.exchange {
                        Exchange::Request(id) => Some(id),
                        _ => None,
                    },
                };
                if let Exchange::Reply(id) = message.exchange {
                    // A reply goes to its request's caller, which takes it at once.
                    self.session.taken(message.receipt);
                    if let Some(waiter) = entry.requests.remove(&id) {
                        let _ = waiter.send(Ok(incoming));
                    }
                    return;
                }
                if self.session.config().acknowledge == crate::Acknowledge::WhenTaken {
                    receipt = Some(message.receipt);
                }
                if entry.slot.unread.queued(incoming.payload.len()) {
                    tracing::debug!(channel = channel.0, "the app is not reading: acks held");
                    self.session.hold_acks(channel, true);
                }
                ConnectionEvent::Message(incoming)
            }
        };
        // The state an app reads agrees with the events it was given: open from the
        // Open event on, closed from the Close event on (the session may already be
        // further along; its later events are on their way). Messages leave it alone.
        let open = match app_event {
            ConnectionEvent::Open { .. } => Some(true),
            ConnectionEvent::Close { .. } => Some(false),
            _ => None,
        };
        if let Some(open) = open {
            let state = ConnState {
                open,
                ..self.conn_state(Some(channel))
            };
            if let Some(entry) = self.conns.get(&key) {
                publish(entry, state);
            }
        }
        if let Some(entry) = self.conns.get(&key) {
            let _ = entry.slot.events.send((app_event, receipt));
        }
    }

    fn publish_states(&mut self) {
        for entry in self.conns.values() {
            let mut state = self.conn_state(entry.channel);
            // Only the Open and Close events move `open` (see `on_channel_event`).
            state.open = entry.slot.state.borrow().open;
            publish(entry, state);
        }
    }

    /// Watch side: the phone refused the link. Each connection's state says so (so
    /// diagnosis does), and, the first time a lasting refusal with this code comes
    /// since the link was last up, its events say it too.
    fn on_link_refused(&mut self, code: Code, lasting: bool, message: &str) {
        let again = self.refused.is_some_and(|(c, _)| c == code);
        self.refused = Some((code, lasting));
        if lasting && !again {
            for entry in self.conns.values() {
                let error = ConnectionEvent::Error {
                    code,
                    message: message.to_string(),
                };
                let _ = entry.slot.events.send((error, None));
            }
        }
    }

    /// What the session says of a connection's channel.
    fn conn_state(&self, channel: Option<ChannelId>) -> ConnState {
        match channel {
            Some(ch) => ConnState {
                open: self.session.is_open(ch),
                connecting: self.session.is_connecting(ch),
                last_error: self.session.last_error(ch),
                closed: self.session.is_closed(ch),
                app_version: self.session.app_version(ch),
                refused: self.refused,
            },
            // Phone side before the watch opened a channel: waiting for it.
            None => ConnState {
                connecting: true,
                ..ConnState::default()
            },
        }
    }

    /// Bounded: while the owner does not read the stream, new events are dropped (a
    /// dropped pairing request rejects the pairing) rather than piling up, and counted:
    /// once there is room, a [`SecurityEvent::Missed`] says how many.
    fn report(&self, event: SecurityEvent) {
        use std::sync::atomic::Ordering::AcqRel;
        // What was dropped is said first, in its place in the stream.
        let missed = self.security_missed.swap(0, AcqRel);
        if missed > 0
            && self
                .security_events
                .try_send(SecurityEvent::Missed { count: missed })
                .is_err()
        {
            self.security_missed.fetch_add(missed + 1, AcqRel);
            return tracing::debug!(?event, "security event dropped: the stream is not read");
        }
        if let Err(error) = self.security_events.try_send(event) {
            self.security_missed.fetch_add(1, AcqRel);
            tracing::debug!(event = ?error.into_inner(), "security event dropped: the stream is not read");
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ConfirmPairing { link, accept } => {
                if link == self.link_number && self.link.is_some() {
                    self.session.confirm_pairing(now(), accept);
                } else {
                    // Its link is gone; the prompt is over all the same.
                    self.session.prompt_answered(now(), accept);
                }
            }
            Command::Open {
                key,
                package,
                signature,
                conn,
            } => {
                let channel = self
                    .session
                    .open_channel(now(), &package, signature.as_deref())
                    .ok();
                if let Some(ch) = channel {
                    self.by_channel.insert(ch, key);
                }
                self.conns.insert(
                    key,
                    ConnEntry {
                        slot: conn,
                        package,
                        channel,
                        requests: HashMap::new(),
                    },
                );
            }
            Command::Register {
                key,
                package,
                version,
                signature,
                conn,
            } => {
                self.session
                    .register_app(&package, version, signature.as_deref());
                if let Some(old) = self.by_package.insert(package.clone(), key) {
                    // The replaced registration hears its channel close (the session
                    // closed it), then is detached: its events end, its sends fail.
                    while let Some(event) = self.session.poll_event() {
                        self.on_event(event);
                    }
                    if let Some(entry) = self.conns.get(&old) {
                        let state = ConnState {
                            closed: true,
                            ..ConnState::default()
                        };
                        publish(entry, state);
                    }
                    self.release(old);
                }
                self.conns.insert(
                    key,
                    ConnEntry {
                        slot: conn,
                        package,
                        channel: None,
                        requests: HashMap::new(),
                    },
                );
            }
            Command::Retry { key, done } => {
                if let Some(ch) = self.conns.get(&key).and_then(|e| e.channel) {
                    self.session.retry_open(now(), ch);
                }
                self.publish_states();
                let _ = done.send(());
            }
            Command::Send {
                key,
                ticket,
                content_type,
                exchange,
                payload,
                wait,
                done,
            } => {
                let send = WaitingSend {
                    ticket,
                    content_type,
                    exchange,
                    payload,
                    done,
                };
                let behind = self.waiting.get(&key).is_some_and(|w| !w.is_empty());
                match self.conns.get(&key).and_then(|e| e.channel) {
                    // A phone app's send waits for a restarted watch to open its channel.
                    _ if wait && self.awaits_reopen(key) => {
                        self.waiting.entry(key).or_default().push_back(send);
                    }
                    Some(channel) if wait && (behind || !self.session.has_room(channel)) => {
                        // Waits in call order for room in the channel's queue.
                        self.waiting.entry(key).or_default().push_back(send);
                    }
                    _ => self.start_send(key, send),
                }
            }
            Command::CancelSend {
                key,
                ticket,
                withdrawn,
            } => {
                // Withdrawn if it still waited for room, or had no sequence number yet.
                let mut unsent = false;
                if let Some(waiting) = self.waiting.get_mut(&key) {
                    let before = waiting.len();
                    waiting.retain(|w| w.ticket != ticket);
                    unsent = waiting.len() < before;
                }
                if let Some((channel, id)) = self.tickets.remove(&(key, ticket)) {
                    unsent = self.session.cancel_send(channel, id);
                    self.sends.remove(&id);
                }
                let _ = withdrawn.send(unsent);
            }
            Command::Taken { key } => {
                if let Some(receipt) = self
                    .conns
                    .get(&key)
                    .and_then(|e| e.slot.unread.take_receipt())
                {
                    self.session.taken(receipt);
                }
            }
            Command::AwaitReply {
                key,
                request,
                reply,
            } => {
                if let Some(entry) = self.conns.get_mut(&key) {
                    entry.requests.insert(request, reply);
                }
            }
            Command::ForgetReply { key, request } => {
                if let Some(entry) = self.conns.get_mut(&key) {
                    entry.requests.remove(&request);
                }
            }
            Command::QueryVersion { package, reply } => {
                if self.session.config().role == Role::Watch && !self.session.is_link_up() {
                    // Asked before the link is up: sent once it is (the caller's timeout
                    // bounds the wait).
                    if self.waiting_queries.len() < MAX_WAITING_QUERIES {
                        self.waiting_queries.push((package, reply));
                    } else {
                        let _ = reply.send(Err(Error::ConnectionLost));
                    }
                    return;
                }
                self.query_version(&package, reply);
            }
            Command::Close {
                key,
                code,
                reason,
                done,
            } => {
                if let Some(entry) = self.conns.get(&key) {
                    if let Some(ch) = entry.channel {
                        self.session.close(ch, code, &reason);
                    }
                    if self.session.config().role == Role::Phone {
                        // The app's close is for good: later opens get 1002 until it
                        // registers again.
                        self.session.set_app_attached(&entry.package, false);
                    }
                }
                let _ = done.send(());
            }
            Command::SendFile {
                key,
                ticket,
                path,
                progress,
                done,
            } => {
                self.preparing.insert(
                    ticket,
                    OutFile {
                        key,
                        ticket,
                        reader: None,
                        progress,
                        done,
                        started: Instant::now(),
                    },
                );
                let io = self.io_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let result = files::prepare(&path);
                    let _ = io.send(IoDone::Prepared { ticket, result });
                });
            }
            Command::CancelFile { key, ticket } => {
                if let Some(out) = self.preparing.remove(&ticket) {
                    let _ = out.done.send(Err(cancelled()));
                    return;
                }
                let found = self
                    .outgoing_files
                    .iter()
                    .find(|(_, o)| o.key == key && o.ticket == ticket)
                    .map(|(t, _)| *t);
                if let Some(transfer) = found {
                    if let Some(channel) = self.outgoing_transfer_channel(transfer) {
                        self.session.cancel_file(
                            channel,
                            transfer,
                            Code::CANCELLED,
                            "cancelled by the sender",
                        );
                    }
                    if let Some(out) = self.outgoing_files.remove(&transfer) {
                        let _ = out.done.send(Err(cancelled()));
                    }
                }
            }
            Command::CancelIncoming { key, transfer } => {
                let Some(channel) = self.conns.get(&key).and_then(|e| e.channel) else {
                    return;
                };
                let transfer = TransferId(transfer);
                self.session.cancel_file(
                    channel,
                    transfer,
                    Code::CANCELLED,
                    "cancelled by the receiver",
                );
                if let Some(receiving) = self.writers.remove(&(channel, transfer)) {
                    let _ = receiving.commands.send(WriterCmd::Abort {
                        remove: true,
                        failure: None,
                    });
                }
            }
            Command::Release { key } => self.release(key),
            Command::Drained { key } => {
                if let Some(channel) = self.conns.get(&key).and_then(|e| e.channel) {
                    tracing::debug!(channel = channel.0, "the app reads again: acks resume");
                    self.session.hold_acks(channel, false);
                }
            }
            Command::Shutdown => {}
        }
    }

    /// Sends a version query; its reply goes to `reply`.
    fn query_version(&mut self, package: &str, reply: VersionReplyTo) {
        match self.session.query_version(package) {
            Ok(request) => {
                self.version_queries.insert(request, reply);
            }
            Err(error) => {
                let _ = reply.send(Err(error.into()));
            }
        }
    }

    /// Hands a send to the session, or fails it.
    fn start_send(&mut self, key: u64, send: WaitingSend) {
        let Some(channel) = self.conns.get(&key).and_then(|e| e.channel) else {
            let _ = send.done.send(Err(Error::ConnectionLost));
            return;
        };
        match self
            .session
            .send(channel, send.content_type, send.exchange, send.payload)
        {
            Ok(id) => {
                let ticket = send.ticket;
                self.sends.insert(
                    id,
                    PendingSend {
                        key,
                        ticket,
                        done: send.done,
                    },
                );
                self.tickets.insert((key, ticket), (channel, id));
            }
            Err(error) => {
                let _ = send.done.send(Err(error.into()));
            }
        }
    }

    /// Phone side: whether the app's channel went with a watch restart and the new
    /// watch has not opened it yet (never on the watch).
    fn awaits_reopen(&self, key: u64) -> bool {
        self.conns
            .get(&key)
            .is_some_and(|e| self.session.awaits_reopen(&e.package))
    }

    /// Moves waiting sends into their channels' queues while there is room.
    fn admit_waiting(&mut self) {
        let keys: Vec<u64> = self.waiting.keys().copied().collect();
        for key in keys {
            loop {
                if self.awaits_reopen(key) {
                    break; // until the restarted watch opens the app's channel
                }
                let channel = self.conns.get(&key).and_then(|e| e.channel);
                let room = channel.is_none_or(|ch| self.session.has_room(ch));
                let Some(waiting) = self.waiting.get_mut(&key) else {
                    break;
                };
                if !room {
                    break;
                }
                let Some(send) = waiting.pop_front() else {
                    self.waiting.remove(&key);
                    break;
                };
                if send.done.is_closed() {
                    continue; // its caller gave up (timed out)
                }
                self.start_send(key, send);
            }
        }
    }

    /// The last handle of a connection is gone: close its channel (watch) or detach the
    /// app (phone).
    fn release(&mut self, key: u64) {
        for send in self.waiting.remove(&key).into_iter().flatten() {
            let _ = send.done.send(Err(Error::ConnectionLost));
        }
        let Some(entry) = self.conns.remove(&key) else {
            return;
        };
        match self.session.config().role {
            Role::Watch => {
                if let Some(ch) = entry.channel {
                    self.session.close(ch, Code::OTHERS, "connection released");
                    self.by_channel.remove(&ch);
                }
            }
            Role::Phone => {
                if self.by_package.get(&entry.package) == Some(&key) {
                    self.by_package.remove(&entry.package);
                    self.session.set_app_attached(&entry.package, false);
                }
                if let Some(ch) = entry.channel {
                    self.by_channel.remove(&ch);
                }
            }
        }
    }

    /// Closes every channel (the peer gets a close, not a lost link) and pushes the
    /// frames out before the driver stops.
    async fn close_all(&mut self) {
        for probe in self.probes.drain(..) {
            probe.link.retire();
        }
        // Keep partial files: a later offer of the same file resumes from them.
        for (_, receiving) in self.writers.drain() {
            let _ = receiving.commands.send(WriterCmd::Abort {
                remove: false,
                failure: None,
            });
        }
        let channels: Vec<ChannelId> = self.conns.values().filter_map(|e| e.channel).collect();
        for channel in channels {
            self.session.close(channel, Code::OTHERS, "shutting down");
        }
        self.flush().await;
        // The writer runs apart from the driver: without this wait, frames queued just
        // now (these closes, say) could be lost when the program ends right after
        // `shutdown` and its runtime drops the writer task.
        if let Some(link) = self.link.take() {
            let held = self.held_frame.take();
            let drained = async move {
                if let Some(frame) = held {
                    let _ = link.frames_out.send(frame).await;
                }
                drop(link.frames_out);
                let _ = link.writer.await;
            };
            if tokio::time::timeout(LINGER, drained).await.is_err() {
                tracing::debug!("shutdown: the link did not take the last frames in time");
            }
        }
    }

    /// Fails everything still waiting, so no caller hangs after shutdown.
    fn stop(&mut self) {
        for (_, pending) in self.sends.drain() {
            let _ = pending.done.send(Err(Error::Stopped));
        }
        let outs = self.preparing.drain().map(|(_, o)| o);
        for out in outs.chain(self.outgoing_files.drain().map(|(_, o)| o)) {
            let _ = out.done.send(Err(Error::Stopped));
        }
        for (_, receiving) in self.writers.drain() {
            // Keep partial files: a later offer of the same file resumes from them.
            let _ = receiving.commands.send(WriterCmd::Abort {
                remove: false,
                failure: None,
            });
        }
        for (_, reply) in self.version_queries.drain() {
            let _ = reply.send(Err(Error::Stopped));
        }
        for entry in self.conns.values_mut() {
            fail_requests(entry, Error::Stopped);
        }
        self.status
            .send_modify(|s| s.peer = PeerDeviceStatus::Disconnected);
    }
}

fn cancelled() -> Error {
    Error::Transfer {
        code: Code::CANCELLED,
        reason: "cancelled by the sender".into(),
    }
}

fn fail_requests(entry: &mut ConnEntry, error: Error) {
    for (_, waiter) in entry.requests.drain() {
        let _ = waiter.send(Err(error.clone()));
    }
}

async fn recv_frame(link: &mut Option<ActiveLink>) -> Result<Bytes, TransportError> {
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
async fn recv_probe(probes: &mut [Probe]) -> (usize, Result<Bytes, TransportError>) {
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

/// Waits for room in the link's write queue.
async fn write_room(
    queue: Option<mpsc::Sender<Bytes>>,
) -> Result<mpsc::OwnedPermit<Bytes>, mpsc::error::SendError<()>> {
    match queue {
        Some(queue) => queue.reserve_owned().await,
        None => std::future::pending().await,
    }
}

/// Polls a cancel-safe receive once: the frame if one is ready now, `None` otherwise.
fn poll_once(
    future: impl std::future::Future<Output = Result<Option<Bytes>, TransportError>>,
) -> Option<Result<Bytes, TransportError>> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Ok(Some(frame))) => Some(Ok(frame)),
        std::task::Poll::Ready(Ok(None)) => Some(Err(TransportError::Closed)),
        std::task::Poll::Ready(Err(error)) => Some(Err(error)),
        std::task::Poll::Pending => None,
    }
}

/// Publishes a connection's state, waking its watchers only on a change.
fn publish(entry: &ConnEntry, state: ConnState) {
    entry.slot.state.send_if_modified(|current| {
        let changed = *current != state;
        *current = state;
        changed
    });
}
