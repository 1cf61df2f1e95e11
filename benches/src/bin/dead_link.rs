//! How long each end takes to notice a dead TCP link, and how long a new link takes to
//! carry messages again, through the fault proxy: a reset (both sides), a reset of the
//! watch's side only (the phone's socket stays open and silent), and a black hole (both
//! sockets open, nothing forwarded). The watch sends a message every 10 ms throughout.
//! Figures are given in milliseconds and as a ratio to the configured link timeout.
//!
//! `cargo run --release -p interconnect-benches --bin dead_link [link-timeout-ms]`

use interconnect_benches::process::first_arg;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use interconnect::{Config, ConnectionEvent, Hub, Interconnect};
use interconnect_conformance::proxy::{Fault, FaultProxy};
use interconnect_proto::DeviceId;
use transport_tcp::{TcpDialer, TcpListener};

const PKG: &str = "com.example.deadlink";

/// What one side saw after the fault.
#[derive(Default)]
struct Seen {
    /// The channel closed (1006: the link went down).
    closed: Option<Instant>,
    /// The channel reopened.
    reopened: Option<Instant>,
    /// The first message received after the fault.
    message: Option<Instant>,
}

fn config(id: u8, timeout: Duration) -> Config {
    let mut config = Config::in_memory(DeviceId([id; 16]));
    config.session.link_timeout = timeout;
    config.session.ping_interval = timeout / 4;
    config.backoff.initial = Duration::from_millis(20);
    config.backoff.max = Duration::from_millis(200);
    config
}

fn record(
    mut events: interconnect::Events,
    after: Arc<Mutex<Option<Instant>>>,
) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let now = Instant::now();
            let Some(fault) = *after.lock().unwrap() else {
                continue;
            };
            if now < fault {
                continue;
            }
            let mut seen = s.lock().unwrap();
            match event {
                ConnectionEvent::Close { .. } => {
                    seen.closed.get_or_insert(now);
                }
                ConnectionEvent::Open { .. } => {
                    seen.reopened.get_or_insert(now);
                }
                ConnectionEvent::Message(_) => {
                    seen.message.get_or_insert(now);
                }
                _ => {}
            }
        }
    });
    seen
}

async fn run(fault: Fault, timeout: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy = FaultProxy::start(listener.local_addr(), None, 1).await?;
    let hub = Hub::new(listener, config(2, timeout));
    let watch = Interconnect::new(TcpDialer::new(proxy.addr()), config(1, timeout));
    let app = hub.register(PKG, 1, None).await?;
    let conn = watch.instance(PKG, None);
    if !conn.diagnosis(Some(Duration::from_secs(10))).await.is_ok() {
        return Err("the channel did not open".into());
    }
    let at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let at_watch = record(conn.events().unwrap(), at.clone());
    let at_phone = record(app.events().unwrap(), at.clone());
    let sender = conn.clone();
    let sending = tokio::spawn(async move {
        for i in 0u32.. {
            let _ = sender.send(&i).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::time::sleep(timeout / 2).await;
    let links = proxy.accepted().len();
    let fault_at = Instant::now();
    *at.lock().unwrap() = Some(fault_at);
    proxy.fault_now(fault);
    // Wait for the message flow to resume, at most ten deadlines.
    let give_up = fault_at + timeout * 10;
    while at_phone.lock().unwrap().message.is_none() && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sending.abort();
    let new_link = proxy.accepted().get(links).copied();
    let ms = |t: Option<Instant>, from: Instant| match t {
        Some(t) => format!(
            "{:>7.0} ms ({:.2})",
            t.saturating_duration_since(from).as_secs_f64() * 1e3,
            t.saturating_duration_since(from).as_secs_f64() / timeout.as_secs_f64()
        ),
        None => format!("{:>17}", "never"),
    };
    {
        let (w, p) = (at_watch.lock().unwrap(), at_phone.lock().unwrap());
        // The phone notices either by its own deadline (its channel closes) or by the new
        // link taking over (its channel reopens): whichever came first.
        let phone_noticed = match (p.closed, p.reopened) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        println!(
            "{:<12} {} {} {} {}",
            format!("{fault:?}"),
            ms(w.closed, fault_at),
            ms(phone_noticed, fault_at),
            ms(new_link, fault_at),
            new_link.map_or_else(|| format!("{:>17}", "never"), |l| ms(p.message, l)),
        );
    }
    watch.shutdown().await;
    hub.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let timeout_ms: u64 = first_arg(2_000)?;
    let timeout = Duration::from_millis(timeout_ms);
    println!(
        "link timeout {timeout_ms} ms, pings every {} ms; times from the fault (ratio to the link timeout)",
        timeout_ms / 4
    );
    println!(
        "{:<12} {:>17} {:>17} {:>17} {:>17}",
        "fault", "watch noticed", "phone noticed", "new link", "link→resumed"
    );
    for fault in [
        Fault::Cut,
        Fault::ResetWatch,
        Fault::ResetPhone,
        Fault::Stall,
    ] {
        run(fault, timeout).await?;
    }
    Ok(())
}
