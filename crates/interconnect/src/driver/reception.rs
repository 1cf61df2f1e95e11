//! A hub's reception, when it serves several watches: it takes every link from the
//! transport, vets it beside the others (`Session::vet`: the handshake, trust per
//! device), and hands a link whose watch is authenticated to that watch's driver, which
//! it starts on the watch's first visit. It registers each app with every watch's
//! driver, so an app gets one connection per watch. It serves no channel itself.
//!
//! Bounded: `max_watches` drivers (a watch past them is refused as busy, 4002, and the
//! security stream says why), `MAX_PROBES` links in their handshake, each source held
//! to a rate, as on a single-watch hub.

use std::time::Duration;

use bytes::BytesMut;
use foldhash::HashMap;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::link::{ActiveLink, Arrival, Probe, Vetted, crowd_out, recv_probe, supply_links};
use super::start::{Setup, spawn_device};
use crate::clock::Clock;
use crate::command::{Command, pairing_answer};
use crate::connection::Connection;
use crate::files::FilesConfig;
use crate::sans_io::{Event, Session};
use crate::security::{KnownPeers, PairingRequest, Reporter, SecurityEvent};
use crate::state::LinkStatus;
use crate::transport::Transport;
use crate::watches::{Device, Watch};
use crate::{Backoff, SessionConfig};

/// What an app asks of a hub of several watches.
pub(crate) enum Request {
    /// Register an app with every watch, now and to come (or replace its registration).
    Register {
        package: String,
        version: u32,
        signature: Option<String>,
        watches: mpsc::UnboundedSender<Watch>,
    },
    /// Trust on first use pins new watches until then.
    Admit { until: Instant },
}

/// What a new watch's driver starts from.
pub(crate) struct Template {
    pub(crate) session: SessionConfig,
    pub(crate) backoff: Backoff,
    pub(crate) seed: u64,
    pub(crate) files: Option<FilesConfig>,
    pub(crate) known_peers: Option<KnownPeers>,
    pub(crate) max_unread: usize,
    pub(crate) send_timeout: Duration,
    pub(crate) max_watches: usize,
    pub(crate) store: Option<crate::Store>,
    pub(crate) cursors: std::sync::Arc<crate::cursors::Cursors>,
}

pub(crate) struct ReceptionParts {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) requests: mpsc::UnboundedSender<Request>,
    pub(crate) status: watch::Receiver<LinkStatus>,
    pub(crate) task: JoinHandle<()>,
}

/// How a watch is told apart: its key on secure links, its id in plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Fingerprint(crate::Fingerprint),
    Id(interconnect_proto::DeviceId),
}

struct Served {
    device: Device,
    commands: mpsc::UnboundedSender<Command>,
    links: mpsc::Sender<Arrival>,
    status: watch::Receiver<LinkStatus>,
    meter: std::sync::Arc<crate::state::Meter>,
    task: JoinHandle<()>,
    /// Where its last link came from (plaintext: only that source may replace a live
    /// link, as on a single-watch hub).
    source: Option<std::net::IpAddr>,
}

struct Registration {
    package: String,
    version: u32,
    signature: Option<String>,
    watches: mpsc::UnboundedSender<Watch>,
}

struct Reception {
    clock: Clock,
    /// Never linked: it makes the probes, and holds the keys and the trust.
    vetter: Session,
    template: Template,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_tx: mpsc::UnboundedSender<Command>,
    requests: mpsc::UnboundedReceiver<Request>,
    new_links: mpsc::Receiver<Arrival>,
    listener: bool,
    admission: crate::admission::Admission,
    /// Links in their handshake, oldest first.
    probes: Vec<Probe>,
    links_started: u64,
    served: HashMap<Key, Served>,
    registrations: Vec<Registration>,
    admit_until: Option<Instant>,
    status: watch::Sender<LinkStatus>,
    reporter: Reporter,
    next_key: u64,
}

