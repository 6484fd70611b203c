//! The layers of the configuration: files, environment, `--set`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::ConfigError;
use super::tree::{self, Kind, Node, Origin, Table};

/// The environment variable naming a config file or directory that replaces
/// the default directories (like fedmsg's newer loader). It is not a key.
pub const FEDMSG_CONFIG: &str = "FEDMSG_CONFIG";

/// The prefix of environment variables that set keys.
pub const ENV_PREFIX: &str = "FEDMSG_";

/// The directories read when nothing else is named, in order.
pub const DEFAULT_DIRS: [&str; 2] = ["/etc/fedmsg.d", "./fedmsg.d"];

/// Command-line options shared by every binary (`#[command(flatten)]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ConfigArgs {
    /// Read the configuration from DIR (a directory of *.toml files, or a
    /// single file) instead of /etc/fedmsg.d and ./fedmsg.d. Repeatable; read
    /// in the order given.
    #[arg(long = "config-dir", value_name = "DIR")]
    pub config_dir: Vec<PathBuf>,

    /// Override one key, after files and environment: KEY=VALUE. Dotted keys
    /// make tables (datanommer.enabled=true); quote keys that contain dots
    /// (endpoints."bodhi.app01"=tcp://...). VALUE is read as TOML (true, 5,
    /// 0.5, ["a", "b"], {a = 1}) and otherwise taken as a string. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Everything the loader reads, gathered up front so that tests can supply an
/// environment without touching the process's. `Sources::default()` reads
/// no file, no environment and no `--set`: only the built-in defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// The default search path: directories of `*.toml` (or single files),
    /// read in order; missing ones are skipped. Used only when neither
    /// `config_dirs` nor `FEDMSG_CONFIG` names something else.
    pub dirs: Vec<PathBuf>,
    /// Explicit locations (`--config-dir`): replace `dirs` and
    /// `FEDMSG_CONFIG`; each must exist.
    pub config_dirs: Vec<PathBuf>,
    /// Environment variables. Only `FEDMSG_*` ones are looked at; see
    /// [`Config::load_from`](super::Config::load_from) for which become keys.
    pub env: Vec<(String, String)>,
    /// `--set KEY=VALUE` arguments, in order.
    pub sets: Vec<String>,
}

impl Sources {
    /// The sources of a normal start: default directories, the process
    /// environment, and the command line.
    pub fn from_args(args: &ConfigArgs) -> Self {
        Sources {
            dirs: DEFAULT_DIRS.iter().map(PathBuf::from).collect(),
            config_dirs: args.config_dir.clone(),
            env: process_env(),
            sets: args.set.clone(),
        }
    }

    /// The locations to read and whether each must exist, after applying
    /// `--config-dir` and `FEDMSG_CONFIG`. `--config-dir` wins over
    /// `FEDMSG_CONFIG` because the command line overrides the environment
    /// everywhere else too.
    pub(crate) fn locations(&self) -> Vec<(PathBuf, Option<String>)> {
        if !self.config_dirs.is_empty() {
            return self
                .config_dirs
                .iter()
                .map(|d| (d.clone(), Some("--config-dir".to_owned())))
                .collect();
        }
        let named = self
            .env
            .iter()
            .rev()
            .find(|(name, value)| name == FEDMSG_CONFIG && !value.is_empty());
        if let Some((_, value)) = named {
            return vec![(
                PathBuf::from(value),
                Some(format!("environment variable {FEDMSG_CONFIG}")),
            )];
        }
        self.dirs.iter().map(|d| (d.clone(), None)).collect()
    }
}

/// The `FEDMSG_*` variables of this process. Variables whose name or value is
/// not UTF-8 cannot be config keys and are skipped.
fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect()
}

/// The `*.toml` files of one location, sorted by name. A file location is
/// returned as is. Hidden files are skipped: editors leave `.#x.toml` lock
/// links and `.x.toml.swp` files in watched directories.
pub(crate) fn files_of(
    location: &Path,
    named_by: Option<&str>,
) -> Result<Vec<PathBuf>, ConfigError> {
    let metadata = match std::fs::metadata(location) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match named_by {
                None => Ok(Vec::new()),
                Some(named_by) => Err(ConfigError::Missing {
                    path: location.to_owned(),
                    named_by: named_by.to_owned(),
                }),
            };
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: location.to_owned(),
                source,
            })
        }
    };
    if !metadata.is_dir() {
        return Ok(vec![location.to_owned()]);
    }
    let read_err = |source| ConfigError::Read {
        path: location.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(location).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let visible = name.as_deref().is_some_and(|n| !n.starts_with('.'));
        let toml = path.extension().is_some_and(|e| e == "toml");
        // `is_file` follows symlinks, so a linked file counts and a linked
        // directory does not.
        if visible && toml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Python config files (`*.py`) in a location: fedmsg's format, which this
/// hub cannot read. Reported so the operator learns why they are ignored.
pub(crate) fn python_files_of(location: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(location) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "py") && p.is_file())
        .collect();
    files.sort();
    files
}

