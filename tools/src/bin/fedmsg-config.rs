//! `fedmsg-config`: prints the merged configuration, one key of it, or
//! converts a Python `fedmsg.d/` directory to TOML.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use fedmsg_tools::cli::{self, CommonArgs};
use fedmsg_wire::config::ConfigArgs;
use serde_json::Value;

/// Print the merged fedmsg configuration, or one key of it.
///
/// Without options, prints the whole configuration (built-in defaults and
/// every layer merged) as TOML, or as JSON with `--format json`. With
/// `--query KEY` prints only that key: a string as is, a list one item per
/// line, anything else in the chosen format; a missing key prints
/// "Key `KEY` does not exist in config" and exits with status 1.
///
/// `--import-python DIR` converts an existing Python fedmsg.d/ directory
/// (files that define `config = dict(...)`) to TOML: each `*.py` file is
/// evaluated by python3 (so computed values, such as a host name, are
/// evaluated on this machine, now), and the result is printed as one merged
/// TOML document, or written as one `<name>.toml` per Python file into the
/// `--output` directory. Top-level dotted keys (`"datanommer.enabled"`)
/// become tables, `moksha.monitoring.socket.mode` becomes
/// `[moksha.monitoring] socket_mode`; `None` values are left out, and
/// values TOML cannot hold are reported on standard error.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    common: CommonArgs,
    /// Print only the value of this dotted key (e.g. `endpoints`,
    /// `moksha.monitoring.socket`); exit 1 if it is absent.
    #[arg(long, value_name = "KEY")]
    query: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Toml)]
    format: Format,
    /// Convert the Python fedmsg.d directory DIR to TOML instead.
    #[arg(long, value_name = "DIR")]
    import_python: Option<PathBuf>,
    /// With --import-python: write one TOML file per Python file into this
    /// directory (created if needed) instead of printing one document.
    #[arg(long, value_name = "DIR", requires = "import_python")]
    output: Option<PathBuf>,
    /// The Python interpreter that evaluates the files for --import-python.
    #[arg(long, value_name = "PATH", default_value = "python3")]
    python: PathBuf,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// TOML, the hub's configuration format.
    Toml,
    /// Indented JSON, like fedmsg's fedmsg-config.
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    fedmsg_wire::logging::init(None, "warn");
    match run(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("fedmsg-config: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.import_python {
        import_python(dir, args.output.as_deref(), &args.python)?;
        return Ok(ExitCode::SUCCESS);
    }
    let loaded = cli::load(&args.config, &args.common).context("cannot load the configuration")?;
    let config = loaded.config;
    if args.common.print_config {
        println!("{}", config.to_json_string());
        return Ok(ExitCode::SUCCESS);
    }
    let Some(key) = &args.query else {
        match args.format {
            Format::Toml => print!("{}", config.to_toml_string()?),
            Format::Json => println!("{}", config.to_json_string()),
        }
        return Ok(ExitCode::SUCCESS);
    };
    match config.subtree(key) {
        Value::Null => {
            eprintln!("Key `{key}` does not exist in config");
            Ok(ExitCode::FAILURE)
        }
        value => {
            println!("{}", query_text(&value, args.format)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// fedmsg's rule: a string raw, a list one item per line, anything else
/// formatted (TOML for a table in TOML mode).
fn query_text(value: &Value, format: Format) -> anyhow::Result<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Ok(match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join("\n"),
        Value::Object(_) if format == Format::Toml => {
            let mut warnings = Vec::new();
            let table = json_to_toml(value, "", &mut warnings)
                .and_then(|v| v.as_table().cloned())
                .unwrap_or_default();
            toml::to_string_pretty(&table)?.trim_end().to_owned()
        }
        Value::Object(_) => serde_json::to_string_pretty(value)?,
        other => other.to_string(),
    })
}

/// Evaluates every `*.py` of a directory with Python and prints what each
/// defines as `config`, as JSON: `[{"file", "config", "warnings"}, ...]`.
const EVALUATE: &str = r#"
import json, os, sys

def plain(value, path, warnings):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            name = key if isinstance(key, str) else str(key)
            if name is not key:
                warnings.append("%s: key %r written as the string %r" % (path or "config", key, name))
            out[name] = plain(item, path + "." + name if path else name, warnings)
        return out
    if isinstance(value, (list, tuple)):
        return [plain(item, "%s[%d]" % (path, i), warnings) for i, item in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return [plain(item, path, warnings) for item in sorted(value, key=repr)]
    warnings.append("%s: %s value %r written as a string" % (path, type(value).__name__, value))
    return repr(value)

results = []
directory = sys.argv[1]
for name in sorted(os.listdir(directory)):
    if not name.endswith(".py"):
        continue
    path = os.path.join(directory, name)
    scope = {"__file__": path, "__name__": "fedmsg_config_" + name[:-3]}
    with open(path) as source:
        exec(compile(source.read(), path, "exec"), scope)
    config = scope.get("config")
    if not isinstance(config, dict):
        results.append({"file": name, "error": "defines no dict named `config`"})
        continue
    warnings = []
    results.append({"file": name, "config": plain(config, "", warnings), "warnings": warnings})
json.dump(results, sys.stdout)
"#;

fn import_python(dir: &Path, output: Option<&Path>, python: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let run = Command::new(python)
        .arg("-c")
        .arg(EVALUATE)
        .arg(dir)
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !run.status.success() {
        bail!(
            "{} failed to evaluate {}:\n{}",
            python.display(),
            dir.display(),
            String::from_utf8_lossy(&run.stderr).trim_end()
        );
    }
    let files: Vec<Value> =
        serde_json::from_slice(&run.stdout).context("unexpected output from python")?;
    let mut merged = toml::Table::new();
    for file in &files {
        let name = file["file"].as_str().unwrap_or("?");
        if let Some(error) = file["error"].as_str() {
            eprintln!("fedmsg-config: {name}: {error}; skipped");
            continue;
        }
        for warning in file["warnings"].as_array().into_iter().flatten() {
            eprintln!("fedmsg-config: {name}: {}", warning.as_str().unwrap_or("?"));
        }
        let mut warnings = Vec::new();
        let table = convert_file(&file["config"], &mut warnings);
        for warning in &warnings {
            eprintln!("fedmsg-config: {name}: {warning}");
        }
        match output {
            Some(out) => write_toml(out, name, &dir.join(name), &table)?,
            None => merge(&mut merged, table),
        }
    }
    if output.is_none() {
        print!("{}", toml::to_string_pretty(&merged)?);
    }
    Ok(())
}

fn write_toml(out: &Path, name: &str, source: &Path, table: &toml::Table) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let stem = name.strip_suffix(".py").unwrap_or(name);
    let path = out.join(format!("{stem}.toml"));
    let text = format!(
        "# Converted from {} by fedmsg-config --import-python.\n\n{}",
        source.display(),
        toml::to_string_pretty(table)?
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("fedmsg-config: wrote {}", path.display());
    Ok(())
}

/// One file's `config` dict as a TOML table: top-level dotted keys split
/// into tables (as our loader would), `None`s dropped.
fn convert_file(config: &Value, warnings: &mut Vec<String>) -> toml::Table {
    let mut table = toml::Table::new();
    let Some(map) = config.as_object() else {
        return table;
    };
    for (key, value) in map {
        let Some(converted) = json_to_toml(value, key, warnings) else {
            continue;
        };
        let path = key_path(key);
        insert(&mut table, &path, converted, key, warnings);
    }
    table
}

/// `a.b.c` → `[a, b, c]`; moksha's `...socket.mode` (which cannot coexist
/// with `...socket` in TOML) is our `socket_mode`.
fn key_path(key: &str) -> Vec<String> {
    if key == "moksha.monitoring.socket.mode" {
        return ["moksha", "monitoring", "socket_mode"]
            .map(str::to_owned)
            .to_vec();
    }
    key.split('.').map(str::to_owned).collect()
}

fn insert(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
    key: &str,
    warnings: &mut Vec<String>,
) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(inner) => current = inner,
            _ => {
                warnings.push(format!(
                    "key {key:?} conflicts with the value of {part:?}; left out"
                ));
                return;
            }
        }
    }
    match (current.get_mut(last), value) {
        (Some(toml::Value::Table(existing)), toml::Value::Table(new)) => merge(existing, new),
        (_, value) => {
            current.insert(last.clone(), value);
        }
    }
}

