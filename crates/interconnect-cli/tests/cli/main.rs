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

mod durable;
mod links;
mod security;
mod sessions;
mod watches;
