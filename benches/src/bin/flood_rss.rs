//! A watch that floods the phone with pings and never reads the pongs: how much the
//! phone takes before it stops reading (backpressure), and the process's peak memory
//! against its memory before the flood. Both ends run in this process (the flooding
//! end is a raw socket that holds nothing).
//!
//! `cargo run --release -p interconnect-benches --bin flood_rss [MiB=100]`

use interconnect_benches::process::{first_arg, peak_rss_kib};
use std::time::Duration;

use interconnect_core::{Config, Hub, Security};
use interconnect_proto::{
    Capabilities, DEFAULT_MAX_FRAME_LEN, DeviceId, Frame, Hello, PROTOCOL_VERSIONS, Ping, Role,
};
use tokio::io::AsyncWriteExt;
use transport_tcp::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = first_arg(100)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr();
    let mut config = Config::new(DeviceId([2; 16]));
    config.security = Security::InsecurePlaintext;
    config.session.link_timeout = Duration::from_secs(600);
    let hub = Hub::new(listener, config);
    let _app = hub.register("com.example.flood", 1, None).await?;
    let mut raw = tokio::net::TcpStream::connect(addr).await?;
    let hello = Frame::Hello(Hello {
        role: Role::Watch,
        device_id: DeviceId([1; 16]),
        min_version: *PROTOCOL_VERSIONS.start(),
        max_version: *PROTOCOL_VERSIONS.end(),
        max_frame_len: DEFAULT_MAX_FRAME_LEN as u32,
        capabilities: Capabilities::ALL,
        resume_token: 1,
    });
    raw.write_all(&hello.to_bytes(DEFAULT_MAX_FRAME_LEN)?)
        .await?;
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
    println!(
        "pings written before the phone stopped reading: {:.1} MiB of {mib} MiB offered; \
         peak RSS {:.1} MiB before the flood, {:.1} MiB after (ratio {:.2})",
        written as f64 / f64::from(1 << 20),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after as f64 / before.max(1) as f64
    );
    Ok(())
}
