//! Harness for the bus tests: free ports, the shared PKI, our command-line
//! tools and the real Python fedmsg as child processes (always stopped),
//! and configuration snippets mirroring `../shared/pyfedmsg/fedmsg.d`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{binary, workspace_root, WAIT};

/// Sends probe messages with `send` until `arrived` says one got through,
/// giving each one a few seconds, for at most `patience`: PUB/SUB drops
/// what is published before a subscriber's connection is up, so this is how
/// a test knows a whole chain of processes is connected. `context` explains
/// a failure (logs).
pub fn probe(
    patience: Duration,
    mut send: impl FnMut(usize) -> Result<()>,
    mut arrived: impl FnMut() -> bool,
    context: impl Fn() -> String,
) -> Result<()> {
    let deadline = Instant::now() + patience;
    for n in 0.. {
        send(n)?;
        let settle = Instant::now() + Duration::from_secs(3);
        while Instant::now() < settle {
            if arrived() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if Instant::now() >= deadline {
            bail!("no probe got through\n{}", context());
        }
    }
    Ok(())
}

/// `../shared` next to the workspace.
pub fn shared_dir() -> PathBuf {
    workspace_root().join("../shared")
}

/// The real Python fedmsg harness (`../shared/pyfedmsg`).
pub fn pyfedmsg_dir() -> PathBuf {
    shared_dir().join("pyfedmsg")
}

/// The test PKI: `ca.crt`, `crl.pem`, `shell-app01.{crt,key}`, ...
pub fn pki_dir() -> PathBuf {
    pyfedmsg_dir().join("pki")
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `tcp://127.0.0.1:<port>`.
pub fn tcp(port: u16) -> String {
    format!("tcp://127.0.0.1:{port}")
}

/// This machine's host name up to the first dot (fedmsg's certnames keys).
pub fn short_hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, which is passed.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let full = String::from_utf8_lossy(&buffer[..end]).into_owned();
    full.split('.').next().unwrap_or_default().to_owned()
}

/// The ports of one test bus, all free loopback ports: the relay's inbound
/// and outbound sides, and the Python benchmark publisher's endpoint
/// (nothing binds it; the Python config lists it).
#[derive(Debug, Clone, Copy)]
pub struct BusPorts {
    /// `relay_inbound`.
    pub relay_in: u16,
    /// `endpoints.relay_outbound`.
    pub relay_out: u16,
    /// `endpoints."pybench.local"` of the Python config.
    pub bench: u16,
}

impl BusPorts {
    /// Three free ports.
    pub fn new() -> Result<BusPorts> {
        Ok(BusPorts {
            relay_in: free_port()?,
            relay_out: free_port()?,
            bench: free_port()?,
        })
    }

    /// TOML: `relay_inbound` and `endpoints.relay_outbound`.
    pub fn toml(&self) -> String {
        format!(
            "relay_inbound = {:?}\n\n[endpoints]\nrelay_outbound = [{:?}]\n",
            tcp(self.relay_in),
            tcp(self.relay_out)
        )
    }
}

/// TOML mirroring `../shared/pyfedmsg/fedmsg.d/ssl.py`: signing and
/// validation with the shared PKI, `shell.<host>` signing as shell-app01.
pub fn ssl_toml() -> String {
    let pki = pki_dir();
    let host = short_hostname();
    format!(
        "sign_messages = true\nvalidate_signatures = true\ncrypto_backend = \"x509\"\n\
         crypto_validate_backends = [\"x509\"]\nssldir = {:?}\nca_cert_location = {:?}\n\
         crl_location = {:?}\nrouting_nitpicky = false\n\n\
         [certnames]\n\"shell.{host}\" = \"shell-app01\"\n\"evil.{host}\" = \"evil-app02\"\n\n\
         [routing_policy]\n\"org.fedoraproject.dev.logger.log\" = [\"shell-app01\"]\n\
         \"org.fedoraproject.dev.bench.msg\" = [\"shell-app01\"]\n\
         \"org.fedoraproject.dev.reserved.topic\" = [\"shell-app01\"]\n",
        pki.display().to_string(),
        pki.join("ca.crt").display().to_string(),
        pki.join("crl.pem").display().to_string(),
    )
}

/// A command for one of our tools, reading only `config_dirs`, with no
/// `FEDMSG_*` variables leaking in from the caller's environment.
pub fn tool(name: &str, config_dirs: &[&Path]) -> Command {
    let mut command = Command::new(binary(name));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FEDMSG_") {
            command.env_remove(key);
        }
    }
    for dir in config_dirs {
        command.arg("--config-dir").arg(dir);
    }
    command
}

/// Runs `command` to completion with `stdin` as input, killing it after
/// `timeout`.
pub fn run(mut command: Command, stdin: Option<&str>, timeout: Duration) -> Result<Output> {
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {command:?}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A child that exits early closes the pipe: its status says why.
        let _ = pipe.write_all(text.as_bytes());
    }
    // Read the pipes on other threads so that a chatty child cannot block.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{command:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

/// How a [`Process`] is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    /// SIGTERM (our tools).
    Term,
    /// SIGINT, then SIGTERM after a while (Python fedmsg/Twisted; see the
    /// pyfedmsg README).
    IntThenTerm,
}

/// A long-running child process (relay, tail, a Python tool), its output
/// in files; stopped (at last killed) on drop.
pub struct Process {
    name: String,
    child: Option<Child>,
    stdout: PathBuf,
    log: PathBuf,
    stopping: Stopping,
}

impl Process {
    /// Starts one of our tools: standard output to `<dir>/<name>.out`,
    /// standard error to `<dir>/<name>.log`.
    pub fn start(name: &str, command: Command, dir: &Path) -> Result<Process> {
        Self::spawn(name, command, dir, Stopping::Term)
    }

