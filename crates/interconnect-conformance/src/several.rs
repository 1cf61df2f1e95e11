//! The conformance case of a hub that serves several watches at once: each watch's
//! messages and files arrive on its own connection, the app's go to that watch alone,
//! and a watch whose link is cut comes back to its connection while the other goes on.

use std::time::Duration;

use async_trait::async_trait;
use interconnect::{Config, Connection, DeviceId, FilesConfig, Hub, Interconnect, Transport};

use crate::cases::{file_content, next_message, stored};
use crate::{Cuttable, Cutter, Harness};

/// A transport whose phone side serves several watches.
#[async_trait]
pub trait Fleet: Harness {
    /// `watches` watch transports (each dials) and one phone transport that accepts
    /// the links of all.
    async fn fleet(&self, watches: usize) -> (Vec<Box<dyn Transport>>, Box<dyn Transport>);
}

/// Expands the several-watches case as a `#[test]` for the harness built by `$make`.
#[macro_export]
macro_rules! several_watches_tests {
    ($harness:ty, $make:expr) => {
        #[test]
        fn two_watches_on_one_hub() {
            let paused = <$harness as $crate::Harness>::PAUSED_CLOCK;
            $crate::run(paused, || async {
                let harness: $harness = $make;
                $crate::several::two_watches_on_one_hub(&harness).await;
            });
        }
    };
}

const PKG: &str = "com.example.conformance";
const FP: &str = "AA:BB:CC";

struct Served {
    /// Kept running while the case runs.
    _watch: Interconnect,
    conn: Connection,
    cutter: Cutter,
    /// The phone app's connection to this watch.
    app: Connection,
}

/// Two watches on one hub: messages both ways and a file each, kept apart; watch 1's
/// link is cut while watch 2 goes on, and watch 1 comes back to the same connection.
pub async fn two_watches_on_one_hub<H: Fleet>(harness: &H) {
    let (watch_transports, phone_transport) = harness.fleet(2).await;
    let dirs = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let mut phone = Config::in_memory(DeviceId([100; 16]));
    let mut files = FilesConfig::new(dirs.1.path());
    files.reserve_free_bytes = 0;
    phone.files = Some(files);
    phone.seed = Some(100);
    phone.max_watches = 4;
    let hub = Hub::new(phone_transport, phone);
    hub.admit_new_watches(Duration::from_secs(600))
        .expect("a hub of several");
    let mut registered = hub
        .register_watches(PKG, 5, Some(FP))
        .await
        .expect("register");

    let mut ends = Vec::new();
    for (i, transport) in watch_transports.into_iter().enumerate() {
        let (transport, cutter) = Cuttable::new(transport);
        let mut config = Config::in_memory(DeviceId([i as u8 + 1; 16]));
        config.seed = Some(i as u64 + 1);
        config.backoff.initial = Duration::from_millis(20);
        let watch = Interconnect::new(transport, config);
        let conn = watch.instance(PKG, Some(FP));
        let diagnosis = conn.diagnosis(Some(Duration::from_secs(30))).await;
        assert!(diagnosis.is_ok(), "watch {}: {diagnosis:?}", i + 1);
        ends.push((watch, conn, cutter));
    }
    let mut apps = std::collections::HashMap::new();
    for _ in 0..2 {
        let watch = tokio::time::timeout(Duration::from_secs(60), registered.next())
            .await
            .expect("each watch within a minute")
            .expect("the hub runs");
        apps.insert(watch.device.id.0[0], watch.connection);
    }
    let served: Vec<Served> = ends
        .into_iter()
        .zip(1u8..)
        .map(|((watch, conn, cutter), id)| Served {
            _watch: watch,
            conn,
            cutter,
            app: apps.remove(&id).expect("a connection per watch"),
        })
        .collect();

    // 50 messages each way per watch, each tagged with its watch.
    let mut app_events: Vec<_> = served.iter().map(|s| s.app.events().unwrap()).collect();
    let mut watch_events: Vec<_> = served.iter().map(|s| s.conn.events().unwrap()).collect();
    let mut sends = Vec::new();
    for (s, id) in served.iter().zip(1u32..) {
        sends.extend((0..50).map(|n| s.conn.send(&(id * 1000 + n))));
        sends.extend((0..50).map(|n| s.app.send(&(id * 1000 + 500 + n))));
    }
    for (i, id) in (1u32..=2).enumerate() {
        for n in 0..50 {
            let to_phone = next_message(&mut app_events[i]).await.decode::<u32>();
            assert_eq!(to_phone, Ok(id * 1000 + n), "watch {id}'s own, in order");
            let to_watch = next_message(&mut watch_events[i]).await.decode::<u32>();
            assert_eq!(to_watch, Ok(id * 1000 + 500 + n), "for watch {id} alone");
        }
    }
    for send in sends {
        send.await.expect("acknowledged");
    }

    // A file from each, stored in that watch's folder, byte-identical.
    for (i, s) in served.iter().enumerate() {
        let data = file_content(100_000 + i * 7);
        let path = dirs.0.path().join(format!("from-{i}.bin"));
        std::fs::write(&path, &data).expect("write");
        s.conn.send_file(&path).await.expect("stored");
        let (stored_path, size) = stored(&mut app_events[i]).await;
        assert_eq!(size, data.len() as u64);
        assert!(
            stored_path.starts_with(dirs.1.path().join(DeviceId([i as u8 + 1; 16]).to_string()))
        );
        assert!(std::fs::read(stored_path).expect("read") == data);
    }

    // Watch 1's link is cut; watch 2 goes on meanwhile, and watch 1 comes back.
    let links_before = served[0].cutter.links_made();
    served[0].cutter.cut();
    let to_two = served[1].conn.send(&7u32);
    assert_eq!(
        next_message(&mut app_events[1]).await.decode::<u32>(),
        Ok(7)
    );
    to_two.await.expect("acknowledged");
    let to_one = served[0].conn.send(&8u32);
    assert_eq!(
        next_message(&mut app_events[0]).await.decode::<u32>(),
        Ok(8)
    );
    to_one.await.expect("acknowledged after the cut");
    assert!(
        served[0].cutter.links_made() > links_before,
        "watch 1 linked again"
    );
    hub.shutdown().await;
}
