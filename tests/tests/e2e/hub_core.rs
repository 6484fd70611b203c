//! End-to-end tests of the hub core: a real `fedmsg-hub` process, real
//! plugin `.so` files, a real zmq publisher on loopback.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use fedmsg_e2e::{read_msg_ids, wait_until, Hub, Publisher, Sandbox, WAIT};

const TALLY: &str = "fedmsg-example-tally";
const FAULTY: &str = "fedmsg-test-faulty";

/// A sandbox with tally and faulty installed and configured from `extra`.
fn setup(publisher: &Publisher, extra: &str) -> Result<Sandbox> {
    let sandbox = Sandbox::new()?;
    sandbox.add_plugin(TALLY)?;
    sandbox.add_plugin(FAULTY)?;
    let config = format!(
        "{}\n[tally]\nenabled = true\noutput = {:?}\n\n[faulty]\nenabled = true\noutput = {:?}\n{}",
        sandbox.base_config(publisher.endpoint()),
        out(&sandbox, "tally"),
        out(&sandbox, "faulty"),
        extra
    );
    sandbox.write_config("base.toml", &config)?;
    Ok(sandbox)
}

fn out(sandbox: &Sandbox, name: &str) -> String {
    sandbox
        .path()
        .join(format!("{name}.jsonl"))
        .display()
        .to_string()
}

fn lines(sandbox: &Sandbox, name: &str) -> Vec<String> {
    read_msg_ids(&PathBuf::from(out(sandbox, name)))
}

#[test]
fn two_plugins_each_receive_exactly_what_their_globs_match() -> Result<()> {
    let mut publisher = Publisher::bind()?;
    let sandbox = setup(&publisher, "topic = \"org.fedoraproject.*.bodhi.update\"\n")?;
    // tally: only the buildsys prefix.
    let config = std::fs::read_to_string(sandbox.config_dir().join("base.toml"))?.replace(
        "[tally]\n",
        "[tally]\ntopic = \"org.fedoraproject.prod.buildsys.*\"\n",
    );
    sandbox.write_config("base.toml", &config)?;
    let mut hub = Hub::start(&sandbox, &[])?;
    hub.wait_subscribed(&mut publisher)?;

    let sent = [
        ("org.fedoraproject.prod.buildsys.build.state.change", "m1"),
        ("org.fedoraproject.prod.bodhi.update", "m2"),
        ("org.fedoraproject.stg.bodhi.update", "m3"),
        ("org.fedoraproject.prod.bodhi.update.comment", "m4"),
        ("org.fedoraproject.prod.buildsys.tag", "m5"),
        ("org.fedoraproject.prod.git.receive", "m6"),
        ("org.fedoraproject.prod.buildsysx", "m7"),
        ("org.fedoraproject.prod.buildsys.repo.done", "m8"),
    ];
    for (topic, id) in sent {
        publisher.send(topic, id)?;
    }
    assert!(wait_until(WAIT, || lines(&sandbox, "tally").len() >= 3
        && lines(&sandbox, "faulty").len() >= 2));
    hub.terminate()?;
    assert_eq!(lines(&sandbox, "tally"), ["m1", "m5", "m8"]);
    assert_eq!(lines(&sandbox, "faulty"), ["m2", "m3"]);
    Ok(())
}

