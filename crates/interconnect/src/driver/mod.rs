//! The tokio driver: one task per device that runs the [`Session`] over a [`Transport`]
//! (a hub of several watches runs one per watch, fed by its `reception`).
//!
//! This file holds the loop that dispatches commands and events, and shutdown; `start`
//! how a driver starts; `routing` which handle a channel, send or event belongs to and
//! the state each reads; `link` the link pump (supply with backoff, writer tasks, probes,
//! backpressure); `transfers` the file transfers (offers, readers, writers);
//! `reception` the front of a hub of several watches; `command` what handles send the
//! driver; `wait` what the loop waits on, and which of it woke the loop.
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
//! is up or in its handshake is vetted beside it (`Session::probe`, 32 at most, each
//! source address held to a rate): a trusted device takes over at once, another is
//! refused with 4002 once authenticated, and a newcomer never retires a link further
//! along.

use foldhash::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use interconnect_proto::{ChannelId, Code, Exchange, Role, TransferId};
use rand::rngs::SmallRng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::error::Error;
use crate::files::{FilesConfig, IoDone, IoSender, WriterCmd};
use crate::sans_io::Session;
use crate::sans_io::{ChannelEvent, Event, SendId};
use crate::security::{KnownPeers, PairingRequest, Reporter, SecurityEvent};
use crate::state::{ConnState, Incoming};

mod app_state;
mod asking;
mod durable;
mod link;
mod meter;
pub(crate) mod reception;
mod routing;
mod start;
mod transfers;
mod wait;

use routing::{fail_requests, publish};
pub(crate) use start::{Setup, spawn};

use crate::app_state::FLIGHT;
use crate::command::{Command, ConnSlot, pairing_answer};
use crate::outbox::DURABLE;
use crate::sends::{self, Queued};
pub(crate) use crate::state::LinkStatus;
pub(crate) use crate::state::Meter;
use crate::state::{LinkLimits, PeerDeviceStatus};
pub use link::Backoff;
use link::{ActiveLink, Arrival, LINGER, Probe, recv_frame, recv_probe};
use transfers::{Admitted, Claiming, OutFile, Receiving};
use wait::{Woke, write_room};

struct ConnEntry {
    slot: ConnSlot,
    /// The app was told its peer reads no state.
    no_state_said: bool,
    /// The app was told its peer reads no durable messages.
    no_durable_said: bool,
    package: String,
    channel: Option<ChannelId>,
    requests: HashMap<u32, oneshot::Sender<Result<Incoming, Error>>>,
    /// What `slot.state` holds (only `publish` writes it): a pass that changed nothing
    /// compares with this instead of taking the handles' lock.
    published: ConnState,
}

/// A send waiting for room in its channel's queue.
type WaitingSend = Queued;

/// Where a version query's answer goes.
type VersionReplyTo = oneshot::Sender<Result<Option<u32>, Error>>;

/// Version queries that wait for a link; more fail with 1006.
const MAX_WAITING_QUERIES: usize = 256;

