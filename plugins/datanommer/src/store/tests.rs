//! Store behaviour on SQLite (PostgreSQL is covered by the end-to-end
//! tests in `tests/tests/datanommer.rs`, which start a server).

use serde_json::json;

use super::*;

fn row(topic: &str, msg_id: &str, ts: i64, msg: Value) -> Row {
    let envelope = json!({"topic": topic, "msg_id": msg_id, "timestamp": ts, "i": 1, "username": "u", "msg": msg});
    Row::from_json(topic, &envelope.to_string(), 0).unwrap()
}

fn sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&DbUrl::Sqlite(dir.path().join("sub/dn.db")), true).unwrap();
    (dir, store)
}

fn ids(store: &mut Store, q: &Query) -> Vec<String> {
    store
        .messages(q)
        .unwrap()
        .into_iter()
        .map(|m| m.msg_id.unwrap_or_default())
        .collect()
}

#[test]
fn urls() {
    assert_eq!(
        DbUrl::parse("sqlite:////var/lib/x.db").unwrap(),
        DbUrl::Sqlite("/var/lib/x.db".into())
    );
    assert_eq!(
        DbUrl::parse("sqlite:///x.db").unwrap(),
        DbUrl::Sqlite("x.db".into())
    );
    assert_eq!(
        DbUrl::parse("postgresql+psycopg2://u:secret@h:5/db").unwrap(),
        DbUrl::Postgres("postgresql://u:secret@h:5/db".into())
    );
    assert_eq!(
        DbUrl::parse("postgres://u@h/db").unwrap().redacted(),
        "postgresql://u@h/db"
    );
    assert_eq!(
        DbUrl::parse("postgresql://u:secret@h:5/db")
            .unwrap()
            .redacted(),
        "postgresql://u:***@h:5/db"
    );
    for bad in [
        "sqlite://",
        "sqlite:///",
        "mysql://h/db",
        "nothing",
        "postgresql://",
    ] {
        assert!(DbUrl::parse(bad).is_err(), "{bad}");
    }
    let err = DbUrl::parse("mysql://u:pw@h/db").unwrap_err().to_string();
    assert!(!err.contains("pw"), "{err}");
}

