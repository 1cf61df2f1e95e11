//! Durable messages against live ones, over TCP loopback, in one run: `n` pipelined
//! `send`s (kept in memory), `n` pipelined `send_durable`s (each committed to the
//! watch's store before its call returns; calls made together share commits), and `n`
//! `send_durable`s one after another (one commit each: the latency of a commit). Both
//! ends encrypted with a store on the real disk (under the current directory: a tmpfs
//! would make every sync free), the phone on a thread and runtime of its own; the phone's
//! app moves its cursor on its disk before it takes each durable message.
//!
//! What a sync covers: redb commits with immediate durability, one fsync per commit; a
//! power cut loses nothing a call reported committed.
//!
//! `cargo run --release -p interconnect-benches --bin durable_bench [n] [runs]`

use std::time::{Duration, Instant};

use interconnect::{
    Config, DeviceIdentity, IdentityFile, Interconnect, NoiseConfig, Security, Store,
};
use interconnect_benches::tcp::{BoxError, counting_phone, median, watch_channel};
use interconnect_proto::DeviceId;
use tokio::sync::oneshot;

struct Ends {
    _watch: Interconnect,
    conn: interconnect::Connection,
    done: oneshot::Receiver<Instant>,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

fn config(id: u8, store: &std::path::Path) -> Result<Config, BoxError> {
    let mut config = Config::in_memory(DeviceId([id; 16]));
    config.session.security = Security::Noise(NoiseConfig::new(DeviceIdentity::generate()));
    config.store = Some(Store::open(store)?);
    Ok(config)
}

/// A phone (own thread) whose app reports when it took `n` messages, and a watch with
/// the channel open; both with a store in a new folder.
async fn ends(n: usize) -> Result<Ends, BoxError> {
    let dir = tempfile::tempdir_in(".")?;
    let phone = counting_phone(config(2, &dir.path().join("phone.redb"))?, n).await?;
    let watch_config = config(1, &dir.path().join("watch.redb"))?;
    let dialer = transport_tcp::TcpDialer::new(phone.addr);
    let (watch, conn) = watch_channel(dialer, watch_config).await?;
    Ok(Ends {
        _watch: watch,
        conn,
        done: phone.done,
        _stop: phone.stop,
        _dir: dir,
    })
}

/// Time for `n` pipelined live messages to reach the phone's app.
async fn live(n: usize) -> Result<Duration, BoxError> {
    let ends = ends(n).await?;
    let start = Instant::now();
    let sends: Vec<_> = (0..n).map(|i| ends.conn.send(&i)).collect();
    for send in sends {
        send.await?;
    }
    let end = ends.done.await?;
    Ok(end.max(Instant::now()) - start)
}

/// Time for `n` durable messages, all sent at once, to be committed, and to be
/// delivered (the watch heard the last was taken).
async fn durable(n: usize) -> Result<(Duration, Duration), BoxError> {
    let ends = ends(n).await?;
    let start = Instant::now();
    let conn = &ends.conn;
    let sends = (0..n).map(|i| async move { conn.send_durable(&i).await });
    let ids = futures_util::future::try_join_all(sends).await?;
    let committed = start.elapsed();
    conn.delivered(*ids.last().unwrap_or(&0)).await?;
    Ok((committed, start.elapsed()))
}

/// Each of `n` durable messages committed alone: the time each call took.
async fn one_by_one(n: usize) -> Result<Vec<Duration>, BoxError> {
    let ends = ends(n).await?;
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        ends.conn.send_durable(&i).await?;
        took.push(start.elapsed());
    }
    ends.conn.delivered(n as u64).await?;
    Ok(took)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5_000);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let (mut sent, mut committed, mut delivered, mut single, mut p50, mut p99) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    for _ in 0..runs {
        sent.push(rate(live(n).await?));
        let (commit, deliver) = durable(n).await?;
        committed.push(rate(commit));
        delivered.push(rate(deliver));
        let mut took = one_by_one(n.min(1_000)).await?;
        single.push(took.len() as f64 / took.iter().sum::<Duration>().as_secs_f64());
        took.sort();
        p50.push(took[took.len() / 2].as_secs_f64() * 1e6);
        p99.push(took[took.len() * 99 / 100].as_secs_f64() * 1e6);
    }
    let ratio = median(delivered.iter().zip(&sent).map(|(d, s)| d / s).collect());
    println!("{n} small messages over TCP loopback, encrypted, stores on disk, median of {runs}:");
    println!(
        "  live (send, pipelined, delivered)             {:>9.1} k/s",
        median(sent) / 1e3
    );
    println!(
        "  durable (send_durable, all at once) committed {:>9.1} k/s",
        median(committed) / 1e3
    );
    println!(
        "  durable, the same, delivered                  {:>9.1} k/s  {ratio:.3}x live",
        median(delivered) / 1e3
    );
    println!(
        "  durable one after another (a commit each)     {:>9.1} k/s  p50 {:.0} us, p99 {:.0} us",
        median(single) / 1e3,
        median(p50),
        median(p99)
    );
    Ok(())
}
