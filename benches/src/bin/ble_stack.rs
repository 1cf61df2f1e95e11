//! Throughput through a real BLE host stack: trouble-host as watch (peripheral) and phone
//! (central), each on a Bumble virtual controller (`controllers.py` in transport-ble's
//! test fixtures, run by the venv `.ci/run` makes, or `$BUMBLE_PYTHON`). Over GATT at ATT
//! MTU 247 and 517, and over an L2CAP credit-based channel with SDUs of 512 and 1018
//! bytes, each way, in one run:
//!
//! - **raw**: packets (GATT: notifications watch → phone, writes without response
//!   phone → watch) or SDUs of the largest size straight through, no framing;
//! - **interconnect**: a file through the session (Noise, framing, credits, file
//!   protocol) over the same carrier until the receiver stored it;
//! - **simulated** (GATT only): the same file over the simulated radio at the same MTU
//!   (2M PHY, DLE, 15 ms interval), on virtual time.
//!
//! Bumble models no radio timing, so the real-stack figures are bound by CPU (both hosts
//! in this process, the controllers in Python), not by air time; the ratio interconnect /
//! raw is what our framing, credits and session cost on a real host stack. CPU seconds of
//! this process are printed beside each figure.
//!
//! `cargo run --release -p interconnect-benches --features trouble --bin ble_stack`

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use interconnect::{Config, Connection, ConnectionEvent, Events, FilesConfig, Hub, Interconnect};
use interconnect_proto::DeviceId;
use transport_ble::packet::packet_len;
use transport_ble::trouble::{HostConfig, Trouble};
use transport_ble::{
    BleConfig, BleParams, Carrier, PacketReceiver, PacketSender, SduSender, SimNetwork,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const RAW_BYTES: usize = 4 << 20;
const FILE_BYTES: usize = 4 << 20;
const PKG: &str = "bench.ble";

/// The virtual controllers; killed when dropped.
struct Controllers {
    child: Child,
    ports: Vec<u16>,
}

impl Drop for Controllers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Controllers {
    fn start() -> Result<Controllers, BoxError> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = std::env::var_os("BUMBLE_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/bumble-venv/bin/python"));
        let mut child = Command::new(&python)
            .arg(root.join("crates/transport-ble/tests/fixtures/controllers.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e} (run .ci/run to make the venv)", python.display()))?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().ok_or("stdout")?).read_line(&mut line)?;
        let ready: serde_json::Value = serde_json::from_str(&line)?;
        let ports = ready["hci"]
            .as_array()
            .ok_or("ports")?
            .iter()
            .filter_map(|p| p.as_u64().map(|p| p as u16))
            .collect();
        Ok(Controllers { child, ports })
    }

    fn hci(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[index]))
    }

    fn host(&self, index: usize, carry: Carry) -> HostConfig {
        let mut host = HostConfig::new(self.hci(index));
        match carry {
            Carry::Gatt(mtu) => {
                host.max_att_mtu = mtu;
                host.coc = false;
            }
            Carry::Coc(sdu) => host.max_sdu_len = sdu,
        }
        host
    }
}

/// What the session rides on: GATT at this ATT MTU, or L2CAP with SDUs of this size.
#[derive(Clone, Copy, Debug)]
enum Carry {
    Gatt(u16),
    Coc(u16),
}

impl std::fmt::Display for Carry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Carry::Gatt(mtu) => write!(f, "GATT MTU {mtu}"),
            Carry::Coc(sdu) => write!(f, "L2CAP SDU {sdu}"),
        }
    }
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat (utime, stime), counted after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

struct Figure {
    mbit_s: f64,
    cpu: f64,
}

fn figure(bytes: usize, elapsed: Duration, cpu: f64) -> Figure {
    Figure {
        mbit_s: 8.0 * bytes as f64 / elapsed.as_secs_f64() / 1e6,
        cpu,
    }
}

#[derive(Clone, Copy, Debug)]
enum Way {
    ToPhone,
    ToWatch,
}

/// Sends whole packets or SDUs, whichever the carrier takes.
enum RawSender {
    Packets(Box<dyn PacketSender>),
    Sdus(Box<dyn SduSender>),
}

