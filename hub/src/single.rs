//! A hub running one plugin only, the shape of fedmsg's `fedmsg-irc` and
//! `fedmsg-gateway` (a moksha hub with a single consumer): the plugin's
//! enable key is set, only its library is loaded, its failure stops the
//! command, and the rest (configuration, signals, systemd notification,
//! the stats file) is `fedmsg-hub`'s. Each command is a `main` of a few
//! lines around [`run_single`].

use std::path::PathBuf;
use std::sync::Arc;

use fedmsg_wire::config::{self, ConfigArgs, ConfigError};
use fedmsg_wire::shutdown::{self, Stop};

use crate::{activate_files, run, Activation, HubPublisher, PluginMeta, PluginState, RunOptions};

/// Which plugin a single-plugin command runs.
#[derive(Debug, Clone, Copy)]
pub struct SinglePlugin {
    /// The command's name (`fedmsg-irc`): its publisher name prefix.
    pub command: &'static str,
    /// The library's file name in the plugin directory.
    pub file: &'static str,
    /// The plugin's enable key, set to true.
    pub config_key: &'static str,
}

/// The command line of a single-plugin command, besides the configuration.
#[derive(Debug, Default)]
pub struct SingleArgs {
    /// Directory holding the library (overrides config `plugin_dir`).
    pub plugin_dir: Option<PathBuf>,
    /// Write the hub's counters as JSON to this file at exit.
    pub stats_file: Option<PathBuf>,
}

/// Why a single-plugin command stopped.
#[derive(Debug, thiserror::Error)]
pub enum SingleError {
    /// The configuration did not load.
    #[error("cannot load the configuration: {0}")]
    Config(#[from] ConfigError),
    /// The library is not in the plugin directory.
    #[error("{} not found (install the plugin there, or pass --plugin-dir)", .0.display())]
    Missing(PathBuf),
    /// The plugin did not load or start (the hub would go on without it;
    /// this command has no other purpose).
    #[error("{file}: {state}")]
    Plugin {
        /// The library.
        file: String,
        /// What became of it.
        state: String,
    },
    /// Signal handlers, sockets or threads.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Runs `plugin` alone until a signal stops it.
///
/// # Errors
///
/// [`SingleError`].
pub fn run_single(
    plugin: SinglePlugin,
    mut config_args: ConfigArgs,
    args: SingleArgs,
) -> Result<(), SingleError> {
    // As upstream's commands: the plugin runs whatever the enable key says.
    config_args.set.push(format!("{}=true", plugin.config_key));
    let loaded = config::load(&config_args)?;
    for notice in loaded.notices() {
        tracing::warn!("{notice}");
    }
    let mut config = loaded.config;
    // Its own publisher name, so that it never binds fedmsg-hub's endpoint
    // on the same host.
    if config.hub_name.is_none() {
        config.hub_name = Some(format!(
            "{}.{}",
            plugin.command,
            fedmsg_wire::publish::short_hostname()
        ));
    }
    let plugin_dir = args.plugin_dir.unwrap_or_else(|| config.plugin_dir.clone());
    let library = plugin_dir.join(plugin.file);
    if !library.is_file() {
        return Err(SingleError::Missing(library));
    }
    let stop = Stop::new();
    shutdown::stop_on_signals(stop.clone())?;
    let publisher = Arc::new(HubPublisher::start(&config));
    let meta = Arc::new(PluginMeta::for_config(&config));
    let (plugins, files) = activate_files(
        &config,
        &[library],
        Activation::Construct(&publisher, &meta),
    );
    if let Some(file) = files.iter().find(|f| f.state != PluginState::Enabled) {
        return Err(SingleError::Plugin {
            file: file.file.display().to_string(),
            state: file.state.to_string(),
        });
    }
    let options = RunOptions {
        stats_file: args.stats_file,
        files,
        publisher,
        monitor_interval: None,
    };
    run(&config, plugins, &stop, &options)?;
    tracing::info!("{} stopped", plugin.command);
    Ok(())
}
