//! The sans-IO session: handshake, liveness, channel multiplexing, and the phone's app
//! registry. It never reads a socket or a clock; time comes in as `now`.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use interconnect_proto::{
    Accept, Ack, Capabilities, ChannelId, Close, Code, ContentType, DecodeError, DeviceId,
    ErrorReport, Exchange, Frame, Hello, Limits, MAX_FRAME_LEN, MIN_MAX_FRAME_LEN, Open,
    PROTOCOL_VERSIONS, Ping, Pong, Reject, Role, Sealed, TransferId, VersionQuery, VersionReply,
    max_unsealed_len,
};

mod files;

use crate::channel::{Channel, ChannelState, Outgoing, Received};
use crate::config::{Acknowledge, MAX_SEQ_AHEAD, SessionConfig};
use crate::event::{ChannelEvent, ClosedBy, Event, Message, PeerInfo, Receipt, SendId};
use crate::security::{
    CipherSuite, Fingerprint, PairingCode, SecureEvent, SecureLink, Security, SecurityError,
};
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
}

impl CommandError {
    /// The vendor-API code for this error.
    pub fn code(&self) -> Code {
        match self {
            CommandError::ChannelClosed => Code::CONNECTION_LOST,
            CommandError::TooLarge { .. } => Code::TOO_LARGE,
            CommandError::QueueFull(_) | CommandError::WrongRole(_) => Code::OTHERS,
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
    /// `deadline` bounds the whole handshake; `step` the wait for the peer's next frame
    /// until the keys exist (see `SessionConfig::handshake_step_timeout`).
    Handshaking {
        deadline: Instant,
        step: Instant,
    },
    Up(LinkUp),
}

struct LinkUp {
    peer: PeerInfo,
    limits: Limits,
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
/// use std::time::Instant;
/// use interconnect_core::SessionConfig;
/// use interconnect_core::sans_io::Session;
/// use interconnect_proto::{DeviceId, Role};
///
/// let now = Instant::now();
/// let mut watch = Session::new(SessionConfig::new(Role::Watch, DeviceId([1; 16]), 1));
/// let mut phone = Session::new(SessionConfig::new(Role::Phone, DeviceId([2; 16]), 2));
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
    control: VecDeque<Frame>,
    events: VecDeque<Event>,
    scratch: BytesMut,
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
    /// Inner frames before sealing.
    plain: BytesMut,
    /// The link is being dropped: only the error report may still leave.
    farewell: bool,
    /// A sealed frame that overtook the last handshake step, opened once keys exist.
    early: Option<Sealed>,
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

impl Session {
    /// A session with no link yet.
    pub fn new(config: SessionConfig) -> Self {
        let secure = match &config.security {
            Security::Noise(noise) => Some(SecureLink::new(noise.clone(), config.role)),
            Security::InsecurePlaintext => None,
        };
        let own_max = config.max_frame_len;
        Session {
            secure,
            wire_max: own_max,
            own_max,
            hello_sent: false,
            pending_hello: None,
            peer_token_key: None,
            plain: BytesMut::new(),
            farewell: false,
            early: None,
            pairing: None,
            refused_pairings: VecDeque::new(),
            prompt_until: None,
            prompts_held_until: None,
            probing: false,
            probed: None,
            peer_trusted: false,
            config,
            link: LinkState::Down,
            peer_token: None,
            channels: BTreeMap::new(),
            closed: VecDeque::new(),
            next_channel: 1,
            next_send: 1,
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
        }
    }

    // ---- getters ----

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
        matches!(self.link, LinkState::Handshaking { .. })
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
            LinkState::Handshaking { .. } => Limits::new(self.own_max),
            LinkState::Down => Limits::new(self.config.max_frame_len),
        }
    }

    /// The largest frame `handle_frame` takes now, outer frames included: before a
    /// secure link has keys, only what the handshake needs, so a stranger cannot make
    /// this side take more (see
    /// [`LinkReceiver::limit_frames`](crate::LinkReceiver::limit_frames)).
    pub fn max_receive_len(&self) -> usize {
        match (&self.secure, &self.link) {
            (Some(secure), _) if !secure.is_established() => PRE_KEY_MAX_FRAME_LEN,
            (Some(_), _) | (None, LinkState::Down) => self.wire_max,
            (None, LinkState::Handshaking { .. }) => self.own_max,
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
        self.channels
            .get(&channel)
            .is_none_or(|ch| ch.queued() < self.config.max_queued)
    }

    /// Stops (`hold`) or resumes acknowledging the messages of `channel`: while the app
    /// does not take what was delivered, the sender's window fills and its sends wait.
    /// A peer that sends on regardless gets 4001 once `MAX_UNACKED` messages are
    /// unacknowledged.
    pub fn hold_acks(&mut self, channel: ChannelId, hold: bool) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        match (hold, ch.ack_limit) {
            (true, None) => ch.ack_limit = Some(ch.received),
            (false, Some(_)) => {
                ch.ack_limit = None;
                ch.ack_pending = true;
            }
            _ => {}
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
        self.channels.get(&channel).is_some_and(Channel::is_open)
    }

    /// Whether an open of the channel is under way (sent, or waiting for the link).
    pub fn is_connecting(&self, channel: ChannelId) -> bool {
        matches!(
            self.channels.get(&channel).map(|c| &c.state),
            Some(
                ChannelState::Opening
                    | ChannelState::Suspended
                    | ChannelState::Idle { last_error: None }
            )
        )
    }

    /// The code of the last refusal of the channel, if it is idle after one.
    pub fn last_error(&self, channel: ChannelId) -> Option<Code> {
        match self.channels.get(&channel).map(|c| &c.state) {
            Some(ChannelState::Idle { last_error }) => *last_error,
            _ => None,
        }
    }

    /// Whether the channel was closed (terminal).
    pub fn is_closed(&self, channel: ChannelId) -> bool {
        self.channels
            .get(&channel)
            .is_none_or(|c| c.state == ChannelState::Closed)
    }

    /// The peer app's version on an accepted channel (watch side).
    pub fn app_version(&self, channel: ChannelId) -> Option<u32> {
        self.channels.get(&channel).and_then(|c| c.app_version)
    }

    /// The package a channel belongs to.
    pub fn channel_package(&self, channel: ChannelId) -> Option<&str> {
        self.channels.get(&channel).map(|c| c.package.as_str())
    }

    // ---- inputs ----

    /// A new link is up: starts the handshake. `link_max_frame_len` is the link's limit.
    pub fn link_up(&mut self, now: Instant, link_max_frame_len: usize) {
        if !matches!(self.link, LinkState::Down) {
            self.link_down(now);
        }
        self.control.clear();
        self.link = LinkState::Handshaking {
            deadline: now + self.config.handshake_timeout,
            step: now + self.config.handshake_step_timeout,
        };
        self.wire_max = link_max_frame_len.clamp(MIN_MAX_FRAME_LEN, MAX_FRAME_LEN);
        let inner_limit = match self.secure {
            Some(_) => max_unsealed_len(self.wire_max),
            None => self.wire_max,
        };
        self.own_max = self
            .config
            .max_frame_len
            .min(inner_limit)
            .max(MIN_MAX_FRAME_LEN);
        self.hello_sent = false;
        self.pending_hello = None;
        self.peer_trusted = false;
        self.farewell = false;
        self.early = None;
        self.pairing = None;
        if self.secure.is_some() && inner_limit < MIN_MAX_FRAME_LEN {
            // The smallest frame limit a peer may announce would not fit sealed: such
            // frames would be dropped and resent forever. Refuse the link, saying why.
            let needed = (MIN_MAX_FRAME_LEN..=MAX_FRAME_LEN)
                .find(|l| max_unsealed_len(*l) >= MIN_MAX_FRAME_LEN)
                .unwrap_or(MAX_FRAME_LEN);
            self.events
                .push_back(Event::Refused(SecurityError::LinkTooSmall {
                    link: link_max_frame_len,
                    needed,
                }));
            return self.drop_link(
                Code::SECURITY,
                format!(
                    "the link carries frames of up to {link_max_frame_len} bytes; sealed links need {needed}"
                ),
            );
        }
        match &mut self.secure {
            Some(secure) => {
                secure.start();
                self.drain_secure(now);
            }
            None => {
                self.peer_trusted = true;
                // A probe says nothing of this side until its link is adopted.
                if !self.probing {
                    self.send_hello();
                }
            }
        }
        tracing::debug!(role = ?self.config.role, "link up, handshake started");
    }

    /// Secure links: the user compared the pairing codes of an
    /// [`Event::PairingRequest`]; `accept` pins the peer and lets the link come up,
    /// otherwise the link is refused (4007).
    pub fn confirm_pairing(&mut self, now: Instant, accept: bool) {
        if self.secure.is_none() {
            return;
        }
        self.prompt_answered(now, accept);
        if !accept && let Some(peer) = self.pairing.take() {
            self.remember_refused_pairing(peer, now);
        }
        if let Some(secure) = &mut self.secure {
            secure.confirm_pairing(accept);
        }
        self.drain_secure(now);
    }

    /// The user answered a pairing prompt, perhaps one whose link is gone: another
    /// prompt may now be raised, 30 s later if the answer was no.
    /// ([`confirm_pairing`](Self::confirm_pairing) calls it for the current link.)
    pub fn prompt_answered(&mut self, now: Instant, accept: bool) {
        self.prompt_until = None;
        if !accept {
            self.prompts_held_until = Some(now + PROMPT_HOLDOFF);
        }
    }

    /// A session that vets a second link from a peer while this one's link is up (a
    /// listener sees a watch reconnect before it noticed the old link died). It runs
    /// the handshake on the new link and stops there, holding the peer's Hello, and
    /// changes nothing of this session: drain it like any session, and once
    /// [`probed_peer`](Self::probed_peer) is known either
    /// [`take_over`](Self::take_over) its link (the same device: the newest
    /// authenticated link wins) or [`refuse_as_busy`](Self::refuse_as_busy) (another
    /// device). It pins no one and asks no user: an unknown device is refused as busy,
    /// a device the trust policy refuses gets that refusal.
    pub fn probe(&self, now: Instant, link_max_frame_len: usize) -> Session {
        let mut probe = Session::new(self.config.clone());
        probe.secure = self.secure.as_ref().map(SecureLink::probe);
        probe.probing = true;
        probe.link_up(now, link_max_frame_len);
        probe
    }

    /// A probe's peer once its handshake completed: its device id and, on secure
    /// links, its key.
    pub fn probed_peer(&self) -> Option<(DeviceId, Option<Fingerprint>)> {
        if !self.peer_trusted {
            return None;
        }
        let hello = self.probed.as_ref()?;
        Some((hello.device_id, self.peer_fingerprint()))
    }

    /// Whether a probe authenticated the device this session's link serves: the same
    /// key on secure links, the same device id in plaintext mode.
    pub fn is_same_peer(&self, probe: &Session) -> bool {
        let (LinkState::Up(up), Some((device, key))) = (&self.link, probe.probed_peer()) else {
            return false;
        };
        match self.secure {
            Some(_) => key.is_some() && key == self.peer_fingerprint(),
            None => device == up.peer.device_id,
        }
    }

    /// Refuses a probe's peer: this side serves another device (4002).
    pub fn refuse_as_busy(&mut self) {
        self.probed = None;
        self.control.push_back(refusal(Code::BUSY));
        self.drop_link(Code::BUSY, "another device is connected".into());
    }

    /// Moves this session to a probe's link, which has authenticated its peer: the old
    /// link is down (as if lost) and the handshake completes on the new one with the
    /// Hello the probe held, so channels resume (`resumed` when the peer's session is
    /// the same). Frames the probe produced must have reached the new link first.
    pub fn take_over(&mut self, now: Instant, mut probe: Session) {
        let Some(hello) = probe.probed.take() else {
            return;
        };
        self.link_down(now);
        let deadline = now + self.config.handshake_timeout;
        self.link = LinkState::Handshaking {
            deadline,
            step: deadline,
        };
        self.secure = probe.secure.take().map(|mut secure| {
            secure.adopt();
            secure
        });
        self.wire_max = probe.wire_max;
        self.own_max = probe.own_max;
        self.pending_hello = None;
        self.peer_trusted = true;
        self.farewell = false;
        self.early = None;
        self.pairing = None;
        self.control.clear();
        // The probe held this side's Hello back: the peer's link comes up only now.
        self.send_hello();
        self.on_hello(now, hello);
    }

    fn remember_refused_pairing(&mut self, peer: Fingerprint, now: Instant) {
        self.refused_pairings.retain(|(f, _)| *f != peer);
        if self.refused_pairings.len() == REFUSED_PAIRINGS {
            self.refused_pairings.pop_front();
        }
        self.refused_pairings.push_back((peer, now));
    }

    fn send_hello(&mut self) {
        self.hello_sent = true;
        self.control.push_back(Frame::Hello(Hello {
            min_version: *PROTOCOL_VERSIONS.start(),
            max_version: *PROTOCOL_VERSIONS.end(),
            role: self.config.role,
            device_id: self.config.device_id,
            max_frame_len: self.own_max as u32,
            capabilities: Capabilities::ALL,
            resume_token: self.config.resume_token,
        }));
    }

    /// Acts on what the secure layer reported.
    fn drain_secure(&mut self, now: Instant) {
        loop {
            let Some(event) = self.secure.as_mut().and_then(|s| s.events.pop_front()) else {
                return;
            };
            match event {
                SecureEvent::Trusted => {
                    self.pairing = None;
                    if let Some(secure) = &self.secure
                        && let (Some(fingerprint), Some(suite)) = (secure.peer(), secure.suite())
                    {
                        self.events.push_back(Event::PeerAuthenticated {
                            fingerprint,
                            suite,
                            code: secure.pairing_code(),
                        });
                    }
                    self.peer_trusted = true;
                    if !self.hello_sent && !self.probing {
                        self.send_hello();
                    }
                    if let Some(hello) = self.pending_hello.take() {
                        self.on_hello(now, hello);
                    }
                }
                SecureEvent::PairingRequest { .. } if self.probing => {
                    // A device not known here while another is served.
                    self.refuse_as_busy();
                }
                SecureEvent::PairingRequest { fingerprint, code } => {
                    let refused_lately = self
                        .refused_pairings
                        .iter()
                        .any(|(f, at)| *f == fingerprint && now < *at + PAIRING_HOLDOFF);
                    let busy = [self.prompt_until, self.prompts_held_until]
                        .into_iter()
                        .flatten()
                        .any(|until| now < until);
                    if refused_lately || busy {
                        tracing::info!(peer = %fingerprint, refused_lately, "not asking the user now");
                        self.security_failure(SecurityError::PairingRejected { fingerprint });
                        continue;
                    }
                    self.pairing = Some(fingerprint);
                    let wait = self.secure.as_ref().map(SecureLink::pairing_timeout);
                    self.prompt_until = wait.map(|wait| now + wait);
                    if let (LinkState::Handshaking { deadline, step }, Some(wait)) =
                        (&mut self.link, wait)
                    {
                        // The user takes their time; the peer waits too.
                        *deadline = (*deadline).max(now + wait);
                        *step = *deadline;
                    }
                    self.events
                        .push_back(Event::PairingRequest { fingerprint, code });
                }
                SecureEvent::Pinned(fingerprint) => {
                    self.events.push_back(Event::PeerPinned { fingerprint });
                }
                SecureEvent::Failed(error) => self.security_failure(error),
            }
        }
    }

    /// Refuses the link: tells the peer the code (unless it refused us), then drops it.
    /// The peer gets a fixed text, never the details (which key is pinned, what failed),
    /// which stay in the local event.
    fn security_failure(&mut self, error: SecurityError) {
        let code = error.code();
        let reason = error.to_string();
        let refused_by_peer = matches!(error, SecurityError::RefusedByPeer { .. });
        self.events.push_back(Event::Refused(error));
        if !refused_by_peer {
            self.control.push_back(refusal(code));
        }
        self.drop_link(code, reason);
    }

    /// The link is gone. Open channels are suspended until the next link.
    pub fn link_down(&mut self, _now: Instant) {
        if matches!(self.link, LinkState::Down) {
            return;
        }
        let was_up = self.is_link_up();
        self.link = LinkState::Down;
        self.control.clear();
        self.farewell = false;
        for channel in self.channels.values_mut() {
            channel.rewind();
            match channel.state {
                ChannelState::Open => {
                    channel.state = ChannelState::Suspended;
                    self.events.push_back(Event::Channel(
                        channel.id,
                        ChannelEvent::Close {
                            code: Code::CONNECTION_LOST,
                            reason: "link lost".into(),
                            by: ClosedBy::Link,
                            reopens: true,
                        },
                    ));
                }
                ChannelState::Opening => {
                    channel.state = ChannelState::Idle { last_error: None };
                }
                _ => {}
            }
        }
        self.files_on_link_down();
        if was_up {
            self.events.push_back(Event::LinkDown);
        }
        tracing::debug!(role = ?self.config.role, "link down");
    }

    /// When the handshake under way is given up: at its overall deadline, or sooner
    /// while the keys do not exist yet and the peer's next step is late.
    fn handshake_deadline(&self) -> Option<Instant> {
        let LinkState::Handshaking { deadline, step } = self.link else {
            return None;
        };
        let keyed = self.secure.as_ref().is_some_and(SecureLink::is_established);
        Some(if keyed { deadline } else { deadline.min(step) })
    }

    /// One whole frame arrived from the link.
    pub fn handle_frame(&mut self, now: Instant, bytes: Bytes) {
        if let LinkState::Handshaking { deadline, step } = &mut self.link {
            *step = (*step)
                .max(now + self.config.handshake_step_timeout)
                .min(*deadline);
        }
        let inner_max = match &self.link {
            LinkState::Down => return,
            LinkState::Handshaking { .. } => self.own_max,
            LinkState::Up(up) => up.limits.max_frame_len,
        };
        let frame = match Frame::decode(bytes, self.max_receive_len()) {
            Ok(frame) => frame,
            Err(error) => return self.on_decode_error(error),
        };
        let frame = match (&self.secure, frame) {
            (None, Frame::Handshake(_)) => {
                return self.security_failure(SecurityError::PeerWantsEncryption);
            }
            (None, frame) => frame,
            (Some(_), frame) => match self.unseal(now, frame, inner_max) {
                Some(frame) => frame,
                None => return,
            },
        };
        if let LinkState::Up(up) = &mut self.link {
            up.last_rx = now;
        }
        self.on_frame(now, frame);
    }

    /// Secure links: runs handshake frames, opens sealed ones, refuses the rest. Returns
    /// the inner frame to handle, if any. Once keys exist a frame in the clear changes
    /// nothing: it is dropped (anyone on the wire can send one).
    fn unseal(&mut self, now: Instant, frame: Frame, inner_max: usize) -> Option<Frame> {
        let secure = self.secure.as_mut()?;
        match frame {
            Frame::Handshake(step) => {
                secure.on_handshake(step);
                self.drain_secure(now);
                // A sealed frame that overtook this step (a Hello) opens now, or never.
                let early = self.early.take()?;
                let body = self.secure.as_mut()?.open_early(early)?;
                match Frame::decode_unsealed(body, inner_max) {
                    Ok(frame) => Some(frame),
                    Err(error) => {
                        self.on_decode_error(error);
                        None
                    }
                }
            }
            Frame::Sealed(sealed) if secure.is_established() => self.open(sealed, inner_max),
            Frame::Sealed(sealed) => {
                // Overtook the last handshake step (links may reorder): kept (one, at
                // most 512 bytes) and opened once the keys exist.
                tracing::debug!("sealed frame before the session keys, held");
                self.early = Some(sealed);
                None
            }
            other if secure.is_established() => {
                tracing::debug!(kind = ?other.kind(), "plaintext frame after the keys, dropped");
                None
            }
            Frame::Error(report) => {
                self.security_failure(SecurityError::RefusedByPeer {
                    code: report.code,
                    message: sanitize(&report.message),
                    authenticated: false,
                });
                None
            }
            other => {
                let kind = match other {
                    Frame::Hello(_) => "hello",
                    Frame::Data(_) => "data",
                    _ => "control",
                };
                self.security_failure(SecurityError::Plaintext(kind));
                None
            }
        }
    }

    fn open(&mut self, sealed: Sealed, inner_max: usize) -> Option<Frame> {
        let secure = self.secure.as_mut()?;
        match secure.open(sealed) {
            Ok(Some(body)) => match Frame::decode_unsealed(body, inner_max) {
                Ok(frame) => Some(frame),
                Err(error) => {
                    self.on_decode_error(error);
                    None
                }
            },
            Ok(None) => {
                tracing::debug!("replayed or late sealed frame dropped");
                None
            }
            Err(error) => {
                self.security_failure(error);
                None
            }
        }
    }

    /// Time passed: fires whatever deadline is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.link {
            LinkState::Down => {}
            LinkState::Handshaking { .. } => {
                if self.handshake_deadline().is_some_and(|d| now >= d) {
                    if let Some(peer) = self.pairing.take() {
                        // Unanswered counts as no.
                        self.remember_refused_pairing(peer, now);
                        self.prompt_answered(now, false);
                    }
                    self.drop_link(Code::TIMEOUT, "handshake timed out".into());
                }
            }
            LinkState::Up(up) => {
                if now >= up.last_rx + self.config.link_timeout {
                    self.drop_link(Code::TIMEOUT, "peer stopped answering".into());
                    return;
                }
                if now >= up.next_ping {
                    up.next_ping = now + self.config.ping_interval;
                    let nonce = now.duration_since(up.last_rx).as_nanos() as u64;
                    self.control.push_back(Frame::Ping(Ping { nonce }));
                }
                let rto = self.config.retransmit_timeout;
                let resend = !self.config.reliable_link;
                for channel in self.channels.values_mut() {
                    if resend && channel.retransmit_deadline(rto).is_some_and(|t| now >= t) {
                        tracing::trace!(channel = channel.id.0, "retransmit timeout");
                        channel.on_retransmit_timeout(now);
                    }
                    if channel.state == ChannelState::Opening
                        && let Some((sent, resume)) = channel.open_sent
                        && now >= sent + rto
                    {
                        tracing::trace!(channel = channel.id.0, "open not answered, sent again");
                        self.control.push_back(start_open(channel, now, resume));
                    }
                    if matches!(channel.state, ChannelState::Idle { .. })
                        && let Some((at, delay)) = channel.reopen
                        && now >= at
                    {
                        tracing::debug!(channel = channel.id.0, "reopening");
                        channel.reopen = Some((now + delay, delay));
                        self.control.push_back(start_open(channel, now, false));
                    }
                }
                if resend {
                    self.files_on_timeout(now);
                }
            }
        }
    }

