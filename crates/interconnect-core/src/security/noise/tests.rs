//! The Noise handshake and the record layer together: two links through every step,
//! rekeys, forgeries, and the layouts of sealed frames.

use super::*;
#[allow(unused_imports)]
use crate::prelude::*;
use crate::security::DeviceIdentity;
use crate::security::record::*;
use interconnect_proto::{DEFAULT_MAX_FRAME_LEN, FrameHeader, OwnedFrame, Sealed};
use interconnect_proto::{
    Layout, SEALED_SEGMENT_LEN, SEALED_SEGMENT_PLAINTEXT, SEALED_TAG_LEN, SealedForm, Trailer,
};

/// Sealed frames without their CRC, each tag after its segment.
pub(super) const WITHOUT_CRC: SealedForm = SealedForm {
    trailer: Trailer::None,
    layout: Layout::Interleaved,
};

/// Sealed frames without their CRC and with their tags last.
pub(super) const TAGS_LAST: SealedForm = SealedForm {
    trailer: Trailer::None,
    layout: Layout::TagsLast,
};

fn link(role: Role, key: u8, rekey_interval: u32) -> SecureLink {
    let mut config = NoiseConfig::new(DeviceIdentity::from_private_key([key; 32]));
    config.rekey_interval = rekey_interval;
    SecureLink::new(config, role, [key; 32])
}

/// A watch and a phone link after a completed handshake.
fn established(rekey_interval: u32) -> (SecureLink, SecureLink) {
    let mut watch = link(Role::Watch, 1, rekey_interval);
    let mut phone = link(Role::Phone, 2, rekey_interval);
    watch.start();
    phone.start();
    for _ in 0..4 {
        while let Some(Frame::Handshake(h)) = watch.out.pop_front() {
            phone.on_handshake(h);
        }
        while let Some(Frame::Handshake(h)) = phone.out.pop_front() {
            watch.on_handshake(h);
        }
    }
    assert!(watch.is_established() && phone.is_established());
    assert_eq!(watch.pairing_code(), phone.pairing_code());
    (watch, phone)
}

fn seal(link: &mut SecureLink, plain: &[u8]) -> Sealed {
    let mut dst = BytesMut::new();
    // A short head and the rest as bulk: segments then straddle the two.
    let (head, bulk) = plain.split_at(plain.len().min(3));
    link.seal(
        head,
        bulk,
        DEFAULT_MAX_FRAME_LEN,
        SealedForm::COMMON,
        &mut dst,
    )
    .unwrap();
    match Frame::decode(dst.freeze(), DEFAULT_MAX_FRAME_LEN) {
        Ok(Frame::Sealed(sealed)) => sealed,
        other => panic!("not a sealed frame: {other:?}"),
    }
}

fn epochs(link: &SecureLink) -> (u64, u64) {
    match &link.phase {
        Phase::Established(est) => est.cipher.epochs(),
        _ => panic!("not established"),
    }
}

#[test]
fn keys_renew_every_interval_and_every_frame_still_opens() {
    let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
    for i in 0..2000u32 {
        let plain = i.to_le_bytes();
        let sealed = seal(&mut watch, &plain);
        assert_eq!(
            phone.open(sealed.into()).unwrap().as_deref(),
            Some(&plain[..])
        );
    }
    assert_eq!(
        epochs(&watch).0,
        3,
        "2000 nonces at 512 a key: epochs 0 to 3"
    );
    assert_eq!(epochs(&phone).1, 3);
}

