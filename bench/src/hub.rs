//! Starting, watching and stopping the hub under test: ours (with the
//! `fedmsg-bench-counter` sink plugins) or the Python fedmsg-hub (with
//! `shared/pyfedmsg`'s counter consumer, or our Python sinks in
//! `bench/py`), each in a sandbox directory of its own.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Which hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubKind {
    /// `fedmsg-hub` from this workspace.
    Ours,
    /// The Python fedmsg 1.1.7 `fedmsg-hub` in `$VENV`.
    Python,
}

impl HubKind {
    /// Short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            HubKind::Ours => "ours",
            HubKind::Python => "python",
        }
    }
}

/// Where the programs and fixtures are.
#[derive(Debug, Clone)]
pub struct Tools {
    /// Directory of the release build (`fedmsg-hub`, the sink `.so` files).
    pub build_dir: PathBuf,
    /// `shared/pyfedmsg` (PKI, config, counter consumer).
    pub pyfedmsg: PathBuf,
    /// The Python venv with fedmsg 1.1.7.
    pub venv: PathBuf,
    /// `bench/py` (our Python sinks).
    pub py_sinks: PathBuf,
}

/// What the hub must do in one run.
#[derive(Debug, Clone, Copy)]
pub struct HubSpec {
    /// Verify signatures.
    pub validate: bool,
    /// Number of sink plugins / consumers (1 or the fan-out width).
    pub sinks: usize,
    /// Sinks record the receive time of every message.
    pub latency: bool,
    /// `high_water_mark` of our hub (the Python hub ignores it: moksha
    /// always uses 0, unlimited).
    pub high_water_mark: u64,
    /// `plugin_queue_capacity` of our hub (the Python hub's consumer queues
    /// are unbounded).
    pub queue_capacity: usize,
}

/// The files one sink writes.
#[derive(Debug, Clone)]
pub struct SinkFiles {
    /// pyfedmsg counter JSON.
    pub counter: PathBuf,
    /// `<msg_id> <unix ns>` lines (latency runs).
    pub received: Option<PathBuf>,
}

/// A sink's counter file.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counter {
    /// Messages consumed.
    pub count: u64,
    /// Unix time of the first one.
    pub first_ts: Option<f64>,
    /// Unix time of the latest one.
    pub last_ts: Option<f64>,
}

impl Counter {
    /// Reads a counter file; `None` while it does not exist (or is being
    /// replaced).
    pub fn read(path: &Path) -> Option<Counter> {
        let value: Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        Some(Counter {
            count: value.get("count")?.as_u64()?,
            first_ts: value.get("first_ts").and_then(Value::as_f64),
            last_ts: value.get("last_ts").and_then(Value::as_f64),
        })
    }
}

/// A hub child process; killed on drop.
pub struct RunningHub {
    kind: HubKind,
    child: Option<Child>,
    /// The sinks' output files.
    pub sinks: Vec<SinkFiles>,
    /// The hub's stdout + stderr.
    pub log: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

/// Names of our sink plugin crates; the first `n` are used.
const OUR_SINKS: [(&str, &str); 4] = [
    ("fedmsg_bench_counter", "bench_counter"),
    ("fedmsg_bench_counter_2", "bench_counter_2"),
    ("fedmsg_bench_counter_3", "bench_counter_3"),
    ("fedmsg_bench_counter_4", "bench_counter_4"),
];

/// The fan-out width both hubs support.
pub const MAX_SINKS: usize = OUR_SINKS.len();

impl RunningHub {
    /// Starts a hub of `kind` in `sandbox`, subscribed to `endpoint`.
    pub fn start(
        kind: HubKind,
        tools: &Tools,
        spec: HubSpec,
        sandbox: &Path,
        endpoint: &str,
    ) -> Result<RunningHub> {
        if spec.sinks == 0 || spec.sinks > MAX_SINKS {
            bail!("between 1 and {MAX_SINKS} sinks are supported");
        }
        let sinks: Vec<SinkFiles> = (1..=spec.sinks)
            .map(|n| SinkFiles {
                counter: sandbox.join(format!("sink-{n}.json")),
                received: spec.latency.then(|| sandbox.join(format!("recv-{n}.txt"))),
            })
            .collect();
        let mut command = match kind {
            HubKind::Ours => our_command(tools, spec, sandbox, endpoint, &sinks)?,
            HubKind::Python => python_command(tools, spec, sandbox, endpoint, &sinks)?,
        };
        let log = sandbox.join("hub.log");
        let description = describe(&command);
        let log_file = fs::File::create(&log)?;
        command
            .current_dir(sandbox)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            // Own process group: a Ctrl-C in the terminal reaches only the
            // driver, which then stops the hub in order.
            .process_group(0);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches
        // no memory of the parent; it makes the hub die with the driver even
        // if the driver is killed without unwinding.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {description}"))?;
        Ok(RunningHub {
            kind,
            child: Some(child),
            sinks,
            log,
            command: description,
        })
    }

