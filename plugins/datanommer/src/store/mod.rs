//! The message store: datanommer's schema in SQLite or PostgreSQL, batch
//! inserts, and the queries behind `/raw` and the `datanommer` command.

mod postgres;
mod schema;
mod sqlite;

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::row::Row;
use crate::time;

pub use self::postgres::PgStore;
pub use self::sqlite::SqliteStore;

/// What `source_version` stored messages carry (datagrepper returns it).
pub const SOURCE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL cannot be used.
    #[error("bad database URL `{url}`: {reason}")]
    BadUrl {
        /// The URL (password hidden).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An error from SQLite.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// An error from PostgreSQL (or the connection to it).
    #[error("PostgreSQL: {}", postgres::describe(.0))]
    Postgres(#[from] ::postgres::Error),
    /// A stored row that cannot be served (e.g. `_msg` is not JSON).
    #[error("stored message {id} is unreadable: {reason}")]
    Corrupt {
        /// The row's `id`.
        id: i64,
        /// What is wrong.
        reason: String,
    },
}

impl StoreError {
    /// True when the error is caused by the data of a row (a value the
    /// database refuses), so retrying the same row cannot help; false for
    /// an unavailable, busy or broken database, which a retry may fix.
    pub fn is_row_error(&self) -> bool {
        match self {
            StoreError::BadUrl { .. } | StoreError::Corrupt { .. } => true,
            StoreError::Sqlite(e) => sqlite::is_row_error(e),
            StoreError::Postgres(e) => postgres::is_row_error(e),
        }
    }

    /// True when the statement was stopped by the deadline of
    /// [`Store::set_deadline`] (SQLite's progress handler interrupted it,
    /// or PostgreSQL's `statement_timeout` cancelled it). The connection
    /// is still good.
    pub fn is_timeout(&self) -> bool {
        match self {
            StoreError::Sqlite(e) => sqlite::is_timeout(e),
            StoreError::Postgres(e) => postgres::is_timeout(e),
            StoreError::BadUrl { .. } | StoreError::Corrupt { .. } => false,
        }
    }
}

/// Where the messages are: parsed from `datanommer.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// `sqlite:///relative/path`, `sqlite:////absolute/path` (SQLAlchemy's
    /// form: what follows `sqlite:///` is the path).
    Sqlite(PathBuf),
    /// `postgresql://user[:password]@host[:port]/database[?options]`
    /// (`postgres://` and SQLAlchemy's `postgresql+driver://` too).
    Postgres(String),
}

impl DbUrl {
    /// Parses a database URL.
    pub fn parse(url: &str) -> Result<DbUrl, StoreError> {
        let bad = |reason: &str| StoreError::BadUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB"))?;
        // SQLAlchemy names a driver after `+` (`postgresql+psycopg2`).
        let dialect = scheme.split('+').next().unwrap_or(scheme);
        match dialect {
            "sqlite" => {
                let path = rest
                    .strip_prefix('/')
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| {
                        bad("expected sqlite:///PATH (relative) or sqlite:////PATH (absolute)")
                    })?;
                Ok(DbUrl::Sqlite(PathBuf::from(path)))
            }
            "postgresql" | "postgres" => {
                if rest.is_empty() {
                    return Err(bad("no host"));
                }
                Ok(DbUrl::Postgres(format!("postgresql://{rest}")))
            }
            _ => Err(bad("unsupported database (use sqlite or postgresql)")),
        }
    }

    /// The URL for logs: a password is replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            DbUrl::Sqlite(path) => format!("sqlite:///{}", path.display()),
            DbUrl::Postgres(url) => redact(url),
        }
    }
}

/// Hides the password of `scheme://user:password@host`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// What one batch insert did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inserted {
    /// Rows written.
    pub inserted: usize,
    /// Indexes (into the batch) of the rows skipped because their `msg_id`
    /// was already stored (or came earlier in the same batch).
    pub duplicates: Vec<usize>,
}

