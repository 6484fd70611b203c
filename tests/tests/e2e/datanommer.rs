//! The datanommer plugin through a real `fedmsg-hub`: messages published
//! on the bus end up in SQLite and PostgreSQL with every column right,
//! users/packages linked, duplicates skipped; a PostgreSQL outage loses
//! nothing; `/raw` pages and filters exactly; the `datanommer` command
//! reads both databases; and the real Python fedmsg's datagrepper catch-up
//! (fedmsg's "backlog")
//! code reads back every message byte-for-byte as it was signed.
//!
//! PostgreSQL: the machine's server on 127.0.0.1:5432 when it answers,
//! else a throwaway cluster (`fedmsg_e2e::pg`); the outage test always
//! uses its own cluster. Python: `$VENV` (default ~/.cache/pyfedmsg-venv,
//! made by shared/pyfedmsg/setup.sh); missing → failure unless
//! `FEDMSG_SKIP_PYTHON=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fedmsg_e2e::pg::{self, free_port, http_get_json};
use fedmsg_e2e::{binary, wait_until, workspace_root, Hub, Publisher, Sandbox, WAIT};
use serde_json::{json, Value};

const PLUGIN: &str = "fedmsg-datanommer";

/// A database the test can read with plain SQL.
enum Db {
    Sqlite(rusqlite::Connection),
    Pg(postgres::Client),
}

impl Db {
    fn open(url: &str) -> Result<Db> {
        Ok(match url.strip_prefix("sqlite:///") {
            Some(path) => Db::Sqlite(rusqlite::Connection::open(path)?),
            None => Db::Pg(postgres::Client::connect(url, postgres::NoTls)?),
        })
    }

    /// Rows of a query whose columns are all text (or NULL).
    fn rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        Ok(match self {
            Db::Sqlite(c) => {
                let mut stmt = c.prepare(sql)?;
                let n = stmt.column_count();
                let rows = stmt.query_map([], |r| {
                    (0..n).map(|i| r.get::<_, Option<String>>(i)).collect()
                })?;
                rows.collect::<Result<_, _>>()?
            }
            Db::Pg(c) => c
                .query(sql, &[])?
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.get::<_, Option<String>>(i))
                        .collect()
                })
                .collect(),
        })
    }

    fn count(&mut self, sql: &str) -> Result<usize> {
        let rows = self.rows(sql)?;
        let text = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .context("no count")?;
        Ok(text.parse()?)
    }
}

/// Polls the number of stored messages until it reaches `n` (bounded).
fn wait_stored(url: &str, n: usize, timeout: Duration) -> Result<()> {
    let mut last = 0;
    let ok = wait_until(timeout, || {
        last = Db::open(url)
            .and_then(|mut db| db.count("SELECT CAST(COUNT(*) AS TEXT) FROM messages"))
            .unwrap_or(last);
        last >= n
    });
    ensure!(ok, "{last} of {n} messages stored after {timeout:?}");
    Ok(())
}

/// A sandbox with the datanommer plugin configured on `url`.
fn setup(publisher: &Publisher, url: &str, extra: &str) -> Result<Sandbox> {
    let sandbox = Sandbox::new()?;
    sandbox.add_plugin(PLUGIN)?;
    // dedup_window = 0: the duplicate must reach the plugin, whose own
    // skipping of a known msg_id is under test.
    let config = format!(
        "dedup_window = 0\n{}\n[datanommer]\nenabled = true\nurl = {url:?}\nflush_interval = 0.05\n{extra}",
        sandbox.base_config(publisher.endpoint()),
    );
    sandbox.write_config("base.toml", &config)?;
    Ok(sandbox)
}

fn sqlite_url(sandbox_dir: &tempfile::TempDir) -> String {
    format!("sqlite:///{}", sandbox_dir.path().join("dn.db").display())
}

/// The 25 signed production messages of the datagrepper fixture, as they
/// were published (reference §3.8's fix applied).
fn fixture_messages() -> Result<Vec<Value>> {
    let path = workspace_root().join("../shared/vectors/upstream/sample_datanommer_response.json");
    let page: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?,
    )?;
    let mut out = Vec::new();
    for m in page["raw_messages"].as_array().context("raw_messages")? {
        let mut m = m.clone();
        let map = m.as_object_mut().context("object")?;
        map.remove("source_name");
        map.remove("source_version");
        if map.get("headers").is_some_and(|h| h == &json!({})) {
            map.remove("headers");
        }
        let ts = map["timestamp"].as_f64().context("timestamp")?;
        map.insert("timestamp".into(), json!(ts as i64));
        out.push(m);
    }
    Ok(out)
}

