//! Arbitrary packets through the BLE packet decoder and reassembler.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    transport_ble::packet::fuzz_reassembly(data);
});