    // ---- commands ----

    /// Watch side: a channel to the phone app `package`, optionally requiring its
    /// signature. Opens now if the link is up, otherwise when it comes up.
    pub fn open_channel(
        &mut self,
        now: Instant,
        package: &str,
        signature: Option<&str>,
    ) -> Result<ChannelId, CommandError> {
        if self.config.role != Role::Watch {
            return Err(CommandError::WrongRole(self.config.role));
        }
        let id = ChannelId(self.next_channel);
        self.next_channel = self.next_channel.wrapping_add(1).max(1);
        let mut channel = self.new_channel(id, package.into(), signature.map(Into::into));
        if self.is_link_up() {
            self.control.push_back(start_open(&mut channel, now, false));
        }
        self.channels.insert(id, channel);
        Ok(id)
    }

    /// Watch side: tries again to open a channel that was refused (e.g. after the app was
    /// installed). No effect on a channel that is open or opening.
    pub fn retry_open(&mut self, now: Instant, channel: ChannelId) {
        let up = self.is_link_up();
        if let Some(ch) = self.channels.get_mut(&channel)
            && matches!(ch.state, ChannelState::Idle { .. })
        {
            if up {
                self.control.push_back(start_open(ch, now, false));
            } else {
                ch.state = ChannelState::Idle { last_error: None };
            }
        }
    }

