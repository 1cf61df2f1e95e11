//! The conformance suite over the simulated radio (2M PHY, DLE, MTU 247), paused clock.

use async_trait::async_trait;
use interconnect::Transport;
use interconnect_conformance::{Harness, conformance_tests};
use transport_ble::{BleConfig, BleParams, SimNetwork};

struct SimBle;

#[async_trait]
impl Harness for SimBle {
    const PAUSED_CLOCK: bool = true;

    async fn pair(&self) -> (Box<dyn Transport>, Box<dyn Transport>) {
        let (peripheral, central) =
            SimNetwork::new(BleParams::modern(), BleConfig::default()).endpoints();
        // The watch is the peripheral, the phone the central.
        (Box::new(peripheral), Box::new(central))
    }
}

conformance_tests!(SimBle, SimBle);
