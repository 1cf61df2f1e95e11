//! The conformance suite over a real BLE host stack: trouble-host as watch (peripheral)
//! and phone (central), each on its own Bumble virtual controller, the two sharing one
//! virtual radio, over GATT (`tests/coc.rs` runs it over L2CAP). Real time: the host
//! stacks run their own timers.

mod common;

use async_trait::async_trait;
use common::{Carry, Controllers, stack_fleet, stack_pair, trouble_pair};
use interconnect::Transport;
use interconnect_conformance::{Harness, conformance_tests};
struct RealStack;

#[async_trait]
impl Harness for RealStack {
    const PAUSED_CLOCK: bool = false;

    async fn pair(&self) -> (Box<dyn Transport>, Box<dyn Transport>) {
        stack_pair(Carry::Gatt).await
    }
}

conformance_tests!(RealStack, RealStack);

/// Several watches over GATT (`tests/coc.rs` runs the same over L2CAP).
#[async_trait]
impl interconnect_conformance::several::Fleet for RealStack {
    async fn fleet(&self, watches: usize) -> (Vec<Box<dyn Transport>>, Box<dyn Transport>) {
        stack_fleet(watches, Carry::Gatt).await
    }
}

interconnect_conformance::several_watches_tests!(RealStack, RealStack);

/// Two trouble-host stacks negotiate ATT MTU 1020 (each offers its packet pool's size),
/// but an attribute value is at most 512 bytes: the client cuts a longer notification
/// there. `packet_len` keeps packets at 512 whatever the MTU, so nothing is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_negotiated_mtu_of_1020_packets_stay_at_512_bytes() {
    use bytes::Bytes;
    use transport_ble::packet::packet_len;
    let controllers = Controllers::start(2).await;
    let (mut watch, mut phone) = trouble_pair(&controllers, 1020, Carry::Gatt).await;
    let (w, p) = tokio::join!(watch.next_packet_link(), phone.next_packet_link());
    let (mut w, mut p) = (w.unwrap(), p.unwrap());
    assert_eq!((w.sender.att_mtu(), p.sender.att_mtu()), (1020, 1020));
    assert_eq!(packet_len(1020), 512);
    // A packet of MTU − 3 bytes reaches the phone cut to 512: why packets stay at 512.
    w.sender
        .send_packet(Bytes::from(vec![7u8; 1017]))
        .await
        .unwrap();
    let cut = p.receiver.recv_packet().await.unwrap().unwrap();
    assert_eq!(
        cut.len(),
        512,
        "trouble-host's client cuts notifications at 512"
    );
    // Packets of packet_len pass whole, both ways.
    for i in 0..64u8 {
        let packet = Bytes::from(vec![i; packet_len(1020)]);
        w.sender.send_packet(packet.clone()).await.unwrap();
        assert_eq!(p.receiver.recv_packet().await.unwrap().unwrap(), packet);
        p.sender.send_packet(packet.clone()).await.unwrap();
        assert_eq!(w.receiver.recv_packet().await.unwrap().unwrap(), packet);
    }
}

/// Dropping either half of a packet link, on either side, ends the connection: the
/// other side's receiver sees the link close (a session that let go of one half must
/// not keep the radio link up until a liveness deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_either_half_of_a_packet_link_ends_the_connection() {
    for (side, half) in [
        ("watch", "receiver"),
        ("watch", "sender"),
        ("phone", "receiver"),
        ("phone", "sender"),
    ] {
        let controllers = Controllers::start(2).await;
        let (mut watch, mut phone) = trouble_pair(&controllers, 517, Carry::Gatt).await;
        let (w, p) = tokio::join!(watch.next_packet_link(), phone.next_packet_link());
        let (w, p) = (w.unwrap(), p.unwrap());
        let (dropping, mut other) = if side == "watch" { (w, p) } else { (p, w) };
        // The other half stays alive (a partial move keeps it in `dropping`).
        if half == "receiver" {
            drop(dropping.receiver);
        } else {
            drop(dropping.sender);
        }
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            other.receiver.recv_packet(),
        )
        .await;
        assert!(
            matches!(closed, Ok(Ok(None))),
            "the {side}'s {half} dropped: the peer's link closes ({closed:?})"
        );
    }
}
