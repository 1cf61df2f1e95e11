//! The `interconnect` command as a user runs it: the demo, a phone and a watch in two
//! processes, and bad input.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_interconnect");

/// Runs the command with its state (identities, known peers) under `home`.
fn run_in(home: &Path, args: &[&str]) -> (bool, Vec<Value>) {
    let output = Command::new(BIN)
        .args(args)
        .env("INTERCONNECT_HOME", home)
        .output()
        .expect("the command runs");
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    (output.status.success(), lines)
}

/// Starts `command` (a `watch … listen`) and returns once it printed that its channel
/// opened; the process holds the link until killed.
fn holding_the_link(mut command: Command) -> Child {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the watch starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a line");
    assert!(line.contains("\"open\""), "{line}");
    child
}

/// Runs the command with a fresh state directory.
fn run(args: &[&str]) -> (bool, Vec<Value>) {
    let home = tempfile::tempdir().expect("temp dir");
    run_in(home.path(), args)
}

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

/// A phone process whose stdout lines arrive on a channel; killed on drop. Watches run
/// through it share one state directory (one watch device), separate from the phone's.
struct Phone {
    child: Child,
    lines: mpsc::Receiver<Value>,
    addr: String,
    _dir: tempfile::TempDir,
    watch_home: tempfile::TempDir,
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Phone {
    fn start() -> Phone {
        Phone::start_with(&[])
    }

    /// Listens on a port the phone picks itself (port 0): a port picked here and freed
    /// could be taken by a test running alongside before the phone binds it.
    fn start_with(extra: &[&str]) -> Phone {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(BIN)
            .args([
                "phone",
                "--listen",
                "127.0.0.1:0",
                "--package",
                "com.example.cli",
            ])
            .args(["--app-version", "9", "--files-dir"])
            .arg(dir.path())
            .arg("--echo")
            .args(extra)
            .env("INTERCONNECT_HOME", dir.path().join("phone-home"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the phone starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str(&line)
                    && tx.send(value).is_err()
                {
                    return;
                }
            }
        });
        let listening: Value = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the phone prints where it listens");
        assert_eq!(listening["event"], "listening");
        let addr = listening["address"]
            .as_str()
            .expect("an address")
            .to_string();
        Phone {
            child,
            lines,
            addr,
            _dir: dir,
            watch_home: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The next event line with this `event` field.
    fn expect_event(&self, event: &str) -> Value {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no {event} event"));
            if line["event"] == event {
                return line;
            }
        }
    }

    /// A `watch` command for this phone's app, with the phone's watch state directory.
    fn watch_command(&self) -> Command {
        let mut command = Command::new(BIN);
        command
            .args([
                "watch",
                "--connect",
                &self.addr,
                "--package",
                "com.example.cli",
            ])
            .env("INTERCONNECT_HOME", self.watch_home.path());
        command
    }

    fn watch(&self, args: &[&str]) -> (bool, Vec<Value>) {
        let mut all = vec![
            "watch",
            "--connect",
            &self.addr,
            "--package",
            "com.example.cli",
        ];
        all.extend_from_slice(args);
        run_in(self.watch_home.path(), &all)
    }
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

fn keygen(dir: &Path, name: &str) -> (String, String) {
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

#[test]
fn a_48_mib_file_arrives_identical_through_a_proxy_that_cuts_every_2_to_6_mib() {
    use interconnect_conformance::proxy::{Fault, FaultProxy, Plan};
    let phone = Phone::start();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime for the proxy");
    // Cuts of both sides, and resets of the watch's side only, after which the phone's
    // old socket stays open and silent: the watch's new link must take over at once.
    let plan = Plan {
        every: 2 << 20..6 << 20,
        faults: vec![Fault::Cut, Fault::ResetWatch],
        delay: Duration::ZERO,
    };
    let addr: std::net::SocketAddr = phone.addr.parse().expect("an address");
    let proxy = runtime
        .block_on(FaultProxy::start(addr, Some(plan), 48))
        .expect("the proxy starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("large.bin");
    let data: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&file, &data).expect("write");
    let proxy_addr = proxy.addr().to_string();
    let (ok, out) = run_in(
        phone.watch_home.path(),
        &[
            "watch",
            "--connect",
            &proxy_addr,
            "--package",
            "com.example.cli",
            "send-file",
            file.to_str().expect("utf-8 path"),
            "--timeout-ms",
            "180000",
        ],
    );
    assert!(ok, "{out:?} after {}", proxy.report());
    let stored = phone.expect_event("file");
    assert_eq!(stored["size"], 48 << 20);
    assert_eq!(stored["sha256"], out[0]["sha256"]);
    let bytes = std::fs::read(phone._dir.path().join("large.bin")).expect("stored");
    assert!(bytes == data, "byte-identical");
    // One fault per 6 MiB at least: the file crossed several links.
    assert!(proxy.faults() >= 8, "{}", proxy.report());
    eprintln!("{}", proxy.report());
}

#[test]
fn watch_listen_prints_the_open_and_the_phones_close_and_the_phone_prints_the_watchs_close() {
    let mut phone = Phone::start();
    // A watch command that ends closes its channel: the phone prints the close.
    let (ok, out) = phone.watch(&["send", "1"]);
    assert!(ok, "{out:?}");
    let close = phone.expect_event("close");
    assert_eq!(close["code"], 1000, "{close}");

    let mut listen = phone
        .watch_command()
        .arg("listen")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("listen starts");
    let stdout = listen.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            if tx.send(value).is_err() {
                return;
            }
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(30))
            .expect("listen prints a line")
    };
    assert_eq!(
        next(),
        serde_json::json!({ "event": "open", "is_reconnected": false })
    );
    // The phone stops cleanly (Ctrl-C): listen prints its close.
    let stopped = Command::new("kill")
        .args(["-INT", &phone.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let close = loop {
        let line = next();
        if line["event"] == "close" {
            break line;
        }
    };
    assert_eq!(close["code"], 1000, "{close}");
    let _ = phone.child.wait();
    let _ = listen.kill();
    let _ = listen.wait();
}

#[test]
fn a_second_watch_refused_as_busy_keeps_trying_and_is_served_once_the_first_leaves() {
    let keys = tempfile::tempdir().expect("temp dir");
    let (phone_key, phone_fp) = keygen(keys.path(), "phone.identity");
    let (first_key, first_fp) = keygen(keys.path(), "first.identity");
    let (second_key, second_fp) = keygen(keys.path(), "second.identity");
    let phone = Phone::start_with(&[
        "--identity",
        &phone_key,
        "--trust",
        &first_fp,
        "--trust",
        &second_fp,
    ]);
    let watch = |identity: &str| {
        let mut command = phone.watch_command();
        command.args(["--identity", identity, "--trust", &phone_fp]);
        command
    };
    // The first watch holds the link.
    let mut listen = watch(&first_key);
    listen.arg("listen");
    let mut first = holding_the_link(listen);

    // The second is refused with 4002 (on its stderr), and keeps trying.
    let mut second = watch(&second_key)
        .args(["send", r#""second""#, "--timeout-ms", "60000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the second watch starts");
    let stderr = BufReader::new(second.stderr.take().expect("stderr"));
    let (tx, refused) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("4002") {
                let _ = tx.send(line);
            }
        }
    });
    refused
        .recv_timeout(Duration::from_secs(30))
        .expect("the second watch is refused as busy");
    // The first leaves: the second, still trying, is served.
    let _ = first.kill();
    let _ = first.wait();
    let output = second.wait_with_output().expect("the second watch ends");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out}");
    assert_eq!(out.trim(), r#"{"sent":true}"#);
    assert_eq!(phone.expect_event("message")["data"], "second");
}

#[test]
fn the_phone_takes_its_free_space_reserve_from_the_command_line() {
    // A reserve larger than any disk: every file is refused with 4005, saying why.
    let phone = Phone::start_with(&["--reserve-free-mib", "1000000000000"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("small.bin");
    std::fs::write(&file, b"1 KiB or less").expect("write");
    let (ok, out) = phone.watch(&["send-file", file.to_str().expect("utf-8 path")]);
    assert!(!ok);
    assert_eq!(out[0]["code"], 4005, "{out:?}");
    assert!(
        out[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("free space"),
        "{out:?}"
    );
}

#[test]
fn a_busy_phone_is_reported_as_4002_in_plaintext_mode_too() {
    let phone = Phone::start_with(&["--insecure-plaintext"]);
    let mut listen = phone.watch_command();
    listen.args(["--insecure-plaintext", "listen"]);
    let mut first = holding_the_link(listen);
    // Another watch device (its own state directory): refused as busy until it gives up,
    // and it says so, not 204.
    let (ok, out) = run(&[
        "watch",
        "--connect",
        &phone.addr,
        "--package",
        "com.example.cli",
        "--insecure-plaintext",
        "send",
        "1",
        "--timeout-ms",
        "1500",
    ]);
    assert!(!ok);
    assert_eq!(out[0]["code"], 4002, "{out:?}");
    let _ = first.kill();
    let _ = first.wait();
}

/// A phone process with its state in `home`, listening on `listen`, its stdout lines
/// sent to `lines` as they come.
fn phone_process(home: &Path, files: &Path, listen: &str, lines: mpsc::Sender<Value>) -> Child {
    let mut child = Command::new(BIN)
        .args(["phone", "--listen", listen, "--package", "com.example.cli"])
        .args(["--app-version", "9", "--handle-ms", "20", "--files-dir"])
        .arg(files)
        .env("INTERCONNECT_HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the phone starts");
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(value) = serde_json::from_str(&line)
                && lines.send(value).is_err()
            {
                return;
            }
        }
    });
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_connection_carries_on_when_the_phone_process_is_killed_and_started_again() {
    use interconnect::{Config, Interconnect};
    // A watch app built as the README shows, against a phone process killed with
    // SIGKILL in the middle of a stream of messages and started again on its port. The
    // phone's app spends 20 ms on each message, so it holds some unread when it dies.
    let (home, files, watch_home) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (tx, lines) = mpsc::channel::<Value>();
    let mut phone = phone_process(home.path(), files.path(), "127.0.0.1:0", tx.clone());
    let listening = lines.recv_timeout(Duration::from_secs(30)).expect("a line");
    let addr = listening["address"]
        .as_str()
        .expect("an address")
        .to_string();

    let mut config = Config::new(watch_home.path()).unwrap();
    config.send_timeout = Duration::from_secs(60);
    config.backoff.initial = Duration::from_millis(20);
    config.backoff.max = Duration::from_millis(200);
    let watch = Interconnect::new(
        transport_tcp::TcpDialer::to_host(addr.clone(), Default::default()),
        config,
    );
    let conn = watch.instance("com.example.cli", None);
    const COUNT: u32 = 300;
    let mut sends = Vec::new();
    let mut printed = Vec::new();
    // What the phone printed, from its lines, up to now.
    let drain = |printed: &mut Vec<u32>| {
        while let Ok(line) = lines.try_recv() {
            if line["event"] == "message" {
                printed.push(line["data"].as_u64().expect("a number") as u32);
            }
        }
    };
    for i in 0..COUNT {
        sends.push(tokio::spawn(conn.send(&i)));
        tokio::time::sleep(Duration::from_millis(3)).await;
        if i == COUNT / 2 {
            phone.kill().expect("SIGKILL");
            phone.wait().expect("reaped");
            drain(&mut printed);
            assert!(!printed.is_empty(), "the first phone got messages");
            phone = phone_process(home.path(), files.path(), &addr, tx.clone());
        }
    }
    for (i, send) in sends.into_iter().enumerate() {
        send.await
            .unwrap()
            .unwrap_or_else(|e| panic!("message {i}: {e}"));
    }
    // Every send resolved: the app of one phone or the other took each message. The
    // phone prints a message after taking it (which acknowledges it), so the last lines
    // may still be on their way: read until every number was printed, or 30 s passed.
    drain(&mut printed);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let distinct = |printed: &[u32]| {
        printed
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    while distinct(&printed) < COUNT as usize && std::time::Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100))
            && line["event"] == "message"
        {
            printed.push(line["data"].as_u64().expect("a number") as u32);
        }
    }
    let mut seen = std::collections::BTreeMap::<u32, usize>::new();
    for n in &printed {
        *seen.entry(*n).or_default() += 1;
    }
    assert_eq!(seen.len(), COUNT as usize, "nothing lost");
    // A message the killed phone's app took at the instant of the kill, before its
    // acknowledgement left, is sent again to the new phone: at most a few of them.
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= 4 && twice.iter().all(|(_, n)| **n == 2),
        "{twice:?}"
    );
    let _ = phone.kill();
    let _ = phone.wait();
    eprintln!(
        "{COUNT} messages, phone killed after {}: {} printed twice",
        COUNT / 2,
        twice.len()
    );
}

#[test]
fn a_watch_that_exits_cleanly_is_a_close_on_the_phone_not_an_error() {
    let phone = Phone::start();
    // A one-way send, echoed (--echo) to a watch that leaves once its send is taken.
    let (ok, out) = phone.watch(&["send", "1"]);
    assert!(ok, "{out:?}");
    // The next watch's message marks the end of what the phone says of the first.
    let (ok, out) = phone.watch(&["send", "2"]);
    assert!(ok, "{out:?}");
    let mut lines = Vec::new();
    loop {
        let line = phone
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the phone prints the second message");
        if line["event"] == "message" && line["data"] == 2 {
            break;
        }
        lines.push(line);
    }
    assert!(
        lines.iter().any(|l| l["event"] == "close"),
        "the clean exit is a close: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l["event"] == "error"),
        "no error for a clean exit or an echo nobody takes: {lines:?}"
    );
}
