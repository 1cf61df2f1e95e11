//! Criterion benchmarks of interconnect (see `benches/`), and the helpers the benches
//! and bench binaries share: ratios against a baseline measured in the same run, the
//! process's peak memory, the command-line argument.

pub mod process {
    //! What a bench binary reads of its own process.

    /// Peak resident memory of this process so far, in KiB (`VmHWM`, Linux).
    pub fn peak_rss_kib() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The first command-line argument, parsed, or `default` when there is none.
    pub fn first_arg<T: std::str::FromStr>(default: T) -> Result<T, T::Err> {
        std::env::args()
            .nth(1)
            .map(|a| a.parse())
            .transpose()
            .map(|a| a.unwrap_or(default))
    }

    /// A temporary directory for the files a bench moves: in memory (`/dev/shm`) where the
    /// machine has it, so a bench that stores a GiB does not depend on the disk's free
    /// space, and the system's temporary directory elsewhere. Pages of a memory file
    /// system are not mapped into the process, so they do not count in its resident memory.
    pub fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
        let shm = std::path::Path::new("/dev/shm");
        match shm.is_dir() {
            true => tempfile::tempdir_in(shm).or_else(|_| tempfile::tempdir()),
            false => tempfile::tempdir(),
        }
    }
}

pub mod counted {
    //! What the instruction-count binaries share (`instructions`, `round_trip_cost`,
    //! `side_cost`): fixed keys and seeds, so two runs execute the same instructions.

    use interconnect::{Config, DeviceIdentity, NoiseConfig, Security};
    use interconnect_proto::DeviceId;

    /// Device `id`'s configuration: its key, seed and resume token all derived from
    /// `id`; Noise unless `plaintext`.
    pub fn fixed_config(id: u8, plaintext: bool) -> Config {
        let mut config = Config::in_memory(DeviceId([id; 16]));
        config.seed = Some(u64::from(id));
        config.session.resume_token = u64::from(id);
        config.session.security = if plaintext {
            Security::InsecurePlaintext
        } else {
            Security::Noise(NoiseConfig::new(DeviceIdentity::from_private_key([id; 32])))
        };
        config
    }
}

pub mod raw {
    //! A hostile watch's tools: frames written and read by hand on a raw socket.

    use bytes::Bytes;
    use interconnect_proto::{
        Capabilities, DEFAULT_MAX_FRAME_LEN, DeviceId, Frame, FrameHeader, HEADER_LEN, Hello,
        MAX_FRAME_LEN, PROTOCOL_VERSIONS, Role,
    };
    use tokio::io::{AsyncRead, AsyncReadExt};

    /// A plaintext watch's `Hello` (device id 1, resume token 1), encoded.
    pub fn watch_hello() -> Vec<u8> {
        Frame::Hello(Hello {
            role: Role::Watch,
            device_id: DeviceId([1; 16]),
            min_version: *PROTOCOL_VERSIONS.start(),
            max_version: *PROTOCOL_VERSIONS.end(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN as u32,
            capabilities: Capabilities::ALL,
            resume_token: 1,
        })
        .to_bytes(DEFAULT_MAX_FRAME_LEN)
        .map(|b| b.to_vec())
        .unwrap_or_default()
    }

    /// Reads one whole frame (header, payload, CRC) off the stream.
    pub async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Bytes> {
        let mut frame = vec![0u8; HEADER_LEN];
        stream.read_exact(&mut frame).await?;
        let header = FrameHeader::parse(&frame, MAX_FRAME_LEN).map_err(std::io::Error::other)?;
        frame.resize(header.frame_len(), 0);
        stream.read_exact(&mut frame[HEADER_LEN..]).await?;
        Ok(Bytes::from(frame))
    }
}

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
    //!
    //! Each end runs on its own thread with its own single-threaded runtime, as two
    //! processes would, for the baselines and for interconnect alike: on one shared
    //! thread, the phone's and the watch's work (encryption on both ends, for one) would
    //! queue behind each other, which no real pair of devices does.

    use std::future::Future;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use interconnect::{Config, ConnectionEvent, FilesConfig, Hub, Interconnect, Security};
    use interconnect_proto::DeviceId;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{mpsc, oneshot};

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

