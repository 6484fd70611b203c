//! `datanommer`: a fedmsg-hub plugin that stores every message in SQLite
//! or PostgreSQL, in datanommer's schema, and serves them back through a
//! datagrepper-compatible `/raw` endpoint.
//!
//! ```toml
//! [datanommer]
//! enabled = true
//! # Default: sqlite:///<state_dir>/fedmsg-datanommer/datanommer.db
//! url = "postgresql://datanommer@127.0.0.1:5432/datanommer"
//! http_listen = "127.0.0.1:5000"   # optional: serve /raw and /id
//! topic = "*"                       # optional: a glob or a list
//! batch_size = 1000                 # rows per transaction at most
//! flush_interval = 0.25             # seconds a row waits for its batch
//! queue_capacity = 50000            # rows queued for the writer at most
//! shutdown_timeout = 10.0           # seconds to retry a down database at exit
//! http_threads = 2                 # database connections serving /raw
//! http_max_connections = 512       # open HTTP connections; beyond: 503
//! http_timeout = 30.0              # seconds a client may idle or dawdle
//! http_query_timeout = 10.0        # seconds a query may run; beyond: 503
//! http_max_page_bytes = 67108864   # bytes of JSON per page; beyond: 413
//! ```
//!
//! `consume` turns the envelope into a [`Row`] (columns, category, users
//! and packages: what the hub's fedmsg.meta finds, as datanommer asked
//! fedmsg.meta, together with [`extract`]'s fixed rules while not every
//! Fedora processor is ported) and queues it for the writer thread
//! ([`writer`]), which
//! commits batches; see there for what happens when the database is down.
//! A full queue refuses the message (consume error, counted).
//!
//! The `datanommer` command (`src/bin/datanommer.rs`) reads the same
//! databases: `stats`, `latest`, `dump`.

#![warn(missing_docs)]

pub mod extract;
pub mod http;
pub mod row;
pub mod store;
pub mod time;
pub mod writer;

use std::path::Path;
use std::time::{Duration, Instant};

use fedmsg_plugin_api::{
    export_plugin, tracing, ConsumeError, ConsumerPlugin, HubContext, Message, PluginConfig,
    PluginError,
};

pub use row::Row;
pub use store::{DbUrl, Store, StoreError};
pub use writer::{Writer, WriterConfig};

use http::{HttpLimits, HttpServer};

/// The plugin's settings, from its `[datanommer]` table.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to store.
    pub url: DbUrl,
    /// Where to serve `/raw`, if anywhere.
    pub http_listen: Option<String>,
    /// The HTTP server's limits (`http_threads` is its number of database
    /// connections).
    pub http: HttpLimits,
    /// Batching, queue and shutdown settings.
    pub writer: WriterConfig,
}

impl Settings {
    /// Reads the settings; the default database is
    /// `<state_dir>/datanommer.db`. `url` may also be given as
    /// `sqlalchemy.url`, datanommer's own key.
    pub fn from_config(config: &PluginConfig, state_dir: &Path) -> Result<Settings, PluginError> {
        let url: Option<String> = match config.get("url")? {
            Some(url) => Some(url),
            None => config.get("sqlalchemy.url")?,
        };
        let url = match url {
            Some(url) => DbUrl::parse(&url).map_err(|e| {
                PluginError::new(format!("config key `{}`: {e}", config.full_key("url")))
            })?,
            None => DbUrl::Sqlite(state_dir.join("datanommer.db")),
        };
        let seconds = |key: &str, default: f64| -> Result<Duration, PluginError> {
            let value: f64 = config.get_or(key, default)?;
            Duration::try_from_secs_f64(value).map_err(|_| {
                PluginError::new(format!(
                    "config key `{}`: expected a number of seconds, got {value}",
                    config.full_key(key)
                ))
            })
        };
        let at_least_one = |key: &str, default: usize| -> Result<usize, PluginError> {
            match config.get_or(key, default)? {
                0 => Err(PluginError::new(format!(
                    "config key `{}`: must be at least 1",
                    config.full_key(key)
                ))),
                n => Ok(n),
            }
        };
        // A zero timeout would refuse everything: at least a millisecond.
        let positive = |key: &str, default: Duration| -> Result<Duration, PluginError> {
            let value = seconds(key, default.as_secs_f64())?;
            if value < Duration::from_millis(1) {
                return Err(PluginError::new(format!(
                    "config key `{}`: must be at least 0.001 seconds",
                    config.full_key(key)
                )));
            }
            Ok(value)
        };
        let defaults = HttpLimits::default();
        Ok(Settings {
            url,
            http_listen: config.get("http_listen")?,
            http: HttpLimits {
                db_connections: at_least_one("http_threads", defaults.db_connections)?,
                max_connections: at_least_one("http_max_connections", defaults.max_connections)?,
                timeout: positive("http_timeout", defaults.timeout)?,
                query_timeout: positive("http_query_timeout", defaults.query_timeout)?,
                max_page_bytes: at_least_one("http_max_page_bytes", defaults.max_page_bytes)?,
            },
            writer: WriterConfig {
                batch_size: at_least_one("batch_size", 1000)?,
                flush_interval: seconds("flush_interval", 0.25)?,
                queue_capacity: at_least_one("queue_capacity", 50_000)?,
                shutdown_timeout: seconds("shutdown_timeout", 10.0)?,
            },
        })
    }
}

