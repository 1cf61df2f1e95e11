//! The sans-IO session: handshake, liveness, channel multiplexing, and the phone's app
//! registry. It never reads a socket or a clock; time comes in as `now`.
//!
//! One type, [`Session`], its methods in a module per concern: `link` (link setup,
//! liveness, the secure-record glue, drops and the frame scheduler), `takeover` (a second
//! link vetted beside the current one, pairing prompts), `channels` (opens, messages,
//! acknowledgements, closes), `registry` (the phone's apps and the messages it holds for a
//! watch that went away) and `files` (transfers). This file holds the state, the getters
//! and the outputs.

#[allow(unused_imports)]
use crate::prelude::*;

use alloc::collections::{BTreeMap, VecDeque};
use core::time::Duration;

use crate::time::Instant;

use bytes::BytesMut;
use interconnect_proto::{
    Capabilities, ChannelId, Close, Code, ErrorReport, Frame, Hello, Limits, Role, SealedMut,
    TransferId,
};

mod channels;
mod link;
mod registry;
mod takeover;
mod transfers;
mod transmit;

#[cfg(test)]
mod tests;

use crate::channel::{Channel, ChannelState, Outgoing};
use crate::config::SessionConfig;
use crate::event::{Event, PeerInfo, Receipt, SendId};
use crate::security::{self, CipherSuite, Fingerprint, PairingCode, SecureLink, Security};
use crate::transfer::{IncomingFile, OutgoingFile};

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No such channel, or it is closed (1006).
    #[error("channel is closed")]
    ChannelClosed,
    /// The message exceeds the largest the link carries (4001).
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The message size.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The channel's send queue is full.
    #[error("send queue is full ({0} messages)")]
    QueueFull(usize),
    /// The command needs the other role (e.g. opening a channel on the phone side).
    #[error("not available on the {0:?} side")]
    WrongRole(Role),
    /// The phone refused the channel at its first open, with this code (1001 the app
    /// is not installed, 1002 not attached, 1007 another signature): nothing is sent
    /// on it until an open succeeds.
    #[error("the channel was refused with {0}")]
    Refused(Code),
    /// The peer takes no incoming files (its Hello left `Capabilities::FILES` out).
    #[error("the peer device does not accept files")]
    NoFiles,
    /// The peer reads no file metadata (its Hello left `Capabilities::FILE_META` out): a
    /// file with metadata is not offered to it.
    #[error("the peer device does not read file metadata")]
    NoFileMeta,
    /// The peer reads no state updates (its Hello left `Capabilities::STATE` out).
    #[error("the peer device does not read state updates")]
    NoState,
    /// The peer reads no durable messages (its Hello left `Capabilities::DURABLE` out).
    #[error("the peer device does not read durable messages")]
    NoDurable,
}

impl CommandError {
    /// The vendor-API code for this error.
    pub fn code(&self) -> Code {
        match self {
            CommandError::ChannelClosed => Code::CONNECTION_LOST,
            CommandError::TooLarge { .. } => Code::TOO_LARGE,
            CommandError::QueueFull(_)
            | CommandError::WrongRole(_)
            | CommandError::NoFiles
            | CommandError::NoFileMeta
            | CommandError::NoState
            | CommandError::NoDurable => Code::OTHERS,
            CommandError::Refused(code) => *code,
        }
    }
}

/// An app registered on the phone side.
#[derive(Clone, Debug)]
struct AppEntry {
    version: u32,
    signature: Option<String>,
    attached: bool,
}

enum LinkState {
    Down,
    /// Link setup (the handshake, then the Hello exchange). `deadline` bounds the whole
    /// setup; `step` the wait for the peer's next frame
    /// until the keys exist (see `SessionConfig::handshake_step_timeout`).
    SettingUp {
        deadline: Instant,
        step: Instant,
    },
    Up(LinkUp),
}

