//! The publisher's persistent replay store, in SQLite.
//!
//! [`ReplayStore::add`] stamps an envelope with the next `seq_id` of its
//! sender name and stores the stamped envelope's canonical JSON (exactly
//! the text that is then published and that replay sends back);
//! [`ReplayStore::query`] answers the replay queries.
//!
//! Tables (schema version 1, in `PRAGMA user_version`):
//!
//! * `replay_sequences(name PRIMARY KEY, last_seq_id)`: the last `seq_id`
//!   handed out per name. It is separate from the messages so that pruning
//!   old messages never lets a `seq_id` be handed out twice.
//! * `replay_messages(name, seq_id, msg_id, topic, timestamp, msg)`, primary
//!   key `(name, seq_id)`, indexed by `(name, msg_id)` and
//!   `(name, timestamp)`; `timestamp` is epoch seconds (REAL), `msg` the
//!   canonical JSON including `seq_id`.
//!
//! The next `seq_id` is taken and the message stored in one `IMMEDIATE`
//! transaction, so several processes sharing a store file (several workers
//! of one service, which share a name) still get strictly increasing,
//! gap-free numbers. The database runs in WAL mode (the replay server reads
//! while the publisher writes) with `synchronous = NORMAL`: a committed
//! message survives a crash of the process; a power loss may lose the last
//! few, which the subscriber then sees as a gap the store cannot fill.
//!
//! A connection is not shared between threads: the publisher and the replay
//! server each open their own [`ReplayStore`] on the same file.
//!
//! # Retention
//!
//! Upstream's store grew forever. With a retention
//! ([`ReplayStore::set_retention`], config `replay_retention`), `add`
//! deletes the name's messages whose `timestamp` is older than the
//! retention, at most once per [`PRUNE_INTERVAL`], in its own statement
//! after the message is committed: a failed prune is logged and costs the
//! publisher nothing. Replay fills gaps of seconds; history is datanommer's
//! job, so the default keeps a week.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use super::query::Query;
use crate::envelope;
use crate::localtime::now_epoch_f64;
use crate::ratelimit::LogLimiter;

/// How often `add` prunes a name's expired messages, at most.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// The schema version this hub writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a connection waits for another one holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite allows a few hundred parameters per statement on old builds;
/// lists are queried in chunks of this many.
const IN_CHUNK: usize = 500;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS replay_sequences (
    name TEXT PRIMARY KEY,
    last_seq_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS replay_messages (
    name TEXT NOT NULL,
    seq_id INTEGER NOT NULL,
    msg_id TEXT,
    topic TEXT NOT NULL,
    timestamp REAL,
    msg TEXT NOT NULL,
    PRIMARY KEY (name, seq_id)
);
CREATE INDEX IF NOT EXISTS replay_messages_msg_id ON replay_messages (name, msg_id);
CREATE INDEX IF NOT EXISTS replay_messages_time ON replay_messages (name, timestamp);
";

const SELECT: &str =
    "SELECT seq_id, msg_id, topic, timestamp, msg FROM replay_messages WHERE name = ?1 AND ";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or initialised as a replay store.
    #[error("cannot open replay store {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The file was written with another schema version.
    #[error(
        "replay store {path} has schema version {found}; this hub uses version {SCHEMA_VERSION}"
    )]
    Schema {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: i64,
    },
    /// The envelope to store is not a JSON object.
    #[error("cannot store a message that is not a JSON object")]
    NotAnObject,
    /// The envelope to store has no string `topic`.
    #[error("cannot store a message without a string \"topic\"")]
    NoTopic,
    /// A query or insert failed.
    #[error("replay store: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// One stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// Its `seq_id` for its sender name.
    pub seq_id: u64,
    /// The envelope's `msg_id`.
    pub msg_id: Option<String>,
    /// The envelope's `topic`.
    pub topic: String,
    /// The envelope's `timestamp`, epoch seconds.
    pub timestamp: Option<f64>,
    /// The canonical JSON of the envelope, `seq_id` included.
    pub body: String,
}

/// What a query found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResult {
    /// The matching messages with the lowest `seq_id`s, in `seq_id` order.
    pub messages: Vec<StoredMessage>,
    /// True when more messages matched than the limit allowed.
    pub truncated: bool,
}

