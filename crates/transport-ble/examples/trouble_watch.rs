//! A watch app on trouble-host, for tests and trials: drives the HCI controller at `--hci`
//! (H4 over TCP, such as `tests/fixtures/controllers.py` provides), keeps its state in
//! `--home`, opens a channel to `--package`, prints one JSON line per event on stdout,
//! and with `--echo` sends every message it receives back.
//!
//! ```text
//! cargo run -p transport-ble --features trouble --example trouble-watch -- \
//!     --hci 127.0.0.1:PORT --home DIR [--package PKG] [--echo] [--insecure-plaintext]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use interconnect::{Config, ConnectionEvent, ContentType, FilesConfig, Interconnect, Security};
use serde_json::json;
use transport_ble::BleConfig;
use transport_ble::trouble::{HostConfig, Trouble};

struct Args {
    hci: SocketAddr,
    home: PathBuf,
    package: String,
    echo: bool,
    plaintext: bool,
}

fn args() -> Result<Args, String> {
    let mut hci = None;
    let mut home = None;
    let mut package = "com.example.ble".to_string();
    let (mut echo, mut plaintext) = (false, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--hci" => hci = Some(value()?.parse().map_err(|e| format!("--hci: {e}"))?),
            "--home" => home = Some(PathBuf::from(value()?)),
            "--package" => package = value()?,
            "--echo" => echo = true,
            "--insecure-plaintext" => plaintext = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        hci: hci.ok_or("--hci is required")?,
        home: home.ok_or("--home is required")?,
        package,
        echo,
        plaintext,
    })
}

fn print(value: serde_json::Value) {
    println!("{value}");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let mut config = Config::new(&args.home)?;
    config.files = Some(FilesConfig::new(args.home.join("files")));
    if args.plaintext {
        config.session.security = Security::InsecurePlaintext;
    }
    let transport = Trouble::peripheral(HostConfig::new(args.hci), BleConfig::default()).await?;
    let watch = Interconnect::new(transport, config);
    let conn = watch.instance(&args.package, None);
    let mut events = conn.events().expect("a new connection has its events");
    print(json!({ "event": "ready" }));
    while let Some(event) = events.next().await {
        match event {
            ConnectionEvent::Open { is_reconnected } => {
                print(json!({ "event": "open", "is_reconnected": is_reconnected }))
            }
            ConnectionEvent::Message(message) => {
                let data = match message.content_type {
                    ContentType::Json => {
                        serde_json::from_slice(&message.payload).unwrap_or(serde_json::Value::Null)
                    }
                    _ => json!(message.payload.to_vec()),
                };
                print(json!({ "event": "message", "data": data }));
                if args.echo {
                    tokio::spawn(conn.send_bytes(message.content_type, message.payload));
                }
            }
            ConnectionEvent::File { path, size, .. } => {
                print(json!({ "event": "file", "path": path, "size": size }))
            }
            ConnectionEvent::Close { code, reason, .. } => {
                print(json!({ "event": "close", "code": code.0, "reason": reason }))
            }
            ConnectionEvent::Error { code, message } => {
                print(json!({ "event": "error", "code": code.0, "message": message }))
            }
            _ => {}
        }
    }
    Ok(())
}
