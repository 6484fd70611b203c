//! Harness for the end-to-end tests: locating the built binaries and plugin
//! libraries, a zmq publisher that knows when the hub has subscribed, and a
//! hub child process that is always stopped.
//!
//! Every wait here is bounded; every process started is killed on drop.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod browser;
pub mod bus;
pub mod ircd;
pub mod pg;

/// How long any single wait may take before a test fails. Generous: tests
/// run on a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The directory holding the build's binaries and plugin `.so` files.
pub fn build_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    target.join(profile)
}

/// Path of a built binary of the workspace, e.g. `fedmsg-hub`.
pub fn binary(name: &str) -> PathBuf {
    let path = build_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before the end-to-end tests",
        path.display()
    );
    path
}

/// Path of a built plugin library, by crate name (`fedmsg-example-tally`).
pub fn plugin(crate_name: &str) -> PathBuf {
    let path = build_dir().join(format!("lib{}.so", crate_name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before the end-to-end tests",
        path.display()
    );
    path
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A test directory: config dir, plugin dir, outputs. Removed on drop.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// Creates the directory with empty `fedmsg.d/` and `plugins/`.
    pub fn new() -> Result<Sandbox> {
        let dir = tempfile::tempdir()?;
        fs::create_dir_all(dir.path().join("fedmsg.d"))?;
        fs::create_dir_all(dir.path().join("plugins"))?;
        fs::create_dir_all(dir.path().join("state"))?;
        Ok(Sandbox { dir })
    }

    /// The sandbox root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The config directory (`fedmsg.d`).
    pub fn config_dir(&self) -> PathBuf {
        self.path().join("fedmsg.d")
    }

    /// The plugin directory.
    pub fn plugin_dir(&self) -> PathBuf {
        self.path().join("plugins")
    }

    /// Writes `fedmsg.d/<name>`.
    pub fn write_config(&self, name: &str, toml: &str) -> Result<()> {
        fs::write(self.config_dir().join(name), toml)?;
        Ok(())
    }

    /// Copies a built plugin into the plugin directory.
    pub fn add_plugin(&self, crate_name: &str) -> Result<PathBuf> {
        let from = plugin(crate_name);
        let to = self
            .plugin_dir()
            .join(from.file_name().context("plugin file name")?);
        fs::copy(&from, &to).with_context(|| format!("copy {}", from.display()))?;
        Ok(to)
    }

    /// The base config every hub test starts from: one endpoint, no
    /// validation, state and plugins inside the sandbox.
    pub fn base_config(&self, endpoint: &str) -> String {
        format!(
            "validate_signatures = false\nplugin_dir = {:?}\nstate_dir = {:?}\nshutdown_timeout = 10.0\n\n[endpoints]\n\"test.publisher\" = [{:?}]\n",
            self.plugin_dir().display().to_string(),
            self.path().join("state").display().to_string(),
            endpoint,
        )
    }
}

/// Reads a JSON-lines output file (tally and friends); missing = empty.
pub fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    let Ok(file) = fs::File::open(path) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map_while(|l| l.ok())
        .filter(|l| l.ends_with('}'))
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// The `msg_id`s of a JSON-lines output file, in order.
pub fn read_msg_ids(path: &Path) -> Vec<String> {
    read_lines(path)
        .iter()
        .filter_map(|v| v["msg_id"].as_str().map(str::to_owned))
        .collect()
}

/// A zmq XPUB socket bound on a free loopback port. XPUB rather than PUB so
/// that the test knows when the hub's subscriptions have arrived, instead
/// of sleeping through zmq's slow-joiner window.
pub struct Publisher {
    _ctx: zmq::Context,
    socket: zmq::Socket,
    endpoint: String,
    subscriptions: Vec<Vec<u8>>,
}

impl Publisher {
    /// Binds on `tcp://127.0.0.1:<free port>`.
    pub fn bind() -> Result<Publisher> {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::XPUB)?;
        // Verbose: pass every subscription up, also one another subscriber
        // already made, so each hub's arrival is seen.
        socket.set_xpub_verbose(true)?;
        socket.set_sndhwm(0)?;
        socket.set_linger(2000)?;
        socket.bind("tcp://127.0.0.1:*")?;
        let endpoint = socket
            .get_last_endpoint()?
            .map_err(|_| anyhow::anyhow!("endpoint is not UTF-8"))?;
        Ok(Publisher {
            _ctx: ctx,
            socket,
            endpoint,
            subscriptions: Vec::new(),
        })
    }

    /// The URL subscribers connect to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Waits until at least one subscription (from any subscriber) arrived.
    pub fn wait_subscribed(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.socket.poll(zmq::POLLIN, 100)? > 0 {
                let frame = self.socket.recv_bytes(0)?;
                if frame.first() == Some(&1) {
                    self.subscriptions.push(frame[1..].to_vec());
                    // Every subscription of one SUB socket arrives in one
                    // burst right after connecting: give the rest a moment.
                    std::thread::sleep(Duration::from_millis(200));
                    while self.socket.poll(zmq::POLLIN, 0)? > 0 {
                        let more = self.socket.recv_bytes(0)?;
                        if more.first() == Some(&1) {
                            self.subscriptions.push(more[1..].to_vec());
                        }
                    }
                    return Ok(());
                }
            }
        }
        bail!(
            "no subscriber subscribed to {} within {:?}",
            self.endpoint,
            timeout
        )
    }

    /// Subscription prefixes received so far.
    pub fn subscriptions(&self) -> &[Vec<u8>] {
        &self.subscriptions
    }

    /// Sends raw frames.
    pub fn send_frames(&self, frames: &[&[u8]]) -> Result<()> {
        self.socket.send_multipart(frames, 0)?;
        Ok(())
    }

    /// Sends a minimal fedmsg envelope on `topic` with `msg_id`.
    pub fn send(&self, topic: &str, msg_id: &str) -> Result<()> {
        let body = envelope(topic, msg_id);
        self.send_frames(&[topic.as_bytes(), body.as_bytes()])
    }
}

