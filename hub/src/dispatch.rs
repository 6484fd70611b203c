//! Dispatch: one bounded queue and one worker thread per enabled plugin.
//!
//! The ingest thread only ever does a non-blocking `try_send` into each
//! matching plugin's queue, so a slow or stuck plugin costs the others
//! nothing: when its queue is full the message is dropped *for that plugin
//! only* and counted. Each worker calls its plugin strictly in queue order,
//! which is arrival order, so a plugin sees one endpoint's messages in the
//! order they were received.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::backlog::{Backlog, BacklogOptions};
use crate::crypto::{Verdict, Verifier};
use crate::dedup::DedupWindow;
use crate::delivery::Delivery;
use crate::loader::{ConsumeOutcome, PluginInstance};
use crate::ratelimit::LogLimiter;
use crate::replay::live::{LiveReplay, LiveReplayOptions, ReplaySink, ReplayStats};
use crate::status::{Position, StatusFile};
use crate::topic::TopicFilter;

/// Per-plugin counters, shared between the dispatcher, the worker and
/// whoever reports them (logs, the monitoring socket).
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Messages queued for the plugin.
    pub received: AtomicU64,
    /// Messages the plugin consumed successfully.
    pub consumed: AtomicU64,
    /// Messages whose `consume` returned an error.
    pub errors: AtomicU64,
    /// Messages whose `consume` panicked.
    pub panics: AtomicU64,
    /// Messages dropped for this plugin: queue full, disabled, or left over
    /// when the shutdown drain timed out.
    pub dropped: AtomicU64,
    /// Panics in a row; reset by any call that does not panic.
    pub consecutive_panics: AtomicU64,
    /// Microseconds the last `consume` took.
    pub last_processing_us: AtomicU64,
    /// Messages skipped because the plugin already had them (`dedup_window`).
    pub duplicates: AtomicU64,
    /// Set once the plugin has been disabled for panicking too often.
    pub disabled: AtomicBool,
    queue_full_log: LogLimiter,
    error_log: LogLimiter,
}

impl PluginStats {
    /// True once the plugin has been disabled.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }
}

/// What dispatch needs to know of one running plugin.
pub struct ActivePlugin {
    /// The plugin's name (its crate name).
    pub name: String,
    /// Which topics it wants.
    pub filter: TopicFilter,
    /// True when it only accepts validated messages.
    pub needs_validation: bool,
    /// The sender name whose gaps replay fills for it (fedmsg's
    /// `replay_name`; see [`crate::replay::live`]). `None`: no replay.
    pub replay_name: Option<String>,
    /// The instantiated plugin.
    pub instance: PluginInstance,
    /// Where the plugin's position is recorded (`status_directory`).
    pub status: Option<StatusFile>,
    /// What the plugin missed while the hub was down, to fetch first.
    pub backlog: Option<BacklogPlan>,
}

/// How a worker fetches its plugin's backlog from datagrepper before it
/// takes live messages. The worker runs it on its own thread: live messages
/// meanwhile wait in the plugin's bounded queue (counted as dropped if it
/// overflows) and other plugins are not delayed at all.
pub struct BacklogPlan {
    /// The datagrepper `/raw` URL.
    pub url: String,
    /// Where the plugin stopped.
    pub position: Position,
    /// The plugin's topic globs (the backlog is filtered locally).
    pub filter: TopicFilter,
    /// Paging, retry and size limits.
    pub options: BacklogOptions,
    /// Wait this long before asking, so that what was published just before
    /// the hub subscribed has reached the message store.
    pub delay: Duration,
    /// Verifies backlog messages when the plugin needs validation.
    pub verifier: Option<Arc<Verifier>>,
    /// The hub's stop flag: a shutdown ends the backlog early.
    pub stop: Arc<AtomicBool>,
}

/// Live messages checked against the backlog's msg_ids before the set is
/// dropped: the overlap between the two is at most the backlog delay.
const BACKLOG_OVERLAP_CHECKS: usize = 100_000;

