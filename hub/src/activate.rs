//! Plugin side: which plugins run. Every `.so` file of the plugin directory
//! is loaded ([`crate::loader`]), described against the configuration
//! (topics, `replay_name`, validation), checked against its enable key, and,
//! when enabled, constructed, with its status file opened and its catch-up
//! planned. The result is one [`ActivePlugin`] per running plugin, for
//! dispatch, and one [`PluginFile`] per file, for `--list-plugins` and the
//! monitoring report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fedmsg_wire::config::Config;
use fedmsg_wire::shutdown::Stop;
use fedmsg_wire::topic::TopicFilter;

use crate::catchup::CatchUpOptions;
use crate::loader::{self, PluginInstance, PluginLibrary};
use crate::plugin_meta::PluginMeta;
use crate::publisher::HubPublisher;
use crate::status::{Position, StatusFile};
use crate::worker::CatchUpPlan;

/// A constructed plugin, ready for dispatch (what [`crate::run`] takes).
pub struct ActivePlugin {
    /// The plugin's name (its crate name).
    pub(crate) name: String,
    /// Which topics it wants.
    pub(crate) filter: TopicFilter,
    /// True when it only accepts validated messages.
    pub(crate) needs_validation: bool,
    /// The sender name whose gaps replay fills for it (fedmsg's
    /// `replay_name`; see [`crate::replay`]). `None`: no replay.
    pub(crate) replay_name: Option<String>,
    /// The instantiated plugin.
    pub(crate) instance: PluginInstance,
    /// Where the plugin's position is recorded (`status_directory`).
    pub(crate) status: Option<StatusFile>,
    /// What the plugin missed while the hub was down, to fetch first.
    pub(crate) catch_up: Option<CatchUpPlan>,
}

/// What became of one plugin file at start.
#[derive(Debug, Clone)]
pub struct PluginFile {
    /// The `.so` file.
    pub file: PathBuf,
    /// Plugin name, when the file is a plugin.
    pub name: Option<String>,
    /// Plugin version.
    pub version: Option<String>,
    /// The plugin API (ABI) version it was built against.
    pub api_version: Option<String>,
    /// Topic globs (from its config).
    pub topics: Vec<String>,
    /// The config key that enables it.
    pub config_key: Option<String>,
    /// `enabled`, or why not.
    pub state: PluginState,
}

/// Whether a plugin runs, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginState {
    /// Enabled by config (and constructed, when the hub runs).
    Enabled,
    /// Its config key is not true.
    Disabled(String),
    /// It could not be loaded, described or constructed.
    Failed(String),
}

impl std::fmt::Display for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginState::Enabled => f.write_str("enabled"),
            PluginState::Disabled(why) => write!(f, "disabled: {why}"),
            PluginState::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// What [`activate`] does with the enabled plugins.
#[derive(Clone, Copy)]
pub enum Activation<'a> {
    /// Only describe every plugin file (`--list-plugins`).
    Describe,
    /// Construct the enabled plugins; their `HubContext::publish` goes
    /// through the hub's publisher, their `HubContext::meta` renders with
    /// these fedmsg.meta processors.
    Construct(&'a Arc<HubPublisher>, &'a Arc<PluginMeta>),
}

/// Loads every plugin in `plugin_dir`, describes it against `config` and,
/// with [`Activation::Construct`], constructs the enabled ones. Returns
/// the constructed plugins and what became of every file.
pub fn activate(
    config: &Config,
    plugin_dir: &Path,
    activation: Activation<'_>,
) -> (Vec<ActivePlugin>, Vec<PluginFile>) {
    activate_loaded(config, loader::load_dir(plugin_dir), activation)
}

/// Like [`activate`], for the given plugin files only, in this order: the
/// `fedmsg-irc` command is a hub running just the IRC bot's `.so`, as
/// fedmsg's was a hub with just that consumer.
pub fn activate_files(
    config: &Config,
    plugin_files: &[PathBuf],
    activation: Activation<'_>,
) -> (Vec<ActivePlugin>, Vec<PluginFile>) {
    let loaded = plugin_files
        .iter()
        .map(|file| loader::load_file(file))
        .collect();
    activate_loaded(config, loaded, activation)
}

fn activate_loaded(
    config: &Config,
    loaded: Vec<Result<PluginLibrary, loader::LoadError>>,
    activation: Activation<'_>,
) -> (Vec<ActivePlugin>, Vec<PluginFile>) {
    let mut active = Vec::new();
    let mut files = Vec::new();
    for loaded in loaded {
        match loaded {
            Ok(library) => {
                let (plugin, file) = activate_one(config, &library, activation);
                active.extend(plugin);
                files.push(file);
            }
            Err(error) => {
                tracing::error!(file = %error.path.display(), %error, "plugin refused");
                files.push(PluginFile {
                    file: error.path.clone(),
                    name: None,
                    version: None,
                    api_version: None,
                    topics: Vec::new(),
                    config_key: None,
                    state: PluginState::Failed(error.to_string()),
                });
            }
        }
    }
    (active, files)
}

