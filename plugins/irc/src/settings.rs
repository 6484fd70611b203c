//! The bot's configuration: fedmsg's keys, typed and checked at start.
//!
//! fedmsg read `config['irc']` (a list of bot dicts), `irc_method`,
//! `irc_color_lookup` and `irc_default_color` from the top level of the
//! configuration, so do we. Upstream's traps are not copied: a missing
//! `irc_method` or `filters` gets its default instead of an exception per
//! message, an unknown colour name or an unknown key is an error at start
//! instead of a `KeyError` later, and a channel or nickname that would
//! change the meaning of an IRC line (a space, a comma, a control
//! character) is refused here, before it can reach a socket.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use fedmsg_plugin_api::PluginConfig;
use regex::Regex;
use serde::Deserialize;

/// What is wrong with the configuration; the plugin is not started.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A key has the wrong type (the text names the key).
    #[error("{0}")]
    Type(String),
    /// `irc[i].key`: a value that is not allowed.
    #[error("config key `irc[{index}].{key}`: {reason}")]
    Bot {
        /// Position of the entry in the `irc` list.
        index: usize,
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A top-level `irc_*` key with a value that is not allowed.
    #[error("config key `{key}`: {reason}")]
    Global {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// How lines are sent (`irc_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `NOTICE` (fedmsg's shipped choice; bots should not trigger replies).
    Notice,
    /// `PRIVMSG`.
    Msg,
}

impl Method {
    /// The IRC command.
    pub fn command(self) -> &'static str {
        match self {
            Method::Notice => "NOTICE",
            Method::Msg => "PRIVMSG",
        }
    }
}

/// The mIRC colour names fedmsg knew (reference §7.3), with their codes.
const COLORS: &[(&str, u8)] = &[
    ("white", 0),
    ("black", 1),
    ("blue", 2),
    ("green", 3),
    ("red", 4),
    ("brown", 5),
    ("purple", 6),
    ("orange", 7),
    ("yellow", 8),
    ("light green", 9),
    ("teal", 10),
    ("light cyan", 11),
    ("light blue", 12),
    ("pink", 13),
    ("grey", 14),
    ("light grey", 15),
];

/// The mIRC code of a colour name (`None` for an unknown name). "gray" is
/// accepted for "grey".
pub fn color_code(name: &str) -> Option<u8> {
    let name = name.trim().to_ascii_lowercase().replace("gray", "grey");
    COLORS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

/// Everything the plugin reads.
#[derive(Debug, Clone)]
pub struct Settings {
    /// One bot (one connection) per `[[irc]]` entry.
    pub bots: Vec<BotSettings>,
    /// `irc_method`.
    pub method: Method,
    /// `irc_color_lookup`: first part of a title → mIRC code.
    pub colors: HashMap<String, u8>,
    /// `irc_default_color` as a code.
    pub default_color: u8,
    /// `irc_shortener_url`: `{url}` is replaced by the percent-encoded
    /// link. `None`: links are never shortened.
    pub shortener_url: Option<String>,
}

/// One `[[irc]]` entry.
#[derive(Debug, Clone)]
pub struct BotSettings {
    /// Position in the list, for logs.
    pub index: usize,
    /// Server host.
    pub network: String,
    /// Server port.
    pub port: u16,
    /// TLS.
    pub ssl: bool,
    /// Verify the server's certificate and host name (only `false` turns
    /// it off; upstream verified nothing).
    pub ssl_verify: bool,
    /// CA file (PEM) to verify the server with instead of the system's.
    pub ssl_ca: Option<PathBuf>,
    /// The wanted nickname.
    pub nickname: String,
    /// The channel, `#` included.
    pub channel: String,
    /// TCP connect (and TLS handshake, and registration) timeout.
    pub timeout: Duration,
    /// mIRC colours (terse lines).
    pub make_pretty: bool,
    /// One-line fedmsg.meta rendering.
    pub make_terse: bool,
    /// Shorten links (only when `irc_shortener_url` is set).
    pub make_short: bool,
    /// Least time between two lines sent.
    pub line_rate: Duration,
    /// Topic regexes: a match hides the message.
    pub topic_filters: Vec<Regex>,
    /// Body regexes, searched in the message's JSON text.
    pub body_filters: Vec<Regex>,
    /// Lines waiting to be sent, at most.
    pub max_queue: usize,
    /// Server password (`PASS`).
    pub password: Option<String>,
    /// SASL PLAIN account (default: the nickname) and password.
    pub sasl: Option<(String, String)>,
    /// `PRIVMSG NickServ :IDENTIFY <nickname> <password>` after registering.
    pub nickserv_password: Option<String>,
    /// Wait before rejoining after a kick or a refused join.
    pub rejoin_delay: Duration,
    /// How often to check whether the wanted nickname is free again.
    pub regain_interval: Duration,
}

/// The `[[irc]]` entry as written (fedmsg's keys plus ours).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBot {
    network: Option<String>,
    port: Option<u16>,
    ssl: Option<bool>,
    ssl_verify: Option<bool>,
    ssl_ca: Option<PathBuf>,
    nickname: Option<String>,
    channel: Option<String>,
    timeout: Option<f64>,
    make_pretty: Option<bool>,
    make_terse: Option<bool>,
    make_short: Option<bool>,
    line_rate: Option<f64>,
    filters: Option<RawFilters>,
    max_queue: Option<usize>,
    password: Option<String>,
    sasl_username: Option<String>,
    sasl_password: Option<String>,
    nickserv_password: Option<String>,
    rejoin_delay: Option<f64>,
    regain_interval: Option<f64>,
}

