//! `pair`: numeric-comparison pairing of a watch and a phone, then pinning.

use crate::commands::*;
use crate::output::*;
use crate::*;
use interconnect::{Hub, Interconnect, Security};
use interconnect_proto::Code;
use security::{Outcome, Role, SecurityArgs};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use transport_tcp::{TcpConfig, TcpDialer, TcpListener};

pub(crate) async fn pair(
    listen: Option<SocketAddr>,
    connect: Option<String>,
    yes: bool,
    timeout: Duration,
    security: &SecurityArgs,
) -> Result<(), Failure> {
    let role = if listen.is_some() {
        Role::Phone
    } else {
        Role::Watch
    };
    let setup = security.setup(role, true)?;
    if matches!(setup.security, Security::InsecurePlaintext) {
        return Err(failure(
            Code::SECURITY,
            "pairing needs an encrypted link; drop --insecure-plaintext",
        ));
    }
    let mut config = endpoint_config(setup.security);
    config.known_peers = setup.known_peers;
    let confirm = yes.then_some(true);
    if yes {
        eprintln!(
            "WARNING: --yes pins the peer without a comparison; check that both sides print the same code, and if not, remove the pin from known_peers"
        );
    }
    let (endpoint, outcomes) = match (listen, connect) {
        (Some(addr), _) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| failure(Code::OTHERS, format!("cannot listen on {addr}: {e}")))?;
            print_listening(listener.local_addr());
            let hub = Hub::new(listener, config);
            let events = hub.security_events();
            (Endpoint::Hub(hub), events)
        }
        (None, Some(addr)) => {
            let watch = Interconnect::new(TcpDialer::to_host(addr, TcpConfig::default()), config);
            let events = watch.security_events();
            (Endpoint::Watch(watch), events)
        }
        (None, None) => return Err(failure(Code::OTHERS, "pass --listen or --connect")),
    };
    let mut outcomes = outcomes.map(|e| security::monitor(e, false, confirm, false));
    let deadline = tokio::time::Instant::now() + timeout;
    let verdict = async {
        let outcomes = outcomes
            .as_mut()
            .ok_or_else(|| failure(Code::OTHERS, "security events already taken"))?;
        loop {
            match outcomes.recv().await {
                Some(Outcome::Authenticated { fingerprint, code }) => {
                    break Ok(json!({ "paired": fingerprint.to_string(), "code": code }));
                }
                Some(Outcome::Refused(error)) => break Err(Failure::from(error)),
                Some(Outcome::Passing(_)) => {}
                None => break Err(failure(Code::OTHERS, "the endpoint stopped")),
            }
        }
    };
    // This side trusts the peer once authenticated; the link comes up only once the peer
    // trusts this side too.
    let both = async {
        let (verdict, ()) = tokio::join!(verdict, endpoint.connected());
        verdict
    };
    let result = match tokio::time::timeout_at(deadline, both).await {
        Ok(result) => result,
        Err(_) => Err(failure(Code::TIMEOUT, "pairing did not complete in time")),
    };
    if result.is_ok() && matches!(endpoint, Endpoint::Hub(_)) {
        // The watch leaves first, so it too sees the link up before it goes.
        let _ = tokio::time::timeout_at(deadline, endpoint.disconnected()).await;
    }
    endpoint.shutdown().await;
    say!("{}", result?);
    Ok(())
}
