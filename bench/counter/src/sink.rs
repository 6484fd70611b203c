// The benchmark sink, shared by `fedmsg-bench-counter` and its fan-out
// copies through `include!` (each crate is one plugin, and the hub identifies
// plugins by crate name, so four sinks need four crates).
//
// ```toml
// [bench_counter]
// enabled = true
// output = "/tmp/run/counter.json"       # required: pyfedmsg counter JSON
// latency_output = "/tmp/run/recv.txt"   # optional: "<msg_id> <unix ns>" per message
// flush_s = 0.25                         # how often `output` is rewritten
// ```
//
// `output` has the format of `shared/pyfedmsg/counter_consumer` (`count`,
// `first_ts`, `last_ts`, `elapsed`, `rate`, `invalid_seen`, `pid`,
// `written_at`), rewritten atomically every `flush_s` while it changes, once
// at start (so a driver knows the plugin is up) and at shutdown; that is what
// lets `bench_hub.py` (`HUB_CMD=...`) drive this hub too.
//
// `consume` costs one clock read and three relaxed atomic stores, so the
// sink measures the hub, not itself. Receive times are only kept when
// `latency_output` is set (the paced latency runs), and written at shutdown.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fedmsg_plugin_api::{
    export_plugin, serde_json, ConsumeError, ConsumerPlugin, HubContext, Message, PluginConfig,
    PluginError,
};

/// Counters written by `consume` and read by the flusher thread.
#[derive(Debug, Default)]
struct Counters {
    count: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

impl Counters {
    /// Records one message received at `now_ns`. `last_ns` is stored before
    /// `count` is published (release), so a reader that sees count N also
    /// sees a `last_ns` at least as late as message N's.
    fn record(&self, now_ns: u64) {
        if self.count.load(Ordering::Relaxed) == 0 {
            self.first_ns.store(now_ns, Ordering::Relaxed);
        }
        self.last_ns.store(now_ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Release);
    }

