//! The check the `handshake` cargo-fuzz target runs, shared with the test that replays
//! its checked-in corpus on stable, so CI guards every input the fuzzer ever kept.

use crate::prelude::*;
use core::time::Duration;

use crate::time::Instant;

use bytes::Bytes;
use interconnect_proto::{
    ChannelId, ContentType, DEFAULT_MAX_FRAME_LEN, DeviceId, Exchange, Frame, Handshake, Layout,
    Role, Sealed,
};

use crate::sans_io::{ChannelEvent, Event, Session};
use crate::{DeviceIdentity, NoiseConfig, Security, SessionConfig, TrustPolicy};

fn session(role: Role, key: u8, pairing: bool) -> Session {
    let trust = if pairing {
        TrustPolicy::Pairing { known: Vec::new() }
    } else {
        TrustPolicy::FirstUse { known: Vec::new() }
    };
    let noise = NoiseConfig::new(DeviceIdentity::from_private_key([key; 32])).with_trust(trust);
    let config = SessionConfig::new(
        role,
        DeviceId([key; 16]),
        u64::from(key),
        Security::Noise(noise),
    );
    let mut session = Session::new(config, [0x52; 32]);
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
    let mut now = Instant::ZERO;
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
            layout: if byte(4) & 1 == 0 {
                Layout::Interleaved
            } else {
                Layout::TagsLast
            },
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
    let now = Instant::ZERO;
    let plaintext = |role: Role, key: u8| {
        let config = SessionConfig::new(
            role,
            DeviceId([key; 16]),
            u64::from(key),
            Security::InsecurePlaintext,
        );
        let mut session = Session::new(config, [0x53; 32]);
        session.register_app("com.example.fuzz", 1, None);
        session.link_up(now, DEFAULT_MAX_FRAME_LEN);
        session
    };
    let mut watch = plaintext(Role::Watch, 1);
    let phone = plaintext(Role::Phone, 2);
    let Ok(channel) = watch.open_channel(now, "com.example.fuzz", None) else {
        return;
    };
    let mut pair = crate::pair::Pair::from_sessions(watch, phone);
    pair.drive();
    let mut victim = if mode & 1 == 0 {
        pair.phone
    } else {
        pair.watch
    };
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

/// Watches the `hub_session` fuzzer connects to one phone.
const WATCHES: usize = 3;
/// Packages the phone registers.
const PACKAGES: [&str; 2] = ["com.example.a", "com.example.b"];
/// Signatures a registration or an open may carry.
const SIGNATURES: [Option<&str>; 3] = [None, Some("AA"), Some("BB")];

/// One phone session (as a hub drives it: a second link is vetted by a probe and the
/// same device takes over, another is refused) and three trusted watches with keys of
/// their own, driven by the fuzzer's bytes through connects, cuts, restarts, opens,
/// sends both ways, re-registrations, detaches, cancels and time jumps. Checks that
/// nothing panics, that a message the phone app sent while a watch was served reaches
/// that watch and no other, that the phone reports delivered only what that watch's app
/// took, and that a watch app's message reaches the phone app only while its
/// registration has the signature the watch asked for.
pub fn hub_session(data: &[u8]) {
    let mut hub = Hub::new();
    for pair in data.chunks(2) {
        let (op, arg) = (pair[0], pair.get(1).copied().unwrap_or(0));
        hub.step(op, arg);
    }
}

/// Who the phone app meant a message for, and whether it arrived.
struct Sent {
    device: usize,
    taken: bool,
}

struct Hub {
    now: Instant,
    phone: Session,
    watches: Vec<Session>,
    /// Restarts of each watch (its resume token changes with each).
    lives: Vec<u64>,
    /// The watch the phone's link serves.
    linked: Option<usize>,
    /// The signature each package is registered with.
    registered: Vec<Option<&'static str>>,
    /// Watch channels: (watch, channel) -> (package, signature asked for).
    opens: alloc::collections::BTreeMap<(usize, ChannelId), (usize, Option<&'static str>)>,
    /// Phone channel -> the watch it served when it opened.
    phone_channels: alloc::collections::BTreeMap<ChannelId, (usize, usize)>,
    /// The phone app's messages, by number (the payload) and by send id.
    sent: Vec<Sent>,
    sends: alloc::collections::BTreeMap<crate::sans_io::SendId, usize>,
    /// Messages each watch's app has not taken yet (receipt, message number).
    unread: Vec<Vec<(crate::sans_io::Receipt, usize)>>,
}

impl Hub {
    fn new() -> Hub {
        let now = Instant::ZERO;
        let key = |k: u8| DeviceIdentity::from_private_key([k; 32]);
        let watch_keys: Vec<DeviceIdentity> = (0..WATCHES).map(|i| key(10 + i as u8)).collect();
        let pinned =
            TrustPolicy::Pinned(watch_keys.iter().map(DeviceIdentity::fingerprint).collect());
        let phone_config = SessionConfig::new(
            Role::Phone,
            DeviceId([2; 16]),
            2,
            Security::Noise(NoiseConfig::new(key(2)).with_trust(pinned)),
        );
        let mut phone = Session::new(phone_config, [0x54; 32]);
        for package in PACKAGES {
            phone.register_app(package, 1, None);
        }
        let mut hub = Hub {
            now,
            phone,
            watches: Vec::new(),
            lives: vec![0; WATCHES],
            linked: None,
            registered: vec![None; PACKAGES.len()],
            opens: Default::default(),
            phone_channels: Default::default(),
            sent: Vec::new(),
            sends: Default::default(),
            unread: vec![Vec::new(); WATCHES],
        };
        hub.watches = (0..WATCHES).map(|i| hub.watch_session(i)).collect();
        hub
    }

    fn watch_session(&self, i: usize) -> Session {
        let phone = DeviceIdentity::from_private_key([2; 32]).fingerprint();
        let noise = NoiseConfig::new(DeviceIdentity::from_private_key([10 + i as u8; 32]))
            .with_trust(TrustPolicy::Pinned(vec![phone]));
        let token = (i as u64 + 1) * 1000 + self.lives[i];
        Session::new(
            SessionConfig::new(
                Role::Watch,
                DeviceId([10 + i as u8; 16]),
                token,
                Security::Noise(noise),
            ),
            [0x55; 32],
        )
    }

    fn step(&mut self, op: u8, arg: u8) {
        let watch = usize::from(arg) % WATCHES;
        let package = usize::from(arg >> 2) % PACKAGES.len();
        let signature = SIGNATURES[usize::from(arg >> 4) % SIGNATURES.len()];
        match op % 13 {
            0 => self.connect(watch),
            1 => self.cut(),
            2 => {
                // The watch process dies and starts again: a new session, same key.
                if self.linked == Some(watch) {
                    self.cut();
                }
                self.lives[watch] += 1;
                self.watches[watch] = self.watch_session(watch);
                self.opens.retain(|(w, _), _| *w != watch);
                self.unread[watch].clear();
            }
            3 => {
                if let Ok(channel) =
                    self.watches[watch].open_channel(self.now, PACKAGES[package], signature)
                {
                    self.opens.insert((watch, channel), (package, signature));
                }
            }
            4 | 5 => {
                // The phone app sends on the channel the served watch has open.
                let Some(linked) = self.linked else { return };
                let open = self
                    .phone_channels
                    .iter()
                    .find(|(ch, (w, p))| *w == linked && *p == package && self.phone.is_open(**ch));
                if let Some((&channel, _)) = open {
                    let n = self.sent.len();
                    let payload = Bytes::from(n.to_le_bytes().to_vec());
                    if let Ok(id) =
                        self.phone
                            .send(channel, ContentType::Binary, Exchange::OneWay, payload)
                    {
                        self.sent.push(Sent {
                            device: linked,
                            taken: false,
                        });
                        self.sends.insert(id, n);
                    }
                }
            }
            6 => {
                let channel = self
                    .opens
                    .keys()
                    .filter(|(w, _)| *w == watch)
                    .map(|(_, ch)| *ch)
                    .nth(usize::from(arg >> 2) % 4);
                if let Some(channel) = channel {
                    let payload = Bytes::from_static(b"from the watch");
                    let _ = self.watches[watch].send(
                        channel,
                        ContentType::Binary,
                        Exchange::OneWay,
                        payload,
                    );
                }
            }
            7 => {
                self.registered[package] = signature;
                self.phone
                    .register_app(PACKAGES[package], u32::from(arg), signature);
            }
            8 => self
                .phone
                .set_app_attached(PACKAGES[package], arg & 0x80 != 0),
            9 => {
                let id = self
                    .sends
                    .keys()
                    .nth(usize::from(arg) % self.sends.len().max(1))
                    .copied();
                if let Some(id) = id {
                    for channel in self.phone_channels.keys() {
                        self.phone.cancel_send(*channel, id);
                    }
                }
            }
            10 => {
                self.now += Duration::from_millis(u64::from(arg) * 50);
                self.phone.handle_timeout(self.now);
                for w in &mut self.watches {
                    w.handle_timeout(self.now);
                }
            }
            11 => {
                // The watch's app takes what it was given.
                for (receipt, n) in core::mem::take(&mut self.unread[watch]) {
                    self.watches[watch].taken(receipt);
                    if let Some(sent) = self.sent.get_mut(n) {
                        sent.taken = true;
                    }
                }
            }
            _ => {
                let channel = self
                    .opens
                    .keys()
                    .find(|(w, _)| *w == watch)
                    .map(|(_, ch)| *ch);
                if let Some(channel) = channel {
                    self.watches[watch].close(channel, interconnect_proto::Code::OTHERS, "fuzz");
                }
            }
        }
        self.settle();
    }

    /// A new link from `watch`: the phone takes it when it has none, else vets it beside
    /// the current one and lets the same device take over.
    fn connect(&mut self, watch: usize) {
        if self.linked == Some(watch) {
            return;
        }
        let now = self.now;
        if self.linked.is_none() {
            self.phone.link_up(now, DEFAULT_MAX_FRAME_LEN);
            self.watches[watch].link_up(now, DEFAULT_MAX_FRAME_LEN);
            self.linked = Some(watch);
            return;
        }
        let mut probe = self.phone.probe(now, DEFAULT_MAX_FRAME_LEN);
        let w = &mut self.watches[watch];
        w.link_up(now, DEFAULT_MAX_FRAME_LEN);
        for _ in 0..8 {
            while let Some(frame) = w.poll_transmit(now) {
                probe.handle_frame(now, frame);
            }
            while let Some(frame) = probe.poll_transmit(now) {
                w.handle_frame(now, frame);
            }
            while probe.poll_event().is_some() {}
        }
        let adopt = probe.probed_peer().is_some() && !probe.is_dropping();
        if adopt && (!self.phone.is_link_up() || self.phone.is_same_peer(&probe)) {
            if let Some(old) = self.linked {
                self.watches[old].link_down(now);
            }
            self.phone.take_over(now, probe);
            self.linked = Some(watch);
        } else {
            if adopt {
                probe.refuse_as_busy();
            }
            while let Some(frame) = probe.poll_transmit(now) {
                self.watches[watch].handle_frame(now, frame);
            }
            self.watches[watch].link_down(now);
        }
    }

    fn cut(&mut self) {
        if let Some(watch) = self.linked.take() {
            self.phone.link_down(self.now);
            self.watches[watch].link_down(self.now);
        }
    }

    /// Moves frames between the phone and the served watch until both are quiet,
    /// checking every event.
    fn settle(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            if let Some(w) = self.linked {
                while let Some(frame) = self.watches[w].poll_transmit(self.now) {
                    moved = true;
                    self.phone.handle_frame(self.now, frame);
                }
                while let Some(frame) = self.phone.poll_transmit(self.now) {
                    moved = true;
                    Frame::decode(frame.clone(), DEFAULT_MAX_FRAME_LEN).ok();
                    self.watches[w].handle_frame(self.now, frame);
                }
            }
            moved |= self.phone_events();
            for w in 0..WATCHES {
                moved |= self.watch_events(w);
            }
            if !moved {
                return;
            }
        }
    }

    fn phone_events(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.phone.poll_event() {
            any = true;
            match event {
                Event::DropLink { .. } => self.cut(),
                Event::Channel(channel, ChannelEvent::Open { .. }) => {
                    let package = self
                        .phone
                        .channel_package(channel)
                        .and_then(|p| PACKAGES.iter().position(|k| *k == p));
                    if let (Some(w), Some(p)) = (self.linked, package) {
                        self.phone_channels.insert(channel, (w, p));
                    }
                }
                Event::Channel(channel, ChannelEvent::Message(m)) => {
                    self.phone.taken(m.receipt);
                    let (Some(w), Some(&(_, p))) = (self.linked, self.phone_channels.get(&channel))
                    else {
                        continue;
                    };
                    if let Some(&(_, wanted)) = self.opens.get(&(w, channel))
                        && wanted.is_some()
                    {
                        assert_eq!(
                            self.registered[p], wanted,
                            "a watch app's message reached a registration without the signature it asked for"
                        );
                    }
                }
                Event::Delivered(_, ids) => {
                    for id in ids {
                        if let Some(n) = self.sends.remove(&id) {
                            assert!(
                                self.sent[n].taken,
                                "the phone reported delivered a message its watch never took"
                            );
                        }
                    }
                }
                Event::SendFailed(_, id, _) => {
                    self.sends.remove(&id);
                }
                _ => {}
            }
        }
        any
    }

    fn watch_events(&mut self, w: usize) -> bool {
        let mut any = false;
        while let Some(event) = self.watches[w].poll_event() {
            any = true;
            match event {
                Event::DropLink { .. } if self.linked == Some(w) => self.cut(),
                Event::DropLink { .. } => self.watches[w].link_down(self.now),
                Event::Channel(_, ChannelEvent::Message(m)) => {
                    let n = m
                        .payload
                        .as_ref()
                        .try_into()
                        .map(usize::from_le_bytes)
                        .unwrap_or(usize::MAX);
                    if let Some(sent) = self.sent.get(n) {
                        assert_eq!(
                            sent.device, w,
                            "a message the phone held for one watch reached another"
                        );
                    }
                    self.unread[w].push((m.receipt, n));
                }
                _ => {}
            }
        }
        any
    }
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

    /// Watch 0 leaves a message untaken and its link is cut; watch 1 opens the package.
    #[test]
    fn a_held_message_never_reaches_another_watch_in_the_hub_harness() {
        super::hub_session(&[0, 0, 3, 0, 4, 0, 1, 0, 0, 1, 3, 1, 11, 1, 10, 40]);
    }

    /// Every input the `hub_session` fuzzer kept, replayed on stable.
    #[test]
    fn the_hub_session_fuzz_corpus_keeps_every_wall() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/hub_session");
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus is checked in") {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            super::hub_session(&data);
            replayed += 1;
        }
        assert!(replayed >= 100, "only {replayed} inputs");
    }

    /// Replays the checked-in `handshake` fuzz corpus on stable: every input the fuzzer kept
    /// stays harmless (no panic, no authenticated attacker, nothing delivered to an app).
    #[test]
    fn the_handshake_fuzz_corpus_stays_harmless() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/handshake");
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus is checked in") {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            super::handshake(&data);
            replayed += 1;
        }
        assert!(replayed >= 16, "only {replayed} inputs");
    }
}
