//! Receives a large file (1 GiB by default) over the mock link and prints the process's
//! peak resident memory, to show that memory stays bounded whatever the file size.
//! Both ends run in this process, so the figure covers sender and receiver together.
//!
//! `cargo run --release -p interconnect-benches --bin file_rss [MiB] [limit MiB, 64 by default]`

use interconnect_benches::process::{first_arg, peak_rss_kib, scratch_dir};
use std::io::Write;
use std::time::Instant;

use interconnect::{Config, ConnectionEvent, FilesConfig, Hub, Interconnect};
use interconnect_proto::DeviceId;
use transport_mock::{Faults, MockNetwork};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: u64 = first_arg(1024)?;
    // The README promises 64 MiB; CI holds the run to a tighter figure.
    let limit: u64 = std::env::args().nth(2).map_or(Ok(64), |a| a.parse())?;
    let send_dir = scratch_dir()?;
    let recv_dir = scratch_dir()?;
    let path = send_dir.path().join("large.bin");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let block: Vec<u8> = (0..(1 << 20))
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for i in 0..mib {
            let mut b = block.clone();
            b[0] = i as u8;
            file.write_all(&b)?;
        }
    }
    let before = peak_rss_kib().unwrap_or(0);

    let network = MockNetwork::new(Faults::default());
    let (dialer, listener) = network.endpoints();
    let mut phone = Config::in_memory(DeviceId([2; 16]));
    let mut files = FilesConfig::new(recv_dir.path());
    files.reserve_free_bytes = 0;
    files.max_file_size = u64::MAX;
    phone.files = Some(files);
    let hub = Hub::new(listener, phone);
    let watch = Interconnect::new(dialer, Config::in_memory(DeviceId([1; 16])));
    let app = hub.register("rss", 1, None).await?;
    let mut events = app.events().unwrap();
    let conn = watch.instance("rss", None);
    if !conn.diagnosis(None).await.is_ok() {
        return Err("channel did not open".into());
    }
    let start = Instant::now();
    conn.send_file(&path).await?;
    let stored = loop {
        match events.next().await {
            Some(ConnectionEvent::File { path, size, .. }) => break (path, size),
            Some(ConnectionEvent::Error { code, message }) => {
                return Err(format!("{code}: {message}").into());
            }
            Some(_) => {}
            None => return Err("driver stopped".into()),
        }
    };
    let elapsed = start.elapsed();
    let peak = peak_rss_kib().unwrap_or(0);
    println!(
        "received {} MiB in {:.2} s ({:.0} MiB/s, hashing and storing included)",
        stored.1 >> 20,
        elapsed.as_secs_f64(),
        (stored.1 >> 20) as f64 / elapsed.as_secs_f64()
    );
    println!(
        "peak RSS: {:.1} MiB (before the transfer: {:.1} MiB); target: under {limit} MiB",
        peak as f64 / 1024.0,
        before as f64 / 1024.0
    );
    std::fs::remove_file(stored.0)?;
    if peak > limit * 1024 {
        return Err(format!("peak RSS over {limit} MiB").into());
    }
    Ok(())
}