/// Spawns the reception of a hub of several watches, and the link supplier of
/// `transport`.
pub(crate) fn spawn<T: Transport>(
    template: Template,
    transport: T,
    reporter: Reporter,
) -> ReceptionParts {
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (requests_tx, requests) = mpsc::unbounded_channel();
    let (status, status_rx) = watch::channel(LinkStatus::default());
    let (link_requests, requests_rx) = mpsc::channel(1);
    let (links_tx, new_links) = mpsc::channel(1);
    let listener = transport.accepts_while_linked();
    let supplier = tokio::spawn(supply_links(transport, requests_rx, links_tx));
    // A dialer is asked for each link; a listener hands over every link unasked.
    let _ = link_requests.try_send(Duration::ZERO);
    let reception = Reception {
        clock: Clock::start(),
        vetter: Session::new(template.session.clone(), rand::random()),
        template,
        commands,
        commands_tx: commands_tx.clone(),
        requests,
        new_links,
        listener,
        admission: Default::default(),
        probes: Vec::new(),
        links_started: 0,
        served: HashMap::default(),
        registrations: Vec::new(),
        admit_until: None,
        status,
        reporter,
        next_key: 1,
    };
    let span = tracing::info_span!("reception", device = %reception.template.session.device_id);
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            reception.run().await;
            supplier.abort();
            let _ = supplier.await;
        },
        span,
    ));
    ReceptionParts {
        commands: commands_tx,
        requests: requests_tx,
        status: status_rx,
        task,
    }
}

