//! `echo`: logs every consumed message as fedmsg.meta renders it (its terse
//! line, through the hub's rule set: `HubContext::meta`), with topic,
//! msg_id and signer, with `tracing::info!`. It shows that a plugin's log
//! events reach the hub's log (they appear there with
//! `plugin=fedmsg-example-echo`) and how a plugin renders a message the way
//! the rest of the hub does.
//!
//! ```toml
//! [echo]
//! enabled = true
//! topic = "org.fedoraproject.prod.*"   # optional; default "*"
//! ```

use fedmsg_plugin_api::{
    export_plugin, ConsumeError, ConsumerPlugin, HubContext, Message, PluginConfig, PluginError,
};

/// The plugin; it keeps a count only to show state across messages.
pub struct Echo {
    ctx: HubContext,
    seen: u64,
}

impl ConsumerPlugin for Echo {
    const CONFIG_KEY: &'static str = "echo.enabled";

    fn topics(config: &PluginConfig) -> Result<Vec<String>, PluginError> {
        Ok(config
            .get_string_list("topic")?
            .unwrap_or_else(|| vec!["*".into()]))
    }

    fn new(_config: &PluginConfig, ctx: HubContext) -> Result<Self, PluginError> {
        tracing::debug!(plugin = ctx.plugin_name(), "echo ready");
        Ok(Echo { ctx, seen: 0 })
    }

    fn consume(&mut self, msg: &Message<'_>) -> Result<(), ConsumeError> {
        self.seen += 1;
        // A hub without fedmsg.meta for plugins (or a detached context in a
        // test) still gets the message logged, just not rendered.
        let text = match self.ctx.meta(msg) {
            Ok(rendering) => rendering.repr,
            Err(error) => format!("message ({error})"),
        };
        tracing::info!(
            topic = msg.topic(),
            msg_id = msg.msg_id().unwrap_or("-"),
            signer = msg.signer().unwrap_or("-"),
            seen = self.seen,
            "{text}"
        );
        Ok(())
    }

    fn shutdown(&mut self) {
        tracing::info!(seen = self.seen, "echo stopping");
    }
}

export_plugin!(Echo);
