//! A real browser for the end-to-end tests: Debian's headless Chromium
//! driven by its `chromedriver` over plain WebDriver HTTP calls (no client
//! library: a dozen endpoints are all the tests use).
//!
//! Chromium and chromedriver are required, not optional: they come from
//! `scripts/install-deps.sh` (Debian's `chromium` and `chromium-driver`),
//! and a machine without them fails the test with that instruction rather
//! than skipping it silently. Everything listens on loopback; chromedriver
//! and every browser process it starts run in a process group of their
//! own, killed as a whole when the [`Chromedriver`] is dropped.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

use crate::bus::free_port;
use crate::WAIT;

/// The key of WebDriver's element references (in `find`'s answer, and in
/// what a script returns for an element).
pub const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The first executable called `name` on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `chromium` and `chromedriver`, or an error saying how to install them.
pub fn locate() -> Result<(PathBuf, PathBuf)> {
    let missing = |what: &str, package: &str| {
        anyhow::anyhow!(
            "{what} is not installed (not on PATH): the busmon browser test needs Debian's \
             `chromium` and `chromium-driver`; run scripts/install-deps.sh as root \
             (or apt-get install {package})"
        )
    };
    let chromium = on_path("chromium")
        .or_else(|| on_path("chromium-browser"))
        .ok_or_else(|| missing("chromium", "chromium"))?;
    let driver =
        on_path("chromedriver").ok_or_else(|| missing("chromedriver", "chromium-driver"))?;
    Ok((chromium, driver))
}

/// A running chromedriver on a free loopback port, in a process group of
/// its own with the browsers it starts; the group is killed on drop.
pub struct Chromedriver {
    child: Option<Child>,
    port: u16,
    chromium: PathBuf,
    profile: tempfile::TempDir,
    log: PathBuf,
}

impl Chromedriver {
    /// Starts chromedriver (log in `<dir>/chromedriver.log`) and waits
    /// until it says it is ready.
    pub fn start(dir: &Path) -> Result<Chromedriver> {
        let (chromium, driver) = locate()?;
        let port = free_port()?;
        let log = dir.join("chromedriver.log");
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            // No `--allowed-ips`: without it chromedriver listens on
            // loopback only (with it, on every interface).
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A group of its own: dropping the driver kills the browser
            // and its helper processes with it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn {}", driver.display()))?;
        let mut driver = Chromedriver {
            child: Some(child),
            port,
            chromium,
            profile: tempfile::tempdir()?,
            log,
        };
        let agent = agent();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(child) = driver.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    driver.child = None;
                    bail!("chromedriver exited at start ({status}):\n{}", driver.log());
                }
            }
            let ready = agent
                .get(&format!("{}/status", driver.url()))
                .call()
                .ok()
                .and_then(|r| r.into_string().ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                return Ok(driver);
            }
            if Instant::now() >= deadline {
                bail!("chromedriver not ready within {WAIT:?}:\n{}", driver.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// chromedriver's log so far (the end of it).
    pub fn log(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(8000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }

    /// A new headless Chromium session with a fresh profile, its window
    /// `width`×`height`.
    pub fn session(&self, width: u32, height: u32) -> Result<Session> {
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--user-data-dir={}", self.profile.path().display()),
            format!("--window-size={width},{height}"),
            // Nothing but loopback: no background fetches, no name
            // lookups (the page is on 127.0.0.1, an address).
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-default-apps".to_owned(),
            "--disable-extensions".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".to_owned(),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium.display().to_string(),
                "args": args,
            },
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"script": 30_000, "pageLoad": 60_000, "implicit": 0},
        }}});
        let agent = agent();
        // A loaded machine can take a while to start a browser.
        let created = request(
            &agent,
            "POST",
            &format!("{}/session", self.url()),
            Some(&capabilities),
        )
        .with_context(|| format!("new session; chromedriver log:\n{}", self.log()))?;
        let id = created["sessionId"]
            .as_str()
            .with_context(|| format!("no sessionId in {created}"))?
            .to_owned();
        Ok(Session {
            agent,
            base: format!("{}/session/{id}", self.url()),
            open: true,
        })
    }

    /// Stops chromedriver and every process of its group, and checks that
    /// none is left.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let group = child.id() as i32;
        // SAFETY: kill(2) on the process group we created; no memory effects.
        unsafe { libc::kill(-group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        child.wait()?;
        // Browser processes were the driver's children: once killed, init
        // reaps them, and the group is empty.
        let deadline = Instant::now() + Duration::from_secs(10);
        // SAFETY: signal 0 only checks that the group has a member.
        while unsafe { libc::kill(-group, 0) } == 0 {
            if Instant::now() >= deadline {
                bail!("processes of chromedriver's group {group} are still alive");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group we created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(90))
        .build()
}

/// One WebDriver call: the `value` of the answer, or the driver's error.
fn request(agent: &ureq::Agent, method: &str, url: &str, body: Option<&Value>) -> Result<Value> {
    let call = agent.request(method, url);
    let answer = match body {
        Some(body) => call
            .set("Content-Type", "application/json")
            .send_string(&body.to_string()),
        None => call.call(),
    };
    let text = match answer {
        Ok(response) => response.into_string()?,
        Err(ureq::Error::Status(status, response)) => {
            let text = response.into_string().unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            bail!(
                "WebDriver {method} {url}: {status} {} {}",
                v["value"]["error"],
                v["value"]["message"]
            );
        }
        Err(e) => bail!("WebDriver {method} {url}: {e}"),
    };
    let mut v: Value = serde_json::from_str(&text).context("WebDriver answer is not JSON")?;
    Ok(v["value"].take())
}

/// A browser session; ended on drop.
pub struct Session {
    agent: ureq::Agent,
    base: String,
    open: bool,
}

impl Session {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        request(&self.agent, method, &format!("{}{path}", self.base), body)
    }

    /// Loads `url`.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.call("POST", "/url", Some(&json!({ "url": url })))?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page
    /// and returns what it returns.
    pub fn execute(&self, script: &str, args: &[Value]) -> Result<Value> {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// Polls `script` until it returns something other than `null`/`false`,
    /// for at most `timeout`; returns that value.
    pub fn wait_for(&self, timeout: Duration, script: &str, args: &[Value]) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.execute(script, args)?;
            if !(v.is_null() || v == false) {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                bail!("not within {timeout:?}: {script}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The element `css` selects (the first), as a WebDriver reference.
    pub fn find(&self, css: &str) -> Result<String> {
        let v = self.call(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        )?;
        v[ELEMENT]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no element reference for {css}: {v}"))
    }

    /// A real click (the pointer at the element's centre).
    pub fn click(&self, element: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/element/{element}/click"),
            Some(&json!({})),
        )?;
        Ok(())
    }

    /// Clears a text field and types `text` into it, as keystrokes.
    pub fn type_into(&self, element: &str, text: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/element/{element}/clear"),
            Some(&json!({})),
        )?;
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(&json!({ "text": text })),
        )?;
        Ok(())
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Result<Vec<u8>> {
        let v = self.call("GET", "/screenshot", None)?;
        let b64 = v.as_str().context("screenshot is not a string")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
    }

    /// The browser console's entries since the last call (chromedriver's
    /// log endpoint): CSP violations and script errors show up here.
    pub fn console(&self) -> Result<Vec<Value>> {
        let v = self.call("POST", "/se/log", Some(&json!({"type": "browser"})))?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Ends the session (the browser exits).
    pub fn close(&mut self) -> Result<()> {
        if std::mem::take(&mut self.open) {
            self.call("DELETE", "", None)?;
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
