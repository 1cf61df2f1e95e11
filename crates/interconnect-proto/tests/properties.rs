//! Property tests: round trips, no panics on any input, streaming in pieces, corruption.

use bytes::{Bytes, BytesMut};
use interconnect_proto::*;
use proptest::prelude::*;

const MAX: usize = DEFAULT_MAX_FRAME_LEN;

/// Strings of any characters up to `max` bytes, including ones of exactly `max`.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<char>(), 0..16),
        proptest::collection::vec(any::<char>(), 0..max),
    ]
    .prop_map(move |chars| {
        let mut s: String = chars.into_iter().collect();
        while s.len() > max {
            s.pop();
        }
        s
    })
    .boxed()
    .prop_union(
        (0..=max)
            .prop_map(move |n| "x".repeat(max - n.min(2)))
            .boxed(),
    )
}

/// Bulk bytes, small, medium, or up to the largest file chunk a frame of `MAX` carries.
fn payload() -> impl Strategy<Value = Bytes> {
    bulk(Limits::new(MAX).max_chunk_len())
}

/// Message bytes, up to the largest message.
fn message() -> impl Strategy<Value = Bytes> {
    bulk(Limits::new(MAX).max_message_len())
}

fn bulk(largest: usize) -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from),
        4 => proptest::collection::vec(any::<u8>(), 0..5000).prop_map(Bytes::from),
        1 => (largest - 16..=largest).prop_map(|n| Bytes::from(vec![0xA5; n])),
    ]
}

fn code() -> impl Strategy<Value = Code> {
    any::<u16>().prop_map(Code)
}

fn channel() -> impl Strategy<Value = ChannelId> {
    any::<u32>().prop_map(ChannelId)
}

fn transfer() -> impl Strategy<Value = TransferId> {
    any::<u32>().prop_map(TransferId)
}

fn exchange() -> impl Strategy<Value = Exchange> {
    prop_oneof![
        Just(Exchange::OneWay),
        any::<u32>().prop_map(Exchange::Request),
        any::<u32>().prop_map(Exchange::Reply),
    ]
}

fn content_type() -> impl Strategy<Value = ContentType> {
    prop_oneof![
        Just(ContentType::Json),
        Just(ContentType::Postcard),
        Just(ContentType::Binary)
    ]
}

