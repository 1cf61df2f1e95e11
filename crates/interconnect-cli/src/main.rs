//! `interconnect`: run a phone hub, a watch client, or a self-checking demo over TCP.
//!
//! Every command prints its results as JSON lines on stdout; failures print
//! `{"code":N,"message":…}` and exit non-zero. Logs (`-v`, `-vv`) go to stderr.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use interconnect_core::{
    Config, Connection, ConnectionEvent, Error, FileTransfer, FilesConfig, Hub, Interconnect,
};
use interconnect_proto::{Code, DeviceId};
use serde_json::{Value, json};
use transport_tcp::{TcpDialer, TcpListener};

#[derive(Parser)]
#[command(
    name = "interconnect",
    version,
    about = "Watch ↔ phone messaging and files over TCP"
)]
struct Cli {
    /// More logs on stderr (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A phone hub and a watch in this process over loopback TCP: opens a channel,
    /// exchanges messages, runs a request/reply, sends a file, and checks every step.
    Demo,
    /// A phone hub with one registered app; prints one JSON line per event.
    Phone {
        /// Address to listen on, e.g. 127.0.0.1:7000.
        #[arg(long)]
        listen: SocketAddr,
        /// The app's package name.
        #[arg(long)]
        package: String,
        /// The app's version.
        #[arg(long = "app-version")]
        app_version: u32,
        /// The app's signing fingerprint.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Where received files go.
        #[arg(long = "files-dir")]
        files_dir: PathBuf,
        /// Answer every message (and request) with the same data.
        #[arg(long)]
        echo: bool,
    },
    /// A watch connecting to a phone, running one command.
    Watch {
        /// The phone's address.
        #[arg(long)]
        connect: SocketAddr,
        /// The phone app's package name.
        #[arg(long)]
        package: String,
        /// The signing fingerprint the phone app must have.
        #[arg(long)]
        fingerprint: Option<String>,
        /// How long to wait for the connection and the command, in milliseconds.
        #[arg(long = "timeout-ms", default_value_t = 10_000, global = true)]
        timeout_ms: u64,
        #[command(subcommand)]
        command: WatchCommand,
    },
}

#[derive(Subcommand)]
enum WatchCommand {
    /// Peer device status (0/1) and the channel's ready state (1/2).
    Status,
    /// The phone app's version, or -1 when it is not installed.
    Version,
    /// The vendor API's diagnosis: 0, 204, 1001 or 1000 (with the precise code).
    Diagnosis,
    /// Sends a JSON message and waits for the acknowledgement.
    Send {
        /// The message, as JSON.
        json: String,
    },
    /// Sends a JSON request and prints the reply.
    Request {
        /// The request, as JSON.
        json: String,
    },
    /// Sends a file; survives link drops within the timeout (it resumes).
    SendFile {
        /// The file.
        path: PathBuf,
    },
    /// Prints every event as a JSON line until the channel closes or Ctrl-C.
    Listen,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(Code::OTHERS, &format!("cannot start the runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Demo => demo().await,
            Command::Phone {
                listen,
                package,
                app_version,
                fingerprint,
                files_dir,
                echo,
            } => {
                phone(
                    listen,
                    &package,
                    app_version,
                    fingerprint.as_deref(),
                    files_dir,
                    echo,
                )
                .await
            }
            Command::Watch {
                connect,
                package,
                fingerprint,
                timeout_ms,
                command,
            } => {
                let timeout = Duration::from_millis(timeout_ms);
                watch(connect, &package, fingerprint.as_deref(), timeout, command).await
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(failure.code, &failure.message),
    }
}

/// A failed command: its code and message.
struct Failure {
    code: Code,
    message: String,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            code: error.code(),
            message: error.to_string(),
        }
    }
}

