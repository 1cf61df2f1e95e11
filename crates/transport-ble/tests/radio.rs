//! What the radio does to a session, through a real host stack (trouble-host on Bumble
//! virtual controllers): a cut shorter than the supervision timeout only delays; a longer
//! one ends the connection on both sides (reason 0x08) and the file resumes on the next.

mod common;

use std::pin::Pin;
use std::time::Duration;

use common::{Carry, Controllers, Recorded, assert_carried, trouble_pair};
use interconnect::{
    Config, ConnectionEvent, DeviceId, Events, FilesConfig, Hub, Interconnect, Progress,
    ProgressStream,
};

const PKG: &str = "com.example.radio";

async fn next(events: &mut Events) -> ConnectionEvent {
    tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .expect("an event within a minute")
        .expect("the stream is open")
}

async fn next_progress(progress: &mut ProgressStream) -> Option<Progress> {
    std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut *progress), cx)).await
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) >> 3) as u8).collect()
}

/// What a transfer through a radio cut showed.
struct Outcome {
    /// Bytes done when the radio was cut, of the total.
    cut_at: u64,
    total: u64,
    /// Progress reported after the cut.
    after: Vec<u64>,
    /// The watch's events from the start to the stored file.
    watch_events: Vec<ConnectionEvent>,
}

/// Sends a 3 MiB file from the watch and cuts the radio for `seconds` once a third of
/// it is through; checks the phone stored it identical.
async fn file_through_a_cut(seconds: f64, carry: Carry) -> Outcome {
    let controllers = Controllers::start(2).await;
    let (watch_transport, phone_transport) = trouble_pair(&controllers, 517, carry).await;
    let (send_dir, recv_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut phone = Config::in_memory(DeviceId([2; 16]));
    let mut files = FilesConfig::new(recv_dir.path());
    files.reserve_free_bytes = 0;
    phone.files = Some(files);
    let mut watch = Config::in_memory(DeviceId([1; 16]));
    watch.backoff.initial = Duration::from_millis(20);
    let phone_transport = Recorded::new(phone_transport);
    let carried = phone_transport.log();
    let hub = Hub::new(phone_transport, phone);
    let watch = Interconnect::new(watch_transport, watch);

    let app = hub.register(PKG, 1, None).await.unwrap();
    let mut app_events = app.events().unwrap();
    let conn = watch.instance(PKG, None);
    let mut watch_events = conn.events().unwrap();
    let diagnosis = conn.diagnosis(Some(Duration::from_secs(30))).await;
    assert!(diagnosis.is_ok(), "linked: {diagnosis:?}");

    let data = content(3 << 20);
    let path = send_dir.path().join("big.bin");
    std::fs::write(&path, &data).unwrap();
    let transfer = conn.send_file(&path);
    let mut progress = transfer.progress_stream();
    let cutter = controllers.clone();
    let watcher = tokio::spawn(async move {
        while let Some(p) = next_progress(&mut progress).await {
            if p.total > 0 && p.bytes_done >= p.total / 3 && p.bytes_done < p.total {
                cutter.cut(seconds).await;
                let mut after = Vec::new();
                while let Some(q) = next_progress(&mut progress).await {
                    after.push(q.bytes_done);
                    if q.bytes_done >= q.total {
                        break;
                    }
                }
                return Some((p.bytes_done, p.total, after));
            }
        }
        None
    });
    tokio::time::timeout(Duration::from_secs(120), transfer)
        .await
        .expect("the transfer ends within two minutes")
        .expect("stored despite the cut");
    let (cut_at, total, after) = watcher
        .await
        .unwrap()
        .expect("the cut came mid-file, at a third");
    let stored = loop {
        match next(&mut app_events).await {
            ConnectionEvent::File { path, .. } => break path,
            ConnectionEvent::Error { code, message } => panic!("{code}: {message}"),
            _ => {}
        }
    };
    assert!(std::fs::read(stored).unwrap() == data, "stored identical");
    let mut seen = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(50), watch_events.next()).await
    {
        seen.push(event);
    }
    assert_carried(&carried, carry);
    Outcome {
        cut_at,
        total,
        after,
        watch_events: seen,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_radio_cut_longer_than_the_supervision_timeout_ends_the_link_and_the_file_resumes() {
    long_cut(Carry::Gatt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coc_a_radio_cut_longer_than_the_supervision_timeout_ends_the_link_and_the_file_resumes() {
    long_cut(Carry::Coc).await;
}

async fn long_cut(carry: Carry) {
    // The supervision timeout is 2 s (HostConfig::new): a 3 s cut ends the connection.
    let outcome = file_through_a_cut(3.0, carry).await;
    assert!(outcome.cut_at < outcome.total);
    assert!(
        !outcome.after.is_empty() && outcome.after.iter().all(|b| *b >= outcome.cut_at),
        "resumed from {}, not restarted: {:?}",
        outcome.cut_at,
        outcome.after
    );
    assert!(
        outcome.watch_events.iter().any(|e| matches!(
            e,
            ConnectionEvent::Open {
                is_reconnected: true
            }
        )),
        "the channel reopened on a new connection: {:?}",
        outcome.watch_events
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_radio_cut_shorter_than_the_supervision_timeout_only_delays() {
    let outcome = file_through_a_cut(0.5, Carry::Gatt).await;
    assert!(
        outcome.watch_events.iter().all(|e| !matches!(
            e,
            ConnectionEvent::Close { .. }
                | ConnectionEvent::Open {
                    is_reconnected: true
                }
        )),
        "the connection held through a 0.5 s cut: {:?}",
        outcome.watch_events
    );
}