/// A minimal unsigned fedmsg envelope.
pub fn envelope(topic: &str, msg_id: &str) -> String {
    serde_json::json!({
        "topic": topic,
        "msg_id": msg_id,
        "timestamp": 1_700_000_000,
        "i": 1,
        "username": "test",
        "msg": {"hello": "world"},
    })
    .to_string()
}

/// A running `fedmsg-hub` child process, killed on drop.
pub struct Hub {
    child: Option<Child>,
    log: PathBuf,
    stats: PathBuf,
}

impl Hub {
    /// Starts the hub with the sandbox's config dir and `extra` arguments.
    pub fn start(sandbox: &Sandbox, extra: &[&str]) -> Result<Hub> {
        Hub::start_binary(sandbox, "fedmsg-hub", extra)
    }

    /// Starts another hub binary of the workspace (`fedmsg-irc`) the same
    /// way.
    pub fn start_binary(sandbox: &Sandbox, name: &str, extra: &[&str]) -> Result<Hub> {
        let log = sandbox.path().join("hub.log");
        let stats = sandbox.path().join("stats.json");
        let child = binary_command(sandbox, name)
            .arg("--stats-file")
            .arg(&stats)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("spawn fedmsg-hub")?;
        Ok(Hub {
            child: Some(child),
            log,
            stats,
        })
    }

    /// Waits until the hub has subscribed to `publisher`, failing early
    /// (with the hub's log) if the hub exits first.
    pub fn wait_subscribed(&mut self, publisher: &mut Publisher) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("hub exited early ({status}); log:\n{}", self.log());
                }
            }
            if publisher
                .wait_subscribed(Duration::from_millis(250))
                .is_ok()
            {
                return Ok(());
            }
        }
        bail!(
            "hub did not subscribe within {WAIT:?}; log:\n{}",
            self.log()
        )
    }

    /// The hub's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The hub's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("hub already stopped")?;
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        self.wait_exit(WAIT)
    }

    /// Kills the hub with SIGKILL (a crash: no drain, no status flush).
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self.child.take().context("hub already stopped")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Waits (bounded) for the hub to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("hub already stopped")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("hub did not exit within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The counters the hub wrote at exit (`--stats-file`).
    pub fn stats(&self) -> Result<serde_json::Value> {
        let text = fs::read_to_string(&self.stats)
            .with_context(|| format!("no stats file; log:\n{}", self.log()))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// One plugin's counters from the stats file.
    pub fn plugin_stats(&self, name: &str) -> Result<serde_json::Value> {
        let stats = self.stats()?;
        stats["plugins"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
            .with_context(|| format!("no stats for plugin {name}: {stats}"))
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `fedmsg-hub` command reading only the sandbox's config, with no
/// `FEDMSG_*` variables leaking in from the caller's environment.
pub fn hub_command(sandbox: &Sandbox) -> Command {
    binary_command(sandbox, "fedmsg-hub")
}

/// [`hub_command`] for another hub binary (`fedmsg-irc`).
pub fn binary_command(sandbox: &Sandbox, name: &str) -> Command {
    let mut command = Command::new(binary(name));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FEDMSG_") {
            command.env_remove(key);
        }
    }
    command
        .current_dir(sandbox.path())
        .arg("--config-dir")
        .arg(sandbox.config_dir())
        .env("RUST_LOG", "info");
    command
}
