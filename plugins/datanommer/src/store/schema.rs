//! datanommer's schema (models 0.9.1 plus the later alembic indexes and
//! primary keys of the link tables), for SQLite and PostgreSQL.
//!
//! Differences from datanommer, on purpose: `messages.id` and the link
//! tables' `msg` are 64-bit (`BIGSERIAL`/`BIGINT` in PostgreSQL; SQLite's
//! `INTEGER` is 64-bit anyway) so that a long-lived store cannot overflow
//! them; `i` is `BIGINT` for the same reason. Every statement is
//! idempotent, so the schema is (re)checked on every connection.

/// SQLite: `timestamp` holds SQLAlchemy's text form
/// (`YYYY-MM-DD HH:MM:SS.ffffff`, UTC), which sorts as time.
pub const SQLITE: &str = r#"
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    msg_id TEXT,
    i INTEGER NOT NULL,
    topic TEXT NOT NULL,
    timestamp DATETIME NOT NULL,
    certificate TEXT,
    signature TEXT,
    category TEXT NOT NULL,
    username TEXT,
    crypto TEXT,
    source_name TEXT DEFAULT 'datanommer',
    source_version TEXT,
    _msg TEXT NOT NULL,
    _headers TEXT
);
CREATE TABLE IF NOT EXISTS "user" (
    name TEXT NOT NULL PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS package (
    name TEXT NOT NULL PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS user_messages (
    username TEXT NOT NULL REFERENCES "user" (name),
    msg INTEGER NOT NULL REFERENCES messages (id),
    CONSTRAINT user_messages_pkey PRIMARY KEY (username, msg)
);
CREATE TABLE IF NOT EXISTS package_messages (
    package TEXT NOT NULL REFERENCES package (name),
    msg INTEGER NOT NULL REFERENCES messages (id),
    CONSTRAINT package_messages_pkey PRIMARY KEY (package, msg)
);
"#;

/// PostgreSQL. `toast_tuple_target = 8160`: a signed message is ~4 KiB
/// (certificate and signature are base64, which hardly compresses), so
/// with the default 2 KiB target nearly every row would be compressed in
/// vain and moved to the TOAST table (a second heap and index insert);
/// rows below 8 KiB now stay in the table's own pages.
pub const POSTGRES: &str = r#"
CREATE TABLE IF NOT EXISTS messages (
    id BIGSERIAL PRIMARY KEY,
    msg_id TEXT,
    i BIGINT NOT NULL,
    topic TEXT NOT NULL,
    timestamp TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    certificate TEXT,
    signature TEXT,
    category TEXT NOT NULL,
    username TEXT,
    crypto TEXT,
    source_name TEXT DEFAULT 'datanommer',
    source_version TEXT,
    _msg TEXT NOT NULL,
    _headers TEXT
) WITH (toast_tuple_target = 8160);
CREATE TABLE IF NOT EXISTS "user" (
    name TEXT NOT NULL PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS package (
    name TEXT NOT NULL PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS user_messages (
    username TEXT NOT NULL REFERENCES "user" (name),
    msg BIGINT NOT NULL REFERENCES messages (id),
    CONSTRAINT user_messages_pkey PRIMARY KEY (username, msg)
);
CREATE TABLE IF NOT EXISTS package_messages (
    package TEXT NOT NULL REFERENCES package (name),
    msg BIGINT NOT NULL REFERENCES messages (id),
    CONSTRAINT package_messages_pkey PRIMARY KEY (package, msg)
);
"#;

/// The indexes, the same in both databases: datanommer's (`msg_id` unique,
/// `timestamp`, and the alembic-era `messages_topic_id` and
/// `messages_category_id`), plus one on each link table's `msg` so that a
/// message's users and packages are found without a scan.
///
/// datanommer's single-column `index_msg_topic` and `index_msg_category`
/// are left out on purpose: `(topic, id)` and `(category, id)` serve every
/// query they would (in SQLite an index on `(topic)` *is* one on
/// `(topic, rowid)`), and each index costs every insert.
pub const INDEXES: &str = r#"
CREATE UNIQUE INDEX IF NOT EXISTS ix_messages_msg_id ON messages (msg_id);
CREATE INDEX IF NOT EXISTS ix_messages_timestamp ON messages (timestamp);
CREATE INDEX IF NOT EXISTS messages_topic_id ON messages (topic, id);
CREATE INDEX IF NOT EXISTS messages_category_id ON messages (category, id);
CREATE INDEX IF NOT EXISTS ix_user_messages_msg ON user_messages (msg);
CREATE INDEX IF NOT EXISTS ix_package_messages_msg ON package_messages (msg);
"#;
