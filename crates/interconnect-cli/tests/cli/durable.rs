//! Durable messages across SIGKILL: a watch process commits a 16 MiB file (`send-file
//! --durable`) and 1,000 messages (`send --durable -`, one per line of stdin) and a
//! phone process prints what its app takes;
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
    /// The SHA-256 of each file it stored.
    files: Vec<String>,
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
            files: Vec::new(),
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
        if line["event"] == "file" {
            self.files
                .push(line["sha256"].as_str().expect("a digest").into());
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
        // Handed over in order: the one after the last printed, or after the one the
        // previous kill caught in hand if this run printed nothing since.
        let last = self.taken.last().copied().max(self.in_hand.last().copied());
        self.in_hand.push(last.map_or(0, |n| n + 1));
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
    /// Ids the store gave before the messages (the file's).
    before: u64,
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
        let from = self.committed(addr).saturating_sub(self.before);
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
            .stdout(Stdio::piped())
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
    let mut watch = WatchSide {
        home: dir.path().join("watch-home"),
        store: dir.path().join("watch.redb"),
        before: 0,
    };
    // The file first: committed by a run that exits at once; every later run on the
    // store resumes it, none calls send-file again.
    let file = dir.path().join("track.bin");
    let data: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let committed = watch
        .command(&phone.addr)
        .args(["--timeout-ms", "0", "send-file", "--durable"])
        .arg(&file)
        .stderr(Stdio::null())
        .output()
        .expect("send-file runs");
    assert!(committed.status.success(), "send-file: {committed:?}");
    watch.before = 1;
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&data))
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
    let mut out = String::new();
    std::io::Read::read_to_string(&mut sender.stdout.take().unwrap(), &mut out).unwrap();
    let last: Value = serde_json::from_str(out.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(
        last["delivered"], true,
        "seed {seed}: the sender's last run: {last}"
    );
    phone.drain();
    // Stored once, byte for byte. (A phone killed after it stored the file and before
    // its app printed the `file` line has it on disk all the same: the sender's
    // delivery means stored.)
    let stored: Vec<PathBuf> = std::fs::read_dir(&phone.home)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("track"))
        })
        .collect();
    // One copy even when the watch was killed after the phone stored the file and
    // before it heard so: its next run offers the file again and the phone answers 4009.
    assert_eq!(stored.len(), 1, "seed {seed}: one copy: {stored:?}");
    assert_eq!(
        std::fs::read(&stored[0]).unwrap(),
        data,
        "seed {seed}: byte for byte"
    );
    assert!(phone.files.len() <= 1 && phone.files.iter().all(|d| *d == digest));
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

/// A disk that fills up under `send --durable`: the commit that does not fit fails with
/// 4005, and every message committed before it is still in the outbox, reopened by the
/// next command. The store lives on a 2 MiB tmpfs mounted in a namespace of its own
/// (`unshare`), which holds both commands.
#[test]
fn a_full_disk_fails_the_commit_with_4005_and_keeps_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount).unwrap();
    let lines: String = (0..200)
        .map(|n| format!("{{\"n\":{n},\"pad\":\"{}\"}}\n", "x".repeat(30_000)))
        .collect();
    std::fs::write(dir.path().join("messages"), lines).unwrap();
    let watch = |out: &str, command: &str| {
        format!(
            "{BIN} watch --connect 127.0.0.1:9 --package {PKG} --store {}/store.redb \
             --timeout-ms 0 {command} > {}/{out} 2>/dev/null",
            mount.display(),
            dir.path().display()
        )
    };
    let script = format!(
        "mount -t tmpfs -o size=2m none {mount} || exit 90\n\
         {send} < {messages}\n\
         echo $? > {status}\n\
         {outstanding} || exit 91\n",
        mount = mount.display(),
        send = watch("sent", "send --durable -"),
        messages = dir.path().join("messages").display(),
        status = dir.path().join("status").display(),
        outstanding = watch("outstanding", "outstanding"),
    );
    let ran = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .env("INTERCONNECT_HOME", dir.path().join("home"))
        .status()
        .expect("unshare runs");
    assert!(ran.success(), "the script: {ran}");
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_ne!(read("status").trim(), "0", "the sender failed");
    let sent: Vec<Value> = read("sent")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (last, ids) = sent.split_last().expect("lines");
    assert_eq!(last["code"], 4005, "{last}");
    let ids: Vec<u64> = ids.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert!(ids.len() > 10, "some fit before the disk was full: {ids:?}");
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    let outstanding: Value = serde_json::from_str(&read("outstanding")).unwrap();
    assert_eq!(outstanding["last_id"], ids.len() as u64);
    let kept: Vec<u64> = outstanding["outstanding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, ids, "every committed message is still in the outbox");
}
