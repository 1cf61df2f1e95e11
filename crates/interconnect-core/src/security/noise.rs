//! The sans-IO secure link: runs the Noise XX handshake steps, judges the peer's key,
//! then seals and opens frames. The session feeds it handshake frames and sealed frames
//! and drains its outputs (`out`, `events`).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use interconnect_proto::{
    Frame, Handshake, Role, SEALED_SEGMENT_LEN, SEALED_SEGMENT_PLAINTEXT, SEALED_TAG_LEN, Sealed,
    encode_sealed, sealed_ciphertext_len, sealed_segments,
};
use sha2::{Digest, Sha256};
use snow::HandshakeState;

use zeroize::Zeroizing;

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
/// Most epochs a received nonce may skip (frames of whole epochs lost); beyond it the
/// frame is treated as forged instead of rekeying without bound.
const MAX_EPOCH_SKIP: u64 = 16;

/// What the session must act on.
#[derive(Debug)]
pub(crate) enum SecureEvent {
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
    phase: Phase,
    /// Handshake frames to send in the clear.
    pub(crate) out: VecDeque<Frame>,
    pub(crate) events: VecDeque<SecureEvent>,
    /// Tests: fixed ephemeral key and pairing nonce, for a reproducible transcript.
    #[cfg(test)]
    fixed: Option<([u8; 32], [u8; 32])>,
}

impl SecureLink {
    pub(crate) fn new(config: NoiseConfig, role: Role) -> Self {
        SecureLink {
            pins: config.trust.known().to_vec(),
            probing: false,
            config,
            role,
            phase: Phase::Idle,
            out: VecDeque::new(),
            events: VecDeque::new(),
            #[cfg(test)]
            fixed: None,
        }
    }

