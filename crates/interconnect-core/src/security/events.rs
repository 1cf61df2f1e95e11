//! What the async API reports about the secure layer: who the peer is, pairing prompts,
//! pins and refusals.

use tokio::sync::mpsc;

use super::{CipherSuite, Fingerprint, PairingCode, SecurityError};
use crate::driver::Command;

/// A device-level security event, from [`Interconnect::security_events`] or
/// [`Hub::security_events`].
///
/// [`Interconnect::security_events`]: crate::Interconnect::security_events
/// [`Hub::security_events`]: crate::Hub::security_events
#[derive(Debug)]
#[non_exhaustive]
pub enum SecurityEvent {
    /// The peer device's key passed the trust policy on a new link.
    Authenticated {
        /// The peer's key fingerprint.
        fingerprint: Fingerprint,
        /// The suite sealing the link.
        suite: CipherSuite,
        /// The link's pairing code, when known on this side at that point.
        code: Option<PairingCode>,
    },
    /// Numeric comparison: show the code, then confirm or reject.
    PairingRequest(PairingRequest),
    /// A peer was pinned (and saved to the known-peers file, if one is configured).
    Pinned {
        /// The fingerprint.
        fingerprint: Fingerprint,
    },
    /// A link was refused by the secure layer (this side's policy or the peer's).
    Refused(SecurityError),
    /// A peer was pinned for this run, but the known-peers file could not be written:
    /// after a restart, trust on first use would start afresh. Fix the file (or its
    /// folder's permissions) and restart.
    PinNotSaved {
        /// The fingerprint.
        fingerprint: Fingerprint,
        /// Why the file could not be written.
        error: crate::IdentityError,
    },
    /// The stream was not read fast enough: this many events (of any kind) were dropped
    /// before this one (its queue holds 32). Dropped pairing requests were rejected.
    Missed {
        /// Events dropped since the last one delivered.
        count: u64,
    },
}

/// A pairing waiting for the user. Dropping it unanswered rejects the pairing.
#[derive(Debug)]
pub struct PairingRequest {
    fingerprint: Fingerprint,
    code: PairingCode,
    link: u64,
    commands: Option<mpsc::UnboundedSender<Command>>,
}

impl PairingRequest {
    pub(crate) fn new(
        fingerprint: Fingerprint,
        code: PairingCode,
        link: u64,
        commands: mpsc::UnboundedSender<Command>,
    ) -> Self {
        PairingRequest {
            fingerprint,
            code,
            link,
            commands: Some(commands),
        }
    }

    /// The peer's key fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The code to show; the other device shows the same one unless someone sits between.
    pub fn code(&self) -> PairingCode {
        self.code
    }

    /// The codes match: pin the peer and let the link come up.
    pub fn confirm(mut self) {
        self.answer(true);
    }

    /// The codes differ (or the user declined): refuse the peer (4007).
    pub fn reject(mut self) {
        self.answer(false);
    }

    fn answer(&mut self, accept: bool) {
        if let Some(commands) = self.commands.take() {
            let _ = commands.send(Command::ConfirmPairing {
                link: self.link,
                accept,
            });
        }
    }
}

impl Drop for PairingRequest {
    fn drop(&mut self) {
        self.answer(false);
    }
}
