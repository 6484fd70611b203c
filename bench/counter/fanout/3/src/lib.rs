//! Copy #3 of the benchmark sink (`bench/counter`), for the fan-out run:
//! same code, its own plugin name and config key (`[bench_counter_3]`).

include!("../../../src/sink.rs");

bench_sink!(BenchCounter3, "bench_counter_3.enabled");
