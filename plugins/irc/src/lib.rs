//! `fedmsg-irc`: fedmsg's IRC bot (`fedmsg.consumers.ircbot`) as a
//! fedmsg-hub plugin. Every message is shown in the channel of each
//! `[[irc]]` entry, one line per message, as fedmsg's bot showed it.
//!
//! ```toml
//! [fedmsg.consumers.ircbot]
//! enabled = true                 # fedmsg's enable key
//!
//! irc_method = "notice"          # or "msg" (default "notice")
//! irc_default_color = "light grey"
//! irc_shortener_url = "https://da.gd/s?url={url}"   # optional; no default
//!
//! [[irc]]
//! network = "irc.libera.chat"
//! port = 6697
//! ssl = true                     # certificate and host name are verified
//! # ssl_verify = false           # explicit opt-out; ssl_ca = "/path/ca.pem"
//! nickname = "fedmsg-bot"
//! channel = "fedora-fedmsg"      # '#' added when missing
//! timeout = 120                  # s: connect, TLS, registration
//! make_pretty = true             # mIRC colours
//! make_terse = true              # fedmsg.meta's one-line rendering
//! make_short = true              # only with irc_shortener_url
//! line_rate = 0.9                # s between lines
//! max_queue = 1000               # lines waiting, at most (oldest dropped)
//! # password, sasl_username, sasl_password, nickserv_password,
//! # rejoin_delay = 10, regain_interval = 30
//! [irc.filters]
//! topic = []                     # regexes: a match hides the message
//! body = ["lub-dub"]             # searched in the message's JSON text
//!
//! [irc_color_lookup]
//! buildsys = "yellow"
//! ```
//!
//! How it is built: `consume` only applies each bot's filters and pushes
//! the message into that bot's bounded queue ([`queue`]); it never touches
//! the network. Each bot has a connection thread ([`conn`]: connect,
//! register, join, answer PINGs at once, reconnect with backoff) and a send
//! thread ([`sender`]: render and write one line every `line_rate`
//! seconds). Rendering happens when a line is sent, so a burst that
//! overflows the queue costs no rendering for what is dropped. Lines are
//! built by [`proto`] so that no content can end a line or start a command
//! and every line fits IRC's 512 bytes.

#![warn(missing_docs)]

pub mod backoff;
pub mod conn;
pub mod proto;
pub mod queue;
pub mod render;
pub mod sender;
pub mod settings;
pub mod shorten;
pub mod stats;
pub mod transport;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fedmsg_plugin_api::{
    export_plugin, tracing, ConsumeError, ConsumerPlugin, HubContext, Message, PluginConfig,
    PluginError,
};
use fedmsg_wire::ratelimit::LogLimiter;
use fedmsg_wire::shutdown::{Joined, Stop, Thread};

use conn::{BotShared, Link};
use queue::{Item, OutQueue};
use render::{MetaSource, Palette};
use sender::Renderer;
use settings::Settings;
use stats::{add, bump, BotSnapshot, BotStats, PluginSnapshot, PluginStats};

/// fedmsg's enable key for the bot.
pub const CONFIG_KEY: &str = "fedmsg.consumers.ircbot.enabled";

