//! Attacks on an established secure link, sans-IO: the test is the attacker on the wire
//! between two sessions. Each checks that nothing leaves in the clear and that nothing an
//! attacker forged reaches an app.

use bytes::{Bytes, BytesMut};
use interconnect_core::sans_io::*;
use interconnect_core::*;
use interconnect_proto::*;

mod common;
use common::*;

/// The phone's id for the channel the watch opened.
fn phone_channel(pair: &Pair) -> ChannelId {
    pair.phone_events
        .iter()
        .find_map(|e| match e {
            Event::Channel(c, ChannelEvent::Open { .. }) => Some(*c),
            _ => None,
        })
        .expect("the phone saw the channel open")
}

/// Every frame `session` has to send: each must be sealed, and none may hold `secret`.
fn assert_all_sealed(session: &mut Session, now: Instant, secret: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Some(frame) = session.poll_transmit(now) {
        match Frame::decode(frame.clone(), MAX_FRAME_LEN) {
            Ok(Frame::Sealed(_)) => {}
            other => panic!("a frame left unsealed: {other:?}"),
        }
        assert!(
            !frame.windows(secret.len()).any(|w| w == secret),
            "the secret crossed the wire in the clear"
        );
        out.push(frame);
    }
    out
}

fn first_refusal(events: &[Event]) -> Option<SecurityError> {
    events.iter().find_map(|e| match e {
        Event::Refused(error) => Some(error.clone()),
        _ => None,
    })
}

fn dropped(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::DropLink { .. }))
}

/// A forged frame of each kind an attacker can send in the clear.
fn forged_frames(channel: ChannelId) -> Vec<Frame> {
    let mut frames: Vec<Frame> = (0..=255u8)
        .map(|step| {
            Frame::Handshake(Handshake {
                step,
                offered: 3,
                suite: 2,
                rekey_interval: 512,
                message: Bytes::from(vec![step; 32]),
            })
        })
        .collect();
    frames.extend([
        Frame::Error(ErrorReport {
            channel: None,
            code: Code::UNTRUSTED_PEER,
            message: "\u{1b}[31mforged".into(),
        }),
        Frame::Ping(Ping { nonce: 1 }),
        Frame::Data(Data {
            channel,
            seq: 1,
            content_type: ContentType::Binary,
            exchange: Exchange::OneWay,
            payload: Bytes::from_static(b"FORGED"),
        }),
        Frame::Close(Close {
            channel,
            code: Code::OTHERS,
            reason: "forged".into(),
        }),
    ]);
    frames
}

#[test]
fn a_plaintext_frame_of_any_kind_on_an_established_link_changes_nothing() {
    for victim_is_watch in [true, false] {
        for (i, forged) in forged_frames(ChannelId(1)).into_iter().enumerate() {
            let mut pair = Pair::new();
            let ch = opened(&mut pair);
            let phone_ch = phone_channel(&pair);
            let secret = format!("SECRET-{i:04}");
            let now = pair.now;
            let (victim, victim_ch) = if victim_is_watch {
                (&mut pair.watch, ch)
            } else {
                (&mut pair.phone, phone_ch)
            };
            send(victim, victim_ch, &secret);
            victim.handle_frame(now, frame_bytes(forged.clone()));
            let sent = assert_all_sealed(victim, now, secret.as_bytes());
            let to = if victim_is_watch {
                &mut pair.to_phone
            } else {
                &mut pair.to_watch
            };
            to.extend(sent);
            pair.drive();
            let (victim_events, got) = if victim_is_watch {
                (&pair.watch_events, pair.phone_messages(phone_ch))
            } else {
                (&pair.phone_events, pair.watch_messages(ch))
            };
            assert!(
                !dropped(victim_events),
                "{forged:?} dropped the link: {victim_events:?}"
            );
            assert_eq!(got, vec![Bytes::from(secret)], "after {forged:?}");
            assert!(pair.watch.is_link_up() && pair.phone.is_link_up());
        }
    }
}

