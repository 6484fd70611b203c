//! Receive path, step 5: the plugin worker. One thread per plugin takes
//! its queue in order and hands each message to the plugin
//! ([`crate::loader`]), and around that keeps the plugin's promises:
//!
//! * **catch-up first**: a plugin with a recorded position and a
//!   `datagrepper_url` gets what it missed while the hub was down
//!   ([`crate::catchup`]) before its first live message, on this thread, so
//!   no other plugin waits; live messages that overlap the catch-up are
//!   delivered once;
//! * **dedup**: with `dedup_window`, a `msg_id` delivered recently is
//!   dropped ([`crate::dedup`]);
//! * **status**: every finished message (consumed, failed or panicked: none
//!   is retried) is recorded in the plugin's status file, flushed when due,
//!   also when idle ([`crate::status`]);
//! * **panic policy**: `consume` errors are counted and logged; a plugin
//!   that panics `plugin_max_consecutive_panics` times in a row is disabled
//!   (its worker stops, its shutdown hook is not called: it is in an
//!   unknown state);
//! * **drain**: when the hub stops, the queue closes; the worker finishes
//!   what is queued until the drain deadline, counts the rest as dropped and
//!   calls the plugin's shutdown hook.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use fedmsg_wire::crypto::Verifier;
use fedmsg_wire::delivery::Delivery;
use fedmsg_wire::peer_text::for_log;
use fedmsg_wire::ratelimit::LogLimiter;
use fedmsg_wire::report::Counters;
use fedmsg_wire::shutdown::{Stop, Thread};
use fedmsg_wire::topic::TopicFilter;

use crate::catchup::{CatchUp, CatchUpOptions};
use crate::dedup::DedupWindow;
use crate::loader::{ConsumeOutcome, PluginInstance};
use crate::status::{Position, StatusFile};

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
    /// Messages stamped far in the future, whose time the status position
    /// did not take.
    pub future_timestamps: AtomicU64,
    /// Set once the plugin has been disabled for panicking too often.
    pub disabled: AtomicBool,
    /// Set while `consume` runs: a worker abandoned at shutdown while this
    /// is set loses the message it is on too.
    pub in_consume: AtomicBool,
    pub(crate) queue_full_log: LogLimiter,
    error_log: LogLimiter,
}

impl PluginStats {
    /// True once the plugin has been disabled.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// The message counters now, as the stats file and the monitoring
    /// report show them.
    pub fn counters(&self) -> Counters {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            received: load(&self.received),
            consumed: load(&self.consumed),
            errors: load(&self.errors),
            panics: load(&self.panics),
            dropped: load(&self.dropped),
            duplicates: load(&self.duplicates),
            future_timestamps: load(&self.future_timestamps),
        }
    }
}

/// How a worker fetches its plugin's catch-up from datagrepper before it
/// takes live messages. The worker runs it on its own thread: live messages
/// meanwhile wait in the plugin's bounded queue (counted as dropped if it
/// overflows) and other plugins are not delayed at all.
pub struct CatchUpPlan {
    /// The datagrepper `/raw` URL.
    pub url: String,
    /// Where the plugin stopped.
    pub position: Position,
    /// The plugin's topic globs (the catch-up is filtered locally).
    pub filter: TopicFilter,
    /// Paging, retry and size limits.
    pub options: CatchUpOptions,
    /// Wait this long before asking, so that what was published just before
    /// the hub subscribed has reached the message store.
    pub delay: Duration,
    /// Verifies catch-up messages when the plugin needs validation.
    pub verifier: Option<Arc<Verifier>>,
    /// The hub's stop signal: a shutdown ends the catch-up early.
    pub stop: Stop,
}

/// Live messages checked against the catch-up's msg_ids before the set is
/// dropped: the overlap between the two is at most the catch-up delay.
const CATCH_UP_OVERLAP_CHECKS: usize = 100_000;

/// When set, the moment after which workers stop draining their queues.
#[derive(Debug, Default)]
pub struct DrainDeadline(OnceLock<Instant>);

impl DrainDeadline {
    /// Starts the drain: workers finish their queues until `timeout` from now.
    pub fn start(&self, timeout: Duration) {
        let _ = self.0.set(Instant::now() + timeout);
    }

    pub(crate) fn passed(&self) -> bool {
        self.0.get().is_some_and(|d| Instant::now() >= *d)
    }
}

/// A running plugin worker, as seen from outside.
pub struct WorkerHandle {
    /// The plugin's name.
    pub name: String,
    /// Its counters.
    pub stats: Arc<PluginStats>,
    /// Its queue (its length is the plugin's backlog).
    pub queue: Receiver<Arc<Delivery>>,
    /// The worker thread.
    pub thread: Thread,
}

