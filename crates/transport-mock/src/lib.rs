//! An in-memory link between a watch and a phone, with seeded, reproducible faults, for
//! tests and benchmarks of everything above the link.
//!
//! [`MockNetwork`] hands out two [`Transport`]s: the dialer (give it to the watch's
//! `Interconnect`) and the listener (give it to the phone's `Hub`). Every link the dialer
//! opens reaches the listener. Each direction of a link runs through a "wire" task that
//! applies the [`Faults`]: latency, bandwidth, loss, duplication, reordering, corruption,
//! stalls and cuts, drawn from an RNG seeded per link and direction, so a run under
//! tokio's paused clock is reproducible from its seed. Links can also be cut on demand
//! ([`MockNetwork::cut`]) or refused ([`MockNetwork::set_reachable`]).
//!
//! The network can also act as the attacker: an [`Interceptor`] set with
//! [`MockNetwork::intercept`] sees every frame first and decides what is delivered in its
//! place (changed, dropped, recorded and replayed, or with forged frames added).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! use interconnect::Transport;
//! use transport_mock::{Faults, MockNetwork};
//!
//! let network = MockNetwork::new(Faults::default());
//! let (mut dialer, mut listener) = network.endpoints();
//! let mut watch = dialer.next_link().await.unwrap();
//! let mut phone = listener.next_link().await.unwrap();
//! watch.sender.send(bytes::Bytes::from_static(b"frame")).await.unwrap();
//! assert_eq!(phone.receiver.recv().await.unwrap().unwrap(), "frame");
//! # });
//! ```
//!
//! It does not model a byte stream: frames stay whole, as on a BLE or message link.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use interconnect::{Link, LinkReceiver, LinkSender, Transport, TransportError};
use interconnect_proto::DEFAULT_MAX_FRAME_LEN;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Frames a link direction buffers before `send` waits.
const BUFFERED_FRAMES: usize = 256;

/// The faults and properties of the simulated link. Probabilities are per frame.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Seeds every random choice.
    pub seed: u64,
    /// One-way delay of every frame.
    pub latency: Duration,
    /// Bytes per second each way; `None` for unlimited.
    pub bandwidth: Option<u64>,
    /// Largest frame the link carries.
    pub max_frame_len: usize,
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// Probability a frame overtakes the one before it.
    pub reorder: f64,
    /// Probability one bit of a frame is flipped.
    pub corrupt: f64,
    /// Probability the direction stalls for `stall_for` before this frame.
    pub stall: f64,
    /// How long a stall lasts.
    pub stall_for: Duration,
    /// Probability the link is cut when a frame is sent.
    pub cut: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            seed: 0,
            latency: Duration::ZERO,
            bandwidth: None,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            corrupt: 0.0,
            stall: 0.0,
            stall_for: Duration::from_secs(1),
            cut: 0.0,
        }
    }
}

/// Which way a frame travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the dialer (watch) to the listener (phone).
    ToPhone,
    /// From the listener (phone) to the dialer (watch).
    ToWatch,
}

/// A man in the middle: given each frame with its direction and link number (from 1),
/// returns the frames to deliver instead, in order. Faults apply to what it returns.
pub type Interceptor = Arc<dyn Fn(Direction, u64, Bytes) -> Vec<Bytes> + Send + Sync>;

struct NetState {
    interceptor: Option<Interceptor>,
    faults: Faults,
    reachable: bool,
    links_made: u64,
    current_cut: Option<watch::Sender<bool>>,
}

/// A simulated network between one watch and one phone.
#[derive(Clone)]
pub struct MockNetwork {
    state: Arc<Mutex<NetState>>,
    accept_tx: mpsc::Sender<Link>,
    accept_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Link>>>,
}

impl MockNetwork {
    /// A network with these faults.
    pub fn new(faults: Faults) -> Self {
        let (accept_tx, accept_rx) = mpsc::channel(4);
        MockNetwork {
            state: Arc::new(Mutex::new(NetState {
                interceptor: None,
                faults,
                reachable: true,
                links_made: 0,
                current_cut: None,
            })),
            accept_tx,
            accept_rx: Arc::new(tokio::sync::Mutex::new(accept_rx)),
        }
    }

