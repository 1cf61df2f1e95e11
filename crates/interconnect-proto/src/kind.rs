//! The kind byte of a frame's header: one table of every kind, from which the enum and
//! its list are made, so no second list can disagree with it.

/// Defines [`Kind`] and [`Kind::ALL`] from one table.
macro_rules! kinds {
    ($($(#[$doc:meta])* $name:ident = $byte:literal,)*) => {
        /// The kind byte of the header: which message the payload holds.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum Kind {
            $($(#[$doc])* $name = $byte,)*
        }

        impl Kind {
            /// Every kind this version defines, in numeric order.
            pub const ALL: &'static [Kind] = &[$(Kind::$name,)*];

            /// The kind for a header byte, `None` for a byte this version does not
            /// define. (A match, read for every frame and every frame of a batch.)
            #[inline]
            pub fn from_byte(byte: u8) -> Option<Kind> {
                match byte {
                    $($byte => Some(Kind::$name),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    /// Session handshake, sent by each side first on every new link.
    Hello = 0x01,
    /// Liveness probe.
    Ping = 0x02,
    /// Answer to a ping.
    Pong = 0x03,
    /// An error report, for the session or one channel.
    Error = 0x04,
    /// The sender's device name.
    Name = 0x05,
    /// Channel open request (watch → phone).
    Open = 0x10,
    /// Channel accepted.
    Accept = 0x11,
    /// Channel refused, with a code.
    Reject = 0x12,
    /// An app message.
    Data = 0x13,
    /// Cumulative acknowledgement of app messages.
    Ack = 0x14,
    /// Channel close, with a code and reason.
    Close = 0x15,
    /// File transfer offer.
    FileOffer = 0x20,
    /// File transfer accepted, with the offset to resume from.
    FileAccept = 0x21,
    /// A piece of a file.
    FileChunk = 0x22,
    /// Cumulative acknowledgement of file bytes held durably.
    FileAck = 0x23,
    /// The receiver verified and stored the file.
    FileComplete = 0x24,
    /// Either side ends a transfer with a code (also a refused offer).
    FileCancel = 0x25,
    /// File transfer offer with the sending app's metadata.
    FileOfferMeta = 0x26,
    /// Asks which version of an app the peer has registered.
    VersionQuery = 0x30,
    /// Answer to a version query.
    VersionReply = 0x31,
    /// One step of the Noise XX handshake that opens a secure link.
    Handshake = 0x40,
    /// A frame encrypted and authenticated with the link's session keys; it holds
    /// another frame (header and payload) of any kind but these two.
    Sealed = 0x41,
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn the_table_is_in_numeric_order_without_repeats() {
        assert!(Kind::ALL.windows(2).all(|w| (w[0] as u8) < (w[1] as u8)));
        assert_eq!(Kind::from_byte(0x41), Some(Kind::Sealed));
        assert_eq!(Kind::from_byte(0x42), None);
        for byte in 0..=u8::MAX {
            let listed = Kind::ALL.iter().copied().find(|k| *k as u8 == byte);
            assert_eq!(Kind::from_byte(byte), listed, "{byte:#04x}");
        }
    }
}
