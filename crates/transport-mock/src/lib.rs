//! An in-memory link pair with seeded, reproducible faults, for tests and benchmarks.
//!
//! Not implemented yet: this crate is filled by the core issue. It exports nothing.
