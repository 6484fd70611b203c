//! `fedmsg-check`: reads one report from a hub's monitoring socket and says
//! whether its consumers and producers are healthy, Nagios-style.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fedmsg_wire::config::{self, ConfigArgs};
use fedmsg_wire::report::{ConsumerReport, ProducerReport, Report};

/// Check the health of a running fedmsg-hub through its monitoring socket.
///
/// Connects to `moksha.monitoring.socket` (or --socket), waits for one
/// status report (at most --timeout seconds), prints a status line and a
/// table of consumers (plugins) and producers, and exits with a Nagios
/// status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (no socket configured, no
/// report in time, unreadable report).
///
/// CRITICAL: the hub cannot validate signatures (its CA or CRL could not be
/// loaded, so every signed message is rejected), a consumer is disabled
/// (too many panics in a row) or failed to
/// start (`initialized` false), a producer is not initialized, a consumer
/// or producer named with -c/-p is missing or not initialized, or a
/// consumer's backlog, errors or drops reach the critical thresholds.
/// WARNING: they reach the warning thresholds. Errors (errors and panics of
/// `consume`) and drops (queue full) count over the last minute of the
/// hub's life, as the hub reports them; with a report from a Python hub,
/// which has no such window, its `exceptions` (since its previous report)
/// count instead. The defaults: backlog 1000 / 5000 messages, errors 1 /
/// 50, drops 1 / 1000 (warning / critical).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Seconds to wait for a report.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    timeout: f64,
    /// A consumer that must be running (its name in the report). Repeatable.
    #[arg(long = "consumer", short = 'c', value_name = "NAME")]
    consumers: Vec<String>,
    /// A producer that must be running. Repeatable.
    #[arg(long = "producer", short = 'p', value_name = "NAME")]
    producers: Vec<String>,
    /// The monitoring endpoint [default: config moksha.monitoring.socket].
    #[arg(long, value_name = "URL")]
    socket: Option<String>,
    /// Queued messages at which a consumer is WARNING.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    backlog_warning: u64,
    /// Queued messages at which a consumer is CRITICAL.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    backlog_critical: u64,
    /// Errors and panics in the last minute at which a consumer is WARNING.
    #[arg(long, value_name = "N", default_value_t = 1)]
    errors_warning: u64,
    /// Errors and panics in the last minute at which a consumer is CRITICAL.
    #[arg(long, value_name = "N", default_value_t = 50)]
    errors_critical: u64,
    /// Messages dropped in the last minute at which a consumer is WARNING.
    #[arg(long, value_name = "N", default_value_t = 1)]
    dropped_warning: u64,
    /// Messages dropped in the last minute at which a consumer is CRITICAL.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    dropped_critical: u64,
    /// Print only the report, as indented JSON (what fedmsg's fedmsg-check
    /// printed with it), instead of the status line and table; the exit
    /// status still gives the verdict.
    #[arg(long)]
    json: bool,
}

/// Nagios states, in increasing severity (the exit status is the worst).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl State {
    fn label(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    fedmsg_wire::logging::init(None, "warn");
    let state = match run(&args) {
        Ok(state) => state,
        Err(error) => {
            println!("FEDMSG UNKNOWN - {error:#}");
            State::Unknown
        }
    };
    ExitCode::from(state as u8)
}

fn run(args: &Args) -> anyhow::Result<State> {
    let url = match &args.socket {
        Some(url) => url.clone(),
        None => {
            let loaded = config::load(&args.config).context("cannot load the configuration")?;
            for notice in loaded.notices() {
                tracing::warn!("{notice}");
            }
            let config = loaded.config;
            config.moksha.monitoring.socket.context(
                "No monitoring endpoint has been configured: please set \"moksha.monitoring.socket\"",
            )?
        }
    };
    let raw = receive(&url, args.timeout)?;
    let report: Report = serde_json::from_slice(&raw)
        .with_context(|| format!("the report from {url} is not a monitoring report"))?;
    let verdicts = judge(&report, &Thresholds::from(args));
    let worst = verdicts.iter().map(|v| v.state).max().unwrap_or(State::Ok);
    if args.json {
        // Only the report, so that it can be piped into a JSON tool; the
        // verdict is the exit status.
        let value: serde_json::Value = serde_json::from_slice(&raw)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(worst);
    }
    println!(
        "FEDMSG {} - {}",
        worst.label(),
        headline(&report, &verdicts)
    );
    print!("{}", table(&report, &verdicts));
    print_python_messages(args, &verdicts);
    Ok(worst)
}

