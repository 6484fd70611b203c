//! The hub's own publisher: what `HubContext::publish` in a plugin reaches.
//!
//! Plugins publish from their worker threads; signing (about 1 ms) and the
//! zmq socket (one thread at a time) must not slow them down or be shared
//! between them. So a plugin's publish only `try_send`s into one bounded
//! queue ([`PUBLISH_QUEUE_CAPACITY`]); a single publisher thread owns the
//! socket and the signer, builds, signs and sends. A full queue drops the
//! message, counts it and tells the plugin (its `publish` returns an error).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::Serialize;
use serde_json::Value;

use fedmsg_wire::config::Config;
use fedmsg_wire::publish::{
    short_hostname, signer_for, Attach, EnvelopeBuilder, PubSocket, Publisher, SocketOptions,
};
use fedmsg_wire::ratelimit::LogLimiter;
use fedmsg_wire::replay::server::{
    bind_address as replay_bind_address, ReplayLimits, ReplayServer,
};
use fedmsg_wire::replay::store::ReplayStore;
use fedmsg_wire::shutdown::{Joined, Thread};

use crate::loader::PublishSink;

/// Messages plugins may have waiting for the publisher thread before
/// further publishes are dropped.
pub const PUBLISH_QUEUE_CAPACITY: usize = 10_000;

/// How often the idle publisher thread drains subscription notifications.
const IDLE_TICK: Duration = Duration::from_millis(500);

/// Counters of the hub's publisher.
#[derive(Debug, Default)]
pub struct PublishStats {
    /// Accepted into the queue.
    pub queued: AtomicU64,
    /// Sent on the socket.
    pub published: AtomicU64,
    /// Refused because the queue was full, or after shutdown began.
    pub dropped: AtomicU64,
    /// Taken from the queue but not sent (signing or zmq failure).
    pub failed: AtomicU64,
    full_log: LogLimiter,
    fail_log: LogLimiter,
}

/// The publisher's state and counters at one moment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PublisherSnapshot {
    /// The endpoint name (`hub_name`).
    pub name: String,
    /// The URL bound, when publishing works.
    pub endpoint: Option<String>,
    /// Why publishing does not work, when it does not.
    pub error: Option<String>,
    /// Accepted into the queue.
    pub queued: u64,
    /// Sent.
    pub published: u64,
    /// Dropped (queue full or shutting down).
    pub dropped: u64,
    /// Failed to sign or send.
    pub failed: u64,
    /// Waiting in the queue now.
    pub backlog: u64,
}

enum Job {
    Publish {
        modname: Arc<str>,
        topic: String,
        msg: Value,
    },
    Stop,
}

/// The hub's publisher endpoint and its thread.
pub struct HubPublisher {
    name: String,
    endpoint: Option<String>,
    /// Set when publishing cannot work (no endpoint, bind or key failure):
    /// every publish fails with this text.
    unavailable: Option<String>,
    /// False when the configuration has no endpoint for the hub (publishing
    /// is simply not set up, which is not a fault).
    configured: bool,
    queue: Option<Sender<Job>>,
    stats: Arc<PublishStats>,
    closing: AtomicBool,
    thread: Mutex<Option<Thread>>,
    /// The replay server of the hub's name (`persistent_store` and
    /// `replay_endpoints[name]`), stopped by [`HubPublisher::close`].
    replay: Mutex<Option<ReplayServer>>,
}

impl std::fmt::Debug for HubPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubPublisher")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("unavailable", &self.unavailable)
            .finish_non_exhaustive()
    }
}

