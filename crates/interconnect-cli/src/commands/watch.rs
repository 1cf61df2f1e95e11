//! `watch`: a client that opens the phone app's channel and runs one command on it.

use crate::args::*;
use crate::output::*;
use crate::*;
use interconnect::{
    Config, Connection, ConnectionEvent, Error, FileTransfer, Hub, Interconnect, Security,
};
use interconnect_proto::Code;
use security::{Outcome, Role, SecurityArgs};
use serde_json::{Value, json};
use std::io::IsTerminal;
use std::time::Duration;
use transport_tcp::{TcpConfig, TcpDialer};

/// Where a watch command connects, and to which app.
pub(crate) struct WatchTarget {
    pub(crate) connect: String,
    pub(crate) package: String,
    pub(crate) signature: Option<String>,
    /// The name this watch gives itself.
    pub(crate) name: Option<String>,
    /// The store file, if any.
    pub(crate) store: Option<std::path::PathBuf>,
}

/// A config with this security and quick redials (only a dialing watch uses them).
pub(crate) fn endpoint_config(security: Security) -> Config {
    let mut config = Config::in_memory(device_id(&security));
    config.backoff.initial = Duration::from_millis(50);
    config.backoff.max = Duration::from_secs(2);
    config.session.security = security;
    config
}

pub(crate) async fn watch(
    target: WatchTarget,
    timeout: Duration,
    security: &SecurityArgs,
    command: WatchCommand,
) -> Result<(), Failure> {
    let setup = security.setup(Role::Watch, false)?;
    let mut config = endpoint_config(setup.security);
    config.known_peers = setup.known_peers;
    config.session.name = target.name.clone();
    config.store = open_store(target.store.as_deref())?;
    let watch = Interconnect::new(
        TcpDialer::to_host(target.connect, TcpConfig::default()),
        config,
    );
    let mut outcomes = watch
        .security_events()
        .map(|events| security::monitor(events, false, Some(false), false));
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
    say!("{output}");
    Ok(())
}

/// Either side of `pair`.
pub(crate) enum Endpoint {
    Hub(Hub),
    Watch(Interconnect),
}

impl Endpoint {
    pub(crate) async fn connected(&self) {
        match self {
            Endpoint::Hub(hub) => hub.connected().await,
            Endpoint::Watch(watch) => watch.connected().await,
        }
    }

    pub(crate) async fn disconnected(&self) {
        match self {
            Endpoint::Hub(hub) => hub.disconnected().await,
            Endpoint::Watch(watch) => watch.disconnected().await,
        }
    }

    pub(crate) async fn shutdown(self) {
        match self {
            Endpoint::Hub(hub) => hub.shutdown().await,
            Endpoint::Watch(watch) => watch.shutdown().await,
        }
    }
}

pub(crate) async fn ensure_open(conn: &Connection, timeout: Duration) -> Result<(), Failure> {
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

pub(crate) async fn run_watch_command(
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
        WatchCommand::Send {
            json: text,
            durable: true,
        } => send_durable(conn, &text, timeout).await,
        WatchCommand::Outstanding => {
            let outstanding: Vec<Value> = conn
                .outstanding()
                .iter()
                .map(|o| json!({ "id": o.id, "len": o.len, "on_its_way": o.on_its_way }))
                .collect();
            Ok(json!({ "last_id": conn.last_durable_id(), "outstanding": outstanding }))
        }
        WatchCommand::Send {
            json: text,
            durable: false,
        } => {
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                failure(Code::OTHERS, format!("the message is not valid JSON: {e}"))
            })?;
            ensure_open(conn, timeout).await?;
            conn.send(&value).await?;
            Ok(json!({ "sent": true }))
        }
        WatchCommand::State { key, json, remove } => {
            ensure_open(conn, timeout).await?;
            match json {
                Some(text) if !remove => {
                    let value: Value = serde_json::from_str(&text).map_err(|e| {
                        failure(Code::OTHERS, format!("the value is not valid JSON: {e}"))
                    })?;
                    conn.set_state(&key, &value)?;
                }
                _ => conn.remove_state(&key)?,
            }
            tokio::time::timeout(timeout, conn.state_synced())
                .await
                .map_err(|_| failure(Code::TIMEOUT, "the phone's app did not take the state"))??;
            Ok(json!({ "state": key, "synced": true }))
        }
        WatchCommand::Request { json: text } => {
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                failure(Code::OTHERS, format!("the request is not valid JSON: {e}"))
            })?;
            ensure_open(conn, timeout).await?;
            let reply: Value = conn.request(&value, timeout).await?;
            Ok(json!({ "reply": reply }))
        }
        WatchCommand::SendFile {
            path,
            durable: true,
            ..
        } => {
            let id = conn.send_file_durable(&path).await?;
            let delivered = all_delivered(conn, timeout).await;
            Ok(json!({ "id": id, "committed": true, "delivered": delivered }))
        }
        WatchCommand::SendFile { path, meta, .. } => {
            if !path.is_file() {
                return Err(failure(
                    Code::STORAGE,
                    format!("{} is not a readable file", path.display()),
                ));
            }
            let meta: Option<Value> = meta
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|e| failure(Code::OTHERS, format!("--meta is not valid JSON: {e}")))?;
            ensure_open(conn, timeout).await?;
            let transfer = match &meta {
                Some(meta) => conn.send_file_with_meta(&path, meta),
                None => conn.send_file(&path),
            };
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
                            say!("{}", event_json(&event));
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
pub(crate) async fn with_progress_bar(transfer: FileTransfer) -> Result<(), Error> {
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

/// `send --durable`: commits each message (the argument, or each line of stdin for
/// `-`), printing `{"id": …}` per line of stdin, then waits for the last one's delivery
/// until the timeout.
async fn send_durable(conn: &Connection, text: &str, timeout: Duration) -> Result<Value, Failure> {
    let parse = |text: &str| {
        serde_json::from_str::<Value>(text)
            .map_err(|e| failure(Code::OTHERS, format!("the message is not valid JSON: {e}")))
    };
    let mut last = None;
    if text == "-" {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| failure(Code::OTHERS, format!("cannot read stdin: {e}")))?
        {
            if line.trim().is_empty() {
                continue;
            }
            let id = conn.send_durable(&parse(&line)?).await?;
            say!("{}", json!({ "id": id }));
            last = Some(id);
        }
    } else {
        last = Some(conn.send_durable(&parse(text)?).await?);
    }
    let delivered = all_delivered(conn, timeout).await;
    Ok(json!({ "id": last, "committed": true, "delivered": delivered }))
}

/// Waits until the outbox is empty (this run's messages and files, and what an earlier
/// run left in the store), or the timeout: whether it emptied.
async fn all_delivered(conn: &Connection, timeout: Duration) -> bool {
    let all = async {
        for entry in conn.outstanding() {
            if conn.delivered(entry.id).await.is_err() {
                return false;
            }
        }
        true
    };
    matches!(tokio::time::timeout(timeout, all).await, Ok(true))
}
