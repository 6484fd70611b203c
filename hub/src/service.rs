//! The running hub: plugins activated from config, dispatch workers, the
//! receive loop, and an orderly shutdown.
//!
//! Shutdown follows mini-redis's shape: a signal only flips a flag; the
//! receive loop notices it within one poll interval and returns; dropping
//! the dispatcher closes every plugin queue; workers drain what is queued
//! until the drain deadline, call their plugin's shutdown hook and stop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backlog::BacklogOptions;
use crate::config::Config;
use crate::crypto::{Verifier, VerifierSettings};
use crate::dispatch::{
    ActivePlugin, BacklogPlan, DispatchSettings, Dispatcher, DrainDeadline, WorkerHandle,
};
use crate::ingest::{self, IngestStats, Limits};
use crate::loader::{self, HubServices, PluginLibrary};
use crate::monitor::{FailedPlugin, MonitorSources, MonitoredPlugin};
use crate::pipeline::Pipeline;
use crate::publish::{HubPublisher, PublisherSnapshot};
use crate::replay::live::{LiveReplayOptions, ReplaySnapshot, ReplayStats};
use crate::status::{Position, StatusFile};
use crate::topic::{minimize_prefixes, TopicFilter};
use crate::transport::{SubscribeOptions, Subscriber, TcpKeepalive};

/// What became of one plugin file at start.
#[derive(Debug, Clone, Serialize)]
pub struct PluginReport {
    /// The `.so` file.
    pub file: PathBuf,
    /// Plugin name, when the file is a plugin.
    pub name: Option<String>,
    /// Plugin version.
    pub version: Option<String>,
    /// Topic globs (from its config).
    pub topics: Vec<String>,
    /// The config key that enables it.
    pub config_key: Option<String>,
    /// `enabled`, or why not.
    pub status: PluginStatus,
}

/// Whether a plugin runs, and why not.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum PluginStatus {
    /// Enabled by config (and instantiated, when the hub runs).
    Enabled,
    /// Its config key is not true.
    Disabled(String),
    /// It could not be loaded, described or constructed.
    Failed(String),
}

impl std::fmt::Display for PluginStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginStatus::Enabled => f.write_str("enabled"),
            PluginStatus::Disabled(why) => write!(f, "disabled: {why}"),
            PluginStatus::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// Loads every plugin in `plugin_dir` and describes it against `config`,
/// instantiating the enabled ones when `instantiate` is true. Their
/// `publish` fails (no publisher): see [`prepare_plugins_publishing`].
pub fn prepare_plugins(
    config: &Config,
    plugin_dir: &Path,
    instantiate: bool,
) -> (Vec<ActivePlugin>, Vec<PluginReport>) {
    load_and_activate(config, plugin_dir, instantiate.then_some(None))
}

/// Like [`prepare_plugins`] (instantiating), with each plugin's
/// `HubContext::publish` going through `publisher`.
pub fn prepare_plugins_publishing(
    config: &Config,
    plugin_dir: &Path,
    publisher: &Arc<HubPublisher>,
) -> (Vec<ActivePlugin>, Vec<PluginReport>) {
    load_and_activate(config, plugin_dir, Some(Some(publisher)))
}

/// `instantiate`: `None` to only describe; `Some(publisher)` to build the
/// enabled plugins, publishing through `publisher` when there is one.
fn load_and_activate(
    config: &Config,
    plugin_dir: &Path,
    instantiate: Option<Option<&Arc<HubPublisher>>>,
) -> (Vec<ActivePlugin>, Vec<PluginReport>) {
    let mut active = Vec::new();
    let mut reports = Vec::new();
    for loaded in loader::load_dir(plugin_dir) {
        match loaded {
            Ok(library) => {
                let (plugin, report) = activate(config, &library, instantiate);
                active.extend(plugin);
                reports.push(report);
            }
            Err(error) => {
                tracing::error!(file = %error.path.display(), %error, "plugin refused");
                reports.push(PluginReport {
                    file: error.path.clone(),
                    name: None,
                    version: None,
                    topics: Vec::new(),
                    config_key: None,
                    status: PluginStatus::Failed(error.to_string()),
                });
            }
        }
    }
    (active, reports)
}

