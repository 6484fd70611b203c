//! Dispatch: one bounded queue and one worker thread per enabled plugin.
//!
//! The ingest thread only ever does a non-blocking `try_send` into each
//! matching plugin's queue, so a slow or stuck plugin costs the others
//! nothing: when its queue is full the message is dropped *for that plugin
//! only* and counted. Each worker calls its plugin strictly in queue order,
//! which is arrival order, so a plugin sees one endpoint's messages in the
//! order they were received.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::dedup::DedupWindow;
use crate::delivery::Delivery;
use crate::loader::{ConsumeOutcome, PluginInstance};
use crate::ratelimit::LogLimiter;
use crate::status::StatusFile;
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
    /// The instantiated plugin.
    pub instance: PluginInstance,
    /// Where the plugin's position is recorded (`status_directory`).
    pub status: Option<StatusFile>,
}

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
    tx: Sender<Arc<Delivery>>,
    stats: Arc<PluginStats>,
}

/// The ingest side of dispatch: routes each delivery to the plugins that
/// want it. Dropping it closes every queue, which lets the workers finish.
pub struct Dispatcher {
    routes: Vec<Route>,
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
            let (tx, rx) = bounded(settings.queue_capacity.max(1));
            let stats = Arc::new(PluginStats::default());
            let worker = Worker {
                name: plugin.name.clone(),
                instance: plugin.instance,
                queue: rx.clone(),
                stats: Arc::clone(&stats),
                max_consecutive_panics: settings.max_consecutive_panics.max(1),
                deadline: Arc::clone(&deadline),
                status: plugin.status,
                dedup: DedupWindow::new(settings.dedup_window),
                status_log: LogLimiter::default(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("plugin:{}", plugin.name))
                .spawn(move || worker.run())?;
            routes.push(Route {
                name: plugin.name.clone(),
                filter: plugin.filter,
                needs_validation: plugin.needs_validation,
                tx,
                stats: Arc::clone(&stats),
            });
            workers.push(WorkerHandle {
                name: plugin.name,
                stats,
                queue: rx,
                thread,
            });
        }
        Ok((Dispatcher { routes }, workers))
    }

    /// True when at least one plugin only accepts validated messages (so
    /// ingest must verify signatures).
    pub fn any_needs_validation(&self) -> bool {
        self.routes.iter().any(|r| r.needs_validation)
    }

    /// Hands `delivery` to every plugin that wants it, never blocking.
    pub fn dispatch(&self, delivery: &Arc<Delivery>) {
        for route in &self.routes {
            if route.needs_validation && !delivery.validated {
                continue;
            }
            if !route.filter.matches(&delivery.topic) {
                continue;
            }
            route.offer(delivery);
        }
    }
}

impl Route {
    fn offer(&self, delivery: &Arc<Delivery>) {
        if self.stats.is_disabled() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(Arc::clone(delivery)) {
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
    dedup: DedupWindow,
    status_log: LogLimiter,
}

/// How long an idle worker waits before looking at its status file again.
const IDLE_FLUSH_CHECK: Duration = Duration::from_secs(1);

impl Worker {
    fn run(mut self) {
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
            if !self.dedup.admit(delivery.msg_id.as_deref()) {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.consume(&delivery);
            // Recorded whatever the outcome: a failed or panicked message
            // is not retried, so it is "finished" for the position too.
            if let Some(status) = self.status.as_mut() {
                status.record_delivery(&delivery, delivery.seq_id);
            }
            self.flush_status(false);
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
