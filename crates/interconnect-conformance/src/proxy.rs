//! A fault proxy for real TCP links: it stands between a dialer and a listener and, from
//! a seed, cuts connections abruptly after a random number of bytes (both sides reset),
//! resets one side only (the other sees silence), stalls (stops forwarding, both sockets
//! left open: a black hole) and delays what it forwards. [`FaultProxy::fault_now`]
//! applies a fault on demand.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;

const MIB: f64 = 1024.0 * 1024.0;

/// What the proxy does to a connection once its byte budget is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Both sides reset at once (SO_LINGER 0), as a process or a NAT dying.
    Cut,
    /// The watch's side is reset; the phone's stays open and silent.
    ResetWatch,
    /// The phone's side is reset; the watch's stays open and silent.
    ResetPhone,
    /// Nothing is forwarded any more; both sockets stay open (a black hole).
    Stall,
}

/// What the proxy does, drawn from its seed.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Bytes forwarded on a connection (both directions) before its fault.
    pub every: Range<u64>,
    /// The faults, one drawn per connection.
    pub faults: Vec<Fault>,
    /// Each forwarded chunk waits up to this long first.
    pub delay: Duration,
}

/// One proxied connection's controls.
struct Conn {
    budget: AtomicI64,
    fault: Mutex<Fault>,
    trip: CancellationToken,
}

#[derive(Default)]
struct Tally {
    connections: AtomicU64,
    /// When each connection was accepted.
    accepted: Mutex<Vec<std::time::Instant>>,
    /// Bytes forwarded from the watch to the phone.
    upstream: AtomicU64,
    faults: Mutex<HashMap<Fault, u64>>,
}

/// Halves of sockets left open (one side of a reset, or both of a stall), held until the
/// proxy is dropped.
type Held = Vec<(OwnedReadHalf, OwnedWriteHalf)>;

/// A running proxy; dropping it ends every connection it holds.
pub struct FaultProxy {
    addr: SocketAddr,
    tally: Arc<Tally>,
    conns: Arc<Mutex<Vec<Arc<Conn>>>>,
    stop: CancellationToken,
    _held: Arc<Mutex<Held>>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FaultProxy {
    /// A proxy to `target` on a free loopback port; with `plan` `None` it forwards
    /// faithfully until [`fault_now`](Self::fault_now).
    pub async fn start(
        target: SocketAddr,
        plan: Option<Plan>,
        seed: u64,
    ) -> std::io::Result<FaultProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tally = Arc::new(Tally::default());
        let conns: Arc<Mutex<Vec<Arc<Conn>>>> = Arc::default();
        let held: Arc<Mutex<Held>> = Arc::default();
        let stop = CancellationToken::new();
        let (t, c, h, s) = (tally.clone(), conns.clone(), held.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            loop {
                let accepted = tokio::select! {
                    () = s.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let Ok(upstream) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                t.connections.fetch_add(1, Ordering::Relaxed);
                t.accepted.lock().unwrap().push(std::time::Instant::now());
                let (budget, fault) = match &plan {
                    Some(plan) => (
                        rng.random_range(plan.every.clone()) as i64,
                        plan.faults[rng.random_range(0..plan.faults.len())],
                    ),
                    None => (i64::MAX, Fault::Cut),
                };
                let delay = plan.as_ref().map_or(Duration::ZERO, |p| p.delay);
                let conn = Arc::new(Conn {
                    budget: AtomicI64::new(budget),
                    fault: Mutex::new(fault),
                    trip: s.child_token(),
                });
                {
                    let mut live = c.lock().unwrap();
                    live.retain(|c| !c.trip.is_cancelled());
                    live.push(conn.clone());
                }
                let seeds = (rng.random(), rng.random());
                tokio::spawn(serve(
                    client,
                    upstream,
                    conn,
                    (t.clone(), h.clone(), s.clone()),
                    delay,
                    seeds,
                ));
            }
        });
        Ok(FaultProxy {
            addr,
            tally,
            conns,
            stop,
            _held: held,
        })
    }

