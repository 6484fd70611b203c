//! Delivery guarantee: seq_id replay in the running hub. Gap detection on
//! live messages for plugins that declare a `replay_name`, fetching on a
//! thread of its own, and in-order delivery of what was missing.
//!
//! # Flow
//!
//! Dispatch hands every live message that carries a `seq_id` and comes from
//! a sender name some plugin replays (the endpoint name,
//! `Delivery.source.name`) to [`LiveReplay::on_live`], in arrival order.
//! There the name's [`GapTracker`] decides:
//!
//! * in sequence: offered to that name's replay plugins at once;
//! * a duplicate (`seq_id` already seen): dropped for them, counted;
//! * a gap: the message is **held** and a fetch of the missing range is
//!   queued for the replay thread. Later messages of the same name are held
//!   behind it (bounded by the plugin queue capacity); messages of other
//!   names, and every plugin without `replay_name`, keep flowing.
//!
//! The replay thread asks `replay_endpoints[name]` with a REQ socket
//! ([`ReplayClient::fetch_range`], bounded by `replay_timeout` from the
//! moment the gap was seen), checks each answer like a live message (the
//! same frame checks of [`fedmsg_wire::ingest::classify`], the same verifier),
//! then delivers the replayed messages in `seq_id` order, the message that
//! revealed the gap, and the held ones (which go through the tracker again:
//! one of them may reveal the next gap). A failed or timed-out fetch is
//! counted and logged; the held messages are then delivered without the
//! missing ones. A hold that overflows gives up the same way (the late
//! answer is ignored).
//!
//! Replayed messages go only to plugins whose `replay_name` is that name;
//! the others get live traffic exactly as without replay. Because every
//! plugin queue is only `try_send`-ed, delivering from the replay thread
//! never blocks either.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use fedmsg_wire::config::Config;
use fedmsg_wire::crypto::Verifier;
use fedmsg_wire::delivery::{Delivery, Source};
use fedmsg_wire::ingest::{self, IngestStats, Limits};
use fedmsg_wire::ratelimit::LogLimiter;
use fedmsg_wire::replay::client::{Action, GapTracker, ReplayClient, Replayed};
use fedmsg_wire::report::ReplaySnapshot;

/// Gap fetches that may wait for the replay thread; one is outstanding per
/// sender name at most, so this only matters with very many names.
const FETCH_QUEUE_CAPACITY: usize = 256;

/// Where a message for one replay plugin goes (implemented by dispatch's
/// per-plugin route: topic filter, validation requirement, `try_send`).
pub trait ReplaySink: Send + Sync {
    /// Offers `delivery` to the plugin if it wants it; never blocks.
    fn offer_if_wanted(&self, delivery: &Arc<Delivery>);

    /// True when the plugin only takes validated messages.
    fn needs_validation(&self) -> bool;
}

/// Replay counters, for the stats file and the monitoring report.
#[derive(Debug, Default)]
pub struct ReplayStats {
    gaps: AtomicU64,
    replayed: AtomicU64,
    failures: AtomicU64,
    missing: AtomicU64,
    duplicates: AtomicU64,
}

impl ReplayStats {
    /// The counters now.
    pub fn snapshot(&self) -> ReplaySnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReplaySnapshot {
            gaps: load(&self.gaps),
            replayed: load(&self.replayed),
            failures: load(&self.failures),
            missing: load(&self.missing),
            duplicates: load(&self.duplicates),
        }
    }
}

/// What the replay machinery needs besides the sinks.
pub struct LiveReplayOptions {
    /// `replay_endpoints`: the REQ address of each sender name.
    pub endpoints: HashMap<String, String>,
    /// Budget of one gap, from detection to delivery (`replay_timeout`).
    pub timeout: Duration,
    /// Most messages held behind one gap before giving up on it.
    pub hold_capacity: usize,
    /// Frame checks for replayed messages (as for live ones).
    pub limits: Limits,
    /// Signature verification, when some replay plugin needs it.
    pub verifier: Option<Arc<Verifier>>,
    /// Where invalid replayed messages are counted, like live ones.
    pub ingest: Arc<IngestStats>,
}

