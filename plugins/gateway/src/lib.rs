//! `fedmsg-gateway`: fedmsg's `GatewayConsumer` as a fedmsg-hub plugin.
//! Every message the hub receives is re-published, topic and body bytes
//! unchanged, on one PUB socket that outside subscribers connect to.
//!
//! ```toml
//! [fedmsg.consumers.gateway]
//! enabled = true            # fedmsg's enable key
//! port = 9940               # fedmsg's key; default 9940 (fedmsg: KeyError)
//! high_water_mark = 10000   # fedmsg's key; default 10000 (fedmsg: KeyError)
//! interface = "*"           # ours: the address bound (default all, as fedmsg)
//! public_url = ["tcp://hub.example.org:9940"]   # ours: where others reach it
//! validate = false          # ours: true = forward only valid messages
//! ```
//!
//! Differences from upstream (ARCHITECTURE.md, "fedmsg-gateway"): missing
//! keys get the shipped file's values instead of a `KeyError`; a hub whose
//! `endpoints` contain the gateway itself (a local address on the gateway's
//! port, or one of its `public_url`s) is refused at start, where upstream
//! would re-publish its own output forever; the socket never blocks the
//! hub's worker (`DONTWAIT`: a PUB socket drops per peer at its high-water
//! mark anyway, a failed send is counted).

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};

use fedmsg_plugin_api::serde_json::Value;
use fedmsg_plugin_api::{
    export_plugin, tracing, ConsumeError, ConsumerPlugin, HubContext, Message, PluginConfig,
    PluginError,
};
use fedmsg_wire::ratelimit::LogLimiter;
use serde::Deserialize;

/// fedmsg's enable key for the gateway.
pub const CONFIG_KEY: &str = "fedmsg.consumers.gateway.enabled";

/// `fedmsg.consumers.gateway.port` when unset (fedmsg's documented port).
pub const DEFAULT_PORT: u16 = 9940;

/// `fedmsg.consumers.gateway.high_water_mark` when unset (fedmsg's shipped
/// `gateway.py`).
pub const DEFAULT_HIGH_WATER_MARK: i32 = 10_000;

/// How long unsent messages are kept when the plugin stops, in ms: a
/// subscriber that is slow at shutdown must not hold the hub's exit.
const LINGER_MS: i32 = 1000;

/// Why the gateway does not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A key has the wrong type or value (the text names it).
    #[error("{0}")]
    Config(String),
    /// The hub would subscribe to the gateway's own output.
    #[error(
        "the hub's endpoints contain the gateway's own socket: endpoint {name:?} = {url:?} \
         is {why}; the gateway would re-publish its own output forever (fedmsg's gateway \
         did). Remove it from `endpoints` of this hub, or give the gateway another \
         `fedmsg.consumers.gateway.port`"
    )]
    SelfLoop {
        /// The endpoint name in `endpoints`.
        name: String,
        /// Its URL.
        url: String,
        /// Why it is the gateway itself.
        why: String,
    },
    /// The zmq socket could not be made or bound.
    #[error("cannot set up the gateway socket {url}: {source}")]
    Socket {
        /// The bind URL.
        url: String,
        /// zmq's error.
        source: zmq::Error,
    },
}

/// The gateway's configuration, typed and checked at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The enable key (read by the hub; accepted here).
    pub enabled: Option<Value>,
    /// The port bound (`tcp://<interface>:<port>`).
    pub port: u16,
    /// SNDHWM and RCVHWM of the PUB socket.
    pub high_water_mark: i32,
    /// The address bound; `*` (all interfaces) as fedmsg.
    pub interface: String,
    /// URLs under which others reach this gateway (a name behind a load
    /// balancer, say): an `endpoints` entry equal to one is a self-loop.
    pub public_url: Vec<String>,
    /// Forward only messages that pass the hub's signature validation.
    pub validate: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: None,
            port: DEFAULT_PORT,
            high_water_mark: DEFAULT_HIGH_WATER_MARK,
            interface: "*".into(),
            public_url: Vec::new(),
            validate: false,
        }
    }
}

