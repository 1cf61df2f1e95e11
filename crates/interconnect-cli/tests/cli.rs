//! The `interconnect` command as a user runs it: the demo, a phone and a watch in two
//! processes, and bad input.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_interconnect");

fn run(args: &[&str]) -> (bool, Vec<Value>) {
    let output = Command::new(BIN)
        .args(args)
        .output()
        .expect("the command runs");
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    (output.status.success(), lines)
}

#[test]
fn demo_checks_every_step_and_exits_zero() {
    let (ok, lines) = run(&["demo"]);
    assert!(ok, "{lines:?}");
    assert_eq!(lines.last(), Some(&serde_json::json!({ "demo": "ok" })));
    assert!(
        lines
            .iter()
            .filter(|l| l.get("step").is_some())
            .all(|l| l["ok"] == true)
    );
}

/// A phone process whose stdout lines arrive on a channel; killed on drop.
struct Phone {
    child: Child,
    lines: mpsc::Receiver<Value>,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Phone {
    fn start() -> Phone {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(BIN)
            .args(["phone", "--listen", &addr, "--package", "com.example.cli"])
            .args(["--app-version", "9", "--files-dir"])
            .arg(dir.path())
            .arg("--echo")
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
        Phone {
            child,
            lines,
            addr,
            _dir: dir,
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

    fn watch(&self, args: &[&str]) -> (bool, Vec<Value>) {
        let mut all = vec![
            "watch",
            "--connect",
            &self.addr,
            "--package",
            "com.example.cli",
        ];
        all.extend_from_slice(args);
        run(&all)
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

    let (ok, out) = run(&[
        "watch",
        "--connect",
        &phone.addr,
        "--package",
        "com.not.installed",
        "diagnosis",
    ]);
    assert!(!ok);
    assert_eq!(out[0]["code"], 1001);
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
