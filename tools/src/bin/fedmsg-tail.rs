//! `fedmsg-tail`: watches the bus and prints every message, like fedmsg's
//! command of the same name.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{ArgGroup, Parser};
use fedmsg_meta::{MetaSet, Rendering};
use fedmsg_tools::cli::{self, CommonArgs};
use fedmsg_wire::config::{ConfigArgs, Loaded};
use fedmsg_wire::crypto::{Verdict, Verifier, VerifierSettings};
use fedmsg_wire::delivery::{Delivery, Source};
use fedmsg_wire::ingest::{self, Limits};
use fedmsg_wire::localtime;
use fedmsg_wire::peer_text;
use fedmsg_wire::ratelimit::LogLimiter;
use fedmsg_wire::shutdown::{self, Stop};
use fedmsg_wire::transport::{SubscribeOptions, Subscriber};
use regex::Regex;
use serde_json::Value;

/// Watch the fedmsg bus: print every message published on every endpoint.
///
/// Connects to every URL of every name in `endpoints` (except
/// `relay_inbound`) and prints each message as it arrives. The default
/// output is one line per message: the topic, a space, and the envelope as
/// received. `--json` prints only the envelope (one per line, for jq and
/// friends); `--pretty`, `--really-pretty`, `--terse` and `--query` are for
/// people.
///
/// Signatures are checked when `validate_signatures` is true in the
/// configuration (fedmsg's tail treats a missing key as false), or with
/// `--validate`: an invalid message is not printed, a warning on standard
/// error says why, and valid messages show their signer (except with
/// `--json` and `--query`, which print messages only). SIGINT or SIGTERM
/// stops it.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
#[command(group(ArgGroup::new("format").args(["pretty", "really_pretty", "terse", "json", "query"])))]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    common: CommonArgs,
    /// Only messages whose topic starts with PREFIX (a zmq subscription:
    /// `*` is a literal character here). Default: every message.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    topic: String,
    /// Print only these dotted paths of each message, comma-separated
    /// (e.g. `msg.log,topic`), joined with ", ".
    #[arg(long, value_name = "PATHS")]
    query: Option<String>,
    /// Indented JSON, with the timestamp as a date and without the
    /// signature and certificate.
    #[arg(long)]
    pretty: bool,
    /// Indented JSON without the signature and certificate, coloured when
    /// standard output is a terminal.
    #[arg(long)]
    really_pretty: bool,
    /// One line per message: fedmsg.meta's terse line
    /// (`<title> -- <subtitle> <link>`), then `[signer]` when validated.
    #[arg(long)]
    terse: bool,
    /// Only messages about one of these users (comma-separated; fedmsg.meta
    /// usernames).
    #[arg(long, value_name = "USERS", value_delimiter = ',')]
    users: Vec<String>,
    /// Only messages about one of these packages (comma-separated;
    /// fedmsg.meta packages).
    #[arg(long, value_name = "PACKAGES", value_delimiter = ',')]
    packages: Vec<String>,
    /// One raw envelope per line, exactly as received (re-encoded compactly
    /// only when it spans several lines).
    #[arg(long)]
    json: bool,
    /// Skip messages whose topic matches this regular expression.
    #[arg(long, value_name = "REGEXP", default_value = "_heartbeat")]
    exclude: String,
    /// Show only messages whose topic matches this regular expression
    /// [default: every topic].
    #[arg(long, value_name = "REGEXP")]
    include: Option<String>,
    /// Check signatures, whatever `validate_signatures` says.
    #[arg(long, overrides_with = "no_validate")]
    validate: bool,
    /// Do not check signatures, whatever `validate_signatures` says.
    #[arg(long)]
    no_validate: bool,
    /// Write control characters of topics and payloads as they are. By
    /// default they are shown escaped (`\u{1b}`), so a message cannot
    /// drive the terminal (ESC sequences, BEL) or forge lines.
    #[arg(long)]
    raw: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    fedmsg_wire::logging::init(None, "warn");
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fedmsg-tail: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let loaded = cli::load(&args.config, &args.common).context("cannot load the configuration")?;
    if args.common.print_config {
        println!("{}", loaded.config.to_json_string());
        return Ok(());
    }
    let mut printer = Printer::new(args, &loaded)?;
    let config = &loaded.config;
    let endpoints: Vec<(String, String)> = config
        .endpoint_urls()
        .into_iter()
        .filter(|(name, _)| name != "relay_inbound")
        .collect();
    if endpoints.is_empty() {
        bail!("no endpoints are configured: nothing to listen to");
    }
    let stop = Stop::new();
    shutdown::stop_on_signals(stop.clone()).context("cannot install signal handlers")?;
    let ctx = zmq::Context::new();
    let (subscriber, errors) = Subscriber::connect(
        &ctx,
        &endpoints,
        std::slice::from_ref(&args.topic),
        &SubscribeOptions::from_config(config),
    );
    for error in errors {
        eprintln!("fedmsg-tail: {error}");
    }
    let limits = Limits {
        max_message_size: config.max_message_size,
        ..Limits::default()
    };
    subscriber.run(&stop, |source, frames| {
        if !printer.handle(source, frames, &limits) {
            stop.trigger();
        }
    })?;
    Ok(())
}

