//! The phone's side on trouble-host: a central that scans for the interconnect service,
//! connects, discovers the profile and subscribes, for one watch or several at once.

use std::time::Duration;

use bytes::Bytes;
use embassy_futures::select::{Either, Either3, select, select3};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::signal::Signal;
use trouble_host::prelude::*;

use super::{
    Ends, Flag, Hci, HostConfig, Links, MAX_CONNECTIONS, channel, disconnect, host_error, queues,
    random_address, until_sent,
};
use crate::coc::PSM_UUID;
use crate::link::BleConfig;
use crate::{SERVICE_UUID, TO_PHONE_UUID, TO_WATCH_UUID};

/// How long the phone waits for the watch to answer an L2CAP open before it uses GATT
/// (a peer that never answers must not keep the link down).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the L2CAP channel whose PSM the watch announces; why not, when it cannot.
async fn open_channel<'s>(
    stack: &'s Stack<'_, Hci, DefaultPacketPool>,
    conn: &Connection<'_, DefaultPacketPool>,
    client: &GattClient<'_, Hci, DefaultPacketPool, 4>,
    service: &ServiceHandle,
    host: &HostConfig,
) -> Result<L2capChannel<'s, DefaultPacketPool>, String> {
    let announced: Characteristic<[u8]> = client
        .characteristic_by_uuid(service, &Uuid::from(PSM_UUID))
        .await
        .map_err(|_| "the watch announces no L2CAP channel".to_string())?;
    let mut psm = [0u8; 2];
    let len = client
        .read_characteristic(&announced, &mut psm)
        .await
        .map_err(|e| format!("reading the watch's PSM failed: {e:?}"))?;
    if len != 2 {
        return Err(format!("the watch's PSM is {len} bytes, not 2"));
    }
    let psm = u16::from_le_bytes(psm);
    let config = channel::config(host.max_sdu_len);
    let opening = L2capChannel::create(stack, conn, psm, &config);
    match tokio::time::timeout(OPEN_TIMEOUT, opening).await {
        Ok(Ok(opened)) => Ok(opened),
        Ok(Err(e)) => Err(format!("opening PSM {psm:#06x} failed: {e:?}")),
        Err(_) => Err(format!(
            "the watch did not answer the open of PSM {psm:#06x}"
        )),
    }
}

/// Logs once per process at info level why a watch is reached over GATT, then at debug.
fn fallback(reason: &str) {
    static TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if TOLD.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::debug!(reason, "BLE link over GATT, not L2CAP");
    } else {
        tracing::info!(reason, "BLE link over GATT, not L2CAP (logged once)");
    }
}

/// Finds the first advertiser of the interconnect service in advertising reports.
struct Finder {
    found: Signal<NoopRawMutex, Address>,
}

impl Finder {
    fn report(&self, kind: AddrKind, addr: BdAddr, data: &[u8]) {
        let ours = AdStructure::decode(data).flatten().any(|ad| match ad {
            AdStructure::CompleteServiceUuids128(uuids)
            | AdStructure::IncompleteServiceUuids128(uuids) => {
                uuids.contains(&SERVICE_UUID.to_le_bytes())
            }
            _ => false,
        });
        if ours {
            self.found.signal(Address { kind, addr });
        }
    }
}

impl EventHandler for Finder {
    fn on_adv_reports(&self, reports: bt_hci::param::LeAdvReportsIter) {
        for report in reports.flatten() {
            self.report(report.addr_kind, report.addr, report.data);
        }
    }

    fn on_ext_adv_reports(&self, reports: bt_hci::param::LeExtAdvReportsIter) {
        for report in reports.flatten() {
            self.report(report.addr_kind, report.addr, report.data);
        }
    }
}

