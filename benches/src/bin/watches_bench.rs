//! A hub of several watches over TCP loopback, each figure against one watch alone in
//! the same run (defaults: encrypted, acknowledged once the app took a message):
//! - total pipelined 64-byte messages per second, `W` watches sending `N` each at once,
//!   against one watch sending `N`;
//! - total file throughput, `W` watches sending a file of `M` MiB each at once, against
//!   one watch sending `W × M` MiB (defaults: encrypted, files stored on the phone);
//! - a watch's round trip (a send awaited until the phone app took it), p50 and p99,
//!   while another watch's link is stalled (a proxy that forwards nothing more, the
//!   phone app sending to it), against the same watch with no other;
//! - the hub's resident memory per connected watch: the hub runs in a child process,
//!   its `VmRSS` read before and after `W` watches connected and opened a channel.
//!
//! `cargo run --release -p interconnect-benches --bin watches_bench [W] [N] [runs] [M]`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use interconnect::{Config, Connection, ConnectionEvent, Hub, Interconnect, Watches};
use interconnect_benches::tcp::{BoxError, median, on_own_thread};
use interconnect_conformance::proxy::{Fault, FaultProxy};
use interconnect_proto::{ContentType, DeviceId};
use tokio::sync::oneshot;

const PAYLOAD: usize = 64;
const PKG: &str = "bench";
const ROUND_TRIPS: usize = 2_000;

/// A hub of up to `max` watches, open to new ones.
fn hub(listener: transport_tcp::TcpListener, max: usize) -> Hub {
    let mut config = Config::in_memory(DeviceId([200; 16]));
    config.max_watches = max;
    let hub = Hub::new(listener, config);
    hub.admit_new_watches(Duration::from_secs(3600))
        .expect("a hub of several");
    hub
}

/// A phone on its own thread whose app takes every message of every watch, and says
/// when `total` arrived; its address.
async fn counting_phone(
    max: usize,
    total: usize,
) -> Result<(std::net::SocketAddr, oneshot::Receiver<Instant>), BoxError> {
    let (addr_tx, addr_rx) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    let _phone = on_own_thread(move || async move {
        let listener = transport_tcp::TcpListener::bind("127.0.0.1:0").await?;
        let _ = addr_tx.send(listener.local_addr());
        let hub = hub(listener, max);
        let watches = hub.register_watches(PKG, 1, None).await?;
        take_all(watches, total, done_tx).await;
        drop(hub);
        Ok::<_, BoxError>(())
    });
    Ok((addr_rx.await?, done))
}