impl Settings {
    /// Reads the plugin's table (`[fedmsg.consumers.gateway]`).
    ///
    /// # Errors
    ///
    /// A key of the wrong type, an unknown key, a negative high-water mark.
    pub fn from_config(config: &PluginConfig) -> Result<Settings, GatewayError> {
        let mut section = config.section().clone();
        // `public_url` may be one string or a list (fedmsg's habit for URLs).
        if let Some(Value::String(url)) = section.get("public_url").cloned() {
            section["public_url"] = Value::Array(vec![Value::String(url)]);
        }
        let settings = Settings::deserialize(&section).map_err(|e| {
            GatewayError::Config(format!("config key `{}`: {e}", config.section_path()))
        })?;
        if settings.high_water_mark < 0 {
            return Err(GatewayError::Config(format!(
                "config key `{}`: must be 0 (no limit) or more, not {}",
                config.full_key("high_water_mark"),
                settings.high_water_mark
            )));
        }
        if settings.interface.is_empty() {
            return Err(GatewayError::Config(format!(
                "config key `{}`: must not be empty (`*` binds every interface)",
                config.full_key("interface")
            )));
        }
        Ok(settings)
    }

    /// The URL the PUB socket binds.
    pub fn bind_url(&self) -> String {
        let host = if self.interface.contains(':') && !self.interface.starts_with('[') {
            format!("[{}]", self.interface)
        } else {
            self.interface.clone()
        };
        format!("tcp://{host}:{}", self.port)
    }
}

/// The hub's `endpoints` (name → URLs; a name may map to one string).
///
/// # Errors
///
/// `endpoints` is not a table of strings or lists of strings.
pub fn endpoints(global: &Value) -> Result<BTreeMap<String, Vec<String>>, GatewayError> {
    let mut out = BTreeMap::new();
    let Some(table) = global.get("endpoints") else {
        return Ok(out);
    };
    let Value::Object(table) = table else {
        return Err(GatewayError::Config(
            "config key `endpoints`: expected a table".into(),
        ));
    };
    for (name, urls) in table {
        let urls = match urls {
            Value::String(url) => vec![url.clone()],
            Value::Array(items) => items
                .iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        out.insert(name.clone(), urls);
    }
    Ok(out)
}

/// `tcp://HOST:PORT` → (HOST without brackets, PORT); `None` for other
/// transports or a URL without a numeric port.
pub fn tcp_host_port(url: &str) -> Option<(&str, u16)> {
    let rest = url.strip_prefix("tcp://")?;
    let (host, port) = rest.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, port))
}

/// True when `ip` is an address of this machine: loopback, unspecified, or
/// one a socket can be bound to (the kernel knows its interfaces better
/// than a list we would read).
fn is_local_ip(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind((ip, 0)).is_ok()
}

