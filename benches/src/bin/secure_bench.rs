//! What security costs, each figure against a baseline measured in the same run:
//!
//! 1. a file (256 MiB by default) over TCP loopback with each cipher suite and in
//!    plaintext, against a raw tokio TCP copy of the same file (disk to disk);
//! 2. the time from creating a watch to a usable link on loopback, with and without the
//!    Noise handshake (p50 and p99);
//! 3. the bytes and BLE packets the handshake adds before the first `Hello`, at ATT MTU 23
//!    and 247, and the (virtual) time to a usable link on the simulated BLE link.
//!
//! `cargo run --release -p interconnect-benches --bin secure_bench [MiB] [handshakes]`

use std::time::{Duration, Instant};

use bytes::Bytes;
use interconnect::sans_io::{Event, Session};
use interconnect::{
    CipherSuite, Config, DeviceIdentity, Hub, Interconnect, NoiseConfig, Security, SessionConfig,
};
use interconnect_benches::tcp::{
    BoxError, interconnect_ends, interconnect_file, median, raw_tcp_copy, source_file,
};
use interconnect_proto::{DEFAULT_MAX_FRAME_LEN, DeviceId, Role};
use transport_ble::packet::packet_len;
use transport_ble::{BleConfig, BleParams, Fragmenter, SimNetwork};

const RUNS: usize = 3;

fn secure(suite: CipherSuite, key: u8) -> Security {
    Security::Noise(
        NoiseConfig::new(DeviceIdentity::from_private_key([key; 32])).with_suites(&[suite]),
    )
}

/// The security settings compared, by name.
fn modes() -> [(&'static str, Option<CipherSuite>); 3] {
    [
        ("AES-256-GCM", Some(CipherSuite::AesGcm)),
        ("ChaCha20-Poly1305", Some(CipherSuite::ChaChaPoly)),
        ("plaintext (insecure)", None),
    ]
}

fn security(mode: Option<CipherSuite>, key: u8) -> Security {
    mode.map_or(Security::InsecurePlaintext, |suite| secure(suite, key))
}

async fn file_throughput(mib: usize) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("source.bin");
    source_file(&src, mib).await?;
    let bytes = (mib << 20) as f64;
    let mut raw = Vec::new();
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); modes().len()];
    let mut ends = Vec::new();
    for (i, (_, mode)) in modes().into_iter().enumerate() {
        let received = dir.path().join(format!("received-{i}"));
        std::fs::create_dir_all(&received)?;
        ends.push(interconnect_ends(&received, security(mode, 1)).await?);
    }
    for run in 0..RUNS {
        let copy = dir.path().join(format!("raw-{run}.bin"));
        raw.push(bytes / raw_tcp_copy(&src, &copy).await?.as_secs_f64());
        std::fs::remove_file(copy)?;
        for (i, end) in ends.iter_mut().enumerate() {
            let (elapsed, stored) = interconnect_file(end, &src).await?;
            ours[i].push(bytes / elapsed.as_secs_f64());
            std::fs::remove_file(stored)?;
        }
    }
    let raw = median(raw);
    println!("{mib} MiB file over TCP loopback, disk to disk, median of {RUNS} runs:");
    println!("  raw tokio TCP copy       {:>7.0} MiB/s", raw / 1048576.0);
    for ((name, _), runs) in modes().into_iter().zip(ours) {
        let rate = median(runs);
        println!(
            "  {name:<24} {:>7.0} MiB/s  {:.2}x raw",
            rate / 1048576.0,
            rate / raw
        );
    }
    println!("  (target: AES-256-GCM at least 0.6x raw)");
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn connect_times(mode: Option<CipherSuite>, count: usize) -> Result<Vec<Duration>, BoxError> {
    let listener = transport_tcp::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr();
    let mut phone = Config::in_memory(DeviceId([2; 16]));
    phone.session.security = security(mode, 2);
    let hub = Hub::new(listener, phone);
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let mut config = Config::in_memory(DeviceId([1; 16]));
        // One watch identity throughout: the phone pinned it on first use.
        config.session.security = security(mode, 1);
        let start = Instant::now();
        let watch = Interconnect::new(transport_tcp::TcpDialer::new(addr), config);
        watch.connected().await;
        times.push(start.elapsed());
        watch.shutdown().await;
        hub.disconnected().await;
    }
    hub.shutdown().await;
    times.sort();
    Ok(times)
}

/// Frames each side sends until both consider the link up, from two sans-IO sessions.
fn handshake_frames(mode: Option<CipherSuite>) -> Vec<Bytes> {
    let now = interconnect::sans_io::Instant::ZERO;
    let config = |role, key: u8| {
        SessionConfig::new(
            role,
            DeviceId([key; 16]),
            u64::from(key),
            security(mode, key),
        )
    };
    let mut watch = Session::new(config(Role::Watch, 1), [0x64; 32]);
    let mut phone = Session::new(config(Role::Phone, 2), [0x65; 32]);
    watch.link_up(now, DEFAULT_MAX_FRAME_LEN);
    phone.link_up(now, DEFAULT_MAX_FRAME_LEN);
    let mut frames = Vec::new();
    for _ in 0..8 {
        while let Some(frame) = watch.poll_transmit(now) {
            frames.push(frame.clone());
            phone.handle_frame(now, frame);
        }
        while let Some(frame) = phone.poll_transmit(now) {
            frames.push(frame.clone());
            watch.handle_frame(now, frame);
        }
        for side in [&mut watch, &mut phone] {
            while let Some(event) = side.poll_event() {
                if let Event::Refused(error) = event {
                    panic!("handshake refused: {error}");
                }
            }
        }
    }
    frames
}

