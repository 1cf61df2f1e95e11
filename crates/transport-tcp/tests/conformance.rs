//! The conformance suite over TCP on loopback, in real time.

use async_trait::async_trait;
use interconnect::Transport;
use interconnect_conformance::{Harness, conformance_tests};
use transport_tcp::{TcpDialer, TcpListener};

struct Tcp;

#[async_trait]
impl Harness for Tcp {
    const PAUSED_CLOCK: bool = false;

    async fn pair(&self) -> (Box<dyn Transport>, Box<dyn Transport>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let dialer = TcpDialer::new(listener.local_addr());
        (Box::new(dialer), Box::new(listener))
    }
}

conformance_tests!(Tcp, Tcp);

#[async_trait]
impl interconnect_conformance::several::Fleet for Tcp {
    async fn fleet(&self, watches: usize) -> (Vec<Box<dyn Transport>>, Box<dyn Transport>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let dialers = (0..watches)
            .map(|_| Box::new(TcpDialer::new(listener.local_addr())) as Box<dyn Transport>)
            .collect();
        (dialers, Box::new(listener))
    }
}

interconnect_conformance::several_watches_tests!(Tcp, Tcp);
