//! trouble-host backend: the watch as GATT server ([`Trouble::peripheral`]) and the phone
//! as GATT client ([`Trouble::central`]) on [trouble-host], a `no_std` Rust BLE host, driving an
//! HCI controller over H4 on a TCP socket. The tests run it against virtual controllers
//! (`tests/fixtures/controllers.py`); on a device the same host drives a real controller.
//!
//! This module holds the host thread and what both sides share; `peripheral` the watch's
//! GATT server and L2CAP listener, `central` the phone's scanning, connecting and choice
//! of carrier, for one watch or several, and `channel` an L2CAP channel's settings and
//! pump. With [`HostConfig::coc`] (the default) the watch also listens on an L2CAP
//! credit-based channel and announces its PSM, and the phone opens it after discovery;
//! whichever the phone starts first, the channel or notifications, carries the session.
//!
//! Each endpoint runs its host on a thread of its own (the host's futures are not `Send`)
//! and hands each connection to the packet-link seam once it is usable: the peripheral
//! when the phone has enabled notifications (frames notified before are lost), the central
//! once it listens for notifications and has written the CCCD. Dropping either half of the
//! link disconnects; dropping the endpoint stops its host and closes its HCI socket.
//!
//! What trouble-host 0.8 needs, as measured on virtual controllers (each point handled
//! here or in this crate's manifest):
//!
//! - **Queues.** The per-connection receive queue is 64 packets, not 8: a burst of our
//!   credit window (32 packets) overflowed it and the host dropped writes with
//!   `OutOfMemory`. The GATT client's notification queue is 64, not 1: it publishes
//!   without waiting, so a busy consumer lost notifications. The packet pool holds 128
//!   buffers of 1024 bytes (ATT MTU up to 1020; packets stay at most 512). A send that
//!   finds the pool empty waits for it rather than failing.
//! - **Subscribing.** `GattClient::subscribe` writes the CCCD before it listens, so the
//!   watch's first notifications could arrive with nobody listening: the central listens
//!   first, then writes the CCCD itself.
//! - **One server per process.** `#[gatt_server]` keeps its table in a `StaticCell`, and
//!   a second server in a process panics; the watch builds its attribute table by hand.
//! - **The waker.** The host runs as a task on its thread's runtime, not as the future
//!   `block_on` polls: that waker's vtable is duplicated across codegen units, so
//!   `Waker::will_wake` sees the same waker as different, and embassy-sync's waker
//!   registrations then wake the host on every poll. Release builds (16 codegen units)
//!   spun at 100% CPU per host while idle; debug builds and `codegen-units = 1` hid it.
//! - **L2CAP channels.** The host reassembles an SDU into one packet-pool buffer, so the
//!   SDU limit is at most 1018 bytes (the buffer less the L2CAP and SDU headers); larger
//!   frames are cut at it. Its default credit policy returns one credit per K-frame, a
//!   packet the other way for each one received: both sides here return 16 at a time, and
//!   grant 64 (the receive queue) at the open.
//! - **Cancellation.** A send of the host writes to the controller inside its future, so
//!   dropping one halfway can leave half an HCI packet on the transport. The loops that
//!   carry a link stop only where they wait on something else, and a connection's end
//!   waits for them (an L2CAP link cut hung about one run in eight before).
//! - **Versions.** trouble-host 0.8 needs `bt-hci` 0.10 (0.11 does not fit), and Rust 1.88.
//!
//! [trouble-host]: https://github.com/embassy-rs/trouble

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use bt_hci::controller::ExternalController;
use bt_hci_serial::SerialTransport;
use bytes::Bytes;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embedded_io_adapters::tokio_1::FromTokio;
use interconnect::{Link, Transport, TransportError};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use trouble_host::prelude::*;

use crate::Carrier;
use crate::coc::{DEFAULT_PSM, SduLink, SduSender};
use crate::link::{BleConfig, PacketLink, PacketReceiver, PacketSender};

mod central;
mod channel;
mod peripheral;
use central::central;
use peripheral::peripheral;

/// The HCI controller as the host sees it: H4 over a TCP socket.
type Hci = ExternalController<
    SerialTransport<NoopRawMutex, FromTokio<OwnedReadHalf>, FromTokio<OwnedWriteHalf>>,
    10,
>;

