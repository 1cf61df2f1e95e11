//! Secure links: Noise XX handshake, device identities, trust policies, sealed frames.
//!
//! Every new link starts with a Noise XX handshake (watch initiates) in [`Handshake`]
//! frames; from then on every frame travels inside a [`Sealed`] frame, encrypted and
//! authenticated with the session keys. The session's own `Hello` (versions, limits,
//! resume token) is the first sealed frame each way, sent only once the peer's key passed
//! this side's [`TrustPolicy`], so nothing reaches a channel before both devices are
//! authenticated.
//!
//! ## Handshake
//! ```text
//! watch                                             phone
//!  1 offer(suites, choice, rekey), -> e         ──▶  checks the choice is allowed here
//!                                               ◀──  2 <- e, ee, s, es   [commit = SHA-256(Np)]
//!  checks phone key (pinned / first use)
//!  3 -> s, se  [Nw]                             ──▶  checks watch key; 4 reveal Np
//!  sealed Hello                                 ◀─▶  sealed Hello
//! ```
//! - **Downgrade protection.** The step-1 offer (allowed suites, chosen suite, rekey
//!   interval) is mixed into the Noise prologue on both sides; an attacker who rewrites
//!   it makes the transcripts differ and step 2 fails to decrypt.
//! - **Numeric comparison.** The 6-digit code is SHA-256 of the handshake hash and two
//!   32-byte nonces, the phone's committed (step 2) before it sees the watch's (step 3).
//!   Without the commitment, a man in the middle could try ephemeral keys until both
//!   legs showed the same code; with it, a match by chance is one in a million.
//!
//! ## Sealed frames
//! A sealed frame carries the inner frame (header and payload, no CRC) as AEAD segments
//! of at most 64 KiB (Noise's message limit), each with its own nonce and, as associated
//! data, the frame's first nonce, its segment count and the segment's index, so a
//! segment opens only in its place in its own frame. The first nonce is
//! written in the frame, so a receiver can drop a duplicated, late or replayed frame (its
//! nonce is not above the last one accepted) without losing the link: links that lose or
//! reorder frames keep working, and the channel layer resends what went missing. A frame
//! that fails authentication drops the link. Keys are renewed (Noise `REKEY`) every
//! `rekey_interval` nonces; the epoch is the nonce divided by the interval, so both sides
//! rekey at the same point without signalling it. The handshake runs on `snow`; sealing
//! and opening use the split keys with `ring` directly, in place on the frame buffers
//! (see `transport_key.rs` for why; a test checks the output against `snow`'s).
//!
//! ## Threat model
//! Protected, against anyone who can read, change, drop, replay or inject bytes on the
//! link (radio or network): confidentiality and integrity of every frame after the
//! handshake, including app names, messages and files; mutual authentication of the two
//! devices by their static keys, checked against the trust policy before any channel
//! opens; replay of frames within a link or from earlier sessions; cipher-suite
//! downgrade; forward secrecy (ephemeral keys per link).
//!
//! Fail closed: once keys exist, nothing that arrives in the clear changes the link's
//! state (a forged handshake step or plaintext frame is dropped), a failure keeps the
//! keys so its report travels sealed, and nothing but handshake steps and a fixed
//! refusal ever leaves unsealed, whatever state an error left the session in. A link
//! being dropped sends only its error report. Before keys exist a stranger can make this
//! side take frames of at most 512 bytes; its refusal carries the code and a fixed text
//! (never which peer is pinned), and a refusal received in the clear is marked
//! unauthenticated and never taken as final ([`SecurityError::is_lasting`]). Keys and
//! nonces move only when a frame sealed or opened, so a forged frame far ahead leaves
//! them as they were. Private keys, split keys and identity file text are wiped when
//! dropped.
//!
//! Walls between devices and between apps, each kept by a test that attacks it:
//! - **A device's messages are its own.** What a phone holds for a watch whose link went
//!   (its app had not taken it) is kept by that watch's key and device id and handed only
//!   to it; when another watch opens the package first, the sender is told 1006, never
//!   "delivered" (`transport-tcp/tests/isolation.rs`; the `hub_session` fuzzer).
//! - **A registration cannot inherit a channel.** Registering a package again closes its
//!   channels (1007 where the watch asked for a signature the new registration lacks)
//!   and detaches the old handle; every reopen is checked anew. A channel id belongs to
//!   one package: an `Open` of another package on a live id is refused and moves no data.
//! - **A flood cannot keep the watch out.** A new connection never retires one further
//!   along: up to 32 are vetted beside the link, and the one pushed out is from the
//!   source holding the most, the least far, the oldest; each handshake step may take
//!   2 s before the keys exist; a source starts at most 16 handshakes at once and 8 a
//!   second, beyond which its connections close unread, before any key operation
//!   (`transport-tcp/tests/flood.rs`: 100 silent and 100
//!   stalled connections a second from eight other addresses, the watch served 10 of 10
//!   times, with and without its stale link). A flood from the watch's own address
//!   shares its slots: that address is then the attacker's too.
//! - **Pairing prompts are rate-limited as a whole**: one waits at a time, whatever key
//!   asks; after a rejected or unanswered one, none for 30 s (and none from that key
//!   for a minute).
//! - **Memory is bounded against a sender**: file bytes received but not written stop
//!   the reading at one file window; control replies at 256 frames.
//! - **The state folder resists a local attacker**: created 0700; a folder, identity or
//!   `known_peers` that another user owns or others may write is refused at start;
//!   files are written through new files of random names (a planted symlink is never
//!   followed) and renamed into place.
//! - **Nothing security-relevant goes unsaid**: a security event dropped because the
//!   stream was not read is counted and reported (the runtime's `SecurityEvent::Missed`).
//!
//! Not protected: availability (an attacker can always cut or jam the link); traffic
//! analysis (frame sizes and timing); a compromised device or stolen identity file; the
//! first contact under trust on first use (whoever answers first is pinned, as with SSH);
//! which app on the phone is which (the 1007 app signature is the phone's statement,
//! trusted because the phone is authenticated).
//!
//! Plaintext mode ([`Security::InsecurePlaintext`]) exists only for debugging: anyone on
//! the path reads and changes everything, and a device id is only a claim. It still
//! does not turn passive exposure into a silent takeover: a live link is replaced only
//! by a link that names the same device *from the same source address* (a hijacker
//! elsewhere gets 4002); a watch whose address changed is served once its old link is
//! found dead (the link timeout). Someone who can send from the watch's address can take
//! its link.

