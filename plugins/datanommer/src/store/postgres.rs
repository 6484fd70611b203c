//! The PostgreSQL store (the `postgres` crate, no TLS).
//!
//! A batch is one `INSERT … SELECT … FROM unnest(arrays) ON CONFLICT DO
//! NOTHING RETURNING id, msg_id`: one prepared statement and one round
//! trip for the messages however large the batch, then one statement each
//! for users, packages and their links.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::NaiveDateTime;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Statement};

use fedmsg_plugin_api::tracing;

use super::{
    order_tail, schema, where_clause, GroupBy, Inserted, Param, Query, StoreError, StoredMessage,
    COLUMNS, SOURCE_VERSION,
};
use crate::row::Row;
use crate::time;

/// Bounds a connection attempt to a server that does not answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Serializes schema creation between processes ("datanomm").
const SCHEMA_LOCK: i64 = 0x6461_7461_6e6f_6d6d;

const INSERT: &str = "INSERT INTO messages (msg_id, i, topic, timestamp, certificate, signature, \
     category, username, crypto, source_name, source_version, _msg, _headers) \
     SELECT msg_id, i, topic, ts, cert, sig, cat, uname, crypto, 'datanommer', $12, msg, headers \
     FROM unnest($1::text[], $2::int8[], $3::text[], $4::timestamp[], $5::text[], $6::text[], \
                 $7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) \
          WITH ORDINALITY AS x(msg_id, i, topic, ts, cert, sig, cat, uname, crypto, msg, headers, n) \
     ORDER BY n \
     ON CONFLICT (msg_id) DO NOTHING \
     RETURNING id, msg_id";
const INSERT_USERS: &str =
    r#"INSERT INTO "user" (name) SELECT DISTINCT unnest($1::text[]) ON CONFLICT DO NOTHING"#;
const INSERT_PACKAGES: &str =
    "INSERT INTO package (name) SELECT DISTINCT unnest($1::text[]) ON CONFLICT DO NOTHING";
const LINK_USERS: &str = "INSERT INTO user_messages (username, msg) \
     SELECT * FROM unnest($1::text[], $2::int8[]) ON CONFLICT DO NOTHING";
const LINK_PACKAGES: &str = "INSERT INTO package_messages (package, msg) \
     SELECT * FROM unnest($1::text[], $2::int8[]) ON CONFLICT DO NOTHING";

/// A connection to a PostgreSQL database.
pub struct PgStore {
    client: Client,
    /// Prepared on first use (the schema may not exist before).
    statements: Option<[Statement; 5]>,
}

