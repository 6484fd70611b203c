//! The monitoring socket (reference §10.4): when `moksha.monitoring.socket`
//! is set, the hub binds a PUB there and publishes a single-frame JSON
//! report on its plugins every 5 s, in moksha's `MonitoringProducer` shape
//! (the types are [`fedmsg_wire::report`]), so that fedmsg's `fedmsg-check`
//! and ours both read it.
//!
//! # The report
//!
//! `{"consumers": [...], "producers": [...], "hub": {...}}`. Each consumer
//! has moksha's fields (`name`, `module`, `topic`, `initialized`,
//! `exceptions`, `jsonify`, `backlog`, `headcount_in`, `headcount_out`,
//! `times`), where, as in moksha, `exceptions`, the headcounts and `times`
//! count only since the previous report. Our own fields follow (moksha
//! readers ignore unknown fields): `state` (`running`, `disabled` after
//! panics, `failed` to load or construct, with `error`), the cumulative
//! `received`, `consumed`, `errors`, `panics`, `dropped`, the
//! `queue_capacity`, `last_processing_time` (s) and `recent`: the same
//! counters over the last minute (`recent.seconds` says exactly how long),
//! which is what `fedmsg-check`'s thresholds look at, so that its verdict
//! does not depend on when it happened to connect. A disabled or failed
//! plugin has `initialized: false`, which also makes fedmsg's own
//! `fedmsg-check -c NAME` complain. `hub` holds ingest and validation
//! counters.
//!
//! # When reports are sent
//!
//! Every interval, and also at once when a new subscriber arrives (the
//! socket is an XPUB), so that `fedmsg-check` answers immediately instead of
//! waiting up to 5 s; moksha only had the timer.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use fedmsg_wire::config::{Config, MonitoringConfig};
use fedmsg_wire::crypto::Verifier;
use fedmsg_wire::delivery::Delivery;
use fedmsg_wire::ingest::IngestStats;
use fedmsg_wire::localtime::now_epoch_f64;
use fedmsg_wire::ratelimit::LogLimiter;
use fedmsg_wire::report::{
    ConsumerReport, Counters, HubReport, ProducerReport, Report, Window, RECENT_WINDOW,
};
use fedmsg_wire::shutdown::{OwnedThread, Stop};

use crate::activate::{PluginFile, PluginState};
use crate::publisher::HubPublisher;
use crate::replay::ReplayStats;
use crate::worker::{PluginStats, WorkerHandle};

/// moksha's reporting interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// How often the monitor thread looks at its stop flag and for subscribers.
const POLL: Duration = Duration::from_millis(100);

/// A running plugin, as the monitor sees it.
pub struct MonitoredPlugin {
    /// Plugin name.
    pub name: String,
    /// Its `.so` file.
    pub file: PathBuf,
    /// Its version.
    pub version: String,
    /// Its topic globs.
    pub topics: Vec<String>,
    /// Its counters.
    pub stats: Arc<PluginStats>,
    /// Its queue (for the backlog).
    pub queue: Receiver<Arc<Delivery>>,
}

/// A plugin that was enabled (or is a broken file) but does not run.
#[derive(Debug, Clone)]
pub struct FailedPlugin {
    /// Plugin name, or the file name when it is not a plugin.
    pub name: String,
    /// The file.
    pub file: PathBuf,
    /// Version, when known.
    pub version: Option<String>,
    /// Why it does not run.
    pub error: String,
}

/// Everything a report is made from.
pub struct MonitorSources {
    /// Running plugins.
    pub plugins: Vec<MonitoredPlugin>,
    /// Plugins that failed to start.
    pub failed: Vec<FailedPlugin>,
    /// Ingest counters.
    pub ingest: Arc<IngestStats>,
    /// The hub publisher, when the hub has one.
    pub publisher: Option<Arc<HubPublisher>>,
    /// `plugin_queue_capacity`.
    pub queue_capacity: usize,
    /// seq_id replay counters, when some plugin gets replay.
    pub replay: Option<Arc<ReplayStats>>,
    /// The hub's verifier, when some plugin validates signatures.
    pub verifier: Option<Arc<Verifier>>,
}

