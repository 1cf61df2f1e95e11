//! The conformance suite over a real BLE host stack: trouble-host as watch (peripheral)
//! and phone (central), each on its own Bumble virtual controller, the two sharing one
//! virtual radio. Real time: the host stacks run their own timers.

mod common;

use async_trait::async_trait;
use common::{Controllers, OnControllers};
use interconnect_conformance::{Harness, conformance_tests};
use interconnect_core::Transport;
use transport_ble::BleConfig;
use transport_ble::trouble::{HostConfig, TroubleCentral, TroublePeripheral};

struct Trouble;

#[async_trait]
impl Harness for Trouble {
    const PAUSED_CLOCK: bool = false;

    async fn pair(&self) -> (Box<dyn Transport>, Box<dyn Transport>) {
        let controllers = Controllers::start(2).await;
        let watch =
            TroublePeripheral::start(HostConfig::new(controllers.hci(0)), BleConfig::default())
                .await
                .expect("watch host");
        let phone =
            TroubleCentral::start(HostConfig::new(controllers.hci(1)), BleConfig::default())
                .await
                .expect("phone host");
        (
            Box::new(OnControllers {
                inner: watch,
                controllers: controllers.clone(),
            }),
            Box::new(OnControllers {
                inner: phone,
                controllers,
            }),
        )
    }
}

conformance_tests!(Trouble, Trouble);
