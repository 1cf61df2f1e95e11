//! What one side of a one-way stream costs: the watch sending or the phone receiving,
//! each a process of its own over TCP loopback, as they are deployed. `.ci/instructions`
//! runs this under callgrind, which counts only the process it started (children run
//! natively), so each count is one side alone: the sender's sealing, writing and
//! handling of acknowledgements, or the receiver's opening, delivery to its app and
//! acknowledging.
//!
//! `side_cost <watch|phone> <workload> <arg>` measures that side; the other side is
//! started as a child process. Workloads:
//! - `messages N` / `messages-plain N`: `N` pipelined 64-byte messages from the watch's
//!   app to the phone's, encrypted or in plaintext;
//! - `file PATH` / `file-plain PATH`: the file at `PATH` from the watch to the phone,
//!   encrypted or in plaintext, until the phone stored it;
//! - `file-64k PATH`: the same encrypted, over a link whose frames are at most 64 KiB
//!   (a BLE link's limit), so in smaller chunks.
//!
//! The script subtracts a run of a small workload from a large one and divides by the
//! difference, so start-up and the handshake drop out. Fixed keys and seeds; the counts
//! still vary by a few per cent with how the two processes' reads and writes interleave.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use interconnect::{ConnectionEvent, FilesConfig, Hub, Interconnect};
use interconnect_benches::counted::fixed_config;
use interconnect_benches::process::scratch_dir;
use interconnect_benches::tcp::BoxError;
use interconnect_proto::ContentType;

/// What flows from the watch to the phone.
enum Workload {
    /// `count` 64-byte messages, encrypted or in plaintext.
    Messages { count: usize, plaintext: bool },
    File {
        path: PathBuf,
        plaintext: bool,
        /// The watch's frame limit, if not TCP's default.
        max_frame_len: Option<usize>,
    },
}

impl Workload {
    fn parse(kind: &str, arg: &str) -> Result<Workload, BoxError> {
        Ok(match kind {
            "messages" | "messages-plain" => Workload::Messages {
                count: arg.parse()?,
                plaintext: kind == "messages-plain",
            },
            "file" | "file-plain" | "file-64k" => Workload::File {
                path: PathBuf::from(arg),
                plaintext: kind == "file-plain",
                max_frame_len: (kind == "file-64k").then_some(64 * 1024),
            },
            other => return Err(format!("unknown workload {other:?}").into()),
        })
    }

    fn plaintext(&self) -> bool {
        match self {
            Workload::Messages { plaintext, .. } | Workload::File { plaintext, .. } => *plaintext,
        }
    }
}

/// The phone: listens on `listener` and takes what the watch sends; then keeps the link
/// up (the last acknowledgements still have to leave) until `done` resolves.
async fn phone(
    listener: transport_tcp::TcpListener,
    workload: &Workload,
    done: impl Future<Output = Result<(), BoxError>>,
) -> Result<(), BoxError> {
    let dir = scratch_dir()?;
    let mut config = fixed_config(2, workload.plaintext());
    let mut files = FilesConfig::new(dir.path());
    files.reserve_free_bytes = 0;
    files.max_file_size = u64::MAX;
    config.files = Some(files);
    let hub = Hub::new(listener, config);
    let app = hub.register("bench", 1, None).await?;
    let mut events = app.events().ok_or("events taken")?;
    let mut got = 0;
    loop {
        let event = events.next().await.ok_or("the phone's events ended")?;
        match (event, workload) {
            (ConnectionEvent::Message(_), Workload::Messages { count: n, .. }) => {
                got += 1;
                if got == *n {
                    break;
                }
            }
            (ConnectionEvent::File { .. }, Workload::File { .. }) => break,
            (ConnectionEvent::Error { code, message }, _) => {
                return Err(format!("{code}: {message}").into());
            }
            _ => {}
        }
    }
    done.await
}

/// The watch: sends the workload to the phone at `addr`, and returns once every message
/// was acknowledged or the file delivered.
async fn watch(addr: std::net::SocketAddr, workload: &Workload) -> Result<(), BoxError> {
    let mut link = transport_tcp::TcpConfig::default();
    if let Workload::File {
        max_frame_len: Some(max),
        ..
    } = workload
    {
        link.max_frame_len = *max;
    }
    let dialer = transport_tcp::TcpDialer::with_config(addr, link);
    let watch = Interconnect::new(dialer, fixed_config(1, workload.plaintext()));
    let conn = watch.instance("bench", None);
    if !conn.diagnosis(None).await.is_ok() {
        return Err("the channel did not open".into());
    }
    match workload {
        Workload::Messages { count: n, .. } => {
            let payload = Bytes::from(vec![7u8; 64]);
            let mut sends = Vec::with_capacity(*n);
            for _ in 0..*n {
                sends.push(conn.send_bytes(ContentType::Binary, payload.clone()));
            }
            for send in sends {
                send.await?;
            }
        }
        Workload::File { path, .. } => conn.send_file(path).await?,
    }
    Ok(())
}

/// Waits for a child process without holding up the runtime.
async fn exited(mut child: Child, what: &'static str) -> Result<(), BoxError> {
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    match status.success() {
        true => Ok(()),
        false => Err(format!("the {what} process failed").into()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let usage = "side_cost <watch|phone> <messages|file|file-plain|file-64k> <N|PATH>";
    let args: Vec<String> = std::env::args().collect();
    let [_, side, kind, arg, rest @ ..] = &args[..] else {
        return Err(usage.into());
    };
    let workload = Workload::parse(kind, arg)?;
    let child = |side: &str, extra: &[String]| {
        Command::new(std::env::current_exe()?)
            .args([side, kind, arg])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
    };
    match (side.as_str(), rest) {
        // Measured: the phone, with a child watch dialing it; done when the watch is.
        ("phone", []) => {
            let listener = transport_tcp::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr().to_string();
            let watch = child("watch", &[addr])?;
            phone(listener, &workload, exited(watch, "watch")).await
        }
        // Measured: the watch, with a child phone that says where it listens and stops
        // once its input closes.
        ("watch", []) => {
            let mut phone = child("phone", &["child".into()])?;
            let stdout = phone.stdout.take().ok_or("no stdout")?;
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            watch(line.trim().parse()?, &workload).await?;
            drop(phone.stdin.take());
            exited(phone, "phone").await
        }
        ("watch", [addr]) => watch(addr.parse()?, &workload).await,
        ("phone", [_]) => {
            let listener = transport_tcp::TcpListener::bind("127.0.0.1:0").await?;
            println!("{}", listener.local_addr());
            std::io::stdout().flush()?;
            let input_closed = async {
                let drain = || std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
                tokio::task::spawn_blocking(drain).await??;
                Ok(())
            };
            phone(listener, &workload, input_closed).await
        }
        _ => Err(usage.into()),
    }
}
