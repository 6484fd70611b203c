//! The SQLite store (rusqlite, SQLite bundled).

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, params_from_iter, Connection, ErrorCode, OpenFlags, TransactionBehavior};

use super::{
    order_tail, schema, where_clause, GroupBy, Inserted, Param, Query, StoreError, StoredMessage,
    COLUMNS, SOURCE_VERSION,
};
use crate::row::Row;
use crate::time;

/// How long a statement waits for another connection's lock before it
/// fails with "database is locked" (which the writer then retries).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// VM steps between two looks at the clock of a query with a deadline:
/// some microseconds of work, so the overshoot is negligible and the
/// clock is not read in a tight loop.
const PROGRESS_STEPS: std::ffi::c_int = 10_000;

const INSERT: &str = "INSERT INTO messages (msg_id, i, topic, timestamp, certificate, signature, \
     category, username, crypto, source_name, source_version, _msg, _headers) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'datanommer', ?10, ?11, ?12) \
     ON CONFLICT (msg_id) DO NOTHING";

/// A connection to a SQLite database file.
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens `path`. With `create`, the file, its directory and the schema
    /// are created when missing and the journal is switched to WAL (readers
    /// then never block the writer); without, the file must exist.
    pub fn open(path: &Path, create: bool) -> Result<SqliteStore, StoreError> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // Best effort: when it fails, SQLite's own error says why.
                let _ = std::fs::create_dir_all(dir);
            }
        }
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if create {
            // Signed messages are ~4 KiB: with 16 KiB pages most rows fit
            // in their leaf page instead of spilling into overflow pages.
            // Only takes effect on a new, empty database.
            conn.execute_batch("PRAGMA page_size=16384")?;
            // A query, not an execute: the pragma answers with the new mode.
            let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
            conn.execute_batch(schema::SQLITE)?;
            conn.execute_batch(schema::INDEXES)?;
        }
        // With WAL, NORMAL loses at most the last transactions on power
        // loss, never integrity; FULL would fsync on every commit.
        // A 64 MiB page cache keeps the indexes' upper levels in memory;
        // checkpointing every ~40 MiB of WAL rather than every 4 MiB
        // spends less time copying pages twice.
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536; PRAGMA wal_autocheckpoint=10000",
        )?;
        Ok(SqliteStore { conn })
    }

    pub(super) fn set_deadline(
        &mut self,
        deadline: Option<std::time::Instant>,
    ) -> Result<(), StoreError> {
        Ok(match deadline {
            // Returning true interrupts the running statement
            // (SQLITE_INTERRUPT); the connection stays usable.
            Some(deadline) => self.conn.progress_handler(
                PROGRESS_STEPS,
                Some(move || std::time::Instant::now() >= deadline),
            ),
            None => self
                .conn
                .progress_handler(PROGRESS_STEPS, None::<fn() -> bool>),
        }?)
    }

    pub(super) fn insert_batch(&mut self, rows: &[Row]) -> Result<Inserted, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Inserted::default();
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            let mut user =
                tx.prepare_cached(r#"INSERT OR IGNORE INTO "user" (name) VALUES (?1)"#)?;
            let mut package =
                tx.prepare_cached("INSERT OR IGNORE INTO package (name) VALUES (?1)")?;
            let mut user_link = tx.prepare_cached(
                "INSERT OR IGNORE INTO user_messages (username, msg) VALUES (?1, ?2)",
            )?;
            let mut package_link = tx.prepare_cached(
                "INSERT OR IGNORE INTO package_messages (package, msg) VALUES (?1, ?2)",
            )?;
            for (index, row) in rows.iter().enumerate() {
                let changed = insert.execute(params![
                    row.msg_id,
                    row.i,
                    row.topic,
                    time::to_sqlite_text(row.timestamp),
                    row.certificate,
                    row.signature,
                    row.category,
                    row.username,
                    row.crypto,
                    SOURCE_VERSION,
                    row.msg,
                    row.headers,
                ])?;
                if changed == 0 {
                    out.duplicates.push(index);
                    continue;
                }
                let id = tx.last_insert_rowid();
                for name in &row.users {
                    user.execute([name])?;
                    user_link.execute(params![name, id])?;
                }
                for name in &row.packages {
                    package.execute([name])?;
                    package_link.execute(params![name, id])?;
                }
                out.inserted += 1;
            }
        }
        tx.commit()?;
        Ok(out)
    }

    pub(super) fn each_message<T, E: From<StoreError>>(
        &mut self,
        q: &Query,
        f: &mut dyn FnMut(StoredMessage) -> Result<Option<T>, E>,
    ) -> Result<Vec<T>, E> {
        let (filter, params) = where_clause(q, |n| format!("?{n}"));
        let sql = format!(
            "SELECT {COLUMNS} FROM messages m {filter} {}",
            order_tail(q, "-1")
        );
        let mut stmt = self.conn.prepare(&sql).map_err(StoreError::from)?;
        let mut rows = stmt
            .query(params_from_iter(values(params)))
            .map_err(StoreError::from)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(StoreError::from)? {
            if let Some(item) = f(read(row)?)? {
                out.push(item);
            }
        }
        Ok(out)
    }

    pub(super) fn count(&mut self, q: &Query) -> Result<u64, StoreError> {
        let (filter, params) = where_clause(q, |n| format!("?{n}"));
        let sql = format!("SELECT COUNT(*) FROM messages m {filter}");
        let n: i64 = self
            .conn
            .query_row(&sql, params_from_iter(values(params)), |r| r.get(0))?;
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
        let filter = if category.is_some() {
            "WHERE category = ?1"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {column}, COUNT(*) FROM messages {filter} GROUP BY {column} ORDER BY COUNT(*) DESC, {column}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(category), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(super) fn links(&mut self, id: i64) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let names = |sql: &str| -> Result<Vec<String>, StoreError> {
            let mut stmt = self.conn.prepare_cached(sql)?;
            let rows = stmt.query_map([id], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        Ok((
            names("SELECT username FROM user_messages WHERE msg = ?1 ORDER BY username")?,
            names("SELECT package FROM package_messages WHERE msg = ?1 ORDER BY package")?,
        ))
    }
}

fn values(params: Vec<Param>) -> Vec<String> {
    params
        .into_iter()
        .map(|p| match p {
            Param::Text(s) => s,
            Param::Time(t) => time::to_sqlite_text(t),
        })
        .collect()
}

fn read(r: &rusqlite::Row<'_>) -> Result<StoredMessage, StoreError> {
    let id: i64 = r.get(0)?;
    let stamp: String = r.get(4)?;
    let timestamp = time::from_sqlite_text(&stamp).ok_or_else(|| StoreError::Corrupt {
        id,
        reason: format!("timestamp `{stamp}` is not a datetime"),
    })?;
    Ok(StoredMessage {
        id,
        msg_id: r.get(1)?,
        i: r.get(2)?,
        topic: r.get(3)?,
        timestamp,
        certificate: r.get(5)?,
        signature: r.get(6)?,
        category: r.get(7)?,
        username: r.get(8)?,
        crypto: r.get(9)?,
        source_name: r.get(10)?,
        source_version: r.get(11)?,
        msg: r.get(12)?,
        headers: r.get(13)?,
    })
}

/// Errors caused by a row's values (see [`StoreError::is_row_error`]).
pub(super) fn is_row_error(e: &rusqlite::Error) -> bool {
    use rusqlite::Error as E;
    match e {
        E::SqliteFailure(failure, _) => matches!(
            failure.code,
            ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch
        ),
        E::ToSqlConversionFailure(_)
        | E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(..)
        | E::NulError(_)
        | E::InvalidColumnType(..) => true,
        _ => false,
    }
}

/// A statement stopped by the progress handler of a deadline.
pub(super) fn is_timeout(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::OperationInterrupted)
}
