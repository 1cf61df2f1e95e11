//! What a send may hold and how many may wait: the largest message each way, the
//! queue's bound, and a run of sends refused one by one.

use bytes::Bytes;
use interconnect_core::sans_io::*;
use interconnect_core::*;
use interconnect_proto::*;

mod common;
use common::*;

#[test]
fn a_message_too_large_for_the_link_is_refused_at_send() {
    let mut pair = Pair::new();
    let ch = opened(&mut pair);
    let max = pair.watch.limits().max_message_len();
    assert!(
        pair.watch
            .send(
                ch,
                ContentType::Binary,
                Exchange::OneWay,
                Bytes::from(vec![0; max])
            )
            .is_ok()
    );
    assert_eq!(
        pair.watch.send(
            ch,
            ContentType::Binary,
            Exchange::OneWay,
            Bytes::from(vec![0; max + 1])
        ),
        Err(CommandError::TooLarge { len: max + 1, max })
    );
    pair.drive();
    assert_eq!(pair.phone_messages(ch).len(), 1);
}

/// A run of sends is queued as each would be alone: the refused ones fail with the
/// error `send_as` gives them, the rest go out in order.
#[test]
fn a_run_of_sends_refuses_each_as_alone_and_keeps_the_order_of_the_rest() {
    let config = |role, id: u8| {
        SessionConfig::new(role, DeviceId([id; 16]), 11, Security::InsecurePlaintext)
    };
    let mut watch = config(Role::Watch, 1);
    watch.max_queued = 4;
    let mut pair = Pair::with_configs(watch, config(Role::Phone, 2));
    let ch = opened(&mut pair);
    let max = pair.watch.limits().max_message_len();
    let outgoing = |id: u64, len: usize| Outgoing {
        id: SendId(id),
        content_type: ContentType::Binary,
        exchange: Exchange::OneWay,
        payload: Bytes::from(vec![id as u8; len]),
    };
    let run = vec![
        outgoing(1, 10),
        outgoing(2, max + 1),
        outgoing(3, 20),
        outgoing(4, 30),
        outgoing(5, 40),
        outgoing(6, 50),
    ];
    let mut refused = Vec::new();
    pair.watch
        .send_run(ch, run, |id, error| refused.push((id, error)));
    assert_eq!(
        refused,
        [
            (SendId(2), CommandError::TooLarge { len: max + 1, max }),
            (SendId(6), CommandError::QueueFull(4)),
        ]
    );
    let mut refused = Vec::new();
    pair.watch
        .send_run(ChannelId(999), vec![outgoing(7, 1)], |id, error| {
            refused.push((id, error))
        });
    assert_eq!(refused, [(SendId(7), CommandError::ChannelClosed)]);
    pair.drive();
    let lens: Vec<usize> = pair.phone_messages(ch).iter().map(|m| m.len()).collect();
    assert_eq!(lens, [10, 20, 30, 40]);
}

#[test]
fn the_largest_message_fits_when_the_two_links_differ_in_size() {
    // The watch's link carries 70,000-byte frames, the phone's 1 MiB; both would take
    // 1 MiB. Sealing must not push the watch's largest message past its own link.
    let config = |role, id: u8, key| {
        let mut c = SessionConfig::new(role, DeviceId([id; 16]), u64::from(id), noise(key));
        c.max_frame_len = 1 << 20;
        c
    };
    let mut pair = Pair::new();
    pair.watch = Session::new(config(Role::Watch, 1, 1), [0x58; 32]);
    pair.phone = Session::new(config(Role::Phone, 2, 2), [0x59; 32]);
    pair.phone.register_app(PKG, 7, Some("AA:BB"));
    pair.watch.link_up(pair.now, 70_000);
    pair.phone.link_up(pair.now, 1 << 20);
    pair.drive();
    let ch = open_channel(&mut pair);
    let max = pair.watch.limits().max_message_len();
    assert!(max < 70_000, "limited by the watch's link: {max}");
    let payload = Bytes::from(vec![5; max]);
    pair.watch
        .send(ch, ContentType::Binary, Exchange::OneWay, payload.clone())
        .unwrap();
    pair.drive();
    assert_eq!(pair.phone_messages(ch), vec![payload]);
}

#[test]
fn a_message_over_the_largest_is_refused_though_its_frame_fits() {
    // The largest message is the same number both ways: a peer whose small header lets
    // a longer payload fit the frame still gets 4001, so nothing is acknowledged that
    // this side could not have sent (or echoed) itself.
    let mut pair = Pair::plaintext();
    let ch = opened(&mut pair);
    let max = interconnect_proto::Limits::new(DEFAULT_MAX_FRAME_LEN).max_message_len();
    // Encoded as a peer would whose limit is computed from its actual sub-header: the
    // frame stays within the negotiated limit.
    let data = |len: usize, seq: u64| {
        let frame = Frame::Data(interconnect_proto::Data {
            channel: ch,
            seq,
            content_type: interconnect_proto::ContentType::Binary,
            exchange: interconnect_proto::Exchange::OneWay,
            payload: Bytes::from(vec![1; len]),
        })
        .to_bytes(DEFAULT_MAX_FRAME_LEN + DATA_HEADER_MAX_LEN)
        .unwrap();
        assert!(frame.len() <= DEFAULT_MAX_FRAME_LEN);
        frame
    };
    pair.phone.handle_frame(pair.now, data(max, 1));
    pair.collect();
    assert_eq!(pair.phone_messages(ch).len(), 1, "the largest is delivered");
    pair.phone.handle_frame(pair.now, data(max + 1, 2));
    pair.collect();
    assert_eq!(pair.phone_messages(ch).len(), 1, "one byte more is not");
    let dropped = pair
        .phone_events
        .iter()
        .any(|e| matches!(e, Event::DropLink { code, .. } if *code == Code::TOO_LARGE));
    assert!(dropped, "the link is dropped with 4001");
}
