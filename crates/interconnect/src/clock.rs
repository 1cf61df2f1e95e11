//! The core's time from tokio's clock: each driver counts from the moment it started.
//!
//! The session takes [`core::time::Instant`](interconnect_core::time::Instant)s, the time
//! since an origin its driver chose. An origin per driver (not per process) keeps tests
//! on tokio's paused clock apart: each runtime's virtual time has a base of its own.

use interconnect_core::time::Instant as CoreInstant;
use tokio::time::Instant;

/// One driver's clock: tokio's, counted from `origin`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub(crate) fn start() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    /// The time now, for the session.
    pub(crate) fn now(self) -> CoreInstant {
        self.to_core(Instant::now())
    }

    /// A tokio instant as the session counts it.
    pub(crate) fn to_core(self, at: Instant) -> CoreInstant {
        let micros = at.saturating_duration_since(self.origin).as_micros();
        CoreInstant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// A session's deadline as a tokio instant (`None` beyond what tokio can hold).
    pub(crate) fn to_tokio(self, at: CoreInstant) -> Option<Instant> {
        self.origin.checked_add(at.since_origin())
    }
}
