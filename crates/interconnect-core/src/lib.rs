//! The sans-IO heart of **interconnect**: the session, channel and transfer state
//! machines, the Noise handshake and sealed records, and the key types. The layer under
//! the runtime crate (`interconnect`), and the one a watch's firmware runs directly.
//!
//! ```text
//!   interconnect (runtime)  ── tokio driver, Connection / Hub / Interconnect, files, identity files
//!        │ frames, `now`, commands            ▲ frames out, events, deadlines
//!   interconnect-core       ── Session (this crate): no I/O, no clock, no randomness of its own
//!        │
//!   interconnect-proto      ── frames and their encoding
//! ```
//!
//! **What this crate never depends on**: an async runtime, a socket or transport trait,
//! the file system, a clock, a thread, or ambient randomness. Time comes in as
//! [`time::Instant`] with every call; randomness comes in as a seed
//! ([`Session::new`](sans_io::Session::new)); keys are made by the caller
//! ([`DeviceIdentity::from_private_key`]). Without its default `std` feature it is
//! `#![no_std]` with `alloc`, and builds for a Cortex-M4F (`thumbv7em-none-eabihf`);
//! the `ring` feature seals records with `ring` on a host, otherwise RustCrypto's
//! pure-Rust AEADs do it, byte for byte the same.
//!
//! ## Words
//! - **handshake**: the Noise XX exchange of a secure link (three `Handshake` frames);
//! - **Hello**: the exchange of device ids, versions, limits and resume tokens that
//!   follows it (sealed), or comes first on a plaintext link;
//! - **link setup**: both, from a link coming up to the session using it
//!   (`SessionConfig::handshake_timeout` bounds the whole setup);
//! - **transfer**: a file on its way, as the session sees it (offer, chunks, verdict);
//!   the runtime's *files* are what is read from and written to the disk;
//! - **security event**: what the app hears of trust (the runtime's `SecurityEvent`,
//!   made from the session's events); a *Noise event* is what the handshake tells the
//!   session, inside this crate.
//!
//! ## Design notes
//! - **Reliability lives in the channel, not the link.** Links may drop, reorder or lose
//!   frames. Each channel numbers its messages per direction, the receiver acknowledges
//!   cumulatively and drops duplicates, and the sender resends from the first
//!   unacknowledged message (go-back-N) after a link comes back or when acks stop making
//!   progress for `retransmit_timeout`. Out-of-order frames are dropped rather than
//!   buffered: links are ordered in practice, and it keeps the receiver's memory bounded.
//! - **Resumption by token.** Each side's Hello carries a resume token drawn when the
//!   process starts. The same token on a new link means the peer kept its state: channels
//!   resume (`is_reconnected = true`) and the sender skips what the peer already holds
//!   (`received_seq` in open/accept). A new token means the peer restarted: unacknowledged
//!   messages are sent again under new numbers.
//! - **A send timeout cannot un-send.** A message that already has a sequence number
//!   stays in the sequence (the receiver needs every number); one that never reached the
//!   wire is withdrawn (safe to send again).
//! - **Acknowledged once the app has it.** By default a message is acknowledged when the
//!   receiving app takes it ([`Acknowledge`]), so a resolved send means the peer app has
//!   the message.
//! - **Files ride the same session.** An offer names size and modification time; the
//!   receiver answers with the offset it already holds. Chunks flow in a byte window
//!   (`file_window`), acknowledged as they are written, and go out only when no message
//!   is waiting. The sender sends a BLAKE3 digest with the last chunk; the receiver's
//!   owner stores the file only if size and digest match. The session holds transfer
//!   state only: reading and writing the bytes is its driver's job.
//! - **Every link is a Noise XX session** unless both sides opt into
//!   [`Security::InsecurePlaintext`]. The handshake runs before `Hello`, so no channel
//!   opens, and nothing reaches an app, before both devices passed each other's
//!   [`TrustPolicy`]. Sealed frames carry explicit nonces: a link that drops or
//!   duplicates frames stays up, and the channel layer resends what was lost. The
//!   [`security`] module holds the handshake, the sealed-frame layout and the **threat
//!   model**.

#![no_std]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod channel;
mod config;
mod event;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
#[cfg(any(feature = "test-util", test))]
pub mod pair;
pub mod security;
mod session;
pub mod time;
mod transfer;

pub use config::{Acknowledge, SessionConfig};
pub use event::ClosedBy;
pub use interconnect_proto::{Code, ContentType, DeviceId};
pub use security::{
    CipherSuite, DeviceIdentity, Fingerprint, MIN_REKEY_INTERVAL, NoiseConfig, PairingCode,
    ParseFingerprintError, Security, SecurityError, TrustPolicy,
};

/// The sans-IO session and what it reports. A driver (the runtime crate's, another
/// runtime's, firmware's, a fuzzer's) feeds a [`Session`](sans_io::Session) frames and
/// time and carries out its output.
pub mod sans_io {
    pub use crate::channel::Outgoing;
    pub use crate::event::{ChannelEvent, Event, Message, PeerInfo, Receipt, SendId};
    pub use crate::session::{ChannelStatus, CommandError, Session};
    pub use crate::time::Instant;
    pub use crate::transfer::{FILE_READ_ROOM, file_read_tail};
}

/// What `std`'s prelude would bring, from `alloc`.
#[allow(unused_imports)]
mod prelude {
    pub(crate) use alloc::boxed::Box;
    pub(crate) use alloc::format;
    pub(crate) use alloc::string::{String, ToString};
    pub(crate) use alloc::vec;
    pub(crate) use alloc::vec::Vec;
}
