//! PostgreSQL for the end-to-end tests: the machine's server on
//! 127.0.0.1:5432 when it answers (trust auth, user `postgres`), else a
//! throwaway cluster of our own (`initdb` + `pg_ctl` on a free loopback
//! port). Tests that stop the server always get their own cluster.
//!
//! Every test gets a fresh database, dropped afterwards; every cluster
//! started here is stopped on drop. `initdb` refuses to run as root, so
//! as root the tools run as the `postgres` user (`runuser`).

use std::ffi::CString;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A PostgreSQL cluster of our own in a temporary directory.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    running: bool,
}

impl PgCluster {
    /// Creates and starts a cluster on a free port of 127.0.0.1.
    pub fn start() -> Result<PgCluster> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("pg-e2e").tempdir()?;
        if is_root() {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .context("chown the cluster directory to postgres")?;
        }
        let data = dir.path().join("data");
        let output = run_pg(
            &bin.join("initdb"),
            &[
                "-D",
                path_str(&data)?,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        if !output.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: free_port()?,
            running: false,
        };
        cluster.restart()?;
        Ok(cluster)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` as user `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the (stopped) cluster again, on the same port; waits until
    /// it accepts connections (bounded by pg_ctl's `-t`).
    pub fn restart(&mut self) -> Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            path_str(self.dir.path())?
        );
        let log = self.dir.path().join("server.log");
        let output = run_pg(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                path_str(&self.dir.path().join("data"))?,
                "-l",
                path_str(&log)?,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        if !output.status.success() {
            bail!(
                "pg_ctl start failed: {}{}\nserver log:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        self.running = true;
        Ok(())
    }

    /// Stops the server (`-m fast`: open connections are terminated).
    pub fn stop(&mut self) -> Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// Kills the server (`-m immediate`: no clean shutdown, crash
    /// recovery on the next start), as a crash or an OOM kill would.
    pub fn kill(&mut self) -> Result<()> {
        self.pg_ctl_stop("immediate")
    }

    fn pg_ctl_stop(&mut self, mode: &str) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let output = run_pg(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                path_str(&self.dir.path().join("data"))?,
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "stop",
            ],
        )?;
        if !output.status.success() {
            bail!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        self.running = false;
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Err(e) = self.pg_ctl_stop("immediate") {
            eprintln!("could not stop the test cluster: {e:#}");
        }
    }
}

/// A fresh database for one test, dropped on drop (with the cluster it
/// lives in, when that is ours).
pub struct PgDatabase {
    url: String,
    admin_url: String,
    name: String,
    cluster: Option<PgCluster>,
}

impl PgDatabase {
    /// Its URL (`postgresql://postgres@127.0.0.1:PORT/NAME`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster, when it is ours.
    pub fn cluster(&mut self) -> Option<&mut PgCluster> {
        self.cluster.as_mut()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if self.cluster.is_some() {
            return; // the whole cluster goes away
        }
        match postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            Ok(mut client) => {
                let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
                if let Err(e) = client.batch_execute(&sql) {
                    eprintln!("could not drop test database {}: {e}", self.name);
                }
            }
            Err(e) => eprintln!("could not drop test database {}: {e}", self.name),
        }
    }
}

/// A fresh database on the machine's server when 127.0.0.1:5432 answers,
/// else on a cluster of our own.
pub fn database() -> Result<PgDatabase> {
    const SHARED: &str = "postgresql://postgres@127.0.0.1:5432/postgres";
    let answers = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], 5432)),
        Duration::from_secs(2),
    )
    .is_ok();
    if answers {
        if let Ok(db) = create_database(SHARED, |name| {
            format!("postgresql://postgres@127.0.0.1:5432/{name}")
        }) {
            return Ok(db);
        }
    }
    database_in_own_cluster()
}

/// A fresh database in a cluster of our own (which the test may stop).
pub fn database_in_own_cluster() -> Result<PgDatabase> {
    let cluster = PgCluster::start()?;
    let admin = cluster.url("postgres");
    let port = cluster.port();
    let mut db = create_database(&admin, |name| {
        format!("postgresql://postgres@127.0.0.1:{port}/{name}")
    })?;
    db.cluster = Some(cluster);
    Ok(db)
}

fn create_database(admin_url: &str, url_of: impl Fn(&str) -> String) -> Result<PgDatabase> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "dn_e2e_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let mut config: postgres::Config = admin_url.parse()?;
    config.connect_timeout(Duration::from_secs(10));
    let mut client = config.connect(postgres::NoTls)?;
    client.batch_execute(&format!("CREATE DATABASE \"{name}\""))?;
    Ok(PgDatabase {
        url: url_of(&name),
        admin_url: admin_url.to_owned(),
        name,
        cluster: None,
    })
}

/// The directory of `initdb`/`pg_ctl`: the newest
/// `/usr/lib/postgresql/*/bin` (Debian), else the one holding `initdb` on
/// `PATH`.
fn bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .context(
            "PostgreSQL server tools (initdb, pg_ctl) not found: install the `postgresql` \
             package (scripts/install-deps.sh does)",
        )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn postgres_ids() -> Result<(u32, u32)> {
    let name = CString::new("postgres")?;
    // SAFETY: getpwnam with a valid C string; the result is read at once,
    // before any other call that could overwrite the static buffer.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        bail!("no `postgres` user: initdb cannot run as root without one");
    }
    // SAFETY: non-null pointer returned by getpwnam.
    Ok(unsafe { ((*entry).pw_uid, (*entry).pw_gid) })
}

/// Runs a PostgreSQL tool, as `postgres` when we are root.
fn run_pg(tool: &Path, args: &[&str]) -> Result<Output> {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(tool);
        c
    } else {
        Command::new(tool)
    };
    // The server must not inherit our cwd (which postgres may not read).
    command.args(args).current_dir("/");
    command
        .output()
        .with_context(|| format!("cannot run {}", tool.display()))
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("non-UTF-8 temporary path")
}

/// A TCP port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET path` on `addr` (HTTP/1.0): status and JSON body. Bounded by a
/// 30 s read timeout.
pub fn http_get_json(addr: &str, path: &str) -> Result<(u16, serde_json::Value)> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {text:.200}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json =
        serde_json::from_str(body).with_context(|| format!("body is not JSON: {body:.200}"))?;
    Ok((status, json))
}