    /// Networks of several watches to one phone: each its own link with its own faults
    /// and cuts, and one queue of incoming links, so the listener of any of them (the
    /// phone) accepts the links of all.
    ///
    /// ```
    /// let nets = transport_mock::MockNetwork::several(Default::default(), 3);
    /// let (_first_watch, phone) = nets[0].endpoints();
    /// let (_second_watch, _) = nets[1].endpoints();
    /// # let _ = phone;
    /// ```
    pub fn several(faults: Faults, watches: usize) -> Vec<MockNetwork> {
        let first = MockNetwork::new(faults.clone());
        let mut nets = vec![first.clone()];
        for _ in 1..watches {
            let mut net = MockNetwork::new(faults.clone());
            net.accept_tx = first.accept_tx.clone();
            net.accept_rx = first.accept_rx.clone();
            nets.push(net);
        }
        nets
    }

    /// The dialer (watch) and listener (phone) transports.
    pub fn endpoints(&self) -> (MockDialer, MockListener) {
        (
            MockDialer { net: self.clone() },
            MockListener { net: self.clone() },
        )
    }

    /// Cuts the current link, if any: both sides see it fail.
    pub fn cut(&self) {
        if let Some(cut) = self.lock().current_cut.take() {
            let _ = cut.send(true);
        }
    }

    /// While unreachable, the dialer's attempts fail.
    pub fn set_reachable(&self, reachable: bool) {
        self.lock().reachable = reachable;
    }

    /// Replaces the faults, for frames sent from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Puts an attacker on the wire (`None` removes it), for frames sent from now on.
    pub fn intercept(&self, interceptor: Option<Interceptor>) {
        self.lock().interceptor = interceptor;
    }

    /// How many links the dialer has opened.
    pub fn links_made(&self) -> u64 {
        self.lock().links_made
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open_link(&self) -> Result<(Link, Link), TransportError> {
        let mut state = self.lock();
        if !state.reachable {
            return Err(TransportError::Refused("network unreachable".into()));
        }
        state.links_made += 1;
        let number = state.links_made;
        if let Some(old) = state.current_cut.take() {
            let _ = old.send(true);
        }
        let (cut_tx, cut_rx) = watch::channel(false);
        state.current_cut = Some(cut_tx);
        let max = state.faults.max_frame_len;
        drop(state);
        let (watch_sender, phone_receiver) = self.pipe(number, Direction::ToPhone, cut_rx.clone());
        let (phone_sender, watch_receiver) = self.pipe(number, Direction::ToWatch, cut_rx);
        Ok((
            Link {
                sender: Box::new(watch_sender),
                receiver: Box::new(watch_receiver),
                max_frame_len: max,
                source: None,
            },
            Link {
                sender: Box::new(phone_sender),
                receiver: Box::new(phone_receiver),
                max_frame_len: max,
                source: None,
            },
        ))
    }

    fn pipe(
        &self,
        link: u64,
        direction: Direction,
        cut: watch::Receiver<bool>,
    ) -> (MockSender, MockReceiver) {
        let (in_tx, in_rx) = mpsc::channel(BUFFERED_FRAMES);
        let (out_tx, out_rx) = mpsc::channel(BUFFERED_FRAMES);
        let stream = link * 2 + u64::from(direction == Direction::ToWatch);
        let seed = self.lock().faults.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let wire = Wire {
            link,
            direction,
            net: self.clone(),
            rng: StdRng::seed_from_u64(seed),
            queue: VecDeque::new(),
            busy_until: Instant::now(),
        };
        tokio::spawn(wire.run(in_rx, out_tx, cut.clone()));
        let max = self.lock().faults.max_frame_len;
        (
            MockSender {
                tx: in_tx,
                cut: cut.clone(),
                max,
            },
            MockReceiver { rx: out_rx, cut },
        )
    }
}

/// One direction of a link: applies the faults and delivers frames when they are due.
struct Wire {
    link: u64,
    direction: Direction,
    net: MockNetwork,
    rng: StdRng,
    queue: VecDeque<(Instant, Bytes)>,
    busy_until: Instant,
}

impl Wire {
    async fn run(
        mut self,
        mut input: mpsc::Receiver<Bytes>,
        output: mpsc::Sender<Bytes>,
        mut cut: watch::Receiver<bool>,
    ) {
        let mut input_open = true;
        loop {
            // Deliver what is due without a timer: a zero-length sleep would still wait
            // for the timer wheel's next tick.
            let now = Instant::now();
            while self.queue.front().is_some_and(|(due, _)| *due <= now) {
                if let Some((_, frame)) = self.queue.pop_front()
                    && output.send(frame).await.is_err()
                {
                    return;
                }
            }
            if !input_open && self.queue.is_empty() {
                return;
            }
            let due = self.queue.front().map(|(t, _)| *t);
            tokio::select! {
                biased;
                _ = cut.changed() => return,
                () = sleep_until(due) => {}
                frame = input.recv(), if input_open => match frame {
                    Some(frame) => {
                        let interceptor = self.net.lock().interceptor.clone();
                        let frames = match interceptor {
                            Some(intercept) => intercept(self.direction, self.link, frame),
                            None => vec![frame],
                        };
                        for frame in frames {
                            if !self.admit(frame) {
                                return;
                            }
                        }
                    }
                    None => input_open = false,
                },
            }
        }
    }