/// How long a send waits before trying again when the host's packet pool is empty.
const POOL_WAIT: Duration = Duration::from_millis(1);

/// Attributes in the watch's table: GAP (3), GATT (1), ours (1 + 2 + 3 + 2).
const ATTRIBUTES: usize = 16;

/// Settings of one host.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HostConfig {
    /// Where the HCI controller listens (H4 over TCP).
    pub hci: SocketAddr,
    /// The name the watch advertises.
    pub name: String,
    /// Packets are sized as if the ATT MTU were at most this (the host itself offers
    /// 1020); 517 leaves the negotiated MTU alone.
    pub max_att_mtu: u16,
    /// The connection interval the phone asks for.
    pub connection_interval: Duration,
    /// The phone's supervision timeout: how long a silent radio link stays up.
    pub supervision_timeout: Duration,
    /// L2CAP: the watch listens on a credit-based channel besides GATT and announces
    /// its PSM; the phone opens the channel a watch announces, and uses GATT when there
    /// is none or the open fails. On by default; off, both use GATT only.
    pub coc: bool,
    /// The LE PSM the watch listens on (dynamic range, 0x0080–0x00FF).
    pub psm: u16,
    /// The largest L2CAP SDU this side takes, at most (and by default) 1018: the host
    /// reassembles an SDU into one buffer of its packet pool.
    pub max_sdu_len: u16,
}

impl HostConfig {
    /// A host on the controller at `hci`, advertising as "interconnect", with a 15 ms
    /// interval and a 2 s supervision timeout.
    pub fn new(hci: SocketAddr) -> Self {
        HostConfig {
            hci,
            name: "interconnect".into(),
            max_att_mtu: 517,
            connection_interval: Duration::from_millis(15),
            supervision_timeout: Duration::from_secs(2),
            coc: true,
            psm: DEFAULT_PSM,
            max_sdu_len: channel::MAX_SDU_LEN,
        }
    }
}

/// One side of a BLE connection on trouble-host: the watch ([`Trouble::peripheral`])
/// or the phone ([`Trouble::central`]).
pub struct Trouble {
    host: HostThread,
    config: BleConfig,
    /// A central of several peripherals: links keep coming while others are up.
    several: bool,
}

impl Trouble {
    /// The watch: connects to the controller, serves the interconnect GATT profile and
    /// advertises the service.
    pub async fn peripheral(host: HostConfig, config: BleConfig) -> Result<Self, TransportError> {
        let host = HostThread::start(Role::Peripheral, host, config.clone()).await?;
        Ok(Trouble {
            host,
            config,
            several: false,
        })
    }

    /// The phone: connects to the controller; each [`Transport::next_link`] scans for
    /// the interconnect service, connects and subscribes.
    pub async fn central(host: HostConfig, config: BleConfig) -> Result<Self, TransportError> {
        let host = HostThread::start(Role::Central(1), host, config.clone()).await?;
        Ok(Trouble {
            host,
            config,
            several: false,
        })
    }

    /// The phone of a hub of several watches: keeps a connection to up to `watches`
    /// watches (at most [`MAX_CONNECTIONS`]) at once, scanning for the next while the
    /// others carry traffic, and connects again to one whose connection ended. Links keep
    /// coming while others are up ([`Transport::accepts_while_linked`]).
    pub async fn central_of_several(
        host: HostConfig,
        config: BleConfig,
        watches: usize,
    ) -> Result<Self, TransportError> {
        let watches = watches.clamp(1, MAX_CONNECTIONS);
        let host = HostThread::start(Role::Central(watches), host, config.clone()).await?;
        Ok(Trouble {
            host,
            config,
            several: true,
        })
    }

    /// The next connection as bare GATT packets or a bare L2CAP channel, without the
    /// framing of [`Carrier::into_link`]: for measuring the stack itself, or another
    /// framing.
    pub async fn next_carrier(&mut self) -> Result<Carrier, TransportError> {
        self.host.next().await
    }

    /// The next connection as a bare GATT packet link; an error when it came over
    /// L2CAP (turn [`HostConfig::coc`] off for GATT).
    pub async fn next_packet_link(&mut self) -> Result<PacketLink, TransportError> {
        match self.host.next().await? {
            Carrier::Gatt(packets) => Ok(packets),
            Carrier::Coc(_) => Err(TransportError::Incompatible(
                "the connection came over L2CAP, not GATT".into(),
            )),
        }
    }
}

