//! **interconnect**: the watch and phone APIs apps use, on tokio, over any [`Transport`]
//! (the mock, TCP, BLE). The runtime layer: it runs `interconnect-core`'s sans-IO
//! sessions, stores files and identities, and re-exports what an app needs of the core
//! and wire crates, so an app depends on this crate and a transport alone.
//!
//! **What this crate never depends on**: a particular transport (each lives in its own
//! crate and implements [`Transport`]), or anything above it (CLI, conformance, benches).
//!
//! ```text
//!   app ── Connection / AppChannel (async API, events as a Stream)
//!              │ commands            ▲ events
//!   driver ── one tokio task per peer device: feeds frames and timeouts in, drains frames
//!              │ Session (sans-IO)   │  out (a hub of several watches: one per watch, and
//!              │                     │  a reception that vets new links and hands them over)
//!   link  ── Transport → Link: whole frames (mock, TCP, BLE)
//! ```
//!
//! [`Session`](sans_io::Session) (from `interconnect-core`) is sans-IO: it never touches a socket, a
//! task or the clock, so every protocol path is tested with virtual time. The driver (`Interconnect` on the watch,
//! `Hub` on the phone) is a thin loop around it.
//!
//! ## Design notes
//! - **Reliability lives in the channel, not the link.** Links may drop, reorder or lose
//!   frames (the mock does all of these on purpose). Each channel numbers its messages per
//!   direction, the receiver acknowledges cumulatively and drops duplicates, and the
//!   sender resends from the first unacknowledged message (go-back-N) after a link comes
//!   back or when acks stop making progress for `retransmit_timeout`. Out-of-order frames
//!   are dropped rather than buffered: links are ordered in practice, and it keeps the
//!   receiver's memory bounded.
//! - **Resumption by token.** Each side's handshake carries a resume token drawn when the
//!   process starts. The same token on a new link means the peer kept its state: channels
//!   resume (`is_reconnected = true`) and the sender skips what the peer already holds
//!   (`received_seq` in open/accept). A new token means the peer restarted: unacknowledged
//!   messages are sent again under new numbers.
//! - **A send timeout cannot un-send.** A message that already has a sequence number
//!   stays in the sequence (the receiver needs every number); `send` then reports 204
//!   (`Error::SendTimeout { withdrawn: false }`) and the message may still arrive, once.
//!   One that never reached the wire is withdrawn (`withdrawn: true`: safe to send again).
//! - **Acknowledged once the app has it.** By default a message is acknowledged when the
//!   receiving app takes it from its event stream ([`Acknowledge`]), so a resolved `send`
//!   means the peer app has the message, and what a receiver held unread when it died is
//!   sent again to its next run.
//! - **Connections outlive links and restarts.** A watch's connection reopens by itself
//!   after a link drop, and after the phone app closed it or the phone restarted
//!   (`ConnectionEvent::Close { reopens: true, .. }`); only its own `close` ends it.
//!
//! - **State is latest-wins, and rides the channel too.** Besides messages, each side of
//!   a connection holds named values ([`Connection::set_state`]) its peer mirrors
//!   ([`ConnectionEvent::State`], [`Connection::peer_state`]). An update is a message of
//!   the channel (sequenced, resent across link drops) with a key, an origin and a
//!   version; one per key is on its way at a time and later values are coalesced into
//!   the newest, so a burst of changes costs one update per key, and every value goes
//!   again when the channel opens (a restarted peer has them all; a new origin tells the
//!   peer the sender started over). Unlike a message, nothing is awaited and nothing in
//!   between is promised: only that the newest arrives and an older never follows it.
//!
//!   ```no_run
//!   # async fn f(watch: interconnect::Connection) -> Result<(), interconnect::Error> {
//!   use interconnect::ConnectionEvent;
//!   watch.set_state("heart-rate", &72)?;
//!   // On the phone, the app's events carry each change, and the table is there to read:
//!   # let phone = watch.clone();
//!   let mut events = phone.events().unwrap();
//!   while let Some(event) = events.next().await {
//!       if let ConnectionEvent::State { key, value: Some(value) } = event {
//!           println!("{key} = {}", value.decode::<u32>()?);
//!       }
//!   }
//!   let now = phone.peer_state("heart-rate");
//!   # Ok(()) }
//!   ```
//!
//! - **Three ways to send, each with its own promise.** [`Connection::send`] is live:
//!   kept in memory until the peer's app took it, failing with 204 or 1006 when it does
//!   not in time. [`Connection::send_durable`] is kept in a [`Store`] (a redb file set in
//!   [`Config::store`]) until the peer's app took it, across kills and restarts of
//!   either process, in order and handed over once (the receiver's cursor moves on its
//!   disk before its app gets the message); [`ConnectionEvent::Delivered`] says when.
//!   [`Connection::set_state`] delivers only each key's newest value.
//!
//!   ```no_run
//!   # async fn f(dir: &std::path::Path, link: transport_mock::MockDialer) -> Result<(), Box<dyn std::error::Error>> {
//!   use interconnect::{Config, Interconnect, Store};
//!   let mut config = Config::new(dir)?;
//!   config.store = Some(Store::open(dir.join("store.redb"))?);
//!   let watch = Interconnect::new(link, config);
//!   let conn = watch.instance("com.example.fit", None);
//!   let id = conn.send_durable(&serde_json::json!({ "steps": 4210 })).await?;
//!   // On the disk: it reaches the phone's app once, whatever happens to either process.
//!   conn.delivered(id).await?;
//!   # Ok(()) }
//!   ```
//!
//! - **Files ride the same session.** An offer names size and modification time; the
//!   receiver answers with the offset it already holds (a partial file from an
//!   interrupted attempt, found by a key derived from package, name, size and time, so it
//!   survives a restart of either end). Chunks flow in a byte window (`file_window`),
//!   acknowledged as they are written; the sender keeps only the window in memory and the
//!   receiver streams to disk, so memory stays bounded whatever the file size (the
//!   `file_rss` bench binary receives 1 GiB in about 30 MiB of peak RSS). Chunks go out
//!   only when no message is waiting, so files never hold messages up. The sender hashes
//!   (BLAKE3) as it reads and sends the digest with the last chunk, so the file is read
//!   once and its first byte leaves at once; the receiver stores the file only if size
//!   and digest match. (A SHA-256 in the offer would mean a full read before the first
//!   byte and SHA-256 on both ends, over a third of the CPU time of a large transfer.)
//! - **File I/O on short blocking tasks.** Reads and writes run one at a time per
//!   transfer on `spawn_blocking`; a long-lived blocking thread per transfer would hold a
//!   pool thread and stop tokio's paused clock in tests.
//!
//! - **Every link is a Noise XX session** unless both sides opt into
//!   [`Security::InsecurePlaintext`]. The handshake runs in the sans-IO session before
//!   `Hello`, so no channel opens, and nothing reaches an app, before both devices passed
//!   each other's [`TrustPolicy`]. Sealed frames carry explicit nonces: a link that drops
//!   or duplicates frames stays up, and the channel layer resends what was lost. The
//!   [`security`] module holds the handshake, the sealed-frame layout and the **threat
//!   model** (what is protected and what is not).
//!
//! ## Not done here
//! The TCP and BLE transports live in their own crates.

