//! `fedmsg-logger`: publishes messages on the bus through `fedmsg-relay`,
//! like fedmsg's command of the same name.

use std::io::{BufRead, Read};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use fedmsg_tools::cli::{self, CommonArgs};
use fedmsg_wire::config::{Config, ConfigArgs};
use fedmsg_wire::envelope;
use fedmsg_wire::publish::{self, Attach, EnvelopeBuilder, PubSocket, Publisher, SocketOptions};
use serde_json::{json, Value};

/// Publish messages on the fedmsg bus through fedmsg-relay.
///
/// The message is `--message TEXT`, or else each line of standard input
/// (one message per line). It is published as `{"log": TEXT}`, or, with
/// `--json-input`, parsed as JSON (then all of standard input is one
/// message). The topic is `<topic_prefix>.<environment>.<MODNAME>.<TOPIC>`,
/// e.g. org.fedoraproject.dev.logger.log.
///
/// The publisher connects to `relay_inbound` and waits (at most `timeout`
/// seconds, default 2; 0 = forever) until the relay has subscribed, so no
/// message is lost to zmq's slow-joiner window; if no relay answers it
/// exits with status 1. With `sign_messages = true` every message is signed
/// with `<ssldir>/<certname>.crt/.key`, the certname being
/// `certnames["<CERT_PREFIX>.<short hostname>"]`; a missing entry or file
/// is reported before anything is sent.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    common: CommonArgs,
    /// The message to send (otherwise standard input is read).
    #[arg(long, value_name = "TEXT")]
    message: Option<String>,
    /// Parse the input as JSON: the --message text, or all of standard
    /// input as one JSON document.
    #[arg(long)]
    json_input: bool,
    /// Topic suffix: org.fedoraproject.<env>.<MODNAME>.TOPIC.
    #[arg(long, value_name = "TOPIC", default_value = "log")]
    topic: String,
    /// Module part of the topic: org.fedoraproject.<env>.MODNAME.<TOPIC>.
    #[arg(long, value_name = "MODNAME", default_value = "logger")]
    modname: String,
    /// Which certificate signs: certnames["CERT_PREFIX.<short hostname>"]
    /// in ssldir [default: shell, or the config's cert_prefix].
    #[arg(long, value_name = "CERT_PREFIX")]
    cert_prefix: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    fedmsg_wire::logging::init(None, "warn");
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fedmsg-logger: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where the messages come from.
enum Input {
    One(Value),
    Lines,
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut config = cli::load(&args.config, &args.common)
        .context("cannot load the configuration")?
        .config;
    if args.common.print_config {
        println!("{}", config.to_json_string());
        return Ok(());
    }
    apply_cert_prefix(&mut config, args.cert_prefix.as_deref());
    let input = read_input(&args)?;
    let mut publisher = connect(&config)?;
    let topic = publisher.builder().full_topic(&args.modname, &args.topic);
    match input {
        Input::One(msg) => send(&mut publisher, &topic, msg)?,
        Input::Lines => {
            for line in std::io::stdin().lock().lines() {
                let line = line.context("cannot read standard input")?;
                send(&mut publisher, &topic, json!({ "log": line.trim() }))?;
            }
        }
    }
    // Dropping the publisher closes the socket, which waits up to
    // `zmq_linger` ms for the messages still queued to be sent.
    Ok(())
}

/// fedmsg-logger always signs as `<cert-prefix>.<host>` (default `shell`),
/// which also overrides a configured `certname`; without the flag, a
/// `cert_prefix` from the configuration is kept.
fn apply_cert_prefix(config: &mut Config, flag: Option<&str>) {
    match flag {
        Some(prefix) => {
            config.cert_prefix = Some(prefix.to_owned());
            config.certname = None;
        }
        None if config.cert_prefix.is_none() => config.cert_prefix = Some("shell".into()),
        None => {}
    }
}

fn read_input(args: &Args) -> anyhow::Result<Input> {
    // fedmsg ignores an empty --message and reads standard input.
    let text = match args.message.as_deref().filter(|m| !m.is_empty()) {
        Some(text) => text.to_owned(),
        None if args.json_input => {
            let mut all = String::new();
            std::io::stdin()
                .read_to_string(&mut all)
                .context("cannot read standard input")?;
            all
        }
        None => return Ok(Input::Lines),
    };
    if !args.json_input {
        return Ok(Input::One(json!({ "log": text })));
    }
    // The user's message body, parsed as fedmsg's json.loads would.
    let value = envelope::parse(text.as_bytes()).context("--json-input: the message")?;
    Ok(Input::One(value))
}

/// The signer (first, so that a signing problem is reported before any
/// connection), then the socket, ready once the relay has subscribed.
fn connect(config: &Config) -> anyhow::Result<Publisher> {
    let signer = publish::signer_for(config, "relay_inbound")?;
    if config.relay_inbound.is_empty() {
        bail!("relay_inbound is not configured: there is no relay to publish through");
    }
    let ctx = zmq::Context::new();
    let attach = Attach::Connect {
        urls: config.relay_inbound.clone(),
    };
    let mut socket = PubSocket::open(&ctx, &attach, &SocketOptions::from_config(config))?;
    let timeout = if config.timeout > 0.0 {
        Duration::from_secs_f64(config.timeout)
    } else {
        // fedmsg's logger "hangs" until the relay appears.
        Duration::from_secs(u64::from(u32::MAX))
    };
    socket
        .wait_ready(timeout)
        .context("the relay is unreachable")?;
    let builder = EnvelopeBuilder::new(&config.topic_prefix, &config.environment);
    Ok(Publisher::new(socket, builder, signer))
}

fn send(publisher: &mut Publisher, topic: &str, msg: Value) -> anyhow::Result<()> {
    let msg_id = publisher.publish(topic.to_owned(), msg)?;
    tracing::debug!(topic, msg_id, "published");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_prefix_defaults_to_shell_and_the_flag_wins() {
        let mut config = Config::default();
        apply_cert_prefix(&mut config, None);
        assert_eq!(config.cert_prefix.as_deref(), Some("shell"));

        let mut config = Config::default();
        config.cert_prefix = Some("web".into());
        apply_cert_prefix(&mut config, None);
        assert_eq!(config.cert_prefix.as_deref(), Some("web"));

        config.certname = Some("pinned".into());
        apply_cert_prefix(&mut config, Some("evil"));
        assert_eq!(config.cert_prefix.as_deref(), Some("evil"));
        assert_eq!(config.certname, None);
    }

    #[test]
    fn messages_are_log_objects_or_json() {
        let args = Args::parse_from(["fedmsg-logger", "--message", "hi there"]);
        assert!(matches!(read_input(&args), Ok(Input::One(v)) if v == json!({"log": "hi there"})));
        let args = Args::parse_from(["fedmsg-logger", "--json-input", "--message", r#"{"a": 1}"#]);
        assert!(matches!(read_input(&args), Ok(Input::One(v)) if v == json!({"a": 1})));
        let args = Args::parse_from(["fedmsg-logger", "--json-input", "--message", "{nope"]);
        let err = read_input(&args).err().expect("invalid");
        let text = format!("{err:#}");
        assert!(
            text.starts_with("--json-input: the message: not valid JSON"),
            "{text}"
        );
        assert_eq!(text.matches("key must be a string").count(), 1, "{text}");
        let args = Args::parse_from(["fedmsg-logger"]);
        assert!(matches!(read_input(&args), Ok(Input::Lines)));
    }
}
