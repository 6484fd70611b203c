//! `fedmsg-bench`: runs the same workloads against our `fedmsg-hub` and the
//! Python fedmsg-hub, side by side, and reports throughput, latency, CPU,
//! memory and loss. `bench/run.sh` builds everything and regenerates
//! `BENCHMARKS.md` with it.
//!
//! Every run starts a fresh hub in a sandbox directory, waits until it has
//! subscribed and its sinks are up, lets it settle, samples its idle RSS and
//! CPU time, publishes pre-built frames from an XPUB socket with an
//! unlimited high-water mark (burst, or paced for latency), waits until
//! every sink has counted everything (or the count stops moving), samples
//! CPU and peak RSS, and stops the hub. The figures follow
//! `shared/pyfedmsg/bench_hub.py`: rate = consumed / (last consume − first
//! send); CPU = the hub's utime + stime over the same window; peak RSS =
//! `VmHWM`.

mod frames;
mod hub;
mod meta;
mod procfs;
mod publisher;
mod report;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use fedmsg_wire::crypto::Signer;

use crate::frames::{Frame, SignCost};
use crate::hub::{HubKind, HubSpec, RunningHub, Tools};
use crate::publisher::Publisher;
use crate::report::{RunResult, Workload};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Runs the workloads against both hubs and reports the medians.
    Suite(Box<SuiteArgs>),
    /// Measures our signed publisher alone: build + sign + encode per
    /// message, on one thread.
    /// Measures fedmsg.meta rendering (every field, the example mix) on
    /// one thread, ours and Python's (when the pyfedmsg venv is there).
    Meta {
        /// CPU seconds of rendering per side.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    SignRate {
        /// Messages to sign.
        #[arg(short = 'n', long, default_value_t = 3000)]
        count: usize,
        /// Signing threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Print the figures as one JSON object (used by `suite`).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct SuiteArgs {
    /// Repetitions of every (workload, hub); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Hubs to run, comma-separated: ours, python.
    #[arg(long, value_delimiter = ',', default_value = "ours,python")]
    hubs: Vec<String>,
    /// Workloads to run, comma-separated: signed, unsigned, paced-signed,
    /// paced-unsigned, fanout.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "signed,unsigned,paced-signed,paced-unsigned,fanout"
    )]
    workloads: Vec<String>,
    /// Messages of the signed burst.
    #[arg(long, default_value_t = 20_000)]
    signed_count: usize,
    /// Messages of the unsigned burst.
    #[arg(long, default_value_t = 200_000)]
    unsigned_count: usize,
    /// Messages of each paced run.
    #[arg(long, default_value_t = 10_000)]
    paced_count: usize,
    /// Rate of the paced runs, msg/s.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Messages of the fan-out burst (unsigned, to every sink).
    #[arg(long, default_value_t = 50_000)]
    fanout_count: usize,
    /// Sinks of the fan-out run.
    #[arg(long, default_value_t = 4)]
    fanout_sinks: usize,
    /// Seconds between the hub being ready and the first message.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Stop waiting when no sink count moved for this long (seconds).
    #[arg(long, default_value_t = 5.0)]
    quiet: f64,
    /// Upper bound of one run's wait for its messages (seconds).
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
    /// `high_water_mark` of our hub: its SUB socket holds at most this many
    /// messages, and TCP back-pressure keeps the rest of a burst in the
    /// publisher (whose HWM is unlimited, so nothing is lost). 0 = unlimited,
    /// as the Python hub (moksha) always has it: then the hub's memory grows
    /// with the backlog.
    #[arg(long, default_value_t = 1000)]
    hub_hwm: u64,
    /// `plugin_queue_capacity` of our hub. The default 10,000 is 20 ms of a
    /// 500,000 msg/s burst: a plugin worker that loses its core for longer
    /// (two cores, five busy threads, other work on the machine) overflows it
    /// and the hub drops for that plugin, by design. The Python hub's
    /// consumer queues are unbounded. An idle queue costs no memory.
    #[arg(long, default_value_t = 50_000)]
    hub_queue: usize,
    /// Release build directory (fedmsg-hub and the sink plugins).
    #[arg(long)]
    build_dir: Option<PathBuf>,
    /// `shared/pyfedmsg`.
    #[arg(long)]
    pyfedmsg: Option<PathBuf>,
    /// Python venv with fedmsg 1.1.7 (default: $VENV, else ~/.cache/pyfedmsg-venv).
    #[arg(long)]
    venv: Option<PathBuf>,
    /// Write BENCHMARKS.md-style Markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write every run's figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Profile each hub run with `perf record` (attached once the hub is
    /// idle, stopped before the hub), writing `<dir>/<workload>-<hub>-<run>.data`.
    #[arg(long, value_name = "DIR")]
    perf: Option<PathBuf>,
    /// Arguments of `perf record` for --perf.
    #[arg(long, default_value = "-e cpu-clock -F 4000 --call-graph dwarf,32768")]
    perf_args: String,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Nanoseconds since the Unix epoch.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A signal only sets the flag: every wait checks it, and unwinding
    // stops the hub that is running (RunningHub is killed on drop).
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(error) = signal_hook::flag::register(signal, Arc::clone(&flag)) {
            eprintln!("fedmsg-bench: cannot install a signal handler: {error}");
        }
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            if flag.load(Ordering::Relaxed) {
                INTERRUPTED.store(true, Ordering::Relaxed);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        })
        .ok();
    let result = match cli.command {
        Cmd::Suite(args) => suite(&args),
        Cmd::SignRate {
            count,
            threads,
            json,
        } => sign_rate(count, threads, json),
        Cmd::Meta { seconds } => meta_rate(seconds),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fedmsg-bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn default_pyfedmsg() -> PathBuf {
    if let Some(dir) = std::env::var_os("FEDMSG_SHARED_DIR") {
        return PathBuf::from(dir).join("pyfedmsg");
    }
    workspace_root().join("../shared/pyfedmsg")
}

fn default_venv() -> PathBuf {
    if let Some(venv) = std::env::var_os("VENV") {
        return PathBuf::from(venv);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache"));
    cache.join("pyfedmsg-venv")
}

fn shell_signer(pyfedmsg: &Path) -> Result<Signer> {
    let pki = pyfedmsg.join("pki");
    Signer::from_files(pki.join("shell-app01.crt"), pki.join("shell-app01.key"))
        .context("cannot load the shell-app01 key pair")
}

fn sign_rate(count: usize, threads: usize, json: bool) -> Result<()> {
    let signer = shell_signer(&default_pyfedmsg())?;
    let (_, cost) = frames::signed(count, &signer, threads)?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "messages": cost.messages,
                "threads": cost.threads,
                "cpu_s": cost.cpu_s,
                "wall_s": cost.wall_s,
            })
        );
        return Ok(());
    }
    println!(
        "signed {} messages on {} thread(s): {:.0} msg/s per core ({:.3} CPU s), {:.0} msg/s wall",
        cost.messages,
        cost.threads,
        cost.per_core(),
        cost.cpu_s,
        cost.messages as f64 / cost.wall_s
    );
    Ok(())
}