fn activate_one(
    config: &Config,
    library: &PluginLibrary,
    activation: Activation<'_>,
) -> (Option<ActivePlugin>, PluginFile) {
    let mut entry = PluginFile {
        file: library.path().to_path_buf(),
        name: Some(library.name().to_owned()),
        version: Some(library.version().to_owned()),
        api_version: Some(library.api_version().to_owned()),
        topics: Vec::new(),
        config_key: Some(library.config_key().to_owned()),
        state: PluginState::Enabled,
    };
    let description = match library.describe(config.raw()) {
        Ok(description) => description,
        Err(why) => {
            entry.state = PluginState::Failed(format!("describe failed: {why}"));
            tracing::error!(plugin = library.name(), file = %library.path().display(), error = %why, "plugin refused");
            return (None, entry);
        }
    };
    entry.topics = description.topics.clone();
    if !fedmsg_config_keys::is_enabled(config.raw(), library.config_key()) {
        entry.state = PluginState::Disabled(format!("{} is not true", library.config_key()));
        tracing::info!(
            plugin = library.name(),
            config_key = library.config_key(),
            "disabled by config"
        );
        return (None, entry);
    }
    let Activation::Construct(publisher, meta) = activation else {
        return (None, entry);
    };
    let state_dir = config.state_dir.join(library.name());
    let sink = publisher.sink_for(publish_modname(library.section_path()));
    match library.instantiate(config.raw(), sink, Arc::clone(meta), &state_dir) {
        Ok(instance) => {
            let needs_validation = description
                .validate_signatures
                .unwrap_or(config.validate_signatures);
            tracing::info!(
                plugin = library.name(),
                version = library.version(),
                topics = ?description.topics,
                needs_validation,
                "enabled by config"
            );
            let filter = TopicFilter::new(&description.topics, config.zmq_strict);
            let (status, position) = open_status(config, library.name());
            let plugin = ActivePlugin {
                name: library.name().to_owned(),
                catch_up: catch_up_plan(config, library.name(), position, &filter),
                filter,
                needs_validation,
                replay_name: description.replay_name.clone(),
                instance,
                status,
            };
            (Some(plugin), entry)
        }
        Err(why) => {
            tracing::error!(plugin = library.name(), file = %library.path().display(), error = %why, "plugin constructor failed");
            entry.state = PluginState::Failed(format!("constructor failed: {why}"));
            (None, entry)
        }
    }
}

/// The module part of the topics a plugin publishes on: the last segment of
/// its config section (`faulty` for `faulty.enabled`,
/// `gateway` for `fedmsg.consumers.gateway.enabled`).
fn publish_modname(section_path: &str) -> &str {
    section_path.rsplit('.').next().unwrap_or(section_path)
}

/// Opens the plugin's status file when `status_directory` is set, with
/// the position it recorded last time. A failure is logged and the plugin
/// runs without one (it still works; only the backfill after a restart is
/// lost).
fn open_status(config: &Config, plugin: &str) -> (Option<StatusFile>, Option<Position>) {
    let Some(dir) = config.status_directory.as_ref() else {
        return (None, None);
    };
    match StatusFile::open(dir, plugin) {
        Ok((status, position)) => {
            tracing::info!(plugin, path = %status.path().display(), resume_after = ?position.as_ref().and_then(|p| p.msg_id.clone()), "status file");
            (Some(status), position)
        }
        Err(error) => {
            tracing::error!(plugin, dir = %dir.display(), %error, "cannot open the status file; running without one");
            (None, None)
        }
    }
}

/// Seconds the catch-up waits after start so that messages published just
/// before the hub subscribed have reached the message store.
const CATCH_UP_DELAY: Duration = Duration::from_secs(1);

/// A catch-up plan for a plugin that has a recorded position, when
/// `datagrepper_url` is configured. The verifier and the stop flag are
/// filled in by [`run`].
fn catch_up_plan(
    config: &Config,
    plugin: &str,
    position: Option<Position>,
    filter: &TopicFilter,
) -> Option<CatchUpPlan> {
    let url = config.datagrepper_url.clone().filter(|u| !u.is_empty())?;
    let position = position?;
    tracing::info!(plugin, %url, "will fetch the catch-up before live messages");
    Some(CatchUpPlan {
        url,
        position,
        filter: filter.clone(),
        options: CatchUpOptions {
            max_message_size: config.max_message_size,
            ..CatchUpOptions::default()
        },
        delay: CATCH_UP_DELAY,
        verifier: None,
        stop: Stop::new(),
    })
}