mod identity;
mod noise;
mod random;
mod record;
mod transport_key;

use core::time::Duration;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

pub use identity::{DeviceIdentity, Fingerprint, PairingCode, ParseFingerprintError};
pub(crate) use noise::{NoiseEvent, SecureLink};
pub(crate) use random::{Rng, draw, rng};

#[allow(unused_imports)] // for doc links
use interconnect_proto::{Code, Handshake, Sealed};

/// How a session protects its links.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Security {
    /// Noise XX: encrypted, mutually authenticated links (the default).
    Noise(NoiseConfig),
    /// No encryption and no authentication. Both sides must choose it; a secure peer
    /// refuses a plaintext one. For debugging only.
    InsecurePlaintext,
}

/// An AEAD cipher for sealed frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CipherSuite {
    /// ChaCha20-Poly1305: fast in software, for watch firmware without AES hardware.
    ChaChaPoly = 1,
    /// AES-256-GCM: fastest where AES instructions exist (phones, PCs).
    AesGcm = 2,
}

impl CipherSuite {
    /// Every suite, in id order.
    pub const ALL: [CipherSuite; 2] = [CipherSuite::ChaChaPoly, CipherSuite::AesGcm];

    /// The suite's id on the wire.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The suite with this wire id.
    pub fn from_id(id: u8) -> Option<CipherSuite> {
        CipherSuite::ALL.into_iter().find(|s| s.id() == id)
    }

    /// Its bit in the step-1 offer.
    pub(crate) fn bit(self) -> u8 {
        1 << (self.id() - 1)
    }

