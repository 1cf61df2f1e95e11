//! The secure layer's transcript from fixed keys, ephemerals and nonces, as WIRE.md
//! shows it, generated here so the document cannot drift from the code.

use super::tests::{TAGS_LAST, WITHOUT_CRC};
use super::*;
#[allow(unused_imports)]
use crate::prelude::*;
use crate::security::DeviceIdentity;
use crate::security::record::*;
use interconnect_proto::DEFAULT_MAX_FRAME_LEN;
use interconnect_proto::{
    SEALED_SEGMENT_LEN, SEALED_SEGMENT_PLAINTEXT, SEALED_TAG_LEN, SealedForm,
};

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
    link.seal(
        &plain,
        &[],
        DEFAULT_MAX_FRAME_LEN,
        SealedForm::COMMON,
        &mut dst,
    )
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
            Ok(Frame::Sealed(s)) => phone.open(s.into()).unwrap().unwrap(),
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
                SealedForm::COMMON,
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
            .seal(&plain, &[], DEFAULT_MAX_FRAME_LEN, WITHOUT_CRC, &mut bare)
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
        // The frame of several segments again, for a peer that also reads tags last.
        let mut plain = BytesMut::new();
        big.encode_unsealed(DEFAULT_MAX_FRAME_LEN, &mut plain)
            .unwrap();
        let mut last = BytesMut::new();
        watch
            .seal(&plain, &[], DEFAULT_MAX_FRAME_LEN, TAGS_LAST, &mut last)
            .unwrap();
        let last = last.freeze();
        let Ok(Frame::Sealed(parts)) = Frame::decode(last.clone(), DEFAULT_MAX_FRAME_LEN) else {
            panic!("not sealed");
        };
        let count = interconnect_proto::sealed_segments(plain.len());
        let _ = writeln!(
            out,
            "\nThe frame of several segments again, to a peer whose `Hello` set `NO_CRC` and \
             `TAGS_LAST`: at nonce {}, flags `03`, its {} ciphertexts back to back and then \
             their tags, no CRC trailer. Outer frame: {} bytes, SHA-256 `{}`. Per segment \
             (nonce, associated data, tag):\n",
            parts.nonce,
            count,
            last.len(),
            hex(&Sha256::digest(&last))
        );
        let tags = &parts.ciphertext[plain.len()..];
        for (i, tag) in tags.chunks(SEALED_TAG_LEN).enumerate() {
            let _ = writeln!(
                out,
                "    {}  {}  {}",
                parts.nonce + i as u64,
                hex(&segment_ad(parts.nonce, count as u32, i as u32)),
                hex(tag)
            );
        }
        assert_eq!(&opened(&mut phone, last)[..], &plain[..]);
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
