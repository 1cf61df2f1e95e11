//! The sans-IO secure link: runs the Noise XX handshake steps, judges the peer's key,
//! then seals and opens frames. The session feeds it handshake frames and sealed frames
//! and drains its outputs (`out`, `events`).

#[allow(unused_imports)]
use crate::prelude::*;

use alloc::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use interconnect_proto::{Frame, Handshake, Role, SealedForm, SealedMut};
use sha2::{Digest, Sha256};
use snow::HandshakeState;

use zeroize::Zeroizing;

use super::random::{Resolver, Rng, draw, rng};
use super::record::Cipher;
use super::transport_key::TransportKey;

use super::{
    CipherSuite, Fingerprint, MIN_REKEY_INTERVAL, NoiseConfig, PairingCode, SecurityError,
    TrustPolicy,
};

/// Mixed into every prologue, so a handshake of another protocol never completes.
const PROLOGUE: &[u8] = b"interconnect noise v1";
/// Domain separation of the pairing code.
const PAIRING_LABEL: &[u8] = b"interconnect pairing code v1";
/// Largest Noise handshake message (step 2: e, encrypted s, 32-byte payload, tags).
const HANDSHAKE_BUF: usize = 256;

/// What the session must act on.
#[derive(Debug)]
pub(crate) enum NoiseEvent {
    /// The peer passed the trust policy: send the sealed Hello.
    Trusted,
    /// Numeric comparison: show the code and call `confirm_pairing`.
    PairingRequest {
        fingerprint: Fingerprint,
        code: PairingCode,
    },
    /// A new peer was pinned (first use, or a confirmed pairing).
    Pinned(Fingerprint),
    /// The link must be refused.
    Failed(SecurityError),
}

enum Phase {
    Idle,
    /// Watch: step 1 sent, step 2 awaited.
    AwaitStep2 {
        hs: Box<HandshakeState>,
        suite: CipherSuite,
        rekey_interval: u64,
    },
    /// Phone: step 2 sent, step 3 awaited.
    AwaitStep3 {
        hs: Box<HandshakeState>,
        suite: CipherSuite,
        rekey_interval: u64,
        nonce: [u8; 32],
    },
    Established(Box<Established>),
    Failed,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Trust {
    Trusted,
    /// Pairing: waits for the code (watch: step 4), then for the user.
    AwaitCode,
    AwaitUser,
}

struct Established {
    cipher: Cipher,
    suite: CipherSuite,
    peer: Fingerprint,
    hash: [u8; 32],
    /// Our pairing nonce.
    own_nonce: [u8; 32],
    /// Watch: the phone's commitment, until step 4 reveals the nonce.
    commitment: Option<[u8; 32]>,
    code: Option<PairingCode>,
    trust: Trust,
    /// Tests: the split keys (watch → phone, phone → watch), for the transcript.
    #[cfg(test)]
    split: ([u8; 32], [u8; 32]),
}

/// One link's security state, reset by `start` on every new link.
pub(crate) struct SecureLink {
    config: NoiseConfig,
    role: Role,
    /// Pinned fingerprints: the policy's, plus any pinned while this session runs.
    pins: Vec<Fingerprint>,
    /// Vets a second link while the first is up: pins no one new (an unknown peer is
    /// left to the session, which refuses it as busy).
    probing: bool,
    /// A probe of a hub that serves several watches, while it admits new ones: trust on
    /// first use pins an unknown peer (a new watch) instead of refusing it.
    admit_new: bool,
    phase: Phase,
    /// Handshake frames to send in the clear.
    pub(crate) out: VecDeque<Frame>,
    pub(crate) events: VecDeque<NoiseEvent>,
    /// Draws the seeds of ephemeral keys and the pairing nonces.
    rng: Rng,
    /// Tests: fixed ephemeral key and pairing nonce, for a reproducible transcript.
    #[cfg(test)]
    fixed: Option<([u8; 32], [u8; 32])>,
}

impl SecureLink {
    /// A link's security state; `seed` is where its randomness comes from.
    pub(crate) fn new(config: NoiseConfig, role: Role, seed: [u8; 32]) -> Self {
        SecureLink {
            rng: rng(seed),
            pins: config.trust.known().to_vec(),
            probing: false,
            admit_new: false,
            config,
            role,
            phase: Phase::Idle,
            out: VecDeque::new(),
            events: VecDeque::new(),
            #[cfg(test)]
            fixed: None,
        }
    }

