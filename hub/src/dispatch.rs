//! Receive path, step 4: dispatch. Each accepted message goes, in arrival
//! order, to the queue of every plugin whose topic globs match it (and that
//! takes it: validated when the plugin needs validation); each queue feeds
//! one worker thread ([`crate::worker`]).
//!
//! The receive side only ever does a non-blocking `try_send` into each
//! matching plugin's queue, so a slow or stuck plugin costs the others
//! nothing: when its queue is full the message is dropped *for that plugin
//! only* and counted. Each worker calls its plugin strictly in queue order,
//! which is arrival order, so a plugin sees one endpoint's messages in the
//! order they were received.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{unbounded, Sender, TrySendError};
use fedmsg_wire::delivery::Delivery;
use fedmsg_wire::topic::TopicFilter;

use crate::activate::ActivePlugin;
use crate::replay::{LiveReplay, LiveReplayOptions, ReplaySink, ReplayStats};
use crate::worker::{self, DrainDeadline, PluginStats, WorkerHandle, WorkerSettings};

/// Settings of dispatch and the workers.
#[derive(Debug, Clone, Copy)]
pub struct DispatchSettings {
    /// Queue capacity per plugin, in messages.
    pub queue_capacity: usize,
    /// What every worker is told.
    pub worker: WorkerSettings,
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
            let handle = worker::spawn(
                &plugin.name,
                plugin.instance,
                plugin.status,
                plugin.catch_up,
                rx,
                settings.worker,
                Arc::clone(&deadline),
            )?;
            routes.push(Arc::new(Route {
                name: plugin.name,
                filter: plugin.filter,
                needs_validation: plugin.needs_validation,
                replay_name: plugin.replay_name,
                tx,
                capacity: settings.queue_capacity.max(1),
                stats: Arc::clone(&handle.stats),
            }));
            workers.push(handle);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(n: u64) -> Arc<Delivery> {
        Arc::new(crate::testing::delivery(n))
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
