//! The conformance suite over the in-memory link, on the paused clock.

use async_trait::async_trait;
use interconnect::Transport;
use interconnect_conformance::{Harness, conformance_tests};
use transport_mock::{Faults, MockNetwork};

struct Mock;

#[async_trait]
impl Harness for Mock {
    const PAUSED_CLOCK: bool = true;

    async fn pair(&self) -> (Box<dyn Transport>, Box<dyn Transport>) {
        let (dialer, listener) = MockNetwork::new(Faults::default()).endpoints();
        (Box::new(dialer), Box::new(listener))
    }
}

conformance_tests!(Mock, Mock);

#[async_trait]
impl interconnect_conformance::several::Fleet for Mock {
    async fn fleet(&self, watches: usize) -> (Vec<Box<dyn Transport>>, Box<dyn Transport>) {
        let nets = MockNetwork::several(Faults::default(), watches);
        let listener = nets[0].endpoints().1;
        let dialers = nets
            .iter()
            .map(|net| Box::new(net.endpoints().0) as Box<dyn Transport>)
            .collect();
        (dialers, Box::new(listener))
    }
}

interconnect_conformance::several_watches_tests!(Mock, Mock);
