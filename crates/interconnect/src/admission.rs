//! Admission of new links on a listener, per source address: a token bucket each, so a
//! source that connects again and again the moment it is dropped costs an accept and a
//! close, not a handshake's key operations. A watch reconnecting from its own address
//! (with backoff from 100 ms) stays far below the rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Handshakes a source may start at once.
const BURST: f64 = 16.0;
/// Handshakes a source may start per second after its burst.
const PER_SECOND: f64 = 8.0;
/// Sources remembered; past it, the one with the most tokens left is forgotten (it is
/// the one a fresh bucket would change least).
const MAX_SOURCES: usize = 1024;

/// Token buckets by source address.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn level(&self, now: Instant) -> f64 {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * PER_SECOND;
        (self.tokens + refill).min(BURST)
    }
}

impl Admission {
    /// Whether a link from `source` may start its handshake now (one without a source,
    /// as on BLE or the mock, always may).
    pub(crate) fn admit(&mut self, source: Option<IpAddr>, now: Instant) -> bool {
        let Some(source) = source else {
            return true;
        };
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&source) {
            let fullest = self
                .buckets
                .iter()
                .max_by(|a, b| a.1.level(now).total_cmp(&b.1.level(now)))
                .map(|(ip, _)| *ip);
            if let Some(ip) = fullest {
                self.buckets.remove(&ip);
            }
        }
        let bucket = self.buckets.entry(source).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        bucket.tokens = bucket.level(now);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_its_rate_and_others_are_not_touched() {
        let mut admission = Admission::default();
        let now = Instant::now();
        let stranger = Some(IpAddr::from([127, 0, 0, 2]));
        let admitted = (0..100).filter(|_| admission.admit(stranger, now)).count();
        assert_eq!(admitted, 16, "the burst");
        // Another source, and a link without a source, are admitted all the same.
        assert!(admission.admit(Some(IpAddr::from([127, 0, 0, 1])), now));
        assert!(admission.admit(None, now));
        // One second later: 8 more.
        let later = now + Duration::from_secs(1);
        let admitted = (0..100)
            .filter(|_| admission.admit(stranger, later))
            .count();
        assert_eq!(admitted, 8, "the rate");
    }

    #[test]
    fn the_table_of_sources_is_bounded() {
        let mut admission = Admission::default();
        let now = Instant::now();
        for i in 0..5000u32 {
            assert!(admission.admit(Some(IpAddr::from(i.to_be_bytes())), now));
        }
        assert!(admission.buckets.len() <= MAX_SOURCES);
    }
}
