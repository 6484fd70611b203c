//! The configuration a plugin sees.

#[cfg(test)]
use fedmsg_config_keys::section_path_of;
use fedmsg_config_keys::{lookup, section_of};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ConfigError;

/// The hub's merged configuration, plus the plugin's own table.
///
/// The section is the table named by the plugin's `CONFIG_KEY` minus its
/// last component: `[tally]` for `tally.enabled`, `[fedmsg.consumers.ircbot]`
/// for `fedmsg.consumers.ircbot.enabled`. Keys given to [`get`](Self::get)
/// and friends are relative to it and may be dotted (`a.b` looks up table
/// `a`, key `b`). Both nested tables and fedmsg-style flat dotted keys
/// (`"tally.output": …` at the top level) are understood.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    global: Value,
    section: Value,
    section_path: String,
}

impl PluginConfig {
    /// Builds the view of `global` for the plugin whose table is at
    /// `section_path` (dotted; empty = the whole configuration). A missing
    /// table is an empty one. Useful in a plugin's own unit tests.
    pub fn new(global: Value, section_path: &str) -> Self {
        let section = section_of(&global, section_path);
        Self {
            global,
            section,
            section_path: section_path.to_owned(),
        }
    }

    /// Parses the configuration JSON text the hub sends over the boundary.
    pub(crate) fn from_json(config_json: &str, section_path: &str) -> Result<Self, ConfigError> {
        let global = serde_json::from_str(config_json).map_err(|e| ConfigError {
            key: String::new(),
            reason: format!("the hub sent configuration that is not JSON: {e}"),
        })?;
        Ok(Self::new(global, section_path))
    }

    /// Builds the view for a plugin's `CONFIG_KEY` (its table is the key
    /// minus the last component).
    #[cfg(test)]
    pub(crate) fn for_config_key(global: Value, config_key: &str) -> Self {
        Self::new(global, section_path_of(config_key))
    }

    /// The plugin's own table (an empty object when the configuration has none).
    pub fn section(&self) -> &Value {
        &self.section
    }

    /// The whole merged hub configuration.
    pub fn global(&self) -> &Value {
        &self.global
    }

    /// The dotted path of the plugin's table, e.g. `tally`.
    pub fn section_path(&self) -> &str {
        &self.section_path
    }

    /// The full dotted name of a key of the section, for error messages.
    pub fn full_key(&self, key: &str) -> String {
        if self.section_path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{}", self.section_path, key)
        }
    }

    /// The raw value of a key of the section (`None` when absent or null).
    pub fn value(&self, key: &str) -> Option<&Value> {
        lookup(&self.section, key).filter(|v| !v.is_null())
    }

    /// A key of the section, deserialized; `Ok(None)` when it is absent or
    /// null, an error naming the key when it has the wrong type.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        self.value(key)
            .map(|v| T::deserialize(v).map_err(|e| self.error(key, e.to_string())))
            .transpose()
    }

    /// A key of the section, or `default` when it is absent.
    pub fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T, ConfigError> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// A key of the section that must be present.
    pub fn require<T: DeserializeOwned>(&self, key: &str) -> Result<T, ConfigError> {
        self.get(key)?
            .ok_or_else(|| self.error(key, "is required but not set".into()))
    }

    /// A key that may be a string or a list of strings (fedmsg's `topic`
    /// convention); a single string becomes a one-element list.
    pub fn get_string_list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(Value::Array(items)) => {
                items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(self
                            .error(key, format!("expected a string in the list, found {other}"))),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            }
            Some(other) => Err(self.error(
                key,
                format!("expected a string or a list of strings, found {other}"),
            )),
        }
    }

    /// A key of the whole configuration (dotted, from the top), deserialized.
    pub fn get_global<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        lookup(&self.global, key)
            .filter(|v| !v.is_null())
            .map(|v| {
                T::deserialize(v).map_err(|e| ConfigError {
                    key: key.to_owned(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// The whole section deserialized into a struct (use `#[serde(default)]`
    /// for optional settings; unknown keys such as `enabled` are ignored
    /// unless the struct denies them).
    pub fn deserialize_section<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        T::deserialize(&self.section).map_err(|e| ConfigError {
            key: self.section_path.clone(),
            reason: e.to_string(),
        })
    }

    fn error(&self, key: &str, reason: String) -> ConfigError {
        ConfigError {
            key: self.full_key(key),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[test]
    fn section_from_nested_and_flat_keys() {
        let global = json!({
            "tally": {"enabled": true, "output": "/tmp/out"},
            "tally.topic": ["a.*", "b"],
            "fedmsg": {"consumers": {"ircbot": {"enabled": true, "nick": "bot"}}},
            "flat.only.key": 3,
        });
        let cfg = PluginConfig::for_config_key(global.clone(), "tally.enabled");
        assert_eq!(cfg.section_path(), "tally");
        assert_eq!(
            cfg.get::<String>("output").unwrap().as_deref(),
            Some("/tmp/out")
        );
        assert_eq!(
            cfg.get_string_list("topic").unwrap(),
            Some(vec!["a.*".to_string(), "b".to_string()])
        );
        assert_eq!(cfg.get::<bool>("enabled").unwrap(), Some(true));
        assert_eq!(cfg.get::<u32>("missing").unwrap(), None);
        assert_eq!(cfg.get_or("missing", 7u32).unwrap(), 7);

        let irc = PluginConfig::for_config_key(global.clone(), "fedmsg.consumers.ircbot.enabled");
        assert_eq!(irc.get::<String>("nick").unwrap().as_deref(), Some("bot"));

        let flat = PluginConfig::new(global.clone(), "flat.only");
        assert_eq!(flat.get::<u8>("key").unwrap(), Some(3));
        assert_eq!(flat.section(), &json!({"key": 3}));

        assert_eq!(
            cfg.get_global::<bool>("fedmsg.consumers.ircbot.enabled")
                .unwrap(),
            Some(true)
        );
    }

    #[test]
    fn type_errors_name_the_key() {
        let cfg = PluginConfig::new(
            json!({"tally": {"output": 5, "topic": 4, "list": ["a", 1]}}),
            "tally",
        );
        let err = cfg.get::<String>("output").unwrap_err();
        assert_eq!(err.key, "tally.output");
        assert!(
            err.to_string()
                .starts_with("config key `tally.output`: invalid type"),
            "{err}"
        );
        assert_eq!(cfg.get_string_list("topic").unwrap_err().key, "tally.topic");
        assert_eq!(cfg.get_string_list("list").unwrap_err().key, "tally.list");
        let err = cfg.require::<String>("absent").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key `tally.absent`: is required but not set"
        );
    }

    #[test]
    fn deserialize_whole_section() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct Settings {
            output: String,
            #[serde(default)]
            sleep_ms: u64,
        }
        let cfg = PluginConfig::new(json!({"x": {"enabled": true, "output": "o"}}), "x");
        assert_eq!(
            cfg.deserialize_section::<Settings>().unwrap(),
            Settings {
                output: "o".into(),
                sleep_ms: 0
            }
        );
        let bad = PluginConfig::new(json!({"x": {"sleep_ms": 1}}), "x");
        assert_eq!(bad.deserialize_section::<Settings>().unwrap_err().key, "x");
    }

    #[test]
    fn from_json_and_section_paths() {
        let cfg = PluginConfig::from_json(r#"{"k": 1}"#, "").unwrap();
        assert_eq!(cfg.get::<i64>("k").unwrap(), Some(1));
        assert!(PluginConfig::from_json("nope", "x").is_err());
        // An empty section path exposes the whole configuration.
        assert_eq!(cfg.section(), cfg.global());
    }
}
