//! fedmsg.meta in Rust: every message as a sentence (reference part 2, §3).
//!
//! A [`MetaSet`] holds processors in order; [`MetaSet::render`] picks the
//! first whose topic pattern matches the envelope (fedmsg's
//! `msg2processor`), or the fallback processor, and renders every field of
//! fedmsg.meta at once: title, subtitle, link, icon, secondary icon,
//! usernames, packages, objects, emails, avatars, and the terse line
//! ([`Rendering::repr`]: `"{title} -- {subtitle} {link}"`, empty parts kept).
//!
//! # Processors are data
//!
//! A processor is a rule file ([`rules`]): TOML naming the processor and its
//! topics, with every field a Jinja template (minijinja) over the message.
//! Fedora's processors ship as the bundled rule set, compiled into the
//! binary ([`bundled`]); an operator adds or replaces processors by dropping
//! files into a rules directory ([`MetaSet::load_dir`]).
//!
//! # Failures
//!
//! fedmsg.meta turned a `KeyError` inside a processor into the field's empty
//! value. Here a template that fails on one message (a missing key, a type
//! error, running out of fuel) gives that field its fallback rendering (the
//! default title, an empty subtitle, no link, an empty set), is counted in
//! [`MetaStats`] and logged, rate-limited: a message never makes rendering
//! fail as a whole, and nothing panics. Template evaluation is bounded by
//! fuel, so no rule can loop forever.

#![warn(missing_docs)]

mod filters;
pub mod rules;
mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use rules::{Processor, RuleError};

/// Every field of fedmsg.meta for one message.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rendering {
    /// The processor that rendered it, lower-cased (`git`, `buildsys`,
    /// `unhandled` for the fallback): what fedmsg-collectd counts by.
    pub processor: String,
    /// `msg2title`.
    pub title: String,
    /// `msg2subtitle`.
    pub subtitle: String,
    /// `msg2link`: `None` when the processor says there is none (upstream
    /// returned `None` there; a processor that gives `""` gives `Some("")`).
    pub link: Option<String>,
    /// `msg2icon`.
    pub icon: Option<String>,
    /// `msg2secondary_icon`.
    pub secondary_icon: Option<String>,
    /// `msg2usernames`.
    pub usernames: BTreeSet<String>,
    /// `msg2packages`.
    pub packages: BTreeSet<String>,
    /// `msg2objects`.
    pub objects: BTreeSet<String>,
    /// `msg2emails`: e-mail → username.
    pub emails: BTreeMap<String, String>,
    /// `msg2avatars`: username → avatar URL.
    pub avatars: BTreeMap<String, String>,
    /// `msg2agent`: who did it (the processor's `agent`, else one of the
    /// usernames), when known.
    pub agent: Option<String>,
}

impl Rendering {
    /// fedmsg.meta's terse line, `msg2repr`: `"{title} -- {subtitle} {link}"`
    /// with empty parts kept (an unknown message ends in `" --  "`).
    pub fn repr(&self) -> String {
        // As fedmsg: `link or ''`.
        format!(
            "{} -- {} {}",
            self.title,
            self.subtitle,
            self.link.as_deref().unwrap_or_default()
        )
    }

    /// Every field and the `repr` as one JSON object (sets as sorted
    /// lists, an absent icon as `null`): what `fedmsg-meta render` prints
    /// and what plugins receive.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "processor": self.processor,
            "title": self.title,
            "subtitle": self.subtitle,
            "link": self.link,
            "icon": self.icon,
            "secondary_icon": self.secondary_icon,
            "usernames": self.usernames,
            "packages": self.packages,
            "objects": self.objects,
            "emails": self.emails,
            "avatars": self.avatars,
            "agent": self.agent,
            "repr": self.repr(),
        })
    }
}

/// Rendering failures so far (each is logged, rate-limited, with its
/// processor and field).
#[derive(Debug, Default)]
pub struct MetaStats {
    failures: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

impl MetaStats {
    /// Fields that fell back to their default rendering because their
    /// template failed.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn record(&self, processor: &str, field: &'static str, error: &dyn std::fmt::Display) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        // At most one line every ten seconds: a rule that fails on a whole
        // topic must not flood the log.
        let log = self.last_log.lock().is_ok_and(|mut last| {
            let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
            if due {
                *last = Some(Instant::now());
            }
            due
        });
        if log {
            tracing::warn!(processor, field, %error, failures = self.failures(), "meta: template failed; field rendered as the default");
        }
    }
}

