//! The whole stack (API → driver → session → mock link → session → driver → API) with no
//! faults, against a tokio mpsc channel pair carrying the same payloads in the same run:
//! small-message throughput (1,000 pipelined 64-byte messages; acknowledged once the app
//! took them, the default, and on receipt) and send→ack latency (one awaited message at
//! a time, against an mpsc ping-pong).
//!
//! `cargo bench -p interconnect-benches --bench core`

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use interconnect::{Acknowledge, Config, Connection, ConnectionEvent, Hub, Interconnect};
use interconnect_benches::ratios::print_ratios;
use interconnect_proto::{ContentType, DeviceId};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use transport_mock::{Faults, MockNetwork};

const BATCH: u64 = 1000;
const PAYLOAD: usize = 64;

struct Stack {
    _watch: Interconnect,
    _hub: Hub,
    conn: Connection,
    _app: Connection,
    received: mpsc::UnboundedReceiver<()>,
}

fn stack(rt: &Runtime, acknowledge: Acknowledge) -> Stack {
    rt.block_on(async {
        let network = MockNetwork::new(Faults::default());
        let (dialer, listener) = network.endpoints();
        let mut phone = Config::in_memory(DeviceId([2; 16]));
        phone.session.acknowledge = acknowledge;
        let hub = Hub::new(listener, phone);
        let watch = Interconnect::new(dialer, Config::in_memory(DeviceId([1; 16])));
        let app = hub.register("bench", 1, None).await.expect("register");
        let conn = watch.instance("bench", None);
        assert!(conn.diagnosis(None).await.is_ok());
        let (tx, received) = mpsc::unbounded_channel();
        let mut events = app.events().unwrap();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if matches!(event, ConnectionEvent::Message(_)) && tx.send(()).is_err() {
                    return;
                }
            }
        });
        Stack {
            _watch: watch,
            _hub: hub,
            conn,
            _app: app,
            received,
        }
    })
}

fn bench_throughput(c: &mut Criterion, rt: &Runtime) {
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let mut group = c.benchmark_group("core/throughput");
    group.throughput(Throughput::Elements(BATCH));

    for (name, acknowledge) in [
        ("interconnect", Acknowledge::WhenTaken),
        ("interconnect-on-receipt", Acknowledge::OnReceipt),
    ] {
        let mut s = stack(rt, acknowledge);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let sends: Vec<_> = (0..BATCH)
                            .map(|_| s.conn.send_bytes(ContentType::Binary, payload.clone()))
                            .collect();
                        for send in sends {
                            send.await.expect("send");
                        }
                        for _ in 0..BATCH {
                            s.received.recv().await.expect("received");
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }

    group.bench_function("mpsc", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let (tx, mut rx) = mpsc::channel::<Bytes>(64);
                let (done_tx, mut done_rx) = mpsc::unbounded_channel();
                let consumer = tokio::spawn(async move {
                    while let Some(message) = rx.recv().await {
                        if done_tx.send(message.len()).is_err() {
                            return;
                        }
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..BATCH {
                        tx.send(payload.clone()).await.expect("send");
                    }
                    for _ in 0..BATCH {
                        done_rx.recv().await.expect("received");
                    }
                }
                let elapsed = start.elapsed();
                drop(tx);
                let _ = consumer.await;
                elapsed
            })
        })
    });
    group.finish();
}

fn bench_latency(c: &mut Criterion, rt: &Runtime) {
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let mut group = c.benchmark_group("core/latency");
    let mut s = stack(rt, Acknowledge::WhenTaken);
    group.bench_function("interconnect", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    s.conn
                        .send_bytes(ContentType::Binary, payload.clone())
                        .await
                        .expect("send");
                    s.received.recv().await.expect("received");
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("mpsc", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let (tx, mut rx) = mpsc::channel::<Bytes>(1);
                let (ack_tx, mut ack_rx) = mpsc::channel::<()>(1);
                let echo = tokio::spawn(async move {
                    while rx.recv().await.is_some() {
                        if ack_tx.send(()).await.is_err() {
                            return;
                        }
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    tx.send(payload.clone()).await.expect("send");
                    ack_rx.recv().await.expect("ack");
                }
                let elapsed = start.elapsed();
                drop(tx);
                let _ = echo.await;
                elapsed
            })
        })
    });
    group.finish();
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    bench_throughput(&mut criterion, &rt);
    bench_latency(&mut criterion, &rt);
    criterion.final_summary();
    let groups = ["core/throughput".to_string(), "core/latency".to_string()];
    print_ratios(
        &groups,
        "mpsc",
        &["interconnect", "interconnect-on-receipt"],
    );
}