    /// A fresh state for vetting a second link: the same keys and pins, pinning no one.
    pub(crate) fn probe(&self) -> SecureLink {
        SecureLink {
            config: self.config.clone(),
            role: self.role,
            pins: self.pins.clone(),
            probing: true,
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
    }

    /// A fresh ephemeral key for Noise (`None`: snow draws one), fixed in tests.
    fn ephemeral(&self) -> Option<[u8; 32]> {
        #[cfg(test)]
        if let Some((e, _)) = self.fixed {
            return Some(e);
        }
        None
    }

    /// A fresh pairing nonce, fixed in tests.
    fn pairing_nonce(&self) -> [u8; 32] {
        #[cfg(test)]
        if let Some((_, n)) = self.fixed {
            return n;
        }
        rand::random()
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

    pub(crate) fn pairing_timeout(&self) -> std::time::Duration {
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
            ephemeral,
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
        let phase = std::mem::replace(&mut self.phase, Phase::Failed);
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
            self.ephemeral(),
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
            self.events.push_back(SecureEvent::PairingRequest {
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
            Err(error) => self.events.push_back(SecureEvent::Failed(error)),
            Ok(Trust::Trusted) => self.events.push_back(SecureEvent::Trusted),
            Ok(Trust::AwaitUser | Trust::AwaitCode) => {
                if let Some(code) = est.code {
                    est.trust = Trust::AwaitUser;
                    self.events.push_back(SecureEvent::PairingRequest {
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
                    self.events.push_back(SecureEvent::Pinned(peer));
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
            self.events.push_back(SecureEvent::Pinned(peer));
            self.events.push_back(SecureEvent::Trusted);
        } else {
            self.events
                .push_back(SecureEvent::Failed(SecurityError::PairingRejected {
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
        self.events.push_back(SecureEvent::Failed(error));
    }

    /// Seals an inner frame (header and payload, no CRC) into `dst`; the plaintext is
    /// `head` followed by `bulk` (see `Frame::encode_unsealed_head`).
    pub(crate) fn seal(
        &mut self,
        head: &[u8],
        bulk: &[u8],
        max_frame_len: usize,
        dst: &mut BytesMut,
    ) -> Result<(), SecurityError> {
        match &mut self.phase {
            Phase::Established(est) => est.cipher.seal(head, bulk, max_frame_len, dst),
            _ => Err(SecurityError::Handshake("no session keys yet".into())),
        }
    }

    /// Opens a sealed frame: the inner frame, or `None` for a replayed or late one. After a
    /// frame fails authentication nothing more opens on this link (its receiving key may
    /// have moved to a forged epoch, and an attacker gets no second try); sealing still
    /// works, so the error report to the peer travels sealed.
    pub(crate) fn open(&mut self, sealed: Sealed) -> Result<Option<Bytes>, SecurityError> {
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
    pub(crate) fn open_early(&mut self, sealed: Sealed) -> Option<Bytes> {
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
    ephemeral: Option<[u8; 32]>,
    initiator: bool,
) -> Result<HandshakeState, SecurityError> {
    let error = |e: snow::Error| SecurityError::Handshake(format!("cannot start Noise: {e}"));
    let params = suite.noise_name().parse().map_err(error)?;
    let prologue = prologue(offer);
    let mut builder = snow::Builder::new(params)
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

/// Length of a segment's associated data.
pub(crate) const SEGMENT_AD_LEN: usize = 16;

/// The associated data of segment `index` of a sealed frame of `segments` segments whose
/// first nonce is `first`: `first` (u64), `segments` (u32), `index` (u32), little-endian.
/// It binds each segment to its place in its own frame, so no run of segments opens as
/// a frame of its own and no two frames merge into one.
pub(crate) fn segment_ad(first: u64, segments: u32, index: u32) -> [u8; SEGMENT_AD_LEN] {
    let mut ad = [0u8; SEGMENT_AD_LEN];
    ad[..8].copy_from_slice(&first.to_le_bytes());
    ad[8..12].copy_from_slice(&segments.to_le_bytes());
    ad[12..].copy_from_slice(&index.to_le_bytes());
    ad
}

/// The key of epoch `to`, from `key` at epoch `from`: `None` when it is `key` itself.
/// Nothing is committed, so a frame that fails leaves the keys as they were.
fn key_at(key: &TransportKey, from: u64, to: u64) -> Option<TransportKey> {
    let mut next: Option<TransportKey> = None;
    for _ in from..to {
        next = Some(next.as_ref().unwrap_or(key).rekeyed());
    }
    next
}

/// Sealing and opening with explicit nonces and epoch rekeying.
struct Cipher {
    send: TransportKey,
    recv: TransportKey,
    interval: u64,
    send_next: u64,
    send_epoch: u64,
    recv_next: u64,
    recv_epoch: u64,
    /// A frame failed authentication: open nothing more.
    broken: bool,
}

impl Cipher {
    fn new(send: TransportKey, recv: TransportKey, interval: u64) -> Self {
        Cipher {
            send,
            recv,
            interval: interval.max(u64::from(MIN_REKEY_INTERVAL)),
            send_next: 0,
            send_epoch: 0,
            recv_next: 0,
            recv_epoch: 0,
            broken: false,
        }
    }

    /// Seals the plaintext `head` ‖ `bulk`, segment by segment, each copied once into
    /// `dst` and encrypted there. The nonce and epoch advance only when it succeeded.
    fn seal(
        &mut self,
        head: &[u8],
        bulk: &[u8],
        max_frame_len: usize,
        dst: &mut BytesMut,
    ) -> Result<(), SecurityError> {
        let plain_len = head.len() + bulk.len();
        let segments = sealed_segments(plain_len) as u64;
        let count = u32::try_from(segments)
            .map_err(|_| SecurityError::Handshake("frame too large to seal".into()))?;
        let mut first = self.send_next;
        if first / self.interval != (first + segments - 1) / self.interval {
            first = (first / self.interval + 1) * self.interval;
        }
        let Some(next) = first.checked_add(segments).filter(|n| *n < u64::MAX / 2) else {
            return Err(SecurityError::Handshake("nonces exhausted".into()));
        };
        let epoch = first / self.interval;
        let rekeyed = key_at(&self.send, self.send_epoch, epoch);
        let key = rekeyed.as_ref().unwrap_or(&self.send);
        let ct_len = sealed_ciphertext_len(plain_len);
        let sealed = encode_sealed(max_frame_len, dst, first, ct_len, |buf| {
            let (mut head, mut bulk) = (head, bulk);
            for i in 0..count {
                let start = buf.len();
                let mut want = SEALED_SEGMENT_PLAINTEXT.min(head.len() + bulk.len());
                let from_head = want.min(head.len());
                buf.extend_from_slice(&head[..from_head]);
                head = &head[from_head..];
                want -= from_head;
                buf.extend_from_slice(&bulk[..want]);
                bulk = &bulk[want..];
                let ad = segment_ad(first, count, i);
                let tag = key.seal_in_place(first + u64::from(i), &ad, &mut buf[start..])?;
                buf.extend_from_slice(tag.as_ref());
            }
            Ok::<(), super::transport_key::AeadError>(())
        });
        match sealed {
            Ok(Ok(())) => {
                if let Some(key) = rekeyed {
                    self.send = key;
                    tracing::debug!(epoch, "sending key renewed");
                }
                self.send_epoch = epoch;
                self.send_next = next;
                Ok(())
            }
            Ok(Err(_)) => Err(SecurityError::Handshake("sealing failed".into())),
            Err(e) => Err(SecurityError::Handshake(format!("sealed frame: {e}"))),
        }
    }

    /// Opens a frame that may be anyone's (one that arrived before the keys): one that
    /// fails authentication is dropped without breaking the link.
    fn try_open(&mut self, sealed: Sealed) -> Option<Bytes> {
        if self.broken {
            return None;
        }
        self.open_checked(sealed).ok().flatten()
    }

    fn open(&mut self, sealed: Sealed) -> Result<Option<Bytes>, SecurityError> {
        if self.broken {
            return Err(SecurityError::BadSealedFrame);
        }
        let opened = self.open_checked(sealed);
        self.broken = opened.is_err();
        opened
    }

    fn open_checked(&mut self, sealed: Sealed) -> Result<Option<Bytes>, SecurityError> {
        if sealed.nonce < self.recv_next {
            return Ok(None);
        }
        let ct_len = sealed.ciphertext.len();
        let segments = ct_len.div_ceil(SEALED_SEGMENT_LEN).max(1) as u64;
        let count = u32::try_from(segments).map_err(|_| SecurityError::BadSealedFrame)?;
        let last_len = ct_len - (segments as usize - 1) * SEALED_SEGMENT_LEN;
        if last_len <= SEALED_TAG_LEN {
            return Err(SecurityError::BadSealedFrame);
        }
        let first = sealed.nonce;
        let epoch = first / self.interval;
        let last = first
            .checked_add(segments - 1)
            .ok_or(SecurityError::BadSealedFrame)?;
        if last / self.interval != epoch || epoch > self.recv_epoch + MAX_EPOCH_SKIP {
            return Err(SecurityError::BadSealedFrame);
        }
        let rekeyed = key_at(&self.recv, self.recv_epoch, epoch);
        let key = rekeyed.as_ref().unwrap_or(&self.recv);
        let opened = match sealed.ciphertext.try_into_mut() {
            // The frame's buffer is ours alone: open it where it lies, each segment's
            // plaintext moved down over the tags before it as it is decrypted.
            Ok(mut buf) => {
                let mut at = 0;
                for i in 0..count {
                    let from = i as usize * SEALED_SEGMENT_LEN;
                    let end = (from + SEALED_SEGMENT_LEN).min(buf.len());
                    let ad = segment_ad(first, count, i);
                    at += key
                        .open_within(first + u64::from(i), &ad, &mut buf[at..end], from - at)
                        .map_err(|_| SecurityError::BadSealedFrame)?;
                }
                buf.truncate(at);
                buf
            }
            // Shared (the transport still reads into the same allocation): each
            // segment's ciphertext is copied once into the output and opened there.
            Err(ct) => {
                let mut out =
                    BytesMut::with_capacity(ct.len() - segments as usize * SEALED_TAG_LEN);
                for (i, chunk) in (0..count).zip(ct.chunks(SEALED_SEGMENT_LEN)) {
                    let Some(split) = chunk.len().checked_sub(SEALED_TAG_LEN) else {
                        return Err(SecurityError::BadSealedFrame);
                    };
                    let (body, tag) = chunk.split_at(split);
                    let start = out.len();
                    out.extend_from_slice(body);
                    let ad = segment_ad(first, count, i);
                    key.open_in_place(first + u64::from(i), &ad, &mut out[start..], tag)
                        .map_err(|_| SecurityError::BadSealedFrame)?;
                }
                out
            }
        };
        if let Some(key) = rekeyed {
            self.recv = key;
            tracing::debug!(epoch, "receiving key renewed");
        }
        self.recv_epoch = epoch;
        self.recv_next = last + 1;
        Ok(Some(opened.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::DeviceIdentity;
    use interconnect_proto::DEFAULT_MAX_FRAME_LEN;

    fn link(role: Role, key: u8, rekey_interval: u32) -> SecureLink {
        let mut config = NoiseConfig::new(DeviceIdentity::from_private_key([key; 32]));
        config.rekey_interval = rekey_interval;
        SecureLink::new(config, role)
    }

    /// A watch and a phone link after a completed handshake.
    fn established(rekey_interval: u32) -> (SecureLink, SecureLink) {
        let mut watch = link(Role::Watch, 1, rekey_interval);
        let mut phone = link(Role::Phone, 2, rekey_interval);
        watch.start();
        phone.start();
        for _ in 0..4 {
            while let Some(Frame::Handshake(h)) = watch.out.pop_front() {
                phone.on_handshake(h);
            }
            while let Some(Frame::Handshake(h)) = phone.out.pop_front() {
                watch.on_handshake(h);
            }
        }
        assert!(watch.is_established() && phone.is_established());
        assert_eq!(watch.pairing_code(), phone.pairing_code());
        (watch, phone)
    }

    fn seal(link: &mut SecureLink, plain: &[u8]) -> Sealed {
        let mut dst = BytesMut::new();
        // A short head and the rest as bulk: segments then straddle the two.
        let (head, bulk) = plain.split_at(plain.len().min(3));
        link.seal(head, bulk, DEFAULT_MAX_FRAME_LEN, &mut dst)
            .unwrap();
        match Frame::decode(dst.freeze(), DEFAULT_MAX_FRAME_LEN) {
            Ok(Frame::Sealed(sealed)) => sealed,
            other => panic!("not a sealed frame: {other:?}"),
        }
    }

    fn epochs(link: &SecureLink) -> (u64, u64) {
        match &link.phase {
            Phase::Established(est) => (est.cipher.send_epoch, est.cipher.recv_epoch),
            _ => panic!("not established"),
        }
    }

    #[test]
    fn keys_renew_every_interval_and_every_frame_still_opens() {
        let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
        for i in 0..2000u32 {
            let plain = i.to_le_bytes();
            let sealed = seal(&mut watch, &plain);
            assert_eq!(phone.open(sealed).unwrap().as_deref(), Some(&plain[..]));
        }
        assert_eq!(
            epochs(&watch).0,
            3,
            "2000 nonces at 512 a key: epochs 0 to 3"
        );
        assert_eq!(epochs(&phone).1, 3);
    }

    #[test]
    fn frames_open_alike_in_place_and_from_a_shared_buffer_and_tampering_fails_both() {
        let big: Vec<u8> = (0..3 * SEALED_SEGMENT_PLAINTEXT + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        for shared in [false, true] {
            let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
            let sealed = seal(&mut watch, &big);
            // Another handle on the same bytes (as a transport's read buffer would be)
            // forces the copying path.
            let _other = shared.then(|| sealed.ciphertext.clone());
            assert_eq!(
                phone.open(sealed).unwrap().as_deref(),
                Some(&big[..]),
                "shared {shared}"
            );
            for segment in 0..4 {
                let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
                let sealed = seal(&mut watch, &big);
                let mut bytes = sealed.ciphertext.to_vec();
                bytes[segment * SEALED_SEGMENT_LEN + 5] ^= 0x40;
                let tampered = Sealed {
                    nonce: sealed.nonce,
                    ciphertext: Bytes::from(bytes),
                };
                let _other = shared.then(|| tampered.ciphertext.clone());
                assert!(
                    phone.open(tampered).is_err(),
                    "segment {segment}, shared {shared}"
                );
            }
        }
    }

    #[test]
    fn a_frame_never_spans_two_keys() {
        let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
        for _ in 0..510 {
            let sealed = seal(&mut watch, b"x");
            phone.open(sealed).unwrap();
        }
        // Four segments do not fit in nonces 510 and 511: the frame starts at 512.
        let big = vec![7u8; 3 * SEALED_SEGMENT_PLAINTEXT + 1];
        let sealed = seal(&mut watch, &big);
        assert_eq!(sealed.nonce, 512);
        assert_eq!(phone.open(sealed).unwrap().as_deref(), Some(&big[..]));
    }

    #[test]
    fn old_nonces_are_dropped_and_far_future_ones_are_refused() {
        let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
        let first = seal(&mut watch, b"first");
        phone.open(first.clone()).unwrap();
        for _ in 0..600 {
            let sealed = seal(&mut watch, b"more");
            phone.open(sealed).unwrap();
        }
        assert_eq!(phone.open(first).unwrap(), None, "a replay is dropped");
        let forged = Sealed {
            nonce: u64::from(MIN_REKEY_INTERVAL) * (MAX_EPOCH_SKIP + 5),
            ciphertext: Bytes::from(vec![0u8; 40]),
        };
        assert_eq!(phone.open(forged), Err(SecurityError::BadSealedFrame));
    }

    #[test]
    fn a_frame_from_the_other_direction_does_not_open() {
        let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
        let to_watch = seal(&mut phone, b"to the watch");
        // Reflected back to the phone: sealed with the phone's sending key.
        assert_eq!(phone.open(to_watch), Err(SecurityError::BadSealedFrame));
        let sealed = seal(&mut watch, b"hello");
        assert!(phone.open(sealed).is_err(), "nothing opens after a forgery");
        // The phone can still seal its error report.
        let report = seal(&mut phone, b"error report");
        assert_eq!(
            watch.open(report).unwrap().as_deref(),
            Some(&b"error report"[..])
        );
    }

    /// A sealed frame made of `ciphertext`'s segments `range`, claiming nonce `nonce`.
    fn segments_of(sealed: &Sealed, range: std::ops::Range<usize>, nonce: u64) -> Sealed {
        let from = range.start * SEALED_SEGMENT_LEN;
        let to = (range.end * SEALED_SEGMENT_LEN).min(sealed.ciphertext.len());
        Sealed {
            nonce,
            ciphertext: sealed.ciphertext.slice(from..to),
        }
    }

    #[test]
    fn a_run_of_segments_cut_out_of_a_frame_does_not_open_alone() {
        let big: Vec<u8> = (0..3 * SEALED_SEGMENT_PLAINTEXT - 7)
            .map(|i| (i % 253) as u8)
            .collect();
        for (range, offset) in [(1..2, 1), (1..3, 1), (2..3, 2), (0..1, 0), (0..2, 0)] {
            let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
            let sealed = seal(&mut watch, &big);
            let forged = segments_of(&sealed, range.clone(), sealed.nonce + offset);
            assert_eq!(
                phone.open(forged),
                Err(SecurityError::BadSealedFrame),
                "segments {range:?} delivered alone"
            );
        }
    }

    #[test]
    fn two_frames_merged_into_one_do_not_open() {
        let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
        let a = seal(&mut watch, b"first frame");
        let b = seal(&mut watch, b"second frame");
        assert_eq!(b.nonce, a.nonce + 1);
        let mut both = a.ciphertext.to_vec();
        both.extend_from_slice(&b.ciphertext);
        // Padded so the merged ciphertext splits back at the first frame's end.
        let merged = Sealed {
            nonce: a.nonce,
            ciphertext: Bytes::from(both),
        };
        assert!(phone.open(merged).is_err());
        // Alone and in place, each opens.
        let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
        let a = seal(&mut watch, b"first frame");
        let b = seal(&mut watch, b"second frame");
        assert_eq!(phone.open(a).unwrap().as_deref(), Some(&b"first frame"[..]));
        assert_eq!(
            phone.open(b).unwrap().as_deref(),
            Some(&b"second frame"[..])
        );
    }

    #[test]
    fn a_seal_that_fails_at_an_epoch_change_leaves_the_keys_in_step() {
        let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
        for _ in 0..510 {
            let sealed = seal(&mut watch, b"x");
            phone.open(sealed).unwrap();
        }
        // Four segments would start the next epoch, but the frame is too large to send.
        let big = vec![7u8; 3 * SEALED_SEGMENT_PLAINTEXT + 1];
        let mut dst = BytesMut::new();
        assert!(watch.seal(&big, &[], 4096, &mut dst).is_err());
        assert!(dst.is_empty());
        assert_eq!(epochs(&watch).0, 0, "the failed seal committed nothing");
        let sealed = seal(&mut watch, b"after");
        assert_eq!(sealed.nonce, 510);
        assert_eq!(phone.open(sealed).unwrap().as_deref(), Some(&b"after"[..]));
    }

    #[test]
    fn a_forged_frame_far_ahead_does_not_move_the_receiving_key() {
        let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
        let forged = Sealed {
            nonce: u64::from(MIN_REKEY_INTERVAL) * 3,
            ciphertext: Bytes::from(vec![0u8; 40]),
        };
        assert!(phone.open(forged).is_err());
        assert_eq!(epochs(&phone).1, 0);
        let _ = seal(&mut watch, b"unused");
    }

    #[test]
    fn handshake_frames_of_any_step_after_the_keys_change_nothing() {
        for role in [Role::Watch, Role::Phone] {
            for step in 0..=255u8 {
                for len in [0usize, 32, 48] {
                    let (mut watch, mut phone) = established(MIN_REKEY_INTERVAL);
                    let (victim, peer) = match role {
                        Role::Watch => (&mut watch, &mut phone),
                        Role::Phone => (&mut phone, &mut watch),
                    };
                    victim.events.clear();
                    victim.on_handshake(Handshake {
                        step,
                        offered: 3,
                        suite: 1,
                        rekey_interval: 512,
                        message: Bytes::from(vec![step; len]),
                    });
                    assert!(victim.is_established(), "{role:?} step {step} len {len}");
                    assert!(
                        victim.events.is_empty(),
                        "{role:?} step {step}: {:?}",
                        victim.events
                    );
                    assert!(victim.out.is_empty());
                    let sealed = seal(victim, b"still sealed");
                    assert_eq!(
                        peer.open(sealed).unwrap().as_deref(),
                        Some(&b"still sealed"[..])
                    );
                }
            }
        }
    }

    #[test]
    fn a_wrong_step_4_before_the_real_one_is_dropped() {
        let mut watch = link(Role::Watch, 1, MIN_REKEY_INTERVAL);
        let mut phone = link(Role::Phone, 2, MIN_REKEY_INTERVAL);
        watch.start();
        phone.start();
        while let Some(Frame::Handshake(h)) = watch.out.pop_front() {
            phone.on_handshake(h); // step 1
        }
        while let Some(Frame::Handshake(h)) = phone.out.pop_front() {
            watch.on_handshake(h); // step 2
        }
        while let Some(Frame::Handshake(h)) = watch.out.pop_front() {
            phone.on_handshake(h); // step 3
        }
        assert!(watch.is_established());
        assert_eq!(watch.pairing_code(), None, "the code needs step 4");
        let Frame::Handshake(forged) = step(4, Bytes::from(vec![9u8; 32])) else {
            unreachable!()
        };
        watch.on_handshake(forged);
        assert!(watch.is_established());
        assert_eq!(watch.pairing_code(), None);
        while let Some(Frame::Handshake(h)) = phone.out.pop_front() {
            watch.on_handshake(h); // the real step 4
        }
        assert!(watch.pairing_code().is_some());
        assert_eq!(watch.pairing_code(), phone.pairing_code());
    }

    fn hex(bytes: &[u8]) -> String {
        hex::encode(bytes)
    }

    /// Long hex wrapped at 64 digits, indented under its label.
    fn hex_block(bytes: &[u8]) -> String {
        hex(bytes)
            .as_bytes()
            .chunks(64)
            .map(|c| format!("    {}\n", std::str::from_utf8(c).unwrap()))
            .collect()
    }

    fn counting(from: u8) -> [u8; 32] {
        std::array::from_fn(|i| from.wrapping_add(i as u8))
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
        link.seal(&plain, &[], DEFAULT_MAX_FRAME_LEN, &mut dst)
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
                let mut link = SecureLink::new(config, role);
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
                Ok(Frame::Sealed(s)) => phone.open(s).unwrap().unwrap(),
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
            let Ok(Frame::Sealed(parts)) = Frame::decode(sealed.clone(), DEFAULT_MAX_FRAME_LEN)
            else {
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
}
