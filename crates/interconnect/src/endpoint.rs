//! The two ends: [`Interconnect`] on the watch, [`Hub`] on the phone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use interconnect_proto::{DeviceId, Role};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::SessionConfig;
use crate::command::{Command, ConnSlot};
use crate::connection::Connection;
use crate::driver::reception::{self, Request, Template};
use crate::driver::{self, Backoff};
use crate::sans_io::Session;
use crate::security::{KnownPeers, Reporter, Security, SecurityEvents, TrustPolicy};
use crate::state::{LinkLimits, LinkStatus, LinkView, PeerDeviceStatus};
use crate::transport::Transport;

/// Settings of an [`Interconnect`] or a [`Hub`].
///
/// [`Config::new`] is the one to use in an app: it keeps the device key and the peers
/// it trusts in a directory, so a restart of either end is a reconnection, not a
/// stranger. [`Config::in_memory`] is for tests and demos in one process.
///
/// Defaults: send timeout 10 s, 1,024 unread messages per connection, backoff 100 ms
/// doubling to 30 s, no incoming files, and the session's defaults ([`SessionConfig`]:
/// Noise, acknowledgement once the app took a message, pings every 5 s, link timeout
/// 15 s). Set a field to change one.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// How long `send` waits for the acknowledgement before failing with 204.
    pub send_timeout: Duration,
    /// Messages a connection holds for its app (received, not yet taken from
    /// [`Connection::events`]) before this side stops acknowledging that channel's
    /// messages, so the peer's sends wait instead of this side's memory growing (8 MiB
    /// of unread messages do the same). 1,024 by default.
    ///
    /// [`Connection::events`]: crate::Connection::events
    pub max_unread: usize,
    /// Delays between link attempts after failures.
    pub backoff: Backoff,
    /// Seeds the backoff jitter (and the resume token when `session.resume_token` is 0),
    /// for reproducible tests. `None` draws from the OS.
    pub seed: Option<u64>,
    /// Where received files go; `None` refuses incoming files.
    pub files: Option<crate::files::FilesConfig>,
    /// Where peers pinned by trust on first use or pairing are saved; `None` keeps them
    /// for this process only.
    pub known_peers: Option<KnownPeers>,
    /// Watches a [`Hub`] serves at once (a watch's own setting is ignored). 1, the
    /// default, serves one at a time: another that connects meanwhile is refused as
    /// busy (4002), and apps register with [`Hub::register`]. Above 1, each watch gets its
    /// own link and session (one slow watch holds up no other), apps register with
    /// [`Hub::register_watches`] and get one connection per watch, and a watch past the
    /// bound is refused as busy. Trust is per watch: see [`Hub::register_watches`].
    /// Received files then go to a folder per watch inside `files.dir`, named by the
    /// watch's device id in hex. 0 is taken as 1, and so is any value on a transport that
    /// makes one link at a time ([`Transport::accepts_while_linked`] is `false`: a
    /// dialer, a BLE central of one peripheral).
    ///
    /// [`Transport::accepts_while_linked`]: crate::Transport::accepts_while_linked
    pub max_watches: usize,
    /// Where durable messages are kept until the peer's app took them, and what this
    /// side's apps took of the peer's ([`Connection::send_durable`]); `None`, the
    /// default, makes `send_durable` fail with [`Error::NoStore`](crate::Error::NoStore)
    /// (durable messages from the peer still arrive, each once while this process
    /// lives).
    ///
    /// [`Connection::send_durable`]: crate::Connection::send_durable
    pub store: Option<crate::Store>,
    /// The session: this device's id and security, timers and limits. Its `role` is set
    /// by [`Hub`] (phone) or [`Interconnect`] (watch), `reliable_link` and `stream_link`
    /// by the transport ([`Transport::is_reliable`](crate::Transport::is_reliable),
    /// [`Transport::is_stream`](crate::Transport::is_stream)), and a
    /// `resume_token` of 0 is drawn at start.
    pub session: SessionConfig,
}

