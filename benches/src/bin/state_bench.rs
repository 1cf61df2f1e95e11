//! Latest-wins state against live messages, over TCP loopback: the watch sets one key
//! `n` times as fast as it can (`set_state`, a small JSON number), the phone's app
//! taking its events as they come, until it holds the last value; beside it, `n`
//! pipelined messages carrying the same numbers, in the same run. Both ends with the
//! defaults (encrypted), the phone on a thread and runtime of its own, as another
//! process would be. Prints the rate of changes made and how many `State` events the
//! phone's app saw: the updates coalescing spared the link and the app.
//!
//! `cargo run --release -p interconnect-benches --bin state_bench [n] [runs]`

use std::time::{Duration, Instant};

use interconnect::{
    Config, ConnectionEvent, DeviceIdentity, Hub, IdentityFile, Interconnect, NoiseConfig, Security,
};
use interconnect_benches::tcp::{BoxError, median, on_own_thread, watch_channel};
use interconnect_proto::DeviceId;
use tokio::sync::oneshot;

/// A phone (own thread) whose app reports when it got `n` messages or the state value
/// `n - 1`, with how many state events it saw; and a watch with the channel open.
struct Ends {
    _watch: Interconnect,
    conn: interconnect::Connection,
    done: oneshot::Receiver<(Instant, usize)>,
    _stop: oneshot::Sender<()>,
}

fn config(id: u8) -> Config {
    let mut config = Config::in_memory(DeviceId([id; 16]));
    config.session.security = Security::Noise(NoiseConfig::new(DeviceIdentity::generate()));
    config
}

async fn ends(n: usize) -> Result<Ends, BoxError> {
    let (addr_tx, addr_rx) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let _phone = on_own_thread(move || async move {
        let listener = transport_tcp::TcpListener::bind("127.0.0.1:0").await?;
        let _ = addr_tx.send(listener.local_addr());
        let hub = Hub::new(listener, config(2));
        let app = hub.register("bench", 1, None).await?;
        let mut events = app.events().unwrap();
        let (mut messages, mut states) = (0, 0);
        let mut done_tx = Some(done_tx);
        let last = (n - 1) as u64;
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                _ = &mut stopped => break,
            };
            let finished = match event {
                Some(ConnectionEvent::Message(_)) => {
                    messages += 1;
                    messages == n
                }
                Some(ConnectionEvent::State {
                    value: Some(value), ..
                }) => {
                    states += 1;
                    value.decode::<u64>().ok() == Some(last)
                }
                Some(_) => false,
                None => break,
            };
            if finished && let Some(tx) = done_tx.take() {
                let _ = tx.send((Instant::now(), states));
            }
        }
        drop(hub);
        Ok::<_, BoxError>(())
    });
    let addr = addr_rx.await?;
    let (watch, conn) = watch_channel(transport_tcp::TcpDialer::new(addr), config(1)).await?;
    Ok(Ends {
        _watch: watch,
        conn,
        done,
        _stop: stop,
    })
}

/// Time for `n` pipelined messages to reach the phone's app (every send resolved too).
async fn messages(n: usize) -> Result<Duration, BoxError> {
    let ends = ends(n).await?;
    let start = Instant::now();
    let sends: Vec<_> = (0..n).map(|i| ends.conn.send(&i)).collect();
    for send in sends {
        send.await?;
    }
    let (end, _) = ends.done.await?;
    Ok(end.max(Instant::now()) - start)
}

/// Time for the phone's app to hold the last of `n` values set one after another, and
/// how many state events it saw on the way.
async fn states(n: usize) -> Result<(Duration, usize), BoxError> {
    let ends = ends(n).await?;
    let start = Instant::now();
    for i in 0..n {
        ends.conn.set_state("n", &i)?;
        if i % 64 == 63 {
            // Let the driver run now and then, as an app producing values over time does.
            tokio::task::yield_now().await;
        }
    }
    let (end, seen) = ends.done.await?;
    Ok((end - start, seen))
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
    let (mut sent, mut set, mut seen) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        sent.push(rate(messages(n).await?));
        let (took, events) = states(n).await?;
        set.push(rate(took));
        seen.push(events as f64);
    }
    let ratio = median(set.iter().zip(&sent).map(|(s, m)| s / m).collect());
    println!("{n} changes of one value over TCP loopback, encrypted, median of {runs} runs:");
    println!(
        "  messages (send, every value delivered)     {:>8.0} k/s",
        median(sent) / 1e3
    );
    println!(
        "  state (set_state, the newest delivered)    {:>8.0} k/s  {ratio:.2}x the messages",
        median(set) / 1e3
    );
    println!(
        "  state events the phone's app saw: {:.0} of {n} changes ({:.4} per change)",
        median(seen.clone()),
        median(seen) / n as f64
    );
    Ok(())
}
