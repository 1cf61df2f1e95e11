//! Seeded simulation: a watch and a hub over the mock link with random faults and cuts.
//! For every seed, 1,000 messages each way must arrive exactly once and in order, every
//! `send` must resolve exactly once and succeed, and each side's events must form a legal
//! sequence. Beside them each side sets a state key again and again: the values the peer
//! sees only ever rise, and it ends with the last one. A failing seed names itself:
//! replay it with `SIM_SEED=N`.
//!
//! `SIM_SEEDS` sets how many seeds run (default 200).

use std::time::Duration;

use bytes::Bytes;
use interconnect::*;
use interconnect_proto::{Code, ContentType, DeviceId};
use rand::{Rng, SeedableRng, rngs::StdRng};
use transport_mock::{Faults, MockNetwork};

const PKG: &str = "com.example.sim";
const MESSAGES: u32 = 1000;

fn faults_for(seed: u64) -> Faults {
    let mut rng = StdRng::seed_from_u64(seed);
    Faults {
        seed,
        latency: Duration::from_millis(rng.random_range(0..30)),
        bandwidth: Some(rng.random_range(200_000..5_000_000)),
        max_frame_len: 4096,
        loss: rng.random_range(0.0..0.02),
        duplicate: rng.random_range(0.0..0.02),
        reorder: rng.random_range(0.0..0.02),
        corrupt: rng.random_range(0.0..0.005),
        stall: rng.random_range(0.0..0.002),
        stall_for: Duration::from_millis(rng.random_range(100..20_000)),
        cut: rng.random_range(0.0..0.003),
    }
}

/// Checks the event sequence of one side and returns the messages in arrival order.
fn legal_messages(side: &str, seed: u64, events: &[ConnectionEvent]) -> Vec<u32> {
    let mut open = false;
    let mut opened_before = false;
    let mut messages = Vec::new();
    let mut state = None;
    for (i, event) in events.iter().enumerate() {
        match event {
            ConnectionEvent::Open { is_reconnected } => {
                assert!(!open, "seed {seed} {side}: open while open at event {i}");
                assert_eq!(
                    *is_reconnected, opened_before,
                    "seed {seed} {side}: is_reconnected wrong at event {i}"
                );
                open = true;
                opened_before = true;
            }
            ConnectionEvent::Close { code, .. } => {
                assert!(open, "seed {seed} {side}: close while closed at event {i}");
                assert_eq!(*code, Code::CONNECTION_LOST, "seed {seed} {side}");
                open = false;
            }
            ConnectionEvent::Message(message) => {
                assert!(open, "seed {seed} {side}: message before open at event {i}");
                let text = std::str::from_utf8(&message.payload).expect("utf-8");
                messages.push(text.parse().expect("a number"));
            }
            ConnectionEvent::State { key, value } => {
                assert!(open, "seed {seed} {side}: state before open at event {i}");
                assert_eq!(key, "n", "seed {seed} {side}");
                let n: u32 = value
                    .as_ref()
                    .expect("never removed")
                    .decode()
                    .expect("a number");
                assert!(
                    state.is_none_or(|last| n > last),
                    "seed {seed} {side}: state {n} after {state:?} at event {i}"
                );
                state = Some(n);
            }
            other => panic!("seed {seed} {side}: unexpected event {other:?}"),
        }
    }
    messages
}

async fn run_seed(seed: u64) -> u64 {
    let network = MockNetwork::new(faults_for(seed));
    let (dialer, listener) = network.endpoints();
    let config = |id: u8| {
        let mut config = Config::in_memory(DeviceId([id; 16]));
        config.seed = Some(seed ^ u64::from(id));
        config.send_timeout = Duration::from_secs(24 * 3600);
        config.session.max_in_flight = 32;
        config
    };
    let hub = Hub::new(listener, config(2));
    let watch = Interconnect::new(dialer, config(1));
    let app = hub.register(PKG, 1, None).await.expect("register");
    let conn = watch.instance(PKG, None);

    let collect = |events: Events| async move {
        let mut events = events;
        let mut seen = Vec::new();
        let mut count = 0;
        while count < MESSAGES {
            let event = events.next().await.expect("events continue");
            if matches!(event, ConnectionEvent::Message(_)) {
                count += 1;
            }
            seen.push(event);
        }
        seen
    };
    let watch_events = tokio::spawn(collect(conn.events().unwrap()));
    let app_events = tokio::spawn(collect(app.events().unwrap()));

    let send_all = |conn: Connection| async move {
        // The phone app can send once the watch has opened its channel.
        while !conn.diagnosis(None).await.is_ok() {}
        let futures: Vec<_> = (0..MESSAGES)
            .map(|i| {
                if i % 10 == 0 {
                    conn.set_state("n", &i).expect("state");
                }
                conn.send_bytes(ContentType::Binary, Bytes::from(i.to_string()))
            })
            .collect();
        let mut ok = 0;
        for future in futures {
            future.await.expect("send succeeds");
            ok += 1;
        }
        conn.set_state("n", &MESSAGES).expect("state");
        ok
    };
    let watch_sent = tokio::spawn(send_all(conn.clone()));
    let app_sent = tokio::spawn(send_all(app.clone()));

    let everything = async {
        (
            watch_sent.await.expect("watch sender"),
            app_sent.await.expect("app sender"),
            watch_events.await.expect("watch events"),
            app_events.await.expect("app events"),
        )
    };
    let (watch_ok, app_ok, watch_seen, app_seen) =
        tokio::time::timeout(Duration::from_secs(24 * 3600), everything)
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: did not finish in a virtual day"));
    assert_eq!((watch_ok, app_ok), (MESSAGES, MESSAGES), "seed {seed}");
    let expected: Vec<u32> = (0..MESSAGES).collect();
    assert_eq!(
        legal_messages("phone", seed, &app_seen),
        expected,
        "seed {seed}: phone received"
    );
    assert_eq!(
        legal_messages("watch", seed, &watch_seen),
        expected,
        "seed {seed}: watch received"
    );
    // Each side ends with the other's last value, whatever the link did meanwhile.
    let settled = async {
        let last = |c: &Connection| c.peer_state("n").and_then(|v| v.decode::<u32>().ok());
        while last(&conn) != Some(MESSAGES) || last(&app) != Some(MESSAGES) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(24 * 3600), settled)
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: the last state did not arrive in a virtual day"));
    watch.shutdown().await;
    hub.shutdown().await;
    network.links_made()
}

fn run(seed: u64) -> u64 {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(run_seed(seed))
}

#[test]
fn messages_arrive_exactly_once_and_in_order_under_faults() {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        run(seed);
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut links = 0;
    for seed in 0..seeds {
        let result = std::panic::catch_unwind(|| run(seed));
        match result {
            Ok(made) => links += made,
            Err(panic) => {
                eprintln!("simulation failed for seed {seed}; replay with SIM_SEED={seed}");
                std::panic::resume_unwind(panic);
            }
        }
    }
    println!("{seeds} seeds, {MESSAGES} messages each way per seed, {links} links opened in all");
    assert!(links > seeds, "the faults cut links in some seeds");
}
