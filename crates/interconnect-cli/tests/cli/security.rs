//! Keys, pins, pairing, plaintext refusals and bad input.

use super::*;

pub(crate) fn keygen(dir: &Path, name: &str) -> (String, String) {
    let path = dir.join(name);
    let path = path.to_str().expect("utf-8 path").to_string();
    let (ok, out) = run(&["keygen", "--out", &path]);
    assert!(ok, "{out:?}");
    let fingerprint = out[0]["fingerprint"].as_str().expect("a fingerprint");
    (path, fingerprint.to_string())
}

#[test]
fn links_are_encrypted_and_a_new_watch_key_is_refused_after_first_use() {
    let phone = Phone::start();
    let (ok, out) = phone.watch(&["version"]);
    assert!(ok, "{out:?}");
    let seen = phone.expect_event("peer_authenticated");
    assert!(
        ["AES-256-GCM", "ChaCha20-Poly1305"].contains(&seen["suite"].as_str().unwrap_or("")),
        "{seen}"
    );
    // The same watch (same state directory, same key) comes back: still trusted.
    let (ok, out) = phone.watch(&["version"]);
    assert!(ok, "{out:?}");
    assert_eq!(
        phone.expect_event("peer_authenticated")["fingerprint"],
        seen["fingerprint"]
    );

    // Another device: the phone pinned the first watch, so it refuses this one.
    let (ok, out) = run(&[
        "watch",
        "--connect",
        &phone.addr,
        "--package",
        "com.example.cli",
        "version",
    ]);
    assert!(!ok);
    assert_eq!(out[0]["code"], 4007, "{out:?}");
    // The phone says so on stdout, not only in its log. The earlier watches left
    // cleanly (they closed their channels): no error for them.
    let mut errors = Vec::new();
    while errors.last() != Some(&4007) {
        errors.push(phone.expect_event("error")["code"].as_u64().unwrap_or(0));
    }
    assert_eq!(errors, [4007], "only the refusal is an error");
}

#[test]
fn pinned_keys_from_keygen_let_in_only_the_named_devices() {
    let keys = tempfile::tempdir().expect("temp dir");
    let (phone_key, phone_fp) = keygen(keys.path(), "phone.identity");
    let (watch_key, watch_fp) = keygen(keys.path(), "watch.identity");
    let (stranger_key, stranger_fp) = keygen(keys.path(), "stranger.identity");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&phone_key)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "owner-only identity file");
    }
    let (ok, out) = run(&["keygen", "--out", &phone_key]);
    assert!(!ok, "keygen never overwrites without --force");
    assert!(out[0]["message"].as_str().unwrap_or("").contains("--force"));

    let phone = Phone::start_with(&["--identity", &phone_key, "--trust", &watch_fp]);
    let watch = |identity: &str, trust: &str| {
        run(&[
            "watch",
            "--connect",
            &phone.addr,
            "--package",
            "com.example.cli",
            "--identity",
            identity,
            "--trust",
            trust,
            "version",
        ])
    };
    let (ok, out) = watch(&watch_key, &phone_fp);
    assert!(ok, "{out:?}");
    assert_eq!(out, vec![serde_json::json!({ "version": 9 })]);
    assert_eq!(
        phone.expect_event("peer_authenticated")["fingerprint"],
        watch_fp
    );

    // A device the phone does not trust: the phone refuses it.
    let (ok, out) = watch(&stranger_key, &phone_fp);
    assert!(!ok);
    assert_eq!(out[0]["code"], 4007, "{out:?}");
    // A phone the watch does not trust: the watch refuses it.
    let (ok, out) = watch(&watch_key, &stranger_fp);
    assert!(!ok);
    assert_eq!(out[0]["code"], 4007, "{out:?}");
    assert!(
        out[0]["message"].as_str().unwrap_or("").contains(&phone_fp),
        "names the untrusted key: {out:?}"
    );
}

#[test]
fn plaintext_on_one_side_only_is_refused() {
    let phone = Phone::start_with(&["--insecure-plaintext"]);
    let (ok, out) = phone.watch(&["--timeout-ms", "5000", "version"]);
    assert!(!ok);
    assert_eq!(out[0]["code"], 4008, "{out:?}");
}