fn activate(
    config: &Config,
    library: &PluginLibrary,
    instantiate: Option<Option<&Arc<HubPublisher>>>,
) -> (Option<ActivePlugin>, PluginReport) {
    let mut report = PluginReport {
        file: library.path().to_path_buf(),
        name: Some(library.name().to_owned()),
        version: Some(library.version().to_owned()),
        topics: Vec::new(),
        config_key: Some(library.config_key().to_owned()),
        status: PluginStatus::Enabled,
    };
    let description = match library.describe(config.raw()) {
        Ok(description) => description,
        Err(why) => {
            report.status = PluginStatus::Failed(format!("describe failed: {why}"));
            tracing::error!(plugin = library.name(), file = %library.path().display(), error = %why, "plugin refused");
            return (None, report);
        }
    };
    report.topics = description.topics.clone();
    if !config.is_enabled(library.config_key()) {
        report.status = PluginStatus::Disabled(format!("{} is not true", library.config_key()));
        tracing::info!(
            plugin = library.name(),
            config_key = library.config_key(),
            "disabled by config"
        );
        return (None, report);
    }
    let Some(publisher) = instantiate else {
        return (None, report);
    };
    let state_dir = config.state_dir.join(library.name());
    let services: Arc<dyn HubServices> = match publisher {
        Some(publisher) => publisher.services_for(publish_modname(library.section_path())),
        None => Arc::new(loader::NoPublish::default()),
    };
    match library.instantiate(config.raw(), services, &state_dir) {
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
                backlog: backlog_plan(config, library.name(), position, &filter),
                filter,
                needs_validation,
                replay_name: description.replay_name.clone(),
                instance,
                status,
            };
            (Some(plugin), report)
        }
        Err(why) => {
            tracing::error!(plugin = library.name(), file = %library.path().display(), error = %why, "plugin constructor failed");
            report.status = PluginStatus::Failed(format!("constructor failed: {why}"));
            (None, report)
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

/// Seconds the backlog waits after start so that messages published just
/// before the hub subscribed have reached the message store.
const BACKLOG_DELAY: Duration = Duration::from_secs(1);

/// A backlog plan for a plugin that has a recorded position, when
/// `datagrepper_url` is configured. The verifier and the stop flag are
/// filled in by [`run`].
fn backlog_plan(
    config: &Config,
    plugin: &str,
    position: Option<Position>,
    filter: &TopicFilter,
) -> Option<BacklogPlan> {
    let url = config.datagrepper_url.clone().filter(|u| !u.is_empty())?;
    let position = position?;
    tracing::info!(plugin, %url, "will fetch the backlog before live messages");
    Some(BacklogPlan {
        url,
        position,
        filter: filter.clone(),
        options: BacklogOptions {
            max_message_size: config.max_message_size,
            ..BacklogOptions::default()
        },
        delay: BACKLOG_DELAY,
        verifier: None,
        stop: Arc::new(AtomicBool::new(false)),
    })
}

/// The counters of a finished (or running) hub, as written to the stats file.
#[derive(Debug, Serialize)]
pub struct StatsSnapshot {
    /// Messages received from sockets.
    pub received: u64,
    /// Messages accepted by ingest.
    pub accepted: u64,
    /// Rejections by reason.
    pub rejected: std::collections::BTreeMap<&'static str, u64>,
    /// Signature validation failures by reason.
    pub invalid: std::collections::BTreeMap<&'static str, u64>,
    /// Per-plugin counters.
    pub plugins: Vec<PluginSnapshot>,
    /// The hub publisher's counters, when the hub has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<PublisherSnapshot>,
    /// seq_id replay counters, when some plugin gets replay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplaySnapshot>,
}

/// One plugin's counters.
#[derive(Debug, Serialize)]
pub struct PluginSnapshot {
    /// Plugin name.
    pub name: String,
    /// Messages queued for it.
    pub received: u64,
    /// Consumed successfully.
    pub consumed: u64,
    /// `consume` errors.
    pub errors: u64,
    /// `consume` panics.
    pub panics: u64,
    /// Dropped for it.
    pub dropped: u64,
    /// Skipped as already delivered (`dedup_window`).
    pub duplicates: u64,
    /// Still queued.
    pub backlog: usize,
    /// Disabled after panics.
    pub disabled: bool,
}

fn snapshot(ingest: &IngestStats, workers: &[WorkerHandle]) -> StatsSnapshot {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    StatsSnapshot {
        received: ingest.received(),
        accepted: ingest.accepted(),
        rejected: ingest.rejected(),
        invalid: ingest.invalid(),
        plugins: workers
            .iter()
            .map(|w| PluginSnapshot {
                name: w.name.clone(),
                received: load(&w.stats.received),
                consumed: load(&w.stats.consumed),
                errors: load(&w.stats.errors),
                panics: load(&w.stats.panics),
                dropped: load(&w.stats.dropped),
                duplicates: load(&w.stats.duplicates),
                backlog: w.queue.len(),
                disabled: w.stats.is_disabled(),
            })
            .collect(),
        publisher: None,
        replay: None,
    }
}

/// Options of one hub run that do not come from the fedmsg config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Where to write the counters as JSON at exit.
    pub stats_file: Option<PathBuf>,
    /// What became of each plugin file at start (the monitoring socket
    /// lists those that failed).
    pub reports: Vec<PluginReport>,
    /// The hub's publisher (plugins publish through it); closed at the end
    /// of the run, after the plugins.
    pub publisher: Option<Arc<HubPublisher>>,
    /// Interval of the monitoring reports; `None` = moksha's 5 s.
    pub monitor_interval: Option<Duration>,
}

