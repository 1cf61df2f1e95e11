//! A phone app that stops reading while the watch sends 100,000 messages of 1 KB: the
//! process's peak memory while the app reads nothing, and after it read them all,
//! against its memory before. Both ends run in this process over the mock link; the
//! watch keeps up to 1,000 sends outstanding.
//!
//! `cargo run --release -p interconnect-benches --bin slow_app_rss [messages]`

use interconnect_benches::process::{first_arg, peak_rss_kib};
use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use interconnect::{Config, ConnectionEvent, Hub, Interconnect};
use interconnect_proto::{ContentType, DeviceId};
use transport_mock::{Faults, MockNetwork};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = first_arg(100_000)?;
    let network = MockNetwork::new(Faults::default());
    let (dialer, listener) = network.endpoints();
    let mut watch_config = Config::in_memory(DeviceId([1; 16]));
    watch_config.send_timeout = Duration::from_secs(3600);
    let hub = Hub::new(listener, Config::in_memory(DeviceId([2; 16])));
    let watch = Interconnect::new(dialer, watch_config);
    let app = hub.register("com.example.slow", 1, None).await?;
    let conn = watch.instance("com.example.slow", None);
    if !conn.diagnosis(None).await.is_ok() {
        return Err("the channel did not open".into());
    }
    let before = peak_rss_kib().unwrap_or(0);
    let sender = tokio::spawn(async move {
        let payload = Bytes::from(vec![7u8; 1024]);
        let mut outstanding = VecDeque::new();
        for _ in 0..count {
            if outstanding.len() == 1_000
                && let Some(oldest) = outstanding.pop_front()
            {
                let _ = oldest.await;
            }
            outstanding.push_back(conn.send_bytes(ContentType::Binary, payload.clone()));
        }
        for send in outstanding {
            let _ = send.await;
        }
    });
    // The app reads nothing for two seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled = peak_rss_kib().unwrap_or(0);
    let mut events = app.events().unwrap();
    let mut got = 0;
    while got < count {
        if let Some(ConnectionEvent::Message(_)) = events.next().await {
            got += 1;
        }
    }
    sender.await?;
    let after = peak_rss_kib().unwrap_or(0);
    println!(
        "{count} messages of 1 KB to an app that read nothing for 2 s: peak RSS {:.1} MiB \
         before, {:.1} MiB while it did not read ({:.2}x), {:.1} MiB after it read them all ({:.2}x)",
        before as f64 / 1024.0,
        stalled as f64 / 1024.0,
        stalled as f64 / before.max(1) as f64,
        after as f64 / 1024.0,
        after as f64 / before.max(1) as f64,
    );
    Ok(())
}
