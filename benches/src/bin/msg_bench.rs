//! Small messages over TCP loopback, pipelined: `N` sends of 64 bytes issued without
//! awaiting each (their futures awaited at the end), the receiving app taking them as
//! fast as it can, against a tokio-tungstenite WebSocket sending the same count of
//! 64-byte binary messages, in the same run. Both ends use the defaults (interconnect:
//! encrypted, acknowledged once the app took a message; and in plaintext). The receiving
//! end runs on a thread and runtime of its own, as another process would.
//!
//! `cargo run --release -p interconnect-benches --bin msg_bench [messages] [runs]`

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use interconnect::{
    Config, ConnectionEvent, DeviceIdentity, Hub, IdentityFile, Interconnect, NoiseConfig, Security,
};
use interconnect_benches::tcp::{BoxError, median, on_own_thread, watch_channel};
use interconnect_proto::{ContentType, DeviceId};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

const PAYLOAD: usize = 64;

/// Time for `n` WebSocket messages to reach the receiving app.
async fn websocket(n: usize) -> Result<Duration, BoxError> {
    let (addr_tx, addr_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let _receiver = on_own_thread(move || async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let _ = addr_tx.send(listener.local_addr()?);
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let mut ws = tokio_tungstenite::accept_async(socket).await?;
        let mut got = 0;
        while let Some(message) = ws.next().await {
            if let Message::Binary(_) = message? {
                got += 1;
                if got == n {
                    break;
                }
            }
        }
        let _ = done_tx.send(Instant::now());
        Ok::<_, BoxError>(())
    });
    let addr = addr_rx.await?;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}")).await?;
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let start = Instant::now();
    for _ in 0..n {
        ws.feed(Message::Binary(payload.clone())).await?;
    }
    ws.flush().await?;
    let end = done_rx.await?;
    Ok(end - start)
}

/// A phone (on its own thread) whose app counts messages and reports when `n` arrived,
/// and a watch with the channel open; both with the defaults and `security`.
struct Ends {
    _watch: Interconnect,
    conn: interconnect::Connection,
    done: oneshot::Receiver<Instant>,
    _stop: oneshot::Sender<()>,
}

async fn ends(security: Security, n: usize) -> Result<Ends, BoxError> {
    let (addr_tx, addr_rx) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let phone_security = security.clone();
    let _phone = on_own_thread(move || async move {
        let listener = transport_tcp::TcpListener::bind("127.0.0.1:0").await?;
        let _ = addr_tx.send(listener.local_addr());
        let mut config = Config::in_memory(DeviceId([2; 16]));
        config.session.security = phone_security;
        let hub = Hub::new(listener, config);
        let app = hub.register("bench", 1, None).await?;
        let mut events = app.events().unwrap();
        let mut got = 0;
        let mut done_tx = Some(done_tx);
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                _ = &mut stopped => break,
            };
            match event {
                Some(ConnectionEvent::Message(_)) => {
                    got += 1;
                    if got == n
                        && let Some(tx) = done_tx.take()
                    {
                        let _ = tx.send(Instant::now());
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        drop(hub);
        Ok::<_, BoxError>(())
    });
    let addr = addr_rx.await?;
    let mut config = Config::in_memory(DeviceId([1; 16]));
    config.session.security = security;
    let (watch, conn) = watch_channel(transport_tcp::TcpDialer::new(addr), config).await?;
    Ok(Ends {
        _watch: watch,
        conn,
        done,
        _stop: stop,
    })
}

/// Time for `n` pipelined sends to reach the receiving app (every send resolved too).
async fn interconnect(security: Security, n: usize) -> Result<Duration, BoxError> {
    let ends = ends(security, n).await?;
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let start = Instant::now();
    let sends: Vec<_> = (0..n)
        .map(|_| ends.conn.send_bytes(ContentType::Binary, payload.clone()))
        .collect();
    for send in sends {
        send.await?;
    }
    let end = ends.done.await?;
    Ok(end.max(Instant::now()) - start)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let noise = || Security::Noise(NoiseConfig::new(DeviceIdentity::generate()));
    let (mut ws, mut enc, mut plain) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        ws.push(rate(websocket(n).await?));
        enc.push(rate(interconnect(noise(), n).await?));
        plain.push(rate(interconnect(Security::InsecurePlaintext, n).await?));
    }
    let ratio =
        |ours: &[f64], base: &[f64]| median(ours.iter().zip(base).map(|(o, b)| o / b).collect());
    println!("{n} pipelined {PAYLOAD}-byte messages over TCP loopback, median of {runs} runs:");
    println!(
        "  {:<36} {:>8.0} k/s",
        "WebSocket (tokio-tungstenite)",
        median(ws.clone()) / 1e3
    );
    for (name, rates) in [
        ("interconnect, encrypted (default)", &enc),
        ("interconnect, plaintext", &plain),
    ] {
        println!(
            "  {:<36} {:>8.0} k/s  {:.3}x WebSocket",
            name,
            median(rates.clone()) / 1e3,
            ratio(rates, &ws)
        );
    }
    println!("  (targets: 0.5x encrypted, 0.6x plaintext)");
    Ok(())
}
