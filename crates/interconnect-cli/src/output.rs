//! What commands print: JSON lines on stdout, and failures with their codes.

use interconnect::{ClosedBy, ConnectionEvent, Error};
use interconnect_proto::Code;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

/// A failed command: its code and message.
pub(crate) struct Failure {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            code: error.code(),
            message: error.to_string(),
        }
    }
}

/// The store at `path`, if one was given: a damaged or busy file fails the command
/// (4005) before anything is sent.
pub(crate) fn open_store(
    path: Option<&std::path::Path>,
) -> Result<Option<interconnect::Store>, Failure> {
    path.map(interconnect::Store::open)
        .transpose()
        .map_err(|e| failure(Code::STORAGE, e.to_string()))
}

pub(crate) fn failure(code: Code, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

pub(crate) fn fail(code: Code, message: &str) -> ExitCode {
    say!("{}", json!({ "code": code.as_u16(), "message": message }));
    ExitCode::FAILURE
}

pub(crate) fn event_json(event: &ConnectionEvent) -> Value {
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
        ConnectionEvent::FileOffered {
            transfer,
            name,
            size,
            meta,
        } => json!({
            "event": "file_offered", "transfer": transfer, "name": name, "size": size,
            "meta": meta_json(meta),
        }),
        ConnectionEvent::FileIncoming {
            name,
            size,
            offset,
            meta,
            ..
        } => json!({
            "event": "file_incoming", "name": name, "size": size, "offset": offset,
            "meta": meta_json(meta),
        }),
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
        ConnectionEvent::State { key, value } => {
            let value = value.as_ref().map(|v| {
                v.decode::<Value>()
                    .unwrap_or_else(|_| Value::String(hex::encode(&v.payload)))
            });
            json!({ "event": "state", "key": key, "value": value })
        }
        ConnectionEvent::FileProgress {
            transfer,
            bytes_done,
            total,
        } => {
            json!({ "event": "file_progress", "transfer": transfer, "bytes_done": bytes_done, "total": total })
        }
        ConnectionEvent::Delivered { id } => json!({ "event": "delivered", "id": id }),
        other => json!({ "event": format!("{other:?}") }),
    }
}

/// A file's metadata as JSON: `null` when there is none, a string of hex when it is not
/// JSON.
fn meta_json(meta: &[u8]) -> Value {
    if meta.is_empty() {
        return Value::Null;
    }
    interconnect::decode_meta(meta).unwrap_or_else(|_| Value::String(hex::encode(meta)))
}

pub(crate) fn sha256_of(path: &Path) -> std::io::Result<String> {
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
pub(crate) fn print_listening(address: SocketAddr) {
    say!(
        "{}",
        json!({ "event": "listening", "address": address.to_string() })
    );
}

/// An `error` event line on stdout.
pub(crate) fn print_error(code: Code, message: &str) {
    say!(
        "{}",
        json!({ "event": "error", "code": code.as_u16(), "message": message })
    );
}

/// See `say!`.
pub(crate) fn say_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        // 141: what a shell reports for a process a closed pipe ended.
        std::process::exit(141);
    }
}
