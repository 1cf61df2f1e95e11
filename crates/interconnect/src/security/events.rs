//! What the async API reports about the secure layer: who the peer is, pairing prompts,
//! pins and refusals.

use std::sync::atomic::AtomicU64;

use tokio::sync::mpsc;

use super::{CipherSuite, Fingerprint, PairingCode, SecurityError};

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
pub struct PairingRequest {
    fingerprint: Fingerprint,
    code: PairingCode,
    /// Takes the user's answer to the driver that asked (once).
    answer: Option<Box<dyn FnOnce(bool) + Send + Sync>>,
}

impl std::fmt::Debug for PairingRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairingRequest")
            .field("fingerprint", &self.fingerprint)
            .field("code", &self.code)
            .finish_non_exhaustive()
    }
}

impl PairingRequest {
    pub(crate) fn new(
        fingerprint: Fingerprint,
        code: PairingCode,
        answer: impl FnOnce(bool) + Send + Sync + 'static,
    ) -> Self {
        PairingRequest {
            fingerprint,
            code,
            answer: Some(Box::new(answer)),
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
        if let Some(answer) = self.answer.take() {
            answer(accept);
        }
    }
}

impl Drop for PairingRequest {
    fn drop(&mut self) {
        self.answer(false);
    }
}

/// The security events of an [`Interconnect`](crate::Interconnect) or [`Hub`](crate::Hub), as a stream.
///
/// Its queue holds 32 events; while it is full, newer events are dropped and counted,
/// and the stream says how many with a [`SecurityEvent::Missed`] once it is read
/// again: no event goes missing unsaid.
#[derive(Debug)]
pub struct SecurityEvents {
    pub(crate) rx: mpsc::Receiver<SecurityEvent>,
    /// Events the driver dropped and has not said yet (it says them itself when the
    /// queue has room; the stream does once the queue is empty).
    pub(crate) missed: std::sync::Arc<AtomicU64>,
}

/// Security events queued for the owner before new ones are dropped (a dropped pairing
/// request is a rejected one).
const SECURITY_EVENTS: usize = 32;

/// The sending end of an endpoint's [`SecurityEvents`], shared by its drivers.
#[derive(Clone, Debug)]
pub(crate) struct Reporter {
    tx: mpsc::Sender<SecurityEvent>,
    missed: std::sync::Arc<AtomicU64>,
}

impl Reporter {
    /// A reporter and the stream it feeds.
    pub(crate) fn new() -> (Reporter, SecurityEvents) {
        let (tx, rx) = mpsc::channel(SECURITY_EVENTS);
        let missed = std::sync::Arc::new(AtomicU64::new(0));
        let events = SecurityEvents {
            rx,
            missed: missed.clone(),
        };
        (Reporter { tx, missed }, events)
    }

    /// Bounded: while the owner does not read the stream, new events are dropped (a
    /// dropped pairing request rejects the pairing) rather than piling up, and counted:
    /// once there is room, a [`SecurityEvent::Missed`] says how many.
    pub(crate) fn report(&self, event: SecurityEvent) {
        use std::sync::atomic::Ordering::AcqRel;
        // What was dropped is said first, in its place in the stream.
        let missed = self.missed.swap(0, AcqRel);
        if missed > 0
            && self
                .tx
                .try_send(SecurityEvent::Missed { count: missed })
                .is_err()
        {
            self.missed.fetch_add(missed + 1, AcqRel);
            return tracing::debug!(?event, "security event dropped: the stream is not read");
        }
        if let Err(error) = self.tx.try_send(event) {
            self.missed.fetch_add(1, AcqRel);
            tracing::debug!(event = ?error.into_inner(), "security event dropped: the stream is not read");
        }
    }
}

impl SecurityEvents {
    /// The next event; `None` once the endpoint stopped.
    pub async fn next(&mut self) -> Option<SecurityEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<SecurityEvent>> {
        use std::task::Poll;
        let polled = self.rx.poll_recv(cx);
        if matches!(polled, Poll::Ready(Some(_))) {
            return polled;
        }
        match self.missed.swap(0, std::sync::atomic::Ordering::AcqRel) {
            0 => polled,
            count => Poll::Ready(Some(SecurityEvent::Missed { count })),
        }
    }
}

impl futures_core::Stream for SecurityEvents {
    type Item = SecurityEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<SecurityEvent>> {
        self.poll_event(cx)
    }
}