fn failure(code: Code, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

fn fail(code: Code, message: &str) -> ExitCode {
    println!("{}", json!({ "code": code.as_u16(), "message": message }));
    ExitCode::FAILURE
}

fn device_id() -> DeviceId {
    DeviceId(rand::random())
}

fn event_json(event: &ConnectionEvent) -> Value {
    match event {
        ConnectionEvent::Open { is_reconnected } => {
            json!({ "event": "open", "is_reconnected": is_reconnected })
        }
        ConnectionEvent::Close { code, reason } => {
            json!({ "event": "close", "code": code.as_u16(), "reason": reason })
        }
        ConnectionEvent::Message(message) => {
            let data = message
                .decode::<Value>()
                .unwrap_or_else(|_| Value::String(hex::encode(&message.payload)));
            json!({ "event": "message", "data": data })
        }
        ConnectionEvent::FileIncoming {
            name, size, offset, ..
        } => {
            json!({ "event": "file_incoming", "name": name, "size": size, "offset": offset })
        }
        ConnectionEvent::File { path, name, size } => json!({
            "event": "file",
            "path": path,
            "name": name,
            "size": size,
            "sha256": sha256_of(path).unwrap_or_default(),
        }),
        ConnectionEvent::Error { code, message } => {
            json!({ "event": "error", "code": code.as_u16(), "message": message })
        }
        other => json!({ "event": format!("{other:?}") }),
    }
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

async fn phone(
    listen: SocketAddr,
    package: &str,
    version: u32,
    fingerprint: Option<&str>,
    files_dir: PathBuf,
    echo: bool,
) -> Result<(), Failure> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| failure(Code::OTHERS, format!("cannot listen on {listen}: {e}")))?;
    let mut config = Config::new(device_id());
    config.files = Some(FilesConfig::new(files_dir));
    let hub = Hub::new(listener, config);
    let app = hub.register(package, version, fingerprint).await?;
    eprintln!("listening on {listen} for package {package}");
    let mut events = app.events();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            event = events.next() => {
                let Some(event) = event else { break };
                println!("{}", event_json(&event));
                if echo && let ConnectionEvent::Message(message) = &event {
                    let app = app.clone();
                    let message = message.clone();
                    tokio::spawn(async move {
                        let answer = if message.request_id.is_some() {
                            app.reply_bytes(&message, message.content_type, message.payload.clone()).await
                        } else {
                            app.send_bytes(message.content_type, message.payload.clone()).await
                        };
                        if let Err(error) = answer {
                            eprintln!("echo failed: {error}");
                        }
                    });
                }
            }
        }
    }
    hub.shutdown().await;
    Ok(())
}

async fn open_watch(
    connect: SocketAddr,
    package: &str,
    fingerprint: Option<&str>,
) -> (Interconnect, Connection) {
    let mut config = Config::new(device_id());
    config.backoff.initial = Duration::from_millis(50);
    config.backoff.max = Duration::from_secs(2);
    let watch = Interconnect::new(TcpDialer::new(connect), config);
    let conn = watch.instance(package, fingerprint);
    (watch, conn)
}

async fn watch(
    connect: SocketAddr,
    package: &str,
    fingerprint: Option<&str>,
    timeout: Duration,
    command: WatchCommand,
) -> Result<(), Failure> {
    let (watch, conn) = open_watch(connect, package, fingerprint).await;
    let result = run_watch_command(&watch, &conn, timeout, command).await;
    watch.shutdown().await;
    let output = result?;
    println!("{output}");
    Ok(())
}

async fn ensure_open(conn: &Connection, timeout: Duration) -> Result<(), Failure> {
    let diagnosis = conn.diagnosis(Some(timeout)).await;
    if diagnosis.is_ok() {
        Ok(())
    } else {
        Err(failure(
            diagnosis.code,
            format!("the channel did not open: {}", diagnosis.code),
        ))
    }
}