#[test]
fn a_panicking_plugin_is_isolated_then_disabled() -> Result<()> {
    let mut publisher = Publisher::bind()?;
    let sandbox = setup(&publisher, "panic_on = \"boom\"\n")?;
    let mut hub = Hub::start(&sandbox, &["--set", "plugin_max_consecutive_panics=3"])?;
    hub.wait_subscribed(&mut publisher)?;

    publisher.send("t.ok", "a1")?;
    publisher.send("t.boom", "b1")?; // panic 1
    publisher.send("t.ok", "a2")?; // resets the run of panics
    for i in 2..=4 {
        publisher.send("t.boom", &format!("b{i}"))?; // panics 1, 2, 3 in a row: disabled
    }
    publisher.send("t.ok", "a3")?; // the faulty plugin is gone by now
    assert!(wait_until(WAIT, || lines(&sandbox, "tally").len() >= 6));
    assert!(wait_until(WAIT, || hub
        .log()
        .contains("consecutive panics")));
    let status = hub.terminate()?;
    assert!(status.success(), "hub exit status {status}");

    assert_eq!(
        lines(&sandbox, "tally"),
        ["a1", "b1", "a2", "b2", "b3", "b4", "a3"]
    );
    assert_eq!(lines(&sandbox, "faulty"), ["a1", "a2"]);
    let faulty = hub.plugin_stats(FAULTY)?;
    assert_eq!(faulty["panics"], 4);
    assert_eq!(faulty["disabled"], true);
    assert_eq!(faulty["consumed"], 2);
    let tally = hub.plugin_stats(TALLY)?;
    assert_eq!(tally["consumed"], 7);
    assert_eq!(tally["panics"], 0);
    Ok(())
}

#[test]
fn a_slow_plugin_does_not_delay_a_fast_one() -> Result<()> {
    let mut publisher = Publisher::bind()?;
    // 200 ms per message: 25 messages keep the slow plugin busy for 5 s.
    let sandbox = setup(&publisher, "sleep_ms = 200\n")?;
    let mut hub = Hub::start(&sandbox, &["--set", "shutdown_timeout=0.5"])?;
    hub.wait_subscribed(&mut publisher)?;

    let started = Instant::now();
    for i in 0..25 {
        publisher.send("t.x", &format!("m{i}"))?;
    }
    assert!(wait_until(WAIT, || lines(&sandbox, "tally").len() == 25));
    let fast_lag = started.elapsed();
    let slow_done = lines(&sandbox, "faulty").len();
    // The slow plugin cannot have finished: it needs at least 5 s.
    assert!(
        slow_done < 25,
        "slow plugin finished {slow_done} already; fast lag {fast_lag:?}"
    );
    assert!(
        fast_lag < Duration::from_secs(4),
        "fast plugin lagged {fast_lag:?}"
    );
    hub.terminate()?;
    Ok(())
}

#[test]
fn malformed_frames_are_counted_and_skipped() -> Result<()> {
    let mut publisher = Publisher::bind()?;
    let sandbox = setup(&publisher, "topic = \"nothing.matches.this.*\"\n")?;
    let mut hub = Hub::start(&sandbox, &["--set", "max_message_size=4096"])?;
    hub.wait_subscribed(&mut publisher)?;

    let huge = format!("{{\"topic\":\"t\",\"pad\":\"{}\"}}", "x".repeat(5000));
    publisher.send_frames(&[b"t.one-frame"])?;
    publisher.send_frames(&[b"t", b"{}", b"third"])?;
    publisher.send_frames(&[b"t\xff", b"{\"topic\":\"t\"}"])?;
    publisher.send_frames(&[b"t", b"{\"topic\":\"t\",\"x\":\"\xc3\"}"])?;
    publisher.send_frames(&[b"t", b"this is not json"])?;
    publisher.send_frames(&[b"t", b"[1,2,3]"])?;
    publisher.send_frames(&[b"t", b"{\"msg\":{}}"])?;
    publisher.send_frames(&[b"t", b"{\"topic\":\"other\"}"])?;
    publisher.send_frames(&[b"t", huge.as_bytes()])?;
    publisher.send("t.good", "good")?;
    assert!(wait_until(WAIT, || lines(&sandbox, "tally").len() == 1));
    let status = hub.terminate()?;
    assert!(status.success());

    assert_eq!(lines(&sandbox, "tally"), ["good"]);
    let stats = hub.stats()?;
    let rejected = &stats["rejected"];
    for reason in [
        "topic_not_utf8",
        "body_not_utf8",
        "not_json",
        "not_object",
        "no_topic",
        "topic_mismatch",
        "too_large",
    ] {
        assert_eq!(rejected[reason], 1, "{reason}: {stats}");
    }
    assert_eq!(rejected["frame_count"], 2, "{stats}");
    assert_eq!(stats["accepted"], 1);
    Ok(())
}

