//! Downtime backfill: a plugin with a status file gets what it missed while
//! its hub was down from a datagrepper-compatible `/raw` (the datanommer
//! plugin of a second hub), before its live messages, exactly once; and a
//! restart with nothing missed fetches nothing again.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use fedmsg_e2e::bus::free_port;
use fedmsg_e2e::{read_msg_ids, wait_until, Hub, Publisher, Sandbox, WAIT};

const TALLY: &str = "fedmsg-example-tally";

/// An envelope stamped with the current time (the catch-up works on time
/// windows, so the harness's fixed timestamp will not do).
fn send_now(publisher: &Publisher, msg_id: &str) -> Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let topic = "org.fedoraproject.dev.catchup.test";
    let body = serde_json::json!({
        "topic": topic, "msg_id": msg_id, "timestamp": now, "i": 1,
        "username": "test", "msg": {"n": msg_id},
    })
    .to_string();
    publisher.send_frames(&[topic.as_bytes(), body.as_bytes()])
}

fn stored(db: &Path) -> usize {
    rusqlite::Connection::open(db)
        .and_then(|c| c.query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0)))
        .map_or(0, |n| n as usize)
}

/// A second hub running datanommer on SQLite with its `/raw` on a free
/// port: the datagrepper the hub under test backfills from.
struct StoreHub {
    _sandbox: Sandbox,
    hub: Hub,
    db: std::path::PathBuf,
    http: String,
}

impl StoreHub {
    fn start(publisher: &mut Publisher) -> Result<StoreHub> {
        let sandbox = Sandbox::new()?;
        sandbox.add_plugin("fedmsg-datanommer")?;
        let db = sandbox.path().join("store.db");
        let http = format!("127.0.0.1:{}", free_port()?);
        sandbox.write_config(
            "base.toml",
            &format!(
                "{}\n[datanommer]\nenabled = true\nurl = \"sqlite:///{}\"\nhttp_listen = {http:?}\n",
                sandbox.base_config(publisher.endpoint()),
                db.display()
            ),
        )?;
        let mut hub = Hub::start(&sandbox, &[])?;
        hub.wait_subscribed(publisher)?;
        Ok(StoreHub {
            _sandbox: sandbox,
            hub,
            db,
            http,
        })
    }
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i:03}")).collect()
}

#[test]
fn a_restarted_hub_backfills_what_it_missed_exactly_once() -> Result<()> {
    let mut publisher = Publisher::bind()?;

    let store = StoreHub::start(&mut publisher)?;
    let (db, http) = (store.db.clone(), store.http.clone());
    let mut store_hub = store.hub;

    // The hub under test: tally with a status directory.
    let sandbox = Sandbox::new()?;
    sandbox.add_plugin(TALLY)?;
    let tally = sandbox.path().join("tally.jsonl");
    sandbox.write_config(
        "base.toml",
        &format!(
            "status_directory = {:?}\ndatagrepper_url = \"http://{http}/raw\"\n{}\n[tally]\nenabled = true\noutput = {:?}\n",
            sandbox.path().join("status").display().to_string(),
            sandbox.base_config(publisher.endpoint()),
            tally.display().to_string(),
        ),
    )?;
    let mut hub = Hub::start(&sandbox, &[])?;
    hub.wait_subscribed(&mut publisher)?;

    for id in ids(0..20) {
        send_now(&publisher, &id)?;
    }
    assert!(wait_until(WAIT, || read_msg_ids(&tally).len() == 20));
    assert!(hub.terminate()?.success());

    // Downtime: only the store hears these.
    for id in ids(20..60) {
        send_now(&publisher, &id)?;
    }
    assert!(
        wait_until(WAIT, || stored(&db) == 60),
        "store has {}",
        stored(&db)
    );

    // Restart: the catch-up comes first, then live messages.
    let mut hub = Hub::start(&sandbox, &[])?;
    hub.wait_subscribed(&mut publisher)?;
    for id in ids(60..80) {
        send_now(&publisher, &id)?;
    }
    assert!(
        wait_until(WAIT, || read_msg_ids(&tally).len() >= 80),
        "tally has {}; log:\n{}",
        read_msg_ids(&tally).len(),
        hub.log()
    );
    assert!(hub.terminate()?.success());
    assert_eq!(read_msg_ids(&tally), ids(0..80), "log:\n{}", hub.log());
    assert!(hub.log().contains("catch-up from datagrepper delivered"));

    // A second restart with nothing missed re-delivers nothing.
    let mut hub = Hub::start(&sandbox, &[])?;
    hub.wait_subscribed(&mut publisher)?;
    assert!(wait_until(WAIT, || hub
        .log()
        .contains("catch-up from datagrepper delivered")));
    send_now(&publisher, "m080")?;
    assert!(wait_until(WAIT, || read_msg_ids(&tally).len() >= 81));
    assert!(hub.terminate()?.success());
    assert_eq!(read_msg_ids(&tally), ids(0..81), "log:\n{}", hub.log());
    assert!(hub.log().contains("delivered=0"), "log:\n{}", hub.log());
    store_hub.terminate()?;
    Ok(())
}

#[test]
fn a_crashed_hub_ends_with_every_message_exactly_once() -> Result<()> {
    let mut publisher = Publisher::bind()?;
    let store = StoreHub::start(&mut publisher)?;
    let (db, http) = (store.db.clone(), store.http.clone());
    let mut store_hub = store.hub;

    // skip_existing: tally is idempotent like a real store, so the at most
    // one second of messages the crashed hub finished but had not yet
    // recorded in its status file is delivered again but written once.
    let sandbox = Sandbox::new()?;
    sandbox.add_plugin(TALLY)?;
    let tally = sandbox.path().join("tally.jsonl");
    sandbox.write_config(
        "base.toml",
        &format!(
            "status_directory = {:?}\ndatagrepper_url = \"http://{http}/raw\"\n{}\n[tally]\nenabled = true\nskip_existing = true\noutput = {:?}\n",
            sandbox.path().join("status").display().to_string(),
            sandbox.base_config(publisher.endpoint()),
            tally.display().to_string(),
        ),
    )?;
    let mut hub = Hub::start(&sandbox, &[])?;
    hub.wait_subscribed(&mut publisher)?;

    let all = ids(0..10_000);
    for (i, id) in all.iter().enumerate() {
        send_now(&publisher, id)?;
        if i % 10 == 9 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if i == 3_000 {
            hub.kill()?;
        }
        if i == 5_000 {
            hub = Hub::start(&sandbox, &[])?;
            hub.wait_subscribed(&mut publisher)?;
        }
    }
    assert!(
        wait_until(WAIT, || stored(&db) == all.len()),
        "store has {}",
        stored(&db)
    );
    assert!(
        wait_until(WAIT, || read_msg_ids(&tally).len() >= all.len()),
        "tally has {}; log:\n{}",
        read_msg_ids(&tally).len(),
        hub.log()
    );
    assert!(hub.terminate()?.success());
    let got = read_msg_ids(&tally);
    assert_eq!(
        got.len(),
        all.len(),
        "duplicates or extras; log:\n{}",
        hub.log()
    );
    assert_eq!(got, all);
    store_hub.terminate()?;
    Ok(())
}