/// Frames cut from one read buffer, as a transport's reader cuts them, are each opened
/// where they lie: they share an allocation, and still nothing is copied.
#[test]
fn frames_cut_from_one_read_buffer_open_where_they_lie() {
    for form in [SealedForm::COMMON, WITHOUT_CRC, TAGS_LAST] {
        let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
        let plains: Vec<Vec<u8>> = [5, 300, 2 * SEALED_SEGMENT_PLAINTEXT + 7, 64]
            .into_iter()
            .map(|len| (0..len).map(|i| (i % 253) as u8).collect())
            .collect();
        let mut stream = BytesMut::new();
        for plain in &plains {
            watch
                .seal(plain, &[], DEFAULT_MAX_FRAME_LEN, form, &mut stream)
                .unwrap();
        }
        let range = stream.as_ptr_range();
        for (i, plain) in plains.iter().enumerate() {
            let len = FrameHeader::parse(&stream, DEFAULT_MAX_FRAME_LEN)
                .unwrap()
                .frame_len();
            let frame = stream.split_to(len);
            let Ok(OwnedFrame::Sealed(sealed)) = Frame::decode_owned(frame, DEFAULT_MAX_FRAME_LEN)
            else {
                panic!("frame {i} is not a sealed frame");
            };
            let opened = phone.open(sealed).unwrap().unwrap();
            assert_eq!(&opened[..], &plain[..], "frame {i}, {form:?}");
            assert!(
                range.contains(&opened.as_ptr()),
                "frame {i}, {form:?}: opened in a copy"
            );
        }
    }
}

/// A frame whose bytes something else still holds is copied once, then opened like one
/// that is its receiver's alone; tampering fails either way.
#[test]
fn frames_open_alike_in_place_and_from_a_shared_buffer_and_tampering_fails_both() {
    let big: Vec<u8> = (0..3 * SEALED_SEGMENT_PLAINTEXT + 100)
        .map(|i| (i % 251) as u8)
        .collect();
    for shared in [false, true] {
        let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
        let sealed = seal(&mut watch, &big);
        // Another handle on the same bytes forces a copy.
        let _other = shared.then(|| sealed.ciphertext.clone());
        assert_eq!(
            phone.open(sealed.into()).unwrap().as_deref(),
            Some(&big[..]),
            "shared {shared}"
        );
        for segment in 0..4 {
            let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
            let sealed = seal(&mut watch, &big);
            let mut bytes = sealed.ciphertext.to_vec();
            bytes[segment * SEALED_SEGMENT_LEN + 5] ^= 0x40;
            let tampered = Sealed {
                nonce: sealed.nonce,
                ciphertext: Bytes::from(bytes),
                layout: sealed.layout,
            };
            let _other = shared.then(|| tampered.ciphertext.clone());
            assert!(
                phone.open(tampered.into()).is_err(),
                "segment {segment}, shared {shared}"
            );
        }
    }
}

#[test]
fn a_frame_never_spans_two_keys() {
    let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
    for _ in 0..510 {
        let sealed = seal(&mut watch, b"x");
        phone.open(sealed.into()).unwrap();
    }
    // Four segments do not fit in nonces 510 and 511: the frame starts at 512.
    let big = vec![7u8; 3 * SEALED_SEGMENT_PLAINTEXT + 1];
    let sealed = seal(&mut watch, &big);
    assert_eq!(sealed.nonce, 512);
    assert_eq!(
        phone.open(sealed.into()).unwrap().as_deref(),
        Some(&big[..])
    );
}

#[test]
fn old_nonces_are_dropped_and_far_future_ones_are_refused() {
    let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
    let first = seal(&mut watch, b"first");
    phone.open(first.clone().into()).unwrap();
    for _ in 0..600 {
        let sealed = seal(&mut watch, b"more");
        phone.open(sealed.into()).unwrap();
    }
    assert_eq!(
        phone.open(first.into()).unwrap(),
        None,
        "a replay is dropped"
    );
    let forged = Sealed {
        nonce: u64::from(MIN_REKEY_INTERVAL) * (MAX_EPOCH_SKIP + 5),
        ciphertext: Bytes::from(vec![0u8; 40]),
        layout: Layout::Interleaved,
    };
    assert_eq!(
        phone.open(forged.into()),
        Err(SecurityError::BadSealedFrame)
    );
}

