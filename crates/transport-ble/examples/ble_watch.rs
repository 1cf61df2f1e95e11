//! The watch side over Bluetooth LE (BlueZ): advertises the interconnect service, then
//! opens a channel to the phone app and sends a message every few seconds, printing
//! every event. Run `ble-phone` on the phone-side machine.
//!
//! `cargo run -p transport-ble --features bluez --example ble-watch`

use std::time::Duration;

use interconnect::{Config, Interconnect};
use transport_ble::BleConfig;
use transport_ble::bluez::BluezPeripheral;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let transport = BluezPeripheral::start("interconnect-watch", BleConfig::default()).await?;
    let watch = Interconnect::new(
        transport,
        Config::new(std::env::temp_dir().join("interconnect-ble-watch"))?,
    );
    let conn = watch.instance("com.example.ble", None);
    let mut events = conn.events().expect("a new connection has its events");
    println!("advertising; waiting for the phone");
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            println!("event: {event:?}");
        }
    });
    for n in 0u64.. {
        let diagnosis = conn.diagnosis(Some(Duration::from_secs(30))).await;
        println!("diagnosis: {} ({})", diagnosis.status(), diagnosis.code);
        if diagnosis.is_ok() {
            match conn.send(&serde_json::json!({ "tick": n })).await {
                Ok(()) => println!("tick {n} acknowledged"),
                Err(error) => println!("send failed: {error}"),
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(())
}