impl LiveReplayOptions {
    /// The options of the fedmsg configuration: `replay_endpoints`,
    /// `replay_timeout`, a hold of at most `plugin_queue_capacity` messages,
    /// replayed messages checked like live ones (frame checks, and
    /// `verifier` when a replay plugin needs validation).
    pub fn from_config(
        config: &Config,
        verifier: Option<Arc<Verifier>>,
        ingest: Arc<IngestStats>,
    ) -> LiveReplayOptions {
        LiveReplayOptions {
            endpoints: config
                .replay_endpoints
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            timeout: config.replay_duration(),
            hold_capacity: config.plugin_queue_capacity,
            limits: Limits {
                max_message_size: config.max_message_size,
                ..Limits::default()
            },
            verifier,
            ingest,
        }
    }
}

struct FetchJob {
    name: String,
    endpoint: String,
    from: u64,
    to: u64,
    generation: u64,
    deadline: Instant,
}

struct Held {
    generation: u64,
    from: u64,
    to: u64,
    revealing: Arc<Delivery>,
    queue: VecDeque<Arc<Delivery>>,
}

#[derive(Default)]
struct State {
    tracker: GapTracker,
    held: HashMap<String, Held>,
    next_generation: u64,
}

/// Gap handling for the sender names that replay plugins declared. Owned by
/// the dispatcher; dropping it delivers whatever is still held and lets the
/// replay thread end.
pub struct LiveReplay {
    state: Mutex<State>,
    sinks: HashMap<String, Vec<Arc<dyn ReplaySink>>>,
    /// Names whose replay plugins all need validation: an unvalidated
    /// message must not move their tracker (a forged huge `seq_id` would
    /// otherwise make every real message a "duplicate").
    validated_only: HashSet<String>,
    jobs: Sender<FetchJob>,
    stats: Arc<ReplayStats>,
    hold_capacity: usize,
    timeout: Duration,
    endpoints: HashMap<String, String>,
    fail_log: LogLimiter,
}

impl LiveReplay {
    /// Starts the replay thread for `sinks` (sender name → the sinks of the
    /// plugins replaying it; names without a replay endpoint must have been
    /// left out by the caller).
    ///
    /// # Errors
    ///
    /// The thread could not be spawned.
    pub fn start(
        sinks: HashMap<String, Vec<Arc<dyn ReplaySink>>>,
        options: LiveReplayOptions,
    ) -> std::io::Result<Arc<LiveReplay>> {
        let (tx, rx) = bounded(FETCH_QUEUE_CAPACITY);
        let validated_only = sinks
            .iter()
            .filter(|(_, sinks)| sinks.iter().all(|s| s.needs_validation()))
            .map(|(name, _)| name.clone())
            .collect();
        let live = Arc::new(LiveReplay {
            state: Mutex::new(State::default()),
            sinks,
            validated_only,
            jobs: tx,
            stats: Arc::new(ReplayStats::default()),
            hold_capacity: options.hold_capacity.max(1),
            timeout: options.timeout,
            endpoints: options.endpoints.clone(),
            fail_log: LogLimiter::default(),
        });
        let worker = Fetcher {
            live: Arc::downgrade(&live),
            jobs: rx,
            client: ReplayClient::new(&zmq::Context::new()),
            limits: options.limits,
            verifier: options.verifier,
            ingest: options.ingest,
        };
        std::thread::Builder::new()
            .name("replay-fetch".into())
            .spawn(move || worker.run())?;
        Ok(live)
    }

    /// The counters (shared, for the stats file and the monitor).
    pub fn stats(&self) -> Arc<ReplayStats> {
        Arc::clone(&self.stats)
    }

    /// True when `name` is replayed by some plugin.
    pub fn handles(&self, name: &str) -> bool {
        self.sinks.contains_key(name)
    }

    /// Takes a live message. Returns false when replay does not concern it
    /// (no `seq_id`, or no plugin replays its sender name): the caller then
    /// dispatches it to every plugin as usual. True means the replay
    /// plugins of its name are served from here (the caller skips them).
    pub fn on_live(&self, delivery: &Arc<Delivery>) -> bool {
        let name = delivery.source.name.as_str();
        if delivery.seq_id.is_none() || !self.handles(name) {
            return false;
        }
        if !delivery.validated && self.validated_only.contains(name) {
            return true; // none of them takes it: nothing to track
        }
        let mut state = self.lock();
        if let Some(held) = state.held.get_mut(name) {
            if held.queue.len() < self.hold_capacity {
                held.queue.push_back(Arc::clone(delivery));
                return true;
            }
            // The answer is taking too long for the traffic: stop holding.
            if let Some(held) = state.held.remove(name) {
                self.fail(name, &held, "too many messages held behind the gap");
                self.release(&mut state, name, held, Vec::new());
            }
            // Releasing may have opened the next gap: queue behind it.
            if let Some(held) = state.held.get_mut(name) {
                held.queue.push_back(Arc::clone(delivery));
                return true;
            }
        }
        self.observe(&mut state, delivery);
        true
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Offers only try_send; a panic under the lock leaves the state
        // consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn offer(&self, name: &str, delivery: &Arc<Delivery>) {
        for sink in self.sinks.get(name).into_iter().flatten() {
            sink.offer_if_wanted(delivery);
        }
    }