struct LinkUp {
    peer: PeerInfo,
    limits: Limits,
    /// The peer opens sealed frames that hold several inner frames (its Hello set
    /// `Capabilities::BATCH`).
    batch: bool,
    /// What the peer's Hello announced (files, metadata: see `peer_has`).
    capabilities: Capabilities,
    last_rx: Instant,
    next_ping: Instant,
}

/// One device's session with its peer: survives link drops, owns every channel.
///
/// Methods come in four groups, as in quinn-proto's `Connection`:
/// - **getters**: [`peer`](Self::peer), [`is_link_up`](Self::is_link_up),
///   [`is_open`](Self::is_open), ...
/// - **inputs**: [`link_up`](Self::link_up), [`link_down`](Self::link_down),
///   [`handle_frame`](Self::handle_frame), [`handle_timeout`](Self::handle_timeout);
/// - **commands**: [`open_channel`](Self::open_channel), [`send`](Self::send),
///   [`close`](Self::close), [`query_version`](Self::query_version),
///   [`register_app`](Self::register_app), ...
/// - **outputs**: [`poll_transmit`](Self::poll_transmit), [`poll_event`](Self::poll_event),
///   [`poll_timeout`](Self::poll_timeout).
///
/// Call order: after every input or command, drain `poll_transmit` onto the link and
/// `poll_event` to the app, then arm one timer for `poll_timeout` and call
/// `handle_timeout` when it fires.
///
/// ```
/// use interconnect_core::sans_io::{Instant, Session};
/// use interconnect_core::{DeviceIdentity, NoiseConfig, Security, SessionConfig};
/// use interconnect_proto::{DeviceId, Role};
///
/// // Keys and seeds come from the caller: a real device draws them from a secure source.
/// let noise = |key| Security::Noise(NoiseConfig::new(DeviceIdentity::from_private_key([key; 32])));
/// let now = Instant::ZERO;
/// let mut watch = Session::new(SessionConfig::new(Role::Watch, DeviceId([1; 16]), 1, noise(1)), [11; 32]);
/// let mut phone = Session::new(SessionConfig::new(Role::Phone, DeviceId([2; 16]), 2, noise(2)), [12; 32]);
/// phone.register_app("com.example", 7, None);
/// watch.link_up(now, 4096);
/// phone.link_up(now, 4096);
/// let channel = watch.open_channel(now, "com.example", None).unwrap();
/// // Shuttle frames until both sides are quiet.
/// loop {
///     let mut moved = false;
///     while let Some(frame) = watch.poll_transmit(now) { phone.handle_frame(now, frame); moved = true; }
///     while let Some(frame) = phone.poll_transmit(now) { watch.handle_frame(now, frame); moved = true; }
///     if !moved { break; }
/// }
/// assert!(watch.is_link_up());
/// assert_eq!(watch.app_version(channel), Some(7));
/// ```
pub struct Session {
    config: SessionConfig,
    /// The session's randomness, from the seed it was made with.
    rng: security::Rng,
    link: LinkState,
    /// The peer's resume token from the last completed handshake.
    peer_token: Option<u64>,
    channels: BTreeMap<ChannelId, Channel>,
    /// Phone side: the packages whose channels a watch forgot (it restarted, or another
    /// watch came in its place), by package and by the watch they were for, with their
    /// unacknowledged messages (and the channel each was sent on). They are sent again
    /// on that watch's next channel of the package, and fail (1006) when another watch
    /// opens it first: a message is never handed to a device it was not sent to. At
    /// most `max_queued` per entry: they come from one channel's queue.
    orphans: BTreeMap<(String, Owner), Vec<(ChannelId, Outgoing)>>,
    /// The device of the last completed handshake (see [`Owner`]).
    peer_owner: Option<Owner>,
    /// Closed channels, oldest first. A phone keeps the last `MAX_CLOSED_CHANNELS` (to
    /// say a lost close again) and frees the others: a watch that opens and replaces
    /// channels without end cannot grow the table.
    closed: VecDeque<ChannelId>,
    next_channel: u32,
    next_send: u64,
    next_query: u32,
    /// Last channel served by the round-robin data scheduler.
    rr_last: Option<ChannelId>,
    /// Closes decided while the link was down, sent when it comes back.
    unsent_closes: Vec<Close>,
    apps: BTreeMap<String, AppEntry>,
    outgoing: BTreeMap<TransferId, OutgoingFile>,
    incoming: BTreeMap<(ChannelId, TransferId), IncomingFile>,
    /// Incoming transfers lately told to stop, with the chunks that came for them since:
    /// the chunks still in flight behind a cancel get no cancel of their own (one in
    /// `REANSWER_EVERY` does, for a sender that lost it).
    answered_unknown: VecDeque<((ChannelId, TransferId), u32)>,
    next_transfer: u32,
    /// Last outgoing transfer served by the round-robin chunk scheduler.
    rr_file: Option<TransferId>,
    /// Frames sent before any other: replies and reports, and the frame that did not fit
    /// in the last sealed batch (it keeps its place at the head).
    control: VecDeque<Frame>,
    events: VecDeque<Event>,
    scratch: BytesMut,
    /// Plaintext bytes of the last sealed batch: what the next one's buffer starts with.
    batch_hint: usize,
    /// The secure layer; `None` in insecure plaintext mode.
    secure: Option<SecureLink>,
    /// Largest frame the current link carries (sealed frames included).
    wire_max: usize,
    /// The frame limit this side announces on the current link.
    own_max: usize,
    /// Whether this side's Hello went out on the current link (secure links send it only
    /// once the peer is trusted).
    hello_sent: bool,
    /// The peer's Hello, held until this side trusts the peer.
    pending_hello: Option<Hello>,
    /// The fingerprint behind `peer_token`: a token resumes only with the same key.
    peer_token_key: Option<Fingerprint>,
    /// Inner frames before sealing; a frame's head built in place.
    plain: BytesMut,
    /// The buffer of the file chunk last taken to be sent, when it was read with room in
    /// front (`Session::file_read_with_room`): once the frame is the only other holder,
    /// the frame is built in it.
    in_room: Option<bytes::Bytes>,
    /// The link is being dropped: only the error report may still leave.
    farewell: bool,
    /// A sealed frame that overtook the last handshake step, opened once keys exist.
    early: Option<SealedMut>,
    /// The peer waiting for the user's pairing answer on this link.
    pairing: Option<Fingerprint>,
    /// Peers whose pairing was rejected or timed out lately: they raise no new prompt
    /// until `PAIRING_HOLDOFF` passed (a refused device cannot nag the user).
    refused_pairings: VecDeque<(Fingerprint, Instant)>,
    /// Until when the last prompt waits for the user's answer: no other prompt is raised
    /// meanwhile, whichever key asks (one waiting prompt at most).
    prompt_until: Option<Instant>,
    /// After a rejected or unanswered prompt, no prompt for any key until then.
    prompts_held_until: Option<Instant>,
    /// Only vets a second link (see [`probe`](Self::probe)).
    probing: bool,
    /// A probe that may admit a new device (see [`vet`](Self::vet)): it asks the user
    /// to pair instead of refusing an unknown one as busy.
    admits: bool,
    /// A probe's peer Hello, held once its handshake got that far.
    probed: Option<Hello>,
    /// Whether this side trusts the peer of the current link (always, in plaintext).
    peer_trusted: bool,
}

