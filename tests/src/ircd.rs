//! Harness for the IRC bot tests: a real IRC server (Debian's `ngircd`,
//! installed by `scripts/install-deps.sh`) on free loopback ports with a
//! generated configuration, optionally serving TLS with a test PKI made
//! here with the `openssl` command; and a raw TCP IRC client that watches
//! a channel. Every process is stopped on drop; every wait is bounded.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::bus::free_port;
use crate::WAIT;

/// The `ngircd` binary (`/usr/sbin` is not on every user's PATH).
pub fn ngircd_binary() -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("ngircd"))
        .find(|p| p.is_file())
        .context("ngircd is missing: run scripts/install-deps.sh (Debian package ngircd)")
}

/// A test CA and a server certificate for `localhost` (DNS name only: a
/// client connecting to `127.0.0.1` must refuse it).
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate (PEM), for the client's `ssl_ca`.
    pub ca: PathBuf,
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// The server key (PEM).
    pub key: PathBuf,
}

impl TestPki {
    /// Makes the files in `dir` with the `openssl` command.
    pub fn generate(dir: &Path) -> Result<TestPki> {
        fs::create_dir_all(dir)?;
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .context("run openssl (install it: scripts/install-deps.sh)")?;
            ensure!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=fedmsg e2e test CA",
        ])?;
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ])?;
        fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n")?;
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ])?;
        Ok(TestPki {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        })
    }
}

/// A running ngircd, killed on drop.
pub struct Ngircd {
    dir: PathBuf,
    conf: PathBuf,
    port: u16,
    tls_port: Option<u16>,
    child: Option<Child>,
    log: PathBuf,
}

