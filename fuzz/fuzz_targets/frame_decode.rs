//! Raw bytes, cut into pieces, through the incremental frame decoder.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    interconnect_proto::fuzzing::frame_decode(data);
});