    /// The Noise protocol name.
    pub(crate) fn noise_name(self) -> &'static str {
        match self {
            CipherSuite::ChaChaPoly => "Noise_XX_25519_ChaChaPoly_SHA256",
            CipherSuite::AesGcm => "Noise_XX_25519_AESGCM_SHA256",
        }
    }

    /// AES-GCM where the CPU has AES instructions, ChaCha20-Poly1305 elsewhere.
    pub fn preferred() -> CipherSuite {
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            CipherSuite::AesGcm
        } else {
            CipherSuite::ChaChaPoly
        }
    }
}

impl core::fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            CipherSuite::ChaChaPoly => "ChaCha20-Poly1305",
            CipherSuite::AesGcm => "AES-256-GCM",
        })
    }
}

/// Which peer keys a device accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustPolicy {
    /// Only these fingerprints; anyone else is refused (4007).
    Pinned(Vec<Fingerprint>),
    /// Trust on first use, then pin (as SSH does): with `known` empty, the first peer is
    /// accepted and pinned ([`Event::PeerPinned`](crate::sans_io::Event::PeerPinned)); from then
    /// on only pinned peers are.
    FirstUse {
        /// Fingerprints pinned earlier (e.g. from the runtime's `KnownPeers` file).
        known: Vec<Fingerprint>,
    },
    /// Numeric comparison: a peer not in `known` waits until the user compares the
    /// 6-digit code shown on both devices and confirms
    /// ([`Event::PairingRequest`](crate::sans_io::Event::PairingRequest),
    /// `Session::confirm_pairing`); a confirmed peer is pinned.
    Pairing {
        /// Fingerprints paired earlier.
        known: Vec<Fingerprint>,
    },
}

impl TrustPolicy {
    /// The fingerprints the policy starts with.
    pub fn known(&self) -> &[Fingerprint] {
        match self {
            TrustPolicy::Pinned(known)
            | TrustPolicy::FirstUse { known }
            | TrustPolicy::Pairing { known } => known,
        }
    }
}

/// Settings of the Noise handshake and sealed frames.
#[derive(Clone, Debug)]
pub struct NoiseConfig {
    /// This device's static key pair.
    pub identity: DeviceIdentity,
    /// Allowed suites, most preferred first. The watch offers them all and uses the first;
    /// the phone accepts the watch's choice only if it is in its own list.
    pub suites: Vec<CipherSuite>,
    /// Which peers to accept.
    pub trust: TrustPolicy,
    /// Nonces (sealed segments of up to 64 KiB) per key before both sides rekey. The
    /// watch's value binds both. At least [`MIN_REKEY_INTERVAL`].
    pub rekey_interval: u32,
    /// How long a pairing may wait for the user's confirmation.
    pub pairing_timeout: Duration,
}

/// Smallest rekey interval: more than the segments of the largest frame, so a frame never
/// spans two keys.
pub const MIN_REKEY_INTERVAL: u32 = 512;

impl NoiseConfig {
    /// Both suites (the [preferred](CipherSuite::preferred) one first), trust on first
    /// use, a rekey every 16,384 nonces (at most 1 GiB per key).
    pub fn new(identity: DeviceIdentity) -> Self {
        let preferred = CipherSuite::preferred();
        let mut suites = vec![preferred];
        suites.extend(CipherSuite::ALL.into_iter().filter(|s| *s != preferred));
        NoiseConfig {
            identity,
            suites,
            trust: TrustPolicy::FirstUse { known: Vec::new() },
            rekey_interval: 16_384,
            pairing_timeout: Duration::from_secs(120),
        }
    }

    /// The same, with this trust policy.
    pub fn with_trust(mut self, trust: TrustPolicy) -> Self {
        self.trust = trust;
        self
    }

    /// The same, allowing only these suites (most preferred first).
    pub fn with_suites(mut self, suites: &[CipherSuite]) -> Self {
        self.suites = suites.to_vec();
        self
    }
}

