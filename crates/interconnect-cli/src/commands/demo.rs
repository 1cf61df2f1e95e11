//! `demo`: both ends in one process, each step checked and printed.

use crate::commands::*;
use crate::output::*;
use interconnect::IdentityFile;
use interconnect::{
    Config, ConnectionEvent, DeviceIdentity, FilesConfig, Hub, Interconnect, NoiseConfig, Security,
};
use interconnect_proto::Code;
use serde_json::{Value, json};
use std::time::Duration;
use transport_tcp::{TcpDialer, TcpListener};

/// Checks one demo step, printing it.
pub(crate) fn check(step: &str, ok: bool, detail: Value) -> Result<(), Failure> {
    say!("{}", json!({ "step": step, "ok": ok, "detail": detail }));
    if ok {
        Ok(())
    } else {
        Err(failure(Code::OTHERS, format!("demo step failed: {step}")))
    }
}

pub(crate) async fn demo() -> Result<(), Failure> {
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
    // Latest-wins state: three values set at once, the phone's app ends with the last.
    for hr in [70, 71, 72] {
        conn.set_state("heart-rate", &hr)?;
    }
    let mirrored = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let held = app
                .peer_state("heart-rate")
                .and_then(|v| v.decode::<i64>().ok());
            if held == Some(72) {
                return held;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .ok()
    .flatten();
    check(
        "state mirrored",
        mirrored == Some(72),
        json!({ "key": "heart-rate", "phone_holds": mirrored }),
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
    say!("{}", json!({ "demo": "ok" }));
    Ok(())
}
