//! What the hub lends a plugin instance.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use abi_stable::std_types::{RResult, RStr};

use crate::abi::HubBox;
use crate::{Message, MetaError, MetaRendering, PublishError};

/// What the hub lends one plugin instance (publishing, its name, its state
/// directory). Cheap to clone; `Send + Sync`,
/// so it may be kept in the plugin and used from its own threads.
#[derive(Clone)]
pub struct HubContext {
    hub: Option<Arc<HubBox>>,
    plugin_name: Arc<str>,
    state_dir: Arc<Path>,
}

impl HubContext {
    /// A context that is not connected to a hub (its `publish` fails): for
    /// constructing a plugin in its own unit tests.
    pub fn detached(plugin_name: &str, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            hub: None,
            plugin_name: plugin_name.into(),
            state_dir: state_dir.into().into(),
        }
    }

    pub(crate) fn connected(hub: Arc<HubBox>, plugin_name: &str, state_dir: PathBuf) -> Self {
        Self {
            hub: Some(hub),
            plugin_name: plugin_name.into(),
            state_dir: state_dir.into(),
        }
    }

    /// Publishes `msg` on `topic` through the hub's own PUB endpoint (the hub
    /// adds the envelope, and signs it when `sign_messages` is on).
    pub fn publish(&self, topic: &str, msg: &serde_json::Value) -> Result<(), PublishError> {
        let hub = self
            .hub
            .as_ref()
            .ok_or_else(|| PublishError("not connected to a hub".into()))?;
        let body = msg.to_string();
        match hub.publish(RStr::from_str(topic), RStr::from_str(&body)) {
            RResult::ROk(()) => Ok(()),
            RResult::RErr(why) => Err(PublishError(why.into_string())),
        }
    }

    /// Renders `msg` with the hub's fedmsg.meta processors (the bundled
    /// rule set and the operator's `meta_rules_dir`), so that every plugin
    /// shows a message the way the rest of the hub does.
    ///
    /// # Errors
    ///
    /// Not connected to a hub (a detached context), a hub that predates
    /// this call (plugin API 0.1.2), or a body that is not JSON.
    pub fn meta(&self, msg: &Message<'_>) -> Result<MetaRendering, MetaError> {
        let hub = self
            .hub
            .as_ref()
            .ok_or_else(|| MetaError("not connected to a hub".into()))?;
        match hub.meta(RStr::from_str(msg.body())) {
            RResult::ROk(json) => serde_json::from_str(json.as_str())
                .map_err(|e| MetaError(format!("the hub sent a rendering that is not JSON: {e}"))),
            RResult::RErr(why) => Err(MetaError(why.into_string())),
        }
    }

    /// The name the hub knows this plugin by (its crate name).
    pub fn plugin_name(&self) -> &str {
        &self.plugin_name
    }

    /// A directory for the plugin's own state (`<state_dir>/<plugin name>`
    /// from the hub's configuration). The hub creates it when it can; a
    /// plugin that depends on it reports the I/O error it gets.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

impl std::fmt::Debug for HubContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubContext")
            .field("plugin_name", &self.plugin_name)
            .field("state_dir", &self.state_dir)
            .field("connected", &self.hub.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_context() {
        let ctx = HubContext::detached("tally", "/tmp/state/tally");
        assert_eq!(ctx.plugin_name(), "tally");
        assert_eq!(ctx.state_dir(), Path::new("/tmp/state/tally"));
        let err = ctx.publish("t", &serde_json::json!({})).unwrap_err();
        assert_eq!(err.to_string(), "publish failed: not connected to a hub");
    }
}
