//! Hard limits of the wire format and the values both sides negotiate.

/// Bytes of the fixed frame header.
pub const HEADER_LEN: usize = 6;
/// Bytes of the CRC-32C trailer.
pub const CRC_LEN: usize = 4;
/// Header plus trailer: what every frame costs beyond its payload.
pub const FRAME_OVERHEAD: usize = HEADER_LEN + CRC_LEN;
/// Largest payload the 24-bit length field can express.
pub const MAX_PAYLOAD_LEN: usize = 0xFF_FFFF;
/// Largest frame the format can express at all (header + 16 MiB − 1 + trailer).
pub const MAX_FRAME_LEN: usize = FRAME_OVERHEAD + MAX_PAYLOAD_LEN;
/// Smallest maximum frame length a side may announce: the largest control frame
/// (an open with maximal package and fingerprint) must always fit.
pub const MIN_MAX_FRAME_LEN: usize = 1024;
/// Maximum frame length announced when nothing else is configured.
pub const DEFAULT_MAX_FRAME_LEN: usize = 256 * 1024;
/// Room reserved in a data frame for its postcard sub-header (channel, sequence, content
/// type, exchange).
pub const DATA_HEADER_MAX_LEN: usize = 32;
/// Room reserved in a file-chunk frame for its postcard sub-header (channel, transfer,
/// offset, and the file digest on the last chunk).
pub const CHUNK_HEADER_MAX_LEN: usize = 64;
/// Largest message payload the format carries (one message is one frame).
pub const MAX_MESSAGE_LEN: usize = MAX_FRAME_LEN - FRAME_OVERHEAD - DATA_HEADER_MAX_LEN;
/// Longest file name, in bytes of UTF-8, accepted in a file offer.
pub const MAX_FILE_NAME_LEN: usize = 255;
/// Most bytes of app metadata a file offer carries (`FileOfferMeta`): a small description
/// the receiving app decides on, not a second channel for data.
pub const MAX_FILE_META_LEN: usize = 4096;
/// Longest state key, in bytes of UTF-8 (`StateUpdate`).
pub const MAX_STATE_KEY_LEN: usize = 128;
/// Longest device name, in bytes of UTF-8 (`Name`).
pub const MAX_DEVICE_NAME_LEN: usize = 64;
/// Longest package name, in bytes.
pub const MAX_PACKAGE_LEN: usize = 255;
/// Longest app signature, in bytes (a colon-separated SHA-256 needs 95).
pub const MAX_SIGNATURE_LEN: usize = 128;
/// Longest close reason or error message, in bytes.
pub const MAX_REASON_LEN: usize = 1024;

/// Limits in force on one link, agreed in the session handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole frame (header, payload and trailer) either side may send.
    pub max_frame_len: usize,
}

impl Limits {
    /// Limits with the given maximum frame length, clamped to what the format allows.
    pub const fn new(max_frame_len: usize) -> Self {
        let clamped = if max_frame_len > MAX_FRAME_LEN {
            MAX_FRAME_LEN
        } else if max_frame_len < MIN_MAX_FRAME_LEN {
            MIN_MAX_FRAME_LEN
        } else {
            max_frame_len
        };
        Limits {
            max_frame_len: clamped,
        }
    }

    /// The limits both sides can honour: the smaller of the two maxima.
    pub const fn negotiate(self, other: Limits) -> Limits {
        if self.max_frame_len < other.max_frame_len {
            self
        } else {
            other
        }
    }

    /// Largest message payload that fits one frame under these limits.
    pub const fn max_message_len(&self) -> usize {
        self.max_frame_len - FRAME_OVERHEAD - DATA_HEADER_MAX_LEN
    }

    /// Largest file-chunk payload that fits one frame under these limits.
    pub const fn max_chunk_len(&self) -> usize {
        self.max_frame_len - FRAME_OVERHEAD - CHUNK_HEADER_MAX_LEN
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(DEFAULT_MAX_FRAME_LEN)
    }
}