/// Who a phone holds messages for: the device id and, on secure links, the key of the
/// watch a channel served. A held message goes only to the device with both the same.
type Owner = ([u8; 16], Option<Fingerprint>);

/// How long a peer whose pairing was rejected (or not answered) is refused without
/// asking the user again.
const PAIRING_HOLDOFF: Duration = Duration::from_secs(60);

/// How long no pairing prompt is raised, for any key, after one was rejected or left
/// unanswered: a stranger with a fresh key per connection cannot wear the user down.
const PROMPT_HOLDOFF: Duration = Duration::from_secs(30);

/// Peers remembered for `PAIRING_HOLDOFF`.
const REFUSED_PAIRINGS: usize = 16;
/// Control frames queued before the driver stops reading the link. Honest traffic stays
/// far below: acknowledgements are bounded by the messages in flight, pongs by pings.
const MAX_CONTROL_BACKLOG: usize = 256;
/// Messages a channel holds unacknowledged (delivered, not yet taken by the app) before
/// a peer that sends on is refused: far beyond any sender's window in flight.
const MAX_UNACKED: u64 = 4096;
/// Closed channels a phone keeps (see `Session::closed`).
const MAX_CLOSED_CHANNELS: usize = 16;
/// A watch tries again to open a channel the phone closed or refused after this long,
/// doubling up to `REOPEN_MAX` while the phone keeps refusing (a new link tries at once).
const REOPEN_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to reopen.
const REOPEN_MAX: Duration = Duration::from_secs(60);

