//! `busmon`: the bus live in a browser, as a fedmsg-hub plugin. One page
//! and its live feed, moksha's WebSocket protocol for datagrepper's
//! `live.js` and old widgets, Server-Sent Events for `curl`.
//!
//! ```toml
//! [busmon]
//! enabled = true
//! http_listen = "127.0.0.1:8080"   # loopback unless configured otherwise
//! max_clients = 100                # WebSocket + SSE; more get 503
//! client_buffer = 1000             # messages waiting per client, at most
//! max_subscriptions = 64           # moksha subscribe patterns per client
//! client2server = false            # moksha's: publish clients' frames
//! # raw_url = "https://apps.fedoraproject.org/datagrepper/raw"
//! # topic = ["org.fedoraproject.*"] # what busmon receives (default all)
//! ```
//!
//! Routes: `/` (the page; a WebSocket upgrade there, or on `/ws`, speaks
//! moksha's protocol), `/stream?topic=GLOB[,GLOB]&text=&user=&package=`
//! (SSE; `view=page` is the page's own format), `/_heartbeat`,
//! `/api/stats`, `/static/*`.
//!
//! How it is built: `consume` counts the message for the chart and, only
//! when clients are connected, offers it to each client whose filter
//! matches ([`fanout`]): a bounded queue per client, never waiting on one.
//! The server ([`server`]) runs on a runtime of its own. Everything a
//! message contains reaches the page as data and is put in the page as
//! text (`textContent`); the page's Content-Security-Policy forbids inline
//! script.

#![warn(missing_docs)]

pub mod fanout;
pub mod frame;
pub mod server;
pub mod settings;
pub mod stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fedmsg_plugin_api::{
    export_plugin, tracing, ConsumeError, ConsumerPlugin, HubContext, Message, PluginConfig,
    PluginError,
};
use fedmsg_wire::crypto::{Verifier, VerifierSettings};
use fedmsg_wire::ratelimit::LogLimiter;

use fanout::{Event, MetaLite, Registry, Render};
use server::{Counters, Server, Shared};
use settings::Settings;

/// busmon's enable key.
pub const CONFIG_KEY: &str = "busmon.enabled";

/// fedmsg.meta through the hub.
struct HubMeta {
    ctx: HubContext,
    failed: AtomicU64,
    log: LogLimiter,
}

impl Render for HubMeta {
    fn render(&self, topic: &str, body: &str) -> Option<MetaLite> {
        match self.ctx.meta(&Message::new(topic, body)) {
            Ok(m) => Some(MetaLite {
                repr: m.repr,
                link: m.link,
                usernames: m.usernames.into_iter().collect(),
                packages: m.packages.into_iter().collect(),
            }),
            Err(error) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.log.check() {
                    tracing::warn!(%error, topic, suppressed, "busmon: fedmsg.meta could not render a message");
                }
                None
            }
        }
    }
}

/// A verifier for the badge when the hub's configuration validates
/// signatures (busmon opts out of the hub's validation so that invalid
/// messages are shown, not dropped; the hub verifies only for plugins that
/// ask). `None`, and signed messages show as unchecked, when validation is
/// off or the configuration cannot be read as the hub's.
fn badge_verifier(config: &PluginConfig) -> Option<Arc<Verifier>> {
    let validates = config
        .get_global::<bool>("validate_signatures")
        .ok()
        .flatten()
        .unwrap_or(false);
    if !validates {
        return None;
    }
    match serde_json::from_value::<fedmsg_wire::config::Config>(config.global().clone()) {
        Ok(hub) => Some(Arc::new(Verifier::new(VerifierSettings::from_config(&hub)))),
        Err(error) => {
            tracing::warn!(%error, "busmon: cannot read the crypto settings; signed messages are shown as unchecked");
            None
        }
    }
}

/// The plugin.
#[derive(Debug)]
pub struct Busmon {
    shared: Arc<Shared>,
    server: Server,
}

impl Busmon {
    /// Starts the server with `render` for fedmsg.meta and `publisher` for
    /// `client2server`.
    ///
    /// # Errors
    ///
    /// The server could not start (the address is taken, say).
    pub fn start(
        settings: Settings,
        render: Arc<dyn Render>,
        publisher: Option<HubContext>,
        verifier: Option<Arc<Verifier>>,
    ) -> Result<Busmon, server::ServerError> {
        let shared = Arc::new(Shared {
            registry: Registry::new(settings.max_clients, settings.client_buffer),
            rates: stats::Rates::default(),
            render,
            verifier,
            publisher: if settings.client2server {
                publisher
            } else {
                None
            },
            settings,
            counters: Counters::default(),
            client_log: LogLimiter::default(),
        });
        let server = Server::start(Arc::clone(&shared))?;
        tracing::info!(
            http_listen = %server.addr(),
            max_clients = shared.settings.max_clients,
            client_buffer = shared.settings.client_buffer,
            client2server = shared.settings.client2server,
            "busmon serving"
        );
        if shared.settings.client2server {
            tracing::warn!("busmon: client2server is on: WebSocket clients can publish on the bus");
        }
        Ok(Busmon { shared, server })
    }

    /// Where the server listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// Takes one message: counts it, offers it to the clients. Never waits.
    pub fn offer(&self, msg: &Message<'_>) -> usize {
        let category = fanout::category_of(msg.topic());
        self.shared.rates.record(category, server::now_minute());
        if self.shared.registry.is_empty() {
            return 0;
        }
        let event = Arc::new(Event::new(
            msg.topic(),
            msg.body(),
            msg.msg_id(),
            msg.timestamp(),
            msg.validated(),
        ));
        self.shared.registry.offer(&event, &*self.shared.render)
    }
}

impl ConsumerPlugin for Busmon {
    const CONFIG_KEY: &'static str = CONFIG_KEY;

    fn topics(config: &PluginConfig) -> Result<Vec<String>, PluginError> {
        Ok(config
            .get_string_list("topic")?
            .unwrap_or_else(|| vec!["*".into()]))
    }

    /// Opts out of validation so that invalid messages are shown with
    /// their badge instead of hidden; the hub still verifies what it
    /// verifies for other plugins, and says so per message.
    fn validate_signatures(_config: &PluginConfig) -> Result<Option<bool>, PluginError> {
        Ok(Some(false))
    }

    fn new(config: &PluginConfig, ctx: HubContext) -> Result<Self, PluginError> {
        let settings = Settings::from_config(config).map_err(PluginError::wrap)?;
        let verifier = badge_verifier(config);
        let render = Arc::new(HubMeta {
            ctx: ctx.clone(),
            failed: AtomicU64::new(0),
            log: LogLimiter::default(),
        });
        Busmon::start(settings, render, Some(ctx), verifier).map_err(PluginError::wrap)
    }

    fn consume(&mut self, msg: &Message<'_>) -> Result<(), ConsumeError> {
        self.offer(msg);
        Ok(())
    }

    fn shutdown(&mut self) {
        self.server.stop();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.shared.counters;
        tracing::info!(
            total = self.shared.rates.snapshot(server::now_minute()).total,
            skipped = load(&self.shared.registry.skipped),
            clients_refused = load(&self.shared.registry.refused),
            bad_frames = load(&c.bad_frames),
            publish_refused = load(&c.publish_refused),
            send_failed = load(&c.send_failed),
            "busmon stopped"
        );
    }
}

export_plugin!(Busmon);

#[cfg(test)]
mod tests;
