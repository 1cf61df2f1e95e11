//! A hub that serves several watches at once (`Config::max_watches`), over mock links on
//! tokio's paused clock: each watch its own connection, trust per watch, the bound, and
//! a stalled watch that holds up no other. The same over real TCP sockets is in
//! transport-tcp's tests.

mod common;
use common::refusal;

use std::time::Duration;

use interconnect::*;
use transport_mock::{Faults, MockNetwork};

const PKG: &str = "com.example.fleet";

fn identity(key: u8) -> DeviceIdentity {
    DeviceIdentity::from_private_key([key; 32])
}

fn config(id: u8, trust: Option<TrustPolicy>) -> Config {
    let mut config = Config::in_memory(DeviceId([id; 16]));
    config.seed = Some(u64::from(id));
    let mut noise = NoiseConfig::new(identity(id));
    if let Some(trust) = trust {
        noise = noise.with_trust(trust);
    }
    config.session.security = Security::Noise(noise);
    config.backoff.initial = Duration::from_millis(20);
    config.backoff.max = Duration::from_millis(200);
    config
}

fn hub_config(max_watches: usize, trust: Option<TrustPolicy>) -> Config {
    let mut config = config(100, trust);
    config.max_watches = max_watches;
    config
}

/// A hub and `n` watches (ids and keys 1..=n), each on its own mock network.
fn fleet(n: usize, hub: Config) -> (Vec<MockNetwork>, Hub, Vec<Interconnect>) {
    let nets = MockNetwork::several(Faults::default(), n);
    let hub = Hub::new(nets[0].endpoints().1, hub);
    let watches = (0..n).map(|i| watch(&nets, i)).collect();
    (nets, hub, watches)
}

/// Watch `i + 1` on network `i`.
fn watch(nets: &[MockNetwork], i: usize) -> Interconnect {
    Interconnect::new(nets[i].endpoints().0, config(i as u8 + 1, None))
}

async fn next_watch(watches: &mut Watches) -> Watch {
    tokio::time::timeout(Duration::from_secs(60), watches.next())
        .await
        .expect("a watch within a minute")
        .expect("the hub runs")
}

/// The next message on `events`, skipping other events.
async fn message(events: &mut Events) -> u32 {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), events.next()).await {
            Ok(Some(ConnectionEvent::Message(m))) => return m.decode().unwrap(),
            Ok(Some(_)) => {}
            other => panic!("no message: {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn each_watch_gets_its_own_connection_and_messages_never_cross() {
    let (_nets, hub, watches) = fleet(3, hub_config(4, None));
    hub.admit_new_watches(Duration::from_secs(600)).unwrap();
    let mut registered = hub.register_watches(PKG, 1, None).await.unwrap();
    let conns: Vec<Connection> = watches.iter().map(|w| w.instance(PKG, None)).collect();
    // Each watch sends 100 messages tagged with its id, pipelined.
    let sending: Vec<_> = conns
        .iter()
        .zip(1u32..)
        .flat_map(|(conn, id)| (0..100).map(move |n| conn.send(&(id * 1000 + n))))
        .collect();
    let mut seen = Vec::new();
    let mut replies = Vec::new();
    for _ in 0..3 {
        let watch = next_watch(&mut registered).await;
        let id = u32::from(watch.device.id.0[0]);
        assert_eq!(
            watch.device.fingerprint,
            Some(identity(id as u8).fingerprint()),
            "the device is who its handshake proved"
        );
        let mut events = watch.connection.events().unwrap();
        let got: Vec<u32> = futures_collect(&mut events, 100).await;
        assert_eq!(got, (0..100).map(|n| id * 1000 + n).collect::<Vec<_>>());
        // A reply goes to that watch alone.
        replies.push(watch.connection.send(&(id * 7)));
        seen.push((id, watch));
    }
    for sent in sending {
        sent.await.unwrap();
    }
    for (i, conn) in conns.iter().enumerate() {
        let mut events = conn.events().unwrap();
        assert_eq!(message(&mut events).await, (i as u32 + 1) * 7);
        assert!(
            tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    if let Some(ConnectionEvent::Message(m)) = events.next().await {
                        return m;
                    }
                }
            })
            .await
            .is_err(),
            "nothing meant for another watch"
        );
    }
    for reply in replies {
        reply.await.unwrap();
    }
    assert_eq!(hub.peer_device_status(), PeerDeviceStatus::Connected);
    hub.shutdown().await;
    assert_eq!(hub.peer_device_status(), PeerDeviceStatus::Disconnected);
}

async fn futures_collect(events: &mut Events, count: usize) -> Vec<u32> {
    let mut got = Vec::new();
    while got.len() < count {
        got.push(message(events).await);
    }
    got
}

