//! Files through a cutting proxy, listening watches, busy phones, killed and restarted processes.

use super::*;
use crate::security::keygen;

#[test]
fn a_48_mib_file_arrives_identical_through_a_proxy_that_cuts_every_2_to_6_mib() {
    file_through_a_cutting_proxy(48, &[]);
}

/// In plaintext each chunk is framed in the buffer it was read into and is not kept once
/// sent: after every cut, what the phone lacks is read from the file again.
#[test]
fn a_file_in_plaintext_arrives_identical_through_a_proxy_that_cuts_every_2_to_6_mib() {
    file_through_a_cutting_proxy(24, &["--insecure-plaintext"]);
}

/// A file of `mib` MiB from the watch through a proxy that cuts or resets the link every
/// 2 to 6 MiB, both ends run with `flags`: it arrives identical, across several links.
fn file_through_a_cutting_proxy(mib: u32, flags: &[&str]) {
    use interconnect_conformance::proxy::{Fault, FaultProxy, Plan};
    let phone = Phone::start_with(flags);
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
    let data: Vec<u8> = (0..mib << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&file, &data).expect("write");
    let proxy_addr = proxy.addr().to_string();
    let mut args = vec![
        "watch",
        "--connect",
        &proxy_addr,
        "--package",
        "com.example.cli",
    ];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[
        "send-file",
        file.to_str().expect("utf-8 path"),
        "--timeout-ms",
        "180000",
    ]);
    let (ok, out) = run_in(phone.watch_home.path(), &args);
    assert!(ok, "{out:?} after {}", proxy.report());
    let stored = phone.expect_event("file");
    assert_eq!(stored["size"], u64::from(mib) << 20);
    assert_eq!(stored["sha256"], out[0]["sha256"]);
    let bytes = std::fs::read(phone._dir.path().join("large.bin")).expect("stored");
    assert!(bytes == data, "byte-identical");
    // One fault per 6 MiB at least: the file crossed several links.
    assert!(proxy.faults() >= u64::from(mib / 6), "{}", proxy.report());
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
