//! The workloads `.ci/instructions` counts under callgrind: a watch and a phone in one
//! process on one thread (the mock transport, so no kernel and no scheduler noise), fixed
//! keys and seeds, so two runs execute the same instructions give or take a few polls.
//!
//! `instructions <workload> [arg]`:
//! - `idle`: the runtime and nothing else (what every count includes);
//! - `link`: both ends, the Noise handshake and an open channel;
//! - `messages N`: the same, then `N` pipelined 64-byte messages each way, encrypted;
//! - `file PATH` / `file-plain PATH`: the same, then the file at `PATH` each way,
//!   encrypted or in plaintext, until both receivers stored it.
//!
//! The script subtracts one count from another (`messages N` − `link`, `file` of a large
//! file − `file` of a small one) and divides by the work, so fixed costs drop out.

use std::path::PathBuf;

use bytes::Bytes;
use interconnect::{Config, Connection, ConnectionEvent, FilesConfig, Hub, Interconnect};
use interconnect_benches::counted::fixed_config;
use interconnect_benches::process::scratch_dir;
use interconnect_benches::tcp::BoxError;
use interconnect_proto::ContentType;
use transport_mock::{Faults, MockNetwork};

struct Ends {
    _watch: Interconnect,
    _hub: Hub,
    watch: Connection,
    phone: Connection,
    _dirs: Vec<tempfile::TempDir>,
}

fn config(id: u8, plaintext: bool, files: &tempfile::TempDir) -> Config {
    let mut config = fixed_config(id, plaintext);
    let mut files = FilesConfig::new(files.path());
    files.reserve_free_bytes = 0;
    config.files = Some(files);
    config
}

async fn link(plaintext: bool) -> Result<Ends, BoxError> {
    let dirs = vec![scratch_dir()?, scratch_dir()?];
    let network = MockNetwork::new(Faults::default());
    let (dialer, listener) = network.endpoints();
    let hub = Hub::new(listener, config(2, plaintext, &dirs[1]));
    let watch = Interconnect::new(dialer, config(1, plaintext, &dirs[0]));
    let phone = hub.register("bench", 1, None).await?;
    let conn = watch.instance("bench", None);
    if !conn.diagnosis(None).await.is_ok() {
        return Err("the channel did not open".into());
    }
    Ok(Ends {
        _watch: watch,
        _hub: hub,
        watch: conn,
        phone,
        _dirs: dirs,
    })
}

/// Waits for `n` messages, or a stored file when `n` is 0.
async fn receive(conn: &Connection, n: usize) -> Result<(), BoxError> {
    let mut events = conn.events().ok_or("events taken")?;
    let mut got = 0;
    while let Some(event) = events.next().await {
        match event {
            ConnectionEvent::Message(_) => {
                got += 1;
                if got == n {
                    return Ok(());
                }
            }
            ConnectionEvent::File { .. } if n == 0 => return Ok(()),
            ConnectionEvent::Error { code, message } => {
                return Err(format!("{code}: {message}").into());
            }
            _ => {}
        }
    }
    Err("the events ended".into())
}

async fn messages(ends: &Ends, n: usize) -> Result<(), BoxError> {
    let payload = Bytes::from(vec![7u8; 64]);
    let (a, b) = (ends.watch.clone(), ends.phone.clone());
    let received = tokio::join!(receive(&ends.phone, n), receive(&ends.watch, n), async {
        let sends: Vec<_> = (0..n)
            .flat_map(|_| {
                [
                    a.send_bytes(ContentType::Binary, payload.clone()),
                    b.send_bytes(ContentType::Binary, payload.clone()),
                ]
            })
            .collect();
        for send in sends {
            send.await?;
        }
        Ok::<_, BoxError>(())
    });
    received.0?;
    received.1?;
    received.2
}

async fn files(ends: &Ends, path: PathBuf) -> Result<(), BoxError> {
    let (a, b) = (ends.watch.clone(), ends.phone.clone());
    let done = tokio::join!(
        receive(&ends.phone, 0),
        receive(&ends.watch, 0),
        a.send_file(&path),
        b.send_file(&path)
    );
    done.0?;
    done.1?;
    done.2?;
    done.3?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let workload = args.next().unwrap_or_default();
    let arg = args.next();
    match workload.as_str() {
        "idle" => {}
        "link" => drop(link(false).await?),
        "messages" => {
            let n = arg.ok_or("messages N")?.parse()?;
            messages(&link(false).await?, n).await?;
        }
        "file" | "file-plain" => {
            let path = PathBuf::from(arg.ok_or("file PATH")?);
            files(&link(workload == "file-plain").await?, path).await?;
        }
        other => return Err(format!("unknown workload {other:?}").into()),
    }
    Ok(())
}