#[test]
fn a_link_dropped_for_a_bad_sealed_frame_sends_only_the_sealed_report() {
    let mut pair = Pair::new();
    let ch = opened(&mut pair);
    for i in 0..20 {
        send(&mut pair.watch, ch, &format!("SECRET-{i}"));
    }
    // A sealed frame that fails authentication: the watch drops the link.
    let forged = Frame::Sealed(Sealed {
        nonce: 1 << 20,
        ciphertext: Bytes::from(vec![0u8; 64]),
        layout: Layout::Interleaved,
    });
    let now = pair.now;
    pair.watch.handle_frame(now, frame_bytes(forged));
    assert!(pair.watch.is_dropping());
    let sent = assert_all_sealed(&mut pair.watch, now, b"SECRET");
    assert_eq!(sent.len(), 1, "the error report alone, no queued message");
    // What the report says is 4000, a broken link, which a peer following WIRE.md does
    // not take as final (anyone on the path can send such a frame).
    pair.collect();
    assert!(pair.watch_events.iter().any(|e| matches!(
        e,
        Event::DropLink { code, .. } if *code == Code::PROTOCOL_ERROR
    )));
    // Sealed refusals from the authenticated peer: only policy ends the attempts.
    let sealed = |code| SecurityError::RefusedByPeer {
        code,
        message: String::new(),
        authenticated: true,
    };
    assert!(!sealed(Code::PROTOCOL_ERROR).is_lasting());
    assert!(!sealed(Code::BUSY).is_lasting());
    assert!(sealed(Code::UNTRUSTED_PEER).is_lasting());
}

/// A plaintext of `len` bytes that decodes, unsealed, as a `Data` frame on `channel`
/// carrying `payload`: what an attacker wants a cut-out segment to open as.
fn inner_data_frame(channel: ChannelId, seq: u64, len: usize) -> Bytes {
    let frame = |n: usize| {
        Frame::Data(Data {
            channel,
            seq,
            content_type: ContentType::Binary,
            exchange: Exchange::OneWay,
            payload: Bytes::from(vec![b'I'; n]),
        })
    };
    for n in (len.saturating_sub(64)..len).rev() {
        let mut out = BytesMut::new();
        frame(n).encode_unsealed(MAX_FRAME_LEN, &mut out).unwrap();
        if out.len() == len {
            return out.freeze();
        }
    }
    panic!("no Data frame of {len} bytes");
}

#[test]
fn a_segment_cut_out_of_a_sealed_frame_never_opens_as_a_frame_of_its_own() {
    let mut pair = Pair::new();
    let ch = opened(&mut pair);
    let phone_ch = phone_channel(&pair);
    // The message holds, at the place where the second segment starts, the bytes of a
    // whole inner frame: content the attacker chose (say, a file the user was sent).
    let injected = inner_data_frame(phone_ch, 1, SEALED_SEGMENT_PLAINTEXT);
    let probe = Frame::Data(Data {
        channel: ch,
        seq: 1,
        content_type: ContentType::Binary,
        exchange: Exchange::OneWay,
        payload: Bytes::new(),
    });
    let mut head = BytesMut::new();
    let mut payload = Vec::new();
    // The head's length depends on the payload's (a varint): settle it.
    for _ in 0..3 {
        head.clear();
        let Frame::Data(mut d) = probe.clone() else {
            unreachable!()
        };
        d.payload = Bytes::from(payload.clone());
        let _ = Frame::Data(d)
            .encode_unsealed_head(MAX_FRAME_LEN, &mut head)
            .unwrap();
        payload = vec![b'.'; SEALED_SEGMENT_PLAINTEXT - head.len()];
        payload.extend_from_slice(&injected);
        payload.extend_from_slice(&[b'.'; 100]);
    }
    pair.watch
        .send(
            ch,
            ContentType::Binary,
            Exchange::OneWay,
            Bytes::from(payload),
        )
        .unwrap();
    let now = pair.now;
    let sealed = std::iter::from_fn(|| pair.watch.poll_transmit(now))
        .filter_map(|f| match Frame::decode(f, MAX_FRAME_LEN) {
            Ok(Frame::Sealed(s)) if s.ciphertext.len() > SEALED_SEGMENT_LEN => Some(s),
            _ => None,
        })
        .next()
        .expect("the message went out as a multi-segment sealed frame");
    // The second segment alone, under its own nonce.
    let cut = Frame::Sealed(Sealed {
        nonce: sealed.nonce + 1,
        ciphertext: sealed
            .ciphertext
            .slice(SEALED_SEGMENT_LEN..2 * SEALED_SEGMENT_LEN),
        layout: sealed.layout,
    });
    pair.phone.handle_frame(now, frame_bytes(cut));
    pair.collect();
    assert!(
        pair.phone_messages(phone_ch).is_empty(),
        "a cut-out segment was delivered as a message"
    );
    assert!(
        pair.phone_events
            .iter()
            .any(|e| matches!(e, Event::Refused(SecurityError::BadSealedFrame))),
        "{:?}",
        pair.phone_events
    );
}

