//! Configuration: fedmsg's keys, in TOML, layered.
//!
//! # Layers
//!
//! Read in this order, later layers winning; tables merge key by key,
//! recursively (so `endpoints` from several files combine), anything else
//! replaces:
//!
//! 1. built-in defaults (fedmsg's effective defaults, see [`Config`]);
//! 2. `/etc/fedmsg.d/*.toml`, then `./fedmsg.d/*.toml` (relative to the
//!    current directory), each directory sorted by file name. Missing
//!    directories are skipped. `FEDMSG_CONFIG=PATH` (a file or a directory)
//!    replaces these two, as in fedmsg's newer loader; `--config-dir DIR`
//!    (repeatable) replaces both the two and `FEDMSG_CONFIG`. Explicitly
//!    named locations must exist;
//! 3. environment variables `FEDMSG_<KEY>`, e.g. `FEDMSG_HIGH_WATER_MARK=0`;
//!    `__` separates table levels: `FEDMSG_DATANOMMER__ENABLED=true`;
//! 4. `--set KEY=VALUE` arguments, in order.
//!
//! Environment and `--set` values are read as TOML values when they parse
//! (`true`, `0`, `0.5`, `["a", "b"]`, `{a = 1}`) and as plain strings
//! otherwise, so URLs need no quoting.
//!
//! Environment variables named `FEDMSG_*` are also used for things that are
//! not configuration (`FEDMSG_SKIP_PYTHON`, fedmsg's test suite's
//! `FEDMSG_NETWORK`). So a variable is configuration only when its first
//! segment is a known top-level key or a table that the files already have
//! (`FEDMSG_DATANOMMER__ENABLED` needs a `[datanommer]` table in some file);
//! the others are ignored and listed in [`Loaded::ignored_env`]. Environment
//! keys are lower-cased, so they cannot name keys with capitals or dots.
//!
//! # Spelling fedmsg's dotted keys
//!
//! fedmsg's flat dotted keys are TOML tables: `datanommer.enabled` is
//! `[datanommer] enabled = true`. A quoted top-level key
//! `"datanommer.enabled" = true` means the same (it is split into tables
//! when read). Below the top level dots are data: endpoint names such as
//! `"bodhi.app01"` stay whole.
//!
//! fedmsg's `moksha.monitoring.socket` and `moksha.monitoring.socket.mode`
//! cannot both exist in TOML (one would be a string and a table at once), so
//! the mode is spelled `socket_mode`:
//!
//! ```toml
//! [moksha.monitoring]
//! socket = "ipc:///var/run/fedmsg/monitoring-fedmsg-hub.socket"
//! socket_mode = "0770"
//! ```
//!
//! # Unsetting
//!
//! TOML has no `null`, so a later layer clears an optional string key (such
//! as `crl_location`) by setting it to `""`.

mod common;
mod de;
mod error;
mod known;
mod sources;
mod tree;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use common::CommonArgs;
pub use error::ConfigError;
pub use sources::{ConfigArgs, Sources, DEFAULT_DIRS, ENV_PREFIX, FEDMSG_CONFIG};

use tree::{Node, Origin, Table};