pub(super) async fn central(
    controller: Hci,
    host: &HostConfig,
    ble: &BleConfig,
    links: &Links,
    max: usize,
) -> Result<(), String> {
    use futures_util::StreamExt;
    let mut resources: HostResources<DefaultPacketPool, MAX_CONNECTIONS, { 2 * MAX_CONNECTIONS }> =
        HostResources::new();
    let stack = trouble_host::new(controller, &mut resources)
        .set_random_address(random_address())
        .build();
    let mut runner = stack.runner();
    let mut central = stack.central();
    let finder = Finder {
        found: Signal::new(),
    };
    let stack = &stack;
    let app = async {
        // The connections in use, each running until it or its link ends.
        let mut running = futures_util::stream::FuturesUnordered::new();
        let mut connected: Vec<Address> = Vec::new();
        // What ended while something else was awaited; handled before the next step.
        let mut ended: Vec<(Address, Result<bool, String>)> = Vec::new();
        loop {
            for (peer, outcome) in ended.drain(..) {
                connected.retain(|a| *a != peer);
                match outcome {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(e) => tracing::debug!(error = %e, "BLE connection unusable"),
                }
            }
            if connected.len() >= max {
                if let Some(done) = running.next().await {
                    ended.push(done);
                }
                continue;
            }
            // Scan for a watch not connected yet, while the others carry traffic.
            let target = {
                finder.found.reset();
                let mut scanner = Scanner::new(&mut central);
                let _session = scanner
                    .scan(&ScanConfig {
                        active: false,
                        interval: embassy_time::Duration::from_millis(30),
                        window: embassy_time::Duration::from_millis(30),
                        ..Default::default()
                    })
                    .await
                    .map_err(host_error)?;
                loop {
                    let found = finder.found.wait();
                    let next_end = async {
                        match running.is_empty() {
                            true => std::future::pending().await,
                            false => running.next().await,
                        }
                    };
                    match select(found, next_end).await {
                        Either::First(peer) if !connected.contains(&peer) => break Some(peer),
                        Either::First(_) => finder.found.reset(),
                        Either::Second(done) => {
                            ended.extend(done);
                            break None;
                        }
                    }
                }
            };
            let Some(target) = target else {
                continue;
            };
            let targets = [target];
            let interval = embassy_time::Duration::from_micros(
                host.connection_interval
                    .as_micros()
                    .try_into()
                    .unwrap_or(u64::MAX),
            );
            let config = ConnectConfig {
                connect_params: RequestedConnParams {
                    min_connection_interval: interval,
                    max_connection_interval: interval,
                    supervision_timeout: embassy_time::Duration::from_millis(
                        host.supervision_timeout
                            .as_millis()
                            .try_into()
                            .unwrap_or(u64::MAX),
                    ),
                    ..Default::default()
                },
                scan_config: ScanConfig {
                    filter_accept_list: &targets,
                    ..Default::default()
                },
            };
            // The others keep running while this one connects.
            let connecting = tokio::time::timeout(Duration::from_secs(5), central.connect(&config));
            let mut connecting = std::pin::pin!(connecting);
            let attempt = loop {
                let next_end = async {
                    match running.is_empty() {
                        true => std::future::pending().await,
                        false => running.next().await,
                    }
                };
                match select(connecting.as_mut(), next_end).await {
                    Either::First(attempt) => break attempt,
                    Either::Second(done) => ended.extend(done),
                }
            };
            let conn = match attempt {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    tracing::debug!(error = ?e, "BLE connect failed");
                    continue;
                }
                Err(_) => continue,
            };
            tracing::debug!(peer = ?conn.peer_address(), "BLE connected to a watch");
            connected.push(target);
            running.push(async move {
                let outcome = use_connection(stack, &conn, host, ble, links).await;
                disconnect(&conn).await;
                (target, outcome)
            });
        }
    };
    match select(runner.run_with_handler(&finder), app).await {
        Either::First(outcome) => outcome
            .map_err(host_error)
            .and_then(|()| Err("the host stopped".into())),
        Either::Second(outcome) => outcome,
    }
}