/// One connection to a replay store file.
pub struct ReplayStore {
    conn: Connection,
    path: PathBuf,
    /// Messages older than this are pruned; `None` keeps them forever.
    retention: Option<Duration>,
    /// When `add` prunes next.
    next_prune: Instant,
    prune_log: LogLimiter,
}

impl std::fmt::Debug for ReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayStore")
            .field("path", &self.path)
            .finish()
    }
}

impl ReplayStore {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] (not a database, unwritable, ...) or
    /// [`StoreError::Schema`].
    pub fn open(path: &Path) -> Result<ReplayStore, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_error)?;
        let version = init(&conn).map_err(open_error)?;
        match version {
            0 => {
                conn.execute_batch(SCHEMA).map_err(open_error)?;
                conn.pragma_update(None, "user_version", SCHEMA_VERSION)
                    .map_err(open_error)?;
            }
            SCHEMA_VERSION => {}
            found => {
                return Err(StoreError::Schema {
                    path: path.to_owned(),
                    found,
                })
            }
        }
        Ok(ReplayStore {
            conn,
            path: path.to_owned(),
            retention: None,
            next_prune: Instant::now(),
            prune_log: LogLimiter::default(),
        })
    }

    /// Keeps messages for `retention` (see the module docs); `None` keeps
    /// them forever. The next `add` prunes.
    pub fn set_retention(&mut self, retention: Option<Duration>) {
        self.retention = retention;
        self.next_prune = Instant::now();
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stamps `envelope` with the next `seq_id` of sender `name`, stores it,
    /// and returns the stored message (its `body` is what to publish). The
    /// envelope keeps the `seq_id` on success and is left as it was on
    /// error. An existing `seq_id` (a relayed message) is replaced.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotAnObject`], [`StoreError::NoTopic`] or
    /// [`StoreError::Sql`].
    pub fn add(&mut self, name: &str, envelope: &mut Value) -> Result<StoredMessage, StoreError> {
        let map = envelope.as_object_mut().ok_or(StoreError::NotAnObject)?;
        let topic = map
            .get("topic")
            .and_then(Value::as_str)
            .ok_or(StoreError::NoTopic)?
            .to_owned();
        let msg_id = map.get("msg_id").and_then(Value::as_str).map(str::to_owned);
        let timestamp = map.get("timestamp").and_then(Value::as_f64);
        let previous = map.remove("seq_id");
        let result = self.insert_stamped(name, envelope, &topic, msg_id.as_deref(), timestamp);
        if result.is_err() {
            if let Some(map) = envelope.as_object_mut() {
                match previous {
                    Some(old) => map.insert("seq_id".into(), old),
                    None => map.remove("seq_id"),
                };
            }
        }
        let (seq_id, body) = result?;
        self.prune_if_due(name);
        Ok(StoredMessage {
            seq_id,
            msg_id,
            topic,
            timestamp,
            body,
        })
    }

    /// Deletes the expired messages of `name` when a prune is due.
    fn prune_if_due(&mut self, name: &str) {
        let Some(retention) = self.retention else {
            return;
        };
        let now = Instant::now();
        if now < self.next_prune {
            return;
        }
        self.next_prune = now + PRUNE_INTERVAL;
        let cutoff = now_epoch_f64() - retention.as_secs_f64();
        match self.prune_before(name, cutoff) {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(name, pruned, "replay store: expired messages pruned"),
            Err(error) => {
                if let Some(suppressed) = self.prune_log.check() {
                    tracing::warn!(name, path = %self.path.display(), %error, suppressed, "replay store: cannot prune expired messages");
                }
            }
        }
    }

    fn insert_stamped(
        &mut self,
        name: &str,
        envelope: &mut Value,
        topic: &str,
        msg_id: Option<&str>,
        timestamp: Option<f64>,
    ) -> Result<(u64, String), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let seq: i64 = tx.query_row(
            "INSERT INTO replay_sequences (name, last_seq_id) VALUES (?1, 1) \
             ON CONFLICT (name) DO UPDATE SET last_seq_id = last_seq_id + 1 \
             RETURNING last_seq_id",
            [name],
            |row| row.get(0),
        )?;
        if let Some(map) = envelope.as_object_mut() {
            map.insert("seq_id".into(), Value::from(seq));
        }
        let body = envelope::to_canonical(envelope);
        tx.execute(
            "INSERT INTO replay_messages (name, seq_id, msg_id, topic, timestamp, msg) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![name, seq, msg_id, topic, timestamp, body],
        )?;
        tx.commit()?;
        Ok((to_u64(seq), body))
    }

    /// The last `seq_id` handed out for `name`, if any.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`].
    pub fn last_seq_id(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let seq: Option<i64> = self
            .conn
            .query_row(
                "SELECT last_seq_id FROM replay_sequences WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .optional()?;
        Ok(seq.map(to_u64))
    }

    /// The messages of `name` that `query` selects (the union of its parts),
    /// lowest `seq_id` first, at most `limit` of them.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`].
    pub fn query(
        &self,
        name: &str,
        query: &Query,
        limit: usize,
    ) -> Result<QueryResult, StoreError> {
        // Each part returns its lowest `limit + 1` matches; the union's
        // lowest `limit` are among them, and one more tells "truncated".
        let cap = limit.saturating_add(1);
        let mut found = BTreeMap::new();
        if let Some((lo, hi)) = query.seq_id_range {
            let args = vec![SqlValue::from(lo), SqlValue::from(hi)];
            self.collect(name, "seq_id BETWEEN ?2 AND ?3", args, cap, &mut found)?;
        }
        for chunk in query.seq_ids.chunks(IN_CHUNK) {
            let args = chunk.iter().map(|&id| SqlValue::from(id)).collect();
            self.collect(
                name,
                &in_clause("seq_id", chunk.len()),
                args,
                cap,
                &mut found,
            )?;
        }
        for chunk in query.msg_ids.chunks(IN_CHUNK) {
            let args = chunk.iter().map(|id| SqlValue::from(id.clone())).collect();
            self.collect(
                name,
                &in_clause("msg_id", chunk.len()),
                args,
                cap,
                &mut found,
            )?;
        }
        if let Some((t0, t1)) = query.time {
            let args = vec![SqlValue::from(t0), SqlValue::from(t1)];
            self.collect(name, "timestamp BETWEEN ?2 AND ?3", args, cap, &mut found)?;
        }
        let truncated = found.len() > limit;
        let messages = found.into_values().take(limit).collect();
        Ok(QueryResult {
            messages,
            truncated,
        })
    }

    /// Adds the lowest `cap` matches of `condition` to `found`, keeping only
    /// the lowest `cap` overall.
    fn collect(
        &self,
        name: &str,
        condition: &str,
        args: Vec<SqlValue>,
        cap: usize,
        found: &mut BTreeMap<u64, StoredMessage>,
    ) -> Result<(), StoreError> {
        let limit_index = args.len() + 2;
        let sql = format!("{SELECT}({condition}) ORDER BY seq_id LIMIT ?{limit_index}");
        let mut statement = self.conn.prepare_cached(&sql)?;
        let mut all = Vec::with_capacity(args.len() + 2);
        all.push(SqlValue::from(name.to_owned()));
        all.extend(args);
        all.push(SqlValue::from(i64::try_from(cap).unwrap_or(i64::MAX)));
        let rows = statement.query_map(params_from_iter(all), |row| {
            Ok(StoredMessage {
                seq_id: to_u64(row.get(0)?),
                msg_id: row.get(1)?,
                topic: row.get(2)?,
                timestamp: row.get(3)?,
                body: row.get(4)?,
            })
        })?;
        for row in rows {
            let message = row?;
            found.insert(message.seq_id, message);
        }
        while found.len() > cap {
            found.pop_last();
        }
        Ok(())
    }

    /// Deletes the messages of `name` older than `timestamp` (retention);
    /// returns how many. `seq_id`s are never reused.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`].
    pub fn prune_before(&mut self, name: &str, timestamp: f64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM replay_messages WHERE name = ?1 AND timestamp < ?2",
            params![name, timestamp],
        )?)
    }
}