#[tokio::test(start_paused = true)]
async fn a_new_watch_is_refused_with_4007_until_the_hub_admits_new_ones() {
    let nets = MockNetwork::several(Faults::default(), 2);
    let hub = Hub::new(nets[0].endpoints().1, hub_config(4, None));
    let mut hub_security = hub.security_events().unwrap();
    let mut registered = hub.register_watches(PKG, 1, None).await.unwrap();
    // The first watch is pinned by first use, as on a hub of one.
    let early = watch(&nets, 0);
    let first = early.instance(PKG, None);
    assert!(first.diagnosis(None).await.is_ok());
    assert_eq!(
        next_watch(&mut registered).await.device.id,
        DeviceId([1; 16])
    );

    let late = watch(&nets, 1);
    let mut second_security = late.security_events().unwrap();
    let second = late.instance(PKG, None);
    assert!(matches!(
        refusal(&mut hub_security).await,
        SecurityError::PeerChanged { .. }
    ));
    let told = refusal(&mut second_security).await;
    assert_eq!(told.code(), Code::UNTRUSTED_PEER, "{told:?}");
    let diagnosis = second.diagnosis(Some(Duration::from_secs(5))).await;
    assert_eq!(
        diagnosis.code,
        Code::UNTRUSTED_PEER,
        "the watch is told, no timeout"
    );

    // The user opens the hub to a new watch: the next attempt is pinned and served.
    hub.admit_new_watches(Duration::from_secs(60)).unwrap();
    tokio::time::timeout(Duration::from_secs(60), late.connected())
        .await
        .expect("the watch's next attempt is served");
    assert!(
        second
            .diagnosis(Some(Duration::from_secs(60)))
            .await
            .is_ok()
    );
    assert_eq!(
        next_watch(&mut registered).await.device.id,
        DeviceId([2; 16])
    );
}

#[tokio::test(start_paused = true)]
async fn a_watch_past_the_bound_is_refused_as_busy_and_the_others_stay_served() {
    let pinned = (1..=3).map(|k| identity(k).fingerprint()).collect();
    let (_nets, hub, watches) = fleet(3, hub_config(2, Some(TrustPolicy::Pinned(pinned))));
    let _registered = hub.register_watches(PKG, 1, None).await.unwrap();
    let conns: Vec<Connection> = watches[..2].iter().map(|w| w.instance(PKG, None)).collect();
    for conn in &conns {
        assert!(conn.diagnosis(None).await.is_ok());
    }
    let third = watches[2].instance(PKG, None);
    let diagnosis = third.diagnosis(Some(Duration::from_secs(5))).await;
    assert_eq!(diagnosis.code, Code::BUSY, "{diagnosis:?}");
    for conn in &conns {
        assert!(conn.diagnosis(None).await.is_ok());
    }
}

#[tokio::test(start_paused = true)]
async fn a_watch_that_comes_back_finds_its_own_connection() {
    let (nets, hub, watches) = fleet(2, hub_config(4, None));
    hub.admit_new_watches(Duration::from_secs(600)).unwrap();
    let mut registered = hub.register_watches(PKG, 1, None).await.unwrap();
    let conns: Vec<Connection> = watches.iter().map(|w| w.instance(PKG, None)).collect();
    let mut by_id = std::collections::HashMap::new();
    for _ in 0..2 {
        let watch = next_watch(&mut registered).await;
        let events = watch.connection.events().unwrap();
        by_id.insert(watch.device.id.0[0], (watch, events));
    }
    let (_, events) = by_id.get_mut(&1).unwrap();
    assert!(matches!(
        events.next().await,
        Some(ConnectionEvent::Open {
            is_reconnected: false
        })
    ));
    // Watch 1's link is cut; it reconnects by itself to the same connection.
    nets[0].cut();
    let sent = conns[0].send(&41u32);
    let (_, events) = by_id.get_mut(&1).unwrap();
    assert_eq!(message(events).await, 41);
    sent.await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(30), registered.next())
            .await
            .is_err(),
        "no second Watch for the same device"
    );
}

#[tokio::test(start_paused = true)]
async fn an_app_that_stops_reading_one_watch_holds_up_no_other() {
    let (_nets, hub, watches) = fleet(2, hub_config(4, None));
    hub.admit_new_watches(Duration::from_secs(600)).unwrap();
    let mut registered = hub.register_watches(PKG, 1, None).await.unwrap();
    let conns: Vec<Connection> = watches.iter().map(|w| w.instance(PKG, None)).collect();
    let mut stalled = None;
    let mut fast = None;
    for _ in 0..2 {
        let watch = next_watch(&mut registered).await;
        match watch.device.id.0[0] {
            1 => stalled = Some(watch),
            _ => fast = Some(watch),
        }
    }
    // Watch 1 floods an app that never reads it: its sends wait (the app's bound).
    let _flood: Vec<_> = (0..5000u32).map(|n| conns[0].send(&n)).collect();
    let _stalled = stalled.unwrap();
    // Watch 2 is served all the same, message after message.
    let fast = fast.unwrap();
    let mut events = fast.connection.events().unwrap();
    for n in 0..500u32 {
        let sent = conns[1].send(&n);
        assert_eq!(message(&mut events).await, n);
        sent.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn pairing_asks_the_user_per_watch() {
    let (_nets, hub, watches) = fleet(
        2,
        hub_config(4, Some(TrustPolicy::Pairing { known: vec![] })),
    );
    let mut hub_security = hub.security_events().unwrap();
    let mut registered = hub.register_watches(PKG, 1, None).await.unwrap();
    let conns: Vec<Connection> = watches.iter().map(|w| w.instance(PKG, None)).collect();
    let mut answered = Vec::new();
    while answered.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(60), hub_security.next())
            .await
            .expect("a pairing request")
            .unwrap();
        if let SecurityEvent::PairingRequest(request) = event {
            // The user accepts watch 1 and rejects watch 2.
            let accept = request.fingerprint() == identity(1).fingerprint();
            answered.push(accept);
            if accept {
                request.confirm();
            } else {
                request.reject();
            }
        }
    }
    assert!(
        conns[0]
            .diagnosis(Some(Duration::from_secs(60)))
            .await
            .is_ok()
    );
    assert_eq!(
        next_watch(&mut registered).await.device.id,
        DeviceId([1; 16])
    );
    let diagnosis = conns[1].diagnosis(Some(Duration::from_secs(5))).await;
    assert_eq!(diagnosis.code, Code::UNTRUSTED_PEER, "{diagnosis:?}");
}