    /// Queues a message. Its outcome arrives as [`Event::Delivered`] or
    /// [`Event::SendFailed`] with the returned id.
    pub fn send(
        &mut self,
        channel: ChannelId,
        content_type: ContentType,
        exchange: Exchange,
        payload: Bytes,
    ) -> Result<SendId, CommandError> {
        let max = self.limits().max_message_len();
        if payload.len() > max {
            return Err(CommandError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let max_queued = self.config.max_queued;
        let ch = self
            .channels
            .get_mut(&channel)
            .ok_or(CommandError::ChannelClosed)?;
        match ch.state {
            ChannelState::Closed => return Err(CommandError::ChannelClosed),
            // A channel the phone closed or refused after it had been open waits to
            // reopen; one refused at its first open fails at once, with the refusal.
            ChannelState::Idle {
                last_error: Some(code),
            } if ch.reopen.is_none() => {
                return Err(CommandError::Refused(code));
            }
            _ => {}
        }
        if ch.queued() >= max_queued {
            return Err(CommandError::QueueFull(max_queued));
        }
        let id = SendId(self.next_send);
        self.next_send += 1;
        ch.enqueue(Outgoing {
            id,
            content_type,
            exchange,
            payload,
        });
        Ok(id)
    }

    /// Gives up on a send (e.g. its timeout passed). Returns whether it was withdrawn
    /// before reaching the wire; a message already sent stays in the sequence and may
    /// still be delivered.
    pub fn cancel_send(&mut self, channel: ChannelId, id: SendId) -> bool {
        if self
            .channels
            .get_mut(&channel)
            .is_some_and(|ch| ch.cancel(id))
        {
            return true;
        }
        // Phone side, after the watch restarted: waiting, or moved to the new channel.
        for orphans in self.orphans.values_mut() {
            if let Some(at) = orphans.iter().position(|(_, m)| m.id == id) {
                orphans.remove(at);
                self.orphans.retain(|_, o| !o.is_empty());
                return true;
            }
        }
        self.channels.values_mut().any(|ch| ch.cancel(id))
    }

    /// Closes a channel with a code and reason. Unfinished sends fail with 1006.
    pub fn close(&mut self, channel: ChannelId, code: Code, reason: &str) {
        let up = self.is_link_up();
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if ch.state == ChannelState::Closed {
            return;
        }
        let notify_peer = matches!(
            ch.state,
            ChannelState::Open | ChannelState::Opening | ChannelState::Suspended
        );
        if ch.is_open() && ch.ack_pending && up {
            // What the app has is acknowledged before the close, so the peer does not
            // send it again to whoever opens this package next.
            ch.ack_pending = false;
            self.control.push_back(Frame::Ack(Ack {
                channel,
                seq: ch.acknowledged(),
            }));
        }
        ch.state = ChannelState::Closed;
        ch.reopen = None;
        let failed = ch.drain_sends();
        self.files_on_channel_closed(channel, Code::CONNECTION_LOST);
        self.note_closed(channel);
        let mut reason = reason.to_string();
        truncate_utf8(&mut reason, interconnect_proto::MAX_REASON_LEN);
        let frame = Close {
            channel,
            code,
            reason: reason.clone(),
        };
        if notify_peer {
            if self.is_link_up() {
                self.control.push_back(Frame::Close(frame));
            } else {
                self.unsent_closes.push(frame);
            }
        }
        for id in failed {
            self.events
                .push_back(Event::SendFailed(channel, id, Code::CONNECTION_LOST));
        }
        self.events.push_back(Event::Channel(
            channel,
            ChannelEvent::Close {
                code,
                reason,
                by: ClosedBy::Local,
                reopens: false,
            },
        ));
    }

    /// The app has taken the message `receipt` names: with
    /// [`Acknowledge::WhenTaken`](crate::Acknowledge::WhenTaken) it is acknowledged to
    /// the peer now (with everything before it).
    pub fn taken(&mut self, receipt: Receipt) {
        let Some(ch) = self.channels.get_mut(&receipt.channel) else {
            return;
        };
        if ch.life != receipt.life || receipt.seq > ch.received {
            return;
        }
        if let Some(taken) = &mut ch.taken
            && receipt.seq > *taken
        {
            *taken = receipt.seq;
            ch.ack_pending = true;
        }
    }

    fn new_channel(&self, id: ChannelId, package: String, signature: Option<String>) -> Channel {
        let mut channel = Channel::new(id, package, signature);
        if self.config.acknowledge == Acknowledge::WhenTaken {
            channel.taken = Some(0);
        }
        channel
    }

    /// Watch side: asks which version of `package` the phone has registered. The answer
    /// arrives as [`Event::VersionReply`] with the returned id. Needs the link up.
    pub fn query_version(&mut self, package: &str) -> Result<u32, CommandError> {
        if self.config.role == Role::Phone {
            // Apps register on the phone; a watch has none to report.
            return Err(CommandError::WrongRole(Role::Phone));
        }
        if !self.is_link_up() {
            return Err(CommandError::ChannelClosed);
        }
        let request = self.next_query;
        self.next_query = self.next_query.wrapping_add(1);
        self.control.push_back(Frame::VersionQuery(VersionQuery {
            request,
            package: package.into(),
        }));
        Ok(request)
    }

    /// Phone side: whether the watch restarted and has not opened `package` again
    /// yet. The app's sends wait for that open rather than fail.
    pub fn awaits_reopen(&self, package: &str) -> bool {
        self.orphans_of(package).next().is_some()
    }

    /// The orphan entries of `package`, whichever device they were for.
    fn orphans_of(&self, package: &str) -> impl Iterator<Item = &(String, Owner)> {
        self.orphans
            .range((package.to_string(), Owner::default())..)
            .map(|(key, _)| key)
            .take_while(move |(p, _)| p == package)
    }

    /// Takes the orphans of `package`: those held for `owner` are returned, in the
    /// order they were sent; those held for any other device fail with `code`.
    fn take_orphans(&mut self, package: &str, owner: Option<Owner>, code: Code) -> Vec<Outgoing> {
        let keys: Vec<(String, Owner)> = self.orphans_of(package).cloned().collect();
        let mut mine = Vec::new();
        for key in keys {
            let Some(orphans) = self.orphans.remove(&key) else {
                continue;
            };
            if Some(key.1) == owner {
                mine.extend(orphans.into_iter().map(|(_, m)| m));
            } else {
                for (channel, message) in orphans {
                    self.events
                        .push_back(Event::SendFailed(channel, message.id, code));
                }
            }
        }
        mine
    }

    /// Phone side: registers (or updates) an app, attached.
    ///
    /// A registration that replaces another (the package reinstalled, or another app
    /// claiming it) closes the package's channels: with 1007 where the watch asked for a
    /// signature the new registration does not have, else with 1002. The watch opens
    /// again, and that open is checked against the new registration like any other, so a
    /// channel never passes from one registration to the next unchecked.
    pub fn register_app(&mut self, package: &str, version: u32, signature: Option<&str>) {
        if self.apps.contains_key(package) {
            let open: Vec<(ChannelId, Option<String>)> = self
                .channels
                .values()
                .filter(|c| c.package == package && c.state != ChannelState::Closed)
                .map(|c| (c.id, c.signature.clone()))
                .collect();
            for (id, wanted) in open {
                match wanted {
                    Some(wanted) if signature != Some(wanted.as_str()) => self.close(
                        id,
                        Code::SIGNATURE_MISMATCH,
                        "the app registered again with another signature",
                    ),
                    _ => self.close(id, Code::APP_NOT_CONNECTED, "the app registered again"),
                }
            }
            self.take_orphans(package, None, Code::CONNECTION_LOST);
        }
        self.apps.insert(
            package.into(),
            AppEntry {
                version,
                signature: signature.map(Into::into),
                attached: true,
            },
        );
    }

    /// Phone side: marks a registered app attached or detached. Detaching closes its
    /// channels with 1002.
    pub fn set_app_attached(&mut self, package: &str, attached: bool) {
        if let Some(app) = self.apps.get_mut(package) {
            app.attached = attached;
        }
        if !attached {
            self.take_orphans(package, None, Code::CONNECTION_LOST);
            let ids: Vec<ChannelId> = self
                .channels
                .values()
                .filter(|c| c.package == package && c.state != ChannelState::Closed)
                .map(|c| c.id)
                .collect();
            for id in ids {
                self.close(id, Code::APP_NOT_CONNECTED, "app detached");
            }
        }
    }

    /// Phone side: removes an app; its channels close with 1001.
    pub fn unregister_app(&mut self, package: &str) {
        self.set_app_attached(package, false);
        self.apps.remove(package);
    }

    // ---- outputs ----

    /// The next frame to put on the link, encoded.
    ///
    /// A secure session fails closed: whatever state an error left it in, nothing leaves
    /// in the clear but handshake steps and, before keys exist, the fixed refusal.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        loop {
            if let Some(step) = self.secure.as_mut().and_then(|s| s.out.pop_front()) {
                match step.encode(self.wire_max, &mut self.scratch) {
                    Ok(()) => return Some(self.scratch.split().freeze()),
                    Err(error) => tracing::warn!(%error, "handshake frame not sent"),
                }
                continue;
            }
            let frame = self.next_frame(now)?;
            let max = self.limits().max_frame_len;
            let frame = match &self.secure {
                None => frame,
                Some(secure) if secure.is_established() => {
                    match self.seal(&frame, max) {
                        Ok(()) => return Some(self.scratch.split().freeze()),
                        Err(error) => {
                            tracing::warn!(%error, kind = ?frame.kind(), "frame not sealed");
                        }
                    }
                    continue;
                }
                Some(_) => match frame {
                    Frame::Error(report) => refusal(report.code),
                    other => {
                        tracing::debug!(kind = ?other.kind(), "no session keys: frame not sent");
                        continue;
                    }
                },
            };
            match frame.encode(max, &mut self.scratch) {
                Ok(()) => return Some(self.scratch.split().freeze()),
                Err(error) => tracing::warn!(%error, kind = ?frame.kind(), "frame not sent"),
            }
        }
    }