/// Result order (by timestamp, then by `id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (datagrepper's default).
    Desc,
}

impl Order {
    fn sql(self) -> &'static str {
        match self {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        }
    }
}

/// A selection of stored messages. Lists are OR-ed within a kind and the
/// kinds AND-ed together (datagrepper's semantics); times are inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Earliest timestamp (µs), inclusive.
    pub start: Option<i64>,
    /// Latest timestamp (µs), inclusive.
    pub end: Option<i64>,
    /// Exact topics.
    pub topics: Vec<String>,
    /// Topics to leave out.
    pub not_topics: Vec<String>,
    /// Categories.
    pub categories: Vec<String>,
    /// Categories to leave out.
    pub not_categories: Vec<String>,
    /// Linked users.
    pub users: Vec<String>,
    /// Users whose messages are left out.
    pub not_users: Vec<String>,
    /// Linked packages.
    pub packages: Vec<String>,
    /// Packages whose messages are left out.
    pub not_packages: Vec<String>,
    /// Substrings of the payload's JSON text.
    pub contains: Vec<String>,
    /// Exact `msg_id`s.
    pub msg_ids: Vec<String>,
    /// Result order.
    pub order: Order,
    /// Most rows returned (`None`: all).
    pub limit: Option<u64>,
    /// Rows skipped first.
    pub offset: u64,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            start: None,
            end: None,
            topics: Vec::new(),
            not_topics: Vec::new(),
            categories: Vec::new(),
            not_categories: Vec::new(),
            users: Vec::new(),
            not_users: Vec::new(),
            packages: Vec::new(),
            not_packages: Vec::new(),
            contains: Vec::new(),
            msg_ids: Vec::new(),
            order: Order::Asc,
            limit: None,
            offset: 0,
        }
    }
}

/// A bound SQL parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Text(String),
    /// A timestamp (µs); each backend binds its own column type.
    Time(i64),
}

/// Builds `WHERE …` for a query with placeholders made by `placeholder(n)`
/// (1-based): every value is a bound parameter, never SQL text.
pub(crate) fn where_clause(q: &Query, placeholder: fn(usize) -> String) -> (String, Vec<Param>) {
    let mut params = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    let bind = |p: Param, params: &mut Vec<Param>| {
        params.push(p);
        placeholder(params.len())
    };
    if let Some(start) = q.start {
        conds.push(format!(
            "m.timestamp >= {}",
            bind(Param::Time(start), &mut params)
        ));
    }
    if let Some(end) = q.end {
        conds.push(format!(
            "m.timestamp <= {}",
            bind(Param::Time(end), &mut params)
        ));
    }
    let list = |column: &str, values: &[String], negate: bool, params: &mut Vec<Param>| {
        if values.is_empty() {
            return None;
        }
        let holders: Vec<String> = values
            .iter()
            .map(|v| bind(Param::Text(v.clone()), params))
            .collect();
        let not = if negate { "NOT " } else { "" };
        Some(format!("{column} {not}IN ({})", holders.join(", ")))
    };
    let mut add = |c: Option<String>| conds.extend(c);
    add(list("m.msg_id", &q.msg_ids, false, &mut params));
    add(list("m.topic", &q.topics, false, &mut params));
    add(list("m.topic", &q.not_topics, true, &mut params));
    add(list("m.category", &q.categories, false, &mut params));
    add(list("m.category", &q.not_categories, true, &mut params));
    for (values, negate, table, column) in [
        (&q.users, false, "user_messages", "username"),
        (&q.not_users, true, "user_messages", "username"),
        (&q.packages, false, "package_messages", "package"),
        (&q.not_packages, true, "package_messages", "package"),
    ] {
        if let Some(inner) = list(column, values, false, &mut params) {
            let not = if negate { "NOT " } else { "" };
            add(Some(format!(
                "m.id {not}IN (SELECT msg FROM {table} WHERE {inner})"
            )));
        }
    }
    if !q.contains.is_empty() {
        let likes: Vec<String> = q
            .contains
            .iter()
            .map(|c| {
                let pattern = format!("%{}%", escape_like(c));
                format!(
                    "m._msg LIKE {} ESCAPE '\\'",
                    bind(Param::Text(pattern), &mut params)
                )
            })
            .collect();
        add(Some(format!("({})", likes.join(" OR "))));
    }
    let sql = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    (sql, params)
}

fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The columns every message query selects, in [`StoredMessage`] order.
pub(crate) const COLUMNS: &str =
    "m.id, m.msg_id, m.i, m.topic, m.timestamp, m.certificate, m.signature, \
     m.category, m.username, m.crypto, m.source_name, m.source_version, m._msg, m._headers";

/// The `ORDER BY … LIMIT … OFFSET …` tail of a message query; `all` is the
/// backend's "no limit" (`-1` in SQLite, `ALL` in PostgreSQL).
pub(crate) fn order_tail(q: &Query, all: &str) -> String {
    let order = q.order.sql();
    let mut tail = format!("ORDER BY m.timestamp {order}, m.id {order}");
    match q.limit {
        Some(limit) => tail.push_str(&format!(" LIMIT {limit} OFFSET {}", q.offset)),
        None if q.offset > 0 => tail.push_str(&format!(" LIMIT {all} OFFSET {}", q.offset)),
        None => {}
    }
    tail
}

/// A row of `messages` as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// The row id.
    pub id: i64,
    /// `msg_id`.
    pub msg_id: Option<String>,
    /// `i`.
    pub i: i64,
    /// `topic`.
    pub topic: String,
    /// `timestamp`, µs.
    pub timestamp: i64,
    /// `certificate`.
    pub certificate: Option<String>,
    /// `signature`.
    pub signature: Option<String>,
    /// `category`.
    pub category: String,
    /// `username`.
    pub username: Option<String>,
    /// `crypto`.
    pub crypto: Option<String>,
    /// `source_name`.
    pub source_name: Option<String>,
    /// `source_version`.
    pub source_version: Option<String>,
    /// `_msg`, JSON text.
    pub msg: String,
    /// `_headers`, JSON text.
    pub headers: Option<String>,
}

impl StoredMessage {
    /// The message as datagrepper returns it: the envelope (`i`, `msg_id`,
    /// `topic`, `timestamp` as float seconds, `username`, `msg`, and
    /// `certificate`, `signature`, `crypto` when set), `headers` (`{}` when
    /// none), `source_name` and `source_version`.
    ///
    /// Unlike datanommer, envelope fields that are NULL are left out rather
    /// than returned as `null`: a signed message that never had `crypto`
    /// then still verifies once fetched back (reference §3.8), and unsigned
    /// messages come back exactly as they were sent.
    pub fn to_datagrepper(&self) -> Result<Value, StoreError> {
        let corrupt = |what: &str, e: serde_json::Error| StoreError::Corrupt {
            id: self.id,
            reason: format!("{what}: {e}"),
        };
        let msg: Value = serde_json::from_str(&self.msg).map_err(|e| corrupt("_msg", e))?;
        let headers = match &self.headers {
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Null) => Value::Object(Map::new()),
                Ok(v) => v,
                Err(e) => return Err(corrupt("_headers", e)),
            },
            None => Value::Object(Map::new()),
        };
        let mut out = Map::new();
        let mut put = |key: &str, value: Option<&String>| {
            if let Some(v) = value {
                out.insert(key.to_owned(), Value::String(v.clone()));
            }
        };
        put("certificate", self.certificate.as_ref());
        put("signature", self.signature.as_ref());
        put("crypto", self.crypto.as_ref());
        put("username", self.username.as_ref());
        put("msg_id", self.msg_id.as_ref());
        out.insert("topic".into(), Value::String(self.topic.clone()));
        out.insert(
            "source_name".into(),
            Value::String(
                self.source_name
                    .clone()
                    .unwrap_or_else(|| "datanommer".into()),
            ),
        );
        out.insert(
            "source_version".into(),
            Value::String(
                self.source_version
                    .clone()
                    .unwrap_or_else(|| SOURCE_VERSION.into()),
            ),
        );
        out.insert("i".into(), Value::from(self.i));
        out.insert(
            "timestamp".into(),
            float(time::to_epoch_secs(self.timestamp)),
        );
        out.insert("msg".into(), msg);
        out.insert("headers".into(), headers);
        Ok(Value::Object(out))
    }
}

