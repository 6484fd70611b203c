//! Test fixture: like `tally` (one JSON line per consumed message, to
//! `faulty.output`), but misbehaves on request, for the isolation tests.
//!
//! ```toml
//! [faulty]
//! enabled = true
//! output = "/tmp/faulty.jsonl"   # required
//! topic = "*"                    # string or list
//! panic_on = "boom"              # a topic containing this panics in consume
//! fail_on = "fail"               # a topic containing this returns an error
//! sleep_ms = 0                   # sleep this long per message (slow consumer)
//! panic_in_new = false           # panic in the constructor
//! publish_on = "echo"            # a topic containing this is re-published
//!                                # as `<topic>.reply`; a publish error fails
//! validate_signatures = false    # opt out of (or into) validation
//! replay_name = "relay_outbound" # the sender name whose gaps replay fills
//! ```
//!
//! Each line also records whether the hub validated the message and who
//! signed it.
//!
//! Messages that panic or fail are not written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::Duration;

use fedmsg_plugin_api::{
    export_plugin, ConsumeError, ConsumerPlugin, HubContext, Message, PluginConfig, PluginError,
};
use serde::{Deserialize, Serialize};

/// The fixture's settings (`[faulty]`).
#[derive(Deserialize)]
struct Settings {
    output: String,
    #[serde(default)]
    panic_on: Option<String>,
    #[serde(default)]
    fail_on: Option<String>,
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    panic_in_new: bool,
    #[serde(default)]
    publish_on: Option<String>,
}

/// The plugin.
pub struct Faulty {
    settings: Settings,
    ctx: HubContext,
    file: File,
    line: Vec<u8>,
}

#[derive(Serialize)]
struct Line<'a> {
    msg_id: Option<&'a str>,
    topic: &'a str,
    validated: bool,
    signer: Option<&'a str>,
}

impl ConsumerPlugin for Faulty {
    const CONFIG_KEY: &'static str = "faulty.enabled";

    fn topics(config: &PluginConfig) -> Result<Vec<String>, PluginError> {
        Ok(config
            .get_string_list("topic")?
            .unwrap_or_else(|| vec!["*".into()]))
    }

    fn validate_signatures(config: &PluginConfig) -> Result<Option<bool>, PluginError> {
        Ok(config.get("validate_signatures")?)
    }

    fn replay_name(config: &PluginConfig) -> Result<Option<String>, PluginError> {
        Ok(config.get("replay_name")?)
    }

    fn new(config: &PluginConfig, ctx: HubContext) -> Result<Self, PluginError> {
        let settings: Settings = config.deserialize_section()?;
        if settings.panic_in_new {
            panic!("faulty: panic_in_new is set");
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&settings.output)
            .map_err(|e| PluginError::context(format!("cannot open {}", settings.output), e))?;
        Ok(Faulty {
            settings,
            ctx,
            file,
            line: Vec::with_capacity(256),
        })
    }

    fn consume(&mut self, msg: &Message<'_>) -> Result<(), ConsumeError> {
        let topic = msg.topic();
        if self.settings.sleep_ms > 0 {
            std::thread::sleep(Duration::from_millis(self.settings.sleep_ms));
        }
        if let Some(needle) = self.settings.panic_on.as_deref() {
            if topic.contains(needle) {
                panic!("faulty: panic_on {needle:?} matched topic {topic}");
            }
        }
        if let Some(needle) = self.settings.fail_on.as_deref() {
            if topic.contains(needle) {
                return Err(format!("faulty: fail_on {needle:?} matched topic {topic}").into());
            }
        }
        if let Some(needle) = self.settings.publish_on.as_deref() {
            if topic.contains(needle) {
                let reply = serde_json::json!({ "in_reply_to": msg.msg_id() });
                self.ctx.publish(&format!("{topic}.reply"), &reply)?;
            }
        }
        self.line.clear();
        serde_json::to_writer(
            &mut self.line,
            &Line {
                msg_id: msg.msg_id(),
                topic,
                validated: msg.validated(),
                signer: msg.signer(),
            },
        )?;
        self.line.push(b'\n');
        self.file.write_all(&self.line)?;
        Ok(())
    }
}

export_plugin!(Faulty);
