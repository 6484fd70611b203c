//! What `/proc` says about the hub process: CPU time and memory.

use std::path::Path;

use anyhow::{Context, Result};

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// User + system CPU seconds of every thread of `pid` so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_stat_cpu(&text)
        .map(|ticks| ticks / clock_ticks())
        .with_context(|| format!("unexpected format of {path}"))
}

/// utime + stime (fields 14 and 15) in clock ticks. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_stat_cpu(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `/proc/<pid>/status` field in kB (`VmRSS`, `VmHWM`) or as a count
/// (`Threads`).
pub fn status_field(pid: u32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_status_field(&text, key).with_context(|| format!("no {key} in {path}"))
}

fn parse_status_field(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == key)
            .then(|| value.split_whitespace().next()?.parse().ok())
            .flatten()
    })
}

/// The first line of a file, trimmed (e.g. `/proc/loadavg`).
pub fn first_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.lines().next().map(|l| l.trim().to_owned()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat_cpu(stat), Some(300.0));
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tx\nVmHWM:\t   12345 kB\nVmRSS:\t    6789 kB\nThreads:\t7\n";
        assert_eq!(parse_status_field(status, "VmHWM"), Some(12345));
        assert_eq!(parse_status_field(status, "VmRSS"), Some(6789));
        assert_eq!(parse_status_field(status, "Threads"), Some(7));
        assert_eq!(parse_status_field(status, "VmSwap"), None);
    }

    #[test]
    fn own_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_ok());
        assert!(status_field(pid, "VmRSS").is_ok_and(|kb| kb > 0));
    }
}