    /// Where dialers connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `fault` to every connection open now.
    pub fn fault_now(&self, fault: Fault) {
        for conn in self.conns.lock().unwrap().iter() {
            *conn.fault.lock().unwrap() = fault;
            conn.trip.cancel();
        }
    }

    /// When each connection so far was accepted, oldest first.
    pub fn accepted(&self) -> Vec<std::time::Instant> {
        self.tally.accepted.lock().unwrap().clone()
    }

    /// Faults applied so far.
    pub fn faults(&self) -> u64 {
        self.tally.faults.lock().unwrap().values().sum()
    }

    /// Connections, faults by kind and bytes forwarded toward the listener.
    pub fn report(&self) -> String {
        format!(
            "{} connections, faults {:?}, {:.1} MiB forwarded to the phone",
            self.tally.connections.load(Ordering::Relaxed),
            self.tally.faults.lock().unwrap(),
            self.tally.upstream.load(Ordering::Relaxed) as f64 / MIB
        )
    }
}

/// Forwards both ways until the budget is spent (or `fault_now`), then applies the fault.
async fn serve(
    client: tokio::net::TcpStream,
    upstream: tokio::net::TcpStream,
    conn: Arc<Conn>,
    (tally, held, stop): (Arc<Tally>, Arc<Mutex<Held>>, CancellationToken),
    delay: Duration,
    seeds: (u64, u64),
) {
    let (client_read, client_write) = client.into_split();
    let (up_read, up_write) = upstream.into_split();
    let up = tokio::spawn(pump(
        client_read,
        up_write,
        conn.clone(),
        Some(tally.clone()),
        delay,
        seeds.0,
    ));
    let down = tokio::spawn(pump(
        up_read,
        client_write,
        conn.clone(),
        None,
        delay,
        seeds.1,
    ));
    let (Ok(Some((client_read, up_write))), Ok(Some((up_read, client_write)))) =
        (up.await, down.await)
    else {
        // A side closed (or failed) by itself: the other pump ended too; all is dropped.
        conn.trip.cancel();
        return;
    };
    if stop.is_cancelled() {
        return;
    }
    let fault = *conn.fault.lock().unwrap();
    *tally.faults.lock().unwrap().entry(fault).or_default() += 1;
    let reset = |write: &OwnedWriteHalf| {
        let _ = socket2::SockRef::from(write.as_ref()).set_linger(Some(Duration::ZERO));
    };
    let mut held = held.lock().unwrap();
    match fault {
        Fault::Cut => {
            reset(&client_write);
            reset(&up_write);
        }
        Fault::ResetWatch => {
            reset(&client_write);
            held.push((up_read, up_write));
        }
        Fault::ResetPhone => {
            reset(&up_write);
            held.push((client_read, client_write));
        }
        Fault::Stall => {
            held.push((client_read, client_write));
            held.push((up_read, up_write));
        }
    }
}

/// Copies `from` to `to` while the connection's budget lasts. Returns the halves when the
/// connection tripped, `None` when a side closed or failed.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    conn: Arc<Conn>,
    count: Option<Arc<Tally>>,
    delay: Duration,
    seed: u64,
) -> Option<(OwnedReadHalf, OwnedWriteHalf)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            () = conn.trip.cancelled() => return Some((from, to)),
            n = from.read(&mut buf) => n,
        };
        let n = match n {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return None;
            }
            Ok(n) => n,
        };
        let before = conn.budget.fetch_sub(n as i64, Ordering::Relaxed);
        let allowed = before.clamp(0, n as i64) as usize;
        if !delay.is_zero() {
            tokio::time::sleep(delay.mul_f64(rng.random::<f64>())).await;
        }
        let wrote = tokio::select! {
            () = conn.trip.cancelled() => return Some((from, to)),
            wrote = to.write_all(&buf[..allowed]) => wrote,
        };
        if wrote.is_err() {
            return None;
        }
        if let Some(tally) = &count {
            tally.upstream.fetch_add(allowed as u64, Ordering::Relaxed);
        }
        if allowed < n || before - n as i64 <= 0 {
            conn.trip.cancel();
            return Some((from, to));
        }
    }
}