/// `filters`: upstream raised `KeyError` at start for another key, so an
/// unknown key is refused here too.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilters {
    #[serde(default)]
    topic: Vec<String>,
    #[serde(default)]
    body: Vec<String>,
}

/// `max_queue` when not set.
pub const DEFAULT_MAX_QUEUE: usize = 1000;

impl Settings {
    /// Reads and checks everything.
    ///
    /// # Errors
    ///
    /// A key of the wrong type, a value out of range, an unknown colour, a
    /// regex that does not compile, a channel or nickname IRC cannot carry.
    pub fn from_config(config: &PluginConfig) -> Result<Settings, SettingsError> {
        let type_error = |e: fedmsg_plugin_api::ConfigError| SettingsError::Type(e.to_string());
        let method = match config
            .get_global::<String>("irc_method")
            .map_err(type_error)?
            .as_deref()
        {
            None | Some("notice") => Method::Notice,
            Some("msg") => Method::Msg,
            Some(other) => {
                return Err(SettingsError::Global {
                    key: "irc_method".into(),
                    reason: format!("must be \"notice\" or \"msg\", not {other:?}"),
                })
            }
        };
        let color = |key: &str, name: &str| {
            color_code(name).ok_or_else(|| SettingsError::Global {
                key: key.to_owned(),
                reason: format!(
                    "unknown colour {name:?} (known: {})",
                    COLORS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        };
        let default_color = match config
            .get_global::<String>("irc_default_color")
            .map_err(type_error)?
        {
            Some(name) => color("irc_default_color", &name)?,
            None => 15,
        };
        let mut colors = HashMap::new();
        let lookup: Option<HashMap<String, String>> =
            config.get_global("irc_color_lookup").map_err(type_error)?;
        for (prefix, name) in lookup.unwrap_or_default() {
            let code = color(&format!("irc_color_lookup.{prefix}"), &name)?;
            colors.insert(prefix, code);
        }
        let shortener_url = config
            .get_global::<String>("irc_shortener_url")
            .map_err(type_error)?
            // TOML has no null: "" is unset, as elsewhere in the hub.
            .filter(|u| !u.is_empty());
        if let Some(url) = &shortener_url {
            if !url.contains("{url}")
                || !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(SettingsError::Global {
                    key: "irc_shortener_url".into(),
                    reason: format!(
                        "must be an http(s) URL containing {{url}} (where the link goes), e.g. \
                         \"https://da.gd/s?url={{url}}\"; got {url:?}"
                    ),
                });
            }
        }
        let raw: Vec<RawBot> = config
            .get_global("irc")
            .map_err(type_error)?
            .unwrap_or_default();
        let bots = raw
            .into_iter()
            .enumerate()
            .map(|(index, raw)| BotSettings::from_raw(index, raw))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            bots,
            method,
            colors,
            default_color,
            shortener_url,
        })
    }
}

