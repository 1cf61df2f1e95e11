//! Encode + decode throughput of frames at message and file-chunk sizes, against
//! tokio-util's `LengthDelimitedCodec` and a plain memcpy of the same payload in the same
//! run. After criterion's own report it prints each figure as a ratio of memcpy.
//!
//! `cargo bench -p interconnect-benches --bench codec`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput};
use interconnect_benches::ratios::print_ratios;
use interconnect_proto::{ChannelId, Frame, FrameDecoder, TransferId};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

const SIZES: [(usize, &str); 4] = [(16, "16B"), (256, "256B"), (4096, "4KiB"), (65536, "64KiB")];
const MAX_FRAME: usize = 1 << 20;

fn chunk(payload: &Bytes) -> Frame {
    Frame::FileChunk(interconnect_proto::FileChunk {
        channel: ChannelId(1),
        transfer: TransferId(1),
        offset: 1 << 20,
        data: payload.clone(),
        digest: None,
    })
}

fn bench_codec(c: &mut Criterion) {
    for (size, label) in SIZES {
        let payload = Bytes::from((0..size).map(|i| i as u8).collect::<Vec<u8>>());
        let mut group = c.benchmark_group(format!("codec/{label}"));
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_function("memcpy", |b| {
            let mut dst = vec![0u8; size];
            b.iter(|| {
                dst.copy_from_slice(black_box(&payload));
                black_box(&dst);
            })
        });

        group.bench_function("interconnect", |b| {
            let frame = chunk(&payload);
            let mut decoder = FrameDecoder::new(MAX_FRAME);
            let mut buf = BytesMut::with_capacity(2 * size + 64);
            b.iter(|| {
                black_box(&frame)
                    .encode(MAX_FRAME, &mut buf)
                    .expect("encode");
                let decoded = decoder
                    .decode(&mut buf)
                    .expect("decode")
                    .expect("whole frame");
                black_box(decoded);
            })
        });

        group.bench_function("length_delimited", |b| {
            let mut codec = LengthDelimitedCodec::builder()
                .max_frame_length(MAX_FRAME)
                .new_codec();
            let mut buf = BytesMut::with_capacity(2 * size + 64);
            b.iter(|| {
                codec
                    .encode(black_box(payload.clone()), &mut buf)
                    .expect("encode");
                let decoded = codec
                    .decode(&mut buf)
                    .expect("decode")
                    .expect("whole frame");
                black_box(decoded);
            })
        });
        group.finish();
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_codec(&mut criterion);
    criterion.final_summary();
    let groups: Vec<String> = SIZES.iter().map(|(_, l)| format!("codec/{l}")).collect();
    print_ratios(&groups, "memcpy", &["interconnect", "length_delimited"]);
}