/// Connects, subscribes to everything and waits for one message.
fn receive(url: &str, timeout: f64) -> anyhow::Result<Vec<u8>> {
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::SUB)?;
    socket.set_linger(0)?;
    socket.set_subscribe(b"")?;
    socket
        .connect(url)
        .with_context(|| format!("cannot connect to {url}"))?;
    let wait = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::MAX);
    let millis = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    if socket.poll(zmq::POLLIN, millis)? == 0 {
        anyhow::bail!(
            "Failed to receive message from the monitoring endpoint ({url}) in {timeout} seconds."
        );
    }
    Ok(socket.recv_bytes(0)?)
}

/// The thresholds, from the flags.
#[derive(Debug, Clone)]
struct Thresholds {
    consumers: Vec<String>,
    producers: Vec<String>,
    backlog: (u64, u64),
    errors: (u64, u64),
    dropped: (u64, u64),
}

impl From<&Args> for Thresholds {
    fn from(args: &Args) -> Self {
        Thresholds {
            consumers: args.consumers.clone(),
            producers: args.producers.clone(),
            backlog: (args.backlog_warning, args.backlog_critical),
            errors: (args.errors_warning, args.errors_critical),
            dropped: (args.dropped_warning, args.dropped_critical),
        }
    }
}

/// What was found about one consumer or producer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    kind: &'static str,
    name: String,
    state: State,
    reasons: Vec<String>,
}

fn judge(report: &Report, t: &Thresholds) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    // First, so that the status line leads with it: while the CA or CRL
    // cannot be loaded, every signed message is rejected, however healthy
    // the consumers look.
    if let Some(problem) = report.hub.as_ref().and_then(|h| h.trust_problem.as_ref()) {
        verdicts.push(Verdict {
            kind: "hub",
            name: "signature validation".to_owned(),
            state: State::Critical,
            reasons: vec![format!("every signed message is rejected: {problem}")],
        });
    }
    verdicts.extend(report.consumers.iter().map(|c| consumer(c, t)));
    verdicts.extend(report.producers.iter().map(producer));
    for (kind, names, present) in [
        (
            "consumer",
            &t.consumers,
            report
                .consumers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
        ),
        (
            "producer",
            &t.producers,
            report.producers.iter().map(|p| p.name.as_str()).collect(),
        ),
    ] {
        for name in names.iter().filter(|n| !present.contains(&n.as_str())) {
            verdicts.push(Verdict {
                kind,
                name: name.clone(),
                state: State::Critical,
                reasons: vec!["is not active".into()],
            });
        }
    }
    verdicts
}

/// `value` against (warning, critical).
fn level(value: u64, (warning, critical): (u64, u64)) -> State {
    if value >= critical {
        State::Critical
    } else if value >= warning {
        State::Warning
    } else {
        State::Ok
    }
}

fn consumer(c: &ConsumerReport, t: &Thresholds) -> Verdict {
    let mut found: Vec<(State, String)> = Vec::new();
    if !c.initialized {
        let why = match (c.state.as_deref(), &c.error) {
            (Some("failed"), Some(error)) => format!("failed to start: {error}"),
            (Some("disabled"), _) => "disabled after consecutive panics".to_owned(),
            _ => "is not initialized".to_owned(),
        };
        found.push((State::Critical, why));
    }
    let (errors, what_errors, dropped, window) = match &c.recent {
        Some(w) => (
            w.counters.errors + w.counters.panics,
            // Say which: a panic is not an error the plugin reported.
            match (w.counters.errors, w.counters.panics) {
                (e, 0) => format!("{e} errors"),
                (0, p) => format!("{p} panics"),
                (e, p) => format!("{e} errors and {p} panics"),
            },
            w.counters.dropped,
            format!("in {:.0}s", w.seconds),
        ),
        None => (
            c.exceptions,
            format!("{} exceptions", c.exceptions),
            0,
            "since the last report".to_owned(),
        ),
    };
    for (state, what) in [
        (
            level(c.backlog, t.backlog),
            format!("backlog {}", c.backlog),
        ),
        (level(errors, t.errors), format!("{what_errors} {window}")),
        (
            level(dropped, t.dropped),
            format!("{dropped} dropped {window}"),
        ),
    ] {
        if state > State::Ok {
            found.push((state, what));
        }
    }
    verdict("consumer", &c.name, found)
}