/// Why the monitoring socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The socket could not be created or configured.
    #[error("cannot create the monitoring socket: {0}")]
    Socket(zmq::Error),
    /// The endpoint could not be bound.
    #[error("cannot bind the monitoring socket {url}: {source}")]
    Bind {
        /// The endpoint.
        url: String,
        /// zmq's reason.
        source: zmq::Error,
    },
    /// `socket_mode` could not be applied to the ipc file.
    #[error("cannot chmod the monitoring socket {path} to {mode:o}: {source}")]
    Chmod {
        /// The socket file.
        path: String,
        /// The mode.
        mode: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// The reporting thread could not start.
    #[error("cannot start the monitoring thread: {0}")]
    Thread(std::io::Error),
}

/// What the hub's monitor reports on (see [`Monitor::start_for_hub`]).
pub struct HubSources<'a> {
    /// The running plugins.
    pub workers: &'a [WorkerHandle],
    /// Every plugin file and what became of it (failed ones are listed).
    pub files: &'a [PluginFile],
    /// Ingest counters.
    pub ingest: &'a Arc<IngestStats>,
    /// seq_id replay counters, when some plugin gets replay.
    pub replay: Option<Arc<ReplayStats>>,
    /// The hub's publisher.
    pub publisher: &'a Arc<HubPublisher>,
    /// The hub's verifier, when some plugin validates signatures.
    pub verifier: Option<Arc<Verifier>>,
}

/// The monitoring thread; stopped on drop.
pub struct Monitor {
    _thread: OwnedThread,
}

impl Monitor {
    /// Starts the monitoring socket of a running hub when
    /// `moksha.monitoring.socket` is set. A socket that cannot be set up is
    /// logged and the hub runs without it: consuming matters more than
    /// reporting, and `fedmsg-check` then says UNKNOWN, which an operator
    /// notices.
    pub fn start_for_hub(
        config: &Config,
        hub: HubSources<'_>,
        interval: Duration,
    ) -> Option<Monitor> {
        let file_of = |name: &str| hub.files.iter().find(|f| f.name.as_deref() == Some(name));
        let plugins = hub
            .workers
            .iter()
            .map(|w| {
                let file = file_of(&w.name);
                MonitoredPlugin {
                    name: w.name.clone(),
                    file: file.map(|f| f.file.clone()).unwrap_or_default(),
                    version: file.and_then(|f| f.version.clone()).unwrap_or_default(),
                    topics: file.map(|f| f.topics.clone()).unwrap_or_default(),
                    stats: Arc::clone(&w.stats),
                    queue: w.queue.clone(),
                }
            })
            .collect();
        let failed = hub
            .files
            .iter()
            .filter_map(|f| match &f.state {
                PluginState::Failed(why) => Some(FailedPlugin {
                    name: f.name.clone().unwrap_or_else(|| {
                        f.file
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    }),
                    file: f.file.clone(),
                    version: f.version.clone(),
                    error: why.clone(),
                }),
                _ => None,
            })
            .collect();
        let sources = MonitorSources {
            plugins,
            failed,
            ingest: Arc::clone(hub.ingest),
            publisher: Some(Arc::clone(hub.publisher)),
            queue_capacity: config.plugin_queue_capacity,
            replay: hub.replay,
            verifier: hub.verifier,
        };
        match Monitor::start(&config.moksha.monitoring, sources, interval) {
            Ok(monitor) => monitor,
            Err(error) => {
                tracing::error!(%error, "monitoring socket disabled");
                None
            }
        }
    }

    /// Binds the monitoring socket and starts reporting every `interval`.
    /// `Ok(None)` when no socket is configured.
    ///
    /// # Errors
    ///
    /// [`MonitorError`] when the socket cannot be bound or chmod-ed.
    pub fn start(
        config: &MonitoringConfig,
        sources: MonitorSources,
        interval: Duration,
    ) -> Result<Option<Monitor>, MonitorError> {
        let Some(url) = config.socket.clone() else {
            return Ok(None);
        };
        let ctx = zmq::Context::new();
        let socket = bind(&ctx, &url, config.socket_mode)?;
        let reporter = Reporter::new(sources, interval);
        let thread =
            OwnedThread::spawn("monitor", move |stop| report_loop(&socket, reporter, &stop))
                .map_err(MonitorError::Thread)?;
        tracing::info!(endpoint = %url, interval_s = interval.as_secs_f64(), "monitoring socket bound");
        Ok(Some(Monitor { _thread: thread }))
    }
}

