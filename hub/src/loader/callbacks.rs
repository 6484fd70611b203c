//! The hub side of the plugin boundary: what a plugin calls back into
//! (publish, log).

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use crate::plugin_meta::PluginMeta;
use abi_stable::std_types::{RResult, RStr, RString};
use fedmsg_plugin_api::__host::u8_to_level;
use fedmsg_plugin_api::abi::{level, HubCallbacks};
use tracing::Level;

/// The `tracing` target under which plugins' log events appear in the hub's
/// log (with fields `plugin` and `plugin_target`), e.g. for
/// `RUST_LOG=fedmsg_hub::plugin=debug`.
pub const PLUGIN_LOG_TARGET: &str = "fedmsg_hub::plugin";

/// Where a plugin's `HubContext::publish` goes: the hub's publisher
/// ([`crate::publisher`]); the loader wraps it for each plugin instance.
pub trait PublishSink: Send + Sync {
    /// Publishes `body` on `topic` on behalf of `plugin` (the hub adds the
    /// envelope and signs it when configured).
    fn publish(&self, plugin: &str, topic: &str, body: &serde_json::Value) -> Result<(), String>;
}

/// A [`PublishSink`] whose `publish` always fails with the given text.
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct NoPublish(pub String);

#[cfg(test)]
impl Default for NoPublish {
    fn default() -> Self {
        NoPublish("this test has no publisher".into())
    }
}

#[cfg(test)]
impl PublishSink for NoPublish {
    fn publish(
        &self,
        _plugin: &str,
        _topic: &str,
        _body: &serde_json::Value,
    ) -> Result<(), String> {
        Err(self.0.clone())
    }
}

/// One plugin instance's view of the hub, behind the `HubCallbacks` trait
/// object the plugin holds.
pub(crate) struct HubSide {
    pub(crate) plugin: String,
    pub(crate) sink: Arc<dyn PublishSink>,
    /// The hub's fedmsg.meta processors, shared by every plugin, built on
    /// first use.
    pub(crate) meta: Arc<PluginMeta>,
}

impl HubCallbacks for HubSide {
    fn publish(&self, topic: RStr<'_>, body_json: RStr<'_>) -> RResult<(), RString> {
        // This runs hub code on a plugin's call stack: a panic here must not
        // unwind through the plugin's frames (abi_stable would abort).
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let body: serde_json::Value = serde_json::from_str(body_json.as_str())
                .map_err(|e| format!("the plugin sent a body that is not JSON: {e}"))?;
            self.sink.publish(&self.plugin, topic.as_str(), &body)
        }));
        match outcome {
            Ok(Ok(())) => RResult::ROk(()),
            Ok(Err(why)) => RResult::RErr(why.into()),
            Err(_) => RResult::RErr("the hub panicked while publishing".into()),
        }
    }

    fn meta(&self, envelope_json: RStr<'_>) -> RResult<RString, RString> {
        // Hub code on a plugin's call stack, as in `publish`.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let envelope: serde_json::Value = serde_json::from_str(envelope_json.as_str())
                .map_err(|e| format!("the plugin sent a message that is not JSON: {e}"))?;
            let set = self.meta.get().map_err(str::to_owned)?;
            let rendering =
                set.render_shared(&Arc::new(envelope), fedmsg_wire::localtime::now_epoch_f64());
            Ok::<_, String>(rendering.to_json().to_string())
        }));
        match outcome {
            Ok(Ok(json)) => RResult::ROk(json.into()),
            Ok(Err(why)) => RResult::RErr(why.into()),
            Err(_) => RResult::RErr("the hub panicked while rendering".into()),
        }
    }

    fn log(&self, level: u8, target: RStr<'_>, message: RStr<'_>, fields: RStr<'_>) {
        let _ = panic::catch_unwind(AssertUnwindSafe(|| {
            emit(
                &self.plugin,
                level,
                target.as_str(),
                message.as_str(),
                fields.as_str(),
            );
        }));
    }
}

/// Re-emits one plugin event as a hub event.
pub(crate) fn emit(plugin: &str, level: u8, target: &str, message: &str, fields: &str) {
    // `tracing` needs the level at compile time, hence one arm per level.
    macro_rules! at {
        ($level:expr) => {
            if fields.is_empty() {
                tracing::event!(target: PLUGIN_LOG_TARGET, $level, plugin = %plugin, plugin_target = %target, "{message}")
            } else {
                tracing::event!(target: PLUGIN_LOG_TARGET, $level, plugin = %plugin, plugin_target = %target, "{message} {fields}")
            }
        };
    }
    match u8_to_level(level) {
        Some(Level::ERROR) => at!(Level::ERROR),
        Some(Level::WARN) => at!(Level::WARN),
        Some(Level::INFO) => at!(Level::INFO),
        Some(Level::DEBUG) => at!(Level::DEBUG),
        Some(Level::TRACE) => at!(Level::TRACE),
        None => {}
    }
}

/// The most verbose level at which the hub would record a plugin event right
/// now; passed to plugins so that they do not format events nobody keeps.
pub fn plugin_max_level() -> u8 {
    if tracing::enabled!(target: PLUGIN_LOG_TARGET, Level::TRACE) {
        level::TRACE
    } else if tracing::enabled!(target: PLUGIN_LOG_TARGET, Level::DEBUG) {
        level::DEBUG
    } else if tracing::enabled!(target: PLUGIN_LOG_TARGET, Level::INFO) {
        level::INFO
    } else if tracing::enabled!(target: PLUGIN_LOG_TARGET, Level::WARN) {
        level::WARN
    } else if tracing::enabled!(target: PLUGIN_LOG_TARGET, Level::ERROR) {
        level::ERROR
    } else {
        level::OFF
    }
}
