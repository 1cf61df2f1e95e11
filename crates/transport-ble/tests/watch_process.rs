//! A watch process (the `trouble-watch` example: trouble-host on a Bumble virtual
//! controller) killed with SIGKILL in the middle of a stream of messages from the phone,
//! and started again from its state directory: every message the phone's app sent is
//! taken by one watch app or the other, and each send resolves.

mod common;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use common::{Carry, Controllers, Recorded, assert_carried, watch_process};
use interconnect::{Config, ConnectionEvent, Hub};
use serde_json::Value;
use transport_ble::BleConfig;
use transport_ble::trouble::{HostConfig, Trouble};

const PKG: &str = "com.example.ble";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_process_killed_and_started_again_loses_no_message() {
    killed_and_started_again(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coc_a_watch_process_killed_and_started_again_loses_no_message() {
    killed_and_started_again(true).await;
}

/// The watch offers L2CAP; the phone uses it (`coc`) or GATT.
async fn killed_and_started_again(coc: bool) {
    let controllers = Controllers::start(2).await;
    let (watch_home, phone_home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (tx, lines) = mpsc::channel::<Value>();
    let mut watch = watch_process(controllers.hci(0), watch_home.path(), PKG, &[], tx.clone());

    let mut config = Config::new(phone_home.path()).unwrap();
    config.send_timeout = Duration::from_secs(120);
    let mut host = HostConfig::new(controllers.hci(1));
    host.coc = coc;
    let phone = Recorded::new(
        Trouble::central(host, BleConfig::default())
            .await
            .expect("phone host"),
    );
    let carried = phone.log();
    let hub = Hub::new(phone, config);
    let app = hub.register(PKG, 1, None).await.unwrap();
    let mut events = app.events().unwrap();
    // The watch opens the channel.
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), events.next()).await;
        match event.expect("the watch opens within a minute") {
            Some(ConnectionEvent::Open { .. }) => break,
            Some(_) => {}
            None => panic!("the events ended"),
        }
    }
    let first = tokio::time::timeout(Duration::from_secs(60), app.send(&0u32)).await;
    assert!(
        matches!(first, Ok(Ok(()))),
        "the first watch took message 0: {first:?}"
    );

    const COUNT: u32 = 200;
    let mut sends = Vec::new();
    let mut printed = Vec::new();
    let drain = |printed: &mut Vec<u32>| {
        while let Ok(line) = lines.try_recv() {
            if line["event"] == "message" {
                printed.push(line["data"].as_u64().expect("a number") as u32);
            }
        }
    };
    for i in 1..COUNT {
        sends.push(tokio::spawn(app.send(&i)));
        tokio::time::sleep(Duration::from_millis(5)).await;
        if i == COUNT / 2 {
            watch.0.kill().expect("SIGKILL");
            watch.0.wait().expect("reaped");
            drain(&mut printed);
            assert!(printed.len() > 1, "the first watch got messages");
            watch = watch_process(controllers.hci(0), watch_home.path(), PKG, &[], tx.clone());
        }
    }
    for (i, send) in sends.into_iter().enumerate() {
        send.await
            .unwrap()
            .unwrap_or_else(|e| panic!("message {}: {e}", i + 1));
    }
    // Every send resolved, so each message was printed before its acknowledgement left;
    // the lines may still be on their way through the pipes.
    drain(&mut printed);
    let mut seen = BTreeMap::<u32, usize>::new();
    for n in &printed {
        *seen.entry(*n).or_default() += 1;
    }
    while seen.len() < COUNT as usize {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(10)) else {
            break;
        };
        if line["event"] == "message" {
            *seen
                .entry(line["data"].as_u64().expect("a number") as u32)
                .or_default() += 1;
        }
    }
    assert_eq!(seen.len(), COUNT as usize, "nothing lost");
    // A message the killed watch's app took at the instant of the kill, before its
    // acknowledgement left, comes again to the new watch: at most a few.
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= 4 && twice.iter().all(|(_, n)| **n == 2),
        "{twice:?}"
    );
    drop(watch);
    let carry = if coc { Carry::Coc } else { Carry::Gatt };
    assert_carried(&carried, carry);
    eprintln!(
        "{COUNT} messages, watch killed after {}: {} taken twice",
        COUNT / 2,
        twice.len()
    );
}
