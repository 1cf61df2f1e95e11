//! Stable numeric status codes, shared by the wire, the API and the events.

use core::fmt;
use serde::{Deserialize, Serialize};

/// A numeric status code, as carried by close, reject, cancel and error frames and
/// reported by the API.
///
/// The values of the vendor watch APIs this library follows are kept exactly, so an app
/// ported from them can compare against the numbers it already knows. Codes of our own
/// start at 4000 and never collide with them. Any other `u16` is allowed in a close frame,
/// so apps can define codes of their own.
///
/// ```
/// use interconnect_proto::Code;
/// assert_eq!(Code::APP_UNINSTALLED.as_u16(), 1001);
/// assert_eq!(Code::from(204), Code::TIMEOUT);
/// assert_eq!(Code::TIMEOUT.to_string(), "204 (timeout)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[serde(transparent)]
pub struct Code(pub u16);

impl Code {
    /// 0: success (the `diagnosis` result when the channel is healthy).
    pub const OK: Code = Code(0);
    /// 204 `CONNECT_TIMEOUT`: a connect, diagnosis or send acknowledgement timed out.
    pub const TIMEOUT: Code = Code(204);
    /// 1000 `OTHERS`: any failure without a more specific code; also a normal close.
    pub const OTHERS: Code = Code(1000);
    /// 1001 `APP_UNINSTALLED`: no app with the requested package is registered on the peer.
    pub const APP_UNINSTALLED: Code = Code(1001);
    /// 1002: the app is registered on the peer but not attached (not running) right now.
    pub const APP_NOT_CONNECTED: Code = Code(1002);
    /// 1006: the connection (link or channel) went down.
    pub const CONNECTION_LOST: Code = Code(1006);
    /// 1007: the peer app's signature differs from the one asked for (the vendor APIs'
    /// "fingerprint mismatch").
    pub const SIGNATURE_MISMATCH: Code = Code(1007);
    /// 4000: the peer broke the protocol (malformed or unexpected frame).
    pub const PROTOCOL_ERROR: Code = Code(4000);
    /// 4001: a message or file exceeds a negotiated or configured limit.
    pub const TOO_LARGE: Code = Code(4001);
    /// 4002: the listener serves another device; the new link is refused (not for good:
    /// the watch tries again, and is served once the other device left).
    pub const BUSY: Code = Code(4002);
    /// 4003: the transfer or request was cancelled by one side.
    pub const CANCELLED: Code = Code(4003);
    /// 4004: a received file failed verification (size or digest).
    pub const INTEGRITY: Code = Code(4004);
    /// 4005: local storage failed (disk full, permission denied, I/O error).
    pub const STORAGE: Code = Code(4005);
    /// 4006: no protocol version is supported by both sides.
    pub const VERSION_MISMATCH: Code = Code(4006);
    /// 4007: the peer device's key is not trusted (not pinned, or pairing refused).
    pub const UNTRUSTED_PEER: Code = Code(4007);
    /// 4008: the secure handshake or a sealed frame failed (bad message, forged or
    /// corrupted frame, suite not allowed, one side in plaintext mode).
    pub const SECURITY: Code = Code(4008);
    /// A file offer the receiver answers without a transfer: it stored this very file
    /// (same app, name, size and modification time) already, and still has it. Not a
    /// failure: the sender's send reports success.
    pub const ALREADY_STORED: Code = Code(4009);

    /// The numeric value.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// A short lower-case name for a known code, `None` for an app-defined one.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "ok",
            204 => "timeout",
            1000 => "others",
            1001 => "app uninstalled",
            1002 => "app not connected",
            1006 => "connection lost",
            1007 => "signature mismatch",
            4000 => "protocol error",
            4001 => "too large",
            4002 => "busy",
            4003 => "cancelled",
            4004 => "integrity check failed",
            4005 => "storage error",
            4006 => "version mismatch",
            4007 => "untrusted peer",
            4008 => "security failure",
            4009 => "already stored",
            _ => return None,
        })
    }
}

impl From<u16> for Code {
    fn from(value: u16) -> Self {
        Code(value)
    }
}

impl From<Code> for u16 {
    fn from(code: Code) -> Self {
        code.0
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}