async fn ble_connect_time(params: BleParams, mode: Option<CipherSuite>) -> Duration {
    let network = SimNetwork::new(params, BleConfig::default());
    let (peripheral, central) = network.endpoints();
    let mut phone = Config::in_memory(DeviceId([2; 16]));
    phone.session.security = security(mode, 2);
    let mut watch = Config::in_memory(DeviceId([1; 16]));
    watch.session.security = security(mode, 1);
    let hub = Hub::new(central, phone);
    let start = tokio::time::Instant::now();
    let watch = Interconnect::new(peripheral, watch);
    watch.connected().await;
    let elapsed = start.elapsed();
    watch.shutdown().await;
    hub.shutdown().await;
    elapsed
}

fn ble_overhead() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    println!("link setup until both sides are up (handshake and Hello, both directions):");
    let plain = handshake_frames(None);
    let plain_bytes: usize = plain.iter().map(Bytes::len).sum();
    for (name, mode) in modes() {
        let frames = handshake_frames(mode);
        let bytes: usize = frames.iter().map(Bytes::len).sum();
        print!(
            "  {name:<24} {} frames, {bytes} bytes (+{} over plaintext)",
            frames.len(),
            bytes - plain_bytes
        );
        for mtu in [23, 247] {
            let packets: usize = frames
                .iter()
                .map(|f| Fragmenter::new().fragment(f, packet_len(mtu)).len())
                .sum();
            print!("; MTU {mtu}: {packets} packets");
        }
        println!();
    }
    println!("time to a usable link on the simulated BLE link (virtual time):");
    for (label, params) in [
        ("MTU 23, 1M PHY", BleParams::legacy()),
        ("MTU 247, 2M PHY, DLE", BleParams::modern()),
    ] {
        let plain = runtime.block_on(ble_connect_time(params, None));
        let sealed = runtime.block_on(ble_connect_time(params, Some(CipherSuite::preferred())));
        println!(
            "  {label:<22} plaintext {plain:>8.1?}, Noise {sealed:>8.1?} ({:.2}x)",
            sealed.as_secs_f64() / plain.as_secs_f64()
        );
    }
    Ok(())
}

/// Bytes per second of 192 KiB messages from a watch session to a phone session in
/// memory, on one thread: the cost of sealing and opening alone, without sockets or disk.
fn sans_io_rate(mode: Option<CipherSuite>, mib: usize) -> f64 {
    use interconnect_proto::{ContentType, Exchange};
    let now = interconnect::sans_io::Instant::ZERO;
    let session = |role, key| {
        Session::new(
            SessionConfig::new(
                role,
                DeviceId([key; 16]),
                u64::from(key),
                security(mode, key),
            ),
            [0x66; 32],
        )
    };
    let (mut watch, mut phone) = (session(Role::Watch, 1), session(Role::Phone, 2));
    phone.register_app("com.example.bench", 1, None);
    watch.link_up(now, DEFAULT_MAX_FRAME_LEN);
    phone.link_up(now, DEFAULT_MAX_FRAME_LEN);
    let shuttle = |watch: &mut Session, phone: &mut Session| {
        let mut moved = true;
        while moved {
            moved = false;
            while let Some(f) = watch.poll_transmit(now) {
                phone.handle_frame(now, f);
                moved = true;
            }
            while let Some(f) = phone.poll_transmit(now) {
                watch.handle_frame(now, f);
                moved = true;
            }
            while watch.poll_event().is_some() || phone.poll_event().is_some() {
                moved = true;
            }
        }
    };
    shuttle(&mut watch, &mut phone);
    let channel = watch
        .open_channel(now, "com.example.bench", None)
        .expect("channel");
    shuttle(&mut watch, &mut phone);
    let payload = Bytes::from(vec![7u8; 192 * 1024]);
    let count = (mib << 20) / payload.len();
    let start = Instant::now();
    for _ in 0..count {
        watch
            .send(
                channel,
                ContentType::Binary,
                Exchange::OneWay,
                payload.clone(),
            )
            .expect("send");
        shuttle(&mut watch, &mut phone);
    }
    (count * payload.len()) as f64 / start.elapsed().as_secs_f64()
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let count: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "{mib} MiB of 192 KiB messages between two sessions in memory (sans-IO, one thread), median of {RUNS}:"
    );
    let mut baseline = None;
    for (name, mode) in modes().into_iter().rev() {
        let mut rates: Vec<f64> = (0..RUNS).map(|_| sans_io_rate(mode, mib)).collect();
        rates.sort_by(f64::total_cmp);
        let rate = rates[RUNS / 2];
        let base = *baseline.get_or_insert(rate);
        println!(
            "  {name:<24} {:>6.0} MiB/s  {:.2}x plaintext",
            rate / (1 << 20) as f64,
            rate / base
        );
    }
    runtime.block_on(file_throughput(mib))?;
    println!("time from a new watch to a usable link on TCP loopback ({count} each):");
    let mut baseline = None;
    for (name, mode) in modes().into_iter().rev() {
        let times = runtime.block_on(connect_times(mode, count))?;
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        let base = *baseline.get_or_insert(p50);
        println!(
            "  {name:<24} p50 {p50:>8.1?}  p99 {p99:>8.1?}  ({:.2}x plaintext p50)",
            p50.as_secs_f64() / base.as_secs_f64()
        );
    }
    ble_overhead()
}
