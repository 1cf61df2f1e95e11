//! A connection flood cannot keep the real watch out. Strangers at 127.0.0.2–9 open 100
//! connections a second that send nothing and 100 that send a valid first handshake step
//! and stall; the watch, 20 ms away each direction through a proxy, is served in each of
//! 10 attempts within 2 s, both with no link up and with its stale link up (an earlier
//! watch process with the same identity, frozen: its runtime blocked, its socket open).

use interconnect::IdentityFile;
use std::time::{Duration, Instant};

use interconnect::{DeviceIdentity, Hub, Interconnect};
use interconnect_conformance::flood::{DelayProxy, Flood, FrozenWatch, stranger_sources};
use transport_tcp::{TcpDialer, TcpListener};

mod common;
use common::pinned;

const ATTEMPTS: usize = 10;
const PKG: &str = "com.example.flood";
const SERVED_WITHIN: Duration = Duration::from_secs(2);

/// How long each attempt of the watch took to be served (`None`: not within 10 s).
async fn attempts(stale: bool) -> Vec<Option<Duration>> {
    let (phone, watch) = (DeviceIdentity::generate(), DeviceIdentity::generate());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let hub = Hub::new(listener, pinned(2, &phone, &[&watch]));
    let _app = hub.register(PKG, 1, None).await.unwrap();
    let proxy = DelayProxy::start(addr, Duration::from_millis(20))
        .await
        .unwrap();
    // The flood runs on a runtime of its own, as another machine would.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (tally_tx, tally_rx) = std::sync::mpsc::channel();
    let flood = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let flood = Flood::start(addr, 100, 100, stranger_sources(), Duration::from_secs(30));
            tally_tx.send(flood.tally()).unwrap();
            let _ = stop_rx.await;
            format!("{:?}", flood.tally())
        })
    });
    // The flood reaches its steady state first: every slot for links in their
    // handshake is taken, and strangers are being pushed out.
    let tally = tally_rx.recv().unwrap();
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    while tally.closed.load(std::sync::atomic::Ordering::Relaxed) < 100 {
        poll.tick().await;
    }
    let mut times = Vec::new();
    for _ in 0..ATTEMPTS {
        let frozen = stale.then(|| {
            FrozenWatch::start(TcpDialer::new(addr), pinned(1, &watch, &[&phone]), PKG).unwrap()
        });
        let started = Instant::now();
        let served = Interconnect::new(TcpDialer::new(proxy.addr()), pinned(1, &watch, &[&phone]));
        let outcome = tokio::time::timeout(Duration::from_secs(10), served.connected()).await;
        times.push(outcome.ok().map(|()| started.elapsed()));
        served.shutdown().await;
        drop(frozen);
        let _ = tokio::time::timeout(Duration::from_secs(10), hub.disconnected()).await;
    }
    let _ = stop_tx.send(());
    let tally = flood.join().unwrap();
    eprintln!("stale link up: {stale}; served after {times:?}; flood {tally}");
    times
}

fn assert_served(times: &[Option<Duration>]) {
    let served = times
        .iter()
        .filter(|t| t.is_some_and(|t| t <= SERVED_WITHIN))
        .count();
    assert_eq!(served, ATTEMPTS, "served within 2 s: {times:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_stalled_connections_cannot_keep_the_watch_out_with_no_link_up() {
    assert_served(&attempts(false).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_stalled_connections_cannot_keep_the_watch_out_with_its_stale_link_up() {
    assert_served(&attempts(true).await);
}
