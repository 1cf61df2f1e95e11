//! The check the `handshake` cargo-fuzz target runs, shared with the test that replays
//! its checked-in corpus on stable, so CI guards every input the fuzzer ever kept.

use std::time::{Duration, Instant};

use bytes::Bytes;
use interconnect_proto::{DEFAULT_MAX_FRAME_LEN, DeviceId, Frame, Handshake, Role, Sealed};

use crate::sans_io::{ChannelEvent, Event, Session};
use crate::{DeviceIdentity, NoiseConfig, Security, SessionConfig, TrustPolicy};

fn session(role: Role, key: u8, pairing: bool) -> Session {
    let trust = if pairing {
        TrustPolicy::Pairing { known: Vec::new() }
    } else {
        TrustPolicy::FirstUse { known: Vec::new() }
    };
    let noise = NoiseConfig::new(DeviceIdentity::from_private_key([key; 32])).with_trust(trust);
    let config = SessionConfig::new(role, DeviceId([key; 16]), u64::from(key))
        .with_security(Security::Noise(noise));
    let mut session = Session::new(config);
    session.register_app("com.example.fuzz", 1, None);
    session
}

/// Feeds attacker frames to a secure session and checks that none of them gets the
/// attacker authenticated or delivers anything to an app, and that nothing panics.
///
/// The first byte picks the setup: bit 0 the victim's role, bit 1 pairing instead of
/// first use, bit 2 whether frames are raw bytes or well-formed `Handshake`/`Sealed`
/// frames built from the input (which reach the Noise layer), bit 3 whether a genuine
/// peer completed the handshake first (so the frames hit an established link).
pub fn handshake(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let role = if mode & 1 == 0 {
        Role::Phone
    } else {
        Role::Watch
    };
    let pairing = mode & 2 != 0;
    let structured = mode & 4 != 0;
    let mut now = Instant::now();
    let mut victim = session(role, 1, pairing);
    victim.link_up(now, DEFAULT_MAX_FRAME_LEN);
    if mode & 8 != 0 {
        let peer_role = if role == Role::Phone {
            Role::Watch
        } else {
            Role::Phone
        };
        let mut peer = session(peer_role, 2, pairing);
        peer.link_up(now, DEFAULT_MAX_FRAME_LEN);
        for _ in 0..16 {
            while let Some(frame) = victim.poll_transmit(now) {
                peer.handle_frame(now, frame);
            }
            while let Some(frame) = peer.poll_transmit(now) {
                victim.handle_frame(now, frame);
            }
            for side in [&mut victim, &mut peer] {
                while let Some(event) = side.poll_event() {
                    if matches!(event, Event::PairingRequest { .. }) {
                        side.confirm_pairing(now, true);
                    }
                }
            }
        }
    }
    let no_genuine_peer = mode & 8 == 0;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (piece, tail) = rest[2..].split_at(len);
        rest = tail;
        let frame = if structured {
            forged_frame(piece)
        } else {
            Bytes::copy_from_slice(piece)
        };
        victim.handle_frame(now, frame);
        while victim.poll_transmit(now).is_some() {}
        while let Some(event) = victim.poll_event() {
            match event {
                Event::PeerAuthenticated { .. } if no_genuine_peer => {
                    panic!("bytes without the peer's key authenticated the attacker")
                }
                Event::Channel(_, ChannelEvent::Message(_)) => {
                    panic!("an attacker's frame reached an app")
                }
                Event::PairingRequest { .. } => victim.confirm_pairing(now, true),
                _ => {}
            }
        }
        now += Duration::from_millis(u64::from(piece.first().copied().unwrap_or(0)) * 100);
        victim.handle_timeout(now);
    }
}

/// A well-formed handshake or sealed frame carrying the fuzzer's bytes.
fn forged_frame(piece: &[u8]) -> Bytes {
    let byte = |i: usize| piece.get(i).copied().unwrap_or(0);
    let body = Bytes::copy_from_slice(piece.get(8..).unwrap_or(&[]));
    let frame = if byte(0) & 1 == 0 {
        Frame::Handshake(Handshake {
            step: byte(1) % 6,
            offered: byte(2),
            suite: byte(3) % 4,
            rekey_interval: u32::from_le_bytes([byte(4), byte(5), byte(6), byte(7)]),
            message: body,
        })
    } else {
        Frame::Sealed(Sealed {
            nonce: u64::from(byte(1)) | (u64::from(byte(2)) << 8) | (u64::from(byte(3)) << 40),
            ciphertext: body,
        })
    };
    frame
        .to_bytes(DEFAULT_MAX_FRAME_LEN)
        .unwrap_or_else(|_| Bytes::copy_from_slice(piece))
}