#[test]
fn a_refusal_before_the_keys_names_no_fingerprint_and_is_not_lasting() {
    // The phone pins another watch: this one is refused.
    let pinned = DeviceIdentity::from_private_key([9; 32]).fingerprint();
    let phone = Security::Noise(
        NoiseConfig::new(DeviceIdentity::from_private_key([2; 32]))
            .with_trust(TrustPolicy::Pinned(vec![pinned])),
    );
    let watch = Security::Noise(NoiseConfig::new(DeviceIdentity::from_private_key([1; 32])));
    let mut pair = Pair::with_security(watch, phone);
    pair.connect();
    let refused = first_refusal(&pair.watch_events).expect("the watch was refused");
    assert!(
        !refused.to_string().contains(&pinned.to_string()),
        "{refused}"
    );
    assert!(refused.is_lasting(), "a sealed refusal is authenticated");

    // A refusal in the clear before any key: anyone could have sent it.
    let mut pair = Pair::new();
    pair.watch.link_up(pair.now, DEFAULT_MAX_FRAME_LEN);
    let forged = Frame::Error(ErrorReport {
        channel: None,
        code: Code::UNTRUSTED_PEER,
        message: "\u{1b}]0;owned\u{7}".into(),
    });
    pair.watch.handle_frame(pair.now, frame_bytes(forged));
    pair.collect();
    let refused = first_refusal(&pair.watch_events).expect("refused");
    assert!(!refused.is_lasting());
    assert!(
        !refused.to_string().chars().any(char::is_control),
        "{refused}"
    );
}

#[test]
fn a_link_too_small_for_sealed_frames_is_refused_with_a_typed_error_and_the_floor_works() {
    let mut pair = Pair::new();
    pair.watch.link_up(pair.now, 1040);
    pair.collect();
    let needed = pair
        .watch_events
        .iter()
        .find_map(|e| match e {
            Event::Refused(SecurityError::LinkTooSmall { link: 1040, needed }) => Some(*needed),
            _ => None,
        })
        .expect("refused with LinkTooSmall");
    assert!(pair.watch.is_dropping());
    assert_eq!(
        needed, 1056,
        "1,024 bytes sealed: 10 header and CRC, 10 nonce, 16 tag, less the inner CRC"
    );

    // A link of exactly that size carries the largest message.
    let mut pair = Pair::new();
    pair.watch.link_up(pair.now, needed);
    pair.phone.link_up(pair.now, needed);
    pair.drive();
    let ch = open_channel(&mut pair);
    let max = pair.watch.limits().max_message_len();
    pair.watch
        .send(
            ch,
            ContentType::Binary,
            Exchange::OneWay,
            Bytes::from(vec![1u8; max]),
        )
        .unwrap();
    pair.drive();
    let phone_ch = phone_channel(&pair);
    assert_eq!(
        pair.phone_messages(phone_ch),
        vec![Bytes::from(vec![1u8; max])]
    );
}

fn refusals(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Refused(SecurityError::PairingRejected { .. })))
        .count()
}

fn prompts(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::PairingRequest { .. }))
        .count()
}

