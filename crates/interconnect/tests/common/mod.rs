//! What the runtime's test files share.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use interconnect::{SecurityError, SecurityEvent, SecurityEvents};

/// The next refusal among a side's security events.
pub async fn refusal(events: &mut SecurityEvents) -> SecurityError {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), events.next())
            .await
            .expect("a security event within a minute")
            .expect("the endpoint runs");
        if let SecurityEvent::Refused(error) = event {
            return error;
        }
    }
}