/// Runs the hub until `stop` is set, then shuts down in order.
pub fn run(
    config: &Config,
    plugins: Vec<ActivePlugin>,
    stop: Arc<AtomicBool>,
    options: &RunOptions,
) -> std::io::Result<()> {
    let mut prefixes: Vec<String> = plugins
        .iter()
        .flat_map(|p| p.filter.subscriptions())
        .collect();
    minimize_prefixes(&mut prefixes);
    // One verifier for live messages and backlogs alike (one certificate
    // cache), created only when some plugin wants validation.
    let verifier = plugins
        .iter()
        .any(|p| p.needs_validation)
        .then(|| Arc::new(Verifier::new(verifier_settings(config))));
    let mut plugins = plugins;
    for plugin in &mut plugins {
        if let Some(plan) = plugin.backlog.as_mut() {
            plan.stop = Arc::clone(&stop);
            plan.verifier = verifier.clone().filter(|_| plugin.needs_validation);
        }
    }
    let deadline = Arc::new(DrainDeadline::default());
    let settings = DispatchSettings {
        queue_capacity: config.plugin_queue_capacity,
        max_consecutive_panics: config.plugin_max_consecutive_panics,
        dedup_window: config.dedup_window,
    };
    let (dispatcher, workers) = Dispatcher::start(plugins, settings, Arc::clone(&deadline))?;
    if workers.is_empty() {
        tracing::warn!("no plugin is enabled: the hub will receive nothing");
    }
    let ingest_stats = Arc::new(IngestStats::default());
    let mut dispatcher = dispatcher;
    let replay_stats = enable_replay(config, &mut dispatcher, verifier.as_ref(), &ingest_stats)?;
    let monitor = start_monitor(
        config,
        &workers,
        &ingest_stats,
        replay_stats.clone(),
        options,
    );

    let ctx = zmq::Context::new();
    let endpoints = config.endpoint_urls();
    let (subscriber, errors) =
        Subscriber::connect(&ctx, &endpoints, &prefixes, &subscribe_options(config));
    for error in &errors {
        tracing::error!(%error, "endpoint skipped");
    }
    tracing::info!(endpoints = subscriber.len(), plugins = workers.len(), subscriptions = ?prefixes, "hub started");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    let mut pipeline = if let Some(verifier) = verifier {
        let threads = config.effective_verify_threads();
        tracing::info!(threads, "signature validation on");
        Pipeline::pooled(dispatcher, verifier, threads, Arc::clone(&ingest_stats))?
    } else {
        tracing::info!("signature validation off");
        Pipeline::inline(dispatcher)
    };
    let limits = Limits {
        max_message_size: config.max_message_size,
    };
    let received = subscriber.run(&stop, |source, frames| {
        ingest_stats.record_received();
        match ingest::classify(frames, source, &limits) {
            Ok(delivery) => {
                ingest_stats.record_accepted();
                pipeline.submit(delivery);
            }
            Err(reject) => ingest_stats.record_rejected(reject.reason(), source, &reject),
        }
    });
    if let Err(error) = received {
        tracing::error!(%error, "receive loop failed; shutting down");
    }

    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    drop(subscriber);
    pipeline.finish();
    let timeout = Duration::from_secs_f64(config.shutdown_timeout.max(0.0));
    deadline.start(timeout);
    tracing::info!(timeout_s = timeout.as_secs_f64(), "draining plugin queues");
    let mut stats = join_workers(
        workers,
        Instant::now() + timeout + Duration::from_secs(2),
        &ingest_stats,
    );
    // Plugins may publish until they have drained: close the publisher only
    // now, and stop the monitor last so that it reports the whole shutdown.
    if let Some(publisher) = &options.publisher {
        publisher.close(timeout.max(Duration::from_secs(1)));
        stats.publisher = Some(publisher.snapshot());
    }
    stats.replay = replay_stats.map(|r| r.snapshot());
    drop(monitor);
    log_summary(&stats);
    if let Some(path) = &options.stats_file {
        write_stats(path, &stats);
    }
    Ok(())
}

