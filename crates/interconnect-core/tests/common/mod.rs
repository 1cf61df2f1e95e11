//! The sans-IO harness the session and attack tests share: two sessions wired back to
//! back with virtual time, no tasks, no sockets.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use interconnect_core::sans_io::*;
use interconnect_core::*;
use interconnect_proto::*;

pub const PKG: &str = "com.example.app";

/// Watch and phone sessions with a frame queue each way and a virtual clock.
pub struct Pair {
    pub watch: Session,
    pub phone: Session,
    pub now: Instant,
    pub to_phone: VecDeque<Bytes>,
    pub to_watch: VecDeque<Bytes>,
    pub watch_events: Vec<Event>,
    pub phone_events: Vec<Event>,
}

/// The phone's session config; a restarted phone keeps its device key.
pub fn phone_config(token: u64, security: &Security) -> SessionConfig {
    SessionConfig::new(Role::Phone, DeviceId([2; 16]), token, security.clone())
}

pub fn noise(key: u8) -> Security {
    Security::Noise(NoiseConfig::new(DeviceIdentity::from_private_key(
        [key; 32],
    )))
}

impl Pair {
    /// Encrypted links, as by default.
    pub fn new() -> Self {
        Pair::with_security(noise(1), noise(2))
    }

    /// Plaintext links: for tests that inject frames of the session protocol itself.
    pub fn plaintext() -> Self {
        Pair::with_security(Security::InsecurePlaintext, Security::InsecurePlaintext)
    }

    /// Plaintext links that deliver every frame while up (as TCP does): nothing is resent
    /// until a link is replaced.
    pub fn reliable() -> Self {
        let mut watch = SessionConfig::new(
            Role::Watch,
            DeviceId([1; 16]),
            11,
            Security::InsecurePlaintext,
        );
        let mut phone = phone_config(22, &Security::InsecurePlaintext);
        watch.reliable_link = true;
        phone.reliable_link = true;
        Pair::with_configs(watch, phone)
    }

    pub fn with_security(watch: Security, phone: Security) -> Self {
        Pair::with_configs(
            SessionConfig::new(Role::Watch, DeviceId([1; 16]), 11, watch),
            phone_config(22, &phone),
        )
    }

    pub fn with_configs(watch: SessionConfig, phone: SessionConfig) -> Self {
        let watch = Session::new(watch, [0x5C; 32]);
        let mut phone = Session::new(phone, [0x5D; 32]);
        phone.register_app(PKG, 7, Some("AA:BB"));
        Pair {
            watch,
            phone,
            now: Instant::ZERO,
            to_phone: VecDeque::new(),
            to_watch: VecDeque::new(),
            watch_events: Vec::new(),
            phone_events: Vec::new(),
        }
    }

    pub fn connect(&mut self) {
        self.watch.link_up(self.now, DEFAULT_MAX_FRAME_LEN);
        self.phone.link_up(self.now, DEFAULT_MAX_FRAME_LEN);
        self.drive();
    }

    pub fn cut(&mut self) {
        self.to_phone.clear();
        self.to_watch.clear();
        self.watch.link_down(self.now);
        self.phone.link_down(self.now);
        self.collect();
    }

    pub fn collect(&mut self) {
        // The apps take every message as it comes.
        while let Some(e) = self.watch.poll_event() {
            if let Event::Channel(_, ChannelEvent::Message(m)) = &e {
                self.watch.taken(m.receipt);
            }
            self.watch_events.push(e);
        }
        while let Some(e) = self.phone.poll_event() {
            if let Event::Channel(_, ChannelEvent::Message(m)) = &e {
                self.phone.taken(m.receipt);
            }
            self.phone_events.push(e);
        }
    }

    /// Moves frames both ways until both sides are quiet.
    pub fn drive(&mut self) {
        for _ in 0..100_000 {
            while let Some(f) = self.watch.poll_transmit(self.now) {
                self.to_phone.push_back(f);
            }
            while let Some(f) = self.phone.poll_transmit(self.now) {
                self.to_watch.push_back(f);
            }
            self.collect();
            if self.to_phone.is_empty() && self.to_watch.is_empty() {
                return;
            }
            while let Some(f) = self.to_phone.pop_front() {
                self.phone.handle_frame(self.now, f);
            }
            while let Some(f) = self.to_watch.pop_front() {
                self.watch.handle_frame(self.now, f);
            }
        }
        panic!("the sessions never went quiet");
    }

    /// Advances virtual time to the earliest deadline and fires it.
    pub fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next = [self.watch.poll_timeout(), self.phone.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.watch.handle_timeout(self.now);
                    self.phone.handle_timeout(self.now);
                    self.drive();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    pub fn watch_messages(&self, ch: ChannelId) -> Vec<Bytes> {
        messages(&self.watch_events, ch)
    }
    pub fn phone_messages(&self, ch: ChannelId) -> Vec<Bytes> {
        messages(&self.phone_events, ch)
    }
}

pub fn messages(events: &[Event], ch: ChannelId) -> Vec<Bytes> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Channel(c, ChannelEvent::Message(m)) if *c == ch => Some(m.payload.clone()),
            _ => None,
        })
        .collect()
}

pub fn send(s: &mut Session, ch: ChannelId, text: &str) -> SendId {
    s.send(
        ch,
        ContentType::Binary,
        Exchange::OneWay,
        Bytes::copy_from_slice(text.as_bytes()),
    )
    .unwrap()
}

pub fn opened(pair: &mut Pair) -> ChannelId {
    pair.connect();
    open_channel(pair)
}

/// Opens a channel to the phone's app on a link that is up.
pub fn open_channel(pair: &mut Pair) -> ChannelId {
    let ch = pair
        .watch
        .open_channel(pair.now, PKG, Some("AA:BB"))
        .unwrap();
    pair.drive();
    assert!(pair.watch.is_open(ch));
    ch
}

pub fn frame_bytes(frame: Frame) -> Bytes {
    frame.to_bytes(DEFAULT_MAX_FRAME_LEN).unwrap()
}

/// A `FileOffer` of `size` bytes, encoded.
pub fn offer_bytes(channel: ChannelId, transfer: TransferId, size: u64) -> Bytes {
    frame_bytes(Frame::FileOffer(FileOffer {
        channel,
        transfer,
        name: "f".into(),
        size,
        modified: 0,
    }))
}

/// A `FileChunk` without a digest, encoded.
pub fn chunk_bytes(channel: ChannelId, transfer: TransferId, offset: u64, data: Bytes) -> Bytes {
    frame_bytes(Frame::FileChunk(FileChunk {
        channel,
        transfer,
        offset,
        data,
        digest: None,
    }))
}

/// The phone takes an offer of `size` bytes from the start (a sans-IO owner that
/// accepts every file).
pub fn phone_accepts(pair: &mut Pair, channel: ChannelId, transfer: TransferId, size: u64) {
    pair.phone
        .handle_frame(pair.now, offer_bytes(channel, transfer, size));
    pair.phone.accept_file(channel, transfer, 0);
}
