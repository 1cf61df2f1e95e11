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

#[async_trait]
impl interconnect_conformance::several::Fleet for SimBle {
    async fn fleet(&self, watches: usize) -> (Vec<Box<dyn Transport>>, Box<dyn Transport>) {
        let (nets, central) =
            SimNetwork::several(BleParams::modern(), BleConfig::default(), watches);
        let peripherals = nets
            .iter()
            .map(|net| Box::new(net.endpoints().0) as Box<dyn Transport>)
            .collect();
        (peripherals, Box::new(central))
    }
}

interconnect_conformance::several_watches_tests!(SimBle, SimBle);
