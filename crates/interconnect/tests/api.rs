//! The watch and phone APIs end to end over the mock link, on tokio's paused clock.

use std::time::Duration;

use bytes::Bytes;
use interconnect::sans_io::*;
use interconnect::*;
use interconnect_proto::{Code, ContentType, DeviceId};
use serde::{Deserialize, Serialize};
use transport_mock::{Faults, MockNetwork};

const PKG: &str = "com.example.fit";
const FP: &str = "AB:CD:EF";

struct Setup {
    network: MockNetwork,
    watch: Interconnect,
    hub: Hub,
}

fn setup() -> Setup {
    let network = MockNetwork::new(Faults::default());
    let (dialer, listener) = network.endpoints();
    let mut watch_config = Config::in_memory(DeviceId([1; 16]));
    watch_config.seed = Some(1);
    let mut phone_config = Config::in_memory(DeviceId([2; 16]));
    phone_config.seed = Some(2);
    let hub = Hub::new(listener, phone_config);
    let watch = Interconnect::new(dialer, watch_config);
    Setup {
        network,
        watch,
        hub,
    }
}

/// The first event of every channel that opened fresh, and of one that resumed.
const OPENED: ConnectionEvent = ConnectionEvent::Open {
    is_reconnected: false,
};
const REOPENED: ConnectionEvent = ConnectionEvent::Open {
    is_reconnected: true,
};

/// Registers the app on the phone and opens the watch's channel to it.
async fn open(s: &Setup) -> (Connection, Connection) {
    let app = s.hub.register(PKG, 3, None).await.unwrap();
    let conn = s.watch.instance(PKG, None);
    assert!(conn.diagnosis(None).await.is_ok());
    (conn, app)
}

/// Takes every event of `conn` as it comes, as an app that reads its stream does
/// (messages are acknowledged once the app took them).
fn drain(conn: &Connection) {
    let mut events = conn.events().unwrap();
    tokio::spawn(async move { while events.next().await.is_some() {} });
}