/// Settings shared by every worker.
#[derive(Debug, Clone, Copy)]
pub struct DispatchSettings {
    /// Queue capacity per plugin, in messages.
    pub queue_capacity: usize,
    /// Panics in a row after which a plugin is disabled.
    pub max_consecutive_panics: u64,
    /// Recent msg_ids remembered per plugin to drop duplicates (0 = off).
    pub dedup_window: usize,
}

/// When set, the moment after which workers stop draining their queues.
#[derive(Debug, Default)]
pub struct DrainDeadline(OnceLock<Instant>);

impl DrainDeadline {
    /// Starts the drain: workers finish their queues until `timeout` from now.
    pub fn start(&self, timeout: Duration) {
        let _ = self.0.set(Instant::now() + timeout);
    }

    /// The deadline, once the drain has started.
    pub fn deadline(&self) -> Option<Instant> {
        self.0.get().copied()
    }

    fn passed(&self) -> bool {
        self.0.get().is_some_and(|d| Instant::now() >= *d)
    }
}

struct Route {
    name: String,
    filter: TopicFilter,
    needs_validation: bool,
    replay_name: Option<String>,
    tx: Sender<Arc<Delivery>>,
    /// `plugin_queue_capacity`: the queue is an unbounded channel whose
    /// length is checked before each send, so an idle queue costs no memory
    /// however large the capacity (a bounded crossbeam channel allocates and
    /// touches every slot up front: 16 bytes × capacity of resident memory
    /// per plugin). Concurrent producers (receive thread, replay) may
    /// overshoot it by one message each.
    capacity: usize,
    stats: Arc<PluginStats>,
}

/// The ingest side of dispatch: routes each delivery to the plugins that
/// want it. Dropping it closes every queue, which lets the workers finish.
pub struct Dispatcher {
    routes: Vec<Arc<Route>>,
    /// Gap handling for the plugins that declare a `replay_name`.
    replay: Option<Arc<LiveReplay>>,
}

/// A running plugin worker, as seen from outside.
pub struct WorkerHandle {
    /// The plugin's name.
    pub name: String,
    /// Its counters.
    pub stats: Arc<PluginStats>,
    /// Its queue (for the backlog length).
    pub queue: Receiver<Arc<Delivery>>,
    /// The worker thread.
    pub thread: JoinHandle<()>,
}

