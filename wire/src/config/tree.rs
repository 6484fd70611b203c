//! The merged configuration tree, with the origin of every value.
//!
//! Every layer (built-in defaults, each file, each environment variable, each
//! `--set`) is turned into a tree of [`Node`]s that remember where they came
//! from. Layers are merged the way fedmsg merges its `config` dicts: tables
//! merge key by key, recursively; anything else (scalars, arrays) replaces.
//! Keeping the origin on every node is what lets a type error name the file,
//! environment variable or `--set` argument that supplied the bad value.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Where a value came from, as shown to the operator (a file path,
/// `environment variable FEDMSG_X`, `--set x=y`, `built-in defaults`).
pub(crate) type Origin = Arc<str>;

/// A table of the tree.
pub(crate) type Table = BTreeMap<String, Node>;

/// One value of the tree and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// The layer that supplied this value.
    pub origin: Origin,
    /// The value itself.
    pub kind: Kind,
}

/// The TOML data model (datetimes are kept as their text, because nothing in
/// fedmsg's configuration is a datetime and JSON has none).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Node>),
    Table(Table),
}

impl Node {
    /// A node with the given origin.
    pub fn new(origin: &Origin, kind: Kind) -> Self {
        Node {
            origin: Arc::clone(origin),
            kind,
        }
    }

    /// Converts a parsed TOML value, tagging every node with `origin`.
    pub fn from_toml(value: toml::Value, origin: &Origin) -> Self {
        let kind = match value {
            toml::Value::String(s) => Kind::Str(s),
            toml::Value::Integer(i) => Kind::Int(i),
            toml::Value::Float(f) => Kind::Float(f),
            toml::Value::Boolean(b) => Kind::Bool(b),
            toml::Value::Datetime(d) => Kind::Str(d.to_string()),
            toml::Value::Array(items) => Kind::Array(
                items
                    .into_iter()
                    .map(|v| Node::from_toml(v, origin))
                    .collect(),
            ),
            toml::Value::Table(table) => Kind::Table(table_from_toml(table, origin)),
        };
        Node::new(origin, kind)
    }

    /// Converts a JSON value (used for the built-in defaults). JSON `null`
    /// has no TOML spelling: it becomes `None`, and nulls inside tables and
    /// arrays are dropped, so an unset `Option` default is simply absent.
    pub fn from_json(value: &serde_json::Value, origin: &Origin) -> Option<Self> {
        let kind = match value {
            serde_json::Value::Null => return None,
            serde_json::Value::Bool(b) => Kind::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Kind::Int(i),
                None => Kind::Float(n.as_f64()?),
            },
            serde_json::Value::String(s) => Kind::Str(s.clone()),
            serde_json::Value::Array(items) => Kind::Array(
                items
                    .iter()
                    .filter_map(|v| Node::from_json(v, origin))
                    .collect(),
            ),
            serde_json::Value::Object(map) => Kind::Table(
                map.iter()
                    .filter_map(|(k, v)| Some((k.clone(), Node::from_json(v, origin)?)))
                    .collect(),
            ),
        };
        Some(Node::new(origin, kind))
    }

    /// The tree as JSON (what plugins and `fedmsg-config` see).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.kind {
            Kind::Bool(b) => serde_json::Value::Bool(*b),
            Kind::Int(i) => serde_json::Value::from(*i),
            // NaN/inf have no JSON spelling; validation rejects them for the
            // typed keys, and a plugin's own key gets `null`.
            Kind::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Kind::Str(s) => serde_json::Value::String(s.clone()),
            Kind::Array(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Kind::Table(table) => serde_json::Value::Object(
                table
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The table inside this node, if it is one.
    pub fn as_table(&self) -> Option<&Table> {
        match &self.kind {
            Kind::Table(t) => Some(t),
            _ => None,
        }
    }

    /// Wraps `self` in tables named by `path` (outermost first), all tagged
    /// with `self`'s origin: `["a", "b"]` + `1` is `{a = {b = 1}}`.
    pub fn nest(self, path: &[String]) -> Self {
        path.iter().rev().fold(self, |inner, key| {
            let origin = Arc::clone(&inner.origin);
            let mut table = Table::new();
            table.insert(key.clone(), inner);
            Node {
                origin,
                kind: Kind::Table(table),
            }
        })
    }
}

/// Converts a parsed TOML table, tagging every node with `origin`.
pub(crate) fn table_from_toml(table: toml::Table, origin: &Origin) -> Table {
    table
        .into_iter()
        .map(|(k, v)| (k, Node::from_toml(v, origin)))
        .collect()
}

/// Merges `src` into `dst`: tables merge recursively, everything else in
/// `src` replaces what `dst` had (fedmsg's rule for its config dicts).
pub(crate) fn merge(dst: &mut Table, src: Table) {
    for (key, incoming) in src {
        match dst.get_mut(&key) {
            Some(Node {
                kind: Kind::Table(existing),
                ..
            }) if matches!(incoming.kind, Kind::Table(_)) => {
                if let Kind::Table(inner) = incoming.kind {
                    merge(existing, inner);
                }
            }
            _ => {
                dst.insert(key, incoming);
            }
        }
    }
}

/// Rewrites dotted top-level keys into nested tables, the way fedmsg's
/// flat keys map to TOML: `"datanommer.enabled" = true` becomes
/// `[datanommer] enabled = true`. Only the top level is rewritten, because
/// below it dots are data (endpoint names such as `bodhi.app01`, certname
/// keys such as `shell.host`).
///
/// `moksha.monitoring.socket.mode` is special: in fedmsg it sits next to
/// `moksha.monitoring.socket`, which is a string, so it cannot become a
/// sub-key of it; it becomes `moksha.monitoring.socket_mode`.
pub(crate) fn nest_dotted_top_level(table: Table) -> Table {
    let mut out = Table::new();
    for (key, node) in table {
        if !key.contains('.') {
            merge(&mut out, Table::from([(key, node)]));
            continue;
        }
        let mut path: Vec<String> = key.split('.').map(str::to_owned).collect();
        if path == ["moksha", "monitoring", "socket", "mode"] {
            path = vec!["moksha".into(), "monitoring".into(), "socket_mode".into()];
        }
        // A key like `a..b` or `.a` has an empty segment: keep it verbatim
        // rather than invent tables named "" (it will be reported unknown).
        if path.iter().any(String::is_empty) {
            merge(&mut out, Table::from([(key, node)]));
            continue;
        }
        let (first, rest) = path.split_at(1);
        merge(&mut out, Table::from([(first[0].clone(), node.nest(rest))]));
    }
    out
}

/// Finds the node at `dotted`, with the precedence every side of the hub
/// shares ([`fedmsg_config_keys`]: literal key first, then the longest
/// first part), so that "where did this value come from" names the value
/// the hub and the plugins actually read.
pub(crate) fn lookup<'a>(table: &'a Table, dotted: &str) -> Option<&'a Node> {
    fedmsg_config_keys::find_in(table, dotted, &|t: &'a Table, k| t.get(k), &Node::as_table)
}

/// Converts JSON to TOML for printing. `null` has no TOML spelling and is
/// dropped.
pub(crate) fn json_to_toml(value: &serde_json::Value) -> Option<toml::Value> {
    Some(match value {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => toml::Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        serde_json::Value::String(s) => toml::Value::String(s.clone()),
        serde_json::Value::Array(items) => {
            toml::Value::Array(items.iter().filter_map(json_to_toml).collect())
        }
        serde_json::Value::Object(map) => toml::Value::Table(
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), json_to_toml(v)?)))
                .collect(),
        ),
    })
}