/// Takes every message from every watch; says when `total` arrived.
async fn take_all(mut watches: Watches, total: usize, done: oneshot::Sender<Instant>) {
    let (count_tx, mut count_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let counting = async {
        let mut got = 0;
        while count_rx.recv().await.is_some() {
            got += 1;
            if got == total {
                let _ = done.send(Instant::now());
                break;
            }
        }
    };
    let accepting = async {
        while let Some(watch) = watches.next().await {
            let count = count_tx.clone();
            tokio::spawn(async move {
                let mut events = watch.connection.events().expect("new");
                while let Some(event) = events.next().await {
                    if let ConnectionEvent::Message(_) = event {
                        let _ = count.send(());
                    }
                }
            });
        }
    };
    tokio::select! {
        () = counting => {}
        () = accepting => {}
    }
}

/// `watches` watches connected to `addr`, each with its channel open.
async fn connect(
    addr: std::net::SocketAddr,
    watches: usize,
) -> Result<Vec<(Interconnect, Connection)>, BoxError> {
    let mut ends = Vec::new();
    for i in 0..watches {
        let id = DeviceId((i as u128 + 1).to_be_bytes());
        let watch = Interconnect::new(transport_tcp::TcpDialer::new(addr), Config::in_memory(id));
        let conn = watch.instance(PKG, None);
        ends.push((watch, conn));
    }
    for (_, conn) in &ends {
        if !conn.diagnosis(Some(Duration::from_secs(30))).await.is_ok() {
            return Err("a channel did not open".into());
        }
    }
    Ok(ends)
}

/// Messages per second: `watches` watches each sending `n` pipelined at once.
async fn throughput(watches: usize, n: usize) -> Result<f64, BoxError> {
    let (addr, done) = counting_phone(watches.max(2), watches * n).await?;
    let ends = connect(addr, watches).await?;
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let start = Instant::now();
    let sends: Vec<_> = ends
        .iter()
        .flat_map(|(_, conn)| {
            let payload = payload.clone();
            (0..n).map(move |_| conn.send_bytes(ContentType::Binary, payload.clone()))
        })
        .collect();
    for send in sends {
        send.await?;
    }
    let end = done.await?;
    Ok((watches * n) as f64 / (end.max(Instant::now()) - start).as_secs_f64())
}

/// Bytes per second of files: `watches` watches each sending `mib` MiB at once, until the
/// phone stored every one.
async fn file_throughput(watches: usize, mib: usize) -> Result<f64, BoxError> {
    let scratch = interconnect_benches::process::scratch_dir()?;
    let (addr_tx, addr_rx) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    let received = scratch.path().join("received");
    let _phone = on_own_thread(move || async move {
        let listener = transport_tcp::TcpListener::bind("127.0.0.1:0").await?;
        let _ = addr_tx.send(listener.local_addr());
        let mut config = Config::in_memory(DeviceId([200; 16]));
        config.max_watches = watches.max(2);
        config.files = Some(interconnect::FilesConfig::new(received));
        let hub = Hub::new(listener, config);
        hub.admit_new_watches(Duration::from_secs(3600))?;
        let mut registered = hub.register_watches(PKG, 1, None).await?;
        let (stored_tx, mut stored) = tokio::sync::mpsc::unbounded_channel::<()>();
        let counting = async {
            for _ in 0..watches {
                stored.recv().await;
            }
            let _ = done_tx.send(Instant::now());
        };
        let accepting = async {
            while let Some(watch) = registered.next().await {
                let stored = stored_tx.clone();
                tokio::spawn(async move {
                    let mut events = watch.connection.events().expect("new");
                    while let Some(event) = events.next().await {
                        if let ConnectionEvent::File { .. } = event {
                            let _ = stored.send(());
                        }
                    }
                });
            }
        };
        tokio::select! {
            () = counting => {}
            () = accepting => {}
        }
        drop(hub);
        Ok::<_, BoxError>(())
    });
    let addr = addr_rx.await?;
    let source = scratch.path().join("source.bin");
    interconnect_benches::tcp::source_file(&source, mib).await?;
    let ends = connect(addr, watches).await?;
    let start = Instant::now();
    let sends: Vec<_> = ends
        .iter()
        .map(|(_, conn)| conn.send_file(&source))
        .collect();
    for send in sends {
        send.await?;
    }
    let end = done.await?;
    Ok((watches * mib) as f64 * (1 << 20) as f64 / (end.max(Instant::now()) - start).as_secs_f64())
}

/// Round trips of one watch (microseconds), alone or beside a watch whose link stalls
/// while the phone app sends to it.
async fn round_trips(stalled_neighbour: bool) -> Result<Vec<f64>, BoxError> {
    let (addr_tx, addr_rx) = oneshot::channel();
    let (stall_tx, stall_rx) = oneshot::channel::<()>();
    let _phone = on_own_thread(move || async move {
        let listener = transport_tcp::TcpListener::bind("127.0.0.1:0").await?;
        let _ = addr_tx.send(listener.local_addr());
        let hub = hub(listener, 4);
        let mut watches = hub.register_watches(PKG, 1, None).await?;
        let mut stall_rx = Some(stall_rx);
        while let Some(watch) = watches.next().await {
            // Watch 2 is the stalled one: the app sends to it once its link stalls.
            if watch.device.id.0[15] == 2
                && let Some(stalled) = stall_rx.take()
            {
                let conn = watch.connection.clone();
                tokio::spawn(async move {
                    let _ = stalled.await;
                    let sends: Vec<_> = (0..1000u32).map(|n| conn.send(&n)).collect();
                    for send in sends {
                        let _ = send.await;
                    }
                });
            }
            tokio::spawn(async move {
                let mut events = watch.connection.events().expect("new");
                while events.next().await.is_some() {}
            });
        }
        drop(hub);
        Ok::<_, BoxError>(())
    });
    let addr = addr_rx.await?;
    let fast = connect(addr, 1).await?;
    let mut _neighbour = None;
    if stalled_neighbour {
        let proxy = FaultProxy::start(addr, None, 1).await?;
        let watch = Interconnect::new(
            transport_tcp::TcpDialer::new(proxy.addr()),
            Config::in_memory(DeviceId(2u128.to_be_bytes())),
        );
        let conn = watch.instance(PKG, None);
        if !conn.diagnosis(Some(Duration::from_secs(30))).await.is_ok() {
            return Err("the neighbour's channel did not open".into());
        }
        proxy.fault_now(Fault::Stall);
        let _ = stall_tx.send(());
        _neighbour = Some((proxy, watch, conn));
    }
    let conn = &fast[0].1;
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let start = Instant::now();
        conn.send_bytes(ContentType::Binary, payload.clone())
            .await?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(times)
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[((values.len() - 1) as f64 * p) as usize]
}

/// The hub alone in this process (run by `memory` as a child): prints its port, then
/// serves until killed.
async fn hub_child(max: usize) -> Result<(), BoxError> {
    let listener = transport_tcp::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr().port());
    let hub = hub(listener, max);
    let watches = hub.register_watches(PKG, 1, None).await?;
    let (done, _) = oneshot::channel();
    take_all(watches, usize::MAX, done).await;
    Ok(())
}

