//! What the session and attack tests share beyond the crate's own test bed
//! ([`interconnect_core::pair`]): opening a channel, hand-made file frames.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use interconnect_proto::*;

pub use interconnect_core::pair::*;

pub fn opened(pair: &mut Pair) -> ChannelId {
    pair.connect();
    open_channel(pair)
}

/// Opens a channel to the phone's app on a link that is up.
pub fn open_channel(pair: &mut Pair) -> ChannelId {
    let ch = pair
        .watch
        .open_channel(pair.now, PKG, Some("AA:BB"))
        .unwrap();
    pair.drive();
    assert!(pair.watch.is_open(ch));
    ch
}

pub fn frame_bytes(frame: Frame) -> Bytes {
    frame.to_bytes(DEFAULT_MAX_FRAME_LEN).unwrap()
}

/// A `FileOffer` of `size` bytes, encoded.
pub fn offer_bytes(channel: ChannelId, transfer: TransferId, size: u64) -> Bytes {
    frame_bytes(Frame::FileOffer(FileOffer {
        channel,
        transfer,
        name: "f".into(),
        size,
        modified: 0,
    }))
}

/// A `FileChunk` without a digest, encoded.
pub fn chunk_bytes(channel: ChannelId, transfer: TransferId, offset: u64, data: Bytes) -> Bytes {
    frame_bytes(Frame::FileChunk(FileChunk {
        channel,
        transfer,
        offset,
        data,
        digest: None,
    }))
}

/// The phone takes an offer of `size` bytes from the start (a sans-IO owner that
/// accepts every file).
pub fn phone_accepts(pair: &mut Pair, channel: ChannelId, transfer: TransferId, size: u64) {
    pair.phone
        .handle_frame(pair.now, offer_bytes(channel, transfer, size));
    pair.phone.accept_file(channel, transfer, 0);
}
