//! `fedmsg-irc`: a hub running only the IRC bot plugin, as fedmsg's
//! `fedmsg-irc` was a moksha hub with only `IRCBotConsumer`. The plugin's
//! enable key is set for it; other plugins in the plugin directory are not
//! loaded. The rest (configuration, signals, systemd notification, the
//! stats file) is exactly `fedmsg-hub`'s.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{ensure, Context};
use clap::Parser;
use fedmsg_hub::{Activation, HubPublisher, PluginMeta, PluginState, RunOptions};
use fedmsg_wire::config::{self, ConfigArgs};
use fedmsg_wire::shutdown::{self, Stop};

/// The plugin library's file name in the plugin directory.
const PLUGIN_FILE: &str = "libfedmsg_irc.so";

/// fedmsg's IRC bot: shows every bus message in the IRC channels of the
/// configuration's `[[irc]]` entries.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Directory holding libfedmsg_irc.so (overrides config `plugin_dir`).
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
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
            eprintln!("fedmsg-irc: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(mut args: Args) -> anyhow::Result<()> {
    // As upstream's command: the bot runs whatever the enable key says.
    args.config
        .set
        .push(format!("{}=true", fedmsg_irc::CONFIG_KEY));
    let loaded = config::load(&args.config).context("cannot load the configuration")?;
    let mut config = loaded.config;
    // Its own publisher name, so that it never binds fedmsg-hub's
    // endpoint on the same host (the bot does not publish).
    if config.hub_name.is_none() {
        config.hub_name = Some(format!(
            "fedmsg-irc.{}",
            fedmsg_wire::publish::short_hostname()
        ));
    }
    let plugin_dir = args.plugin_dir.unwrap_or_else(|| config.plugin_dir.clone());
    let plugin = plugin_dir.join(PLUGIN_FILE);
    ensure!(
        plugin.is_file(),
        "{} not found (install the IRC plugin there, or pass --plugin-dir)",
        plugin.display()
    );

    let stop = Stop::new();
    shutdown::stop_on_signals(stop.clone()).context("cannot install signal handlers")?;
    let publisher = Arc::new(HubPublisher::start(&config));
    let meta = Arc::new(PluginMeta::for_config(&config));
    let (plugins, files) =
        fedmsg_hub::activate_files(&config, &[plugin], Activation::Construct(&publisher, &meta));
    // The hub goes on without a plugin that failed; this command has no
    // other purpose, so it stops.
    if let Some(file) = files.iter().find(|f| f.state != PluginState::Enabled) {
        anyhow::bail!("{}: {}", file.file.display(), file.state);
    }
    let options = RunOptions {
        stats_file: args.stats_file,
        files,
        publisher,
        monitor_interval: None,
    };
    fedmsg_hub::run(&config, plugins, &stop, &options)?;
    tracing::info!("fedmsg-irc stopped");
    Ok(())
}
