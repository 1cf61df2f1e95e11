//! Sealing as the session does it, reaching into the secure layer and the link's state:
//! what a batch from an authenticated peer that breaks the batch rules does (the frames
//! before the break are handled, then the link drops; only a peer holding the session
//! keys can send one), what a peer that left a capability out is sent (one frame per
//! sealed frame, no file metadata, the CRC kept), and which frames own their buffers.

#[allow(unused_imports)]
use crate::prelude::*;

use bytes::{Bytes, BytesMut};
use interconnect_proto::{
    Capabilities, ContentType, Data, Exchange, Frame, MAX_FRAME_LEN, SEALED_SEGMENT_PLAINTEXT,
};

use crate::event::Event;
use crate::pair::{Pair, messages};

/// The phone gets `plain` sealed by the watch, as one sealed frame.
fn deliver_sealed(pair: &mut Pair, plain: &[u8]) {
    let mut sealed = BytesMut::new();
    let wire_max = pair.watch.wire_max;
    pair.watch
        .secure
        .as_mut()
        .expect("a secure session")
        .seal(
            plain,
            &[],
            wire_max,
            interconnect_proto::SealedForm::COMMON,
            &mut sealed,
        )
        .unwrap();
    pair.phone.handle_frame(pair.now, sealed.freeze());
    pair.collect();
}

fn inner(frame: Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame.encode_unsealed(MAX_FRAME_LEN, &mut out).unwrap();
    out.to_vec()
}

fn opened() -> (Pair, interconnect_proto::ChannelId) {
    opened_on(Pair::new())
}

/// `pair` connected, with a channel open.
fn opened_on(mut pair: Pair) -> (Pair, interconnect_proto::ChannelId) {
    pair.connect();
    let ch = pair
        .watch
        .open_channel(pair.now, crate::pair::PKG, Some("AA:BB"))
        .unwrap();
    pair.drive();
    assert!(pair.phone.is_link_up() && pair.watch.is_open(ch));
    (pair, ch)
}

fn data(ch: interconnect_proto::ChannelId, seq: u64, text: &'static str) -> Frame {
    Frame::Data(Data {
        channel: ch,
        seq,
        content_type: ContentType::Binary,
        exchange: Exchange::OneWay,
        payload: Bytes::from_static(text.as_bytes()),
    })
}

/// The phone asked its driver to drop the link.
fn link_dropped(pair: &Pair) -> bool {
    pair.phone_events
        .iter()
        .any(|e| matches!(e, Event::DropLink { .. }))
}

#[test]
fn a_batch_is_handled_frame_by_frame_in_order() {
    let (mut pair, ch) = opened();
    let plain = [inner(data(ch, 1, "one")), inner(data(ch, 2, "two"))].concat();
    deliver_sealed(&mut pair, &plain);
    assert_eq!(
        messages(&pair.phone_events, ch),
        vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
    );
    assert!(!link_dropped(&pair));
}

#[test]
fn a_batch_that_ends_inside_a_frame_drops_the_link_after_the_whole_frames() {
    let (mut pair, ch) = opened();
    let second = inner(data(ch, 2, "two"));
    let plain = [
        inner(data(ch, 1, "one")),
        second[..second.len() - 1].to_vec(),
    ]
    .concat();
    deliver_sealed(&mut pair, &plain);
    assert_eq!(
        messages(&pair.phone_events, ch),
        vec![Bytes::from_static(b"one")]
    );
    assert!(link_dropped(&pair), "{:?}", pair.phone_events);
}

#[test]
fn a_batch_may_not_hold_a_sealed_or_handshake_frame() {
    for smuggled in [
        Frame::Sealed(interconnect_proto::Sealed {
            nonce: 99,
            ciphertext: Bytes::from_static(&[0; 32]),
            layout: interconnect_proto::Layout::Interleaved,
        }),
        Frame::Handshake(interconnect_proto::Handshake {
            step: 1,
            offered: 0,
            suite: 0,
            rekey_interval: 0,
            message: Bytes::from_static(&[0; 32]),
        }),
    ] {
        let (mut pair, ch) = opened();
        let mut plain = inner(data(ch, 1, "one"));
        let mut whole = BytesMut::new();
        smuggled.encode(MAX_FRAME_LEN, &mut whole).unwrap();
        plain.extend_from_slice(&whole[..whole.len() - 4]);
        plain.extend_from_slice(&inner(data(ch, 2, "two")));
        deliver_sealed(&mut pair, &plain);
        assert_eq!(
            messages(&pair.phone_events, ch),
            vec![Bytes::from_static(b"one")],
            "nothing after the smuggled {:?}",
            smuggled.kind()
        );
        assert!(link_dropped(&pair));
    }
}