/// The output layouts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Format {
    Default,
    Json,
    Pretty,
    ReallyPretty { colour: bool },
    Terse,
    Query(Vec<String>),
}

impl Format {
    fn of(args: &Args) -> Format {
        if args.json {
            Format::Json
        } else if args.pretty {
            Format::Pretty
        } else if args.really_pretty {
            Format::ReallyPretty {
                colour: std::io::stdout().is_terminal(),
            }
        } else if args.terse {
            Format::Terse
        } else if let Some(query) = &args.query {
            Format::Query(query.split(',').map(|p| p.trim().to_owned()).collect())
        } else {
            Format::Default
        }
    }
}

/// Filters, checks and prints messages.
struct Printer {
    format: Format,
    /// fedmsg.meta, when `--terse`, `--users` or `--packages` needs it.
    meta: Option<MetaSet>,
    users: BTreeSet<String>,
    packages: BTreeSet<String>,
    exclude: Option<Regex>,
    include: Option<Regex>,
    verifier: Option<Verifier>,
    out: std::io::BufWriter<std::io::Stdout>,
    bad_log: LogLimiter,
    /// `--raw`: no escaping of control characters.
    raw: bool,
}

impl Printer {
    fn new(args: &Args, loaded: &Loaded) -> anyhow::Result<Printer> {
        let regex = |flag: &str, re: &str| {
            Regex::new(re).with_context(|| format!("{flag}: invalid regular expression {re:?}"))
        };
        let exclude = match args.exclude.as_str() {
            "" => None,
            re => Some(regex("--exclude", re)?),
        };
        let include = args
            .include
            .as_deref()
            .map(|re| regex("--include", re))
            .transpose()?;
        // fedmsg's tail reads a missing validate_signatures as false.
        let configured = loaded.config.validate_signatures
            && loaded.origin_of("validate_signatures") != Some("built-in defaults");
        let validate = if args.validate {
            true
        } else if args.no_validate {
            false
        } else {
            configured
        };
        let verifier =
            validate.then(|| Verifier::new(VerifierSettings::from_config(&loaded.config)));
        if let Some(Err(why)) = verifier.as_ref().map(Verifier::trust_status) {
            eprintln!("fedmsg-tail: warning: signatures cannot be checked: {why}");
        }
        let format = Format::of(args);
        let needs_meta =
            format == Format::Terse || !args.users.is_empty() || !args.packages.is_empty();
        let meta = if needs_meta {
            let (set, errors) =
                cli::meta_set(&loaded.config).context("the bundled meta rules do not load")?;
            for error in errors {
                eprintln!("fedmsg-tail: meta rule file skipped: {error}");
            }
            Some(set)
        } else {
            None
        };
        Ok(Printer {
            format,
            meta,
            users: args.users.iter().map(|u| u.trim().to_owned()).collect(),
            packages: args.packages.iter().map(|p| p.trim().to_owned()).collect(),
            exclude,
            include,
            verifier,
            out: std::io::BufWriter::new(std::io::stdout()),
            bad_log: LogLimiter::default(),
            raw: args.raw,
        })
    }

