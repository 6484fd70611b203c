//! `tally`: appends one JSON line `{"msg_id":…,"topic":…}` per consumed
//! message to a file. Tests and benchmarks use it as a sink.
//!
//! ```toml
//! [tally]
//! enabled = true
//! output = "/var/tmp/tally.jsonl"   # required
//! topic = ["org.fedoraproject.*"]   # optional: a glob or a list; default "*"
//! ```
//!
//! Each line reaches the file in a single `write(2)` on a file opened with
//! `O_APPEND`, so concurrent readers only ever see whole lines, plus at most
//! one line still being written at the very end (without its newline yet).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use fedmsg_plugin_api::{
    export_plugin, ConsumeError, ConsumerPlugin, HubContext, Message, PluginConfig, PluginError,
};
use serde::Serialize;

/// The plugin: the output file and a reusable line buffer.
pub struct Tally {
    path: PathBuf,
    file: File,
    // Reused for every message so that consuming does not allocate.
    line: Vec<u8>,
}

/// One output line.
#[derive(Serialize)]
struct Line<'a> {
    msg_id: Option<&'a str>,
    topic: &'a str,
}

impl ConsumerPlugin for Tally {
    const CONFIG_KEY: &'static str = "tally.enabled";

    fn topics(config: &PluginConfig) -> Result<Vec<String>, PluginError> {
        Ok(config
            .get_string_list("topic")?
            .unwrap_or_else(|| vec!["*".into()]))
    }

    fn new(config: &PluginConfig, _ctx: HubContext) -> Result<Self, PluginError> {
        let path: PathBuf = config.require("output")?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| PluginError::context(format!("cannot open {}", path.display()), e))?;
        Ok(Tally {
            path,
            file,
            line: Vec::with_capacity(256),
        })
    }

    fn consume(&mut self, msg: &Message<'_>) -> Result<(), ConsumeError> {
        self.line.clear();
        serde_json::to_writer(
            &mut self.line,
            &Line {
                msg_id: msg.msg_id(),
                topic: msg.topic(),
            },
        )?;
        self.line.push(b'\n');
        // One write call per line (see the module doc); `write_all` only
        // loops if the kernel accepts a partial write, which regular files
        // do not do short of a full disk.
        self.file.write_all(&self.line).map_err(|e| {
            ConsumeError::context(format!("cannot append to {}", self.path.display()), e)
        })
    }
}

export_plugin!(Tally);
