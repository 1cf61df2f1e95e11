//! Encodes a short watch↔phone exchange into real frames, prints each frame's bytes, then
//! feeds the whole stream back through the incremental decoder in 5-byte pieces and
//! checks that the same frames come out.
//!
//! `cargo run -p interconnect-proto --example frames`

use bytes::{Bytes, BytesMut};
use interconnect_proto::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limits = Limits::default();
    let channel = ChannelId(1);
    let exchange = [
        Frame::Hello(Hello {
            min_version: *PROTOCOL_VERSIONS.start(),
            max_version: *PROTOCOL_VERSIONS.end(),
            role: Role::Watch,
            device_id: DeviceId(*b"watch-0000000001"),
            max_frame_len: limits.max_frame_len as u32,
            capabilities: Capabilities::ALL,
            resume_token: 1,
        }),
        Frame::Open(Open {
            channel,
            package: "com.example.fitness".into(),
            signature: None,
            resume: false,
            received_seq: 0,
        }),
        Frame::Accept(Accept {
            channel,
            app_version: 12,
            received_seq: 0,
            resumed: false,
        }),
        Frame::Data(Data {
            channel,
            seq: 1,
            content_type: ContentType::Json,
            exchange: Exchange::OneWay,
            payload: Bytes::from_static(br#"{"steps":8042}"#),
        }),
        Frame::Ack(Ack { channel, seq: 1 }),
        Frame::Close(Close {
            channel,
            code: Code::OTHERS,
            reason: "done".into(),
        }),
    ];

    let mut stream = BytesMut::new();
    for frame in &exchange {
        let start = stream.len();
        frame.encode(limits.max_frame_len, &mut stream)?;
        let bytes = &stream[start..];
        println!(
            "{:<7} {:>3} B  {}",
            format!("{:?}", frame.kind()),
            bytes.len(),
            hex(bytes)
        );
    }

    let stream = stream.freeze();
    let mut decoder = FrameDecoder::new(limits.max_frame_len);
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for piece in stream.chunks(5) {
        buf.extend_from_slice(piece);
        while let Some(frame) = decoder.decode(&mut buf)? {
            decoded.push(frame);
        }
    }
    if decoded != exchange {
        return Err("decoded frames differ from the encoded ones".into());
    }
    println!(
        "decoded {} frames ({} bytes) from 5-byte pieces: identical",
        decoded.len(),
        stream.len()
    );

    let mut corrupted = stream.slice(..stream.len()).to_vec();
    corrupted[20] ^= 0x01;
    let mut buf = BytesMut::from(&corrupted[..]);
    let outcome = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    println!("one flipped bit: {outcome:?}");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
