//! Bluetooth LE transport for interconnect.
//!
//! Not implemented yet: this crate is filled by the BLE issue. It exports nothing.