#[test]
fn schema_has_datanommer_tables_and_indexes() {
    let (dir, _store) = sqlite();
    let conn = rusqlite::Connection::open(dir.path().join("sub/dn.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
        .unwrap();
    let names: Vec<String> = stmt
        .query_map([], |r| {
            Ok(format!(
                "{}:{}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        names,
        [
            "index:ix_messages_msg_id",
            "index:ix_messages_timestamp",
            "index:ix_package_messages_msg",
            "index:ix_user_messages_msg",
            "index:messages_category_id",
            "index:messages_topic_id",
            "table:messages",
            "table:package",
            "table:package_messages",
            "table:user",
            "table:user_messages",
        ]
    );
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // Opening again (schema already there) is fine; opening a missing file
    // without `create` is not.
    Store::open(&DbUrl::Sqlite(dir.path().join("sub/dn.db")), true).unwrap();
    assert!(Store::open(&DbUrl::Sqlite(dir.path().join("missing.db")), false).is_err());
}

#[test]
fn duplicates_are_skipped_within_and_across_batches() {
    let (_dir, mut store) = sqlite();
    let batch = vec![
        row("a.b.c.x.y", "m1", 10, json!({})),
        row("a.b.c.x.y", "m2", 11, json!({})),
        row("a.b.c.x.y", "m1", 12, json!({"again": true})),
    ];
    let done = store.insert_batch(&batch).unwrap();
    assert_eq!(
        done,
        Inserted {
            inserted: 2,
            duplicates: vec![2]
        }
    );
    let done = store
        .insert_batch(&[
            row("a.b.c.x.y", "m2", 13, json!({})),
            row("a.b.c.x.y", "m3", 14, json!({})),
        ])
        .unwrap();
    assert_eq!(
        done,
        Inserted {
            inserted: 1,
            duplicates: vec![0]
        }
    );
    let all = store.messages(&Query::default()).unwrap();
    assert_eq!(all.len(), 3);
    // The first m1 won.
    assert_eq!(all[0].msg, "{}");
    assert_eq!(all[0].timestamp, 10 * time::MICROS);
}

#[test]
fn columns_links_and_datagrepper_shape() {
    let (_dir, mut store) = sqlite();
    let body = r#"{"topic":"org.fedoraproject.prod.copr.build.start","i":7,"msg_id":"2017-x","timestamp":1504643075,
        "username":"copr","crypto":"x509","signature":"sig\n","certificate":"cert\n",
        "msg":{"user":"dvdmuckle","pkg":"minsh","f":0.1,"n":12345678901234567890123,"s":"h\u00e9 \u2603"}}"#;
    let envelope: Value = serde_json::from_str(body).unwrap();
    let r = Row::from_json("org.fedoraproject.prod.copr.build.start", body, 0).unwrap();
    store.insert_batch(&[r]).unwrap();
    let m = store.messages(&Query::default()).unwrap().remove(0);
    assert_eq!(m.msg_id.as_deref(), Some("2017-x"));
    assert_eq!(m.i, 7);
    assert_eq!(m.category, "copr");
    assert_eq!(m.timestamp, 1_504_643_075 * time::MICROS);
    assert_eq!(m.source_name.as_deref(), Some("datanommer"));
    assert_eq!(m.source_version.as_deref(), Some(SOURCE_VERSION));
    assert_eq!(m.headers, None);
    assert_eq!(
        store.links(m.id).unwrap(),
        (vec!["dvdmuckle".to_string()], vec!["minsh".to_string()])
    );
    let served = m.to_datagrepper().unwrap();
    assert_eq!(served["timestamp"].to_string(), "1504643075.0");
    assert_eq!(served["headers"], json!({}));
    assert_eq!(served["source_name"], "datanommer");
    assert_eq!(served["msg"]["n"].to_string(), "12345678901234567890123");
    assert_eq!(served["msg"]["f"].to_string(), "0.1");
    assert_eq!(served["msg"]["s"], "h\u{e9} \u{2603}");
    // Everything the publisher sent comes back, nothing else but the
    // three datagrepper additions.
    let mut expected = envelope.clone();
    let map = expected.as_object_mut().unwrap();
    map.insert("source_name".into(), json!("datanommer"));
    map.insert("source_version".into(), json!(SOURCE_VERSION));
    map.insert("headers".into(), json!({}));
    map.insert("timestamp".into(), float(1504643075.0));
    assert_eq!(served, expected);

    // Unsigned: no null certificate/signature/crypto keys.
    store
        .insert_batch(&[Row::from_json(
            "t",
            &json!({"topic": "t", "msg_id": "plain", "msg": {}, "headers": {"h": [1]}}).to_string(),
            5,
        )
        .unwrap()])
        .unwrap();
    let q = Query {
        msg_ids: vec!["plain".into()],
        ..Query::default()
    };
    let plain = store
        .messages(&q)
        .unwrap()
        .remove(0)
        .to_datagrepper()
        .unwrap();
    let keys: Vec<&String> = plain.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "headers",
            "i",
            "msg",
            "msg_id",
            "source_name",
            "source_version",
            "timestamp",
            "topic"
        ]
    );
    assert_eq!(plain["headers"], json!({"h": [1]}));
    assert_eq!(plain["timestamp"].to_string(), "5e-6");
}

#[test]
fn filters_and_paging() {
    let (_dir, mut store) = sqlite();
    let mut batch = Vec::new();
    for n in 0..30 {
        let (topic, msg) = match n % 3 {
            0 => (
                "org.fedoraproject.prod.bodhi.update.comment",
                json!({"agent": "alice", "update": {"builds": [{"nvr": "kernel-6.1-1"}]}}),
            ),
            1 => (
                "org.fedoraproject.prod.copr.build.end",
                json!({"user": "bob", "pkg": "minsh", "what": "50%_done"}),
            ),
            _ => (
                "org.fedoraproject.prod.git.receive",
                json!({"commit": {"username": "alice", "repo": "minsh"}}),
            ),
        };
        // Two messages per second: ties on timestamp are ordered by id.
        batch.push(row(topic, &format!("m{n:02}"), 1000 + n / 2, msg));
    }
    store.insert_batch(&batch).unwrap();
    let all: Vec<String> = (0..30).map(|n| format!("m{n:02}")).collect();
    assert_eq!(ids(&mut store, &Query::default()), all);
    let desc = Query {
        order: Order::Desc,
        ..Query::default()
    };
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(ids(&mut store, &desc), reversed);

    // Paging in both orders covers everything exactly once.
    for order in [Order::Asc, Order::Desc] {
        let mut seen = Vec::new();
        for page in 0..5 {
            let q = Query {
                order,
                limit: Some(7),
                offset: page * 7,
                ..Query::default()
            };
            seen.extend(ids(&mut store, &q));
        }
        if order == Order::Desc {
            seen.reverse();
        }
        assert_eq!(seen, all);
    }

    let count = |store: &mut Store, q: Query| {
        let n = store.count(&q).unwrap();
        assert_eq!(n as usize, ids(store, &q).len());
        n
    };
    let q = |f: fn(&mut Query)| {
        let mut q = Query::default();
        f(&mut q);
        q
    };
    assert_eq!(
        count(
            &mut store,
            q(|q| q.topics = vec!["org.fedoraproject.prod.git.receive".into()])
        ),
        10
    );
    assert_eq!(
        count(
            &mut store,
            q(|q| q.topics = vec![
                "org.fedoraproject.prod.git.receive".into(),
                "org.fedoraproject.prod.copr.build.end".into()
            ])
        ),
        20
    );
    assert_eq!(
        count(&mut store, q(|q| q.categories = vec!["bodhi".into()])),
        10
    );
    assert_eq!(
        count(&mut store, q(|q| q.not_categories = vec!["bodhi".into()])),
        20
    );
    assert_eq!(count(&mut store, q(|q| q.users = vec!["alice".into()])), 20);
    assert_eq!(
        count(&mut store, q(|q| q.not_users = vec!["alice".into()])),
        10
    );
    assert_eq!(
        count(&mut store, q(|q| q.packages = vec!["minsh".into()])),
        20
    );
    assert_eq!(
        count(&mut store, q(|q| q.packages = vec!["kernel".into()])),
        10
    );
    assert_eq!(
        count(
            &mut store,
            q(|q| {
                q.packages = vec!["minsh".into()];
                q.users = vec!["bob".into()];
            })
        ),
        10
    );
    assert_eq!(
        count(
            &mut store,
            q(|q| q.not_packages = vec!["minsh".into(), "kernel".into()])
        ),
        0
    );
    // LIKE wildcards in `contains` are literal.
    assert_eq!(
        count(&mut store, q(|q| q.contains = vec!["50%_done".into()])),
        10
    );
    assert_eq!(count(&mut store, q(|q| q.contains = vec!["5_%".into()])), 0);
    // Inclusive time range: seconds 1001..=1002 hold m02..m05.
    let ranged = Query {
        start: Some(1001 * time::MICROS),
        end: Some(1002 * time::MICROS),
        ..Query::default()
    };
    assert_eq!(ids(&mut store, &ranged), ["m02", "m03", "m04", "m05"]);

    assert_eq!(
        store.counts(GroupBy::Category, None).unwrap(),
        [
            ("bodhi".to_string(), 10),
            ("copr".to_string(), 10),
            ("git".to_string(), 10)
        ]
    );
    assert_eq!(
        store.counts(GroupBy::Topic, Some("copr")).unwrap(),
        [("org.fedoraproject.prod.copr.build.end".to_string(), 10)]
    );
    assert_eq!(store.categories().unwrap(), ["bodhi", "copr", "git"]);
}

#[test]
fn hostile_values_are_data() {
    let (_dir, mut store) = sqlite();
    let evil = "x'); DROP TABLE messages; --";
    store
        .insert_batch(&[row(evil, evil, 1, json!({"agent": evil}))])
        .unwrap();
    let q = Query {
        topics: vec![evil.into()],
        users: vec![evil.into()],
        ..Query::default()
    };
    assert_eq!(ids(&mut store, &q), [evil]);
}
