//! BlueZ backend through `bluer`: the watch as GATT server ([`BluezPeripheral`]) and the
//! phone as GATT client ([`BluezCentral`]), each adapting bluer's characteristic I/O
//! (one ATT value per `send`/`recv`) to the packet-link seam. Beside GATT, the watch
//! listens on an L2CAP credit-based channel (a `SOCK_SEQPACKET` socket, one SDU per
//! packet, on a PSM the kernel assigns) and announces its PSM; the phone opens it when
//! announced and uses GATT otherwise. Linux only; untested on a radio in this project's
//! CI, which has no Bluetooth controller.

use async_trait::async_trait;
use bluer::gatt::local::{
    Application, ApplicationHandle, Characteristic, CharacteristicControl,
    CharacteristicControlEvent, CharacteristicNotify, CharacteristicNotifyMethod,
    CharacteristicWrite, CharacteristicWriteMethod, Service, characteristic_control,
};
use bluer::gatt::{CharacteristicReader, CharacteristicWriter};
use bluer::{AdapterEvent, Uuid, adv::Advertisement, adv::AdvertisementHandle};
use bytes::Bytes;
use futures_util::StreamExt;
use interconnect::{Link, Transport, TransportError};

use crate::coc::{PSM_UUID, SduLink, SduSender};
use crate::link::{BleConfig, PacketLink, PacketReceiver, PacketSender, into_link};
use crate::packet::ATT_HEADER_LEN;
use crate::{Carrier, SERVICE_UUID, TO_PHONE_UUID, TO_WATCH_UUID};
use bluer::l2cap::{SeqPacket, SeqPacketListener};
use std::sync::Arc;
use std::time::Duration;

/// How long the phone waits for the watch to answer an L2CAP open before it uses GATT.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

fn bluez_error(e: bluer::Error) -> TransportError {
    TransportError::Stack {
        stack: "BlueZ",
        source: Box::new(e),
    }
}

/// The watch: registers the interconnect GATT service, advertises it, and accepts the
/// phone's connection (a write session on one characteristic and a notification
/// subscription on the other).
pub struct BluezPeripheral {
    _app: ApplicationHandle,
    _advertisement: AdvertisementHandle,
    to_watch: CharacteristicControl,
    to_phone: CharacteristicControl,
    /// The L2CAP channel's listener, when the kernel gave one.
    channels: Option<SeqPacketListener>,
    config: BleConfig,
}

impl BluezPeripheral {
    /// Registers the service on the default adapter and advertises as `local_name`.
    pub async fn start(local_name: &str, config: BleConfig) -> Result<Self, TransportError> {
        let session = bluer::Session::new().await.map_err(bluez_error)?;
        let adapter = session.default_adapter().await.map_err(bluez_error)?;
        adapter.set_powered(true).await.map_err(bluez_error)?;
        let advertisement = adapter
            .advertise(Advertisement {
                service_uuids: [Uuid::from_u128(SERVICE_UUID)].into_iter().collect(),
                discoverable: Some(true),
                local_name: Some(local_name.to_string()),
                ..Default::default()
            })
            .await
            .map_err(bluez_error)?;
        let (to_watch, to_watch_handle) = characteristic_control();
        let (to_phone, to_phone_handle) = characteristic_control();
        let channels = match SeqPacketListener::bind(bluer::l2cap::SocketAddr::any_le()).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                tracing::info!(error = %e, "no L2CAP channel: GATT only");
                None
            }
        };
        let psm = channels
            .as_ref()
            .and_then(|listener| listener.as_ref().local_addr().ok())
            .map(|addr| addr.psm);
        let announce = psm.map(|psm| Characteristic {
            uuid: Uuid::from_u128(PSM_UUID),
            read: Some(bluer::gatt::local::CharacteristicRead {
                read: true,
                fun: Box::new(move |_| Box::pin(async move { Ok(psm.to_le_bytes().to_vec()) })),
                ..Default::default()
            }),
            ..Default::default()
        });
        let app = Application {
            services: vec![Service {
                uuid: Uuid::from_u128(SERVICE_UUID),
                primary: true,
                characteristics: [
                    Characteristic {
                        uuid: Uuid::from_u128(TO_WATCH_UUID),
                        write: Some(CharacteristicWrite {
                            write_without_response: true,
                            method: CharacteristicWriteMethod::Io,
                            ..Default::default()
                        }),
                        control_handle: to_watch_handle,
                        ..Default::default()
                    },
                    Characteristic {
                        uuid: Uuid::from_u128(TO_PHONE_UUID),
                        notify: Some(CharacteristicNotify {
                            notify: true,
                            method: CharacteristicNotifyMethod::Io,
                            ..Default::default()
                        }),
                        control_handle: to_phone_handle,
                        ..Default::default()
                    },
                ]
                .into_iter()
                .chain(announce)
                .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let app = adapter
            .serve_gatt_application(app)
            .await
            .map_err(bluez_error)?;
        Ok(BluezPeripheral {
            _app: app,
            _advertisement: advertisement,
            to_watch,
            to_phone,
            channels,
            config,
        })
    }
}

#[async_trait]
impl Transport for BluezPeripheral {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        let mut reader = None;
        let mut writer = None;
        while reader.is_none() || writer.is_none() {
            tokio::select! {
                event = self.to_watch.next() => match event {
                    Some(CharacteristicControlEvent::Write(request)) => {
                        reader = Some(request.accept().map_err(bluez_error)?);
                    }
                    Some(_) => {}
                    None => return Err(TransportError::Closed),
                },
                event = self.to_phone.next() => match event {
                    Some(CharacteristicControlEvent::Notify(notifier)) => writer = Some(notifier),
                    Some(_) => {}
                    None => return Err(TransportError::Closed),
                },
                opened = accept(self.channels.as_ref()) => {
                    let (socket, _) = opened?;
                    return Ok(sdu_link(socket).into_link(&self.config));
                }
            }
        }
        let (Some(reader), Some(writer)) = (reader, writer) else {
            return Err(TransportError::Closed);
        };
        Ok(into_link(packet_link(reader, writer), &self.config))
    }

    fn is_reliable(&self) -> bool {
        true
    }
}

