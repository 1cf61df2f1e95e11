//! Durable messages (`send_durable` with a `Store`): committed before the call returns,
//! delivered once and in order across restarts of either end, resent after a crash that
//! lost the delivery and then dropped by the receiver's cursor, cancellable; a damaged
//! store is a typed error at open. Over the mock link, on tokio's paused clock.

use std::path::Path;
use std::time::Duration;

use interconnect::*;
use transport_mock::{Faults, MockNetwork};

mod common;
use common::{next, phone};

const PKG: &str = "com.example.fit";

/// A watch whose identity and store live in `dir`.
fn watch(network: &MockNetwork, dir: &Path) -> (Interconnect, Connection) {
    let mut config = Config::new(dir).unwrap();
    config.store = Some(Store::open(dir.join("store.redb")).unwrap());
    let watch = Interconnect::new(network.endpoints().0, config);
    let conn = watch.instance(PKG, None);
    (watch, conn)
}

/// A phone whose identity and store live in `dir`, the app registered.
async fn phone_with_store(network: &MockNetwork, dir: &Path) -> (Hub, Connection, Events) {
    let mut config = Config::new(dir).unwrap();
    config.store = Some(Store::open(dir.join("store.redb")).unwrap());
    let hub = Hub::new(network.endpoints().1, config);
    let app = hub.register(PKG, 3, None).await.unwrap();
    let events = app.events().unwrap();
    (hub, app, events)
}

/// The numbers of the next `count` messages, skipping other events.
async fn numbers(events: &mut Events, count: usize) -> Vec<u32> {
    let mut got = Vec::new();
    while got.len() < count {
        if let ConnectionEvent::Message(m) = next(events).await {
            got.push(m.decode().unwrap());
        }
    }
    got
}

/// Delivered ids, until `last` was.
async fn delivered(events: &mut Events, last: u64) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.last() != Some(&last) {
        if let ConnectionEvent::Delivered { id } = next(events).await {
            ids.push(id);
        }
    }
    ids
}

/// `future`'s output, which must come within a virtual minute.
async fn within_a_minute<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("within a minute")
}