impl RawSender {
    fn len(&self) -> usize {
        match self {
            RawSender::Packets(sender) => packet_len(sender.att_mtu()),
            RawSender::Sdus(sender) => sender.sdu_len(),
        }
    }

    async fn send(&mut self, packet: Bytes) -> Result<(), interconnect::TransportError> {
        match self {
            RawSender::Packets(sender) => sender.send_packet(packet).await,
            RawSender::Sdus(sender) => sender.send_sdu(packet).await,
        }
    }
}

fn halves(carrier: Carrier) -> (RawSender, Box<dyn PacketReceiver>) {
    match carrier {
        Carrier::Gatt(link) => (RawSender::Packets(link.sender), link.receiver),
        Carrier::Coc(link) => (RawSender::Sdus(link.sender), link.receiver),
    }
}

/// Packets (or SDUs) of the largest size straight through the carrier.
async fn raw(carry: Carry, way: Way) -> Result<Figure, BoxError> {
    let controllers = Controllers::start()?;
    let mut watch = Trouble::peripheral(controllers.host(0, carry), BleConfig::default()).await?;
    let mut phone = Trouble::central(controllers.host(1, carry), BleConfig::default()).await?;
    let (w, p) = tokio::join!(watch.next_carrier(), phone.next_carrier());
    let (w, p) = (halves(w?), halves(p?));
    // The unused halves stay alive: dropping either half of a link ends it.
    let (mut sender, mut receiver, _unused) = match way {
        Way::ToPhone => (w.0, p.1, (p.0, w.1)),
        Way::ToWatch => (p.0, w.1, (w.0, p.1)),
    };
    let len = sender.len();
    let count = RAW_BYTES / len;
    let packet = Bytes::from(vec![0x5a; len]);
    let cpu = cpu_seconds();
    let start = Instant::now();
    let send = tokio::spawn(async move {
        for _ in 0..count {
            sender.send(packet.clone()).await?;
        }
        Ok::<_, interconnect::TransportError>(sender)
    });
    let mut got = 0;
    let mut last = start;
    while got < count * len {
        match tokio::time::timeout(Duration::from_secs(5), receiver.recv_packet()).await {
            Ok(Ok(Some(p))) => {
                got += p.len();
                last = Instant::now();
            }
            _ => break,
        }
    }
    let _sender = send.await??;
    if got < count * len {
        eprintln!(
            "  raw {way:?} {carry}: {} of {} bytes arrived",
            got,
            count * len
        );
    }
    Ok(figure(got, last - start, cpu_seconds() - cpu))
}

async fn stored(events: &mut Events) -> Result<PathBuf, BoxError> {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), events.next()).await? {
            Some(ConnectionEvent::File { path, .. }) => return Ok(path),
            Some(ConnectionEvent::Error { code, message }) => {
                return Err(format!("{code}: {message}").into());
            }
            Some(_) => {}
            None => return Err("the events ended".into()),
        }
    }
}

fn config(id: u8, dir: &Path) -> Config {
    let mut config = Config::in_memory(DeviceId([id; 16]));
    let mut files = FilesConfig::new(dir);
    files.reserve_free_bytes = 0;
    config.files = Some(files);
    config
}

/// A file through the session, from `from` to `to`, timed until `to` stored it.
async fn send_file(
    from: &Connection,
    to_events: &mut Events,
    path: &Path,
) -> Result<Duration, BoxError> {
    let start = Instant::now();
    let transfer = from.send_file(path);
    let stored = stored(to_events).await?;
    let elapsed = start.elapsed();
    transfer.await?;
    std::fs::remove_file(stored)?;
    Ok(elapsed)
}

/// CPU seconds a connected, idle pair of hosts uses in `period` (a host that wakes
/// itself in a loop shows here: it spun before its thread ran it as a task).
async fn idle_cpu(period: Duration) -> Result<f64, BoxError> {
    let controllers = Controllers::start()?;
    let carry = Carry::Gatt(517);
    let mut watch = Trouble::peripheral(controllers.host(0, carry), BleConfig::default()).await?;
    let mut phone = Trouble::central(controllers.host(1, carry), BleConfig::default()).await?;
    let (w, p) = tokio::join!(watch.next_packet_link(), phone.next_packet_link());
    let links = (w?, p?);
    let cpu = cpu_seconds();
    tokio::time::sleep(period).await;
    let used = cpu_seconds() - cpu;
    drop(links);
    Ok(used)
}