/// Messages that exercise every column rule.
fn synthetic_messages() -> Result<Vec<Value>> {
    let payload: Value = serde_json::from_str(
        r#"{"agent":"bowlofeggs","update":{"user":{"name":"bowlofeggs"},"builds":[{"nvr":"python-foo-1.0-1.fc40"},{"nvr":"kernel-6.1.0-1.fc40"}]},
            "big":12345678901234567890123,"floats":[0.1,1e-07,1e+22,2.0,-0.0,1504642719.23539],
            "text":"h\u00e9llo \u2603 \ud834\udd1e \"q\" \\ / \n","nested":{"z":[{"b":null,"a":true}]}}"#,
    )?;
    Ok(vec![
        json!({"topic": "org.fedoraproject.prod.bodhi.update.comment", "msg_id": "2026-synthetic-bodhi",
               "timestamp": 1_700_000_000.25, "i": 42, "username": "apache",
               "headers": {"x-priority": 3}, "msg": payload}),
        // No msg_id, no i: datanommer makes one and uses 0.
        json!({"topic": "org.fedoraproject.prod.fas.user.create", "timestamp": 1_700_000_001,
               "username": "fas", "msg": {"user": "newbie"}}),
        json!({"topic": "/topic/VirtualTopic.eng.ci.koji-build.test.complete", "msg_id": "2026-synthetic-ci",
               "timestamp": 1_700_000_002, "i": 1, "username": "jenkins", "msg": {}}),
        json!({"topic": "short.topic", "msg_id": "2026-synthetic-short", "timestamp": 1_700_000_003,
               "i": 2, "username": "root", "msg": {"log": "Hello world"}}),
    ])
}

fn send_all(publisher: &Publisher, messages: &[Value]) -> Result<()> {
    for m in messages {
        let topic = m["topic"].as_str().context("topic")?;
        publisher.send_frames(&[topic.as_bytes(), m.to_string().as_bytes()])?;
    }
    Ok(())
}

/// The JSON text of a value: compares numbers by their exact text (an
/// integer and a float of equal value differ, as they do when signed).
fn json_text(v: &Value) -> String {
    v.to_string()
}

/// Normalizes a stored timestamp's text (SQLite keeps six fraction
/// digits, PostgreSQL drops trailing zeros).
fn stamp(text: &str) -> String {
    let t = text.replace('T', " ");
    match t.split_once('.') {
        Some((whole, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                whole.to_owned()
            } else {
                format!("{whole}.{frac}")
            }
        }
        None => t,
    }
}