/// The typed configuration: every fedmsg key a hub, relay, logger or tail
/// uses, plus the hub's own keys. Defaults are fedmsg's effective ones (the
/// legacy loader's where its two default tables disagree, and the shipped
/// example files' where the code has no default).
///
/// Every field has a default; fields are public for reading. Plugins read
/// their own tables through [`Config::raw`] / [`Config::subtree`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    // ----- Identity and topics -----
    /// First part of every topic: `<topic_prefix>.<environment>.<modname>.<topic>`.
    pub topic_prefix: String,
    /// Second part of every topic: `prod`, `stg` or `dev`.
    pub environment: String,
    /// The regular expression for `<topic_prefix>.<environment>` that
    /// fedmsg.meta processors without their own match topics with; unset:
    /// derived from `topic_prefix` as fedmsg does (the escaped prefix, a
    /// dot and a word of letters).
    #[serde(deserialize_with = "optional_string")]
    pub topic_prefix_re: Option<String>,
    /// The publisher endpoint name of a process that publishes
    /// (fedmsg's `name`; the hub uses [`Config::hub_name`] instead).
    #[serde(deserialize_with = "optional_string")]
    pub name: Option<String>,
    /// Whether a publisher connects (`true`) instead of binding.
    pub active: bool,
    /// fedmsg's `mute`: initialise without a publisher.
    pub mute: bool,

    // ----- Endpoints -----
    /// Publisher endpoints to subscribe to, by name. A name may map to one
    /// URL or a list in the file; it is always a list here.
    #[serde(deserialize_with = "list_map")]
    pub endpoints: BTreeMap<String, Vec<String>>,
    /// Where a relay binds its inbound SUB and where active publishers
    /// (`fedmsg-logger`) connect. One URL or a list in the file.
    #[serde(deserialize_with = "one_or_many")]
    pub relay_inbound: Vec<String>,
    /// Domains whose `_fedmsg._tcp` SRV records add endpoints (fedmsg's
    /// `srv_endpoints`; the hub does not resolve them).
    #[serde(deserialize_with = "one_or_many")]
    pub srv_endpoints: Vec<String>,
    /// Replay (REQ/REP) endpoint of each publisher name, used to fill gaps.
    pub replay_endpoints: BTreeMap<String, String>,

    // ----- ZeroMQ -----
    /// Whether ZeroMQ is used at all (fedmsg's `zmq_enabled`).
    pub zmq_enabled: bool,
    /// Whether a topic subscription must match whole topics instead of prefixes.
    pub zmq_strict: bool,
    /// ZeroMQ I/O threads of the context.
    pub io_threads: u64,
    /// Send and receive high-water mark in messages; 0 = unlimited.
    pub high_water_mark: u64,
    /// Linger of publisher sockets at close, in ms.
    pub zmq_linger: u64,
    /// TCP keepalive on subscriber sockets (0 = off); the three following
    /// keys apply only when it is on.
    pub zmq_tcp_keepalive: u64,
    /// TCP keepalive probe count.
    pub zmq_tcp_keepalive_cnt: u64,
    /// TCP keepalive idle time before probing, in s.
    pub zmq_tcp_keepalive_idle: u64,
    /// TCP keepalive probe interval, in s.
    pub zmq_tcp_keepalive_intvl: u64,
    /// Initial reconnect interval, in ms.
    pub zmq_reconnect_ivl: u64,
    /// Maximum reconnect interval (exponential backoff), in ms; 0 = no backoff.
    pub zmq_reconnect_ivl_max: u64,
    /// Sleep after creating a publisher, in s (slow-joiner workaround).
    pub post_init_sleep: f64,
    /// Command timeout, in s (fedmsg's CLI tools).
    pub timeout: f64,

    // ----- Signing and validation -----
    /// Whether published messages are signed.
    pub sign_messages: bool,
    /// Whether received messages must carry a valid signature.
    pub validate_signatures: bool,
    /// Signing backend: `x509` or `gpg`.
    pub crypto_backend: String,
    /// Backends accepted when validating.
    #[serde(deserialize_with = "one_or_many")]
    pub crypto_validate_backends: Vec<String>,
    /// Directory of certificates and keys (`<certname>.crt`/`.key`).
    pub ssldir: PathBuf,
    /// `"<service>.<short host>"` → certificate file prefix in `ssldir`.
    pub certnames: BTreeMap<String, String>,
    /// Service part of the certnames key of a publishing process.
    #[serde(deserialize_with = "optional_string")]
    pub cert_prefix: Option<String>,
    /// Certificate name to sign with, when set directly.
    #[serde(deserialize_with = "optional_string")]
    pub certname: Option<String>,
    /// CA certificate: a path or an `http(s)://` URL.
    pub ca_cert_location: String,
    /// Where a downloaded CA certificate is cached.
    #[serde(deserialize_with = "optional_string")]
    pub ca_cert_cache: Option<String>,
    /// Lifetime of the cached CA certificate, in s (0 = never refetch).
    pub ca_cert_cache_expiry: u64,
    /// CRL: a path or an `http(s)://` URL. Unset or `""` disables CRL checks.
    #[serde(deserialize_with = "optional_string")]
    pub crl_location: Option<String>,
    /// Where a downloaded CRL is cached.
    #[serde(deserialize_with = "optional_string")]
    pub crl_cache: Option<String>,
    /// Lifetime of the cached CRL, in s.
    pub crl_cache_expiry: u64,
    /// Topic → certificate names allowed to sign it.
    #[serde(deserialize_with = "list_map")]
    pub routing_policy: BTreeMap<String, Vec<String>>,
    /// Whether a topic absent from `routing_policy` is refused.
    pub routing_nitpicky: bool,
    /// GnuPG home directory (gpg backend).
    #[serde(deserialize_with = "optional_string")]
    pub gpg_home: Option<PathBuf>,
    /// Key to sign with (gpg backend).
    #[serde(deserialize_with = "optional_string")]
    pub gpg_signing_key: Option<String>,
    /// Short host name → key fingerprint (gpg backend).
    pub gpg_keys: BTreeMap<String, String>,

    // ----- Replay and catch-up -----
    /// Directory of per-consumer status files (last message seen), for
    /// catching up from datagrepper after a restart.
    #[serde(deserialize_with = "optional_string")]
    pub status_directory: Option<PathBuf>,
    /// Datagrepper `/raw` URL a plugin catches up from after downtime.
    #[serde(deserialize_with = "optional_string")]
    pub datagrepper_url: Option<String>,
    /// Whether the catch-up skips the last message already seen.
    pub skip_last_message: bool,
    /// Replay store of a publisher. fedmsg passes a Python object here; the
    /// hub treats it as an opaque string (a path or URL).
    #[serde(deserialize_with = "optional_string")]
    pub persistent_store: Option<String>,

    // ----- fedmsg.meta -----
    /// A directory of fedmsg.meta rule files (`*.toml`) that add to or
    /// replace the bundled processors.
    #[serde(deserialize_with = "optional_string")]
    pub meta_rules_dir: Option<PathBuf>,
    /// E-mail addresses and IRC nicks → FAS usernames, for the processors
    /// that name people by them (fedmsg.meta asked FAS; we never wait for
    /// the network while rendering).
    pub meta_fas_users: BTreeMap<String, String>,

    // ----- moksha -----
    /// The moksha settings the hub reads (`[moksha.monitoring]`).
    pub moksha: MokshaConfig,

    // ----- The hub's own keys -----
    /// The hub's own publisher endpoint name (a key of `endpoints`). Unset:
    /// the caller uses `fedmsg-hub.<short hostname>`
    /// (see [`Config::effective_hub_name`]).
    #[serde(deserialize_with = "optional_string")]
    pub hub_name: Option<String>,
    /// Directory of plugin shared libraries.
    pub plugin_dir: PathBuf,
    /// Capacity of each plugin's queue, in messages (at least 1).
    pub plugin_queue_capacity: usize,
    /// Consecutive panics after which a plugin is disabled.
    pub plugin_max_consecutive_panics: u64,
    /// How long shutdown waits for plugin queues to drain, in s.
    pub shutdown_timeout: f64,
    /// Directory under which each plugin gets its own state directory.
    pub state_dir: PathBuf,
    /// Signature-verification threads; 0 = one per CPU core.
    pub verify_threads: usize,
    /// Number of recent `msg_id`s remembered to drop duplicates; 0 = off.
    pub dedup_window: usize,
    /// Largest message body accepted, in bytes.
    pub max_message_size: usize,
    /// How long the hub waits for a replay endpoint's answer to one gap
    /// query, in s, before delivering what it held back without the gap.
    pub replay_timeout: f64,
    /// How long a replay store (`persistent_store`, `fedmsg-relay --store`)
    /// keeps a message, in s; 0 = forever (upstream's behaviour: the store
    /// grew without bound).
    pub replay_retention: f64,

    /// The whole merged tree (defaults and every layer), for plugins.
    #[serde(skip)]
    raw: serde_json::Value,
}

