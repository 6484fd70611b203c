//! The plugin driven directly (no hub), on SQLite.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use fedmsg_plugin_api::serde_json::{json, Value};

use super::*;
use crate::store::Query;
use crate::writer::StatsSnapshot;

fn config(section: Value) -> PluginConfig {
    PluginConfig::new(json!({ "datanommer": section }), "datanommer")
}

fn envelope(topic: &str, msg_id: &str, ts: i64) -> String {
    json!({"topic": topic, "msg_id": msg_id, "timestamp": ts, "i": 1, "username": "u",
           "msg": {"agent": "ralph", "package": "kernel"}})
    .to_string()
}

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap())
}

#[test]
fn settings() {
    let s = Settings::from_config(&config(json!({})), Path::new("/state")).unwrap();
    assert_eq!(s.url, DbUrl::Sqlite("/state/datanommer.db".into()));
    assert_eq!(s.http_listen, None);
    assert_eq!(s.writer.batch_size, 1000);
    assert_eq!(s.writer.flush_interval, Duration::from_millis(250));
    let s = Settings::from_config(
        &config(json!({"sqlalchemy": {"url": "postgresql://u@h:1/d"}, "flush_interval": 1, "http_listen": "127.0.0.1:0"})),
        Path::new("/state"),
    )
    .unwrap();
    assert_eq!(s.url, DbUrl::Postgres("postgresql://u@h:1/d".into()));
    assert_eq!(s.writer.flush_interval, Duration::from_secs(1));
    assert_eq!(s.http_listen.as_deref(), Some("127.0.0.1:0"));

    for (bad, mention) in [
        (json!({"url": "mysql://x/y"}), "datanommer.url"),
        (json!({"batch_size": 0}), "datanommer.batch_size"),
        (json!({"batch_size": "many"}), "datanommer.batch_size"),
        (json!({"flush_interval": -1.0}), "datanommer.flush_interval"),
    ] {
        let err = Settings::from_config(&config(bad.clone()), Path::new("/s")).unwrap_err();
        assert!(err.to_string().contains(mention), "{bad}: {err}");
    }
}

#[test]
fn stores_serves_and_commits_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = HubContext::detached("fedmsg-datanommer", dir.path());
    // A long flush interval and a large batch: only shutdown commits.
    let cfg =
        config(json!({"http_listen": "127.0.0.1:0", "flush_interval": 60.0, "batch_size": 100000}));
    let mut plugin = Datanommer::new(&cfg, ctx).unwrap();
    let addr = plugin.http_addr().unwrap();
    let topic = "org.fedoraproject.prod.bodhi.update.comment";
    let bodies: Vec<String> = (0..10)
        .map(|n| envelope(topic, &format!("m{n}"), 1000 + n))
        .collect();
    for (n, body) in bodies.iter().enumerate() {
        let id = format!("m{n}");
        plugin
            .consume(&Message::new(topic, body).with_msg_id(&id))
            .unwrap();
    }
    // Duplicate delivery.
    plugin.consume(&Message::new(topic, &bodies[0])).unwrap();
    let (status, page) = get(addr, "/raw?start=0&end=2000");
    assert_eq!(status, 200);
    assert_eq!(page["total"], 0, "nothing committed yet: {page}");
    plugin.shutdown();
    assert_eq!(
        plugin.stats().snapshot(),
        StatsSnapshot {
            inserted: 10,
            duplicates: 1,
            ..StatsSnapshot::default()
        }
    );

    let mut store = Store::open(&DbUrl::Sqlite(dir.path().join("datanommer.db")), false).unwrap();
    assert_eq!(store.count(&Query::default()).unwrap(), 10);

    // The server is gone after shutdown.
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
}