/// Whether a message arrives within a virtual minute.
async fn quiet(events: &mut Events) -> bool {
    let wait = async {
        loop {
            if let Some(ConnectionEvent::Message(_)) = events.next().await {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .is_err()
}

#[tokio::test(start_paused = true)]
async fn messages_committed_while_the_phone_is_away_arrive_once_in_order_after_the_watch_restarts()
{
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    network.set_reachable(false);
    let (first, conn) = watch(&network, watch_dir.path());
    for n in 0..20u32 {
        assert_eq!(conn.send_durable(&n).await, Ok(u64::from(n) + 1));
    }
    assert_eq!(conn.outstanding().len(), 20);
    first.shutdown().await;
    drop((first, conn));

    // A new process on the same store: the outbox is still there.
    let (_watch, conn) = watch(&network, watch_dir.path());
    assert_eq!(conn.last_durable_id(), 20);
    assert_eq!(conn.outstanding().len(), 20);
    let mut watch_events = conn.events().unwrap();
    let (_hub, _app, mut app_events) = phone(&network, phone_dir.path(), PKG).await;
    network.set_reachable(true);
    assert_eq!(
        numbers(&mut app_events, 20).await,
        (0..20).collect::<Vec<_>>()
    );
    assert_eq!(
        delivered(&mut watch_events, 20).await,
        (1..=20).collect::<Vec<_>>()
    );
    within_a_minute(conn.delivered(20)).await.unwrap();
    assert!(conn.outstanding().is_empty());
    assert!(quiet(&mut app_events).await, "nothing twice");
}

#[tokio::test(start_paused = true)]
async fn a_resend_after_a_lost_delivery_is_dropped_by_the_restarted_phones_cursor() {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    let (hub, app, mut app_events) = phone_with_store(&network, phone_dir.path()).await;
    let (first, conn) = watch(&network, watch_dir.path());
    network.set_reachable(false);
    for n in 0..5u32 {
        conn.send_durable(&n).await.unwrap();
    }
    // The watch's store as it was before any delivery: restoring it later is a watch
    // that crashed after the phone's app took the messages, before it heard so.
    let store = watch_dir.path().join("store.redb");
    let snapshot = std::fs::read(&store).unwrap();
    let mut watch_events = conn.events().unwrap();
    network.set_reachable(true);
    assert_eq!(numbers(&mut app_events, 5).await, [0, 1, 2, 3, 4]);
    assert_eq!(delivered(&mut watch_events, 5).await, [1, 2, 3, 4, 5]);
    first.shutdown().await;
    drop((first, conn, watch_events));
    hub.shutdown().await;
    drop((hub, app, app_events));
    std::fs::write(&store, snapshot).unwrap();

    let (_hub, _app, mut app_events) = phone_with_store(&network, phone_dir.path()).await;
    let (_watch, conn) = watch(&network, watch_dir.path());
    assert_eq!(conn.outstanding().len(), 5, "the restored outbox");
    let mut watch_events = conn.events().unwrap();
    conn.send_durable(&5u32).await.unwrap();
    assert_eq!(
        numbers(&mut app_events, 1).await,
        [5],
        "0 to 4 were taken before"
    );
    assert_eq!(
        delivered(&mut watch_events, 6).await,
        [1, 2, 3, 4, 5, 6],
        "the resent ones are delivered as well"
    );
    assert!(quiet(&mut app_events).await, "nothing twice");
}

#[tokio::test(start_paused = true)]
async fn a_delivery_the_app_was_not_told_of_is_told_after_a_restart() {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    let (_hub, _app, mut app_events) = phone(&network, phone_dir.path(), PKG).await;
    let (first, conn) = watch(&network, watch_dir.path());
    let id = conn.send_durable(&7u32).await.unwrap();
    assert_eq!(numbers(&mut app_events, 1).await, [7]);
    within_a_minute(conn.delivered(id)).await.unwrap();
    // This app never read its events: the delivery is told again in the next run.
    first.shutdown().await;
    drop((first, conn));
    let (second, conn) = watch(&network, watch_dir.path());
    let mut events = conn.events().unwrap();
    assert_eq!(next(&mut events).await, ConnectionEvent::Delivered { id });
    second.shutdown().await;
    drop((second, conn, events));
    // Taken now: not told a third time.
    let (_watch, conn) = watch(&network, watch_dir.path());
    let mut events = conn.events().unwrap();
    let first_event = next(&mut events).await;
    assert!(
        !matches!(first_event, ConnectionEvent::Delivered { .. }),
        "told once it was taken: {first_event:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_message_never_arrives_and_a_live_send_is_untouched() {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    network.set_reachable(false);
    let (_watch, conn) = watch(&network, watch_dir.path());
    let ids = [
        conn.send_durable(&1u32).await.unwrap(),
        conn.send_durable(&2u32).await.unwrap(),
        conn.send_durable(&3u32).await.unwrap(),
    ];
    assert_eq!(conn.cancel_durable(ids[1]).await, Ok(true));
    assert_eq!(conn.cancel_durable(ids[1]).await, Ok(false), "once");
    assert_eq!(
        conn.delivered(ids[1]).await,
        Ok(()),
        "no longer in the outbox"
    );
    let ids_left: Vec<u64> = conn.outstanding().iter().map(|o| o.id).collect();
    assert_eq!(ids_left, [ids[0], ids[2]]);
    let (_hub, _app, mut app_events) = phone(&network, phone_dir.path(), PKG).await;
    network.set_reachable(true);
    assert_eq!(numbers(&mut app_events, 2).await, [1, 3]);
    within_a_minute(conn.delivered(ids[2])).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn without_a_store_a_durable_send_fails_and_keeps_nothing() {
    let network = MockNetwork::new(Faults::default());
    let watch = Interconnect::new(network.endpoints().0, Config::in_memory(DeviceId([1; 16])));
    let conn = watch.instance(PKG, None);
    let error = conn.send_durable(&1u32).await.unwrap_err();
    assert_eq!(error, Error::NoStore);
    assert_eq!(error.code(), Code::OTHERS);
    assert!(conn.outstanding().is_empty());
}

#[test]
fn a_damaged_or_foreign_store_is_a_typed_error_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    // Garbage.
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    let opened = Store::open(&path);
    assert!(
        matches!(opened, Err(StoreError::Damaged { .. })),
        "{opened:?}"
    );
    // Another program's file.
    std::fs::write(&path, b"SQLite format 3\0 and more").unwrap();
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::Damaged { .. })
    ));
    // Another program's redb database.
    std::fs::remove_file(&path).unwrap();
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        let table: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("theirs");
        tx.open_table(table).unwrap().insert(1, 2).unwrap();
        tx.commit().unwrap();
    }
    let error = Store::open(&path).unwrap_err();
    assert!(matches!(error, StoreError::Damaged { .. }), "{error}");
    assert!(error.to_string().contains("another program"), "{error}");
    // Open twice.
    std::fs::remove_file(&path).unwrap();
    let store = Store::open(&path).unwrap();
    assert!(matches!(Store::open(&path), Err(StoreError::InUse { .. })));
    drop(store);
    // Truncated at every 4 KiB boundary: an error or a store, never a panic.
    let whole = std::fs::read(&path).unwrap();
    for len in (0..whole.len()).step_by(4096) {
        std::fs::write(&path, &whole[..len]).unwrap();
        let _ = Store::open(&path);
    }
}

