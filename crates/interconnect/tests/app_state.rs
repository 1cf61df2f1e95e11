//! Latest-wins app state (`set_state`, `State` events, `peer_state`): the newest value
//! of each key reaches the peer, values set while nothing can go are coalesced, a phone
//! that restarts gets the watch's state again and the watch drops the old phone's.
//! Over the mock link, on tokio's paused clock.

use std::time::Duration;

use bytes::Bytes;
use interconnect::*;
use transport_mock::{Faults, MockNetwork};

mod common;
use common::{next, phone};

const PKG: &str = "com.example.fit";

/// The next state event: its key and value (as JSON text), skipping other events.
async fn next_state(events: &mut Events) -> (String, Option<String>) {
    loop {
        if let ConnectionEvent::State { key, value } = next(events).await {
            let text = value.map(|v| String::from_utf8(v.payload.to_vec()).unwrap());
            return (key, text);
        }
    }
}

fn text(value: Option<Incoming>) -> Option<String> {
    value.map(|v| v.decode::<serde_json::Value>().unwrap().to_string())
}

/// A phone with the app registered and a watch with its connection, over a mock link
/// that is reachable or not yet. A test binds every field it keeps alive (`_hub`: a
/// field left to `..` would be dropped at once).
struct Ends {
    network: MockNetwork,
    phone_dir: tempfile::TempDir,
    hub: Hub,
    app: Connection,
    app_events: Events,
    conn: Connection,
    _watch: (Interconnect, tempfile::TempDir),
}

async fn ends(reachable: bool) -> Ends {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults::default());
    network.set_reachable(reachable);
    let (hub, app, app_events) = phone(&network, phone_dir.path(), PKG).await;
    let watch = Interconnect::new(
        network.endpoints().0,
        Config::new(watch_dir.path()).unwrap(),
    );
    let conn = watch.instance(PKG, None);
    Ends {
        network,
        phone_dir,
        hub,
        app,
        app_events,
        conn,
        _watch: (watch, watch_dir),
    }
}

#[tokio::test(start_paused = true)]
async fn values_set_before_the_link_is_up_arrive_as_the_newest_only() {
    let Ends {
        network,
        phone_dir: _phone_dir,
        hub: _hub,
        app,
        mut app_events,
        conn,
        _watch,
    } = ends(false).await;
    for hr in 60..=72 {
        conn.set_state("heart-rate", &hr).unwrap();
    }
    conn.set_state("workout", &"run").unwrap();
    conn.remove_state("workout").unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    network.set_reachable(true);
    assert_eq!(
        next_state(&mut app_events).await,
        ("heart-rate".into(), Some("72".into())),
        "one event, the newest value; the removed key never shows"
    );
    assert_eq!(text(app.peer_state("heart-rate")), Some("72".into()));
    assert_eq!(app.peer_states().len(), 1);
    // Later values follow, in order, one by one.
    conn.set_state("heart-rate", &73).unwrap();
    assert_eq!(next_state(&mut app_events).await.1, Some("73".into()));
}

