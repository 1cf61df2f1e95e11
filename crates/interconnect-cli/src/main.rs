//! `interconnect`: run a phone hub, a watch client, or a self-checking demo over TCP.
//!
//! Every command prints its results as JSON lines on stdout; failures print
//! `{"code":N,"message":…}` and exit non-zero. Logs (`-v`, `-vv`) go to stderr.
//!
//! Links are Noise-encrypted and mutually authenticated; see [`security`] for the
//! identity and trust flags.

mod security;

use interconnect::IdentityFile;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use interconnect::{
    ClosedBy, Config, Connection, ConnectionEvent, DeviceIdentity, Error, FileTransfer,
    FilesConfig, Hub, Interconnect, NoiseConfig, Security,
};
use interconnect_proto::{Code, DeviceId};
use security::{Outcome, Role, SecurityArgs};
use serde_json::{Value, json};
use transport_tcp::{TcpConfig, TcpDialer, TcpListener};

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
        /// The app's signature (its signing certificate's fingerprint, as the vendor APIs call it).
        #[arg(long)]
        signature: Option<String>,
        /// Where received files go.
        #[arg(long = "files-dir")]
        files_dir: PathBuf,
        /// Free space (MiB) the disk keeps once every file in progress is stored.
        #[arg(long = "reserve-free-mib", default_value_t = 64)]
        reserve_free_mib: u64,
        /// Answer every message (and request) with the same data.
        #[arg(long)]
        echo: bool,
        /// Milliseconds the app spends on each message before it reads the next: a
        /// message is acknowledged to the watch only once the app took it, so this shows
        /// the watch's sends waiting (and what a phone that dies holds unread).
        #[arg(long = "handle-ms", default_value_t = 0)]
        handle_ms: u64,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// A watch connecting to a phone, running one command.
    Watch {
        /// The phone's address: `host:port` (`localhost:7000`, `192.168.1.5:7000`).
        #[arg(long, value_parser = host_and_port)]
        connect: String,
        /// The phone app's package name.
        #[arg(long)]
        package: String,
        /// The signature the phone app must have (1007 otherwise).
        #[arg(long)]
        signature: Option<String>,
        /// How long to wait for the connection and the command, in milliseconds.
        #[arg(long = "timeout-ms", default_value_t = 10_000, global = true)]
        timeout_ms: u64,
        #[command(flatten)]
        security: SecurityArgs,
        #[command(subcommand)]
        command: WatchCommand,
    },
    /// Pairs this device with a peer by numeric comparison: both sides show a 6-digit
    /// code; when they match and the user confirms on both, each pins the other.
    Pair {
        /// Pair as the phone, listening here.
        #[arg(long, required_unless_present = "connect", conflicts_with = "connect")]
        listen: Option<SocketAddr>,
        /// Pair as the watch, connecting here (`host:port`).
        #[arg(long, value_parser = host_and_port)]
        connect: Option<String>,
        /// Confirm without asking, for scripts. This pins the peer before anyone
        /// compared the codes: compare the printed codes afterwards, and if they differ
        /// remove the pin from `known_peers` (someone sat between the devices).
        #[arg(long)]
        yes: bool,
        /// How long to wait for the peer and the user, in milliseconds.
        #[arg(long = "timeout-ms", default_value_t = 120_000)]
        timeout_ms: u64,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Creates a device identity file (owner-only permissions) and prints its fingerprint.
    Keygen {
        /// Where to write it.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
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

/// A `host:port` (the host a name or an address, `[v6]` in brackets), checked before
/// anything is looked up.
fn host_and_port(value: &str) -> Result<String, String> {
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(value.to_string())
        }
        _ => Err(format!("`{value}` is not host:port (e.g. localhost:7000)")),
    }
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
        // Colour codes only for a terminal, not for a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
                signature,
                files_dir,
                reserve_free_mib,
                echo,
                handle_ms,
                security,
            } => {
                let app = PhoneApp {
                    package,
                    version: app_version,
                    signature,
                    handle: Duration::from_millis(handle_ms),
                };
                let mut files = FilesConfig::new(files_dir);
                files.reserve_free_bytes = reserve_free_mib.saturating_mul(1 << 20);
                phone(listen, app, files, echo, &security).await
            }
            Command::Watch {
                connect,
                package,
                signature,
                timeout_ms,
                security,
                command,
            } => {
                let timeout = Duration::from_millis(timeout_ms);
                let target = WatchTarget {
                    connect,
                    package,
                    signature,
                };
                watch(target, timeout, &security, command).await
            }
            Command::Pair {
                listen,
                connect,
                yes,
                timeout_ms,
                security,
            } => {
                let timeout = Duration::from_millis(timeout_ms);
                pair(listen, connect, yes, timeout, &security).await
            }
            Command::Keygen { out, force } => {
                security::keygen(&out, force).map(|v| println!("{v}"))
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

/// The device id that goes with the device key (random in plaintext mode).
fn device_id(security: &Security) -> DeviceId {
    match security {
        Security::Noise(noise) => noise.identity.device_id(),
        _ => DeviceId(rand::random()),
    }
}

fn event_json(event: &ConnectionEvent) -> Value {
    match event {
        ConnectionEvent::Open { is_reconnected } => {
            json!({ "event": "open", "is_reconnected": is_reconnected })
        }
        ConnectionEvent::Close {
            code,
            reason,
            by,
            reopens,
        } => {
            let by = match by {
                ClosedBy::Local => "local",
                ClosedBy::Peer => "peer",
                ClosedBy::Link => "link",
            };
            json!({ "event": "close", "code": code.as_u16(), "reason": reason, "by": by, "reopens": reopens })
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
        ConnectionEvent::File {
            path, name, size, ..
        } => json!({
            "event": "file",
            "path": path,
            "name": name,
            "size": size,
            "sha256": sha256_of(path).unwrap_or_default(),
        }),
        ConnectionEvent::Error { code, message } => {
            json!({ "event": "error", "code": code.as_u16(), "message": message })
        }
        ConnectionEvent::FileProgress {
            transfer,
            bytes_done,
            total,
        } => {
            json!({ "event": "file_progress", "transfer": transfer, "bytes_done": bytes_done, "total": total })
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

/// The first line a listening command prints: the address it listens on, which tells
/// a script the port when it asked for port 0.
fn print_listening(address: SocketAddr) {
    println!(
        "{}",
        json!({ "event": "listening", "address": address.to_string() })
    );
}

/// The app a phone command registers.
struct PhoneApp {
    package: String,
    version: u32,
    signature: Option<String>,
    /// Time spent on each message.
    handle: Duration,
}

async fn phone(
    listen: SocketAddr,
    app: PhoneApp,
    files: FilesConfig,
    echo: bool,
    security: &SecurityArgs,
) -> Result<(), Failure> {
    let setup = security.setup(Role::Phone, false)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| failure(Code::OTHERS, format!("cannot listen on {listen}: {e}")))?;
    let mut config = Config::in_memory(device_id(&setup.security));
    config.files = Some(files);
    config.session.security = setup.security;
    config.known_peers = setup.known_peers;
    print_listening(listener.local_addr());
    let hub = Hub::new(listener, config);
    if let Some(events) = hub.security_events() {
        // Refusals are printed; the phone keeps serving.
        drop(security::monitor(events, true, Some(false)));
    }
    let PhoneApp {
        package,
        version,
        signature,
        handle,
    } = app;
    let app = hub
        .register(&package, version, signature.as_deref())
        .await?;
    eprintln!("package {package} registered");
    let mut events = app.events().expect("a new connection has its events");
    // A link that drops is said on stdout too, unless the watch said goodbye first (it
    // closed the channel: its `close` line says it all).
    let mut linked = false;
    let mut said_goodbye = false;
    loop {
        // Events first: a watch's close, queued before its link went, is taken before
        // the link's loss is looked at.
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => break,
            event = events.next() => {
                let Some(event) = event else { break };
                match &event {
                    ConnectionEvent::Close { by: interconnect::ClosedBy::Peer, .. } => {
                        said_goodbye = true;
                    }
                    ConnectionEvent::Open { .. } => said_goodbye = false,
                    _ => {}
                }
                println!("{}", event_json(&event));
                if !handle.is_zero() && matches!(event, ConnectionEvent::Message(_)) {
                    tokio::time::sleep(handle).await;
                }
                if echo && let ConnectionEvent::Message(message) = &event {
                    let app = app.clone();
                    let message = message.clone();
                    tokio::spawn(async move {
                        if message.request_id.is_some() {
                            let reply = app.reply_bytes(&message, message.content_type, message.payload.clone());
                            if let Err(error) = reply.await {
                                eprintln!("echo failed: {error}");
                                print_error(error.code(), &format!("echo failed: {error}"));
                            }
                        } else {
                            // A one-way message's echo is for whoever listens: a watch
                            // that sent and left does not take it, which is no failure.
                            let echo = app.send_bytes(message.content_type, message.payload.clone());
                            if let Err(error) = echo.await {
                                tracing::debug!(%error, "one-way echo not taken");
                            }
                        }
                    });
                }
            }
            () = hub.connected(), if !linked => linked = true,
            () = hub.disconnected(), if linked => {
                linked = false;
                if !std::mem::take(&mut said_goodbye) {
                    print_error(Code::CONNECTION_LOST, "the link to the watch dropped");
                }
            }
        }
    }
    hub.shutdown().await;
    Ok(())
}

/// An `error` event line on stdout.
fn print_error(code: Code, message: &str) {
    println!(
        "{}",
        json!({ "event": "error", "code": code.as_u16(), "message": message })
    );
}

/// Where a watch command connects, and to which app.
struct WatchTarget {
    connect: String,
    package: String,
    signature: Option<String>,
}

/// A config with this security and quick redials (only a dialing watch uses them).
fn endpoint_config(security: Security) -> Config {
    let mut config = Config::in_memory(device_id(&security));
    config.backoff.initial = Duration::from_millis(50);
    config.backoff.max = Duration::from_secs(2);
    config.session.security = security;
    config
}

async fn watch(
    target: WatchTarget,
    timeout: Duration,
    security: &SecurityArgs,
    command: WatchCommand,
) -> Result<(), Failure> {
    let setup = security.setup(Role::Watch, false)?;
    let mut config = endpoint_config(setup.security);
    config.known_peers = setup.known_peers;
    let watch = Interconnect::new(
        TcpDialer::to_host(target.connect, TcpConfig::default()),
        config,
    );
    let mut outcomes = watch
        .security_events()
        .map(|events| security::monitor(events, false, Some(false)));
    let conn = watch.instance(&target.package, target.signature.as_deref());
    // A lasting refusal (an untrusted or changed peer key) ends the command at once
    // instead of retrying until the timeout.
    // A passing one is kept: if the command times out, it says why better than 204.
    let passing = std::sync::Mutex::new(None);
    let refused = async {
        if let Some(outcomes) = &mut outcomes {
            while let Some(outcome) = outcomes.recv().await {
                match outcome {
                    Outcome::Refused(error) => return Failure::from(error),
                    Outcome::Passing(error) => {
                        *passing.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                    }
                    Outcome::Authenticated { .. } => {}
                }
            }
        }
        std::future::pending().await
    };
    let result = tokio::select! {
        result = run_watch_command(&watch, &conn, timeout, command) => result,
        failure = refused => Err(failure),
    };
    let last_refusal = passing.lock().unwrap_or_else(|e| e.into_inner()).take();
    let result = match (result, last_refusal) {
        (Err(failure), Some(error)) if failure.code == Code::TIMEOUT => Err(Failure::from(error)),
        (result, _) => result,
    };
    watch.shutdown().await;
    let output = result?;
    println!("{output}");
    Ok(())
}

async fn pair(
    listen: Option<SocketAddr>,
    connect: Option<String>,
    yes: bool,
    timeout: Duration,
    security: &SecurityArgs,
) -> Result<(), Failure> {
    let role = if listen.is_some() {
        Role::Phone
    } else {
        Role::Watch
    };
    let setup = security.setup(role, true)?;
    if matches!(setup.security, Security::InsecurePlaintext) {
        return Err(failure(
            Code::SECURITY,
            "pairing needs an encrypted link; drop --insecure-plaintext",
        ));
    }
    let mut config = endpoint_config(setup.security);
    config.known_peers = setup.known_peers;
    let confirm = yes.then_some(true);
    if yes {
        eprintln!(
            "WARNING: --yes pins the peer without a comparison; check that both sides print the same code, and if not, remove the pin from known_peers"
        );
    }
    let (endpoint, outcomes) = match (listen, connect) {
        (Some(addr), _) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| failure(Code::OTHERS, format!("cannot listen on {addr}: {e}")))?;
            print_listening(listener.local_addr());
            let hub = Hub::new(listener, config);
            let events = hub.security_events();
            (Endpoint::Hub(hub), events)
        }
        (None, Some(addr)) => {
            let watch = Interconnect::new(TcpDialer::to_host(addr, TcpConfig::default()), config);
            let events = watch.security_events();
            (Endpoint::Watch(watch), events)
        }
        (None, None) => return Err(failure(Code::OTHERS, "pass --listen or --connect")),
    };
    let mut outcomes = outcomes.map(|e| security::monitor(e, false, confirm));
    let deadline = tokio::time::Instant::now() + timeout;
    let verdict = async {
        let outcomes = outcomes
            .as_mut()
            .ok_or_else(|| failure(Code::OTHERS, "security events already taken"))?;
        loop {
            match outcomes.recv().await {
                Some(Outcome::Authenticated { fingerprint, code }) => {
                    break Ok(json!({ "paired": fingerprint.to_string(), "code": code }));
                }
                Some(Outcome::Refused(error)) => break Err(Failure::from(error)),
                Some(Outcome::Passing(_)) => {}
                None => break Err(failure(Code::OTHERS, "the endpoint stopped")),
            }
        }
    };
    // This side trusts the peer once authenticated; the link comes up only once the peer
    // trusts this side too.
    let both = async {
        let (verdict, ()) = tokio::join!(verdict, endpoint.connected());
        verdict
    };
    let result = match tokio::time::timeout_at(deadline, both).await {
        Ok(result) => result,
        Err(_) => Err(failure(Code::TIMEOUT, "pairing did not complete in time")),
    };
    if result.is_ok() && matches!(endpoint, Endpoint::Hub(_)) {
        // The watch leaves first, so it too sees the link up before it goes.
        let _ = tokio::time::timeout_at(deadline, endpoint.disconnected()).await;
    }
    endpoint.shutdown().await;
    println!("{}", result?);
    Ok(())
}

/// Either side of `pair`.
enum Endpoint {
    Hub(Hub),
    Watch(Interconnect),
}

impl Endpoint {
    async fn connected(&self) {
        match self {
            Endpoint::Hub(hub) => hub.connected().await,
            Endpoint::Watch(watch) => watch.connected().await,
        }
    }

    async fn disconnected(&self) {
        match self {
            Endpoint::Hub(hub) => hub.disconnected().await,
            Endpoint::Watch(watch) => watch.disconnected().await,
        }
    }

    async fn shutdown(self) {
        match self {
            Endpoint::Hub(hub) => hub.shutdown().await,
            Endpoint::Watch(watch) => watch.shutdown().await,
        }
    }
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
            let mut events = conn.events().expect("a new connection has its events");
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
    // Both devices get fresh keys and trust each other on first use.
    let phone_identity = DeviceIdentity::generate();
    let phone_fingerprint = phone_identity.fingerprint();
    let mut phone_config = Config::in_memory(phone_identity.device_id());
    phone_config.files = Some(FilesConfig::new(&files_dir));
    phone_config.session.security = Security::Noise(NoiseConfig::new(phone_identity));
    let hub = Hub::new(listener, phone_config);
    let app = hub.register(PACKAGE, 42, Some(FINGERPRINT)).await?;
    let mut app_events = app.events().expect("a new connection has its events");
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
                    ConnectionEvent::File {
                        path, name, size, ..
                    } => {
                        return (received, Some((path, name, size)));
                    }
                    _ => {}
                }
            }
            (received, None)
        }
    });

    // Watch: dials the phone and opens a channel to the app.
    let watch = Interconnect::new(
        TcpDialer::new(addr),
        endpoint_config(Security::Noise(
            NoiseConfig::new(DeviceIdentity::generate()),
        )),
    );
    let mut security_events = watch
        .security_events()
        .ok_or_else(|| failure(Code::OTHERS, "security events already taken"))?;
    let conn = watch.instance(PACKAGE, Some(FINGERPRINT));
    let diagnosis = conn.diagnosis(None).await;
    check(
        "diagnosis",
        diagnosis.is_ok(),
        json!({ "status": diagnosis.status() }),
    )?;
    let authenticated = loop {
        match security_events.next().await {
            Some(interconnect::SecurityEvent::Authenticated {
                fingerprint, suite, ..
            }) => break Some((fingerprint, suite)),
            Some(_) => {}
            None => break None,
        }
    };
    check(
        "encrypted and authenticated link",
        authenticated.is_some_and(|(f, _)| f == phone_fingerprint),
        json!({
            "phone": phone_fingerprint.to_string(),
            "suite": authenticated.map(|(_, s)| s.to_string()),
        }),
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

    let mut acknowledged = 0;
    for i in 0..10 {
        if conn
            .send(&json!({ "seq": i, "steps": 1000 + i }))
            .await
            .is_ok()
        {
            acknowledged += 1;
        }
    }
    check(
        "10 messages acknowledged",
        acknowledged == 10,
        json!(acknowledged),
    )?;
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