    /// The pyfedmsg counter JSON for the current values.
    fn snapshot_json(&self, written_at_ns: u64) -> String {
        let count = self.count.load(Ordering::Acquire);
        let seconds = |ns: u64| ns as f64 / 1e9;
        let (first, last) = if count == 0 {
            (None, None)
        } else {
            (
                Some(seconds(self.first_ns.load(Ordering::Relaxed))),
                Some(seconds(self.last_ns.load(Ordering::Relaxed))),
            )
        };
        let elapsed = match (first, last) {
            (Some(first), Some(last)) => last - first,
            _ => 0.0,
        };
        let rate = (elapsed > 0.0).then(|| (count - 1) as f64 / elapsed);
        serde_json::json!({
            "count": count,
            "first_ts": first,
            "last_ts": last,
            "elapsed": elapsed,
            "rate": rate,
            "invalid_seen": 0,
            "pid": std::process::id(),
            "written_at": seconds(written_at_ns),
        })
        .to_string()
    }
}

/// Nanoseconds since the Unix epoch (the clock Python's `time.time()` reads,
/// so a publisher in another process can be compared with it).
fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Writes `text` to `path` through a temporary file and a rename, so a
/// reader never sees a partial file.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The flusher thread and the flag that stops it.
struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    fn start(counters: Arc<Counters>, output: PathBuf, every: Duration) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("bench-sink-flush".into())
                // Keeps the thread's stack reservation small: it only formats
                // a few hundred bytes of JSON.
                .stack_size(64 * 1024)
                .spawn(move || flush_loop(&counters, &output, every, &stop))?
        };
        Ok(Flusher {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        let (flag, wake) = &*self.stop;
        if let Ok(mut stopped) = flag.lock() {
            *stopped = true;
        }
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn flush_loop(counters: &Counters, output: &Path, every: Duration, stop: &(Mutex<bool>, Condvar)) {
    let (flag, wake) = stop;
    // `Sink::new` wrote the file for count 0.
    let mut written = 0;
    let Ok(mut stopped) = flag.lock() else {
        return;
    };
    while !*stopped {
        let count = counters.count.load(Ordering::Acquire);
        if count != written {
            if let Err(error) = write_atomically(output, &counters.snapshot_json(unix_ns())) {
                fedmsg_plugin_api::tracing::warn!(%error, path = %output.display(), "cannot write the counter file");
            }
            written = count;
        }
        stopped = match wake.wait_timeout(stopped, every) {
            Ok((guard, _)) => guard,
            Err(_) => return,
        };
    }
}

/// The sink itself; each crate wraps it in its own plugin type.
pub struct Sink {
    counters: Arc<Counters>,
    output: PathBuf,
    latency_output: Option<PathBuf>,
    /// `(msg_id, receive time)` per message, only with `latency_output`.
    received: Vec<(String, u64)>,
    flusher: Flusher,
}

impl Sink {
    /// Reads the plugin's table and starts the flusher (which writes the
    /// counter file once right away).
    pub fn new(config: &PluginConfig) -> Result<Self, PluginError> {
        let output: PathBuf = config.require("output")?;
        let latency_output: Option<PathBuf> = config.get("latency_output")?;
        let flush_s: f64 = config.get_or("flush_s", 0.25)?;
        let every = Duration::try_from_secs_f64(flush_s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| PluginError::new(format!("flush_s must be > 0, got {flush_s}")))?;
        let counters = Arc::new(Counters::default());
        // Written before `new` returns, so the file's existence means the
        // plugin is up.
        write_atomically(&output, &counters.snapshot_json(unix_ns()))
            .map_err(|e| PluginError::context(format!("cannot write {}", output.display()), e))?;
        let flusher = Flusher::start(Arc::clone(&counters), output.clone(), every)
            .map_err(|e| PluginError::context("cannot start the flusher thread", e))?;
        let received = if latency_output.is_some() {
            Vec::with_capacity(65_536)
        } else {
            Vec::new()
        };
        Ok(Sink {
            counters,
            output,
            latency_output,
            received,
            flusher,
        })
    }

    /// Counts one message (and keeps its receive time when asked to).
    pub fn consume(&mut self, msg: &Message<'_>) -> Result<(), ConsumeError> {
        let now = unix_ns();
        self.counters.record(now);
        if self.latency_output.is_some() {
            self.received
                .push((msg.msg_id().unwrap_or_default().to_owned(), now));
        }
        Ok(())
    }

    /// Stops the flusher, writes the final counter file and the receive times.
    pub fn shutdown(&mut self) {
        self.flusher.stop();
        if let Err(error) = write_atomically(&self.output, &self.counters.snapshot_json(unix_ns()))
        {
            fedmsg_plugin_api::tracing::error!(%error, path = %self.output.display(), "cannot write the counter file");
        }
        if let Some(path) = &self.latency_output {
            let mut text = Vec::with_capacity(self.received.len() * 56);
            for (msg_id, ns) in &self.received {
                let _ = writeln!(text, "{msg_id} {ns}");
            }
            let written = std::str::from_utf8(&text)
                .map_err(std::io::Error::other)
                .and_then(|text| write_atomically(path, text));
            if let Err(error) = written {
                fedmsg_plugin_api::tracing::error!(%error, path = %path.display(), "cannot write the receive times");
            }
        }
    }
}

/// Defines plugin type `$name` (config key `$key`) around a [`Sink`] and
/// exports it.
macro_rules! bench_sink {
    ($name:ident, $key:literal) => {
        /// The benchmark sink plugin of this crate.
        pub struct $name(Sink);

        impl ConsumerPlugin for $name {
            const CONFIG_KEY: &'static str = $key;

            fn topics(config: &PluginConfig) -> Result<Vec<String>, PluginError> {
                Ok(config
                    .get_string_list("topic")?
                    .unwrap_or_else(|| vec!["*".into()]))
            }

            fn new(config: &PluginConfig, _ctx: HubContext) -> Result<Self, PluginError> {
                Sink::new(config).map($name)
            }

            fn consume(&mut self, msg: &Message<'_>) -> Result<(), ConsumeError> {
                self.0.consume(msg)
            }

            fn shutdown(&mut self) {
                self.0.shutdown();
            }
        }

        export_plugin!($name);

        #[cfg(test)]
        mod tests {
            use super::*;

            fn config(dir: &Path, latency: bool) -> PluginConfig {
                let section = $key.rsplit_once('.').map_or("", |(table, _)| table);
                let mut table = serde_json::json!({
                    "output": dir.join("counter.json"),
                    "flush_s": 0.01,
                });
                if latency {
                    table["latency_output"] = serde_json::json!(dir.join("recv.txt"));
                }
                PluginConfig::new(serde_json::json!({ section: table }), section)
            }

            fn read_counter(dir: &Path) -> serde_json::Value {
                let text = std::fs::read_to_string(dir.join("counter.json")).expect("counter file");
                serde_json::from_str(&text).expect("counter JSON")
            }

            #[test]
            fn counts_and_writes_the_pyfedmsg_counter_format() {
                let dir = std::env::temp_dir().join(format!("bench-sink-{}-{}", std::process::id(), line!()));
                std::fs::create_dir_all(&dir).expect("tmp dir");
                let ctx = HubContext::detached("sink", &dir);
                let mut sink = <$name as ConsumerPlugin>::new(&config(&dir, false), ctx).expect("new");
                assert_eq!(read_counter(&dir)["count"], 0, "written once at start");
                for _ in 0..3 {
                    sink.consume(&Message::new("t", "{}").with_msg_id("m")).expect("consume");
                }
                sink.shutdown();
                let counter = read_counter(&dir);
                assert_eq!(counter["count"], 3);
                assert!(counter["first_ts"].as_f64().expect("first_ts") <= counter["last_ts"].as_f64().expect("last_ts"));
                assert_eq!(counter["pid"], std::process::id());
                assert!(!dir.join("recv.txt").exists());
                let _ = std::fs::remove_dir_all(&dir);
            }

            #[test]
            fn records_receive_times_when_asked() {
                let dir = std::env::temp_dir().join(format!("bench-sink-{}-{}", std::process::id(), line!()));
                std::fs::create_dir_all(&dir).expect("tmp dir");
                let ctx = HubContext::detached("sink", &dir);
                let mut sink = <$name as ConsumerPlugin>::new(&config(&dir, true), ctx).expect("new");
                sink.consume(&Message::new("t", "{}").with_msg_id("a")).expect("consume");
                sink.consume(&Message::new("t", "{}").with_msg_id("b")).expect("consume");
                sink.shutdown();
                let text = std::fs::read_to_string(dir.join("recv.txt")).expect("recv file");
                let ids: Vec<&str> = text.lines().filter_map(|l| l.split(' ').next()).collect();
                assert_eq!(ids, ["a", "b"]);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    };
}
