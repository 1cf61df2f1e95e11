//! Criterion benchmarks of interconnect; see `benches/`. This library target is empty.
