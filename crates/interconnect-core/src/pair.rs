//! A watch session and a phone session wired back to back, in virtual time: the test bed
//! of the state machines (no tasks, no sockets, no clock), with seeded faults on the
//! wire and an in-memory owner for files.
//!
//! Behind the `test-util` feature. Frames move only when the test calls
//! [`drive`](Pair::drive) or [`advance`](Pair::advance), so every run of a seed is the
//! same run.
//!
//! ```
//! use interconnect_core::pair::{Faults, Pair, PKG};
//! use interconnect_core::ContentType;
//! use interconnect_proto::Exchange;
//! use bytes::Bytes;
//! use core::time::Duration;
//!
//! // One frame in ten lost, one in ten duplicated, 20 ms each way; seed 7.
//! let mut pair = Pair::new().with_faults(Faults::lossy(10, 10, 0), 7);
//! pair.faults.latency = Duration::from_millis(20);
//! pair.connect();
//! pair.advance(Duration::from_secs(5));
//! let ch = pair.watch.open_channel(pair.now, PKG, Some("AA:BB")).unwrap();
//! for i in 0..20u8 {
//!     let payload = Bytes::from(vec![i]);
//!     pair.watch.send(ch, ContentType::Binary, Exchange::OneWay, payload).unwrap();
//! }
//! pair.advance(Duration::from_secs(60));
//! let got: Vec<u8> = pair.phone_messages(ch).iter().map(|m| m[0]).collect();
//! assert_eq!(got, (0..20).collect::<Vec<u8>>(), "each once, in order");
//! ```

#[allow(unused_imports)]
use crate::prelude::*;

use alloc::collections::{BTreeMap, VecDeque};
use core::time::Duration;

use bytes::Bytes;
use interconnect_proto::{
    ChannelId, Code, ContentType, DEFAULT_MAX_FRAME_LEN, DeviceId, Exchange, FrameHeader, Role,
    TransferId,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::sans_io::{ChannelEvent, Event, FILE_READ_ROOM, SendId, Session, file_read_tail};
use crate::time::Instant;
use crate::{DeviceIdentity, NoiseConfig, Security, SessionConfig};

/// The package the phone's app registers (signature `AA:BB`, version 7).
pub const PKG: &str = "com.example.app";

/// What the wire does to frames, each way. Percentages are out of 100.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Frames lost.
    pub loss: u8,
    /// Frames delivered twice.
    pub duplicate: u8,
    /// Frames that overtake the one before them.
    pub reorder: u8,
    /// Time each frame spends on the wire.
    pub latency: Duration,
    /// The link's largest frame (given to both sessions as the link's limit): at least
    /// the protocol's smallest, 1 KiB (`MIN_MAX_FRAME_LEN`); links of smaller packets
    /// fragment frames below the session, as BLE does.
    pub mtu: usize,
}