impl Ngircd {
    /// Writes a configuration under `dir` (plain port, and a TLS port when
    /// `tls` is given), checks it with `ngircd --configtest`, and starts
    /// the server in the foreground (`-n`).
    pub fn start(dir: &Path, tls: Option<&TestPki>) -> Result<Ngircd> {
        let dir = dir.join("ngircd");
        fs::create_dir_all(dir.join("conf.d"))?;
        let port = free_port()?;
        let tls_port = match tls {
            Some(_) => Some(free_port()?),
            None => None,
        };
        // MaxPenaltyTime = 0: the bot and the test clients are never
        // throttled; MaxConnectionsIP = 0: all of them come from 127.0.0.1;
        // IncludeDir: nothing of the machine's own ngircd configuration.
        let mut conf = format!(
            "[Global]\nName = irc.e2e.test\nInfo = fedmsg e2e\nListen = 127.0.0.1\nPorts = {port}\n\
             MotdPhrase = \"fedmsg e2e\"\nPidFile = {pid}\n\n\
             [Limits]\nMaxNickLength = 30\nMaxPenaltyTime = 0\nMaxConnectionsIP = 0\n\
             PingTimeout = 600\nPongTimeout = 60\nMaxJoins = 0\n\n\
             [Options]\nPAM = no\nIdent = no\nDNS = no\nIncludeDir = {include}\n",
            pid = dir.join("ngircd.pid").display(),
            include = dir.join("conf.d").display(),
        );
        if let (Some(pki), Some(tls_port)) = (tls, tls_port) {
            conf.push_str(&format!(
                "\n[SSL]\nCertFile = {}\nKeyFile = {}\nPorts = {tls_port}\n",
                pki.cert.display(),
                pki.key.display()
            ));
        }
        let conf_path = dir.join("ngircd.conf");
        fs::write(&conf_path, conf)?;
        let check = Command::new(ngircd_binary()?)
            .arg("--configtest")
            .arg("-f")
            .arg(&conf_path)
            .output()
            .context("run ngircd --configtest")?;
        ensure!(
            check.status.success(),
            "ngircd --configtest refused {}:\n{}{}",
            conf_path.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let mut server = Ngircd {
            log: dir.join("ngircd.log"),
            dir,
            conf: conf_path,
            port,
            tls_port,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(ngircd_binary()?)
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn ngircd")?;
        self.child = Some(child);
        // Ready when the port accepts (the probe connection is dropped at
        // once; ngircd does not mind).
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("ngircd exited at start ({status}):\n{}", self.log());
                }
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "ngircd did not listen on {} within {WAIT:?}:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The plain-text port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port, when started with TLS.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server (SIGKILL: every client sees its connection drop).
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self.child.take().context("ngircd is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts it again on the same ports.
    pub fn restart(&mut self) -> Result<()> {
        ensure!(self.child.is_none(), "ngircd is still running");
        self.spawn()
    }

    /// The directory of its configuration and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A raw IRC client: registers, joins, and records every line it gets
/// (answering PINGs).
pub struct IrcClient {
    stream: TcpStream,
    nick: String,
    pending: Vec<u8>,
    /// Every line received, in order, without CRLF, each with when it
    /// arrived.
    pub seen: Vec<(Instant, String)>,
}

impl IrcClient {
    /// Connects to `127.0.0.1:port` and registers as `nick` (waits for
    /// the welcome).
    pub fn connect(port: u16, nick: &str) -> Result<IrcClient> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connect to ngircd on {port}"))?;
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut client = IrcClient {
            stream,
            nick: nick.to_owned(),
            pending: Vec::new(),
            seen: Vec::new(),
        };
        client.send(&format!("NICK {nick}"))?;
        client.send(&format!("USER {nick} 0 * :fedmsg e2e observer"))?;
        let welcome = format!(" 001 {nick} ");
        client.wait_for(WAIT, |l| l.contains(&welcome))?;
        Ok(client)
    }

    /// Joins `channel` and waits for the end of its names list.
    pub fn join(&mut self, channel: &str) -> Result<()> {
        self.send(&format!("JOIN {channel}"))?;
        let end = format!(" 366 {} {channel} ", self.nick);
        self.wait_for(WAIT, |l| l.contains(&end))?;
        Ok(())
    }

    /// Sends one line (CRLF added).
    pub fn send(&mut self, line: &str) -> Result<()> {
        self.stream.write_all(format!("{line}\r\n").as_bytes())?;
        Ok(())
    }

    /// Reads what arrived within `timeout`, recording complete lines.
    /// Fails when the server closed the connection.
    pub fn poll(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!("the server closed {}'s connection", self.nick),
                Ok(n) => {
                    self.pending.extend_from_slice(&chunk[..n]);
                    self.split_lines()?;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                return Ok(());
            }
        }
    }

    fn split_lines(&mut self) -> Result<()> {
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&raw)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            if let Some(token) = text.strip_prefix("PING ") {
                self.send(&format!("PONG {token}"))?;
            }
            self.seen.push((Instant::now(), text));
        }
        Ok(())
    }

    /// Waits until a line matching `check` arrives (or has arrived since
    /// the last `wait_for`... any time: the whole history is searched);
    /// returns it.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut check: impl FnMut(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((_, line)) = self.seen.iter().find(|(_, l)| check(l)) {
                return Ok(line.clone());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not see the expected line within {timeout:?}; last lines:\n{}",
                    self.nick,
                    self.tail(30)
                );
            }
            self.poll(Duration::from_millis(100))?;
        }
    }

    /// The text of every `NOTICE`/`PRIVMSG` to `target` seen so far, with
    /// the sender's nickname, in order.
    pub fn messages_to(&self, target: &str) -> Vec<(String, String)> {
        self.seen
            .iter()
            .filter_map(|(_, line)| {
                let rest = line.strip_prefix(':')?;
                let (source, rest) = rest.split_once(' ')?;
                let (command, rest) = rest.split_once(' ')?;
                if command != "NOTICE" && command != "PRIVMSG" {
                    return None;
                }
                let (to, text) = rest.split_once(" :")?;
                (to == target).then(|| {
                    let nick = source.split('!').next().unwrap_or(source).to_owned();
                    (nick, text.to_owned())
                })
            })
            .collect()
    }

    /// The last `n` lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let start = self.seen.len().saturating_sub(n);
        self.seen[start..]
            .iter()
            .map(|(_, l)| format!("{l:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Leaves the server.
    pub fn quit(mut self) -> Result<()> {
        self.send("QUIT :bye")?;
        Ok(())
    }
}