    /// Runs one message of a name that is not held through the tracker.
    fn observe(&self, state: &mut State, delivery: &Arc<Delivery>) {
        let name = delivery.source.name.as_str();
        let Some(seq_id) = delivery.seq_id else {
            self.offer(name, delivery);
            return;
        };
        match state.tracker.observe(name, seq_id) {
            Action::Deliver => self.offer(name, delivery),
            Action::Duplicate => {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(name, seq_id, "duplicate seq_id dropped for replay plugins");
            }
            Action::Gap { from, to } => self.start_gap(state, delivery, from, to),
        }
    }

    fn start_gap(&self, state: &mut State, delivery: &Arc<Delivery>, from: u64, to: u64) {
        let name = delivery.source.name.clone();
        self.stats.gaps.fetch_add(1, Ordering::Relaxed);
        state.next_generation += 1;
        let generation = state.next_generation;
        tracing::info!(name = %name, from, to, "seq_id gap: asking the replay endpoint");
        let held = Held {
            generation,
            from,
            to,
            revealing: Arc::clone(delivery),
            queue: VecDeque::new(),
        };
        let Some(endpoint) = self.endpoints.get(&name) else {
            self.fail(&name, &held, "no replay endpoint");
            self.release(state, &name, held, Vec::new());
            return;
        };
        let job = FetchJob {
            name: name.clone(),
            endpoint: endpoint.clone(),
            from,
            to,
            generation,
            deadline: Instant::now() + self.timeout,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {
                state.held.insert(name, held);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.fail(&name, &held, "the replay thread is not keeping up");
                self.release(state, &name, held, Vec::new());
            }
        }
    }

    fn fail(&self, name: &str, held: &Held, why: &str) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.stats
            .missing
            .fetch_add(held.to - held.from + 1, Ordering::Relaxed);
        if let Some(suppressed) = self.fail_log.check() {
            tracing::warn!(
                name,
                from = held.from,
                to = held.to,
                why,
                suppressed,
                "replay failed: delivering without the missing messages"
            );
        }
    }

    /// Delivers `replayed`, then the message that revealed the gap, then
    /// what was held behind it (through the tracker again).
    fn release(&self, state: &mut State, name: &str, held: Held, replayed: Vec<Arc<Delivery>>) {
        for delivery in &replayed {
            self.offer(name, delivery);
        }
        self.offer(name, &held.revealing);
        let mut queue = held.queue;
        while let Some(delivery) = queue.pop_front() {
            if let Some(next) = state.held.get_mut(name) {
                // A held message revealed another gap: the rest waits
                // behind that one, in order.
                next.queue.push_back(delivery);
                next.queue.extend(queue.drain(..));
                break;
            }
            self.observe(state, &delivery);
        }
    }

    /// The fetch of `generation` for `name` ended with `replayed` (checked,
    /// in `seq_id` order), or failed with `error`.
    fn complete(&self, name: &str, generation: u64, replayed: Result<Vec<Arc<Delivery>>, String>) {
        let mut state = self.lock();
        if state.held.get(name).map(|h| h.generation) != Some(generation) {
            // Given up meanwhile (hold overflow); what came back is late.
            return;
        }
        let Some(held) = state.held.remove(name) else {
            return;
        };
        match replayed {
            Ok(messages) => {
                let count = messages.len() as u64;
                self.stats.replayed.fetch_add(count, Ordering::Relaxed);
                let wanted = held.to - held.from + 1;
                if count < wanted {
                    self.stats
                        .missing
                        .fetch_add(wanted - count, Ordering::Relaxed);
                    tracing::warn!(
                        name,
                        from = held.from,
                        to = held.to,
                        got = count,
                        "replay answered only part of the gap"
                    );
                } else {
                    tracing::info!(
                        name,
                        from = held.from,
                        to = held.to,
                        "seq_id gap filled by replay"
                    );
                }
                self.release(&mut state, name, held, messages);
            }
            Err(why) => {
                self.fail(name, &held, &why);
                self.release(&mut state, name, held, Vec::new());
            }
        }
    }
}

