//! `fedmsg-bench-counter`: the sink plugin of the benchmarks (`bench/`).
//!
//! The plugin code lives in `sink.rs`, shared with the three fan-out copies
//! (`bench/counter/fanout/*`), which differ only by crate name and config
//! key: the hub refuses two libraries providing the same plugin name.

include!("sink.rs");

bench_sink!(BenchCounter, "bench_counter.enabled");
