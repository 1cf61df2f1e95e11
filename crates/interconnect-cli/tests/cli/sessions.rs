//! The demo and a phone and a watch in two processes.

use super::*;

#[test]
fn demo_checks_every_step_and_exits_zero() {
    let (ok, lines) = run(&["demo"]);
    assert!(ok, "{lines:?}");
    assert_eq!(lines.last(), Some(&serde_json::json!({ "demo": "ok" })));
    let steps: Vec<&str> = lines
        .iter()
        .filter(|l| l.get("step").is_some())
        .map(|l| {
            assert_eq!(l["ok"], true, "{l}");
            l["step"].as_str().unwrap_or("")
        })
        .collect();
    assert_eq!(
        steps,
        [
            "diagnosis",
            "encrypted and authenticated link",
            "peer device status",
            "ready state",
            "peer app version",
            "version of an app not installed",
            "10 messages acknowledged",
            "request/reply",
            "state mirrored",
            "messages arrived in order",
            "file stored and identical",
        ],
        "every step ran, in order"
    );
    let acked = lines
        .iter()
        .find(|l| l["step"] == "10 messages acknowledged")
        .expect("the step ran");
    assert_eq!(acked["detail"], 10, "{acked}");
}

#[test]
fn phone_and_watch_in_two_processes() {
    let phone = Phone::start();
    let (ok, out) = phone.watch(&["version"]);
    assert!(ok, "{out:?}");
    assert_eq!(out, vec![serde_json::json!({ "version": 9 })]);

    let (ok, out) = phone.watch(&["diagnosis"]);
    assert!(ok, "{out:?}");
    assert_eq!(out[0]["status"], 0);

    // By host name, as a user types it.
    let port = phone.addr.rsplit(':').next().expect("a port");
    let (ok, out) = run_in(
        phone.watch_home.path(),
        &[
            "watch",
            "--connect",
            &format!("localhost:{port}"),
            "--package",
            "com.example.cli",
            "version",
        ],
    );
    assert!(ok, "{out:?}");
    assert_eq!(out, vec![serde_json::json!({ "version": 9 })]);

    let (ok, out) = phone.watch(&["send", r#"{"steps": 5}"#]);
    assert!(ok, "{out:?}");
    assert_eq!(
        phone.expect_event("message")["data"],
        serde_json::json!({ "steps": 5 })
    );

    let (ok, out) = phone.watch(&["request", r#"{"ping": true}"#]);
    assert!(ok, "{out:?}");
    assert_eq!(
        out[0]["reply"],
        serde_json::json!({ "ping": true }),
        "the phone echoes"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, vec![7u8; 300_000]).expect("write");
    let (ok, out) = phone.watch(&["send-file", file.to_str().expect("utf-8 path")]);
    assert!(ok, "{out:?}");
    let stored = phone.expect_event("file");
    assert_eq!(stored["name"], "upload.bin");
    assert_eq!(stored["size"], 300_000);
    assert_eq!(stored["sha256"], out[0]["sha256"]);
    // The stored file itself, read from the phone's files folder and hashed here.
    let stored_path = phone._dir.path().join("upload.bin");
    let bytes = std::fs::read(&stored_path).expect("the file is stored under its name");
    assert_eq!(bytes, vec![7u8; 300_000]);
    use sha2::Digest;
    let expected = hex::encode(sha2::Sha256::digest(&bytes));
    assert_eq!(stored["sha256"], expected.as_str());
    assert_eq!(stored["path"], stored_path.to_str().unwrap());

    let (ok, out) = run_in(
        phone.watch_home.path(),
        &[
            "watch",
            "--connect",
            &phone.addr,
            "--package",
            "com.not.installed",
            "diagnosis",
        ],
    );
    assert!(!ok);
    assert_eq!(out[0]["code"], 1001);
}

#[test]
fn a_watch_process_sets_state_that_the_phone_process_mirrors() {
    let phone = Phone::start();
    let (ok, out) = phone.watch(&["state", "heart-rate", "72"]);
    assert!(ok, "{out:?}");
    assert_eq!(
        out[0],
        serde_json::json!({ "state": "heart-rate", "synced": true })
    );
    let line = phone.expect_event("state");
    assert_eq!(line["key"], "heart-rate");
    assert_eq!(line["value"], 72);
    // Another watch process is another origin: the phone drops the first one's value,
    // then takes the new one.
    let (ok, out) = phone.watch(&["state", "workout", r#"{"kind": "run"}"#]);
    assert!(ok, "{out:?}");
    let dropped = phone.expect_event("state");
    assert_eq!(
        (&dropped["key"], &dropped["value"]),
        (&"heart-rate".into(), &serde_json::Value::Null)
    );
    let line = phone.expect_event("state");
    assert_eq!(line["value"], serde_json::json!({ "kind": "run" }));
    let (ok, out) = phone.watch(&["state", "workout"]);
    assert!(!ok, "a value or --remove: {out:?}");
}
