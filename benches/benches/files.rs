//! File transfer throughput through the whole stack over the mock link (no faults):
//! `send_file` on the watch until the phone has verified and stored the file, against a
//! plain in-memory copy of the same bytes in the same run.
//!
//! `cargo bench -p interconnect-benches --bench files`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use interconnect::{Config, Connection, ConnectionEvent, Events, FilesConfig, Hub, Interconnect};
use interconnect_benches::ratios::print_ratios;
use interconnect_proto::DeviceId;
use transport_mock::{Faults, MockNetwork};

const SIZE: usize = 32 << 20;

struct Stack {
    _watch: Interconnect,
    _hub: Hub,
    conn: Connection,
    _app: Connection,
    events: Events,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    path: std::path::PathBuf,
}

async fn stack(data: &[u8]) -> Stack {
    let send_dir = tempfile::tempdir().expect("temp dir");
    let recv_dir = tempfile::tempdir().expect("temp dir");
    let path = send_dir.path().join("payload.bin");
    std::fs::write(&path, data).expect("write the file");
    let network = MockNetwork::new(Faults::default());
    let (dialer, listener) = network.endpoints();
    let mut phone = Config::in_memory(DeviceId([2; 16]));
    let mut files = FilesConfig::new(recv_dir.path());
    files.reserve_free_bytes = 0;
    phone.files = Some(files);
    let hub = Hub::new(listener, phone);
    let watch = Interconnect::new(dialer, Config::in_memory(DeviceId([1; 16])));
    let app = hub.register("bench", 1, None).await.expect("register");
    let events = app.events().unwrap();
    let conn = watch.instance("bench", None);
    assert!(conn.diagnosis(None).await.is_ok());
    Stack {
        _watch: watch,
        _hub: hub,
        conn,
        _app: app,
        events,
        _dirs: (send_dir, recv_dir),
        path,
    }
}

fn bench_files(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 251) as u8).collect();
    let mut group = c.benchmark_group("files/32MiB");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);

    group.bench_function("memcpy", |b| {
        let mut dst = vec![0u8; SIZE];
        b.iter(|| {
            dst.copy_from_slice(std::hint::black_box(&data));
            std::hint::black_box(&dst);
        })
    });

    let mut s = rt.block_on(stack(&data));
    group.bench_function("interconnect_mock", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    s.conn.send_file(&s.path).await.expect("transfer");
                    loop {
                        match s.events.next().await {
                            Some(ConnectionEvent::File { path, .. }) => {
                                total += start.elapsed();
                                std::fs::remove_file(path).expect("remove the copy");
                                break;
                            }
                            Some(ConnectionEvent::Error { code, message }) => {
                                panic!("{code}: {message}")
                            }
                            Some(_) => {}
                            None => panic!("driver stopped"),
                        }
                    }
                }
                total
            })
        })
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    bench_files(&mut criterion);
    criterion.final_summary();
    print_ratios(
        &["files/32MiB".to_string()],
        "memcpy",
        &["interconnect_mock"],
    );
}
