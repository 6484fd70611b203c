//! Plugin side: the fedmsg.meta processors behind `HubContext::meta`,
//! built when a plugin first asks.
//!
//! The bundled rule set compiled (54 processors, their regular expressions
//! and templates) costs about 12 MB of resident memory, which is as much as
//! the whole idle hub; most deployments' plugins never render. So the hub
//! only checks the operator's rule files at start (their errors are
//! reported then, as a start-up problem should be) and builds the set on
//! the first `meta` call, once, shared by every plugin.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use fedmsg_meta::MetaSet;
use fedmsg_wire::config::Config;

/// The configuration the set is built from.
#[derive(Debug, Clone)]
struct Settings {
    topic_prefix: String,
    topic_prefix_re: Option<String>,
    rules_dir: Option<PathBuf>,
    fas_users: BTreeMap<String, String>,
}

/// The processors plugins render with, built on first use.
#[derive(Debug)]
pub struct PluginMeta {
    settings: Settings,
    set: OnceLock<Result<MetaSet, String>>,
}

impl PluginMeta {
    /// The processors of `config` (bundled rules, `meta_rules_dir`,
    /// `meta_fas_users`, `topic_prefix_re`). The operator's rule files are
    /// checked now and every error logged; the set itself is built later.
    pub fn for_config(config: &Config) -> PluginMeta {
        let settings = Settings {
            topic_prefix: config.topic_prefix.clone(),
            topic_prefix_re: config.topic_prefix_re.clone(),
            rules_dir: config.meta_rules_dir.clone(),
            fas_users: config.meta_fas_users.clone(),
        };
        if let Some(dir) = &settings.rules_dir {
            let prefix_re = fedmsg_meta::effective_topic_prefix_re(
                &settings.topic_prefix,
                settings.topic_prefix_re.as_deref(),
            );
            for error in MetaSet::check_dir(dir, &prefix_re) {
                tracing::error!(%error, "meta rule file skipped");
            }
        }
        PluginMeta {
            settings,
            set: OnceLock::new(),
        }
    }

    /// A set that is already built (tests).
    #[cfg(test)]
    pub(crate) fn ready(set: MetaSet) -> PluginMeta {
        PluginMeta {
            settings: Settings {
                topic_prefix: String::new(),
                topic_prefix_re: None,
                rules_dir: None,
                fas_users: BTreeMap::new(),
            },
            set: OnceLock::from(Ok(set)),
        }
    }

    /// The processors, built on the first call (rule-file errors were
    /// reported at start and are left out quietly here).
    ///
    /// # Errors
    ///
    /// The bundled rules do not load (a bug: the tests load them all).
    pub(crate) fn get(&self) -> Result<&MetaSet, &str> {
        self.set
            .get_or_init(|| {
                let s = &self.settings;
                let built = MetaSet::for_config(
                    &s.topic_prefix,
                    s.topic_prefix_re.as_deref(),
                    s.rules_dir.as_deref(),
                    &s.fas_users,
                );
                match built {
                    Ok((set, _errors)) => {
                        tracing::info!(
                            processors = set.processors().len(),
                            "fedmsg.meta processors loaded for plugins"
                        );
                        Ok(set)
                    }
                    Err(error) => {
                        tracing::error!(%error, "fedmsg.meta unavailable to plugins");
                        Err(error.to_string())
                    }
                }
            })
            .as_ref()
            .map_err(String::as_str)
    }
}