impl Default for Faults {
    /// A perfect wire: nothing lost, duplicated or reordered, no latency.
    fn default() -> Self {
        Faults {
            loss: 0,
            duplicate: 0,
            reorder: 0,
            latency: Duration::ZERO,
            mtu: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

impl Faults {
    /// Loss, duplication and reordering at these percentages, no latency.
    pub fn lossy(loss: u8, duplicate: u8, reorder: u8) -> Self {
        Faults {
            loss,
            duplicate,
            reorder,
            ..Faults::default()
        }
    }
}

/// One side's files: what it sends (by transfer) and what it received, kept in memory.
/// It accepts every offer from the start, writes chunks as they come and checks the
/// BLAKE3 digest the last chunk carries, as the runtime's owner does on disk.
#[derive(Debug, Default)]
pub struct Files {
    sources: BTreeMap<TransferId, Bytes>,
    partial: BTreeMap<(ChannelId, TransferId), Vec<u8>>,
    /// Files received whole with the right digest, in the order they completed.
    pub stored: Vec<(ChannelId, Bytes)>,
    /// Refuse offers with this code instead of accepting them.
    pub refuse: Option<Code>,
    /// Answer reads in buffers with room around the bytes
    /// ([`Session::file_read_with_room`]), as the runtime does for large reads.
    pub with_room: bool,
    /// Where the last buffers handed out with room start.
    handed: VecDeque<usize>,
}

impl Files {
    /// Whether `frame` was built in a buffer a read with room handed out: it starts in
    /// that buffer's room, where nothing allocated anew can start.
    fn framed_in_place(&self, frame: &[u8]) -> bool {
        let at = frame.as_ptr() as usize;
        self.handed
            .iter()
            .any(|start| at > *start && at < start + FILE_READ_ROOM)
    }
}

impl Files {
    /// Answers one session event that is the owner's job; others are left alone.
    fn on_event(&mut self, session: &mut Session, event: &Event) {
        match event {
            Event::FileRead {
                transfer,
                offset,
                len,
                ..
            } => {
                let Some(source) = self.sources.get(transfer) else {
                    return;
                };
                let start = (*offset as usize).min(source.len());
                let end = (offset + len).min(source.len() as u64) as usize;
                let digest = (end == source.len()).then(|| *blake3::hash(source).as_bytes());
                if !self.with_room {
                    session.file_read(*transfer, *offset, source.slice(start..end), digest);
                    return;
                }
                let mut buf =
                    Vec::with_capacity(FILE_READ_ROOM + end - start + file_read_tail(end - start));
                buf.resize(FILE_READ_ROOM, 0);
                buf.extend_from_slice(&source[start..end]);
                if self.handed.len() == 64 {
                    self.handed.pop_front();
                }
                self.handed.push_back(buf.as_ptr() as usize);
                session.file_read_with_room(*transfer, *offset, Bytes::from(buf), digest);
            }
            Event::FileOffered {
                channel, transfer, ..
            } => match self.refuse {
                Some(code) => session.reject_file(*channel, *transfer, code, "refused"),
                None => {
                    self.partial.insert((*channel, *transfer), Vec::new());
                    session.accept_file(*channel, *transfer, 0);
                }
            },
            Event::FileData {
                channel,
                transfer,
                offset,
                data,
                digest,
            } => {
                let key = (*channel, *transfer);
                let Some(buf) = self.partial.get_mut(&key) else {
                    return;
                };
                if *offset != buf.len() as u64 {
                    return;
                }
                buf.extend_from_slice(data);
                session.file_written(*channel, *transfer, buf.len() as u64);
                if let Some(digest) = digest {
                    let buf = self.partial.remove(&key).unwrap_or_default();
                    if blake3::hash(&buf).as_bytes() == digest {
                        session.file_stored(*channel, *transfer);
                        self.stored.push((*channel, Bytes::from(buf)));
                    } else {
                        session.cancel_file(*channel, *transfer, Code::INTEGRITY, "bad digest");
                    }
                }
            }
            Event::FileAbandoned { channel, transfer }
            | Event::FileFailed {
                channel,
                transfer,
                outgoing: false,
                ..
            } => {
                self.partial.remove(&(*channel, *transfer));
            }
            Event::FileFailed {
                transfer,
                outgoing: true,
                ..
            }
            | Event::FileSent { transfer, .. } => {
                self.sources.remove(transfer);
            }
            _ => {}
        }
    }
}

/// Which way a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    ToPhone,
    ToWatch,
}

/// Watch and phone sessions with a frame queue each way and a virtual clock.
pub struct Pair {
    /// The watch's session.
    pub watch: Session,
    /// The phone's session.
    pub phone: Session,
    /// The virtual clock: what `drive` and `advance` give the sessions as `now`.
    pub now: Instant,
    /// Frames on their way to the phone, delivered at the next [`drive`](Self::drive).
    pub to_phone: VecDeque<Bytes>,
    /// Frames on their way to the watch.
    pub to_watch: VecDeque<Bytes>,
    /// Every event the watch's session gave, in order (the app takes each message).
    pub watch_events: Vec<Event>,
    /// Every event the phone's session gave, in order.
    pub phone_events: Vec<Event>,
    /// The watch's files (what it sends and what it received).
    pub watch_files: Files,
    /// The phone's files.
    pub phone_files: Files,
    /// What the wire does; change it between steps at will.
    pub faults: Faults,
    /// Replace the link whenever a session drops it (as the runtime's driver does),
    /// rather than leave it down for the test to look at.
    pub relink: bool,
    /// Links replaced so far because a session dropped one.
    pub relinks: u32,
    /// Frames the watch built where its file's bytes were read (see [`Files::with_room`]).
    pub framed_in_place: u32,
    rng: ChaCha8Rng,
    /// Frames still in the air (latency), with when they land.
    in_air: VecDeque<(Instant, Way, Bytes)>,
}

/// The phone's session config; a restarted phone keeps its device key.
pub fn phone_config(token: u64, security: &Security) -> SessionConfig {
    SessionConfig::new(Role::Phone, DeviceId([2; 16]), token, security.clone())
}

/// Noise with the device key `[key; 32]`, trusting on first use.
pub fn noise(key: u8) -> Security {
    Security::Noise(NoiseConfig::new(DeviceIdentity::from_private_key(
        [key; 32],
    )))
}

impl Default for Pair {
    fn default() -> Self {
        Pair::new()
    }
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
        Pair::plaintext_links(false)
    }

    /// Plaintext links that carry a byte stream (as TCP does): a run of small frames
    /// leaves joined in one buffer, and each side cuts what it receives into frames.
    pub fn stream() -> Self {
        Pair::plaintext_links(true)
    }

    /// Plaintext links that deliver every frame while up, byte streams or not.
    fn plaintext_links(stream: bool) -> Self {
        let mut watch = SessionConfig::new(
            Role::Watch,
            DeviceId([1; 16]),
            11,
            Security::InsecurePlaintext,
        );
        let mut phone = phone_config(22, &Security::InsecurePlaintext);
        for config in [&mut watch, &mut phone] {
            config.reliable_link = true;
            config.stream_link = stream;
        }
        Pair::with_configs(watch, phone)
    }

    /// Each side's security (device ids 1 and 2, resume tokens 11 and 22).
    pub fn with_security(watch: Security, phone: Security) -> Self {
        Pair::with_configs(
            SessionConfig::new(Role::Watch, DeviceId([1; 16]), 11, watch),
            phone_config(22, &phone),
        )
    }

    /// Sessions of these configs; the phone's app [`PKG`] is registered.
    pub fn with_configs(watch: SessionConfig, phone: SessionConfig) -> Self {
        let watch = Session::new(watch, [0x5C; 32]);
        let mut phone = Session::new(phone, [0x5D; 32]);
        phone.register_app(PKG, 7, Some("AA:BB"));
        Pair::from_sessions(watch, phone)
    }

    /// These two sessions, as they are.
    pub fn from_sessions(watch: Session, phone: Session) -> Self {
        Pair {
            watch,
            phone,
            now: Instant::ZERO,
            to_phone: VecDeque::new(),
            to_watch: VecDeque::new(),
            watch_events: Vec::new(),
            phone_events: Vec::new(),
            watch_files: Files::default(),
            phone_files: Files::default(),
            faults: Faults::default(),
            relink: false,
            relinks: 0,
            framed_in_place: 0,
            rng: ChaCha8Rng::seed_from_u64(0),
            in_air: VecDeque::new(),
        }
    }

    /// The wire does `faults`, drawn from `seed`, and a link a session drops is
    /// replaced (see [`relink`](Self::relink)).
    pub fn with_faults(mut self, faults: Faults, seed: u64) -> Self {
        self.faults = faults;
        self.rng = ChaCha8Rng::seed_from_u64(seed);
        self.relink = true;
        self
    }

    /// A link comes up on both sides (of the wire's MTU), and frames move until quiet.
    pub fn connect(&mut self) {
        self.watch.link_up(self.now, self.faults.mtu);
        self.phone.link_up(self.now, self.faults.mtu);
        self.drive();
    }

    /// The link goes down on both sides; what was on the wire is lost.
    pub fn cut(&mut self) {
        self.to_phone.clear();
        self.to_watch.clear();
        self.in_air.clear();
        self.watch.link_down(self.now);
        self.phone.link_down(self.now);
        self.collect();
    }

    /// Takes both sessions' events: the apps take every message as it comes, and each
    /// side's [`Files`] does the owner's part of transfers.
    pub fn collect(&mut self) {
        while let Some(e) = self.watch.poll_event() {
            if let Event::Channel(_, ChannelEvent::Message(m)) = &e {
                self.watch.taken(m.receipt);
            }
            self.watch_files.on_event(&mut self.watch, &e);
            self.watch_events.push(e);
        }
        while let Some(e) = self.phone.poll_event() {
            if let Event::Channel(_, ChannelEvent::Message(m)) = &e {
                self.phone.taken(m.receipt);
            }
            self.phone_files.on_event(&mut self.phone, &e);
            self.phone_events.push(e);
        }
    }

    /// Whether the next draw out of 100 falls under `percent`.
    fn chance(&mut self, percent: u8) -> bool {
        percent > 0 && (self.rng.next_u32() % 100) < u32::from(percent)
    }

    /// Puts a frame a session sent on the wire, through the faults.
    fn transmit(&mut self, way: Way, frame: Bytes) {
        if way == Way::ToPhone && self.watch_files.framed_in_place(&frame) {
            self.framed_in_place += 1;
        }
        assert!(
            frame.len() <= self.faults.mtu,
            "a frame of {} bytes (kind {:#04x}) on a link of {}, {:?}",
            frame.len(),
            frame.get(1).copied().unwrap_or(0),
            self.faults.mtu,
            way
        );
        if self.chance(self.faults.loss) {
            return;
        }
        let copies = if self.chance(self.faults.duplicate) {
            2
        } else {
            1
        };
        let overtakes = self.chance(self.faults.reorder);
        for _ in 0..copies {
            let lands = self.now + self.faults.latency;
            self.in_air.push_back((lands, way, frame.clone()));
            if overtakes && self.in_air.len() >= 2 {
                let n = self.in_air.len();
                // Only past a frame going the same way and landing at the same time, so
                // the air stays in landing order.
                if self.in_air[n - 2].1 == way && self.in_air[n - 2].0 == lands {
                    self.in_air.swap(n - 1, n - 2);
                }
            }
        }
    }

    /// Puts every frame both sessions have to send on the wire; whether there was one.
    fn transmit_all(&mut self) -> bool {
        let mut sent = false;
        while let Some(f) = self.watch.poll_transmit(self.now) {
            self.transmit(Way::ToPhone, f);
            sent = true;
        }
        while let Some(f) = self.phone.poll_transmit(self.now) {
            self.transmit(Way::ToWatch, f);
            sent = true;
        }
        sent
    }

    /// Moves the frames that have landed into the receive queues.
    fn land(&mut self) {
        while let Some((lands, _, _)) = self.in_air.front() {
            if *lands > self.now {
                break;
            }
            let (_, way, frame) = self.in_air.pop_front().expect("just looked");
            match way {
                Way::ToPhone => self.to_phone.push_back(frame),
                Way::ToWatch => self.to_watch.push_back(frame),
            }
        }
    }

    /// Moves frames both ways, at the current time, until both sides are quiet (frames
    /// still in the air land at a later [`advance`](Self::advance)).
    pub fn drive(&mut self) {
        for _ in 0..100_000 {
            // Events first: what the apps and file owners do with them (a message
            // taken, a file accepted) may make frames due.
            let seen = (self.watch_events.len(), self.phone_events.len());
            self.collect();
            let dropped =
                |events: &[Event]| events.iter().any(|e| matches!(e, Event::DropLink { .. }));
            if self.relink
                && (dropped(&self.watch_events[seen.0..]) || dropped(&self.phone_events[seen.1..]))
            {
                // The dropping side's last frame (its reason) goes out first.
                self.transmit_all();
                self.cut();
                self.relinks += 1;
                self.watch.link_up(self.now, self.faults.mtu);
                self.phone.link_up(self.now, self.faults.mtu);
                continue;
            }
            let sent = self.transmit_all();
            self.land();
            if !sent && self.to_phone.is_empty() && self.to_watch.is_empty() {
                return;
            }
            let joined = self.watch.config().stream_link;
            while let Some(f) = self.to_phone.pop_front() {
                for f in cut_stream(f, joined) {
                    self.phone.handle_frame(self.now, f);
                }
            }
            let joined = self.phone.config().stream_link;
            while let Some(f) = self.to_watch.pop_front() {
                for f in cut_stream(f, joined) {
                    self.watch.handle_frame(self.now, f);
                }
            }
        }
        panic!(
            "the sessions never went quiet ({} relinks, {:?} {:?})",
            self.relinks,
            self.watch_events.last(),
            self.phone_events.last()
        );
    }

    /// Advances virtual time by `by`, stopping at every deadline of either session and
    /// every frame landing on the way.
    pub fn advance(&mut self, by: Duration) {
        // What commands queued since the last step goes out first.
        self.drive();
        let end = self.now + by;
        loop {
            let next = [
                self.watch.poll_timeout(),
                self.phone.poll_timeout(),
                self.in_air.front().map(|(t, _, _)| *t),
            ]
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

    /// The watch sends `data` as a file on `channel`; its [`Files`] serves the reads.
    pub fn watch_sends_file(
        &mut self,
        channel: ChannelId,
        name: &str,
        data: Bytes,
    ) -> Result<TransferId, crate::sans_io::CommandError> {
        let transfer = self
            .watch
            .send_file(self.now, channel, name, data.len() as u64, 0)?;
        self.watch_files.sources.insert(transfer, data);
        Ok(transfer)
    }

    /// Whether the watch was told that `transfer` was stored by the phone.
    pub fn watch_heard_sent(&self, transfer: TransferId) -> bool {
        self.watch_events
            .iter()
            .any(|e| matches!(e, Event::FileSent { transfer: t, .. } if *t == transfer))
    }

    /// The messages the watch's app received on `ch`, in order.
    pub fn watch_messages(&self, ch: ChannelId) -> Vec<Bytes> {
        messages(&self.watch_events, ch)
    }

    /// The messages the phone's app received on `ch`, in order.
    pub fn phone_messages(&self, ch: ChannelId) -> Vec<Bytes> {
        messages(&self.phone_events, ch)
    }
}

/// The messages among `events` on `ch`, in order.
pub fn messages(events: &[Event], ch: ChannelId) -> Vec<Bytes> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Channel(c, ChannelEvent::Message(m)) if *c == ch => Some(m.payload.clone()),
            _ => None,
        })
        .collect()
}

/// Sends `text` as a one-way binary message.
pub fn send(s: &mut Session, ch: ChannelId, text: &str) -> SendId {
    s.send(
        ch,
        ContentType::Binary,
        Exchange::OneWay,
        Bytes::copy_from_slice(text.as_bytes()),
    )
    .expect("the send is queued")
}

/// What a stream link's reader does with the bytes of `buf`: cuts them into frames by
/// their headers (`joined`); a buffer that does not cut cleanly goes as it is, for the
/// session to refuse. Without `joined`, `buf` is one frame.
pub fn cut_stream(buf: Bytes, joined: bool) -> Vec<Bytes> {
    if !joined {
        return vec![buf];
    }
    let mut frames = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        match FrameHeader::parse(&rest, usize::MAX) {
            Ok(header) if header.frame_len() <= rest.len() => {
                frames.push(rest.split_to(header.frame_len()));
            }
            _ => {
                frames.push(rest);
                break;
            }
        }
    }
    frames
}