impl HubPublisher {
    /// Sets up the hub's publisher: endpoint name
    /// [`Config::effective_hub_name`], bound to the first free URL of
    /// `endpoints[name]`, signing when `sign_messages` is on. Never fails:
    /// when publishing cannot work the reason is logged once and returned
    /// by every publish, and the hub runs on (consuming does not need it).
    pub fn start(config: &Config) -> HubPublisher {
        let name = config.effective_hub_name(&short_hostname());
        let mut publisher = HubPublisher {
            name: name.clone(),
            endpoint: None,
            unavailable: None,
            configured: true,
            queue: None,
            stats: Arc::new(PublishStats::default()),
            closing: AtomicBool::new(false),
            thread: Mutex::new(None),
            replay: Mutex::new(None),
        };
        match open(config, &name) {
            Ok(mut inner) => {
                if let Some(path) = config.persistent_store.as_deref() {
                    let (store, server) = open_replay(config, &name, Path::new(path));
                    if let Some(store) = store {
                        inner.publisher = inner.publisher.with_store(store, &name);
                    }
                    publisher.replay = Mutex::new(server);
                }
                let endpoint = inner.socket_endpoint();
                let (tx, rx) = bounded(PUBLISH_QUEUE_CAPACITY);
                let stats = Arc::clone(&publisher.stats);
                let spawned = Thread::spawn("publisher", move || publish_loop(inner, &rx, &stats));
                match spawned {
                    Ok(handle) => {
                        tracing::info!(name = %name, endpoint = %endpoint, "hub publisher bound");
                        publisher.endpoint = Some(endpoint);
                        publisher.queue = Some(tx);
                        publisher.thread = Mutex::new(Some(handle));
                    }
                    Err(e) => {
                        publisher.unavailable =
                            Some(format!("cannot start the publisher thread: {e}"));
                    }
                }
            }
            Err(Unavailable::Quietly(why)) => {
                tracing::info!(name = %name, "publishing from plugins is off: {why}");
                publisher.unavailable = Some(why);
                publisher.configured = false;
            }
            Err(Unavailable::Loudly(why)) => {
                tracing::error!(name = %name, "publishing from plugins is off: {why}");
                publisher.unavailable = Some(why);
            }
        }
        publisher
    }

    /// Where one plugin's publishes go: they use `modname` as the topic's
    /// module part (see [`EnvelopeBuilder::plugin_topic`]).
    pub(crate) fn sink_for(self: &Arc<Self>, modname: &str) -> Arc<dyn PublishSink> {
        Arc::new(PluginPublisher {
            hub: Arc::clone(self),
            modname: Arc::from(modname),
        })
    }

    /// Queues `msg` for publishing on behalf of a plugin.
    ///
    /// # Errors
    ///
    /// A text for the plugin: publishing is off (and why), the hub is
    /// stopping, or the queue is full and the message was dropped.
    pub(crate) fn submit(&self, modname: &Arc<str>, topic: &str, msg: Value) -> Result<(), String> {
        if let Some(why) = &self.unavailable {
            return Err(why.clone());
        }
        let Some(queue) = self.queue.as_ref().filter(|_| !self.is_closing()) else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Err("the hub is shutting down: message not published".into());
        };
        let job = Job::Publish {
            modname: Arc::clone(modname),
            topic: topic.to_owned(),
            msg,
        };
        match queue.try_send(job) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.stats.full_log.check() {
                    tracing::warn!(modname = %modname, topic, suppressed, "publish queue full: message dropped");
                }
                Err(format!(
                    "the hub's publish queue is full ({PUBLISH_QUEUE_CAPACITY} messages): message dropped"
                ))
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                Err("the hub's publisher has stopped: message not published".into())
            }
        }
    }

    /// False when the configuration has no endpoint for the hub: publishing
    /// was not asked for (as opposed to asked for and broken).
    pub(crate) fn is_configured(&self) -> bool {
        self.configured
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// The counters and state now.
    pub(crate) fn snapshot(&self) -> PublisherSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PublisherSnapshot {
            name: self.name.clone(),
            endpoint: self.endpoint.clone(),
            error: self.unavailable.clone(),
            queued: load(&self.stats.queued),
            published: load(&self.stats.published),
            dropped: load(&self.stats.dropped),
            failed: load(&self.stats.failed),
            backlog: self.queue.as_ref().map_or(0, |q| q.len() as u64),
        }
    }

    /// Stops accepting messages, lets the thread send what is queued (at
    /// most `timeout`), and waits for it. Idempotent.
    pub(crate) fn close(&self, timeout: Duration) {
        if self.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        let deadline = Instant::now() + timeout;
        if let Some(queue) = &self.queue {
            // Behind whatever is queued; if the queue stays full until the
            // deadline the thread is stuck and is abandoned below.
            let _ = queue.send_deadline(Job::Stop, deadline);
        }
        let handle = match self.thread.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(handle) = handle else { return };
        match handle.join_until(deadline) {
            Joined::Finished(()) => {}
            Joined::Panicked(panic) => {
                tracing::error!(%panic, "hub publisher thread panicked");
            }
            Joined::Abandoned => tracing::warn!(
                backlog = self.queue.as_ref().map_or(0, Sender::len),
                "hub publisher did not finish in time; unsent messages are lost"
            ),
        }
        let server = match self.replay.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(server) = server {
            server.stop();
        }
        let snapshot = self.snapshot();
        tracing::info!(
            published = snapshot.published,
            dropped = snapshot.dropped,
            failed = snapshot.failed,
            "hub publisher stopped"
        );
    }
}