/// A phone whose app takes files into `dir/received`.
async fn phone_with_files(network: &MockNetwork, dir: &Path) -> (Hub, Connection, Events) {
    let mut config = Config::new(dir).unwrap();
    let mut files = FilesConfig::new(dir.join("received"));
    files.reserve_free_bytes = 0;
    config.files = Some(files);
    let hub = Hub::new(network.endpoints().1, config);
    let app = hub.register(PKG, 3, None).await.unwrap();
    let events = app.events().unwrap();
    (hub, app, events)
}

/// The path of the next file the phone's app was told it stored.
async fn stored(events: &mut Events) -> std::path::PathBuf {
    loop {
        if let ConnectionEvent::File { path, .. } = next(events).await {
            return path;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_file_offered_again_by_a_restarted_sender_is_not_stored_twice() {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    let (_hub, _app, mut app_events) = phone_with_files(&network, phone_dir.path()).await;
    let source = watch_dir.path().join("log.txt");
    std::fs::write(&source, vec![7u8; 5000]).unwrap();
    let (first, conn) = watch(&network, watch_dir.path());
    within_a_minute(conn.send_file(&source)).await.unwrap();
    let copy = stored(&mut app_events).await;
    first.shutdown().await;
    drop((first, conn));
    // A new process, as a sender killed before it heard the file was stored: the phone
    // answers 4009 and the send succeeds with nothing sent or stored again.
    let (second, conn) = watch(&network, watch_dir.path());
    within_a_minute(conn.send_file(&source)).await.unwrap();
    let received = phone_dir.path().join("received");
    let names = || std::fs::read_dir(&received).unwrap().count();
    assert_eq!(names(), 2, "the file and the .partial folder");
    // Sent again on purpose by the same process: stored again, as before.
    within_a_minute(conn.send_file(&source)).await.unwrap();
    assert_ne!(stored(&mut app_events).await, copy);
    second.shutdown().await;
    drop((second, conn));
    // Once the stored copies are gone, a restarted sender's offer is a new file again.
    for entry in std::fs::read_dir(&received).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::remove_file(path).unwrap();
        }
    }
    let (_watch, conn) = watch(&network, watch_dir.path());
    within_a_minute(conn.send_file(&source)).await.unwrap();
    assert_eq!(
        std::fs::read(stored(&mut app_events).await).unwrap(),
        vec![7u8; 5000]
    );
}

#[tokio::test(start_paused = true)]
async fn a_durable_file_goes_after_the_sender_restarts_without_a_second_call() {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    network.set_reachable(false);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let source = watch_dir.path().join("track.bin");
    std::fs::write(&source, &data).unwrap();
    let (first, conn) = watch(&network, watch_dir.path());
    let id = conn.send_file_durable(&source).await.unwrap();
    let listed = conn.outstanding();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].file.as_ref().map(|f| f.0.file_name()),
        Some(source.file_name())
    );
    first.shutdown().await;
    drop((first, conn));

    let (_hub, _app, mut app_events) = phone_with_files(&network, phone_dir.path()).await;
    // Another run on the store: nobody calls send_file again.
    let (_watch, conn) = watch(&network, watch_dir.path());
    let mut watch_events = conn.events().unwrap();
    network.set_reachable(true);
    let stored = loop {
        if let ConnectionEvent::File { path, size, .. } = next(&mut app_events).await {
            assert_eq!(size, data.len() as u64);
            break path;
        }
    };
    assert_eq!(std::fs::read(stored).unwrap(), data, "byte for byte");
    assert_eq!(delivered(&mut watch_events, id).await, [id]);
    assert!(conn.outstanding().is_empty());
    within_a_minute(conn.delivered(id)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn with_a_store_the_state_outlives_a_restart_and_the_peer_keeps_it() {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    let (_hub, app, mut app_events) = phone(&network, phone_dir.path(), PKG).await;
    let (first, conn) = watch(&network, watch_dir.path());
    conn.set_state("heart-rate", &72).unwrap();
    conn.set_state("workout", &"run").unwrap();
    conn.remove_state("workout").unwrap();
    let synced = tokio::time::timeout(Duration::from_secs(60), async {
        // The phone's app takes its events, so the updates are acknowledged.
        loop {
            tokio::select! {
                done = conn.state_synced() => return done,
                _ = app_events.next() => {}
            }
        }
    });
    synced.await.expect("in a minute").unwrap();
    first.shutdown().await;
    drop((first, conn));

    // A new process on the store: it set nothing, yet it holds its values, under the
    // same origin, so the phone drops nothing.
    let (_watch, conn) = watch(&network, watch_dir.path());
    let wait = async {
        loop {
            if let ConnectionEvent::State { key, value: None } = next(&mut app_events).await {
                return key;
            }
        }
    };
    let dropped = tokio::time::timeout(Duration::from_secs(60), wait).await;
    assert!(dropped.is_err(), "the phone dropped {dropped:?}");
    within_a_minute(conn.state_synced()).await.unwrap();
    let held = app
        .peer_state("heart-rate")
        .map(|v| v.decode::<u32>().unwrap());
    assert_eq!(held, Some(72));
    assert_eq!(app.peer_states().len(), 1, "the removal is kept too");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_durable_file_is_never_sent_not_even_after_a_restart() {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    network.set_reachable(false);
    let source = watch_dir.path().join("draft.bin");
    std::fs::write(&source, vec![1u8; 100_000]).unwrap();
    let (first, conn) = watch(&network, watch_dir.path());
    let id = conn.send_file_durable(&source).await.unwrap();
    let kept = conn.send_durable(&"after").await.unwrap();
    assert_eq!(conn.cancel_durable(id).await, Ok(true));
    assert_eq!(conn.cancel_durable(id).await, Ok(false), "once");
    let left: Vec<u64> = conn.outstanding().iter().map(|o| o.id).collect();
    assert_eq!(left, [kept]);
    first.shutdown().await;
    drop((first, conn));
    let (_hub, _app, mut app_events) = phone_with_files(&network, phone_dir.path()).await;
    let (_watch, conn) = watch(&network, watch_dir.path());
    network.set_reachable(true);
    assert_eq!(numbers_of_text(&mut app_events).await, "\"after\"");
    within_a_minute(conn.delivered(kept)).await.unwrap();
    let file = async {
        loop {
            if let ConnectionEvent::FileIncoming { .. } = next(&mut app_events).await {
                return;
            }
        }
    };
    let sent = tokio::time::timeout(Duration::from_secs(60), file).await;
    assert!(sent.is_err(), "the cancelled file was offered");
}

/// The next message, as its JSON text.
async fn numbers_of_text(events: &mut Events) -> String {
    loop {
        if let ConnectionEvent::Message(m) = next(events).await {
            return String::from_utf8(m.payload.to_vec()).unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_app_that_never_reads_its_events_holds_at_most_1024_deliveries() {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    let (_hub, _app, mut app_events) = phone(&network, phone_dir.path(), PKG).await;
    let (_watch, conn) = watch(&network, watch_dir.path());
    let count = MAX_UNTOLD_DELIVERIES + 300;
    // Sent together, as a burst of an app's calls: their commits are grouped.
    let sends: Vec<_> = (0..count as u32)
        .map(|n| {
            let conn = conn.clone();
            tokio::spawn(async move { conn.send_durable(&n).await })
        })
        .collect();
    let mut ids = Vec::new();
    for send in sends {
        ids.push(send.await.unwrap().unwrap());
    }
    assert_eq!(numbers(&mut app_events, count).await.len(), count);
    within_a_minute(conn.delivered(*ids.last().unwrap()))
        .await
        .unwrap();
    assert!(
        conn.outstanding().is_empty(),
        "every one delivered all the same"
    );
    // Only now does the app look: the first 1,024 deliveries wait for it, no more.
    let mut events = conn.events().unwrap();
    let mut told = 0;
    let quiet = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
            Ok(Some(ConnectionEvent::Delivered { .. })) => told += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break true,
        }
    };
    assert!(quiet);
    assert_eq!(told, MAX_UNTOLD_DELIVERIES);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_phone_with_a_store_reads_the_watch_state_before_the_link_is_up() {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    let (hub, app, mut app_events) = phone_with_store(&network, phone_dir.path()).await;
    let (_watch, conn) = watch(&network, watch_dir.path());
    conn.set_state("heart-rate", &72).unwrap();
    conn.set_state("units", &"metric").unwrap();
    let wait = async {
        while app.peer_states().len() < 2 {
            next(&mut app_events).await;
        }
    };
    within_a_minute(wait).await;
    network.set_reachable(false);
    hub.shutdown().await;
    drop((hub, app, app_events));
    let (_hub, app, _events) = phone_with_store(&network, phone_dir.path()).await;
    let held = app
        .peer_state("heart-rate")
        .map(|v| v.decode::<u32>().unwrap());
    assert_eq!(held, Some(72), "read from the store, no link up");
    assert_eq!(app.peer_states().len(), 2);
}
