//! `fedmsg-irc`: a hub running only the IRC bot plugin, as fedmsg's
//! `fedmsg-irc` was a moksha hub with only `IRCBotConsumer`. The plugin's
//! enable key is set for it; other plugins in the plugin directory are not
//! loaded. The rest (configuration, signals, systemd notification, the
//! stats file) is exactly `fedmsg-hub`'s.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fedmsg_hub::{run_single, SingleArgs, SinglePlugin};
use fedmsg_wire::config::ConfigArgs;

/// The plugin this command runs.
const PLUGIN: SinglePlugin = SinglePlugin {
    command: "fedmsg-irc",
    file: "libfedmsg_irc.so",
    config_key: fedmsg_irc::CONFIG_KEY,
};

/// fedmsg's IRC bot: shows every bus message in the IRC channels of the
/// configuration's `[[irc]]` entries.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Directory holding libfedmsg_irc.so (overrides config `plugin_dir`).
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
    /// Log filter, e.g. `info` or `fedmsg_hub=debug` (default: RUST_LOG, else info).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Write the hub's counters as JSON to this file at exit.
    #[arg(long, value_name = "FILE")]
    stats_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    fedmsg_wire::logging::init(args.log_level.as_deref(), "info");
    let single = SingleArgs {
        plugin_dir: args.plugin_dir,
        stats_file: args.stats_file,
    };
    match run_single(PLUGIN, args.config, single) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("fedmsg-irc: {error}");
            ExitCode::from(2)
        }
    }
}