/// Why publishing is off: `Quietly` when the configuration simply has no
/// endpoint for the hub (the normal case of a hub whose plugins do not
/// publish), `Loudly` when something configured does not work.
enum Unavailable {
    Quietly(String),
    Loudly(String),
}

/// What the publisher thread owns.
struct Inner {
    publisher: Publisher,
}

impl Inner {
    fn socket_endpoint(&self) -> String {
        // Built by `open` from one bound URL.
        self.publisher.socket().endpoints().join(", ")
    }
}

fn open(config: &Config, name: &str) -> Result<Inner, Unavailable> {
    let Some(urls) = config.endpoints.get(name) else {
        return Err(Unavailable::Quietly(format!(
            "the configuration has no endpoint named {name:?} (set hub_name, and add it to [endpoints])"
        )));
    };
    let signer = signer_for(config, name).map_err(|e| Unavailable::Loudly(e.to_string()))?;
    let ctx = zmq::Context::new();
    let attach = Attach::Bind {
        name: name.to_owned(),
        urls: urls.clone(),
    };
    let socket = PubSocket::open(&ctx, &attach, &SocketOptions::from_config(config))
        .map_err(|e| Unavailable::Loudly(e.to_string()))?;
    let builder = EnvelopeBuilder::new(&config.topic_prefix, &config.environment);
    Ok(Inner {
        publisher: Publisher::new(socket, builder, signer),
    })
}

/// Opens the hub's replay store at `path` (one connection stamps on the
/// publisher thread, one answers on the replay server's thread) and starts
/// the server when `replay_endpoints[name]` exists. Failures are logged and
/// the hub publishes without stamping: consuming and publishing matter more
/// than replay.
fn open_replay(
    config: &Config,
    name: &str,
    path: &Path,
) -> (Option<ReplayStore>, Option<ReplayServer>) {
    let mut store = match ReplayStore::open(path) {
        Ok(store) => store,
        Err(error) => {
            tracing::error!(name, path = %path.display(), %error, "persistent_store unusable: publishing without seq_id");
            return (None, None);
        }
    };
    store.set_retention(config.replay_retention_duration());
    let Some(url) = config.replay_endpoints.get(name) else {
        tracing::warn!(
            name,
            path = %path.display(),
            "persistent_store without replay_endpoints[name]: messages are stamped and stored, but nobody can ask for them"
        );
        return (Some(store), None);
    };
    let server = ReplayStore::open(path)
        .map_err(|e| e.to_string())
        .and_then(|serving| {
            ReplayServer::start(
                &zmq::Context::new(),
                &replay_bind_address(url),
                name,
                serving,
                ReplayLimits::default(),
            )
            .map_err(|e| e.to_string())
        });
    match server {
        Ok(server) => (Some(store), Some(server)),
        Err(error) => {
            tracing::error!(name, url = %url, %error, "replay server not started");
            (Some(store), None)
        }
    }
}

fn publish_loop(mut inner: Inner, queue: &Receiver<Job>, stats: &PublishStats) {
    loop {
        match queue.recv_timeout(IDLE_TICK) {
            Ok(Job::Publish {
                modname,
                topic,
                msg,
            }) => {
                let full_topic = inner.publisher.builder().plugin_topic(&modname, &topic);
                match inner.publisher.publish(full_topic.clone(), msg) {
                    Ok(msg_id) => {
                        stats.published.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(topic = %full_topic, msg_id, "published");
                    }
                    Err(error) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        if let Some(suppressed) = stats.fail_log.check() {
                            tracing::error!(topic = %full_topic, %error, suppressed, "publish failed");
                        }
                    }
                }
            }
            Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                inner.publisher.socket_mut().poll_subscriptions();
            }
        }
    }
}

/// One plugin's view of the hub publisher.
struct PluginPublisher {
    hub: Arc<HubPublisher>,
    modname: Arc<str>,
}