mod admission;
mod app_state;
mod clock;
mod command;
mod connection;
mod cursors;
mod driver;
mod endpoint;
mod error;
mod files;
mod inbox;
mod outbox;
pub mod security;
mod sends;
mod state;
mod store;
mod transport;
mod watches;

pub use app_state::{MAX_STATE_BYTES, MAX_STATE_KEYS};
pub use connection::{Connection, Events, FileTransfer, ProgressStream, Sending};
pub use driver::Backoff;
pub use endpoint::{Config, Hub, Interconnect};
pub use error::{Cause, Error};
pub use files::{FilesConfig, sanitize_file_name};
pub use interconnect_core::{Acknowledge, ClosedBy, SessionConfig, sans_io, time};
pub use interconnect_proto::{Code, ContentType, DeviceId};
pub use outbox::{MAX_OUTBOX_BYTES, MAX_OUTBOX_MESSAGES, MAX_UNTOLD_DELIVERIES, Outstanding};
pub use security::{
    CipherSuite, DeviceIdentity, Fingerprint, IdentityError, IdentityFile, KnownPeers,
    MIN_REKEY_INTERVAL, NoiseConfig, PairingCode, PairingRequest, ParseFingerprintError, Security,
    SecurityError, SecurityEvent, SecurityEvents, TrustPolicy,
};
pub use state::{
    ConnectionEvent, Diagnosis, Incoming, LinkLimits, PeerDeviceStatus, Progress, ReadyState,
    Throughput, decode_meta,
};
pub use store::{Store, StoreError};
pub use transport::{Link, LinkReceiver, LinkSender, Phy, Radio, Transport, TransportError};
pub use watches::{Device, Watch, Watches};

/// The README's quick start runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
