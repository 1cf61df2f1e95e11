//! A simulated BLE connection on virtual time, and the payload capacity of a real one.
//!
//! ## Capacity
//! [`goodput_bps`] estimates the application payload one direction carries, for given
//! link parameters, from the air time of link-layer data PDUs (Bluetooth Core 5.x, Vol 6,
//! Part B, 2.1 and 4.5): each PDU is sent, the peer answers with an empty PDU, and each
//! transmission is followed by the inter-frame space T_IFS = 150 µs:
//!
//! ```text
//! pdu_time   = air(header + payload) + T_IFS + air(empty) + T_IFS
//! air(n)     = 8 · (preamble + 4 access address + 2 header + n + 3 CRC) / PHY rate
//! pdus/event = min(packets_per_event, ⌊connection interval / pdu_time⌋)
//! goodput    = pdus/event · LL payload / interval
//!              · ATT payload / (ATT payload + 4 L2CAP + 3 ATT)   (per packet)
//!              · (ATT payload − 1) / ATT payload                 (our packet header)
//! ```
//!
//! where the ATT payload is [`fill_len`] of the MTU (packets
//! fill whole 251-byte PDUs: 495 bytes at MTU 517), with LL payload 27 bytes without data
//! length extension and 251 with it, preamble 1
//! byte on 1M and 2 on 2M, and the coded PHY (S=8) at 125 kbit/s with its 80 µs preamble
//! and 256 µs of coding overhead folded into a fixed per-PDU cost. For ATT MTU 247: 1M PHY
//! with DLE ≈ 0.79 Mbit/s, 2M PHY with DLE ≈ 1.4 Mbit/s, matching measured figures
//! published for current phones.
//!
//! ## The simulation
//! [`SimNetwork`] connects a peripheral (the watch, which advertises and accepts) and a
//! central (the phone, which connects). Each direction delivers packets one at a time at
//! the rate above (each ATT packet takes as many PDU slots as its L2CAP PDU needs), half a
//! connection interval late on average. A cut (on demand, or none while unreachable) is
//! noticed by both sides after the supervision timeout, as on a real radio.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use interconnect::{Link, Transport, TransportError};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::link::{BleConfig, PacketLink, PacketReceiver, PacketSender, into_link};
use crate::packet::{ATT_HEADER_LEN, PACKET_HEADER_LEN, fill_len, packet_len};

/// The radio's physical layer (the one `interconnect::LinkLimits` reports).
pub use interconnect::Phy;

/// Parameters of a BLE connection.
#[derive(Clone, Copy, Debug)]
pub struct BleParams {
    /// Negotiated ATT MTU (23 to 517).
    pub att_mtu: usize,
    /// Data length extension (LL payload 251 instead of 27 bytes).
    pub dle: bool,
    /// The PHY.
    pub phy: Phy,
    /// Connection interval (7.5 ms to 4 s).
    pub conn_interval: Duration,
    /// Most data PDUs the controllers exchange in one connection event.
    pub packets_per_event: u32,
    /// How long a silent link takes to be declared lost.
    pub supervision_timeout: Duration,
}

impl BleParams {
    /// A modern phone and watch: 2M PHY, DLE, MTU 247, 15 ms interval, events as long
    /// as the interval allows (up to 16 PDUs).
    pub fn modern() -> Self {
        BleParams {
            att_mtu: 247,
            dle: true,
            phy: Phy::M2,
            conn_interval: Duration::from_millis(15),
            packets_per_event: 16,
            supervision_timeout: Duration::from_secs(2),
        }
    }

    /// An old pairing: 1M PHY, no DLE, the minimum MTU of 23.
    pub fn legacy() -> Self {
        BleParams {
            att_mtu: 23,
            dle: false,
            phy: Phy::M1,
            conn_interval: Duration::from_millis(30),
            packets_per_event: 4,
            supervision_timeout: Duration::from_secs(4),
        }
    }

    fn ll_payload(&self) -> usize {
        if self.dle { 251 } else { 27 }
    }

    /// Air time of a PDU with `payload` bytes, in seconds.
    fn air(&self, payload: usize) -> f64 {
        match self.phy {
            Phy::M1 => 8.0 * (1 + 4 + 2 + payload + 3) as f64 / 1e6,
            Phy::M2 => 8.0 * (2 + 4 + 2 + payload + 3) as f64 / 2e6,
            Phy::Coded => 336e-6 + 8.0 * (2 + payload + 3) as f64 / 125e3,
        }
    }

    /// Time one data PDU slot takes, in seconds, given the per-event limit.
    fn pdu_slot(&self) -> f64 {
        let t_ifs = 150e-6;
        let exchange = self.air(self.ll_payload()) + t_ifs + self.air(0) + t_ifs;
        let interval = self.conn_interval.as_secs_f64();
        let per_event = (interval / exchange)
            .floor()
            .clamp(1.0, f64::from(self.packets_per_event.max(1)));
        interval / per_event
    }

