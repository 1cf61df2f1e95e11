//! The Noise handshake and the record layer together: two links through every step,
//! rekeys, forgeries and the transcript WIRE.md shows.

use super::*;
#[allow(unused_imports)]
use crate::prelude::*;
use crate::security::DeviceIdentity;
use crate::security::record::*;
use interconnect_proto::DEFAULT_MAX_FRAME_LEN;
use interconnect_proto::{SEALED_SEGMENT_LEN, SEALED_SEGMENT_PLAINTEXT, SEALED_TAG_LEN};

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
    link.seal(head, bulk, DEFAULT_MAX_FRAME_LEN, Trailer::Crc, &mut dst)
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
        assert_eq!(phone.open(sealed).unwrap().as_deref(), Some(&plain[..]));
    }
    assert_eq!(
        epochs(&watch).0,
        3,
        "2000 nonces at 512 a key: epochs 0 to 3"
    );
    assert_eq!(epochs(&phone).1, 3);
}

#[test]
fn frames_open_alike_in_place_and_from_a_shared_buffer_and_tampering_fails_both() {
    let big: Vec<u8> = (0..3 * SEALED_SEGMENT_PLAINTEXT + 100)
        .map(|i| (i % 251) as u8)
        .collect();
    for shared in [false, true] {
        let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
        let sealed = seal(&mut watch, &big);
        // Another handle on the same bytes (as a transport's read buffer would be)
        // forces the copying path.
        let _other = shared.then(|| sealed.ciphertext.clone());
        assert_eq!(
            phone.open(sealed).unwrap().as_deref(),
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
            };
            let _other = shared.then(|| tampered.ciphertext.clone());
            assert!(
                phone.open(tampered).is_err(),
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
        phone.open(sealed).unwrap();
    }
    // Four segments do not fit in nonces 510 and 511: the frame starts at 512.
    let big = vec![7u8; 3 * SEALED_SEGMENT_PLAINTEXT + 1];
    let sealed = seal(&mut watch, &big);
    assert_eq!(sealed.nonce, 512);
    assert_eq!(phone.open(sealed).unwrap().as_deref(), Some(&big[..]));
}

#[test]
fn old_nonces_are_dropped_and_far_future_ones_are_refused() {
    let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
    let first = seal(&mut watch, b"first");
    phone.open(first.clone()).unwrap();
    for _ in 0..600 {
        let sealed = seal(&mut watch, b"more");
        phone.open(sealed).unwrap();
    }
    assert_eq!(phone.open(first).unwrap(), None, "a replay is dropped");
    let forged = Sealed {
        nonce: u64::from(MIN_REKEY_INTERVAL) * (MAX_EPOCH_SKIP + 5),
        ciphertext: Bytes::from(vec![0u8; 40]),
    };
    assert_eq!(phone.open(forged), Err(SecurityError::BadSealedFrame));
}

#[test]
fn a_frame_from_the_other_direction_does_not_open() {
    let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
    let to_watch = seal(&mut phone, b"to the watch");
    // Reflected back to the phone: sealed with the phone's sending key.
    assert_eq!(phone.open(to_watch), Err(SecurityError::BadSealedFrame));
    let sealed = seal(&mut watch, b"hello");
    assert!(phone.open(sealed).is_err(), "nothing opens after a forgery");
    // The phone can still seal its error report.
    let report = seal(&mut phone, b"error report");
    assert_eq!(
        watch.open(report).unwrap().as_deref(),
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
            phone.open(forged),
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
    };
    assert!(phone.open(merged).is_err());
    // Alone and in place, each opens.
    let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
    let a = seal(&mut watch, b"first frame");
    let b = seal(&mut watch, b"second frame");
    assert_eq!(phone.open(a).unwrap().as_deref(), Some(&b"first frame"[..]));
    assert_eq!(
        phone.open(b).unwrap().as_deref(),
        Some(&b"second frame"[..])
    );
}

#[test]
fn a_seal_that_fails_at_an_epoch_change_leaves_the_keys_in_step() {
    let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
    for _ in 0..510 {
        let sealed = seal(&mut watch, b"x");
        phone.open(sealed).unwrap();
    }
    // Four segments would start the next epoch, but the frame is too large to send.
    let big = vec![7u8; 3 * SEALED_SEGMENT_PLAINTEXT + 1];
    let mut dst = BytesMut::new();
    assert!(watch.seal(&big, &[], 4096, Trailer::Crc, &mut dst).is_err());
    assert!(dst.is_empty());
    assert_eq!(epochs(&watch).0, 0, "the failed seal committed nothing");
    let sealed = seal(&mut watch, b"after");
    assert_eq!(sealed.nonce, 510);
    assert_eq!(phone.open(sealed).unwrap().as_deref(), Some(&b"after"[..]));
}

#[test]
fn a_forged_frame_far_ahead_does_not_move_the_receiving_key() {
    let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
    let forged = Sealed {
        nonce: u64::from(MIN_REKEY_INTERVAL) * 3,
        ciphertext: Bytes::from(vec![0u8; 40]),
    };
    assert!(phone.open(forged).is_err());
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
                    peer.open(sealed).unwrap().as_deref(),
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

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Long hex wrapped at 64 digits, indented under its label.
fn hex_block(bytes: &[u8]) -> String {
    hex(bytes)
        .as_bytes()
        .chunks(64)
        .map(|c| format!("    {}\n", core::str::from_utf8(c).unwrap()))
        .collect()
}

fn counting(from: u8) -> [u8; 32] {
    core::array::from_fn(|i| from.wrapping_add(i as u8))
}

/// What `REKEY` makes of a raw key: the first 32 bytes of encrypting 32 zero bytes
/// at nonce 2^64 - 1 with empty associated data.
fn rekey_raw(suite: CipherSuite, key: &[u8; 32]) -> [u8; 32] {
    let mut next = [0u8; 32];
    let _tag = TransportKey::new(suite, key)
        .seal_in_place(u64::MAX, &[], &mut next)
        .unwrap();
    next
}

fn handshake_frame(frame: Frame) -> (Handshake, Bytes) {
    let bytes = frame.to_bytes(DEFAULT_MAX_FRAME_LEN).unwrap();
    match frame {
        Frame::Handshake(h) => (h, bytes),
        other => panic!("not a handshake step: {other:?}"),
    }
}

fn established_state(link: &SecureLink) -> &Established {
    match &link.phase {
        Phase::Established(est) => est,
        _ => panic!("not established"),
    }
}

fn seal_frame(link: &mut SecureLink, frame: &Frame) -> (Vec<u8>, Bytes) {
    let mut plain = BytesMut::new();
    frame
        .encode_unsealed(DEFAULT_MAX_FRAME_LEN, &mut plain)
        .unwrap();
    let mut dst = BytesMut::new();
    link.seal(&plain, &[], DEFAULT_MAX_FRAME_LEN, Trailer::Crc, &mut dst)
        .unwrap();
    (plain.to_vec(), dst.freeze())
}

/// The secure layer's transcript from fixed keys, ephemerals and nonces, as WIRE.md
/// shows it. Every value is checked on the way: the peer opens what is sealed.
fn transcript() -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let (ws, ps) = (counting(0x00), counting(0x20));
    let (we, pe) = (counting(0x40), counting(0x60));
    let (wn, pn) = (counting(0x80), counting(0xa0));
    let _ = writeln!(out, "Fixed inputs (bytes counting up from the first):\n");
    let _ = writeln!(out, "    watch static private key   {}", hex(&ws));
    let _ = writeln!(out, "    phone static private key   {}", hex(&ps));
    let _ = writeln!(out, "    watch ephemeral private    {}", hex(&we));
    let _ = writeln!(out, "    phone ephemeral private    {}", hex(&pe));
    let _ = writeln!(out, "    watch pairing nonce        {}", hex(&wn));
    let _ = writeln!(out, "    phone pairing nonce        {}", hex(&pn));
    let _ = writeln!(out, "    rekey_interval             512\n");
    let (wid, pid) = (
        DeviceIdentity::from_private_key(ws),
        DeviceIdentity::from_private_key(ps),
    );
    let _ = writeln!(
        out,
        "    watch static public key    {}",
        hex(wid.public_key())
    );
    let _ = writeln!(out, "    watch fingerprint          {}", wid.fingerprint());
    let _ = writeln!(
        out,
        "    phone static public key    {}",
        hex(pid.public_key())
    );
    let _ = writeln!(out, "    phone fingerprint          {}", pid.fingerprint());
    for suite in [CipherSuite::AesGcm, CipherSuite::ChaChaPoly] {
        let make = |key: [u8; 32], role, fixed| {
            let mut config =
                NoiseConfig::new(DeviceIdentity::from_private_key(key)).with_suites(&[suite]);
            config.rekey_interval = 512;
            let mut link = SecureLink::new(config, role, [0; 32]);
            link.fixed = Some(fixed);
            link
        };
        let mut watch = make(ws, Role::Watch, (we, wn));
        let mut phone = make(ps, Role::Phone, (pe, pn));
        let _ = writeln!(out, "\n### {} ({})\n", suite, suite.noise_name());
        watch.start();
        phone.start();
        let (step1, bytes) = handshake_frame(watch.out.pop_front().unwrap());
        let _ = writeln!(
            out,
            "Step 1, watch → phone: offered {:#04x}, suite {}, rekey_interval {}, \
             message `e` ({} bytes)\n",
            step1.offered,
            step1.suite,
            step1.rekey_interval,
            step1.message.len()
        );
        let _ = writeln!(out, "{}", hex_block(&bytes));
        let _ = writeln!(out, "Prologue ({} bytes):\n", prologue(&step1).len());
        let _ = writeln!(out, "{}", hex_block(&prologue(&step1)));
        phone.on_handshake(step1);
        let (step2, bytes) = handshake_frame(phone.out.pop_front().unwrap());
        let _ = writeln!(
            out,
            "Step 2, phone → watch: `e, ee, s, es`, payload SHA-256(phone nonce) \
             = {} ({} bytes)\n",
            hex(&Sha256::digest(pn)),
            step2.message.len()
        );
        let _ = writeln!(out, "{}", hex_block(&bytes));
        watch.on_handshake(step2);
        let (step3, bytes) = handshake_frame(watch.out.pop_front().unwrap());
        let _ = writeln!(
            out,
            "Step 3, watch → phone: `s, se`, payload the watch nonce ({} bytes)\n",
            step3.message.len()
        );
        let _ = writeln!(out, "{}", hex_block(&bytes));
        phone.on_handshake(step3);
        let (step4, bytes) = handshake_frame(phone.out.pop_front().unwrap());
        let _ = writeln!(
            out,
            "Step 4, phone → watch, in the clear: the phone nonce ({} bytes)\n",
            step4.message.len()
        );
        let _ = writeln!(out, "{}", hex_block(&bytes));
        watch.on_handshake(step4);
        let est = established_state(&watch);
        assert_eq!(est.hash, established_state(&phone).hash);
        assert_eq!(watch.pairing_code(), phone.pairing_code());
        let (to_phone, to_watch) = est.split;
        let _ = writeln!(out, "After step 3:\n");
        let _ = writeln!(out, "    handshake hash             {}", hex(&est.hash));
        let _ = writeln!(out, "    key watch → phone (k0)     {}", hex(&to_phone));
        let _ = writeln!(out, "    key phone → watch          {}", hex(&to_watch));
        let k1 = rekey_raw(suite, &to_phone);
        let k2 = rekey_raw(suite, &k1);
        let _ = writeln!(out, "    k1 = REKEY(k0)             {}", hex(&k1));
        let _ = writeln!(out, "    k2 = REKEY(k1)             {}", hex(&k2));
        let _ = writeln!(
            out,
            "    pairing code               {}\n",
            watch.pairing_code().unwrap()
        );

        let ping = Frame::Ping(interconnect_proto::Ping { nonce: 1 });
        let (plain, sealed) = seal_frame(&mut watch, &ping);
        let _ = writeln!(
            out,
            "First sealed frame, watch → phone: nonce 0, one segment; inner \
             `Ping {{ nonce: 1 }}` without CRC `{}`, associated data `{}`:\n",
            hex(&plain),
            hex(&segment_ad(0, 1, 0))
        );
        let _ = writeln!(out, "{}", hex_block(&sealed));
        let opened = |phone: &mut SecureLink, bytes: Bytes| match Frame::decode(
            bytes,
            DEFAULT_MAX_FRAME_LEN,
        ) {
            Ok(Frame::Sealed(s)) => phone.open(s).unwrap().unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(&opened(&mut phone, sealed)[..], &plain[..]);
        // Nonces 1 to 511 go by; the next frame is the first of epoch 1, under k1.
        for _ in 1..512 {
            let (_, sealed) = seal_frame(&mut watch, &ping);
            opened(&mut phone, sealed);
        }
        let pong = Frame::Ping(interconnect_proto::Ping { nonce: 2 });
        let (plain, sealed) = seal_frame(&mut watch, &pong);
        let _ = writeln!(
            out,
            "After 512 nonces, the first frame of epoch 1 (under k1): nonce 512, inner \
             `Ping {{ nonce: 2 }}` `{}`, associated data `{}`:\n",
            hex(&plain),
            hex(&segment_ad(512, 1, 0))
        );
        let _ = writeln!(out, "{}", hex_block(&sealed));
        assert_eq!(&opened(&mut phone, sealed)[..], &plain[..]);
        // Up to nonce 1021; a frame of four segments does not fit in 1022 and 1023,
        // so it starts epoch 2 at 1024.
        for _ in 513..1022 {
            let (_, sealed) = seal_frame(&mut watch, &ping);
            opened(&mut phone, sealed);
        }
        let big = Frame::Data(interconnect_proto::Data {
            channel: interconnect_proto::ChannelId(1),
            seq: 1,
            content_type: interconnect_proto::ContentType::Binary,
            exchange: interconnect_proto::Exchange::OneWay,
            payload: Bytes::from(
                (0..3 * SEALED_SEGMENT_PLAINTEXT)
                    .map(|i| (i % 251) as u8)
                    .collect::<Vec<u8>>(),
            ),
        });
        let (plain, sealed) = seal_frame(&mut watch, &big);
        let Ok(Frame::Sealed(parts)) = Frame::decode(sealed.clone(), DEFAULT_MAX_FRAME_LEN) else {
            panic!("not sealed");
        };
        let count = parts.ciphertext.len().div_ceil(SEALED_SEGMENT_LEN);
        let _ = writeln!(
            out,
            "A frame of several segments that skips to the next epoch: at nonce 1022, a \
             `Data` frame (channel 1, seq 1, binary, one-way) whose payload is bytes \
             `i mod 251` for i < {}: inner length {}, {} segments, so it starts at \
             nonce {} under k2. Outer frame: {} bytes, SHA-256 `{}`. Per segment \
             (nonce, associated data, tag):\n",
            3 * SEALED_SEGMENT_PLAINTEXT,
            plain.len(),
            count,
            parts.nonce,
            sealed.len(),
            hex(&Sha256::digest(&sealed))
        );
        for (i, seg) in parts.ciphertext.chunks(SEALED_SEGMENT_LEN).enumerate() {
            let _ = writeln!(
                out,
                "    {}  {}  {}",
                parts.nonce + i as u64,
                hex(&segment_ad(parts.nonce, count as u32, i as u32)),
                hex(&seg[seg.len() - SEALED_TAG_LEN..])
            );
        }
        assert_eq!(&opened(&mut phone, sealed)[..], &plain[..]);
        // A batch: two inner frames back to back in one sealed frame.
        let batch = [
            Frame::Ping(interconnect_proto::Ping { nonce: 3 }),
            Frame::Pong(interconnect_proto::Pong { nonce: 3 }),
        ];
        let inner: Vec<Vec<u8>> = batch
            .iter()
            .map(|f| {
                let mut b = BytesMut::new();
                f.encode_unsealed(DEFAULT_MAX_FRAME_LEN, &mut b).unwrap();
                b.to_vec()
            })
            .collect();
        let plain = inner.concat();
        let mut sealed = BytesMut::new();
        watch
            .seal(
                &plain,
                &[],
                DEFAULT_MAX_FRAME_LEN,
                Trailer::Crc,
                &mut sealed,
            )
            .unwrap();
        let nonce = parts.nonce + count as u64;
        let _ = writeln!(
            out,
            "\nA batch, for a peer whose `Hello` set `BATCH`: at nonce {nonce}, inner \
             `Ping {{ nonce: 3 }}` `{}` and `Pong {{ nonce: 3 }}` `{}` back to back, one \
             segment, associated data `{}`:\n",
            hex(&inner[0]),
            hex(&inner[1]),
            hex(&segment_ad(nonce, 1, 0))
        );
        let _ = writeln!(out, "{}", hex_block(&sealed));
        let body = opened(&mut phone, sealed.freeze());
        assert_eq!(&body[..], &plain[..]);
        let frames: Vec<Frame> = Frame::decode_batch(body, DEFAULT_MAX_FRAME_LEN)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(frames, batch);
        // The same plaintext sealed for a peer that reads sealed frames without a CRC.
        let mut bare = BytesMut::new();
        watch
            .seal(&plain, &[], DEFAULT_MAX_FRAME_LEN, Trailer::None, &mut bare)
            .unwrap();
        let _ = writeln!(
            out,
            "\nThe same two frames to a peer whose `Hello` set `NO_CRC`: at nonce {}, \
             flags `01`, no CRC trailer, associated data `{}`:\n",
            nonce + 1,
            hex(&segment_ad(nonce + 1, 1, 0))
        );
        let _ = writeln!(out, "{}", hex_block(&bare));
        assert_eq!(&opened(&mut phone, bare.freeze())[..], &plain[..]);
    }
    fenced(&out)
}

/// Runs of indented lines as fenced `text` blocks (the document is also rustdoc,
/// where an indented block would be taken for Rust code).
fn fenced(text: &str) -> String {
    let mut out = String::new();
    let mut open = false;
    for line in text.lines() {
        match (line.strip_prefix("    "), open) {
            (Some(body), false) => {
                out.push_str("```text\n");
                out.push_str(body);
                open = true;
            }
            (Some(body), true) => out.push_str(body),
            (None, true) => {
                out.push_str("```\n");
                out.push_str(line);
                open = false;
            }
            (None, false) => out.push_str(line),
        }
        out.push('\n');
    }
    if open {
        out.push_str("```\n");
    }
    out
}

const WIRE_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../interconnect-proto/WIRE.md");
const BEGIN: &str = "<!-- transcript: generated by secure_transcript_matches_wire_md -->\n";
const END: &str = "<!-- end of transcript -->\n";

/// WIRE.md's transcript is exactly what this code produces from the fixed inputs.
/// `UPDATE_WIRE_EXAMPLES=1` rewrites it after an intended change.
#[test]
fn secure_transcript_matches_wire_md() {
    let generated = transcript();
    let doc = std::fs::read_to_string(WIRE_MD).unwrap();
    let (Some(a), Some(b)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("WIRE.md has no transcript markers");
    };
    let on_disk = &doc[a + BEGIN.len()..b];
    if std::env::var_os("UPDATE_WIRE_EXAMPLES").is_some() {
        let updated = format!("{}{BEGIN}{generated}{}", &doc[..a], &doc[b..]);
        std::fs::write(WIRE_MD, updated).unwrap();
        return;
    }
    assert_eq!(
        on_disk, generated,
        "WIRE.md's transcript is stale: run with UPDATE_WIRE_EXAMPLES=1 if intended"
    );
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
                Trailer::Crc,
                &mut expected,
            )
            .unwrap();
        let mut buf = BytesMut::new();
        buf.put_bytes(0, interconnect_proto::SEALED_HEADROOM);
        buf.extend_from_slice(&plain);
        in_place
            .seal_in_place(&mut buf, DEFAULT_MAX_FRAME_LEN, Trailer::Crc)
            .unwrap();
        assert_eq!(buf, expected, "frame {i}");
        let sealed = match Frame::decode(buf.freeze(), DEFAULT_MAX_FRAME_LEN) {
            Ok(Frame::Sealed(sealed)) => sealed,
            other => panic!("not a sealed frame: {other:?}"),
        };
        assert_eq!(phone.open(sealed).unwrap().as_deref(), Some(&plain[..]));
    }
    assert_eq!(epochs(&in_place).0, 2, "1200 nonces at 512 a key");
}
