//! Attacker frames against a plaintext session after a genuine Hello, an open channel
//! and a file offer: the channel, ack and file handlers, which a Noise victim never lets
//! a forged frame reach.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    interconnect_core::fuzzing::plaintext_session(data);
});