impl Config {
    /// A device whose state lives in `dir` (created if missing), as a device that
    /// restarts needs: its identity (`dir/identity`, created on first start,
    /// owner-only), the peers it trusts (`dir/known_peers`, where trust on first use
    /// pins the first peer), and a device id derived from its key. A file that exists
    /// but cannot be used is an error, never a new key or a fresh first use.
    ///
    /// ```
    /// # fn main() -> Result<(), interconnect::IdentityError> {
    /// use interconnect::Config;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = Config::new(dir.path())?;
    /// // The same directory gives the same device after a restart.
    /// assert_eq!(Config::new(dir.path())?.session.device_id, config.session.device_id);
    /// # Ok(()) }
    /// ```
    pub fn new(dir: impl AsRef<std::path::Path>) -> Result<Config, crate::IdentityError> {
        let dir = dir.as_ref();
        crate::security::create_private_dir(dir)?;
        let identity = <crate::DeviceIdentity as crate::IdentityFile>::load_or_generate(
            &dir.join("identity"),
        )?;
        let known_peers = KnownPeers::new(dir.join("known_peers"));
        let known = known_peers.load()?;
        let mut config = Config::in_memory(identity.device_id());
        config.session.security = Security::Noise(
            crate::NoiseConfig::new(identity).with_trust(TrustPolicy::FirstUse { known }),
        );
        config.known_peers = Some(known_peers);
        Ok(config)
    }

    /// A device that keeps nothing: a fresh device key on every start, trusting the first
    /// peer it meets for this process only. For tests and one-process demos; a restarted
    /// peer that kept its key is trusted again only by a [`Config::new`] device.
    pub fn in_memory(device_id: DeviceId) -> Self {
        Config {
            send_timeout: Duration::from_secs(10),
            max_unread: 1024,
            backoff: Backoff::default(),
            seed: None,
            files: None,
            known_peers: None,
            max_watches: 1,
            store: None,
            session: SessionConfig::new(
                Role::Watch,
                device_id,
                0,
                Security::Noise(crate::NoiseConfig::new(
                    <crate::DeviceIdentity as crate::IdentityFile>::generate(),
                )),
            ),
        }
    }
}

/// The security setting with the peers pinned in `known` added to its trust policy, so a
/// restarted device trusts exactly whom it trusted before. A file that cannot be read
/// fails closed: the policy then pins no one and every peer is refused (4007), never
/// trusted on first use.
fn with_known_peers(security: Security, known: Option<&KnownPeers>) -> Security {
    let (mut noise, known) = match (security, known) {
        (Security::Noise(noise), Some(known)) => (noise, known),
        (security, _) => return security,
    };
    match known.load() {
        Ok(pins) => match &mut noise.trust {
            TrustPolicy::FirstUse { known } | TrustPolicy::Pairing { known } => {
                for pin in pins {
                    if !known.contains(&pin) {
                        known.push(pin);
                    }
                }
            }
            _ => {}
        },
        Err(error) => {
            tracing::error!(%error, "known peers cannot be read: every peer will be refused");
            noise.trust = TrustPolicy::Pinned(Vec::new());
        }
    }
    Security::Noise(noise)
}

struct Endpoint {
    commands: mpsc::UnboundedSender<Command>,
    /// A hub of several watches: what apps ask of its reception.
    requests: Option<mpsc::UnboundedSender<Request>>,
    security_events: std::sync::Mutex<Option<SecurityEvents>>,
    status: watch::Receiver<LinkStatus>,
    /// What a handle reads of the link (on a hub of several: the hub's status, and no
    /// rate: each watch's connection has its own).
    link: LinkView,
    /// Taken by the first `shutdown`; later ones wait on the lock until it finished.
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    next_key: AtomicU64,
    send_timeout: Duration,
    max_unread: usize,
    store: Option<crate::Store>,
}

