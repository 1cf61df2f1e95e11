//! Criterion benchmarks of interconnect (see `benches/`), and the helper that prints each
//! result as a ratio of a baseline measured in the same run.

pub mod ratios {
    //! Reads criterion's saved estimates and prints ratios against a baseline.

    use std::path::PathBuf;

    /// Mean time per iteration, in nanoseconds, of `group/bench` from the run that just
    /// finished, or `None` if criterion saved nothing (e.g. a filtered run).
    pub fn mean_ns(group: &str, bench: &str) -> Option<f64> {
        let path = criterion_dir()
            .join(group.replace('/', "_"))
            .join(bench)
            .join("new/estimates.json");
        let text = std::fs::read_to_string(path).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["mean"]["point_estimate"].as_f64()
    }

    fn criterion_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("CRITERION_HOME") {
            return PathBuf::from(dir);
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        target.join("criterion")
    }

    /// Prints, for each group, `baseline time / bench time` for every bench: above 1.0 the
    /// bench is faster than the baseline.
    pub fn print_ratios(groups: &[String], baseline: &str, benches: &[&str]) {
        println!("\nthroughput as a ratio of `{baseline}` (same run; higher is better):");
        for group in groups {
            let Some(base) = mean_ns(group, baseline) else {
                continue;
            };
            let cells: Vec<String> = benches
                .iter()
                .filter_map(|b| mean_ns(group, b).map(|t| format!("{b} {:.2}x", base / t)))
                .collect();
            println!("  {group:<24} {}", cells.join("   "));
        }
    }
}

pub mod tcp {
    //! interconnect and raw tokio TCP over loopback, disk to disk, shared by the
    //! `tcp_bench` and `secure_bench` binaries.

    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use interconnect_core::{Config, ConnectionEvent, FilesConfig, Hub, Interconnect, Security};
    use interconnect_proto::DeviceId;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// Errors of a bench run.
    pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

    /// Buffer of the raw copy on each side.
    const COPY_BUFFER: usize = 256 * 1024;
    /// Frame size for bulk transfer over TCP (the default suits BLE too).
    pub const FRAME: usize = 1 << 20;
    /// File window for bulk transfer over TCP.
    pub const WINDOW: u64 = 16 << 20;

    /// The median.
    pub fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(|a, b| a.total_cmp(b));
        values[values.len() / 2]
    }

    /// A raw tokio TCP copy of `src` into `dst`, with large buffers on both sides.
    pub async fn raw_tcp_copy(src: &Path, dst: &Path) -> Result<Duration, BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let dst = dst.to_path_buf();
        let start = Instant::now();
        // Large buffers on both sides: the fastest plain copy, not tokio's 8 KiB default.
        let receiver = tokio::spawn(async move {
            let (socket, _) = listener.accept().await?;
            let mut socket = tokio::io::BufReader::with_capacity(COPY_BUFFER, socket);
            let file = tokio::fs::File::create(&dst).await?;
            let mut file = tokio::io::BufWriter::with_capacity(COPY_BUFFER, file);
            tokio::io::copy_buf(&mut socket, &mut file).await?;
            file.flush().await?;
            file.get_ref().sync_all().await?;
            Ok::<_, std::io::Error>(())
        });
        let mut socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let file = tokio::fs::File::open(src).await?;
        let mut file = tokio::io::BufReader::with_capacity(COPY_BUFFER, file);
        tokio::io::copy_buf(&mut file, &mut socket).await?;
        socket.shutdown().await?;
        receiver.await??;
        Ok(start.elapsed())
    }

    /// A phone hub and a watch over loopback TCP with an open channel.
    pub struct Ends {
        _hub: Hub,
        _watch: Interconnect,
        /// The watch's channel.
        pub conn: interconnect_core::Connection,
        _app: interconnect_core::Connection,
        events: interconnect_core::Events,
    }

    /// Opens the ends, the phone storing files in `files_dir`, both sides with `security`.
    pub async fn interconnect_ends(files_dir: &Path, security: Security) -> Result<Ends, BoxError> {
        let tcp = transport_tcp::TcpConfig {
            max_frame_len: FRAME,
            ..Default::default()
        };
        let listener =
            transport_tcp::TcpListener::bind_with_config("127.0.0.1:0", tcp.clone()).await?;
        let addr = listener.local_addr();
        let mut phone = Config::new(DeviceId([2; 16]));
        phone.security = security.clone();
        phone.session.max_frame_len = FRAME;
        phone.session.file_window = WINDOW;
        let mut files = FilesConfig::new(files_dir);
        files.reserve_free_bytes = 0;
        files.max_file_size = u64::MAX;
        phone.files = Some(files);
        let hub = Hub::new(listener, phone);
        let mut watch = Config::new(DeviceId([1; 16]));
        watch.security = security;
        let watch = Interconnect::new(transport_tcp::TcpDialer::new(addr), watch);
        let app = hub.register("bench", 1, None).await?;
        let events = app.events();
        let conn = watch.instance("bench", None);
        if !conn.diagnosis(None).await.is_ok() {
            return Err("the channel did not open".into());
        }
        Ok(Ends {
            _hub: hub,
            _watch: watch,
            conn,
            _app: app,
            events,
        })
    }

    /// Sends `src` and waits until the phone stored it; the time and the stored path.
    pub async fn interconnect_file(
        ends: &mut Ends,
        src: &Path,
    ) -> Result<(Duration, PathBuf), BoxError> {
        let start = Instant::now();
        ends.conn.send_file(src).await?;
        loop {
            match ends.events.next().await {
                Some(ConnectionEvent::File { path, .. }) => return Ok((start.elapsed(), path)),
                Some(ConnectionEvent::Error { code, message }) => {
                    return Err(format!("{code}: {message}").into());
                }
                Some(_) => {}
                None => return Err("driver stopped".into()),
            }
        }
    }

    /// Writes a file of `mib` MiB of varied bytes.
    pub async fn source_file(path: &Path, mib: usize) -> Result<(), BoxError> {
        let block: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut file = tokio::fs::File::create(path).await?;
        for i in 0..mib {
            let mut b = block.clone();
            b[0] = i as u8;
            file.write_all(&b).await?;
        }
        file.sync_all().await?;
        Ok(())
    }
}
