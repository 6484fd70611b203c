//! End-to-end tests of the commands that make a bus: `fedmsg-logger` →
//! `fedmsg-relay` → `fedmsg-hub` / `fedmsg-tail`, signed and validated with
//! the shared PKI; `fedmsg-config`; `fedmsg-check` on the hub's monitoring
//! socket; a plugin publishing through the hub.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use fedmsg_e2e::bus::{
    free_port, pki_dir, probe, pyfedmsg_dir, python_config_copy, run, short_hostname, ssl_toml,
    tcp, tool, wait_for, BusPorts, Process, PyFedmsg,
};
use fedmsg_e2e::{read_lines, read_msg_ids, Hub, Publisher, Sandbox, WAIT};
use serde_json::Value;

const TALLY: &str = "fedmsg-example-tally";
const FAULTY: &str = "fedmsg-test-faulty";

/// Hub settings: `tally` records probes (`org.fedoraproject.dev.probe.*`),
/// `faulty` (validated and signer recorded) everything from the logger.
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

/// A sandbox with tally and faulty installed.
fn sandbox() -> Result<Sandbox> {
    let sandbox = Sandbox::new()?;
    sandbox.add_plugin(TALLY)?;
    sandbox.add_plugin(FAULTY)?;
    Ok(sandbox)
}