/// moksha's keys that the hub reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MokshaConfig {
    /// The monitoring socket (`[moksha.monitoring]`).
    pub monitoring: MonitoringConfig,
}

/// The monitoring PUB socket: every 5 s a JSON status of consumers and
/// producers, as moksha's `MonitoringProducer` publishes (fedmsg-check reads
/// it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitoringConfig {
    /// Endpoint to bind, e.g. `ipc:///var/run/fedmsg/monitoring-fedmsg-hub.socket`.
    /// Unset: no monitoring socket. fedmsg's `moksha.monitoring.socket`.
    #[serde(deserialize_with = "optional_string")]
    pub socket: Option<String>,
    /// File mode applied to an `ipc://` socket: an octal string (`"0770"`,
    /// as in fedmsg) or a TOML integer (`0o770`). fedmsg's
    /// `moksha.monitoring.socket.mode`.
    #[serde(
        deserialize_with = "octal_mode",
        serialize_with = "serialize_octal_mode"
    )]
    pub socket_mode: Option<u32>,
}

/// The result of loading: the configuration and what the caller should
/// report.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Dotted paths of keys neither fedmsg nor the hub knows, sorted. An
    /// unknown table is listed once, by name (`tally`); the caller exempts
    /// the tables claimed by loaded plugins and warns about the rest.
    pub unknown_keys: Vec<String>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    /// Python config files (`*.py`) found in the directories read. fedmsg's
    /// format cannot be read; the caller may warn that they are ignored.
    pub python_files: Vec<PathBuf>,
    /// `FEDMSG_*` environment variables not taken as configuration (see the
    /// module documentation), sorted.
    pub ignored_env: Vec<String>,
    tree: Table,
}