impl PublishSink for PluginPublisher {
    fn publish(&self, plugin: &str, topic: &str, body: &Value) -> Result<(), String> {
        let result = self.hub.submit(&self.modname, topic, body.clone());
        if let Err(why) = &result {
            tracing::debug!(plugin, topic, why = %why, "plugin publish refused");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config_with_endpoint(url: &str) -> Config {
        let mut config = Config::default();
        config.hub_name = Some("test.hub".into());
        config.endpoints.insert("test.hub".into(), vec![url.into()]);
        config.zmq_linger = 0;
        config
    }

    #[test]
    fn without_an_endpoint_publishing_is_refused_with_the_reason() {
        let mut config = Config::default();
        config.hub_name = Some("nowhere".into());
        let publisher = Arc::new(HubPublisher::start(&config));
        let sink = publisher.sink_for("test");
        let err = sink.publish("p", "t", &json!({})).expect_err("no endpoint");
        assert!(err.contains("\"nowhere\""), "{err}");
        assert!(!publisher.is_configured());
        assert_eq!(publisher.snapshot().error.as_deref(), Some(err.as_str()));
    }

    #[test]
    fn plugin_messages_are_published_with_the_modname() {
        let mut config = config_with_endpoint("tcp://127.0.0.1:*");
        config.environment = "stg".into();
        let publisher = Arc::new(HubPublisher::start(&config));
        let endpoint = publisher.snapshot().endpoint.expect("bound");
        let ctx = zmq::Context::new();
        let sub = ctx.socket(zmq::SUB).expect("sub");
        sub.set_subscribe(b"").expect("subscribe");
        sub.connect(&endpoint).expect("connect");
        let sink = publisher.sink_for("faulty");
        // PUB/SUB loses what is sent before the subscription lands: repeat
        // until one arrives.
        let deadline = Instant::now() + Duration::from_secs(20);
        let frames = loop {
            sink.publish("p", "x.reply", &json!({"a": 1}))
                .expect("queued");
            if sub.poll(zmq::POLLIN, 100).expect("poll") > 0 {
                break sub.recv_multipart(0).expect("recv");
            }
            assert!(Instant::now() < deadline, "nothing received");
        };
        assert_eq!(frames[0], b"org.fedoraproject.stg.faulty.x.reply");
        let body: Value = serde_json::from_slice(&frames[1]).expect("json");
        assert_eq!(body["msg"], json!({"a": 1}));
        assert!(body.get("signature").is_none());
        publisher.close(Duration::from_secs(5));
        let snapshot = publisher.snapshot();
        assert!(snapshot.published >= 1);
        assert_eq!(snapshot.queued, snapshot.published + snapshot.failed);
        let err = sink.publish("p", "t", &json!({})).expect_err("closed");
        assert!(err.contains("shutting down"), "{err}");
    }

    #[test]
    fn a_persistent_store_stamps_seq_ids_and_serves_replay() {
        let dir = tempfile::tempdir().expect("dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let replay_url = format!("tcp://127.0.0.1:{port}");
        let mut config = config_with_endpoint("tcp://127.0.0.1:*");
        config.persistent_store = Some(dir.path().join("hub.sqlite").display().to_string());
        config
            .replay_endpoints
            .insert("test.hub".into(), replay_url.clone());
        let publisher = Arc::new(HubPublisher::start(&config));
        let endpoint = publisher.snapshot().endpoint.expect("bound");
        let ctx = zmq::Context::new();
        let sub = ctx.socket(zmq::SUB).expect("sub");
        sub.set_subscribe(b"").expect("subscribe");
        sub.connect(&endpoint).expect("connect");
        let sink = publisher.sink_for("faulty");
        let deadline = Instant::now() + Duration::from_secs(20);
        let first = loop {
            sink.publish("p", "t", &json!({})).expect("queued");
            if sub.poll(zmq::POLLIN, 100).expect("poll") > 0 {
                break sub.recv_multipart(0).expect("recv");
            }
            assert!(Instant::now() < deadline, "nothing received");
        };
        let body: Value = serde_json::from_slice(&first[1]).expect("json");
        let seq_id = body["seq_id"].as_u64().expect("stamped");
        let mut client = fedmsg_wire::replay::client::ReplayClient::new(&ctx);
        let replayed = client
            .fetch_range(&replay_url, 1, seq_id, Duration::from_secs(20))
            .expect("replay answers");
        assert_eq!(replayed.len() as u64, seq_id, "every message was stored");
        assert_eq!(
            replayed.last().map(|r| r.body.as_bytes()),
            Some(first[1].as_slice())
        );
        publisher.close(Duration::from_secs(5));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        // A publisher whose thread never started: the queue only fills.
        let (tx, _rx) = bounded(1);
        let publisher = HubPublisher {
            name: "n".into(),
            endpoint: None,
            unavailable: None,
            configured: true,
            queue: Some(tx),
            stats: Arc::new(PublishStats::default()),
            closing: AtomicBool::new(false),
            thread: Mutex::new(None),
            replay: Mutex::new(None),
        };
        let modname: Arc<str> = Arc::from("m");
        publisher.submit(&modname, "t", json!(1)).expect("room");
        let err = publisher.submit(&modname, "t", json!(2)).expect_err("full");
        assert!(err.contains("full"), "{err}");
        let snapshot = publisher.snapshot();
        assert_eq!(
            (snapshot.queued, snapshot.dropped, snapshot.backlog),
            (1, 1, 1)
        );
    }
}
