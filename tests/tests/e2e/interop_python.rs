//! Our commands on one bus with the real Python fedmsg 1.1.7
//! (../shared/pyfedmsg): Python's logger through our relay to Python's tail
//! and our hub; our logger through Python's relay to our hub and Python's
//! hub; fedmsg's own fedmsg-check reading our hub's monitoring socket.
//!
//! Needs the venv of `../shared/pyfedmsg/setup.sh` (`$VENV`, default
//! `~/.cache/pyfedmsg-venv`); fails without it unless
//! `FEDMSG_SKIP_PYTHON=1`. All on loopback, on free ports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Result};
use fedmsg_e2e::bus::{probe, run, ssl_toml, tool, wait_for, BusPorts, Process, PyFedmsg};
use fedmsg_e2e::{read_lines, read_msg_ids, Hub, Publisher, Sandbox, WAIT};
use serde_json::Value;

/// Hub settings: `tally` records probes, `faulty` records the logger's
/// messages with their validation verdict and signer.
fn hub_toml(sandbox: &Sandbox) -> String {
    format!(
        "plugin_dir = {:?}\nstate_dir = {:?}\nshutdown_timeout = 10.0\n\n\
         [tally]\nenabled = true\noutput = {:?}\ntopic = \"org.fedoraproject.dev.probe.*\"\n\n\
         [faulty]\nenabled = true\noutput = {:?}\ntopic = \"org.fedoraproject.dev.logger.*\"\n",
        sandbox.plugin_dir().display().to_string(),
        sandbox.path().join("state").display().to_string(),
        out(sandbox, "probes").display().to_string(),
        out(sandbox, "faulty").display().to_string(),
    )
}

fn out(sandbox: &Sandbox, name: &str) -> PathBuf {
    sandbox.path().join(format!("{name}.jsonl"))
}

/// A sandbox with tally and faulty, our config mirroring the Python one on
/// `ports`.
fn sandbox(ports: &BusPorts) -> Result<Sandbox> {
    let sandbox = Sandbox::new()?;
    sandbox.add_plugin("fedmsg-example-tally")?;
    sandbox.add_plugin("fedmsg-test-faulty")?;
    sandbox.write_config("bus.toml", &ports.toml())?;
    sandbox.write_config("ssl.toml", &ssl_toml())?;
    sandbox.write_config("hub.toml", &hub_toml(&sandbox))?;
    Ok(sandbox)
}

/// The faulty sink's lines: all validated, all signed by shell-app01.
fn validated(sandbox: &Sandbox) -> Result<Vec<Value>> {
    let lines = read_lines(&out(sandbox, "faulty"));
    for line in &lines {
        ensure!(
            line["validated"] == true && line["signer"] == "shell-app01",
            "not validated: {line}"
        );
    }
    Ok(lines)
}

