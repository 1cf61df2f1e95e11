//! interconnect over TCP loopback against what a user would otherwise write, each baseline
//! measured in the same run, printing ratios:
//!
//! 1. a file (256 MiB by default) sent with `send_file` until the phone has verified and
//!    stored it, against a raw tokio TCP copy of the same file (disk → socket → disk);
//! 2. the same file as 64 KiB binary WebSocket messages (tokio-tungstenite), disk to disk.
//!    Both baselines send in the clear, so interconnect is measured in plaintext mode
//!    (like for like) and in its default encrypted mode;
//! 3. small-message round trips (64 bytes, `send` → acknowledgement) against a raw TCP
//!    ping-pong of the same size: p50 and p99.
//!
//! In every case the receiving (or echoing) end runs on a thread and runtime of its own,
//! as another process would (see `interconnect_benches::tcp`).
//!
//! `cargo run --release -p interconnect-benches --bin tcp_bench [MiB] [round trips]`

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use interconnect::{DeviceIdentity, IdentityFile, NoiseConfig, Security};
use interconnect_benches::tcp::{
    BoxError, Ends, interconnect_ends, interconnect_file, median, on_own_thread, raw_tcp_copy,
    source_file,
};
use interconnect_proto::ContentType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Runs of each file copy, interleaved so each ratio compares neighbours in time.
const RUNS: usize = 5;

async fn websocket_copy(src: &Path, dst: &Path) -> Result<Duration, BoxError> {
    let dst = dst.to_path_buf();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let receiver = on_own_thread(move || async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let _ = addr_tx.send(listener.local_addr()?);
        let (socket, _) = listener.accept().await?;
        let mut ws = tokio_tungstenite::accept_async(socket).await?;
        let mut file = tokio::fs::File::create(&dst).await?;
        while let Some(message) = ws.next().await {
            match message? {
                Message::Binary(data) => file.write_all(&data).await?,
                Message::Close(_) => break,
                _ => {}
            }
        }
        file.sync_all().await?;
        Ok::<_, BoxError>(())
    });
    let addr = addr_rx.await?;
    let start = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}")).await?;
    let mut file = tokio::fs::File::open(src).await?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        ws.feed(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
            .await?;
    }
    ws.close(None).await?;
    receiver.await??;
    Ok(start.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn raw_ping_pong(count: usize) -> Result<Vec<Duration>, BoxError> {
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let echo = on_own_thread(move || async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let _ = addr_tx.send(listener.local_addr()?);
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        while socket.read_exact(&mut buf).await.is_ok() {
            socket.write_all(&buf[..8]).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut socket = TcpStream::connect(addr_rx.await?).await?;
    socket.set_nodelay(true)?;
    let message = [7u8; 64];
    let mut ack = [0u8; 8];
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        socket.write_all(&message).await?;
        socket.read_exact(&mut ack).await?;
        times.push(start.elapsed());
    }
    drop(socket);
    let _ = echo.await;
    Ok(times)
}

async fn interconnect_round_trips(ends: &Ends, count: usize) -> Result<Vec<Duration>, BoxError> {
    let payload = Bytes::from(vec![7u8; 64]);
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        ends.conn
            .send_bytes(ContentType::Binary, payload.clone())
            .await?;
        times.push(start.elapsed());
    }
    Ok(times)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let trips: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("source.bin");
    source_file(&src, mib).await?;
    let bytes = (mib << 20) as f64;
    let received = dir.path().join("received");
    std::fs::create_dir_all(&received)?;
    // The baselines send the bytes in the clear, so the like-for-like figure is
    // interconnect in plaintext mode; the default (Noise, AES-256-GCM) is measured too.
    let plain_dir = received.join("plaintext");
    let secure_dir = received.join("encrypted");
    let mut plain = interconnect_ends(&plain_dir, Security::InsecurePlaintext).await?;
    let mut ends = interconnect_ends(
        &secure_dir,
        Security::Noise(NoiseConfig::new(DeviceIdentity::generate())),
    )
    .await?;

    let (mut raw, mut ws, mut ours_plain, mut ours) = (vec![], vec![], vec![], vec![]);
    for run in 0..RUNS {
        let copy = dir.path().join(format!("raw-{run}.bin"));
        raw.push(bytes / raw_tcp_copy(&src, &copy).await?.as_secs_f64());
        std::fs::remove_file(copy)?;
        let copy = dir.path().join(format!("ws-{run}.bin"));
        ws.push(bytes / websocket_copy(&src, &copy).await?.as_secs_f64());
        std::fs::remove_file(copy)?;
        for (ends, rates) in [(&mut plain, &mut ours_plain), (&mut ends, &mut ours)] {
            let (elapsed, stored) = interconnect_file(ends, &src).await?;
            rates.push(bytes / elapsed.as_secs_f64());
            std::fs::remove_file(stored)?;
        }
    }
    // Ratios run by run (the machine's state drifts between runs), then their median.
    let ratio =
        |ours: &[f64], base: &[f64]| median(ours.iter().zip(base).map(|(o, b)| o / b).collect());
    let mibs = |rates: &[f64]| median(rates.to_vec()) / 1048576.0;
    println!("{mib} MiB file over TCP loopback, disk to disk, median of {RUNS} runs:");
    println!("  {:<44} {:>6.0} MiB/s", "raw tokio TCP copy", mibs(&raw));
    println!(
        "  {:<44} {:>6.0} MiB/s",
        "WebSocket, 64 KiB messages",
        mibs(&ws)
    );
    println!("  (ratios: median of per-run ratios; targets 0.8x raw, 1.0x WebSocket)");
    for (mode, rates) in [
        ("plaintext (like the baselines)", &ours_plain),
        ("encrypted (default, AES-GCM)", &ours),
    ] {
        println!(
            "  {:<44} {:>6.0} MiB/s  {:.2}x raw  {:.2}x WebSocket",
            format!("interconnect, {mode}"),
            mibs(rates),
            ratio(rates, &raw),
            ratio(rates, &ws)
        );
    }
    println!("  (interconnect hashes every file on both ends and verifies it before storing it)");

    let mut raw_trips = raw_ping_pong(trips).await?;
    // Round trips on the default, encrypted link.
    let mut our_trips = interconnect_round_trips(&ends, trips).await?;
    raw_trips.sort();
    our_trips.sort();
    let (raw50, raw99) = (percentile(&raw_trips, 0.5), percentile(&raw_trips, 0.99));
    let (our50, our99) = (percentile(&our_trips, 0.5), percentile(&our_trips, 0.99));
    println!("64-byte round trips over TCP loopback ({trips} each):");
    println!("  raw TCP ping-pong       p50 {raw50:>9.1?}  p99 {raw99:>9.1?}");
    println!("  interconnect send→ack   p50 {our50:>9.1?}  p99 {our99:>9.1?}");
    println!(
        "  p50 ratio: {:.2}x the raw ping-pong (target within 1.5x); p99 ratio {:.2}x",
        our50.as_secs_f64() / raw50.as_secs_f64(),
        our99.as_secs_f64() / raw99.as_secs_f64()
    );
    Ok(())
}
