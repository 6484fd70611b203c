//! Copy #4 of the benchmark sink (`bench/counter`), for the fan-out run:
//! same code, its own plugin name and config key (`[bench_counter_4]`).

include!("../../../src/sink.rs");

bench_sink!(BenchCounter4, "bench_counter_4.enabled");