/// The phone: scans for a watch advertising the interconnect service, connects, and
/// opens write and notification I/O on its characteristics.
pub struct BluezCentral {
    adapter: bluer::Adapter,
    config: BleConfig,
}

impl BluezCentral {
    /// Uses the default adapter.
    pub async fn new(config: BleConfig) -> Result<Self, TransportError> {
        let session = bluer::Session::new().await.map_err(bluez_error)?;
        let adapter = session.default_adapter().await.map_err(bluez_error)?;
        adapter.set_powered(true).await.map_err(bluez_error)?;
        Ok(BluezCentral { adapter, config })
    }

    async fn connect(&self, device: &bluer::Device) -> Result<Option<Carrier>, TransportError> {
        let uuids = device
            .uuids()
            .await
            .map_err(bluez_error)?
            .unwrap_or_default();
        if !uuids.contains(&Uuid::from_u128(SERVICE_UUID)) {
            return Ok(None);
        }
        if !device.is_connected().await.map_err(bluez_error)? {
            device.connect().await.map_err(bluez_error)?;
        }
        let mut to_watch = None;
        let mut to_phone = None;
        let mut psm = None;
        for service in device.services().await.map_err(bluez_error)? {
            if service.uuid().await.map_err(bluez_error)? != Uuid::from_u128(SERVICE_UUID) {
                continue;
            }
            for characteristic in service.characteristics().await.map_err(bluez_error)? {
                let uuid = characteristic.uuid().await.map_err(bluez_error)?;
                if uuid == Uuid::from_u128(TO_WATCH_UUID) {
                    to_watch = Some(characteristic.write_io().await.map_err(bluez_error)?);
                } else if uuid == Uuid::from_u128(TO_PHONE_UUID) {
                    to_phone = Some(characteristic);
                } else if uuid == Uuid::from_u128(PSM_UUID) {
                    psm = Some(characteristic.read().await.map_err(bluez_error)?);
                }
            }
        }
        if let Some(psm) = psm {
            match open_channel(device, &psm).await {
                Ok(socket) => return Ok(Some(sdu_link(socket))),
                Err(reason) => tracing::info!(%reason, "BLE link over GATT, not L2CAP"),
            }
        }
        let to_phone = match to_phone {
            Some(characteristic) => Some(characteristic.notify_io().await.map_err(bluez_error)?),
            None => None,
        };
        match (to_phone, to_watch) {
            (Some(reader), Some(writer)) => Ok(Some(Carrier::Gatt(packet_link(reader, writer)))),
            _ => Err(TransportError::Incompatible(
                "the watch's service lacks its characteristics".into(),
            )),
        }
    }
}