    /// A fresh state for vetting a second link: the same keys and pins, pinning no one
    /// unless `admit_new` (a hub of several watches that admits new ones now).
    pub(crate) fn probe(&mut self, admit_new: bool) -> SecureLink {
        SecureLink {
            rng: rng(draw(&mut self.rng)),
            config: self.config.clone(),
            role: self.role,
            pins: self.pins.clone(),
            probing: true,
            admit_new,
            phase: Phase::Idle,
            out: VecDeque::new(),
            events: VecDeque::new(),
            #[cfg(test)]
            fixed: self.fixed,
        }
    }

    /// The probe's state now serves the session's link.
    pub(crate) fn adopt(&mut self) {
        self.probing = false;
        self.admit_new = false;
    }

    /// The pinned fingerprints.
    pub(crate) fn pins(&self) -> &[Fingerprint] {
        &self.pins
    }

    /// Trusts `peer` from now on: a device pinned on another link.
    pub(crate) fn trust(&mut self, peer: Fingerprint) {
        if !self.pins.contains(&peer) {
            self.pins.push(peer);
        }
    }

    /// A fixed ephemeral key for Noise in tests; `None`: snow draws one from the
    /// resolver's generator.
    fn ephemeral(&self) -> Option<[u8; 32]> {
        #[cfg(test)]
        if let Some((e, _)) = self.fixed {
            return Some(e);
        }
        None
    }

    /// A fresh pairing nonce, fixed in tests.
    fn pairing_nonce(&mut self) -> [u8; 32] {
        #[cfg(test)]
        if let Some((_, n)) = self.fixed {
            return n;
        }
        draw(&mut self.rng)
    }

