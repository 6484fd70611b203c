//! Copy #2 of the benchmark sink (`bench/counter`), for the fan-out run:
//! same code, its own plugin name and config key (`[bench_counter_2]`).

include!("../../../src/sink.rs");

bench_sink!(BenchCounter2, "bench_counter_2.enabled");