/// The plugin.
pub struct Datanommer {
    ctx: HubContext,
    writer: Writer,
    http: Option<HttpServer>,
    queue_capacity: usize,
    /// When the last "queue full" warning was logged.
    overflow_logged: Option<Instant>,
}

/// Least time between two "queue full" warnings of the plugin's own.
const OVERFLOW_LOG_EVERY: Duration = Duration::from_secs(10);

impl Datanommer {
    /// The writer's counters.
    pub fn stats(&self) -> &writer::Stats {
        self.writer.stats()
    }

    /// The HTTP server's counters, when it serves.
    pub fn http_counters(&self) -> Option<http::HttpCountersSnapshot> {
        self.http.as_ref().map(|h| h.counters().snapshot())
    }

    /// The address `/raw` is served on, when it is.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().and_then(HttpServer::local_addr)
    }
}

impl ConsumerPlugin for Datanommer {
    const CONFIG_KEY: &'static str = "datanommer.enabled";

    fn topics(config: &PluginConfig) -> Result<Vec<String>, PluginError> {
        Ok(config
            .get_string_list("topic")?
            .unwrap_or_else(|| vec!["*".into()]))
    }

    fn new(config: &PluginConfig, ctx: HubContext) -> Result<Self, PluginError> {
        let settings = Settings::from_config(config, ctx.state_dir())?;
        let url = settings.url.clone();
        // Connect now so that a wrong SQLite path fails the start; a
        // PostgreSQL server that is down is retried by the writer.
        let store = match Store::open(&url, true) {
            Ok(store) => Some(store),
            Err(e) if matches!(url, DbUrl::Sqlite(_)) => {
                return Err(PluginError::context(
                    format!("cannot open {}", url.redacted()),
                    e,
                ))
            }
            Err(e) => {
                tracing::warn!(url = %url.redacted(), error = %e,
                    "datanommer: database unavailable at start; messages are queued until it is back");
                None
            }
        };
        let queue_capacity = settings.writer.queue_capacity;
        let batch_size = settings.writer.batch_size;
        let writer = Writer::spawn(url.clone(), store, settings.writer)?;
        let http = match &settings.http_listen {
            Some(listen) => Some(
                HttpServer::start(listen, url.clone(), settings.http.clone())
                    .map_err(|e| PluginError::new(e.to_string()))?,
            ),
            None => None,
        };
        tracing::info!(
            url = %url.redacted(),
            http_listen = settings.http_listen.as_deref().unwrap_or(""),
            batch_size,
            queue_capacity,
            "datanommer storing messages"
        );
        Ok(Datanommer {
            ctx,
            writer,
            http,
            queue_capacity,
            overflow_logged: None,
        })
    }

    fn consume(&mut self, msg: &Message<'_>) -> Result<(), ConsumeError> {
        let mut row = Row::from_json(msg.topic(), msg.body(), time::now_micros())?;
        // The hub's fedmsg.meta adds what its processors know about the
        // message (a hub or a test without it leaves the fixed rules).
        if let Ok(meta) = self.ctx.meta(msg) {
            row.add_names(meta.usernames, meta.packages);
        }
        match self.writer.submit(row) {
            Ok(()) => Ok(()),
            Err(refused) => {
                if self
                    .overflow_logged
                    .is_none_or(|at| at.elapsed() >= OVERFLOW_LOG_EVERY)
                {
                    self.overflow_logged = Some(Instant::now());
                    tracing::warn!(
                        msg_id = %refused.msg_id,
                        queue_capacity = self.queue_capacity,
                        overflowed_total = self.writer.stats().snapshot().overflowed,
                        "datanommer: writer queue full; messages are not being stored"
                    );
                }
                Err(ConsumeError::new(format!(
                    "datanommer queue full ({} messages): not stored",
                    self.queue_capacity
                )))
            }
        }
    }

    fn shutdown(&mut self) {
        if let Some(mut http) = self.http.take() {
            http.stop();
        }
        tracing::info!(
            queued = self.writer.queued(),
            "datanommer: committing what is queued"
        );
        self.writer.shutdown();
    }
}

export_plugin!(Datanommer);

#[cfg(test)]
mod tests;

#[cfg(test)]
mod http_tests;