#[test]
fn http_pages_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = HubContext::detached("fedmsg-datanommer", dir.path());
    let cfg = config(json!({"http_listen": "127.0.0.1:0", "flush_interval": 0.01}));
    let mut plugin = Datanommer::new(&cfg, ctx).unwrap();
    let addr = plugin.http_addr().unwrap();
    for n in 0..25 {
        let topic = if n % 5 == 0 {
            "org.fedoraproject.prod.koji.x"
        } else {
            "org.fedoraproject.prod.bodhi.y"
        };
        let body = envelope(topic, &format!("m{n:02}"), 1000 + n);
        plugin.consume(&Message::new(topic, &body)).unwrap();
    }
    let stored = fedmsg_plugin_api::serde_json::json!(25);
    let mut page = Value::Null;
    for _ in 0..500 {
        page = get(addr, "/raw?start=1000&end=1024&rows_per_page=10&order=asc").1;
        if page["total"] == stored {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(page["total"], 25, "{page}");
    assert_eq!(page["pages"], 3);
    assert_eq!(page["count"], 10);
    assert_eq!(page["raw_messages"][0]["msg_id"], "m00");
    assert_eq!(page["raw_messages"][0]["timestamp"].to_string(), "1000.0");
    assert_eq!(page["arguments"]["rows_per_page"], 10);
    let last = get(
        addr,
        "/raw?start=1000&end=1024&rows_per_page=10&order=asc&page=3",
    )
    .1;
    assert_eq!(last["count"], 5);
    assert_eq!(last["raw_messages"][4]["msg_id"], "m24");
    let koji = get(
        addr,
        "/raw?start=0&end=2000&category=koji&rows_per_page=100",
    )
    .1;
    assert_eq!(koji["total"], 5);
    assert_eq!(koji["raw_messages"][0]["msg_id"], "m20", "desc by default");
    let (status, err) = get(addr, "/raw?rows_per_page=1000");
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("rows_per_page"));
    let (status, one) = get(addr, "/id?id=m07");
    assert_eq!((status, one["msg_id"].as_str()), (200, Some("m07")));
    assert_eq!(get(addr, "/id?id=nope").0, 404);
    plugin.shutdown();
}

#[test]
fn an_unopenable_sqlite_database_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();
    let cfg = config(json!({"url": format!("sqlite:///{}/sub/x.db", file.display())}));
    let err = Datanommer::new(&cfg, HubContext::detached("d", dir.path()))
        .err()
        .unwrap();
    assert!(err.to_string().contains("cannot open"), "{err}");
}

#[test]
fn a_full_queue_refuses_messages() {
    let dir = tempfile::tempdir().unwrap();
    // Hold the database locked so that the writer cannot drain its queue.
    let path = dir.path().join("datanommer.db");
    let cfg = config(
        json!({"queue_capacity": 3, "batch_size": 1, "flush_interval": 0.0, "shutdown_timeout": 30.0}),
    );
    let mut plugin = Datanommer::new(&cfg, HubContext::detached("d", dir.path())).unwrap();
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let topic = "a.b.c.d";
    let mut refused = 0;
    for n in 0..10 {
        let body = envelope(topic, &format!("m{n}"), n);
        if plugin.consume(&Message::new(topic, &body)).is_err() {
            refused += 1;
        }
    }
    // The writer holds at most one row, the queue three.
    assert!(refused >= 6, "refused {refused}");
    blocker.execute_batch("COMMIT").unwrap();
    plugin.shutdown();
    let s = plugin.stats().snapshot();
    assert_eq!((s.inserted + s.overflowed, s.failed, s.lost), (10, 0, 0));
    assert_eq!(s.overflowed, refused);
}

#[test]
fn a_locked_database_is_retried_and_a_poisonous_row_costs_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dn.db");
    let url = DbUrl::Sqlite(path.clone());
    let store = Store::open(&url, true).unwrap();
    // A trigger that refuses one topic stands in for a value the database
    // rejects (PostgreSQL refuses NUL characters, for instance).
    let admin = rusqlite::Connection::open(&path).unwrap();
    admin
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.topic = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisonous'); END;",
        )
        .unwrap();
    let config = WriterConfig {
        batch_size: 50,
        flush_interval: Duration::from_millis(20),
        queue_capacity: 1000,
        shutdown_timeout: Duration::from_secs(30),
    };
    let mut writer = Writer::spawn(url.clone(), Some(store), config).unwrap();
    // Lock the database for longer than the writer's busy timeout (5 s).
    admin.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for n in 0..20 {
        let topic = if n == 7 { "poison" } else { "a.b.c.d" };
        let body = envelope(topic, &format!("m{n}"), n);
        writer
            .submit(Row::from_json(topic, &body, 0).unwrap())
            .unwrap();
    }
    std::thread::sleep(Duration::from_secs(6));
    admin.execute_batch("COMMIT").unwrap();
    writer.shutdown();
    let s = writer.stats().snapshot();
    assert_eq!(
        (s.inserted, s.duplicates, s.failed, s.overflowed, s.lost),
        (19, 0, 1, 0, 0)
    );
    assert!(s.retries >= 1, "the lock should have caused a retry");
    let mut store = Store::open(&url, false).unwrap();
    assert_eq!(store.count(&Query::default()).unwrap(), 19);
}