#[async_trait]
impl Transport for Trouble {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        Ok(self.host.next().await?.into_link(&self.config))
    }

    fn accepts_while_linked(&self) -> bool {
        self.several
    }

    fn is_reliable(&self) -> bool {
        true
    }
}

#[derive(Clone, Copy, Debug)]
enum Role {
    Peripheral,
    /// A central of this many peripherals at once.
    Central(usize),
}

/// Connections a central keeps at once, at most (the host's tables are sized for them).
pub const MAX_CONNECTIONS: usize = 4;

type Links = mpsc::Sender<Result<Carrier, TransportError>>;

/// A host on its own thread; dropping this stops it.
struct HostThread {
    links: mpsc::Receiver<Result<Carrier, TransportError>>,
    _stop: oneshot::Sender<()>,
}

impl HostThread {
    async fn start(role: Role, host: HostConfig, ble: BleConfig) -> Result<Self, TransportError> {
        let (links_tx, links) = mpsc::channel(1);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready) = oneshot::channel();
        let name = format!("ble-{role:?}").to_lowercase();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(TransportError::Io(e)));
                        return;
                    }
                };
                // The host runs as a task, not as the future `block_on` polls: block_on's
                // waker is built from a vtable that is duplicated across codegen units, so
                // `Waker::will_wake` calls the same waker different, and embassy-sync's
                // waker registrations then wake the host on every poll (it spun at 100%
                // CPU while idle in release builds). A task's waker has one static vtable.
                let local = tokio::task::LocalSet::new();
                let host_task = local.spawn_local(async move {
                    let stream = match TcpStream::connect(host.hci).await {
                        Ok(stream) => stream,
                        Err(e) => {
                            let _ = ready_tx.send(Err(TransportError::Io(e)));
                            return;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let _ = ready_tx.send(Ok(()));
                    let (reader, writer) = stream.into_split();
                    let transport: SerialTransport<NoopRawMutex, _, _> =
                        SerialTransport::new(FromTokio::new(reader), FromTokio::new(writer));
                    let controller: Hci = ExternalController::new(transport);
                    let run = async {
                        match role {
                            Role::Peripheral => {
                                peripheral(controller, &host, &ble, &links_tx).await
                            }
                            Role::Central(max) => {
                                central(controller, &host, &ble, &links_tx, max).await
                            }
                        }
                    };
                    let outcome = tokio::select! {
                        outcome = run => outcome,
                        _ = stop_rx => Ok(()),
                    };
                    if let Err(e) = outcome {
                        tracing::warn!(role = ?role, error = %e, "BLE host stopped");
                        let _ = links_tx
                            .send(Err(TransportError::Stack {
                                stack: "BLE host",
                                source: e.into(),
                            }))
                            .await;
                    }
                });
                let _ = runtime.block_on(local.run_until(host_task));
            })
            .map_err(TransportError::Io)?;
        ready.await.map_err(|_| TransportError::Closed)??;
        Ok(HostThread { links, _stop: stop })
    }

    async fn next(&mut self) -> Result<Carrier, TransportError> {
        self.links
            .recv()
            .await
            .unwrap_or(Err(TransportError::Closed))
    }
}

/// A random static device address (the two top bits set).
fn random_address() -> Address {
    let mut bytes: [u8; 6] = rand::random();
    bytes[5] |= 0xc0;
    Address::random(bytes)
}

fn host_error<E: core::fmt::Debug>(e: E) -> String {
    format!("trouble-host: {e:?}")
}

/// The two bounded queues between a connection's task and the link adapter: the task's
/// ends, and the halves that become the packet link.
fn queues(ble: &BleConfig) -> (Ends, Halves) {
    // The peer sends at most our window of data packets ahead, plus its credit grants.
    let (incoming_tx, incoming) = mpsc::channel(usize::from(ble.window.max(ble.credits)) + 16);
    let (outgoing, outgoing_rx) = mpsc::channel(16);
    (
        Ends {
            incoming: incoming_tx,
            outgoing: outgoing_rx,
        },
        Halves { outgoing, incoming },
    )
}

