//! Fixed-byte tests of every frame kind, and the generated examples in the crate docs.

use bytes::{Bytes, BytesMut};
use interconnect_proto::*;

#[path = "wire/payloads.rs"]
mod payloads;

const MAX: usize = DEFAULT_MAX_FRAME_LEN;

/// One real frame of each kind, as shown in the `spec` docs.
fn examples() -> Vec<Frame> {
    let channel = ChannelId(1);
    let transfer = TransferId(7);
    vec![
        Frame::Hello(Hello {
            min_version: 1,
            max_version: 1,
            role: Role::Watch,
            device_id: DeviceId(*b"watch-0000000001"),
            max_frame_len: 65536,
            capabilities: Capabilities::ALL,
            resume_token: 0x0123_4567_89ab_cdef,
        }),
        Frame::Ping(Ping { nonce: 42 }),
        Frame::Pong(Pong { nonce: 42 }),
        Frame::Error(ErrorReport {
            channel: None,
            code: Code::PROTOCOL_ERROR,
            message: "bad frame".into(),
        }),
        Frame::Name(Name {
            name: "Alice's watch".into(),
        }),
        Frame::Open(Open {
            channel,
            package: "com.example.app".into(),
            signature: Some("AB:CD".into()),
            resume: false,
            received_seq: 0,
        }),
        Frame::Accept(Accept {
            channel,
            app_version: 3,
            received_seq: 0,
            resumed: false,
        }),
        Frame::Reject(Reject {
            channel,
            code: Code::APP_UNINSTALLED,
            reason: "no app".into(),
        }),
        Frame::Data(Data {
            channel,
            seq: 1,
            content_type: ContentType::Json,
            exchange: Exchange::OneWay,
            payload: Bytes::from_static(br#"{"hr":72}"#),
        }),
        Frame::Ack(Ack { channel, seq: 1 }),
        Frame::Close(Close {
            channel,
            code: Code::OTHERS,
            reason: "bye".into(),
        }),
        Frame::FileOffer(FileOffer {
            channel,
            transfer,
            name: "a.txt".into(),
            size: 3,
            modified: 1_700_000_000_000_000_000,
        }),
        Frame::FileAccept(FileAccept {
            channel,
            transfer,
            offset: 0,
        }),
        Frame::FileChunk(FileChunk {
            channel,
            transfer,
            offset: 0,
            data: Bytes::from_static(b"abc"),
            // The offer's whole file: its real BLAKE3.
            digest: Some(*blake3::hash(b"abc").as_bytes()),
        }),
        Frame::FileAck(FileAck {
            channel,
            transfer,
            offset: 3,
        }),
        Frame::FileComplete(FileComplete { channel, transfer }),
        Frame::FileCancel(FileCancel {
            channel,
            transfer,
            code: Code::CANCELLED,
            reason: "user".into(),
        }),
        Frame::FileOfferMeta(FileOfferMeta {
            offer: FileOffer {
                channel,
                transfer,
                name: "run.gpx".into(),
                size: 3,
                modified: 0,
            },
            meta: Bytes::from_static(br#"{"km":5}"#),
        }),
        Frame::VersionQuery(VersionQuery {
            request: 5,
            package: "com.example.app".into(),
        }),
        Frame::VersionReply(VersionReply {
            request: 5,
            version: Some(3),
        }),
        Frame::Handshake(Handshake {
            step: 1,
            offered: 0b11,
            suite: 1,
            rekey_interval: 16384,
            message: bytes::Bytes::from_static(&[0xe0; 32]),
        }),
        Frame::Sealed(Sealed {
            nonce: 7,
            ciphertext: bytes::Bytes::from_static(&[0x5e; 24]),
            layout: Layout::Interleaved,
        }),
    ]
}

fn hex_of(frame: &Frame) -> String {
    hex::encode(frame.to_bytes(MAX).expect("example encodes"))
}

/// A frame's fields as JSON, in wire order: postcard's encoding of the struct for the
/// control kinds; for the bulk kinds the sub-header and the raw bytes as hex.
fn fields(frame: &Frame) -> serde_json::Value {
    use serde_json::{json, to_value};
    let value = match frame {
        Frame::Hello(m) => to_value(m),
        Frame::Ping(m) => to_value(m),
        Frame::Pong(m) => to_value(m),
        Frame::Error(m) => to_value(m),
        Frame::Name(m) => to_value(m),
        Frame::Open(m) => to_value(m),
        Frame::Accept(m) => to_value(m),
        Frame::Reject(m) => to_value(m),
        Frame::Ack(m) => to_value(m),
        Frame::Close(m) => to_value(m),
        Frame::FileOffer(m) => to_value(m),
        Frame::FileAccept(m) => to_value(m),
        Frame::FileAck(m) => to_value(m),
        Frame::FileComplete(m) => to_value(m),
        Frame::FileCancel(m) => to_value(m),
        Frame::VersionQuery(m) => to_value(m),
        Frame::VersionReply(m) => to_value(m),
        Frame::Data(m) => Ok(json!({
            "channel": m.channel.0,
            "seq": m.seq,
            "content_type": m.content_type,
            "exchange": m.exchange,
            "payload": hex::encode(&m.payload),
        })),
        Frame::FileChunk(m) => Ok(json!({
            "channel": m.channel.0,
            "transfer": m.transfer.0,
            "offset": m.offset,
            "digest": m.digest.map(hex::encode),
            "data": hex::encode(&m.data),
        })),
        Frame::FileOfferMeta(m) => Ok(json!({
            "channel": m.offer.channel.0,
            "transfer": m.offer.transfer.0,
            "name": m.offer.name,
            "size": m.offer.size,
            "modified": m.offer.modified,
            "meta": hex::encode(&m.meta),
        })),
        Frame::Handshake(m) => Ok(json!({
            "step": m.step,
            "offered": m.offered,
            "suite": m.suite,
            "rekey_interval": m.rekey_interval,
            "message": hex::encode(&m.message),
        })),
        Frame::Sealed(m) => Ok(json!({
            "nonce": m.nonce,
            "ciphertext": hex::encode(&m.ciphertext),
        })),
        other => panic!("no example fields for {:?}", other.kind()),
    };
    value.expect("fields serialise")
}

/// The examples section of WIRE.md: each frame's kind and hex, then its fields.
fn examples_markdown() -> String {
    frames_markdown(BEGIN, END, examples())
}

/// A small real file, sent in two chunks: the offer, then the chunks, the last with the
/// BLAKE3 of the whole file. 1,500 bytes (`i % 251`, the input of BLAKE3's own test
/// vectors): more than one BLAKE3 chunk, so the digest exercises its tree.
fn file_example() -> Vec<Frame> {
    let (channel, transfer) = (ChannelId(1), TransferId(9));
    let file: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
    let (first, rest) = file.split_at(1024);
    vec![
        Frame::FileOffer(FileOffer {
            channel,
            transfer,
            name: "pattern.bin".into(),
            size: file.len() as u64,
            modified: 0,
        }),
        Frame::FileChunk(FileChunk {
            channel,
            transfer,
            offset: 0,
            data: Bytes::copy_from_slice(first),
            digest: None,
        }),
        Frame::FileChunk(FileChunk {
            channel,
            transfer,
            offset: first.len() as u64,
            data: Bytes::copy_from_slice(rest),
            digest: Some(*blake3::hash(&file).as_bytes()),
        }),
    ]
}

fn frames_markdown(begin: &str, end: &str, frames: Vec<Frame>) -> String {
    let mut out = String::from(begin);
    out.push_str("\n```text\n");
    for frame in frames {
        out.push_str(&format!(
            "{:<13} {}\n              {}\n",
            format!("{:?}", frame.kind()),
            hex_of(&frame),
            fields(&frame)
        ));
    }
    out.push_str("```\n");
    out.push_str(end);
    out
}

const FILE_BEGIN: &str = "<!-- file example: generated by wire_file_example_matches_docs -->\n";
const FILE_END: &str = "<!-- end of the file example -->\n";

/// The file example in WIRE.md is what the encoder produces, and its digest is the
/// BLAKE3 of the chunks' bytes (`spec/wire.py` recomputes it with its own BLAKE3).
#[test]
fn wire_file_example_matches_docs() {
    let generated = frames_markdown(FILE_BEGIN, FILE_END, file_example());
    matches_docs(FILE_BEGIN, FILE_END, &generated, "file example");
}

/// Checks that WIRE.md holds `generated` between `begin` and `end` (and with
/// `UPDATE_WIRE_EXAMPLES=1` writes it there first, after an intended format change).
fn matches_docs(begin: &str, end: &str, generated: &str, what: &str) {
    let doc = std::fs::read_to_string(WIRE_MD).expect("read WIRE.md");
    let start = doc.find(begin).expect("the start marker");
    let stop = doc.find(end).expect("the end marker") + end.len();
    if std::env::var_os("UPDATE_WIRE_EXAMPLES").is_some() {
        let updated = format!("{}{generated}{}", &doc[..start], &doc[stop..]);
        std::fs::write(WIRE_MD, updated).expect("write WIRE.md");
    }
    let on_disk = &std::fs::read_to_string(WIRE_MD).expect("read WIRE.md")[start..];
    assert!(
        on_disk.starts_with(generated),
        "WIRE.md's {what} is stale: run with UPDATE_WIRE_EXAMPLES=1 if the change is intended"
    );
}

const WIRE_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/WIRE.md");
const BEGIN: &str = "<!-- examples: generated by wire_examples_match_docs -->\n";
const END: &str = "<!-- end of examples -->\n";

/// The examples in WIRE.md are exactly what the encoder produces, with the fields each
/// frame holds, and each fixed byte string decodes back to its frame.
/// `UPDATE_WIRE_EXAMPLES=1` rewrites them after an intended format change.
#[test]
fn wire_examples_match_docs() {
    let generated = examples_markdown();
    matches_docs(BEGIN, END, &generated, "examples");
    let lines: Vec<&str> = generated
        .lines()
        .filter(|l| l.contains(' ') && !l.starts_with(' ') && !l.starts_with('<'))
        .collect();
    let frames = examples();
    assert_eq!(lines.len(), frames.len());
    assert_eq!(frames.len(), Kind::ALL.len(), "one example of every kind");
    for (line, frame) in lines.iter().zip(frames) {
        let hex_text = line.split_whitespace().nth(1).expect("hex column");
        let bytes = Bytes::from(hex::decode(hex_text).expect("valid hex"));
        assert_eq!(Frame::decode(bytes, MAX).expect("decodes"), frame);
    }
}

#[test]
fn fixed_bytes_of_a_ping() {
    // version 1, kind 0x02, no flags, length 1, nonce 42 as a varint, CRC-32C LE.
    let wire = [0x01, 0x02, 0x00, 0x01, 0x00, 0x00, 0x2a];
    let mut framed = wire.to_vec();
    framed.extend_from_slice(&crc32c_of(&wire).to_le_bytes());
    assert_eq!(
        Frame::decode(Bytes::from(framed.clone()), MAX),
        Ok(Frame::Ping(Ping { nonce: 42 }))
    );
    assert_eq!(
        Frame::Ping(Ping { nonce: 42 }).to_bytes(MAX).unwrap(),
        framed
    );
}

/// Bit-at-a-time CRC-32C, independent of the crate's implementation.
fn crc32c_of(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn every_example_carries_a_valid_crc() {
    for frame in examples() {
        let bytes = frame.to_bytes(MAX).unwrap();
        let (body, trailer) = bytes.split_at(bytes.len() - CRC_LEN);
        assert_eq!(
            crc32c_of(body),
            u32::from_le_bytes(trailer.try_into().unwrap())
        );
    }
}

fn ping_bytes() -> Vec<u8> {
    Frame::Ping(Ping { nonce: 42 })
        .to_bytes(MAX)
        .unwrap()
        .to_vec()
}

#[test]
fn rejects_wrong_format_version() {
    let mut wire = ping_bytes();
    wire[0] = 2;
    assert_eq!(
        Frame::decode(wire.into(), MAX),
        Err(DecodeError::UnsupportedVersion(2))
    );
}

#[test]
fn rejects_unknown_kinds() {
    let mut wire = ping_bytes();
    wire[1] = 0x7f;
    assert_eq!(
        Frame::decode(wire.into(), MAX),
        Err(DecodeError::UnknownKind(0x7f))
    );
}

/// A sealed frame without its CRC trailer and with its tags last.
const BARE: SealedForm = SealedForm {
    trailer: Trailer::None,
    layout: Layout::TagsLast,
};

#[test]
fn a_sealed_frame_is_built_in_place_and_decodes_to_its_parts() {
    let mut dst = bytes::BytesMut::new();
    let filled = encode_sealed(MAX, &mut dst, 300, 20, SealedForm::COMMON, |buf| {
        buf.extend_from_slice(&[7; 20]);
        Ok::<(), ()>(())
    });
    assert_eq!(filled, Ok(Ok(())));
    match Frame::decode(dst.freeze(), MAX) {
        Ok(Frame::Sealed(sealed)) => {
            assert_eq!(sealed.nonce, 300);
            assert_eq!(&sealed.ciphertext[..], &[7; 20]);
        }
        other => panic!("expected a sealed frame, got {other:?}"),
    }
    // A failing fill leaves the buffer as it was.
    let mut dst = bytes::BytesMut::from(&b"kept"[..]);
    assert_eq!(
        encode_sealed(MAX, &mut dst, 1, 8, SealedForm::COMMON, |_| Err("no key")),
        Ok(Err("no key"))
    );
    assert_eq!(&dst[..], b"kept");
    assert!(matches!(
        encode_sealed(64, &mut dst, 1, 100, BARE, |_| Ok::<(), ()>(())),
        Err(EncodeError::TooLarge { .. })
    ));
    // So does a fill of another length than announced.
    assert!(matches!(
        encode_sealed(MAX, &mut dst, 1, 8, BARE, |buf| {
            buf.extend_from_slice(&[1; 7]);
            Ok::<(), ()>(())
        }),
        Err(EncodeError::InvalidField(_))
    ));
    assert_eq!(&dst[..], b"kept");
}

#[test]
fn an_unsealed_head_and_its_bulk_make_the_unsealed_frame() {
    let chunk = Frame::FileChunk(FileChunk {
        channel: ChannelId(3),
        transfer: TransferId(5),
        offset: 1 << 33,
        data: bytes::Bytes::from(vec![4; 5000]),
        digest: Some([9; 32]),
    });
    let mut whole = bytes::BytesMut::new();
    chunk.encode_unsealed(MAX, &mut whole).unwrap();
    let mut head = bytes::BytesMut::new();
    let bulk = chunk.encode_unsealed_head(MAX, &mut head).unwrap();
    assert_eq!(bulk.len(), 5000);
    head.extend_from_slice(bulk);
    assert_eq!(head, whole);
    let ping = Frame::Ping(Ping { nonce: 1 });
    let mut head = bytes::BytesMut::new();
    assert!(
        ping.encode_unsealed_head(MAX, &mut head)
            .unwrap()
            .is_empty()
    );
    assert_eq!(Frame::decode_unsealed(head.freeze(), MAX), Ok(ping));
}

#[test]
fn an_unsealed_frame_round_trips_without_crc_and_may_not_nest() {
    let ping = Frame::Ping(Ping { nonce: 9 });
    let mut body = bytes::BytesMut::new();
    ping.encode_unsealed(MAX, &mut body).unwrap();
    assert_eq!(body.len() + CRC_LEN, ping.to_bytes(MAX).unwrap().len());
    assert_eq!(Frame::decode_unsealed(body.freeze(), MAX), Ok(ping));
    let nested = Frame::Sealed(Sealed {
        nonce: 1,
        ciphertext: bytes::Bytes::from_static(b"x"),
        layout: Layout::Interleaved,
    });
    assert!(
        nested
            .encode_unsealed(MAX, &mut bytes::BytesMut::new())
            .is_err()
    );
    let mut plain = bytes::BytesMut::new();
    plain.extend_from_slice(&nested.to_bytes(MAX).unwrap());
    plain.truncate(plain.len() - CRC_LEN);
    assert!(matches!(
        Frame::decode_unsealed(plain.freeze(), MAX),
        Err(DecodeError::Malformed {
            kind: Kind::Sealed,
            ..
        })
    ));
}

#[test]
fn the_unsealed_limit_leaves_room_for_nonce_tags_and_trailer() {
    for max in [MIN_MAX_FRAME_LEN, 4096, 65536, 1 << 20] {
        let inner = max_unsealed_len(max);
        let body = inner - CRC_LEN;
        let sealed = FRAME_OVERHEAD + 10 + sealed_ciphertext_len(body);
        assert!(sealed <= max, "{max}: sealed {sealed}");
        assert!(
            inner + 64 > max - 16 * sealed_segments(body),
            "{max}: wasteful {inner}"
        );
    }
}

#[test]
fn rejects_unknown_flags() {
    let mut wire = ping_bytes();
    wire[2] = 1;
    assert_eq!(
        Frame::decode(wire.into(), MAX),
        Err(DecodeError::UnknownFlags(1))
    );
}

#[test]
fn rejects_oversize_before_buffering() {
    // A header announcing 16 MiB: refused from the 6 header bytes alone.
    let head = [0x01, 0x13, 0x00, 0xff, 0xff, 0xff];
    let mut decoder = FrameDecoder::new(4096);
    let mut buf = BytesMut::from(&head[..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Err(DecodeError::TooLarge {
            len: 0xff_ffff + FRAME_OVERHEAD,
            max: 4096
        })
    );
    assert!(
        buf.capacity() < 4096,
        "nothing was reserved for the payload"
    );
}

#[test]
fn rejects_bad_crc_truncation_and_trailing_bytes() {
    let wire = ping_bytes();
    let mut bad = wire.clone();
    *bad.last_mut().unwrap() ^= 0xff;
    assert!(matches!(
        Frame::decode(bad.into(), MAX),
        Err(DecodeError::BadCrc { .. })
    ));
    assert!(matches!(
        Frame::decode(Bytes::copy_from_slice(&wire[..wire.len() - 1]), MAX),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        Frame::decode(Bytes::copy_from_slice(&wire[..3]), MAX),
        Err(DecodeError::Truncated { needed: 6, .. })
    ));
    let mut long = wire.clone();
    long.push(0);
    assert!(matches!(
        Frame::decode(long.into(), MAX),
        Err(DecodeError::Malformed { .. })
    ));
}

/// Builds a frame of `kind` around an arbitrary payload with a correct CRC.
fn raw_frame(kind: u8, payload: &[u8]) -> Bytes {
    let len = (payload.len() as u32).to_le_bytes();
    let mut wire = vec![1, kind, 0, len[0], len[1], len[2]];
    wire.extend_from_slice(payload);
    let crc = crc32c_of(&wire);
    wire.extend_from_slice(&crc.to_le_bytes());
    wire.into()
}

#[test]
fn rejects_malformed_payloads_with_valid_crc() {
    // Ping with a trailing byte after its nonce.
    assert!(matches!(
        Frame::decode(raw_frame(0x02, &[42, 0]), MAX),
        Err(DecodeError::Malformed {
            kind: Kind::Ping,
            ..
        })
    ));
    // Data with an unknown content type (variant 9).
    assert!(matches!(
        Frame::decode(raw_frame(0x13, &[1, 1, 9, 0]), MAX),
        Err(DecodeError::Malformed {
            kind: Kind::Data,
            ..
        })
    ));
    // Reject whose reason is not UTF-8.
    assert!(matches!(
        Frame::decode(raw_frame(0x12, &[1, 0xe9, 0x07, 2, 0xff, 0xfe]), MAX),
        Err(DecodeError::Malformed {
            kind: Kind::Reject,
            ..
        })
    ));
    // A file offer whose name is longer than the limit.
    let mut offer = vec![1, 7];
    offer.extend_from_slice(&[0xac, 0x02]); // varint 300
    offer.extend_from_slice(&[b'a'; 300]);
    offer.push(0);
    offer.extend_from_slice(&[0; 32]);
    assert!(matches!(
        Frame::decode(raw_frame(0x20, &offer), MAX),
        Err(DecodeError::Malformed {
            kind: Kind::FileOffer,
            ..
        })
    ));
}

#[test]
fn encode_checks_limits_and_leaves_buffer_untouched() {
    let mut dst = BytesMut::from(&b"keep"[..]);
    let big = Frame::Data(Data {
        channel: ChannelId(1),
        seq: 1,
        content_type: ContentType::Binary,
        exchange: Exchange::OneWay,
        payload: Bytes::from(vec![0; 5000]),
    });
    assert!(matches!(
        big.encode(4096, &mut dst),
        Err(EncodeError::TooLarge { .. })
    ));
    let long_name = Frame::FileOffer(FileOffer {
        channel: ChannelId(1),
        transfer: TransferId(1),
        name: "x".repeat(MAX_FILE_NAME_LEN + 1),
        size: 0,
        modified: 0,
    });
    assert_eq!(
        long_name.encode(MAX, &mut dst),
        Err(EncodeError::FieldTooLong {
            field: "name",
            len: MAX_FILE_NAME_LEN + 1,
            max: MAX_FILE_NAME_LEN
        })
    );
    assert_eq!(&dst[..], b"keep");
}

#[test]
fn a_message_of_the_maximum_size_fits_and_one_more_byte_does_not() {
    let limits = Limits::new(4096);
    let data = |len| {
        Frame::Data(Data {
            channel: ChannelId(u32::MAX),
            seq: u64::MAX,
            content_type: ContentType::Binary,
            exchange: Exchange::Request(u32::MAX),
            payload: Bytes::from(vec![7; len]),
        })
    };
    let fits = data(limits.max_message_len())
        .to_bytes(limits.max_frame_len)
        .unwrap();
    assert!(fits.len() <= limits.max_frame_len);
    for max in [
        MIN_MAX_FRAME_LEN,
        4096,
        DEFAULT_MAX_FRAME_LEN,
        MAX_FRAME_LEN,
    ] {
        let limits = Limits::new(max);
        assert_eq!(
            limits.max_message_len(),
            max - FRAME_OVERHEAD - DATA_HEADER_MAX_LEN,
            "limit {max}"
        );
        assert!(
            data(limits.max_message_len())
                .to_bytes(limits.max_frame_len)
                .is_ok()
        );
        assert!(
            matches!(
                data(limits.max_message_len() + 1).to_bytes(limits.max_frame_len),
                Err(EncodeError::TooLarge { .. })
            ),
            "one byte more than the maximum message, at limit {max}"
        );
    }
}

#[test]
fn a_full_last_chunk_with_its_digest_fits_the_frame_limit() {
    for max in [MIN_MAX_FRAME_LEN, 4096, MAX_FRAME_LEN] {
        let limits = Limits::new(max);
        let chunk = Frame::FileChunk(FileChunk {
            channel: ChannelId(u32::MAX),
            transfer: TransferId(u32::MAX),
            offset: u64::MAX,
            data: Bytes::from(vec![1; limits.max_chunk_len()]),
            digest: Some([0xff; 32]),
        });
        let wire = chunk.to_bytes(limits.max_frame_len).unwrap();
        assert!(wire.len() <= limits.max_frame_len);
        assert_eq!(Frame::decode(wire, limits.max_frame_len).unwrap(), chunk);
    }
}

#[test]
fn bulk_payload_is_a_slice_of_the_received_buffer() {
    let frame = Frame::FileChunk(FileChunk {
        channel: ChannelId(1),
        transfer: TransferId(2),
        offset: 1 << 40,
        data: Bytes::from(vec![9; 1000]),
        digest: None,
    });
    let wire = frame.to_bytes(MAX).unwrap();
    let range = wire.as_ptr_range();
    let Frame::FileChunk(chunk) = Frame::decode(wire.clone(), MAX).unwrap() else {
        panic!("kind changed");
    };
    assert!(
        range.contains(&chunk.data.as_ptr()),
        "decoded without copying"
    );
    // Message payloads too, and from a sealed frame's opened body alike.
    let message = Frame::Data(Data {
        channel: ChannelId(1),
        seq: 7,
        content_type: ContentType::Binary,
        exchange: Exchange::OneWay,
        payload: Bytes::from(vec![5; 1000]),
    });
    let wire = message.to_bytes(MAX).unwrap();
    let range = wire.as_ptr_range();
    let Frame::Data(data) = Frame::decode(wire.clone(), MAX).unwrap() else {
        panic!("kind changed");
    };
    assert!(
        range.contains(&data.payload.as_ptr()),
        "a message payload is not copied"
    );
    let mut body = BytesMut::new();
    message.encode_unsealed(MAX, &mut body).unwrap();
    let body = body.freeze();
    let range = body.as_ptr_range();
    let Frame::Data(data) = Frame::decode_unsealed(body.clone(), MAX).unwrap() else {
        panic!("kind changed");
    };
    assert!(
        range.contains(&data.payload.as_ptr()),
        "nor one opened from a sealed frame"
    );
}

#[test]
fn codes_keep_the_seed_values() {
    assert_eq!(Code::OK.as_u16(), 0);
    assert_eq!(Code::TIMEOUT.as_u16(), 204);
    assert_eq!(Code::OTHERS.as_u16(), 1000);
    assert_eq!(Code::APP_UNINSTALLED.as_u16(), 1001);
    assert_eq!(Code::APP_NOT_CONNECTED.as_u16(), 1002);
    assert_eq!(Code::CONNECTION_LOST.as_u16(), 1006);
    assert_eq!(Code::SIGNATURE_MISMATCH.as_u16(), 1007);
    assert_eq!(Code(4321).to_string(), "4321");
}
