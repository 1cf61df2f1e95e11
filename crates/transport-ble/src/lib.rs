//! Bluetooth LE transport for interconnect.
//!
//! ## GATT profile
//! The watch is the **peripheral** (GATT server, advertises the service); the phone is the
//! **central** (GATT client, scans for the service and connects). Who connects is
//! independent of the session roles, which stay watch and phone.
//!
//! | item | UUID | properties |
//! | --- | --- | --- |
//! | service | [`SERVICE_UUID`] `6e1c0001-4e0b-4b7a-9a0b-1f4c3d2e5a60` | primary |
//! | phone → watch | [`TO_WATCH_UUID`] `6e1c0002-…` | write without response |
//! | watch → phone | [`TO_PHONE_UUID`] `6e1c0003-…` | notify |
//! | L2CAP PSM (optional) | [`PSM_UUID`] `6e1c0004-…` | read: the PSM, `u16` LE |
//!
//! A watch that also listens on an L2CAP credit-based channel announces its PSM in the
//! third characteristic; a phone that finds it opens the channel and carries the session
//! there instead of on the first two ([`coc`]), and uses them when it is absent or the
//! open fails.
//!
//! Flow control needs no third characteristic: credit grants travel in-band as packets of
//! their own kind (see [`packet`]). Any ATT MTU from 23 is supported; each packet is at
//! most MTU − 3 bytes and never more than 512 (the largest attribute value), one of
//! which is our header. A sender cuts its packets to fill whole link-layer PDUs
//! ([`packet::fill_len`]: 495 bytes at MTU 517, not 512, which would leave a third PDU
//! nearly empty on the air).
//!
//! ## Layers
//! - [`packet`]: the one-byte packet header, [`Fragmenter`] and [`Reassembler`] (bounded
//!   by the maximum frame, typed errors for lost or reordered pieces, oversize frames and
//!   stalls). It lives in `interconnect-proto`, `no_std`, for a watch firmware's use.
//! - [`link`]: the packet-link seam ([`PacketSender`], [`PacketReceiver`]) and
//!   [`into_link`], which adds credit-based flow control: each side may send `credits`
//!   (32) data packets at the start, and the receiver grants more as it consumes them, so
//!   a fast sender never overruns a slow receiver (an overrun is a typed error, not lost
//!   data). A receiver with a larger window ([`BleConfig::window`]) grants the rest at
//!   once; a grant goes back each time a quarter of the window was consumed.
//! - [`coc`]: the L2CAP link, [`SduLink`] to interconnect link: a frame per SDU, read as a
//!   byte stream; how a phone app on Android or iOS reaches the channel, and its traps.
//! - [`sim`]: a simulated radio on virtual time and the capacity formula.
//! - `trouble` (feature): trouble-host, a `no_std` Rust host, over an H4 HCI socket,
//!   peripheral and central, GATT and L2CAP; tested against Bumble virtual controllers.
//! - `bluez` (feature): BlueZ through `bluer`, peripheral and central, GATT and L2CAP.
//!
//! The simulated radio, trouble-host and BlueZ run the same packet and flow-control code,
//! and trouble-host and BlueZ the same L2CAP framing.
//! A real radio is untested here (no Bluetooth controller on the development machines),
//! and so is BlueZ; trouble-host runs for real, on virtual controllers.

pub mod coc;
pub mod link;
/// The packet format (in `interconnect-proto`, which a `no_std` firmware can use).
pub use interconnect_proto::packet;
pub mod sim;

#[cfg(feature = "bluez")]
pub mod bluez;

pub use coc::{PSM_UUID, SduLink, SduSender};
pub use link::{BleConfig, PacketLink, PacketReceiver, PacketSender, into_link};
pub use packet::{Fragmenter, Packet, PacketError, Reassembler};
pub use sim::{BleParams, Phy, SimCentral, SimCentrals, SimNetwork, SimPeripheral, goodput_bps};

/// The interconnect GATT service.
pub const SERVICE_UUID: u128 = 0x6e1c0001_4e0b_4b7a_9a0b_1f4c3d2e5a60;
/// Characteristic the phone writes (without response) to send packets to the watch.
pub const TO_WATCH_UUID: u128 = 0x6e1c0002_4e0b_4b7a_9a0b_1f4c3d2e5a60;
/// Characteristic the watch notifies on to send packets to the phone.
pub const TO_PHONE_UUID: u128 = 0x6e1c0003_4e0b_4b7a_9a0b_1f4c3d2e5a60;

#[cfg(feature = "trouble")]
pub mod trouble;

/// What a BLE connection carries the session on, as a backend hands it over: the GATT
/// characteristics, or an L2CAP credit-based channel.
pub enum Carrier {
    /// Writes and notifications of the interconnect service ([`link`]).
    Gatt(PacketLink),
    /// An L2CAP credit-based channel ([`coc`]).
    Coc(SduLink),
}

impl Carrier {
    /// The interconnect link over this carrier.
    pub fn into_link(self, config: &BleConfig) -> interconnect::Link {
        match self {
            Carrier::Gatt(packets) => link::into_link(packets, config),
            Carrier::Coc(sdus) => coc::into_link(sdus, config),
        }
    }

    /// `true` on an L2CAP channel.
    pub fn is_coc(&self) -> bool {
        matches!(self, Carrier::Coc(_))
    }
}