/// The processors, in the order they are tried, and the fallback.
pub struct MetaSet {
    processors: Vec<Processor>,
    /// Every processor's topic pattern, in order: one scan of the topic
    /// finds the processors that handle it, where trying each pattern in
    /// turn cost more than rendering a simple message.
    index: regex::RegexSet,
    stats: MetaStats,
}

impl std::fmt::Debug for MetaSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaSet")
            .field(
                "processors",
                &self
                    .processors
                    .iter()
                    .map(Processor::name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// fedmsg's default `topic_prefix_re` for a topic prefix and environment
/// list: `re.escape(prefix) + r'\.[^\W\d_]+'` (reference §5.1).
pub fn default_topic_prefix_re(topic_prefix: &str) -> String {
    format!(r"{}\.[^\W\d_]+", regex::escape(topic_prefix))
}

/// `topic_prefix_re` as configured, else fedmsg's derivation from
/// `topic_prefix` ([`default_topic_prefix_re`]).
pub fn effective_topic_prefix_re(topic_prefix: &str, configured: Option<&str>) -> String {
    configured.map_or_else(|| default_topic_prefix_re(topic_prefix), str::to_owned)
}

impl MetaSet {
    /// The bundled rule set ([`bundled`]). `topic_prefix_re` is what rule
    /// files that do not set their own are matched with (fedmsg derives
    /// it from `topic_prefix`: [`default_topic_prefix_re`]).
    ///
    /// # Errors
    ///
    /// A bundled rule file does not load (a bug; the tests load them all).
    pub fn bundled(topic_prefix_re: &str) -> Result<MetaSet, RuleError> {
        let mut processors = bundled::FILES
            .iter()
            .map(|(name, text)| Processor::parse(name, text, topic_prefix_re))
            .collect::<Result<Vec<_>, _>>()?;
        // The first processor whose name follows the topic prefix wins, so
        // a dotted name (`ci.pipeline`) must be tried before a name that is
        // its first part (`ci`): more dotted parts first, then file order.
        processors.sort_by_key(|p| std::cmp::Reverse(p.name().matches('.').count()));
        Ok(MetaSet::of(processors))
    }

    /// The processors of a fedmsg configuration: the bundled rule set plus
    /// the files of `rules_dir` (`meta_rules_dir`), with the FAS username
    /// table `fas_users` (`meta_fas_users`), matched with
    /// `topic_prefix_re` or, when it is unset, fedmsg's derivation from
    /// `topic_prefix` ([`default_topic_prefix_re`]). Rule files that do not
    /// load are returned beside the set, which works without them.
    ///
    /// # Errors
    ///
    /// A bundled rule file does not load.
    pub fn for_config(
        topic_prefix: &str,
        topic_prefix_re: Option<&str>,
        rules_dir: Option<&Path>,
        fas_users: &BTreeMap<String, String>,
    ) -> Result<(MetaSet, Vec<RuleError>), RuleError> {
        let prefix_re = effective_topic_prefix_re(topic_prefix, topic_prefix_re);
        let (mut set, errors) = MetaSet::with_rules(&prefix_re, rules_dir)?;
        set.set_fas_users(fas_users);
        Ok((set, errors))
    }

    /// Sets the table of e-mail addresses and IRC nicks → FAS usernames
    /// (config `meta_fas_users`) that stands in for fedmsg.meta's FAS
    /// lookups: offline, so rendering never waits for the network.
    pub fn set_fas_users(&mut self, table: &BTreeMap<String, String>) {
        let value = minijinja::Value::from(table.clone());
        for processor in &mut self.processors {
            processor.set_fas_users(&value);
        }
    }

    /// The bundled rule set plus the rule files of `rules_dir` (see
    /// [`MetaSet::load_dir`]), with the files that did not load.
    ///
    /// # Errors
    ///
    /// A bundled rule file does not load.
    pub fn with_rules(
        topic_prefix_re: &str,
        rules_dir: Option<&Path>,
    ) -> Result<(MetaSet, Vec<RuleError>), RuleError> {
        let mut set = MetaSet::bundled(topic_prefix_re)?;
        let errors = match rules_dir {
            Some(dir) => set.load_dir(dir, topic_prefix_re),
            None => Vec::new(),
        };
        Ok((set, errors))
    }

    /// Checks the rule files of `dir` without keeping them (nor building
    /// the bundled set): what a hub that renders only on demand reports at
    /// start.
    pub fn check_dir(dir: &Path, topic_prefix_re: &str) -> Vec<RuleError> {
        let mut empty = MetaSet::of(Vec::new());
        empty.load_dir(dir, topic_prefix_re)
    }

    /// Adds the rule files (`*.toml`) of `dir`, in name order. A file whose
    /// processor has the name of one already in the set replaces it in
    /// place; a new one is tried before the bundled ones (an operator's
    /// rule wins). A file that does not load is reported and skipped: the
    /// others still load.
    pub fn load_dir(&mut self, dir: &Path, topic_prefix_re: &str) -> Vec<RuleError> {
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) => {
                errors.push(RuleError::io(dir, &error));
                return errors;
            }
        };
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        let mut added = Vec::new();
        for path in paths {
            let loaded = std::fs::read_to_string(&path)
                .map_err(|e| RuleError::io(&path, &e))
                .and_then(|text| {
                    Processor::parse(&path.display().to_string(), &text, topic_prefix_re)
                });
            match loaded {
                Ok(processor) => {
                    match self
                        .processors
                        .iter_mut()
                        .find(|p| p.name().eq_ignore_ascii_case(processor.name()))
                    {
                        Some(existing) => *existing = processor,
                        None => added.push(processor),
                    }
                }
                Err(error) => errors.push(error),
            }
        }
        added.append(&mut self.processors);
        *self = MetaSet::of(added);
        errors
    }

    /// A set of `processors`, in the order they are tried.
    fn of(processors: Vec<Processor>) -> MetaSet {
        // The patterns compiled one by one already, so together they do
        // too; only a size limit could refuse them, and then the set is
        // tried one pattern at a time.
        let index = regex::RegexSet::new(processors.iter().map(|p| p.pattern().as_str()))
            .unwrap_or_else(|_| regex::RegexSet::empty());
        MetaSet {
            processors,
            index,
            stats: MetaStats::default(),
        }
    }

    /// The processors, in the order they are tried.
    pub fn processors(&self) -> &[Processor] {
        &self.processors
    }

    /// Rendering failures so far.
    pub fn stats(&self) -> &MetaStats {
        &self.stats
    }

    /// Renders every field of `envelope`; `now` (epoch seconds) is what
    /// rules that speak of relative time measure from. Copies the message;
    /// [`MetaSet::render_shared`] does not.
    pub fn render(&self, envelope: &Value, now: f64) -> Rendering {
        self.render_shared(&Arc::new(envelope.clone()), now)
    }

    /// [`MetaSet::render`] of a message the caller already shares.
    pub fn render_shared(&self, envelope: &Arc<Value>, now: f64) -> Rendering {
        let topic = envelope
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let candidates: Box<dyn Iterator<Item = &Processor>> =
            if self.index.len() == self.processors.len() {
                // The first match in order: `matches` yields ascending
                // indices.
                Box::new(
                    self.index
                        .matches(topic)
                        .into_iter()
                        .filter_map(|i| self.processors.get(i)),
                )
            } else {
                Box::new(self.processors.iter())
            };
        for processor in candidates {
            if let Some(suffix) = processor.handles(topic) {
                return processor.render(envelope, topic, suffix, now, &self.stats);
            }
        }
        fallback(topic)
    }
}