/// How long `shutdown` waits for the bots' threads.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the plugin could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is wrong.
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
    /// The TLS client of a bot could not be set up (e.g. `ssl_ca`).
    #[error("irc[{index}]: cannot set up TLS: {source}")]
    Tls {
        /// The bot.
        index: usize,
        /// OpenSSL's errors.
        source: openssl::error::ErrorStack,
    },
    /// The shortener's HTTP client could not be made.
    #[error(transparent)]
    Shortener(#[from] shorten::ShortenError),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// One running bot.
struct Bot {
    shared: Arc<BotShared>,
    threads: Vec<Thread<()>>,
}

/// The plugin.
pub struct IrcBot {
    bots: Vec<Bot>,
    stats: PluginStats,
    stop: Stop,
    stopped: bool,
}

impl std::fmt::Debug for IrcBot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IrcBot")
            .field(
                "bots",
                &self.bots.iter().map(|b| &b.shared).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl IrcBot {
    /// Starts one connection thread and one send thread per bot.
    ///
    /// # Errors
    ///
    /// TLS setup, the shortener client or a thread failed.
    pub fn start(settings: Settings, meta: Arc<dyn MetaSource>) -> Result<IrcBot, StartError> {
        let shortener = settings
            .shortener_url
            .as_deref()
            .map(shorten::Shortener::new)
            .transpose()?;
        let renderer = Arc::new(Renderer {
            meta,
            palette: Palette {
                colors: settings.colors.clone(),
                default_color: settings.default_color,
            },
            shortener,
            method: settings.method,
        });
        if settings.bots.is_empty() {
            tracing::warn!("no [[irc]] entries configured: the IRC bot shows nothing");
        }
        let stop = Stop::new();
        let mut plugin = IrcBot {
            bots: Vec::new(),
            stats: PluginStats::default(),
            stop: stop.clone(),
            stopped: false,
        };
        for bot in settings.bots {
            let index = bot.index;
            let tls = transport::tls_connector(&bot)
                .map_err(|source| StartError::Tls { index, source })?;
            if bot.ssl && !bot.ssl_verify {
                tracing::warn!(bot = %bot.label(), "ssl_verify = false: the server's certificate is not checked");
            }
            if bot.make_short && renderer.shortener.is_none() && bot.make_pretty && bot.make_terse {
                tracing::info!(bot = %bot.label(), "make_short is set but irc_shortener_url is not: links are shown in full");
            }
            let shared = Arc::new(BotShared {
                queue: OutQueue::new(bot.max_queue),
                link: Link::default(),
                stats: BotStats::default(),
                stop: stop.clone(),
                tls,
                remote_log: LogLimiter::default(),
                connect_log: LogLimiter::new(Duration::from_secs(5)),
                info_log: LogLimiter::default(),
                settings: bot,
            });
            tracing::info!(
                bot = %shared.settings.label(),
                nickname = %shared.settings.nickname,
                ssl = shared.settings.ssl,
                line_rate_ms = shared.settings.line_rate.as_millis() as u64,
                max_queue = shared.settings.max_queue,
                "IRC bot starting"
            );
            let name = format!("irc-{index}");
            let mut threads = Vec::with_capacity(2);
            let mut spawn = || -> std::io::Result<()> {
                let conn_side = Arc::clone(&shared);
                threads.push(Thread::spawn(format!("{name}-conn"), move || {
                    conn::run(&conn_side)
                })?);
                let send_side = Arc::clone(&shared);
                let renderer = Arc::clone(&renderer);
                threads.push(Thread::spawn(format!("{name}-send"), move || {
                    sender::run(&send_side, &renderer)
                })?);
                Ok(())
            };
            let spawned = spawn();
            plugin.bots.push(Bot { shared, threads });
            if let Err(e) = spawned {
                // Stops (and joins) what already runs.
                plugin.stop();
                return Err(e.into());
            }
        }
        Ok(plugin)
    }

    /// Filters the message for each bot and queues it for those that
    /// show it. Never blocks on the network. Returns how many bots queued it.
    pub fn offer(&self, topic: &str, body: &str) -> usize {
        bump(&self.stats.consumed);
        let mut item: Option<Arc<Item>> = None;
        let mut queued = 0;
        for bot in &self.bots {
            let shared = &bot.shared;
            let settings = &shared.settings;
            if settings.topic_filters.iter().any(|re| re.is_match(topic)) {
                bump(&shared.stats.filtered_topic);
                continue;
            }
            if settings.body_filters.iter().any(|re| re.is_match(body)) {
                bump(&shared.stats.filtered_body);
                continue;
            }
            let item = item.get_or_insert_with(|| Item::new(topic, body));
            let dropped = shared.queue.push(Arc::clone(item));
            bump(&shared.stats.queued);
            if dropped > 0 {
                add(&shared.stats.skipped, dropped);
            }
            queued += 1;
        }
        queued
    }

    /// The counters: the plugin's and each bot's (in `[[irc]]` order).
    pub fn stats(&self) -> (PluginSnapshot, Vec<BotSnapshot>) {
        (
            self.stats.snapshot(),
            self.bots
                .iter()
                .map(|b| b.shared.stats.snapshot())
                .collect(),
        )
    }

    /// Our current nickname on each bot's connection ("" while not
    /// registered).
    pub fn nicks(&self) -> Vec<String> {
        self.bots.iter().map(|b| b.shared.link.nick()).collect()
    }

    /// True for each bot that is in its channel now.
    pub fn joined(&self) -> Vec<bool> {
        self.bots
            .iter()
            .map(|b| b.shared.link.is_joined())
            .collect()
    }

    /// Stops every bot: QUIT, close, join the threads (bounded), log the
    /// counters. Idempotent.
    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        self.stop.trigger();
        for bot in &self.bots {
            let left = bot.shared.queue.close();
            add(&bot.shared.stats.dropped_at_shutdown, left as u64);
            bot.shared.link.wake();
        }
        let deadline = Instant::now() + JOIN_TIMEOUT;
        for bot in &mut self.bots {
            for thread in bot.threads.drain(..) {
                let name = thread.name().to_owned();
                match thread.join_until(deadline) {
                    Joined::Finished(()) => {}
                    Joined::Panicked(panic) => {
                        tracing::error!(thread = %name, %panic, "IRC thread panicked")
                    }
                    Joined::Abandoned => {
                        // Stuck in a write to a server that stopped reading:
                        // closing the socket ends that write.
                        if let Some(conn) = bot.shared.link.connection() {
                            conn.shutdown();
                        }
                        tracing::warn!(thread = %name, "IRC thread did not stop in time; left behind")
                    }
                }
            }
        }
        let consumed = self.stats.snapshot().consumed;
        for bot in &self.bots {
            let s = bot.shared.stats.snapshot();
            tracing::info!(
                bot = %bot.shared.settings.label(),
                consumed,
                queued = s.queued,
                filtered_topic = s.filtered_topic,
                filtered_body = s.filtered_body,
                skipped = s.skipped,
                lines_sent = s.lines_sent,
                summaries_sent = s.summaries_sent,
                lines_cut = s.lines_cut,
                send_failures = s.send_failures,
                dropped_at_shutdown = s.dropped_at_shutdown,
                meta_failures = s.meta_failures,
                shorten_failures = s.shorten_failures,
                connects = s.connects,
                connect_failures = s.connect_failures,
                tls_failures = s.tls_failures,
                registrations = s.registrations,
                registration_failures = s.registration_failures,
                disconnects = s.disconnects,
                ping_timeouts = s.ping_timeouts,
                pings_answered = s.pings_answered,
                joins = s.joins,
                join_refusals = s.join_refusals,
                kicks = s.kicks,
                nick_collisions = s.nick_collisions,
                nick_regained = s.nick_regained,
                sasl_failures = s.sasl_failures,
                bad_lines = s.bad_lines,
                "IRC bot stopped"
            );
        }
    }
}

impl Drop for IrcBot {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ConsumerPlugin for IrcBot {
    const CONFIG_KEY: &'static str = CONFIG_KEY;

    /// Everything, as fedmsg's bot (filters are per bot).
    fn topics(_config: &PluginConfig) -> Result<Vec<String>, PluginError> {
        Ok(vec!["*".into()])
    }

    fn new(config: &PluginConfig, ctx: HubContext) -> Result<Self, PluginError> {
        let settings = Settings::from_config(config).map_err(PluginError::wrap)?;
        IrcBot::start(settings, Arc::new(ctx)).map_err(PluginError::wrap)
    }

    fn consume(&mut self, msg: &Message<'_>) -> Result<(), ConsumeError> {
        self.offer(msg.topic(), msg.body());
        Ok(())
    }

    fn shutdown(&mut self) {
        self.stop();
    }
}

export_plugin!(IrcBot);

#[cfg(test)]
mod tests;