/// Starts seq_id replay for the plugins declaring a `replay_name` (see
/// [`crate::replay::live`]): replayed messages are checked like live ones
/// (frame checks, and the hub's verifier when such a plugin needs
/// validation), and a gap holds at most `plugin_queue_capacity` messages.
fn enable_replay(
    config: &Config,
    dispatcher: &mut Dispatcher,
    verifier: Option<&Arc<Verifier>>,
    ingest: &Arc<IngestStats>,
) -> std::io::Result<Option<Arc<ReplayStats>>> {
    if !dispatcher.any_replay() {
        return Ok(None);
    }
    let options = LiveReplayOptions {
        endpoints: config
            .replay_endpoints
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        timeout: config.replay_duration(),
        hold_capacity: config.plugin_queue_capacity,
        limits: Limits {
            max_message_size: config.max_message_size,
        },
        verifier: verifier
            .filter(|_| dispatcher.replay_needs_validation())
            .cloned(),
        ingest: Arc::clone(ingest),
    };
    dispatcher.enable_replay(options)
}

/// Starts the monitoring socket when `moksha.monitoring.socket` is set. A
/// socket that cannot be set up is logged and the hub runs without it:
/// consuming matters more than reporting, and `fedmsg-check` then says
/// UNKNOWN, which an operator notices.
fn start_monitor(
    config: &Config,
    workers: &[WorkerHandle],
    ingest: &Arc<IngestStats>,
    replay: Option<Arc<ReplayStats>>,
    options: &RunOptions,
) -> Option<crate::monitor::Monitor> {
    let report_of = |name: &str| {
        options
            .reports
            .iter()
            .find(|r| r.name.as_deref() == Some(name))
    };
    let plugins = workers
        .iter()
        .map(|w| {
            let report = report_of(&w.name);
            MonitoredPlugin {
                name: w.name.clone(),
                file: report.map(|r| r.file.clone()).unwrap_or_default(),
                version: report.and_then(|r| r.version.clone()).unwrap_or_default(),
                topics: report.map(|r| r.topics.clone()).unwrap_or_default(),
                stats: Arc::clone(&w.stats),
                queue: w.queue.clone(),
            }
        })
        .collect();
    let failed = options
        .reports
        .iter()
        .filter_map(|r| match &r.status {
            PluginStatus::Failed(why) => Some(FailedPlugin {
                name: r.name.clone().unwrap_or_else(|| {
                    r.file
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default()
                }),
                file: r.file.clone(),
                version: r.version.clone(),
                error: why.clone(),
            }),
            _ => None,
        })
        .collect();
    let sources = MonitorSources {
        plugins,
        failed,
        ingest: Arc::clone(ingest),
        publisher: options.publisher.clone(),
        queue_capacity: config.plugin_queue_capacity,
        replay,
    };
    let interval = options
        .monitor_interval
        .unwrap_or(crate::monitor::DEFAULT_INTERVAL);
    match crate::monitor::Monitor::start(&config.moksha.monitoring, sources, interval) {
        Ok(monitor) => monitor,
        Err(error) => {
            tracing::error!(%error, "monitoring socket disabled");
            None
        }
    }
}