#[test]
fn sigterm_drains_queued_messages_before_exit() -> Result<()> {
    let mut publisher = Publisher::bind()?;
    // 100 messages at 20 ms each: 2 s of queued work, well inside the 10 s drain.
    let sandbox = setup(&publisher, "sleep_ms = 20\n")?;
    let mut hub = Hub::start(&sandbox, &[])?;
    hub.wait_subscribed(&mut publisher)?;
    let ids: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    for id in &ids {
        publisher.send("t.x", id)?;
    }
    // Once the fast plugin has all of them, dispatch has queued all of them
    // for the slow one too.
    assert!(wait_until(WAIT, || lines(&sandbox, "tally").len() == 100));
    assert!(
        lines(&sandbox, "faulty").len() < 100,
        "too fast to test the drain"
    );
    let status = hub.terminate()?;
    assert!(status.success(), "exit status {status}");
    assert_eq!(lines(&sandbox, "faulty"), ids);
    assert!(hub.log().contains("draining plugin queues"));
    Ok(())
}

#[test]
fn a_plugin_stuck_in_consume_at_shutdown_has_its_queue_counted_as_dropped() -> Result<()> {
    let mut publisher = Publisher::bind()?;
    // faulty takes a minute per message: stuck for the whole drain.
    let sandbox = setup(&publisher, "sleep_ms = 60000\n")?;
    let mut hub = Hub::start(&sandbox, &["--set", "shutdown_timeout=1"])?;
    hub.wait_subscribed(&mut publisher)?;
    for i in 0..20 {
        publisher.send("t.x", &format!("m{i}"))?;
    }
    assert!(wait_until(WAIT, || lines(&sandbox, "tally").len() == 20));
    let status = hub.terminate()?;
    assert!(status.success(), "exit status {status}");
    assert!(hub
        .log()
        .contains("plugin still busy after the drain timeout"));
    // One message in consume, 19 queued: all 20 on the books as dropped.
    let faulty = hub.plugin_stats(FAULTY)?;
    assert_eq!(faulty["dropped"], 20, "{faulty}");
    assert_eq!(faulty["consumed"], 0, "{faulty}");
    Ok(())
}

#[test]
fn plugin_files_that_would_crash_the_hub_are_refused_and_it_runs_on() -> Result<()> {
    let mut publisher = Publisher::bind()?;
    let sandbox = setup(&publisher, "")?;
    // A library whose constructor aborts, and tally cut to a third (a copy
    // in progress): each killed the hub before, even `--list-plugins`.
    let source = sandbox.path().join("abort.c");
    std::fs::write(
        &source,
        "#include <stdlib.h>\n__attribute__((constructor)) static void boom(void) { abort(); }\n",
    )?;
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(sandbox.plugin_dir().join("aborts.so"))
        .arg(&source)
        .status()?;
    assert!(status.success(), "cc failed");
    let whole = std::fs::read(fedmsg_e2e::plugin("fedmsg-example-tally"))?;
    std::fs::write(
        sandbox.plugin_dir().join("truncated.so"),
        &whole[..whole.len() / 3],
    )?;

    let output = fedmsg_e2e::hub_command(&sandbox)
        .arg("--list-plugins")
        .output()?;
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout)?;
    assert!(text.contains("SIGABRT"), "{text}");
    assert!(
        text.contains("truncated.so: not a loadable shared library: damaged ELF file"),
        "{text}"
    );

    let mut hub = Hub::start(&sandbox, &[])?;
    hub.wait_subscribed(&mut publisher)?;
    publisher.send("t.x", "after")?;
    assert!(wait_until(WAIT, || lines(&sandbox, "tally") == ["after"]));
    let status = hub.terminate()?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}