#[test]
fn watch_status_reports_the_link_and_the_channel() {
    let phone = Phone::start();
    let (ok, out) = phone.watch(&["status"]);
    assert!(ok, "{out:?}");
    assert_eq!(
        out,
        vec![serde_json::json!({ "peer_device_status": 1, "ready_state": 1 })]
    );
    // No phone at all: disconnected, and the channel is not open.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let home = tempfile::tempdir().unwrap();
    let (_, out) = run_in(
        home.path(),
        &[
            "watch",
            "--connect",
            &addr,
            "--package",
            "com.example.cli",
            "--timeout-ms",
            "500",
            "status",
        ],
    );
    assert_eq!(out[0]["peer_device_status"], 0, "{out:?}");
    assert_ne!(out[0]["ready_state"], 1, "{out:?}");
}

#[test]
fn plaintext_on_the_watch_only_is_refused() {
    let phone = Phone::start_with(&[]);
    let (ok, out) = phone.watch(&["--insecure-plaintext", "--timeout-ms", "5000", "version"]);
    assert!(!ok);
    assert_eq!(out[0]["code"], 4008, "{out:?}");
}

#[test]
fn pairing_shows_the_same_code_on_both_sides_and_pins_the_peer() {
    let homes = tempfile::tempdir().expect("temp dir");
    let phone_home = homes.path().join("phone");
    let watch_home = homes.path().join("watch");
    let mut phone = Command::new(BIN)
        .args([
            "pair",
            "--listen",
            "127.0.0.1:0",
            "--yes",
            "--timeout-ms",
            "20000",
        ])
        .env("INTERCONNECT_HOME", &phone_home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the phone starts");
    let mut phone_stdout = BufReader::new(phone.stdout.take().expect("stdout"));
    let mut first = String::new();
    phone_stdout.read_line(&mut first).expect("a line");
    let listening: Value = serde_json::from_str(&first).expect("JSON");
    let addr = listening["address"].as_str().expect("the phone's address");
    let (ok, watch_out) = run_in(
        &watch_home,
        &["pair", "--connect", addr, "--yes", "--timeout-ms", "20000"],
    );
    let phone_lines: Vec<Value> = phone_stdout
        .lines()
        .map(|l| serde_json::from_str(&l.expect("a line")).expect("JSON"))
        .collect();
    let phone_ok = phone.wait().expect("the phone ends").success();
    assert!(ok, "{watch_out:?}");
    assert!(phone_ok, "{phone_lines:?}");
    let code = |lines: &[Value]| {
        lines
            .iter()
            .find(|l| l["event"] == "pairing")
            .map(|l| l["code"].clone())
            .expect("a pairing line")
    };
    let shown = code(&watch_out);
    assert_eq!(shown.as_str().map(str::len), Some(6));
    assert_eq!(shown, code(&phone_lines), "both sides show the same code");
    let watch_fp = phone_lines.last().expect("a result")["paired"].clone();
    let phone_fp = watch_out.last().expect("a result")["paired"].clone();

    // Both pinned the other: each side's known-peers file names the other, so later
    // plain commands trust it.
    let known = |home: &Path, role: &str| {
        std::fs::read_to_string(home.join(role).join("known_peers")).unwrap_or_default()
    };
    assert!(known(&phone_home, "phone").contains(watch_fp.as_str().expect("fingerprint")));
    assert!(known(&watch_home, "watch").contains(phone_fp.as_str().expect("fingerprint")));
}

#[test]
fn bad_input_gets_a_clear_error_and_a_non_zero_exit() {
    let output = Command::new(BIN)
        .args([
            "watch",
            "--connect",
            "not-an-address",
            "--package",
            "x",
            "status",
        ])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid value"));

    let (ok, out) = run(&[
        "watch",
        "--connect",
        "127.0.0.1:9",
        "--package",
        "x",
        "--timeout-ms",
        "200",
        "send",
        "{not json",
    ]);
    assert!(!ok);
    assert_eq!(out[0]["code"], 1000);
    assert!(
        out[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not valid JSON")
    );

    let (ok, out) = run(&[
        "watch",
        "--connect",
        "127.0.0.1:9",
        "--package",
        "x",
        "--timeout-ms",
        "200",
        "diagnosis",
    ]);
    assert!(!ok, "nobody listens on port 9");
    assert_eq!(out[0]["code"], 204);
}