/// The verifier's settings from the fedmsg configuration.
pub fn verifier_settings(config: &Config) -> VerifierSettings {
    VerifierSettings {
        ca_cert_location: config.ca_cert_location.clone(),
        crl_location: config.crl_location.clone().filter(|l| !l.is_empty()),
        ca_cert_cache: config.ca_cert_cache.as_ref().map(PathBuf::from),
        ca_cert_cache_expiry: config.ca_cert_cache_expiry,
        crl_cache: config.crl_cache.as_ref().map(PathBuf::from),
        crl_cache_expiry: config.crl_cache_expiry,
        routing_policy: config.routing_policy.clone(),
        routing_nitpicky: config.routing_nitpicky,
        crypto_validate_backends: config.crypto_validate_backends.clone(),
        crypto_backend: config.crypto_backend.clone(),
        ..VerifierSettings::default()
    }
}

fn subscribe_options(config: &Config) -> SubscribeOptions {
    let clamp = |v: u64| v.min(i32::MAX as u64) as i32;
    SubscribeOptions {
        high_water_mark: clamp(config.high_water_mark),
        reconnect_ivl: clamp(config.zmq_reconnect_ivl),
        reconnect_ivl_max: clamp(config.zmq_reconnect_ivl_max),
        tcp_keepalive: (config.zmq_tcp_keepalive != 0).then(|| TcpKeepalive {
            cnt: clamp(config.zmq_tcp_keepalive_cnt),
            idle: clamp(config.zmq_tcp_keepalive_idle),
            intvl: clamp(config.zmq_tcp_keepalive_intvl),
        }),
    }
}

/// Waits for the workers until `give_up_at`; a plugin stuck in `consume`
/// past it is left behind (the process exits anyway).
fn join_workers(
    workers: Vec<WorkerHandle>,
    give_up_at: Instant,
    ingest: &IngestStats,
) -> StatsSnapshot {
    while Instant::now() < give_up_at && workers.iter().any(|w| !w.thread.is_finished()) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = snapshot(ingest, &workers);
    for worker in workers {
        if worker.thread.is_finished() {
            if worker.thread.join().is_err() {
                tracing::error!(plugin = %worker.name, "plugin worker thread panicked");
            }
        } else {
            tracing::error!(plugin = %worker.name, "plugin still busy after the drain timeout; abandoning it");
        }
    }
    stats
}

fn log_summary(stats: &StatsSnapshot) {
    tracing::info!(
        received = stats.received,
        accepted = stats.accepted,
        "ingest summary"
    );
    for (reason, count) in &stats.rejected {
        tracing::info!(reason, count, "ingest rejections");
    }
    for (reason, count) in &stats.invalid {
        tracing::info!(reason, count, "validation failures");
    }
    for p in &stats.plugins {
        tracing::info!(
            plugin = %p.name,
            received = p.received,
            consumed = p.consumed,
            errors = p.errors,
            panics = p.panics,
            dropped = p.dropped,
            disabled = p.disabled,
            "plugin summary"
        );
    }
}

fn write_stats(path: &Path, stats: &StatsSnapshot) {
    let written = serde_json::to_vec_pretty(stats)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)
        });
    if let Err(error) = written {
        tracing::error!(path = %path.display(), %error, "cannot write the stats file");
    }
}
