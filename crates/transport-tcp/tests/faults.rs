//! The whole stack through real TCP faults: the conformance crate's fault proxy between
//! the watch's dialer and the phone's listener cuts, resets one side, stalls and delays.
//! Files, messages and the takeover of a watch's new link must hold through all of it.
//!
//! `FAULT_SEED=n` replays a run with another seed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use interconnect::{
    Config, Connection, ConnectionEvent, Events, FilesConfig, Hub, Interconnect, Security,
};
use interconnect_conformance::proxy::{Fault, FaultProxy, Plan};
use interconnect_proto::{ContentType, DeviceId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use transport_tcp::{TcpDialer, TcpListener};

const PKG: &str = "com.example.faults";
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

fn seed(default: u64) -> u64 {
    std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Session timers short enough that a silent link is noticed within a second.
fn quick(mut config: Config) -> Config {
    config.session.ping_interval = Duration::from_millis(200);
    config.session.link_timeout = Duration::from_millis(1000);
    config.session.handshake_timeout = Duration::from_secs(2);
    config.backoff.initial = Duration::from_millis(10);
    config.backoff.max = Duration::from_millis(200);
    config.send_timeout = Duration::from_secs(120);
    config
}

struct Ends {
    watch: Interconnect,
    hub: Hub,
    proxy: FaultProxy,
    dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// A phone on a listener and a watch dialing it through a proxy with this plan.
async fn ends(plan: Option<Plan>, seed: u64, phone: Config, watch: Config) -> Ends {
    let send_dir = tempfile::tempdir().unwrap();
    let recv_dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = FaultProxy::start(listener.local_addr(), plan, seed)
        .await
        .unwrap();
    let mut phone = phone;
    let mut files = FilesConfig::new(recv_dir.path());
    files.reserve_free_bytes = 0;
    phone.files = Some(files);
    Ends {
        hub: Hub::new(listener, phone),
        watch: Interconnect::new(TcpDialer::new(proxy.addr()), watch),
        proxy,
        dirs: (send_dir, recv_dir),
    }
}

async fn open(e: &Ends) -> (Connection, Connection) {
    let app = e.hub.register(PKG, 1, None).await.unwrap();
    let conn = e.watch.instance(PKG, None);
    let diagnosis = conn.diagnosis(Some(Duration::from_secs(30))).await;
    assert!(diagnosis.is_ok(), "{diagnosis:?}");
    (conn, app)
}

async fn next(events: &mut Events, within: Duration) -> ConnectionEvent {
    tokio::time::timeout(within, events.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
}

fn content(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    StdRng::seed_from_u64(len as u64).fill(&mut data[..]);
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_32_mib_file_arrives_byte_identical_through_a_fault_every_1_to_4_mib() {
    let seed = seed(1);
    let plan = Plan {
        every: MIB..4 * MIB,
        faults: vec![Fault::Cut, Fault::Cut, Fault::ResetWatch, Fault::ResetPhone],
        delay: Duration::ZERO,
    };
    let phone = quick(Config::in_memory(DeviceId([2; 16])));
    let watch = quick(Config::in_memory(DeviceId([1; 16])));
    let e = ends(Some(plan), seed, phone, watch).await;
    let (conn, app) = open(&e).await;
    let mut app_events = app.events().unwrap();
    let data = content(32 * MIB as usize);
    let path = e.dirs.0.path().join("big.bin");
    std::fs::write(&path, &data).unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(240), conn.send_file(&path))
        .await
        .expect("the file is stored within four minutes")
        .expect("the file is stored despite the faults");
    let stored = loop {
        match next(&mut app_events, Duration::from_secs(30)).await {
            ConnectionEvent::File { path, .. } => break path,
            ConnectionEvent::Error { code, message } => panic!("{code}: {message}"),
            _ => {}
        }
    };
    eprintln!(
        "seed {seed}: 32 MiB in {:.1} s through {}",
        started.elapsed().as_secs_f64(),
        e.proxy.report()
    );
    assert!(std::fs::read(stored).unwrap() == data, "byte-identical");
    // At least one fault per 4 MiB went by (the plan's widest gap): the file crossed
    // them, resuming each time, since no link carried all of it.
    assert!(e.proxy.faults() >= 8, "{}", e.proxy.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_messages_each_way_arrive_once_and_in_order_through_faults() {
    messages_through_faults(false).await;
}

/// In plaintext a run of small frames leaves in one buffer (TCP is a stream link): cut
/// anywhere in such a run, what was lost is sent again, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_plaintext_two_thousand_messages_each_way_arrive_once_and_in_order_through_faults() {
    messages_through_faults(true).await;
}

async fn messages_through_faults(plaintext: bool) {
    const COUNT: u32 = 2_000;
    let seed = seed(2);
    let plan = Plan {
        every: 64 * KIB..256 * KIB,
        faults: vec![
            Fault::Cut,
            Fault::ResetWatch,
            Fault::ResetPhone,
            Fault::Stall,
        ],
        delay: Duration::from_millis(2),
    };
    let mut phone = quick(Config::in_memory(DeviceId([2; 16])));
    let mut watch = quick(Config::in_memory(DeviceId([1; 16])));
    if plaintext {
        phone.session.security = Security::InsecurePlaintext;
        watch.session.security = Security::InsecurePlaintext;
    }
    let e = ends(Some(plan), seed, phone, watch).await;
    let (conn, app) = open(&e).await;
    let started = Instant::now();
    // Each message: its index, then filler so the faults fall among them.
    let message = |i: u32| {
        let mut m = i.to_be_bytes().to_vec();
        m.resize(1_000, (i % 251) as u8);
        Bytes::from(m)
    };
    let sends = |from: &Connection| {
        (0..COUNT)
            .map(|i| tokio::spawn(from.send_bytes(ContentType::Binary, message(i))))
            .collect::<Vec<_>>()
    };
    let (to_phone, to_watch) = (sends(&conn), sends(&app));
    let receive = |mut events: Events| async move {
        let mut got = Vec::new();
        while got.len() < COUNT as usize {
            match next(&mut events, Duration::from_secs(60)).await {
                ConnectionEvent::Message(m) => {
                    let i = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                    assert_eq!(m.payload, message(i), "message {i} intact");
                    got.push(i);
                }
                ConnectionEvent::Error { code, message } => panic!("{code}: {message}"),
                _ => {}
            }
        }
        got
    };
    let (at_phone, at_watch) = tokio::join!(
        receive(app.events().unwrap()),
        receive(conn.events().unwrap())
    );
    for (side, sends, got) in [("phone", to_phone, at_phone), ("watch", to_watch, at_watch)] {
        let mut delivered = 0;
        for (i, send) in sends.into_iter().enumerate() {
            if send.await.unwrap().is_ok() {
                delivered += 1;
                assert!(
                    got.contains(&(i as u32)),
                    "acknowledged {i} reached the {side}"
                );
            }
        }
        // Exactly once, in order: nothing missing, nothing twice.
        assert_eq!(got, (0..COUNT).collect::<Vec<_>>(), "at the {side}");
        assert_eq!(delivered, COUNT, "every send to the {side} acknowledged");
    }
    eprintln!(
        "seed {seed}, plaintext {plaintext}: {COUNT} messages each way in {:.1} s through {}",
        started.elapsed().as_secs_f64(),
        e.proxy.report()
    );
    assert!(e.proxy.faults() >= 10, "{}", e.proxy.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_old_link_stalled_is_served_on_its_new_link_at_once() {
    // The phone would wait ten minutes for its old link; the watch notices the silence
    // in a second and dials again. The phone must serve the new link at once.
    let mut phone = quick(Config::in_memory(DeviceId([2; 16])));
    phone.session.ping_interval = Duration::from_secs(300);
    phone.session.link_timeout = Duration::from_secs(600);
    let watch = quick(Config::in_memory(DeviceId([1; 16])));
    let e = ends(None, 3, phone, watch).await;
    let (conn, app) = open(&e).await;
    let mut watch_events = conn.events().unwrap();
    let mut app_events = app.events().unwrap();
    // Bound: the watch's link timeout (1 s) plus a handshake and a backoff step.
    let bound = Duration::from_secs(5);
    let before = conn.send(&"before");
    let mut got = Vec::new();
    while got.is_empty() {
        if let ConnectionEvent::Message(m) = next(&mut app_events, bound).await {
            got.push(m.decode::<String>().unwrap());
        }
    }
    before.await.unwrap();

    e.proxy.fault_now(Fault::Stall);
    let stalled = Instant::now();
    // The first open, then (after the stall) the resumed one.
    let mut opens = 0;
    while opens < 2 {
        if let ConnectionEvent::Open { is_reconnected } = next(&mut watch_events, bound).await {
            assert_eq!(is_reconnected, opens == 1, "first opened, then resumed");
            opens += 1;
        }
    }
    let served = stalled.elapsed();
    let after = conn.send(&"after");
    while got.len() < 2 {
        if let ConnectionEvent::Message(m) = next(&mut app_events, bound).await {
            got.push(m.decode::<String>().unwrap());
        }
    }
    after.await.unwrap();
    assert_eq!(got, ["before", "after"]);
    eprintln!(
        "stalled link: the channel reopened {:.0} ms after the stall (watch link timeout 1000 ms, phone 600 s)",
        served.as_secs_f64() * 1e3
    );
    assert_eq!(e.proxy.faults(), 1);
}