#[async_trait]
impl Transport for BluezCentral {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        let events = self.adapter.discover_devices().await.map_err(bluez_error)?;
        futures_util::pin_mut!(events);
        while let Some(event) = events.next().await {
            if let AdapterEvent::DeviceAdded(address) = event {
                let device = self.adapter.device(address).map_err(bluez_error)?;
                match self.connect(&device).await {
                    Ok(Some(carrier)) => return Ok(carrier.into_link(&self.config)),
                    Ok(None) => {}
                    Err(error) => tracing::debug!(%address, %error, "not usable"),
                }
            }
        }
        Err(TransportError::Closed)
    }

    fn is_reliable(&self) -> bool {
        true
    }
}

/// The next channel the phone opens; never, without a listener.
async fn accept(
    listener: Option<&SeqPacketListener>,
) -> Result<(SeqPacket, bluer::l2cap::SocketAddr), TransportError> {
    match listener {
        Some(listener) => Ok(listener.accept().await?),
        None => std::future::pending().await,
    }
}

/// Opens the channel on the PSM the watch announced; why not, when it cannot.
async fn open_channel(device: &bluer::Device, psm: &[u8]) -> Result<SeqPacket, String> {
    let psm: [u8; 2] = psm
        .try_into()
        .map_err(|_| format!("the watch's PSM is {} bytes, not 2", psm.len()))?;
    let psm = u16::from_le_bytes(psm);
    let kind = device
        .address_type()
        .await
        .map_err(|e| format!("the watch's address type: {e}"))?;
    let addr = bluer::l2cap::SocketAddr::new(device.address(), kind, psm);
    match tokio::time::timeout(OPEN_TIMEOUT, SeqPacket::connect(addr)).await {
        Ok(Ok(socket)) => Ok(socket),
        Ok(Err(e)) => Err(format!("opening PSM {psm:#06x} failed: {e}")),
        Err(_) => Err(format!(
            "the watch did not answer the open of PSM {psm:#06x}"
        )),
    }
}

/// An L2CAP channel's socket as an SDU link; either half dropped shuts the socket down.
fn sdu_link(socket: SeqPacket) -> Carrier {
    let sdu_len = socket.send_mtu().unwrap_or(23);
    let recv_len = socket.recv_mtu().unwrap_or(sdu_len);
    let socket = Arc::new(socket);
    Carrier::Coc(SduLink {
        sender: Box::new(SocketSdus {
            socket: socket.clone(),
            sdu_len,
        }),
        receiver: Box::new(SocketSdusIn {
            socket,
            buf: vec![0; recv_len],
        }),
    })
}

struct SocketSdus {
    socket: Arc<SeqPacket>,
    sdu_len: usize,
}

impl Drop for SocketSdus {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

#[async_trait]
impl SduSender for SocketSdus {
    async fn send_sdu(&mut self, sdu: Bytes) -> Result<(), TransportError> {
        self.socket.send(&sdu).await?;
        Ok(())
    }

    fn sdu_len(&self) -> usize {
        self.sdu_len
    }

    fn radio(&self) -> interconnect::Radio {
        // The channel says nothing of the ATT MTU: the smallest.
        interconnect::Radio::new(23)
    }
}

struct SocketSdusIn {
    socket: Arc<SeqPacket>,
    buf: Vec<u8>,
}

impl Drop for SocketSdusIn {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

#[async_trait]
impl PacketReceiver for SocketSdusIn {
    async fn recv_packet(&mut self) -> Result<Option<Bytes>, TransportError> {
        match self.socket.recv(&mut self.buf).await {
            Ok(0) => Ok(None),
            Ok(len) => Ok(Some(Bytes::copy_from_slice(&self.buf[..len]))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn packet_link(reader: CharacteristicReader, writer: CharacteristicWriter) -> PacketLink {
    PacketLink {
        sender: Box::new(BluezSender(writer)),
        receiver: Box::new(BluezReceiver(reader)),
    }
}

struct BluezSender(CharacteristicWriter);

#[async_trait]
impl PacketSender for BluezSender {
    async fn send_packet(&mut self, packet: Bytes) -> Result<(), TransportError> {
        self.0.send(&packet).await?;
        Ok(())
    }

    fn att_mtu(&self) -> usize {
        // bluer reports the largest value a write or notification carries.
        self.0.mtu() + ATT_HEADER_LEN
    }
}

struct BluezReceiver(CharacteristicReader);

#[async_trait]
impl PacketReceiver for BluezReceiver {
    async fn recv_packet(&mut self) -> Result<Option<Bytes>, TransportError> {
        match self.0.recv().await {
            Ok(packet) => Ok(Some(Bytes::from(packet))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