    /// Whether `--users`/`--packages` let the message through: as in
    /// fedmsg's tail, each one given must share an element with the
    /// message's fedmsg.meta set.
    fn wanted(&self, r: &Rendering) -> bool {
        (self.users.is_empty() || !self.users.is_disjoint(&r.usernames))
            && (self.packages.is_empty() || !self.packages.is_disjoint(&r.packages))
    }

    /// Prints one message if it passes; false when standard output is gone.
    fn handle(&mut self, source: &Arc<Source>, frames: Vec<Vec<u8>>, limits: &Limits) -> bool {
        let delivery = match ingest::classify(frames, source, limits) {
            Ok(delivery) => delivery,
            Err(reject) => {
                if let Some(suppressed) = self.bad_log.check() {
                    tracing::warn!(endpoint = %source.url, suppressed, "skipped a message: {reject}");
                }
                return true;
            }
        };
        if self
            .exclude
            .as_ref()
            .is_some_and(|re| re.is_match(&delivery.topic))
            || self
                .include
                .as_ref()
                .is_some_and(|re| !re.is_match(&delivery.topic))
        {
            return true;
        }
        let Ok(value) = fedmsg_wire::envelope::parse(delivery.body.as_bytes()) else {
            return true;
        };
        let signer = match &self.verifier {
            None => None,
            Some(verifier) => match verifier.verify(&value) {
                Verdict::Valid { signer } => Some(signer),
                Verdict::Invalid(rejection) => {
                    eprintln!(
                        "!! invalid message received: {rejection} (topic {}, msg_id {})",
                        peer_text::for_log(&delivery.topic),
                        peer_text::for_log(delivery.msg_id.as_deref().unwrap_or("-"))
                    );
                    return true;
                }
            },
        };
        let rendering = self
            .meta
            .as_ref()
            .map(|meta| meta.render(&value, localtime::now_epoch_f64()));
        if rendering.as_ref().is_some_and(|r| !self.wanted(r)) {
            return true;
        }
        let text = render(
            &self.format,
            &delivery,
            value,
            signer.as_deref(),
            rendering.as_ref(),
        );
        let text = if self.raw {
            Cow::Owned(text)
        } else {
            for_terminal(&self.format, text)
        };
        writeln!(self.out, "{text}")
            .and_then(|()| self.out.flush())
            .is_ok()
    }
}