impl Reception {
    async fn run(mut self) {
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        loop {
            let deadline = self
                .probes
                .iter()
                .filter_map(|p| p.session.poll_timeout())
                .filter_map(|d| self.clock.to_tokio(d))
                .min();
            if let Some(deadline) = deadline {
                timer.as_mut().reset(deadline);
            }
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(Command::ConfirmPairing { link, accept }) => self.confirm(link, accept),
                    Some(_) => {}
                },
                Some(request) = self.requests.recv() => self.on_request(request),
                Some(arrival) = self.new_links.recv() => {
                    if let Arrival::Link(link) = arrival {
                        self.on_link(link);
                    }
                }
                (i, frame) = recv_probe(&mut self.probes), if !self.probes.is_empty() => {
                    self.on_probe_frame(i, frame);
                }
                () = &mut timer, if deadline.is_some() => {
                    for i in (0..self.probes.len()).rev() {
                        self.probes[i].session.handle_timeout(self.clock.now());
                        self.service(i);
                    }
                }
            }
        }
        self.stop().await;
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Register {
                package,
                version,
                signature,
                watches,
            } => {
                // A registration again replaces the earlier one: its stream ends, and each
                // watch's driver closes the earlier connection.
                self.registrations.retain(|r| r.package != package);
                let registration = Registration {
                    package,
                    version,
                    signature,
                    watches,
                };
                for served in self.served.values() {
                    register(&mut self.next_key, &self.template, served, &registration);
                }
                self.registrations.push(registration);
            }
            Request::Admit { until } => self.admit_until = Some(until),
        }
    }

    fn on_link(&mut self, link: crate::transport::Link) {
        if self.listener && !self.admission.admit(link.source, Instant::now().into_std()) {
            return tracing::debug!(source = ?link.source, "a source connecting too often: closed at once");
        }
        self.links_started += 1;
        let (mut active, max_frame_len) = ActiveLink::start(link, self.links_started);
        let admit_new = self.vetter.trusted().is_empty()
            || self.admit_until.is_some_and(|until| Instant::now() < until);
        let session = self.vetter.vet(self.clock.now(), max_frame_len, admit_new);
        active.limit_frames(&session);
        self.probes.push(Probe {
            session,
            link: active,
            frames: 0,
            number: self.links_started,
        });
        self.service(self.probes.len() - 1);
        crowd_out(&mut self.probes);
    }

    fn on_probe_frame(&mut self, i: usize, frame: Result<BytesMut, crate::TransportError>) {
        match frame {
            Ok(frame) => {
                self.probes[i].take(self.clock.now(), frame);
                self.service(i);
            }
            Err(error) => {
                tracing::debug!(%error, "a link being vetted failed");
                self.probes.remove(i).link.retire();
            }
        }
    }

    fn confirm(&mut self, link: u64, accept: bool) {
        if let Some(i) = self.probes.iter().position(|p| p.number == link) {
            self.probes[i]
                .session
                .confirm_pairing(self.clock.now(), accept);
            self.service(i);
        }
    }

    /// Moves a probe's output to its link, reports what its handshake found, and hands
    /// the link over once its watch is authenticated.
    fn service(&mut self, i: usize) {
        let number = self.probes[i].number;
        let mut dropped = false;
        while let Some(event) = self.probes[i].session.poll_event() {
            match event {
                Event::DropLink { code, reason } => {
                    tracing::info!(%code, %reason, "a watch's link refused");
                    dropped = true;
                }
                Event::Refused(error) => {
                    tracing::warn!(%error, "a watch refused");
                    self.reporter.report(SecurityEvent::Refused(error));
                }
                Event::PeerAuthenticated {
                    fingerprint,
                    suite,
                    code,
                } => {
                    tracing::info!(peer = %fingerprint, %suite, "a watch authenticated");
                    self.reporter.report(SecurityEvent::Authenticated {
                        fingerprint,
                        suite,
                        code,
                    });
                }
                Event::PairingRequest { fingerprint, code } => {
                    let answer = pairing_answer(self.commands_tx.clone(), number);
                    let request = PairingRequest::new(fingerprint, code, answer);
                    self.reporter.report(SecurityEvent::PairingRequest(request));
                }
                Event::PeerPinned { fingerprint } => self.pinned(fingerprint),
                _ => {}
            }
        }
        let peer = self.probes[i].session.probed_peer().filter(|_| !dropped);
        let mut busy = false;
        if let Some((id, fingerprint)) = peer {
            busy = !self.room_for(Key::of(id, fingerprint), self.probes[i].link.source);
            if busy {
                self.probes[i].session.refuse_as_busy();
                dropped = true;
            }
        }
        // Sent even when it is dropped: a refusal must reach the peer first.
        let taken = self.probes[i].transmit(self.clock.now());
        if dropped || !taken {
            return self.probes.remove(i).link.retire();
        }
        if let Some((id, fingerprint)) = peer
            && !busy
        {
            let Probe { session, link, .. } = self.probes.remove(i);
            self.hand_over(Key::of(id, fingerprint), id, fingerprint, session, link);
        }
    }

    /// Whether a watch authenticated on a link from `source` may be served: one served
    /// already (in plaintext, only from the source of its live link), or a new one while
    /// there is room.
    fn room_for(&self, key: Key, source: Option<std::net::IpAddr>) -> bool {
        match self.served.get(&key) {
            Some(served) => {
                let live = served.status.borrow().peer == crate::PeerDeviceStatus::Connected;
                if matches!(key, Key::Id(_)) && live && served.source != source {
                    tracing::info!(
                        "a plaintext link from another source claims a served watch: refused (busy)"
                    );
                    return false;
                }
                true
            }
            None if self.served.len() >= self.template.max_watches => {
                tracing::warn!(
                    max = self.template.max_watches,
                    "a new watch, and the hub serves as many as it may: refused (busy)"
                );
                false
            }
            None => true,
        }
    }

    fn hand_over(
        &mut self,
        key: Key,
        id: interconnect_proto::DeviceId,
        fingerprint: Option<crate::Fingerprint>,
        session: Session,
        link: ActiveLink,
    ) {
        let source = link.source;
        if !self.served.contains_key(&key) {
            let device = Device { id, fingerprint };
            tracing::info!(watch = %device, "a new watch: serving it");
            let served = self.start(device);
            // Apps whose stream is gone get no more connections.
            self.registrations.retain(|r| !r.watches.is_closed());
            for registration in &self.registrations {
                register(&mut self.next_key, &self.template, &served, registration);
            }
            self.served.insert(key, served);
        }
        let Some(served) = self.served.get_mut(&key) else {
            return;
        };
        served.source = source;
        if let Err(error) = served
            .links
            .try_send(Arrival::Vetted(Box::new(Vetted { session, link })))
        {
            // The watch's driver still has links to take: this one is dropped, and the
            // watch tries again.
            if let Arrival::Vetted(vetted) = error.into_inner() {
                vetted.link.retire();
            }
        }
    }

    /// Starts the driver of a new watch.
    fn start(&mut self, device: Device) -> Served {
        let template = &self.template;
        let files = template.files.clone().map(|mut files| {
            // Each watch's files in a folder of its own: two watches that send files of
            // the same name never meet.
            files.dir = files.dir.join(device.id.to_string());
            files
        });
        let (links, links_rx) = mpsc::channel(4);
        let setup = Setup {
            session: Session::new(template.session.clone(), rand::random()),
            backoff: template.backoff,
            seed: template.seed ^ self.links_started,
            files,
            known_peers: template.known_peers.clone(),
            reporter: self.reporter.clone(),
            cursors: template.cursors.clone(),
        };
        let parts = spawn_device(setup, self.status.clone(), links_rx);
        Served {
            device,
            commands: parts.commands,
            links,
            status: parts.status,
            meter: parts.meter,
            task: parts.task,
            source: None,
        }
    }

    /// A watch was pinned by first use: every later probe trusts it, and it is saved.
    fn pinned(&mut self, fingerprint: crate::Fingerprint) {
        self.vetter.trust(fingerprint);
        let reporter = self.reporter.clone();
        let Some(known) = self.template.known_peers.clone() else {
            tracing::info!(peer = %fingerprint, "watch pinned");
            return reporter.report(SecurityEvent::Pinned { fingerprint });
        };
        tokio::task::spawn_blocking(move || match known.pin(fingerprint) {
            Ok(()) => {
                tracing::info!(peer = %fingerprint, "watch pinned");
                reporter.report(SecurityEvent::Pinned { fingerprint });
            }
            Err(error) => {
                tracing::error!(%error, peer = %fingerprint, "the pinned watch could not be saved");
                reporter.report(SecurityEvent::PinNotSaved { fingerprint, error });
            }
        });
    }

    /// Stops every watch's driver (each closes its channels and flushes its link).
    async fn stop(&mut self) {
        for probe in self.probes.drain(..) {
            probe.link.retire();
        }
        let served: Vec<Served> = self.served.drain().map(|(_, s)| s).collect();
        for s in &served {
            let _ = s.commands.send(Command::Shutdown);
        }
        for s in served {
            let _ = s.task.await;
        }
        self.status
            .send_modify(|s| s.peer = crate::PeerDeviceStatus::Disconnected);
    }
}

impl Key {
    fn of(id: interconnect_proto::DeviceId, fingerprint: Option<crate::Fingerprint>) -> Key {
        match fingerprint {
            Some(key) => Key::Fingerprint(key),
            None => Key::Id(id),
        }
    }
}

/// Registers an app with one watch's driver and gives the app its connection.
fn register(next_key: &mut u64, template: &Template, served: &Served, app: &Registration) {
    *next_key += 1;
    let link = crate::state::LinkView {
        status: served.status.clone(),
        meter: served.meter.clone(),
    };
    let (slot, connection) = Connection::new(
        *next_key,
        &app.package,
        served.commands.clone(),
        link,
        template.max_unread,
        template.send_timeout,
        // One outbox per watch and app.
        crate::outbox::Outbox::load(
            template.store.clone(),
            format!("{}/{}", served.device.id, app.package),
        ),
    );
    let _ = served.commands.send(Command::Register {
        key: *next_key,
        package: app.package.clone(),
        version: app.version,
        signature: app.signature.clone(),
        conn: slot,
    });
    // An app that dropped its stream drops the connection too: detached on that watch.
    let _ = app.watches.send(Watch {
        device: served.device,
        connection,
    });
}
