//! Durable messages across SIGKILL: a watch process commits 1,000 messages (`send
//! --durable -`, one per line of stdin) and a phone process prints what its app takes;
//! either process, or both in turn, is killed at seeded random moments (20 kills or
//! more) and started again on the same store, and the phone's app must have taken every
//! message once, in order: none twice, none skipped.
//!
//! What "taken" can mean to an outside observer: the phone prints a message just after
//! `Events::next` returned it, and `next` moves the cursor on the disk before it
//! returns. A phone killed in between has taken the message and never printed it; that
//! one message, the one after the last it printed, is the only one allowed to be
//! missing per phone kill (an app that must act on every message acts before it asks
//! for the next, or records its progress with its own data).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::BIN;

const PKG: &str = "com.example.cli";
const COUNT: u64 = 1_000;

/// A small seeded generator (the kill moments), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The phone: its process, restarted on the same store and address; every message its
/// app took, across runs.
struct PhoneSide {
    home: PathBuf,
    store: PathBuf,
    addr: String,
    child: Option<(Child, std::thread::JoinHandle<()>)>,
    lines: mpsc::Receiver<Value>,
    tx: mpsc::Sender<Value>,
    taken: Vec<u64>,
    /// Per kill, the message the phone may have taken and not printed.
    in_hand: Vec<u64>,
}

impl PhoneSide {
    fn new(dir: &Path) -> PhoneSide {
        let (tx, lines) = mpsc::channel();
        let mut phone = PhoneSide {
            home: dir.join("phone-home"),
            store: dir.join("phone.redb"),
            addr: "127.0.0.1:0".into(),
            child: None,
            lines,
            tx,
            taken: Vec::new(),
            in_hand: Vec::new(),
        };
        phone.start();
        phone
    }

    /// Starts the phone and returns once it listens (on the address it had before).
    fn start(&mut self) {
        let mut child = Command::new(BIN)
            .args(["phone", "--listen", &self.addr, "--package", PKG])
            .args(["--app-version", "1", "--files-dir"])
            .arg(&self.home)
            .arg("--store")
            .arg(&self.store)
            .env("INTERCONNECT_HOME", &self.home)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the phone starts");
        let stdout = child.stdout.take().expect("stdout");
        let tx = self.tx.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str(&line)
                    && tx.send(value).is_err()
                {
                    return;
                }
            }
        });
        self.child = Some((child, reader));
        loop {
            let line = self.next_line(Duration::from_secs(30)).expect("listening");
            if line["event"] == "listening" {
                self.addr = line["address"].as_str().expect("an address").into();
                return;
            }
        }
    }

    fn next_line(&mut self, wait: Duration) -> Option<Value> {
        let line = self.lines.recv_timeout(wait).ok()?;
        if line["event"] == "message" {
            self.taken.push(line["data"].as_u64().expect("a number"));
        }
        Some(line)
    }

    /// Takes what the phone printed so far.
    fn drain(&mut self) {
        while self.next_line(Duration::ZERO).is_some() {}
    }

    fn kill(&mut self) {
        if let Some((mut child, reader)) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            // What it printed before it died still counts: read to the end of its pipe.
            let _ = reader.join();
        }
        self.drain();
        self.in_hand.push(self.taken.last().map_or(0, |n| n + 1));
    }
}

impl Drop for PhoneSide {
    fn drop(&mut self) {
        if let Some((mut child, _)) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The watch: `send --durable -` fed the numbers its store has not committed yet.
struct WatchSide {
    home: PathBuf,
    store: PathBuf,
}

impl WatchSide {
    fn command(&self, addr: &str) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(["watch", "--connect", addr, "--package", PKG, "--store"])
            .arg(&self.store)
            .env("INTERCONNECT_HOME", &self.home);
        command
    }

    /// The last id the store gave: the messages 0 to that minus one are committed.
    fn committed(&self, addr: &str) -> u64 {
        let output = self
            .command(addr)
            .args(["--timeout-ms", "0", "outstanding"])
            .stderr(Stdio::null())
            .output()
            .expect("outstanding runs");
        assert!(output.status.success(), "outstanding: {output:?}");
        let line: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        line["last_id"].as_u64().expect("last_id")
    }

    /// Starts the sender, which commits the rest and then waits for delivery.
    fn start(&self, addr: &str, timeout_ms: u64) -> Child {
        let from = self.committed(addr);
        let mut child = self
            .command(addr)
            .args([
                "--timeout-ms",
                &timeout_ms.to_string(),
                "send",
                "--durable",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the watch starts");
        let mut stdin = child.stdin.take().expect("stdin");
        let lines: String = (from..COUNT).map(|n| format!("{n}\n")).collect();
        // Fits the pipe; a sender killed meanwhile makes this fail, which is fine.
        let _ = stdin.write_all(lines.as_bytes());
        child
    }
}

/// Kills the watch (`watch`), the phone (`phone`) or both in turn, `kills` times, at
/// seeded moments, then lets the sender finish and checks what the phone's app took.
fn killed_and_restarted(seed: u64, kill_watch: bool, kill_phone: bool, kills: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed);
    let mut phone = PhoneSide::new(dir.path());
    let watch = WatchSide {
        home: dir.path().join("watch-home"),
        store: dir.path().join("watch.redb"),
    };
    let mut sender = watch.start(&phone.addr, 60_000);
    for kill in 0..kills {
        std::thread::sleep(Duration::from_millis(30 + rng.below(250)));
        phone.drain();
        let watch_turn = kill_watch && (!kill_phone || kill % 2 == 0);
        if watch_turn {
            let _ = sender.kill();
            let _ = sender.wait();
            sender = watch.start(&phone.addr, 60_000);
        } else {
            phone.kill();
            phone.start();
        }
    }
    // No more kills: everything committed is delivered, and the sender says so.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        phone.drain();
        if let Some(status) = sender.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the sender did not finish");
        let _ = phone.next_line(Duration::from_millis(50));
    };
    assert!(status.success(), "the last sender run failed: {status}");
    phone.drain();
    let taken = &phone.taken;
    let in_order = taken.windows(2).all(|w| w[0] < w[1]);
    let missing: Vec<u64> = (0..COUNT).filter(|n| !taken.contains(n)).collect();
    let unexplained: Vec<u64> = missing
        .iter()
        .copied()
        .filter(|n| !phone.in_hand.contains(n))
        .collect();
    assert!(
        in_order && unexplained.is_empty(),
        "seed {seed}: {} taken, in order (none twice): {in_order}, missing {missing:?} \
         of which not in the app's hand at a kill {unexplained:?}",
        taken.len()
    );
    println!(
        "seed {seed}: {} of {COUNT} printed once and in order; {} taken by a phone killed \
         before it printed them",
        taken.len(),
        missing.len()
    );
}

#[test]
fn durable_messages_survive_a_watch_killed_twenty_times() {
    killed_and_restarted(0x5eed_0001, true, false, 20);
}

#[test]
fn durable_messages_survive_a_phone_killed_twenty_times() {
    killed_and_restarted(0x5eed_0002, false, true, 20);
}

#[test]
fn durable_messages_survive_both_killed_in_turn() {
    killed_and_restarted(0x5eed_0003, true, true, 24);
}