/// Reads and parses one file into a layer.
pub(crate) fn read_file(path: &Path) -> Result<Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| ConfigError::parse(path.to_owned(), &text, &e))?;
    let origin: Origin = Arc::from(path.display().to_string());
    Ok(tree::nest_dotted_top_level(tree::table_from_toml(
        table, &origin,
    )))
}

/// Reads a value given as text (environment, `--set`): as TOML when it
/// parses (`true`, `5`, `0.5`, `"quoted"`, `["a"]`, `{a = 1}`), else as the
/// string itself, so `tcp://127.0.0.1:2003` needs no quotes.
///
/// Bare `inf`/`nan` stay strings: they are valid TOML floats, but someone
/// typing them means a word far more often than a float.
pub(crate) fn parse_value_text(text: &str, origin: &Origin) -> Node {
    let as_string = || Node::new(origin, Kind::Str(text.to_owned()));
    // A newline would let the text define further keys.
    if text.contains(['\n', '\r']) {
        return as_string();
    }
    let bare = text.trim().trim_start_matches(['+', '-']);
    if bare == "inf" || bare == "nan" {
        return as_string();
    }
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut table) if table.len() == 1 => match table.remove("v") {
            Some(value) => Node::from_toml(value, origin),
            None => as_string(),
        },
        _ => as_string(),
    }
}

/// The key path of one environment variable: `FEDMSG_DATANOMMER__ENABLED`
/// → `["datanommer", "enabled"]`. `None` when the variable is not ours or
/// a segment is empty.
pub(crate) fn env_key_path(name: &str) -> Option<Vec<String>> {
    if name == FEDMSG_CONFIG {
        return None;
    }
    let rest = name.strip_prefix(ENV_PREFIX)?;
    let path: Vec<String> = rest
        .to_ascii_lowercase()
        .split("__")
        .map(str::to_owned)
        .collect();
    if path.iter().any(String::is_empty) {
        return None;
    }
    Some(path)
}

/// Turns one `--set KEY=VALUE` into a layer.
pub(crate) fn parse_set(arg: &str) -> Result<Table, ConfigError> {
    let bad = |reason: &str| ConfigError::BadSet {
        arg: arg.to_owned(),
        reason: reason.to_owned(),
    };
    if arg.contains(['\n', '\r']) {
        return Err(bad("must be a single line"));
    }
    let (key, value) = split_set(arg).ok_or_else(|| bad("expected KEY=VALUE"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(bad("the key is empty"));
    }
    let path = toml_key_path(key).ok_or_else(|| {
        bad("the key is not a TOML key (quote segments that contain dots or spaces)")
    })?;
    let origin: Origin = Arc::from(format!("--set {arg}"));
    let node = parse_value_text(value, &origin).nest(&path[1..]);
    let layer = Table::from([(path[0].clone(), node)]);
    // A quoted dotted top-level key means the same as in a file.
    Ok(tree::nest_dotted_top_level(layer))
}

/// Splits at the first `=` outside TOML quotes.
fn split_set(arg: &str) -> Option<(&str, &str)> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in arg.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '=' => return Some((&arg[..i], &arg[i + 1..])),
            None => {}
        }
    }
    None
}

/// The segments of a TOML key (`a.b`, `a."b.c"`), using the TOML parser so
/// that quoting works exactly as in files.
fn toml_key_path(key: &str) -> Option<Vec<String>> {
    let table: toml::Table = toml::from_str(&format!("{key} = 0")).ok()?;
    let mut path = Vec::new();
    let mut current = &table;
    loop {
        if current.len() != 1 {
            return None;
        }
        let (name, value) = current.iter().next()?;
        path.push(name.clone());
        match value {
            toml::Value::Table(inner) => current = inner,
            toml::Value::Integer(0) => return Some(path),
            _ => return None,
        }
    }
}