impl BotSettings {
    fn from_raw(index: usize, raw: RawBot) -> Result<BotSettings, SettingsError> {
        let bad = |key: &'static str, reason: String| SettingsError::Bot { index, key, reason };
        let seconds = |key: &'static str, value: Option<f64>, default: f64, zero_ok: bool| {
            let value = value.unwrap_or(default);
            match Duration::try_from_secs_f64(value) {
                Ok(d) if zero_ok || !d.is_zero() => Ok(d),
                _ => Err(bad(
                    key,
                    format!("expected a positive number of seconds, got {value}"),
                )),
            }
        };
        let channel = raw
            .channel
            .ok_or_else(|| bad("channel", "is required".into()))?;
        // fedmsg added the '#' when it was missing.
        let channel = if channel.starts_with('#') {
            channel
        } else {
            format!("#{channel}")
        };
        check_channel(&channel).map_err(|reason| bad("channel", reason))?;
        let nickname = raw.nickname.unwrap_or_else(|| "fedmsg-bot".into());
        check_nickname(&nickname).map_err(|reason| bad("nickname", reason))?;
        let network = raw.network.unwrap_or_else(|| "irc.freenode.net".into());
        if network.is_empty() || network.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("network", format!("not a host name: {network:?}")));
        }
        let secret =
            |key: &'static str, value: Option<String>| match value.filter(|v| !v.is_empty()) {
                Some(v) if v.chars().any(char::is_control) || v.starts_with(':') => Err(bad(
                    key,
                    "must not contain control characters or start with ':'".into(),
                )),
                other => Ok(other),
            };
        let password = secret("password", raw.password)?;
        let sasl_password = secret("sasl_password", raw.sasl_password)?;
        let sasl_username = secret("sasl_username", raw.sasl_username)?;
        let nickserv_password = secret("nickserv_password", raw.nickserv_password)?;
        if nickserv_password
            .as_deref()
            .is_some_and(|p| p.contains(' '))
        {
            return Err(bad("nickserv_password", "must not contain a space".into()));
        }
        let sasl = sasl_password.map(|p| (sasl_username.unwrap_or_else(|| nickname.clone()), p));
        let compile = |key: &'static str, patterns: Vec<String>| {
            patterns
                .iter()
                .map(|p| Regex::new(p).map_err(|e| bad(key, format!("{p:?}: {e}"))))
                .collect::<Result<Vec<_>, _>>()
        };
        let filters = raw.filters.unwrap_or_default();
        let max_queue = raw.max_queue.unwrap_or(DEFAULT_MAX_QUEUE);
        if max_queue == 0 {
            return Err(bad("max_queue", "must be at least 1".into()));
        }
        let ssl = raw.ssl.unwrap_or(false);
        Ok(BotSettings {
            index,
            network,
            port: raw.port.unwrap_or(if ssl { 6697 } else { 6667 }),
            ssl,
            ssl_verify: raw.ssl_verify.unwrap_or(true),
            ssl_ca: raw.ssl_ca.filter(|p| !p.as_os_str().is_empty()),
            nickname,
            channel,
            timeout: seconds("timeout", raw.timeout, 120.0, false)?,
            make_pretty: raw.make_pretty.unwrap_or(false),
            make_terse: raw.make_terse.unwrap_or(false),
            make_short: raw.make_short.unwrap_or(false),
            line_rate: seconds("line_rate", raw.line_rate, 1.0, true)?,
            topic_filters: compile("filters.topic", filters.topic)?,
            body_filters: compile("filters.body", filters.body)?,
            max_queue,
            password,
            sasl,
            nickserv_password,
            rejoin_delay: seconds("rejoin_delay", raw.rejoin_delay, 10.0, false)?,
            regain_interval: seconds("regain_interval", raw.regain_interval, 30.0, false)?,
        })
    }

    /// `network:port #channel`, for logs.
    pub fn label(&self) -> String {
        format!("{}:{} {}", self.network, self.port, self.channel)
    }
}