impl Endpoint {
    fn start<T: Transport>(role: Role, transport: T, config: Config) -> Endpoint {
        let seed = config.seed.unwrap_or_else(rand::random);
        let mut session = config.session;
        if session.resume_token == 0 {
            session.resume_token = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        }
        session.role = role;
        session.reliable_link = transport.is_reliable();
        session.stream_link = transport.is_stream();
        // Told to the peer, so it offers no file to a side that would refuse it.
        session.receives_files = config.files.is_some();
        session.security = with_known_peers(session.security, config.known_peers.as_ref());
        let (reporter, security_events) = Reporter::new();
        let cursors = std::sync::Arc::new(crate::cursors::Cursors::new(config.store.clone()));
        let store = config.store.clone();
        let several = role == Role::Phone && config.max_watches > 1;
        if several && !transport.accepts_while_linked() {
            tracing::warn!(
                "max_watches is above 1, but this transport makes one link at a time: one watch is served"
            );
        }
        let several = several && transport.accepts_while_linked();
        let (commands, requests, status, meter, task) = if several {
            let template = Template {
                session,
                backoff: config.backoff,
                seed,
                files: config.files,
                known_peers: config.known_peers,
                max_unread: config.max_unread,
                send_timeout: config.send_timeout,
                max_watches: config.max_watches,
                store: config.store,
                cursors,
            };
            let parts = reception::spawn(template, transport, reporter);
            // Each watch's connection reads its own link; the hub's has no rate.
            let meter = std::sync::Arc::new(crate::state::Meter::default());
            let requests = Some(parts.requests);
            (parts.commands, requests, parts.status, meter, parts.task)
        } else {
            let setup = driver::Setup {
                session: Session::new(session, rand::random()),
                backoff: config.backoff,
                seed,
                files: config.files,
                known_peers: config.known_peers,
                reporter,
                cursors,
            };
            let parts = driver::spawn(setup, transport);
            (parts.commands, None, parts.status, parts.meter, parts.task)
        };
        Endpoint {
            commands,
            requests,
            security_events: std::sync::Mutex::new(Some(security_events)),
            link: LinkView {
                status: status.clone(),
                meter,
            },
            status,
            task: tokio::sync::Mutex::new(Some(task)),
            next_key: AtomicU64::new(1),
            send_timeout: config.send_timeout,
            max_unread: config.max_unread,
            store,
        }
    }

    fn new_connection(&self, package: &str) -> (u64, ConnSlot, Connection) {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let (slot, conn) = Connection::new(
            key,
            package,
            self.commands.clone(),
            self.link.clone(),
            self.max_unread,
            self.send_timeout,
            crate::outbox::Outbox::load(self.store.clone(), package.to_owned()),
        );
        (key, slot, conn)
    }

    fn security_events(&self) -> Option<SecurityEvents> {
        let mut slot = self
            .security_events
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        slot.take()
    }

    fn status(&self) -> PeerDeviceStatus {
        self.status.borrow().peer
    }

    fn limits(&self) -> Option<LinkLimits> {
        self.link.limits()
    }

    async fn wait_connected(&self) {
        let mut status = self.status.clone();
        // A link that comes up after this call counts, even if it is gone again by the
        // time this task looks.
        let seen = status.borrow_and_update().links_up;
        let _ = status
            .wait_for(|s| s.peer == PeerDeviceStatus::Connected || s.links_up > seen)
            .await;
    }

    async fn wait_disconnected(&self) {
        let mut status = self.status.clone();
        let _ = status
            .wait_for(|s| s.peer != PeerDeviceStatus::Connected)
            .await;
    }