fn datanommer(url: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(binary("datanommer"))
        .arg("--url")
        .arg(url)
        .args(args)
        .output()?;
    ensure!(
        output.status.success(),
        "datanommer {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// Publishes the fixture and the synthetic messages (one of them twice),
/// then checks every column, the links, and the `datanommer` command.
fn stores_every_column(url: &str, postgres: bool) -> Result<()> {
    let mut publisher = Publisher::bind()?;
    let sandbox = setup(&publisher, url, "")?;
    let mut hub = Hub::start(&sandbox, &[])?;
    publisher.wait_subscribed(WAIT)?;

    let fixture = fixture_messages()?;
    let mut synthetic = synthetic_messages()?;
    // PostgreSQL refuses NUL in text: that message alone must be dropped.
    let poison = json!({"topic": "org.fedoraproject.prod.nul.test", "msg_id": "2026-synthetic-nul",
                        "timestamp": 1_700_000_004, "i": 1, "username": "a\u{0}b", "msg": {}});
    synthetic.push(poison);
    send_all(&publisher, &fixture)?;
    send_all(&publisher, &synthetic)?;
    send_all(&publisher, &fixture[..1])?; // a duplicate
    let expected = fixture.len() + synthetic.len() - usize::from(postgres);
    wait_stored(url, expected, WAIT)?;
    let status = hub.terminate()?;
    ensure!(status.success(), "hub exit {status}");
    let stats = hub.plugin_stats(PLUGIN)?;
    ensure!(
        stats["consumed"] == json!(expected + usize::from(postgres) + 1),
        "{stats}"
    );
    let log = hub.log();
    ensure!(log.contains("datanommer writer stopped"), "{log}");
    ensure!(
        log.contains("duplicates=1"),
        "duplicate not reported: {log}"
    );
    if postgres {
        ensure!(log.contains("the database refused this message"), "{log}");
    }

    let mut db = Db::open(url)?;
    ensure!(db.count("SELECT CAST(COUNT(*) AS TEXT) FROM messages")? == expected);
    let rows = db.rows(
        "SELECT msg_id, CAST(i AS TEXT), topic, CAST(timestamp AS TEXT), certificate, signature, category, \
         username, crypto, source_name, source_version, _msg, _headers, CAST(id AS TEXT) FROM messages ORDER BY id",
    )?;
    let by_id: BTreeMap<String, &Vec<Option<String>>> = rows
        .iter()
        .map(|r| (r[0].clone().unwrap_or_default(), r))
        .collect();
    let text = |v: &Value| v.as_str().map(str::to_owned);
    for m in fixture.iter().chain(&synthetic[..]) {
        let Some(id) = m["msg_id"].as_str() else {
            continue;
        };
        if postgres && id == "2026-synthetic-nul" {
            ensure!(!by_id.contains_key(id));
            continue;
        }
        let row = by_id.get(id).with_context(|| format!("{id} not stored"))?;
        let topic = m["topic"].as_str().context("topic")?;
        let category = match topic {
            "short.topic" => "Unclassified",
            t if t.contains("VirtualTopic") => "ci",
            t => t.split('.').nth(3).context("category")?,
        };
        let ts = m["timestamp"].as_f64().context("ts")?;
        let secs = ts.floor() as i64;
        let frac = ((ts - ts.floor()) * 1e6).round() as i64;
        let expected_stamp = stamp(&format!("{}.{frac:06}", chrono_like(secs)));
        let msg: Value = serde_json::from_str(row[11].as_deref().context("_msg")?)?;
        let headers: Option<Value> = row[12].as_deref().map(serde_json::from_str).transpose()?;
        let checks = [
            (
                "i",
                row[1].clone(),
                Some(m.get("i").map_or("0".into(), |i| i.to_string())),
            ),
            ("topic", row[2].clone(), Some(topic.to_owned())),
            (
                "timestamp",
                row[3].as_deref().map(stamp),
                Some(expected_stamp),
            ),
            ("certificate", row[4].clone(), text(&m["certificate"])),
            ("signature", row[5].clone(), text(&m["signature"])),
            ("category", row[6].clone(), Some(category.to_owned())),
            ("username", row[7].clone(), text(&m["username"])),
            ("crypto", row[8].clone(), text(&m["crypto"])),
            ("source_name", row[9].clone(), Some("datanommer".into())),
        ];
        for (column, got, want) in checks {
            ensure!(
                got == want,
                "{id}: column {column}: got {got:?}, want {want:?}"
            );
        }
        ensure!(row[10].is_some(), "{id}: source_version");
        // Exact numbers: compare the JSON text of every number too.
        ensure!(
            json_text(&msg) == json_text(&m["msg"]),
            "{id}: _msg {msg} != {}",
            m["msg"]
        );
        ensure!(
            headers.as_ref() == m.get("headers"),
            "{id}: _headers {headers:?}"
        );
    }
    // The message without msg_id got `<year>-<uuid4>` and i = 0.
    let generated = db.rows("SELECT msg_id, CAST(i AS TEXT) FROM messages WHERE topic = 'org.fedoraproject.prod.fas.user.create'")?;
    let generated_id = generated[0][0].clone().context("msg_id")?;
    ensure!(
        generated_id.len() == 41 && generated_id.as_bytes()[4] == b'-',
        "{generated_id}"
    );
    ensure!(generated[0][1].as_deref() == Some("0"));

    // Links.
    let links = |db: &mut Db, table: &str, column: &str, msg_id: &str| -> Result<Vec<String>> {
        Ok(db
            .rows(&format!(
                "SELECT l.{column} FROM {table} l JOIN messages m ON m.id = l.msg \
                 WHERE m.msg_id = '{msg_id}' ORDER BY l.{column}"
            ))?
            .into_iter()
            .filter_map(|r| r[0].clone())
            .collect())
    };
    let copr = "2017-138990ab-f93d-49e6-8c38-fad10d43a556";
    ensure!(links(&mut db, "user_messages", "username", copr)? == ["dvdmuckle"]);
    ensure!(links(&mut db, "package_messages", "package", copr)? == ["minsh"]);
    let bodhi = "2026-synthetic-bodhi";
    ensure!(links(&mut db, "user_messages", "username", bodhi)? == ["bowlofeggs"]);
    ensure!(links(&mut db, "package_messages", "package", bodhi)? == ["kernel", "python-foo"]);
    ensure!(links(&mut db, "user_messages", "username", &generated_id)? == ["newbie"]);
    ensure!(db.count("SELECT CAST(COUNT(*) AS TEXT) FROM \"user\" WHERE name = 'dvdmuckle'")? == 1);
    ensure!(db.count("SELECT CAST(COUNT(*) AS TEXT) FROM package WHERE name = 'kernel'")? == 1);
    // Every link points at a stored message and a known name.
    ensure!(db.count("SELECT CAST(COUNT(*) AS TEXT) FROM user_messages l LEFT JOIN \"user\" u ON u.name = l.username WHERE u.name IS NULL")? == 0);
    ensure!(db.count("SELECT CAST(COUNT(*) AS TEXT) FROM package_messages l LEFT JOIN messages m ON m.id = l.msg WHERE m.id IS NULL")? == 0);

    // The command: `stats` counts per category (largest first, then by
    // name) and per topic.
    let stored: Vec<&Value> = fixture
        .iter()
        .chain(&synthetic[..])
        .filter(|m| !(postgres && m["msg_id"] == "2026-synthetic-nul"))
        .collect();
    let mut per_category: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_copr_topic: BTreeMap<String, usize> = BTreeMap::new();
    for m in &stored {
        let topic = m["topic"].as_str().unwrap_or_default();
        let category = match topic {
            "short.topic" => "Unclassified",
            t if t.contains("VirtualTopic") => "ci",
            t => t.split('.').nth(3).unwrap_or_default(),
        };
        *per_category.entry(category.to_owned()).or_default() += 1;
        if category == "copr" {
            *per_copr_topic.entry(topic.to_owned()).or_default() += 1;
        }
    }
    let lines = |counts: BTreeMap<String, usize>| {
        let mut v: Vec<(String, usize)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter()
            .map(|(name, n)| format!("{name} has {n} entries\n"))
            .collect::<String>()
    };
    let distinct_categories = per_category.len();
    ensure!(datanommer(url, &["stats"])? == lines(per_category));
    ensure!(datanommer(url, &["stats", "--topic", "--category", "copr"])? == lines(per_copr_topic));
    let latest: Value = serde_json::from_str(&datanommer(
        url,
        &[
            "latest",
            "--topic",
            "org.fedoraproject.prod.copr.build.start",
        ],
    )?)?;
    ensure!(latest[0]["copr"]["msg_id"] == copr, "{latest}");
    let per_category: Value = serde_json::from_str(&datanommer(url, &["latest"])?)?;
    ensure!(
        per_category[0].as_object().is_some_and(|o| o.len() == 1),
        "{per_category}"
    );
    ensure!(
        per_category.as_array().map(Vec::len) == Some(distinct_categories),
        "{per_category}"
    );
    let dump = datanommer(
        url,
        &[
            "dump",
            "--since",
            "2017-09-05T20:24:30",
            "--until",
            "1504643075",
        ],
    )?;
    let dumped: Vec<Value> = dump
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let want: Vec<&Value> = fixture
        .iter()
        .filter(|m| (1_504_643_070..=1_504_643_075).contains(&m["timestamp"].as_i64().unwrap_or(0)))
        .collect();
    ensure!(
        dumped.len() == want.len() && !want.is_empty(),
        "dump gave {} of {}",
        dumped.len(),
        want.len()
    );
    ensure!(dumped
        .windows(2)
        .all(|w| w[0]["timestamp"].as_f64() <= w[1]["timestamp"].as_f64()));
    ensure!(dumped
        .iter()
        .all(|d| d["source_name"] == "datanommer" && d["headers"] == json!({})));
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS` of epoch seconds (UTC), for expected timestamps.
fn chrono_like(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn sqlite_stores_every_column_links_and_skips_duplicates() -> Result<()> {
    let dir = tempfile::tempdir()?;
    stores_every_column(&sqlite_url(&dir), false)
}

#[test]
fn postgres_stores_every_column_links_and_skips_duplicates() -> Result<()> {
    let db = pg::database()?;
    stores_every_column(db.url(), true)
}

#[test]
fn a_postgres_outage_loses_nothing() -> Result<()> {
    let mut db = pg::database_in_own_cluster()?;
    let url = db.url().to_owned();
    let mut publisher = Publisher::bind()?;
    let sandbox = setup(&publisher, &url, "batch_size = 50\n")?;
    let mut hub = Hub::start(&sandbox, &[])?;
    publisher.wait_subscribed(WAIT)?;
    let send = |from: usize, to: usize| -> Result<()> {
        for n in from..to {
            let m = json!({"topic": "org.fedoraproject.prod.outage.test", "msg_id": format!("outage-{n:04}"),
                           "timestamp": 1_700_000_000 + n, "i": n, "username": "t", "msg": {"n": n}});
            publisher.send_frames(&[
                b"org.fedoraproject.prod.outage.test",
                m.to_string().as_bytes(),
            ])?;
        }
        Ok(())
    };
    send(0, 100)?;
    wait_stored(&url, 100, WAIT)?;

    let cluster = db.cluster().context("own cluster")?;
    cluster.kill()?;
    let down = Instant::now();
    // Messages keep arriving while the database is down.
    for chunk in 0..4 {
        send(100 + chunk * 50, 150 + chunk * 50)?;
        std::thread::sleep(Duration::from_millis(750));
    }
    let during = hub.log();
    cluster.restart()?;
    let outage = down.elapsed();
    send(300, 400)?;
    wait_stored(&url, 400, WAIT)?;
    let status = hub.terminate()?;
    ensure!(status.success());
    ensure!(outage >= Duration::from_secs(3), "outage only {outage:?}");
    ensure!(
        during.contains("database unavailable; keeping messages and retrying"),
        "no retry logged during the outage:\n{during}"
    );
    let log = hub.log();
    ensure!(log.contains("database available again"), "{log}");

    let mut check = Db::open(&url)?;
    let ids: BTreeSet<String> = check
        .rows("SELECT msg_id FROM messages")?
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    let want: BTreeSet<String> = (0..400).map(|n| format!("outage-{n:04}")).collect();
    ensure!(
        ids == want,
        "missing: {:?}",
        want.difference(&ids).collect::<Vec<_>>()
    );
    let stats = hub.plugin_stats(PLUGIN)?;
    ensure!(stats["consumed"] == 400 && stats["errors"] == 0, "{stats}");
    Ok(())
}

/// The set `/raw` is checked against: 250 messages over 5 topics (3
/// categories), 4 users, 5 packages, three messages per second.
struct RawSet {
    messages: Vec<Value>,
}

const TOPICS: [&str; 5] = [
    "org.fedoraproject.prod.bodhi.update.comment",
    "org.fedoraproject.prod.bodhi.update.request.testing",
    "org.fedoraproject.prod.buildsys.build.state.change",
    "org.fedoraproject.prod.buildsys.tag",
    "org.fedoraproject.prod.git.receive",
];
const BASE_TS: i64 = 1_700_000_000;

impl RawSet {
    fn new() -> RawSet {
        let messages = (0..250)
            .map(|n: i64| {
                json!({"topic": TOPICS[(n % 5) as usize], "msg_id": format!("raw-{n:04}"),
                       "timestamp": BASE_TS + n / 3, "i": n, "username": "t",
                       "msg": {"agent": format!("user{}", n % 4), "package": format!("pkg{}", n % 7)}})
            })
            .collect();
        RawSet { messages }
    }

    fn ids(&self, keep: impl Fn(i64, &Value) -> bool) -> Vec<String> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(n, m)| keep(*n as i64, m))
            .map(|(_, m)| m["msg_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Every page of a query; checks `count`, `pages`, `total` on the way.
fn all_pages(addr: &str, query: &str, rows: usize) -> Result<Vec<String>> {
    let (status, first) = http_get_json(addr, &format!("/raw?{query}&rows_per_page={rows}"))?;
    ensure!(status == 200, "{status}: {first}");
    let total = first["total"].as_u64().context("total")? as usize;
    let pages = first["pages"].as_u64().context("pages")? as usize;
    ensure!(
        pages == total.div_ceil(rows),
        "pages {pages} for total {total}"
    );
    let mut ids = Vec::new();
    for page in 1..=pages + 1 {
        let (status, body) = http_get_json(
            addr,
            &format!("/raw?{query}&rows_per_page={rows}&page={page}"),
        )?;
        ensure!(status == 200, "{status}: {body}");
        let messages = body["raw_messages"].as_array().context("raw_messages")?;
        let want = if page <= pages {
            rows.min(total - (page - 1) * rows)
        } else {
            0
        };
        ensure!(
            messages.len() == want && body["count"] == json!(want),
            "page {page}: {} messages",
            messages.len()
        );
        ensure!(body["total"] == json!(total));
        for m in messages {
            ids.push(m["msg_id"].as_str().context("msg_id")?.to_owned());
        }
    }
    Ok(ids)
}

fn raw_pages_and_filters(url: &str) -> Result<()> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut publisher = Publisher::bind()?;
    let sandbox = setup(&publisher, url, &format!("http_listen = {addr:?}\n"))?;
    let mut hub = Hub::start(&sandbox, &[])?;
    publisher.wait_subscribed(WAIT)?;
    let set = RawSet::new();
    send_all(&publisher, &set.messages)?;
    wait_stored(url, set.messages.len(), WAIT)?;

    let range = format!("start={}&end={}", BASE_TS, BASE_TS + 100);
    let all = set.ids(|_, _| true);
    // Ascending: exactly the stored order (timestamp, then arrival).
    let asc = all_pages(&addr, &format!("{range}&order=asc"), 7)?;
    ensure!(asc == all, "ascending pages differ");
    let mut desc = all_pages(&addr, &format!("{range}&order=desc"), 9)?;
    desc.reverse();
    ensure!(desc == all, "descending pages differ");
    ensure!(all_pages(&addr, &range, 100)?.len() == 250);

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let check = |query: &str, want: Vec<String>| -> Result<()> {
        let got = all_pages(&addr, &format!("{query}&order=asc"), 100)?;
        ensure!(
            sorted(got.clone()) == sorted(want.clone()),
            "{query}: got {} want {}",
            got.len(),
            want.len()
        );
        ensure!(
            got.len() == got.iter().collect::<BTreeSet<_>>().len(),
            "{query}: duplicates"
        );
        Ok(())
    };
    check(
        &format!("{range}&topic={}", TOPICS[2]),
        set.ids(|n, _| n % 5 == 2),
    )?;
    check(
        &format!("{range}&topic={}&topic={}", TOPICS[0], TOPICS[4]),
        set.ids(|n, _| n % 5 == 0 || n % 5 == 4),
    )?;
    check(
        &format!("{range}&category=buildsys"),
        set.ids(|n, _| n % 5 == 2 || n % 5 == 3),
    )?;
    check(
        &format!("{range}&category=git&category=bodhi"),
        set.ids(|n, _| n % 5 != 2 && n % 5 != 3),
    )?;
    check(&format!("{range}&user=user1"), set.ids(|n, _| n % 4 == 1))?;
    check(&format!("{range}&package=pkg3"), set.ids(|n, _| n % 7 == 3))?;
    check(
        &format!("{range}&user=user1&package=pkg3&category=bodhi"),
        set.ids(|n, _| n % 4 == 1 && n % 7 == 3 && n % 5 < 2),
    )?;
    check(
        &format!("{range}&not_category=bodhi"),
        set.ids(|n, _| n % 5 >= 2),
    )?;
    // Time: inclusive at both ends (seconds 10..=20 hold messages 30..=62).
    check(
        &format!("start={}&end={}", BASE_TS + 10, BASE_TS + 20),
        set.ids(|n, _| (30..=62).contains(&n)),
    )?;
    check(
        &format!("start={}&delta=5", BASE_TS + 80),
        set.ids(|n, _| (240..250).contains(&n)),
    )?;
    check(
        &format!("end={}&delta=1.5", BASE_TS + 2),
        set.ids(|n, _| (3..=8).contains(&n)),
    )?;
    check(
        &format!("start={}&end={}", BASE_TS - 100, BASE_TS - 1),
        Vec::new(),
    )?;

    // One message in datagrepper's shape.
    let (_, page) = http_get_json(&addr, &format!("/raw?{range}&order=asc&rows_per_page=1"))?;
    let m = &page["raw_messages"][0];
    ensure!(json_text(&m["timestamp"]) == format!("{BASE_TS}.0"), "{m}");
    ensure!(
        m["source_name"] == "datanommer"
            && m["source_version"].is_string()
            && m["headers"] == json!({}),
        "{m}"
    );
    let args = &page["arguments"];
    ensure!(
        args["rows_per_page"] == 1 && args["page"] == 1 && args["order"] == "asc",
        "{args}"
    );
    ensure!(
        json_text(&args["start"]) == format!("{BASE_TS}.0") && json_text(&args["delta"]) == "100.0",
        "{args}"
    );

    // Bad parameters: 400 with a JSON error.
    for bad in [
        "rows_per_page=101",
        "page=0",
        "start=abc",
        "order=up",
        "start=10&end=5",
        "delta=-1",
    ] {
        let (status, body) = http_get_json(&addr, &format!("/raw?{bad}"))?;
        ensure!(
            status == 400 && body["error"].is_string(),
            "{bad}: {status} {body}"
        );
    }
    // Injection attempts are just values.
    check(&format!("{range}&topic=x'%20OR%20'1'='1"), Vec::new())?;

    hub.terminate()?;
    Ok(())
}

#[test]
fn sqlite_raw_pages_exactly_and_filters() -> Result<()> {
    let dir = tempfile::tempdir()?;
    raw_pages_and_filters(&sqlite_url(&dir))
}

#[test]
fn postgres_raw_pages_exactly_and_filters() -> Result<()> {
    let db = pg::database()?;
    raw_pages_and_filters(db.url())
}

const CATCH_UP_SCRIPT: &str = r#"
import json, logging, sys, time, warnings
warnings.filterwarnings("ignore")
logging.disable(logging.CRITICAL)
import fedmsg.consumers, fedmsg.crypto.utils, fedmsg.encoding

url, then, originals_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class Consumer:
    """Stands in for a FedmsgConsumer: what get_datagrepper_results reads."""
    datagrepper_url = url
    topic = "*"
    log = logging.getLogger("backlog")

fetched = [fedmsg.crypto.utils.fix_datagrepper_message(m)
           for m in fedmsg.consumers.FedmsgConsumer.get_datagrepper_results(Consumer(), then, int(time.time()) + 1)]
with open(originals_path) as f:
    originals = json.load(f)
by_id = {}
for m in fetched:
    by_id.setdefault(m["msg_id"], []).append(m)
problems = []
for o in originals:
    got = by_id.get(o["msg_id"], [])
    if len(got) != 1:
        problems.append("%s fetched %d times" % (o["msg_id"], len(got)))
    elif fedmsg.encoding.dumps(got[0]) != fedmsg.encoding.dumps(o):
        problems.append("%s differs:\n  %s\n  %s" % (o["msg_id"], fedmsg.encoding.dumps(got[0])[:300], fedmsg.encoding.dumps(o)[:300]))
print(json.dumps({"fetched": len(fetched), "problems": problems}))
"#;

fn venv_python() -> Option<PathBuf> {
    let venv = std::env::var_os("VENV").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/pyfedmsg-venv"))
    })?;
    let python = venv.join("bin/python");
    python.is_file().then_some(python)
}

#[test]
fn python_fedmsg_catch_up_reads_every_message_as_signed() -> Result<()> {
    let Some(python) = venv_python() else {
        if std::env::var("FEDMSG_SKIP_PYTHON").as_deref() == Ok("1") {
            eprintln!("SKIPPED: python fedmsg venv not found and FEDMSG_SKIP_PYTHON=1");
            return Ok(());
        }
        bail!(
            "python fedmsg venv not found ($VENV or ~/.cache/pyfedmsg-venv): run ../shared/pyfedmsg/setup.sh, \
             or set FEDMSG_SKIP_PYTHON=1 to skip this test"
        );
    };
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(&dir);
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut publisher = Publisher::bind()?;
    let sandbox = setup(&publisher, &url, &format!("http_listen = {addr:?}\n"))?;
    let mut hub = Hub::start(&sandbox, &[])?;
    publisher.wait_subscribed(WAIT)?;

    // The 25 signed production messages, the synthetic ones (floats, huge
    // integers, unicode, headers) and enough more for three pages.
    let mut originals = fixture_messages()?;
    // fix_datagrepper_message casts timestamps to int (reference §3.8), so
    // only integral timestamps can round-trip.
    let mut synthetic = synthetic_messages()?;
    for m in &mut synthetic {
        let ts = m["timestamp"].as_f64().unwrap_or(0.0);
        m["timestamp"] = json!(ts as i64);
    }
    originals.extend(synthetic.into_iter().filter(|m| m.get("msg_id").is_some()));
    originals.extend(RawSet::new().messages);
    send_all(&publisher, &originals)?;
    wait_stored(&url, originals.len(), WAIT)?;

    let originals_path = dir.path().join("originals.json");
    std::fs::write(&originals_path, serde_json::to_string(&originals)?)?;
    let then = originals
        .iter()
        .filter_map(|m| m["timestamp"].as_f64())
        .fold(f64::INFINITY, f64::min) as i64;
    let output = Command::new(&python)
        .args(["-c", CATCH_UP_SCRIPT])
        .arg(format!("http://{addr}/raw"))
        .arg(then.to_string())
        .arg(&originals_path)
        // requests would honour a proxy from the environment.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .output()?;
    hub.terminate()?;
    ensure!(
        output.status.success(),
        "python catch-up failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| String::from_utf8_lossy(&output.stdout).into_owned())?;
    ensure!(report["problems"] == json!([]), "{report:#}");
    ensure!(report["fetched"] == json!(originals.len()), "{report}");
    Ok(())
}

/// datanommer files a message under the users and packages the hub's
/// fedmsg.meta finds, an operator's rule included (the fixed rules know
/// neither `reporter` nor `component`).
#[test]
fn users_and_packages_come_from_the_hubs_fedmsg_meta() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(&dir);
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut publisher = Publisher::bind()?;
    let sandbox = setup(&publisher, &url, &format!("http_listen = {addr:?}\n"))?;
    let rules = sandbox.path().join("rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(
        rules.join("ticket.toml"),
        "[processor]\nname = \"ticket\"\n\n[fields]\nusernames = \"{{ msg.reporter }}\"\npackages = \"{{ msg.component }}\"\n",
    )?;
    sandbox.write_config(
        "meta.toml",
        &format!("meta_rules_dir = {:?}\n", rules.display().to_string()),
    )?;
    let mut hub = Hub::start(&sandbox, &[])?;
    publisher.wait_subscribed(WAIT)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let messages = vec![
        json!({"topic": "org.fedoraproject.dev.ticket.new", "msg_id": "meta-1",
               "timestamp": now, "i": 1, "username": "t",
               "msg": {"reporter": "alice", "component": "kernel"}}),
        json!({"topic": "org.fedoraproject.dev.ticket.new", "msg_id": "meta-2",
               "timestamp": now, "i": 2, "username": "t",
               "msg": {"reporter": "bob", "component": "glibc"}}),
    ];
    send_all(&publisher, &messages)?;
    wait_stored(&url, messages.len(), WAIT)?;
    let ids = |query: &str| -> Result<Vec<String>> {
        let (status, body) = http_get_json(&addr, &format!("/raw?delta=3600&{query}"))?;
        ensure!(status == 200, "{status}: {body}");
        Ok(body["raw_messages"]
            .as_array()
            .context("raw_messages")?
            .iter()
            .filter_map(|m| m["msg_id"].as_str().map(str::to_owned))
            .collect())
    };
    ensure!(ids("user=alice")? == ["meta-1"], "{:?}", ids("user=alice")?);
    ensure!(
        ids("package=glibc")? == ["meta-2"],
        "{:?}",
        ids("package=glibc")?
    );
    ensure!(ids("user=nobody")?.is_empty());
    hub.terminate()?;
    Ok(())
}
