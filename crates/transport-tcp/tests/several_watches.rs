//! One hub, several watches, over real TCP sockets on loopback: sixteen watches that
//! send messages and files at once, each arriving exactly once, in order and
//! byte-identical, on that watch's own connection; and a watch whose link stalls (a
//! proxy that forwards nothing more) while another is served all the same.

use std::collections::HashMap;
use std::time::Duration;

use interconnect::{
    Config, Connection, ConnectionEvent, DeviceId, FilesConfig, Hub, Interconnect, Watch,
};
use interconnect_conformance::proxy::{Fault, FaultProxy};
use rand::{Rng, SeedableRng, rngs::StdRng};
use transport_tcp::{TcpDialer, TcpListener};

const PKG: &str = "com.example.fleet";
const WAIT: Duration = Duration::from_secs(60);

fn quick(mut config: Config) -> Config {
    config.backoff.initial = Duration::from_millis(20);
    config.backoff.max = Duration::from_millis(500);
    config
}

/// A hub of up to `max` watches on a loopback port, receiving files into `dir`, open
/// to new watches for a minute (trust on first use, per watch).
async fn hub(max: usize, dir: &std::path::Path) -> (Hub, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let mut config = quick(Config::in_memory(DeviceId([200; 16])));
    config.max_watches = max;
    config.files = Some(FilesConfig::new(dir));
    let hub = Hub::new(listener, config);
    hub.admit_new_watches(WAIT).unwrap();
    (hub, addr)
}

fn content(id: u8, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    StdRng::seed_from_u64(u64::from(id)).fill(&mut data[..]);
    data
}

/// What one watch's connection delivered: its messages in order, then its file.
async fn collect(watch: Watch, messages: usize) -> (u8, Vec<u32>, Vec<u8>) {
    let id = watch.device.id.0[0];
    let mut events = watch.connection.events().unwrap();
    let (mut got, mut file) = (Vec::new(), None);
    while got.len() < messages || file.is_none() {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "watch {id}: {} messages, file {}",
                    got.len(),
                    file.is_some()
                )
            })
            .expect("the hub runs");
        match event {
            ConnectionEvent::Message(m) => got.push(m.decode().unwrap()),
            ConnectionEvent::File { path, .. } => file = Some(std::fs::read(path).unwrap()),
            ConnectionEvent::Error { code, message } => panic!("watch {id}: {code}: {message}"),
            _ => {}
        }
    }
    (id, got, file.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_watches_send_messages_and_files_at_once_each_exactly_once_on_its_own_connection() {
    const WATCHES: u8 = 16;
    const MESSAGES: u32 = 300;
    const FILE: usize = 512 * 1024;
    let dirs = tempfile::tempdir().unwrap();
    let (hub, addr) = hub(usize::from(WATCHES), &dirs.path().join("hub")).await;
    let mut registered = hub.register_watches(PKG, 1, None).await.unwrap();
    let readers = tokio::spawn(async move {
        let mut readers = Vec::new();
        for _ in 0..WATCHES {
            let watch = tokio::time::timeout(WAIT, registered.next())
                .await
                .expect("every watch connects")
                .unwrap();
            readers.push(tokio::spawn(collect(watch, MESSAGES as usize)));
        }
        readers
    });

    let mut senders = Vec::new();
    for id in 1..=WATCHES {
        let path = dirs.path().join(format!("watch-{id}.bin"));
        std::fs::write(&path, content(id, FILE)).unwrap();
        let watch = Interconnect::new(
            TcpDialer::new(addr),
            quick(Config::in_memory(DeviceId([id; 16]))),
        );
        senders.push(tokio::spawn(async move {
            let conn: Connection = watch.instance(PKG, None);
            let file = conn.send_file(&path);
            let sends: Vec<_> = (0..MESSAGES)
                .map(|n| conn.send(&(u32::from(id) * 10_000 + n)))
                .collect();
            for sent in sends {
                sent.await.unwrap();
            }
            file.await.unwrap();
            watch
        }));
    }
    let mut watches = Vec::new();
    for sender in senders {
        watches.push(sender.await.unwrap());
    }
    let mut seen = HashMap::new();
    for reader in readers.await.unwrap() {
        let (id, messages, file) = reader.await.unwrap();
        let expected: Vec<u32> = (0..MESSAGES).map(|n| u32::from(id) * 10_000 + n).collect();
        assert_eq!(
            messages, expected,
            "watch {id}: its own messages, once, in order"
        );
        assert!(
            file == content(id, FILE),
            "watch {id}: its own file, byte-identical"
        );
        assert!(seen.insert(id, ()).is_none(), "one connection per watch");
    }
    assert_eq!(seen.len(), usize::from(WATCHES));
    hub.shutdown().await;
}

/// The next message on `events`, a number.
async fn next_number(events: &mut interconnect::Events) -> u32 {
    loop {
        let event = tokio::time::timeout(WAIT, events.next()).await.unwrap();
        if let ConnectionEvent::Message(m) = event.expect("the stream is open") {
            return m.decode().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_link_stalls_holds_up_no_other() {
    let dirs = tempfile::tempdir().unwrap();
    let (hub, addr) = hub(4, dirs.path()).await;
    let mut registered = hub.register_watches(PKG, 1, None).await.unwrap();
    let proxy = FaultProxy::start(addr, None, 7).await.unwrap();
    let stalled = Interconnect::new(
        TcpDialer::new(proxy.addr()),
        quick(Config::in_memory(DeviceId([1; 16]))),
    );
    let fast = Interconnect::new(
        TcpDialer::new(addr),
        quick(Config::in_memory(DeviceId([2; 16]))),
    );
    let stalled_conn = stalled.instance(PKG, None);
    let fast_conn = fast.instance(PKG, None);
    assert!(stalled_conn.diagnosis(Some(WAIT)).await.is_ok());
    assert!(fast_conn.diagnosis(Some(WAIT)).await.is_ok());
    let mut by_id = HashMap::new();
    for _ in 0..2 {
        let watch = tokio::time::timeout(WAIT, registered.next())
            .await
            .unwrap()
            .unwrap();
        by_id.insert(watch.device.id.0[0], watch);
    }
    // The first watch's link becomes a black hole, with the phone app sending to it.
    proxy.fault_now(Fault::Stall);
    let to_stalled: Vec<_> = (0..100u32).map(|n| by_id[&1].connection.send(&n)).collect();
    // The other watch gets 1,000 round trips through, one after another.
    let mut events = by_id[&2].connection.events().unwrap();
    let mut fast_events = fast_conn.events().unwrap();
    for n in 0..1000u32 {
        let sent = fast_conn.send(&n);
        assert_eq!(next_number(&mut events).await, n);
        sent.await.unwrap();
        let reply = by_id[&2].connection.send(&n);
        assert_eq!(next_number(&mut fast_events).await, n);
        reply.await.unwrap();
    }
    drop(to_stalled);
    hub.shutdown().await;
}
