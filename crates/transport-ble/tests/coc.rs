//! The session over an L2CAP credit-based channel on a real host stack: trouble-host as
//! watch and phone on Bumble virtual controllers, the watch announcing its PSM and the
//! phone opening the channel after discovery; and the fallback to GATT when the watch
//! offers no channel. Every test here has `coc` in its name.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::{Carry, Controllers, stack_fleet, stack_pair, trouble_pair};
use interconnect::Transport;
use interconnect_conformance::Harness;
use interconnect_proto::{ChannelId, ContentType, Data, Exchange, Frame};
use transport_ble::trouble::{HostConfig, Trouble};
use transport_ble::{BleConfig, Carrier};

struct CocStack;

#[async_trait]
impl Harness for CocStack {
    const PAUSED_CLOCK: bool = false;

    async fn pair(&self) -> (Box<dyn Transport>, Box<dyn Transport>) {
        stack_pair(Carry::Coc).await
    }
}

#[async_trait]
impl interconnect_conformance::several::Fleet for CocStack {
    async fn fleet(&self, watches: usize) -> (Vec<Box<dyn Transport>>, Box<dyn Transport>) {
        stack_fleet(watches, Carry::Coc).await
    }
}

mod coc {
    use super::CocStack;
    interconnect_conformance::conformance_tests!(CocStack, CocStack);
    interconnect_conformance::several_watches_tests!(CocStack, CocStack);
}

/// Both sides get the channel, and frames of every size cross it whole both ways: those
/// that fit one SDU, and those of up to 64 KiB, cut at the SDU limit and joined by the
/// length in their own header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coc_carries_frames_of_every_size_both_ways() {
    let controllers = Controllers::start(2).await;
    let (mut watch, mut phone) = trouble_pair(&controllers, 517, Carry::Coc).await;
    let (w, p) = tokio::join!(watch.next_carrier(), phone.next_carrier());
    let (w, p) = (w.unwrap(), p.unwrap());
    assert!(w.is_coc() && p.is_coc(), "both sides over L2CAP");
    let config = BleConfig::default();
    let (mut w, mut p) = (w.into_link(&config), p.into_link(&config));
    assert_eq!(w.max_frame_len, 64 * 1024);
    for len in [32, 100, 1018, 1019, 4000, 64 * 1024 - 16] {
        let frame = frame(len);
        w.sender.send(frame.clone()).await.unwrap();
        assert_eq!(
            p.receiver.recv().await.unwrap().unwrap(),
            frame,
            "{len} to the phone"
        );
        p.sender.send(frame.clone()).await.unwrap();
        assert_eq!(
            w.receiver.recv().await.unwrap().unwrap(),
            frame,
            "{len} to the watch"
        );
    }
}

/// A connection that came over L2CAP is no GATT packet link: `next_packet_link` says so
/// with a typed error rather than handing over something else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coc_a_packet_link_is_refused_over_l2cap() {
    let controllers = Controllers::start(2).await;
    let (mut watch, mut phone) = trouble_pair(&controllers, 517, Carry::Coc).await;
    let (w, p) = tokio::join!(watch.next_carrier(), phone.next_packet_link());
    assert!(w.unwrap().is_coc());
    assert!(
        matches!(p, Err(interconnect::TransportError::Incompatible(_))),
        "a typed refusal"
    );
}

/// An encoded Data frame of `len` bytes, give or take the two bytes a longer payload's
/// length takes.
fn frame(len: usize) -> Bytes {
    let overhead = data(0).len();
    data(len - overhead)
}

fn data(payload: usize) -> Bytes {
    Frame::Data(Data {
        channel: ChannelId(1),
        seq: 1,
        content_type: ContentType::Binary,
        exchange: Exchange::OneWay,
        payload: Bytes::from(vec![0x5a; payload]),
    })
    .to_bytes(1 << 20)
    .unwrap()
}

/// A watch that offers no channel (L2CAP off) is reached over GATT by a phone that
/// prefers L2CAP, and the session runs; why is logged once at info level, and again only
/// at debug (two connections here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coc_fallback_to_gatt_when_the_watch_offers_no_channel() {
    let logs = Logs::default();
    // The only test in this binary that sets a subscriber: the hosts log on threads of
    // their own, so it must be the global one.
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(logs.clone())
            .finish(),
    )
    .expect("the only subscriber");
    let controllers = Controllers::start(2).await;
    let mut host = HostConfig::new(controllers.hci(0));
    host.coc = false;
    let mut watch = Trouble::peripheral(host, BleConfig::default())
        .await
        .unwrap();
    let mut phone = Trouble::central(HostConfig::new(controllers.hci(1)), BleConfig::default())
        .await
        .unwrap();
    for _ in 0..2 {
        let (w, p) = tokio::join!(watch.next_carrier(), phone.next_carrier());
        let (w, p) = (w.unwrap(), p.unwrap());
        assert!(
            matches!((&w, &p), (Carrier::Gatt(_), Carrier::Gatt(_))),
            "both over GATT"
        );
        let config = BleConfig::default();
        let (mut w, mut p) = (w.into_link(&config), p.into_link(&config));
        let frame = frame(3000);
        w.sender.send(frame.clone()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), p.receiver.recv()).await;
        assert_eq!(got.unwrap().unwrap().unwrap(), frame);
        // Dropping the links ends the connection; the next one falls back again.
    }
    let text = logs.text();
    let told: Vec<_> = text.lines().filter(|l| l.contains("not L2CAP")).collect();
    assert_eq!(told.len(), 1, "logged once: {text}");
    assert!(
        told[0].contains("announces no L2CAP channel"),
        "with the reason: {}",
        told[0]
    );
}

/// Log lines, kept for the test to read.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
