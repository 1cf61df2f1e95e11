//! A watch and a phone in one process over the in-memory link, with a lossy, laggy link
//! that is cut twice while messages are in flight: opens a channel, checks status,
//! version and diagnosis, runs a request, sends 200 messages each way at once, and shows
//! that everything arrived exactly once and in order despite the faults and the cuts.
//! Exits non-zero if any check fails.
//!
//! `cargo run -p interconnect-core --example watch_and_phone`

use std::time::Duration;

use interconnect::{Config, Connection, ConnectionEvent, Hub, Interconnect};
use tokio::sync::watch;
use transport_mock::{Faults, MockNetwork};

const PACKAGE: &str = "com.example.fitness";
const COUNT: u32 = 200;

/// Reads `conn`'s events until `COUNT` numbered messages arrived, answering requests,
/// and publishes how many arrived so far.
fn reader(conn: &Connection, side: &'static str) -> (watch::Receiver<usize>, ReaderTask) {
    let mut events = conn.events().expect("a new connection has its events");
    let (count_tx, count) = watch::channel(0);
    let conn = conn.clone();
    let task = tokio::spawn(async move {
        let mut received = Vec::new();
        while received.len() < COUNT as usize {
            match events.next().await {
                Some(ConnectionEvent::Message(m)) if m.request_id.is_some() => {
                    let text: String = m.decode().unwrap_or_default();
                    let _ = conn.reply(&m, &text.to_uppercase()).await;
                }
                Some(ConnectionEvent::Message(m)) => {
                    received.push(m.decode::<u32>().ok());
                    count_tx.send_replace(received.len());
                }
                Some(other) => println!("{side} event: {other:?}"),
                None => break,
            }
        }
        received
    });
    (count, task)
}

type ReaderTask = tokio::task::JoinHandle<Vec<Option<u32>>>;

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
    // Each device keeps its key and trusted peers in a directory, as a real app does.
    let state = std::env::temp_dir().join("interconnect-example-watch-and-phone");
    let fast = |dir: &str| -> Result<Config, interconnect::IdentityError> {
        let mut config = Config::new(state.join(dir))?;
        config.session.retransmit_timeout = Duration::from_millis(200);
        Ok(config)
    };
    let hub = Hub::new(listener, fast("phone")?);
    let watch = Interconnect::new(dialer, fast("watch")?);

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

    let (mut at_phone, phone) = reader(&app, "phone");
    let (_, at_watch) = reader(&conn, "watch");
    let answer: String = conn.request("ping", Duration::from_secs(10)).await?;
    println!("request/reply: ping -> {answer}");

    // Both ways at once; the link is cut twice while they are in flight.
    let to_phone: Vec<_> = (0..COUNT).map(|i| conn.send(&i)).collect();
    let to_watch: Vec<_> = (0..COUNT).map(|i| app.send(&i)).collect();
    for at in [50, 150] {
        at_phone.wait_for(|n| *n >= at).await?;
        println!("cutting the link after {at} messages reached the phone");
        network.cut();
    }
    for send in to_phone.into_iter().chain(to_watch) {
        send.await?;
    }
    let mut ok = true;
    for (side, task) in [("phone", phone), ("watch", at_watch)] {
        let received = task.await?;
        let in_order = received.len() == COUNT as usize
            && received
                .iter()
                .enumerate()
                .all(|(i, v)| *v == Some(i as u32));
        println!(
            "{side} received {} messages, exactly once and in order: {in_order}",
            received.len()
        );
        ok &= in_order;
    }
    println!("links opened: {}", network.links_made());
    watch.shutdown().await;
    hub.shutdown().await;
    if !ok || network.links_made() < 3 {
        return Err("messages were lost, duplicated or reordered, or a cut missed".into());
    }
    Ok(())
}
