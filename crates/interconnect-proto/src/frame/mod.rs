//! Frames: the message each kind carries (`messages`) and their encoding (`codec`).
//!
//! One frame carries one message. Control messages are postcard-encoded structs. The two
//! bulk kinds, [`Data`] and [`FileChunk`], carry a small postcard sub-header followed by
//! their payload as raw bytes to the end of the frame: encoding copies the payload once
//! into the output buffer and decoding returns it as a slice of the received buffer,
//! without a copy. (Serialising the payload as a postcard byte string would add a length
//! prefix that the frame length already gives, and a copy on decode.)

mod codec;
mod head;
mod messages;

pub(crate) use codec::header_bytes_flagged;
pub use codec::{
    Batch, FLAG_NO_CRC, FLAG_TAGS_LAST, FORMAT_VERSION, FrameHeader, InnerFrame, OwnedFrame,
};
pub use head::DataHead;
pub use messages::*;

/// Declares [`Frame`] with one variant per message type, and `From` for each: one list.
macro_rules! frames {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// One decoded frame.
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
        #[non_exhaustive]
        #[allow(missing_docs)] // each variant is documented on its message type
        pub enum Frame {
            $($variant($ty)),*
        }

        $(impl From<$ty> for Frame {
            fn from(message: $ty) -> Frame {
                Frame::$variant(message)
            }
        })*
    };
}

frames!(
    Hello(Hello),
    Ping(Ping),
    Pong(Pong),
    Error(ErrorReport),
    Name(Name),
    Open(Open),
    Accept(Accept),
    Reject(Reject),
    Data(Data),
    Ack(Ack),
    Close(Close),
    FileOffer(FileOffer),
    FileAccept(FileAccept),
    FileChunk(FileChunk),
    FileAck(FileAck),
    FileComplete(FileComplete),
    FileCancel(FileCancel),
    FileOfferMeta(FileOfferMeta),
    VersionQuery(VersionQuery),
    VersionReply(VersionReply),
    Handshake(Handshake),
    Sealed(Sealed),
);
