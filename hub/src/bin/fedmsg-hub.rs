//! `fedmsg-hub`: subscribes to every configured endpoint and feeds the
//! enabled consumer plugins.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use fedmsg_hub::config::{self, ConfigArgs};
use fedmsg_hub::publish::HubPublisher;
use fedmsg_hub::service::{self, PluginReport, RunOptions};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The fedmsg hub: loads consumer plugins and feeds them every message on the bus.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Directory of plugin `.so` files (overrides config `plugin_dir`).
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
    /// Print every plugin file, its name, version, topics, config key and
    /// whether it is enabled (or why not), then exit.
    #[arg(long)]
    list_plugins: bool,
    /// Log filter, e.g. `info` or `fedmsg_hub=debug` (default: RUST_LOG, else info).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Write the hub's counters as JSON to this file at exit.
    #[arg(long, value_name = "FILE")]
    stats_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_level.as_deref());
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("fedmsg-hub: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(args: Args) -> anyhow::Result<()> {
    let loaded = config::load(&args.config).context("cannot load the configuration")?;
    let config = loaded.config;
    let plugin_dir = args.plugin_dir.unwrap_or_else(|| config.plugin_dir.clone());

    if args.list_plugins {
        let (_, reports) = service::prepare_plugins(&config, &plugin_dir, false);
        print_plugins(&plugin_dir, &reports);
        return Ok(());
    }

    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(Arc::clone(&stop))?;
    // Bound before the plugins exist, so that one publishing from its
    // constructor already reaches the socket.
    let publisher = Arc::new(HubPublisher::start(&config));
    let (plugins, reports) = service::prepare_plugins_publishing(&config, &plugin_dir, &publisher);
    warn_unknown_keys(&loaded.unknown_keys, &reports);
    let options = RunOptions {
        stats_file: args.stats_file,
        reports,
        publisher: Some(publisher),
        monitor_interval: None,
    };
    service::run(&config, plugins, stop, &options)?;
    tracing::info!("fedmsg-hub stopped");
    Ok(())
}

/// First SIGTERM/SIGINT: stop receiving and drain. Second: exit at once.
fn watch_signals(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if stop.swap(true, Ordering::SeqCst) {
                    tracing::warn!(signal, "second signal: exiting at once");
                    std::process::exit(130);
                }
                tracing::info!(
                    signal,
                    "shutting down (send the signal again to exit at once)"
                );
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

fn warn_unknown_keys(unknown: &[String], reports: &[PluginReport]) {
    let claimed: Vec<&str> = reports
        .iter()
        .filter_map(|r| r.config_key.as_deref())
        .filter_map(|key| key.rsplit_once('.').map(|(table, _)| table))
        .collect();
    for key in unknown {
        let is_claimed = claimed
            .iter()
            .any(|table| key == table || key.starts_with(&format!("{table}.")));
        if !is_claimed {
            tracing::warn!(key = %key, "unknown configuration key (ignored)");
        }
    }
}

fn print_plugins(plugin_dir: &std::path::Path, reports: &[PluginReport]) {
    println!("plugin directory: {}", plugin_dir.display());
    if reports.is_empty() {
        println!("(no plugin files)");
    }
    for report in reports {
        println!("{}", report.file.display());
        if let Some(name) = &report.name {
            println!("  name:       {name}");
            println!("  version:    {}", report.version.as_deref().unwrap_or("?"));
            println!("  topics:     {}", report.topics.join(", "));
            println!(
                "  config_key: {}",
                report.config_key.as_deref().unwrap_or("?")
            );
        }
        println!("  status:     {}", report.status);
    }
}
