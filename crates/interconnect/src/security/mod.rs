//! The secure layer as the runtime sees it: the device's identity on disk, the
//! known-peers file, and the stream of security events. The handshake, the sealed
//! records and the threat model are in `interconnect_core::security`.

mod events;
mod identity;

pub(crate) use events::Reporter;
pub use events::{PairingRequest, SecurityEvent, SecurityEvents};
pub(crate) use identity::create_private_dir;
pub use identity::{IdentityError, IdentityFile, KnownPeers};
pub use interconnect_core::security::*;