impl Loaded {
    /// What an operator should be told about this configuration, one
    /// sentence each: settings that are read but have no effect here,
    /// `FEDMSG_*__*` variables that named a table no file has, Python
    /// configuration files that were skipped, and unknown top-level values
    /// (likely typos; unknown *tables* are left to the hub, which knows the
    /// tables its plugins claim). Every command logs them at start, so a
    /// setting is never ignored silently.
    pub fn notices(&self) -> Vec<String> {
        let mut notices = Vec::new();
        for name in &self.ignored_env {
            if name.contains("__") {
                let table = sources::env_key_path(name)
                    .and_then(|path| path.into_iter().next())
                    .unwrap_or_default();
                notices.push(format!(
                    "environment variable {name} ignored: no configuration file has a [{table}] table for it to set a key of"
                ));
            }
        }
        let mut unimplemented: Vec<String> = self
            .tree
            .keys()
            .filter(|key| key.starts_with("stomp_"))
            .cloned()
            .collect();
        if !self.config.srv_endpoints.is_empty() {
            unimplemented.push("srv_endpoints".to_owned());
        }
        if !self.config.zmq_enabled {
            unimplemented.push("zmq_enabled = false".to_owned());
        }
        for key in unimplemented {
            notices.push(format!(
                "{key}: not implemented by this hub yet; the setting has no effect"
            ));
        }
        for file in &self.python_files {
            notices.push(format!(
                "{}: Python configuration files are not read (write the settings as TOML)",
                file.display()
            ));
        }
        for key in &self.unknown_keys {
            let is_table = known::is_table(&self.tree, key);
            if !is_table && !key.contains('.') {
                notices.push(format!(
                    "unknown configuration key {key} (from {}) ignored",
                    self.origin_of(key).unwrap_or("?")
                ));
            }
        }
        notices
    }

    /// The unknown keys that are tables or keys inside fedmsg's own tables
    /// (`fedmsg.x`, `moksha.monitoring.x`): what [`Loaded::notices`] leaves
    /// to the hub, which exempts the tables its plugins claim.
    pub fn unknown_tables(&self) -> Vec<String> {
        self.unknown_keys
            .iter()
            .filter(|key| key.contains('.') || known::is_table(&self.tree, key))
            .cloned()
            .collect()
    }

    /// Where the value at `dotted_key` came from (a file path,
    /// `environment variable FEDMSG_X`, `--set x=y`, `built-in defaults`),
    /// or `None` if there is no such key. For warnings about a key.
    pub fn origin_of(&self, dotted_key: &str) -> Option<&str> {
        tree::lookup(&self.tree, dotted_key).map(|node| &*node.origin)
    }
}

/// Loads the configuration of a normal start: default directories (or
/// `FEDMSG_CONFIG` / `--config-dir`), the process environment, `--set`.
///
/// # Errors
///
/// An unreadable file or directory, invalid TOML, a malformed `--set`, a
/// missing explicitly named location, or a value of the wrong type or out of
/// range; the message names the file (or variable, or argument) and the key.
pub fn load(args: &ConfigArgs) -> Result<Loaded, ConfigError> {
    Config::load_from(&Sources::from_args(args))
}

const DEFAULTS_ORIGIN: &str = "built-in defaults";