#[test]
fn the_hub_takes_fedmsgs_common_flags() -> Result<()> {
    let publisher = Publisher::bind()?;
    let sandbox = setup(&publisher, "")?;
    let output = fedmsg_e2e::hub_command(&sandbox)
        .args([
            "--print-config",
            "--topic-prefix",
            "org.example",
            "--io-threads",
            "3",
        ])
        .output()?;
    assert!(output.status.success(), "{output:?}");
    let config: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(config["topic_prefix"], "org.example", "{config}");
    assert_eq!(config["io_threads"], 3, "{config}");
    Ok(())
}

#[test]
fn duplicates_are_dropped_and_the_position_is_recorded() -> Result<()> {
    let mut publisher = Publisher::bind()?;
    let sandbox = setup(&publisher, "")?;
    let status_dir = sandbox.path().join("status");
    let mut hub = Hub::start(
        &sandbox,
        &[
            "--set",
            "dedup_window=100",
            "--set",
            &format!("status_directory={:?}", status_dir.display().to_string()),
        ],
    )?;
    hub.wait_subscribed(&mut publisher)?;
    for id in ["a", "b", "a", "c", "b"] {
        publisher.send("t.x", id)?;
    }
    publisher.send("t.x", "last")?;
    assert!(wait_until(WAIT, || lines(&sandbox, "tally")
        .last()
        .map(String::as_str)
        == Some("last")));
    let status = hub.terminate()?;
    assert!(status.success());
    assert_eq!(lines(&sandbox, "tally"), ["a", "b", "c", "last"]);
    assert_eq!(hub.plugin_stats(TALLY)?["duplicates"], 2);

    let recorded: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        status_dir.join(format!("{TALLY}.json")),
    )?)?;
    assert_eq!(recorded["position"]["msg_id"], "last", "{recorded}");
    Ok(())
}

#[test]
fn list_plugins_names_every_file_and_its_state() -> Result<()> {
    let publisher = Publisher::bind()?;
    // tally enabled, faulty disabled, and a file that is not a plugin.
    let sandbox = setup(&publisher, "")?;
    let config = std::fs::read_to_string(sandbox.config_dir().join("base.toml"))?
        .replace("[faulty]\nenabled = true\n", "[faulty]\nenabled = false\n");
    sandbox.write_config("base.toml", &config)?;
    std::fs::write(sandbox.plugin_dir().join("garbage.so"), b"not a library")?;
    let output = fedmsg_e2e::hub_command(&sandbox)
        .arg("--list-plugins")
        .output()?;
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout)?;
    // A file's line, then its indented details.
    let block = |file: &str| -> String {
        let mut lines = text.lines().skip_while(|line| !line.ends_with(file));
        assert!(lines.next().is_some(), "{file} listed: {text}");
        lines
            .take_while(|line| line.starts_with("  "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let tally = block("fedmsg_example_tally.so");
    assert!(
        tally.contains("name:       fedmsg-example-tally"),
        "{tally}"
    );
    assert!(
        tally.contains(&format!("api:        {}", fedmsg_plugin_api_version())),
        "{tally}"
    );
    assert!(tally.contains("config_key: tally.enabled"), "{tally}");
    assert!(tally.contains("status:     enabled"), "{tally}");
    let faulty = block("fedmsg_test_faulty.so");
    assert!(
        faulty.contains("status:     disabled: faulty.enabled is not true"),
        "{faulty}"
    );
    let garbage = block("garbage.so");
    assert!(garbage.contains("status:     failed:"), "{garbage}");
    Ok(())
}

/// The plugin API version the workspace's plugins are built against.
fn fedmsg_plugin_api_version() -> String {
    let manifest = fedmsg_e2e::workspace_root().join("plugin-api/Cargo.toml");
    let text = std::fs::read_to_string(manifest).expect("plugin-api/Cargo.toml");
    let table: toml::Table = text.parse().expect("TOML");
    table["package"]["version"]
        .as_str()
        .expect("a version")
        .to_owned()
}
