//! The channel's state machine alone: lifecycle, windows, sequence numbers.

use super::*;
use interconnect_proto::Frame;

fn channel() -> Channel {
    Channel::new(ChannelId(1), "pkg".into(), None)
}

fn message(id: u64) -> Outgoing {
    Outgoing {
        id: SendId(id),
        content_type: ContentType::Binary,
        exchange: Exchange::OneWay,
        payload: Bytes::from_static(b"m"),
    }
}

/// The sequence numbers `next_data` gives until the window (or the queue) stops it.
fn sent(ch: &mut Channel, window: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Ok(Some(data)) = ch.next_data(
        Instant::ZERO,
        Window {
            messages: window,
            bytes: usize::MAX,
        },
        |_| None,
    ) {
        seqs.push(data.seq);
    }
    seqs
}

/// What `append_data` writes is what `next_data`'s frames encode to, sequence
/// numbers, resends and refusals alike; a frame past the limit leaves the channel as
/// it was.
#[test]
fn appended_frames_are_the_frames_next_data_gives() {
    let window = Window {
        messages: 6,
        bytes: usize::MAX,
    };
    let exchanges = [
        Exchange::OneWay,
        Exchange::Request(300),
        Exchange::Reply(7),
        Exchange::State,
        Exchange::Durable,
    ];
    let (mut framed, mut appended) = (channel(), channel());
    for id in 0..9u64 {
        for ch in [&mut framed, &mut appended] {
            ch.enqueue(Outgoing {
                id: SendId(id),
                content_type: ContentType::Json,
                exchange: exchanges[id as usize % exchanges.len()],
                payload: Bytes::from(vec![id as u8; 40 * id as usize]),
            });
        }
    }
    // Message 4 is refused (too large for the link): failed, and the next one
    // takes its turn.
    let refuse = |m: &Outgoing| (m.id == SendId(4)).then_some(Code::TOO_LARGE);
    let max = 1024;
    let mut expected = BytesMut::new();
    let mut refused = Vec::new();
    loop {
        match framed.next_data(Instant::ZERO, window, refuse) {
            Ok(Some(data)) => Frame::Data(data)
                .encode_unsealed(max, &mut expected)
                .unwrap(),
            Ok(None) => break,
            Err((message, code)) => refused.push((message.id, code)),
        }
    }
    let mut got = BytesMut::new();
    let mut limit = 0;
    loop {
        let before = (
            appended.next_seq,
            appended.send_cursor,
            appended.pending.len(),
        );
        let mut run = Run {
            buf: &mut got,
            limit,
            whole: false,
        };
        match appended.append_data(Instant::ZERO, window, refuse, max, &mut run) {
            Ok(Appended::Frame) => {}
            Ok(Appended::Full) => {
                let after = (
                    appended.next_seq,
                    appended.send_cursor,
                    appended.pending.len(),
                );
                assert_eq!(before, after, "a frame that does not fit changes nothing");
                limit += 100;
            }
            Ok(Appended::Nothing) => break,
            Err((message, code)) => assert_eq!(refused.remove(0), (message.id, code)),
        }
    }
    assert!(refused.is_empty());
    assert_eq!(got, expected);
    assert_eq!(framed.in_flight.len(), 6, "the window stopped both");
    // Go-back-N: both resend from the first unacknowledged, with the same bytes.
    for ch in [&mut framed, &mut appended] {
        ch.on_ack(Instant::ZERO, 2).unwrap();
        ch.rewind();
    }
    let mut expected = BytesMut::new();
    while let Ok(Some(data)) = framed.next_data(Instant::ZERO, window, refuse) {
        Frame::Data(data)
            .encode_unsealed(max, &mut expected)
            .unwrap();
    }
    let mut got = BytesMut::new();
    let mut run = Run {
        buf: &mut got,
        limit: usize::MAX,
        whole: false,
    };
    while let Ok(Appended::Frame) =
        appended.append_data(Instant::ZERO, window, refuse, max, &mut run)
    {}
    assert_eq!(got, expected);
    assert_eq!(appended.last_sent_seq(), framed.last_sent_seq());
}

#[test]
fn opens_suspends_on_a_link_drop_and_closes_for_good() {
    let mut ch = channel();
    assert_eq!(ch.state(), ChannelState::Idle { last_error: None });
    ch.on_open_sent(Instant::from_secs(1), false);
    assert_eq!(ch.state(), ChannelState::Opening);
    assert_eq!(ch.open_sent, Some((Instant::from_secs(1), false)));
    // An open in flight when the link drops is not a channel that was open.
    assert!(!ch.on_link_down());
    assert_eq!(ch.state(), ChannelState::Idle { last_error: None });
    ch.on_open_sent(Instant::from_secs(2), false);
    ch.reopen = Some((Instant::from_secs(9), core::time::Duration::from_secs(1)));
    ch.on_opened();
    assert!(ch.is_open() && ch.was_open && ch.reopen.is_none());
    assert!(ch.on_link_down());
    assert_eq!(ch.state(), ChannelState::Suspended);
    ch.go_idle(Some(Code::BUSY));
    assert_eq!(
        ch.state(),
        ChannelState::Idle {
            last_error: Some(Code::BUSY)
        }
    );
    ch.reopen = Some((Instant::from_secs(9), core::time::Duration::from_secs(1)));
    ch.close();
    assert_eq!(ch.state(), ChannelState::Closed);
    assert!(ch.reopen.is_none());
}

