//! Results: one record per run, medians per (workload, hub), the console
//! table and `BENCHMARKS.md`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::frames::SignCost;

/// A workload, as both hubs run it.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    /// Short name (`signed`, `unsigned`, ...).
    pub name: &'static str,
    /// What it is, for the report.
    pub title: String,
    /// Messages are signed and the hub validates them.
    pub signed: bool,
    /// Messages published.
    pub count: usize,
    /// Paced rate (msg/s); `None` = as fast as possible.
    pub rate: Option<f64>,
    /// Sink plugins / consumers.
    pub sinks: usize,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Workload name.
    pub workload: &'static str,
    /// `ours` or `python`.
    pub hub: &'static str,
    /// 1-based repetition.
    pub run: usize,
    /// Messages published.
    pub published: usize,
    /// Messages that reached every sink (the smallest sink count).
    pub consumed: u64,
    /// Deliveries expected (published × sinks) minus deliveries counted.
    pub lost: u64,
    /// consumed / (last consume − first send), msg/s.
    pub rate: f64,
    /// last consume − first send, seconds.
    pub window_s: f64,
    /// Hub CPU seconds (all threads) over the window.
    pub cpu_s: f64,
    /// Hub VmRSS before publishing, MB.
    pub idle_rss_mb: f64,
    /// Hub VmHWM after the run, MB.
    pub peak_rss_mb: f64,
    /// Hub threads at the end of the run.
    pub threads: u64,
    /// Publisher send rate, msg/s.
    pub publish_rate: f64,
    /// Publish → consume latency percentiles, ms (paced runs).
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Maximum.
    pub max_ms: Option<f64>,
    /// `/proc/loadavg` when the run started.
    pub load_avg: String,
}

/// Medians over the runs of one (workload, hub).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Workload name.
    pub workload: &'static str,
    /// Hub.
    pub hub: &'static str,
    /// Runs that completed.
    pub runs: usize,
    /// Median rate.
    pub rate: f64,
    /// Lowest and highest rate.
    pub rate_range: (f64, f64),
    /// Median p50 latency, ms.
    pub p50_ms: Option<f64>,
    /// Median p99 latency, ms.
    pub p99_ms: Option<f64>,
    /// Median CPU seconds.
    pub cpu_s: f64,
    /// Median hub CPU microseconds per consumed message (all threads): less
    /// sensitive than msg/s to what else runs on the machine.
    pub cpu_us_per_msg: f64,
    /// Median idle RSS, MB.
    pub idle_rss_mb: f64,
    /// Median peak RSS, MB.
    pub peak_rss_mb: f64,
    /// Largest loss of any run.
    pub lost_max: u64,
    /// Total loss over the runs.
    pub lost_total: u64,
}

/// Median of some values (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Medians of every (workload, hub) present in `results`, in first-seen order.
pub fn summarize(results: &[RunResult]) -> Vec<Summary> {
    let mut keys: Vec<(&'static str, &'static str)> = Vec::new();
    for r in results {
        if !keys.contains(&(r.workload, r.hub)) {
            keys.push((r.workload, r.hub));
        }
    }
    keys.into_iter()
        .map(|(workload, hub)| {
            let runs: Vec<&RunResult> = results
                .iter()
                .filter(|r| r.workload == workload && r.hub == hub)
                .collect();
            let pick = |f: &dyn Fn(&RunResult) -> f64| -> f64 {
                median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>()).unwrap_or(f64::NAN)
            };
            let pick_opt = |f: &dyn Fn(&RunResult) -> Option<f64>| -> Option<f64> {
                median(&runs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
            };
            let rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
            Summary {
                workload,
                hub,
                runs: runs.len(),
                rate: pick(&|r| r.rate),
                rate_range: (
                    rates.iter().copied().fold(f64::INFINITY, f64::min),
                    rates.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                ),
                p50_ms: pick_opt(&|r| r.p50_ms),
                p99_ms: pick_opt(&|r| r.p99_ms),
                cpu_s: pick(&|r| r.cpu_s),
                cpu_us_per_msg: pick(&|r| {
                    if r.consumed > 0 {
                        r.cpu_s * 1e6 / r.consumed as f64
                    } else {
                        f64::NAN
                    }
                }),
                idle_rss_mb: pick(&|r| r.idle_rss_mb),
                peak_rss_mb: pick(&|r| r.peak_rss_mb),
                lost_max: runs.iter().map(|r| r.lost).max().unwrap_or(0),
                lost_total: runs.iter().map(|r| r.lost).sum(),
            }
        })
        .collect()
}

fn fmt_rate(rate: f64) -> String {
    if !rate.is_finite() {
        return "—".into();
    }
    let rounded = rate.round() as u64;
    let digits = rounded.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "—".into(), |v| format!("{v:.decimals$}"))
}

/// The results table (Markdown, also printed on the console).
pub fn table(workloads: &[Workload], summaries: &[Summary]) -> String {
    let mut out = String::new();
    out.push_str("| workload | hub | msg/s consumed (min–max) | p50 ms | p99 ms | CPU s | CPU µs/msg | idle RSS MB | peak RSS MB | lost (max of runs) |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for workload in workloads {
        for s in summaries.iter().filter(|s| s.workload == workload.name) {
            let _ = writeln!(
                out,
                "| {} | {} | **{}** ({}–{}) | {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {} |",
                workload.name,
                s.hub,
                fmt_rate(s.rate),
                fmt_rate(s.rate_range.0),
                fmt_rate(s.rate_range.1),
                fmt_opt(s.p50_ms, 3),
                fmt_opt(s.p99_ms, 3),
                s.cpu_s,
                s.cpu_us_per_msg,
                s.idle_rss_mb,
                s.peak_rss_mb,
                s.lost_max,
            );
        }
    }
    out
}