impl Default for Config {
    fn default() -> Self {
        let mut config = Config {
            topic_prefix: "org.fedoraproject".into(),
            environment: "dev".into(),
            name: None,
            active: false,
            mute: false,
            // fedmsg's documented default has `relay_outbound` here, but
            // TOML cannot remove a key a lower layer set, so a default
            // endpoint could never be dropped. The shipped files add it.
            endpoints: BTreeMap::new(),
            relay_inbound: vec!["tcp://127.0.0.1:2003".into()],
            srv_endpoints: Vec::new(),
            replay_endpoints: BTreeMap::new(),
            zmq_enabled: true,
            zmq_strict: false,
            io_threads: 1,
            high_water_mark: 0,
            zmq_linger: 1000,
            zmq_tcp_keepalive: 1,
            zmq_tcp_keepalive_cnt: 3,
            zmq_tcp_keepalive_idle: 60,
            zmq_tcp_keepalive_intvl: 5,
            zmq_reconnect_ivl: 100,
            zmq_reconnect_ivl_max: 1000,
            post_init_sleep: 0.5,
            timeout: 2.0,
            sign_messages: false,
            validate_signatures: true,
            crypto_backend: "x509".into(),
            crypto_validate_backends: vec!["x509".into()],
            ssldir: "/etc/pki/fedmsg".into(),
            certnames: BTreeMap::new(),
            cert_prefix: None,
            certname: None,
            ca_cert_location: "/etc/pki/fedmsg/ca.crt".into(),
            ca_cert_cache: None,
            ca_cert_cache_expiry: 0,
            crl_location: None,
            crl_cache: None,
            crl_cache_expiry: 3600,
            routing_policy: BTreeMap::new(),
            routing_nitpicky: false,
            gpg_home: None,
            gpg_signing_key: None,
            gpg_keys: BTreeMap::new(),
            status_directory: None,
            topic_prefix_re: None,
            meta_rules_dir: None,
            meta_fas_users: BTreeMap::new(),
            datagrepper_url: None,
            skip_last_message: false,
            persistent_store: None,
            moksha: MokshaConfig::default(),
            hub_name: None,
            plugin_dir: "/usr/lib/fedmsg-hub/plugins".into(),
            plugin_queue_capacity: 10_000,
            plugin_max_consecutive_panics: 5,
            shutdown_timeout: 10.0,
            state_dir: "/var/lib/fedmsg-hub".into(),
            verify_threads: 0,
            dedup_window: 4096,
            max_message_size: 64 * 1024 * 1024,
            replay_timeout: 2.0,
            replay_retention: 7.0 * 24.0 * 3600.0,
            raw: serde_json::Value::Null,
        };
        config.raw = config.typed_json();
        config
    }
}

impl Config {
    /// Loads from explicit sources (see the module documentation for the
    /// layering). Tests use this to supply an environment.
    ///
    /// # Errors
    ///
    /// As [`load`].
    pub fn load_from(sources: &Sources) -> Result<Loaded, ConfigError> {
        let defaults_origin: Origin = Arc::from(DEFAULTS_ORIGIN);
        let mut tree = match Node::from_json(&Config::default().raw, &defaults_origin) {
            Some(Node {
                kind: tree::Kind::Table(table),
                ..
            }) => table,
            _ => Table::new(),
        };

        // Files.
        let mut files = Vec::new();
        let mut python_files = Vec::new();
        let mut from_files = Table::new();
        for (location, named_by) in sources.locations() {
            python_files.extend(sources::python_files_of(&location));
            for file in sources::files_of(&location, named_by.as_deref())? {
                tree::merge(&mut from_files, sources::read_file(&file)?);
                files.push(file);
            }
        }

        // Environment: sorted, so that `FEDMSG_X` (a whole table) comes
        // before `FEDMSG_X__Y` (one key of it) whatever the process order.
        let typed = typed_keys();
        let mut env: Vec<&(String, String)> = sources
            .env
            .iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name != FEDMSG_CONFIG)
            .collect();
        env.sort();
        let mut from_env = Table::new();
        let mut ignored_env = Vec::new();
        for (name, value) in env {
            let path = sources::env_key_path(name).filter(|path| {
                known::is_known_top_level(&path[0], typed) || known::is_table(&from_files, &path[0])
            });
            let Some(path) = path else {
                ignored_env.push(name.clone());
                continue;
            };
            let origin: Origin = Arc::from(format!("environment variable {name}"));
            let node = sources::parse_value_text(value, &origin).nest(&path[1..]);
            tree::merge(&mut from_env, Table::from([(path[0].clone(), node)]));
        }
        ignored_env.dedup();

