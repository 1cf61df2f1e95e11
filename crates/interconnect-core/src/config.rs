//! Configuration of a session: who this device is and the timers and limits it runs with.

use core::time::Duration;

use interconnect_proto::{DEFAULT_MAX_FRAME_LEN, DeviceId, Role};

use crate::security::Security;

/// How one device runs its sessions. Defaults suit a phone↔watch link over BLE or TCP.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// This device's role (watch or phone). Independent of who dials. `Hub` and
    /// `Interconnect` set it.
    pub role: Role,
    /// This device's stable id, sent in the handshake.
    pub device_id: DeviceId,
    /// Largest frame this device accepts; the handshake takes the smaller of both sides
    /// and the link's own limit.
    pub max_frame_len: usize,
    /// Identifies this device's logical session across links. A peer seeing the same token
    /// on a new link resumes channels; a new token makes it start afresh. Draw it at random
    /// when the process starts (the async API does when it is 0).
    pub resume_token: u64,
    /// How long a new link may take to complete the handshake.
    pub handshake_timeout: Duration,
    /// How long, before the link's keys exist, the peer's next handshake frame may take
    /// (2 s by default; a step takes a round trip and a few key operations). A
    /// connection that opens and then stalls holds a listener's handshake slot no
    /// longer than this. Waiting for a user's pairing answer is not bounded by it.
    pub handshake_step_timeout: Duration,
    /// How often to send a liveness ping while the link is up.
    pub ping_interval: Duration,
    /// A link from which nothing arrived for this long is declared lost; so is one whose
    /// writes did not drain for this long (the driver checks). The peer's pings (every
    /// `ping_interval`, 5 s by default) keep an idle link alive, so this must exceed the
    /// peer's ping interval; 15 s by default.
    pub link_timeout: Duration,
    /// Unacknowledged messages are sent again when no acknowledgement progress was made
    /// for this long (covers links that lose frames without dropping).
    pub retransmit_timeout: Duration,
    /// Messages a channel keeps in flight (sent, not yet acknowledged); 1,024 by default,
    /// the runtime's unread messages per connection, so a pipelined stream is held by
    /// the receiving app and not by the window.
    pub max_in_flight: usize,
    /// Payload bytes a channel keeps in flight beyond its first message; 1 MiB by
    /// default, so large messages do not multiply the window's memory (the sender keeps
    /// every message in flight for resending).
    pub max_in_flight_bytes: usize,
    /// Messages a channel queues beyond those in flight before `send` is refused.
    pub max_queued: usize,
    /// Links deliver every frame in order while up (the runtime's
    /// `Transport::is_reliable`): no retransmission timers, and a gap drops the link.
    /// The endpoint sets it from its transport.
    pub reliable_link: bool,
    /// Links carry a byte stream that the receiver cuts into frames by their headers
    /// (the runtime's `Transport::is_stream`: TCP): in plaintext, `poll_transmit` then
    /// hands out a run of small frames joined in one buffer, as it hands out a sealed
    /// batch. The endpoint sets it from its transport.
    pub stream_link: bool,
    /// Bytes of one file transfer in flight (sent, not yet acknowledged), at most
    /// 16 MiB (the protocol's bound: a receiver cancels a transfer whose chunk starts
    /// further ahead); also bounds the sender's read-ahead and the receiver's bytes
    /// received but not yet written.
    pub file_window: u64,
    /// When a received message is acknowledged to its sender (what the sender's `send`
    /// resolving means).
    pub acknowledge: Acknowledge,
    /// How links are protected: Noise (with trust on first use unless configured
    /// otherwise) or, for debugging only, plaintext on both sides.
    pub security: Security,
    /// Whether this side takes incoming files. Announced in the Hello
    /// (`Capabilities::FILES`): a peer then offers this side no file, and its
    /// `send_file` fails at once instead of after an offer's refusal. `true` by default;
    /// the runtime sets it from whether it has a folder for received files.
    pub receives_files: bool,
    /// This device's name, for its peer to show ("Alice's watch"; at most 64 bytes),
    /// sent once per link to a peer that reads names. `None` by default.
    pub name: Option<crate::prelude::String>,
}

impl SessionConfig {
    /// A configuration with default timers for the given role, device id, resume token
    /// and security. The core makes no key of its own: a Noise identity comes from the
    /// caller (the runtime crate's `IdentityFile::generate`, or a key from storage).
    pub fn new(role: Role, device_id: DeviceId, resume_token: u64, security: Security) -> Self {
        SessionConfig {
            role,
            device_id,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            resume_token,
            handshake_timeout: Duration::from_secs(10),
            handshake_step_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(5),
            link_timeout: Duration::from_secs(15),
            retransmit_timeout: Duration::from_secs(2),
            max_in_flight: 1024,
            max_in_flight_bytes: 1 << 20,
            max_queued: 4096,
            reliable_link: false,
            stream_link: false,
            file_window: 4 * 1024 * 1024,
            acknowledge: Acknowledge::WhenTaken,
            security,
            receives_files: true,
            name: None,
        }
    }

    /// The same, with this security setting.
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }
}

/// When this side acknowledges a message, which is when the sender's `send` resolves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Acknowledge {
    /// Once the receiving app took the message from its event stream (the default): a
    /// resolved `send` means the peer app has it, and a message the receiver held
    /// unread when it crashed or shut down is sent again to its next run. A message the
    /// app took in the instant before a crash, whose acknowledgement had not left yet,
    /// comes again too (once): exactly once across a crash of the receiver needs the app
    /// to remember what it handled. A peer app that never reads makes sends wait, then
    /// time out (204).
    #[default]
    WhenTaken,
    /// As soon as it arrived, in order, at the receiving device, before its app read it:
    /// a crash or shutdown of the receiver loses what it held unread.
    OnReceipt,
}

/// Largest distance ahead of the last in-order message that a received sequence number
/// may be before it counts as a protocol violation rather than a gap after a loss.
pub(crate) const MAX_SEQ_AHEAD: u64 = 1 << 16;

/// How far beyond the next offset it expects a receiver takes a file chunk (a smaller
/// gap is a loss); a sender's window never exceeds it.
pub(crate) const MAX_FILE_AHEAD: u64 = 16 << 20;