/// Discovers the profile, subscribes and carries packets until the connection or the link
/// ends; `Ok(false)` when nobody takes links any more.
async fn use_connection(
    stack: &Stack<'_, Hci, DefaultPacketPool>,
    conn: &Connection<'_, DefaultPacketPool>,
    host: &HostConfig,
    ble: &BleConfig,
    links: &Links,
) -> Result<bool, String> {
    let client = GattClient::<Hci, DefaultPacketPool, 4>::new(stack, conn)
        .await
        .map_err(host_error)?;
    // Raised when the connection ended: the loops carrying a link stop at their next
    // waiting point (none is cancelled halfway through a host operation).
    let gone = Flag::default();
    // Set once a link was handed over: from then on the loops end by themselves.
    let carrying = std::cell::Cell::new(false);
    let work = async {
        let services = client
            .services_by_uuid(&Uuid::from(SERVICE_UUID))
            .await
            .map_err(host_error)?;
        let service = services
            .first()
            .ok_or("the watch lacks the interconnect service")?
            .clone();
        if host.coc {
            match open_channel(stack, conn, &client, &service, host).await {
                Ok(opened) => {
                    let (ends, halves) = queues(ble);
                    let link = halves.coc(opened.peer_mtu(), conn.att_mtu());
                    if links.send(Ok(link)).await.is_err() {
                        return Ok(false);
                    }
                    carrying.set(true);
                    channel::pump(stack, opened, ends, &gone).await;
                    return Ok(!links.is_closed());
                }
                Err(reason) => fallback(&reason),
            }
        }
        let to_watch: Characteristic<[u8]> = client
            .characteristic_by_uuid(&service, &Uuid::from(TO_WATCH_UUID))
            .await
            .map_err(host_error)?;
        let to_phone: Characteristic<[u8]> = client
            .characteristic_by_uuid(&service, &Uuid::from(TO_PHONE_UUID))
            .await
            .map_err(host_error)?;
        let cccd = to_phone
            .cccd_handle
            .ok_or("the watch's notify characteristic has no CCCD")?;
        // Listen before the CCCD write: `subscribe` writes first, so the watch's first
        // notifications could come before anyone listens.
        let mut listener = client.listen(&to_phone).map_err(host_error)?;
        client
            .write_handle(cccd, &[1, 0])
            .await
            .map_err(host_error)?;
        let (ends, halves) = queues(ble);
        let Ends {
            incoming,
            mut outgoing,
        } = ends;
        if links
            .send(Ok(halves.gatt(conn.att_mtu(), host)))
            .await
            .is_err()
        {
            return Ok(false);
        }
        carrying.set(true);
        // The receive loop does no host operation (it takes notifications the client
        // queued), so it may be dropped anywhere; the send loop writes, so it stops only
        // at its queue, once the link or the connection ended.
        let receive = async {
            loop {
                let notification = listener.next().await;
                if notification.handle() != to_phone.handle {
                    continue;
                }
                let packet = Bytes::copy_from_slice(notification.as_ref());
                if incoming.send(packet).await.is_err() {
                    // The send loop sees the link's receiver gone and ends.
                    return std::future::pending::<()>().await;
                }
            }
        };
        let send = async {
            loop {
                let packet = match select3(outgoing.recv(), incoming.closed(), gone.wait()).await {
                    Either3::First(Some(packet)) => packet,
                    _ => break,
                };
                let sent = until_sent(
                    async || {
                        client
                            .write_characteristic_without_response(&to_watch, &packet[..])
                            .await
                    },
                    |e| matches!(e, BleHostError::BleHost(Error::OutOfMemory)),
                )
                .await;
                if let Err(e) = sent {
                    tracing::debug!(error = ?e, "BLE write failed");
                    break;
                }
            }
        };
        // Either half of the link dropped ends the connection.
        select(receive, send).await;
        Ok::<bool, String>(!links.is_closed())
    };
    let disconnected = async {
        loop {
            if let ConnectionEvent::Disconnected { reason } = conn.next().await {
                tracing::debug!(?reason, "BLE watch disconnected");
                gone.raise();
                if !carrying.get() {
                    return;
                }
                // The carrying loops end by themselves now.
                std::future::pending::<()>().await;
            }
        }
    };
    match select3(client.task(), work, disconnected).await {
        Either3::First(outcome) => outcome.map(|()| true).map_err(host_error),
        Either3::Second(outcome) => outcome,
        Either3::Third(()) => Ok(true),
    }
}
