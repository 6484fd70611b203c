//! fedmsg's flags common to every command (reference §5.5): `--io-threads`,
//! `--topic-prefix`, `--config-filename`, `--print-config`, ... Beside
//! [`ConfigArgs`](super::ConfigArgs) because the hub takes them too.

use std::path::PathBuf;

use super::ConfigArgs;

/// fedmsg's flags common to every argparse command (`#[command(flatten)]`
/// next to [`ConfigArgs`]). Each one overrides its configuration key, like
/// a `--set` given after the others.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct CommonArgs {
    /// Number of ZeroMQ I/O threads (config `io_threads`).
    #[arg(long, value_name = "N")]
    pub io_threads: Option<u64>,

    /// First part of every topic (config `topic_prefix`), e.g. org.fedoraproject.
    #[arg(long, value_name = "PREFIX")]
    pub topic_prefix: Option<String>,

    /// Seconds to sleep after creating a publisher (config
    /// `post_init_sleep`). Accepted for compatibility: these tools wait for
    /// the subscriber's subscription instead of sleeping.
    #[arg(long, value_name = "SECONDS")]
    pub post_init_sleep: Option<f64>,

    /// Read only this configuration file or directory (fedmsg's flag; the
    /// same as a single --config-dir).
    #[arg(long, value_name = "FILE")]
    pub config_filename: Option<PathBuf>,

    /// Print the merged configuration as JSON and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Timeout in seconds (config `timeout`, default 2): how long
    /// fedmsg-logger waits for the relay to subscribe (0 = forever); other
    /// tools accept it for compatibility.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,

    /// High-water mark of the tool's sockets, in messages (config
    /// `high_water_mark`; 0 = unlimited).
    #[arg(long, value_name = "N")]
    pub high_water_mark: Option<u64>,

    /// How long closing a publisher waits for unsent messages, in ms
    /// (config `zmq_linger`, default 1000).
    #[arg(long, value_name = "MS")]
    pub linger: Option<u64>,
}

impl CommonArgs {
    /// `config` with these flags folded in: `--config-filename` as a
    /// config directory, the others as `--set` overrides.
    pub fn apply(&self, config: &ConfigArgs) -> ConfigArgs {
        let mut out = config.clone();
        if let Some(file) = &self.config_filename {
            out.config_dir.push(file.clone());
        }
        let mut set = |key: &str, value: String| out.set.push(format!("{key}={value}"));
        if let Some(n) = self.io_threads {
            set("io_threads", n.to_string());
        }
        if let Some(prefix) = &self.topic_prefix {
            // Quoted so that TOML reads it as a string whatever it looks like.
            set("topic_prefix", toml_string(prefix));
        }
        if let Some(s) = self.post_init_sleep {
            set("post_init_sleep", format!("{s:?}"));
        }
        if let Some(s) = self.timeout {
            set("timeout", format!("{s:?}"));
        }
        if let Some(n) = self.high_water_mark {
            set("high_water_mark", n.to_string());
        }
        if let Some(ms) = self.linger {
            set("zmq_linger", ms.to_string());
        }
        out
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_overrides() {
        let common = CommonArgs {
            io_threads: Some(2),
            topic_prefix: Some("org.example".into()),
            post_init_sleep: Some(0.25),
            config_filename: Some(PathBuf::from("/x.toml")),
            print_config: false,
            timeout: Some(3.0),
            high_water_mark: Some(0),
            linger: Some(10),
        };
        let out = common.apply(&ConfigArgs {
            config_dir: vec![],
            set: vec!["environment=prod".into()],
        });
        assert_eq!(out.config_dir, [PathBuf::from("/x.toml")]);
        assert_eq!(
            out.set,
            [
                "environment=prod",
                "io_threads=2",
                "topic_prefix=\"org.example\"",
                "post_init_sleep=0.25",
                "timeout=3.0",
                "high_water_mark=0",
                "zmq_linger=10",
            ]
        );
    }
}