fn meta_rate(seconds: f64) -> Result<()> {
    let shared = default_pyfedmsg().join("..");
    let ours = meta::ours(&shared, seconds)?;
    println!(
        "ours: {:.0} msg/s per core ({} messages, every field, {:.2} CPU s); bundled rules load in {:.1} ms",
        ours.render.per_core(),
        ours.render.messages,
        ours.render.cpu_s,
        ours.load_ms
    );
    let venv = default_venv();
    if venv.join("bin/python").exists() {
        let python = meta::python(&venv, seconds)?;
        println!(
            "python fedmsg.meta: {:.0} msg/s per core ({} messages, {:.2} CPU s)",
            python.per_core(),
            python.messages,
            python.cpu_s
        );
    }
    Ok(())
}

/// `OPENSSL_ia32cap` value that hides AVX2 from OpenSSL, which then signs
/// with its MULX/ADX code; in some `openssl speed` runs on this AMD EPYC
/// that was a quarter faster than OpenSSL 3.0's AVX2 code, in others not.
const IA32CAP_NO_AVX2: &str = ":~0x20";

/// Runs `fedmsg-bench sign-rate` in a child process, so that OpenSSL reads
/// `OPENSSL_ia32cap` (it does so once, when the library is loaded).
fn sign_rate_in_child(ia32cap: Option<&str>) -> Result<SignCost> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["sign-rate", "-n", "3000", "--json"]);
    match ia32cap {
        Some(value) => command.env("OPENSSL_ia32cap", value),
        None => command.env_remove("OPENSSL_ia32cap"),
    };
    let output = command.output().context("cannot run sign-rate")?;
    if !output.status.success() {
        bail!(
            "sign-rate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let value: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let number = |key: &str| {
        value[key]
            .as_f64()
            .with_context(|| format!("sign-rate: no {key}"))
    };
    Ok(SignCost {
        messages: number("messages")? as usize,
        threads: number("threads")? as usize,
        cpu_s: number("cpu_s")?,
        wall_s: number("wall_s")?,
    })
}

