//! What a link moved over the last seconds: the driver counts the bytes of the frames it
//! writes and reads and samples the counts a few times a second while it runs; the
//! rate between the oldest and newest sample of the last seconds is published for
//! `limits()`. Nothing runs while the driver is idle: a rate older than the window reads
//! as none.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::state::{Meter, Throughput};

/// Samples at most this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The span the rate is measured over.
use crate::state::METER_WINDOW as WINDOW;
/// The shortest span a rate is given for.
const MIN_SPAN: Duration = Duration::from_millis(500);

/// The driver's counts and samples.
#[derive(Debug, Default)]
pub(super) struct Sampler {
    received: u64,
    samples: VecDeque<(Instant, u64, u64)>,
    /// When the next sample is due: a pass before then costs one comparison.
    due: Option<Instant>,
}

impl Sampler {
    pub(super) fn received(&mut self, bytes: usize) {
        self.received += bytes as u64;
    }

    /// A new link: its rate starts from nothing.
    pub(super) fn restart(&mut self, meter: &Meter) {
        self.samples.clear();
        self.due = None;
        meter.publish(None);
    }

    /// Takes a sample if the last is old enough, and publishes the rate; `sent` is what
    /// the link took so far (its writer counts it, as the transport takes each frame).
    pub(super) fn tick(&mut self, meter: &Meter, sent: u64, now: Instant) {
        if self.due.is_some_and(|due| now < due) {
            return;
        }
        self.due = now.checked_add(SAMPLE_EVERY);
        self.samples.push_back((now, sent, self.received));
        while self
            .samples
            .front()
            .is_some_and(|(at, ..)| now.duration_since(*at) > WINDOW)
        {
            self.samples.pop_front();
        }
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return;
        };
        let span = last.0.duration_since(first.0);
        if span < MIN_SPAN {
            return;
        }
        let per_second =
            |from: u64, to: u64| (to.saturating_sub(from) as f64 / span.as_secs_f64()) as u64;
        let rate = Throughput {
            sent: per_second(first.1, last.1),
            received: per_second(first.2, last.2),
        };
        meter.publish(Some((now, rate)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_is_that_of_the_last_seconds_and_fades_when_idle() {
        let (mut sampler, meter) = (Sampler::default(), Meter::default());
        sampler.tick(&meter, 0, Instant::now());
        assert_eq!(meter.throughput(), None, "no span yet");
        // 10 KiB sent and 1 KiB received every 250 ms for 2 s.
        let mut sent = 0;
        for _ in 0..8 {
            tokio::time::advance(SAMPLE_EVERY).await;
            sent += 10_240;
            sampler.received(1024);
            sampler.tick(&meter, sent, Instant::now());
        }
        let rate = meter.throughput().expect("a rate");
        assert_eq!((rate.sent, rate.received), (40_960, 4096));
        // The traffic stops: a window later the old rate is gone.
        tokio::time::advance(WINDOW + SAMPLE_EVERY).await;
        assert_eq!(meter.throughput(), None);
    }
}
