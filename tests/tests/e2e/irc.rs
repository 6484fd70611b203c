//! The IRC bot plugin (`plugins/irc`) against a real IRC server: Debian's
//! ngircd on free loopback ports (`fedmsg_e2e::ircd`), messages published
//! with `fedmsg-logger` through `fedmsg-relay` to a `fedmsg-hub` (or the
//! `fedmsg-irc` command) whose bot shows them in a channel that a raw TCP
//! client watches.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fedmsg_e2e::bus::{probe, run, tool, BusPorts, Process};
use fedmsg_e2e::ircd::{IrcClient, Ngircd, TestPki};
use fedmsg_e2e::{Hub, Sandbox, WAIT};

const PLUGIN: &str = "fedmsg-irc";
const CHANNEL: &str = "#fedmsg-e2e";

/// A bus (relay), an IRC server with a client in the channel, and a hub
/// with the IRC plugin configured by `irc_toml`.
struct Bench {
    sandbox: Sandbox,
    relay: Process,
    ircd: Ngircd,
    observer: IrcClient,
    hub: Hub,
}

/// The `[[irc]]` entry of most tests; `extra` adds keys to it.
fn irc_toml(port: u16, extra: &str) -> String {
    format!(
        "irc_method = \"notice\"\n\n[fedmsg.consumers.ircbot]\nenabled = true\n\n\
         [[irc]]\nnetwork = \"127.0.0.1\"\nport = {port}\nnickname = \"fedbot\"\n\
         channel = \"fedmsg-e2e\"\nmake_terse = true\nmake_pretty = true\ntimeout = 10\n{extra}\n\
         [irc.filters]\ntopic = ['\\.secret\\.']\nbody = [\"lub-dub\"]\n\n\
         [irc_color_lookup]\nlogger = \"orange\"\n"
    )
}

impl Bench {
    /// Starts everything; `irc` makes the plugin's configuration from the
    /// server.
    fn start(irc: impl FnOnce(&Ngircd) -> String, tls: Option<&TestPki>) -> Result<Bench> {
        Bench::start_with("fedmsg-hub", irc, tls, |_, _| Ok(()))
    }

    fn start_with(
        binary: &str,
        irc: impl FnOnce(&Ngircd) -> String,
        tls: Option<&TestPki>,
        before_hub: impl FnOnce(&Sandbox, &Ngircd) -> Result<()>,
    ) -> Result<Bench> {
        let sandbox = Sandbox::new()?;
        sandbox.add_plugin(PLUGIN)?;
        let ports = BusPorts::new()?;
        sandbox.write_config("bus.toml", &ports.toml())?;
        sandbox.write_config(
            "hub.toml",
            &format!(
                "sign_messages = false\nvalidate_signatures = false\nplugin_dir = {:?}\n\
                 state_dir = {:?}\nshutdown_timeout = 10.0\n",
                sandbox.plugin_dir().display().to_string(),
                sandbox.path().join("state").display().to_string(),
            ),
        )?;
        let ircd = Ngircd::start(sandbox.path(), tls)?;
        sandbox.write_config("irc.toml", &irc(&ircd))?;
        let cfg = sandbox.config_dir();
        let relay = Process::start("relay", tool("fedmsg-relay", &[&cfg]), sandbox.path())?;
        let mut observer = IrcClient::connect(ircd.port(), "observer")?;
        observer.join(CHANNEL)?;
        before_hub(&sandbox, &ircd)?;
        let hub = Hub::start_binary(&sandbox, binary, &[])?;
        Ok(Bench {
            sandbox,
            relay,
            ircd,
            observer,
            hub,
        })
    }

    fn logs(&self) -> String {
        format!(
            "hub:\n{}\nrelay:\n{}\nngircd:\n{}",
            self.hub.log(),
            self.relay.log(),
            self.ircd.log()
        )
    }

    /// Publishes with `fedmsg-logger` (`args`, `stdin`: one message a line).
    fn log(&self, args: &[&str], stdin: Option<&str>) -> Result<()> {
        log_with(&self.sandbox.config_dir(), args, stdin)
    }

    /// Publishes probes until one reaches the channel: the whole chain
    /// (logger, relay, hub, bot, server) is up.
    fn probe(&mut self) -> Result<()> {
        let cfg = self.sandbox.config_dir();
        let observer = &mut self.observer;
        let hub = &self.hub;
        probe(
            WAIT * 3,
            |n| log_with(&cfg, &["--message", &format!("probe-{n}")], None),
            || {
                observer.poll(Duration::from_millis(50)).is_ok()
                    && observer
                        .messages_to(CHANNEL)
                        .iter()
                        .any(|(_, t)| t.contains("probe-"))
            },
            || hub.log(),
        )
        .with_context(|| format!("observer saw:\n{}", self.observer.tail(20)))
    }