fn rss_kib(pid: u32) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("no value")?.parse()?)
}

/// The hub's resident memory per connected watch, in KiB.
async fn memory(watches: usize) -> Result<(f64, u64), BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--hub", &watches.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().ok_or("stdout")?),
        &mut port,
    )?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port.trim().parse()?));
    // One watch first, so the runtime and the code pages are in before the baseline.
    let first = connect(addr, 1).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib(child.id())?;
    let rest = connect(addr, watches).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_kib(child.id())?;
    let _ = child.kill();
    let _ = child.wait();
    drop((first, rest));
    Ok((after.saturating_sub(before) as f64 / watches as f64, after))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--hub") {
        let max = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(64);
        return hub_child(max + 1).await;
    }
    let arg = |i: usize, default: usize| -> Result<usize, BoxError> {
        Ok(args
            .get(i)
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let (watches, n, runs, mib) = (arg(0, 16)?, arg(1, 20_000)?, arg(2, 3)?, arg(3, 4)?);
    let (mut ratios, mut alone, mut all) = (vec![], vec![], vec![]);
    let (mut file_ratios, mut file_alone, mut file_all) = (vec![], vec![], vec![]);
    let (mut p50, mut p99) = (vec![], vec![]);
    for _ in 0..runs {
        let one = throughput(1, n).await?;
        let many = throughput(watches, n).await?;
        alone.push(one);
        all.push(many);
        ratios.push(many / one);
        let one = file_throughput(1, watches * mib).await?;
        let many = file_throughput(watches, mib).await?;
        file_alone.push(one);
        file_all.push(many);
        file_ratios.push(many / one);
        let quiet = round_trips(false).await?;
        let beside = round_trips(true).await?;
        p50.push(percentile(beside.clone(), 0.5) / percentile(quiet.clone(), 0.5));
        p99.push(percentile(beside, 0.99) / percentile(quiet, 0.99));
    }
    println!("A hub of several watches over TCP loopback, median of {runs} runs:");
    println!(
        "  {n} pipelined {PAYLOAD}-byte messages, 1 watch:      {:>8.0} k/s",
        median(alone) / 1e3
    );
    println!(
        "  {n} each from {watches} watches at once (total):  {:>8.0} k/s  {:.2}x one watch",
        median(all) / 1e3,
        median(ratios)
    );
    println!(
        "  a {} MiB file, 1 watch:                     {:>8.0} MiB/s",
        watches * mib,
        median(file_alone) / (1 << 20) as f64
    );
    println!(
        "  a {mib} MiB file from each of {watches} watches at once:  {:>8.0} MiB/s  {:.2}x one watch",
        median(file_all) / (1 << 20) as f64,
        median(file_ratios)
    );
    println!(
        "  a watch's round trip beside a stalled watch:  p50 {:.2}x, p99 {:.2}x the same watch alone",
        median(p50),
        median(p99)
    );
    let (per_watch, total) = memory(watches * 4).await?;
    println!(
        "  hub memory: {per_watch:.0} KiB resident per connected watch ({} watches, {total} KiB in all)",
        watches * 4
    );
    Ok(())
}
