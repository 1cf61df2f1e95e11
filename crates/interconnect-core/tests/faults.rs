//! The state machines alone on a bad wire: seeded loss, duplication, reordering,
//! latency and a small MTU, in virtual time (the crate's `pair` test bed). Every seed is
//! one reproducible run.

use bytes::Bytes;
use core::time::Duration;
use interconnect_core::ContentType;
use interconnect_core::pair::{Faults, PKG, Pair};
use interconnect_proto::Exchange;

fn bad_wire(pair: Pair, seed: u64) -> Pair {
    let mut pair = pair.with_faults(Faults::lossy(10, 10, 10), seed);
    pair.faults.latency = Duration::from_millis(15);
    pair.faults.mtu = 2048;
    pair
}

/// Connects (the link may take relinks to come up) and has the watch open a channel.
fn open(pair: &mut Pair) -> interconnect_proto::ChannelId {
    pair.connect();
    pair.advance(Duration::from_secs(30));
    pair.watch
        .open_channel(pair.now, PKG, Some("AA:BB"))
        .unwrap()
}

/// Each side sends message `i` (its number, little-endian) on `ch`.
fn send_both(pair: &mut Pair, ch: interconnect_proto::ChannelId, i: u32) {
    for session in [&mut pair.watch, &mut pair.phone] {
        session
            .send(ch, ContentType::Binary, Exchange::OneWay, numbered(i))
            .unwrap();
    }
}

/// Each app received messages `0..n` once, in order.
fn assert_all_once_in_order(pair: &Pair, ch: interconnect_proto::ChannelId, n: u32, seed: u64) {
    let expected: Vec<Bytes> = (0..n).map(numbered).collect();
    assert_eq!(
        pair.phone_messages(ch),
        expected,
        "seed {seed}: to the phone"
    );
    assert_eq!(
        pair.watch_messages(ch),
        expected,
        "seed {seed}: to the watch"
    );
}

fn numbered(n: u32) -> Bytes {
    Bytes::copy_from_slice(&n.to_le_bytes())
}

#[test]
fn messages_arrive_once_and_in_order_both_ways_through_a_bad_wire() {
    for seed in 0..12 {
        let mut pair = bad_wire(Pair::new(), seed);
        let ch = open(&mut pair);
        assert!(pair.watch.is_link_up(), "seed {seed}: no link after 30 s");
        pair.advance(Duration::from_secs(30));
        assert!(
            pair.watch.is_open(ch),
            "seed {seed}: the channel did not open"
        );
        const N: u32 = 150;
        for i in 0..N {
            send_both(&mut pair, ch, i);
            pair.advance(Duration::from_millis(25));
        }
        pair.advance(Duration::from_secs(120));
        assert_all_once_in_order(&pair, ch, N, seed);
    }
}

#[test]
fn a_file_arrives_whole_through_a_bad_wire_and_the_sender_hears_so() {
    for seed in 0..6 {
        let mut pair = bad_wire(Pair::plaintext(), seed);
        let ch = open(&mut pair);
        pair.advance(Duration::from_secs(30));
        let data: Bytes = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let transfer = pair.watch_sends_file(ch, "f.bin", data.clone()).unwrap();
        pair.advance(Duration::from_secs(600));
        assert_eq!(
            pair.phone_files.stored,
            [(ch, data)],
            "seed {seed}: stored once, whole"
        );
        assert!(
            pair.watch_heard_sent(transfer),
            "seed {seed}: the sender was told"
        );
    }
}

#[test]
fn the_same_seed_is_the_same_run() {
    let run = |seed| {
        let mut pair = bad_wire(Pair::new(), seed);
        let ch = open(&mut pair);
        for i in 0..20 {
            pair.watch
                .send(ch, ContentType::Binary, Exchange::OneWay, numbered(i))
                .unwrap();
        }
        pair.advance(Duration::from_secs(60));
        (
            pair.relinks,
            pair.watch_events.len(),
            pair.phone_events.len(),
            pair.now,
        )
    };
    assert_eq!(run(3), run(3));
}

#[test]
fn chunks_in_the_air_when_the_link_drops_go_again_in_the_next_links_size() {
    let mut pair = Pair::plaintext();
    pair.faults.latency = Duration::from_millis(10);
    let ch = open(&mut pair);
    pair.advance(Duration::from_secs(1));
    // 256 KiB chunks on this link, read ahead; the link drops mid-file.
    let data: Bytes = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    pair.watch_sends_file(ch, "f.bin", data.clone()).unwrap();
    // Chunks in the air, none acknowledged yet: the next link reads them again, in its
    // own chunk size.
    pair.advance(Duration::from_millis(25));
    pair.cut();
    // The next link carries frames of 16 KiB at most.
    pair.faults.mtu = 16 << 10;
    pair.connect();
    pair.advance(Duration::from_secs(60));
    assert_eq!(pair.phone_files.stored, [(ch, data)]);
}

#[test]
fn messages_and_files_both_ways_survive_a_bad_wire_and_link_cuts() {
    for seed in 0..12 {
        let mut pair = bad_wire(Pair::new(), seed);
        let ch = open(&mut pair);
        pair.advance(Duration::from_secs(30));
        assert!(
            pair.watch.is_open(ch),
            "seed {seed}: the channel did not open"
        );
        let file: Bytes = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        pair.watch_sends_file(ch, "w.bin", file.clone()).unwrap();
        const N: u32 = 100;
        for i in 0..N {
            send_both(&mut pair, ch, i);
            pair.advance(Duration::from_millis(20));
            // A cut now and then, mid-stream and mid-file.
            if i % 30 == 29 {
                pair.cut();
                pair.connect();
            }
        }
        pair.advance(Duration::from_secs(300));
        assert_all_once_in_order(&pair, ch, N, seed);
        assert_eq!(
            pair.phone_files.stored,
            [(ch, file)],
            "seed {seed}: the file"
        );
    }
}