pub(crate) struct Driver {
    /// The session's time.
    clock: Clock,
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
    new_links: mpsc::Receiver<Arrival>,
    /// The link supply ended (`new_links` is closed): no longer waited on.
    links_closed: bool,
    /// Which of what the driver waits on woke it (see `wait`).
    wakes: wait::Wakes,
    conns: HashMap<u64, ConnEntry>,
    /// What the apps took of the peer's durable messages.
    cursors: std::sync::Arc<crate::cursors::Cursors>,
    by_channel: HashMap<ChannelId, u64>,
    by_package: HashMap<String, u64>,
    /// Sends waiting for room in their channel's queue, per connection, in call order.
    waiting: HashMap<u64, std::collections::VecDeque<WaitingSend>>,
    /// The sends a connection queued, taken in one lock (kept for its allocation).
    batch: std::collections::VecDeque<Queued>,
    version_queries: HashMap<u32, VersionReplyTo>,
    /// Version queries asked while the link is down (package, reply), sent when it
    /// comes up.
    waiting_queries: Vec<(String, VersionReplyTo)>,
    /// Sends of one connection the session just reported delivered, completed together
    /// under one lock (see `drain_events`).
    delivered: (u64, Vec<u32>),
    /// Messages of one channel the session just delivered, queued to its app together
    /// (see `drain_events`), with the channel and the connection it routes to.
    inbound: (Option<(ChannelId, u64)>, Vec<crate::sans_io::Message>),
    backoff: Backoff,
    failures: u32,
    rng: SmallRng,
    files: Option<FilesConfig>,
    /// Where blocking jobs report (into `commands`).
    io_tx: IoSender,
    /// Outgoing files being opened and hashed, by ticket.
    preparing: HashMap<u64, OutFile>,
    outgoing_files: HashMap<TransferId, OutFile>,
    /// Incoming files being written, by transfer.
    writers: HashMap<(ChannelId, TransferId), Receiving>,
    /// Offers waiting for the app's answer (`FilesConfig::ask`).
    asking: Vec<asking::Asking>,
    /// Admitted offers waiting for their partial file to be claimed, in arrival order.
    offers: std::collections::VecDeque<Admitted>,
    /// The offer whose partial file is being claimed, off the task, one at a time.
    claiming: Option<Claiming>,
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
    reporter: Reporter,
    /// Watch side: the link's last refusal since it was last up, and whether lasting.
    refused: Option<(Code, bool)>,
    known_peers: Option<KnownPeers>,
    /// What the link moved: counted here, its rate shared with the handles.
    sampler: meter::Sampler,
    meter: std::sync::Arc<Meter>,
    /// A watch's driver on a hub of several: the hub's status, which counts the watches
    /// connected, and whether this one is counted.
    hub_status: Option<(watch::Sender<LinkStatus>, bool)>,
}

