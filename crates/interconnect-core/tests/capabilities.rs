//! What a session sends depends on its peer's Hello: a side that leaves a capability out
//! is never sent what needs it, and the app hears so at once instead of a timeout.

use std::time::Duration;

use bytes::Bytes;
use interconnect_core::sans_io::*;
use interconnect_core::*;
use interconnect_proto::*;

mod common;
use common::*;

#[test]
fn a_peer_that_takes_no_files_is_never_offered_one() {
    let watch = SessionConfig::new(Role::Watch, DeviceId([1; 16]), 11, noise(1));
    let mut phone = phone_config(22, &noise(2));
    phone.receives_files = false;
    let mut pair = Pair::with_configs(watch, phone);
    let ch = opened(&mut pair);
    // Refused here, at once: the phone's Hello left FILES out.
    assert_eq!(
        pair.watch.send_file(pair.now, ch, "a.bin", 10, 0),
        Err(CommandError::NoFiles)
    );
    // A file queued while no link is up fails once the peer is known, unoffered.
    pair.cut();
    let queued = pair.watch.send_file(pair.now, ch, "b.bin", 10, 0).unwrap();
    pair.connect();
    pair.advance(Duration::from_secs(1));
    assert!(pair.watch.is_open(ch));
    assert!(pair.watch_events.iter().any(|e| matches!(
        e,
        Event::FileFailed { transfer, code: Code::OTHERS, outgoing: true, .. } if *transfer == queued
    )));
    assert!(
        !pair
            .phone_events
            .iter()
            .any(|e| matches!(e, Event::FileOffered { .. })),
        "no offer reached the phone"
    );
}

/// Moves frames until both sides are quiet, the phone's `Hello` rewritten as an earlier
/// release sends it: without the capability `lacking`.
fn drive_to_a_peer_without(pair: &mut Pair, lacking: Capabilities) -> Vec<Frame> {
    let mut to_phone = Vec::new();
    loop {
        pair.collect();
        let mut quiet = true;
        while let Some(bytes) = pair.watch.poll_transmit(pair.now) {
            quiet = false;
            to_phone.push(Frame::decode(bytes.clone(), DEFAULT_MAX_FRAME_LEN).unwrap());
            pair.phone.handle_frame(pair.now, bytes);
        }
        while let Some(mut bytes) = pair.phone.poll_transmit(pair.now) {
            quiet = false;
            if let Ok(Frame::Hello(mut hello)) = Frame::decode(bytes.clone(), DEFAULT_MAX_FRAME_LEN)
            {
                hello.capabilities = Capabilities(hello.capabilities.0 & !lacking.0);
                bytes = frame_bytes(Frame::Hello(hello));
            }
            pair.watch.handle_frame(pair.now, bytes);
        }
        if quiet {
            return to_phone;
        }
    }
}

/// A data frame of `exchange` is refused at the call to a peer without `lacking`, and,
/// queued while the peer's bits were unknown, refused before it would leave; a message
/// still goes.
fn goes_only_to_a_peer_with(exchange: Exchange, lacking: Capabilities, error: CommandError) {
    let mut pair = Pair::plaintext();
    pair.watch.link_up(pair.now, pair.faults.mtu);
    pair.phone.link_up(pair.now, pair.faults.mtu);
    drive_to_a_peer_without(&mut pair, lacking);
    let ch = pair
        .watch
        .open_channel(pair.now, PKG, Some("AA:BB"))
        .unwrap();
    drive_to_a_peer_without(&mut pair, lacking);
    assert!(pair.watch.is_open(ch));
    let payload = Bytes::from_static(b"payload");
    let refused = pair
        .watch
        .send_as(SendId(7), ch, ContentType::Json, exchange, payload.clone());
    assert_eq!(refused, Err(error), "refused at the call");
    pair.watch.link_down(pair.now);
    pair.phone.link_down(pair.now);
    let queued = pair
        .watch
        .send_as(SendId(8), ch, ContentType::Json, exchange, payload);
    assert_eq!(queued, Ok(()));
    send(&mut pair.watch, ch, "a message");
    pair.watch.link_up(pair.now, pair.faults.mtu);
    pair.phone.link_up(pair.now, pair.faults.mtu);
    let sent = drive_to_a_peer_without(&mut pair, lacking);
    let of_exchange = sent
        .iter()
        .filter(|f| matches!(f, Frame::Data(d) if d.exchange == exchange));
    assert_eq!(of_exchange.count(), 0, "none on the wire");
    assert!(pair.watch_events.iter().any(|e| matches!(
        e,
        Event::SendFailed(c, SendId(8), Code::OTHERS) if *c == ch
    )));
    assert_eq!(pair.phone_messages(ch), [Bytes::from_static(b"a message")]);
}

#[test]
fn a_state_update_goes_only_to_a_peer_that_reads_them() {
    goes_only_to_a_peer_with(Exchange::State, Capabilities::STATE, CommandError::NoState);
}

#[test]
fn a_durable_message_goes_only_to_a_peer_that_reads_them() {
    goes_only_to_a_peer_with(
        Exchange::Durable,
        Capabilities::DURABLE,
        CommandError::NoDurable,
    );
}
