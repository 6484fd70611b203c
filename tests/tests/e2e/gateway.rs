//! `fedmsg-gateway`: our signed messages, through our relay and the
//! gateway, reach the real Python `fedmsg-tail` (which validates them) and
//! a raw zmq subscriber, byte for byte as the relay published them; a
//! configuration whose endpoints contain the gateway itself is refused.
//!
//! Needs the venv of `../shared/pyfedmsg/setup.sh` (skipped with
//! `FEDMSG_SKIP_PYTHON=1`). All on loopback, on free ports.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{ensure, Result};
use fedmsg_e2e::bus::{
    free_port, probe, run, ssl_toml, tcp, tool, wait_for, BusPorts, Process, PyFedmsg,
};
use fedmsg_e2e::{Sandbox, WAIT};

fn gateway_toml(sandbox: &Sandbox, port: u16) -> String {
    format!(
        "plugin_dir = {:?}\nstate_dir = {:?}\nshutdown_timeout = 10.0\n\n\
         [fedmsg.consumers.gateway]\nport = {port}\ninterface = \"127.0.0.1\"\nhigh_water_mark = 1000\n",
        sandbox.plugin_dir().display().to_string(),
        sandbox.path().join("state").display().to_string(),
    )
}

fn gateway_command(sandbox: &Sandbox) -> std::process::Command {
    let cfg = sandbox.config_dir();
    let mut command = tool("fedmsg-gateway", &[&cfg]);
    command.arg("--plugin-dir").arg(sandbox.plugin_dir());
    command
}

/// A SUB socket on `url`, subscribed to everything.
fn subscriber(ctx: &zmq::Context, url: &str) -> Result<zmq::Socket> {
    let sub = ctx.socket(zmq::SUB)?;
    sub.set_subscribe(b"")?;
    sub.set_rcvtimeo(50)?;
    sub.set_linger(0)?;
    sub.connect(url)?;
    Ok(sub)
}

/// Every `[topic, body]` waiting on `sub`.
fn drain(sub: &zmq::Socket, into: &mut Vec<Vec<Vec<u8>>>) {
    while let Ok(frames) = sub.recv_multipart(0) {
        into.push(frames);
    }
}

fn bodies_with(frames: &[Vec<Vec<u8>>], needle: &str) -> BTreeSet<Vec<Vec<u8>>> {
    frames
        .iter()
        .filter(|f| f.len() == 2 && String::from_utf8_lossy(&f[1]).contains(needle))
        .cloned()
        .collect()
}

#[test]
fn gateway_republishes_bytes_unchanged_to_python_tail() -> Result<()> {
    let Some(py) = PyFedmsg::locate()? else {
        return Ok(());
    };
    // Our bus (relay); the Python config's `pybench.local` endpoint is
    // where the gateway binds, its `relay_outbound` nothing: the Python
    // tail hears the gateway only.
    let ours = BusPorts::new()?;
    let theirs = BusPorts::new()?;
    let gateway_port = theirs.bench;
    let sandbox = Sandbox::new()?;
    sandbox.add_plugin("fedmsg-gateway")?;
    sandbox.write_config("bus.toml", &ours.toml())?;
    sandbox.write_config("ssl.toml", &ssl_toml())?;
    sandbox.write_config("gateway.toml", &gateway_toml(&sandbox, gateway_port))?;
    let workdir = py.workdir(sandbox.path(), &theirs)?;
    let cfg = sandbox.config_dir();

    let mut relay = Process::start("relay", tool("fedmsg-relay", &[&cfg]), sandbox.path())?;
    let mut gateway = Process::start("gateway", gateway_command(&sandbox), sandbox.path())?;
    let mut tail = Process::start_python(
        "pytail",
        py.command("fedmsg-tail", &workdir),
        sandbox.path(),
    )?;
    let tail_text = |tail: &Process| format!("{}{}", tail.output(), tail.log());
    let ctx = zmq::Context::new();
    let from_relay = subscriber(&ctx, &tcp(ours.relay_out))?;
    let from_gateway = subscriber(&ctx, &tcp(gateway_port))?;
    let (mut relayed, mut forwarded) = (Vec::new(), Vec::new());

    let logger = |args: &[&str], stdin: Option<&str>| -> Result<()> {
        let mut command = tool("fedmsg-logger", &[&cfg]);
        command.args(["--timeout", "60"]).args(args);
        let output = run(command, stdin, WAIT * 3)?;
        ensure!(
            output.status.success(),
            "fedmsg-logger failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    };
    probe(
        WAIT * 3,
        |n| logger(&["--message", &format!("probe-{n}")], None),
        || {
            drain(&from_relay, &mut relayed);
            drain(&from_gateway, &mut forwarded);
            !bodies_with(&relayed, "probe-").is_empty()
                && !bodies_with(&forwarded, "probe-").is_empty()
                && tail_text(&tail).contains("probe-")
        },
        || {
            format!(
                "relay:\n{}\ngateway:\n{}\npython tail:\n{}",
                relay.log(),
                gateway.log(),
                tail_text(&tail)
            )
        },
    )?;

    let lines: Vec<String> = (0..5).map(|i| format!("through the gateway {i}")).collect();
    logger(&[], Some(&(lines.join("\n") + "\n")))?;
    let deadline = Instant::now() + WAIT;
    loop {
        drain(&from_relay, &mut relayed);
        drain(&from_gateway, &mut forwarded);
        if bodies_with(&forwarded, "through the gateway").len() >= 5
            && bodies_with(&relayed, "through the gateway").len() >= 5
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not all 5 came through\ngateway:\n{}",
            gateway.log()
        );
    }
    // Byte for byte what the relay published, topic frame included.
    let sent = bodies_with(&relayed, "through the gateway");
    let got = bodies_with(&forwarded, "through the gateway");
    ensure!(
        sent == got,
        "the gateway changed bytes:\nsent {sent:?}\ngot {got:?}"
    );
    ensure!(
        got.iter()
            .all(|f| String::from_utf8_lossy(&f[1]).contains("\"signature\"")),
        "the messages should be signed"
    );
    // Python validates (ssl.py: validate_signatures) and prints what passes.
    wait_for(
        "5 messages at the Python tail",
        || Ok(lines.iter().all(|l| tail_text(&tail).contains(l.as_str()))),
        || tail_text(&tail),
    )?;
    ensure!(
        !tail_text(&tail).contains("invalid message"),
        "python rejected a message:\n{}",
        tail_text(&tail)
    );
    gateway.check_running()?;
    ensure!(gateway.stop()?.success(), "gateway:\n{}", gateway.log());
    ensure!(
        gateway.log().contains("gateway stopped"),
        "{}",
        gateway.log()
    );
    tail.stop()?;
    relay.stop()?;
    Ok(())
}

#[test]
fn gateway_refuses_its_own_url_in_endpoints() -> Result<()> {
    let port = free_port()?;
    let sandbox = Sandbox::new()?;
    sandbox.add_plugin("fedmsg-gateway")?;
    sandbox.write_config("gateway.toml", &gateway_toml(&sandbox, port))?;
    sandbox.write_config(
        "endpoints.toml",
        &format!("[endpoints]\n\"gateway.public\" = [{:?}]\n", tcp(port)),
    )?;
    let output = run(gateway_command(&sandbox), None, WAIT)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "it started:\n{stderr}");
    ensure!(
        stderr.contains("re-publish its own output forever") && stderr.contains("gateway.public"),
        "the error should say why:\n{stderr}"
    );
    // Nothing was bound.
    ensure!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    Ok(())
}