fn producer(p: &ProducerReport) -> Verdict {
    let mut found = Vec::new();
    if !p.initialized {
        let why = p
            .error
            .clone()
            .unwrap_or_else(|| "is not initialized".into());
        found.push((State::Critical, why));
    } else if p.exceptions > 0 {
        found.push((
            State::Warning,
            format!("{} failures since the last report", p.exceptions),
        ));
    }
    verdict("producer", &p.name, found)
}

fn verdict(kind: &'static str, name: &str, found: Vec<(State, String)>) -> Verdict {
    Verdict {
        kind,
        name: name.to_owned(),
        state: found.iter().map(|(s, _)| *s).max().unwrap_or(State::Ok),
        reasons: found.into_iter().map(|(_, why)| why).collect(),
    }
}

/// The text after `FEDMSG <STATE> - `: the problems, or a count.
fn headline(report: &Report, verdicts: &[Verdict]) -> String {
    let problems: Vec<String> = verdicts
        .iter()
        .filter(|v| v.state > State::Ok)
        .map(|v| format!("{} {}: {}", v.kind, v.name, v.reasons.join(", ")))
        .collect();
    if problems.is_empty() {
        format!(
            "{} consumers, {} producers",
            report.consumers.len(),
            report.producers.len()
        )
    } else {
        problems.join("; ")
    }
}

fn table(report: &Report, verdicts: &[Verdict]) -> String {
    let state_of = |kind: &str, name: &str| {
        verdicts
            .iter()
            .find(|v| v.kind == kind && v.name == name)
            .map_or("OK", |v| v.state.label())
    };
    let mut rows = vec![[
        "CONSUMER", "STATE", "BACKLOG", "RECEIVED", "CONSUMED", "ERRORS", "PANICS", "DROPPED",
        "LAST_MS", "STATUS",
    ]
    .map(str::to_owned)
    .to_vec()];
    for c in &report.consumers {
        let total = c.total.unwrap_or_default();
        let state = c
            .state
            .clone()
            .unwrap_or_else(|| if c.initialized { "running" } else { "stopped" }.to_owned());
        let last = c
            .last_processing_time
            .or_else(|| c.times.last().copied())
            .map_or_else(|| "-".to_owned(), |s| format!("{:.2}", s * 1000.0));
        let counts = match c.total {
            Some(_) => [
                total.received,
                total.consumed,
                total.errors,
                total.panics,
                total.dropped,
            ]
            .map(|n| n.to_string()),
            // A Python hub: only per-report counts exist.
            None => [
                c.headcount_in.to_string(),
                c.headcount_out.to_string(),
                c.exceptions.to_string(),
                "-".into(),
                "-".into(),
            ],
        };
        let mut row = vec![c.name.clone(), state, c.backlog.to_string()];
        row.extend(counts);
        row.push(last);
        row.push(state_of("consumer", &c.name).to_owned());
        rows.push(row);
    }
    let mut text = align(&rows);
    let mut rows = vec![["PRODUCER", "INITIALIZED", "DETAILS", "STATUS"]
        .map(str::to_owned)
        .to_vec()];
    for p in &report.producers {
        rows.push(vec![
            p.name.clone(),
            p.initialized.to_string(),
            producer_details(p),
            state_of("producer", &p.name).to_owned(),
        ]);
    }
    text.push('\n');
    text.push_str(&align(&rows));
    text
}

