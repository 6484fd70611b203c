//! Vetting a plugin file before the hub maps it: a short-lived child
//! process loads it first.
//!
//! dlopen runs code and touches memory the file controls before any check
//! of ours can run: a truncated file (a plugin still being copied) maps
//! pages past its end and dies with SIGBUS on first touch, and an ELF
//! constructor may call `abort()`. Either would kill the hub, even for a
//! plugin that is disabled (every `*.so` is loaded to learn its config
//! key). So the hub first has `fedmsg-plugin-probe` load the file, in a
//! process of its own, and refuses the file when that process dies by a
//! signal or does not finish in time. A file that the probe loads (or that
//! fails to load cleanly, which the hub then reports itself) is loaded by
//! the hub as before.
//!
//! The probe binary is looked for beside the running executable (and one
//! directory up, where `cargo test` binaries live), or at
//! `$FEDMSG_PLUGIN_PROBE`. Without it the hub warns once and loads unvetted.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::LoadErrorKind;

/// The probe binary's name.
pub const PROBE_BINARY: &str = "fedmsg-plugin-probe";

/// How long a probe may take: loading a library is milliseconds; a
/// constructor that blocks is refused.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// The probe's exit status when the file failed to load cleanly (the hub
/// then loads it itself to report why).
const EXIT_LOAD_ERROR: u8 = 3;

fn probe_binary() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("FEDMSG_PLUGIN_PROBE") {
                return Some(PathBuf::from(path));
            }
            let exe = std::env::current_exe().ok()?;
            let dir = exe.parent()?;
            let found = [Some(dir), dir.parent()]
                .into_iter()
                .flatten()
                .map(|d| d.join(PROBE_BINARY))
                .find(|candidate| candidate.is_file());
            found
        })
        .clone()
}

/// Checks that an ELF file is whole: every segment dlopen maps, and the
/// section table, lie within the file. dlopen maps segments by what the
/// headers say, so a truncated file (a plugin still being copied) loads and
/// then dies with SIGBUS when code in its missing pages first runs, maybe
/// long after start; a probe that only loads it sees nothing wrong. A file
/// that is not ELF at all is left to dlopen to refuse.
fn check_complete(path: &Path) -> Result<(), LoadErrorKind> {
    use std::io::Read;

    use object::read::elf::{ElfFile64, ProgramHeader};
    use object::{Endianness, ReadCache};
    let unreadable = |e: std::io::Error| LoadErrorKind::NotALibrary(format!("cannot read it: {e}"));
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let len = file.metadata().map_err(unreadable)?.len();
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_err() || magic != *b"\x7fELF" {
        return Ok(());
    }
    // Only the headers are read (`ReadCache` reads the ranges the parser
    // asks for), not the whole library: a debug build of a plugin is
    // 100 MB, which would all have been in the hub's memory at start.
    let data = ReadCache::new(file);
    let damaged = |why: String| LoadErrorKind::NotALibrary(format!("damaged ELF file: {why}"));
    let elf = ElfFile64::<Endianness, _>::parse(&data).map_err(|e| damaged(e.to_string()))?;
    let endian = elf.endian();
    for segment in elf.elf_program_headers() {
        let end = segment
            .p_offset(endian)
            .saturating_add(segment.p_filesz(endian));
        if end > len {
            return Err(damaged(format!(
                "truncated: a segment ends at byte {end}, the file has {len}"
            )));
        }
    }
    Ok(())
}

/// Checks `path` is a whole file, then loads it in a child process first;
/// an error when it is truncated or that process crashed or hung.
pub(crate) fn vet(path: &Path) -> Result<(), LoadErrorKind> {
    check_complete(path)?;
    let Some(probe) = probe_binary() else {
        static WARNED: OnceLock<()> = OnceLock::new();
        WARNED.get_or_init(|| {
            tracing::warn!(
                probe = PROBE_BINARY,
                "plugin probe binary not found beside the hub (or FEDMSG_PLUGIN_PROBE): plugin files are loaded unvetted, and a broken one can crash the hub"
            );
        });
        return Ok(());
    };
    let mut child = Command::new(&probe)
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| LoadErrorKind::ProbeFailed(format!("cannot run {}: {e}", probe.display())))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LoadErrorKind::ProbeFailed(format!(
                    "loading it did not finish within {} s (a constructor that blocks?)",
                    PROBE_TIMEOUT.as_secs()
                )));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LoadErrorKind::ProbeFailed(format!(
                    "waiting for the probe: {e}"
                )));
            }
        }
    };
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) if code == i32::from(EXIT_LOAD_ERROR) => Ok(()),
        (_, Some(signal)) => Err(LoadErrorKind::ProbeFailed(format!(
            "loading it kills the process ({}): a truncated file, or a constructor that aborts",
            signal_name(signal)
        ))),
        (code, _) => Err(LoadErrorKind::ProbeFailed(format!(
            "loading it ends the process (exit status {})",
            code.map_or_else(|| "?".to_owned(), |c| c.to_string())
        ))),
    }
}

/// Linux's numbers of the signals a bad library causes.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

/// The probe binary's whole job: load the file as the hub would, in this
/// process. Exit 0 when it loads, 3 when it fails to load cleanly; a crash
/// is the answer the hub looks for.
pub fn probe_main(path: &Path) -> ExitCode {
    match super::load_unvetted(path) {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(EXIT_LOAD_ERROR),
    }
}