#[test]
fn a_peer_whose_pairing_was_rejected_cannot_prompt_again_for_a_minute() {
    let pairing = |key: u8| {
        Security::Noise(
            NoiseConfig::new(DeviceIdentity::from_private_key([key; 32]))
                .with_trust(TrustPolicy::Pairing { known: Vec::new() }),
        )
    };
    let mut pair = Pair::with_security(pairing(1), pairing(2));
    pair.connect();
    assert_eq!(prompts(&pair.phone_events), 1);
    pair.phone.confirm_pairing(pair.now, false);
    pair.drive();
    assert_eq!(refusals(&pair.phone_events), 1);
    // The watch comes back at once, and again and again: no new prompt.
    for _ in 0..5 {
        pair.cut();
        pair.advance(std::time::Duration::from_secs(5));
        pair.connect();
    }
    assert_eq!(
        prompts(&pair.phone_events),
        1,
        "no prompt within the hold-off"
    );
    assert_eq!(refusals(&pair.phone_events), 6);
    // After the hold-off the user is asked again.
    pair.cut();
    pair.advance(std::time::Duration::from_secs(61));
    pair.connect();
    assert_eq!(prompts(&pair.phone_events), 2);
}

#[test]
fn a_sealed_hello_that_overtakes_step_3_is_not_lost() {
    let mut pair = Pair::new();
    pair.watch.link_up(pair.now, DEFAULT_MAX_FRAME_LEN);
    pair.phone.link_up(pair.now, DEFAULT_MAX_FRAME_LEN);
    let now = pair.now;
    // Step 1 to the phone, step 2 to the watch.
    while let Some(f) = pair.watch.poll_transmit(now) {
        pair.phone.handle_frame(now, f);
    }
    while let Some(f) = pair.phone.poll_transmit(now) {
        pair.watch.handle_frame(now, f);
    }
    // The watch now sends step 3 and its sealed Hello: they arrive swapped.
    let mut out: Vec<Bytes> = std::iter::from_fn(|| pair.watch.poll_transmit(now)).collect();
    assert_eq!(out.len(), 2, "step 3 and the sealed Hello");
    out.reverse();
    for f in out {
        pair.phone.handle_frame(now, f);
    }
    pair.drive();
    assert!(
        pair.watch.is_link_up() && pair.phone.is_link_up(),
        "up without waiting for the handshake timeout"
    );
}

#[test]
fn a_lost_close_is_said_again_when_the_peer_uses_the_channel() {
    let mut pair = Pair::new();
    let ch = opened(&mut pair);
    let phone_ch = phone_channel(&pair);
    pair.watch.close(ch, Code(4321), "done");
    // The close is lost on the way (dropped, or overtaken and dropped as late).
    while pair.watch.poll_transmit(pair.now).is_some() {}
    pair.collect();
    let id = send(&mut pair.phone, phone_ch, "still there?");
    pair.drive();
    assert!(
        pair.phone_events.iter().any(|e| matches!(
            e,
            Event::SendFailed(c, i, code) if *c == phone_ch && *i == id && *code == Code::CONNECTION_LOST
        )),
        "the phone's send fails: {:?}",
        pair.phone_events
    );
    assert!(
        pair.phone.is_closed(phone_ch),
        "and the phone's channel is closed"
    );
}

/// A replayed sealed frame is dropped by its nonce, before any handler sees it: a
/// version query (which the phone answers every time, with no duplicate check of its
/// own) replayed gets no second answer.
#[test]
fn a_replayed_sealed_frame_is_dropped_by_its_nonce() {
    let mut pair = Pair::new();
    opened(&mut pair);
    let now = pair.now;
    pair.watch.query_version(PKG).unwrap();
    let query: Vec<Bytes> = std::iter::from_fn(|| pair.watch.poll_transmit(now)).collect();
    assert_eq!(query.len(), 1);
    pair.phone.handle_frame(now, query[0].clone());
    let answers = std::iter::from_fn(|| pair.phone.poll_transmit(now)).count();
    assert_eq!(answers, 1, "the query is answered");
    pair.phone.handle_frame(now, query[0].clone());
    let again = std::iter::from_fn(|| pair.phone.poll_transmit(now)).count();
    assert_eq!(again, 0, "the replay is not");
    pair.collect();
    assert!(
        !pair
            .phone_events
            .iter()
            .any(|e| matches!(e, Event::DropLink { .. }))
    );
}

