//! Goodput of a 1 MiB file over the simulated BLE link, on virtual time, for six sets
//! of link parameters (1M and 2M PHY, with and without DLE), each as a ratio to the theoretical capacity of the same parameters
//! (`transport_ble::goodput_bps`). Virtual time makes the figures exact and repeatable:
//! hashing and disk I/O take no simulated time.
//!
//! `cargo run --release -p interconnect-benches --bin ble_goodput`

use std::time::Duration;

use interconnect::{Config, ConnectionEvent, FilesConfig, Hub, Interconnect};
use interconnect_proto::DeviceId;
use transport_ble::{BleConfig, BleParams, Phy, SimNetwork, goodput_bps};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn transfer(
    params: BleParams,
    path: &std::path::Path,
    dir: &std::path::Path,
) -> Result<Duration, BoxError> {
    let network = SimNetwork::new(params, BleConfig::default());
    let (peripheral, central) = network.endpoints();
    let mut phone = Config::in_memory(DeviceId([2; 16]));
    let mut files = FilesConfig::new(dir);
    files.reserve_free_bytes = 0;
    phone.files = Some(files);
    let hub = Hub::new(central, phone);
    let watch = Interconnect::new(peripheral, Config::in_memory(DeviceId([1; 16])));
    let app = hub.register("ble", 1, None).await?;
    let mut events = app.events().unwrap();
    let conn = watch.instance("ble", None);
    if !conn.diagnosis(Some(Duration::from_secs(60))).await.is_ok() {
        return Err("the channel did not open".into());
    }
    let start = tokio::time::Instant::now();
    conn.send_file(path).await?;
    let elapsed = start.elapsed();
    loop {
        match events.next().await {
            Some(ConnectionEvent::File { path, .. }) => {
                std::fs::remove_file(path)?;
                break;
            }
            Some(ConnectionEvent::Error { code, message }) => {
                return Err(format!("{code}: {message}").into());
            }
            Some(_) => {}
            None => return Err("driver stopped".into()),
        }
    }
    watch.shutdown().await;
    hub.shutdown().await;
    Ok(elapsed)
}

fn main() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("one-mib.bin");
        let data: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        std::fs::write(&path, &data)?;
        let received = dir.path().join("received");
        let at = |att_mtu, phy, dle| BleParams {
            att_mtu,
            phy,
            dle,
            ..BleParams::modern()
        };
        let cases = [
            ("MTU 23, 1M PHY", BleParams::legacy()),
            ("MTU 247, 1M PHY", at(247, Phy::M1, false)),
            ("MTU 247, 1M PHY, DLE", at(247, Phy::M1, true)),
            ("MTU 247, 2M PHY", at(247, Phy::M2, false)),
            ("MTU 247, 2M PHY, DLE", at(247, Phy::M2, true)),
            ("MTU 517, 2M PHY, DLE", at(517, Phy::M2, true)),
        ];
        println!("1 MiB file over the simulated BLE link (virtual time), send_file until stored:");
        for (name, params) in cases {
            let elapsed = transfer(params, &path, &received).await?;
            let goodput = 8.0 * data.len() as f64 / elapsed.as_secs_f64();
            let capacity = goodput_bps(&params);
            println!(
                "  {name:<22} {:>7.1} kbit/s of {:>7.1} kbit/s capacity: {:.2}x",
                goodput / 1e3,
                capacity / 1e3,
                goodput / capacity
            );
        }
        Ok(())
    })
}