#[test]
fn numbers_in_order_within_the_window_and_an_ack_completes_a_prefix() {
    let mut ch = channel();
    for id in 1..=5 {
        ch.enqueue(message(id));
    }
    assert_eq!(sent(&mut ch, 3), [1, 2, 3], "the window holds three");
    assert_eq!(ch.on_ack(Instant::ZERO, 2), Ok(vec![SendId(1), SendId(2)]));
    assert_eq!(sent(&mut ch, 3), [4, 5]);
    assert_eq!(ch.on_ack(Instant::ZERO, 6), Err(()), "never sent");
    assert_eq!(ch.queued(), 3);
    // A sequenced message cannot be withdrawn; a queued one can.
    assert!(!ch.cancel(SendId(3)));
    ch.enqueue(message(6));
    assert!(ch.cancel(SendId(6)));
}

#[test]
fn the_window_holds_messages_and_bytes_and_always_lets_one_through() {
    let big = |id| Outgoing {
        payload: Bytes::from(vec![0; 600]),
        ..message(id)
    };
    let window = Window {
        messages: 8,
        bytes: 1000,
    };
    let mut ch = channel();
    for id in 1..=4 {
        ch.enqueue(big(id));
    }
    let mut seqs = Vec::new();
    while let Ok(Some(data)) = ch.next_data(Instant::ZERO, window, |_| None) {
        seqs.push(data.seq);
    }
    assert_eq!(
        seqs,
        [1, 2],
        "1,200 bytes in flight: past 1,000, nothing more"
    );
    assert!(!ch.has_data(window));
    ch.on_ack(Instant::ZERO, 2).unwrap();
    assert!(ch.has_data(window), "the window emptied");
    let tiny = Window {
        messages: 8,
        bytes: 10,
    };
    assert!(
        matches!(ch.next_data(Instant::ZERO, tiny, |_| None), Ok(Some(_))),
        "the first message goes whatever its size"
    );
    assert!(!ch.has_data(tiny));
}

#[test]
fn a_link_drop_sends_the_unacknowledged_again_and_a_restart_renumbers_them() {
    let mut ch = channel();
    for id in 1..=3 {
        ch.enqueue(message(id));
    }
    ch.on_opened();
    assert_eq!(sent(&mut ch, 8), [1, 2, 3]);
    ch.on_ack(Instant::ZERO, 1).unwrap();
    ch.on_link_down();
    assert_eq!(sent(&mut ch, 8), [2, 3], "resent under the same numbers");
    // The peer resumes holding 2: only 3 is sent again.
    assert_eq!(ch.resume(Instant::ZERO, 2), [SendId(2)]);
    assert_eq!(sent(&mut ch, 8), [3]);
    let life = ch.life;
    ch.restart();
    assert_ne!(ch.life, life, "receipts of the old numbering are ignored");
    assert_eq!(sent(&mut ch, 8), [1], "message 3, numbered afresh");
    assert_eq!(ch.take_unacknowledged().len(), 1);
}

#[test]
fn received_numbers_are_delivered_once_in_order_and_far_ones_are_refused() {
    let mut ch = channel();
    assert_eq!(ch.on_data(1, 8), Received::Deliver);
    assert_eq!(ch.on_data(1, 8), Received::Duplicate);
    assert_eq!(ch.on_data(3, 8), Received::Gap);
    assert_eq!(ch.on_data(2, 8), Received::Deliver);
    assert_eq!(ch.on_data(11, 8), Received::Impossible);
    assert_eq!(ch.take_ack(), Some(2));
    assert_eq!(ch.take_ack(), None, "one ack, then none until more arrives");
}

#[test]
fn no_acknowledgement_repeats_the_last_unless_the_peer_resent() {
    let mut ch = channel().acknowledge_when_taken();
    ch.on_data(1, 8);
    assert_eq!(
        ch.take_ack(),
        None,
        "nothing taken: nothing new to acknowledge"
    );
    ch.on_taken(1);
    assert_eq!(ch.take_ack(), Some(1));
    ch.on_data(2, 8);
    assert_eq!(ch.take_ack(), None, "2 arrived, 1 is still the number");
    assert!(!ch.has_ack());
    // A repeat says the peer missed our acknowledgement: it is said again.
    ch.on_data(1, 8);
    assert_eq!(ch.take_ack(), Some(1));
    ch.on_data(4, 8);
    assert_eq!(ch.take_ack(), Some(1), "after a gap too");
}

#[test]
fn acknowledged_when_taken_and_held_while_the_app_does_not_take() {
    let mut ch = channel().acknowledge_when_taken();
    ch.on_data(1, 8);
    ch.on_data(2, 8);
    assert_eq!(ch.acknowledged(), 0, "received, not taken");
    ch.on_taken(1);
    assert_eq!(ch.take_ack(), Some(1));
    ch.on_taken(5);
    assert_eq!(ch.acknowledged(), 1, "a number not received is ignored");
    let mut ch = channel();
    ch.on_data(1, 8);
    ch.on_data(2, 8);
    ch.on_data(3, 8);
    ch.hold_acks(1);
    ch.on_data(4, 8);
    assert_eq!(
        ch.acknowledged(),
        1,
        "held at the message that filled the bound"
    );
    ch.hold_acks(3);
    assert_eq!(ch.acknowledged(), 1, "a later hold does not raise it");
    ch.take_ack();
    ch.release_acks();
    assert_eq!(ch.take_ack(), Some(4), "let go: everything, at once");
}
