//! The watch's side on trouble-host: a GATT server that advertises the interconnect
//! service and, with [`HostConfig::coc`], listens on an L2CAP channel it announces.

use std::cell::Cell;

use bytes::Bytes;
use embassy_futures::select::{Either, Either3, select, select3};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use trouble_host::prelude::*;

use super::{
    ATTRIBUTES, Ends, Flag, Hci, HostConfig, Links, channel, disconnect, host_error, queues,
    random_address, until_sent,
};
use crate::coc::PSM_UUID;
use crate::link::BleConfig;
use crate::packet::MAX_ATTRIBUTE_LEN;
use crate::{SERVICE_UUID, TO_PHONE_UUID, TO_WATCH_UUID};

pub(super) async fn peripheral(
    controller: Hci,
    host: &HostConfig,
    ble: &BleConfig,
    links: &Links,
) -> Result<(), String> {
    // Declared before the table that borrows them.
    let mut to_watch_store = [0u8; MAX_ATTRIBUTE_LEN];
    let mut to_phone_store = [0u8; MAX_ATTRIBUTE_LEN];
    let psm = host.psm.to_le_bytes();
    let mut resources: HostResources<DefaultPacketPool, 1, 2> = HostResources::new();
    let mut builder =
        trouble_host::new(controller, &mut resources).set_random_address(random_address());
    if host.coc {
        builder = builder.register_l2cap_spsm(host.psm);
    }
    let stack = builder.build();
    let mut runner = stack.runner();
    let mut peripheral = stack.peripheral();

    let name = host.name.as_bytes();
    let mut table: AttributeTable<'_, NoopRawMutex, ATTRIBUTES> = AttributeTable::new();
    let mut gap = table.add_service(Service::new(0x1800u16));
    let _ = gap.add_characteristic_ro(0x2a00u16, name);
    gap.build();
    table.add_service(Service::new(0x1801u16));
    let mut service = table.add_service(Service::new(Uuid::from(SERVICE_UUID)));
    let to_watch = service
        .add_characteristic(
            Uuid::from(TO_WATCH_UUID),
            [CharacteristicProp::WriteWithoutResponse],
            &[][..],
            &mut to_watch_store,
        )
        .build();
    let to_phone = service
        .add_characteristic(
            Uuid::from(TO_PHONE_UUID),
            [CharacteristicProp::Notify],
            &[][..],
            &mut to_phone_store,
        )
        .build();
    if host.coc {
        // The PSM a phone opens, found after discovery (as iOS announces its channels).
        let _ = service.add_characteristic_ro(Uuid::from(PSM_UUID), &psm[..]);
    }
    service.build();
    let server = AttributeServer::<NoopRawMutex, DefaultPacketPool, ATTRIBUTES, 1>::new(table);

    let mut adv_data = [0u8; 31];
    let adv_len = AdStructure::encode_slice(
        &[
            AdStructure::Flags(LE_GENERAL_DISCOVERABLE | BR_EDR_NOT_SUPPORTED),
            AdStructure::CompleteServiceUuids128(&[SERVICE_UUID.to_le_bytes()]),
        ],
        &mut adv_data,
    )
    .map_err(host_error)?;
    let mut scan_data = [0u8; 31];
    let scan_len = AdStructure::encode_slice(
        &[AdStructure::CompleteLocalName(&name[..name.len().min(29)])],
        &mut scan_data,
    )
    .map_err(host_error)?;

    let app = async {
        loop {
            let advertiser = peripheral
                .advertise(
                    &AdvertisementParameters {
                        interval_min: embassy_time::Duration::from_millis(20),
                        interval_max: embassy_time::Duration::from_millis(30),
                        ..Default::default()
                    },
                    Advertisement::ConnectableScannableUndirected {
                        adv_data: &adv_data[..adv_len],
                        scan_data: &scan_data[..scan_len],
                    },
                )
                .await
                .map_err(host_error)?;
            let conn = advertiser
                .accept()
                .await
                .map_err(host_error)?
                .with_attribute_server(&server)
                .map_err(host_error)?;
            let params = conn.raw().params();
            tracing::debug!(
                peer = ?conn.raw().peer_address(),
                interval_us = params.conn_interval.as_micros(),
                supervision_timeout_ms = params.supervision_timeout.as_millis(),
                "BLE central connected"
            );
            let gatt = Gatt {
                to_watch: &to_watch,
                to_phone: &to_phone,
            };
            if !serve(&stack, &conn, gatt, host, ble, links).await {
                return Ok(());
            }
        }
    };
    match select(runner.run(), app).await {
        Either::First(outcome) => outcome
            .map_err(host_error)
            .and_then(|()| Err("the host stopped".into())),
        Either::Second(outcome) => outcome,
    }
}

/// The service's two characteristics that carry packets.
#[derive(Clone, Copy)]
struct Gatt<'a, 'v> {
    to_watch: &'a Characteristic<&'v [u8]>,
    to_phone: &'a Characteristic<&'v [u8]>,
}

