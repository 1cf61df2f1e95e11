//! How a driver starts: from a transport (an endpoint with one peer device), or vetted
//! links handed over by a hub's reception (one watch of several).

use foldhash::HashMap;
use rand::{SeedableRng, rngs::SmallRng};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::link::{Arrival, supply_links};
use super::{Backoff, Driver};
use crate::clock::Clock;
use crate::command::Command;
use crate::files::{FilesConfig, IoSender};
use crate::sans_io::Session;
use crate::security::{KnownPeers, Reporter};
use crate::state::LinkStatus;
use crate::transport::Transport;

/// What a driver starts from, whatever supplies its links.
pub(crate) struct Setup {
    pub(crate) session: Session,
    pub(crate) backoff: Backoff,
    pub(crate) seed: u64,
    pub(crate) files: Option<FilesConfig>,
    pub(crate) known_peers: Option<KnownPeers>,
    pub(crate) reporter: Reporter,
    pub(crate) cursors: std::sync::Arc<crate::cursors::Cursors>,
}

pub(crate) struct DriverParts {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) status: watch::Receiver<LinkStatus>,
    /// What the link moved over the last seconds.
    pub(crate) meter: std::sync::Arc<super::Meter>,
    pub(crate) task: JoinHandle<()>,
}

/// Spawns the driver and the link supplier for `transport`.
pub(crate) fn spawn<T: Transport>(setup: Setup, transport: T) -> DriverParts {
    let (link_requests, requests_rx) = mpsc::channel(1);
    let (links_tx, new_links) = mpsc::channel(1);
    let listener = transport.accepts_while_linked();
    let supplier = tokio::spawn(supply_links(transport, requests_rx, links_tx));
    start(
        Driver::new(setup, link_requests, new_links, listener),
        Some(supplier),
    )
}

/// Spawns the driver of one watch on a hub of several: its links come vetted, as
/// [`Command::Adopt`], from the hub's reception, and it counts itself in `hub_status`
/// while its link is up.
pub(crate) fn spawn_device(
    setup: Setup,
    hub_status: watch::Sender<LinkStatus>,
    new_links: mpsc::Receiver<Arrival>,
) -> DriverParts {
    let (link_requests, _) = mpsc::channel(1);
    let mut driver = Driver::new(setup, link_requests, new_links, false);
    driver.hub_status = Some((hub_status, false));
    start(driver, None)
}

fn start(driver: Driver, supplier: Option<JoinHandle<()>>) -> DriverParts {
    let commands = driver.commands_tx.clone();
    let status = driver.status.subscribe();
    let meter = driver.meter.clone();
    let span = tracing::info_span!(
        "interconnect",
        role = ?driver.session.config().role,
        device = %driver.session.config().device_id,
    );
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            driver.run().await;
            // Awaited, so the transport (a listening socket) is gone when shutdown returns.
            if let Some(supplier) = supplier {
                supplier.abort();
                let _ = supplier.await;
            }
        },
        span,
    ));
    DriverParts {
        commands,
        status,
        meter,
        task,
    }
}

impl Driver {
    fn new(
        setup: Setup,
        link_requests: mpsc::Sender<std::time::Duration>,
        new_links: mpsc::Receiver<Arrival>,
        listener: bool,
    ) -> Driver {
        let (commands_tx, commands) = mpsc::unbounded_channel::<Command>();
        let io = commands_tx.clone();
        let io_tx = IoSender::new(move |done| match io.send(Command::Io(done)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(Command::Io(done))) => Err(done),
            // Only a report is sent here.
            Err(_) => Ok(()),
        });
        let (status, _) = watch::channel(LinkStatus::default());
        Driver {
            clock: Clock::start(),
            session: setup.session,
            commands,
            status,
            link: None,
            probes: Vec::new(),
            admission: Default::default(),
            listener,
            link_requests,
            new_links,
            links_closed: false,
            wakes: super::wait::Wakes::new(),
            conns: HashMap::default(),
            cursors: setup.cursors,
            by_channel: HashMap::default(),
            by_package: HashMap::default(),
            waiting: HashMap::default(),
            batch: Default::default(),
            version_queries: HashMap::default(),
            waiting_queries: Vec::new(),
            delivered: (0, Vec::new()),
            inbound: (None, Vec::new()),
            backoff: setup.backoff,
            failures: 0,
            rng: SmallRng::seed_from_u64(setup.seed),
            files: setup.files,
            io_tx,
            preparing: HashMap::default(),
            outgoing_files: HashMap::default(),
            writers: HashMap::default(),
            offers: std::collections::VecDeque::new(),
            asking: Vec::new(),
            claiming: None,
            next_ticket: 0,
            held_frame: None,
            held_since: None,
            link_number: 0,
            links_started: 0,
            commands_tx,
            reporter: setup.reporter,
            refused: None,
            known_peers: setup.known_peers,
            hub_status: None,
            sampler: Default::default(),
            meter: Default::default(),
        }
    }
}
