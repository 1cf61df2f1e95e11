//! Attacker frames (raw, or well-formed handshake and sealed frames) against a secure
//! session, before and after a genuine handshake.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    interconnect_core::fuzzing::handshake(data);
});