/// Any valid frame.
fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (
            any::<u8>(),
            any::<u8>(),
            any::<bool>(),
            any::<[u8; 16]>(),
            MIN_MAX_FRAME_LEN as u32..u32::MAX,
            any::<u32>(),
            any::<u64>()
        )
            .prop_map(|(a, b, watch, id, max, caps, token)| Frame::Hello(Hello {
                min_version: a.min(b),
                max_version: a.max(b),
                role: if watch { Role::Watch } else { Role::Phone },
                device_id: DeviceId(id),
                max_frame_len: max,
                capabilities: Capabilities(caps),
                resume_token: token,
            })),
        any::<u64>().prop_map(|nonce| Frame::Ping(Ping { nonce })),
        any::<u64>().prop_map(|nonce| Frame::Pong(Pong { nonce })),
        (
            proptest::option::of(channel()),
            code(),
            text(MAX_REASON_LEN)
        )
            .prop_map(|(channel, code, message)| {
                Frame::Error(ErrorReport {
                    channel,
                    code,
                    message,
                })
            }),
        (
            channel(),
            text(MAX_PACKAGE_LEN),
            proptest::option::of(text(MAX_SIGNATURE_LEN)),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(
                |(channel, package, signature, resume, received_seq)| Frame::Open(Open {
                    channel,
                    package,
                    signature,
                    resume,
                    received_seq,
                })
            ),
        (channel(), any::<u32>(), any::<u64>(), any::<bool>()).prop_map(
            |(channel, app_version, received_seq, resumed)| {
                Frame::Accept(Accept {
                    channel,
                    app_version,
                    received_seq,
                    resumed,
                })
            }
        ),
        (channel(), code(), text(MAX_REASON_LEN)).prop_map(
            |(channel, code, reason)| Frame::Reject(Reject {
                channel,
                code,
                reason
            })
        ),
        (
            channel(),
            any::<u64>(),
            content_type(),
            exchange(),
            message()
        )
            .prop_map(|(channel, seq, content_type, exchange, payload)| {
                Frame::Data(Data {
                    channel,
                    seq,
                    content_type,
                    exchange,
                    payload,
                })
            }),
        (channel(), any::<u64>()).prop_map(|(channel, seq)| Frame::Ack(Ack { channel, seq })),
        (channel(), code(), text(MAX_REASON_LEN)).prop_map(|(channel, code, reason)| Frame::Close(
            Close {
                channel,
                code,
                reason
            }
        )),
        (
            channel(),
            transfer(),
            text(MAX_FILE_NAME_LEN),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(channel, transfer, name, size, modified)| {
                Frame::FileOffer(FileOffer {
                    channel,
                    transfer,
                    name,
                    size,
                    modified,
                })
            }),
        (channel(), transfer(), any::<u64>()).prop_map(|(channel, transfer, offset)| {
            Frame::FileAccept(FileAccept {
                channel,
                transfer,
                offset,
            })
        }),
        (
            channel(),
            transfer(),
            any::<u64>(),
            payload(),
            any::<Option<[u8; 32]>>()
        )
            .prop_map(|(channel, transfer, offset, data, digest)| {
                Frame::FileChunk(FileChunk {
                    channel,
                    transfer,
                    offset,
                    data,
                    digest,
                })
            }),
        (channel(), transfer(), any::<u64>()).prop_map(|(channel, transfer, offset)| {
            Frame::FileAck(FileAck {
                channel,
                transfer,
                offset,
            })
        }),
        (channel(), transfer()).prop_map(|(channel, transfer)| Frame::FileComplete(FileComplete {
            channel,
            transfer
        })),
        (channel(), transfer(), code(), text(MAX_REASON_LEN)).prop_map(
            |(channel, transfer, code, reason)| {
                Frame::FileCancel(FileCancel {
                    channel,
                    transfer,
                    code,
                    reason,
                })
            }
        ),
        (any::<u32>(), text(MAX_PACKAGE_LEN))
            .prop_map(|(request, package)| Frame::VersionQuery(VersionQuery { request, package })),
        (any::<u32>(), proptest::option::of(any::<u32>()))
            .prop_map(|(request, version)| Frame::VersionReply(VersionReply { request, version })),
        (
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u32>(),
            payload()
        )
            .prop_map(
                |(step, offered, suite, rekey_interval, message)| Frame::Handshake(Handshake {
                    step,
                    offered,
                    suite,
                    rekey_interval,
                    message,
                })
            ),
        (any::<u64>(), payload(), any::<bool>()).prop_map(|(nonce, ciphertext, last)| {
            Frame::Sealed(Sealed {
                nonce,
                ciphertext,
                layout: if last {
                    Layout::TagsLast
                } else {
                    Layout::Interleaved
                },
            })
        }),
    ]
}

/// Each length-limited field at its limit encodes and decodes; one byte more is refused.
#[test]
fn fields_at_their_limit_pass_and_one_byte_more_is_refused() {
    let at = |n: usize| "y".repeat(n);
    type Make = fn(String) -> Frame;
    let cases: [(&str, usize, Make); 6] = [
        ("error message", MAX_REASON_LEN, |t| {
            Frame::Error(ErrorReport {
                channel: None,
                code: Code(1),
                message: t,
            })
        }),
        ("open package", MAX_PACKAGE_LEN, |t| {
            Frame::Open(Open {
                channel: ChannelId(1),
                package: t,
                signature: None,
                resume: false,
                received_seq: 0,
            })
        }),
        ("open signature", MAX_SIGNATURE_LEN, |t| {
            Frame::Open(Open {
                channel: ChannelId(1),
                package: "p".into(),
                signature: Some(t),
                resume: false,
                received_seq: 0,
            })
        }),
        ("close reason", MAX_REASON_LEN, |t| {
            Frame::Close(Close {
                channel: ChannelId(1),
                code: Code(1),
                reason: t,
            })
        }),
        ("file name", MAX_FILE_NAME_LEN, |t| {
            Frame::FileOffer(FileOffer {
                channel: ChannelId(1),
                transfer: TransferId(1),
                name: t,
                size: 1,
                modified: 0,
            })
        }),
        ("version query package", MAX_PACKAGE_LEN, |t| {
            Frame::VersionQuery(VersionQuery {
                request: 1,
                package: t,
            })
        }),
    ];
    for (what, limit, make) in cases {
        let frame = make(at(limit));
        let wire = frame
            .to_bytes(MAX)
            .unwrap_or_else(|e| panic!("{what} at {limit}: {e}"));
        assert_eq!(Frame::decode(wire, MAX).unwrap(), frame, "{what}");
        assert!(
            matches!(
                make(at(limit + 1)).to_bytes(MAX),
                Err(EncodeError::FieldTooLong { .. })
            ),
            "{what}: one byte past {limit}"
        );
    }
    // The frame limit: the largest message fits, and the frame is exactly at the limit
    // or under it; one byte more is refused.
    let largest = Limits::new(MAX).max_message_len();
    let data = |n: usize| {
        Frame::Data(Data {
            channel: ChannelId(u32::MAX),
            seq: u64::MAX,
            content_type: ContentType::Binary,
            exchange: Exchange::Request(u32::MAX),
            payload: Bytes::from(vec![1; n]),
        })
    };
    assert!(data(largest).to_bytes(MAX).unwrap().len() <= MAX);
    assert!(matches!(
        data(largest + 1).to_bytes(MAX),
        Err(EncodeError::TooLarge { .. })
    ));
}

