//! TCP transport for interconnect: a dialer (watch) and a listener (phone).
//!
//! Not implemented yet: this crate is filled by the TCP issue. It exports nothing.