/// The fallback (fedmsg's `DefaultProcessor`, `unhandled`): the default
/// title and nothing else.
fn fallback(topic: &str) -> Rendering {
    Rendering {
        processor: "unhandled".into(),
        title: default_title(topic),
        link: Some(String::new()),
        ..Rendering::default()
    }
}

/// fedmsg's default title: the topic without its first three components,
/// or the whole topic for a STOMP destination (`/topic/...`).
pub fn default_title(topic: &str) -> String {
    if topic.starts_with("/topic/") {
        return topic.to_owned();
    }
    topic.splitn(4, '.').nth(3).unwrap_or_default().to_owned()
}

/// The bundled rule set: fedmsg's own processors and Fedora's, one file
/// each under `meta/rules/`, compiled in by `build.rs`.
pub mod bundled {
    /// `(file name, text)` of every bundled rule file, in file-name order.
    pub const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_title_and_fallback_repr() {
        let none = Rendering {
            title: "t".into(),
            subtitle: "s".into(),
            ..Rendering::default()
        };
        assert_eq!(none.repr(), "t -- s ", "an absent link prints as nothing");
        assert_eq!(default_title("org.fedoraproject.stg.a.b"), "a.b");
        assert_eq!(default_title("a.b.c"), "");
        assert_eq!(default_title("/topic/x.y"), "/topic/x.y");
        let set = MetaSet::bundled(&default_topic_prefix_re("org.fedoraproject")).unwrap();
        let r = set.render(
            &json!({"topic": "org.fedoraproject.stg.unhandled_service.some_event"}),
            0.0,
        );
        assert_eq!(r.processor, "unhandled");
        assert_eq!(r.repr(), "unhandled_service.some_event --  ");
    }
}
