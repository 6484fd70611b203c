//! busmon's configuration (`[busmon]`), typed and checked at start.

use std::net::SocketAddr;

use fedmsg_config_keys::is_enabled;
use fedmsg_plugin_api::PluginConfig;
use serde::Deserialize;

/// What is wrong with the configuration; the plugin is not started.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {reason}")]
pub struct SettingsError {
    /// The full dotted key.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// The `[busmon]` table as written.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Raw {
    enabled: Option<serde_json::Value>,
    topic: Option<serde_json::Value>,
    http_listen: String,
    max_clients: usize,
    client_buffer: usize,
    max_subscriptions: usize,
    client2server: bool,
    raw_url: Option<String>,
}

impl Default for Raw {
    fn default() -> Self {
        Raw {
            enabled: None,
            topic: None,
            http_listen: "127.0.0.1:8080".into(),
            max_clients: 100,
            client_buffer: 1000,
            max_subscriptions: 64,
            client2server: false,
            raw_url: None,
        }
    }
}

/// busmon's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where the page and the feeds are served (loopback by default).
    pub http_listen: SocketAddr,
    /// Live clients (WebSocket and SSE together) at most; more are refused
    /// with 503.
    pub max_clients: usize,
    /// Messages waiting for one client at most; beyond, that client loses
    /// messages and is told how many ("N skipped").
    pub client_buffer: usize,
    /// `__topic_subscribe__` patterns one WebSocket client may hold.
    pub max_subscriptions: usize,
    /// moksha's `client2server`: other WebSocket frames are published on
    /// the bus. Off unless configured.
    pub client2server: bool,
    /// datagrepper/datanommer `/raw` URL the page links each message to;
    /// `{host}` stands for the host the page was loaded from. Default:
    /// datanommer's `http_listen` when datanommer runs in this hub.
    pub raw_url: Option<String>,
}

impl Settings {
    /// Reads `[busmon]` (and datanommer's keys for the default `raw_url`).
    ///
    /// # Errors
    ///
    /// A key of the wrong type, an unknown key, an address that does not
    /// parse, a zero limit.
    pub fn from_config(config: &PluginConfig) -> Result<Settings, SettingsError> {
        let raw: Raw = config.deserialize_section().map_err(|e| SettingsError {
            key: config.section_path().to_owned(),
            reason: e.reason,
        })?;
        let err = |key: &str, reason: String| SettingsError {
            key: config.full_key(key),
            reason,
        };
        let http_listen = raw.http_listen.parse().map_err(|e| {
            err(
                "http_listen",
                format!("{:?} is not HOST:PORT: {e}", raw.http_listen),
            )
        })?;
        for (key, value) in [
            ("max_clients", raw.max_clients),
            ("client_buffer", raw.client_buffer),
            ("max_subscriptions", raw.max_subscriptions),
        ] {
            if value == 0 {
                return Err(err(key, "must be at least 1".into()));
            }
        }
        let raw_url = match raw.raw_url {
            Some(url) if url.is_empty() => None,
            Some(url) => Some(url),
            None => datanommer_raw_url(config.global()),
        };
        Ok(Settings {
            http_listen,
            max_clients: raw.max_clients,
            client_buffer: raw.client_buffer,
            max_subscriptions: raw.max_subscriptions,
            client2server: raw.client2server,
            raw_url,
        })
    }
}

/// datanommer's `/raw` when datanommer is enabled in this hub and serves
/// HTTP; an unspecified address becomes the page's own host.
fn datanommer_raw_url(global: &serde_json::Value) -> Option<String> {
    if !is_enabled(global, "datanommer.enabled") {
        return None;
    }
    let listen = fedmsg_config_keys::lookup(global, "datanommer.http_listen")?.as_str()?;
    let addr: SocketAddr = listen.parse().ok()?;
    let host = if addr.ip().is_unspecified() {
        "{host}".to_owned()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    Some(format!("http://{host}:{}/raw", addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(global: serde_json::Value) -> Result<Settings, SettingsError> {
        Settings::from_config(&PluginConfig::new(global, "busmon"))
    }

    #[test]
    fn defaults_are_loopback_and_read_only() {
        let s = settings(json!({"busmon": {"enabled": true}})).unwrap();
        assert_eq!(s.http_listen.to_string(), "127.0.0.1:8080");
        assert!(!s.client2server);
        assert_eq!(s.raw_url, None);
        assert_eq!((s.max_clients, s.client_buffer), (100, 1000));
    }

    #[test]
    fn errors_name_the_key() {
        let e = settings(json!({"busmon": {"http_listen": "nowhere"}})).unwrap_err();
        assert!(e.to_string().contains("busmon.http_listen"), "{e}");
        let e = settings(json!({"busmon": {"max_clients": 0}})).unwrap_err();
        assert!(e.to_string().contains("busmon.max_clients"), "{e}");
        let e = settings(json!({"busmon": {"client2sever": true}})).unwrap_err();
        assert!(e.to_string().contains("client2sever"), "{e}");
    }

    #[test]
    fn raw_link_follows_datanommer() {
        let s = settings(json!({"datanommer": {"enabled": true, "http_listen": "127.0.0.1:5000"}}))
            .unwrap();
        assert_eq!(s.raw_url.as_deref(), Some("http://127.0.0.1:5000/raw"));
        let s = settings(json!({"datanommer": {"enabled": true, "http_listen": "0.0.0.0:5000"}}))
            .unwrap();
        assert_eq!(s.raw_url.as_deref(), Some("http://{host}:5000/raw"));
        let s =
            settings(json!({"datanommer": {"enabled": false, "http_listen": "127.0.0.1:5000"}}))
                .unwrap();
        assert_eq!(s.raw_url, None);
    }
}
