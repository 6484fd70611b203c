//! `datanommer`: read the message store the datanommer plugin writes.
//!
//! ```text
//! datanommer [--url URL] [--config-dir DIR]... stats [--topic] [--category C]
//! datanommer ... latest [--topic T | --category C | --overall] [--timestamp]
//! datanommer ... dump [--since T] [--until T]
//! ```
//!
//! The database is `--url`, else `datanommer.url` of the hub's
//! configuration (`/etc/fedmsg.d/*.toml` then `./fedmsg.d/*.toml`, or the
//! `--config-dir`s; `FEDMSG_DATANOMMER__URL` wins), else the plugin's
//! default SQLite file under the configured `state_dir`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use fedmsg_datanommer::store::{GroupBy, Order, Query};
use fedmsg_datanommer::{time, DbUrl, Store};
use serde_json::{Map, Value};

/// Reads the datanommer message store (SQLite or PostgreSQL).
#[derive(Parser)]
#[command(name = "datanommer", version)]
struct Cli {
    /// Database URL: sqlite:///PATH (sqlite:////abs/path) or
    /// postgresql://USER@HOST:PORT/DB. Default: from the hub configuration.
    #[arg(long, global = true)]
    url: Option<String>,
    /// Hub configuration directory (repeatable); default /etc/fedmsg.d
    /// then ./fedmsg.d.
    #[arg(long = "config-dir", global = true)]
    config_dirs: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Message counts per category (or per topic), largest first, like
    /// datanommer-stats: "<category> has <N> entries".
    Stats {
        /// Count per topic instead of per category.
        #[arg(long)]
        topic: bool,
        /// Only this category.
        #[arg(long)]
        category: Option<String>,
    },
    /// The latest message (by timestamp): of each category by default, as
    /// a JSON list of {"<category>": message}.
    Latest {
        /// The latest of this topic.
        #[arg(long, conflicts_with_all = ["category", "overall"])]
        topic: Option<String>,
        /// The latest of this category.
        #[arg(long, conflicts_with = "overall")]
        category: Option<String>,
        /// The single latest message.
        #[arg(long)]
        overall: bool,
        /// Print only the timestamps (float epoch seconds).
        #[arg(long)]
        timestamp: bool,
    },
    /// Messages between two times (inclusive), oldest first, one JSON
    /// object per line (datagrepper's message shape).
    Dump {
        /// Start: epoch seconds or UTC YYYY-MM-DD[THH:MM[:SS]].
        #[arg(long)]
        since: Option<String>,
        /// End: epoch seconds or UTC YYYY-MM-DD[THH:MM[:SS]].
        #[arg(long)]
        until: Option<String>,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("datanommer: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let url = match cli.url {
        Some(url) => url,
        None => url_from_config(&cli.config_dirs)?,
    };
    let url = DbUrl::parse(&url)?;
    let mut store =
        Store::open(&url, false).with_context(|| format!("cannot open {}", url.redacted()))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = match cli.command {
        Command::Stats { topic, category } => {
            let by = if topic {
                GroupBy::Topic
            } else {
                GroupBy::Category
            };
            for (name, n) in store.counts(by, category.as_deref())? {
                writeln!(out, "{name} has {n} entries")?;
            }
            Ok(())
        }
        Command::Latest {
            topic,
            category,
            overall,
            timestamp,
        } => latest(&mut store, &mut out, topic, category, overall, timestamp),
        Command::Dump { since, until } => {
            let query = Query {
                start: since
                    .as_deref()
                    .map(time::parse_user_time)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                end: until
                    .as_deref()
                    .map(time::parse_user_time)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                ..Query::default()
            };
            store.each_message(&query, &mut |m| -> Result<Option<()>> {
                serde_json::to_writer(&mut out, &m.to_datagrepper()?)?;
                out.write_all(b"\n")?;
                Ok(None)
            })?;
            Ok(())
        }
    };
    match result.and_then(|()| out.flush().map_err(Into::into)) {
        // `datanommer dump | head` is not an error.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn latest(
    store: &mut Store,
    out: &mut impl Write,
    topic: Option<String>,
    category: Option<String>,
    overall: bool,
    timestamp_only: bool,
) -> Result<()> {
    let newest = Query {
        order: Order::Desc,
        limit: Some(1),
        ..Query::default()
    };
    let queries: Vec<Query> = if let Some(topic) = topic {
        vec![Query {
            topics: vec![topic],
            ..newest
        }]
    } else if let Some(category) = category {
        vec![Query {
            categories: vec![category],
            ..newest
        }]
    } else if overall {
        vec![newest]
    } else {
        store
            .categories()?
            .into_iter()
            .map(|c| Query {
                categories: vec![c],
                ..newest.clone()
            })
            .collect()
    };
    let mut items = Vec::new();
    for query in &queries {
        for message in store.messages(query)? {
            items.push(if timestamp_only {
                fedmsg_datanommer::store::float(time::to_epoch_secs(message.timestamp))
            } else {
                let mut item = Map::new();
                item.insert(message.category.clone(), message.to_datagrepper()?);
                Value::Object(item)
            });
        }
    }
    serde_json::to_writer_pretty(&mut *out, &items)?;
    writeln!(out)?;
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `datanommer.url` from the hub's TOML configuration (later files win),
/// else the plugin's default SQLite file under `state_dir`.
fn url_from_config(dirs: &[PathBuf]) -> Result<String> {
    let defaults = [PathBuf::from("/etc/fedmsg.d"), PathBuf::from("fedmsg.d")];
    let dirs = if dirs.is_empty() { &defaults[..] } else { dirs };
    let mut url: Option<String> = None;
    let mut state_dir = PathBuf::from("/var/lib/fedmsg-hub");
    for dir in dirs {
        for file in toml_files(dir)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let table: toml::Table = text
                .parse()
                .with_context(|| format!("{} is not valid TOML", file.display()))?;
            let section = table.get("datanommer");
            let found = section
                .and_then(|s| s.get("url"))
                .or_else(|| {
                    section
                        .and_then(|s| s.get("sqlalchemy"))
                        .and_then(|s| s.get("url"))
                })
                .or_else(|| table.get("datanommer.url"));
            if let Some(found) = found {
                url = Some(
                    found
                        .as_str()
                        .context("datanommer.url must be a string")?
                        .to_owned(),
                );
            }
            if let Some(dir) = table.get("state_dir") {
                state_dir = dir.as_str().context("state_dir must be a string")?.into();
            }
        }
    }
    if let Ok(env) = std::env::var("FEDMSG_STATE_DIR") {
        state_dir = env.into();
    }
    if let Ok(env) = std::env::var("FEDMSG_DATANOMMER__URL") {
        url = Some(env);
    }
    Ok(url.unwrap_or_else(|| {
        format!(
            "sqlite:///{}",
            state_dir
                .join("fedmsg-datanommer")
                .join("datanommer.db")
                .display()
        )
    }))
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => bail!("cannot read {}: {e}", dir.display()),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}
