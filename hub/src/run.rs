//! The running hub: wires the receive path together, runs it until the stop
//! signal, then shuts down in order.
//!
//! Start: the verifier (when some plugin validates), dispatch and one worker
//! per plugin, seq_id replay, the monitoring socket, one SUB socket per
//! endpoint, `READY=1` to systemd, then the receive loop: transport →
//! [`Pipeline::receive`] (ingest, verify) → dispatch → workers.
//!
//! Shutdown follows mini-redis's shape ([`fedmsg_wire::shutdown`]): a
//! signal only triggers the stop; the receive loop sees it within one poll
//! interval and returns; the pipeline finishes what it holds and drops the
//! dispatcher, which closes every plugin queue; workers drain what is
//! queued until the drain deadline, call their plugin's shutdown hook and
//! stop; then the publisher (plugins may publish while draining) and last
//! the monitor, so that it reports the whole shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedmsg_wire::config::Config;
use fedmsg_wire::crypto::{Verifier, VerifierSettings};
use fedmsg_wire::ingest::IngestStats;
use fedmsg_wire::shutdown::{Joined, Stop};
use fedmsg_wire::topic::minimize_prefixes;
use fedmsg_wire::transport::{SubscribeOptions, Subscriber};

use crate::activate::{ActivePlugin, PluginFile};
use crate::dispatch::{DispatchSettings, Dispatcher};
use crate::monitor::{self, Monitor};
use crate::pipeline::Pipeline;
use crate::publisher::HubPublisher;
use crate::replay::LiveReplayOptions;
use crate::stats::StatsSnapshot;
use crate::worker::{DrainDeadline, WorkerHandle, WorkerSettings};

/// How much longer than `shutdown_timeout` the hub waits for a worker that
/// is finishing its last `consume` before abandoning it.
const JOIN_GRACE: Duration = Duration::from_secs(2);

/// Options of one hub run that do not come from the fedmsg config.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where to write the counters as JSON at exit.
    pub stats_file: Option<PathBuf>,
    /// What became of each plugin file at start (the monitoring report
    /// lists those that failed).
    pub files: Vec<PluginFile>,
    /// The hub's publisher (plugins publish through it); closed at the end
    /// of the run, after the plugins.
    pub publisher: Arc<HubPublisher>,
    /// Interval of the monitoring reports; `None` = moksha's 5 s.
    pub monitor_interval: Option<Duration>,
}