/// A JSON float that prints with a fraction (`1504643075.0`), as Python's
/// `float` does, even for integral values.
pub fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// The counts of `datanommer stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// Per category.
    Category,
    /// Per topic.
    Topic,
}

/// One database, either kind.
pub enum Store {
    /// SQLite.
    Sqlite(SqliteStore),
    /// PostgreSQL (boxed: its client is much larger than a SQLite
    /// connection).
    Postgres(Box<PgStore>),
}

impl Store {
    /// Connects, creating the database (SQLite) and the schema when
    /// `create` is true; otherwise the database must exist.
    pub fn open(url: &DbUrl, create: bool) -> Result<Store, StoreError> {
        Ok(match url {
            DbUrl::Sqlite(path) => Store::Sqlite(SqliteStore::open(path, create)?),
            DbUrl::Postgres(url) => Store::Postgres(Box::new(PgStore::open(url, create)?)),
        })
    }

    /// Bounds the statements run from now on: past `deadline` they fail
    /// with an error whose [`StoreError::is_timeout`] is true; `None`
    /// lifts the bound. SQLite: a progress handler that interrupts the
    /// statement (checked every few thousand VM steps); PostgreSQL:
    /// `SET statement_timeout` to the time left (each statement then gets
    /// at most that).
    pub fn set_deadline(&mut self, deadline: Option<std::time::Instant>) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.set_deadline(deadline),
            Store::Postgres(s) => s.set_deadline(deadline),
        }
    }

    /// Writes a batch in one transaction; rows whose `msg_id` is already
    /// stored are skipped.
    pub fn insert_batch(&mut self, rows: &[Row]) -> Result<Inserted, StoreError> {
        match self {
            Store::Sqlite(s) => s.insert_batch(rows),
            Store::Postgres(s) => s.insert_batch(rows),
        }
    }

    /// The messages selected by `q`.
    pub fn messages(&mut self, q: &Query) -> Result<Vec<StoredMessage>, StoreError> {
        self.each_message(q, &mut |m| Ok::<_, StoreError>(Some(m)))
    }

    /// Calls `f` with each message selected by `q`, streaming (the rows are
    /// not all held in memory), and collects what `f` returns.
    pub fn each_message<T, E: From<StoreError>>(
        &mut self,
        q: &Query,
        f: &mut dyn FnMut(StoredMessage) -> Result<Option<T>, E>,
    ) -> Result<Vec<T>, E> {
        match self {
            Store::Sqlite(s) => s.each_message(q, f),
            Store::Postgres(s) => s.each_message(q, f),
        }
    }

    /// How many messages `q` selects (ignoring its limit and offset).
    pub fn count(&mut self, q: &Query) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.count(q),
            Store::Postgres(s) => s.count(q),
        }
    }

    /// Message counts per category or topic, largest first, optionally
    /// within one category.
    pub fn counts(
        &mut self,
        by: GroupBy,
        category: Option<&str>,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.counts(by, category),
            Store::Postgres(s) => s.counts(by, category),
        }
    }

    /// The distinct categories, sorted.
    pub fn categories(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .counts(GroupBy::Category, None)?
            .into_iter()
            .map(|(c, _)| c)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect())
    }

    /// The users and the packages linked to the message with row `id`.
    pub fn links(&mut self, id: i64) -> Result<(Vec<String>, Vec<String>), StoreError> {
        match self {
            Store::Sqlite(s) => s.links(id),
            Store::Postgres(s) => s.links(id),
        }
    }
}

#[cfg(test)]
mod tests;
