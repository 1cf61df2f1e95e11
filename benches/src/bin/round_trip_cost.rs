//! What one 64-byte round trip costs, in system calls and instructions, beside a raw
//! TCP ping-pong of the same size: `.ci/instructions` runs this under `strace -c` and
//! callgrind. Both ends live in this process, on one thread, over TCP loopback, with
//! fixed keys, so two runs make the same calls give or take a timer.
//!
//! `round_trip_cost <raw|ours|ours-plain> N`: link (or socket) set up, then `N` round
//! trips one after another. For ours a round trip is a `send` awaited until the phone's
//! app took the message and its acknowledgement came back. The script subtracts a run
//! of `N` from one of `2N`, so the set-up drops out.

use bytes::Bytes;
use interconnect::{ConnectionEvent, Hub, Interconnect};
use interconnect_benches::counted::fixed_config;
use interconnect_benches::tcp::BoxError;
use interconnect_proto::ContentType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn raw(n: usize) -> Result<(), BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        while socket.read_exact(&mut buf).await.is_ok() {
            socket.write_all(&buf[..8]).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let (message, mut ack) = ([7u8; 64], [0u8; 8]);
    for _ in 0..n {
        socket.write_all(&message).await?;
        socket.read_exact(&mut ack).await?;
    }
    drop(socket);
    echo.await??;
    Ok(())
}

async fn ours(n: usize, plaintext: bool) -> Result<(), BoxError> {
    let listener = transport_tcp::TcpListener::bind("127.0.0.1:0").await?;
    let dialer = transport_tcp::TcpDialer::new(listener.local_addr());
    let hub = Hub::new(listener, fixed_config(2, plaintext));
    let watch = Interconnect::new(dialer, fixed_config(1, plaintext));
    let app = hub.register("bench", 1, None).await?;
    let mut events = app.events().ok_or("events taken")?;
    // The phone's app takes each message as it comes, which acknowledges it.
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while let Some(event) = events.next().await {
            if let ConnectionEvent::Message(_) = event {
                got += 1;
                if got == n {
                    break;
                }
            }
        }
        got
    });
    let conn = watch.instance("bench", None);
    if !conn.diagnosis(None).await.is_ok() {
        return Err("the channel did not open".into());
    }
    let payload = Bytes::from(vec![7u8; 64]);
    for _ in 0..n {
        conn.send_bytes(ContentType::Binary, payload.clone())
            .await?;
    }
    if reader.await? != n {
        return Err("the phone's app missed messages".into());
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let n: usize = args.next().ok_or("round_trip_cost MODE N")?.parse()?;
    match mode.as_str() {
        "raw" => raw(n).await,
        "ours" => ours(n, false).await,
        "ours-plain" => ours(n, true).await,
        other => Err(format!("unknown mode {other:?}").into()),
    }
}