#[test]
fn a_frame_from_the_other_direction_does_not_open() {
    let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
    let to_watch = seal(&mut phone, b"to the watch");
    // Reflected back to the phone: sealed with the phone's sending key.
    assert_eq!(
        phone.open(to_watch.into()),
        Err(SecurityError::BadSealedFrame)
    );
    let sealed = seal(&mut watch, b"hello");
    assert!(
        phone.open(sealed.into()).is_err(),
        "nothing opens after a forgery"
    );
    // The phone can still seal its error report.
    let report = seal(&mut phone, b"error report");
    assert_eq!(
        watch.open(report.into()).unwrap().as_deref(),
        Some(&b"error report"[..])
    );
}

/// A sealed frame made of `ciphertext`'s segments `range`, claiming nonce `nonce`.
fn segments_of(sealed: &Sealed, range: core::ops::Range<usize>, nonce: u64) -> Sealed {
    let from = range.start * SEALED_SEGMENT_LEN;
    let to = (range.end * SEALED_SEGMENT_LEN).min(sealed.ciphertext.len());
    Sealed {
        nonce,
        ciphertext: sealed.ciphertext.slice(from..to),
        layout: sealed.layout,
    }
}

#[test]
fn a_run_of_segments_cut_out_of_a_frame_does_not_open_alone() {
    let big: Vec<u8> = (0..3 * SEALED_SEGMENT_PLAINTEXT - 7)
        .map(|i| (i % 253) as u8)
        .collect();
    for (range, offset) in [(1..2, 1), (1..3, 1), (2..3, 2), (0..1, 0), (0..2, 0)] {
        let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
        let sealed = seal(&mut watch, &big);
        let forged = segments_of(&sealed, range.clone(), sealed.nonce + offset);
        assert_eq!(
            phone.open(forged.into()),
            Err(SecurityError::BadSealedFrame),
            "segments {range:?} delivered alone"
        );
    }
}

#[test]
fn two_frames_merged_into_one_do_not_open() {
    let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
    let a = seal(&mut watch, b"first frame");
    let b = seal(&mut watch, b"second frame");
    assert_eq!(b.nonce, a.nonce + 1);
    let mut both = a.ciphertext.to_vec();
    both.extend_from_slice(&b.ciphertext);
    // Padded so the merged ciphertext splits back at the first frame's end.
    let merged = Sealed {
        nonce: a.nonce,
        ciphertext: Bytes::from(both),
        layout: a.layout,
    };
    assert!(phone.open(merged.into()).is_err());
    // Alone and in place, each opens.
    let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
    let a = seal(&mut watch, b"first frame");
    let b = seal(&mut watch, b"second frame");
    assert_eq!(
        phone.open(a.into()).unwrap().as_deref(),
        Some(&b"first frame"[..])
    );
    assert_eq!(
        phone.open(b.into()).unwrap().as_deref(),
        Some(&b"second frame"[..])
    );
}

#[test]
fn a_seal_that_fails_at_an_epoch_change_leaves_the_keys_in_step() {
    let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
    for _ in 0..510 {
        let sealed = seal(&mut watch, b"x");
        phone.open(sealed.into()).unwrap();
    }
    // Four segments would start the next epoch, but the frame is too large to send.
    let big = vec![7u8; 3 * SEALED_SEGMENT_PLAINTEXT + 1];
    let mut dst = BytesMut::new();
    assert!(
        watch
            .seal(&big, &[], 4096, SealedForm::COMMON, &mut dst)
            .is_err()
    );
    assert!(dst.is_empty());
    assert_eq!(epochs(&watch).0, 0, "the failed seal committed nothing");
    let sealed = seal(&mut watch, b"after");
    assert_eq!(sealed.nonce, 510);
    assert_eq!(
        phone.open(sealed.into()).unwrap().as_deref(),
        Some(&b"after"[..])
    );
}

#[test]
fn a_forged_frame_far_ahead_does_not_move_the_receiving_key() {
    let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
    let forged = Sealed {
        nonce: u64::from(MIN_REKEY_INTERVAL) * 3,
        ciphertext: Bytes::from(vec![0u8; 40]),
        layout: Layout::Interleaved,
    };
    assert!(phone.open(forged.into()).is_err());
    assert_eq!(epochs(&phone).1, 0);
    let _ = seal(&mut watch, b"unused");
}