async fn run_watch_command(
    watch: &Interconnect,
    conn: &Connection,
    timeout: Duration,
    command: WatchCommand,
) -> Result<Value, Failure> {
    match command {
        WatchCommand::Status => {
            let _ = tokio::time::timeout(timeout, watch.connected()).await;
            let _ = conn
                .diagnosis(Some(timeout.min(Duration::from_secs(2))))
                .await;
            Ok(json!({
                "peer_device_status": watch.peer_device_status().code(),
                "ready_state": conn.ready_state().code(),
            }))
        }
        WatchCommand::Version => {
            tokio::time::timeout(timeout, watch.connected())
                .await
                .map_err(|_| failure(Code::TIMEOUT, "the phone did not answer"))?;
            Ok(json!({ "version": conn.peer_client_version_code().await? }))
        }
        WatchCommand::Diagnosis => {
            let diagnosis = conn.diagnosis(Some(timeout)).await;
            if diagnosis.is_ok() {
                Ok(json!({ "status": 0, "code": 0 }))
            } else {
                Err(failure(
                    diagnosis.code,
                    format!(
                        "diagnosis: status {} ({})",
                        diagnosis.status(),
                        diagnosis.code
                    ),
                ))
            }
        }
        WatchCommand::Send { json: text } => {
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                failure(Code::OTHERS, format!("the message is not valid JSON: {e}"))
            })?;
            ensure_open(conn, timeout).await?;
            conn.send(&value).await?;
            Ok(json!({ "sent": true }))
        }
        WatchCommand::Request { json: text } => {
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                failure(Code::OTHERS, format!("the request is not valid JSON: {e}"))
            })?;
            ensure_open(conn, timeout).await?;
            let reply: Value = conn.request(&value, timeout).await?;
            Ok(json!({ "reply": reply }))
        }
        WatchCommand::SendFile { path } => {
            if !path.is_file() {
                return Err(failure(
                    Code::STORAGE,
                    format!("{} is not a readable file", path.display()),
                ));
            }
            ensure_open(conn, timeout).await?;
            let transfer = conn.send_file(&path);
            tokio::time::timeout(timeout, with_progress_bar(transfer))
                .await
                .map_err(|_| failure(Code::TIMEOUT, "the file was not stored in time"))??;
            let size = std::fs::metadata(&path)
                .map(|m| m.len())
                .unwrap_or_default();
            Ok(json!({
                "sent": path,
                "size": size,
                "sha256": sha256_of(&path).unwrap_or_default(),
            }))
        }
        WatchCommand::Listen => {
            let mut events = conn.events();
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Ok(json!({ "event": "stopped" })),
                    event = events.next() => match event {
                        Some(event) => {
                            println!("{}", event_json(&event));
                            if let ConnectionEvent::Close { code, .. } = event
                                && code != Code::CONNECTION_LOST
                            {
                                return Ok(json!({ "event": "closed" }));
                            }
                        }
                        None => return Err(failure(Code::CONNECTION_LOST, "the driver stopped")),
                    },
                }
            }
        }
    }
}