    pub(crate) fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Established(_))
    }

    /// The peer's fingerprint, once its key is known.
    pub(crate) fn peer(&self) -> Option<Fingerprint> {
        match &self.phase {
            Phase::Established(est) => Some(est.peer),
            _ => None,
        }
    }

    pub(crate) fn suite(&self) -> Option<CipherSuite> {
        match &self.phase {
            Phase::Established(est) => Some(est.suite),
            _ => None,
        }
    }

    pub(crate) fn pairing_code(&self) -> Option<PairingCode> {
        match &self.phase {
            Phase::Established(est) => est.code,
            _ => None,
        }
    }

    pub(crate) fn pairing_timeout(&self) -> core::time::Duration {
        self.config.pairing_timeout
    }

    /// A new link: forget the old keys; the watch sends step 1.
    pub(crate) fn start(&mut self) {
        self.phase = Phase::Idle;
        self.out.clear();
        self.events.clear();
        if self.role != Role::Watch {
            return;
        }
        let Some(&suite) = self.config.suites.first() else {
            return self.fail(SecurityError::SuiteNotAllowed {
                chosen: "none".into(),
                allowed: "none (no suite configured)".into(),
            });
        };
        let offered = self.config.suites.iter().fold(0u8, |b, s| b | s.bit());
        let rekey_interval = self.config.rekey_interval.max(MIN_REKEY_INTERVAL);
        let mut offer = Handshake {
            step: 1,
            offered,
            suite: suite.id(),
            rekey_interval,
            message: Bytes::new(),
        };
        let ephemeral = self.ephemeral();
        let result = build(
            suite,
            &offer,
            self.config.identity.private_key(),
            (ephemeral, draw(&mut self.rng)),
            true,
        )
        .and_then(|mut hs| write(&mut hs, &[]).map(|m| (hs, m)));
        match result {
            Ok((hs, message)) => {
                offer.message = message;
                self.out.push_back(Frame::Handshake(offer));
                self.phase = Phase::AwaitStep2 {
                    hs: Box::new(hs),
                    suite,
                    rekey_interval: u64::from(rekey_interval),
                };
            }
            Err(e) => self.fail(e),
        }
    }

    /// A handshake frame arrived (in the clear, so from anyone).
    ///
    /// Once keys exist nothing in the clear changes the secure state: the only handshake
    /// frame still expected is the watch's step 4 while the phone's commitment is open,
    /// and one that does not match the commitment is dropped like any other.
    pub(crate) fn on_handshake(&mut self, msg: Handshake) {
        if matches!(self.phase, Phase::Established(_)) {
            if msg.step == 4 && self.role == Role::Watch {
                self.on_step4(&msg);
            } else {
                tracing::debug!(step = msg.step, "handshake frame after the keys, dropped");
            }
            return;
        }
        let phase = core::mem::replace(&mut self.phase, Phase::Failed);
        match (phase, msg.step) {
            (Phase::Idle, 1) if self.role == Role::Phone => self.on_step1(msg),
            (
                Phase::AwaitStep2 {
                    hs,
                    suite,
                    rekey_interval,
                },
                2,
            ) if self.role == Role::Watch => self.on_step2(*hs, suite, rekey_interval, msg),
            (
                Phase::AwaitStep3 {
                    hs,
                    suite,
                    rekey_interval,
                    nonce,
                },
                3,
            ) if self.role == Role::Phone => self.on_step3(*hs, suite, rekey_interval, nonce, msg),
            (phase @ Phase::AwaitStep3 { .. }, 1) => {
                // A duplicate of a step already handled (links may duplicate frames).
                self.phase = phase;
            }
            (phase, step) => {
                let state = match phase {
                    Phase::Idle => "before the handshake",
                    Phase::AwaitStep2 { .. } => "while awaiting step 2",
                    Phase::AwaitStep3 { .. } => "while awaiting step 3",
                    Phase::Established(_) => "after the handshake",
                    Phase::Failed => "after a failure",
                };
                self.fail(SecurityError::Handshake(format!(
                    "unexpected handshake step {step} {state}"
                )));
            }
        }
    }

    fn on_step1(&mut self, offer: Handshake) {
        let allowed = &self.config.suites;
        let chosen = CipherSuite::from_id(offer.suite);
        let Some(suite) = chosen.filter(|s| allowed.contains(s) && offer.offered & s.bit() != 0)
        else {
            return self.fail(SecurityError::SuiteNotAllowed {
                chosen: chosen.map_or(format!("id {}", offer.suite), |s| s.to_string()),
                allowed: allowed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if offer.rekey_interval < MIN_REKEY_INTERVAL {
            return self.fail(SecurityError::Handshake(format!(
                "rekey interval {} is below {MIN_REKEY_INTERVAL}",
                offer.rekey_interval
            )));
        }
        let nonce = self.pairing_nonce();
        let commitment = Sha256::digest(nonce);
        let result = build(
            suite,
            &offer,
            self.config.identity.private_key(),
            (self.ephemeral(), draw(&mut self.rng)),
            false,
        )
        .and_then(|mut hs| {
            read(&mut hs, &offer.message)?;
            let m = write(&mut hs, &commitment)?;
            Ok((hs, m))
        });
        match result {
            Ok((hs, message)) => {
                self.out.push_back(step(2, message));
                self.phase = Phase::AwaitStep3 {
                    hs: Box::new(hs),
                    suite,
                    rekey_interval: u64::from(offer.rekey_interval),
                    nonce,
                };
            }
            Err(e) => self.fail(e),
        }
    }

    fn on_step2(
        &mut self,
        mut hs: HandshakeState,
        suite: CipherSuite,
        rekey_interval: u64,
        msg: Handshake,
    ) {
        let (commitment, peer) = match read_step(&mut hs, &msg) {
            Ok(read) => read,
            Err(e) => return self.fail(e),
        };
        // Judge before step 3: an untrusted phone never learns who this watch is.
        let trust = match self.judge(peer) {
            Ok(trust) => trust,
            Err(e) => return self.fail(e),
        };
        let own_nonce = self.pairing_nonce();
        let message = match write(&mut hs, &own_nonce) {
            Ok(m) => m,
            Err(e) => return self.fail(e),
        };
        self.out.push_back(step(3, message));
        self.establish(
            hs,
            suite,
            rekey_interval,
            peer,
            own_nonce,
            Ok(trust),
            |est| {
                est.commitment = Some(commitment);
            },
        );
    }

    fn on_step3(
        &mut self,
        mut hs: HandshakeState,
        suite: CipherSuite,
        rekey_interval: u64,
        own_nonce: [u8; 32],
        msg: Handshake,
    ) {
        let (watch_nonce, peer) = match read_step(&mut hs, &msg) {
            Ok(read) => read,
            Err(e) => return self.fail(e),
        };
        self.out
            .push_back(step(4, Bytes::copy_from_slice(&own_nonce)));
        // Established even when refused, so the refusal travels sealed.
        let verdict = self.judge(peer);
        self.establish(hs, suite, rekey_interval, peer, own_nonce, verdict, |est| {
            est.code = Some(pairing_code(&est.hash, &watch_nonce, &own_nonce));
        });
    }

    /// Watch: the phone revealed its pairing nonce. One that does not match the
    /// commitment is dropped (it travels in the clear, so anyone could have sent it).
    fn on_step4(&mut self, msg: &Handshake) {
        let Phase::Established(est) = &mut self.phase else {
            return;
        };
        let Some(commitment) = est.commitment else {
            tracing::debug!("step 4 after the code is known, dropped");
            return;
        };
        let Ok(nonce) = exact_32(&msg.message) else {
            tracing::debug!("step 4 of the wrong length, dropped");
            return;
        };
        if Sha256::digest(nonce).as_slice() != commitment {
            tracing::debug!("step 4 does not match the phone's commitment, dropped");
            return;
        }
        est.commitment = None;
        let code = pairing_code(&est.hash, &est.own_nonce, &nonce);
        est.code = Some(code);
        if est.trust == Trust::AwaitCode {
            est.trust = Trust::AwaitUser;
            self.events.push_back(NoiseEvent::PairingRequest {
                fingerprint: est.peer,
                code,
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn establish(
        &mut self,
        hs: HandshakeState,
        suite: CipherSuite,
        rekey_interval: u64,
        peer: Fingerprint,
        own_nonce: [u8; 32],
        verdict: Result<Trust, SecurityError>,
        fill: impl FnOnce(&mut Established),
    ) {
        let hash = handshake_hash(&hs);
        let mut hs = hs;
        if !hs.is_handshake_finished() {
            return self.fail(SecurityError::Handshake("handshake not finished".into()));
        }
        // Both ends split to (watch → phone, phone → watch): the watch initiates.
        let (to_phone, to_watch) = hs.dangerously_get_raw_split();
        let (to_phone, to_watch) = (Zeroizing::new(to_phone), Zeroizing::new(to_watch));
        #[cfg(test)]
        let split = (*to_phone, *to_watch);
        let (send, recv) = match self.role {
            Role::Watch => (to_phone, to_watch),
            Role::Phone => (to_watch, to_phone),
        };
        let mut est = Box::new(Established {
            cipher: Cipher::new(
                TransportKey::new(suite, &send),
                TransportKey::new(suite, &recv),
                rekey_interval,
            ),
            suite,
            peer,
            hash,
            own_nonce,
            commitment: None,
            code: None,
            trust: Trust::Trusted,
            #[cfg(test)]
            split,
        });
        fill(&mut est);
        match verdict {
            Err(error) => self.events.push_back(NoiseEvent::Failed(error)),
            Ok(Trust::Trusted) => self.events.push_back(NoiseEvent::Trusted),
            Ok(Trust::AwaitUser | Trust::AwaitCode) => {
                if let Some(code) = est.code {
                    est.trust = Trust::AwaitUser;
                    self.events.push_back(NoiseEvent::PairingRequest {
                        fingerprint: peer,
                        code,
                    });
                } else {
                    est.trust = Trust::AwaitCode;
                }
            }
        }
        tracing::debug!(role = ?self.role, %suite, %peer, "secure handshake complete");
        self.phase = Phase::Established(est);
    }

    /// Applies the trust policy to a peer key.
    fn judge(&mut self, peer: Fingerprint) -> Result<Trust, SecurityError> {
        if self.pins.contains(&peer) {
            return Ok(Trust::Trusted);
        }
        match &self.config.trust {
            TrustPolicy::Pinned(_) => Err(SecurityError::UntrustedPeer { fingerprint: peer }),
            // A hub of several watches that admits new ones: first use, per device.
            TrustPolicy::FirstUse { .. } if self.probing && self.admit_new => {
                self.pins.push(peer);
                self.events.push_back(NoiseEvent::Pinned(peer));
                Ok(Trust::Trusted)
            }
            // A probe pins no one: its peer would be a second device.
            TrustPolicy::FirstUse { .. } if self.probing && self.pins.is_empty() => {
                Ok(Trust::AwaitCode)
            }
            TrustPolicy::FirstUse { .. } => match self.pins.first() {
                Some(&pinned) => Err(SecurityError::PeerChanged {
                    pinned,
                    fingerprint: peer,
                }),
                None => {
                    self.pins.push(peer);
                    self.events.push_back(NoiseEvent::Pinned(peer));
                    Ok(Trust::Trusted)
                }
            },
            TrustPolicy::Pairing { .. } => Ok(Trust::AwaitCode),
        }
    }

    /// The user compared the codes: `accept` pins the peer, otherwise the link is refused.
    pub(crate) fn confirm_pairing(&mut self, accept: bool) {
        let Phase::Established(est) = &mut self.phase else {
            return;
        };
        if est.trust != Trust::AwaitUser {
            return;
        }
        let peer = est.peer;
        if accept {
            est.trust = Trust::Trusted;
            if !self.pins.contains(&peer) {
                self.pins.push(peer);
            }
            self.events.push_back(NoiseEvent::Pinned(peer));
            self.events.push_back(NoiseEvent::Trusted);
        } else {
            self.events
                .push_back(NoiseEvent::Failed(SecurityError::PairingRejected {
                    fingerprint: peer,
                }));
        }
    }

    /// Refuses the link. Keys that exist are kept: the refusal then travels sealed, and
    /// nothing after it can travel in the clear.
    fn fail(&mut self, error: SecurityError) {
        if !matches!(self.phase, Phase::Established(_)) {
            self.phase = Phase::Failed;
        }
        self.events.push_back(NoiseEvent::Failed(error));
    }

    /// Seals an inner frame (header and payload, no CRC) into `dst`, the sealed frame
    /// in `form`; the plaintext is `head` followed by `bulk` (see
    /// `Frame::encode_unsealed_head`).
    pub(crate) fn seal(
        &mut self,
        head: &[u8],
        bulk: &[u8],
        max_frame_len: usize,
        form: SealedForm,
        dst: &mut BytesMut,
    ) -> Result<(), SecurityError> {
        match &mut self.phase {
            Phase::Established(est) => est.cipher.seal(head, bulk, max_frame_len, form, dst),
            _ => Err(SecurityError::Handshake("no session keys yet".into())),
        }
    }

    /// Seals, in place, the inner frames `buf` holds after `SEALED_HEADROOM` bytes (see
    /// `Cipher::seal_in_place`).
    pub(crate) fn seal_in_place(
        &mut self,
        buf: &mut BytesMut,
        max_frame_len: usize,
        form: SealedForm,
    ) -> Result<(), SecurityError> {
        match &mut self.phase {
            Phase::Established(est) => est.cipher.seal_in_place(buf, max_frame_len, form),
            _ => Err(SecurityError::Handshake("no session keys yet".into())),
        }
    }

    /// Opens a sealed frame: the inner frame, or `None` for a replayed or late one. After a
    /// frame fails authentication nothing more opens on this link (its receiving key may
    /// have moved to a forged epoch, and an attacker gets no second try); sealing still
    /// works, so the error report to the peer travels sealed.
    pub(crate) fn open(&mut self, sealed: SealedMut) -> Result<Option<Bytes>, SecurityError> {
        match &mut self.phase {
            Phase::Established(est) => est.cipher.open(sealed),
            _ => Err(SecurityError::Handshake(
                "sealed frame before the keys".into(),
            )),
        }
    }
}

impl SecureLink {
    /// Opens a sealed frame that arrived before the keys existed (it overtook the last
    /// handshake step): `None` if it does not open, and the link stays as it was.
    pub(crate) fn open_early(&mut self, sealed: SealedMut) -> Option<Bytes> {
        match &mut self.phase {
            Phase::Established(est) => est.cipher.try_open(sealed),
            _ => None,
        }
    }
}

fn step(step: u8, message: Bytes) -> Frame {
    Frame::Handshake(Handshake {
        step,
        offered: 0,
        suite: 0,
        rekey_interval: 0,
        message,
    })
}

/// The Noise prologue: binds the step-1 offer, so a rewritten offer fails step 2.
fn prologue(offer: &Handshake) -> Vec<u8> {
    let mut prologue = PROLOGUE.to_vec();
    prologue.extend_from_slice(&[offer.offered, offer.suite]);
    prologue.extend_from_slice(&offer.rekey_interval.to_le_bytes());
    prologue
}

/// A handshake state whose prologue binds the step-1 offer.
fn build(
    suite: CipherSuite,
    offer: &Handshake,
    private_key: &[u8; 32],
    (ephemeral, seed): (Option<[u8; 32]>, [u8; 32]),
    initiator: bool,
) -> Result<HandshakeState, SecurityError> {
    let error = |e: snow::Error| SecurityError::Handshake(format!("cannot start Noise: {e}"));
    let params = suite.noise_name().parse().map_err(error)?;
    let prologue = prologue(offer);
    let mut builder = snow::Builder::with_resolver(params, Box::new(Resolver::new(seed)))
        .local_private_key(private_key)
        .map_err(error)?
        .prologue(&prologue)
        .map_err(error)?;
    if let Some(e) = &ephemeral {
        builder = builder.fixed_ephemeral_key_for_testing_only(e);
    }
    if initiator {
        builder.build_initiator().map_err(error)
    } else {
        builder.build_responder().map_err(error)
    }
}

fn write(hs: &mut HandshakeState, payload: &[u8]) -> Result<Bytes, SecurityError> {
    let mut buf = [0u8; HANDSHAKE_BUF];
    let len = hs
        .write_message(payload, &mut buf)
        .map_err(|e| SecurityError::Handshake(format!("writing a handshake message: {e}")))?;
    Ok(Bytes::copy_from_slice(&buf[..len]))
}

fn read(hs: &mut HandshakeState, message: &[u8]) -> Result<Vec<u8>, SecurityError> {
    if message.len() > HANDSHAKE_BUF {
        return Err(SecurityError::Handshake(format!(
            "handshake message of {} bytes is too long",
            message.len()
        )));
    }
    let mut buf = [0u8; HANDSHAKE_BUF];
    let len = hs.read_message(message, &mut buf).map_err(|e| {
        SecurityError::Handshake(format!(
            "handshake message did not verify ({e}); the offer may have been tampered with"
        ))
    })?;
    Ok(buf[..len].to_vec())
}

/// Reads step 2 or 3: its 32-byte payload and the peer's static key, now known.
fn read_step(
    hs: &mut HandshakeState,
    msg: &Handshake,
) -> Result<([u8; 32], Fingerprint), SecurityError> {
    let payload = exact_32(&read(hs, &msg.message)?)?;
    let peer = hs
        .get_remote_static()
        .map(Fingerprint::of_public_key)
        .ok_or_else(|| SecurityError::Handshake(format!("no static key in step {}", msg.step)))?;
    Ok((payload, peer))
}

fn exact_32(payload: &[u8]) -> Result<[u8; 32], SecurityError> {
    payload.try_into().map_err(|_| {
        SecurityError::Handshake(format!(
            "handshake payload of {} bytes, expected 32",
            payload.len()
        ))
    })
}

fn handshake_hash(hs: &HandshakeState) -> [u8; 32] {
    let mut hash = [0u8; 32];
    let h = hs.get_handshake_hash();
    let n = h.len().min(32);
    hash[..n].copy_from_slice(&h[..n]);
    hash
}

fn pairing_code(hash: &[u8; 32], watch_nonce: &[u8; 32], phone_nonce: &[u8; 32]) -> PairingCode {
    let digest = Sha256::new()
        .chain_update(PAIRING_LABEL)
        .chain_update(hash)
        .chain_update(watch_nonce)
        .chain_update(phone_nonce)
        .finalize();
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    PairingCode(n % 1_000_000)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod transcript;