/// Runs a Python tool to completion (e.g. fedmsg-logger) in `workdir`.
fn python_run(
    py: &PyFedmsg,
    workdir: &Path,
    name: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<()> {
    let mut command = py.command(name, workdir);
    command.args(args);
    let output = run(command, stdin, WAIT * 2)?;
    ensure!(
        output.status.success(),
        "{name} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[test]
fn python_logger_through_our_relay_reaches_python_tail_and_our_hub() -> Result<()> {
    let Some(py) = PyFedmsg::locate()? else {
        return Ok(());
    };
    let ports = BusPorts::new()?;
    let sandbox = sandbox(&ports)?;
    let workdir = py.workdir(sandbox.path(), &ports)?;
    let cfg = sandbox.config_dir();

    let mut relay = Process::start("relay", tool("fedmsg-relay", &[&cfg]), sandbox.path())?;
    let mut hub = Hub::start(&sandbox, &[])?;
    let mut tail = Process::start_python(
        "pytail",
        py.command("fedmsg-tail", &workdir),
        sandbox.path(),
    )?;
    // fedmsg-tail logs what it prints; both streams are looked at.
    let tail_text = |tail: &Process| format!("{}{}", tail.output(), tail.log());

    let probes = out(&sandbox, "probes");
    probe(
        WAIT * 3,
        |n| {
            let text = format!("probe-{n}");
            python_run(
                &py,
                &workdir,
                "fedmsg-logger",
                &["--modname", "probe", "--message", &text],
                None,
            )
        },
        || !read_msg_ids(&probes).is_empty() && tail_text(&tail).contains("probe-"),
        || {
            format!(
                "relay:\n{}\npython tail:\n{}\nhub:\n{}",
                relay.log(),
                tail_text(&tail),
                hub.log()
            )
        },
    )?;

    let lines: Vec<String> = (0..5).map(|i| format!("from python {i}")).collect();
    python_run(
        &py,
        &workdir,
        "fedmsg-logger",
        &[],
        Some(&(lines.join("\n") + "\n")),
    )?;
    wait_for(
        "5 messages at our hub",
        || Ok(read_msg_ids(&out(&sandbox, "faulty")).len() >= 5),
        || hub.log(),
    )?;
    wait_for(
        "5 messages at the Python tail",
        || Ok(lines.iter().all(|l| tail_text(&tail).contains(l.as_str()))),
        || tail_text(&tail),
    )?;
    // Python's json writes NaN and Infinity, and fedmsg signs them: our hub
    // must accept and validate such a message as Python does.
    python_run(
        &py,
        &workdir,
        "fedmsg-logger",
        &["--json-input"],
        Some("{\"nan\": NaN, \"inf\": -Infinity, \"text\": \"non-finite\"}\n"),
    )?;
    wait_for(
        "the NaN message at our hub",
        || Ok(read_msg_ids(&out(&sandbox, "faulty")).len() >= 6),
        || hub.log(),
    )?;
    tail.check_running()?;
    ensure!(
        !tail_text(&tail).contains("invalid message"),
        "python rejected a message:\n{}",
        tail_text(&tail)
    );
    relay.check_running()?;
    ensure!(hub.terminate()?.success());
    ensure!(validated(&sandbox)?.len() == 6, "{}", hub.log());
    tail.stop()?;
    ensure!(relay.stop()?.success());
    Ok(())
}

/// The Python counter consumer's output (`{"count", "invalid_seen", ...}`).
fn counter(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

#[test]
fn our_logger_through_python_relay_reaches_our_hub_and_python_hub() -> Result<()> {
    let Some(py) = PyFedmsg::locate()? else {
        return Ok(());
    };
    let ports = BusPorts::new()?;
    let sandbox = sandbox(&ports)?;
    let workdir = py.workdir(sandbox.path(), &ports)?;
    let cfg = sandbox.config_dir();
    let counter_file = sandbox.path().join("counter.json");

    let mut relay = Process::start_python(
        "pyrelay",
        py.command("fedmsg-relay", &workdir),
        sandbox.path(),
    )?;
    let mut pyhub_command = py.command("fedmsg-hub", &workdir);
    pyhub_command.env("COUNTER_OUTPUT", &counter_file);
    let mut pyhub = Process::start_python("pyhub", pyhub_command, sandbox.path())?;
    let mut hub = Hub::start(&sandbox, &[])?;
    let logger = |args: &[&str], stdin: Option<&str>| -> Result<()> {
        let mut command = tool("fedmsg-logger", &[&cfg]);
        // Python's relay takes a few seconds to start: the logger waits.
        command.args(["--timeout", "60"]).args(args);
        let output = run(command, stdin, WAIT * 3)?;
        ensure!(
            output.status.success(),
            "fedmsg-logger failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    };
    let count = || {
        counter(&counter_file)
            .and_then(|c| c["count"].as_u64())
            .unwrap_or(0)
    };

    let probes = out(&sandbox, "probes");
    probe(
        WAIT * 3,
        |n| {
            logger(
                &["--modname", "probe", "--message", &format!("probe-{n}")],
                None,
            )
        },
        || !read_msg_ids(&probes).is_empty() && count() > 0,
        || {
            format!(
                "python relay:\n{}\npython hub:\n{}\nhub:\n{}",
                relay.log(),
                pyhub.log(),
                hub.log()
            )
        },
    )?;
    // Probes still in flight land now; then the count is stable.
    std::thread::sleep(Duration::from_secs(1));
    let before = count();

    let input: String = (0..10).map(|i| format!("from rust {i}\n")).collect();
    logger(&[], Some(&input))?;
    wait_for(
        "10 messages at our hub",
        || Ok(read_msg_ids(&out(&sandbox, "faulty")).len() >= 10),
        || hub.log(),
    )?;
    wait_for(
        "10 valid messages at the Python hub",
        || Ok(count() >= before + 10),
        || {
            format!(
                "counter: {:?}\npython hub:\n{}",
                counter(&counter_file),
                pyhub.log()
            )
        },
    )?;
    // Give a message that would be one too many the time to be counted.
    std::thread::sleep(Duration::from_millis(500));
    let final_count = counter(&counter_file).unwrap_or_default();
    ensure!(final_count["count"] == before + 10, "{final_count}");
    ensure!(final_count["invalid_seen"] == 0, "{final_count}");
    pyhub.check_running()?;
    relay.check_running()?;
    ensure!(hub.terminate()?.success());
    ensure!(validated(&sandbox)?.len() == 10);
    pyhub.stop()?;
    relay.stop()?;
    Ok(())
}

#[test]
fn python_fedmsg_check_reads_our_monitoring_socket() -> Result<()> {
    let Some(py) = PyFedmsg::locate()? else {
        return Ok(());
    };
    let mut publisher = Publisher::bind()?;
    let ports = BusPorts::new()?;
    let sandbox = Sandbox::new()?;
    sandbox.add_plugin("fedmsg-example-tally")?;
    sandbox.add_plugin("fedmsg-test-faulty")?;
    let socket = format!("ipc://{}", sandbox.path().join("monitor.sock").display());
    sandbox.write_config(
        "hub.toml",
        &format!(
            "{}\n[tally]\nenabled = true\noutput = {:?}\n\n\
             [faulty]\nenabled = true\noutput = {:?}\npanic_on = \"boom\"\n\n\
             [moksha.monitoring]\nsocket = {socket:?}\n",
            sandbox.base_config(publisher.endpoint()),
            out(&sandbox, "tally").display().to_string(),
            out(&sandbox, "faulty").display().to_string(),
        ),
    )?;
    let workdir = py.workdir(sandbox.path(), &ports)?;
    std::fs::write(
        workdir.join("fedmsg.d/monitoring.py"),
        format!("config = {{\"moksha.monitoring.socket\": {socket:?}}}\n"),
    )?;
    let mut hub = Hub::start(&sandbox, &["--set", "plugin_max_consecutive_panics=1"])?;
    hub.wait_subscribed(&mut publisher)?;
    let check = |name: &str| -> Result<(bool, String)> {
        let mut command = py.command("fedmsg-check", &workdir);
        command.args(["--timeout", "20", "-c", name]);
        let output = run(command, None, WAIT * 2)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok((output.status.success(), text))
    };

    let (ok, text) = check("fedmsg-example-tally")?;
    ensure!(ok, "{text}");
    ensure!(
        text.contains("All consumers and producers are active!"),
        "{text}"
    );

    publisher.send("t.boom", "b1")?;
    wait_for(
        "the faulty plugin to be disabled",
        || Ok(hub.log().contains("consecutive panics")),
        || hub.log(),
    )?;
    let (ok, text) = check("fedmsg-test-faulty")?;
    ensure!(!ok, "{text}");
    ensure!(
        text.contains("\"fedmsg-test-faulty\" is not initialized!"),
        "{text}"
    );
    ensure!(hub.terminate()?.success());
    Ok(())
}

/// Issue 3's live interop: messages signed by the Python `fedmsg-logger`,
/// re-encoded by the Python `fedmsg-relay` (not canonical any more), are
/// delivered by our hub as validated, signed by shell-app01.
#[test]
fn python_logger_through_python_relay_is_validated_by_our_hub() -> Result<()> {
    let Some(py) = PyFedmsg::locate()? else {
        return Ok(());
    };
    let ports = BusPorts::new()?;
    let sandbox = sandbox(&ports)?;
    let workdir = py.workdir(sandbox.path(), &ports)?;

    let mut relay = Process::start_python(
        "pyrelay",
        py.command("fedmsg-relay", &workdir),
        sandbox.path(),
    )?;
    let mut hub = Hub::start(&sandbox, &[])?;
    let probes = out(&sandbox, "probes");
    probe(
        WAIT * 3,
        |n| {
            let text = format!("probe-{n}");
            python_run(
                &py,
                &workdir,
                "fedmsg-logger",
                &["--modname", "probe", "--message", &text],
                None,
            )
        },
        || !read_msg_ids(&probes).is_empty(),
        || format!("python relay:\n{}\nhub:\n{}", relay.log(), hub.log()),
    )?;

    let lines: Vec<String> = (0..5).map(|i| format!("python to python {i}")).collect();
    python_run(
        &py,
        &workdir,
        "fedmsg-logger",
        &[],
        Some(&(lines.join("\n") + "\n")),
    )?;
    wait_for(
        "5 messages at our hub",
        || Ok(read_msg_ids(&out(&sandbox, "faulty")).len() >= 5),
        || hub.log(),
    )?;
    relay.check_running()?;
    ensure!(hub.terminate()?.success());
    // Validated and signed by shell-app01, and none rejected.
    ensure!(validated(&sandbox)?.len() == 5);
    let stats = hub.stats()?;
    ensure!(
        stats["invalid"].as_object().is_none_or(|m| m.is_empty()),
        "{stats}"
    );
    relay.stop()?;
    Ok(())
}