    async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let mut task = self.task.lock().await;
        if let Some(task) = task.take() {
            let _ = task.await;
        }
        // What the driver queued for the store is on the disk before this returns.
        if let Some(store) = &self.store {
            store.idle().await;
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}

/// The watch side: connects to the phone over a transport and opens channels to phone
/// apps by package. The vendor API's `interconnect` module. Cheap to clone (clones share
/// one driver, as quinn's `Endpoint` does).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// use interconnect::{Config, ConnectionEvent, Hub, Interconnect};
/// use interconnect_proto::DeviceId;
///
/// let (watch_link, phone_link) = transport_mock::MockNetwork::new(Default::default()).endpoints();
/// let hub = Hub::new(phone_link, Config::in_memory(DeviceId([2; 16])));
/// let app = hub.register("com.example.fit", 3, None).await.unwrap();
///
/// let watch = Interconnect::new(watch_link, Config::in_memory(DeviceId([1; 16])));
/// let conn = watch.instance("com.example.fit", None);
/// assert!(conn.diagnosis(None).await.is_ok());
/// // Queued now; resolves once the phone app took it.
/// let sent = conn.send(&serde_json::json!({"steps": 1234}));
///
/// let mut events = app.events().unwrap();
/// assert_eq!(events.next().await, Some(ConnectionEvent::Open { is_reconnected: false }));
/// let Some(ConnectionEvent::Message(message)) = events.next().await else { panic!() };
/// assert_eq!(message.decode::<serde_json::Value>().unwrap()["steps"], 1234);
/// sent.await.unwrap();
/// # });
/// ```
#[derive(Clone)]
pub struct Interconnect {
    endpoint: std::sync::Arc<Endpoint>,
}

impl Interconnect {
    /// Starts the watch side over `transport` (call inside a tokio runtime).
    pub fn new<T: Transport>(transport: T, config: Config) -> Self {
        Interconnect {
            endpoint: std::sync::Arc::new(Endpoint::start(Role::Watch, transport, config)),
        }
    }

    /// Security events of this device (peer authenticated, pairing requests, pins,
    /// refusals). The stream can be taken once; later calls return `None`. It buffers 32
    /// events: read it as they come, or newer ones are dropped (a dropped pairing request
    /// is rejected).
    pub fn security_events(&self) -> Option<SecurityEvents> {
        self.endpoint.security_events()
    }

    /// The vendor API's `getPeerDeviceStatus`: whether the phone is connected.
    pub fn peer_device_status(&self) -> PeerDeviceStatus {
        self.endpoint.status()
    }

    /// What the link to the phone carries (the largest message, frame and file chunk),
    /// while one is up: the limits a sender would otherwise find only by failing.
    pub fn limits(&self) -> Option<LinkLimits> {
        self.endpoint.limits()
    }

    /// Waits until the phone is connected (a link that comes up after the call counts,
    /// even if it drops again before this task runs).
    pub async fn connected(&self) {
        self.endpoint.wait_connected().await;
    }

    /// Waits until no peer device is connected (at once if none is).
    pub async fn disconnected(&self) {
        self.endpoint.wait_disconnected().await;
    }

    /// The vendor API's `instance`: a connection to the phone app `package`, which must have the
    /// `signature` if one is given (otherwise 1007): its signing certificate's
    /// fingerprint, which the vendor APIs pass as `fingerprint`. It opens as soon as the
    /// link allows; watch [`Connection::events`] or call [`Connection::diagnosis`].
    pub fn instance(&self, package: &str, signature: Option<&str>) -> Connection {
        let (key, conn_slot, conn) = self.endpoint.new_connection(package);
        let _ = self.endpoint.commands.send(Command::Open {
            key,
            package: package.into(),
            signature: signature.map(Into::into),
            conn: conn_slot,
        });
        conn
    }