/// The connection task's ends of a packet link.
struct Ends {
    incoming: mpsc::Sender<Bytes>,
    outgoing: mpsc::Receiver<Bytes>,
}

/// The link adapter's ends, until the connection is usable.
struct Halves {
    outgoing: mpsc::Sender<Bytes>,
    incoming: mpsc::Receiver<Bytes>,
}

impl Halves {
    /// GATT: packets of at most the ATT MTU.
    fn gatt(self, att_mtu: u16, host: &HostConfig) -> Carrier {
        Carrier::Gatt(PacketLink {
            sender: Box::new(Outgoing {
                packets: self.outgoing,
                att_mtu: usize::from(att_mtu.min(host.max_att_mtu)),
            }),
            receiver: Box::new(Incoming {
                packets: self.incoming,
            }),
        })
    }

    /// L2CAP: SDUs of at most the peer's channel MTU.
    fn coc(self, sdu_len: u16, att_mtu: u16) -> Carrier {
        Carrier::Coc(SduLink {
            sender: Box::new(SduOutgoing {
                packets: self.outgoing,
                sdu_len: usize::from(sdu_len),
                att_mtu: usize::from(att_mtu),
            }),
            receiver: Box::new(Incoming {
                packets: self.incoming,
            }),
        })
    }
}

/// Sends with `send` until it goes through, waiting while the host's packet pool is
/// empty (the controller has not taken what was queued yet) rather than dropping the
/// packet. trouble-host offers no way to wait for a free buffer, hence the short sleep.
async fn until_sent<E: core::fmt::Debug>(
    mut send: impl AsyncFnMut() -> Result<(), E>,
    pool_empty: impl Fn(&E) -> bool,
) -> Result<(), E> {
    loop {
        match send().await {
            Err(e) if pool_empty(&e) => tokio::time::sleep(POOL_WAIT).await,
            outcome => return outcome,
        }
    }
}

/// A flag the loops of one connection raise and wait on, on the host's thread: a loop
/// that must not be cancelled halfway through a host operation (see [`channel::pump`])
/// stops at its next waiting point once the flag is up.
#[derive(Default)]
struct Flag {
    up: std::cell::Cell<bool>,
    raised: tokio::sync::Notify,
}

impl Flag {
    fn raise(&self) {
        self.up.set(true);
        self.raised.notify_waiters();
    }

    /// Returns once the flag is up (at once if it is).
    async fn wait(&self) {
        loop {
            let raised = self.raised.notified();
            if self.up.get() {
                return;
            }
            raised.await;
        }
    }
}

/// Ends a connection and waits (a few seconds at most) until it is gone, so the next
/// one can start: each host keeps one connection.
async fn disconnect<P: PacketPool>(conn: &Connection<'_, P>) {
    if !conn.is_connected() {
        return;
    }
    conn.disconnect();
    let gone =
        async { while !matches!(conn.next().await, ConnectionEvent::Disconnected { .. }) {} };
    let _ = tokio::time::timeout(Duration::from_secs(5), gone).await;
}

struct Outgoing {
    packets: mpsc::Sender<Bytes>,
    att_mtu: usize,
}

#[async_trait]
impl PacketSender for Outgoing {
    async fn send_packet(&mut self, packet: Bytes) -> Result<(), TransportError> {
        self.packets
            .send(packet)
            .await
            .map_err(|_| TransportError::Closed)
    }

    fn att_mtu(&self) -> usize {
        self.att_mtu
    }
}

struct SduOutgoing {
    packets: mpsc::Sender<Bytes>,
    sdu_len: usize,
    att_mtu: usize,
}

#[async_trait]
impl SduSender for SduOutgoing {
    async fn send_sdu(&mut self, sdu: Bytes) -> Result<(), TransportError> {
        self.packets
            .send(sdu)
            .await
            .map_err(|_| TransportError::Closed)
    }

    fn sdu_len(&self) -> usize {
        self.sdu_len
    }

    fn radio(&self) -> interconnect::Radio {
        interconnect::Radio::new(self.att_mtu)
    }
}

struct Incoming {
    packets: mpsc::Receiver<Bytes>,
}

#[async_trait]
impl PacketReceiver for Incoming {
    async fn recv_packet(&mut self) -> Result<Option<Bytes>, TransportError> {
        Ok(self.packets.recv().await)
    }
}
