//! `phone`: a hub that registers an app and prints what happens to it.

use crate::output::*;
use crate::*;
use interconnect::{Config, ConnectionEvent, FilesConfig, Hub};
use interconnect_proto::Code;
use security::{Role, SecurityArgs};
use std::net::SocketAddr;
use std::time::Duration;
use transport_tcp::TcpListener;

/// The app a phone command registers.
pub(crate) struct PhoneApp {
    pub(crate) package: String,
    pub(crate) version: u32,
    pub(crate) signature: Option<String>,
    /// Time spent on each message.
    pub(crate) handle: Duration,
    /// Watches served at once.
    pub(crate) max_watches: usize,
    /// How long new watches are pinned by first use.
    pub(crate) admit: Duration,
    /// The store file, if any.
    pub(crate) store: Option<std::path::PathBuf>,
}

pub(crate) async fn phone(
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
    config.max_watches = app.max_watches;
    config.store = open_store(app.store.as_deref())?;
    print_listening(listener.local_addr());
    let hub = Hub::new(listener, config);
    if let Some(events) = hub.security_events() {
        // Refusals are printed; the phone keeps serving.
        drop(security::monitor(events, true, Some(false), true));
    }
    if app.max_watches > 1 {
        return serve_watches(hub, app, echo).await;
    }
    let PhoneApp {
        package,
        version,
        signature,
        handle,
        ..
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
                say!("{}", event_json(&event));
                if !handle.is_zero() && matches!(event, ConnectionEvent::Message(_)) {
                    tokio::time::sleep(handle).await;
                }
                if echo && let ConnectionEvent::Message(message) = &event {
                    echo_back(&app, message);
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

/// A hub of several watches: each watch's events are printed with its device id.
async fn serve_watches(hub: Hub, app: PhoneApp, echo: bool) -> Result<(), Failure> {
    if !app.admit.is_zero() {
        hub.admit_new_watches(app.admit)?;
    }
    let mut watches = hub
        .register_watches(&app.package, app.version, app.signature.as_deref())
        .await?;
    eprintln!(
        "package {} registered, serving up to {} watches",
        app.package, app.max_watches
    );
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            watch = watches.next() => {
                let Some(watch) = watch else { break };
                let id = watch.device.id.to_string();
                let key = watch.device.fingerprint.map(|f| f.to_string());
                say!("{}", serde_json::json!({ "event": "watch", "watch": id, "fingerprint": key }));
                tokio::spawn(serve_watch(watch, id, echo, app.handle));
            }
        }
    }
    hub.shutdown().await;
    Ok(())
}

/// Prints one watch's events, each with `"watch"`, answering as the single-watch phone.
async fn serve_watch(watch: interconnect::Watch, id: String, echo: bool, handle: Duration) {
    let Some(mut events) = watch.connection.events() else {
        return;
    };
    while let Some(event) = events.next().await {
        let mut line = event_json(&event);
        line["watch"] = id.clone().into();
        if let Some(name) = watch.connection.peer_name() {
            line["name"] = name.into();
        }
        say!("{line}");
        if !handle.is_zero() && matches!(event, ConnectionEvent::Message(_)) {
            tokio::time::sleep(handle).await;
        }
        if echo && let ConnectionEvent::Message(message) = &event {
            echo_back(&watch.connection, message);
        }
    }
}

/// Answers a request with its own data, and echoes a one-way message the same way.
fn echo_back(app: &interconnect::Connection, message: &interconnect::Incoming) {
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
            // A one-way message's echo is for whoever listens: a watch that sent and
            // left does not take it, which is no failure.
            let echo = app.send_bytes(message.content_type, message.payload.clone());
            if let Err(error) = echo.await {
                tracing::debug!(%error, "one-way echo not taken");
            }
        }
    });
}