#[test]
fn handshake_frames_of_any_step_after_the_keys_change_nothing() {
    for role in [Role::Watch, Role::Phone] {
        for step in 0..=255u8 {
            for len in [0usize, 32, 48] {
                let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
                let (victim, peer) = match role {
                    Role::Watch => (&mut watch, &mut phone),
                    Role::Phone => (&mut phone, &mut watch),
                };
                victim.events.clear();
                victim.on_handshake(Handshake {
                    step,
                    offered: 3,
                    suite: 1,
                    rekey_interval: 512,
                    message: Bytes::from(vec![step; len]),
                });
                assert!(victim.is_established(), "{role:?} step {step} len {len}");
                assert!(
                    victim.events.is_empty(),
                    "{role:?} step {step}: {:?}",
                    victim.events
                );
                assert!(victim.out.is_empty());
                let sealed = seal(victim, b"still sealed");
                assert_eq!(
                    peer.open(sealed.into()).unwrap().as_deref(),
                    Some(&b"still sealed"[..])
                );
            }
        }
    }
}

#[test]
fn a_wrong_step_4_before_the_real_one_is_dropped() {
    let mut watch = link(Role::Watch, 1, MIN_REKEY_INTERVAL);
    let mut phone = link(Role::Phone, 2, MIN_REKEY_INTERVAL);
    watch.start();
    phone.start();
    while let Some(Frame::Handshake(h)) = watch.out.pop_front() {
        phone.on_handshake(h); // step 1
    }
    while let Some(Frame::Handshake(h)) = phone.out.pop_front() {
        watch.on_handshake(h); // step 2
    }
    while let Some(Frame::Handshake(h)) = watch.out.pop_front() {
        phone.on_handshake(h); // step 3
    }
    assert!(watch.is_established());
    assert_eq!(watch.pairing_code(), None, "the code needs step 4");
    let Frame::Handshake(forged) = step(4, Bytes::from(vec![9u8; 32])) else {
        unreachable!()
    };
    watch.on_handshake(forged);
    assert!(watch.is_established());
    assert_eq!(watch.pairing_code(), None);
    while let Some(Frame::Handshake(h)) = phone.out.pop_front() {
        watch.on_handshake(h); // the real step 4
    }
    assert!(watch.pairing_code().is_some());
    assert_eq!(watch.pairing_code(), phone.pairing_code());
}

/// Sealing a one-segment plaintext in place writes the bytes `seal` writes, nonce for
/// nonce, across rekeys, and they open.
#[test]
fn sealing_in_place_writes_what_sealing_from_a_copy_writes() {
    use bytes::BufMut;
    let (mut copied, _) = established(MIN_REKEY_INTERVAL);
    let (mut in_place, mut phone) = established(MIN_REKEY_INTERVAL);
    for i in 0..1200usize {
        let plain: Vec<u8> = (0..1 + i % 300).map(|b| (b ^ i) as u8).collect();
        let mut expected = BytesMut::new();
        copied
            .seal(
                &plain,
                &[],
                DEFAULT_MAX_FRAME_LEN,
                SealedForm::COMMON,
                &mut expected,
            )
            .unwrap();
        let mut buf = BytesMut::new();
        buf.put_bytes(0, interconnect_proto::SEALED_HEADROOM);
        buf.extend_from_slice(&plain);
        in_place
            .seal_in_place(&mut buf, DEFAULT_MAX_FRAME_LEN, SealedForm::COMMON)
            .unwrap();
        assert_eq!(buf, expected, "frame {i}");
        let sealed = match Frame::decode(buf.freeze(), DEFAULT_MAX_FRAME_LEN) {
            Ok(Frame::Sealed(sealed)) => sealed,
            other => panic!("not a sealed frame: {other:?}"),
        };
        assert_eq!(
            phone.open(sealed.into()).unwrap().as_deref(),
            Some(&plain[..])
        );
    }
    assert_eq!(epochs(&in_place).0, 2, "1200 nonces at 512 a key");
}