impl PgStore {
    /// Connects to `url` (5 s connect timeout unless the URL sets one);
    /// with `create`, creates the schema when missing.
    pub fn open(url: &str, create: bool) -> Result<PgStore, StoreError> {
        let mut config: Config = url.parse().map_err(|e| StoreError::BadUrl {
            url: super::redact(url),
            reason: format!("{e}"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("fedmsg-datanommer");
        }
        let mut client = config.connect(NoTls)?;
        // Signed messages carry ~3 KiB of certificate and signature, so
        // most rows are TOASTed: lz4 compresses them several times faster
        // than the default pglz. Servers without lz4 (before 14, or built
        // without it) keep their default.
        if client
            .batch_execute("SET default_toast_compression = 'lz4'")
            .is_err()
        {
            tracing::debug!("PostgreSQL without lz4 TOAST compression; using its default");
        }
        if create {
            let mut tx = client.transaction()?;
            // Two processes creating the schema at once would otherwise
            // race on the catalog despite IF NOT EXISTS.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
            tx.batch_execute(schema::POSTGRES)?;
            tx.batch_execute(schema::INDEXES)?;
            tx.commit()?;
        }
        Ok(PgStore {
            client,
            statements: None,
        })
    }

    pub(super) fn insert_batch(&mut self, rows: &[Row]) -> Result<Inserted, StoreError> {
        let statements = match &self.statements {
            Some(s) => s.clone(),
            None => {
                let mut prepare = |sql: &str| self.client.prepare(sql);
                let s = [
                    prepare(INSERT)?,
                    prepare(INSERT_USERS)?,
                    prepare(INSERT_PACKAGES)?,
                    prepare(LINK_USERS)?,
                    prepare(LINK_PACKAGES)?,
                ];
                self.statements = Some(s.clone());
                s
            }
        };
        let [insert, insert_users, insert_packages, link_users, link_packages] = &statements;

        let msg_ids: Vec<&str> = rows.iter().map(|r| r.msg_id.as_str()).collect();
        let is: Vec<i64> = rows.iter().map(|r| r.i).collect();
        let topics: Vec<&str> = rows.iter().map(|r| r.topic.as_str()).collect();
        let stamps: Vec<NaiveDateTime> = rows.iter().map(|r| time::to_naive(r.timestamp)).collect();
        let certs: Vec<Option<&str>> = rows.iter().map(|r| r.certificate.as_deref()).collect();
        let sigs: Vec<Option<&str>> = rows.iter().map(|r| r.signature.as_deref()).collect();
        let cats: Vec<&str> = rows.iter().map(|r| r.category.as_str()).collect();
        let unames: Vec<Option<&str>> = rows.iter().map(|r| r.username.as_deref()).collect();
        let cryptos: Vec<Option<&str>> = rows.iter().map(|r| r.crypto.as_deref()).collect();
        let msgs: Vec<&str> = rows.iter().map(|r| r.msg.as_str()).collect();
        let headers: Vec<Option<&str>> = rows.iter().map(|r| r.headers.as_deref()).collect();

        let mut tx = self.client.transaction()?;
        let returned = tx.query(
            insert,
            &[
                &msg_ids,
                &is,
                &topics,
                &stamps,
                &certs,
                &sigs,
                &cats,
                &unames,
                &cryptos,
                &msgs,
                &headers,
                &SOURCE_VERSION,
            ],
        )?;
        let mut ids: HashMap<String, i64> = HashMap::with_capacity(returned.len());
        for r in &returned {
            ids.insert(r.try_get(1)?, r.try_get(0)?);
        }
        let mut out = Inserted::default();
        let mut seen: HashSet<&str> = HashSet::with_capacity(rows.len());
        let (mut user_names, mut user_ids) = (Vec::new(), Vec::new());
        let (mut package_names, mut package_ids) = (Vec::new(), Vec::new());
        for (index, row) in rows.iter().enumerate() {
            // The first occurrence of a msg_id in the batch is the one
            // inserted (rows are inserted in batch order).
            match ids.get(&row.msg_id) {
                Some(&id) if seen.insert(row.msg_id.as_str()) => {
                    out.inserted += 1;
                    for name in &row.users {
                        user_names.push(name.as_str());
                        user_ids.push(id);
                    }
                    for name in &row.packages {
                        package_names.push(name.as_str());
                        package_ids.push(id);
                    }
                }
                _ => out.duplicates.push(index),
            }
        }
        if !user_names.is_empty() {
            tx.execute(insert_users, &[&user_names])?;
            tx.execute(link_users, &[&user_names, &user_ids])?;
        }
        if !package_names.is_empty() {
            tx.execute(insert_packages, &[&package_names])?;
            tx.execute(link_packages, &[&package_names, &package_ids])?;
        }
        tx.commit()?;
        Ok(out)
    }

    pub(super) fn set_deadline(
        &mut self,
        deadline: Option<std::time::Instant>,
    ) -> Result<(), StoreError> {
        // 0 is "no limit" to PostgreSQL: a deadline already past is 1 ms.
        let ms = match deadline {
            Some(d) => d
                .saturating_duration_since(std::time::Instant::now())
                .as_millis()
                .clamp(1, i32::MAX as u128),
            None => 0,
        };
        self.client
            .batch_execute(&format!("SET statement_timeout = {ms}"))?;
        Ok(())
    }

    pub(super) fn each_message<T, E: From<StoreError>>(
        &mut self,
        q: &Query,
        f: &mut dyn FnMut(StoredMessage) -> Result<Option<T>, E>,
    ) -> Result<Vec<T>, E> {
        let (filter, params) = where_clause(q, |n| format!("${n}"));
        let sql = format!(
            "SELECT {COLUMNS} FROM messages m {filter} {}",
            order_tail(q, "ALL")
        );
        let values = values(params);
        let mut rows = self
            .client
            .query_raw(
                &sql,
                values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)),
            )
            .map_err(StoreError::from)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(StoreError::from)? {
            if let Some(item) = f(read(&row)?)? {
                out.push(item);
            }
        }
        Ok(out)
    }

