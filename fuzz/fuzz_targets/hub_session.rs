//! A phone session serving three trusted watches by turns: connects (vetted beside the
//! current link), cuts, restarts, opens, sends both ways, re-registrations, detaches,
//! cancels and time jumps, in any order. Checks the walls between devices and apps.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    interconnect_core::fuzzing::hub_session(data);
});