impl Dispatcher {
    /// Starts one worker thread per plugin.
    pub fn start(
        plugins: Vec<ActivePlugin>,
        settings: DispatchSettings,
        deadline: Arc<DrainDeadline>,
    ) -> std::io::Result<(Dispatcher, Vec<WorkerHandle>)> {
        let mut routes = Vec::with_capacity(plugins.len());
        let mut workers = Vec::with_capacity(plugins.len());
        for plugin in plugins {
            let (tx, rx) = unbounded();
            let stats = Arc::new(PluginStats::default());
            let worker = Worker {
                name: plugin.name.clone(),
                instance: plugin.instance,
                queue: rx.clone(),
                stats: Arc::clone(&stats),
                max_consecutive_panics: settings.max_consecutive_panics.max(1),
                deadline: Arc::clone(&deadline),
                status: plugin.status,
                backlog: plugin.backlog,
                dedup: DedupWindow::new(settings.dedup_window),
                status_log: LogLimiter::default(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("plugin:{}", plugin.name))
                .spawn(move || worker.run())?;
            routes.push(Arc::new(Route {
                name: plugin.name.clone(),
                filter: plugin.filter,
                needs_validation: plugin.needs_validation,
                replay_name: plugin.replay_name,
                tx,
                capacity: settings.queue_capacity.max(1),
                stats: Arc::clone(&stats),
            }));
            workers.push(WorkerHandle {
                name: plugin.name,
                stats,
                queue: rx,
                thread,
            });
        }
        Ok((
            Dispatcher {
                routes,
                replay: None,
            },
            workers,
        ))
    }

    /// Hands `delivery` to every plugin that wants it, never blocking.
    pub fn dispatch(&self, delivery: &Arc<Delivery>) {
        // Replay plugins of the message's sender name get it from the
        // replay machinery (in sequence, gaps filled, duplicates dropped).
        let replayed = self.replay.as_ref().is_some_and(|r| r.on_live(delivery));
        for route in &self.routes {
            if replayed && route.replay_name.as_deref() == Some(delivery.source.name.as_str()) {
                continue;
            }
            if route.needs_validation && !delivery.validated {
                continue;
            }
            if !route.filter.matches(&delivery.topic) {
                continue;
            }
            route.offer(delivery);
        }
    }

    /// True when some plugin declares a `replay_name`.
    pub fn any_replay(&self) -> bool {
        self.routes.iter().any(|r| r.replay_name.is_some())
    }

    /// True when some plugin declaring a `replay_name` needs validation
    /// (so replayed messages must be verified).
    pub fn replay_needs_validation(&self) -> bool {
        self.routes
            .iter()
            .any(|r| r.replay_name.is_some() && r.needs_validation)
    }

    /// Starts replay for the plugins that declare a `replay_name` whose
    /// name has an entry in `options.endpoints`; a name without one is
    /// logged (warn) and its plugins get live messages only. Returns the
    /// replay counters, or `None` when no plugin gets replay.
    ///
    /// # Errors
    ///
    /// The replay thread could not be spawned.
    pub fn enable_replay(
        &mut self,
        options: LiveReplayOptions,
    ) -> std::io::Result<Option<Arc<ReplayStats>>> {
        let mut sinks: HashMap<String, Vec<Arc<dyn ReplaySink>>> = HashMap::new();
        for route in &self.routes {
            let Some(name) = &route.replay_name else {
                continue;
            };
            if !options.endpoints.contains_key(name) {
                tracing::warn!(plugin = %route.name, replay_name = %name, "replay_endpoints has no entry for the plugin's replay_name: gaps will not be filled");
                continue;
            }
            tracing::info!(plugin = %route.name, replay_name = %name, endpoint = %options.endpoints[name], "replay on");
            sinks
                .entry(name.clone())
                .or_default()
                .push(Arc::clone(route) as Arc<dyn ReplaySink>);
        }
        if sinks.is_empty() {
            return Ok(None);
        }
        let live = LiveReplay::start(sinks, options)?;
        let stats = live.stats();
        self.replay = Some(live);
        Ok(Some(stats))
    }
}

impl ReplaySink for Route {
    fn offer_if_wanted(&self, delivery: &Arc<Delivery>) {
        if self.needs_validation && !delivery.validated {
            return;
        }
        if self.filter.matches(&delivery.topic) {
            self.offer(delivery);
        }
    }

