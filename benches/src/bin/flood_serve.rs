//! A connection flood against a phone in a process of its own, and how the real watch
//! fares: at each rate, strangers at 127.0.0.2–9 open that many connections a second that
//! send nothing *and* as many that send a valid first handshake step and stall, while
//! the watch (20 ms away each direction, through a proxy) makes 10 attempts, each a new
//! connection, with no link up and with its stale link up (an earlier watch process with
//! the same key, frozen). Prints, per case, the attempts served within 2 s, the time to
//! be served (median and worst), and the phone process's peak RSS, most open
//! descriptors and CPU share during the case.
//!
//! `cargo run --release -p interconnect-benches --bin flood_serve [attempts=10]`

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use interconnect::{Config, DeviceIdentity, Hub, Interconnect, NoiseConfig, Security, TrustPolicy};
use interconnect_benches::process::first_arg;
use interconnect_conformance::flood::{DelayProxy, Flood, FrozenWatch, stranger_sources};
use interconnect_proto::DeviceId;
use transport_tcp::{TcpDialer, TcpListener};

const PKG: &str = "com.example.flood";
const RATES: [u32; 4] = [0, 25, 100, 200];

fn config(own: u8, peer: u8) -> Config {
    let identity = |k: u8| DeviceIdentity::from_private_key([k; 32]);
    let mut config = Config::in_memory(DeviceId([own; 16]));
    config.session.security = Security::Noise(
        NoiseConfig::new(identity(own))
            .with_trust(TrustPolicy::Pinned(vec![identity(peer).fingerprint()])),
    );
    config.backoff.initial = Duration::from_millis(20);
    config.backoff.max = Duration::from_millis(200);
    config
}

/// The phone: listens, prints its port, serves until stdin closes.
async fn phone() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr().port());
    let hub = Hub::new(listener, config(2, 1));
    let _app = hub.register(PKG, 1, None).await?;
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await?;
    hub.shutdown().await;
    Ok(())
}

/// What /proc says of the phone process.
struct Usage {
    hwm_kib: u64,
    fds: usize,
    cpu_ticks: u64,
}

fn usage(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let cpu_ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Usage {
        hwm_kib,
        fds,
        cpu_ticks,
    })
}

fn spawn_phone() -> Result<(Child, u16), Box<dyn std::error::Error>> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("phone")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    Ok((child, line.trim().parse()?))
}

/// The strangers of one case.
#[derive(Clone, Copy)]
enum Strangers {
    /// That many silent and as many stalled connections a second.
    Rate(u32),
    /// That many that each connect again the moment they are dropped, all sending a
    /// first step and stalling.
    Reconnecting(usize),
}

async fn case(
    strangers: Strangers,
    stale: bool,
    attempts: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let (mut child, port) = spawn_phone()?;
    let pid = child.id();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = DelayProxy::start(addr, Duration::from_millis(20)).await?;
    let flood = match strangers {
        Strangers::Rate(rate) => Flood::start(
            addr,
            rate,
            rate,
            stranger_sources(),
            Duration::from_secs(30),
        ),
        Strangers::Reconnecting(count) => {
            Flood::reconnecting(addr, count, true, stranger_sources())
        }
    };
    let start_ticks = usage(pid).map_or(0, |u| u.cpu_ticks);
    let started = Instant::now();
    // Two seconds of flood first: every slot is taken and strangers are pushed out.
    let mut most_fds = 0;
    let mut sample = tokio::time::interval(Duration::from_millis(100));
    while started.elapsed() < Duration::from_secs(2) {
        sample.tick().await;
        most_fds = most_fds.max(usage(pid).map_or(0, |u| u.fds));
    }
    let mut times = Vec::new();
    for _ in 0..attempts {
        let frozen = if stale {
            Some(FrozenWatch::start(TcpDialer::new(addr), config(1, 2), PKG)?)
        } else {
            None
        };
        let attempt = Instant::now();
        let watch = Interconnect::new(TcpDialer::new(proxy.addr()), config(1, 2));
        let served = tokio::time::timeout(Duration::from_secs(10), watch.connected()).await;
        times.push(served.ok().map(|()| attempt.elapsed()));
        most_fds = most_fds.max(usage(pid).map_or(0, |u| u.fds));
        watch.shutdown().await;
        drop(frozen);
    }
    let end = usage(pid).ok_or("the phone process is gone")?;
    let wall = started.elapsed().as_secs_f64();
    let tick = 100.0; // USER_HZ
    let cpu = (end.cpu_ticks - start_ticks) as f64 / tick / wall;
    let opened = flood
        .tally()
        .opened
        .load(std::sync::atomic::Ordering::Relaxed);
    drop(flood);
    drop(child.stdin.take());
    let _ = child.wait();
    let mut served: Vec<Duration> = times.iter().flatten().copied().collect();
    let within = served
        .iter()
        .filter(|t| **t <= Duration::from_secs(2))
        .count();
    served.sort();
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    let what = match strangers {
        Strangers::Rate(rate) => format!("{rate:>3}+{rate:<3}/s"),
        Strangers::Reconnecting(count) => format!("{count} again"),
    };
    println!(
        "{what:<10}  {:<14} served {within:>2}/{attempts} within 2 s  median {:>6.1} ms  worst {:>6.1} ms  \
         phone: peak RSS {:>5.1} MiB, most fds {most_fds:>3}, CPU {:>4.1}%  ({opened} stranger connections)",
        if stale { "stale link up" } else { "no link up" },
        ms(served.get(served.len() / 2)),
        ms(served.last()),
        end.hwm_kib as f64 / 1024.0,
        cpu * 100.0,
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Runtime::new()?;
    if std::env::args().nth(1).as_deref() == Some("phone") {
        return runtime.block_on(phone());
    }
    let attempts: usize = first_arg(10)?;
    println!("silent+stalled connections a second, from 127.0.0.2-9; the watch 20 ms away");
    runtime.block_on(async {
        for rate in RATES {
            for stale in [false, true] {
                case(Strangers::Rate(rate), stale, attempts).await?;
            }
        }
        println!(
            "strangers that connect again the moment they are dropped, stalling after step 1:"
        );
        for count in [8, 64] {
            for stale in [false, true] {
                case(Strangers::Reconnecting(count), stale, attempts).await?;
            }
        }
        Ok(())
    })
}