fn workloads(args: &SuiteArgs) -> Result<Vec<Workload>> {
    let rate = args.rate;
    let all = [
        Workload {
            name: "signed",
            title: format!(
                "{} signed messages, validation on, burst",
                args.signed_count
            ),
            signed: true,
            count: args.signed_count,
            rate: None,
            sinks: 1,
        },
        Workload {
            name: "unsigned",
            title: format!(
                "{} unsigned messages, validation off, burst",
                args.unsigned_count
            ),
            signed: false,
            count: args.unsigned_count,
            rate: None,
            sinks: 1,
        },
        Workload {
            name: "paced-signed",
            title: format!(
                "{} signed messages at {rate} msg/s, validation on (latency)",
                args.paced_count
            ),
            signed: true,
            count: args.paced_count,
            rate: Some(rate),
            sinks: 1,
        },
        Workload {
            name: "paced-unsigned",
            title: format!(
                "{} unsigned messages at {rate} msg/s, validation off (latency)",
                args.paced_count
            ),
            signed: false,
            count: args.paced_count,
            rate: Some(rate),
            sinks: 1,
        },
        Workload {
            name: "fanout",
            title: format!(
                "{} unsigned messages, validation off, burst, {} sinks",
                args.fanout_count, args.fanout_sinks
            ),
            signed: false,
            count: args.fanout_count,
            rate: None,
            sinks: args.fanout_sinks,
        },
    ];
    let mut chosen = Vec::new();
    for name in &args.workloads {
        match all.iter().find(|w| w.name == name) {
            Some(w) => chosen.push(w.clone()),
            None => bail!("unknown workload {name:?}"),
        }
    }
    Ok(chosen)
}

fn hubs(args: &SuiteArgs) -> Result<Vec<HubKind>> {
    args.hubs
        .iter()
        .map(|name| match name.as_str() {
            "ours" => Ok(HubKind::Ours),
            "python" => Ok(HubKind::Python),
            other => bail!("unknown hub {other:?} (ours, python)"),
        })
        .collect()
}