    /// The hub's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// An error (with the end of the log) if the hub has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "the {} hub exited early ({status}); log tail:\n{}",
                    self.kind.label(),
                    self.log_tail()
                );
            }
            return Ok(());
        }
        bail!("the {} hub is not running", self.kind.label())
    }

    /// True once every sink has written its counter file.
    pub fn sinks_ready(&self) -> bool {
        self.sinks.iter().all(|s| s.counter.exists())
    }

    /// Every sink's current counter (`None` for a missing file).
    pub fn counters(&self) -> Vec<Option<Counter>> {
        self.sinks
            .iter()
            .map(|s| Counter::read(&s.counter))
            .collect()
    }

    /// The last lines of the hub's log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stops the hub the way it expects (ours: SIGTERM, which drains and
    /// calls the plugins' shutdown hooks; Python: SIGINT, then SIGTERM,
    /// because Twisted notices SIGINT only at its next wake-up), escalating
    /// to SIGKILL. Bounded.
    pub fn stop(&mut self) -> Result<()> {
        let steps: &[(i32, u64)] = match self.kind {
            HubKind::Ours => &[(libc::SIGTERM, 40), (libc::SIGKILL, 5)],
            HubKind::Python => &[(libc::SIGINT, 3), (libc::SIGTERM, 5), (libc::SIGKILL, 5)],
        };
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        for &(signal, wait_s) in steps {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            let pid = i32::try_from(child.id()).context("pid out of range")?;
            // SAFETY: kill(2) on our own child, which has not been reaped.
            unsafe { libc::kill(pid, signal) };
            let deadline = Instant::now() + Duration::from_secs(wait_s);
            while Instant::now() < deadline {
                if child.try_wait()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        bail!("the {} hub did not exit", self.kind.label())
    }
}

impl Drop for RunningHub {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn describe(command: &Command) -> String {
    let mut parts = vec![command.get_program().to_string_lossy().into_owned()];
    parts.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

fn toml_string(text: &str) -> String {
    // A JSON string is a valid TOML basic string (same escapes).
    Value::String(text.to_owned()).to_string()
}

fn path_string(path: &Path) -> String {
    toml_string(&path.display().to_string())
}

/// Config and plugin directory of our hub, and its command.
fn our_command(
    tools: &Tools,
    spec: HubSpec,
    sandbox: &Path,
    endpoint: &str,
    sinks: &[SinkFiles],
) -> Result<Command> {
    let config_dir = sandbox.join("fedmsg.d");
    let plugin_dir = sandbox.join("plugins");
    let state_dir = sandbox.join("state");
    for dir in [&config_dir, &plugin_dir, &state_dir] {
        fs::create_dir_all(dir)?;
    }
    let pki = tools.pyfedmsg.join("pki");
    let mut toml = format!(
        "# Generated by fedmsg-bench.\n\
         validate_signatures = {validate}\n\
         plugin_dir = {plugin_dir}\n\
         state_dir = {state_dir}\n\
         shutdown_timeout = 30.0\n\
         high_water_mark = {hwm}\n\
         plugin_queue_capacity = {queue}\n\
         # The Python hub has no duplicate filter; ours would spend a third of\n\
         # each plugin worker's time on it (three SipHashes and an allocation\n\
         # per message).\n\
         dedup_window = 0\n\
         ca_cert_location = {ca}\n\
         crl_location = {crl}\n\
         crypto_validate_backends = [\"x509\"]\n\
         routing_nitpicky = false\n\
         \n\
         [routing_policy]\n\
         \"org.fedoraproject.dev.bench.msg\" = [\"shell-app01\"]\n\
         \n\
         [endpoints]\n\
         \"bench.publisher\" = [{endpoint}]\n",
        validate = spec.validate,
        hwm = spec.high_water_mark,
        queue = spec.queue_capacity,
        plugin_dir = path_string(&plugin_dir),
        state_dir = path_string(&state_dir),
        ca = path_string(&pki.join("ca.crt")),
        crl = path_string(&pki.join("crl.pem")),
        endpoint = toml_string(endpoint),
    );
    for ((library, section), files) in OUR_SINKS.iter().zip(sinks) {
        let so = format!("lib{library}.so");
        let built = tools.build_dir.join(&so);
        fs::copy(&built, plugin_dir.join(&so)).with_context(|| {
            format!(
                "cannot copy {} (build it with bench/run.sh)",
                built.display()
            )
        })?;
        toml.push_str(&format!(
            "\n[{section}]\nenabled = true\noutput = {}\n",
            path_string(&files.counter)
        ));
        if let Some(received) = &files.received {
            toml.push_str(&format!("latency_output = {}\n", path_string(received)));
        }
    }
    fs::write(config_dir.join("bench.toml"), toml)?;
    let mut command = Command::new(tools.build_dir.join("fedmsg-hub"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FEDMSG_") {
            command.env_remove(key);
        }
    }
    command
        .arg("--config-dir")
        .arg(&config_dir)
        .env("RUST_LOG", "info");
    Ok(command)
}

/// Config directory of the Python hub, and its command.
///
/// fedmsg reads `./fedmsg.d/*.py`; the sandbox's holds our `base.py`
/// (`shared/pyfedmsg/fedmsg.d/base.py`'s settings with the publisher's
/// endpoint) next to links to the shared `ssl.py`, `counter.py` and
/// `logging.py`, which take their paths from `PYFEDMSG_HOME`.
fn python_command(
    tools: &Tools,
    spec: HubSpec,
    sandbox: &Path,
    endpoint: &str,
    sinks: &[SinkFiles],
) -> Result<Command> {
    let config_dir = sandbox.join("fedmsg.d");
    fs::create_dir_all(&config_dir)?;
    let base = format!(
        "# Generated by fedmsg-bench: shared/pyfedmsg/fedmsg.d/base.py with the\n\
         # benchmark publisher as the only endpoint.\n\
         config = dict(\n\
         \x20   topic_prefix=\"org.fedoraproject\",\n\
         \x20   environment=\"dev\",\n\
         \x20   endpoints={{\"bench.publisher\": [{endpoint}]}},\n\
         \x20   high_water_mark=0,\n\
         \x20   io_threads=1,\n\
         \x20   post_init_sleep=0.5,\n\
         \x20   zmq_linger=1000,\n\
         \x20   zmq_enabled=True,\n\
         \x20   zmq_strict=False,\n\
         \x20   zmq_reconnect_ivl=100,\n\
         \x20   zmq_reconnect_ivl_max=1000,\n\
         \x20   zmq_tcp_keepalive=1,\n\
         \x20   zmq_tcp_keepalive_cnt=3,\n\
         \x20   zmq_tcp_keepalive_idle=60,\n\
         \x20   zmq_tcp_keepalive_intvl=5,\n\
         )\n",
        endpoint = Value::String(endpoint.to_owned()),
    );
    fs::write(config_dir.join("base.py"), base)?;
    for shared in ["ssl.py", "counter.py", "logging.py"] {
        let target = tools.pyfedmsg.join("fedmsg.d").join(shared);
        std::os::unix::fs::symlink(&target, config_dir.join(shared))
            .with_context(|| format!("cannot link {}", target.display()))?;
    }
    // The reference counter consumer for plain throughput runs; our sinks
    // when receive times are needed or for the fan-out.
    let consumers = if spec.sinks == 1 && !spec.latency {
        "pyfedmsg_counter:CounterConsumer".to_owned()
    } else {
        (1..=spec.sinks)
            .map(|n| format!("fedmsg_bench_sink:Sink{n}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let flag = |on: bool| if on { "1" } else { "0" };
    let venv_bin = tools.venv.join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![venv_bin.clone()];
    paths.extend(std::env::split_paths(&path));
    let mut command = Command::new(venv_bin.join("fedmsg-hub"));
    command
        .arg("--with-consumers")
        .arg(consumers)
        .env("PATH", std::env::join_paths(paths)?)
        .env("PYFEDMSG_HOME", &tools.pyfedmsg)
        .env("PYFEDMSG_SIGN", flag(spec.validate))
        .env("PYFEDMSG_VALIDATE", flag(spec.validate))
        .env("COUNTER_OUTPUT", &sinks[0].counter)
        .env("BENCH_SINK_DIR", sandbox)
        .env("BENCH_SINK_LATENCY", flag(spec.latency))
        .env("PYTHONPATH", &tools.py_sinks)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    Ok(command)
}

/// Reads a sink's `<msg_id> <unix ns>` file.
pub fn read_received(path: &Path) -> Result<Vec<(String, u64)>> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (id, ns) = line.split_once(' ')?;
            Some((id.to_owned(), ns.trim().parse().ok()?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.json");
        assert_eq!(Counter::read(&path), None);
        fs::write(&path, r#"{"count": 0, "first_ts": null, "last_ts": null}"#).expect("write");
        assert_eq!(Counter::read(&path), Some(Counter::default()));
        fs::write(
            &path,
            r#"{"count": 3, "first_ts": 1.5, "last_ts": 2.5, "pid": 1}"#,
        )
        .expect("write");
        assert_eq!(
            Counter::read(&path),
            Some(Counter {
                count: 3,
                first_ts: Some(1.5),
                last_ts: Some(2.5)
            })
        );
    }

    #[test]
    fn received_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("r.txt");
        fs::write(&path, "a 10\nb 20\ngarbage\n").expect("write");
        assert_eq!(
            read_received(&path).expect("read"),
            vec![("a".to_owned(), 10), ("b".to_owned(), 20)]
        );
    }
}
