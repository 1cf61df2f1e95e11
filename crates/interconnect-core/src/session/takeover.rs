//! A second link vetted beside the current one (probes and takeovers), and the user's
//! pairing prompts, rate-limited as a whole.

use crate::time::Instant;

use interconnect_proto::{Code, DeviceId};

use super::{LinkState, PROMPT_HOLDOFF, REFUSED_PAIRINGS, Session, refusal};

use crate::security::{self, Fingerprint};

impl Session {
    /// Secure links: the user compared the pairing codes of an
    /// [`Event::PairingRequest`](crate::sans_io::Event::PairingRequest); `accept` pins the peer and lets the link come up,
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
    pub fn probe(&mut self, now: Instant, link_max_frame_len: usize) -> Session {
        let mut probe = Session::new(self.config.clone(), security::draw(&mut self.rng));
        probe.secure = self.secure.as_mut().map(|s| s.probe(false));
        probe.probing = true;
        probe.link_up(now, link_max_frame_len);
        probe
    }

    /// A session that vets a new link for a phone serving several watches: as
    /// [`probe`](Self::probe), but its peer may be a device this side serves on no link
    /// yet. Trust on first use pins an unknown device only when `admit_new` (otherwise
    /// it is refused, 4007); pairing asks the user
    /// ([`Event::PairingRequest`](crate::sans_io::Event::PairingRequest), answered with
    /// [`confirm_pairing`](Self::confirm_pairing) on this probe). Once
    /// [`probed_peer`](Self::probed_peer) is known, a session that serves that device
    /// [`take_over`](Self::take_over)s the link.
    pub fn vet(&mut self, now: Instant, link_max_frame_len: usize, admit_new: bool) -> Session {
        let mut probe = Session::new(self.config.clone(), security::draw(&mut self.rng));
        probe.secure = self.secure.as_mut().map(|s| s.probe(admit_new));
        probe.probing = true;
        probe.admits = true;
        probe.link_up(now, link_max_frame_len);
        probe
    }

    /// The keys this session trusts: its policy's and those pinned since (none in
    /// plaintext).
    pub fn trusted(&self) -> &[Fingerprint] {
        self.secure.as_ref().map_or(&[], |s| s.pins())
    }

    /// Trusts the device with `fingerprint` from now on, on this session's links and its
    /// probes': a device pinned on another session's link.
    pub fn trust(&mut self, fingerprint: Fingerprint) {
        if let Some(secure) = &mut self.secure {
            secure.trust(fingerprint);
        }
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
        self.link = LinkState::SettingUp {
            deadline,
            step: deadline,
        };
        self.admits = false;
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

    pub(super) fn remember_refused_pairing(&mut self, peer: Fingerprint, now: Instant) {
        self.refused_pairings.retain(|(f, _)| *f != peer);
        if self.refused_pairings.len() == REFUSED_PAIRINGS {
            self.refused_pairings.pop_front();
        }
        self.refused_pairings.push_back((peer, now));
    }
}