    /// PDUs an ATT packet of `len` bytes occupies.
    fn pdus(&self, len: usize) -> usize {
        (len + ATT_HEADER_LEN + 4).div_ceil(self.ll_payload())
    }
}

/// Application payload a connection carries one way, in bits per second (see the
/// module docs for the formula).
pub fn goodput_bps(params: &BleParams) -> f64 {
    let packet = fill_len(params.att_mtu);
    let seconds = params.pdus(packet) as f64 * params.pdu_slot();
    8.0 * (packet - PACKET_HEADER_LEN) as f64 / seconds
}

struct NetState {
    params: BleParams,
    reachable: bool,
    links_made: u64,
    current_cut: Option<watch::Sender<bool>>,
}

/// A simulated BLE connection between one watch (peripheral) and one phone (central).
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<NetState>>,
    accept_tx: mpsc::Sender<PacketLink>,
    accept_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<PacketLink>>>,
    config: BleConfig,
}

impl SimNetwork {
    /// A radio with these parameters, framing with `config`.
    pub fn new(params: BleParams, config: BleConfig) -> Self {
        let (accept_tx, accept_rx) = mpsc::channel(4);
        SimNetwork {
            state: Arc::new(Mutex::new(NetState {
                params,
                reachable: true,
                links_made: 0,
                current_cut: None,
            })),
            accept_tx,
            accept_rx: Arc::new(tokio::sync::Mutex::new(accept_rx)),
            config,
        }
    }

    /// The watch's transport (peripheral: accepts) and the phone's (central: connects).
    pub fn endpoints(&self) -> (SimPeripheral, SimCentral) {
        (
            SimPeripheral { net: self.clone() },
            SimCentral { net: self.clone() },
        )
    }

    /// Loses the current connection; both sides notice after the supervision timeout.
    pub fn cut(&self) {
        if let Some(cut) = self.lock().current_cut.take() {
            let _ = cut.send(true);
        }
    }

    /// While unreachable, the central's connection attempts fail.
    pub fn set_reachable(&self, reachable: bool) {
        self.lock().reachable = reachable;
    }

    /// Several watches (peripherals), each on a simulated connection of its own, and one
    /// phone (central) that keeps a connection to each: the networks (take each watch's
    /// transport with [`endpoints`](Self::endpoints)`.0`, cut or silence one with
    /// [`cut`](Self::cut) and [`set_reachable`](Self::set_reachable)) and the central.
    ///
    /// ```
    /// use transport_ble::{BleConfig, BleParams, SimNetwork};
    ///
    /// let (nets, central) = SimNetwork::several(BleParams::modern(), BleConfig::default(), 2);
    /// let (first_watch, _) = nets[0].endpoints();
    /// # let _ = (first_watch, central);
    /// ```
    pub fn several(
        params: BleParams,
        config: BleConfig,
        watches: usize,
    ) -> (Vec<SimNetwork>, SimCentrals) {
        let nets: Vec<SimNetwork> = (0..watches)
            .map(|_| SimNetwork::new(params, config.clone()))
            .collect();
        let central = SimCentrals {
            live: nets.iter().map(|_| std::sync::Weak::new()).collect(),
            nets: nets.clone(),
        };
        (nets, central)
    }

    /// Connections made so far.
    pub fn links_made(&self) -> u64 {
        self.lock().links_made
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection; the central's end holds `alive` until both its halves are gone.
    fn connect(&self, alive: Arc<()>) -> Result<(PacketLink, PacketLink), TransportError> {
        let mut state = self.lock();
        if !state.reachable {
            return Err(TransportError::Refused("no peripheral in range".into()));
        }
        state.links_made += 1;
        if let Some(old) = state.current_cut.take() {
            let _ = old.send(true);
        }
        let (cut_tx, cut_rx) = watch::channel(false);
        state.current_cut = Some(cut_tx);
        let params = state.params;
        drop(state);
        let (mut central_tx, peripheral_rx) = pipe(params, cut_rx.clone());
        let (peripheral_tx, mut central_rx) = pipe(params, cut_rx);
        central_tx.alive = Some(alive.clone());
        central_rx.alive = Some(alive);
        Ok((
            PacketLink {
                sender: Box::new(peripheral_tx),
                receiver: Box::new(peripheral_rx),
            },
            PacketLink {
                sender: Box::new(central_tx),
                receiver: Box::new(central_rx),
            },
        ))
    }
}

/// One direction of the radio.
fn pipe(params: BleParams, cut: watch::Receiver<bool>) -> (SimSender, SimReceiver) {
    let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(64);
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(64);
    let slot = Duration::from_secs_f64(params.pdu_slot());
    let latency = params.conn_interval / 2;
    tokio::spawn(async move {
        let mut queue: VecDeque<(Instant, Bytes)> = VecDeque::new();
        let mut busy_until = Instant::now();
        let mut input_open = true;
        loop {
            let now = Instant::now();
            while queue.front().is_some_and(|(due, _)| *due <= now) {
                if let Some((_, packet)) = queue.pop_front()
                    && out_tx.send(packet).await.is_err()
                {
                    return;
                }
            }
            if !input_open && queue.is_empty() {
                return;
            }
            let due = queue.front().map(|(t, _)| *t);
            tokio::select! {
                () = async {
                    match due {
                        Some(due) => tokio::time::sleep_until(due).await,
                        None => std::future::pending().await,
                    }
                } => {}
                packet = in_rx.recv(), if input_open => match packet {
                    Some(packet) => {
                        let start = busy_until.max(Instant::now());
                        busy_until = start + slot * params.pdus(packet.len()) as u32;
                        queue.push_back((busy_until + latency, packet));
                    }
                    None => input_open = false,
                },
            }
        }
    });
    (
        SimSender {
            tx: in_tx,
            cut: cut.clone(),
            params,
            alive: None,
        },
        SimReceiver {
            rx: out_rx,
            cut,
            supervision: params.supervision_timeout,
            alive: None,
        },
    )
}

struct SimSender {
    tx: mpsc::Sender<Bytes>,
    cut: watch::Receiver<bool>,
    params: BleParams,
    /// Held by a central's end: it tells the central the connection is still in use.
    alive: Option<Arc<()>>,
}

#[async_trait]
impl PacketSender for SimSender {
    async fn send_packet(&mut self, packet: Bytes) -> Result<(), TransportError> {
        if *self.cut.borrow() {
            return Err(TransportError::Closed);
        }
        let max = packet_len(self.params.att_mtu);
        if packet.len() > max {
            return Err(TransportError::TooLarge {
                len: packet.len(),
                max,
            });
        }
        self.tx
            .send(packet)
            .await
            .map_err(|_| TransportError::Closed)
    }