        tree::merge(&mut tree, from_files);
        tree::merge(&mut tree, from_env);
        for set in &sources.sets {
            tree::merge(&mut tree, sources::parse_set(set)?);
        }

        let config = Config::from_tree(&tree)?;
        let unknown_keys = known::unknown_keys(&tree, typed);
        Ok(Loaded {
            config,
            unknown_keys,
            files,
            python_files,
            ignored_env,
            tree,
        })
    }

    /// Deserializes, normalizes and validates the merged tree.
    fn from_tree(tree: &Table) -> Result<Config, ConfigError> {
        let value = Node::new(&Arc::from(DEFAULTS_ORIGIN), tree::Kind::Table(tree.clone()));
        let mut config = Config::deserialize(de::NodeDeserializer::new(&value))
            .map_err(|e| ConfigError::from_de(e, tree))?;
        config.validate(tree)?;

        let mut raw = value.to_json();
        // fedmsg listifies `endpoints` in its merged config (and
        // `fedmsg-config` prints lists); do the same for plugins.
        if let Some(endpoints) = raw.get_mut("endpoints").and_then(|e| e.as_object_mut()) {
            for urls in endpoints.values_mut() {
                if urls.is_string() {
                    *urls = serde_json::Value::Array(vec![urls.take()]);
                }
            }
        }
        config.raw = raw;
        Ok(config)
    }

    /// Checks the values whose type alone does not make them acceptable.
    fn validate(&self, tree: &Table) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            origin: error::origin_of(tree, key),
            key: key.to_owned(),
            message,
        };
        for (key, seconds) in [
            ("post_init_sleep", self.post_init_sleep),
            ("timeout", self.timeout),
            ("shutdown_timeout", self.shutdown_timeout),
            ("replay_timeout", self.replay_timeout),
            ("replay_retention", self.replay_retention),
        ] {
            // Duration::from_secs_f64 panics on these (NaN is not in the range).
            if !(0.0..=1e9).contains(&seconds) {
                return Err(invalid(
                    key,
                    format!("expected a number of seconds between 0 and 1e9, found {seconds}"),
                ));
            }
        }
        if self.max_message_size < 1024 {
            return Err(invalid(
                "max_message_size",
                format!(
                    "{} bytes would reject every real message: at least 1024",
                    self.max_message_size
                ),
            ));
        }
        if self.verify_threads > 256 {
            return Err(invalid(
                "verify_threads",
                format!(
                    "{} threads is more than any machine can use: at most 256 (0 = one per core)",
                    self.verify_threads
                ),
            ));
        }
        if self.plugin_queue_capacity == 0 {
            return Err(invalid(
                "plugin_queue_capacity",
                "must be at least 1".to_owned(),
            ));
        }
        for (name, urls) in &self.endpoints {
            if urls.is_empty() {
                return Err(invalid(
                    &format!("endpoints.{name}"),
                    "an endpoint name needs at least one URL".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// The typed configuration as JSON, without `null`s (the built-in
    /// defaults layer).
    fn typed_json(&self) -> serde_json::Value {
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let origin: Origin = Arc::from(DEFAULTS_ORIGIN);
        Node::from_json(&value, &origin)
            .map(|node| node.to_json())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Every URL of every endpoint name, as `(name, url)`, names sorted and
    /// URLs in file order. A `*` host (a bind address such as `tcp://*:3000`)
    /// is rewritten to `127.0.0.1` so that it can be connected to, as moksha
    /// does.
    pub fn endpoint_urls(&self) -> Vec<(String, String)> {
        self.endpoints
            .iter()
            .flat_map(|(name, urls)| urls.iter().map(move |url| (name.clone(), connectable(url))))
            .collect()
    }

    /// The whole merged configuration (defaults and every layer) as JSON.
    /// Plugins read their own table from it.
    pub fn raw(&self) -> &serde_json::Value {
        &self.raw
    }

    /// The value at `dotted` (e.g. `datanommer` or `datanommer.enabled`),
    /// or `Null` when absent. Keys that contain dots themselves
    /// (`endpoints.bodhi.app01`) are found too.
    pub fn subtree(&self, dotted: &str) -> serde_json::Value {
        fedmsg_config_keys::lookup(&self.raw, dotted)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    /// The merged configuration as TOML (for `fedmsg-config`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Serialize`] if the TOML writer refuses the tree (not
    /// expected: the tree came from TOML).
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        let value =
            tree::json_to_toml(&self.raw).unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
        toml::to_string_pretty(&value).map_err(|e| ConfigError::Serialize(e.to_string()))
    }

    /// The merged configuration as indented JSON (for `fedmsg-config`).
    pub fn to_json_string(&self) -> String {
        // Serializing a `serde_json::Value` to a string cannot fail.
        serde_json::to_string_pretty(&self.raw).unwrap_or_default()
    }

    /// The hub's publisher endpoint name: `hub_name`, else
    /// `fedmsg-hub.<short hostname>`.
    pub fn effective_hub_name(&self, short_hostname: &str) -> String {
        self.hub_name
            .clone()
            .unwrap_or_else(|| format!("fedmsg-hub.{short_hostname}"))
    }

    /// The number of verifier threads: `verify_threads`, or the number of
    /// CPU cores when it is 0.
    pub fn effective_verify_threads(&self) -> usize {
        match self.verify_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// `shutdown_timeout` as a duration (validated finite and non-negative).
    pub fn shutdown_duration(&self) -> Duration {
        Duration::try_from_secs_f64(self.shutdown_timeout).unwrap_or(Duration::ZERO)
    }

    /// `replay_retention` as a duration; `None` (0) keeps messages forever.
    pub fn replay_retention_duration(&self) -> Option<Duration> {
        Duration::try_from_secs_f64(self.replay_retention)
            .ok()
            .filter(|d| !d.is_zero())
    }

    /// `replay_timeout` as a duration (validated finite and non-negative).
    pub fn replay_duration(&self) -> Duration {
        Duration::try_from_secs_f64(self.replay_timeout).unwrap_or(Duration::ZERO)
    }
}

/// The top-level field names of [`Config`].
fn typed_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        // Serializing keeps `None` fields as `null`, so every field is there.
        match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    })
}

/// `tcp://*:3000` → `tcp://127.0.0.1:3000`: a bind wildcard cannot be
/// connected to.
fn connectable(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if rest.starts_with("*:") || rest == "*" => {
            format!("{scheme}://127.0.0.1{}", &rest[1..])
        }
        _ => url.to_owned(),
    }
}

// ----- Lenient shapes fedmsg accepts -----

/// Deserializes one string or a list of strings as a list.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(OneOrManyVisitor)
}

