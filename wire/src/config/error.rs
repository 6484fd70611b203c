//! Errors of configuration loading. Every variant names where the problem
//! is (file, environment variable or `--set` argument) and, for values, the
//! key, because a bad configuration must stop the start with a message the
//! operator can act on without reading the source.

use std::path::PathBuf;

use super::de::{DeError, Problem};
use super::tree::{self, Table};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file or directory exists but could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A location named explicitly (`--config-dir`, `FEDMSG_CONFIG`) does not
    /// exist. Only the default directories may be missing silently: a typo in
    /// an explicit path must not start the hub with the defaults.
    #[error("{}: no such file or directory (named by {named_by})", path.display())]
    Missing {
        /// The path that was named.
        path: PathBuf,
        /// `--config-dir` or `environment variable FEDMSG_CONFIG`.
        named_by: String,
    },

    /// A file is not valid TOML.
    #[error("{}: invalid TOML{}: {message}", path.display(), at(*line, *column))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error, when the parser reported a position.
        line: Option<usize>,
        /// 1-based column (in characters) of the error.
        column: Option<usize>,
        /// The TOML parser's message.
        message: String,
    },

    /// A `--set` argument is not `KEY=VALUE` with a valid TOML key.
    #[error("--set {arg}: {reason}")]
    BadSet {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A value has the wrong type for its key.
    #[error("{origin}: key \"{key}\": expected {expected}, found {found}")]
    Type {
        /// The file, `environment variable FEDMSG_X`, or `--set x=y`.
        origin: String,
        /// The dotted key (array items as `key[n]`).
        key: String,
        /// The expected type, e.g. `an unsigned integer`.
        expected: String,
        /// The value found, e.g. `string "lots"`.
        found: String,
    },

    /// A value has the right type but is not acceptable.
    #[error("{origin}: key \"{key}\": {message}")]
    Invalid {
        /// The file, `environment variable FEDMSG_X`, or `--set x=y`.
        origin: String,
        /// The dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },

    /// The merged configuration could not be printed.
    #[error("cannot serialize the configuration: {0}")]
    Serialize(String),
}

fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" at line {line}, column {column}"),
        (Some(line), None) => format!(" at line {line}"),
        _ => String::new(),
    }
}

impl ConfigError {
    /// Builds a [`ConfigError::Parse`] from the TOML parser's error, turning
    /// its byte span into a line and column.
    pub(crate) fn parse(path: PathBuf, text: &str, error: &toml::de::Error) -> Self {
        let (line, column) = match error.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError::Parse {
            path,
            line,
            column,
            message: error.message().trim_end().to_owned(),
        }
    }

    /// Places a deserialization error: its key, and the origin of the value
    /// (looked up in the tree when the error did not record it).
    pub(crate) fn from_de(error: DeError, tree: &Table) -> Self {
        let key = error.key.unwrap_or_default();
        let origin = error.origin.unwrap_or_else(|| origin_of(tree, &key));
        match error.problem {
            Problem::Type { expected, found } => ConfigError::Type {
                origin,
                key,
                expected,
                found,
            },
            Problem::Message(message) => ConfigError::Invalid {
                origin,
                key,
                message,
            },
        }
    }
}

/// The origin of the value at `key` (`a.b[2].c` syntax), or of its nearest
/// existing ancestor.
pub(crate) fn origin_of(tree: &Table, key: &str) -> String {
    // Array indices do not matter for the origin: a whole array always
    // comes from one layer.
    let without_indices: String = {
        let mut out = String::with_capacity(key.len());
        let mut depth = 0usize;
        for c in key.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                _ if depth == 0 => out.push(c),
                _ => {}
            }
        }
        out
    };
    let mut prefix = without_indices.as_str();
    loop {
        if let Some(node) = tree::lookup(tree, prefix) {
            return node.origin.to_string();
        }
        match prefix.rfind('.') {
            Some(dot) => prefix = &prefix[..dot],
            None => break,
        }
    }
    "configuration".into()
}

/// 1-based line and column (in characters) of byte offset `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