    /// Applies the faults to one frame; `false` when it cut the link.
    fn admit(&mut self, mut frame: Bytes) -> bool {
        let faults = self.net.lock().faults.clone();
        if self.rng.random_bool(faults.cut.clamp(0.0, 1.0)) {
            tracing::debug!("mock link cut");
            self.net.cut();
            return false;
        }
        if self.rng.random_bool(faults.loss.clamp(0.0, 1.0)) {
            return true;
        }
        if !frame.is_empty() && self.rng.random_bool(faults.corrupt.clamp(0.0, 1.0)) {
            let mut bytes = frame.to_vec();
            let bit = self.rng.random_range(0..bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            frame = Bytes::from(bytes);
        }
        let now = Instant::now();
        let mut start = self.busy_until.max(now);
        if self.rng.random_bool(faults.stall.clamp(0.0, 1.0)) {
            start += faults.stall_for;
        }
        let transmit = match faults.bandwidth {
            Some(bps) if bps > 0 => Duration::from_secs_f64(frame.len() as f64 / bps as f64),
            _ => Duration::ZERO,
        };
        self.busy_until = start + transmit;
        let due = self.busy_until + faults.latency;
        let copies = if self.rng.random_bool(faults.duplicate.clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if !self.queue.is_empty() && self.rng.random_bool(faults.reorder.clamp(0.0, 1.0)) {
                let at = self.queue.len() - 1;
                let before = self.queue[at].0;
                self.queue.insert(at, (before, frame.clone()));
            } else {
                self.queue.push_back((due, frame.clone()));
            }
        }
        true
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// The watch side of a [`MockNetwork`]: each `next_link` opens a new link.
pub struct MockDialer {
    net: MockNetwork,
}

#[async_trait]
impl Transport for MockDialer {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        let (watch_end, phone_end) = self.net.open_link()?;
        self.net
            .accept_tx
            .send(phone_end)
            .await
            .map_err(|_| TransportError::Closed)?;
        Ok(watch_end)
    }
}

/// The phone side of a [`MockNetwork`]: `next_link` waits for the dialer's next link.
pub struct MockListener {
    net: MockNetwork,
}

#[async_trait]
impl Transport for MockListener {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        let mut accept = self.net.accept_rx.lock().await;
        accept.recv().await.ok_or(TransportError::Closed)
    }

    fn accepts_while_linked(&self) -> bool {
        true
    }
}

struct MockSender {
    tx: mpsc::Sender<Bytes>,
    cut: watch::Receiver<bool>,
    max: usize,
}

#[async_trait]
impl LinkSender for MockSender {
    async fn send(&mut self, frame: Bytes) -> Result<(), TransportError> {
        if *self.cut.borrow() {
            return Err(TransportError::Closed);
        }
        if frame.len() > self.max {
            return Err(TransportError::TooLarge {
                len: frame.len(),
                max: self.max,
            });
        }
        self.tx
            .send(frame)
            .await
            .map_err(|_| TransportError::Closed)
    }
}

struct MockReceiver {
    rx: mpsc::Receiver<Bytes>,
    cut: watch::Receiver<bool>,
}

#[async_trait]
impl LinkReceiver for MockReceiver {
    async fn recv(&mut self) -> Result<Option<BytesMut>, TransportError> {
        if *self.cut.borrow() {
            return Err(TransportError::Closed);
        }
        tokio::select! {
            biased;
            _ = self.cut.changed() => Err(TransportError::Closed),
            frame = self.rx.recv() => match frame {
                Some(frame) => Ok(Some(BytesMut::from(frame))),
                None => Err(TransportError::Closed),
            },
        }
    }
}