async fn next(events: &mut Events) -> ConnectionEvent {
    tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .expect("an event within a minute")
        .expect("the stream is open")
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Steps {
    steps: u32,
}

#[tokio::test(start_paused = true)]
async fn peer_device_status_follows_the_link() {
    let s = setup();
    assert_eq!(s.watch.peer_device_status(), PeerDeviceStatus::Disconnected);
    s.watch.connected().await;
    s.hub.connected().await;
    assert_eq!(s.watch.peer_device_status().code(), 1);
    assert_eq!(s.hub.peer_device_status().code(), 1);
    s.network.set_reachable(false);
    s.network.cut();
    tokio::time::timeout(Duration::from_secs(1), async {
        while s.watch.peer_device_status() == PeerDeviceStatus::Connected {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("status drops to 0");
    assert_eq!(s.watch.peer_device_status().code(), 0);
}

#[tokio::test(start_paused = true)]
async fn open_send_and_receive_both_ways() {
    let s = setup();
    let app = s.hub.register(PKG, 3, Some(FP)).await.unwrap();
    let conn = s.watch.instance(PKG, Some(FP));
    let mut watch_events = conn.events().unwrap();
    let mut app_events = app.events().unwrap();
    // One stream per connection: a second call, on any clone, says it is taken.
    assert!(conn.clone().events().is_none());

    let diagnosis = conn.diagnosis(None).await;
    assert!(diagnosis.is_ok());
    assert_eq!(diagnosis.status(), 0);
    assert_eq!(conn.ready_state(), ReadyState::Open);
    assert_eq!(conn.ready_state().code(), 1);
    assert_eq!(next(&mut watch_events).await, OPENED);
    assert_eq!(next(&mut app_events).await, OPENED);
    assert_eq!(conn.peer_client_version().await, Ok(Some(3)));
    assert_eq!(conn.peer_client_version_code().await, Ok(3));

    // Acknowledged once the app took it from its stream.
    let sent = conn.send(&Steps { steps: 8042 });
    let ConnectionEvent::Message(message) = next(&mut app_events).await else {
        panic!("expected a message");
    };
    sent.await.unwrap();
    assert_eq!(message.content_type, ContentType::Json);
    assert_eq!(message.decode::<Steps>().unwrap(), Steps { steps: 8042 });

    let sent = app.send_bytes(ContentType::Binary, Bytes::from_static(b"\x00\x01"));
    let ConnectionEvent::Message(message) = next(&mut watch_events).await else {
        panic!("expected a message");
    };
    sent.await.unwrap();
    assert_eq!(message.payload, Bytes::from_static(b"\x00\x01"));
    assert!(
        message.decode::<Steps>().is_err(),
        "binary has no structure"
    );
}

#[tokio::test(start_paused = true)]
async fn an_app_that_is_not_installed_gives_1001_and_version_minus_one() {
    let s = setup();
    let conn = s.watch.instance("com.not.installed", None);
    let mut events = conn.events().unwrap();
    let diagnosis = conn.diagnosis(None).await;
    assert_eq!(diagnosis.status(), 1001);
    assert_eq!(conn.ready_state(), ReadyState::Closed);
    assert!(matches!(
        next(&mut events).await,
        ConnectionEvent::Error {
            code: Code::APP_UNINSTALLED,
            ..
        }
    ));
    assert_eq!(conn.peer_client_version().await, Ok(None));
    assert_eq!(conn.peer_client_version_code().await, Ok(-1));
    // A send says what diagnosis says: the app is not installed.
    let error = conn.send(&Steps { steps: 1 }).await.unwrap_err();
    assert_eq!(error.code(), Code::APP_UNINSTALLED);
}

#[tokio::test(start_paused = true)]
async fn installing_the_app_later_lets_diagnosis_succeed() {
    let s = setup();
    let conn = s.watch.instance(PKG, None);
    assert_eq!(conn.diagnosis(None).await.code, Code::APP_UNINSTALLED);
    let app = s.hub.register(PKG, 1, None).await.unwrap();
    drain(&app);
    assert!(conn.diagnosis(None).await.is_ok());
    conn.send(&"now it works").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_detached_app_gives_1002() {
    let s = setup();
    let app = s.hub.register(PKG, 3, None).await.unwrap();
    drop(app); // the phone app stopped: registered, not attached
    let conn = s.watch.instance(PKG, None);
    let mut events = conn.events().unwrap();
    let diagnosis = conn.diagnosis(None).await;
    assert_eq!(diagnosis.code, Code::APP_NOT_CONNECTED);
    assert_eq!(
        diagnosis.status(),
        1000,
        "the vendor APIs report 1002 as 'other' in diagnosis"
    );
    assert!(matches!(
        next(&mut events).await,
        ConnectionEvent::Error {
            code: Code::APP_NOT_CONNECTED,
            ..
        }
    ));
    assert_eq!(conn.peer_client_version().await, Ok(Some(3)));
}

#[tokio::test(start_paused = true)]
async fn a_wrong_fingerprint_gives_1007_and_no_message_passes() {
    let s = setup();
    let app = s.hub.register(PKG, 3, Some(FP)).await.unwrap();
    let mut app_events = app.events().unwrap();
    let conn = s.watch.instance(PKG, Some("00:11:22"));
    let mut events = conn.events().unwrap();
    assert_eq!(conn.diagnosis(None).await.code, Code::SIGNATURE_MISMATCH);
    assert!(matches!(
        next(&mut events).await,
        ConnectionEvent::Error {
            code: Code::SIGNATURE_MISMATCH,
            ..
        }
    ));
    assert!(conn.send(&"secret").await.is_err());
    assert_eq!(
        app.send(&"to nobody").await.unwrap_err().code(),
        Code::CONNECTION_LOST
    );
    // Nothing reached the app.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), app_events.next())
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn diagnosis_waits_for_a_connect_in_progress() {
    let s = setup();
    let _app = s.hub.register(PKG, 3, None).await.unwrap();
    s.network.set_reachable(false);
    let conn = s.watch.instance(PKG, None);
    let network = s.network.clone();
    let started = tokio::time::Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        network.set_reachable(true);
    });
    let diagnosis = conn.diagnosis(Some(Duration::from_secs(8))).await;
    assert!(diagnosis.is_ok(), "got {diagnosis:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn diagnosis_times_out_with_204() {
    let s = setup();
    s.network.set_reachable(false);
    let conn = s.watch.instance(PKG, None);
    let started = tokio::time::Instant::now();
    let diagnosis = conn.diagnosis(None).await;
    assert_eq!(diagnosis.status(), 204);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(10),
        "the default timeout is 10 s"
    );
}

#[tokio::test(start_paused = true)]
async fn send_times_out_with_204_while_the_link_is_down() {
    let s = setup();
    let (conn, _app) = open(&s).await;
    s.network.set_reachable(false);
    s.network.cut();
    let error = conn.send(&"stuck").await.unwrap_err();
    assert_eq!(error.code(), Code::TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn close_from_the_watch_reaches_the_app_and_later_sends_fail_with_1006() {
    let s = setup();
    let app = s.hub.register(PKG, 3, None).await.unwrap();
    let mut app_events = app.events().unwrap();
    let conn = s.watch.instance(PKG, None);
    let mut events = conn.events().unwrap();
    assert!(conn.diagnosis(None).await.is_ok());
    conn.close(Code::OTHERS, "user left").await.unwrap();
    assert_eq!(next(&mut app_events).await, OPENED);
    assert_eq!(
        next(&mut app_events).await,
        ConnectionEvent::Close {
            code: Code::OTHERS,
            reason: "user left".into(),
            by: ClosedBy::Peer,
            reopens: false,
        }
    );
    assert_eq!(next(&mut events).await, OPENED);
    assert!(matches!(
        next(&mut events).await,
        ConnectionEvent::Close {
            code: Code::OTHERS,
            ..
        }
    ));
    assert_eq!(conn.ready_state(), ReadyState::Closed);
    assert_eq!(
        conn.send(&1).await.unwrap_err().code(),
        Code::CONNECTION_LOST
    );
    assert_eq!(
        app.send(&1).await.unwrap_err().code(),
        Code::CONNECTION_LOST
    );
}

#[tokio::test(start_paused = true)]
async fn close_from_the_phone_reaches_the_watch_which_reopens_when_the_app_is_back() {
    let s = setup();
    let app = s.hub.register(PKG, 3, None).await.unwrap();
    let conn = s.watch.instance(PKG, None);
    let mut events = conn.events().unwrap();
    assert!(conn.diagnosis(None).await.is_ok());
    app.close(Code(4100), "phone app says bye").await.unwrap();
    assert_eq!(next(&mut events).await, OPENED);
    assert_eq!(
        next(&mut events).await,
        ConnectionEvent::Close {
            code: Code(4100),
            reason: "phone app says bye".into(),
            by: ClosedBy::Peer,
            reopens: true,
        }
    );
    // The phone app's close is for good on the phone: its connection sends no more,
    // and the watch's attempts to reopen are refused (1002) while nobody is attached.
    assert_eq!(
        app.send(&1).await.unwrap_err().code(),
        Code::CONNECTION_LOST
    );
    assert_eq!(conn.ready_state(), ReadyState::Closed);
    // A send that waits for the reopen and times out was never on the wire.
    assert_eq!(
        conn.send(&1).await.unwrap_err(),
        Error::SendTimeout { withdrawn: true }
    );
    // The app registers again: the watch's connection reopens by itself and what it
    // sends meanwhile arrives.
    let pending = conn.send(&Steps { steps: 7 });
    let app = s.hub.register(PKG, 3, None).await.unwrap();
    let mut app_events = app.events().unwrap();
    assert_eq!(next(&mut events).await, REOPENED);
    assert_eq!(next(&mut app_events).await, OPENED);
    let ConnectionEvent::Message(message) = next(&mut app_events).await else {
        panic!("expected the message");
    };
    assert_eq!(message.decode::<Steps>().unwrap(), Steps { steps: 7 });
    pending.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_link_cut_closes_with_1006_then_resumes_with_is_reconnected() {
    let s = setup();
    let app = s.hub.register(PKG, 3, None).await.unwrap();
    let mut app_events = app.events().unwrap();
    let conn = s.watch.instance(PKG, None);
    let mut events = conn.events().unwrap();
    assert!(conn.diagnosis(None).await.is_ok());
    assert_eq!(next(&mut events).await, OPENED);
    assert_eq!(next(&mut app_events).await, OPENED);

    s.network.cut();
    assert!(matches!(
        next(&mut events).await,
        ConnectionEvent::Close {
            code: Code::CONNECTION_LOST,
            by: ClosedBy::Link,
            reopens: true,
            ..
        }
    ));
    // A send made while the link is down completes after the resumption.
    let sent = conn.send(&Steps { steps: 1 });
    // The state agrees with the events the app was given, though the link may be back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(conn.ready_state(), ReadyState::Closed);
    assert_eq!(next(&mut events).await, REOPENED);
    assert_eq!(conn.ready_state(), ReadyState::Open);
    assert!(matches!(
        next(&mut app_events).await,
        ConnectionEvent::Close {
            code: Code::CONNECTION_LOST,
            ..
        }
    ));
    assert_eq!(next(&mut app_events).await, REOPENED);
    let ConnectionEvent::Message(message) = next(&mut app_events).await else {
        panic!("expected the message");
    };
    assert_eq!(message.decode::<Steps>().unwrap(), Steps { steps: 1 });
    sent.await.unwrap();
    assert!(s.network.links_made() >= 2);
}

#[tokio::test(start_paused = true)]
async fn request_reply_with_several_in_flight() {
    let s = setup();
    let (conn, app) = open(&s).await;
    let mut app_events = app.events().unwrap();
    let responder = tokio::spawn({
        let app = app.clone();
        async move {
            let mut answered = 0;
            while answered < 5 {
                if let ConnectionEvent::Message(request) = next(&mut app_events).await {
                    let n: u32 = request.decode().unwrap();
                    app.reply(&request, &(n * 10)).await.unwrap();
                    answered += 1;
                }
            }
        }
    });
    let requests = (1..=5u32).map(|n| {
        let conn = conn.clone();
        async move { conn.request::<u32, u32>(&n, Duration::from_secs(5)).await }
    });
    let mut handles = Vec::new();
    for request in requests {
        handles.push(tokio::spawn(request));
    }
    for (n, handle) in (1..=5u32).zip(handles) {
        assert_eq!(handle.await.unwrap(), Ok(n * 10));
    }
    responder.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_request_nobody_answers_times_out_with_204() {
    let s = setup();
    let (conn, _app) = open(&s).await;
    let error = conn
        .request::<_, u32>(&1, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_message_above_the_maximum_is_refused_with_a_clear_error() {
    let s = setup();
    let (conn, app) = open(&s).await;
    drain(&app);
    // The limit of a sealed link leaves room for the nonce and tags; the refusal says it.
    let huge = Bytes::from(vec![
        1;
        interconnect_proto::Limits::default().max_message_len()
    ]);
    let Err(Error::TooLarge { max, .. }) = conn.send_bytes(ContentType::Binary, huge).await else {
        panic!("the default frame limit does not fit a sealed link");
    };
    assert!(max + 128 > interconnect_proto::Limits::default().max_message_len());
    conn.send_bytes(ContentType::Binary, Bytes::from(vec![1; max]))
        .await
        .unwrap();
    let error = conn
        .send_bytes(ContentType::Binary, Bytes::from(vec![1; max + 1]))
        .await
        .unwrap_err();
    assert_eq!(error, Error::TooLarge { len: max + 1, max });
    assert_eq!(error.code(), Code::TOO_LARGE);
}

#[tokio::test(start_paused = true)]
async fn shutdown_fails_pending_calls_instead_of_hanging() {
    let s = setup();
    s.network.set_reachable(false);
    let conn = s.watch.instance(PKG, None);
    let pending = tokio::spawn({
        let conn = conn.clone();
        async move { conn.send(&1).await }
    });
    tokio::task::yield_now().await;
    s.watch.clone().shutdown().await;
    // Any clone shuts down, and again is harmless.
    s.watch.shutdown().await;
    // Shutdown closes the channel, so the send fails with 1006 rather than hanging.
    let error = pending.await.unwrap().unwrap_err();
    assert_eq!(error.code(), Code::CONNECTION_LOST);
}

#[tokio::test(start_paused = true)]
async fn corrupted_frames_are_caught_and_never_delivered() {
    let network = MockNetwork::new(Faults {
        seed: 3,
        corrupt: 0.2,
        ..Faults::default()
    });
    let (dialer, listener) = network.endpoints();
    let hub = Hub::new(listener, Config::in_memory(DeviceId([2; 16])));
    // The link breaks again and again: the sends' deadlines (from the call) are made
    // long enough for that.
    let mut watch_config = Config::in_memory(DeviceId([1; 16]));
    watch_config.send_timeout = Duration::from_secs(600);
    let watch = Interconnect::new(dialer, watch_config);
    let app = hub.register(PKG, 1, None).await.unwrap();
    let mut app_events = app.events().unwrap();
    let conn = watch.instance(PKG, None);
    let sends: Vec<_> = (0..50u32)
        .map(|i| conn.send(&format!("message {i}")))
        .collect();
    let mut received = Vec::new();
    while received.len() < 50 {
        if let ConnectionEvent::Message(m) = next(&mut app_events).await {
            received.push(m.decode::<String>().unwrap());
        }
    }
    for send in sends {
        send.await.unwrap();
    }
    let expected: Vec<String> = (0..50).map(|i| format!("message {i}")).collect();
    assert_eq!(received, expected);
    assert!(network.links_made() > 1, "bad CRCs dropped links");
}

#[test]
fn backoff_grows_to_its_cap_with_jitter() {
    use rand::SeedableRng;
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(30),
        jitter: 0.5,
    };
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    assert_eq!(backoff.delay(0, &mut rng), Duration::ZERO);
    for failures in 1..40 {
        let full = (Duration::from_millis(100) * 2u32.saturating_pow(failures - 1).min(1 << 20))
            .min(Duration::from_secs(30));
        let delay = backoff.delay(failures, &mut rng);
        assert!(
            delay <= full && delay >= full / 2,
            "{failures}: {delay:?} vs {full:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn connected_sees_a_watch_that_leaves_right_after_its_handshake() {
    use interconnect_proto::{DEFAULT_MAX_FRAME_LEN, Role};
    let network = MockNetwork::new(Faults::default());
    let (mut dialer, listener) = network.endpoints();
    let mut phone_config = Config::in_memory(DeviceId([2; 16]));
    phone_config.session.security = Security::InsecurePlaintext;
    let hub = std::sync::Arc::new(Hub::new(listener, phone_config));
    let waiter = {
        let hub = hub.clone();
        tokio::spawn(async move { hub.connected().await })
    };
    tokio::task::yield_now().await;
    // A watch that says hello and is gone at once: the phone's driver sees the hello
    // and the end of the link in the same turn.
    let mut link = dialer.next_link().await.unwrap();
    let mut watch = Session::new(
        SessionConfig::new(
            Role::Watch,
            DeviceId([1; 16]),
            1,
            Security::InsecurePlaintext,
        ),
        [0x5E; 32],
    );
    let now = interconnect::sans_io::Instant::ZERO;
    watch.link_up(now, DEFAULT_MAX_FRAME_LEN);
    while let Some(frame) = watch.poll_transmit(now) {
        link.sender.send(frame).await.unwrap();
    }
    drop(link);
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("connected() saw the link")
        .unwrap();
    assert_eq!(hub.peer_device_status(), PeerDeviceStatus::Disconnected);
}

#[tokio::test(start_paused = true)]
async fn a_full_send_queue_makes_send_wait_and_try_send_fail_with_a_typed_error() {
    // No phone answers yet: messages queue on the watch, up to the bound.
    let network = MockNetwork::new(Faults::default());
    let (dialer, listener) = network.endpoints();
    let mut config = Config::in_memory(DeviceId([1; 16]));
    config.session.max_queued = 4;
    config.session.max_in_flight = 1;
    config.send_timeout = Duration::from_secs(3600);
    let watch = Interconnect::new(dialer, config);
    let conn = watch.instance(PKG, None);
    let queued: Vec<_> = (0..4u32).map(|i| tokio::spawn(conn.send(&i))).collect();
    let error = conn.try_send(&99u32).await.unwrap_err();
    assert_eq!(error, Error::QueueFull { max: 4 });
    assert_eq!(error.code(), Code::OTHERS);
    assert!(error.to_string().contains("send queue is full"), "{error}");
    // `send` waits for room instead, in call order.
    let waiting: Vec<_> = (4..20u32).map(|i| tokio::spawn(conn.send(&i))).collect();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(waiting.iter().all(|w| !w.is_finished()), "they wait");
    // The phone comes: everything is delivered, in order, the refused one not at all.
    let hub = Hub::new(listener, Config::in_memory(DeviceId([2; 16])));
    let app = hub.register(PKG, 1, None).await.unwrap();
    let mut events = app.events().unwrap();
    let mut got = Vec::new();
    while got.len() < 20 {
        if let ConnectionEvent::Message(m) = events.next().await.unwrap() {
            got.push(m.decode::<u32>().unwrap());
        }
    }
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    for send in queued.into_iter().chain(waiting) {
        send.await.unwrap().expect("delivered");
    }
}

#[tokio::test(start_paused = true)]
async fn an_app_that_stops_reading_holds_the_peers_sends_back_and_loses_nothing() {
    // Acknowledged on receipt, the unread bound holds the sender back.
    let network = MockNetwork::new(Faults::default());
    let (dialer, listener) = network.endpoints();
    let mut watch_config = Config::in_memory(DeviceId([1; 16]));
    watch_config.send_timeout = Duration::from_secs(3600);
    let mut phone_config = Config::in_memory(DeviceId([2; 16]));
    phone_config.max_unread = 100;
    phone_config.session.acknowledge = Acknowledge::OnReceipt;
    let hub = Hub::new(listener, phone_config);
    let watch = Interconnect::new(dialer, watch_config);
    let app = hub.register(PKG, 1, None).await.unwrap();
    let conn = watch.instance(PKG, None);
    assert!(conn.diagnosis(None).await.is_ok());
    let sends: Vec<_> = (0..1_000u32).map(|i| tokio::spawn(conn.send(&i))).collect();
    // The phone's app reads nothing for a minute (virtual): only what fits its unread
    // bound is acknowledged; the rest of the watch's sends wait.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let acknowledged = sends.iter().filter(|s| s.is_finished()).count();
    assert_eq!(
        acknowledged, 100,
        "acknowledged while the app reads nothing"
    );
    // The app reads: everything arrives, once, in order, and every send resolves.
    let mut events = app.events().unwrap();
    let mut got = Vec::new();
    while got.len() < 1_000 {
        if let ConnectionEvent::Message(m) = events.next().await.unwrap() {
            got.push(m.decode::<u32>().unwrap());
        }
    }
    assert_eq!(got, (0..1_000).collect::<Vec<_>>());
    for send in sends {
        send.await.unwrap().expect("acknowledged once read");
    }
}

#[tokio::test(start_paused = true)]
async fn the_peer_app_version_waits_for_a_link_in_progress() {
    let network = MockNetwork::new(Faults::default());
    let (dialer, listener) = network.endpoints();
    let watch = Interconnect::new(dialer, Config::in_memory(DeviceId([1; 16])));
    let conn = watch.instance(PKG, None);
    // Asked before any phone listens; the phone comes a second later.
    let asked = tokio::spawn({
        let conn = conn.clone();
        async move { conn.peer_client_version().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hub = Hub::new(listener, Config::in_memory(DeviceId([2; 16])));
    let app = hub.register(PKG, 3, None).await.unwrap();
    assert_eq!(asked.await.unwrap(), Ok(Some(3)));
    // A phone has no watch apps to ask about: an error, not a silent None.
    let error = app.peer_client_version().await.unwrap_err();
    assert_eq!(error.code(), Code::OTHERS, "{error:?}");
}

#[test]
fn errors_keep_their_source() {
    use std::error::Error as _;
    let bad = Incoming {
        content_type: ContentType::Json,
        payload: Bytes::from_static(b"{not json"),
        request_id: None,
    };
    let error = bad.decode::<Steps>().unwrap_err();
    assert!(matches!(error, Error::Serialization(_)), "{error:?}");
    assert_eq!(error.code(), Code::OTHERS);
    // The chain ends at serde's own error, for a caller that wants its details.
    let serde = error
        .source()
        .and_then(|cause| cause.source())
        .and_then(|e| e.downcast_ref::<serde_json::Error>())
        .expect("the serde error");
    assert!(serde.is_syntax(), "{serde}");
}

#[tokio::test(start_paused = true)]
async fn the_send_timeout_runs_from_the_call_and_a_queued_send_can_be_withdrawn() {
    let s = setup();
    let (conn, app) = open(&s).await;
    let mut events = conn.events().unwrap();
    // The phone app goes away: the watch's sends wait for it to come back.
    app.close(Code::OTHERS, "away").await.unwrap();
    loop {
        if let ConnectionEvent::Close { .. } = next(&mut events).await {
            break;
        }
    }
    let timeout = Duration::from_secs(10);
    let called = tokio::time::Instant::now();
    let sends = [conn.send(&1), conn.send(&2), conn.send(&3)];
    for send in sends {
        // Awaited one after another, each fails at its own call's deadline.
        assert_eq!(
            send.await.unwrap_err(),
            Error::SendTimeout { withdrawn: true }
        );
        let waited = called.elapsed();
        assert!(
            waited >= timeout && waited < timeout + Duration::from_millis(10),
            "failed after {waited:?}"
        );
    }
    // A send left unpolled past its deadline fails as soon as it is awaited.
    let late = conn.send(&4);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let awaited = tokio::time::Instant::now();
    assert_eq!(
        late.await.unwrap_err(),
        Error::SendTimeout { withdrawn: true }
    );
    assert!(awaited.elapsed() < Duration::from_millis(10));
    // One still queued can be withdrawn; it never reaches the app that comes back.
    let withdrawn = conn.send(&"withdrawn");
    assert!(withdrawn.cancel().await);
    let app = s.hub.register(PKG, 3, None).await.unwrap();
    let mut app_events = app.events().unwrap();
    let after = conn.send(&"after");
    loop {
        if let ConnectionEvent::Message(m) = next(&mut app_events).await {
            assert_eq!(m.decode::<String>().unwrap(), "after");
            break;
        }
    }
    after.await.unwrap();
}

/// Fire and forget past the channel's queue: sends whose futures were dropped while
/// they waited for room in it are still delivered, in call order.
#[tokio::test(start_paused = true)]
async fn dropped_sends_that_waited_for_room_are_still_delivered() {
    let s = setup();
    let (conn, app) = open(&s).await;
    let mut app_events = app.events().unwrap();
    // More than the channel's queue holds (`SessionConfig::max_queued`, 4,096).
    let n = 5_000u32;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < n as usize + 1 {
            if let ConnectionEvent::Message(m) = next(&mut app_events).await {
                got.push(m.decode::<u32>().unwrap());
            }
        }
        got
    });
    for i in 0..n {
        drop(conn.send(&i));
    }
    conn.send(&n).await.unwrap();
    assert_eq!(reader.await.unwrap(), (0..=n).collect::<Vec<u32>>());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_send_is_still_delivered_and_a_send_after_shutdown_fails_at_once() {
    let s = setup();
    let (conn, app) = open(&s).await;
    let mut app_events = app.events().unwrap();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 2_101 {
            if let ConnectionEvent::Message(m) = next(&mut app_events).await {
                got.push(m.decode::<u32>().unwrap());
            }
        }
        got
    });
    // Fire and forget: the future is dropped, the message still goes, in call order.
    for i in 0..100u32 {
        drop(conn.send(&i));
    }
    conn.send(&100u32).await.unwrap();
    // Slots of dropped sends are freed by their outcomes: a long run of dropped sends
    // and awaited ones keeps working.
    for i in 101..2_101u32 {
        if i % 10 == 0 {
            conn.send(&i).await.unwrap();
        } else {
            drop(conn.send(&i));
        }
    }
    assert_eq!(reader.await.unwrap(), (0..2_101).collect::<Vec<u32>>());
    s.watch.shutdown().await;
    let called = tokio::time::Instant::now();
    assert_eq!(conn.send(&"late").await.unwrap_err(), Error::Stopped);
    assert_eq!(
        called.elapsed(),
        Duration::ZERO,
        "failed at once, no timeout"
    );
}
