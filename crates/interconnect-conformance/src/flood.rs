//! A connection flood against a phone's TCP listener, and a proxy that puts a watch a
//! fixed distance away.
//!
//! [`Flood`] opens connections from other loopback addresses (127.0.0.2 and up) at two
//! rates: connections that send nothing, and connections that send a valid first
//! handshake step (a fresh key each) and then stall. Each holds its socket until the
//! phone closes it. [`DelayProxy`] forwards a watch's connection with a fixed delay each
//! way: on bare loopback a handshake takes about a millisecond, which hides the race a
//! watch some distance away runs against the flood.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use interconnect::sans_io::Session;
use interconnect::{DeviceIdentity, IdentityFile, NoiseConfig, Security, SessionConfig};
use interconnect_proto::{DEFAULT_MAX_FRAME_LEN, DeviceId, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards every connection to `target` with a fixed delay in each direction.
pub struct DelayProxy {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl DelayProxy {
    /// A proxy on a free port of 127.0.0.1.
    pub async fn start(target: SocketAddr, delay: Duration) -> std::io::Result<DelayProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = s.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let s = s.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (ur, uw) = upstream.into_split();
                    tokio::select! {
                        () = s.cancelled() => {}
                        () = delayed(cr, uw, delay) => {}
                        () = delayed(ur, cw, delay) => {}
                    }
                });
            }
        });
        Ok(DelayProxy { addr, stop })
    }

    /// Where the watch dials.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read (in order).
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                return;
            }
        }
    };
    // The writer finishes what the reader queued before the stream ends.
    tokio::join!(reader, writer);
}

/// What a flood did so far.
#[derive(Debug, Default)]
pub struct FloodTally {
    /// Connections opened.
    pub opened: AtomicU64,
    /// Connections the phone closed.
    pub closed: AtomicU64,
    /// Connect attempts that failed.
    pub failed: AtomicU64,
}

/// Strangers connecting to a phone at fixed rates, from addresses other than the
/// watch's; dropping it closes every connection it holds.
pub struct Flood {
    tally: Arc<FloodTally>,
    stop: CancellationToken,
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The sources a flood connects from: 127.0.0.2 to 127.0.0.9.
pub fn stranger_sources() -> Vec<IpAddr> {
    (2..=9).map(|i| IpAddr::from([127, 0, 0, i])).collect()
}

impl Flood {
    /// Starts `silent` connections a second that send nothing and `stalled` a second
    /// that send a valid first handshake step and then nothing, round-robin over
    /// `sources`. Each connection lasts until the phone closes it (or `hold` passed).
    pub fn start(
        target: SocketAddr,
        silent: u32,
        stalled: u32,
        sources: Vec<IpAddr>,
        hold: Duration,
    ) -> Flood {
        let tally = Arc::new(FloodTally::default());
        let stop = CancellationToken::new();
        for (rate, send_step) in [(silent, false), (stalled, true)] {
            if rate == 0 {
                continue;
            }
            let (tally, stop, sources) = (tally.clone(), stop.clone(), sources.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for n in 0usize.. {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let source = sources[n % sources.len()];
                    let (tally, stop) = (tally.clone(), stop.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            () = stop.cancelled() => {}
                            () = tokio::time::sleep(hold) => {}
                            () = stranger(target, source, send_step, &tally) => {}
                        }
                    });
                }
            });
        }
        Flood { tally, stop }
    }

    /// `count` strangers, round-robin over `sources`, each connecting again the moment
    /// its connection ends: the ones that send a first handshake step if `send_step`,
    /// else silent ones.
    pub fn reconnecting(
        target: SocketAddr,
        count: usize,
        send_step: bool,
        sources: Vec<IpAddr>,
    ) -> Flood {
        let tally = Arc::new(FloodTally::default());
        let stop = CancellationToken::new();
        for n in 0..count {
            let source = sources[n % sources.len()];
            let (tally, stop) = (tally.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = stranger(target, source, send_step, &tally) => {}
                    }
                    if tally.failed.load(Ordering::Relaxed) > 0 {
                        // The listener refused outright (the port closed): pause a little.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            });
        }
        Flood { tally, stop }
    }

    /// What it did so far (shared: it keeps counting).
    pub fn tally(&self) -> Arc<FloodTally> {
        self.tally.clone()
    }
}

/// One stranger's connection: connects from `source`, maybe sends a first handshake
/// step, then waits for the phone to close it.
async fn stranger(target: SocketAddr, source: IpAddr, send_step: bool, tally: &FloodTally) {
    let connect = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        socket.connect(target).await
    };
    let Ok(mut stream) = connect.await else {
        tally.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    tally.opened.fetch_add(1, Ordering::Relaxed);
    if send_step && stream.write_all(&first_step()).await.is_err() {
        return;
    }
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
    tally.closed.fetch_add(1, Ordering::Relaxed);
}

/// A valid first step of the Noise handshake from a fresh key, as a watch sends it.
pub fn first_step() -> Vec<u8> {
    let security = Security::Noise(NoiseConfig::new(DeviceIdentity::generate()));
    let mut session = Session::new(
        SessionConfig::new(Role::Watch, DeviceId([0xEE; 16]), 1, security),
        [0x51; 32],
    );
    let now = interconnect::sans_io::Instant::ZERO;
    session.link_up(now, DEFAULT_MAX_FRAME_LEN);
    session
        .poll_transmit(now)
        .map(|frame| frame.to_vec())
        .unwrap_or_default()
}

/// A watch process frozen while its link is up, as one stopped with SIGSTOP: an
/// [`Interconnect`](interconnect::Interconnect) on a runtime of its own thread,
/// blocked once connected until this value is dropped (its socket stays open and
/// nothing is read or written).
pub struct FrozenWatch {
    thaw: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FrozenWatch {
    /// Connects a watch with `config` to the phone over `transport` (a dialer), opens
    /// `package`, waits until its link is up (10 s at most), then freezes it.
    pub fn start(
        transport: impl interconnect::Transport,
        config: interconnect::Config,
        package: &str,
    ) -> std::io::Result<FrozenWatch> {
        let (up_tx, up_rx) = std::sync::mpsc::channel();
        let (thaw, thawed) = std::sync::mpsc::channel::<()>();
        let package = package.to_string();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let watch = interconnect::Interconnect::new(transport, config);
                let _conn = watch.instance(&package, None);
                watch.connected().await;
                let _ = up_tx.send(());
                // Frozen: this runtime runs nothing until thawed.
                let _ = thawed.recv();
            });
        });
        up_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| std::io::Error::other("the watch to freeze did not connect"))?;
        Ok(FrozenWatch {
            thaw: Some(thaw),
            thread: Some(thread),
        })
    }
}

impl Drop for FrozenWatch {
    fn drop(&mut self) {
        drop(self.thaw.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