/// Why a secure link was refused or dropped. Each maps to a stable [`Code`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// The peer's key is not among the pinned fingerprints.
    #[error("peer device {fingerprint} is not trusted (not among the pinned fingerprints)")]
    UntrustedPeer {
        /// The peer's fingerprint.
        fingerprint: Fingerprint,
    },
    /// Trust on first use pinned another device; this one's key differs.
    #[error("peer device key changed: pinned {pinned}, this peer is {fingerprint}")]
    PeerChanged {
        /// The pinned fingerprint.
        pinned: Fingerprint,
        /// The peer's fingerprint.
        fingerprint: Fingerprint,
    },
    /// The user did not confirm the pairing code (or no one answered in time).
    #[error("pairing with {fingerprint} was not confirmed")]
    PairingRejected {
        /// The peer's fingerprint.
        fingerprint: Fingerprint,
    },
    /// The watch chose a suite this side does not allow, or offered none it allows.
    #[error("cipher suite {chosen} is not allowed here (allowed: {allowed})")]
    SuiteNotAllowed {
        /// What the watch chose (its wire id, if unknown).
        chosen: String,
        /// What this side allows.
        allowed: String,
    },
    /// A handshake message was malformed or failed to verify (including a tampered
    /// offer or pairing nonce).
    #[error("secure handshake failed: {0}")]
    Handshake(String),
    /// A sealed frame failed authentication (forged, corrupted or from another session).
    #[error("sealed frame failed authentication")]
    BadSealedFrame,
    /// A frame arrived in the clear on an encrypted link, or the peer runs in plaintext.
    #[error(
        "plaintext {0} frame on an encrypted link (the peer may run in insecure plaintext mode)"
    )]
    Plaintext(&'static str),
    /// The peer wants an encrypted link and this side runs in insecure plaintext mode.
    #[error("the peer wants an encrypted link; this side runs in insecure plaintext mode")]
    PeerWantsEncryption,
    /// The link's frame limit is too small for sealed frames of the smallest limit a
    /// session may announce (1,024 bytes sealed need a few dozen more).
    #[error("the link carries frames of at most {link} bytes; a secure link needs {needed}")]
    LinkTooSmall {
        /// The link's limit.
        link: usize,
        /// The smallest limit that works.
        needed: usize,
    },
    /// The peer refused this device during the handshake.
    #[error("refused by the {}peer: {code}: {message}", if *.authenticated { "" } else { "(unauthenticated) " })]
    RefusedByPeer {
        /// The peer's code (4007 untrusted, 4008 security failure, 4002 busy).
        code: Code,
        /// The peer's message, control characters escaped.
        message: String,
        /// Whether the refusal came sealed, from the authenticated peer. One in the clear
        /// (before keys exist) may come from anyone on the wire: it is never lasting.
        authenticated: bool,
    },
}

impl SecurityError {
    /// Whether trying again cannot help: the verdict is about who the devices are or how
    /// they are configured, and it came from this side or from the authenticated peer.
    /// Lasting: 4007 (untrusted or changed key) and 4008 (policy: suite, plaintext mode,
    /// link too small), from this side or sealed from the peer. Not lasting:
    /// 4002 (busy: the peer serves another device, which may leave), a frame or handshake
    /// message that fails authentication (4000: a broken link, which anyone on the path
    /// can cause, never a decision of the peer), a plaintext frame and any refusal in the
    /// clear; a watch keeps reconnecting with backoff after these.
    pub fn is_lasting(&self) -> bool {
        match self {
            SecurityError::RefusedByPeer {
                authenticated,
                code,
                ..
            } => *authenticated && matches!(*code, Code::UNTRUSTED_PEER | Code::SECURITY),
            SecurityError::BadSealedFrame
            | SecurityError::Handshake(_)
            | SecurityError::Plaintext(_) => false,
            SecurityError::UntrustedPeer { .. }
            | SecurityError::PeerChanged { .. }
            | SecurityError::PairingRejected { .. }
            | SecurityError::SuiteNotAllowed { .. }
            | SecurityError::PeerWantsEncryption
            | SecurityError::LinkTooSmall { .. } => true,
        }
    }

    /// The code sent to the peer and reported to the owner.
    pub fn code(&self) -> Code {
        match self {
            SecurityError::UntrustedPeer { .. }
            | SecurityError::PeerChanged { .. }
            | SecurityError::PairingRejected { .. } => Code::UNTRUSTED_PEER,
            SecurityError::RefusedByPeer { code, .. } => *code,
            SecurityError::BadSealedFrame | SecurityError::Handshake(_) => Code::PROTOCOL_ERROR,
            _ => Code::SECURITY,
        }
    }
}