    /// Waits until the observer has seen a message containing `text`.
    fn wait_text(&mut self, text: &str, timeout: Duration) -> Result<()> {
        let result = self.observer.wait_for(timeout, |line| {
            line.contains(" NOTICE #fedmsg-e2e :") && line.contains(text)
        });
        result
            .map(|_| ())
            .with_context(|| format!("waiting for {text:?}\n{}", self.logs()))
    }

    /// Stops the hub (must exit 0) and returns the counters the plugin
    /// logged for the bot whose log line contains `nick_or_label`.
    fn stop(&mut self, bot: &str) -> Result<Counters> {
        let status = self.hub.terminate()?;
        ensure!(
            status.success(),
            "hub exited with {status}\n{}",
            self.logs()
        );
        counters(&self.hub.log(), bot)
    }
}

/// Runs our logger with `args` (and `stdin`), expecting success.
fn log_with(cfg: &Path, args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut command = tool("fedmsg-logger", &[cfg]);
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

/// The `k=v` counters of the plugin's "IRC bot stopped" line for `bot`.
struct Counters(Vec<(String, u64)>);

impl Counters {
    fn get(&self, key: &str) -> u64 {
        self.0.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
    }
}

fn counters(log: &str, bot: &str) -> Result<Counters> {
    let line = log
        .lines()
        .find(|l| l.contains("IRC bot stopped") && l.contains(bot))
        .with_context(|| format!("no \"IRC bot stopped\" line for {bot}:\n{log}"))?;
    Ok(Counters(
        line.split_whitespace()
            .filter_map(|field| {
                let (k, v) = field.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect(),
    ))
}

/// The hub's resident memory, from /proc.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

#[test]
fn messages_reach_the_channel_terse_coloured_paced_and_filtered() -> Result<()> {
    let mut t = Bench::start(|ircd| irc_toml(ircd.port(), "line_rate = 0.3"), None)?;
    t.observer
        .wait_for(WAIT, |l| l.starts_with(":fedbot!") && l.contains(" JOIN "))?;
    t.probe()?;
    let before = t.observer.seen.len();
    let lines: String = (0..5).map(|i| format!("line {i}\n")).collect();
    t.log(&[], Some(&lines))?;
    t.log(&["--message", "lub-dub heartbeat"], None)?;
    t.log(&["--modname", "secret", "--message", "hidden"], None)?;
    t.log(&["--message", "the end"], None)?;
    t.wait_text("the end", WAIT)?;

    let shown: Vec<(Instant, String)> = t.observer.seen[before..]
        .iter()
        .filter(|(_, l)| l.starts_with(":fedbot!") && l.contains(" NOTICE #fedmsg-e2e :"))
        .cloned()
        .collect();
    let text = |i: usize| format!("NOTICE #fedmsg-e2e :\x0307logger.log\x03 -- line {i} (");
    let arrivals: Vec<Instant> = (0..5)
        .map(|i| {
            shown
                .iter()
                .find(|(_, l)| l.contains(&text(i)))
                .map(|(at, _)| *at)
                .with_context(|| format!("line {i} missing; seen:\n{}", t.observer.tail(20)))
        })
        .collect::<Result<_>>()?;
    ensure!(arrivals.windows(2).all(|w| w[0] <= w[1]), "out of order");
    // Paced: five lines take at least four intervals of 0.3 s (less the
    // observer's 0.1 s polling).
    let span = arrivals[4] - arrivals[0];
    ensure!(span >= Duration::from_millis(1000), "not paced: {span:?}");
    ensure!(
        !shown
            .iter()
            .any(|(_, l)| l.contains("lub-dub") || l.contains("hidden")),
        "a filtered message was shown:\n{}",
        t.observer.tail(20)
    );
    let c = t.stop("fedmsg-e2e")?;
    ensure!(c.get("filtered_body") >= 1 && c.get("filtered_topic") >= 1);
    ensure!(
        c.get("lines_sent") >= 7 && c.get("joins") == 1,
        "{}",
        t.hub.log()
    );
    Ok(())
}

#[test]
fn injected_lines_never_reach_another_channel_and_long_ones_are_cut() -> Result<()> {
    let mut t = Bench::start(|ircd| irc_toml(ircd.port(), "line_rate = 0.05"), None)?;
    let mut spy = IrcClient::connect(t.ircd.port(), "spy")?;
    spy.join("#other")?;
    t.probe()?;
    t.log(&["--message", "a\r\nPRIVMSG #other :pwned"], None)?;
    t.log(&["--message", "b\nPRIVMSG #other :pwned too"], None)?;
    let long = "x".repeat(10_000);
    t.log(&["--message", &long], None)?;
    t.log(&["--message", "the end"], None)?;
    t.wait_text("the end", WAIT)?;
    spy.poll(Duration::from_millis(500))?;
    ensure!(
        spy.messages_to("#other").is_empty(),
        "#other got: {:?}",
        spy.messages_to("#other")
    );
    let seen: Vec<&String> = t.observer.seen.iter().map(|(_, l)| l).collect();
    ensure!(
        seen.iter().any(|l| l
            .ends_with(":\x0307logger.log\x03 -- a  PRIVMSG #other :pwned (root) ")
            || l.contains("-- a  PRIVMSG #other :pwned (")),
        "the injected text is not one line in the channel:\n{}",
        t.observer.tail(20)
    );
    let cut = seen
        .iter()
        .find(|l| l.contains(" -- xxxxxxxx"))
        .with_context(|| format!("no long line:\n{}", t.observer.tail(10)))?;
    // As relayed by the server, prefix included, plus CRLF.
    ensure!(cut.len() + 2 <= 512, "{} bytes", cut.len() + 2);
    ensure!(cut.ends_with('…'), "not cut with an ellipsis: {cut}");
    ensure!(cut.len() > 400, "cut far too short: {} bytes", cut.len());
    let c = t.stop("fedmsg-e2e")?;
    ensure!(c.get("lines_cut") >= 1);
    Ok(())
}

#[test]
fn the_bot_reconnects_after_the_server_is_killed_and_restarted() -> Result<()> {
    let mut t = Bench::start(
        |ircd| irc_toml(ircd.port(), "line_rate = 0.1\nmax_queue = 5"),
        None,
    )?;
    t.probe()?;
    t.ircd.kill()?;
    // Published while the server is down: queued, bounded to 5.
    let during: String = (0..20).map(|i| format!("during {i}\n")).collect();
    t.log(&[], Some(&during))?;
    std::thread::sleep(Duration::from_millis(500));
    t.ircd.restart()?;
    t.observer = IrcClient::connect(t.ircd.port(), "observer")?;
    t.observer.join(CHANNEL)?;
    // Whether the observer is back before the bot decides whether it sees
    // the skip summary and the queued lines; the counters tell in any case.
    t.observer.wait_for(WAIT * 2, |l| {
        l.starts_with(":fedbot!") && l.contains(" JOIN ")
            || l.contains("fedbot") && l.contains(" 353 ")
    })?;
    t.log(&["--message", "after restart"], None)?;
    t.wait_text("after restart", WAIT * 2)?;
    let c = t.stop("fedmsg-e2e")?;
    ensure!(
        c.get("skipped") >= 15,
        "skipped={}\n{}",
        c.get("skipped"),
        t.hub.log()
    );
    ensure!(
        c.get("summaries_sent") >= 1,
        "no skip summary sent\n{}",
        t.hub.log()
    );
    ensure!(c.get("connects") >= 2 && c.get("disconnects") >= 1);
    ensure!(c.get("joins") >= 2);
    let summary = t
        .observer
        .messages_to(CHANNEL)
        .into_iter()
        .find(|(_, text)| text.ends_with("messages skipped"));
    eprintln!("observer saw the skip summary: {summary:?}");
    Ok(())
}

#[test]
fn a_taken_nickname_is_suffixed_then_regained() -> Result<()> {
    let mut squatter = None;
    let mut t = Bench::start_with(
        "fedmsg-hub",
        |ircd| irc_toml(ircd.port(), "regain_interval = 1"),
        None,
        |_, ircd| {
            squatter = Some(IrcClient::connect(ircd.port(), "fedbot")?);
            Ok(())
        },
    )?;
    t.observer
        .wait_for(WAIT, |l| l.starts_with(":fedbot_!") && l.contains(" JOIN "))?;
    squatter.context("squatter")?.quit()?;
    t.observer.wait_for(WAIT, |l| {
        l.starts_with(":fedbot_!") && l.ends_with(" NICK :fedbot")
    })?;
    t.log(&["--message", "as myself"], None)?;
    t.observer.wait_for(WAIT, |l| {
        l.starts_with(":fedbot!") && l.contains("as myself")
    })?;
    let c = t.stop("fedmsg-e2e")?;
    ensure!(c.get("nick_collisions") == 1 && c.get("nick_regained") == 1);
    Ok(())
}

#[test]
fn ten_thousand_messages_at_once_give_paced_lines_a_skip_summary_and_bounded_memory() -> Result<()>
{
    const N: usize = 10_000;
    let mut t = Bench::start(|ircd| irc_toml(ircd.port(), "line_rate = 0.05"), None)?;
    t.probe()?;
    // Idle: connected, fedmsg.meta built by the probes, queue drained.
    std::thread::sleep(Duration::from_secs(2));
    let pid = t.hub.pid().context("hub pid")?;
    let idle = rss_kib(pid)?;
    let flood: String = (0..N).map(|i| format!("flood {i}\n")).collect();
    let published = Instant::now();
    t.log(&[], Some(&flood))?;
    // Sum of the skip summaries (one per gap the send thread found).
    let skipped = |observer: &IrcClient| -> u64 {
        observer
            .messages_to(CHANNEL)
            .iter()
            .filter_map(|(_, text)| {
                text.strip_prefix("… ")?
                    .strip_suffix(" messages skipped")?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let deadline = Instant::now() + WAIT * 2;
    while skipped(&t.observer) < 8_000 {
        ensure!(
            Instant::now() < deadline,
            "skip summaries add up to {} only\n{}",
            skipped(&t.observer),
            t.logs()
        );
        t.observer.poll(Duration::from_millis(100))?;
    }
    let peak = rss_kib(pid)?;
    // Paced lines go on after the summary.
    let flood_lines = |observer: &IrcClient| {
        let lines = observer.messages_to(CHANNEL);
        let last_summary = lines
            .iter()
            .rposition(|(_, text)| text.ends_with(" messages skipped"))
            .unwrap_or(0);
        lines[last_summary..]
            .iter()
            .filter(|(_, text)| text.contains("-- flood "))
            .count()
    };
    let deadline = Instant::now() + WAIT;
    while flood_lines(&t.observer) < 10 {
        ensure!(
            Instant::now() < deadline,
            "no lines after the summary\n{}",
            t.observer.tail(20)
        );
        t.observer.poll(Duration::from_millis(100))?;
    }
    let flood_lines = flood_lines(&t.observer);
    eprintln!(
        "10,000 messages: summaries add up to {}, {flood_lines} flood lines in {:.1} s; \
         RSS idle {idle} KiB, after the burst {peak} KiB",
        skipped(&t.observer),
        published.elapsed().as_secs_f64()
    );
    ensure!(flood_lines >= 10, "only {flood_lines} flood lines");
    ensure!(
        peak <= idle + 8 * 1024,
        "RSS grew from {idle} KiB to {peak} KiB"
    );
    let c = t.stop("fedmsg-e2e")?;
    ensure!(c.get("skipped") >= 8_000, "skipped={}", c.get("skipped"));
    Ok(())
}

#[test]
fn tls_verified_with_the_test_ca_and_a_wrong_host_name_refused_by_fedmsg_irc() -> Result<()> {
    let pki_dir = tempfile::tempdir()?;
    let pki = TestPki::generate(pki_dir.path())?;
    let ca = pki.ca.display().to_string();
    let mut t = Bench::start_with(
        "fedmsg-irc",
        |ircd| {
            let tls = ircd.tls_port().unwrap_or_default();
            // The enable key is left out: fedmsg-irc sets it. Two bots on
            // the TLS port: one by the certificate's name, one by address.
            format!(
                "[[irc]]\nnetwork = \"localhost\"\nport = {tls}\nssl = true\nssl_ca = {ca:?}\n\
                 nickname = \"fedtls\"\nchannel = \"#fedmsg-e2e\"\nmake_terse = true\nline_rate = 0.05\n\n\
                 [[irc]]\nnetwork = \"127.0.0.1\"\nport = {tls}\nssl = true\nssl_ca = {ca:?}\n\
                 nickname = \"fedbad\"\nchannel = \"#fedmsg-e2e\"\ntimeout = 5\n\n\
                 [tally]\nenabled = true\noutput = \"tally.jsonl\"\n"
            )
        },
        Some(&pki),
        // A plugin fedmsg-irc must not load, although enabled.
        |sandbox, _| sandbox.add_plugin("fedmsg-example-tally").map(|_| ()),
    )?;
    t.observer
        .wait_for(WAIT, |l| l.starts_with(":fedtls!") && l.contains(" JOIN "))?;
    t.probe()?;
    ensure!(
        !t.observer
            .seen
            .iter()
            .any(|(_, l)| l.starts_with(":fedbad!")),
        "the bot with the wrong host name got in"
    );
    let c = t.stop("127.0.0.1")?;
    ensure!(
        c.get("tls_failures") >= 1 && c.get("joins") == 0,
        "{}",
        t.hub.log()
    );
    ensure!(
        t.hub.log().contains("certificate not accepted"),
        "{}",
        t.hub.log()
    );
    ensure!(counters(&t.hub.log(), "localhost")?.get("lines_sent") >= 1);
    ensure!(
        !t.sandbox.path().join("tally.jsonl").exists(),
        "fedmsg-irc ran another plugin"
    );
    Ok(())
}
