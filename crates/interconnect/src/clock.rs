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
    /// The time of the driver's pass under way, read once when it woke: a pass never
    /// waits, so what it does happens at one time, and the clock is not read again for
    /// each frame, event and sample.
    pass: Option<(Instant, CoreInstant)>,
}

impl Clock {
    /// A clock whose origin is now.
    pub(crate) fn start() -> Clock {
        Clock {
            origin: Instant::now(),
            pass: None,
        }
    }

    /// The time now, for the session: the pass's, during one.
    pub(crate) fn now(self) -> CoreInstant {
        match self.pass {
            Some((_, at)) => at,
            None => self.to_core(Instant::now()),
        }
    }

    /// The time now as tokio counts it: the pass's, during one.
    pub(crate) fn tokio_now(self) -> Instant {
        self.pass.map_or_else(Instant::now, |(at, _)| at)
    }

    /// A pass starts: the clock is read once for it.
    pub(crate) fn begin_pass(&mut self) {
        let at = Instant::now();
        self.pass = Some((at, self.to_core(at)));
    }

    /// The pass ended (before the driver waits again, or awaits anything).
    pub(crate) fn end_pass(&mut self) {
        self.pass = None;
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