    /// Seals `frame` into `scratch`; the error says why it was not (for the log).
    fn seal(&mut self, frame: &Frame, max: usize) -> Result<(), String> {
        self.plain.clear();
        let bulk = frame
            .encode_unsealed_head(max, &mut self.plain)
            .map_err(|e| e.to_string())?;
        let secure = self.secure.as_mut().ok_or("no secure layer")?;
        secure
            .seal(&self.plain, bulk, self.wire_max, &mut self.scratch)
            .map_err(|e| e.to_string())
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.link {
            LinkState::Down => None,
            LinkState::Handshaking { .. } => self.handshake_deadline(),
            LinkState::Up(up) => {
                let rto = self.config.retransmit_timeout;
                let mut next = (up.last_rx + self.config.link_timeout).min(up.next_ping);
                let resend = !self.config.reliable_link;
                for channel in self.channels.values() {
                    if resend && let Some(t) = channel.retransmit_deadline(rto) {
                        next = next.min(t);
                    }
                    if channel.state == ChannelState::Opening
                        && let Some((sent, _)) = channel.open_sent
                    {
                        next = next.min(sent + rto);
                    }
                    if matches!(channel.state, ChannelState::Idle { .. })
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

    // ---- internals ----

    fn next_frame(&mut self, now: Instant) -> Option<Frame> {
        if self.farewell {
            // Only the error report goes out on a link being dropped; the data and file
            // schedulers resend on the next link.
            while let Some(frame) = self.control.pop_front() {
                if matches!(frame, Frame::Error(_)) {
                    return Some(frame);
                }
            }
            return None;
        }
        if let Some(frame) = self.control.pop_front() {
            return Some(frame);
        }
        if !self.is_link_up() {
            return None;
        }
        if let Some(ch) = self.channels.values_mut().find(|c| c.ack_pending) {
            ch.ack_pending = false;
            if ch.is_open() {
                return Some(Frame::Ack(Ack {
                    channel: ch.id,
                    seq: ch.acknowledged(),
                }));
            }
        }
        if let Some(frame) = self.next_data(now) {
            return Some(frame);
        }
        self.next_file_frame(now)
    }

    /// Round-robin over open channels with something to send.
    fn next_data(&mut self, now: Instant) -> Option<Frame> {
        let window = self.config.max_in_flight;
        let max_message = self.limits().max_message_len();
        let after = match self.rr_last {
            Some(last) => (Bound::Excluded(last), Bound::Unbounded),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        let candidate = self
            .channels
            .range(after)
            .chain(self.channels.iter())
            .find(|(_, c)| c.is_open() && c.has_data(window))
            .map(|(id, _)| *id)?;
        self.rr_last = Some(candidate);
        let ch = self.channels.get_mut(&candidate)?;
        match ch.next_data(now, window, |p| p.len() <= max_message) {
            Ok(data) => data.map(Frame::Data),
            Err(message) => {
                self.events
                    .push_back(Event::SendFailed(candidate, message.id, Code::TOO_LARGE));
                self.next_data(now)
            }
        }
    }

    fn drop_link(&mut self, code: Code, reason: String) {
        // The driver logs the loss (and a refusal, once, as a warning).
        tracing::debug!(%code, %reason, "dropping link");
        self.farewell = true;
        self.events.push_back(Event::DropLink { code, reason });
    }

    /// A peer error: tell the peer why, then drop the link.
    fn protocol_error(&mut self, code: Code, reason: String) {
        self.control.push_back(Frame::Error(ErrorReport {
            channel: None,
            code,
            message: reason.clone(),
        }));
        self.drop_link(code, reason);
    }

    fn on_decode_error(&mut self, error: DecodeError) {
        let code = match error {
            DecodeError::TooLarge { .. } => Code::TOO_LARGE,
            _ => Code::PROTOCOL_ERROR,
        };
        self.protocol_error(code, error.to_string());
    }

    fn on_frame(&mut self, now: Instant, frame: Frame) {
        if let Frame::Hello(hello) = frame {
            return self.on_hello(now, hello);
        }
        if !self.is_link_up() {
            if let Frame::Error(report) = frame {
                // 4002: the peer serves another device; reported like the security
                // refusals so the owner sees it, but never lasting (SecurityError::is_lasting).
                if matches!(
                    report.code,
                    Code::UNTRUSTED_PEER | Code::SECURITY | Code::BUSY
                ) {
                    return self.security_failure(SecurityError::RefusedByPeer {
                        code: report.code,
                        message: sanitize(&report.message),
                        authenticated: self.secure.is_some(),
                    });
                }
                // The peer refuses the link for another reason: dropped, tried again.
                return self.drop_link(
                    report.code,
                    format!("refused by the peer: {}", sanitize(&report.message)),
                );
            }
            return self.protocol_error(
                Code::PROTOCOL_ERROR,
                format!("{:?} frame before the handshake", frame.kind()),
            );
        }
        match frame {
            Frame::Ping(ping) => self
                .control
                .push_back(Frame::Pong(Pong { nonce: ping.nonce })),
            Frame::Pong(_) => {}
            Frame::Error(report) => self.on_error_report(report),
            Frame::Open(open) => self.on_open(now, open),
            Frame::Accept(accept) => self.on_accept(now, accept),
            Frame::Reject(reject) => self.on_reject(now, reject),
            Frame::Data(data) => self.on_data(data),
            Frame::Ack(ack) => self.on_ack(now, ack),
            Frame::Close(close) => self.on_close(now, close),
            Frame::VersionQuery(query) => self.on_version_query(query),
            Frame::VersionReply(reply) => self.events.push_back(Event::VersionReply {
                request: reply.request,
                version: reply.version,
            }),
            Frame::FileOffer(offer) => self.on_file_offer(offer),
            Frame::FileAccept(accept) => self.on_file_accept(now, accept),
            Frame::FileChunk(chunk) => self.on_file_chunk(chunk),
            Frame::FileAck(ack) => self.on_file_ack(now, ack),
            Frame::FileComplete(complete) => self.on_file_complete(complete),
            Frame::FileCancel(cancel) => self.on_file_cancel(cancel),
            Frame::Hello(_) => {}
            other => tracing::debug!(kind = ?other.kind(), "ignored frame"),
        }
    }

    fn on_hello(&mut self, now: Instant, hello: Hello) {
        if self.probing {
            if self.probed.is_none() && !self.farewell {
                self.probed = Some(hello);
            }
            return;
        }
        if self.secure.is_some() && !self.hello_sent {
            // The peer trusts us already; we do not trust it yet (pairing in progress).
            self.pending_hello = Some(hello);
            return;
        }
        if !matches!(self.link, LinkState::Handshaking { .. }) {
            if self.peer_token == Some(hello.resume_token) {
                return; // a duplicate of the hello that completed this handshake
            }
            return self.protocol_error(Code::PROTOCOL_ERROR, "second hello on a link".into());
        }
        let low = hello.min_version.max(*PROTOCOL_VERSIONS.start());
        let high = hello.max_version.min(*PROTOCOL_VERSIONS.end());
        if low > high {
            return self.protocol_error(
                Code::VERSION_MISMATCH,
                format!(
                    "no common protocol version: peer speaks {}..={}, we speak {:?}",
                    hello.min_version, hello.max_version, PROTOCOL_VERSIONS
                ),
            );
        }
        if hello.role == self.config.role {
            return self.protocol_error(
                Code::PROTOCOL_ERROR,
                format!("peer has our own role {:?}", hello.role),
            );
        }
        let limits = Limits::new(self.own_max).negotiate(Limits::new(hello.max_frame_len as usize));
        let peer_key = self.peer_fingerprint();
        let resumed =
            self.peer_token == Some(hello.resume_token) && self.peer_token_key == peer_key;
        self.peer_token = Some(hello.resume_token);
        self.peer_token_key = peer_key;
        let previous = self.peer_owner.replace((hello.device_id.0, peer_key));
        let peer = PeerInfo {
            role: hello.role,
            device_id: hello.device_id,
            version: high,
            max_frame_len: limits.max_frame_len,
        };
        self.link = LinkState::Up(LinkUp {
            peer: peer.clone(),
            limits,
            last_rx: now,
            next_ping: now + self.config.ping_interval,
        });
        tracing::debug!(role = ?self.config.role, resumed, "handshake complete");
        self.events.push_back(Event::LinkUp { peer, resumed });
        if !resumed {
            self.forget_peer_state(previous.unwrap_or_default());
        }
        for close in self.unsent_closes.drain(..) {
            self.control.push_back(Frame::Close(close));
        }
        if self.config.role == Role::Watch {
            for ch in self.channels.values_mut() {
                match ch.state {
                    ChannelState::Suspended => {
                        self.control.push_back(start_open(ch, now, resumed));
                    }
                    ChannelState::Idle { last_error: None } => {
                        self.control.push_back(start_open(ch, now, false));
                    }
                    ChannelState::Idle { .. } if ch.reopen.is_some() => {
                        self.control.push_back(start_open(ch, now, false));
                    }
                    _ => {}
                }
            }
        }
    }

    /// The peer started a new logical session (or another device came in its place):
    /// what it held of ours is gone. `previous` is the device the channels were for.
    fn forget_peer_state(&mut self, previous: Owner) {
        match self.config.role {
            Role::Watch => {
                for ch in self.channels.values_mut() {
                    if ch.state != ChannelState::Closed {
                        ch.restart();
                    }
                }
            }
            Role::Phone => {
                let ids: Vec<ChannelId> = self.channels.keys().copied().collect();
                for id in ids {
                    if let Some(mut ch) = self.channels.remove(&id) {
                        // The app's sends wait for the watch to open the package again.
                        let orphans = self
                            .orphans
                            .entry((ch.package.clone(), previous))
                            .or_default();
                        orphans.extend(ch.take_unacknowledged().into_iter().map(|m| (id, m)));
                    }
                    // A watch that restarted may offer the same file again: keep
                    // what arrived of it.
                    self.abandon_incoming(id);
                    self.files_on_channel_closed(id, Code::CONNECTION_LOST);
                }
            }
        }
    }

    fn on_error_report(&mut self, report: ErrorReport) {
        match report.channel {
            Some(channel) if self.channels.contains_key(&channel) => {
                self.events.push_back(Event::Channel(
                    channel,
                    ChannelEvent::Error {
                        code: report.code,
                        message: report.message,
                    },
                ));
            }
            _ => {
                // The link drops after it; the driver logs that once.
                tracing::debug!(code = %report.code, message = %report.message, "peer reported an error")
            }
        }
    }

    fn reject(&mut self, channel: ChannelId, code: Code, reason: String) {
        self.control.push_back(Frame::Reject(Reject {
            channel,
            code,
            reason,
        }));
    }

    /// Phone side: a watch app asks for a channel to one of our apps.
    fn on_open(&mut self, now: Instant, open: Open) {
        if self.config.role != Role::Phone {
            return self.protocol_error(Code::PROTOCOL_ERROR, "open sent to a watch".into());
        }
        let Some(app) = self.apps.get(&open.package) else {
            return self.reject(
                open.channel,
                Code::APP_UNINSTALLED,
                format!("no app with package {} is installed", open.package),
            );
        };
        if !app.attached {
            return self.reject(
                open.channel,
                Code::APP_NOT_CONNECTED,
                format!("app {} is not connected", open.package),
            );
        }
        if let Some(wanted) = &open.signature
            && app.signature.as_deref() != Some(wanted.as_str())
        {
            return self.reject(
                open.channel,
                Code::SIGNATURE_MISMATCH,
                format!("app {} has a different signature", open.package),
            );
        }
        let version = app.version;
        if let Some(ch) = self.channels.get(&open.channel)
            && ch.package != open.package
            && ch.state != ChannelState::Closed
        {
            // A channel id names one package for as long as the channel lives: another
            // package's open on it would inherit the first app's messages.
            return self.reject(
                open.channel,
                Code::PROTOCOL_ERROR,
                format!("channel {} belongs to another package", open.channel.0),
            );
        }
        if let Some(ch) = self.channels.get(&open.channel)
            && ch.is_open()
            && ch.package == open.package
        {
            // The open was sent again (our accept was lost, or the open duplicated):
            // answer again without touching the channel, as the first time (the count
            // received is today's).
            let received_seq = ch.acknowledged();
            self.control.push_back(Frame::Accept(Accept {
                channel: open.channel,
                app_version: version,
                received_seq,
                resumed: ch.resumed,
            }));
            return;
        }
        // One channel per package: a new one replaces an older one.
        let stale: Vec<ChannelId> = self
            .channels
            .values()
            .filter(|c| {
                c.package == open.package && c.id != open.channel && c.state != ChannelState::Closed
            })
            .map(|c| c.id)
            .collect();
        for id in stale {
            self.close(id, Code::OTHERS, "replaced by a new channel");
        }
        // A channel this side still holds resumes whether or not the open asked for it:
        // the watch may not know that an earlier open was accepted (the accept was lost
        // with the link), and it has then received nothing (`received_seq` is 0).
        let resumable = self.channels.get(&open.channel).is_some_and(|c| {
            c.state == ChannelState::Suspended
                && c.package == open.package
                && open.received_seq <= c.last_sent_seq()
        });
        let mut delivered = Vec::new();
        let (is_reconnected, received) = if resumable {
            match self.channels.get_mut(&open.channel) {
                Some(ch) => {
                    delivered = ch.resume(now, open.received_seq);
                    ch.state = ChannelState::Open;
                    // What the app has not taken stays the sender's to resend.
                    (true, ch.acknowledged())
                }
                None => (false, 0),
            }
        } else {
            // The watch restarted the channel: what it had not acknowledged is sent
            // again, after what an earlier channel of the package left for this device.
            // What was held for another device fails: it took the channel.
            let mut again =
                self.take_orphans(&open.package, self.peer_owner, Code::CONNECTION_LOST);
            if let Some(mut old) = self.channels.remove(&open.channel)
                && old.package == open.package
            {
                again.extend(old.take_unacknowledged());
                self.files_on_channel_closed(open.channel, Code::CONNECTION_LOST);
            }
            // The signature the watch asked for, checked again if the app registers anew.
            let mut ch = self.new_channel(open.channel, open.package.clone(), open.signature);
            for message in again {
                ch.enqueue(message);
            }
            ch.state = ChannelState::Open;
            self.channels.insert(open.channel, ch);
            (false, 0)
        };
        if let Some(ch) = self.channels.get_mut(&open.channel) {
            ch.was_open = true;
            ch.app_version = Some(version);
            ch.resumed = resumable;
        }
        for send in delivered {
            self.events.push_back(Event::Delivered(open.channel, send));
        }
        self.control.push_back(Frame::Accept(Accept {
            channel: open.channel,
            app_version: version,
            received_seq: received,
            resumed: resumable,
        }));
        self.events.push_back(Event::Channel(
            open.channel,
            ChannelEvent::Open { is_reconnected },
        ));
        self.files_on_channel_open(now, open.channel, !resumable);
    }

    /// Watch side: the phone accepted our open.
    fn on_accept(&mut self, now: Instant, accept: Accept) {
        let Some(ch) = self.channels.get_mut(&accept.channel) else {
            return;
        };
        if ch.state != ChannelState::Opening {
            return;
        }
        let delivered = if accept.resumed {
            if accept.received_seq > ch.last_sent_seq() {
                return self.protocol_error(
                    Code::PROTOCOL_ERROR,
                    "accept acknowledges messages never sent".into(),
                );
            }
            ch.resume(now, accept.received_seq)
        } else {
            ch.restart();
            Vec::new()
        };
        // Reopened after a link drop, or after the phone closed it or restarted.
        let is_reconnected = ch.was_open;
        ch.reopen = None;
        ch.state = ChannelState::Open;
        ch.was_open = true;
        ch.app_version = Some(accept.app_version);
        let id = ch.id;
        for send in delivered {
            self.events.push_back(Event::Delivered(id, send));
        }
        self.events
            .push_back(Event::Channel(id, ChannelEvent::Open { is_reconnected }));
        self.files_on_channel_open(now, id, !accept.resumed);
    }

    /// Watch side: the phone refused our open.
    fn on_reject(&mut self, now: Instant, reject: Reject) {
        let Some(ch) = self.channels.get_mut(&reject.channel) else {
            return;
        };
        if ch.state != ChannelState::Opening {
            return;
        }
        ch.state = ChannelState::Idle {
            last_error: Some(reject.code),
        };
        // A channel that had been open waits for the phone app to come back (its sends
        // wait too); one refused at its first open is over.
        let reopens = ch.was_open;
        let announced = ch.reopen.is_some();
        if reopens {
            ch.restart();
            let delay = ch
                .reopen
                .map_or(REOPEN_FIRST, |(_, d)| (d * 2).min(REOPEN_MAX));
            ch.reopen = Some((now + delay, delay));
        } else {
            for send in ch.drain_sends() {
                self.events
                    .push_back(Event::SendFailed(reject.channel, send, reject.code));
            }
        }
        if reopens {
            self.files_on_channel_paused(reject.channel, reject.code);
        } else {
            self.files_on_channel_closed(reject.channel, reject.code);
        }
        if announced {
            return tracing::debug!(channel = reject.channel.0, code = %reject.code, "reopen refused");
        }
        if reopens {
            self.events.push_back(Event::Channel(
                reject.channel,
                ChannelEvent::Close {
                    code: reject.code,
                    reason: reject.reason.clone(),
                    by: ClosedBy::Peer,
                    reopens: true,
                },
            ));
        }
        self.events.push_back(Event::Channel(
            reject.channel,
            ChannelEvent::Error {
                code: reject.code,
                message: reject.reason,
            },
        ));
    }

    fn on_data(&mut self, data: interconnect_proto::Data) {
        // One number both ways: a message this side could not send is not taken either,
        // even when the peer's sub-header left room for it in the frame.
        if let LinkState::Up(up) = &self.link
            && data.payload.len() > up.limits.max_message_len()
        {
            let max = up.limits.max_message_len();
            return self.protocol_error(
                Code::TOO_LARGE,
                format!(
                    "message of {} bytes exceeds the maximum of {max}",
                    data.payload.len()
                ),
            );
        }
        let Some(ch) = self.channels.get_mut(&data.channel) else {
            return tracing::debug!(channel = data.channel.0, "data for an unknown channel");
        };
        if ch.state == ChannelState::Closed {
            // Our close was lost: say it again.
            self.control.push_back(Frame::Close(Close {
                channel: data.channel,
                code: Code::OTHERS,
                reason: "channel is closed".into(),
            }));
            return;
        }
        if !ch.is_open() {
            return;
        }
        let unacked = ch.received.saturating_sub(ch.acknowledged());
        if unacked >= MAX_UNACKED && data.seq > ch.received {
            return self.protocol_error(
                Code::TOO_LARGE,
                format!(
                    "{unacked} messages unacknowledged on channel {}: the peer sends past \
                     the receive window",
                    data.channel.0
                ),
            );
        }
        match ch.on_data(data.seq, MAX_SEQ_AHEAD) {
            Received::Deliver => self.events.push_back(Event::Channel(
                data.channel,
                ChannelEvent::Message(Message {
                    content_type: data.content_type,
                    exchange: data.exchange,
                    payload: data.payload,
                    receipt: Receipt {
                        channel: data.channel,
                        life: ch.life,
                        seq: data.seq,
                    },
                }),
            )),
            Received::Gap if self.config.reliable_link => self.drop_link(
                Code::PROTOCOL_ERROR,
                "a message is missing on a link that does not lose frames".into(),
            ),
            Received::Duplicate | Received::Gap => {}
            Received::Impossible => {
                let expected = ch.received + 1;
                self.protocol_error(
                    Code::PROTOCOL_ERROR,
                    format!(
                        "sequence number {} on channel {} is far beyond the expected {expected}",
                        data.seq, data.channel.0
                    ),
                );
            }
        }
    }

    fn on_ack(&mut self, now: Instant, ack: Ack) {
        let Some(ch) = self.channels.get_mut(&ack.channel) else {
            return;
        };
        if !ch.is_open() {
            return;
        }
        match ch.on_ack(now, ack.seq) {
            Ok(done) => {
                for send in done {
                    self.events.push_back(Event::Delivered(ack.channel, send));
                }
            }
            Err(()) => {
                let sent = ch.last_sent_seq();
                self.protocol_error(
                    Code::PROTOCOL_ERROR,
                    format!(
                        "ack of sequence number {} on channel {}, only {sent} were sent",
                        ack.seq, ack.channel.0
                    ),
                );
            }
        }
    }

    /// Remembers a closed channel; on a phone, frees the oldest beyond the ones kept.
    fn note_closed(&mut self, channel: ChannelId) {
        if self.config.role != Role::Phone {
            return;
        }
        self.closed.retain(|id| *id != channel);
        self.closed.push_back(channel);
        while self.closed.len() > MAX_CLOSED_CHANNELS {
            if let Some(old) = self.closed.pop_front()
                && self
                    .channels
                    .get(&old)
                    .is_some_and(|c| c.state == ChannelState::Closed)
            {
                self.channels.remove(&old);
            }
        }
    }

    fn on_close(&mut self, now: Instant, close: Close) {
        let Some(ch) = self.channels.get_mut(&close.channel) else {
            return;
        };
        if ch.state == ChannelState::Closed {
            return;
        }
        let reopens = self.config.role == Role::Watch && ch.was_open;
        if reopens {
            // The phone app closed, or the phone is shutting down: open again when it
            // is back (at the next link, or after `REOPEN_FIRST`), sends waiting.
            if ch.reopen.is_some() && !ch.is_open() {
                return;
            }
            ch.restart();
            ch.state = ChannelState::Idle { last_error: None };
            ch.reopen = Some((now + REOPEN_FIRST, REOPEN_FIRST));
        } else {
            ch.state = ChannelState::Closed;
            for send in ch.drain_sends() {
                self.events.push_back(Event::SendFailed(
                    close.channel,
                    send,
                    Code::CONNECTION_LOST,
                ));
            }
        }
        if reopens {
            self.files_on_channel_paused(close.channel, Code::CONNECTION_LOST);
        } else {
            self.files_on_channel_closed(close.channel, Code::CONNECTION_LOST);
            self.note_closed(close.channel);
        }
        self.events.push_back(Event::Channel(
            close.channel,
            ChannelEvent::Close {
                code: close.code,
                reason: close.reason,
                by: ClosedBy::Peer,
                reopens,
            },
        ));
    }

    fn on_version_query(&mut self, query: VersionQuery) {
        let version = match self.config.role {
            Role::Phone => self.apps.get(&query.package).map(|a| a.version),
            Role::Watch => None,
        };
        self.control.push_back(Frame::VersionReply(VersionReply {
            request: query.request,
            version,
        }));
    }
}

/// Builds the open frame for a channel and marks it opening, so a lost open or a lost
/// answer is sent again after the retransmit timeout.
fn start_open(ch: &mut Channel, now: Instant, resume: bool) -> Frame {
    ch.state = ChannelState::Opening;
    ch.open_sent = Some((now, resume));
    open_frame(ch, resume)
}

fn open_frame(ch: &Channel, resume: bool) -> Frame {
    Frame::Open(Open {
        channel: ch.id,
        package: ch.package.clone(),
        signature: ch.signature.clone(),
        resume,
        received_seq: if resume { ch.acknowledged() } else { 0 },
    })
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

fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}
