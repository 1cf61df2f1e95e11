//! Arbitrary frames: encode, decode, compare.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    interconnect_proto::fuzzing::message_roundtrip(data);
});