/// Awaits a transfer, drawing a progress bar on stderr when it is a terminal.
async fn with_progress_bar(transfer: FileTransfer) -> Result<(), Error> {
    if !std::io::stderr().is_terminal() {
        return transfer.await;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut progress = transfer.progress_stream();
    let drawer = {
        let bar = bar.clone();
        tokio::spawn(async move {
            use tokio_stream::StreamExt;
            while let Some(p) = progress.next().await {
                bar.set_length(p.total);
                bar.set_position(p.bytes_done);
            }
        })
    };
    let outcome = transfer.await;
    drawer.abort();
    bar.finish_and_clear();
    outcome
}

/// Checks one demo step, printing it.
fn check(step: &str, ok: bool, detail: Value) -> Result<(), Failure> {
    println!("{}", json!({ "step": step, "ok": ok, "detail": detail }));
    if ok {
        Ok(())
    } else {
        Err(failure(Code::OTHERS, format!("demo step failed: {step}")))
    }
}

async fn demo() -> Result<(), Failure> {
    const PACKAGE: &str = "com.example.demo";
    const FINGERPRINT: &str = "DE:MO:00:01";
    let dir = tempfile::tempdir().map_err(|e| failure(Code::STORAGE, e.to_string()))?;
    let files_dir = dir.path().join("received");

    // Phone: a hub on an ephemeral loopback port, with one app.
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| failure(Code::OTHERS, format!("cannot listen: {e}")))?;
    let addr = listener.local_addr();
    let mut phone_config = Config::new(device_id());
    phone_config.files = Some(FilesConfig::new(&files_dir));
    let hub = Hub::new(listener, phone_config);
    let app = hub.register(PACKAGE, 42, Some(FINGERPRINT)).await?;
    let mut app_events = app.events();
    let echo = tokio::spawn({
        let app = app.clone();
        async move {
            let mut received = Vec::new();
            while let Some(event) = app_events.next().await {
                match event {
                    ConnectionEvent::Message(m) if m.request_id.is_some() => {
                        let n: i64 = m.decode().unwrap_or_default();
                        let _ = app.reply(&m, &(n * n)).await;
                    }
                    ConnectionEvent::Message(m) => received.push(m.decode::<Value>().ok()),
                    ConnectionEvent::File { path, name, size } => {
                        return (received, Some((path, name, size)));
                    }
                    _ => {}
                }
            }
            (received, None)
        }
    });

    // Watch: dials the phone and opens a channel to the app.
    let (watch, conn) = open_watch(addr, PACKAGE, Some(FINGERPRINT)).await;
    let diagnosis = conn.diagnosis(None).await;
    check(
        "diagnosis",
        diagnosis.is_ok(),
        json!({ "status": diagnosis.status() }),
    )?;
    check(
        "peer device status",
        watch.peer_device_status().code() == 1,
        json!(watch.peer_device_status().code()),
    )?;
    check(
        "ready state",
        conn.ready_state().code() == 1,
        json!(conn.ready_state().code()),
    )?;
    let version = conn.peer_client_version_code().await?;
    check("peer app version", version == 42, json!(version))?;
    let other = watch.instance("com.example.absent", None);
    let absent = other.peer_client_version_code().await?;
    check(
        "version of an app not installed",
        absent == -1,
        json!(absent),
    )?;

    for i in 0..10 {
        conn.send(&json!({ "seq": i, "steps": 1000 + i })).await?;
    }
    check("10 messages acknowledged", true, json!(10))?;
    let square: i64 = conn.request(&12, Duration::from_secs(10)).await?;
    check(
        "request/reply",
        square == 144,
        json!({ "request": 12, "reply": square }),
    )?;

    let path = dir.path().join("watch-log.bin");
    let content: Vec<u8> = (0..(8u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, &content).map_err(|e| failure(Code::STORAGE, e.to_string()))?;
    with_progress_bar(conn.send_file(&path)).await?;
    let (received, file) = echo
        .await
        .map_err(|e| failure(Code::OTHERS, e.to_string()))?;
    let in_order = received.len() == 10
        && received
            .iter()
            .enumerate()
            .all(|(i, v)| v.as_ref().and_then(|v| v["seq"].as_u64()) == Some(i as u64));
    check("messages arrived in order", in_order, json!(received.len()))?;
    let Some((stored, name, size)) = file else {
        return Err(failure(Code::OTHERS, "the file event never came"));
    };
    let identical = std::fs::read(&stored)
        .map(|b| b == content)
        .unwrap_or(false);
    check(
        "file stored and identical",
        identical && size == content.len() as u64,
        json!({ "name": name, "size": size, "sha256": sha256_of(&stored).unwrap_or_default() }),
    )?;
    conn.close(Code::OTHERS, "demo finished").await?;
    watch.shutdown().await;
    hub.shutdown().await;
    println!("{}", json!({ "demo": "ok" }));
    Ok(())
}