/// A map whose values are one string or a list of strings.
fn list_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    let map = BTreeMap::<String, OneOrManyValue>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}

struct OneOrManyValue(Vec<String>);

impl<'de> Deserialize<'de> for OneOrManyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_or_many(d).map(OneOrManyValue)
    }
}

/// Visits a string or a sequence of strings. A hand-written visitor instead
/// of an untagged enum so that a mismatch says what was expected and the
/// deserializer keeps the key path.
struct OneOrManyVisitor;

impl<'de> serde::de::Visitor<'de> for OneOrManyVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string or a list of strings")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(vec![v.to_owned()])
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(vec![v])
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            out.push(item);
        }
        Ok(out)
    }
}

/// An optional string where `""` means unset: TOML has no `null`, so this is
/// how a later layer clears a value an earlier one set.
fn optional_string<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: From<String>,
{
    let value = Option::<String>::deserialize(d)?;
    Ok(value.filter(|s| !s.is_empty()).map(T::from))
}

/// A file mode: an octal string (`"0770"`, `"0o770"`, `"770"`) or an integer.
fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct ModeVisitor;

    impl serde::de::Visitor<'_> for ModeVisitor {
        type Value = Option<u32>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a file mode (an octal string such as \"0770\", or an integer)")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v.is_empty() {
                return Ok(None);
            }
            let digits = v.strip_prefix("0o").unwrap_or(v);
            match u32::from_str_radix(digits, 8) {
                Ok(mode) => self.visit_u64(u64::from(mode)),
                Err(_) => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
            }
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
            }
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            if v > 0o7777 {
                return Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self));
            }
            // Checked just above: at most 0o7777.
            Ok(Some(v as u32))
        }
    }

    d.deserialize_any(ModeVisitor)
}

/// Writes a mode back as fedmsg's octal string.
fn serialize_octal_mode<S: Serializer>(mode: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match mode {
        Some(mode) => s.serialize_str(&format!("0{mode:o}")),
        None => s.serialize_none(),
    }
}