impl Drop for LiveReplay {
    fn drop(&mut self) {
        // Shutdown: nothing held may be lost on the way out.
        let mut state = std::mem::take(&mut *self.lock());
        let names: Vec<String> = state.held.keys().cloned().collect();
        for name in names {
            if let Some(held) = state.held.remove(&name) {
                self.release(&mut state, &name, held, Vec::new());
            }
        }
        // A release may have started a new gap; its messages go out too.
        for (name, held) in state.held.drain() {
            self.offer(&name, &held.revealing);
            for delivery in &held.queue {
                self.offer(&name, delivery);
            }
        }
    }
}

/// The replay thread: fetches, checks, hands back.
struct Fetcher {
    live: Weak<LiveReplay>,
    jobs: Receiver<FetchJob>,
    client: ReplayClient,
    limits: Limits,
    verifier: Option<Arc<Verifier>>,
    ingest: Arc<IngestStats>,
}

impl Fetcher {
    fn run(mut self) {
        // Ends when the LiveReplay (holding the sender) is dropped.
        for job in self.jobs.iter() {
            let remaining = job.deadline.saturating_duration_since(Instant::now());
            let result = if remaining.is_zero() {
                Err("no time left for the replay query".to_owned())
            } else {
                self.client
                    .fetch_range(&job.endpoint, job.from, job.to, remaining)
                    .map(|messages| self.check(&job, messages))
                    .map_err(|e| e.to_string())
            };
            let Some(live) = self.live.upgrade() else {
                return;
            };
            live.complete(&job.name, job.generation, result);
        }
        tracing::debug!("replay thread stopped");
    }