/// A channel IRC can carry in one parameter: RFC 2812 forbids space,
/// comma, BEL (and NUL, CR, LF); `:` would make it a trailing parameter.
fn check_channel(channel: &str) -> Result<(), String> {
    if channel.len() < 2 {
        return Err("is empty".into());
    }
    if channel.len() > 200 {
        return Err("is longer than 200 bytes".into());
    }
    if let Some(c) = channel
        .chars()
        .find(|c| *c == ' ' || *c == ',' || *c == ':' || c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "{channel:?} contains {c:?}, which IRC does not allow in a channel name"
        ));
    }
    Ok(())
}

/// RFC 2812's nickname: a letter or one of `[]\`_^{|}` first, then those,
/// digits and `-`.
fn check_nickname(nick: &str) -> Result<(), String> {
    let special = |c: char| "[]\\`_^{|}".contains(c);
    let mut chars = nick.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || special(c));
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || special(c) || c == '-') {
        return Err(format!(
            "{nick:?} is not an IRC nickname (a letter or one of []\\`_^{{|}} first, \
             then letters, digits, those and '-')"
        ));
    }
    if nick.len() > 50 {
        return Err("is longer than 50 bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(global: serde_json::Value) -> Result<Settings, SettingsError> {
        Settings::from_config(&PluginConfig::new(global, "fedmsg.consumers.ircbot"))
    }

    #[test]
    fn shipped_example_and_defaults() {
        let s = settings(json!({
            "irc": [{"network": "irc.example.org", "nickname": "fedmsg-dev", "channel": "my-chan",
                     "make_pretty": true, "make_terse": true, "make_short": true, "line_rate": 0.9,
                     "filters": {"topic": [], "body": ["lub-dub"]}}],
            "irc_color_lookup": {"fas": "light blue", "buildsys": "yellow"},
        }))
        .unwrap();
        assert_eq!(s.method, Method::Notice, "a missing irc_method is notice");
        assert_eq!(s.default_color, 15, "light grey");
        assert_eq!(s.colors["buildsys"], 8);
        assert_eq!(s.shortener_url, None);
        let bot = &s.bots[0];
        assert_eq!(bot.channel, "#my-chan", "'#' added");
        assert_eq!(bot.port, 6667);
        assert!(bot.ssl_verify);
        assert_eq!(bot.line_rate, Duration::from_millis(900));
        assert_eq!(bot.timeout, Duration::from_secs(120));
        assert_eq!(bot.max_queue, 1000);
        assert!(bot.body_filters[0].is_match(r#"{"msg":"lub-dub"}"#));
        assert_eq!(bot.label(), "irc.example.org:6667 #my-chan");

        // No filters at all (upstream: AttributeError per message).
        let s = settings(json!({"irc": [{"channel": "#x"}], "irc_method": "msg"})).unwrap();
        assert_eq!(s.method, Method::Msg);
        assert!(s.bots[0].topic_filters.is_empty() && s.bots[0].body_filters.is_empty());
        assert_eq!(s.bots[0].nickname, "fedmsg-bot");
        // No irc list: no bots.
        assert!(settings(json!({})).unwrap().bots.is_empty());
    }

    #[test]
    fn the_shipped_file_is_this_plugins_config() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../etc/fedmsg.d/ircbot.toml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let value: serde_json::Value = toml::from_str(&text).unwrap();
        let s = settings(value.clone()).unwrap();
        let bot = &s.bots[0];
        assert_eq!(bot.channel, "#my-fedmsg-channel");
        assert!(bot.ssl && bot.ssl_verify && bot.make_pretty && bot.make_terse);
        assert_eq!(bot.max_queue, 1000);
        assert_eq!(s.colors["buildsys"], 8);
        assert_eq!(s.shortener_url, None, "no default shortener");
        // Shipped disabled: fedmsg-irc sets the key, fedmsg-hub needs it set.
        assert!(
            !fedmsg_plugin_api::PluginConfig::new(value, "fedmsg.consumers.ircbot")
                .get::<bool>("enabled")
                .unwrap()
                .unwrap_or(false)
        );
    }

    #[test]
    fn refusals_name_the_key() {
        let err = |global| settings(global).unwrap_err().to_string();
        assert!(
            err(json!({"irc": [{"channel": "#a b"}]})).contains("irc[0].channel"),
            "space"
        );
        assert!(err(json!({"irc": [{"channel": "#a,#b"}]})).contains("','"));
        assert!(err(json!({"irc": [{"channel": "#a\r\nQUIT"}]})).contains("irc[0].channel"));
        assert!(err(json!({"irc": [{}]})).contains("channel`: is required"));
        assert!(err(json!({"irc": [{"channel": "x", "nickname": "a b"}]})).contains("nickname"));
        assert!(err(json!({"irc": [{"channel": "x", "nickname": "1abc"}]})).contains("nickname"));
        assert!(err(json!({"irc": [{"channel": "x", "nick": "a"}]})).contains("unknown field"));
        assert!(
            err(json!({"irc": [{"channel": "x", "filters": {"topics": []}}]}))
                .contains("unknown field")
        );
        assert!(
            err(json!({"irc": [{"channel": "x", "filters": {"body": ["("]}}]}))
                .contains("filters.body")
        );
        assert!(err(json!({"irc": [{"channel": "x", "max_queue": 0}]})).contains("max_queue"));
        assert!(err(json!({"irc": [{"channel": "x", "timeout": 0}]})).contains("timeout"));
        assert!(err(json!({"irc": [{"channel": "x", "line_rate": -1}]})).contains("line_rate"));
        assert!(
            err(json!({"irc": [{"channel": "x", "password": "a\r\nQUIT"}]})).contains("password")
        );
        assert!(err(json!({"irc_method": "say"})).contains("irc_method"));
        assert!(err(json!({"irc_default_color": "mauve"})).contains("unknown colour"));
        assert!(err(json!({"irc_color_lookup": {"fas": "mauve"}})).contains("irc_color_lookup.fas"));
        assert!(err(json!({"irc_shortener_url": "https://da.gd/s"})).contains("{url}"));
        assert!(err(json!({"irc": [{"channel": "x", "port": "six"}]})).contains("irc"));
    }

    #[test]
    fn tls_sasl_and_shortener() {
        let s = settings(json!({
            "irc": [{"channel": "x", "ssl": true, "ssl_verify": false, "ssl_ca": "",
                     "sasl_password": "pw", "nickserv_password": ""}],
            "irc_shortener_url": "https://da.gd/s?url={url}",
            "irc_default_color": "Light Gray",
        }))
        .unwrap();
        let bot = &s.bots[0];
        assert_eq!(bot.port, 6697, "TLS default port");
        assert!(!bot.ssl_verify);
        assert_eq!(bot.ssl_ca, None);
        assert_eq!(bot.sasl, Some(("fedmsg-bot".into(), "pw".into())));
        assert_eq!(bot.nickserv_password, None, "\"\" is unset");
        assert_eq!(s.default_color, 15);
        assert_eq!(
            s.shortener_url.as_deref(),
            Some("https://da.gd/s?url={url}")
        );
        assert_eq!(Method::Msg.command(), "PRIVMSG");
        assert_eq!(color_code("teal"), Some(10));
        assert_eq!(color_code("mauve"), None);
    }
}