fn bind(ctx: &zmq::Context, url: &str, mode: Option<u32>) -> Result<zmq::Socket, MonitorError> {
    let socket = ctx.socket(zmq::XPUB).map_err(MonitorError::Socket)?;
    socket
        .set_xpub_verbose(true)
        .and_then(|()| socket.set_linger(0))
        .map_err(MonitorError::Socket)?;
    socket.bind(url).map_err(|source| MonitorError::Bind {
        url: url.to_owned(),
        source,
    })?;
    if let (Some(path), Some(mode)) = (ipc_path(url), mode) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(
            |source| MonitorError::Chmod {
                path: path.to_owned(),
                mode,
                source,
            },
        )?;
    }
    Ok(socket)
}

/// The file of an `ipc://` endpoint (not for abstract `ipc://@name` ones).
fn ipc_path(url: &str) -> Option<&str> {
    url.strip_prefix("ipc://").filter(|p| !p.starts_with('@'))
}

fn report_loop(socket: &zmq::Socket, mut reporter: Reporter, stop: &Stop) {
    let send_log = LogLimiter::default();
    let mut next = Instant::now() + reporter.interval;
    let poll_ms = i64::try_from(POLL.as_millis()).unwrap_or(100);
    while !stop.is_triggered() {
        let mut newcomer = false;
        match socket.poll(zmq::POLLIN, poll_ms) {
            Ok(0) | Err(zmq::Error::EINTR) => {}
            Ok(_) => {
                while let Ok(frame) = socket.recv_bytes(zmq::DONTWAIT) {
                    newcomer |= frame.first() == Some(&1);
                }
            }
            // Not expected (the context is ours); do not spin on it.
            Err(_) => {
                stop.sleep(POLL);
            }
        }
        let periodic = Instant::now() >= next;
        if periodic {
            next = Instant::now() + reporter.interval;
        }
        if newcomer || periodic {
            let report = reporter.report(periodic);
            let sent = serde_json::to_vec(&report)
                .map_err(|e| e.to_string())
                .and_then(|bytes| socket.send(bytes, 0).map_err(|e| e.to_string()));
            if let Err(error) = sent {
                if let Some(suppressed) = send_log.check() {
                    tracing::error!(%error, suppressed, "cannot send a monitoring report");
                }
            }
        }
    }
}

/// Builds reports and remembers what the previous one said.
struct Reporter {
    sources: MonitorSources,
    interval: Duration,
    started: Instant,
    started_epoch: f64,
    last_ran: f64,
    /// Counters at the previous report (moksha's per-report fields).
    previous: Vec<Counters>,
    previous_failed: u64,
    /// Periodic samples covering the last [`RECENT_WINDOW`].
    samples: VecDeque<(Instant, Vec<Counters>)>,
}

impl Reporter {
    fn new(sources: MonitorSources, interval: Duration) -> Reporter {
        let zero = vec![Counters::default(); sources.plugins.len()];
        let now = Instant::now();
        let epoch = now_epoch_f64();
        Reporter {
            sources,
            interval,
            started: now,
            started_epoch: epoch,
            last_ran: epoch,
            previous: zero.clone(),
            previous_failed: 0,
            samples: VecDeque::from([(now, zero)]),
        }
    }

    /// The report now; `periodic` reports also advance the recent window.
    fn report(&mut self, periodic: bool) -> Report {
        let now = Instant::now();
        let current: Vec<Counters> = self
            .sources
            .plugins
            .iter()
            .map(|p| p.stats.counters())
            .collect();
        if periodic {
            self.last_ran = now_epoch_f64();
            self.samples.push_back((now, current.clone()));
            while self.samples.len() > 1
                && self.samples[1].0 <= now.checked_sub(RECENT_WINDOW).unwrap_or(self.started)
            {
                self.samples.pop_front();
            }
        }
        let mut consumers = self.running(&current, now);
        consumers.extend(self.failed());
        let producers = self.producers();
        self.previous = current;
        Report {
            consumers,
            producers,
            hub: Some(self.hub_report()),
        }
    }

