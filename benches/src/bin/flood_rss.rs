//! A watch that floods the phone and never reads the answers: pings in plaintext mode,
//! then sealed version queries from a trusted watch on an encrypted link. For each, how
//! much the phone takes before it stops reading (backpressure), and the process's peak
//! memory against its memory before the flood. Both ends run in this process (the
//! flooding end holds nothing but what it writes).
//!
//! `cargo run --release -p interconnect-benches --bin flood_rss [MiB=100]`

use interconnect_benches::process::{first_arg, peak_rss_kib};
use interconnect_benches::raw::{read_frame, watch_hello};
use std::time::Duration;

use interconnect::sans_io::Session;
use interconnect::{
    Config, DeviceIdentity, Hub, IdentityFile, NoiseConfig, Security, SessionConfig,
};
use interconnect_proto::{DEFAULT_MAX_FRAME_LEN, DeviceId, Frame, Ping, Role};
use tokio::io::AsyncWriteExt;
use transport_tcp::TcpListener;

/// Plaintext: a raw socket says hello, then writes pings.
async fn ping_flood(mib: usize) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr();
    let mut config = Config::in_memory(DeviceId([2; 16]));
    config.session.security = Security::InsecurePlaintext;
    config.session.link_timeout = Duration::from_secs(600);
    let hub = Hub::new(listener, config);
    let _app = hub.register("com.example.flood", 1, None).await?;
    let mut raw = tokio::net::TcpStream::connect(addr).await?;
    raw.write_all(&watch_hello()).await?;
    tokio::time::timeout(Duration::from_secs(10), hub.connected()).await?;
    let before = peak_rss_kib().unwrap_or(0);
    let batch: Vec<u8> = (0..4096u64)
        .flat_map(|nonce| {
            Frame::Ping(Ping { nonce })
                .to_bytes(DEFAULT_MAX_FRAME_LEN)
                .map(|b| b.to_vec())
                .unwrap_or_default()
        })
        .collect();
    let mut written = 0usize;
    while written < mib << 20 {
        match tokio::time::timeout(Duration::from_secs(2), raw.write_all(&batch)).await {
            Ok(Ok(())) => written += batch.len(),
            _ => break,
        }
    }
    let after = peak_rss_kib().unwrap_or(0);
    report("pings", written, mib, before, after);
    Ok(())
}

fn report(what: &str, written: usize, mib: usize, before: u64, after: u64) {
    println!(
        "{what} written before the phone stopped reading: {:.1} MiB of {mib} MiB offered; \
         peak RSS {:.1} MiB before the flood, {:.1} MiB after (ratio {:.2})",
        written as f64 / f64::from(1 << 20),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after as f64 / before.max(1) as f64
    );
}

/// Encrypted: a watch session the phone trusts (first use) completes the handshake over
/// a raw socket, then writes sealed version queries and reads nothing.
async fn sealed_flood(mib: usize) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr();
    let mut config = Config::in_memory(DeviceId([2; 16]));
    config.session.link_timeout = Duration::from_secs(600);
    let hub = Hub::new(listener, config);
    let _app = hub.register("com.example.flood", 1, None).await?;
    let mut raw = tokio::net::TcpStream::connect(addr).await?;
    let mut watch = Session::new(
        SessionConfig::new(
            Role::Watch,
            DeviceId([1; 16]),
            1,
            Security::Noise(NoiseConfig::new(DeviceIdentity::generate())),
        ),
        [0x63; 32],
    );
    let now = interconnect::sans_io::Instant::ZERO;
    watch.link_up(now, DEFAULT_MAX_FRAME_LEN);
    while !watch.is_link_up() {
        while let Some(frame) = watch.poll_transmit(now) {
            raw.write_all(&frame).await?;
        }
        let frame = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut raw)).await??;
        watch.handle_frame(now, frame);
        while watch.poll_event().is_some() {}
    }
    while let Some(frame) = watch.poll_transmit(now) {
        raw.write_all(&frame).await?;
    }
    let before = peak_rss_kib().unwrap_or(0);
    let mut written = 0usize;
    'flood: while written < mib << 20 {
        for _ in 0..1024 {
            watch.query_version("com.example.flood")?;
        }
        let mut batch = Vec::new();
        while let Some(frame) = watch.poll_transmit(now) {
            batch.extend_from_slice(&frame);
        }
        match tokio::time::timeout(Duration::from_secs(2), raw.write_all(&batch)).await {
            Ok(Ok(())) => written += batch.len(),
            _ => break 'flood,
        }
    }
    let after = peak_rss_kib().unwrap_or(0);
    report("sealed version queries", written, mib, before, after);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = first_arg(100)?;
    ping_flood(mib).await?;
    sealed_flood(mib).await
}
