//! What a batch from an authenticated peer that breaks the batch rules does: the frames
//! before the break are handled, then the link drops. Only a peer holding the session
//! keys can send one, so these reach into the watch's secure layer.

#[allow(unused_imports)]
use crate::prelude::*;

use bytes::{Bytes, BytesMut};
use interconnect_proto::{ContentType, Data, Exchange, Frame, MAX_FRAME_LEN};

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
        .seal(plain, &[], wire_max, &mut sealed)
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
        let large = "x".repeat(super::link::OWN_BUFFER);
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