    fn running(&self, current: &[Counters], now: Instant) -> Vec<ConsumerReport> {
        let (window_start, window_counters) = match self.samples.front() {
            Some((at, counters)) => (*at, counters.as_slice()),
            None => (now, current),
        };
        let seconds = now.duration_since(window_start).as_secs_f64();
        let capacity = self.sources.queue_capacity as u64;
        self.sources
            .plugins
            .iter()
            .enumerate()
            .map(|(i, plugin)| {
                let total = current[i];
                let zero = Counters::default();
                let since_last = total.since(self.previous.get(i).unwrap_or(&zero));
                let recent = total.since(window_counters.get(i).unwrap_or(&zero));
                let last = plugin.stats.last_processing_us.load(Ordering::Relaxed) as f64 / 1e6;
                let disabled = plugin.stats.is_disabled();
                ConsumerReport {
                    name: plugin.name.clone(),
                    module: plugin.file.display().to_string(),
                    topic: serde_json::json!(plugin.topics),
                    initialized: !disabled,
                    exceptions: since_last.errors + since_last.panics,
                    jsonify: true,
                    backlog: plugin.queue.len() as u64,
                    headcount_out: since_last.consumed,
                    headcount_in: since_last.received,
                    times: if since_last.consumed > 0 {
                        vec![last]
                    } else {
                        Vec::new()
                    },
                    state: Some(if disabled { "disabled" } else { "running" }.into()),
                    error: disabled.then(|| "disabled after consecutive panics".to_owned()),
                    version: Some(plugin.version.clone()),
                    total: Some(total),
                    recent: Some(Window {
                        seconds,
                        counters: recent,
                    }),
                    queue_capacity: Some(capacity),
                    last_processing_time: Some(last),
                }
            })
            .collect()
    }

    fn failed(&self) -> Vec<ConsumerReport> {
        self.sources
            .failed
            .iter()
            .map(|f| ConsumerReport {
                name: f.name.clone(),
                module: f.file.display().to_string(),
                topic: serde_json::Value::Null,
                initialized: false,
                jsonify: true,
                state: Some("failed".into()),
                error: Some(f.error.clone()),
                version: f.version.clone(),
                ..ConsumerReport::default()
            })
            .collect()
    }

    fn producers(&mut self) -> Vec<ProducerReport> {
        let mut producers = vec![ProducerReport {
            name: "MonitoringProducer".into(),
            module: module_path!().into(),
            initialized: true,
            exceptions: 0,
            frequency: Some(self.interval.as_secs_f64()),
            now: Some(now_epoch_f64()),
            last_ran: Some(self.last_ran),
            ..ProducerReport::default()
        }];
        // A hub without an endpoint of its own does not publish, by
        // design: not a producer then.
        let publisher = self
            .sources
            .publisher
            .as_ref()
            .filter(|p| p.is_configured());
        if let Some(publisher) = publisher {
            let s = publisher.snapshot();
            let exceptions = s.failed.saturating_sub(self.previous_failed);
            self.previous_failed = s.failed;
            producers.push(ProducerReport {
                name: s.name,
                module: "fedmsg_hub::publisher".into(),
                initialized: s.error.is_none(),
                exceptions,
                endpoint: s.endpoint,
                error: s.error,
                published: Some(s.published),
                dropped: Some(s.dropped),
                failed: Some(s.failed),
                backlog: Some(s.backlog),
                ..ProducerReport::default()
            });
        }
        producers
    }