/// Sets the connection up and returns the schema version.
fn init(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // journal_mode answers a row, so it is read rather than "updated".
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

fn in_clause(column: &str, count: usize) -> String {
    let placeholders: Vec<String> = (0..count).map(|i| format!("?{}", i + 2)).collect();
    format!("{column} IN ({})", placeholders.join(","))
}

/// seq_ids start at 1, so the stored i64 is always positive.
fn to_u64(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn envelope(n: u64, ts: i64) -> Value {
        json!({
            "topic": format!("org.test.{}", n % 3),
            "msg": {"n": n, "text": "h\u{e9}llo"},
            "msg_id": format!("2024-{n:04}"),
            "timestamp": ts,
            "i": n,
            "username": "tester",
        })
    }

    fn filled(dir: &Path, name: &str, count: u64) -> ReplayStore {
        let mut store = ReplayStore::open(&dir.join("replay.sqlite")).unwrap();
        for n in 1..=count {
            store.add(name, &mut envelope(n, 1000 + n as i64)).unwrap();
        }
        store
    }

    fn seqs(result: &QueryResult) -> Vec<u64> {
        result.messages.iter().map(|m| m.seq_id).collect()
    }

    #[test]
    fn add_stamps_increasing_seq_ids_per_name_and_stores_canonical_json() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ReplayStore::open(&dir.path().join("s.sqlite")).unwrap();
        let mut first = envelope(1, 1000);
        let stored = store.add("relay_outbound", &mut first).unwrap();
        assert_eq!(stored.seq_id, 1);
        assert_eq!(first["seq_id"], 1);
        assert_eq!(stored.body, envelope::to_canonical(&first));
        assert!(stored.body.contains("\"seq_id\":1") && stored.body.contains("h\\u00e9llo"));
        assert_eq!(stored.topic, "org.test.1");
        assert_eq!(stored.msg_id.as_deref(), Some("2024-0001"));
        assert_eq!(stored.timestamp, Some(1000.0));
        assert_eq!(
            store
                .add("relay_outbound", &mut envelope(2, 1001))
                .unwrap()
                .seq_id,
            2
        );
        assert_eq!(
            store.add("other", &mut envelope(3, 1002)).unwrap().seq_id,
            1
        );
        // A relayed message's seq_id is replaced by ours.
        let mut relayed = envelope(4, 1003);
        relayed["seq_id"] = json!(999);
        assert_eq!(store.add("relay_outbound", &mut relayed).unwrap().seq_id, 3);
        assert_eq!(store.last_seq_id("relay_outbound").unwrap(), Some(3));
        assert_eq!(store.last_seq_id("nobody").unwrap(), None);
    }

    #[test]
    fn sequence_survives_reopen_and_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = filled(dir.path(), "n", 5);
        assert_eq!(store.prune_before("n", 1004.0).unwrap(), 3);
        drop(store);
        let mut store = ReplayStore::open(&dir.path().join("replay.sqlite")).unwrap();
        assert_eq!(store.add("n", &mut envelope(6, 2000)).unwrap().seq_id, 6);
        let all = store.query("n", &Query::range(0, 100), 100).unwrap();
        assert_eq!(seqs(&all), vec![4, 5, 6]);
    }

    #[test]
    fn retention_prunes_expired_messages_when_adding() {
        let dir = tempfile::tempdir().unwrap();
        // Five messages from 1970: kept while there is no retention.
        let mut store = filled(dir.path(), "n", 5);
        let now = now_epoch_f64() as i64;
        store.add("other", &mut envelope(1, 1000)).unwrap();
        store.set_retention(Some(Duration::from_secs(3600)));
        assert_eq!(store.add("n", &mut envelope(6, now)).unwrap().seq_id, 6);
        let kept = store.query("n", &Query::range(0, 100), 100).unwrap();
        assert_eq!(seqs(&kept), vec![6], "the old ones of that name are gone");
        // Another name is pruned when it is added to, not before.
        assert_eq!(
            store
                .query("other", &Query::range(0, 100), 100)
                .unwrap()
                .messages
                .len(),
            1
        );
        // Not again within the interval: an expired message added now stays
        // until the next prune.
        assert_eq!(store.add("n", &mut envelope(7, 1000)).unwrap().seq_id, 7);
        let kept = store.query("n", &Query::range(0, 100), 100).unwrap();
        assert_eq!(seqs(&kept), vec![6, 7]);
        // Forever again: nothing is pruned.
        store.set_retention(None);
        store.add("other", &mut envelope(2, 1000)).unwrap();
        assert_eq!(
            store
                .query("other", &Query::range(0, 100), 100)
                .unwrap()
                .messages
                .len(),
            2
        );
    }

    #[test]
    fn two_connections_share_one_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.sqlite");
        let mut a = ReplayStore::open(&path).unwrap();
        let mut b = ReplayStore::open(&path).unwrap();
        let mut got = Vec::new();
        for n in 0..10 {
            let store = if n % 2 == 0 { &mut a } else { &mut b };
            got.push(store.add("n", &mut envelope(n, 1000)).unwrap().seq_id);
        }
        assert_eq!(got, (1..=10).collect::<Vec<u64>>());
    }

    #[test]
    fn every_query_kind_and_their_union() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path(), "n", 20);
        let run = |q: Query| seqs(&store.query("n", &q, 100).unwrap());
        assert_eq!(run(Query::range(3, 5)), vec![3, 4, 5]);
        assert_eq!(run(Query::range(5, 3)), Vec::<u64>::new());
        assert_eq!(
            run(Query {
                seq_ids: vec![9, 2, 2, 50],
                ..Query::default()
            }),
            vec![2, 9]
        );
        assert_eq!(
            run(Query {
                msg_ids: vec!["2024-0007".into(), "nope".into()],
                ..Query::default()
            }),
            vec![7]
        );
        assert_eq!(
            run(Query {
                time: Some((1011.0, 1012.5)),
                ..Query::default()
            }),
            vec![11, 12]
        );
        let union = Query {
            seq_ids: vec![1],
            seq_id_range: Some((18, 30)),
            msg_ids: vec!["2024-0010".into()],
            time: Some((1005.0, 1005.0)),
        };
        assert_eq!(run(union), vec![1, 5, 10, 18, 19, 20]);
        assert_eq!(run(Query::default()), Vec::<u64>::new());
        // Another name sees nothing.
        assert!(store
            .query("m", &Query::range(0, 100), 10)
            .unwrap()
            .messages
            .is_empty());
    }

    #[test]
    fn results_are_capped_at_the_lowest_seq_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path(), "n", 30);
        let huge = Query::range(i64::MIN, i64::MAX);
        let capped = store.query("n", &huge, 10).unwrap();
        assert!(capped.truncated);
        assert_eq!(seqs(&capped), (1..=10).collect::<Vec<u64>>());
        let union = Query {
            seq_ids: vec![25, 1],
            seq_id_range: Some((20, 30)),
            ..Query::default()
        };
        let capped = store.query("n", &union, 3).unwrap();
        assert_eq!(seqs(&capped), vec![1, 20, 21]);
        assert!(capped.truncated);
        let exact = store.query("n", &Query::range(1, 3), 3).unwrap();
        assert!(!exact.truncated);
    }

    #[test]
    fn long_id_lists_are_chunked() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path(), "n", 5);
        let q = Query {
            seq_ids: (0..2_000).rev().collect(),
            ..Query::default()
        };
        assert_eq!(
            seqs(&store.query("n", &q, 100).unwrap()),
            vec![1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn bad_envelopes_are_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ReplayStore::open(&dir.path().join("s.sqlite")).unwrap();
        assert!(matches!(
            store.add("n", &mut json!([1])),
            Err(StoreError::NotAnObject)
        ));
        let mut no_topic = json!({"msg": 1, "seq_id": 4});
        assert!(matches!(
            store.add("n", &mut no_topic),
            Err(StoreError::NoTopic)
        ));
        assert_eq!(no_topic["seq_id"], 4);
        assert_eq!(store.last_seq_id("n").unwrap(), None);
    }

    #[test]
    fn not_a_database_or_another_schema_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.sqlite");
        std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
        let err = ReplayStore::open(&garbage).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
        let future = dir.path().join("future.sqlite");
        drop(ReplayStore::open(&future).unwrap());
        Connection::open(&future)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        let err = ReplayStore::open(&future).unwrap_err();
        assert!(matches!(err, StoreError::Schema { found: 7, .. }), "{err}");
    }
}
