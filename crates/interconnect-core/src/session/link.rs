//! Link setup and liveness: the Hello exchange, the secure-record glue (handshake
//! steps and opening; sealing is in `transmit`), refusals, drops and timers.

#[allow(unused_imports)]
use crate::prelude::*;

use crate::time::Instant;

use bytes::{Bytes, BytesMut};
use interconnect_proto::{
    Capabilities, Code, Data, DecodeError, ErrorReport, Frame, Hello, InnerFrame, Limits,
    MAX_DEVICE_NAME_LEN, MAX_FRAME_LEN, MIN_MAX_FRAME_LEN, Name, OwnedFrame, PROTOCOL_VERSIONS,
    Ping, Pong, Role, SealedMut, max_unsealed_len,
};

use super::channels::start_open;
use super::{LinkState, LinkUp, PAIRING_HOLDOFF, Session, refusal, sanitize, truncate_utf8};

use crate::channel::ChannelState;
use crate::event::{ChannelEvent, ClosedBy, Event, PeerInfo};
use crate::security::{NoiseEvent, SecureLink, SecurityError};

impl Session {
    /// A new link is up: starts the handshake. `link_max_frame_len` is the link's limit.
    pub fn link_up(&mut self, now: Instant, link_max_frame_len: usize) {
        if !matches!(self.link, LinkState::Down) {
            self.link_down(now);
        }
        self.control.clear();
        self.link = LinkState::SettingUp {
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
        tracing::debug!(role = ?self.config.role, "link up, setup started");
    }

    pub(super) fn send_hello(&mut self) {
        self.hello_sent = true;
        self.control.push_back(Frame::Hello(Hello {
            min_version: *PROTOCOL_VERSIONS.start(),
            max_version: *PROTOCOL_VERSIONS.end(),
            role: self.config.role,
            device_id: self.config.device_id,
            max_frame_len: self.own_max as u32,
            capabilities: match self.config.receives_files {
                true => Capabilities::ALL,
                false => Capabilities(
                    Capabilities::ALL.0 & !(Capabilities::FILES.0 | Capabilities::FILE_META.0),
                ),
            },
            resume_token: self.config.resume_token,
        }));
    }

    /// Acts on what the secure layer reported.
    pub(super) fn drain_secure(&mut self, now: Instant) {
        loop {
            let Some(event) = self.secure.as_mut().and_then(|s| s.events.pop_front()) else {
                return;
            };
            match event {
                NoiseEvent::Trusted => {
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
                NoiseEvent::PairingRequest { .. } if self.probing && !self.admits => {
                    // A device not known here while another is served.
                    self.refuse_as_busy();
                }
                NoiseEvent::PairingRequest { fingerprint, code } => {
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
                    if let (LinkState::SettingUp { deadline, step }, Some(wait)) =
                        (&mut self.link, wait)
                    {
                        // The user takes their time; the peer waits too.
                        *deadline = (*deadline).max(now + wait);
                        *step = *deadline;
                    }
                    self.events
                        .push_back(Event::PairingRequest { fingerprint, code });
                }
                NoiseEvent::Pinned(fingerprint) => {
                    self.events.push_back(Event::PeerPinned { fingerprint });
                }
                NoiseEvent::Failed(error) => self.security_failure(error),
            }
        }
    }

    /// Refuses the link: tells the peer the code (unless it refused us), then drops it.
    /// The peer gets a fixed text, never the details (which key is pinned, what failed),
    /// which stay in the local event.
    pub(super) fn security_failure(&mut self, error: SecurityError) {
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
        self.in_room = None;
        self.farewell = false;
        for channel in self.channels.values_mut() {
            if channel.on_link_down() {
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
        }
        self.files_on_link_down();
        if was_up {
            self.events.push_back(Event::LinkDown);
        }
        tracing::debug!(role = ?self.config.role, "link down");
    }

    /// When the handshake under way is given up: at its overall deadline, or sooner
    /// while the keys do not exist yet and the peer's next step is late.
    pub(super) fn setup_deadline(&self) -> Option<Instant> {
        let LinkState::SettingUp { deadline, step } = self.link else {
            return None;
        };
        let keyed = self.secure.as_ref().is_some_and(SecureLink::is_established);
        Some(if keyed { deadline } else { deadline.min(step) })
    }

    /// One whole frame arrived from the link. The session takes its buffer over: a
    /// sealed frame is opened where it lies (a `Bytes` that something else still holds
    /// is copied first; a transport's `BytesMut` never is).
    pub fn handle_frame(&mut self, now: Instant, frame: impl Into<BytesMut>) {
        self.handle_owned(now, frame.into());
    }

    fn handle_owned(&mut self, now: Instant, bytes: BytesMut) {
        if let LinkState::SettingUp { deadline, step } = &mut self.link {
            *step = (*step)
                .max(now + self.config.handshake_step_timeout)
                .min(*deadline);
        }
        let inner_max = match &self.link {
            LinkState::Down => return,
            LinkState::SettingUp { .. } => self.own_max,
            LinkState::Up(up) => up.limits.max_frame_len,
        };
        let frame = match Frame::decode_owned(bytes, self.max_receive_len()) {
            Ok(frame) => frame,
            Err(error) => return self.on_decode_error(error),
        };
        let body = match (&self.secure, frame) {
            (None, OwnedFrame::Other(Frame::Handshake(_))) => {
                return self.security_failure(SecurityError::PeerWantsEncryption);
            }
            (None, OwnedFrame::Data(head, payload)) if self.is_link_up() => {
                self.heard(now);
                // As `on_frame` would take it, without the frame around it.
                return self.on_data(head, payload);
            }
            (None, frame) => {
                self.heard(now);
                return self.on_frame(now, frame.into());
            }
            (Some(_), OwnedFrame::Sealed(sealed)) => self.unseal_sealed(sealed),
            (Some(_), frame) => self.unseal(now, frame.into()),
        };
        let Some(body) = body else {
            return;
        };
        self.heard(now);
        // One sealed frame may hold several (a batch): each is handled as if it had come
        // alone, until one fails or ends the link.
        let mut batch = Frame::decode_batch(body, inner_max);
        while let Some(inner) = batch.next_inner() {
            match inner {
                // Data on a link that is up, as `on_frame` would take it, without the
                // frame around it.
                Ok(InnerFrame::Data(head, payload)) if self.is_link_up() => {
                    self.on_data(head, payload)
                }
                Ok(InnerFrame::Data(head, payload)) => {
                    self.on_frame(now, Frame::Data(Data::with_head(head, payload)))
                }
                Ok(InnerFrame::Other(frame)) => self.on_frame(now, frame),
                Err(error) => return self.on_decode_error(error),
            }
            if matches!(self.link, LinkState::Down) || self.farewell {
                return;
            }
        }
    }

    /// Something authentic arrived: the link is alive.
    fn heard(&mut self, now: Instant) {
        if let LinkState::Up(up) = &mut self.link {
            up.last_rx = now;
        }
    }

    /// Secure links: runs handshake frames, opens sealed ones, refuses the rest. Returns
    /// the plaintext of the frames to handle, if any. Once keys exist a frame in the clear
    /// changes nothing: it is dropped (anyone on the wire can send one).
    pub(super) fn unseal(&mut self, now: Instant, frame: Frame) -> Option<Bytes> {
        let secure = self.secure.as_mut()?;
        match frame {
            Frame::Handshake(step) => {
                secure.on_handshake(step);
                self.drain_secure(now);
                // A sealed frame that overtook this step (a Hello) opens now, or never.
                let early = self.early.take()?;
                self.secure.as_mut()?.open_early(early)
            }
            Frame::Sealed(sealed) => self.unseal_sealed(sealed.into()),
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

    /// Secure links: opens a sealed frame, or holds it until the keys exist.
    fn unseal_sealed(&mut self, sealed: SealedMut) -> Option<Bytes> {
        let secure = self.secure.as_mut()?;
        if secure.is_established() {
            return self.open(sealed);
        }
        // Overtook the last handshake step (links may reorder): kept (one, at most 512
        // bytes) and opened once the keys exist.
        tracing::debug!("sealed frame before the session keys, held");
        self.early = Some(sealed);
        None
    }

    pub(super) fn open(&mut self, sealed: SealedMut) -> Option<Bytes> {
        let secure = self.secure.as_mut()?;
        match secure.open(sealed) {
            Ok(Some(body)) => Some(body),
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
            LinkState::SettingUp { .. } => {
                if self.setup_deadline().is_some_and(|d| now >= d) {
                    if let Some(peer) = self.pairing.take() {
                        // Unanswered counts as no.
                        self.remember_refused_pairing(peer, now);
                        self.prompt_answered(now, false);
                    }
                    self.drop_link(Code::TIMEOUT, "link setup timed out".into());
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
                    if channel.state() == ChannelState::Opening
                        && let Some((sent, resume)) = channel.open_sent
                        && now >= sent + rto
                    {
                        tracing::trace!(channel = channel.id.0, "open not answered, sent again");
                        self.control.push_back(start_open(channel, now, resume));
                    }
                    if matches!(channel.state(), ChannelState::Idle { .. })
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

    pub(super) fn drop_link(&mut self, code: Code, reason: String) {
        // The driver logs the loss (and a refusal, once, as a warning).
        tracing::debug!(%code, %reason, "dropping link");
        self.farewell = true;
        self.events.push_back(Event::DropLink { code, reason });
    }

    /// A peer error: tell the peer why, then drop the link.
    pub(super) fn protocol_error(&mut self, code: Code, reason: String) {
        self.control.push_back(Frame::Error(ErrorReport {
            channel: None,
            code,
            message: reason.clone(),
        }));
        self.drop_link(code, reason);
    }

    pub(super) fn on_decode_error(&mut self, error: DecodeError) {
        let code = match error {
            DecodeError::TooLarge { .. } => Code::TOO_LARGE,
            _ => Code::PROTOCOL_ERROR,
        };
        self.protocol_error(code, error.to_string());
    }

    pub(super) fn on_frame(&mut self, now: Instant, frame: Frame) {
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
            Frame::Data(data) => self.on_data(data.head(), data.payload),
            Frame::Ack(ack) => self.on_ack(now, ack),
            Frame::Close(close) => self.on_close(now, close),
            Frame::VersionQuery(query) => self.on_version_query(query),
            Frame::VersionReply(reply) => self.events.push_back(Event::VersionReply {
                request: reply.request,
                version: reply.version,
            }),
            Frame::FileOffer(offer) => self.on_file_offer(offer, Bytes::new()),
            Frame::FileOfferMeta(m) => self.on_file_offer(m.offer, m.meta),
            Frame::FileAccept(accept) => self.on_file_accept(now, accept),
            Frame::FileChunk(chunk) => self.on_file_chunk(chunk),
            Frame::FileAck(ack) => self.on_file_ack(now, ack),
            Frame::FileComplete(complete) => self.on_file_complete(complete),
            Frame::FileCancel(cancel) => self.on_file_cancel(cancel),
            Frame::Hello(_) => {}
            Frame::Name(name) => {
                if self.is_link_up() {
                    self.events.push_back(Event::PeerName(name.name));
                }
            }
            other => tracing::debug!(kind = ?other.kind(), "ignored frame"),
        }
    }

    pub(super) fn on_hello(&mut self, now: Instant, hello: Hello) {
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
        if !matches!(self.link, LinkState::SettingUp { .. }) {
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
            batch: hello.capabilities.contains(Capabilities::BATCH),
            capabilities: hello.capabilities,
            last_rx: now,
            next_ping: now + self.config.ping_interval,
        });
        tracing::debug!(role = ?self.config.role, resumed, "link set up");
        self.events.push_back(Event::LinkUp { peer, resumed });
        if !resumed {
            self.forget_peer_state(previous.unwrap_or_default());
        }
        if let Some(name) = &self.config.name
            && hello.capabilities.contains(Capabilities::NAME)
        {
            let mut name = name.clone();
            truncate_utf8(&mut name, MAX_DEVICE_NAME_LEN);
            self.control.push_back(Frame::Name(Name { name }));
        }
        for close in self.unsent_closes.drain(..) {
            self.control.push_back(Frame::Close(close));
        }
        if self.config.role == Role::Watch {
            for ch in self.channels.values_mut() {
                match ch.state() {
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

    pub(super) fn on_error_report(&mut self, report: ErrorReport) {
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
}