    fn hub_report(&self) -> HubReport {
        let ingest = &self.sources.ingest;
        let owned = |m: BTreeMap<&'static str, u64>| {
            m.into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<BTreeMap<_, _>>()
        };
        HubReport {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            started: self.started_epoch,
            uptime: self.started.elapsed().as_secs_f64(),
            received: ingest.received(),
            accepted: ingest.accepted(),
            rejected: owned(ingest.rejected()),
            invalid: owned(ingest.invalid()),
            replay: self.sources.replay.as_ref().map(|r| r.snapshot()),
            trust_problem: self
                .sources
                .verifier
                .as_ref()
                .and_then(|v| v.trust_problem())
                .map(|problem| problem.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(name: &str) -> (MonitoredPlugin, crossbeam_channel::Sender<Arc<Delivery>>) {
        let (tx, rx) = crossbeam_channel::bounded(10);
        let plugin = MonitoredPlugin {
            name: name.into(),
            file: PathBuf::from(format!("/p/lib{name}.so")),
            version: "1.0.0".into(),
            topics: vec!["org.*".into()],
            stats: Arc::new(PluginStats::default()),
            queue: rx,
        };
        (plugin, tx)
    }

    fn sources(plugins: Vec<MonitoredPlugin>) -> MonitorSources {
        MonitorSources {
            plugins,
            failed: vec![FailedPlugin {
                name: "broken".into(),
                file: PathBuf::from("/p/libbroken.so"),
                version: None,
                error: "constructor failed: boom".into(),
            }],
            ingest: Arc::new(IngestStats::default()),
            replay: None,
            publisher: None,
            queue_capacity: 10,
            verifier: None,
        }
    }

    #[test]
    fn reports_have_moksha_fields_and_window_deltas() {
        let (p, _tx) = plugin("tally");
        let stats = Arc::clone(&p.stats);
        let mut reporter = Reporter::new(sources(vec![p]), Duration::from_secs(5));
        stats.received.store(3, Ordering::Relaxed);
        stats.consumed.store(2, Ordering::Relaxed);
        stats.errors.store(1, Ordering::Relaxed);
        stats.last_processing_us.store(1500, Ordering::Relaxed);
        let first = reporter.report(true);
        let tally = &first.consumers[0];
        assert_eq!(
            (tally.headcount_in, tally.headcount_out, tally.exceptions),
            (3, 2, 1)
        );
        assert_eq!(tally.times, [0.0015]);
        assert!(tally.initialized);
        assert_eq!(tally.recent.expect("recent").counters.errors, 1);

        // moksha's fields restart from zero; ours do not.
        let second = reporter.report(false);
        let tally = &second.consumers[0];
        assert_eq!((tally.headcount_in, tally.exceptions), (0, 0));
        assert!(tally.times.is_empty());
        assert_eq!(tally.total.expect("total").received, 3);
        assert_eq!(tally.recent.expect("recent").counters.received, 3);

        let broken = &second.consumers[1];
        assert_eq!(broken.state.as_deref(), Some("failed"));
        assert!(!broken.initialized);
        assert_eq!(second.producers[0].name, "MonitoringProducer");
    }

    #[test]
    fn a_disabled_plugin_is_not_initialized() {
        let (p, _tx) = plugin("faulty");
        p.stats.disabled.store(true, Ordering::Relaxed);
        let mut reporter = Reporter::new(sources(vec![p]), Duration::from_secs(5));
        let report = reporter.report(true);
        assert!(!report.consumers[0].initialized);
        assert_eq!(report.consumers[0].state.as_deref(), Some("disabled"));
    }

    #[test]
    fn python_reports_parse() {
        let moksha = r#"{"consumers": [{"name": "CounterConsumer", "module": "pyfedmsg_counter",
            "topic": "*", "initialized": true, "exceptions": 0, "jsonify": true, "backlog": 0,
            "headcount_out": 0, "headcount_in": 0, "times": []}],
            "producers": [{"name": "MonitoringProducer", "module": "moksha.hub.monitoring",
            "initialized": true, "exceptions": 0, "frequency": 5, "now": 1.5, "last_ran": 1.0}]}"#;
        let report: Report = serde_json::from_str(moksha).expect("parses");
        assert_eq!(report.consumers[0].name, "CounterConsumer");
        assert!(report.consumers[0].recent.is_none());
        assert_eq!(report.producers[0].frequency, Some(5.0));
    }

    #[test]
    fn the_socket_answers_a_new_subscriber_at_once_and_applies_the_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("monitor.sock");
        let url = format!("ipc://{}", path.display());
        let config = MonitoringConfig {
            socket: Some(url.clone()),
            socket_mode: Some(0o640),
        };
        let (p, _tx) = plugin("tally");
        // A long interval: only the subscription can trigger the report.
        let monitor = Monitor::start(&config, sources(vec![p]), Duration::from_secs(3600))
            .expect("start")
            .expect("configured");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("socket file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o640);

        let ctx = zmq::Context::new();
        let sub = ctx.socket(zmq::SUB).expect("sub");
        sub.set_subscribe(b"").expect("subscribe");
        sub.connect(&url).expect("connect");
        assert!(
            sub.poll(zmq::POLLIN, 20_000).expect("poll") > 0,
            "no report"
        );
        let report: Report =
            serde_json::from_slice(&sub.recv_bytes(0).expect("recv")).expect("json");
        assert_eq!(report.consumers[0].name, "tally");
        assert!(report.hub.is_some());
        drop(monitor);
    }
}
