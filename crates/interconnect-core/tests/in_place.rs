//! File chunks read with room in front of their bytes (`Session::file_read_with_room`)
//! are framed, and sealed (one AEAD segment, or several with their tags last), in the
//! buffer they were read into; the file arrives the same as from reads without room, on a good wire and
//! on a bad one, where sent bytes are read again to be resent.

use bytes::Bytes;
use core::time::Duration;
use interconnect_core::pair::{Faults, PKG, Pair};

/// A file of `len` bytes that differ from chunk to chunk.
fn file(len: u32) -> Bytes {
    (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
}

/// Connects `pair` (the link may take relinks on a bad wire) and has the watch open a
/// channel.
fn opened(pair: &mut Pair) -> interconnect_proto::ChannelId {
    pair.connect();
    pair.advance(Duration::from_secs(30));
    let ch = pair
        .watch
        .open_channel(pair.now, PKG, Some("AA:BB"))
        .unwrap();
    pair.advance(Duration::from_secs(1));
    ch
}

/// Sends `data` from the watch over `pair` (links of `mtu`), its reads answered with room
/// or without; returns the pair once the phone stored the file and the watch heard so.
fn send(mut pair: Pair, mtu: usize, with_room: bool, data: &Bytes) -> Pair {
    pair.faults.mtu = mtu;
    pair.watch_files.with_room = with_room;
    let ch = opened(&mut pair);
    let transfer = pair.watch_sends_file(ch, "f.bin", data.clone()).unwrap();
    pair.advance(Duration::from_secs(600));
    assert_eq!(
        pair.phone_files.stored,
        [(ch, data.clone())],
        "stored once, whole"
    );
    assert!(pair.watch_heard_sent(transfer), "the sender was told");
    pair
}

#[test]
fn chunks_read_with_room_are_framed_where_they_lie() {
    let data = file(1_000_000);
    // In the clear, in TCP's frames of 256 KiB: every chunk (4 of them).
    let pair = send(Pair::plaintext(), 256 << 10, true, &data);
    assert!(pair.framed_in_place >= 4, "{}", pair.framed_in_place);
    // Sealed, in a BLE link's frames of 64 KiB: one segment each, every chunk.
    let pair = send(Pair::new(), 64 << 10, true, &data);
    assert!(pair.framed_in_place >= 16, "{}", pair.framed_in_place);
    // Sealed in frames of several segments, their tags last: every chunk too.
    let pair = send(Pair::new(), 256 << 10, true, &data);
    assert!(pair.framed_in_place >= 4, "{}", pair.framed_in_place);
    // Reads without room: nothing counted, so the count above means what it says.
    let pair = send(Pair::new(), 64 << 10, false, &data);
    assert_eq!(pair.framed_in_place, 0);
}

#[test]
fn chunks_read_with_room_survive_a_bad_wire_and_link_cuts() {
    let data = file(300_000);
    for seed in 0..4 {
        for pair in [Pair::new(), Pair::plaintext()] {
            let mut pair = pair.with_faults(Faults::lossy(10, 10, 10), seed);
            pair.faults.latency = Duration::from_millis(15);
            let pair = send(pair, 32 << 10, true, &data);
            assert!(pair.framed_in_place > 0, "seed {seed}");
        }
    }
}

/// A buffer shorter than the room holds no bytes: the read changes nothing, and the
/// reads answered properly deliver the file.
#[test]
fn a_buffer_shorter_than_the_room_is_no_read() {
    let mut pair = Pair::plaintext();
    pair.watch_files.with_room = true;
    let ch = opened(&mut pair);
    let data = file(100_000);
    let transfer = pair.watch_sends_file(ch, "f.bin", data.clone()).unwrap();
    pair.watch
        .file_read_with_room(transfer, 0, Bytes::from_static(b"short"), None);
    pair.advance(Duration::from_secs(60));
    assert_eq!(pair.phone_files.stored, [(ch, data)]);
    assert!(pair.watch_heard_sent(transfer));
}