/// What the phone chose to carry the session on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Chosen {
    Nothing,
    Gatt,
    Coc,
}

/// Serves one connection until it ends; `false` when nobody takes links any more.
async fn serve<'s>(
    stack: &'s Stack<'_, Hci, DefaultPacketPool>,
    conn: &GattConnection<'s, '_, DefaultPacketPool>,
    gatt: Gatt<'_, '_>,
    host: &HostConfig,
    ble: &BleConfig,
    links: &Links,
) -> bool {
    let (ends, halves) = queues(ble);
    let incoming = ends.incoming.clone();
    // Handed over once the phone has enabled notifications or opened the channel,
    // whichever comes first: what the session sent before would be lost.
    let halves = Cell::new(Some(halves));
    let chosen = Cell::new(Chosen::Nothing);
    // Raised with `chosen` set to GATT, for the loop that waits to carry the link.
    let gatt_chosen = Flag::default();
    let links_gone = Cell::new(false);
    // Raised when the connection ended: the loops carrying the link stop at their next
    // waiting point (none is cancelled halfway through a host operation).
    let gone = Flag::default();
    let events = async {
        loop {
            match conn.next().await {
                GattConnectionEvent::Disconnected { reason } => {
                    tracing::debug!(?reason, "BLE central disconnected");
                    gone.raise();
                    return true;
                }
                GattConnectionEvent::Gatt { event } => {
                    match event {
                        GattEvent::Write(write) if write.handle() == gatt.to_watch.handle => {
                            let packet = write.with_data(|_, data| Bytes::copy_from_slice(data));
                            drop(write.accept_unprocessed());
                            // Before the hand-over the phone has no link yet: nothing to
                            // deliver to; over L2CAP, writes carry nothing.
                            if chosen.get() == Chosen::Gatt && incoming.send(packet).await.is_err()
                            {
                                conn.raw().disconnect();
                            }
                        }
                        other => {
                            if let Ok(reply) = other.accept() {
                                reply.send().await;
                            }
                        }
                    }
                    if chosen.get() == Chosen::Nothing
                        && gatt.to_phone.should_notify(conn)
                        && let Some(halves) = halves.take()
                    {
                        chosen.set(Chosen::Gatt);
                        gatt_chosen.raise();
                        let link = halves.gatt(conn.raw().att_mtu(), host);
                        if links.send(Ok(link)).await.is_err() {
                            links_gone.set(true);
                            return false;
                        }
                    }
                }
                _ => {}
            }
        }
    };
    let carry = async {
        let coc = async {
            if !host.coc {
                return std::future::pending().await;
            }
            let listener = L2capChannel::listen(stack, conn.raw());
            match listener.accept(&channel::config(host.max_sdu_len)).await {
                Ok(opened) => opened,
                Err(e) => {
                    tracing::debug!(error = ?e, "L2CAP channel not opened");
                    std::future::pending().await
                }
            }
        };
        // A channel opened after notifications were enabled carries nothing.
        let opened = match select3(coc, gatt_chosen.wait(), gone.wait()).await {
            Either3::First(opened) if chosen.get() == Chosen::Nothing => Some(opened),
            Either3::Third(()) => return,
            _ => None,
        };
        let Some(opened) = opened else {
            // Over GATT: the events loop handed the link over.
            return notify(conn, gatt, ends, &gone).await;
        };
        let Some(halves) = halves.take() else { return };
        chosen.set(Chosen::Coc);
        let link = halves.coc(opened.peer_mtu(), conn.raw().att_mtu());
        match select(links.send(Ok(link)), gone.wait()).await {
            Either::First(Ok(())) => {}
            Either::First(Err(_)) => return links_gone.set(true),
            Either::Second(()) => return,
        }
        channel::pump(stack, opened, ends, &gone).await;
    };
    let mut carry = std::pin::pin!(carry);
    match select(events, carry.as_mut()).await {
        Either::First(open) => {
            // Let the carrying loops stop between host operations.
            gone.raise();
            carry.await;
            open
        }
        Either::Second(()) => {
            // The link was dropped: end the connection before advertising again.
            disconnect(conn.raw()).await;
            !links_gone.get() && !links.is_closed()
        }
    }
}

/// Notifies the link's packets until either half of it is dropped or the connection
/// ended, stopping only between notifications.
async fn notify(
    conn: &GattConnection<'_, '_, DefaultPacketPool>,
    gatt: Gatt<'_, '_>,
    ends: Ends,
    gone: &Flag,
) {
    let Ends {
        incoming,
        mut outgoing,
    } = ends;
    loop {
        let packet = match select3(outgoing.recv(), incoming.closed(), gone.wait()).await {
            Either3::First(Some(packet)) => packet,
            _ => return,
        };
        let sent = until_sent(
            async || gatt.to_phone.notify_raw(conn, &packet, false).await,
            |e| matches!(e, Error::OutOfMemory),
        )
        .await;
        if let Err(e) = sent {
            tracing::debug!(error = ?e, "BLE notification failed");
            return;
        }
    }
}
