//! Sustained insert rate of the datanommer plugin into SQLite and
//! PostgreSQL: the plugin's own `consume` (envelope parsing, category,
//! users/packages) feeding its writer thread, until `shutdown` has
//! committed the last batch.
//!
//! ```text
//! cargo bench -p fedmsg-datanommer --bench insert -- [--messages N] [--sqlite-only | --pg-only] [--pg-url URL]
//! ```
//!
//! The messages are the 25 production messages of
//! `shared/vectors/upstream/sample_datanommer_response.json` (signed,
//! ~3 KiB each), repeated with fresh `msg_id`s. PostgreSQL: `--pg-url`
//! (default `postgresql://postgres@127.0.0.1:5432/postgres`) is used to
//! (re)create a database `datanommer_bench`, which is dropped afterwards.

use std::time::{Duration, Instant};

use fedmsg_datanommer::store::Query;
use fedmsg_datanommer::{DbUrl, Row, Store};
use fedmsg_plugin_api::{ConsumerPlugin, HubContext, Message, PluginConfig};
use serde_json::{json, Value};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let messages: usize = value("--messages")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let pg_url =
        value("--pg-url").unwrap_or_else(|| "postgresql://postgres@127.0.0.1:5432/postgres".into());
    let bodies = bodies(messages);
    println!(
        "datanommer insert benchmark: {messages} messages, mean body {} bytes",
        bodies.iter().map(|(_, b)| b.len()).sum::<usize>() / bodies.len().max(1)
    );

    if !flag("--pg-only") {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:///{}", dir.path().join("bench.db").display());
        report("SQLite", &url, &bodies, dir.path());
    }
    if !flag("--sqlite-only") {
        match bench_database(&pg_url) {
            Ok(url) => {
                let dir = tempfile::tempdir().expect("tempdir");
                report("PostgreSQL", &url, &bodies, dir.path());
                if let Err(e) = drop_database(&pg_url) {
                    eprintln!("could not drop datanommer_bench: {e}");
                }
            }
            Err(e) => eprintln!(
                "PostgreSQL skipped: cannot prepare a database at {pg_url}: {}",
                fedmsg_datanommer::StoreError::from(e)
            ),
        }
    }
}

fn report(name: &str, url: &str, bodies: &[(String, String)], state: &std::path::Path) {
    let config = PluginConfig::new(
        json!({"datanommer": {"url": url, "queue_capacity": bodies.len() + 1, "batch_size": 1000, "flush_interval": 0.05,
                               "shutdown_timeout": 60.0}}),
        "datanommer",
    );
    let started = Instant::now();
    let mut plugin =
        fedmsg_datanommer::Datanommer::new(&config, HubContext::detached("bench", state))
            .expect("plugin starts");
    let setup = started.elapsed();
    let started = Instant::now();
    for (topic, body) in bodies {
        plugin.consume(&Message::new(topic, body)).expect("consume");
    }
    let consumed = started.elapsed();
    plugin.shutdown();
    let total = started.elapsed();
    let s = plugin.stats().snapshot();
    assert_eq!(
        (
            s.inserted as usize,
            s.duplicates,
            s.failed,
            s.overflowed,
            s.lost
        ),
        (bodies.len(), 0, 0, 0, 0),
        "every message stored once"
    );
    let mut store = Store::open(&DbUrl::parse(url).expect("url"), false).expect("open");
    assert_eq!(
        store.count(&Query::default()).expect("count") as usize,
        bodies.len()
    );
    // The database side alone: the same rows (new ids) in 1000-row batches.
    let rows: Vec<Row> = bodies
        .iter()
        .map(|(topic, body)| {
            let mut row = Row::from_json(topic, body, 0).expect("row");
            row.msg_id.push_str("-again");
            row
        })
        .collect();
    let writing = Instant::now();
    for chunk in rows.chunks(1000) {
        store.insert_batch(chunk).expect("insert");
    }
    let store_rate = rows.len() as f64 / writing.elapsed().as_secs_f64();
    let rate = |d: Duration| bodies.len() as f64 / d.as_secs_f64();
    println!(
        "{name:>10}: {:>8.0} msg/s sustained ({} messages committed in {:.2} s; consume side {:.0} msg/s; \
         database side alone {:.0} msg/s; setup {:.0} ms)",
        rate(total),
        bodies.len(),
        total.as_secs_f64(),
        rate(consumed),
        store_rate,
        setup.as_secs_f64() * 1e3
    );
}

/// (topic, envelope text) pairs: the fixture's messages with unique ids.
fn bodies(n: usize) -> Vec<(String, String)> {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vectors/upstream/sample_datanommer_response.json"
    );
    let templates: Vec<Value> = std::fs::read_to_string(fixture)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|v| v["raw_messages"].as_array().cloned())
        .unwrap_or_else(|| {
            eprintln!("fixture not found at {fixture}; using synthetic messages");
            vec![json!({"topic": "org.fedoraproject.prod.bodhi.update.comment", "i": 1, "timestamp": 1504643075,
                        "username": "bodhi", "msg": {"agent": "ralph", "update": {"builds": [{"nvr": "kernel-6.1-1.fc40"}]}}})]
        });
    (0..n)
        .map(|k| {
            let mut m = templates[k % templates.len()].clone();
            if let Some(map) = m.as_object_mut() {
                map.remove("source_name");
                map.remove("source_version");
                map.insert("msg_id".into(), json!(format!("2017-bench-{k:010}")));
                map.insert("timestamp".into(), json!(1_504_643_075 + (k / 100) as i64));
            }
            let topic = m["topic"].as_str().unwrap_or("t").to_owned();
            (topic, m.to_string())
        })
        .collect()
}

fn bench_database(admin_url: &str) -> Result<String, postgres::Error> {
    let mut client = postgres::Client::connect(admin_url, postgres::NoTls)?;
    // Two calls: CREATE DATABASE cannot run inside the implicit
    // transaction of a multi-statement string.
    client.batch_execute("DROP DATABASE IF EXISTS datanommer_bench")?;
    client.batch_execute("CREATE DATABASE datanommer_bench")?;
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url, |(base, _)| base);
    Ok(format!("{base}/datanommer_bench"))
}

fn drop_database(admin_url: &str) -> Result<(), postgres::Error> {
    let mut client = postgres::Client::connect(admin_url, postgres::NoTls)?;
    client.batch_execute("DROP DATABASE IF EXISTS datanommer_bench")
}