/// fedmsg's recursive merge: tables merge, anything else is replaced.
fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(new)) => merge(existing, new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// A JSON value as TOML; `None` (and a warning) for what TOML cannot hold.
fn json_to_toml(value: &Value, path: &str, warnings: &mut Vec<String>) -> Option<toml::Value> {
    Some(match value {
        Value::Null => {
            warnings.push(format!("{path} is None: left out"));
            return None;
        }
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => number_to_toml(n, path, warnings),
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| json_to_toml(item, &format!("{path}[{i}]"), warnings))
                .collect(),
        ),
        Value::Object(map) => toml::Value::Table(
            map.iter()
                .filter_map(|(k, v)| {
                    let child = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    Some((k.clone(), json_to_toml(v, &child, warnings)?))
                })
                .collect(),
        ),
    })
}

fn number_to_toml(n: &serde_json::Number, path: &str, warnings: &mut Vec<String>) -> toml::Value {
    if let Some(i) = n.as_i64() {
        return toml::Value::Integer(i);
    }
    let text = n.to_string();
    let integral = !text.contains(['.', 'e', 'E']);
    match n.as_f64() {
        Some(f) if !integral => toml::Value::Float(f),
        _ => {
            warnings.push(format!(
                "{path} = {text} does not fit a TOML integer: written as a string"
            ));
            toml::Value::String(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_top_level_keys_become_tables() {
        let mut warnings = Vec::new();
        let table = convert_file(
            &json!({
                "counter.consumer.enabled": true,
                "counter.output": "/tmp/x",
                "moksha.monitoring.socket": "ipc:///tmp/m",
                "moksha.monitoring.socket.mode": "0770",
                "certnames": {"shell.vm": "shell-app01"},
                "crl_location": null,
                "endpoints": {"a": ["tcp://127.0.0.1:1"]},
            }),
            &mut warnings,
        );
        let text = toml::to_string_pretty(&table).expect("toml");
        let back: toml::Table = text.parse().expect("parses");
        assert_eq!(back["counter"]["consumer"]["enabled"].as_bool(), Some(true));
        assert_eq!(back["counter"]["output"].as_str(), Some("/tmp/x"));
        assert_eq!(
            back["moksha"]["monitoring"]["socket_mode"].as_str(),
            Some("0770")
        );
        assert_eq!(back["certnames"]["shell.vm"].as_str(), Some("shell-app01"));
        assert!(back.get("crl_location").is_none());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("crl_location"));
    }

    #[test]
    fn numbers_keep_their_kind() {
        let mut warnings = Vec::new();
        let big: Value = serde_json::from_str("123456789012345678901234567890").expect("json");
        assert_eq!(
            json_to_toml(&json!(0.5), "f", &mut warnings),
            Some(toml::Value::Float(0.5))
        );
        assert_eq!(
            json_to_toml(&json!(3), "i", &mut warnings),
            Some(toml::Value::Integer(3))
        );
        assert!(matches!(
            json_to_toml(&big, "big", &mut warnings),
            Some(toml::Value::String(_))
        ));
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn later_files_merge_over_earlier_ones() {
        let mut merged: toml::Table = "[endpoints]\na = [\"x\"]\n[other]\nk = 1\n"
            .parse()
            .expect("toml");
        let later: toml::Table = "[endpoints]\nb = [\"y\"]\n[other]\nk = 2\n"
            .parse()
            .expect("toml");
        merge(&mut merged, later);
        assert_eq!(
            merged["endpoints"].as_table().map(toml::Table::len),
            Some(2)
        );
        assert_eq!(merged["other"]["k"].as_integer(), Some(2));
    }

    #[test]
    fn queries_print_like_fedmsg() {
        assert_eq!(
            query_text(&json!("tcp://x"), Format::Toml).expect("ok"),
            "tcp://x"
        );
        assert_eq!(
            query_text(&json!(["a", 1]), Format::Json).expect("ok"),
            "a\n1"
        );
        assert_eq!(query_text(&json!(true), Format::Toml).expect("ok"), "true");
        let table = query_text(&json!({"relay_outbound": ["tcp://x"]}), Format::Toml).expect("ok");
        assert_eq!(table, "relay_outbound = [\"tcp://x\"]");
        let json_text = query_text(&json!({"a": 1}), Format::Json).expect("ok");
        assert_eq!(json_text, "{\n  \"a\": 1\n}");
    }
}
