//! A watch and a phone in one process over the in-memory link, with a lossy, laggy link
//! that is cut twice: opens a channel, checks status, version and diagnosis, sends 200
//! messages each way and a request, and shows that everything arrived exactly once and in
//! order despite the faults. Exits non-zero if any check fails.
//!
//! `cargo run -p interconnect-core --example watch_and_phone`

use std::time::Duration;

use interconnect_core::{Config, ConnectionEvent, Hub, Interconnect};
use interconnect_proto::DeviceId;
use transport_mock::{Faults, MockNetwork};

const PACKAGE: &str = "com.example.fitness";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let network = MockNetwork::new(Faults {
        seed: 7,
        latency: Duration::from_millis(5),
        loss: 0.02,
        duplicate: 0.01,
        reorder: 0.01,
        ..Faults::default()
    });
    let (dialer, listener) = network.endpoints();
    let fast = |id| {
        let mut config = Config::in_memory(DeviceId([id; 16]));
        config.session.retransmit_timeout = Duration::from_millis(200);
        config
    };
    let hub = Hub::new(listener, fast(2));
    let watch = Interconnect::new(dialer, fast(1));

    let app = hub.register(PACKAGE, 12, None).await?;
    let conn = watch.instance(PACKAGE, None);
    let diagnosis = conn.diagnosis(None).await;
    println!(
        "diagnosis: status {}, code {}",
        diagnosis.status(),
        diagnosis.code
    );
    println!("peer device status: {}", watch.peer_device_status().code());
    println!("ready state: {}", conn.ready_state().code());
    println!(
        "peer app version: {}",
        conn.peer_client_version_code().await?
    );
    if !diagnosis.is_ok() {
        return Err("the channel did not open".into());
    }

    // The phone app echoes requests and counts messages.
    let mut app_events = app.events().expect("a new connection has its events");
    let phone = tokio::spawn({
        let app = app.clone();
        async move {
            let mut received = Vec::new();
            while received.len() < 200 {
                match app_events.next().await {
                    Some(ConnectionEvent::Message(m)) if m.request_id.is_some() => {
                        let text: String = m.decode().unwrap_or_default();
                        let _ = app.reply(&m, &text.to_uppercase()).await;
                    }
                    Some(ConnectionEvent::Message(m)) => received.push(m.decode::<u32>().ok()),
                    Some(other) => println!("phone event: {other:?}"),
                    None => break,
                }
            }
            received
        }
    });

    let answer: String = conn.request("ping", Duration::from_secs(10)).await?;
    println!("request/reply: ping -> {answer}");

    let sends: Vec<_> = (0..200u32).map(|i| conn.send(&i)).collect();
    for (i, send) in sends.into_iter().enumerate() {
        if i == 50 || i == 150 {
            println!("cutting the link");
            network.cut();
        }
        send.await?;
    }
    let received = phone.await?;
    let in_order = received
        .iter()
        .enumerate()
        .all(|(i, v)| *v == Some(i as u32));
    println!(
        "phone received {} messages, exactly once and in order: {in_order}; links opened: {}",
        received.len(),
        network.links_made()
    );
    watch.shutdown().await;
    hub.shutdown().await;
    if !in_order {
        return Err("messages were lost, duplicated or reordered".into());
    }
    Ok(())
}