#[tokio::test(start_paused = true)]
async fn each_kind_of_hub_says_which_registration_it_takes() {
    let (_nets, several, _) = fleet(1, hub_config(4, None));
    assert_eq!(
        several.register(PKG, 1, None).await.unwrap_err(),
        Error::SeveralWatches
    );
    let (_nets, one, _) = fleet(1, hub_config(1, None));
    assert_eq!(
        one.register_watches(PKG, 1, None).await.unwrap_err(),
        Error::OneWatch
    );
    assert_eq!(
        one.admit_new_watches(Duration::from_secs(1)).unwrap_err(),
        Error::OneWatch
    );
}

#[tokio::test(start_paused = true)]
async fn a_transport_of_one_link_at_a_time_serves_one_watch_whatever_max_watches_says() {
    // A dialer makes one link at a time: the hub serves as a hub of one, and says so.
    let (dialer, _) = MockNetwork::new(Faults::default()).endpoints();
    let hub = Hub::new(dialer, hub_config(4, None));
    assert_eq!(
        hub.register_watches(PKG, 1, None).await.unwrap_err(),
        Error::OneWatch
    );
    assert!(hub.register(PKG, 1, None).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_message_to_every_watch_reaches_each_open_one_once() {
    let (_nets, hub, watches) = fleet(3, hub_config(4, None));
    hub.admit_new_watches(Duration::from_secs(600)).unwrap();
    let mut registered = hub.register_watches(PKG, 1, None).await.unwrap();
    let conns: Vec<Connection> = watches.iter().map(|w| w.instance(PKG, None)).collect();
    for conn in &conns {
        assert!(conn.diagnosis(None).await.is_ok());
    }
    let mut served = Vec::new();
    for _ in 0..3 {
        let watch = next_watch(&mut registered).await;
        let mut events = watch.connection.events().unwrap();
        // Each channel is open once the app took its Open.
        assert!(matches!(
            events.next().await,
            Some(ConnectionEvent::Open { .. })
        ));
        served.push((watch, events));
    }
    // The app lets go of watch 3: it is no longer among "every watch".
    served.retain(|(w, _)| w.device.id != DeviceId([3; 16]));
    let sent = registered.send_to_all(&"to all");
    let mut reached: Vec<u8> = sent.iter().map(|(device, _)| device.id.0[0]).collect();
    reached.sort();
    assert_eq!(reached, [1, 2]);
    for (i, conn) in conns.iter().enumerate().take(2) {
        let mut events = conn.events().unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(60), events.next()).await {
                Ok(Some(ConnectionEvent::Message(m))) => {
                    assert_eq!(m.decode::<String>().unwrap(), "to all", "watch {}", i + 1);
                    break;
                }
                Ok(Some(_)) => {}
                other => panic!("watch {}: {other:?}", i + 1),
            }
        }
    }
    for (_, sending) in sent {
        sending.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn each_watch_is_known_by_the_name_it_gives() {
    let nets = MockNetwork::several(Faults::default(), 2);
    let hub = Hub::new(nets[0].endpoints().1, hub_config(4, None));
    hub.admit_new_watches(Duration::from_secs(600)).unwrap();
    let mut registered = hub.register_watches(PKG, 1, None).await.unwrap();
    // A name past 64 bytes is cut there, at a character boundary.
    let names = ["Alice's watch".to_string(), format!("{}é", "x".repeat(63))];
    let mut watches = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut config = config(i as u8 + 1, None);
        config.session.name = Some(name.clone());
        let watch = Interconnect::new(nets[i].endpoints().0, config);
        let conn = watch.instance(PKG, None);
        assert!(conn.diagnosis(None).await.is_ok());
        watches.push((watch, conn));
    }
    for _ in 0..2 {
        let watch = next_watch(&mut registered).await;
        let expected = match watch.device.id.0[0] {
            1 => "Alice's watch".to_string(),
            _ => "x".repeat(63),
        };
        assert_eq!(watch.connection.peer_name(), Some(expected));
    }
    // The watch knows the phone by no name: it gave none.
    assert_eq!(watches[0].1.peer_name(), None);
}
