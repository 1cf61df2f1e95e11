//! The phone side over Bluetooth LE (BlueZ): scans for a watch advertising the
//! interconnect service, connects, and registers the app `com.example.ble`, printing every
//! event and echoing messages back.
//!
//! `cargo run -p transport-ble --features bluez --example ble-phone`

use interconnect::{Config, ConnectionEvent, Hub};
use transport_ble::BleConfig;
use transport_ble::bluez::BluezCentral;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let transport = BluezCentral::new(BleConfig::default()).await?;
    let hub = Hub::new(
        transport,
        Config::new(std::env::temp_dir().join("interconnect-ble-phone"))?,
    );
    let app = hub.register("com.example.ble", 1, None).await?;
    let mut events = app.events().expect("a new connection has its events");
    println!("scanning for a watch");
    while let Some(event) = events.next().await {
        println!("event: {event:?}");
        if let ConnectionEvent::Message(message) = event {
            let _ = app.send_bytes(message.content_type, message.payload).await;
        }
    }
    Ok(())
}