fn suite(args: &SuiteArgs) -> Result<()> {
    let tools = Tools {
        build_dir: args
            .build_dir
            .clone()
            .unwrap_or_else(|| workspace_root().join("target/release")),
        pyfedmsg: args.pyfedmsg.clone().unwrap_or_else(default_pyfedmsg),
        venv: args.venv.clone().unwrap_or_else(default_venv),
        py_sinks: workspace_root().join("bench/py"),
    };
    let workloads = workloads(args)?;
    let hubs = hubs(args)?;
    if hubs.contains(&HubKind::Python) && !tools.venv.join("bin/fedmsg-hub").exists() {
        bail!(
            "no Python fedmsg-hub in {} (run shared/pyfedmsg/setup.sh, or --hubs ours)",
            tools.venv.display()
        );
    }
    let load_before = procfs::first_line(Path::new("/proc/loadavg"));
    let started = SystemTime::now();

    // Everything is built before the first run: sending is then only zmq.
    let signed_needed = workloads.iter().filter(|w| w.signed).map(|w| w.count).max();
    let unsigned_needed = workloads
        .iter()
        .filter(|w| !w.signed)
        .map(|w| w.count)
        .max();
    let signer = shell_signer(&tools.pyfedmsg)?;
    eprintln!("measuring the signed publisher (one thread, 3000 messages, twice)...");
    let sign_cost = sign_rate_in_child(None)?;
    let sign_cost_tuned = sign_rate_in_child(Some(IA32CAP_NO_AVX2))?;
    eprintln!(
        "  {:.0} msg/s per core; {:.0} with OPENSSL_ia32cap={IA32CAP_NO_AVX2}",
        sign_cost.per_core(),
        sign_cost_tuned.per_core()
    );
    eprintln!("measuring fedmsg.meta rendering (one thread, 3 CPU s per side)...");
    let shared = tools.pyfedmsg.join("..");
    let meta_ours = meta::ours(&shared, 3.0)?;
    let meta_python = if hubs.contains(&HubKind::Python) {
        Some(meta::python(&tools.venv, 3.0)?)
    } else {
        None
    };
    eprintln!(
        "  ours {:.0} msg/s per core; python {}",
        meta_ours.render.per_core(),
        meta_python.map_or_else(
            || "not run".into(),
            |p| format!("{:.0} msg/s per core", p.per_core())
        )
    );
    let signed_frames = match signed_needed {
        Some(count) => {
            eprintln!("signing {count} messages...");
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            frames::signed(count, &signer, threads)?.0
        }
        None => Vec::new(),
    };
    let unsigned_frames = unsigned_needed.map(frames::unsigned).unwrap_or_default();

    let mut results = Vec::new();
    let mut commands: HashMap<&'static str, String> = HashMap::new();
    for run in 1..=args.runs {
        for workload in &workloads {
            for &kind in &hubs {
                check_interrupted()?;
                let pool = if workload.signed {
                    &signed_frames
                } else {
                    &unsigned_frames
                };
                let frames = &pool[..workload.count.min(pool.len())];
                eprintln!(
                    "run {run}/{}: {} on the {} hub...",
                    args.runs,
                    workload.name,
                    kind.label()
                );
                let (result, command) = one_run(args, &tools, kind, workload, frames, run)?;
                eprintln!(
                    "  {} msg/s, lost {}, CPU {:.2} s, idle {:.1} MB, peak {:.1} MB{}",
                    result.rate.round(),
                    result.lost,
                    result.cpu_s,
                    result.idle_rss_mb,
                    result.peak_rss_mb,
                    match (result.p50_ms, result.p99_ms) {
                        (Some(a), Some(b)) => format!(", p50 {a:.3} ms, p99 {b:.3} ms"),
                        _ => String::new(),
                    }
                );
                commands.entry(kind.label()).or_insert(command);
                results.push(result);
            }
        }
    }
    let load_after = procfs::first_line(Path::new("/proc/loadavg"));
    let summaries = report::summarize(&results);
    let targets = report::targets(
        &summaries,
        Some(&sign_cost),
        Some(&sign_cost_tuned),
        Some(&meta_ours),
    );
    let table = report::table(&workloads, &summaries);
    println!("{table}");
    println!("{}", report::targets_table(&targets));

    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "workloads": workloads,
            "runs": results,
            "summaries": summaries,
            "targets": targets,
            "sign_cost": {
                "messages": sign_cost.messages,
                "cpu_s": sign_cost.cpu_s,
                "per_core": sign_cost.per_core(),
            },
            "meta": {
                "ours_per_core": meta_ours.render.per_core(),
                "ours_messages": meta_ours.render.messages,
                "ours_cpu_s": meta_ours.render.cpu_s,
                "bundled_load_ms": meta_ours.load_ms,
                "python_per_core": meta_python.map(|p| p.per_core()),
            },
            "sign_cost_without_avx2": {
                "messages": sign_cost_tuned.messages,
                "cpu_s": sign_cost_tuned.cpu_s,
                "per_core": sign_cost_tuned.per_core(),
            },
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        let context = MarkdownContext {
            args,
            tools: &tools,
            workloads: &workloads,
            results: &results,
            table: &table,
            targets: &report::targets_table(&targets),
            sign_cost: &sign_cost,
            sign_cost_tuned: &sign_cost_tuned,
            meta_ours: &meta_ours,
            meta_python: meta_python.as_ref(),
            commands: &commands,
            load_before: &load_before,
            load_after: &load_after,
            started,
        };
        std::fs::write(path, markdown(&context))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn one_run(
    args: &SuiteArgs,
    tools: &Tools,
    kind: HubKind,
    workload: &Workload,
    frames: &[Frame],
    run: usize,
) -> Result<(RunResult, String)> {
    let sandbox = tempfile::Builder::new().prefix("fedmsg-bench-").tempdir()?;
    let publisher = Publisher::bind()?;
    let spec = HubSpec {
        validate: workload.signed,
        sinks: workload.sinks,
        latency: workload.rate.is_some(),
        high_water_mark: args.hub_hwm,
        queue_capacity: args.hub_queue,
    };
    let mut hub = RunningHub::start(kind, tools, spec, sandbox.path(), publisher.endpoint())?;
    let ready_timeout = Duration::from_secs(60);
    publisher.wait_subscribed(ready_timeout, || {
        check_interrupted()?;
        hub.check_alive()
    })?;
    let sinks_up = Instant::now() + ready_timeout;
    while !hub.sinks_ready() {
        check_interrupted()?;
        hub.check_alive()?;
        if Instant::now() > sinks_up {
            bail!("the sinks did not start; log tail:\n{}", hub.log_tail());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs_f64(args.settle.max(0.0)));
    let pid = hub.pid();
    let load_avg = procfs::first_line(Path::new("/proc/loadavg"));
    let idle_rss_kb = procfs::status_field(pid, "VmRSS")?;
    let cpu0 = procfs::cpu_seconds(pid)?;
    let profiler = match &args.perf {
        Some(dir) => Some(Profiler::attach(
            dir,
            &args.perf_args,
            pid,
            &format!("{}-{}-{run}", workload.name, kind.label()),
        )?),
        None => None,
    };

    let sent = match workload.rate {
        Some(rate) => publisher.paced(frames, rate, &interrupted)?,
        None => publisher.burst(frames)?,
    };

    // Wait until every sink has everything, or nothing moves any more.
    let expected = frames.len() as u64;
    let quiet = Duration::from_secs_f64(args.quiet.max(0.5));
    let give_up = Instant::now() + Duration::from_secs_f64(args.timeout.max(1.0));
    let mut last_total = u64::MAX;
    let mut last_change = Instant::now();
    loop {
        check_interrupted()?;
        hub.check_alive()?;
        let counts: Vec<u64> = hub
            .counters()
            .iter()
            .map(|c| c.map_or(0, |c| c.count))
            .collect();
        let total: u64 = counts.iter().sum();
        if total != last_total {
            last_total = total;
            last_change = Instant::now();
        }
        if counts.iter().all(|&c| c >= expected)
            || last_change.elapsed() > quiet
            || Instant::now() > give_up
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu1 = procfs::cpu_seconds(pid)?;
    let peak_kb = procfs::status_field(pid, "VmHWM")?;
    let threads = procfs::status_field(pid, "Threads").unwrap_or(0);
    let before_stop = hub.counters();
    if let Some(profiler) = profiler {
        profiler.finish()?;
    }
    hub.stop()?;
    // The final counter files are written at shutdown; prefer them.
    let counters: Vec<hub::Counter> = hub
        .counters()
        .into_iter()
        .zip(before_stop)
        .map(|(after, before)| after.or(before).unwrap_or_default())
        .collect();

    let consumed = counters.iter().map(|c| c.count).min().unwrap_or(0);
    let delivered: u64 = counters.iter().map(|c| c.count).sum();
    let lost = (expected * counters.len() as u64).saturating_sub(delivered);
    let last_ts = counters
        .iter()
        .filter_map(|c| c.last_ts)
        .fold(f64::NAN, f64::max);
    let start_s = sent.start_ns as f64 / 1e9;
    let window_s = last_ts - start_s;
    let rate = if consumed > 0 && window_s > 0.0 {
        consumed as f64 / window_s
    } else {
        0.0
    };

    let (p50_ms, p99_ms, max_ms) = match hub.sinks.first().and_then(|s| s.received.clone()) {
        Some(path) => latencies(frames, &sent, &path)?,
        None => (None, None, None),
    };
    let result = RunResult {
        workload: workload.name,
        hub: kind.label(),
        run,
        published: sent.count,
        consumed,
        lost,
        rate,
        window_s,
        cpu_s: cpu1 - cpu0,
        idle_rss_mb: idle_rss_kb as f64 / 1024.0,
        peak_rss_mb: peak_kb as f64 / 1024.0,
        threads,
        publish_rate: sent.rate(),
        p50_ms,
        p99_ms,
        max_ms,
        load_avg,
    };
    Ok((result, hub.command.clone()))
}

/// A `perf record` attached to the hub; stopped (SIGINT, bounded wait,
/// then SIGKILL) by [`Profiler::finish`] or on drop.
struct Profiler {
    child: Option<std::process::Child>,
}

impl Profiler {
    fn attach(dir: &Path, perf_args: &str, pid: u32, name: &str) -> Result<Profiler> {
        std::fs::create_dir_all(dir)?;
        let output = dir.join(format!("{name}.data"));
        let child = Command::new("perf")
            .arg("record")
            .args(perf_args.split_whitespace())
            .arg("-p")
            .arg(pid.to_string())
            .arg("-o")
            .arg(&output)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
            .spawn()
            .context("cannot start perf")?;
        // perf needs a moment to attach to every thread.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Profiler { child: Some(child) })
    }

    fn finish(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("perf did not stop")
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

type Percentiles = (Option<f64>, Option<f64>, Option<f64>);

/// p50, p99 and max of receive time − send time, matched by `msg_id`.
fn latencies(frames: &[Frame], sent: &publisher::Sent, received: &Path) -> Result<Percentiles> {
    let sent_at: HashMap<&str, u64> = frames
        .iter()
        .map(|f| f.msg_id.as_str())
        .zip(sent.send_ns.iter().copied())
        .collect();
    let mut ms: Vec<f64> = hub::read_received(received)?
        .iter()
        .filter_map(|(id, at)| {
            let sent = *sent_at.get(id.as_str())?;
            Some(at.saturating_sub(sent) as f64 / 1e6)
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    Ok((
        report::quantile(&ms, 0.50),
        report::quantile(&ms, 0.99),
        ms.last().copied(),
    ))
}

struct MarkdownContext<'a> {
    args: &'a SuiteArgs,
    tools: &'a Tools,
    workloads: &'a [Workload],
    results: &'a [RunResult],
    table: &'a str,
    targets: &'a str,
    sign_cost: &'a SignCost,
    sign_cost_tuned: &'a SignCost,
    meta_ours: &'a meta::OursMeta,
    meta_python: Option<&'a meta::MetaCost>,
    commands: &'a HashMap<&'static str, String>,
    load_before: &'a str,
    load_after: &'a str,
    started: SystemTime,
}

fn command_output(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn cpuinfo_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn mem_total_gb() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GB", kb / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown".into())
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn git_revision(root: &Path) -> String {
    let git = Path::new("git");
    let root = root.display().to_string();
    let rev = command_output(git, &["-C", &root, "rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args(["-C", &root, "status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    if dirty {
        format!("{rev} + uncommitted changes")
    } else {
        rev
    }
}

const PY_VERSIONS: &str = "import sys, zmq, importlib.metadata as m\n\
print('CPython %s, fedmsg %s, moksha.hub %s, Twisted %s, pyzmq %s (libzmq %s), cryptography %s, pyOpenSSL %s' % (\n\
  sys.version.split()[0], m.version('fedmsg'), m.version('moksha.hub'), m.version('Twisted'),\n\
  zmq.__version__, zmq.zmq_version(), m.version('cryptography'), m.version('pyOpenSSL')))";

fn markdown(c: &MarkdownContext<'_>) -> String {
    let (zmq_major, zmq_minor, zmq_patch) = zmq::version();
    let date = command_output(Path::new("date"), &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let elapsed_min = c.started.elapsed().map_or(0.0, |d| d.as_secs_f64() / 60.0);
    let python = command_output(&c.tools.venv.join("bin/python"), &["-c", PY_VERSIONS]);
    let mut out = String::new();
    let _ = write!(
        out,
        "# Benchmarks: fedmsg-hub (Rust) and the Python fedmsg-hub\n\n\
         Generated by `bench/run.sh` on {date} ({elapsed_min:.1} minutes). Do not edit by\n\
         hand: run `bench/run.sh` again (arguments are passed to\n\
         `fedmsg-bench suite`). What bounds each figure is explained in\n\
         [ARCHITECTURE.md § Performance](ARCHITECTURE.md#performance).\n\n\
         ## Results (medians of {runs} runs)\n\n{table}\n\
         `lost` = messages published × sinks − messages the sinks counted.\n\
         Latency columns are filled for the paced runs only.\n\n\
         ### Targets\n\n{targets}\n\
         Signed publisher: {per_core:.0} msg/s per core ({msgs} messages built, signed and\n\
         encoded on one thread in {cpu:.2} CPU s with `fedmsg_wire::crypto::Signer`, in a child\n\
         process); {tuned:.0} msg/s per core with `OPENSSL_ia32cap={cap}` (OpenSSL's\n\
         MULX/ADX big-number code instead of its AVX2 code: some `openssl speed rsa2048`\n\
         runs on this machine signed 25 % faster that way, others no faster). Python\n\
         fedmsg: 22 msg/s stock, 1,135 with its key cached (`shared/pyfedmsg/README.md`).\n\n\
         fedmsg.meta: every field (title, subtitle, link, icons, usernames, packages,\n\
         objects, emails, avatars) of the {meta_n} example messages of\n\
         `shared/vectors/upstream/meta-examples.json` on one thread: ours (`fedmsg-meta`,\n\
         bundled rules) {meta_ours:.0} msg/s per core; Python fedmsg.meta with\n\
         fedmsg_meta_fedora_infrastructure 0.31.0 (`meta/benches/python_meta.py`)\n\
         {meta_python} (CPU time of the rendering thread on both sides; also\n\
         `target/release/fedmsg-bench meta`). Loading the bundled rules: {meta_load:.1} ms.\n\n",
        runs = c.args.runs,
        table = c.table,
        targets = c.targets,
        per_core = c.sign_cost.per_core(),
        msgs = c.sign_cost.messages,
        cpu = c.sign_cost.cpu_s,
        tuned = c.sign_cost_tuned.per_core(),
        cap = IA32CAP_NO_AVX2,
        meta_n = meta::messages(&c.tools.pyfedmsg.join("..")).map_or(0, |m| m.len()),
        meta_ours = c.meta_ours.render.per_core(),
        meta_python = c.meta_python.map_or_else(
            || "not run".into(),
            |p| format!("{:.0} msg/s per core", p.per_core())
        ),
        meta_load = c.meta_ours.load_ms,
    );
    out.push_str("## Workloads\n\n");
    for w in c.workloads {
        let _ = writeln!(out, "* `{}`: {}.", w.name, w.title);
    }
    out.push_str(
        "\nEvery message is `shared/pyfedmsg/bench_publish.py`'s: topic\n\
         `org.fedoraproject.dev.bench.msg`, payload `{\"seq\": i, \"payload\": 16 * \"x\"}`,\n\
         the envelope fields of `FedMsgContext.publish`, signed envelopes by `shell-app01`\n\
         from `shared/pyfedmsg/pki` (about 2.3 kB; unsigned about 200 B). All frames are\n\
         built and signed before the first run; the publisher (a thread of\n\
         `fedmsg-bench`) sends them from an XPUB socket with SNDHWM 0 (unlimited).\n\n",
    );
    out.push_str("## Method\n\n");
    out.push_str(
        "Per run: a fresh hub in a temporary directory; wait for its subscription\n\
         (XPUB) and for every sink's counter file; sleep the settle time; read the hub's\n\
         `VmRSS` (idle RSS) and CPU time; publish; wait until every sink counted every\n\
         message (or no count moved for the quiet time); read CPU time, `VmHWM` (peak\n\
         RSS) and thread count; stop the hub. **msg/s** = consumed / (last consume − first\n\
         send), as `shared/pyfedmsg/bench_hub.py` computes it; **CPU s** = the hub's\n\
         utime + stime, all threads, over that window (10 ms ticks). **Latency** = the\n\
         sink's clock at `consume` minus the publisher's clock just before the send,\n\
         matched by `msg_id` (same host, `CLOCK_REALTIME`). Runs of the two hubs are\n\
         interleaved, so machine noise hits both alike.\n\n\
         Sinks: ours is `bench/counter` (`fedmsg-bench-counter`, plus copies 2–4 for the\n\
         fan-out; a clock read and three atomic stores per message). Python: the\n\
         reference `pyfedmsg_counter:CounterConsumer` for the `signed` and `unsigned`\n\
         bursts, and `bench/py/fedmsg_bench_sink.py` (same counter file, plus receive\n\
         times) for the paced runs and the fan-out.\n\n",
    );
    let _ = write!(
        out,
        "## Machine and versions\n\n\
         * CPU: {cpu}, {cores} cores; memory {mem}; {os}, kernel {kernel}\n\
         * load average before the suite: `{before}`; after: `{after}` (other work was\n\
         \x20 running on the machine; every run's load average is in the table below)\n\
         * {hub_version}, git {git}; libzmq {zmq_major}.{zmq_minor}.{zmq_patch} (vendored); {openssl}\n\
         * {rustc}\n\
         * Python hub: {python}\n\n",
        cpu = cpuinfo_model(),
        cores = std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem = mem_total_gb(),
        os = os_name(),
        kernel = procfs::first_line(Path::new("/proc/sys/kernel/osrelease")),
        before = c.load_before,
        after = c.load_after,
        hub_version = command_output(&c.tools.build_dir.join("fedmsg-hub"), &["--version"]),
        git = git_revision(&workspace_root()),
        openssl = openssl::version::version(),
        rustc = command_output(Path::new("rustc"), &["--version"]),
        python = python,
    );
    let _ = write!(
        out,
        "## Commands\n\n\
         ```sh\n\
         bench/run.sh        # = cargo build --release -p fedmsg-hub -p fedmsg-bench -p fedmsg-bench-counter{{,-2,-3,-4}}\n\
         \x20                   #   target/release/fedmsg-bench suite --markdown BENCHMARKS.md\n\
         ```\n\n\
         Effective arguments: `--runs {runs} --signed-count {sc} --unsigned-count {uc}\n\
         --paced-count {pc} --rate {rate} --fanout-count {fc} --fanout-sinks {fs} --settle {settle}\n\
         --quiet {quiet} --hub-hwm {hwm} --hub-queue {queue}`.\n\n\
         Hub command lines (the sandbox path changes per run):\n\n",
        runs = c.args.runs,
        sc = c.args.signed_count,
        uc = c.args.unsigned_count,
        pc = c.args.paced_count,
        rate = c.args.rate,
        fc = c.args.fanout_count,
        fs = c.args.fanout_sinks,
        settle = c.args.settle,
        quiet = c.args.quiet,
        hwm = c.args.hub_hwm,
        queue = c.args.hub_queue,
    );
    let mut labels: Vec<_> = c.commands.iter().collect();
    labels.sort();
    for (label, command) in labels {
        let _ = writeln!(out, "* {label}: `{command}`");
    }
    out.push_str(
        "\nOur hub reads one generated `fedmsg.d/bench.toml` (the publisher's endpoint,\n\
         `high_water_mark` and `plugin_queue_capacity` (see `--hub-hwm`, `--hub-queue`),\n\
         `dedup_window = 0` (the Python hub has no duplicate filter), `validate_signatures`, the shared PKI's CA and CRL, `routing_policy` for the\n\
         bench topic, one `[bench_counter*]` table per sink). The Python hub runs in a\n\
         directory whose `fedmsg.d/` holds a generated `base.py` (`shared/pyfedmsg`'s\n\
         settings with the publisher's endpoint) and links to `shared/pyfedmsg`'s\n\
         `ssl.py`, `counter.py` and `logging.py` (`PYFEDMSG_HOME`, `PYFEDMSG_VALIDATE`).\n\n",
    );
    out.push_str("## Every run\n\n");
    out.push_str(&report::runs_table(c.results));
    out
}
