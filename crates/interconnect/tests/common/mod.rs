//! What the runtime's test files share.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use interconnect::{Config, Connection, Events, Hub, SecurityError, SecurityEvent, SecurityEvents};

/// The next refusal among a side's security events, within ten virtual seconds in all:
/// a refusal that never comes fails the test then, however many other security events
/// (a refused watch's retries) keep arriving meanwhile.
pub async fn refusal(events: &mut SecurityEvents) -> SecurityError {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("a refusal within ten seconds")
            .expect("the endpoint runs");
        if let SecurityEvent::Refused(error) = event {
            return error;
        }
    }
}

/// A phone started from its state directory on `network`, with `package` registered:
/// the hub, the app's connection and its events.
pub async fn phone(
    network: &transport_mock::MockNetwork,
    dir: &std::path::Path,
    package: &str,
) -> (Hub, Connection, Events) {
    let hub = Hub::new(network.endpoints().1, Config::new(dir).unwrap());
    let app = hub.register(package, 3, None).await.unwrap();
    let events = app.events().unwrap();
    (hub, app, events)
}

/// The next event of `events`, on the paused clock: waiting ten virtual minutes at most.
pub async fn next(events: &mut Events) -> interconnect::ConnectionEvent {
    tokio::time::timeout(Duration::from_secs(600), events.next())
        .await
        .expect("an event within ten minutes")
        .expect("the stream is open")
}