proptest! {
    #[test]
    fn every_frame_round_trips(frame in frame()) {
        let wire = frame.to_bytes(MAX).unwrap();
        prop_assert_eq!(Frame::decode(wire, MAX).unwrap(), frame);
    }

    #[test]
    fn a_frame_decodes_alike_from_a_buffer_of_its_own(frame in frame()) {
        let wire = frame.to_bytes(MAX).unwrap();
        let owned = Frame::decode_owned(BytesMut::from(&wire[..]), MAX).unwrap();
        prop_assert_eq!(Frame::from(owned), frame);
    }

    #[test]
    fn any_bytes_decode_alike_from_a_buffer_of_their_own(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let shared = Frame::decode(Bytes::from(bytes.clone()), MAX);
        let owned = Frame::decode_owned(BytesMut::from(&bytes[..]), MAX).map(Frame::from);
        prop_assert_eq!(owned, shared);
    }

    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Frame::decode(Bytes::from(bytes.clone()), MAX);
        let mut decoder = FrameDecoder::new(MAX);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decoder.decode(&mut buf) {}
    }

    #[test]
    fn any_payload_behind_a_valid_header_and_crc_fails_cleanly(
        kind in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let len = (payload.len() as u32).to_le_bytes();
        let mut wire = vec![FORMAT_VERSION, kind, 0, len[0], len[1], len[2]];
        wire.extend_from_slice(&payload);
        let crc = crc32c_ref(&wire);
        wire.extend_from_slice(&crc.to_le_bytes());
        if let Ok(frame) = Frame::decode(Bytes::from(wire), MAX) {
            // Whatever decodes must re-encode to a frame that decodes to the same value.
            let again = frame.to_bytes(MAX).unwrap();
            prop_assert_eq!(Frame::decode(again, MAX).unwrap(), frame);
        }
    }

    #[test]
    fn a_stream_cut_anywhere_yields_the_same_frames(
        frames in proptest::collection::vec(frame(), 1..20),
        cuts in proptest::collection::vec(1usize..300, 1..50),
    ) {
        let mut stream = BytesMut::new();
        for frame in &frames {
            frame.encode(MAX, &mut stream).unwrap();
        }
        let stream = stream.freeze();
        let mut decoder = FrameDecoder::new(MAX);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut cut = cuts.iter().cycle();
        while at < stream.len() {
            let end = (at + cut.next().unwrap()).min(stream.len());
            buf.extend_from_slice(&stream[at..end]);
            at = end;
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                out.push(frame);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, frames);
    }

    #[test]
    fn a_corrupted_byte_anywhere_is_detected(frame in frame(), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut wire = frame.to_bytes(MAX).unwrap().to_vec();
        let i = at.index(wire.len());
        wire[i] ^= flip;
        // Any error is fine (the header checks may catch it first); a frame is not.
        prop_assert!(Frame::decode(Bytes::from(wire), MAX).is_err());
    }
}

fn crc32c_ref(data: &[u8]) -> u32 {
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