    /// Turns replayed frames into deliveries checked like live ones; a
    /// message that fails the frame checks is left out (counted by ingest).
    fn check(&self, job: &FetchJob, messages: Vec<Replayed>) -> Vec<Arc<Delivery>> {
        let source = Arc::new(Source {
            name: job.name.clone(),
            url: job.endpoint.clone(),
        });
        let mut out = Vec::with_capacity(messages.len());
        for message in messages {
            let Some(topic) = message.topic().map(str::to_owned) else {
                self.ingest
                    .record_rejected("no_topic", &source, &"replayed envelope has no topic");
                continue;
            };
            let frames = vec![topic.into_bytes(), message.body.into_bytes()];
            let mut delivery = match ingest::classify(frames, &source, &self.limits) {
                Ok(delivery) => delivery,
                Err(reject) => {
                    self.ingest
                        .record_rejected(reject.reason(), &source, &reject);
                    continue;
                }
            };
            if let Some(verifier) = &self.verifier {
                // An invalid message is still offered: plugins that do not
                // need validation take it, the others skip it, as live.
                if let Err(rejection) = delivery.verify_with(verifier) {
                    self.ingest.record_invalid(&delivery, &rejection);
                }
            }
            out.push(Arc::new(delivery));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the seq_ids offered; `.1`: the plugin needs validation.
    struct Collect(Mutex<Vec<u64>>, bool);

    impl ReplaySink for Collect {
        fn offer_if_wanted(&self, delivery: &Arc<Delivery>) {
            if self.1 && !delivery.validated {
                return;
            }
            if let Ok(mut seen) = self.0.lock() {
                seen.push(delivery.seq_id.unwrap_or(0));
            }
        }

        fn needs_validation(&self) -> bool {
            self.1
        }
    }

    fn delivery(name: &str, seq_id: u64) -> Arc<Delivery> {
        let topic = "org.test.t".to_owned();
        Arc::new(Delivery {
            body: format!("{{\"topic\":\"{topic}\",\"seq_id\":{seq_id}}}"),
            topic,
            msg_id: Some(format!("m{seq_id}")),
            timestamp: None,
            seq_id: Some(seq_id),
            source: Arc::new(Source {
                name: name.into(),
                url: "u".into(),
            }),
            validated: false,
            signer: None,
        })
    }

    fn start(endpoint: &str, timeout: Duration) -> (Arc<LiveReplay>, Arc<Collect>) {
        start_holding(endpoint, timeout, 100)
    }

    fn start_holding(
        endpoint: &str,
        timeout: Duration,
        hold_capacity: usize,
    ) -> (Arc<LiveReplay>, Arc<Collect>) {
        start_with(endpoint, timeout, hold_capacity, false)
    }

    fn start_with(
        endpoint: &str,
        timeout: Duration,
        hold_capacity: usize,
        validating: bool,
    ) -> (Arc<LiveReplay>, Arc<Collect>) {
        let sink = Arc::new(Collect(Mutex::new(Vec::new()), validating));
        let sinks: HashMap<String, Vec<Arc<dyn ReplaySink>>> =
            HashMap::from([("pub".to_owned(), vec![sink.clone() as Arc<dyn ReplaySink>])]);
        let options = LiveReplayOptions {
            endpoints: HashMap::from([("pub".to_owned(), endpoint.to_owned())]),
            timeout,
            hold_capacity,
            limits: Limits::default(),
            verifier: None,
            ingest: Arc::new(IngestStats::default()),
        };
        (LiveReplay::start(sinks, options).expect("start"), sink)
    }

    fn seen(sink: &Collect) -> Vec<u64> {
        sink.0.lock().expect("lock").clone()
    }

    #[test]
    fn a_gap_is_filled_in_order_before_the_held_messages() {
        let ctx = zmq::Context::new();
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("store.sqlite");
        let mut store = fedmsg_wire::replay::store::ReplayStore::open(&path).expect("store");
        for n in 1..=5 {
            let mut envelope =
                serde_json::json!({"topic": "org.test.t", "msg_id": format!("m{n}")});
            store.add("pub", &mut envelope).expect("add");
        }
        let server = fedmsg_wire::replay::server::ReplayServer::start(
            &ctx,
            "tcp://127.0.0.1:*",
            "pub",
            fedmsg_wire::replay::store::ReplayStore::open(&path).expect("store"),
            Default::default(),
        )
        .expect("server");
        let (live, sink) = start(server.endpoint(), Duration::from_secs(10));
        assert!(live.on_live(&delivery("pub", 1)));
        assert!(live.on_live(&delivery("pub", 4)));
        assert!(live.on_live(&delivery("pub", 5)));
        assert!(live.on_live(&delivery("pub", 3)), "late duplicate");
        assert!(!live.on_live(&delivery("other", 9)), "not a replayed name");
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen(&sink).len() < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(seen(&sink), vec![1, 2, 3, 4, 5]);
        let stats = live.stats().snapshot();
        assert_eq!((stats.gaps, stats.replayed, stats.duplicates), (1, 2, 1));
        server.stop();
    }

    #[test]
    fn a_dead_endpoint_times_out_and_releases_the_held_messages() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let (live, sink) = start(
            &format!("tcp://127.0.0.1:{port}"),
            Duration::from_millis(300),
        );
        live.on_live(&delivery("pub", 1));
        live.on_live(&delivery("pub", 3));
        live.on_live(&delivery("pub", 4));
        assert_eq!(seen(&sink), vec![1], "held behind the gap");
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen(&sink).len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(seen(&sink), vec![1, 3, 4]);
        let stats = live.stats().snapshot();
        assert_eq!((stats.failures, stats.missing), (1, 1));
    }

    #[test]
    fn an_overflowing_hold_gives_up_in_order() {
        let (live, sink) = start_holding("tcp://127.0.0.1:9", Duration::from_secs(30), 2);
        for seq_id in [1, 3, 4, 5, 6, 7] {
            live.on_live(&delivery("pub", seq_id));
        }
        // 3 revealed the gap, 4 and 5 were held, 6 overflowed the hold.
        assert_eq!(seen(&sink), vec![1, 3, 4, 5, 6, 7]);
        let stats = live.stats().snapshot();
        assert_eq!((stats.gaps, stats.failures, stats.missing), (1, 1, 1));
    }

    #[test]
    fn unvalidated_messages_do_not_move_a_validating_tracker() {
        let (live, sink) = start_with("tcp://127.0.0.1:9", Duration::from_secs(30), 10, true);
        let valid = |seq_id| {
            let mut d = (*delivery("pub", seq_id)).clone();
            d.validated = true;
            Arc::new(d)
        };
        live.on_live(&valid(1));
        assert!(live.on_live(&delivery("pub", 1_000)), "forged, unvalidated");
        live.on_live(&valid(2));
        assert_eq!(seen(&sink), vec![1, 2]);
        assert_eq!(live.stats().snapshot().gaps, 0);
    }

    #[test]
    fn dropping_releases_what_is_held() {
        let (live, sink) = start("tcp://127.0.0.1:9", Duration::from_secs(30));
        live.on_live(&delivery("pub", 1));
        live.on_live(&delivery("pub", 5));
        live.on_live(&delivery("pub", 6));
        drop(live);
        assert_eq!(seen(&sink), vec![1, 5, 6]);
    }
}