/// Runs our logger with `args` (and `stdin`), expecting success.
fn log_with(config_dirs: &[&Path], args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut command = tool("fedmsg-logger", config_dirs);
    command.args(["--timeout", "20"]).args(args);
    let output = run(command, stdin, WAIT * 2)?;
    ensure!(
        output.status.success(),
        "fedmsg-logger {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The faulty sink's lines from the logger: each must be validated and
/// signed by `signer`; returns their msg_ids.
fn validated_ids(sandbox: &Sandbox, signer: &str) -> Result<Vec<String>> {
    let lines = read_lines(&out(sandbox, "faulty"));
    for line in &lines {
        ensure!(
            line["validated"] == true && line["signer"] == signer,
            "not validated as {signer}: {line}"
        );
    }
    Ok(lines
        .iter()
        .filter_map(|l| l["msg_id"].as_str().map(str::to_owned))
        .collect())
}

#[test]
fn logger_relay_hub_and_tail_deliver_every_message_signed_and_validated() -> Result<()> {
    let sandbox = sandbox()?;
    let ports = BusPorts::new()?;
    sandbox.write_config("bus.toml", &ports.toml())?;
    sandbox.write_config("ssl.toml", &ssl_toml())?;
    sandbox.write_config("hub.toml", &hub_toml(&sandbox))?;
    let cfg = sandbox.config_dir();
    let dirs = [cfg.as_path()];

    let mut relay = Process::start("relay", tool("fedmsg-relay", &dirs), sandbox.path())?;
    let mut hub = Hub::start(&sandbox, &[])?;
    let mut json_tail = tool("fedmsg-tail", &dirs);
    json_tail.arg("--json");
    let mut tail = Process::start("tail", json_tail, sandbox.path())?;
    let mut terse_tail = tool("fedmsg-tail", &dirs);
    terse_tail.args(["--terse", "--validate"]);
    let mut terse = Process::start("terse", terse_tail, sandbox.path())?;

    let probes = out(&sandbox, "probes");
    probe(
        WAIT * 2,
        |n| {
            log_with(
                &dirs,
                &["--modname", "probe", "--message", &format!("probe-{n}")],
                None,
            )
        },
        || {
            // The terse line of an unknown topic is fedmsg.meta's fallback:
            // the title only (`probe.log --  `).
            !read_msg_ids(&probes).is_empty()
                && tail.output().contains("probe-")
                && terse.output().contains("probe.log --  ")
        },
        || format!("relay:\n{}\nhub:\n{}", relay.log(), hub.log()),
    )?;

    let lines: Vec<String> = (0..50).map(|i| format!("line {i}")).collect();
    log_with(&dirs, &[], Some(&(lines.join("\n") + "\n")))?;
    log_with(
        &dirs,
        &[
            "--json-input",
            "--topic",
            "json",
            "--message",
            r#"{"text": "ünïcode", "n": 1}"#,
        ],
        None,
    )?;
    wait_for(
        "51 messages at the hub",
        || Ok(read_msg_ids(&out(&sandbox, "faulty")).len() >= 51),
        || hub.log(),
    )?;
    wait_for(
        "51 messages at fedmsg-tail",
        || {
            Ok(tail
                .output()
                .matches("org.fedoraproject.dev.logger.")
                .count()
                >= 51)
        },
        || tail.log(),
    )?;
    relay.check_running()?;

    // The hub: every message validated, signed by shell-app01, nothing invalid.
    let status = hub.terminate()?;
    ensure!(status.success(), "hub exit {status}");
    let ids = validated_ids(&sandbox, "shell-app01")?;
    ensure!(ids.len() == 51, "{ids:?}");
    let stats = hub.stats()?;
    ensure!(
        stats["invalid"]
            .as_object()
            .into_iter()
            .all(|m| m.is_empty()),
        "{stats}"
    );

    // fedmsg-tail --json: the envelopes as our logger wrote them, byte for
    // byte through the relay (canonical JSON: sorted, compact, ASCII).
    let envelopes: Vec<(String, Value)> = tail
        .lines()
        .into_iter()
        .filter_map(|l| serde_json::from_str(&l).ok().map(|v| (l, v)))
        .filter(|(_, v): &(String, Value)| {
            v["topic"]
                .as_str()
                .is_some_and(|t| t.starts_with("org.fedoraproject.dev.logger."))
        })
        .collect();
    let tail_ids: Vec<&str> = envelopes
        .iter()
        .filter_map(|(_, v)| v["msg_id"].as_str())
        .collect();
    ensure!(tail_ids == ids, "tail {tail_ids:?}\nhub {ids:?}");
    for (i, (line, v)) in envelopes.iter().take(50).enumerate() {
        ensure!(v["msg"]["log"] == lines[i], "{line}");
        ensure!(
            v["crypto"] == "x509" && v["signature"].is_string(),
            "{line}"
        );
        ensure!(v["i"] == i + 1, "i counts from 1: {line}");
        ensure!(*line == serde_json::to_string(v)?, "not canonical: {line}");
    }
    let (last, _) = &envelopes[50];
    ensure!(last.contains(r#""text":"\u00fcn\u00efcode""#), "{last}");

    // fedmsg-tail --terse --validate: fedmsg.meta's terse line per message
    // (`logger.log -- <log> (<user>) `), with the signer.
    let terse_lines: Vec<String> = terse
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("logger.log -- line "))
        .collect();
    ensure!(terse_lines.len() == 50, "{terse_lines:?}");
    ensure!(
        terse_lines[7].starts_with("logger.log -- line 7 (")
            && terse_lines[7].ends_with(")  [shell-app01]"),
        "{terse_lines:?}"
    );
    ensure!(relay.stop()?.success(), "relay: {}", relay.log());
    tail.stop()?;
    terse.stop()?;
    Ok(())
}

#[test]
fn logger_fails_clearly_without_a_relay_or_a_signing_key() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let nobody = free_port()?;
    sandbox.write_config(
        "bus.toml",
        &format!("relay_inbound = {:?}\nsign_messages = false\n", tcp(nobody)),
    )?;
    let cfg = sandbox.config_dir();
    let attempt = |extra: &[&str]| -> Result<(i32, String)> {
        let mut command = tool("fedmsg-logger", &[&cfg]);
        command
            .args(["--timeout", "1", "--message", "x"])
            .args(extra);
        let output = run(command, None, WAIT)?;
        Ok((
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    };

    let (code, stderr) = attempt(&[])?;
    ensure!(code == 1, "exit {code}: {stderr}");
    ensure!(
        stderr.contains("relay is unreachable") && stderr.contains(&tcp(nobody)),
        "{stderr}"
    );
    ensure!(stderr.contains("refused"), "{stderr}");

    // Bad --json-input: said once, as the user's message, not an envelope.
    let mut command = tool("fedmsg-logger", &[&cfg]);
    command.args(["--timeout", "1", "--json-input", "--message", "{not json"]);
    let output = run(command, None, WAIT)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.code() == Some(1), "{output:?}");
    ensure!(
        stderr.matches("key must be a string").count() == 1
            && stderr.contains("--json-input: the message: not valid JSON")
            && !stderr.contains("envelope"),
        "{stderr}"
    );

    let host = short_hostname();
    let signing = format!(
        "sign_messages = true\nssldir = {:?}\n",
        pki_dir().display().to_string()
    );
    sandbox.write_config("ssl.toml", &signing)?;
    let (code, stderr) = attempt(&[])?;
    ensure!(code == 1, "exit {code}: {stderr}");
    ensure!(
        stderr.contains(&format!("certnames has no entry \"shell.{host}\"")),
        "{stderr}"
    );

    sandbox.write_config(
        "ssl.toml",
        &format!("{signing}\n[certnames]\n\"gone.{host}\" = \"no-such-cert\"\n"),
    )?;
    let (code, stderr) = attempt(&["--cert-prefix", "gone"])?;
    ensure!(code == 1, "exit {code}: {stderr}");
    ensure!(stderr.contains("no-such-cert.crt"), "{stderr}");
    Ok(())
}

#[test]
fn relay_forwards_thousands_of_messages_per_second_without_loss() -> Result<()> {
    const N: usize = 20_000;
    let sandbox = Sandbox::new()?;
    let ports = BusPorts::new()?;
    sandbox.write_config(
        "bus.toml",
        &format!(
            "sign_messages = false\nvalidate_signatures = false\nhigh_water_mark = 0\n{}",
            ports.toml()
        ),
    )?;
    let cfg = sandbox.config_dir();
    let dirs = [cfg.as_path()];
    let mut relay = Process::start("relay", tool("fedmsg-relay", &dirs), sandbox.path())?;
    let mut json_tail = tool("fedmsg-tail", &dirs);
    json_tail.arg("--json");
    let tail = Process::start("tail", json_tail, sandbox.path())?;
    probe(
        WAIT * 2,
        |n| {
            log_with(
                &dirs,
                &["--modname", "probe", "--message", &format!("probe-{n}")],
                None,
            )
        },
        || tail.output().contains("probe-"),
        || relay.log(),
    )?;

    let input: String = (0..N).map(|i| format!("m {i}\n")).collect();
    let started = Instant::now();
    log_with(&dirs, &[], Some(&input))?;
    let count = || tail.output().matches("\"log\":\"m ").count();
    wait_for(
        &format!("{N} messages at the tail"),
        || Ok(count() >= N),
        || format!("{} arrived; relay:\n{}", count(), relay.log()),
    )?;
    let elapsed = started.elapsed();
    eprintln!(
        "logger -> relay -> tail: {N} messages in {:.2} s ({:.0} msg/s)",
        elapsed.as_secs_f64(),
        N as f64 / elapsed.as_secs_f64()
    );
    let logs: Vec<String> = tail
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["msg"]["log"].as_str().map(str::to_owned))
        .filter(|l| l.starts_with("m "))
        .collect();
    let expected: Vec<String> = (0..N).map(|i| format!("m {i}")).collect();
    ensure!(logs == expected, "lost or reordered messages");
    ensure!(relay.stop()?.success(), "relay: {}", relay.log());
    ensure!(relay.log().contains("forwarded="), "{}", relay.log());
    Ok(())
}

#[test]
fn fedmsg_check_is_critical_when_the_hub_cannot_load_its_ca() -> Result<()> {
    let mut publisher = Publisher::bind()?;
    let sandbox = sandbox()?;
    let socket = sandbox.path().join("monitor.sock");
    let missing = sandbox.path().join("no-such-ca.crt");
    sandbox.write_config(
        "hub.toml",
        &format!(
            "{}\n[tally]\nenabled = true\noutput = {:?}\n\n\
             [moksha.monitoring]\nsocket = \"ipc://{}\"\n",
            sandbox.base_config(publisher.endpoint()),
            out(&sandbox, "tally").display().to_string(),
            socket.display(),
        ),
    )?;
    let cfg = sandbox.config_dir();
    let ca = format!("ca_cert_location={:?}", missing.display().to_string());
    let mut hub = Hub::start(
        &sandbox,
        &["--set", "validate_signatures=true", "--set", &ca],
    )?;
    hub.wait_subscribed(&mut publisher)?;
    let mut command = tool("fedmsg-check", &[&cfg]);
    command.args(["--timeout", "20"]);
    let output = run(command, None, WAIT)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.code() == Some(2), "{output:?}");
    ensure!(
        stdout.starts_with("FEDMSG CRITICAL - hub signature validation: every signed message is rejected: CA certificate unavailable")
            && stdout.contains("no-such-ca.crt"),
        "{stdout}"
    );
    ensure!(hub.terminate()?.success());
    Ok(())
}

#[test]
fn fedmsg_check_says_ok_then_critical_when_a_plugin_is_disabled() -> Result<()> {
    let mut publisher = Publisher::bind()?;
    let sandbox = sandbox()?;
    let socket = sandbox.path().join("monitor.sock");
    sandbox.write_config(
        "hub.toml",
        &format!(
            "{}\n[tally]\nenabled = true\noutput = {:?}\n\n\
             [faulty]\nenabled = true\noutput = {:?}\npanic_on = \"boom\"\n\n\
             [moksha.monitoring]\nsocket = \"ipc://{}\"\nsocket_mode = \"0770\"\n",
            sandbox.base_config(publisher.endpoint()),
            out(&sandbox, "tally").display().to_string(),
            out(&sandbox, "faulty").display().to_string(),
            socket.display(),
        ),
    )?;
    let cfg = sandbox.config_dir();
    let mut hub = Hub::start(&sandbox, &["--set", "plugin_max_consecutive_panics=2"])?;
    hub.wait_subscribed(&mut publisher)?;
    let check = |extra: &[&str]| -> Result<(i32, String, String)> {
        let mut command = tool("fedmsg-check", &[&cfg]);
        if !extra.contains(&"--timeout") {
            command.args(["--timeout", "20"]);
        }
        command.args(extra);
        let output = run(command, None, WAIT)?;
        Ok((
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    };

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket)?.permissions().mode() & 0o777;
    ensure!(mode == 0o770, "socket mode {mode:o}");

    let (code, stdout, _) = check(&[])?;
    ensure!(code == 0, "exit {code}: {stdout}\n{}", hub.log());
    ensure!(stdout.starts_with("FEDMSG OK - 2 consumers"), "{stdout}");
    ensure!(
        stdout.contains(TALLY) && stdout.contains(FAULTY) && stdout.contains("MonitoringProducer"),
        "{stdout}"
    );

    publisher.send("t.ok", "a1")?;
    publisher.send("t.boom", "b1")?;
    publisher.send("t.boom", "b2")?;
    wait_for(
        "the faulty plugin to be disabled",
        || Ok(hub.log().contains("consecutive panics")),
        || hub.log(),
    )?;
    let (code, stdout, _) = check(&[])?;
    ensure!(code == 2, "exit {code}: {stdout}");
    ensure!(
        stdout.starts_with("FEDMSG CRITICAL - consumer fedmsg-test-faulty: disabled"),
        "{stdout}"
    );
    // The two were panics, and are called so.
    ensure!(stdout.contains("2 panics in"), "{stdout}");
    // --json is the report alone (pipeable), the verdict in the status.
    let (code, stdout, _) = check(&["--json"])?;
    ensure!(code == 2, "exit {code}: {stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .map_err(|e| anyhow::anyhow!("--json output is not pure JSON ({e}): {stdout}"))?;
    ensure!(report.is_object(), "{stdout}");
    let (code, _, stderr) = check(&["-c", TALLY, "-c", "ghost"])?;
    ensure!(code == 2, "exit {code}");
    ensure!(stderr.contains("\"ghost\" is not active!"), "{stderr}");

    ensure!(hub.terminate()?.success());
    let (code, stdout, _) = check(&["--timeout", "0.5"])?;
    ensure!(code == 3, "exit {code}: {stdout}");
    ensure!(
        stdout.starts_with("FEDMSG UNKNOWN - Failed to receive message"),
        "{stdout}"
    );
    let empty = sandbox.path().join("empty.d");
    std::fs::create_dir_all(&empty)?;
    let output = run(tool("fedmsg-check", &[&empty]), None, WAIT)?;
    ensure!(output.status.code() == Some(3));
    ensure!(
        String::from_utf8_lossy(&output.stdout)
            .contains("No monitoring endpoint has been configured"),
        "{output:?}"
    );
    Ok(())
}

#[test]
fn a_plugin_publishes_signed_messages_on_the_hub_endpoint() -> Result<()> {
    let mut publisher = Publisher::bind()?;
    let sandbox = sandbox()?;
    let hub_endpoint = tcp(free_port()?);
    sandbox.write_config(
        "hub.toml",
        &format!(
            "hub_name = \"test.hub\"\nsign_messages = true\nssldir = {:?}\n{}\
             \"test.hub\" = [{:?}]\n\n[certnames]\n\"test.hub\" = \"shell-app01\"\n\n\
             [faulty]\nenabled = true\noutput = {:?}\ntopic = \"*.ping\"\npublish_on = \"ping\"\n",
            pki_dir().display().to_string(),
            sandbox.base_config(publisher.endpoint()),
            hub_endpoint,
            out(&sandbox, "faulty").display().to_string(),
        ),
    )?;
    let mut hub = Hub::start(&sandbox, &[])?;
    hub.wait_subscribed(&mut publisher)?;
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB)?;
    sub.set_subscribe(b"")?;
    sub.connect(&hub_endpoint)?;

    // Until the SUB's subscription reached the hub, replies are dropped.
    let topic = "org.fedoraproject.dev.test.ping";
    let deadline = Instant::now() + WAIT;
    let mut attempt = 0;
    let frames = loop {
        ensure!(Instant::now() < deadline, "no reply; log:\n{}", hub.log());
        // A new msg_id each time: the hub drops a repeated one (dedup_window).
        attempt += 1;
        publisher.send(topic, &format!("ping-{attempt}"))?;
        if sub.poll(zmq::POLLIN, 300)? > 0 {
            break sub.recv_multipart(0)?;
        }
    };
    ensure!(frames.len() == 2);
    ensure!(frames[0] == format!("{topic}.reply").as_bytes());
    let body: Value = serde_json::from_slice(&frames[1])?;
    ensure!(body["topic"] == format!("{topic}.reply"), "{body}");
    ensure!(
        body["msg"]["in_reply_to"]
            .as_str()
            .is_some_and(|id| id.starts_with("ping-")),
        "{body}"
    );
    ensure!(body["crypto"] == "x509", "{body}");
    ensure!(
        body["signature"].is_string() && body["certificate"].is_string(),
        "{body}"
    );
    ensure!(body["i"].as_u64().is_some_and(|i| i >= 1), "{body}");
    ensure!(
        body["username"].is_string() && body["timestamp"].is_u64(),
        "{body}"
    );

    // The real Python fedmsg agrees that the signature is valid.
    if let Some(_python) = PyFedmsg::locate()? {
        let file = sandbox.path().join("reply.json");
        std::fs::write(&file, &frames[1])?;
        let python = PyFedmsg::locate()?.context("venv")?.python();
        let mut verify = std::process::Command::new(python);
        verify
            .current_dir(pyfedmsg_dir())
            .env("PYFEDMSG_HOME", pyfedmsg_dir())
            .arg("verify_vectors.py")
            .arg(&file);
        let output = run(verify, None, WAIT)?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        ensure!(
            stdout.starts_with("valid "),
            "python says: {stdout}{:?}",
            output
        );
    }

    ensure!(hub.terminate()?.success());
    let stats = hub.stats()?;
    ensure!(
        stats["publisher"]["published"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{stats}"
    );
    ensure!(stats["publisher"]["failed"] == 0, "{stats}");
    Ok(())
}

#[test]
fn fedmsg_config_prints_the_merged_config_and_single_keys() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ports = BusPorts::new()?;
    sandbox.write_config("bus.toml", &ports.toml())?;
    sandbox.write_config("ssl.toml", &ssl_toml())?;
    let cfg = sandbox.config_dir();
    let config = |args: &[&str]| -> Result<(i32, String, String)> {
        let mut command = tool("fedmsg-config", &[&cfg]);
        command.args(args);
        let output = run(command, None, WAIT)?;
        Ok((
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    };

    let (code, stdout, _) = config(&["--query", "relay_inbound"])?;
    ensure!(
        code == 0 && stdout == format!("{}\n", tcp(ports.relay_in)),
        "{stdout}"
    );
    let (code, stdout, _) = config(&["--query", "sign_messages"])?;
    ensure!(code == 0 && stdout == "true\n", "{stdout}");
    let (code, stdout, _) = config(&["--query", "certnames"])?;
    ensure!(code == 0, "{stdout}");
    let certnames: toml::Table = stdout.parse()?;
    ensure!(
        certnames[&format!("shell.{}", short_hostname())].as_str() == Some("shell-app01"),
        "{stdout}"
    );
    let (code, _, stderr) = config(&["--query", "no.such.key"])?;
    ensure!(code == 1, "exit {code}");
    ensure!(
        stderr.contains("Key `no.such.key` does not exist in config"),
        "{stderr}"
    );

    let (code, stdout, _) = config(&[])?;
    ensure!(code == 0);
    let whole: toml::Table = stdout.parse().context("TOML output")?;
    ensure!(whole["sign_messages"].as_bool() == Some(true));
    ensure!(whole["topic_prefix"].as_str() == Some("org.fedoraproject"));
    let (code, stdout, _) = config(&["--format", "json"])?;
    ensure!(code == 0);
    let json: Value = serde_json::from_str(&stdout)?;
    ensure!(json["endpoints"]["relay_outbound"] == serde_json::json!([tcp(ports.relay_out)]));
    Ok(())
}

#[test]
fn python_config_converted_by_fedmsg_config_drives_our_tools() -> Result<()> {
    let sandbox = sandbox()?;
    let ports = BusPorts::new()?;
    let workdir = python_config_copy(sandbox.path(), &ports)?;
    let converted = sandbox.path().join("converted");
    let import = |output: Option<&Path>| -> Result<std::process::Output> {
        let mut command = tool("fedmsg-config", &[]);
        command
            .env("PYFEDMSG_HOME", pyfedmsg_dir())
            .arg("--import-python")
            .arg(workdir.join("fedmsg.d"));
        if let Some(dir) = output {
            command.arg("--output").arg(dir);
        }
        let output = run(command, None, WAIT)?;
        ensure!(
            output.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(output)
    };

    let merged: toml::Table = String::from_utf8(import(None)?.stdout)?.parse()?;
    ensure!(merged["relay_inbound"][0].as_str() == Some(tcp(ports.relay_in).as_str()));
    ensure!(merged["sign_messages"].as_bool() == Some(true));
    ensure!(merged["counter"]["consumer"]["enabled"].as_bool() == Some(true));
    import(Some(&converted))?;
    for name in ["base", "counter", "logging", "ssl"] {
        let file = converted.join(format!("{name}.toml"));
        ensure!(file.is_file(), "{} missing", file.display());
    }

    // Our relay, hub and logger on the converted files (and the hub's own
    // settings), signing and validating with the shared PKI.
    sandbox.write_config("hub.toml", &hub_toml(&sandbox))?;
    let dirs = [converted.as_path()];
    let mut relay = Process::start("relay", tool("fedmsg-relay", &dirs), sandbox.path())?;
    let converted_arg = converted.display().to_string();
    let mut hub = Hub::start(&sandbox, &["--config-dir", &converted_arg])?;
    let probes = out(&sandbox, "probes");
    probe(
        WAIT * 2,
        |n| {
            log_with(
                &dirs,
                &["--modname", "probe", "--message", &format!("probe-{n}")],
                None,
            )
        },
        || !read_msg_ids(&probes).is_empty(),
        || format!("relay:\n{}\nhub:\n{}", relay.log(), hub.log()),
    )?;
    log_with(&dirs, &[], Some("one\ntwo\nthree\n"))?;
    wait_for(
        "3 messages at the hub",
        || Ok(read_msg_ids(&out(&sandbox, "faulty")).len() >= 3),
        || hub.log(),
    )?;
    relay.check_running()?;
    ensure!(hub.terminate()?.success());
    ensure!(validated_ids(&sandbox, "shell-app01")?.len() == 3);
    ensure!(relay.stop()?.success());
    Ok(())
}

#[test]
fn fedmsg_meta_renders_envelopes_and_checks_rule_files() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let rules = sandbox.path().join("rules");
    std::fs::create_dir_all(&rules)?;
    // An operator's processor for a topic family the bundled set lacks,
    // and one that replaces the bundled logger.
    std::fs::write(
        rules.join("ticket.toml"),
        "[processor]\nname = \"ticket\"\n\n[fields]\nsubtitle = \"{{ msg.who }} opened #{{ msg.id }}\"\nlink = \"https://t.example/{{ msg.id }}\"\nusernames = \"{{ msg.who }}\"\n",
    )?;
    std::fs::write(
        rules.join("logger.toml"),
        "[processor]\nname = \"logger\"\n\n[fields]\nsubtitle = \"said: {{ msg.log }}\"\n",
    )?;
    sandbox.write_config(
        "meta.toml",
        &format!("meta_rules_dir = {:?}\n", rules.display().to_string()),
    )?;
    let config_dir = sandbox.config_dir();
    let mut render = tool("fedmsg-meta", &[config_dir.as_path()]);
    render.args(["render", "--now", "2024-05-01T12:00:00Z"]);
    let input = [
        r#"{"topic": "org.fedoraproject.dev.ticket.new", "msg": {"who": "ralph", "id": 7}}"#,
        r#"{"topic": "org.fedoraproject.dev.logger.log", "msg": {"log": "<b>hi</b>"}, "username": "u"}"#,
        "not json",
        r#"{"topic": "org.fedoraproject.prod.buildsys.tag", "msg": {"name": "stage", "version": "4.1.1", "release": "3.fc18", "tag": "f18", "tag_id": 216, "owner": "ralph", "user": "bodhi"}}"#,
        r#"{"topic": "org.fedoraproject.stg.unhandled_service.some_event"}"#,
    ]
    .join("\n");
    let output = run(render, Some(&input), WAIT)?;
    ensure!(
        output.status.code() == Some(1),
        "a bad line fails the run: {output:?}"
    );
    ensure!(
        String::from_utf8_lossy(&output.stderr).contains("line 3: not JSON"),
        "{output:?}"
    );
    let lines: Vec<Value> = String::from_utf8(output.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(lines.len() == 4, "{lines:?}");
    ensure!(lines[0]["processor"] == "ticket", "{}", lines[0]);
    ensure!(
        lines[0]["repr"] == "ticket.new -- ralph opened #7 https://t.example/7",
        "{}",
        lines[0]
    );
    ensure!(
        lines[0]["usernames"] == serde_json::json!(["ralph"]),
        "{}",
        lines[0]
    );
    // The operator's logger replaced the bundled one; HTML stays text.
    ensure!(lines[1]["subtitle"] == "said: <b>hi</b>", "{}", lines[1]);
    ensure!(
        lines[2]["subtitle"] == "ralph's stage-4.1.1-3.fc18 tagged into f18 by bodhi",
        "{}",
        lines[2]
    );
    ensure!(
        lines[2]["packages"] == serde_json::json!(["stage"])
            && lines[2]["emails"]["bodhi@fedoraproject.org"] == "bodhi",
        "{}",
        lines[2]
    );
    ensure!(
        lines[3]["repr"] == "unhandled_service.some_event --  ",
        "{}",
        lines[3]
    );
    ensure!(lines[3]["icon"].is_null(), "{}", lines[3]);

    // check: a broken file is named with its line; the good ones load.
    std::fs::write(
        rules.join("broken.toml"),
        "[processor]\nname = \"broken\"\n\n[fields]\nlink = \"{% if %}\"\n",
    )?;
    let mut check = tool("fedmsg-meta", &[config_dir.as_path()]);
    check.arg("check").arg(&rules);
    let output = run(check, None, WAIT)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.code() == Some(1), "{output:?}");
    ensure!(
        stdout.contains("broken.toml:5: link:") && !stdout.contains("ticket.toml"),
        "{stdout}"
    );
    Ok(())
}

/// README/ARCHITECTURE: the relay forwards frames byte for byte (fedmsg's
/// re-encoded them). A body that is valid JSON but far from canonical
/// (spaces, unsorted keys, `\u` escapes, a float with a trailing zero) must
/// come out of `relay_outbound` exactly as it went into `relay_inbound`.
#[test]
fn relay_forwards_non_canonical_bodies_byte_for_byte() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ports = BusPorts::new()?;
    sandbox.write_config(
        "bus.toml",
        &format!(
            "sign_messages = false\nvalidate_signatures = false\n{}",
            ports.toml()
        ),
    )?;
    let cfg = sandbox.config_dir();
    let mut relay = Process::start("relay", tool("fedmsg-relay", &[&cfg]), sandbox.path())?;
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB)?;
    sub.set_subscribe(b"")?;
    sub.set_rcvtimeo(50)?;
    sub.connect(&tcp(ports.relay_out))?;
    let publisher = ctx.socket(zmq::PUB)?;
    publisher.set_linger(0)?;
    publisher.connect(&tcp(ports.relay_in))?;
    let topic = "org.fedoraproject.dev.bytes.test";
    let body = format!(
        "{{ \"topic\" : \"{topic}\",\n  \"z\": [1, 2.50, -0],\t\"b\" :{{\"y\":1, \"x\":\"\\u00e9\\u2028 \\/\"}}, \"a\": null }}"
    );
    // PUB/SUB drops what is sent before both connections are up: send
    // until one copy arrives (bounded).
    let deadline = Instant::now() + WAIT * 2;
    let received = loop {
        ensure!(
            Instant::now() < deadline,
            "nothing forwarded; relay:\n{}",
            relay.log()
        );
        publisher.send_multipart([topic.as_bytes(), body.as_bytes()], 0)?;
        if let Ok(frames) = sub.recv_multipart(0) {
            break frames;
        }
    };
    ensure!(received.len() == 2, "{received:?}");
    ensure!(received[0] == topic.as_bytes(), "topic frame changed");
    ensure!(
        received[1] == body.as_bytes(),
        "body changed:\nsent     {body}\nreceived {}",
        String::from_utf8_lossy(&received[1])
    );
    ensure!(relay.stop()?.success(), "relay: {}", relay.log());
    Ok(())
}
