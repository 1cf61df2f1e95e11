//! Typed errors of encoding and decoding.

use crate::kind::Kind;

/// Why bytes could not be decoded into a frame.
///
/// Every malformed input maps to one of these; decoding never panics. After any error
/// but [`DecodeError::Truncated`] a byte stream has lost its framing and the link should
/// be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header or the announced length need.
    #[error("truncated frame: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The CRC-32C trailer does not match the header and payload.
    #[error("bad CRC-32C: frame says {expected:#010x}, bytes give {actual:#010x}")]
    BadCrc {
        /// The trailer's value.
        expected: u32,
        /// The value computed over header and payload.
        actual: u32,
    },
    /// The announced frame length exceeds the negotiated maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Whole-frame length the header announces.
        len: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The kind byte names no frame this version knows.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// The header's format version is not one this decoder reads.
    #[error("unsupported frame format version {0}")]
    UnsupportedVersion(u8),
    /// Flag bits that this version does not define are set.
    #[error("unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    /// The payload does not decode as the frame kind's message, or breaks a field limit.
    #[error("malformed {kind:?} payload: {reason}")]
    Malformed {
        /// The frame kind whose payload failed.
        kind: Kind,
        /// What was wrong.
        reason: &'static str,
    },
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame would exceed the maximum frame length in force.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Whole-frame length it would have.
        len: usize,
        /// The maximum in force.
        max: usize,
    },
    /// A field is longer than the format allows (package, name, reason, ...).
    #[error("{field} is {len} bytes, the limit is {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field holds a value the format forbids.
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
    /// Serialisation failed (should not happen for well-formed values).
    #[error("serialisation failed")]
    Serialize,
}