/// Frames sealed with their tags last write the same bytes in place as from a copy,
/// nonce for nonce across rekeys (a frame that would straddle two epochs starts the
/// next); their segments are the interleaved form's, ciphertext and tag for ciphertext
/// and tag, only placed otherwise; and they open. Read as interleaved, a frame of
/// several segments fails authentication.
#[test]
fn frames_with_their_tags_last_are_sealed_in_place_and_open() {
    use bytes::BufMut;
    let (mut copied, _) = established(MIN_REKEY_INTERVAL);
    let (mut in_place, mut phone) = established(MIN_REKEY_INTERVAL);
    let (mut interleaved, _) = established(MIN_REKEY_INTERVAL);
    let sealed = |bytes: BytesMut| match Frame::decode(bytes.freeze(), DEFAULT_MAX_FRAME_LEN) {
        Ok(Frame::Sealed(sealed)) => sealed,
        other => panic!("not a sealed frame: {other:?}"),
    };
    let mut several = 0;
    for i in 0..600usize {
        let len = match i % 8 {
            7 => 3 * SEALED_SEGMENT_PLAINTEXT + 5 + i,
            3 => SEALED_SEGMENT_PLAINTEXT + 1 + i,
            _ => 1 + i % 300,
        };
        let plain: Vec<u8> = (0..len).map(|b| (b ^ i) as u8).collect();
        let mut expected = BytesMut::new();
        let (head, bulk) = plain.split_at(len.min(3));
        copied
            .seal(head, bulk, DEFAULT_MAX_FRAME_LEN, TAGS_LAST, &mut expected)
            .unwrap();
        let mut buf = BytesMut::new();
        buf.put_bytes(0, interconnect_proto::SEALED_HEADROOM);
        buf.extend_from_slice(&plain);
        in_place
            .seal_in_place(&mut buf, DEFAULT_MAX_FRAME_LEN, TAGS_LAST)
            .unwrap();
        assert_eq!(buf, expected, "frame {i}");
        let mut other = BytesMut::new();
        interleaved
            .seal(&plain, &[], DEFAULT_MAX_FRAME_LEN, WITHOUT_CRC, &mut other)
            .unwrap();
        let (last, each) = (sealed(buf), sealed(other));
        assert_eq!(
            (last.layout, each.layout),
            (Layout::TagsLast, Layout::Interleaved)
        );
        assert_eq!(last.nonce, each.nonce, "frame {i}");
        let count = interconnect_proto::sealed_segments(len);
        several += usize::from(count > 1);
        for (k, part) in each.ciphertext.chunks(SEALED_SEGMENT_LEN).enumerate() {
            let (body, tag) = part.split_at(part.len() - SEALED_TAG_LEN);
            let at = k * SEALED_SEGMENT_PLAINTEXT;
            assert_eq!(&last.ciphertext[at..at + body.len()], body, "frame {i}");
            let at = len + k * SEALED_TAG_LEN;
            assert_eq!(&last.ciphertext[at..at + SEALED_TAG_LEN], tag, "frame {i}");
        }
        assert_eq!(
            phone.open(last.into()).unwrap().as_deref(),
            Some(&plain[..])
        );
    }
    assert_eq!(several, 150);
    assert_eq!(epochs(&in_place).0, epochs(&phone).1);
    assert!(epochs(&in_place).0 >= 1, "the frames crossed a rekey");
    // The flag cleared: the tags are read as ciphertext and nothing opens.
    let plain = vec![7u8; 2 * SEALED_SEGMENT_PLAINTEXT];
    let mut dst = BytesMut::new();
    in_place
        .seal(&plain, &[], DEFAULT_MAX_FRAME_LEN, TAGS_LAST, &mut dst)
        .unwrap();
    let mut misread = sealed(dst);
    misread.layout = Layout::Interleaved;
    assert_eq!(
        phone.open(misread.into()),
        Err(SecurityError::BadSealedFrame)
    );
}
