//! fedmsg.meta rendering, ours and Python's, on the same messages: the
//! examples of `shared/vectors/upstream/meta-examples.json` (the fallback,
//! logger, git, buildsys, bodhi, copr, FAS and pagure), every field.
//!
//! Ours renders in this process on one thread; Python's is
//! `meta/benches/python_meta.py` (the real fedmsg.meta with
//! fedmsg_meta_fedora_infrastructure 0.31.0) in the pyfedmsg venv. Both
//! count CPU time of the rendering thread, so a loaded machine slows both
//! alike and the figures are per core.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use fedmsg_meta::{default_topic_prefix_re, MetaSet};
use serde_json::Value;

use crate::frames::thread_cpu_s;

/// What one side measured.
#[derive(Debug, Clone, Copy)]
pub struct MetaCost {
    /// Messages rendered (every field of each).
    pub messages: usize,
    /// CPU seconds of the rendering thread.
    pub cpu_s: f64,
}

impl MetaCost {
    /// Messages per CPU second.
    pub fn per_core(&self) -> f64 {
        if self.cpu_s > 0.0 {
            self.messages as f64 / self.cpu_s
        } else {
            0.0
        }
    }
}

/// Our figures: rendering, and loading the bundled rule set.
#[derive(Debug, Clone, Copy)]
pub struct OursMeta {
    /// Rendering.
    pub render: MetaCost,
    /// Median wall time of loading (parsing and compiling) the bundled
    /// rules, in milliseconds.
    pub load_ms: f64,
}

/// The example messages.
pub fn messages(shared: &Path) -> Result<Vec<Arc<Value>>> {
    let path = shared.join("vectors/upstream/meta-examples.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let examples: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let list = examples["examples"]
        .as_array()
        .with_context(|| format!("{}: no `examples` list", path.display()))?;
    Ok(list.iter().map(|e| Arc::new(e["msg"].clone())).collect())
}

/// Renders the examples over and over for `seconds` of CPU time.
pub fn ours(shared: &Path, seconds: f64) -> Result<OursMeta> {
    let messages = messages(shared)?;
    let prefix_re = default_topic_prefix_re("org.fedoraproject");
    let mut loads = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let set = MetaSet::bundled(&prefix_re).context("the bundled rules do not load")?;
        loads.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(set);
    }
    let load_ms = crate::report::median(&loads).unwrap_or(0.0);
    let set = MetaSet::bundled(&prefix_re).context("the bundled rules do not load")?;
    // Warm up (lazy regex caches, allocator).
    for message in &messages {
        std::hint::black_box(set.render_shared(message, 0.0));
    }
    let cpu0 = thread_cpu_s();
    let mut done = 0;
    while thread_cpu_s() - cpu0 < seconds {
        for message in &messages {
            std::hint::black_box(set.render_shared(message, 0.0));
        }
        done += messages.len();
    }
    Ok(OursMeta {
        render: MetaCost {
            messages: done,
            cpu_s: thread_cpu_s() - cpu0,
        },
        load_ms,
    })
}

/// Python's fedmsg.meta on the same messages.
pub fn python(venv: &Path, seconds: f64) -> Result<MetaCost> {
    let script = crate::workspace_root().join("meta/benches/python_meta.py");
    let output = Command::new(venv.join("bin/python"))
        .arg(&script)
        .arg(seconds.to_string())
        .arg("--json")
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = String::from_utf8_lossy(&output.stdout);
    let value: Value = serde_json::from_str(line.lines().last().unwrap_or_default())
        .with_context(|| format!("{}: not a JSON result: {line}", script.display()))?;
    let number = |key: &str| {
        value[key]
            .as_f64()
            .with_context(|| format!("python_meta.py: no {key}"))
    };
    Ok(MetaCost {
        messages: number("messages")? as usize,
        cpu_s: number("cpu_s")?,
    })
}
