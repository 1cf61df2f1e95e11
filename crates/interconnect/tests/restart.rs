//! What an app written from the README gets when the other end restarts: the default
//! constructor keeps keys and pins, the watch's existing `Connection` carries on by
//! itself, a resolved `send` means the peer app has the message, and a send timeout says
//! whether the message can still arrive. Over the mock link, on tokio's paused clock.

use std::path::Path;
use std::time::Duration;

use interconnect::*;
use interconnect_proto::{Code, DeviceId};
use transport_mock::{Faults, MockNetwork};

mod common;
use common::{next, phone};

const PKG: &str = "com.example.fit";

/// The next `n` messages, as numbers, skipping other events.
async fn messages(events: &mut Events, n: usize) -> Vec<u32> {
    let mut got = Vec::new();
    while got.len() < n {
        if let ConnectionEvent::Message(m) = next(events).await {
            got.push(m.decode().unwrap());
        }
    }
    got
}

/// Whether the phone's restart is a clean shutdown or the loss of the process.
#[derive(Clone, Copy, Debug)]
enum Restart {
    Shutdown,
    Crash,
}

async fn the_watch_carries_on_across_a_phone_restart(restart: Restart) {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    let (hub, app, mut app_events) = phone(&network, phone_dir.path(), PKG).await;
    let watch = Interconnect::new(
        network.endpoints().0,
        Config::new(watch_dir.path()).unwrap(),
    );
    let conn = watch.instance(PKG, None);
    let mut events = conn.events().unwrap();

    let first = conn.send(&0u32);
    assert_eq!(messages(&mut app_events, 1).await, [0]);
    first.await.expect("the phone app took it");
    assert_eq!(
        next(&mut events).await,
        ConnectionEvent::Open {
            is_reconnected: false
        }
    );

    // Two messages reach the phone, which ends before its app reads them.
    let unread: Vec<_> = (1..=2u32).map(|i| tokio::spawn(conn.send(&i))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        unread.iter().all(|s| !s.is_finished()),
        "not acknowledged: nobody read them"
    );
    match restart {
        Restart::Shutdown => hub.shutdown().await,
        Restart::Crash => {
            // The process is gone: no close frames, the link just breaks.
            drop(hub);
            network.cut();
        }
    }
    drop((app, app_events));
    let ConnectionEvent::Close { by, reopens, .. } = next(&mut events).await else {
        panic!("expected the close");
    };
    assert!(reopens, "closed by {by:?}, and it says it reopens");
    // Sent while the phone is away.
    let during = tokio::spawn(conn.send(&3u32));

    let (hub, _app, mut app_events) = phone(&network, phone_dir.path(), PKG).await;
    // The same Connection: no new instance(), nothing lost, nothing twice.
    assert_eq!(
        messages(&mut app_events, 3).await,
        [1, 2, 3],
        "after a {restart:?}"
    );
    for send in unread.into_iter().chain([during]) {
        send.await
            .unwrap()
            .expect("acknowledged by the restarted phone's app");
    }
    assert_eq!(
        next(&mut events).await,
        ConnectionEvent::Open {
            is_reconnected: true
        }
    );
    assert_eq!(conn.ready_state(), ReadyState::Open);
    let last = conn.send(&4u32);
    assert_eq!(messages(&mut app_events, 1).await, [4]);
    last.await.unwrap();
    hub.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_watch_connection_carries_on_when_the_phone_shuts_down_and_starts_again() {
    the_watch_carries_on_across_a_phone_restart(Restart::Shutdown).await;
}

#[tokio::test(start_paused = true)]
async fn the_watch_connection_carries_on_when_the_phone_dies_and_starts_again() {
    the_watch_carries_on_across_a_phone_restart(Restart::Crash).await;
}

#[tokio::test(start_paused = true)]
async fn an_in_memory_phone_is_a_stranger_after_its_restart() {
    // Why `Config::new` takes a directory: a phone that keeps no key comes back as
    // another device, which the watch refuses (4007) for as long as it keeps that key.
    let watch_dir = tempfile::tempdir().unwrap();
    let network = MockNetwork::new(Faults::default());
    let hub = Hub::new(network.endpoints().1, Config::in_memory(DeviceId([2; 16])));
    let watch = Interconnect::new(
        network.endpoints().0,
        Config::new(watch_dir.path()).unwrap(),
    );
    let mut security = watch.security_events().unwrap();
    watch.connected().await;
    hub.shutdown().await;
    let _hub = Hub::new(network.endpoints().1, Config::in_memory(DeviceId([2; 16])));
    loop {
        if let Some(SecurityEvent::Refused(error)) = security.next().await {
            assert!(
                matches!(error, SecurityError::PeerChanged { .. }),
                "{error:?}"
            );
            assert_eq!(error.code(), Code::UNTRUSTED_PEER);
            break;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn acknowledged_on_receipt_what_the_phone_held_unread_dies_with_it() {
    // The other acknowledgement, for contrast: `send` resolves on arrival, so the
    // messages the phone's app had not read are gone with the phone.
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    let mut phone_config = Config::new(phone_dir.path()).unwrap();
    phone_config.session.acknowledge = Acknowledge::OnReceipt;
    let hub = Hub::new(network.endpoints().1, phone_config);
    let app = hub.register(PKG, 3, None).await.unwrap();
    let watch = Interconnect::new(
        network.endpoints().0,
        Config::new(watch_dir.path()).unwrap(),
    );
    let conn = watch.instance(PKG, None);
    conn.send(&1u32)
        .await
        .expect("acknowledged on arrival, unread");
    hub.shutdown().await;
    drop(app);
    let (_hub, _app, mut app_events) = phone(&network, phone_dir.path(), PKG).await;
    let after = conn.send(&2u32);
    assert_eq!(messages(&mut app_events, 1).await, [2], "1 was lost");
    after.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_send_timeout_says_whether_the_message_may_still_arrive() {
    let network = MockNetwork::new(Faults::default());
    let hub = Hub::new(network.endpoints().1, Config::in_memory(DeviceId([2; 16])));
    let app = hub.register(PKG, 3, None).await.unwrap();
    let watch = Interconnect::new(network.endpoints().0, Config::in_memory(DeviceId([1; 16])));
    let conn = watch.instance(PKG, None);
    assert!(conn.diagnosis(None).await.is_ok());

    // On the wire, but the app does not read it in time: it may still arrive.
    let error = conn.send(&1u32).await.unwrap_err();
    assert_eq!(error, Error::SendTimeout { withdrawn: false });
    assert_eq!(error.code(), Code::TIMEOUT);
    assert!(error.to_string().contains("may still arrive"), "{error}");
    let mut app_events = app.events().unwrap();
    assert_eq!(messages(&mut app_events, 1).await, [1], "it did, once");

    // The link is down: the message never left, so sending it again cannot duplicate.
    network.set_reachable(false);
    network.cut();
    watch.disconnected().await;
    let error = conn.send(&2u32).await.unwrap_err();
    assert_eq!(error, Error::SendTimeout { withdrawn: true });
    assert!(error.to_string().contains("safe to send again"), "{error}");
    network.set_reachable(true);
    let again = conn.send(&3u32);
    assert_eq!(messages(&mut app_events, 1).await, [3], "2 was withdrawn");
    again.await.unwrap();
}

/// A watch started from its state directory, with the channel to the app opened.
async fn watch(network: &MockNetwork, dir: &Path) -> (Interconnect, Connection, Events) {
    let watch = Interconnect::new(network.endpoints().0, Config::new(dir).unwrap());
    let conn = watch.instance(PKG, None);
    let events = conn.events().unwrap();
    (watch, conn, events)
}

#[tokio::test(start_paused = true)]
async fn the_phone_app_carries_on_when_the_watch_dies_and_starts_again() {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    let (_hub, app, mut app_events) = phone(&network, phone_dir.path(), PKG).await;
    let (watch_end, conn, mut events) = watch(&network, watch_dir.path()).await;
    assert!(matches!(
        next(&mut app_events).await,
        ConnectionEvent::Open { .. }
    ));
    let first = app.send(&0u32);
    assert_eq!(messages(&mut events, 1).await, [0]);
    first.await.expect("the watch app took it");

    // Two messages reach the watch, which dies before its app reads them.
    let unread: Vec<_> = (1..=2u32).map(|i| tokio::spawn(app.send(&i))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(unread.iter().all(|s| !s.is_finished()), "nobody read them");
    drop(watch_end);
    network.cut();
    drop((conn, events));
    // Sent while the watch is away.
    let during = tokio::spawn(app.send(&3u32));

    let (_watch, _conn, mut events) = watch(&network, watch_dir.path()).await;
    // The same app Connection: nothing lost, nothing twice.
    assert_eq!(messages(&mut events, 3).await, [1, 2, 3]);
    for send in unread.into_iter().chain([during]) {
        send.await
            .unwrap()
            .expect("acknowledged by the restarted watch's app");
    }
    let last = app.send(&4u32);
    assert_eq!(messages(&mut events, 1).await, [4]);
    last.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_watch_that_shuts_down_says_so_and_the_unread_messages_fail_with_1006() {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    let (_hub, app, mut app_events) = phone(&network, phone_dir.path(), PKG).await;
    let (watch_end, conn, events) = watch(&network, watch_dir.path()).await;
    assert!(matches!(
        next(&mut app_events).await,
        ConnectionEvent::Open { .. }
    ));
    let unread = app.send(&1u32);
    tokio::time::sleep(Duration::from_secs(1)).await;
    watch_end.shutdown().await;
    drop((conn, events));
    // The app learns the channel closed, and its unread message did not arrive.
    loop {
        if let ConnectionEvent::Close { by, reopens, .. } = next(&mut app_events).await {
            assert_eq!((by, reopens), (ClosedBy::Peer, false));
            break;
        }
    }
    assert_eq!(unread.await.unwrap_err().code(), Code::CONNECTION_LOST);
    // The watch starts again and opens the package: the same app Connection works.
    let (_watch, _conn, mut events) = watch(&network, watch_dir.path()).await;
    assert!(matches!(
        next(&mut app_events).await,
        ConnectionEvent::Open { .. }
    ));
    let after = app.send(&2u32);
    assert_eq!(messages(&mut events, 1).await, [2]);
    after.await.unwrap();
}

/// The phone's state directory, with received files under it.
fn phone_config(dir: &Path) -> Config {
    let mut config = Config::new(dir).unwrap();
    let mut files = FilesConfig::new(dir.join("files"));
    files.reserve_free_bytes = 0;
    config.files = Some(files);
    config
}

#[tokio::test(start_paused = true)]
async fn a_watch_file_carries_on_when_the_phone_shuts_down_and_starts_again() {
    let (watch_dir, phone_dir, send_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let network = MockNetwork::new(Faults::default());
    let hub = Hub::new(network.endpoints().1, phone_config(phone_dir.path()));
    let app = hub.register(PKG, 3, None).await.unwrap();
    let (_watch, conn, _events) = watch(&network, watch_dir.path()).await;
    assert!(conn.diagnosis(None).await.is_ok());
    let data: Vec<u8> = (0..(24u32 << 20))
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect();
    let path = send_dir.path().join("big.bin");
    std::fs::write(&path, &data).unwrap();
    let transfer = conn.send_file(&path);
    let mut progress = transfer.progress_stream();
    // A third of the way through, the phone shuts down, then starts again.
    let at = loop {
        let p = progress.next().await.expect("progress");
        if p.total > 0 && p.bytes_done >= p.total / 3 {
            break p.bytes_done;
        }
    };
    // Every later update: a restart from zero would show the offset falling back.
    let later = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(p) = progress.next().await {
            seen.push(p.bytes_done);
            if p.bytes_done >= p.total {
                break;
            }
        }
        seen
    });
    hub.shutdown().await;
    drop(app);
    let transfer = tokio::spawn(transfer);
    assert!(!transfer.is_finished(), "the shutdown came mid-file");
    let hub = Hub::new(network.endpoints().1, phone_config(phone_dir.path()));
    let app = hub.register(PKG, 3, None).await.unwrap();
    let mut app_events = app.events().unwrap();
    transfer
        .await
        .unwrap()
        .expect("the same transfer completes on the reopened channel");
    let stored = loop {
        match next(&mut app_events).await {
            ConnectionEvent::File { path, .. } => break path,
            ConnectionEvent::Error { code, message } => panic!("{code}: {message}"),
            _ => {}
        }
    };
    assert!(std::fs::read(stored).unwrap() == data, "stored identical");
    // It resumed from what the first phone held, not from zero.
    let after = later.await.unwrap();
    assert!(
        !after.is_empty() && after.iter().all(|b| *b >= at),
        "resumed from {at}: {after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_watch_file_sent_while_the_phone_app_is_away_waits_for_it() {
    let (watch_dir, phone_dir, send_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let network = MockNetwork::new(Faults::default());
    let hub = Hub::new(network.endpoints().1, phone_config(phone_dir.path()));
    let app = hub.register(PKG, 3, None).await.unwrap();
    let (_watch, conn, mut events) = watch(&network, watch_dir.path()).await;
    assert!(conn.diagnosis(None).await.is_ok());
    app.close(Code(4100), "bye").await.unwrap();
    drop(app);
    // The watch's attempts to reopen are refused (1002) while no app is attached.
    loop {
        if let ConnectionEvent::Close { reopens, .. } = next(&mut events).await {
            assert!(reopens);
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(conn.ready_state(), ReadyState::Closed);
    let path = send_dir.path().join("later.bin");
    std::fs::write(&path, b"sent while the app was away").unwrap();
    let transfer = tokio::spawn(conn.send_file(&path));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!transfer.is_finished(), "it waits for the app");
    let app = hub.register(PKG, 3, None).await.unwrap();
    let mut app_events = app.events().unwrap();
    transfer
        .await
        .unwrap()
        .expect("stored once the app is back");
    let stored = loop {
        if let ConnectionEvent::File { path, .. } = next(&mut app_events).await {
            break path;
        }
    };
    assert_eq!(
        std::fs::read(stored).unwrap(),
        b"sent while the app was away"
    );
}

/// A phone app's message that reached a watch whose app never read it; the watch died,
/// and another watch process came and went without opening the package: the phone holds
/// the message for the package's next channel.
async fn a_message_held_for_a_dead_watch() -> (
    tempfile::TempDir,
    tempfile::TempDir,
    Hub,
    Connection,
    tokio::task::JoinHandle<Result<(), Error>>,
) {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    let (hub, app, mut app_events) = phone(&network, phone_dir.path(), PKG).await;
    let (watch_end, conn, events) = watch(&network, watch_dir.path()).await;
    assert!(matches!(
        next(&mut app_events).await,
        ConnectionEvent::Open { .. }
    ));
    let unread = tokio::spawn(app.send(&1u32));
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop((watch_end, conn, events));
    network.cut();
    let other = Interconnect::new(
        network.endpoints().0,
        Config::new(watch_dir.path()).unwrap(),
    );
    other.connected().await;
    other.shutdown().await;
    network.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!unread.is_finished(), "held");
    (watch_dir, phone_dir, hub, app, unread)
}

#[tokio::test(start_paused = true)]
async fn a_phone_message_held_for_a_dead_watch_is_withdrawn_at_its_timeout() {
    let (_w, _p, _hub, _app, unread) = a_message_held_for_a_dead_watch().await;
    assert_eq!(
        unread.await.unwrap(),
        Err(Error::SendTimeout { withdrawn: true }),
        "withdrawn: it can no longer reach a watch app"
    );
}

#[tokio::test(start_paused = true)]
async fn a_phone_message_held_for_a_dead_watch_fails_when_its_app_closes() {
    let (_w, _p, _hub, app, unread) = a_message_held_for_a_dead_watch().await;
    app.close(Code(4100), "bye").await.unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(1), unread)
        .await
        .expect("at once, not at the send timeout");
    assert_eq!(failed.unwrap().unwrap_err().code(), Code::CONNECTION_LOST);
}