/// Settings of a worker that come from the hub's configuration.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// Panics in a row after which the plugin is disabled.
    pub max_consecutive_panics: u64,
    /// Recent msg_ids remembered to drop duplicates (0 = off).
    pub dedup_window: usize,
}

/// Starts the worker thread of one plugin, taking from `queue`.
pub(crate) fn spawn(
    name: &str,
    instance: PluginInstance,
    status: Option<StatusFile>,
    catch_up: Option<CatchUpPlan>,
    queue: Receiver<Arc<Delivery>>,
    settings: WorkerSettings,
    deadline: Arc<DrainDeadline>,
) -> std::io::Result<WorkerHandle> {
    let stats = Arc::new(PluginStats::default());
    let worker = Worker {
        name: name.to_owned(),
        instance,
        queue: queue.clone(),
        stats: Arc::clone(&stats),
        max_consecutive_panics: settings.max_consecutive_panics.max(1),
        deadline,
        status,
        catch_up,
        dedup: DedupWindow::new(settings.dedup_window),
        status_log: LogLimiter::default(),
    };
    let thread = Thread::spawn(format!("plugin:{name}"), move || worker.run())?;
    Ok(WorkerHandle {
        name: name.to_owned(),
        stats,
        queue,
        thread,
    })
}

struct Worker {
    name: String,
    instance: PluginInstance,
    queue: Receiver<Arc<Delivery>>,
    stats: Arc<PluginStats>,
    max_consecutive_panics: u64,
    deadline: Arc<DrainDeadline>,
    status: Option<StatusFile>,
    catch_up: Option<CatchUpPlan>,
    dedup: DedupWindow,
    status_log: LogLimiter,
}

/// How long an idle worker waits before looking at its status file again.
const IDLE_FLUSH_CHECK: Duration = Duration::from_secs(1);

impl Worker {
    fn run(mut self) {
        let mut caught_up = match self.catch_up.take() {
            Some(plan) => self.catch_up(plan),
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
            if !caught_up.is_empty() {
                overlap_checks += 1;
                let seen = delivery
                    .msg_id
                    .as_ref()
                    .is_some_and(|id| caught_up.remove(id));
                if overlap_checks >= CATCH_UP_OVERLAP_CHECKS {
                    caught_up = HashSet::new();
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
            if status.record_delivery(delivery, delivery.seq_id) {
                self.stats.future_timestamps.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.flush_status(false);
    }

    /// Fetches and consumes everything the plugin missed, in order, and
    /// returns the msg_ids delivered so the live messages that overlap the
    /// catch-up are not delivered twice.
    fn catch_up(&mut self, plan: CatchUpPlan) -> HashSet<String> {
        let mut delivered = HashSet::new();
        if !plan.stop.sleep(plan.delay) {
            return delivered;
        }
        let end = fedmsg_wire::localtime::now_epoch();
        let messages = match CatchUp::new(
            &plan.url,
            &plan.position,
            end,
            plan.filter,
            plan.options,
            plan.stop.clone(),
        ) {
            Ok(messages) => messages,
            Err(error) => {
                tracing::error!(plugin = %self.name, url = %plan.url, %error, "cannot fetch the catch-up");
                return delivered;
            }
        };
        let (mut count, mut invalid) = (0u64, 0u64);
        for item in messages {
            let mut delivery = match item {
                Ok(delivery) => delivery,
                Err(error) => {
                    tracing::error!(plugin = %self.name, url = %plan.url, %error, delivered = count, "catch-up stopped early");
                    break;
                }
            };
            if let Some(verifier) = &plan.verifier {
                if let Err(rejection) = delivery.verify_with(verifier) {
                    invalid += 1;
                    tracing::debug!(plugin = %self.name, msg_id = delivery.msg_id.as_deref().unwrap_or(""), %rejection, "invalid catch-up message skipped");
                    continue;
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
        tracing::info!(plugin = %self.name, delivered = count, invalid, "catch-up from datagrepper delivered");
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
        self.stats.in_consume.store(true, Ordering::Relaxed);
        let outcome = self.instance.consume(delivery);
        self.stats.in_consume.store(false, Ordering::Relaxed);
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
                    tracing::warn!(plugin = %self.name, msg_id = %for_log(msg_id), topic = %for_log(&delivery.topic), %error, suppressed, "consume failed");
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
        // A message can make a plugin panic: as many log lines as such
        // messages would let a publisher flood the log.
        if let Some(suppressed) = self.stats.error_log.check() {
            tracing::error!(plugin = %self.name, msg_id = %for_log(msg_id), topic = %for_log(topic), panic, in_a_row, suppressed, "plugin panicked in consume");
        }
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
