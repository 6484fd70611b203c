//! `fedmsg-meta`: fedmsg.meta on the command line. `render` turns
//! envelopes into their text fields, `check` validates rule files.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fedmsg_meta::MetaSet;
use fedmsg_tools::cli::{self, CommonArgs};
use fedmsg_wire::config::ConfigArgs;
use serde_json::Value;

/// fedmsg.meta: every message as a sentence.
///
/// The processors are the bundled rule set plus the rule files of the
/// configuration's `meta_rules_dir`.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read envelopes, one JSON object per line, on standard input and print
    /// one JSON object per line: processor, title, subtitle, link, icon,
    /// secondary_icon, usernames, packages, objects, emails, avatars, agent,
    /// repr
    /// (lists sorted, null for an absent icon). A line that is not a JSON object is
    /// reported on standard error and skipped (exit status 1 at the end).
    Render {
        /// The time relative renderings ("in 2 hours") measure from, as
        /// RFC 3339 (`2024-05-01T12:00:00Z`); default: now.
        #[arg(long, value_name = "RFC3339")]
        now: Option<String>,
    },
    /// Check the rule files (`*.toml`) of a directory: every error as
    /// `file:line: what`; exit status 1 when there is one.
    Check {
        /// The rules directory.
        rules_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    fedmsg_wire::logging::init(None, "warn");
    match run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("fedmsg-meta: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = cli::load(&args.config, &args.common).context("cannot load the configuration")?;
    if args.common.print_config {
        println!("{}", loaded.config.to_json_string());
        return Ok(ExitCode::SUCCESS);
    }
    match args.command {
        Command::Render { now } => {
            let now = match now {
                Some(text) => humantime::parse_rfc3339_weak(&text)
                    .with_context(|| format!("--now {text:?} is not an RFC 3339 time"))?
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                None => fedmsg_wire::localtime::now_epoch_f64(),
            };
            let (set, errors) =
                cli::meta_set(&loaded.config).context("the bundled rules do not load")?;
            for error in &errors {
                eprintln!("fedmsg-meta: rule file skipped: {error}");
            }
            render(&set, now)
        }
        Command::Check { rules_dir } => {
            // The configuration's processors, with RULES_DIR as the rules
            // directory: exactly what a hub would load from it.
            let config = &loaded.config;
            let (_, errors) = MetaSet::for_config(
                &config.topic_prefix,
                config.topic_prefix_re.as_deref(),
                Some(&rules_dir),
                &config.meta_fas_users,
            )
            .context("the bundled rules do not load")?;
            for error in &errors {
                println!("{error}");
            }
            if errors.is_empty() {
                println!("{}: every rule file loads", rules_dir.display());
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

fn render(set: &MetaSet, now: f64) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failed = false;
    for (n, line) in stdin.lines().enumerate() {
        let line = line.context("cannot read standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        let envelope: Value = match serde_json::from_str(&line) {
            Ok(value @ Value::Object(_)) => value,
            Ok(_) => {
                eprintln!("fedmsg-meta: line {}: not a JSON object", n + 1);
                failed = true;
                continue;
            }
            Err(error) => {
                eprintln!("fedmsg-meta: line {}: not JSON: {error}", n + 1);
                failed = true;
                continue;
            }
        };
        let rendering = set.render_shared(&std::sync::Arc::new(envelope), now);
        writeln!(out, "{}", rendering.to_json()).context("cannot write")?;
    }
    out.flush().context("cannot write")?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
