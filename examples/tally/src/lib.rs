//! `tally`: appends one JSON line `{"msg_id":…,"topic":…}` per consumed
//! message to a file. Tests and benchmarks use it as a sink.
//!
//! ```toml
//! [tally]
//! enabled = true
//! output = "/var/tmp/tally.jsonl"   # required
//! topic = ["org.fedoraproject.*"]   # optional: a glob or a list; default "*"
//! skip_existing = false             # optional: skip msg_ids already in the file
//! ```
//!
//! `skip_existing` makes the sink idempotent across restarts, the way a real
//! store is (datanommer skips a known `msg_id`): the hub delivers at least
//! once after a crash (its status file may be up to a second behind what
//! the plugin finished), and the plugin drops what it already has.
//!
//! Each line reaches the file in a single `write(2)` on a file opened with
//! `O_APPEND`, so concurrent readers only ever see whole lines, plus at most
//! one line still being written at the very end (without its newline yet).
//!
//! The unit tests at the end show how to test a plugin without a hub: a
//! [`PluginConfig`] built from JSON, a detached [`HubContext`], and
//! [`Message::new`] for the messages.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

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
    // msg_ids already in the file at start (`skip_existing`).
    existing: HashSet<String>,
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
        let existing = if config.get_or("skip_existing", false)? {
            existing_ids(&path)?
        } else {
            HashSet::new()
        };
        Ok(Tally {
            path,
            file,
            line: Vec::with_capacity(256),
            existing,
        })
    }

    fn consume(&mut self, msg: &Message<'_>) -> Result<(), ConsumeError> {
        if !self.existing.is_empty() && msg.msg_id().is_some_and(|id| self.existing.contains(id)) {
            return Ok(());
        }
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

/// The msg_ids of the lines already in `path` (a missing file has none; a
/// torn last line left by a crash is ignored).
fn existing_ids(path: &Path) -> Result<HashSet<String>, PluginError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => {
            return Err(PluginError::context(
                format!("cannot read {}", path.display()),
                e,
            ))
        }
    };
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|line| line["msg_id"].as_str().map(str::to_owned))
        .collect())
}

export_plugin!(Tally);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A directory of its own for one test, removed at the end. (No
    /// `tempfile`: its current versions need a newer Rust than the plugin
    /// MSRV, and the examples build on that MSRV, tests included.)
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("fedmsg-tally-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scratch directory");
            Scratch(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The view the hub would give the plugin of this configuration.
    fn config(tally: Value) -> PluginConfig {
        PluginConfig::new(json!({ "tally": tally }), "tally")
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .expect("output file")
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }

    #[test]
    fn topics_default_to_everything_and_accept_a_glob_or_a_list() {
        assert_eq!(Tally::topics(&config(json!({}))).unwrap(), ["*"]);
        assert_eq!(
            Tally::topics(&config(json!({"topic": "org.a.*"}))).unwrap(),
            ["org.a.*"]
        );
        assert_eq!(
            Tally::topics(&config(json!({"topic": ["a", "b.*"]}))).unwrap(),
            ["a", "b.*"]
        );
        let error = Tally::topics(&config(json!({"topic": 3}))).unwrap_err();
        assert!(error.to_string().contains("tally.topic"), "{error}");
    }

    #[test]
    fn output_is_required_and_named_when_missing() {
        let dir = Scratch::new("output");
        let ctx = HubContext::detached("tally", dir.path());
        let error = Tally::new(&config(json!({})), ctx)
            .err()
            .expect("no output");
        assert!(error.to_string().contains("tally.output"), "{error}");
    }

    #[test]
    fn one_line_per_message() {
        let dir = Scratch::new("lines");
        let output = dir.path().join("tally.jsonl");
        let ctx = HubContext::detached("tally", dir.path());
        let mut tally = Tally::new(&config(json!({"output": output})), ctx).unwrap();
        let body = r#"{"topic":"org.x","msg":{}}"#;
        tally
            .consume(&Message::new("org.x", body).with_msg_id("id-1"))
            .unwrap();
        tally.consume(&Message::new("org.y", "{}")).unwrap();
        tally.shutdown();
        assert_eq!(
            lines(&output),
            [
                json!({"msg_id": "id-1", "topic": "org.x"}),
                json!({"msg_id": null, "topic": "org.y"}),
            ]
        );
    }

    #[test]
    fn skip_existing_drops_what_the_file_already_has() {
        let dir = Scratch::new("skip");
        let output = dir.path().join("tally.jsonl");
        // A crash left a torn last line: it is ignored, not an error.
        std::fs::write(
            &output,
            "{\"msg_id\":\"old\",\"topic\":\"org.x\"}\n{\"msg_id\":\"to",
        )
        .unwrap();
        let ctx = HubContext::detached("tally", dir.path());
        let settings = json!({"output": output, "skip_existing": true});
        let mut tally = Tally::new(&config(settings), ctx).unwrap();
        for id in ["old", "new"] {
            tally
                .consume(&Message::new("org.x", "{}").with_msg_id(id))
                .unwrap();
        }
        let text = std::fs::read_to_string(&output).unwrap();
        assert_eq!(text.matches("\"old\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"new\"").count(), 1, "{text}");
    }
}