fn producer_details(p: &ProducerReport) -> String {
    let mut parts = Vec::new();
    if let Some(endpoint) = &p.endpoint {
        parts.push(endpoint.clone());
    }
    if let Some(published) = p.published {
        parts.push(format!(
            "published {published}, dropped {}, failed {}",
            p.dropped.unwrap_or(0),
            p.failed.unwrap_or(0)
        ));
    }
    if let Some(frequency) = p.frequency {
        parts.push(format!("every {frequency}s"));
    }
    if let Some(error) = &p.error {
        parts.push(error.clone());
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

/// Left-aligned columns, two spaces apart.
fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// fedmsg's fedmsg-check messages, on standard error.
fn print_python_messages(args: &Args, verdicts: &[Verdict]) {
    if args.consumers.is_empty() && args.producers.is_empty() {
        eprintln!("No consumers or producers specified so all will be shown.");
        return;
    }
    let named = |v: &&Verdict| args.consumers.contains(&v.name) || args.producers.contains(&v.name);
    let mut bad = false;
    for v in verdicts.iter().filter(named) {
        if v.reasons.iter().any(|r| r == "is not active") {
            eprintln!("\"{}\" is not active!", v.name);
            bad = true;
        } else if v.state == State::Critical {
            eprintln!("\"{}\" is not initialized!", v.name);
            bad = true;
        }
    }
    if !bad {
        eprintln!("All consumers and producers are active!");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedmsg_wire::report::HubReport;
    use fedmsg_wire::report::{Counters, Window};

    fn thresholds() -> Thresholds {
        Thresholds {
            consumers: vec![],
            producers: vec![],
            backlog: (1000, 5000),
            errors: (1, 50),
            dropped: (1, 1000),
        }
    }

    fn running(name: &str) -> ConsumerReport {
        ConsumerReport {
            name: name.into(),
            initialized: true,
            state: Some("running".into()),
            total: Some(Counters::default()),
            recent: Some(Window {
                seconds: 60.0,
                counters: Counters::default(),
            }),
            ..ConsumerReport::default()
        }
    }

    fn worst(report: &Report, t: &Thresholds) -> State {
        judge(report, t)
            .iter()
            .map(|v| v.state)
            .max()
            .unwrap_or(State::Ok)
    }

    #[test]
    fn healthy_is_ok_and_disabled_is_critical() {
        let mut report = Report {
            consumers: vec![running("tally")],
            ..Report::default()
        };
        assert_eq!(worst(&report, &thresholds()), State::Ok);
        let mut faulty = running("faulty");
        faulty.initialized = false;
        faulty.state = Some("disabled".into());
        report.consumers.push(faulty);
        assert_eq!(worst(&report, &thresholds()), State::Critical);
        let verdicts = judge(&report, &thresholds());
        assert!(headline(&report, &verdicts).contains("faulty: disabled"));
    }

    #[test]
    fn thresholds_grade_backlog_errors_and_drops() {
        let t = thresholds();
        let mut c = running("p");
        c.backlog = 1000;
        assert_eq!(consumer(&c, &t).state, State::Warning);
        c.backlog = 5000;
        assert_eq!(consumer(&c, &t).state, State::Critical);
        c.backlog = 0;
        if let Some(w) = c.recent.as_mut() {
            w.counters.panics = 1;
        }
        assert_eq!(consumer(&c, &t).state, State::Warning);
        if let Some(w) = c.recent.as_mut() {
            w.counters.panics = 0;
            w.counters.dropped = 1000;
        }
        assert_eq!(consumer(&c, &t).state, State::Critical);
    }

    #[test]
    fn named_but_missing_is_critical() {
        let report = Report {
            consumers: vec![running("tally")],
            ..Report::default()
        };
        let mut t = thresholds();
        t.consumers = vec!["tally".into(), "ghost".into()];
        assert_eq!(worst(&report, &t), State::Critical);
    }

    #[test]
    fn unavailable_trust_material_is_critical_and_said_first() {
        let report = Report {
            consumers: vec![running("tally")],
            hub: Some(HubReport {
                trust_problem: Some("CA certificate unavailable: cannot read /x".into()),
                ..HubReport::default()
            }),
            ..Report::default()
        };
        let verdicts = judge(&report, &thresholds());
        assert_eq!(worst(&report, &thresholds()), State::Critical);
        let line = headline(&report, &verdicts);
        assert!(
            line.starts_with("hub signature validation: every signed message is rejected: CA certificate unavailable"),
            "{line}"
        );
    }

    #[test]
    fn python_reports_use_exceptions() {
        let report: Report = serde_json::from_str(
            r#"{"consumers": [{"name": "C", "initialized": true, "exceptions": 2,
                "backlog": 0, "headcount_in": 5, "headcount_out": 3, "times": [0.001]}],
                "producers": []}"#,
        )
        .expect("parses");
        assert_eq!(worst(&report, &thresholds()), State::Warning);
        let text = table(&report, &judge(&report, &thresholds()));
        assert!(text.contains("C "), "{text}");
        assert!(text.contains("1.00"), "{text}");
    }
}
