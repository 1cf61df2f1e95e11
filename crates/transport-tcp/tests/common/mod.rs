//! Helpers the TCP tests share.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use interconnect::{Config, DeviceIdentity, NoiseConfig, Security, TrustPolicy};
use interconnect_proto::DeviceId;

/// A device config with this identity, trusting exactly `trusted`, retrying fast.
pub fn pinned(id: u8, identity: &DeviceIdentity, trusted: &[&DeviceIdentity]) -> Config {
    let mut config = Config::in_memory(DeviceId([id; 16]));
    config.session.security = Security::Noise(NoiseConfig::new(identity.clone()).with_trust(
        TrustPolicy::Pinned(trusted.iter().map(|i| i.fingerprint()).collect()),
    ));
    config.backoff.initial = Duration::from_millis(20);
    config.backoff.max = Duration::from_millis(200);
    config
}

/// The next message's text, within 20 s.
pub async fn next_text(events: &mut interconnect::Events) -> String {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("an event in time")
            .expect("the stream is open");
        if let interconnect::ConnectionEvent::Message(m) = event {
            return m.decode().unwrap();
        }
    }
}