/// Commands taken in one pass of the loop before the session is drained: enough to
/// batch a burst of sends, few enough that frames from the link are not kept waiting.
const COMMAND_BATCH: usize = 64;

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
                .filter_map(|d| self.clock.to_tokio(d))
                .chain(self.write_deadline())
                .chain(self.asking_deadline())
                .min();
            if let Some(deadline) = deadline
                && armed != Some(deadline)
            {
                timer.as_mut().reset(deadline);
                armed = Some(deadline);
                self.wakes.dirty |= wait::TIMER;
            }
            // A frame waits for room in the write queue: wait for room too.
            let held_for = match (&self.held_frame, &self.link) {
                (Some(_), Some(link)) => Some(link.queue_handle()),
                _ => None,
            };
            let woke = {
                let (paused, vetting, held) = (
                    self.session.input_paused(),
                    !self.probes.is_empty(),
                    held_for.is_some(),
                );
                let frames = recv_frame(&mut self.link);
                let probes = recv_probe(&mut self.probes);
                let room = write_room(held_for);
                tokio::pin!(frames, probes, room);
                let mut sources = wait::Sources {
                    commands: &mut self.commands,
                    links: (!self.links_closed).then_some(&mut self.new_links),
                    // Backpressure: while the replies the peer's frames caused cannot
                    // leave, its frames stay in the socket.
                    frames: (!paused).then_some(frames.as_mut()),
                    probes: vetting.then_some(probes.as_mut()),
                    room: held.then_some(room.as_mut()),
                    timer: deadline.is_some().then_some(timer.as_mut()),
                };
                let wakes = &mut self.wakes;
                std::future::poll_fn(|cx| wakes.poll(cx, &mut sources)).await
            };
            self.clock.begin_pass();
            match woke {
                Woke::Command(Some(Command::Shutdown) | None) => {
                    self.clock.end_pass();
                    self.close_all().await;
                    break;
                }
                Woke::Command(Some(command)) => {
                    self.on_command(command);
                    // A burst (pipelined sends) is taken in one pass, with one flush.
                    if self.take_commands() {
                        self.clock.end_pass();
                        self.close_all().await;
                        break;
                    }
                }
                Woke::Arrival(arrival) => {
                    if self.on_arrival(arrival) {
                        self.clock.end_pass();
                        self.close_all().await;
                        break;
                    }
                }
                Woke::LinksClosed => self.links_closed = true,
                Woke::Frame(frame) => self.on_frames(frame),
                Woke::Probe(i, frame) => self.on_probe_frame(i, frame),
                Woke::Room(room) => {
                    self.held_since = None;
                    match (room, self.held_frame.take(), &self.link) {
                        (Ok(permit), Some(frame), Some(link)) => link.queue_into(permit, frame),
                        _ => self.lose_link("the link's writer stopped (send failed)"),
                    }
                }
                Woke::Timer => {
                    armed = None;
                    if self
                        .write_deadline()
                        .is_some_and(|d| d <= self.clock.tokio_now())
                    {
                        self.lose_link("writes made no progress for the link timeout");
                    }
                    self.on_asking_timeout();
                    self.session.handle_timeout(self.clock.now());
                    for i in (0..self.probes.len()).rev() {
                        self.probes[i].session.handle_timeout(self.clock.now());
                        self.service_probe(i);
                    }
                }
            }
            self.flush().await;
            let written = self.link.as_ref().map(|l| &l.written);
            let sent = written.map_or(0, |w| w.load(Relaxed));
            self.sampler.tick(&self.meter, sent, self.clock.tokio_now());
            self.clock.end_pass();
        }
        self.stop();
    }

    /// Takes the commands already queued, up to [`COMMAND_BATCH`]; `true` when one of
    /// them is the shutdown (or every handle is gone).
    fn take_commands(&mut self) -> bool {
        use tokio::sync::mpsc::error::TryRecvError;
        for _ in 0..COMMAND_BATCH {
            match self.commands.try_recv() {
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => return true,
                Ok(command) => self.on_command(command),
                Err(TryRecvError::Empty) => break,
            }
        }
        false
    }

    /// Drains the session: frames to the link, then events to the connections.
    async fn flush(&mut self) {
        loop {
            if !self.waiting.is_empty() {
                self.admit_waiting();
            }
            self.transmit();
            if !self.drain_events() {
                break;
            }
        }
        self.publish_states();
    }

    /// Acts on the session's events; whether there were any.
    pub(super) fn drain_events(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.session.poll_event() {
            any = true;
            // A run of one channel's messages goes to its app's inbox together, in order
            // before any other event (see `complete_inbound`).
            let event = match event {
                Event::Channel(channel, ChannelEvent::Message(message))
                    if matches!(message.exchange, Exchange::OneWay | Exchange::Request(_)) =>
                {
                    if self.inbound.0.is_none_or(|(to, _)| to != channel) {
                        self.complete_inbound();
                        self.inbound.0 = self.routes(channel).map(|key| (channel, key));
                    }
                    if self.inbound.0.is_some() {
                        self.inbound.1.push(message);
                        continue;
                    }
                    Event::Channel(channel, ChannelEvent::Message(message))
                }
                event => event,
            };
            // An acknowledgement delivers a run of one connection's sends: their
            // outcomes go in together, in order before any other event.
            if let Event::Delivered(_, ids) = event {
                self.on_delivered(ids);
                continue;
            }
            self.complete_delivered();
            self.complete_inbound();
            self.on_event(event);
        }
        self.complete_delivered();
        self.complete_inbound();
        any
    }

    /// The sends of one acknowledgement: a connection's plain sends gather into its run
    /// of outcomes; a state update's or a durable message's is handled on its own, in
    /// order.
    fn on_delivered(&mut self, ids: Vec<SendId>) {
        for id in ids {
            let (key, slot) = sends::split(id);
            if slot & (FLIGHT | DURABLE) == 0 {
                if self.delivered.0 != key {
                    self.complete_delivered();
                    self.delivered.0 = key;
                }
                self.delivered.1.push(slot);
            } else {
                self.complete_delivered();
                self.complete_inbound();
                self.finish_send(id, Ok(()));
            }
        }
    }

    fn complete_delivered_run(&mut self) {
        let (key, slots) = &mut self.delivered;
        if let Some(entry) = self.conns.get(key) {
            match slots[..] {
                [slot] => entry.slot.sends.complete(slot, Ok(())),
                _ => entry.slot.sends.complete_delivered(slots),
            }
        }
        slots.clear();
    }

    /// Completes the run of deliveries gathered so far, if any.
    #[inline]
    fn complete_delivered(&mut self) {
        if !self.delivered.1.is_empty() {
            self.complete_delivered_run();
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::LinkUp { .. } => {
                self.sampler.restart(&self.meter);
                self.failures = 0;
                self.refused = None;
                let radio = self.link.as_ref().and_then(|l| l.receiver.radio());
                let limits = LinkLimits::new(self.session.limits(), radio);
                let up = |s: &mut LinkStatus| {
                    s.peer = PeerDeviceStatus::Connected;
                    s.links_up += 1;
                    s.limits = Some(limits);
                };
                self.status.send_modify(up);
                if let Some((hub, counted)) = &mut self.hub_status {
                    hub.send_modify(|s| {
                        up(s);
                        s.connected += u32::from(!*counted);
                    });
                    *counted = true;
                }
                for (package, reply) in std::mem::take(&mut self.waiting_queries) {
                    if !reply.is_closed() {
                        self.query_version(&package, reply);
                    }
                }
            }
            Event::LinkDown => {
                self.status.send_modify(|s| {
                    s.peer = PeerDeviceStatus::Disconnected;
                    s.limits = None;
                });
                self.uncount();
            }
            Event::PeerName(name) => {
                tracing::info!(%name, "the peer device says its name");
                self.status
                    .send_modify(|s| s.peer_name = Some(name.as_str().into()));
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
                let answer = pairing_answer(self.commands_tx.clone(), self.link_number);
                let request = PairingRequest::new(fingerprint, code, answer);
                // Unheard (no one listens, or the queue is full): the request is dropped,
                // which rejects it.
                self.report(SecurityEvent::PairingRequest(request));
            }
            Event::PeerPinned { fingerprint } => match &self.known_peers {
                // Saved off the task; reported once it is on the disk.
                Some(known) => {
                    let (known, io) = (known.clone(), self.io_tx.clone());
                    tokio::task::spawn_blocking(move || {
                        let result = known.pin(fingerprint);
                        let _ = io.send(IoDone::Pinned {
                            fingerprint,
                            result,
                        });
                    });
                }
                None => self.on_pinned(fingerprint, Ok(())),
            },
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
            Event::Delivered(_, ids) => self.on_delivered(ids),
            Event::SendFailed(_, id, code) => self.finish_send(id, Err(Error::from_code(code))),
            Event::VersionReply { request, version } => {
                if let Some(reply) = self.version_queries.remove(&request) {
                    let _ = reply.send(Ok(version));
                }
            }
            event @ (Event::FileRead { .. }
            | Event::FileProgress { .. }
            | Event::FileSent { .. }
            | Event::FileFailed { .. }
            | Event::FileOffered { .. }
            | Event::FileData { .. }
            | Event::FileAbandoned { .. }) => self.on_file_event(event),
        }
    }

    /// A pinned peer is saved (or could not be): the security stream says which.
    fn on_pinned(&self, fingerprint: crate::Fingerprint, result: Result<(), crate::IdentityError>) {
        match result {
            Ok(()) => {
                tracing::info!(peer = %fingerprint, "peer device pinned");
                self.report(SecurityEvent::Pinned { fingerprint });
            }
            Err(error) => {
                tracing::error!(%error, peer = %fingerprint, "the pinned peer could not be saved");
                self.report(SecurityEvent::PinNotSaved { fingerprint, error });
            }
        }
    }

    fn report(&self, event: SecurityEvent) {
        self.reporter.report(event);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ConfirmPairing { link, accept } => {
                if link == self.link_number && self.link.is_some() {
                    self.session.confirm_pairing(self.clock.now(), accept);
                } else {
                    // Its link is gone; the prompt is over all the same.
                    self.session.prompt_answered(self.clock.now(), accept);
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
                    .open_channel(self.clock.now(), &package, signature.as_deref())
                    .ok();
                if let Some(ch) = channel {
                    self.by_channel.insert(ch, key);
                }
                let published = conn.state.borrow().clone();
                self.conns.insert(
                    key,
                    ConnEntry {
                        published,
                        slot: conn,
                        no_state_said: false,
                        no_durable_said: false,
                        package,
                        channel,
                        requests: HashMap::default(),
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
                    if let Some(entry) = self.conns.get_mut(&old) {
                        let state = ConnState {
                            closed: true,
                            ..ConnState::default()
                        };
                        publish(entry, state);
                    }
                    self.release(old);
                }
                let published = conn.state.borrow().clone();
                self.conns.insert(
                    key,
                    ConnEntry {
                        published,
                        slot: conn,
                        no_state_said: false,
                        no_durable_said: false,
                        package,
                        channel: None,
                        requests: HashMap::default(),
                    },
                );
            }
            Command::Retry { key, done } => {
                if let Some(ch) = self.conns.get(&key).and_then(|e| e.channel) {
                    self.session.retry_open(self.clock.now(), ch);
                }
                self.publish_states();
                let _ = done.send(());
            }
            Command::States { key } => self.send_states(key, false),
            Command::Durable { key } => self.send_durables(key, false),
            Command::DurableFile { key, id, result } => self.durable_file_landed(key, id, result),
            Command::CancelDurable { key, id, done } => {
                let _ = done.send(self.cancel_durable(key, id));
            }
            Command::Sends { key } => {
                let mut batch = std::mem::take(&mut self.batch);
                if let Some(entry) = self.conns.get(&key) {
                    entry.slot.sends.take_queued(&mut batch);
                }
                self.on_sends(key, &mut batch);
                if batch.capacity() > 1024 {
                    batch = Default::default(); // a burst's buffer is not kept
                }
                self.batch = batch;
            }
            Command::CancelSend {
                key,
                slot,
                withdrawn,
            } => {
                let unsent = self.cancel_send(key, slot);
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
            command @ (Command::SendFile { .. }
            | Command::CancelFile { .. }
            | Command::CancelIncoming { .. }
            | Command::DecideFile { .. }) => self.on_file_command(command),
            Command::Release { key } => self.release(key),
            Command::Drained { key } => {
                if let Some(channel) = self.conns.get(&key).and_then(|e| e.channel) {
                    tracing::debug!(channel = channel.0, "the app reads again: acks resume");
                    self.session.release_acks(channel);
                }
            }
            Command::Io(done) => self.on_io(done),
            Command::Shutdown => {}
        }
    }

    /// Closes every channel (the peer gets a close, not a lost link) and pushes the
    /// frames out before the driver stops.
    async fn close_all(&mut self) {
        for probe in self.probes.drain(..) {
            probe.link.retire();
        }
        // Keep partial files: a later offer of the same file resumes from them.
        self.forget_offers();
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
                let mut link = link;
                if let Some(frame) = held {
                    link.queue_waiting(frame).await;
                }
                let _ = link.close_queue().await;
            };
            if tokio::time::timeout(LINGER, drained).await.is_err() {
                tracing::debug!("shutdown: the link did not take the last frames in time");
            }
        }
    }

    /// Fails everything still waiting, so no caller hangs after shutdown.
    fn stop(&mut self) {
        for entry in self.conns.values() {
            entry.slot.sends.stop();
        }
        let outs = self.preparing.drain().map(|(_, o)| o);
        for out in outs.chain(self.outgoing_files.drain().map(|(_, o)| o)) {
            let _ = out.done.send(Err(Error::Stopped));
        }
        self.forget_offers();
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
        self.uncount();
    }

    /// A watch of a hub of several is no longer connected: the hub counts one fewer.
    fn uncount(&mut self) {
        if let Some((hub, counted)) = &mut self.hub_status
            && std::mem::take(counted)
        {
            hub.send_modify(|s| {
                s.connected = s.connected.saturating_sub(1);
                if s.connected == 0 {
                    s.peer = PeerDeviceStatus::Disconnected;
                    s.limits = None;
                }
            });
        }
    }
}