/// `text` with the control characters a message brought escaped: all of
/// them for the one-line formats, all but the line breaks of the layout for
/// the multi-line ones (JSON strings cannot hold a raw line break, so every
/// one in `--pretty` output is the layout's; a topic's would be escaped by
/// `escape` in the one-line formats that print it).
fn for_terminal(format: &Format, text: String) -> Cow<'static, str> {
    let multi_line = matches!(format, Format::Pretty | Format::ReallyPretty { .. });
    if !multi_line {
        return Cow::Owned(peer_text::escape(&text).into_owned());
    }
    // The ANSI colours of `--really-pretty` are ours: there the message's
    // strings were escaped before colouring (`write_coloured`).
    if matches!(format, Format::ReallyPretty { colour: true }) {
        return Cow::Owned(text);
    }
    let escaped: String = text
        .split('\n')
        .map(|line| peer_text::escape(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    Cow::Owned(escaped)
}

/// The text printed for one message (without the final newline).
fn render(
    format: &Format,
    delivery: &Delivery,
    mut value: Value,
    signer: Option<&str>,
    meta: Option<&Rendering>,
) -> String {
    let signed = signer.map_or_else(String::new, |cn| format!("(signed by {cn}) "));
    let header = signer.map_or_else(String::new, |cn| format!("# signed by {cn}\n"));
    match format {
        Format::Json => one_line(&delivery.body).into_owned(),
        Format::Default => format!("{} {signed}{}", delivery.topic, one_line(&delivery.body)),
        Format::Pretty => {
            strip_credentials(&mut value);
            if let Some(epoch) = timestamp_of(&value) {
                if let Some(t) = localtime::local(epoch) {
                    value["timestamp"] = Value::String(t.ctime());
                }
            }
            format!("\n{header}{}", pretty(&value))
        }
        Format::ReallyPretty { colour } => {
            strip_credentials(&mut value);
            let text = if *colour {
                coloured(&value)
            } else {
                pretty(&value)
            };
            format!("\n{header}{text}")
        }
        Format::Terse => {
            let repr = meta.map_or_else(
                || format!("{} --  ", fedmsg_meta::default_title(&delivery.topic)),
                Rendering::repr,
            );
            // One line per message: a multi-line subtitle (a log message)
            // is folded; `fedmsg-meta render` keeps it exact.
            let repr = repr.replace(['\r', '\n'], " ");
            let tag = signer.map_or_else(String::new, |cn| format!(" [{cn}]"));
            format!("{repr}{tag}")
        }
        Format::Query(paths) => paths
            .iter()
            .map(|path| match lookup(&value, path) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "None".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The body on one line: as received unless it contains a line break.
fn one_line(body: &str) -> Cow<'_, str> {
    if !body.contains(['\n', '\r']) {
        return Cow::Borrowed(body);
    }
    match serde_json::from_str::<Value>(body) {
        Ok(value) => Cow::Owned(value.to_string()),
        Err(_) => Cow::Owned(body.replace(['\n', '\r'], " ")),
    }
}

/// fedmsg's `strip_credentials`: the signature and certificate are noise
/// for a reader.
fn strip_credentials(value: &mut Value) {
    if let Some(map) = value.as_object_mut() {
        map.remove("signature");
        map.remove("certificate");
    }
}

fn timestamp_of(value: &Value) -> Option<i64> {
    let number = value.get("timestamp")?.as_f64()?;
    // Truncation is what Python's ctime does with a float timestamp.
    number.is_finite().then_some(number as i64)
}

fn pretty(value: &Value) -> String {
    // Serializing a Value cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Dotted path lookup (`msg.log`); numeric segments index arrays.
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, segment| match v {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

// ANSI colours of --really-pretty on a terminal.
const KEY: &str = "\x1b[1;34m";
const STRING: &str = "\x1b[32m";
const NUMBER: &str = "\x1b[36m";
const LITERAL: &str = "\x1b[35m";
const RESET: &str = "\x1b[0m";

/// Indented JSON (serde_json's pretty layout) with ANSI colours.
fn coloured(value: &Value) -> String {
    let mut out = String::new();
    write_coloured(value, 0, &mut out);
    out
}

fn write_coloured(value: &Value, depth: usize, out: &mut String) {
    let pad = |n: usize| "  ".repeat(n);
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (key, item)) in map.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                let key = Value::String(key.clone()).to_string();
                out.push_str(&format!("{KEY}{}{RESET}: ", peer_text::escape(&key)));
                write_coloured(item, depth + 1, out);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                write_coloured(item, depth + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push(']');
        }
        // JSON escapes C0 controls but not DEL or C1 (0x9b is CSI, ESC [
        // on some terminals): escaped too, since ESC is ours here.
        Value::String(_) => out.push_str(&format!(
            "{STRING}{}{RESET}",
            peer_text::escape(&value.to_string())
        )),
        Value::Number(_) => out.push_str(&format!("{NUMBER}{value}{RESET}")),
        Value::Bool(_) | Value::Null => out.push_str(&format!("{LITERAL}{value}{RESET}")),
        // Empty object or array.
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn delivery(body: &Value) -> Delivery {
        Delivery {
            topic: body["topic"].as_str().unwrap_or_default().to_owned(),
            body: body.to_string(),
            msg_id: body["msg_id"].as_str().map(str::to_owned),
            timestamp: body["timestamp"].as_f64(),
            seq_id: None,
            source: Arc::new(Source {
                name: "n".into(),
                url: "tcp://127.0.0.1:1".into(),
            }),
            validated: false,
            signer: None,
        }
    }

    fn sample() -> Value {
        json!({
            "topic": "org.fedoraproject.dev.logger.log",
            "msg": {"log": "Hello\nworld"},
            "msg_id": "2025-abc",
            "timestamp": 1_393_878_837,
            "signature": "sig",
            "certificate": "cert",
            "crypto": "x509",
        })
    }

    #[test]
    fn json_and_default_print_the_body_as_received() {
        let value = sample();
        let d = delivery(&value);
        assert_eq!(render(&Format::Json, &d, value.clone(), None, None), d.body);
        assert_eq!(
            render(&Format::Default, &d, value, Some("shell-app01"), None),
            format!("{} (signed by shell-app01) {}", d.topic, d.body)
        );
    }

    #[test]
    fn a_multi_line_body_is_put_on_one_line() {
        assert_eq!(one_line("{\n  \"a\": 1\n}"), "{\"a\":1}");
        assert_eq!(one_line("{\"a\": 1}"), "{\"a\": 1}");
    }

    #[test]
    fn pretty_strips_credentials_and_dates_the_timestamp() {
        let value = sample();
        let d = delivery(&value);
        let text = render(&Format::Pretty, &d, value, None, None);
        assert!(
            !text.contains("signature") && !text.contains("certificate"),
            "{text}"
        );
        assert!(text.contains("\"timestamp\": \""), "{text}");
        assert!(text.contains("2014"), "{text}");
        assert!(text.contains("\"crypto\": \"x509\""), "{text}");
    }

    #[test]
    fn really_pretty_colours_only_on_request() {
        let value = sample();
        let d = delivery(&value);
        let plain = render(
            &Format::ReallyPretty { colour: false },
            &d,
            value.clone(),
            None,
            None,
        );
        assert!(!plain.contains('\x1b'));
        assert!(plain.contains("\"timestamp\": 1393878837"), "{plain}");
        let colour = render(
            &Format::ReallyPretty { colour: true },
            &d,
            value,
            None,
            None,
        );
        assert!(colour.contains(KEY) && colour.contains(STRING), "{colour}");
        let stripped = colour
            .replace(KEY, "")
            .replace(STRING, "")
            .replace(NUMBER, "")
            .replace(LITERAL, "")
            .replace(RESET, "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn control_characters_of_a_message_never_reach_the_terminal() {
        // ESC [2J clears the screen; BEL rings; 0x9b is CSI; \n forges lines.
        let body = json!({"topic": "org.fedoraproject.dev.logger.log\n\u{1b}[2J",
                          "msg": {"log": "hi\u{7}\u{1b}]0;pwned\u{7}\u{9b}31m"}});
        let d = delivery(&body);
        for format in [
            Format::Default,
            Format::Json,
            Format::Pretty,
            Format::ReallyPretty { colour: false },
            Format::Terse,
            Format::Query(vec!["msg.log".into(), "topic".into()]),
        ] {
            let text = render(&format, &d, body.clone(), None, None);
            let shown = for_terminal(&format, text);
            assert!(
                !shown.contains(['\u{1b}', '\u{7}', '\u{9b}']),
                "{format:?}: {shown:?}"
            );
        }
        // Colours are ours; the message's own controls are still escaped.
        let shown = for_terminal(
            &Format::ReallyPretty { colour: true },
            render(
                &Format::ReallyPretty { colour: true },
                &d,
                body.clone(),
                None,
                None,
            ),
        );
        assert!(shown.contains("\u{1b}[32m"), "our colours stay");
        assert!(
            !shown.contains("\u{1b}]0;") && !shown.contains('\u{9b}'),
            "{shown:?}"
        );
        // One-line formats stay one line.
        let shown = for_terminal(
            &Format::Default,
            render(&Format::Default, &d, body, None, None),
        );
        assert!(!shown.contains('\n'), "{shown:?}");
    }

    #[test]
    fn terse_is_fedmsg_meta_repr_on_one_line() {
        let mut value = sample();
        value["username"] = json!("ralph");
        let d = delivery(&value);
        let meta = MetaSet::bundled(&fedmsg_meta::default_topic_prefix_re("org.fedoraproject"))
            .expect("rules");
        let r = meta.render(&value, 0.0);
        let text = render(&Format::Terse, &d, value, Some("shell-app01"), Some(&r));
        assert_eq!(text, "logger.log -- Hello world (ralph)  [shell-app01]");
        // Unknown topics: fedmsg.meta's fallback.
        let other = json!({"topic": "org.fedoraproject.prod.nobody.knows", "msg": {}});
        let r = meta.render(&other, 0.0);
        let text = render(&Format::Terse, &delivery(&other), other, None, Some(&r));
        assert_eq!(text, "nobody.knows --  ");
    }

    #[test]
    fn users_and_packages_filter_by_fedmsg_meta() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sources = fedmsg_wire::config::Sources {
            config_dirs: vec![dir.path().to_path_buf()],
            ..Default::default()
        };
        let loaded = fedmsg_wire::config::Config::load_from(&sources).expect("loads");
        let printer = |flags: &[&str]| {
            let args =
                Args::parse_from(std::iter::once("fedmsg-tail").chain(flags.iter().copied()));
            Printer::new(&args, &loaded).expect("printer")
        };
        let tag = json!({"topic": "org.fedoraproject.prod.buildsys.tag",
            "msg": {"name": "stage", "version": "1", "release": "1", "tag": "f40",
                    "owner": "ralph", "user": "bodhi"}});
        let plain = printer(&[]);
        assert!(plain.meta.is_none(), "no meta without --terse or a filter");
        let users = printer(&["--users", "nobody,bodhi"]);
        let r = users.meta.as_ref().expect("meta").render(&tag, 0.0);
        assert!(users.wanted(&r));
        assert!(!printer(&["--users", "nobody"]).wanted(&r));
        assert!(printer(&["--packages", "stage"]).wanted(&r));
        assert!(!printer(&["--users", "ralph", "--packages", "kernel"]).wanted(&r));
    }

    #[test]
    fn validation_follows_the_configured_key_and_the_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let load = |toml: &str| {
            std::fs::write(dir.path().join("a.toml"), toml).expect("write");
            let sources = fedmsg_wire::config::Sources {
                config_dirs: vec![dir.path().to_path_buf()],
                ..Default::default()
            };
            fedmsg_wire::config::Config::load_from(&sources).expect("loads")
        };
        let validates = |loaded: &Loaded, flags: &[&str]| {
            let args =
                Args::parse_from(std::iter::once("fedmsg-tail").chain(flags.iter().copied()));
            Printer::new(&args, loaded)
                .expect("printer")
                .verifier
                .is_some()
        };
        // fedmsg's tail: an absent key means no validation (our default is true).
        let absent = load("");
        assert!(!validates(&absent, &[]));
        assert!(validates(&absent, &["--validate"]));
        let on = load("validate_signatures = true\n");
        assert!(validates(&on, &[]));
        assert!(!validates(&on, &["--no-validate"]));
    }

    #[test]
    fn query_prints_dotted_paths() {
        let value = sample();
        let d = delivery(&value);
        let format = Format::Query(vec!["msg.log".into(), "timestamp".into(), "nope".into()]);
        assert_eq!(
            render(&format, &d, value, None, None),
            "Hello\nworld, 1393878837, None"
        );
    }
}