#[test]
fn a_peer_that_did_not_announce_batch_gets_one_frame_per_sealed_frame() {
    let (mut pair, ch) = opened();
    // As if the phone's Hello had left `BATCH` out (earlier releases did).
    match &mut pair.watch.link {
        super::LinkState::Up(up) => up.batch = false,
        _ => panic!("the link is up"),
    }
    for text in ["a", "b", "c"] {
        crate::pair::send(&mut pair.watch, ch, text);
    }
    let now = pair.now;
    let sent: Vec<Bytes> = core::iter::from_fn(|| pair.watch.poll_transmit(now)).collect();
    assert_eq!(sent.len(), 3);
    for frame in sent {
        pair.phone.handle_frame(now, frame);
    }
    pair.collect();
    assert_eq!(messages(&pair.phone_events, ch).len(), 3);
}

#[test]
fn a_peer_that_does_not_read_file_metadata_is_offered_no_file_with_it() {
    let (mut pair, ch) = opened();
    // As if the phone's Hello had left `FILE_META` out (earlier releases, the Bumble
    // phone of the BLE tests).
    match &mut pair.watch.link {
        super::LinkState::Up(up) => up.capabilities = interconnect_proto::Capabilities(3),
        _ => panic!("the link is up"),
    }
    let now = pair.now;
    let meta = Bytes::from_static(br#"{"km":5}"#);
    assert_eq!(
        pair.watch
            .send_file_with_meta(now, ch, "run.gpx", 3, 0, meta),
        Err(super::CommandError::NoFileMeta)
    );
    // Without metadata the file is offered as ever.
    assert!(pair.watch.send_file(now, ch, "run.gpx", 3, 0).is_ok());
    let offers = core::iter::from_fn(|| pair.watch.poll_transmit(now)).count();
    assert_eq!(offers, 1);
}

/// A large frame leaves in an allocation of its own (so a receiver can open it where it
/// lies) and arrives whole; small ones keep sharing the scratch buffer.
#[test]
fn a_large_frame_owns_its_buffer_sealed_or_plain() {
    for pair in [Pair::new(), Pair::plaintext()] {
        let (mut pair, ch) = opened_on(pair);
        let large = "x".repeat(super::transmit::OWN_BUFFER);
        crate::pair::send(&mut pair.watch, ch, &large);
        let now = pair.now;
        let frame = pair.watch.poll_transmit(now).expect("the message's frame");
        assert!(frame.len() > large.len());
        let frame = match frame.try_into_mut() {
            Ok(frame) => frame.freeze(),
            Err(_) => panic!("the large frame shares its allocation"),
        };
        pair.phone.handle_frame(now, frame);
        pair.collect();
        assert_eq!(
            messages(&pair.phone_events, ch),
            vec![Bytes::from(large.into_bytes())]
        );
    }
}

/// The trailers of the sealed frames in `frames`: `true` for a CRC.
fn crcs(frames: &[Bytes]) -> Vec<bool> {
    frames
        .iter()
        .map(|frame| {
            let header = interconnect_proto::FrameHeader::parse(frame, MAX_FRAME_LEN).unwrap();
            assert_eq!(header.kind, interconnect_proto::Kind::Sealed);
            assert_eq!(
                header.frame_len(),
                frame.len(),
                "the header tells the length"
            );
            header.has_crc()
        })
        .collect()
}

/// What a side seals before the peer's `Hello` arrived carries its CRC (the peer's
/// capabilities are not known yet); what follows goes without, the peer having announced
/// `NO_CRC`.
#[test]
fn sealed_frames_lose_their_crc_once_the_peer_said_it_reads_them_so() {
    let mut pair = Pair::new();
    pair.watch.link_up(pair.now, pair.faults.mtu);
    pair.phone.link_up(pair.now, pair.faults.mtu);
    let (mut from_watch, mut from_phone) = (Vec::new(), Vec::new());
    loop {
        pair.collect();
        let now = pair.now;
        let watch: Vec<Bytes> = core::iter::from_fn(|| pair.watch.poll_transmit(now)).collect();
        let phone: Vec<Bytes> = core::iter::from_fn(|| pair.phone.poll_transmit(now)).collect();
        if watch.is_empty() && phone.is_empty() {
            break;
        }
        for frame in watch {
            from_watch.push(frame.clone());
            pair.phone.handle_frame(now, frame);
        }
        for frame in phone {
            from_phone.push(frame.clone());
            pair.watch.handle_frame(now, frame);
        }
    }
    assert!(pair.watch.is_link_up() && pair.phone.is_link_up());
    let sealed = |frames: Vec<Bytes>| -> Vec<Bytes> {
        frames
            .into_iter()
            .filter(|f| f[1] == interconnect_proto::Kind::Sealed as u8)
            .collect()
    };
    let (from_watch, from_phone) = (crcs(&sealed(from_watch)), crcs(&sealed(from_phone)));
    // The first Hello on the link carries its CRC; a side that sent nothing sealed
    // before the peer's Hello arrived has no frame with one.
    assert!(
        from_watch[0] || from_phone[0],
        "{from_watch:?} {from_phone:?}"
    );
    for crcs in [&from_watch, &from_phone] {
        let with = crcs.iter().take_while(|c| **c).count();
        assert!(
            !crcs[with..].contains(&true),
            "none after one without: {crcs:?}"
        );
    }
    // Once the link is up, whatever is sealed goes without.
    let ch = pair
        .watch
        .open_channel(pair.now, crate::pair::PKG, Some("AA:BB"))
        .unwrap();
    let now = pair.now;
    let sent: Vec<Bytes> = core::iter::from_fn(|| pair.watch.poll_transmit(now)).collect();
    assert_eq!(crcs(&sent), vec![false; sent.len()]);
    for frame in sent {
        pair.phone.handle_frame(now, frame);
    }
    pair.drive();
    assert!(pair.watch.is_open(ch));
}

/// Forgets, on the watch's side, that the peer announced `left_out`, as if it were an
/// earlier release.
fn peer_without(pair: &mut Pair, left_out: Capabilities) {
    match &mut pair.watch.link {
        super::LinkState::Up(up) => up.capabilities = Capabilities(up.capabilities.0 & !left_out.0),
        _ => panic!("the link is up"),
    }
}

/// Whether each sealed frame of several segments has its tags last.
fn tags_last(frames: &[Bytes]) -> Vec<bool> {
    frames
        .iter()
        .map(|frame| interconnect_proto::FrameHeader::parse(frame, MAX_FRAME_LEN).unwrap())
        .filter(|header| header.payload_len > interconnect_proto::SEALED_SEGMENT_LEN)
        .map(|header| header.flags & interconnect_proto::FLAG_TAGS_LAST != 0)
        .collect()
}

/// A small message sealed in place and a large one of several segments sealed from a copy
/// both go without a CRC, the large one with its tags last, to a peer that reads them
/// so; with the CRC, or each tag after its segment, to a peer that does not (an earlier
/// release); either way they arrive. A bare frame altered on the way fails
/// authentication and drops the link.
#[test]
fn sealed_frames_keep_their_crc_for_a_peer_that_did_not_announce_no_crc() {
    let large = "y".repeat(SEALED_SEGMENT_PLAINTEXT + 1000);
    for (no_crc, last) in [(true, true), (false, true), (true, false), (false, false)] {
        let (mut pair, ch) = opened();
        if !no_crc {
            peer_without(&mut pair, Capabilities::NO_CRC);
        }
        if !last {
            peer_without(&mut pair, Capabilities::TAGS_LAST);
        }
        crate::pair::send(&mut pair.watch, ch, "small");
        let now = pair.now;
        let first: Vec<Bytes> = core::iter::from_fn(|| pair.watch.poll_transmit(now)).collect();
        crate::pair::send(&mut pair.watch, ch, &large);
        let second: Vec<Bytes> = core::iter::from_fn(|| pair.watch.poll_transmit(now)).collect();
        let sent = [first, second].concat();
        assert_eq!(crcs(&sent), vec![!no_crc; sent.len()]);
        assert_eq!(tags_last(&sent), vec![last]);
        for frame in sent {
            pair.phone.handle_frame(now, frame);
        }
        pair.collect();
        assert_eq!(
            messages(&pair.phone_events, ch),
            vec![Bytes::from_static(b"small"), Bytes::from(large.clone())]
        );
    }
    // Altered on the way: no CRC catches it, the AEAD does.
    let (mut pair, ch) = opened();
    crate::pair::send(&mut pair.watch, ch, "small");
    let now = pair.now;
    let frame = pair.watch.poll_transmit(now).unwrap();
    assert_eq!(crcs(core::slice::from_ref(&frame)), vec![false]);
    let mut altered = BytesMut::from(&frame[..]);
    let last = altered.len() - 1;
    altered[last] ^= 1;
    pair.phone.handle_frame(now, altered.freeze());
    pair.collect();
    assert!(messages(&pair.phone_events, ch).is_empty());
    assert!(link_dropped(&pair));
}

/// A file chunk of several segments, read with room, is sealed where it was read when
/// the peer reads tags last, and copied to interleave its tags when it does not; the
/// file arrives whole either way.
#[test]
fn file_chunks_of_several_segments_are_sealed_where_they_were_read_with_their_tags_last() {
    let data: Bytes = (0..1_000_000u32)
        .map(|i| (i * 7 + i / 4099) as u8)
        .collect();
    for last in [true, false] {
        let (mut pair, ch) = opened();
        pair.watch_files.with_room = true;
        if !last {
            peer_without(&mut pair, Capabilities::TAGS_LAST);
        }
        let transfer = pair.watch_sends_file(ch, "f.bin", data.clone()).unwrap();
        pair.advance(core::time::Duration::from_secs(600));
        assert_eq!(
            pair.phone_files.stored,
            [(ch, data.clone())],
            "stored whole"
        );
        assert!(pair.watch_heard_sent(transfer));
        // 1,000,000 bytes in chunks of 256 KiB frames: four of several segments.
        match last {
            true => assert!(pair.framed_in_place >= 4, "{}", pair.framed_in_place),
            false => assert_eq!(pair.framed_in_place, 0),
        }
    }
}