/// Where a channel stands, as its owner shows it ([`Session::channel_status`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStatus {
    /// Open: messages flow.
    pub open: bool,
    /// An open is under way (sent, or waiting for the link).
    pub connecting: bool,
    /// The code of the last refusal, while the channel is idle after one.
    pub last_error: Option<Code>,
    /// Closed by either side (terminal), or never known.
    pub closed: bool,
    /// The peer app's version, on an accepted channel (watch side).
    pub app_version: Option<u32>,
}

impl Session {
    /// A session with no link yet. `seed` is all the randomness the session will use
    /// (the ephemeral keys and pairing nonces of its handshakes): 32 bytes from a
    /// cryptographically secure source, different for every session; the runtime draws
    /// them from the operating system.
    pub fn new(config: SessionConfig, seed: [u8; 32]) -> Self {
        let mut rng = security::rng(seed);
        let secure = match &config.security {
            Security::Noise(noise) => Some(SecureLink::new(
                noise.clone(),
                config.role,
                security::draw(&mut rng),
            )),
            Security::InsecurePlaintext => None,
        };
        let own_max = config.max_frame_len;
        Session {
            rng,
            secure,
            wire_max: own_max,
            own_max,
            hello_sent: false,
            pending_hello: None,
            peer_token_key: None,
            plain: BytesMut::new(),
            in_room: None,
            farewell: false,
            early: None,
            pairing: None,
            refused_pairings: VecDeque::new(),
            prompt_until: None,
            prompts_held_until: None,
            probing: false,
            admits: false,
            probed: None,
            peer_trusted: false,
            config,
            link: LinkState::Down,
            peer_token: None,
            channels: BTreeMap::new(),
            closed: VecDeque::new(),
            next_channel: 1,
            next_send: SendId::SESSION.0,
            orphans: BTreeMap::new(),
            peer_owner: None,
            next_query: 1,
            rr_last: None,
            unsent_closes: Vec::new(),
            apps: BTreeMap::new(),
            outgoing: BTreeMap::new(),
            incoming: BTreeMap::new(),
            answered_unknown: VecDeque::new(),
            next_transfer: 0,
            rr_file: None,
            control: VecDeque::new(),
            events: VecDeque::new(),
            scratch: BytesMut::new(),
            batch_hint: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Whether the link is up and the handshake completed (the vendor API's peer status 1).
    pub fn is_link_up(&self) -> bool {
        matches!(self.link, LinkState::Up(_))
    }

    /// Whether a link exists but its handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.link, LinkState::SettingUp { .. })
    }

    /// The peer's resume token from the last completed handshake: it changes when the
    /// peer restarted.
    pub fn peer_token(&self) -> Option<u64> {
        self.peer_token
    }

    /// The peer, while the link is up.
    pub fn peer(&self) -> Option<&PeerInfo> {
        match &self.link {
            LinkState::Up(up) => Some(&up.peer),
            _ => None,
        }
    }

    /// The limits in force: negotiated while up, this side's own otherwise.
    pub fn limits(&self) -> Limits {
        match &self.link {
            LinkState::Up(up) => up.limits,
            LinkState::SettingUp { .. } => Limits::new(self.own_max),
            LinkState::Down => Limits::new(self.config.max_frame_len),
        }
    }

    /// The largest frame `handle_frame` takes now, outer frames included: before a
    /// secure link has keys, only what the handshake needs, so a stranger cannot make
    /// this side take more (see the runtime's `LinkReceiver::limit_frames`).
    pub fn max_receive_len(&self) -> usize {
        match (&self.secure, &self.link) {
            (Some(secure), _) if !secure.is_established() => PRE_KEY_MAX_FRAME_LEN,
            (Some(_), _) | (None, LinkState::Down) => self.wire_max,
            (None, LinkState::SettingUp { .. }) => self.own_max,
            (None, LinkState::Up(up)) => up.limits.max_frame_len,
        }
    }

    /// Whether the session asked for the link to be dropped
    /// ([`Event::DropLink`]): from then on `poll_transmit` yields only the error report.
    pub fn is_dropping(&self) -> bool {
        self.farewell
    }

    /// Whether to stop reading the link for now, so a peer that sends without reading
    /// or past its window is held back instead of growing this side's memory: the
    /// control frames its input caused (pongs, acknowledgements, replies) fill their
    /// queue (until [`poll_transmit`](Self::poll_transmit) drained them), or the file
    /// bytes received but not yet written reach `SessionConfig::file_window` (until
    /// [`file_written`](Self::file_written) reports progress).
    pub fn input_paused(&self) -> bool {
        self.control.len() >= MAX_CONTROL_BACKLOG || self.unwritten() >= self.config.file_window
    }

    /// Whether `channel` can queue another message (`max_queued` not reached). An
    /// unknown channel has room: sending to it fails with its own error.
    pub fn has_room(&self, channel: ChannelId) -> bool {
        self.room(channel) > 0
    }

    /// How many more messages the channel's queue takes
    /// ([`SessionConfig::max_queued`](crate::SessionConfig::max_queued) less those
    /// queued); unbounded for a channel this session does not know (a send to it fails
    /// on its own).
    pub fn room(&self, channel: ChannelId) -> usize {
        self.channels.get(&channel).map_or(usize::MAX, |ch| {
            self.config.max_queued.saturating_sub(ch.queued())
        })
    }

    /// Stops acknowledging the messages of the receipt's channel past the receipt's
    /// message (the one that filled the app's bound): while the app does not take what
    /// was delivered, the sender's window fills and its sends wait. A peer that sends on
    /// regardless gets 4001 once `MAX_UNACKED` messages are unacknowledged.
    pub fn hold_acks(&mut self, receipt: Receipt) {
        match self.channels.get_mut(&receipt.channel) {
            Some(ch) if ch.life == receipt.life => ch.hold_acks(receipt.seq),
            _ => {}
        }
    }

    /// Acknowledges the messages of `channel` again (the app reads again).
    pub fn release_acks(&mut self, channel: ChannelId) {
        if let Some(ch) = self.channels.get_mut(&channel) {
            ch.release_acks();
        }
    }

    /// Channels this session holds, open or closed. A phone has at most one open channel
    /// per registered app (a new open for a package replaces the old channel) and keeps
    /// the last 16 closed ones, so a peer cannot grow this.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Whether links are encrypted and authenticated (not insecure plaintext mode).
    pub fn is_secure(&self) -> bool {
        self.secure.is_some()
    }

    /// The peer device's key fingerprint, once the secure handshake learned it.
    pub fn peer_fingerprint(&self) -> Option<Fingerprint> {
        self.secure.as_ref().and_then(SecureLink::peer)
    }

    /// The cipher suite sealing the current link.
    pub fn cipher_suite(&self) -> Option<CipherSuite> {
        self.secure.as_ref().and_then(SecureLink::suite)
    }

    /// The current link's pairing code, once both pairing nonces are known.
    pub fn pairing_code(&self) -> Option<PairingCode> {
        self.secure.as_ref().and_then(SecureLink::pairing_code)
    }

    /// Whether the channel is open.
    pub fn is_open(&self, channel: ChannelId) -> bool {
        self.channel_status(channel).open
    }

    /// Whether an open of the channel is under way (sent, or waiting for the link).
    pub fn is_connecting(&self, channel: ChannelId) -> bool {
        self.channel_status(channel).connecting
    }

    /// The code of the last refusal of the channel, if it is idle after one.
    pub fn last_error(&self, channel: ChannelId) -> Option<Code> {
        self.channel_status(channel).last_error
    }

    /// Whether the channel was closed (terminal).
    pub fn is_closed(&self, channel: ChannelId) -> bool {
        self.channel_status(channel).closed
    }

    /// The peer app's version on an accepted channel (watch side).
    pub fn app_version(&self, channel: ChannelId) -> Option<u32> {
        self.channel_status(channel).app_version
    }

    /// All of the above in one lookup of the channel: a driver that shows them after
    /// every turn reads them so. A channel the session does not know is closed.
    pub fn channel_status(&self, channel: ChannelId) -> ChannelStatus {
        let Some(c) = self.channels.get(&channel) else {
            return ChannelStatus {
                closed: true,
                ..ChannelStatus::default()
            };
        };
        let state = c.state();
        ChannelStatus {
            open: state == ChannelState::Open,
            connecting: matches!(
                state,
                ChannelState::Opening
                    | ChannelState::Suspended
                    | ChannelState::Idle { last_error: None }
            ),
            last_error: match state {
                ChannelState::Idle { last_error } => last_error,
                _ => None,
            },
            closed: state == ChannelState::Closed,
            app_version: c.app_version,
        }
    }

    /// The package a channel belongs to.
    pub fn channel_package(&self, channel: ChannelId) -> Option<&str> {
        self.channels.get(&channel).map(|c| c.package.as_str())
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.link {
            LinkState::Down => None,
            LinkState::SettingUp { .. } => self.setup_deadline(),
            LinkState::Up(up) => {
                let rto = self.config.retransmit_timeout;
                let mut next = (up.last_rx + self.config.link_timeout).min(up.next_ping);
                let resend = !self.config.reliable_link;
                for channel in self.channels.values() {
                    if resend && let Some(t) = channel.retransmit_deadline(rto) {
                        next = next.min(t);
                    }
                    if channel.state() == ChannelState::Opening
                        && let Some((sent, _)) = channel.open_sent
                    {
                        next = next.min(sent + rto);
                    }
                    if matches!(channel.state(), ChannelState::Idle { .. })
                        && let Some((at, _)) = channel.reopen
                    {
                        next = next.min(at);
                    }
                }
                if resend && let Some(t) = self.files_deadline() {
                    next = next.min(t);
                }
                Some(next)
            }
        }
    }
}

/// Largest frame a secure session takes before keys exist: the longest handshake step
/// is under 300 bytes.
const PRE_KEY_MAX_FRAME_LEN: usize = 512;

/// The refusal sent to a peer: the code and a fixed text, so a stranger learns nothing
/// of this device's state (such as which peer is pinned).
fn refusal(code: Code) -> Frame {
    let message = match code {
        Code::UNTRUSTED_PEER => "this device is not trusted here",
        Code::SECURITY => "secure link refused",
        Code::BUSY => "another device is connected",
        Code::PROTOCOL_ERROR => "a frame failed authentication: the link is broken",
        _ => "link refused",
    };
    Frame::Error(ErrorReport {
        channel: None,
        code,
        message: message.into(),
    })
}

/// A peer's text made safe to print: control characters (terminal escapes, line breaks)
/// are shown escaped.
pub(crate) fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}
