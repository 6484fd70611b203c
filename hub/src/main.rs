//! `fedmsg-hub`: subscribes to every configured endpoint and feeds the
//! enabled consumer plugins. The command line, signals and logging; the hub
//! itself is the `fedmsg_hub` library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use fedmsg_hub::{Activation, HubPublisher, PluginFile, PluginMeta, RunOptions};
use fedmsg_wire::config::{self, CommonArgs, ConfigArgs};
use fedmsg_wire::shutdown::{self, Stop};

/// The fedmsg hub: loads consumer plugins and feeds them every message on the bus.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    common: CommonArgs,
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
    fedmsg_wire::logging::init(args.log_level.as_deref(), "info");
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("fedmsg-hub: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let loaded =
        config::load(&args.common.apply(&args.config)).context("cannot load the configuration")?;
    if args.common.print_config {
        println!("{}", loaded.config.to_json_string());
        return Ok(());
    }
    for notice in loaded.notices() {
        tracing::warn!("{notice}");
    }
    let unknown_tables = loaded.unknown_tables();
    let config = loaded.config;
    let plugin_dir = args.plugin_dir.unwrap_or_else(|| config.plugin_dir.clone());

    if args.list_plugins {
        let (_, files) = fedmsg_hub::activate(&config, &plugin_dir, Activation::Describe);
        print_plugins(&plugin_dir, &files);
        return Ok(());
    }

    let stop = Stop::new();
    // First SIGTERM/SIGINT: stop receiving and drain. Second: exit at once.
    shutdown::stop_on_signals(stop.clone()).context("cannot install signal handlers")?;
    // Bound before the plugins exist, so that one publishing from its
    // constructor already reaches the socket.
    let publisher = Arc::new(HubPublisher::start(&config));
    let meta = Arc::new(PluginMeta::for_config(&config));
    let (plugins, files) = fedmsg_hub::activate(
        &config,
        &plugin_dir,
        Activation::Construct(&publisher, &meta),
    );
    warn_unknown_keys(&unknown_tables, &files);
    let options = RunOptions {
        stats_file: args.stats_file,
        files,
        publisher,
        monitor_interval: None,
    };
    fedmsg_hub::run(&config, plugins, &stop, &options)?;
    tracing::info!("fedmsg-hub stopped");
    Ok(())
}

fn warn_unknown_keys(unknown: &[String], files: &[PluginFile]) {
    let claimed: Vec<&str> = files
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

fn print_plugins(plugin_dir: &std::path::Path, files: &[PluginFile]) {
    println!("plugin directory: {}", plugin_dir.display());
    if files.is_empty() {
        println!("(no plugin files)");
    }
    for entry in files {
        println!("{}", entry.file.display());
        if let Some(name) = &entry.name {
            println!("  name:       {name}");
            println!("  version:    {}", entry.version.as_deref().unwrap_or("?"));
            println!(
                "  api:        {}",
                entry.api_version.as_deref().unwrap_or("?")
            );
            println!("  topics:     {}", entry.topics.join(", "));
            println!(
                "  config_key: {}",
                entry.config_key.as_deref().unwrap_or("?")
            );
        }
        println!("  status:     {}", entry.state);
    }
}