/// A file through interconnect over the real stack.
async fn session(carry: Carry, way: Way, path: &Path, dir: &Path) -> Result<Figure, BoxError> {
    let controllers = Controllers::start()?;
    let watch_transport =
        Trouble::peripheral(controllers.host(0, carry), BleConfig::default()).await?;
    let phone_transport =
        Trouble::central(controllers.host(1, carry), BleConfig::default()).await?;
    let hub = Hub::new(phone_transport, config(2, &dir.join("phone")));
    let watch = Interconnect::new(watch_transport, config(1, &dir.join("watch")));
    let app = hub.register(PKG, 1, None).await?;
    let mut app_events = app.events().ok_or("events")?;
    let conn = watch.instance(PKG, None);
    let mut watch_events = conn.events().ok_or("events")?;
    if !conn.diagnosis(Some(Duration::from_secs(30))).await.is_ok() {
        return Err("the channel did not open".into());
    }
    let cpu = cpu_seconds();
    let elapsed = match way {
        Way::ToPhone => send_file(&conn, &mut app_events, path).await?,
        Way::ToWatch => send_file(&app, &mut watch_events, path).await?,
    };
    let figure = figure(FILE_BYTES, elapsed, cpu_seconds() - cpu);
    watch.shutdown().await;
    hub.shutdown().await;
    Ok(figure)
}

/// The same file over the simulated radio, on virtual time.
fn simulated(mtu: u16, path: &Path, dir: &Path) -> Result<f64, BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    runtime.block_on(async {
        let params = BleParams {
            att_mtu: usize::from(mtu),
            ..BleParams::modern()
        };
        let (peripheral, central) = SimNetwork::new(params, BleConfig::default()).endpoints();
        let hub = Hub::new(central, config(2, &dir.join("sim-phone")));
        let watch = Interconnect::new(peripheral, config(1, &dir.join("sim-watch")));
        let app = hub.register(PKG, 1, None).await?;
        let mut app_events = app.events().ok_or("events")?;
        let conn = watch.instance(PKG, None);
        if !conn.diagnosis(Some(Duration::from_secs(60))).await.is_ok() {
            return Err::<f64, BoxError>("the channel did not open".into());
        }
        let start = tokio::time::Instant::now();
        conn.send_file(path).await?;
        let elapsed = start.elapsed();
        std::fs::remove_file(stored(&mut app_events).await?)?;
        Ok(8.0 * FILE_BYTES as f64 / elapsed.as_secs_f64() / 1e6)
    })
}

fn main() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("file.bin");
    let data: Vec<u8> = (0..FILE_BYTES as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, &data)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "trouble-host on Bumble virtual controllers (CPU-bound: no radio timing), \
         {} MiB each, Mbit/s and CPU seconds of this process:",
        FILE_BYTES >> 20
    );
    let idle = runtime.block_on(idle_cpu(Duration::from_secs(3)))?;
    println!("  connected and idle for 3 s: {idle:.2} s CPU (both hosts)");
    let carries = [
        Carry::Gatt(247),
        Carry::Gatt(517),
        Carry::Coc(512),
        Carry::Coc(1018),
    ];
    for carry in carries {
        let sim = match carry {
            Carry::Gatt(mtu) => format!(
                "; simulated radio {:.2} Mbit/s",
                simulated(mtu, &path, dir.path())?
            ),
            Carry::Coc(_) => String::new(),
        };
        for way in [Way::ToPhone, Way::ToWatch] {
            let raw = runtime.block_on(raw(carry, way))?;
            let ours = runtime.block_on(session(carry, way, &path, dir.path()))?;
            println!(
                "  {carry:<15} {way:<8} raw {:>6.2} Mbit/s ({:.1} s CPU); interconnect {:>6.2} \
                 Mbit/s ({:.1} s CPU): {:.2}x raw{sim}",
                raw.mbit_s,
                raw.cpu,
                ours.mbit_s,
                ours.cpu,
                ours.mbit_s / raw.mbit_s,
                carry = carry.to_string(),
                way = format!("{way:?}"),
            );
        }
    }
    Ok(())
}