    /// Runs the future that `make` builds on a new thread with its own single-threaded
    /// runtime (like another process); its output comes back through the receiver.
    pub fn on_own_thread<F, Fut, T>(make: F) -> oneshot::Receiver<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the other end");
            let _ = tx.send(runtime.block_on(make()));
        });
        rx
    }

    /// A raw tokio TCP copy of `src` into `dst`, with large buffers on both sides, the
    /// receiving end on its own thread.
    pub async fn raw_tcp_copy(src: &Path, dst: &Path) -> Result<Duration, BoxError> {
        let dst = dst.to_path_buf();
        let (addr_tx, addr_rx) = oneshot::channel();
        // Large buffers on both sides: the fastest plain copy, not tokio's 8 KiB default.
        let receiver = on_own_thread(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let _ = addr_tx.send(listener.local_addr()?);
            let (socket, _) = listener.accept().await?;
            let mut socket = tokio::io::BufReader::with_capacity(COPY_BUFFER, socket);
            let file = tokio::fs::File::create(&dst).await?;
            let mut file = tokio::io::BufWriter::with_capacity(COPY_BUFFER, file);
            tokio::io::copy_buf(&mut socket, &mut file).await?;
            file.flush().await?;
            file.get_ref().sync_all().await?;
            Ok::<_, std::io::Error>(())
        });
        let addr = addr_rx.await?;
        let start = Instant::now();
        let mut socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let file = tokio::fs::File::open(src).await?;
        let mut file = tokio::io::BufReader::with_capacity(COPY_BUFFER, file);
        tokio::io::copy_buf(&mut file, &mut socket).await?;
        socket.shutdown().await?;
        receiver.await??;
        Ok(start.elapsed())
    }

    /// A phone hub (on its own thread) and a watch over loopback TCP with an open
    /// channel. Dropping it stops the phone.
    pub struct Ends {
        _watch: Interconnect,
        /// The watch's channel.
        pub conn: interconnect::Connection,
        /// Files the phone stored (or why it failed).
        stored: mpsc::UnboundedReceiver<Result<PathBuf, String>>,
        _stop: oneshot::Sender<()>,
    }

    /// Opens the ends, the phone storing files in `files_dir`, both sides with `security`
    /// and large frames and windows for bulk transfer.
    pub async fn interconnect_ends(files_dir: &Path, security: Security) -> Result<Ends, BoxError> {
        let (addr_tx, addr_rx) = oneshot::channel();
        let (stored_tx, stored) = mpsc::unbounded_channel();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let phone_security = security.clone();
        let files_dir = files_dir.to_path_buf();
        let _phone = on_own_thread(move || async move {
            let listener =
                transport_tcp::TcpListener::bind_with_config("127.0.0.1:0", tcp_config()).await?;
            let addr = listener.local_addr();
            let mut phone = bulk_config(2, phone_security);
            let mut files = FilesConfig::new(files_dir);
            files.reserve_free_bytes = 0;
            files.max_file_size = u64::MAX;
            phone.files = Some(files);
            let hub = Hub::new(listener, phone);
            let app = hub.register("bench", 1, None).await?;
            let mut events = app.events().unwrap();
            let _ = addr_tx.send(addr);
            loop {
                let event = tokio::select! {
                    event = events.next() => event,
                    _ = &mut stopped => break,
                };
                let report = match event {
                    Some(ConnectionEvent::File { path, .. }) => Ok(path),
                    Some(ConnectionEvent::Error { code, message }) => {
                        Err(format!("{code}: {message}"))
                    }
                    Some(_) => continue,
                    None => Err("the phone's driver stopped".into()),
                };
                if stored_tx.send(report).is_err() {
                    break;
                }
            }
            drop(hub);
            Ok::<_, BoxError>(())
        });
        let addr = addr_rx.await?;
        let dialer = transport_tcp::TcpDialer::with_config(addr, tcp_config());
        let (watch, conn) = watch_channel(dialer, bulk_config(1, security)).await?;
        Ok(Ends {
            _watch: watch,
            conn,
            stored,
            _stop: stop,
        })
    }

    /// A phone on its own thread, listening on loopback, whose `bench` app takes every
    /// event and says when it took `n` messages; dropping `stop` ends it.
    pub struct CountingPhone {
        /// Where it listens.
        pub addr: std::net::SocketAddr,
        /// When its app took the `n`th message.
        pub done: oneshot::Receiver<Instant>,
        /// Dropped: the phone stops.
        pub stop: oneshot::Sender<()>,
    }

    /// Starts a [`CountingPhone`] with `config`.
    pub async fn counting_phone(config: Config, n: usize) -> Result<CountingPhone, BoxError> {
        let (addr_tx, addr_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let _phone = on_own_thread(move || async move {
            let listener = transport_tcp::TcpListener::bind("127.0.0.1:0").await?;
            let _ = addr_tx.send(listener.local_addr());
            let hub = Hub::new(listener, config);
            let app = hub.register("bench", 1, None).await?;
            let mut events = app.events().ok_or("no events")?;
            let (mut taken, mut done_tx) = (0, Some(done_tx));
            loop {
                let event = tokio::select! {
                    event = events.next() => event,
                    _ = &mut stopped => break,
                };
                match event {
                    Some(ConnectionEvent::Message(_)) => taken += 1,
                    Some(_) => continue,
                    None => break,
                }
                if taken == n
                    && let Some(tx) = done_tx.take()
                {
                    let _ = tx.send(Instant::now());
                }
            }
            hub.shutdown().await;
            Ok::<_, BoxError>(())
        });
        let addr = addr_rx.await?;
        Ok(CountingPhone { addr, done, stop })
    }

    /// A watch over `dialer` with the `bench` package's channel open.
    pub async fn watch_channel(
        dialer: transport_tcp::TcpDialer,
        config: Config,
    ) -> Result<(Interconnect, interconnect::Connection), BoxError> {
        let watch = Interconnect::new(dialer, config);
        let conn = watch.instance("bench", None);
        if !conn.diagnosis(None).await.is_ok() {
            return Err("the channel did not open".into());
        }
        Ok((watch, conn))
    }

    fn tcp_config() -> transport_tcp::TcpConfig {
        transport_tcp::TcpConfig {
            max_frame_len: FRAME,
            ..Default::default()
        }
    }

    /// A device configured for bulk transfer over TCP: large frames and file window.
    fn bulk_config(id: u8, security: Security) -> Config {
        let mut config = Config::in_memory(DeviceId([id; 16]));
        config.session.security = security;
        config.session.max_frame_len = FRAME;
        config.session.file_window = WINDOW;
        config
    }

    /// Sends `src` and waits until the phone stored it; the time and the stored path.
    pub async fn interconnect_file(
        ends: &mut Ends,
        src: &Path,
    ) -> Result<(Duration, PathBuf), BoxError> {
        let start = Instant::now();
        ends.conn.send_file(src).await?;
        match ends.stored.recv().await {
            Some(Ok(path)) => Ok((start.elapsed(), path)),
            Some(Err(e)) => Err(e.into()),
            None => Err("the phone stopped".into()),
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