    /// Stops the driver: closes the channels (the phone reopens none of them; they
    /// reopen when this watch starts again), flushes the link and drops it. Pending calls
    /// fail with [`Error::Stopped`](crate::Error::Stopped) or 1006. Through any clone;
    /// returns once the driver has ended (every clone's later calls fail), and at once
    /// when it already had. Dropping the last clone stops the driver too, without waiting.
    pub async fn shutdown(&self) {
        self.endpoint.shutdown().await;
    }
}

/// The phone side: accepts the watch's link, and lets phone apps register by package to
/// get a [`Connection`] with the same API as the watch's. Cheap to clone (clones share
/// one driver).
///
/// A watch asking for a package nobody registered gets 1001 (and version -1); one whose
/// app registered but detached (its `Connection` dropped) gets 1002; one that requires a
/// different signature gets 1007.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// use interconnect::{Config, ConnectionEvent, Hub, Interconnect};
/// use interconnect_proto::{Code, DeviceId};
///
/// let (watch_link, phone_link) = transport_mock::MockNetwork::new(Default::default()).endpoints();
/// let hub = Hub::new(phone_link, Config::in_memory(DeviceId([2; 16])));
/// let watch = Interconnect::new(watch_link, Config::in_memory(DeviceId([1; 16])));
///
/// // The phone app registers, with its signature, and answers requests.
/// let app = hub.register("com.example.fit", 3, Some("AB:CD")).await.unwrap();
/// let mut events = app.events().unwrap();
/// tokio::spawn({
///     let app = app.clone();
///     async move {
///         while let Some(event) = events.next().await {
///             if let ConnectionEvent::Message(request) = event {
///                 let n: u32 = request.decode().unwrap();
///                 app.reply(&request, &(n + 1)).await.unwrap();
///             }
///         }
///     }
/// });
///
/// let conn = watch.instance("com.example.fit", Some("AB:CD"));
/// let answer: u32 = conn.request(&41, std::time::Duration::from_secs(5)).await.unwrap();
/// assert_eq!(answer, 42);
///
/// // A watch app that expects another signature is refused with 1007.
/// let impostor = watch.instance("com.example.fit", Some("00:00"));
/// assert_eq!(impostor.diagnosis(None).await.code, Code::SIGNATURE_MISMATCH);
/// # });
/// ```
#[derive(Clone)]
pub struct Hub {
    endpoint: std::sync::Arc<Endpoint>,
}

impl Hub {
    /// Starts the phone side over `transport` (call inside a tokio runtime).
    pub fn new<T: Transport>(transport: T, config: Config) -> Self {
        Hub {
            endpoint: std::sync::Arc::new(Endpoint::start(Role::Phone, transport, config)),
        }
    }

    /// Security events of this device (peer authenticated, pairing requests, pins,
    /// refusals). The stream can be taken once; later calls return `None`. It buffers 32
    /// events: read it as they come, or newer ones are dropped (a dropped pairing request
    /// is rejected).
    pub fn security_events(&self) -> Option<SecurityEvents> {
        self.endpoint.security_events()
    }

    /// Whether a watch is connected (on a hub of several, whether any is).
    pub fn peer_device_status(&self) -> PeerDeviceStatus {
        self.endpoint.status()
    }

    /// What the link to the watch carries (the largest message, frame and file chunk),
    /// while one is up (on a hub of several watches, the link that came up last).
    pub fn limits(&self) -> Option<LinkLimits> {
        self.endpoint.limits()
    }

    /// Waits until the watch is connected (a link that comes up after the call counts,
    /// even if it drops again before this task runs).
    pub async fn connected(&self) {
        self.endpoint.wait_connected().await;
    }

    /// Waits until no peer device is connected (at once if none is).
    pub async fn disconnected(&self) {
        self.endpoint.wait_disconnected().await;
    }

    /// Registers an app (or replaces its registration) and attaches it. The app stays
    /// attached while the returned connection (or a clone) lives; dropping it detaches the
    /// app, and watches then get 1002.
    pub async fn register(
        &self,
        package: &str,
        version: u32,
        signature: Option<&str>,
    ) -> Result<Connection, crate::Error> {
        if self.endpoint.requests.is_some() {
            return Err(crate::Error::SeveralWatches);
        }
        let (key, conn_slot, conn) = self.endpoint.new_connection(package);
        self.endpoint
            .commands
            .send(Command::Register {
                key,
                package: package.into(),
                version,
                signature: signature.map(Into::into),
                conn: conn_slot,
            })
            .map_err(|_| crate::Error::Stopped)?;
        Ok(conn)
    }