#[tokio::test(start_paused = true)]
async fn both_sides_mirror_each_other_and_a_removal_arrives_as_no_value() {
    let Ends {
        network: _network,
        phone_dir: _phone_dir,
        hub: _hub,
        app,
        mut app_events,
        conn,
        _watch,
    } = ends(true).await;
    let mut events = conn.events().unwrap();
    assert!(conn.diagnosis(None).await.is_ok());
    app.set_state("units", &"metric").unwrap();
    assert_eq!(
        next_state(&mut events).await,
        ("units".into(), Some("\"metric\"".into()))
    );
    assert_eq!(text(conn.peer_state("units")), Some("\"metric\"".into()));
    conn.set_state("steps", &1200).unwrap();
    assert_eq!(next_state(&mut app_events).await.1, Some("1200".into()));
    // The same value again is a new version, delivered again.
    conn.set_state("steps", &1200).unwrap();
    assert_eq!(next_state(&mut app_events).await.1, Some("1200".into()));
    app.remove_state("units").unwrap();
    assert_eq!(next_state(&mut events).await, ("units".into(), None));
    assert!(conn.peer_state("units").is_none());
    assert!(matches!(
        conn.set_state("", &1),
        Err(Error::StateLimit { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn values_set_while_the_app_reads_nothing_are_coalesced_not_queued() {
    let Ends {
        network: _network,
        phone_dir: _phone_dir,
        hub: _hub,
        app: _app,
        mut app_events,
        conn,
        _watch,
    } = ends(true).await;
    assert!(conn.diagnosis(None).await.is_ok());
    // The phone's app reads nothing meanwhile: the first value waits for it
    // unacknowledged, so the next 999 have nowhere to go but the newest slot.
    for n in 1..=1000 {
        conn.set_state("n", &n).unwrap();
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let first = next_state(&mut app_events).await;
    let second = next_state(&mut app_events).await;
    assert_eq!(first.1.as_deref(), Some("1"));
    assert_eq!(
        second.1.as_deref(),
        Some("1000"),
        "then the newest, nothing between"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restarted_phone_gets_the_watch_state_and_the_watch_drops_the_old_phones() {
    let Ends {
        network,
        phone_dir,
        hub,
        app,
        mut app_events,
        conn,
        _watch,
    } = ends(true).await;
    let mut events = conn.events().unwrap();
    conn.set_state("heart-rate", &72).unwrap();
    app.set_state("mode", &"run").unwrap();
    assert_eq!(next_state(&mut app_events).await.1, Some("72".into()));
    assert_eq!(next_state(&mut events).await.1, Some("\"run\"".into()));

    // The phone process goes, and another starts from the same directory.
    hub.shutdown().await;
    drop((app, app_events));
    let (_hub, app, mut app_events) = phone(&network, phone_dir.path(), PKG).await;
    assert_eq!(
        next_state(&mut app_events).await,
        ("heart-rate".into(), Some("72".into())),
        "the new phone has the watch's state without the watch setting it again"
    );
    assert_eq!(
        next_state(&mut events).await,
        ("mode".into(), None),
        "the old phone's state is gone with it"
    );
    assert!(conn.peer_states().is_empty());
    app.set_state("mode", &"walk").unwrap();
    assert_eq!(next_state(&mut events).await.1, Some("\"walk\"".into()));
}

#[tokio::test(start_paused = true)]
async fn state_synced_resolves_once_the_peer_app_took_every_value() {
    let Ends {
        network,
        phone_dir: _phone_dir,
        hub: _hub,
        app,
        mut app_events,
        conn,
        _watch,
    } = ends(false).await;
    // The phone's app reads its events: taking a state event acknowledges it.
    tokio::spawn(async move { while app_events.next().await.is_some() {} });
    conn.set_state("heart-rate", &70).unwrap();
    conn.set_state("steps", &1200).unwrap();
    let early = tokio::time::timeout(Duration::from_secs(30), conn.state_synced()).await;
    assert!(early.is_err(), "no link yet: nothing has landed");
    network.set_reachable(true);
    conn.set_state("heart-rate", &72).unwrap();
    tokio::time::timeout(Duration::from_secs(60), conn.state_synced())
        .await
        .expect("synced within a minute")
        .unwrap();
    let held = |key| app.peer_state(key).map(|v| v.decode::<u32>().unwrap());
    assert_eq!((held("heart-rate"), held("steps")), (Some(72), Some(1200)));
}

#[tokio::test(start_paused = true)]
async fn a_value_larger_than_the_link_carries_is_an_error_event_not_a_stuck_key() {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let network = MockNetwork::new(Faults {
        max_frame_len: 4096,
        ..Faults::default()
    });
    let (_hub, app, mut app_events) = phone(&network, phone_dir.path(), PKG).await;
    tokio::spawn(async move { while app_events.next().await.is_some() {} });
    let watch = Interconnect::new(
        network.endpoints().0,
        Config::new(watch_dir.path()).unwrap(),
    );
    let conn = watch.instance(PKG, None);
    let mut events = conn.events().unwrap();
    assert!(conn.diagnosis(None).await.is_ok());
    let large = Bytes::from(vec![b'x'; 10_000]);
    conn.set_state_bytes("log", ContentType::Binary, large)
        .unwrap();
    conn.set_state("heart-rate", &72).unwrap();
    loop {
        if let ConnectionEvent::Error { code, .. } = next(&mut events).await {
            assert_eq!(code, Code::TOO_LARGE);
            break;
        }
    }
    // Given up, the large value holds nothing back: the other key arrives, and the
    // state counts as synced.
    tokio::time::timeout(Duration::from_secs(60), conn.state_synced())
        .await
        .expect("synced within a minute")
        .unwrap();
    assert!(app.peer_state("log").is_none());
    assert_eq!(
        app.peer_state("heart-rate").map(|v| v.payload),
        Some("72".into())
    );
}