/// Why `host` names this machine, if it does.
fn local_host_reason(host: &str, port: u16) -> Option<String> {
    if matches!(host, "*" | "localhost") {
        return Some(format!("this machine ({host})"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return is_local_ip(ip).then(|| format!("an address of this machine ({ip})"));
    }
    // A name: what it resolves to. A name that does not resolve cannot be
    // connected to either, so it is not a loop.
    let addrs = (host, port).to_socket_addrs().ok()?;
    for addr in addrs {
        if is_local_ip(addr.ip()) {
            return Some(format!(
                "this machine ({host} resolves to {}, a local address)",
                addr.ip()
            ));
        }
    }
    None
}

/// The first `endpoints` entry that is the gateway itself: one of its
/// `public_url`s, or a local address on its port.
pub fn find_self_loop(
    settings: &Settings,
    endpoints: &BTreeMap<String, Vec<String>>,
) -> Option<GatewayError> {
    for (name, urls) in endpoints {
        for url in urls {
            let loop_error = |why: String| GatewayError::SelfLoop {
                name: name.clone(),
                url: url.clone(),
                why,
            };
            if settings.public_url.iter().any(|p| p == url) {
                return Some(loop_error("the gateway's `public_url`".into()));
            }
            let Some((host, port)) = tcp_host_port(url) else {
                continue;
            };
            if port != settings.port {
                continue;
            }
            if let Some(why) = local_host_reason(host, port) {
                return Some(loop_error(format!("on the gateway's port {port} of {why}")));
            }
        }
    }
    None
}

/// The gateway's counters (logged at shutdown).
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages re-published.
    pub forwarded: AtomicU64,
    /// Messages zmq did not take (counted, logged rate-limited).
    pub send_failed: AtomicU64,
}

/// The plugin: one PUB socket on its own zmq context.
pub struct Gateway {
    // Field order: the socket closes before its context terminates.
    socket: zmq::Socket,
    _context: zmq::Context,
    url: String,
    stats: Stats,
    send_log: LogLimiter,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("url", &self.url)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Checks for a self-loop, then binds the PUB socket.
    ///
    /// # Errors
    ///
    /// A self-loop, or the socket cannot be made or bound.
    pub fn start(
        settings: &Settings,
        endpoints: &BTreeMap<String, Vec<String>>,
    ) -> Result<Gateway, GatewayError> {
        if let Some(e) = find_self_loop(settings, endpoints) {
            return Err(e);
        }
        let url = settings.bind_url();
        tracing::info!(port = settings.port, url = %url, "Setting up special gateway socket");
        let socket_error = |source| GatewayError::Socket {
            url: url.clone(),
            source,
        };
        // Its own context with one I/O thread, as upstream: the gateway's
        // subscribers never share queues with the hub's own sockets.
        let context = zmq::Context::new();
        context.set_io_threads(1).map_err(socket_error)?;
        let socket = context.socket(zmq::PUB).map_err(socket_error)?;
        socket
            .set_sndhwm(settings.high_water_mark)
            .map_err(socket_error)?;
        socket
            .set_rcvhwm(settings.high_water_mark)
            .map_err(socket_error)?;
        socket.set_linger(LINGER_MS).map_err(socket_error)?;
        socket.bind(&url).map_err(socket_error)?;
        tracing::info!(url = %url, high_water_mark = settings.high_water_mark, "Gateway socket established");
        Ok(Gateway {
            socket,
            _context: context,
            url,
            stats: Stats::default(),
            send_log: LogLimiter::default(),
        })
    }

    /// Re-publishes one message: `[topic, body]`, the bytes as received.
    ///
    /// # Errors
    ///
    /// zmq refused the message (counted; the message is lost for the
    /// gateway's subscribers only).
    pub fn forward(&self, topic: &str, body: &str) -> Result<(), zmq::Error> {
        let sent = self
            .socket
            .send(topic.as_bytes(), zmq::SNDMORE | zmq::DONTWAIT)
            .and_then(|()| self.socket.send(body.as_bytes(), zmq::DONTWAIT));
        match sent {
            Ok(()) => {
                self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.stats.send_failed.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.send_log.check() {
                    tracing::warn!(error = %e, topic, suppressed, "gateway could not send a message");
                }
                Err(e)
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The URL the socket is bound to.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl ConsumerPlugin for Gateway {
    const CONFIG_KEY: &'static str = CONFIG_KEY;

    fn topics(_config: &PluginConfig) -> Result<Vec<String>, PluginError> {
        Ok(vec!["*".into()])
    }

    /// fedmsg's gateway set `validate_signatures = False`: it forwards
    /// everything, the subscribers validate. `validate = true` asks the hub
    /// to validate for it, so only valid messages leave.
    fn validate_signatures(config: &PluginConfig) -> Result<Option<bool>, PluginError> {
        Ok(Some(
            Settings::from_config(config)
                .map_err(PluginError::wrap)?
                .validate,
        ))
    }

    fn new(config: &PluginConfig, _ctx: HubContext) -> Result<Self, PluginError> {
        let settings = Settings::from_config(config).map_err(PluginError::wrap)?;
        let endpoints = endpoints(config.global()).map_err(PluginError::wrap)?;
        Gateway::start(&settings, &endpoints).map_err(PluginError::wrap)
    }

    fn consume(&mut self, msg: &Message<'_>) -> Result<(), ConsumeError> {
        self.forward(msg.topic(), msg.body())
            .map_err(|e| ConsumeError::context("gateway send failed", e))
    }

    fn shutdown(&mut self) {
        tracing::info!(
            url = %self.url,
            forwarded = self.stats.forwarded.load(Ordering::Relaxed),
            send_failed = self.stats.send_failed.load(Ordering::Relaxed),
            "gateway stopped"
        );
    }
}

export_plugin!(Gateway);

#[cfg(test)]
mod tests;