/// One target of issue 7 and whether our hub meets it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is measured.
    pub what: &'static str,
    /// The goal, as text.
    pub goal: &'static str,
    /// The measured value, as text.
    pub measured: String,
    /// Met?
    pub met: Option<bool>,
}

/// Checks our medians against the targets.
pub fn targets(
    summaries: &[Summary],
    sign: Option<&SignCost>,
    sign_without_avx2: Option<&SignCost>,
    meta: Option<&crate::meta::OursMeta>,
) -> Vec<Target> {
    let ours = |workload: &str| {
        summaries
            .iter()
            .find(|s| s.hub == "ours" && s.workload == workload)
    };
    let mut out = Vec::new();
    let mut check = |what, goal, value: Option<f64>, unit: &str, ok: &dyn Fn(f64) -> bool| {
        out.push(Target {
            what,
            goal,
            measured: value.map_or_else(|| "not run".into(), |v| format!("{} {unit}", fmt_num(v))),
            met: value.map(ok),
        });
    };
    check(
        "signed + validated throughput",
        "≥ 40,000 msg/s",
        ours("signed").map(|s| s.rate),
        "msg/s",
        &|v| v >= 40_000.0,
    );
    check(
        "unsigned throughput",
        "≥ 500,000 msg/s",
        ours("unsigned").map(|s| s.rate),
        "msg/s",
        &|v| v >= 500_000.0,
    );
    let idle = summaries
        .iter()
        .filter(|s| s.hub == "ours")
        .map(|s| s.idle_rss_mb)
        .fold(None, |acc: Option<f64>, v| {
            Some(acc.map_or(v, |a| a.max(v)))
        });
    check(
        "idle RSS (largest median of all workloads)",
        "≤ 12 MB",
        idle,
        "MB",
        &|v| v <= 12.0,
    );
    check(
        "peak RSS during the signed burst",
        "≤ 40 MB",
        ours("signed").map(|s| s.peak_rss_mb),
        "MB",
        &|v| v <= 40.0,
    );
    check(
        "p99 publish→consume, 1,000 msg/s signed",
        "≤ 1 ms",
        ours("paced-signed").and_then(|s| s.p99_ms),
        "ms",
        &|v| v <= 1.0,
    );
    check(
        "p99 publish→consume, 1,000 msg/s unsigned",
        "≤ 1 ms",
        ours("paced-unsigned").and_then(|s| s.p99_ms),
        "ms",
        &|v| v <= 1.0,
    );
    let lost = summaries
        .iter()
        .filter(|s| s.hub == "ours")
        .map(|s| s.lost_total as f64)
        .fold(None, |acc: Option<f64>, v| Some(acc.unwrap_or(0.0) + v));
    check(
        "messages lost, all runs (publisher HWM unlimited)",
        "0",
        lost,
        "",
        &|v| v == 0.0,
    );
    check(
        "signed publisher (build + sign + encode), per core",
        "≥ 1,400 msg/s",
        sign.map(SignCost::per_core),
        "msg/s",
        &|v| v >= 1_400.0,
    );
    check(
        "the same with `OPENSSL_ia32cap=:~0x20` (no AVX2)",
        "≥ 1,400 msg/s",
        sign_without_avx2.map(SignCost::per_core),
        "msg/s",
        &|v| v >= 1_400.0,
    );
    check(
        "fedmsg.meta, every field, example mix, per core",
        "≥ 100,000 msg/s",
        meta.map(|m| m.render.per_core()),
        "msg/s",
        &|v| v >= 100_000.0,
    );
    check(
        "fedmsg.meta: loading the bundled rules",
        "≤ 50 ms",
        meta.map(|m| m.load_ms),
        "ms",
        &|v| v <= 50.0,
    );
    out
}

fn fmt_num(v: f64) -> String {
    if v >= 1000.0 {
        fmt_rate(v)
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The targets table (Markdown).
pub fn targets_table(targets: &[Target]) -> String {
    let mut out = String::from("| target | goal | ours (median) | met |\n|---|---|---:|---|\n");
    for t in targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            t.what, t.goal, t.measured, met
        );
    }
    out
}

/// Every run's figures (Markdown).
pub fn runs_table(results: &[RunResult]) -> String {
    let mut out = String::from(
        "| workload | hub | run | published | consumed | lost | msg/s | window s | CPU s | idle RSS MB | peak RSS MB | threads | publish msg/s | p50 / p99 / max ms | load avg at start |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for r in results {
        let latency = match (r.p50_ms, r.p99_ms, r.max_ms) {
            (Some(a), Some(b), Some(c)) => format!("{a:.3} / {b:.3} / {c:.3}"),
            _ => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.2} | {:.1} | {:.1} | {} | {} | {} | {} |",
            r.workload,
            r.hub,
            r.run,
            r.published,
            r.consumed,
            r.lost,
            fmt_rate(r.rate),
            r.window_s,
            r.cpu_s,
            r.idle_rss_mb,
            r.peak_rss_mb,
            r.threads,
            fmt_rate(r.publish_rate),
            latency,
            r.load_avg,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&sorted, 0.5), Some(50.0));
        assert_eq!(quantile(&sorted, 0.99), Some(99.0));
        assert_eq!(quantile(&sorted, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn rates_are_grouped() {
        assert_eq!(fmt_rate(1234567.4), "1,234,567");
        assert_eq!(fmt_rate(999.0), "999");
        assert_eq!(fmt_rate(1000.0), "1,000");
    }
}
