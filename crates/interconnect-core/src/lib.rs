//! Session and channel state machines of interconnect (sans-IO), and the tokio driver
//! that runs them over a transport.
//!
//! Not implemented yet: this crate is filled by the core issue. It exports nothing.
