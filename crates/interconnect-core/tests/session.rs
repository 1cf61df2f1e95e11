//! Sans-IO tests: two sessions wired back to back with virtual time, no tasks, no sockets.

use std::time::Duration;

use bytes::Bytes;
use interconnect_core::sans_io::*;
use interconnect_core::*;
use interconnect_proto::*;

mod common;
use common::*;

#[test]
fn handshake_then_open_reports_version_and_open_events() {
    let mut pair = Pair::new();
    let ch = opened(&mut pair);
    assert!(pair.watch.is_link_up() && pair.phone.is_link_up());
    assert_eq!(pair.watch.app_version(ch), Some(7));
    assert!(pair.watch_events.contains(&Event::Channel(
        ch,
        ChannelEvent::Open {
            is_reconnected: false
        }
    )));
    assert!(pair.phone_events.contains(&Event::Channel(
        ch,
        ChannelEvent::Open {
            is_reconnected: false
        }
    )));
    assert_eq!(pair.phone.channel_package(ch), Some(PKG));
}

#[test]
fn messages_flow_both_ways_in_order_and_are_acknowledged() {
    let mut pair = Pair::new();
    let ch = opened(&mut pair);
    let ids: Vec<SendId> = (0..100)
        .map(|i| send(&mut pair.watch, ch, &i.to_string()))
        .collect();
    send(&mut pair.phone, ch, "hello watch");
    pair.drive();
    let got: Vec<String> = pair
        .phone_messages(ch)
        .iter()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .collect();
    assert_eq!(got, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(
        pair.watch_messages(ch),
        vec![Bytes::from_static(b"hello watch")]
    );
    let delivered: Vec<SendId> = pair
        .watch_events
        .iter()
        .filter_map(|e| match e {
            Event::Delivered(c, ids) if *c == ch => Some(ids.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(delivered, ids, "every send delivered, once, in order");
}

#[test]
fn refusals_carry_the_seed_codes() {
    let mut pair = Pair::new();
    pair.phone.register_app("com.detached", 1, None);
    pair.phone.set_app_attached("com.detached", false);
    pair.connect();
    let missing = pair
        .watch
        .open_channel(pair.now, "com.missing", None)
        .unwrap();
    let detached = pair
        .watch
        .open_channel(pair.now, "com.detached", None)
        .unwrap();
    let wrong_fp = pair
        .watch
        .open_channel(pair.now, PKG, Some("CC:DD"))
        .unwrap();
    pair.drive();
    assert_eq!(pair.watch.last_error(missing), Some(Code::APP_UNINSTALLED));
    assert_eq!(
        pair.watch.last_error(detached),
        Some(Code::APP_NOT_CONNECTED)
    );
    assert_eq!(
        pair.watch.last_error(wrong_fp),
        Some(Code::SIGNATURE_MISMATCH)
    );
    // A refused channel passes no message, and says why.
    assert_eq!(
        pair.watch.send(
            wrong_fp,
            ContentType::Json,
            Exchange::OneWay,
            Bytes::from_static(b"{}")
        ),
        Err(CommandError::Refused(Code::SIGNATURE_MISMATCH))
    );
    assert!(
        pair.phone_events
            .iter()
            .all(|e| !matches!(e, Event::Channel(..)))
    );
}

#[test]
fn version_query_answers_version_or_none() {
    let mut pair = Pair::new();
    pair.connect();
    let known = pair.watch.query_version(PKG).unwrap();
    let unknown = pair.watch.query_version("com.none").unwrap();
    pair.drive();
    assert!(pair.watch_events.contains(&Event::VersionReply {
        request: known,
        version: Some(7)
    }));
    assert!(pair.watch_events.contains(&Event::VersionReply {
        request: unknown,
        version: None
    }));
}

#[test]
fn link_cut_resumes_without_loss_or_duplicates() {
    let mut pair = Pair::new();
    let ch = opened(&mut pair);
    // Half of the messages arrive before the cut (their acknowledgements do not), the
    // other half are on the wire and lost with the link.
    for i in 0..5 {
        send(&mut pair.watch, ch, &format!("a{i}"));
    }
    while let Some(f) = pair.watch.poll_transmit(pair.now) {
        pair.phone.handle_frame(pair.now, f);
    }
    for i in 5..10 {
        send(&mut pair.watch, ch, &format!("a{i}"));
    }
    while pair.watch.poll_transmit(pair.now).is_some() {}
    pair.cut();
    assert!(!pair.watch.is_open(ch));
    assert!(pair.watch_events.contains(&Event::Channel(
        ch,
        ChannelEvent::Close {
            code: Code::CONNECTION_LOST,
            reason: "link lost".into(),
            by: ClosedBy::Link,
            reopens: true,
        }
    )));
    for i in 10..15 {
        send(&mut pair.watch, ch, &format!("a{i}"));
    }
    pair.connect();
    assert!(pair.watch.is_open(ch));
    assert!(pair.watch_events.contains(&Event::Channel(
        ch,
        ChannelEvent::Open {
            is_reconnected: true
        }
    )));
    assert!(pair.phone_events.contains(&Event::Channel(
        ch,
        ChannelEvent::Open {
            is_reconnected: true
        }
    )));
    let got: Vec<Bytes> = pair.phone_messages(ch);
    let want: Vec<Bytes> = (0..15).map(|i| Bytes::from(format!("a{i}"))).collect();
    assert_eq!(got, want);
    let delivered = pair
        .watch_events
        .iter()
        .map(|e| match e {
            Event::Delivered(_, ids) => ids.len(),
            _ => 0,
        })
        .sum::<usize>();
    assert_eq!(delivered, 15);
}

#[test]
fn lost_frames_are_resent_after_the_retransmit_timeout() {
    let mut pair = Pair::new();
    let ch = opened(&mut pair);
    send(&mut pair.watch, ch, "lost once");
    while pair.watch.poll_transmit(pair.now).is_some() {} // dropped on the floor
    pair.drive();
    assert!(pair.phone_messages(ch).is_empty());
    pair.advance(Duration::from_secs(3));
    assert_eq!(
        pair.phone_messages(ch),
        vec![Bytes::from_static(b"lost once")]
    );
}

#[test]
fn a_silent_peer_is_declared_lost_after_the_link_timeout() {
    // Plaintext, so the test can see the pings among the watch's frames.
    let mut pair = Pair::plaintext();
    opened(&mut pair);
    let config = SessionConfig::new(
        Role::Watch,
        DeviceId([1; 16]),
        11,
        Security::InsecurePlaintext,
    );
    let silent_since = pair.now;
    // The phone goes silent: nothing it sends arrives any more.
    let mut pings = Vec::new();
    let end = silent_since + Duration::from_secs(60);
    let dropped_at = loop {
        pair.now = pair.watch.poll_timeout().unwrap().min(end);
        pair.watch.handle_timeout(pair.now);
        while let Some(frame) = pair.watch.poll_transmit(pair.now) {
            if let Ok(Frame::Ping(_)) = Frame::decode(frame, DEFAULT_MAX_FRAME_LEN) {
                pings.push(pair.now - silent_since);
            }
        }
        pair.collect();
        if pair
            .watch_events
            .iter()
            .any(|e| matches!(e, Event::DropLink { code, .. } if *code == Code::TIMEOUT))
        {
            break pair.now - silent_since;
        }
        assert!(pair.now < end, "never declared lost");
    };
    assert_eq!(
        dropped_at, config.link_timeout,
        "lost at the deadline, not before"
    );
    assert!(
        pings.len() >= 2 && pings.iter().all(|t| *t < dropped_at),
        "pings every {:?} before the drop: {pings:?}",
        config.ping_interval
    );
}

#[test]
fn a_peer_that_restarted_gets_unacknowledged_messages_again() {
    let mut pair = Pair::new();
    let ch = opened(&mut pair);
    send(&mut pair.watch, ch, "before");
    while pair.watch.poll_transmit(pair.now).is_some() {}
    pair.cut();
    // The phone process restarts: new session, new token.
    pair.phone = Session::new(phone_config(99, &noise(2)), [0x57; 32]);
    pair.phone.register_app(PKG, 8, Some("AA:BB"));
    pair.phone_events.clear();
    pair.connect();
    assert!(pair.watch.is_open(ch));
    assert_eq!(pair.watch.app_version(ch), Some(8));
    assert_eq!(pair.phone_messages(ch), vec![Bytes::from_static(b"before")]);
    assert!(pair.watch_events.contains(&Event::Channel(
        ch,
        ChannelEvent::Open {
            is_reconnected: false
        }
    )));
}

#[test]
fn close_reaches_the_peer_with_code_and_reason() {
    let mut pair = Pair::new();
    let ch = opened(&mut pair);
    pair.watch.close(ch, Code::OTHERS, "bye");
    pair.drive();
    assert!(pair.phone_events.contains(&Event::Channel(
        ch,
        ChannelEvent::Close {
            code: Code::OTHERS,
            reason: "bye".into(),
            by: ClosedBy::Peer,
            reopens: false,
        }
    )));
    assert!(pair.phone.is_closed(ch));
    assert_eq!(
        pair.phone
            .send(ch, ContentType::Json, Exchange::OneWay, Bytes::new()),
        Err(CommandError::ChannelClosed)
    );
}

fn assert_dropped_with(pair: &mut Pair, code: Code) {
    pair.collect();
    assert!(
        pair.phone_events
            .iter()
            .any(|e| matches!(e, Event::DropLink { code: c, .. } if *c == code)),
        "expected a link drop with {code}, got {:?}",
        pair.phone_events
    );
}

#[test]
fn garbage_and_unknown_kinds_drop_the_link_with_a_code() {
    let mut pair = Pair::plaintext();
    opened(&mut pair);
    pair.phone.handle_frame(
        pair.now,
        Bytes::from_static(b"\x01\x7f\x00\x00\x00\x00garbage"),
    );
    assert_dropped_with(&mut pair, Code::PROTOCOL_ERROR);
    // The phone tells the watch why before dropping.
    let report = pair.phone.poll_transmit(pair.now).unwrap();
    assert!(matches!(
        Frame::decode(report, DEFAULT_MAX_FRAME_LEN),
        Ok(Frame::Error(_))
    ));
}

#[test]
fn an_oversize_frame_drops_the_link_with_too_large() {
    let mut pair = Pair::plaintext();
    opened(&mut pair);
    let head = Bytes::from_static(&[1, 0x13, 0, 0xff, 0xff, 0x7f]);
    pair.phone.handle_frame(pair.now, head);
    assert_dropped_with(&mut pair, Code::TOO_LARGE);
}

#[test]
fn a_message_before_the_handshake_is_a_protocol_error() {
    let mut pair = Pair::plaintext();
    pair.phone.link_up(pair.now, DEFAULT_MAX_FRAME_LEN);
    pair.phone
        .handle_frame(pair.now, frame_bytes(Frame::Ping(Ping { nonce: 1 })));
    assert_dropped_with(&mut pair, Code::PROTOCOL_ERROR);
}

#[test]
fn a_sequence_number_from_the_future_is_a_protocol_error_and_keeps_what_was_accepted() {
    let mut pair = Pair::plaintext();
    let ch = opened(&mut pair);
    send(&mut pair.watch, ch, "kept");
    pair.drive();
    pair.phone.handle_frame(
        pair.now,
        frame_bytes(Frame::Data(Data {
            channel: ch,
            seq: 1 << 40,
            content_type: ContentType::Binary,
            exchange: Exchange::OneWay,
            payload: Bytes::new(),
        })),
    );
    assert_dropped_with(&mut pair, Code::PROTOCOL_ERROR);
    assert_eq!(pair.phone_messages(ch), vec![Bytes::from_static(b"kept")]);
}

#[test]
fn an_ack_for_something_never_sent_is_a_protocol_error() {
    let mut pair = Pair::plaintext();
    let ch = opened(&mut pair);
    pair.phone.handle_frame(
        pair.now,
        frame_bytes(Frame::Ack(Ack {
            channel: ch,
            seq: 5,
        })),
    );
    assert_dropped_with(&mut pair, Code::PROTOCOL_ERROR);
}

#[test]
fn a_peer_with_the_same_role_or_no_common_version_is_refused() {
    let mut pair = Pair::plaintext();
    pair.phone.link_up(pair.now, DEFAULT_MAX_FRAME_LEN);
    let hello = |role, min, max| {
        frame_bytes(Frame::Hello(Hello {
            min_version: min,
            max_version: max,
            role,
            device_id: DeviceId([3; 16]),
            max_frame_len: 4096,
            capabilities: Capabilities::ALL,
            resume_token: 5,
        }))
    };
    pair.phone.handle_frame(pair.now, hello(Role::Watch, 2, 9));
    assert_dropped_with(&mut pair, Code::VERSION_MISMATCH);
    pair.phone_events.clear();
    pair.phone.link_up(pair.now, DEFAULT_MAX_FRAME_LEN);
    pair.phone.handle_frame(pair.now, hello(Role::Phone, 1, 1));
    assert_dropped_with(&mut pair, Code::PROTOCOL_ERROR);
}

#[test]
fn a_handshake_that_stalls_times_out() {
    let mut pair = Pair::new();
    pair.watch.link_up(pair.now, DEFAULT_MAX_FRAME_LEN);
    // Before the keys exist, each step of the peer's may take 2 s (the whole, 10 s).
    let deadline = pair.watch.poll_timeout().unwrap();
    assert_eq!(deadline, pair.now + Duration::from_secs(2));
    pair.watch.handle_timeout(deadline);
    pair.collect();
    assert!(
        pair.watch_events
            .iter()
            .any(|e| matches!(e, Event::DropLink { code, .. } if *code == Code::TIMEOUT))
    );
}

#[test]
fn a_watch_that_opens_channels_without_end_cannot_grow_the_phones_table() {
    let mut pair = Pair::plaintext();
    opened(&mut pair);
    for id in 2..20_002u32 {
        let open = Frame::Open(Open {
            channel: ChannelId(id),
            package: PKG.into(),
            signature: None,
            resume: false,
            received_seq: 0,
        });
        pair.phone.handle_frame(pair.now, frame_bytes(open));
        while pair.phone.poll_transmit(pair.now).is_some() {}
        while pair.phone.poll_event().is_some() {}
    }
    // One open channel for the package, and the last closed ones kept to answer a peer
    // that missed their close.
    assert!(
        pair.phone.channel_count() <= 17,
        "{} channels held",
        pair.phone.channel_count()
    );
    assert!(pair.phone.is_open(ChannelId(20_001)));
}

/// Sends three messages from the watch whose frames never reach the phone, then lets
/// ten retransmission timeouts pass on an otherwise working link.
fn three_unacknowledged_messages(pair: &mut Pair) -> ChannelId {
    let ch = opened(pair);
    for text in ["a", "b", "c"] {
        send(&mut pair.watch, ch, text);
    }
    while pair.watch.poll_transmit(pair.now).is_some() {}
    pair.advance(Duration::from_secs(10));
    pair.collect();
    ch
}

#[test]
fn on_a_lossy_link_unacknowledged_messages_are_resent() {
    let mut pair = Pair::plaintext();
    let ch = three_unacknowledged_messages(&mut pair);
    assert_eq!(pair.phone_messages(ch).len(), 3, "resent by the timer");
}

#[test]
fn on_a_reliable_link_nothing_is_resent_until_the_link_is_replaced() {
    let mut pair = Pair::reliable();
    let ch = three_unacknowledged_messages(&mut pair);
    assert!(
        pair.phone_messages(ch).is_empty(),
        "no resend while the link is up"
    );
    // A new link: the phone reports what it has, the rest is sent again.
    pair.cut();
    pair.connect();
    pair.collect();
    assert_eq!(
        pair.phone_messages(ch),
        ["a", "b", "c"].map(|t| Bytes::from_static(t.as_bytes()))
    );
}

/// On a stream link a run of plaintext frames leaves joined in one buffer, each frame
/// whole with its CRC, the bytes of the same frames sent one by one; the peer that cuts
/// it by the headers takes every message, in order.
#[test]
fn on_a_stream_link_a_run_of_plaintext_frames_leaves_in_one_buffer() {
    let (mut stream, mut single) = (Pair::stream(), Pair::reliable());
    let (ch, ch1) = (opened(&mut stream), opened(&mut single));
    let texts: Vec<String> = (0..300)
        .map(|i| format!("message {i} {:>80}", ""))
        .collect();
    for text in &texts {
        send(&mut stream.watch, ch, text);
        send(&mut single.watch, ch1, text);
    }
    let joined: Vec<Bytes> =
        std::iter::from_fn(|| stream.watch.poll_transmit(stream.now)).collect();
    let one_by_one: Vec<Bytes> =
        std::iter::from_fn(|| single.watch.poll_transmit(single.now)).collect();
    assert_eq!(one_by_one.len(), 300);
    assert!(
        joined.len() > 1 && joined.len() < 10,
        "{} buffers",
        joined.len()
    );
    assert!(joined.iter().all(|b| b.len() <= 16 * 1024));
    let cut: Vec<Bytes> = joined
        .iter()
        .flat_map(|b| cut_stream(b.clone(), true))
        .collect();
    assert_eq!(cut, one_by_one, "the same frames, whole");
    for frame in cut {
        stream.phone.handle_frame(stream.now, frame);
    }
    stream.drive();
    let got: Vec<Bytes> = texts.iter().map(|t| Bytes::from(t.clone())).collect();
    assert_eq!(stream.phone_messages(ch), got);
}

#[test]
fn a_gap_on_a_reliable_link_drops_it_and_the_next_link_fills_it() {
    let mut pair = Pair::reliable();
    let ch = opened(&mut pair);
    send(&mut pair.watch, ch, "first");
    send(&mut pair.watch, ch, "second");
    let frames: Vec<Bytes> = std::iter::from_fn(|| pair.watch.poll_transmit(pair.now)).collect();
    assert_eq!(frames.len(), 2);
    // The first is lost (as an attacker on the wire could make it): a link that does not
    // lose frames lost one, so it is broken.
    pair.phone.handle_frame(pair.now, frames[1].clone());
    pair.collect();
    assert!(pair.phone_messages(ch).is_empty());
    assert!(
        pair.phone_events
            .iter()
            .any(|e| matches!(e, Event::DropLink { code, .. } if *code == Code::PROTOCOL_ERROR)),
        "the link is dropped"
    );
    pair.cut();
    pair.connect();
    pair.collect();
    assert_eq!(
        pair.phone_messages(ch),
        ["first", "second"].map(|t| Bytes::from_static(t.as_bytes()))
    );
}

#[test]
fn a_watch_tries_to_reopen_a_channel_the_phone_closed_after_1_s_doubling_to_60_s() {
    let mut pair = Pair::plaintext();
    let ch = opened(&mut pair);
    // The phone app closes for good: every open is refused with 1002.
    pair.phone.set_app_attached(PKG, false);
    pair.phone.close(ch, Code::OTHERS, "bye");
    pair.drive();
    let start = pair.now;
    let mut opens = Vec::new();
    // Step through the watch's deadlines by hand, noting each Open it sends.
    while pair.now < start + Duration::from_secs(300) {
        let due = [pair.watch.poll_timeout(), pair.phone.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .expect("a deadline");
        pair.now = due;
        pair.watch.handle_timeout(pair.now);
        pair.phone.handle_timeout(pair.now);
        while let Some(frame) = pair.watch.poll_transmit(pair.now) {
            if let Ok(Frame::Open(_)) = Frame::decode(frame.clone(), DEFAULT_MAX_FRAME_LEN) {
                opens.push((pair.now - start).as_secs());
            }
            pair.phone.handle_frame(pair.now, frame);
        }
        while let Some(frame) = pair.phone.poll_transmit(pair.now) {
            pair.watch.handle_frame(pair.now, frame);
        }
    }
    assert_eq!(
        opens,
        [1, 3, 7, 15, 31, 63, 123, 183, 243],
        "backoff with a cap"
    );
    // The app heard once that the channel closed and reopens, and once why.
    pair.collect();
    let closes = pair
        .watch_events
        .iter()
        .filter(|e| matches!(e, Event::Channel(c, ChannelEvent::Close { .. }) if *c == ch))
        .count();
    assert_eq!(closes, 1);
    assert_eq!(pair.watch.last_error(ch), Some(Code::APP_NOT_CONNECTED));
}

#[test]
fn a_repeated_open_gets_the_accept_the_first_got() {
    let mut pair = Pair::plaintext();
    pair.connect();
    let open = Frame::Open(Open {
        channel: ChannelId(5),
        package: PKG.into(),
        signature: None,
        resume: false,
        received_seq: 0,
    });
    let mut accepts = Vec::new();
    for _ in 0..2 {
        pair.phone.handle_frame(pair.now, frame_bytes(open.clone()));
        while let Some(frame) = pair.phone.poll_transmit(pair.now) {
            if let Ok(Frame::Accept(accept)) = Frame::decode(frame, DEFAULT_MAX_FRAME_LEN) {
                accepts.push(accept);
            }
        }
    }
    assert_eq!(accepts.len(), 2);
    assert_eq!(accepts[0], accepts[1]);
    assert!(!accepts[0].resumed);
}

#[test]
fn a_chunk_far_ahead_is_measured_against_the_protocols_bound_not_the_receivers_window() {
    let mut phone = SessionConfig::new(
        Role::Phone,
        DeviceId([2; 16]),
        22,
        Security::InsecurePlaintext,
    );
    // A receiver with a small window of its own: the sender's may be larger.
    phone.file_window = 1 << 20;
    let watch = SessionConfig::new(
        Role::Watch,
        DeviceId([1; 16]),
        11,
        Security::InsecurePlaintext,
    );
    let mut pair = Pair::with_configs(watch, phone);
    pair.connect();
    let ch = pair
        .watch
        .open_channel(pair.now, PKG, Some("AA:BB"))
        .unwrap();
    pair.drive();
    let transfer = TransferId(1);
    phone_accepts(&mut pair, ch, transfer, 64 << 20);
    let chunk_at = |offset: u64| chunk_bytes(ch, transfer, offset, Bytes::from_static(b"x"));
    let cancels = |pair: &mut Pair| {
        let mut codes = Vec::new();
        while let Some(frame) = pair.phone.poll_transmit(pair.now) {
            if let Ok(Frame::FileCancel(c)) = Frame::decode(frame, DEFAULT_MAX_FRAME_LEN) {
                codes.push(c.code);
            }
        }
        codes
    };
    // 8 MiB ahead: within 16 MiB, a loss (dropped), whatever this side's window.
    pair.phone.handle_frame(pair.now, chunk_at(8 << 20));
    assert!(cancels(&mut pair).is_empty());
    // More than 16 MiB ahead: the transfer is cancelled with 4000; the link stays.
    pair.phone.handle_frame(pair.now, chunk_at((16 << 20) + 1));
    assert_eq!(cancels(&mut pair), vec![Code::PROTOCOL_ERROR]);
    assert!(pair.phone.is_link_up() && !pair.phone.is_dropping());
}

#[test]
fn transfer_ids_keep_their_parity_and_name_one_file() {
    let offer = |transfer: u32, size: u64| offer_bytes(ChannelId(1), TransferId(transfer), size);
    let opened_pair = || {
        let mut pair = Pair::plaintext();
        pair.connect();
        let ch = pair
            .watch
            .open_channel(pair.now, PKG, Some("AA:BB"))
            .unwrap();
        pair.drive();
        assert_eq!(ch, ChannelId(1));
        pair
    };
    // The watch's ids are odd: an even one from the watch is a violation (4000).
    let mut pair = opened_pair();
    pair.phone.handle_frame(pair.now, offer(2, 10));
    assert!(pair.phone.is_dropping());
    // The same id again for a file of another size: refused, the held one goes on.
    let mut pair = opened_pair();
    pair.phone.handle_frame(pair.now, offer(3, 10));
    pair.phone.accept_file(ChannelId(1), TransferId(3), 0);
    while pair.phone.poll_transmit(pair.now).is_some() {}
    pair.phone.handle_frame(pair.now, offer(3, 99));
    let mut out = Vec::new();
    while let Some(frame) = pair.phone.poll_transmit(pair.now) {
        out.push(Frame::decode(frame, DEFAULT_MAX_FRAME_LEN).unwrap());
    }
    assert!(
        matches!(&out[..], [Frame::FileCancel(c)] if c.code == Code::PROTOCOL_ERROR),
        "{out:?}"
    );
    // The same offer again is answered with where the transfer stands.
    pair.phone.handle_frame(pair.now, offer(3, 10));
    let answer = pair.phone.poll_transmit(pair.now).unwrap();
    assert!(matches!(
        Frame::decode(answer, DEFAULT_MAX_FRAME_LEN),
        Ok(Frame::FileAccept(FileAccept { offset: 0, .. }))
    ));
}

#[test]
fn small_frames_queued_together_share_one_sealed_frame_and_arrive_in_order() {
    let mut pair = Pair::new();
    let ch = opened(&mut pair);
    let now = pair.now;
    let mut texts: Vec<String> = (0..10).map(|i| format!("small {i}")).collect();
    for text in &texts {
        send(&mut pair.watch, ch, text);
    }
    let batch: Vec<Bytes> = std::iter::from_fn(|| pair.watch.poll_transmit(now)).collect();
    assert_eq!(batch.len(), 1, "ten small messages, one sealed frame");
    // A message too large to share a batch goes alone, between two batches.
    let big = "B".repeat(20_000);
    for text in ["before", big.as_str(), "after 1", "after 2"] {
        send(&mut pair.watch, ch, text);
        texts.push(text.into());
    }
    let rest: Vec<Bytes> = std::iter::from_fn(|| pair.watch.poll_transmit(now)).collect();
    assert_eq!(rest.len(), 3, "[before] [big] [after 1, after 2]");
    assert!(rest[1].len() > 20_000 && rest[0].len() < 100 && rest[2].len() < 100);
    for frame in batch.into_iter().chain(rest) {
        assert!(matches!(
            Frame::decode(frame.clone(), MAX_FRAME_LEN),
            Ok(Frame::Sealed(_))
        ));
        pair.phone.handle_frame(now, frame);
    }
    pair.drive();
    let got: Vec<Bytes> = pair.phone_messages(ch);
    let want: Vec<Bytes> = texts.iter().map(|t| Bytes::from(t.clone())).collect();
    assert_eq!(got, want);
}