    /// On a hub of several watches ([`Config::max_watches`] above 1): registers an app
    /// (or replaces its registration) with every watch, those served now and those to
    /// come. The app gets one [`Watch`](crate::Watch) per watch from the stream, each
    /// with its own [`Connection`] (dropping one detaches the app from that watch: it
    /// gets 1002). On a hub of one watch, fails with
    /// [`Error::OneWatch`](crate::Error::OneWatch).
    ///
    /// Trust is per watch. [`TrustPolicy::Pinned`]: the listed watches only.
    /// [`TrustPolicy::Pairing`]: each new watch asks the user (a
    /// [`SecurityEvent::PairingRequest`](crate::SecurityEvent::PairingRequest) apiece).
    /// [`TrustPolicy::FirstUse`] (the default): while no watch is pinned, the first to
    /// connect is (as on a hub of one, and two that connect at that same moment both
    /// are); after that a new watch is pinned only while the hub admits new ones
    /// ([`admit_new_watches`](Self::admit_new_watches)), and refused (4007) otherwise.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
    /// use interconnect::{Config, ConnectionEvent, Hub, Interconnect};
    /// use interconnect_proto::DeviceId;
    /// use std::time::Duration;
    ///
    /// let nets = transport_mock::MockNetwork::several(Default::default(), 2);
    /// let (one, phone_link) = nets[0].endpoints();
    /// let (two, _) = nets[1].endpoints();
    /// let mut config = Config::in_memory(DeviceId([9; 16]));
    /// config.max_watches = 8;
    /// let hub = Hub::new(phone_link, config);
    /// hub.admit_new_watches(Duration::from_secs(60)).unwrap();
    /// let mut watches = hub.register_watches("com.example.fit", 3, None).await.unwrap();
    ///
    /// let first = Interconnect::new(one, Config::in_memory(DeviceId([1; 16])));
    /// let second = Interconnect::new(two, Config::in_memory(DeviceId([2; 16])));
    /// // Queued now; each resolves once the phone app took it.
    /// let sent = [&first, &second].map(|watch| watch.instance("com.example.fit", None));
    /// let sending: Vec<_> = sent.iter().zip(0u32..).map(|(c, i)| c.send(&i)).collect();
    /// let mut heard = Vec::new();
    /// for _ in 0..2 {
    ///     let watch = watches.next().await.unwrap();
    ///     let mut events = watch.connection.events().unwrap();
    ///     assert!(matches!(events.next().await, Some(ConnectionEvent::Open { .. })));
    ///     let Some(ConnectionEvent::Message(m)) = events.next().await else { panic!() };
    ///     heard.push((watch.device.id.0[0], m.decode::<u32>().unwrap()));
    /// }
    /// heard.sort();
    /// assert_eq!(heard, [(1, 0), (2, 1)]);
    /// for sending in sending {
    ///     sending.await.unwrap();
    /// }
    /// # });
    /// ```
    pub async fn register_watches(
        &self,
        package: &str,
        version: u32,
        signature: Option<&str>,
    ) -> Result<crate::Watches, crate::Error> {
        let requests = self
            .endpoint
            .requests
            .as_ref()
            .ok_or(crate::Error::OneWatch)?;
        let (watches, rx) = mpsc::unbounded_channel();
        requests
            .send(Request::Register {
                package: package.into(),
                version,
                signature: signature.map(Into::into),
                watches,
            })
            .map_err(|_| crate::Error::Stopped)?;
        Ok(crate::Watches::new(rx))
    }

    /// On a hub of several watches under trust on first use: pins every new watch that
    /// connects within `window` (the user's "add a watch" moment). Fails with
    /// [`Error::OneWatch`](crate::Error::OneWatch) on a hub of one.
    pub fn admit_new_watches(&self, window: Duration) -> Result<(), crate::Error> {
        let requests = self
            .endpoint
            .requests
            .as_ref()
            .ok_or(crate::Error::OneWatch)?;
        let until = tokio::time::Instant::now() + window;
        requests
            .send(Request::Admit { until })
            .map_err(|_| crate::Error::Stopped)
    }

    /// Stops the driver: closes the channels (a watch reopens them by itself when a
    /// phone is back), flushes the link and drops it. Through any clone; returns once the
    /// driver has ended and the transport is released (a TCP listener's port is free
    /// again), and at once when it already had. A watch that connects meanwhile is neither
    /// served nor told the phone is busy: its connection just closes, and it tries again.
    /// Dropping the last clone stops the driver too, without waiting.
    pub async fn shutdown(&self) {
        self.endpoint.shutdown().await;
    }
}