    fn att_mtu(&self) -> usize {
        self.params.att_mtu
    }

    fn radio(&self) -> interconnect::Radio {
        let mut radio = interconnect::Radio::new(self.params.att_mtu);
        radio.phy = Some(self.params.phy);
        radio.connection_interval = Some(self.params.conn_interval);
        radio
    }
}

struct SimReceiver {
    rx: mpsc::Receiver<Bytes>,
    cut: watch::Receiver<bool>,
    supervision: Duration,
    /// As `SimSender::alive`.
    alive: Option<Arc<()>>,
}

#[async_trait]
impl PacketReceiver for SimReceiver {
    async fn recv_packet(&mut self) -> Result<Option<Bytes>, TransportError> {
        if !*self.cut.borrow() {
            tokio::select! {
                biased;
                _ = self.cut.changed() => {}
                packet = self.rx.recv() => return packet.map(Some).ok_or(TransportError::Closed),
            }
        }
        // The radio went silent: the controller notices after the supervision timeout.
        tokio::time::sleep(self.supervision).await;
        Err(TransportError::Lost(
            "supervision timeout: the radio went silent".into(),
        ))
    }
}

/// The watch's side of a [`SimNetwork`]: advertises and accepts the phone's connection.
pub struct SimPeripheral {
    net: SimNetwork,
}

#[async_trait]
impl Transport for SimPeripheral {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        let packets = {
            let mut accept = self.net.accept_rx.lock().await;
            accept.recv().await.ok_or(TransportError::Closed)?
        };
        Ok(into_link(packets, &self.net.config))
    }

    fn is_reliable(&self) -> bool {
        true
    }
}

/// The phone's side of a [`SimNetwork`]: connects to the watch.
pub struct SimCentral {
    net: SimNetwork,
}

#[async_trait]
impl Transport for SimCentral {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        let (peripheral, central) = self.net.connect(Arc::new(()))?;
        self.net
            .accept_tx
            .send(peripheral)
            .await
            .map_err(|_| TransportError::Closed)?;
        Ok(into_link(central, &self.net.config))
    }

    fn is_reliable(&self) -> bool {
        true
    }
}

/// The phone's side of [`SimNetwork::several`]: a central that keeps a connection to every
/// watch in range, connecting again to one whose connection ended. Links keep coming while
/// others are up ([`Transport::accepts_while_linked`]), as a hub of several watches needs.
pub struct SimCentrals {
    nets: Vec<SimNetwork>,
    /// Each watch's current connection, while its link is in use.
    live: Vec<std::sync::Weak<()>>,
}

/// How often the central looks again for a watch to connect to, when every one is
/// connected or out of range.
const RESCAN: Duration = Duration::from_millis(100);

#[async_trait]
impl Transport for SimCentrals {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        loop {
            for (i, net) in self.nets.iter().enumerate() {
                if self.live[i].strong_count() > 0 {
                    continue;
                }
                let alive = Arc::new(());
                let Ok((peripheral, central)) = net.connect(alive.clone()) else {
                    continue; // out of range
                };
                net.accept_tx
                    .send(peripheral)
                    .await
                    .map_err(|_| TransportError::Closed)?;
                self.live[i] = Arc::downgrade(&alive);
                return Ok(into_link(central, &net.config));
            }
            tokio::time::sleep(RESCAN).await;
        }
    }

    fn accepts_while_linked(&self) -> bool {
        true
    }

    fn is_reliable(&self) -> bool {
        true
    }
}
