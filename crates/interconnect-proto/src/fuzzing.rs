//! The checks the cargo-fuzz targets run, shared with the unit test that replays the
//! checked-in corpus on stable, so CI guards every input the fuzzer ever kept.

use bytes::{Bytes, BytesMut};

use crate::{DEFAULT_MAX_FRAME_LEN, DurableHead, EncodeError, Frame, FrameDecoder, StateUpdate};

/// Feeds `data` to the incremental decoder in pieces whose sizes come from the data
/// itself; every frame it yields must re-encode and decode to itself. The same bytes go
/// through [`Frame::decode_batch`] as a sealed batch's plaintext, and are read as a state
/// update's payload and a durable message's.
pub fn frame_decode(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    if let Ok(update) = StateUpdate::decode(Bytes::copy_from_slice(stream)) {
        assert!(
            update.key.len() <= crate::MAX_STATE_KEY_LEN,
            "a key past the limit"
        );
        let again = StateUpdate::decode(update.encode()).expect("a decoded update re-encodes");
        assert_eq!(again, update);
    }
    if let Ok((head, message)) = DurableHead::decode(Bytes::copy_from_slice(stream)) {
        let again = DurableHead::decode(head.encode(&message)).expect("a decoded head re-encodes");
        assert_eq!(again, (head, message));
    }
    let step = usize::from(step.max(1));
    let max = 64 * 1024;
    // The same bytes as a sealed batch's plaintext: each inner frame re-encodes and
    // decodes to itself, and every frame taken consumed a header at least.
    let mut taken = 0;
    for frame in Frame::decode_batch(Bytes::copy_from_slice(stream), max) {
        let Ok(frame) = frame else { break };
        taken += 1;
        assert!(
            taken * crate::HEADER_LEN <= stream.len(),
            "a frame from nothing"
        );
        let mut again = BytesMut::new();
        frame
            .encode_unsealed(max, &mut again)
            .expect("a decoded inner frame re-encodes");
        let mut one = Frame::decode_batch(again.freeze(), max);
        assert_eq!(one.next().map(|f| f.expect("decodes")), Some(frame));
        assert!(one.next().is_none());
    }
    let mut decoder = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(before - buf.len() <= max, "a frame beyond the limit");
                    let again = frame.to_bytes(max).expect("a decoded frame re-encodes");
                    let decoded = Frame::decode(again, max).expect("re-encoded frame decodes");
                    assert_eq!(decoded, frame);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// Builds a frame from `data`; if it encodes, decoding must give it back unchanged.
pub fn message_roundtrip(data: &[u8]) {
    let mut input = arbitrary::Unstructured::new(data);
    let Ok(frame) = <Frame as arbitrary::Arbitrary>::arbitrary(&mut input) else {
        return;
    };
    match frame.to_bytes(DEFAULT_MAX_FRAME_LEN) {
        Ok(wire) => {
            let decoded =
                Frame::decode(wire, DEFAULT_MAX_FRAME_LEN).expect("encoded frame decodes");
            assert_eq!(decoded, frame);
        }
        Err(EncodeError::FieldTooLong { .. } | EncodeError::InvalidField(_)) => {}
        Err(e) => panic!("encoding failed unexpectedly: {e}"),
    }
}

/// The files of a corpus folder, for replay.
#[cfg(test)]
fn corpus(target: &str) -> alloc::vec::Vec<alloc::vec::Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs = alloc::vec::Vec::new();
    for entry in std::fs::read_dir(&dir).expect("corpus folder exists") {
        let path = entry.expect("corpus entry").path();
        inputs.push(std::fs::read(path).expect("corpus file"));
    }
    inputs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_frame_decode_corpus() {
        let inputs = corpus("frame_decode");
        assert!(!inputs.is_empty());
        inputs.iter().for_each(|input| frame_decode(input));
    }

    #[test]
    fn replay_message_roundtrip_corpus() {
        let inputs = corpus("message_roundtrip");
        assert!(!inputs.is_empty());
        inputs.iter().for_each(|input| message_roundtrip(input));
    }
}
