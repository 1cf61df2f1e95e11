//! File transfers end to end over the mock link, on tokio's paused clock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use interconnect::sans_io::*;
use interconnect::*;
use interconnect_proto::{
    ChannelId, Code, DEFAULT_MAX_FRAME_LEN, DeviceId, FileChunk, FileOffer, Frame, Limits, Role,
    TransferId,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use transport_mock::{Faults, MockNetwork};

const PKG: &str = "com.example.files";
/// A small frame limit, so files span many chunks.
const FRAME: usize = 16 * 1024;

fn chunk_len() -> usize {
    Limits::new(FRAME).max_chunk_len()
}

fn config(id: u8, files: Option<&Path>) -> Config {
    let mut config = Config::in_memory(DeviceId([id; 16]));
    config.seed = Some(u64::from(id));
    config.session.max_frame_len = FRAME;
    config.session.file_window = 256 * 1024;
    // Long timers: file I/O runs on real threads while the paused clock may jump.
    config.session.retransmit_timeout = Duration::from_secs(60);
    config.files = files.map(FilesConfig::new);
    if let Some(files) = &mut config.files {
        files.reserve_free_bytes = 0;
    }
    config
}

struct Setup {
    network: MockNetwork,
    _watch: Interconnect,
    _hub: Hub,
    conn: Connection,
    app: Connection,
    app_events: Events,
    send_dir: tempfile::TempDir,
    recv_dir: tempfile::TempDir,
}

async fn setup_with(faults: Faults, recv_config: impl FnOnce(&mut Config)) -> Setup {
    let send_dir = tempfile::tempdir().unwrap();
    let recv_dir = tempfile::tempdir().unwrap();
    let network = MockNetwork::new(faults);
    let (dialer, listener) = network.endpoints();
    let mut phone = config(2, Some(recv_dir.path()));
    recv_config(&mut phone);
    let hub = Hub::new(listener, phone);
    let watch = Interconnect::new(dialer, config(1, Some(send_dir.path())));
    let app = hub.register(PKG, 1, None).await.unwrap();
    let app_events = app.events().unwrap();
    let conn = watch.instance(PKG, None);
    assert!(conn.diagnosis(None).await.is_ok());
    Setup {
        network,
        _watch: watch,
        _hub: hub,
        conn,
        app,
        app_events,
        send_dir,
        recv_dir,
    }
}

fn mock_faults() -> Faults {
    Faults {
        max_frame_len: FRAME,
        ..Faults::default()
    }
}

async fn setup() -> Setup {
    setup_with(mock_faults(), |_| {}).await
}

fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    data
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

async fn next_event(events: &mut Events) -> ConnectionEvent {
    tokio::time::timeout(Duration::from_secs(3600), events.next())
        .await
        .expect("an event within an hour of virtual time")
        .expect("events continue")
}

/// Waits for the next file outcome (stored or error), skipping other events.
async fn next_file_event(events: &mut Events) -> ConnectionEvent {
    loop {
        let event = next_event(events).await;
        if matches!(
            event,
            ConnectionEvent::File { .. } | ConnectionEvent::Error { .. }
        ) {
            return event;
        }
    }
}

fn partial_files(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir.join(".partial")) {
        // The `.stored` markers of stored files are not partial files.
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_none_or(|e| e != "stored"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn stored_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".partial")
        .collect();
    names.sort();
    names
}

/// Sends `len` bytes as `name` and checks they arrive identical under `expect_name`.
async fn roundtrip(s: &mut Setup, len: usize, name: &str, expect_name: &str) {
    let data = content(len, len as u64);
    let path = write_file(s.send_dir.path(), name, &data);
    let transfer = s.conn.send_file(&path);
    transfer
        .await
        .unwrap_or_else(|e| panic!("{len} bytes: {e}"));
    // The announcement, then the stored file, under the same transfer id.
    let announced = loop {
        match next_event(&mut s.app_events).await {
            ConnectionEvent::FileIncoming { transfer, .. } => break transfer,
            ConnectionEvent::Error { code, message } => panic!("{code}: {message}"),
            _ => {}
        }
    };
    let event = next_file_event(&mut s.app_events).await;
    let ConnectionEvent::File {
        transfer,
        path,
        name: stored,
        size,
    } = event
    else {
        panic!("expected the file, got {event:?}");
    };
    assert_eq!(transfer, announced, "the file event names its transfer");
    assert_eq!(stored, expect_name);
    assert_eq!(size, len as u64);
    assert_eq!(path, s.recv_dir.path().join(expect_name));
    assert!(
        std::fs::read(&path).unwrap() == data,
        "{len} bytes arrive identical"
    );
    assert!(
        partial_files(s.recv_dir.path()).is_empty(),
        "no partial file left"
    );
}

mod hostile;
mod limits;
mod resume;
mod roundtrip;