/// Drives a session **in plaintext mode** with attacker frames after a genuine Hello, an
/// open channel and a file offer, so the channel, ack and file handlers are reached (a
/// Noise victim stops forged frames at authentication). Checks that nothing panics and
/// that whatever the victim sends decodes, at its own limit, as a frame.
///
/// The first byte picks the victim's role (bit 0) and whether the rest are raw frames or
/// frames built from the input (bit 1; needs the `arbitrary` feature, else raw); bit 2
/// starts an outgoing file on the victim.
pub fn plaintext_session(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let plaintext = |role: Role, key: u8| {
        let config = SessionConfig::new(role, DeviceId([key; 16]), u64::from(key))
            .with_security(Security::InsecurePlaintext);
        let mut session = Session::new(config);
        session.register_app("com.example.fuzz", 1, None);
        session.link_up(now, DEFAULT_MAX_FRAME_LEN);
        session
    };
    let mut watch = plaintext(Role::Watch, 1);
    let mut phone = plaintext(Role::Phone, 2);
    let Ok(channel) = watch.open_channel(now, "com.example.fuzz", None) else {
        return;
    };
    shuttle(&mut watch, &mut phone, now);
    let mut victim = if mode & 1 == 0 { phone } else { watch };
    if mode & 4 != 0 && victim.is_open(channel) {
        let _ = victim.send_file(now, channel, "fuzz.bin", 100_000, 0);
    }
    let mut now = now;
    for frame in attacker_frames(mode & 2 != 0, rest) {
        victim.handle_frame(now, frame);
        while let Some(out) = victim.poll_transmit(now) {
            Frame::decode(out, DEFAULT_MAX_FRAME_LEN).expect("the victim's frames decode");
        }
        while let Some(event) = victim.poll_event() {
            match event {
                Event::FileOffered {
                    channel, transfer, ..
                } => victim.accept_file(channel, transfer, 0),
                Event::FileRead {
                    transfer,
                    offset,
                    len,
                    ..
                } => {
                    let len = usize::try_from(len).unwrap_or(0).min(1 << 16);
                    let data = Bytes::from(vec![0u8; len]);
                    let end = offset.saturating_add(len as u64) >= 100_000;
                    victim.file_read(transfer, offset, data, end.then_some([0; 32]));
                }
                _ => {}
            }
        }
        now += Duration::from_millis(250);
        victim.handle_timeout(now);
    }
}

fn shuttle(a: &mut Session, b: &mut Session, now: Instant) {
    for _ in 0..16 {
        while let Some(frame) = a.poll_transmit(now) {
            b.handle_frame(now, frame);
        }
        while let Some(frame) = b.poll_transmit(now) {
            a.handle_frame(now, frame);
        }
        while a.poll_event().is_some() || b.poll_event().is_some() {}
    }
}

/// The frames in `data`: length-prefixed raw pieces, or frames built by `arbitrary`.
fn attacker_frames(structured: bool, data: &[u8]) -> Vec<Bytes> {
    #[cfg(any(test, feature = "arbitrary"))]
    if structured {
        let mut input = arbitrary::Unstructured::new(data);
        let mut frames = Vec::new();
        while !input.is_empty() && frames.len() < 64 {
            let Ok(frame) = <Frame as arbitrary::Arbitrary>::arbitrary(&mut input) else {
                break;
            };
            if let Ok(bytes) = frame.to_bytes(DEFAULT_MAX_FRAME_LEN) {
                frames.push(bytes);
            }
        }
        return frames;
    }
    let _ = structured;
    let mut frames = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (piece, tail) = rest[2..].split_at(len);
        rest = tail;
        frames.push(Bytes::copy_from_slice(piece));
    }
    frames
}

#[cfg(test)]
mod tests {
    /// Every input the `plaintext_session` fuzzer kept, replayed on stable.
    #[test]
    fn the_plaintext_session_fuzz_corpus_stays_harmless() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/plaintext_session");
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus is checked in") {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            super::plaintext_session(&data);
            replayed += 1;
        }
        assert!(replayed >= 100, "only {replayed} inputs");
    }
}