    /// Starts a Python fedmsg tool (stopped with SIGINT, then SIGTERM).
    pub fn start_python(name: &str, command: Command, dir: &Path) -> Result<Process> {
        Self::spawn(name, command, dir, Stopping::IntThenTerm)
    }

    fn spawn(name: &str, mut command: Command, dir: &Path, stopping: Stopping) -> Result<Process> {
        let stdout = dir.join(format!("{name}.out"));
        let log = dir.join(format!("{name}.log"));
        let child = command
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout)?)
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("spawn {name}: {command:?}"))?;
        Ok(Process {
            name: name.to_owned(),
            child: Some(child),
            stdout,
            log,
            stopping,
        })
    }

    /// Standard output so far.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// The complete lines of standard output so far.
    pub fn lines(&self) -> Vec<String> {
        let text = self.output();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Standard error so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails (with the log) if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "{} exited early ({status}); stderr:\n{}\nstdout:\n{}",
                    self.name,
                    self.log(),
                    self.output()
                );
            }
        }
        Ok(())
    }

    /// Asks the process to stop and waits (bounded); kills it if it does
    /// not. Returns its exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .with_context(|| format!("{} already stopped", self.name))?;
        let pid = child.id() as i32;
        let signals: &[(i32, Duration)] = match self.stopping {
            Stopping::Term => &[(libc::SIGTERM, WAIT)],
            Stopping::IntThenTerm => &[
                (libc::SIGINT, Duration::from_secs(3)),
                (libc::SIGTERM, Duration::from_secs(5)),
            ],
        };
        for (signal, patience) in signals {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe { libc::kill(pid, *signal) };
            let deadline = Instant::now() + *patience;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Ok(status);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let status = child.wait()?;
        self.child = None;
        if self.stopping == Stopping::Term {
            bail!(
                "{} did not stop on SIGTERM; stderr:\n{}",
                self.name,
                self.log()
            );
        }
        Ok(status)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The real Python fedmsg 1.1.7 in its venv (`$VENV`, default
/// `~/.cache/pyfedmsg-venv`, made by `../shared/pyfedmsg/setup.sh`).
#[derive(Debug, Clone)]
pub struct PyFedmsg {
    venv: PathBuf,
}

impl PyFedmsg {
    /// The venv; `Ok(None)` when `FEDMSG_SKIP_PYTHON=1` (the test should
    /// then skip), an error saying how to install it when it is missing.
    pub fn locate() -> Result<Option<PyFedmsg>> {
        if std::env::var("FEDMSG_SKIP_PYTHON").as_deref() == Ok("1") {
            eprintln!("FEDMSG_SKIP_PYTHON=1: skipping the Python fedmsg interop test");
            return Ok(None);
        }
        let venv = std::env::var_os("VENV")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pyfedmsg-venv"))
            })
            .context("neither VENV nor HOME is set")?;
        if !venv.join("bin/fedmsg-hub").is_file() {
            bail!(
                "the Python fedmsg venv is missing ({} has no bin/fedmsg-hub): run \
                 ../shared/pyfedmsg/setup.sh (or set VENV), or set FEDMSG_SKIP_PYTHON=1 to skip",
                venv.display()
            );
        }
        Ok(Some(PyFedmsg { venv }))
    }

    /// The venv's Python interpreter.
    pub fn python(&self) -> PathBuf {
        self.venv.join("bin/python")
    }

    /// Makes `<dir>/py/fedmsg.d`, a copy of the harness's Python config
    /// with its ports replaced by `ports`, and returns `<dir>/py`: the
    /// working directory the Python tools must run in.
    pub fn workdir(&self, dir: &Path, ports: &BusPorts) -> Result<PathBuf> {
        python_config_copy(dir, ports)
    }

    /// A command running the Python tool `name` (e.g. `fedmsg-relay`) in
    /// `workdir`, with the PKI paths resolving to the shared harness.
    pub fn command(&self, name: &str, workdir: &Path) -> Command {
        let mut command = Command::new(self.venv.join("bin").join(name));
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("FEDMSG_") || key_text == "VIRTUAL_ENV" {
                command.env_remove(key);
            }
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.venv.join("bin")];
        paths.extend(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(paths) {
            command.env("PATH", joined);
        }
        command
            .current_dir(workdir)
            .env("PYFEDMSG_HOME", pyfedmsg_dir())
            .env("PYTHONUNBUFFERED", "1");
        command
    }
}

/// `<dir>/py/fedmsg.d`: the harness's `fedmsg.d/*.py` with the ports of
/// `ports`; returns `<dir>/py`. Needs no venv (the files are only copied).
pub fn python_config_copy(dir: &Path, ports: &BusPorts) -> Result<PathBuf> {
    let workdir = dir.join("py");
    let target = workdir.join("fedmsg.d");
    fs::create_dir_all(&target)?;
    for entry in fs::read_dir(pyfedmsg_dir().join("fedmsg.d"))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("py") {
            continue;
        }
        let text = fs::read_to_string(&path)?
            .replace("127.0.0.1:4001", &format!("127.0.0.1:{}", ports.relay_out))
            .replace("127.0.0.1:3001", &format!("127.0.0.1:{}", ports.bench))
            .replace("127.0.0.1:2003", &format!("127.0.0.1:{}", ports.relay_in));
        let name = path.file_name().context("file name")?;
        fs::write(target.join(name), text)?;
    }
    Ok(workdir)
}

/// Waits until `check` holds, failing with `what` and `context()` (e.g.
/// process logs) after [`WAIT`].
pub fn wait_for(
    what: &str,
    mut check: impl FnMut() -> Result<bool>,
    context: impl Fn() -> String,
) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
