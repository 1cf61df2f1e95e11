//! An independent phone against our watch over a real BLE stack: `fixtures/bumble_phone.py`
//! (Bumble's Python host; the GATT profile, packets and credits from this crate's docs,
//! the session from WIRE.md through `spec/wire.py`) meets the `trouble-watch` example
//! (trouble-host) on two virtual controllers. It connects, asks for the ATT MTU, takes
//! the channel the watch opens in plaintext mode, sends 20 messages that the watch echoes,
//! and sends a file, which the watch stores identical; over GATT, and over the L2CAP
//! channel the watch announces.

mod common;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use common::{Controllers, fixture, python, watch_process};
use serde_json::Value;

const PKG: &str = "com.example.ble";

async fn bumble_phone_meets_the_trouble_watch(mtu: u16, coc: bool) {
    let controllers = Controllers::start(2).await;
    let (home, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (tx, lines) = mpsc::channel::<Value>();
    let _watch = watch_process(
        controllers.hci(0),
        home.path(),
        PKG,
        &["--echo", "--insecure-plaintext"],
        tx,
    );
    let data: Vec<u8> = (0..150_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = dir.path().join("from-bumble.bin");
    std::fs::write(&file, &data).unwrap();
    let wire = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interconnect-proto/WIRE.md");
    let phone = tokio::process::Command::new(python())
        .arg(fixture("bumble_phone.py"))
        .args(["--hci", &controllers.hci(1).port().to_string()])
        .args(["--mtu", &mtu.to_string(), "--package", PKG])
        .arg("--wire")
        .arg(&wire)
        .arg("--file")
        .arg(&file)
        .args(coc.then_some("--coc"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), phone)
        .await
        .expect("the Bumble phone ends within 90 s")
        .expect("the Bumble phone runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report; stdout {stdout}, stderr {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    eprintln!("the Bumble phone: {report}");
    assert!(output.status.success() && report["ok"] == true, "{report}");
    assert_eq!(report["mtu"], mtu, "the ATT MTU asked for: {report}");
    assert_eq!(report["echoed"], 20, "{report}");
    let carrier = if coc { "coc" } else { "gatt" };
    assert_eq!(report["carrier"], carrier, "{report}");
    if coc {
        assert_eq!(report["psm"], 0x85, "the PSM announced: {report}");
        assert_eq!(report["sdu_limit"], 1018, "the watch's SDU limit: {report}");
        // Written as a stream, as a phone's stream API does: some SDUs held the end of one
        // frame and the start of the next, and the watch read every frame.
        let shared = report["sdus_shared"].as_u64().expect("counted");
        assert!(shared > 0, "no SDU held more than one frame: {report}");
    }
    // The watch stored the file, identical. (Its app may print the event just after
    // the phone, answered by the session, has ended: wait for the line.)
    let stored = std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(10)).ok())
        .find(|l| l["event"] == "file")
        .expect("the watch printed the stored file");
    let path = stored["path"].as_str().expect("a path");
    assert!(std::fs::read(path).unwrap() == data, "stored identical");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bumble_phone_at_mtu_247() {
    bumble_phone_meets_the_trouble_watch(247, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bumble_phone_at_mtu_517() {
    bumble_phone_meets_the_trouble_watch(517, false).await;
}

/// The Bumble phone over L2CAP: frames of up to 64 KiB cut at the watch's SDU limit one
/// way, the watch's frames joined by their header the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coc_a_bumble_phone_over_l2cap() {
    bumble_phone_meets_the_trouble_watch(247, true).await;
}