#[test]
fn an_open_for_another_package_on_a_live_channel_id_takes_none_of_its_messages() {
    let mut pair = Pair::plaintext();
    pair.phone.register_app("com.other", 1, None);
    pair.connect();
    let ch = pair.watch.open_channel(pair.now, PKG, None).unwrap();
    pair.drive();
    // Phone app A sends; the watch never acknowledges it (its acknowledgements are lost).
    send(&mut pair.phone, ch, "for app A");
    while let Some(f) = pair.phone.poll_transmit(pair.now) {
        pair.to_watch.push_back(f);
    }
    pair.to_watch.clear();
    // A hostile watch reuses A's channel id to open another package.
    let open = Frame::Open(Open {
        channel: ch,
        package: "com.other".into(),
        signature: None,
        resume: false,
        received_seq: 0,
    });
    pair.phone.handle_frame(pair.now, frame_bytes(open));
    let mut out = Vec::new();
    while let Some(f) = pair.phone.poll_transmit(pair.now) {
        out.push(Frame::decode(f, DEFAULT_MAX_FRAME_LEN).unwrap());
    }
    assert!(
        !out.iter()
            .any(|f| matches!(f, Frame::Data(d) if d.payload.as_ref() == b"for app A")),
        "app A's message was resent into another package's channel: {out:?}"
    );
    assert!(
        out.iter().any(
            |f| matches!(f, Frame::Reject(r) if r.channel == ch && r.code == Code::PROTOCOL_ERROR)
        ),
        "the open is refused: {out:?}"
    );
    assert_eq!(pair.phone.channel_package(ch), Some(PKG));
}

#[test]
fn strangers_with_a_fresh_key_each_raise_one_prompt_at_a_time_and_none_after_a_rejection() {
    let pairing = |key: u8| {
        Security::Noise(
            NoiseConfig::new(DeviceIdentity::from_private_key([key; 32]))
                .with_trust(TrustPolicy::Pairing { known: Vec::new() }),
        )
    };
    let mut pair = Pair::with_security(pairing(10), pairing(2));
    let stranger = |pair: &mut Pair, key: u8| {
        pair.cut();
        pair.watch = Session::new(
            SessionConfig::new(Role::Watch, DeviceId([key; 16]), key.into(), pairing(key)),
            [0x56; 32],
        );
        pair.advance(std::time::Duration::from_millis(400));
        pair.connect();
    };
    pair.connect();
    assert_eq!(prompts(&pair.phone_events), 1);
    // The prompt waits; 20 strangers with fresh keys within 10 s raise no other.
    for key in 11..31 {
        stranger(&mut pair, key);
    }
    assert_eq!(prompts(&pair.phone_events), 1, "one prompt waiting at most");
    // The user says no (the link it came on is gone): still no prompt for a while.
    pair.cut();
    pair.phone.prompt_answered(pair.now, false);
    for key in 31..51 {
        stranger(&mut pair, key);
    }
    assert_eq!(
        prompts(&pair.phone_events),
        1,
        "none right after a rejection"
    );
    // Later a new device may ask again.
    pair.cut();
    pair.advance(std::time::Duration::from_secs(31));
    stranger(&mut pair, 60);
    assert_eq!(prompts(&pair.phone_events), 2);
}

#[test]
fn a_sender_past_the_window_stops_the_reading_until_the_disk_caught_up() {
    let mut pair = Pair::plaintext();
    pair.connect();
    let ch = pair.watch.open_channel(pair.now, PKG, None).unwrap();
    pair.drive();
    let window = pair.phone.config().file_window;
    let size = 4 * window;
    let transfer = TransferId(1);
    phone_accepts(&mut pair, ch, transfer, size);
    // The hostile sender ignores the acknowledgements; the phone's disk writes nothing.
    let piece = 60_000u64;
    let mut offset = 0;
    while !pair.phone.input_paused() {
        assert!(
            offset <= window,
            "{offset} bytes taken in with nothing written"
        );
        let data = Bytes::from(vec![7u8; piece as usize]);
        pair.phone
            .handle_frame(pair.now, chunk_bytes(ch, transfer, offset, data));
        offset += piece;
    }
    // What was written lets the reading go on.
    pair.phone.file_written(ch, transfer, offset);
    assert!(!pair.phone.input_paused());
}