/// Runs the hub until `stop` is triggered, then shuts down in order.
///
/// # Errors
///
/// A thread of the hub could not be started.
pub fn run(
    config: &Config,
    plugins: Vec<ActivePlugin>,
    stop: &Stop,
    options: &RunOptions,
) -> std::io::Result<()> {
    let mut prefixes: Vec<String> = plugins
        .iter()
        .flat_map(|p| p.filter.subscriptions())
        .collect();
    minimize_prefixes(&mut prefixes);
    // One verifier for live messages, catch-ups and replay alike (one
    // certificate cache), created only when some plugin wants validation.
    let verifier = plugins
        .iter()
        .any(|p| p.needs_validation)
        .then(|| Arc::new(Verifier::new(VerifierSettings::from_config(config))));
    let mut plugins = plugins;
    for plugin in &mut plugins {
        if let Some(plan) = plugin.catch_up.as_mut() {
            plan.stop = stop.clone();
            plan.verifier = verifier.clone().filter(|_| plugin.needs_validation);
        }
    }
    let deadline = Arc::new(DrainDeadline::default());
    let settings = DispatchSettings {
        queue_capacity: config.plugin_queue_capacity,
        worker: WorkerSettings {
            max_consecutive_panics: config.plugin_max_consecutive_panics,
            dedup_window: config.dedup_window,
        },
    };
    let (mut dispatcher, workers) = Dispatcher::start(plugins, settings, Arc::clone(&deadline))?;
    if workers.is_empty() {
        tracing::warn!("no plugin is enabled: the hub will receive nothing");
    }
    let ingest_stats = Arc::new(IngestStats::default());
    let replay_stats = if dispatcher.any_replay() {
        let replay_verifier = verifier
            .clone()
            .filter(|_| dispatcher.replay_needs_validation());
        dispatcher.enable_replay(LiveReplayOptions::from_config(
            config,
            replay_verifier,
            Arc::clone(&ingest_stats),
        ))?
    } else {
        None
    };
    let monitor = Monitor::start_for_hub(
        config,
        monitor::HubSources {
            workers: &workers,
            files: &options.files,
            ingest: &ingest_stats,
            replay: replay_stats.clone(),
            publisher: &options.publisher,
            verifier: verifier.clone(),
        },
        options
            .monitor_interval
            .unwrap_or(monitor::DEFAULT_INTERVAL),
    );

    let ctx = zmq::Context::new();
    let (subscriber, errors) = Subscriber::connect(
        &ctx,
        &config.endpoint_urls(),
        &prefixes,
        &SubscribeOptions::from_config(config),
    );
    for error in &errors {
        tracing::error!(%error, "endpoint skipped");
    }
    tracing::info!(endpoints = subscriber.len(), plugins = workers.len(), subscriptions = ?prefixes, "hub started");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    let mut pipeline = Pipeline::start(
        dispatcher,
        verifier,
        config.effective_verify_threads(),
        config.max_message_size,
        Arc::clone(&ingest_stats),
    )?;
    if let Err(error) = subscriber.run(stop, |source, frames| pipeline.receive(source, frames)) {
        tracing::error!(%error, "receive loop failed; shutting down");
    }

    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    drop(subscriber);
    pipeline.finish();
    let timeout = config.shutdown_duration();
    deadline.start(timeout);
    tracing::info!(timeout_s = timeout.as_secs_f64(), "draining plugin queues");
    let mut stats = join_workers(
        workers,
        Instant::now() + timeout + JOIN_GRACE,
        &ingest_stats,
    );
    // Plugins may publish until they have drained: close the publisher only
    // now, and stop the monitor last so that it reports the whole shutdown.
    options.publisher.close(timeout.max(Duration::from_secs(1)));
    stats.publisher = Some(options.publisher.snapshot());
    stats.replay = replay_stats.map(|r| r.snapshot());
    drop(monitor);
    stats.log();
    if let Some(path) = &options.stats_file {
        stats.write(path);
    }
    Ok(())
}

/// Counts as dropped what a worker still busy after the drain will never
/// consume: its queue, and the message it is stuck on if it is stuck in
/// `consume` (not, say, in its shutdown hook) (the worker itself
/// counts its queue only when it gets to look at the deadline, which a
/// plugin hung in `consume` never lets it do).
fn abandon(worker: &WorkerHandle) {
    // Taking the messages out (not only their number) means the worker,
    // should it wake up, cannot consume one that is already counted.
    let queued = worker.queue.try_iter().count() as u64;
    let stuck = worker
        .stats
        .in_consume
        .load(std::sync::atomic::Ordering::Relaxed);
    let dropped = queued + u64::from(stuck);
    worker
        .stats
        .dropped
        .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(plugin = %worker.name, dropped, "messages left unconsumed by a plugin stuck in consume");
}

/// Waits for the workers until `give_up_at` and takes the counters; a
/// plugin stuck in `consume` past it is left behind (the process exits
/// anyway).
fn join_workers(
    workers: Vec<WorkerHandle>,
    give_up_at: Instant,
    ingest: &IngestStats,
) -> StatsSnapshot {
    for worker in &workers {
        if !worker.thread.wait_until(give_up_at) {
            abandon(worker);
        }
    }
    let stats = StatsSnapshot::of(ingest, &workers);
    for worker in workers {
        match worker.thread.join_until(Instant::now()) {
            Joined::Finished(()) => {}
            Joined::Panicked(panic) => {
                tracing::error!(plugin = %worker.name, %panic, "plugin worker thread panicked");
            }
            Joined::Abandoned => {
                tracing::error!(plugin = %worker.name, "plugin still busy after the drain timeout; abandoning it");
            }
        }
    }
    stats
}