    pub(super) fn count(&mut self, q: &Query) -> Result<u64, StoreError> {
        let (filter, params) = where_clause(q, |n| format!("${n}"));
        let sql = format!("SELECT COUNT(*) FROM messages m {filter}");
        let values = values(params);
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        let n: i64 = self.client.query_one(&sql, &refs)?.try_get(0)?;
        Ok(n.max(0) as u64)
    }

    pub(super) fn counts(
        &mut self,
        by: GroupBy,
        category: Option<&str>,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let column = match by {
            GroupBy::Category => "category",
            GroupBy::Topic => "topic",
        };
        let sql = format!(
            "SELECT {column}, COUNT(*) FROM messages WHERE ($1::text IS NULL OR category = $1) \
             GROUP BY {column} ORDER BY COUNT(*) DESC, {column}"
        );
        let rows = self.client.query(&sql, &[&category])?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<_, i64>(1)?.max(0) as u64)))
            .collect()
    }

    pub(super) fn links(&mut self, id: i64) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let mut names = |sql: &str| -> Result<Vec<String>, StoreError> {
            let rows = self.client.query(sql, &[&id])?;
            rows.iter()
                .map(|r| r.try_get(0).map_err(StoreError::from))
                .collect()
        };
        Ok((
            names("SELECT username FROM user_messages WHERE msg = $1 ORDER BY username")?,
            names("SELECT package FROM package_messages WHERE msg = $1 ORDER BY package")?,
        ))
    }
}

fn values(params: Vec<Param>) -> Vec<Box<dyn ToSql + Sync>> {
    params
        .into_iter()
        .map(|p| -> Box<dyn ToSql + Sync> {
            match p {
                Param::Text(s) => Box::new(s),
                Param::Time(t) => Box::new(time::to_naive(t)),
            }
        })
        .collect()
}

fn read(r: &postgres::Row) -> Result<StoredMessage, StoreError> {
    let stamp: NaiveDateTime = r.try_get(4)?;
    Ok(StoredMessage {
        id: r.try_get(0)?,
        msg_id: r.try_get(1)?,
        i: r.try_get(2)?,
        topic: r.try_get(3)?,
        timestamp: time::from_naive(stamp),
        certificate: r.try_get(5)?,
        signature: r.try_get(6)?,
        category: r.try_get(7)?,
        username: r.try_get(8)?,
        crypto: r.try_get(9)?,
        source_name: r.try_get(10)?,
        source_version: r.try_get(11)?,
        msg: r.try_get(12)?,
        headers: r.try_get(13)?,
    })
}

/// The whole story of an error: the server's message and SQLSTATE, or
/// the chain of causes (the error's own `Display` is just "db error").
pub(super) fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Errors caused by a row's values (see [`StoreError::is_row_error`]):
/// SQLSTATE classes 22 (data exception, e.g. a NUL character in text), 23
/// (integrity), 42 (syntax or access rule) and 54 (program limit). A closed
/// connection, a server shutting down or refusing connections is not.
pub(super) fn is_row_error(e: &postgres::Error) -> bool {
    e.code()
        .map(|state| {
            matches!(
                &state.code()[..2.min(state.code().len())],
                "22" | "23" | "42" | "54"
            )
        })
        .unwrap_or(false)
}

/// A statement cancelled by `statement_timeout`.
pub(super) fn is_timeout(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::QUERY_CANCELED)
}