    fn needs_validation(&self) -> bool {
        self.needs_validation
    }
}

impl Route {
    fn offer(&self, delivery: &Arc<Delivery>) {
        if self.stats.is_disabled() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sent = if self.tx.len() >= self.capacity {
            Err(TrySendError::Full(Arc::clone(delivery)))
        } else {
            self.tx.try_send(Arc::clone(delivery))
        };
        match sent {
            Ok(()) => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.stats.queue_full_log.check() {
                    tracing::warn!(
                        plugin = %self.name,
                        msg_id = delivery.msg_id.as_deref().unwrap_or(""),
                        topic = %delivery.topic,
                        suppressed,
                        "plugin queue full: message dropped for this plugin"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                // The worker has stopped (disabled); count, do not log per message.
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

struct Worker {
    name: String,
    instance: PluginInstance,
    queue: Receiver<Arc<Delivery>>,
    stats: Arc<PluginStats>,
    max_consecutive_panics: u64,
    deadline: Arc<DrainDeadline>,
    status: Option<StatusFile>,
    backlog: Option<BacklogPlan>,
    dedup: DedupWindow,
    status_log: LogLimiter,
}

/// Sleeps `duration` in short steps; false when `stop` was set meanwhile.
fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
        );
    }
    !stop.load(Ordering::Relaxed)
}

/// How long an idle worker waits before looking at its status file again.
const IDLE_FLUSH_CHECK: Duration = Duration::from_secs(1);

impl Worker {
    fn run(mut self) {
        let mut from_backlog = match self.backlog.take() {
            Some(plan) => self.deliver_backlog(plan),
            None => HashSet::new(),
        };
        let mut overlap_checks = 0usize;
        loop {
            let wait = self
                .status
                .as_ref()
                .and_then(StatusFile::flush_due_in)
                .unwrap_or(IDLE_FLUSH_CHECK);
            let delivery = match self.queue.recv_timeout(wait) {
                Ok(delivery) => delivery,
                Err(RecvTimeoutError::Timeout) => {
                    self.flush_status(false);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if self.deadline.passed() {
                self.abandon_rest(1);
                break;
            }
            if !from_backlog.is_empty() {
                overlap_checks += 1;
                let seen = delivery
                    .msg_id
                    .as_ref()
                    .is_some_and(|id| from_backlog.remove(id));
                if overlap_checks >= BACKLOG_OVERLAP_CHECKS {
                    from_backlog = HashSet::new();
                }
                if seen {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            self.deliver(&delivery);
            if self.stats.is_disabled() {
                self.abandon_rest(0);
                self.flush_status(true);
                return;
            }
        }
        self.flush_status(true);
        if let Err(error) = self.instance.shutdown() {
            tracing::error!(plugin = %self.name, %error, "plugin shutdown hook failed");
        }
        tracing::debug!(plugin = %self.name, "plugin worker stopped");
    }

    /// Consumes one message (unless dedup says it was seen) and records it
    /// in the status file.
    fn deliver(&mut self, delivery: &Delivery) {
        if !self.dedup.admit(delivery.msg_id.as_deref()) {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.consume(delivery);
        // Recorded whatever the outcome: a failed or panicked message is not
        // retried, so it is "finished" for the position too.
        if let Some(status) = self.status.as_mut() {
            status.record_delivery(delivery, delivery.seq_id);
        }
        self.flush_status(false);
    }

    /// Fetches and consumes everything the plugin missed, in order, and
    /// returns the msg_ids delivered so the live messages that overlap the
    /// backlog are not delivered twice.
    fn deliver_backlog(&mut self, plan: BacklogPlan) -> HashSet<String> {
        let mut delivered = HashSet::new();
        if !sleep_unless_stopped(plan.delay, &plan.stop) {
            return delivered;
        }
        let end = crate::localtime::now_epoch();
        let backlog = match Backlog::new(
            &plan.url,
            &plan.position,
            end,
            plan.filter,
            plan.options,
            Arc::clone(&plan.stop),
        ) {
            Ok(backlog) => backlog,
            Err(error) => {
                tracing::error!(plugin = %self.name, url = %plan.url, %error, "cannot fetch the backlog");
                return delivered;
            }
        };
        let (mut count, mut invalid) = (0u64, 0u64);
        for item in backlog {
            let mut delivery = match item {
                Ok(delivery) => delivery,
                Err(error) => {
                    tracing::error!(plugin = %self.name, url = %plan.url, %error, delivered = count, "backlog stopped early");
                    break;
                }
            };
            if let Some(verifier) = &plan.verifier {
                match verifier.verify_body(delivery.body.as_bytes()) {
                    Verdict::Valid { signer } => {
                        delivery.validated = true;
                        delivery.signer = Some(signer);
                    }
                    Verdict::Invalid(rejection) => {
                        invalid += 1;
                        tracing::debug!(plugin = %self.name, msg_id = delivery.msg_id.as_deref().unwrap_or(""), %rejection, "invalid backlog message skipped");
                        continue;
                    }
                }
            }
            if let Some(id) = &delivery.msg_id {
                delivered.insert(id.clone());
            }
            self.deliver(&delivery);
            count += 1;
            if self.stats.is_disabled() {
                break;
            }
        }
        tracing::info!(plugin = %self.name, delivered = count, invalid, "backlog from datagrepper delivered");
        delivered
    }

    /// Writes the status file when due (or now, with `force`). A failure is
    /// logged, rate-limited: the position on disk is then only older.
    fn flush_status(&mut self, force: bool) {
        let Some(status) = self.status.as_mut() else {
            return;
        };
        let flushed = if force {
            status.flush().map(|()| true)
        } else {
            status.maybe_flush()
        };
        if let Err(error) = flushed {
            if let Some(suppressed) = self.status_log.check() {
                tracing::error!(plugin = %self.name, path = %status.path().display(), %error, suppressed, "cannot write the status file");
            }
        }
    }

    fn consume(&mut self, delivery: &Delivery) {
        let started = Instant::now();
        let outcome = self.instance.consume(delivery);
        let micros = started.elapsed().as_micros().min(u64::MAX as u128) as u64;
        self.stats
            .last_processing_us
            .store(micros, Ordering::Relaxed);
        let msg_id = delivery.msg_id.as_deref().unwrap_or("");
        match outcome {
            ConsumeOutcome::Consumed => {
                self.stats.consumed.fetch_add(1, Ordering::Relaxed);
                self.stats.consecutive_panics.store(0, Ordering::Relaxed);
            }
            ConsumeOutcome::Failed(error) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.stats.consecutive_panics.store(0, Ordering::Relaxed);
                if let Some(suppressed) = self.stats.error_log.check() {
                    tracing::warn!(plugin = %self.name, msg_id, topic = %delivery.topic, %error, suppressed, "consume failed");
                }
            }
            ConsumeOutcome::Panicked(panic) => self.record_panic(msg_id, &delivery.topic, &panic),
        }
    }

    fn record_panic(&self, msg_id: &str, topic: &str, panic: &str) {
        self.stats.panics.fetch_add(1, Ordering::Relaxed);
        let in_a_row = self
            .stats
            .consecutive_panics
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        tracing::error!(plugin = %self.name, msg_id, topic, panic, in_a_row, "plugin panicked in consume");
        if in_a_row >= self.max_consecutive_panics {
            self.stats.disabled.store(true, Ordering::Relaxed);
            tracing::error!(
                plugin = %self.name,
                panics = in_a_row,
                "plugin disabled after {in_a_row} consecutive panics; the hub goes on without it"
            );
        }
    }

    /// Counts what is left in the queue (plus `extra` already taken) as
    /// dropped, so that nothing disappears from the books.
    fn abandon_rest(&self, extra: u64) {
        let rest = self.queue.try_iter().count() as u64 + extra;
        self.stats.dropped.fetch_add(rest, Ordering::Relaxed);
        if rest > 0 {
            tracing::warn!(plugin = %self.name, dropped = rest, "messages left unconsumed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Source;

    fn delivery(n: u64) -> Arc<Delivery> {
        Arc::new(Delivery {
            topic: "org.t".into(),
            body: "{}".into(),
            msg_id: Some(n.to_string()),
            timestamp: None,
            seq_id: None,
            source: Arc::new(Source {
                name: "s".into(),
                url: "u".into(),
            }),
            validated: false,
            signer: None,
        })
    }

    #[test]
    fn a_full_queue_drops_for_its_plugin_and_an_empty_one_costs_nothing() {
        let (tx, rx) = unbounded();
        let route = Route {
            name: "p".into(),
            filter: TopicFilter::new(&["*"], false),
            needs_validation: false,
            replay_name: None,
            tx,
            capacity: 3,
            stats: Arc::new(PluginStats::default()),
        };
        for n in 0..5 {
            route.offer(&delivery(n));
        }
        assert_eq!(rx.len(), 3);
        assert_eq!(route.stats.received.load(Ordering::Relaxed), 3);
        assert_eq!(route.stats.dropped.load(Ordering::Relaxed), 2);
        let first = rx.try_recv().expect("queued");
        assert_eq!(first.msg_id.as_deref(), Some("0"));
        route.offer(&delivery(5));
        assert_eq!(rx.len(), 3, "room again after the worker took one");
        assert_eq!(route.stats.dropped.load(Ordering::Relaxed), 2);
    }
}
