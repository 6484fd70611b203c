//! busmon's page in a real browser: Debian's headless Chromium, driven over
//! WebDriver by its chromedriver, watching a hub whose messages come from
//! `fedmsg-logger` (signed) through `fedmsg-relay`. It shows a message
//! within a second, renders a message made of HTML as text (no script
//! runs), expands a message to its JSON without the credentials, filters on
//! the server, draws a bar per category; the screenshot is left in
//! `target/busmon-screenshot.png`.
//!
//! Chromium is required (scripts/install-deps.sh): without it this test
//! fails, saying so. Everything is on loopback, on free ports; chromedriver
//! and the browser are killed with their process group.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use fedmsg_e2e::browser::{Chromedriver, Session, ELEMENT};
use fedmsg_e2e::bus::{free_port, probe, run, ssl_toml, tool, BusPorts, Process};
use fedmsg_e2e::{build_dir, Hub, Sandbox, WAIT};
use serde_json::{json, Value};

/// What the page is given to show a message: generous, for a loaded
/// machine; the measured latency is printed.
const SHOW: Duration = Duration::from_secs(15);

const XSS: &str = r##"<img src=x onerror="window.pwned=1">"##;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Publishes one message with `fedmsg-logger` (signed, through the relay).
fn log(cfg: &Path, args: &[&str]) -> Result<()> {
    let mut command = tool("fedmsg-logger", &[cfg]);
    command.args(["--timeout", "20"]).args(args);
    let output = run(command, None, WAIT * 2)?;
    ensure!(
        output.status.success(),
        "fedmsg-logger {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Records, in the page, when each message line is added to the list
/// (`window.__added`: [ms since the epoch, text]), so that latency is
/// measured where the user sees it, not when the test next polls.
const WATCH: &str = r##"
window.__added = [];
new MutationObserver((records) => {
  for (const r of records) for (const n of r.addedNodes) {
    if (n.nodeType === 1) window.__added.push([Date.now(), n.textContent]);
  }
}).observe(document.getElementById("messages"), { childList: true });
return true;
"##;

/// When the line containing `arguments[0]` was added, or null.
const ADDED_AT: &str = r##"
const hit = (window.__added || []).find(([, t]) => t.includes(arguments[0]));
return hit ? hit[0] : null;
"##;

/// How many lines the page shows of `org.fedoraproject.dev.logger.<arguments[1]>`
/// (their terse line is fedmsg.meta's `<unhandled log message>`: only the
/// logger's `log` topic has the text in it), null for none.
const COUNT_TOPIC: &str = r##"
const topic = "org.fedoraproject.dev.logger." + arguments[1];
const n = Array.from(document.querySelectorAll("#messages li.message"))
  .filter((li) => li.dataset.topic === topic).length;
return n || null;
"##;

/// The `li` of the message whose text contains `arguments[0]`, as data.
const LINE: &str = r##"
for (const li of document.querySelectorAll("#messages li.message")) {
  if (li.textContent.includes(arguments[0])) {
    return {
      text: li.textContent,
      repr: li.querySelector(".repr").textContent,
      topic: li.querySelector(".topic").textContent,
      badge: li.querySelector(".badge").textContent,
      category: li.dataset.category,
      elements: li.querySelectorAll("*").length,
      imgs: li.querySelectorAll("img").length,
      json: li.querySelector("pre.json") ? li.querySelector("pre.json").textContent : null,
    };
  }
}
return null;
"##;

/// What the page shows, for failure messages.
const PAGE_STATE: &str = r##"
return {
  status: document.getElementById("status").textContent,
  url: location.href,
  filter: document.getElementById("f-topic").value,
  messages: Array.from(document.querySelectorAll("#messages li")).map(li => li.textContent),
  added: (window.__added || []).slice(-10),
};
"##;

struct Bench {
    sandbox: Sandbox,
    relay: Process,
    hub: Hub,
    port: u16,
}

impl Bench {
    fn start() -> Result<Bench> {
        let sandbox = Sandbox::new()?;
        sandbox.add_plugin("fedmsg-busmon")?;
        let ports = BusPorts::new()?;
        let port = free_port()?;
        sandbox.write_config("bus.toml", &ports.toml())?;
        // Signed by the logger, checked for the badge.
        sandbox.write_config("ssl.toml", &ssl_toml())?;
        sandbox.write_config(
            "hub.toml",
            &format!(
                "plugin_dir = {:?}\nstate_dir = {:?}\nshutdown_timeout = 10.0\n\n\
                 [busmon]\nenabled = true\nhttp_listen = \"127.0.0.1:{port}\"\n",
                sandbox.plugin_dir().display().to_string(),
                sandbox.path().join("state").display().to_string(),
            ),
        )?;
        let cfg = sandbox.config_dir();
        let relay = Process::start("relay", tool("fedmsg-relay", &[&cfg]), sandbox.path())?;
        let hub = Hub::start(&sandbox, &[])?;
        Ok(Bench {
            sandbox,
            relay,
            hub,
            port,
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn log(&self, args: &[&str]) -> Result<()> {
        log(&self.sandbox.config_dir(), args)
    }

    fn logs(&self) -> String {
        format!("hub:\n{}\nrelay:\n{}", self.hub.log(), self.relay.log())
    }

    /// Publishes `probe-<topic>-N` messages on
    /// `org.fedoraproject.dev.logger.<topic>` until `arrived` (a script)
    /// says one shows in the page: the chain logger → relay → hub → busmon
    /// → page is up.
    fn probe(&self, page: &Session, topic: &str, arrived: &str) -> Result<()> {
        let cfg = self.sandbox.config_dir();
        let tag = format!("probe-{topic}-");
        let mut failure = None;
        probe(
            WAIT * 3,
            |n| log(&cfg, &["--topic", topic, "--message", &format!("{tag}{n}")]),
            || match page.execute(arrived, &[json!(tag), json!(topic)]) {
                Ok(v) => !v.is_null(),
                Err(e) => {
                    failure = Some(e);
                    true
                }
            },
            || {
                let shown = page
                    .execute(PAGE_STATE, &[])
                    .unwrap_or_else(|e| json!(e.to_string()));
                format!("the page: {shown:#}\n{}", self.logs())
            },
        )?;
        failure.map_or(Ok(()), Err)
    }
}

/// `target/<name>`, next to the build directory the binaries come from.
fn target_file(name: &str) -> PathBuf {
    let build = build_dir();
    build.parent().unwrap_or(&build).join(name)
}

#[test]
fn busmon_page_in_headless_chromium() -> Result<()> {
    let bench = Bench::start()?;
    let mut driver = Chromedriver::start(bench.sandbox.path())?;
    let mut page = driver.session(1280, 1000)?;
    let result = drive(&bench, &page);
    // Whatever happened, the browser and its driver go; a failure keeps
    // the logs.
    let closed = page.close();
    let stopped = driver.stop();
    result.with_context(|| format!("{}\nchromedriver:\n{}", bench.logs(), driver.log()))?;
    closed?;
    stopped?;
    let mut hub = bench.hub;
    ensure!(hub.terminate()?.success(), "{}", hub.log());
    Ok(())
}

fn drive(bench: &Bench, page: &Session) -> Result<()> {
    // The hub serves the page once busmon has started.
    let deadline = Instant::now() + WAIT;
    loop {
        page.goto(&bench.url())?;
        if page.execute("return document.title", &[])? == "busmon" {
            break;
        }
        ensure!(Instant::now() < deadline, "busmon's page never loaded");
        std::thread::sleep(Duration::from_millis(200));
    }
    page.wait_for(
        WAIT,
        r##"return document.getElementById("status").textContent === "live""##,
        &[],
    )
    .context("the page's event stream never opened")?;
    page.execute(WATCH, &[])?;
    bench.probe(page, "log", ADDED_AT)?;

    // Latency: from starting the logger (its process start, config and
    // key loading, signing included) to the line in the page.
    let text = "latency check";
    let started = now_ms();
    bench.log(&["--message", text])?;
    let logged = now_ms();
    let added = page
        .wait_for(SHOW, ADDED_AT, &[json!(text)])
        .context("the message did not show")?
        .as_f64()
        .context("time")?;
    let line = page.execute(LINE, &[json!(text)])?;
    println!(
        "busmon browser latency: {:.0} ms from starting fedmsg-logger to the line in the page \
         ({:.0} ms after the logger exited)",
        added - started,
        added - logged
    );
    ensure!(line["badge"] == "valid", "signed and checked: {line}");
    ensure!(
        line["topic"] == "org.fedoraproject.dev.logger.log",
        "{line}"
    );

    // A message made of HTML is shown as text; its handler never runs.
    bench.log(&["--message", XSS])?;
    page.wait_for(SHOW, ADDED_AT, &[json!(XSS)])?;
    let line = page.execute(LINE, &[json!(XSS)])?;
    ensure!(
        line["imgs"] == 0,
        "an element was made of the message: {line}"
    );
    ensure!(
        line["text"].as_str().is_some_and(|t| t.contains(XSS)),
        "the text is shown as written: {line}"
    );
    // Expanding: the JSON, as text, without the credentials.
    let repr = page.execute(
        "return Array.from(document.querySelectorAll('#messages li.message'))\
         .find(li => li.textContent.includes(arguments[0])).querySelector('.repr')",
        &[json!(XSS)],
    )?;
    let repr = repr[ELEMENT].as_str().context("the message's element")?;
    page.click(repr)?;
    let line = page.wait_for(
        SHOW,
        &LINE.replace(
            "return {",
            "if (!li.querySelector('pre.json')) return null; return {",
        ),
        &[json!(XSS)],
    )?;
    let shown: Value = serde_json::from_str(line["json"].as_str().context("json")?)
        .with_context(|| format!("the expanded JSON does not parse: {line}"))?;
    ensure!(shown["msg"]["log"] == XSS, "{shown}");
    ensure!(
        shown["topic"] == "org.fedoraproject.dev.logger.log",
        "{shown}"
    );
    ensure!(
        shown.get("signature").is_none() && shown.get("certificate").is_none(),
        "credentials shown: {shown}"
    );
    ensure!(line["imgs"] == 0, "{line}");
    // An <img src=x> would have failed to load (and run its handler) by
    // now; give it time anyway.
    std::thread::sleep(Duration::from_millis(500));
    let pwned = page.execute("return typeof window.pwned", &[])?;
    ensure!(pwned == "undefined", "the message's script ran: {pwned}");

    // The chart: a bar for the category (the page polls every 2 s).
    let bar = page.wait_for(
        SHOW,
        r##"const g = document.querySelector('#chart g.bar[data-category="logger"]');
           if (!g) return null;
           const r = g.querySelector("rect");
           return { width: Number(r.getAttribute("width")), text: g.textContent,
                    box: r.getBoundingClientRect().width };"##,
        &[],
    )?;
    ensure!(
        bar["box"].as_f64() > Some(1.0),
        "the bar is not drawn: {bar}"
    );
    let total = page.execute(
        r##"return document.getElementById("total").textContent"##,
        &[],
    )?;
    ensure!(
        total.as_str().and_then(|t| t.parse::<u64>().ok()) >= Some(3),
        "total {total}"
    );

    let shot = target_file("busmon-screenshot.png");
    std::fs::write(&shot, page.screenshot()?)?;
    println!("busmon screenshot: {}", shot.display());

    // The filter (applied by the server): from now on, only one topic.
    let topic = page.find("#f-topic")?;
    page.type_into(&topic, "org.fedoraproject.dev.logger.shown")?;
    page.click(&page.find("#apply")?)?;
    page.wait_for(
        WAIT,
        r##"return document.getElementById("shown").textContent === "0""##,
        &[],
    )?;
    bench.probe(page, "shown", COUNT_TOPIC)?;
    let stats = || -> Result<u64> {
        let v = page.execute(
            "return fetch('/api/stats').then(r => r.json()).then(s => s.rates.total)",
            &[],
        )?;
        v.as_u64().context("total")
    };
    let before = stats()?;
    let shown = |page: &Session| -> Result<u64> {
        let n = page.execute(COUNT_TOPIC, &[Value::Null, json!("shown")])?;
        Ok(n.as_u64().unwrap_or(0))
    };
    let probes = shown(page)?;
    // In order, through one relay and one hub: a hidden message that got
    // through would show before the last shown one.
    bench.log(&["--topic", "hidden", "--message", "hidden one"])?;
    bench.log(&["--topic", "shown", "--message", "shown one"])?;
    bench.log(&["--message", "hidden two"])?;
    bench.log(&["--topic", "shown", "--message", "shown two"])?;
    let deadline = Instant::now() + SHOW;
    while shown(page)? < probes + 2 || stats()? < before + 4 {
        ensure!(
            Instant::now() < deadline,
            "the two messages of the filter's topic did not show, or busmon did not count \
             all four: {:#}",
            page.execute(PAGE_STATE, &[])?
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let topics = page.execute(
        r##"return Array.from(document.querySelectorAll("#messages li.message")).map(li => li.dataset.topic)"##,
        &[],
    )?;
    let topics = topics.as_array().context("topics")?;
    ensure!(
        topics.len() as u64 == probes + 2
            && topics
                .iter()
                .all(|t| t == "org.fedoraproject.dev.logger.shown"),
        "the filter let through: {topics:?}"
    );
    std::fs::write(
        target_file("busmon-screenshot-filtered.png"),
        page.screenshot()?,
    )?;

    // Pause: nothing new is shown, the status counts it; resume says so.
    let pause = page.find("#pause")?;
    page.click(&pause)?;
    bench.log(&["--topic", "shown", "--message", "while paused"])?;
    page.wait_for(
        SHOW,
        r##"return document.getElementById("status").textContent === "paused (1 new)""##,
        &[],
    )?;
    ensure!(shown(page)? == probes + 2, "shown while paused");
    page.click(&pause)?;
    page.wait_for(
        SHOW,
        r##"const first = document.querySelector("#messages li");
            return first.classList.contains("skipped") && first.textContent.startsWith("1 arrived while paused")"##,
        &[],
    )?;

    // Nothing went wrong in the page: no CSP violation, no script error.
    // (A warning of the test's own shows the console is really read.)
    page.execute("console.warn('busmon-e2e-marker')", &[])?;
    let console = page.console()?;
    let marker = |e: &Value| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("busmon-e2e-marker"))
    };
    ensure!(
        console.iter().any(marker),
        "the console was not read: {console:?}"
    );
    let bad: Vec<&Value> = console
        .iter()
        .filter(|e| (e["level"] == "SEVERE" || e["level"] == "WARNING") && !marker(e))
        .collect();
    ensure!(bad.is_empty(), "the browser console: {bad:#?}");
    println!(
        "busmon browser console: {} entries, none a warning or error",
        console.len()
    );
    Ok(())
}
