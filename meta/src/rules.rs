//! Rule files: one processor each, as TOML with Jinja templates.
//!
//! ```toml
//! [processor]
//! name = "git"                     # fedmsg's __name__, matched lower-cased
//! description = "the Fedora version control system"
//! homepage = "https://src.fedoraproject.org/"
//! icon = "https://apps.fedoraproject.org/img/icons/git-logo.png"
//! topic_prefix_re = 'org\.fedoraproject\.(dev|stg|prod)'   # default: the hub's
//! email_domain = "fedoraproject.org"   # emails/avatars from usernames
//! macros = '''{% macro who(v) %}...{% endmacro %}'''        # for every template
//!
//! [fields]                          # for every topic of the processor
//! secondary_icon = "{{ msg.agent | avatar }}"
//!
//! [[when]]                          # tried in order, per field
//! topic_contains = ".git.receive"   # or topic_re = "..."
//! subtitle = '{{ msg.commit.username }} pushed to {{ msg.commit.repo }}'
//! usernames = ["{{ msg.commit.username }}"]
//! ```
//!
//! The processor handles a topic matching
//! `^<topic_prefix_re>\.(<name>)(\.(.*))?$` (fedmsg's rule; the first
//! processor that matches wins). For each field, the first `[[when]]` block
//! whose topic test matches and that sets the field gives its template,
//! else `[fields]`, else the field's default (title: the topic without its
//! first three parts; icon: the processor's `icon`; the rest empty).
//!
//! A template sees `msg` (the envelope's `msg`), `envelope` (all of it),
//! `topic`, `parts` (the topic split at its dots), `suffix` (what follows
//! the processor name, without the dot), `username` (the envelope's) and
//! `now` (epoch seconds). A missing key is
//! an error (fedmsg's `KeyError`): the field gets its default; `is defined`
//! and `default(...)` test for optional keys. List fields (`usernames`,
//! `packages`, `objects`) are either one template whose non-empty output
//! lines are the elements (a failure empties the set, as in fedmsg), or a
//! list of templates, one element each (a failing one is left out). Empty
//! output means "none" for the fields listed in `[processor]
//! absent_when_empty` (default `["icon", "secondary_icon"]`; add `"link"`
//! for a processor whose link is `None` rather than `""`, drop
//! `"secondary_icon"` for one that gives `""`). A processor without a
//! `secondary_icon` template has none.
//!
//! The fields: `title`, `subtitle`, `link`, `icon`, `secondary_icon`,
//! `usernames`, `packages`, `objects` and `agent` (who did it; default: one
//! of the usernames). `emails` and `avatars` follow from the usernames when
//! the processor sets `email_domain`.
//!
//! Filters beyond minijinja's built-ins: `avatar` (a FAS username's
//! libravatar URL), `avatar_email`, `first_line`, `series` (fedmsg.meta's
//! `list_to_series`: `a, b, and 2 others`), `avatar_openid`, `email2fas` and `nick2fas`
//! (fedmsg.meta's FAS lookups, answered offline from the `meta_fas_users`
//! table: the local part of a `@fedoraproject.org` address, else the
//! table's username, else the input).
//!
//! minijinja details that matter for fedmsg's semantics: a missing key in
//! `{% set x = msg.missing %}` fails only where `x` is used (write
//! `msg.x ~ ""` to fail at once, as Python's lookup did); `none` prints as
//! `None`, as in Python.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use crate::{default_title, MetaStats, Rendering};

/// Fuel of one template evaluation (minijinja instructions): plenty for
/// any real processor, and a bound on a rule that loops.
const FUEL: u64 = 100_000;

/// A rule file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct RuleError {
    /// The file (or the bundled file's name).
    pub file: String,
    /// 1-based line; 0 when the whole file is concerned.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl RuleError {
    pub(crate) fn io(path: &Path, error: &std::io::Error) -> RuleError {
        RuleError {
            file: path.display().to_string(),
            line: 0,
            message: format!("cannot read: {error}"),
        }
    }
}

/// The fields a processor renders.
const FIELDS: [&str; 9] = [
    "title",
    "subtitle",
    "link",
    "icon",
    "secondary_icon",
    "usernames",
    "packages",
    "objects",
    "agent",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    processor: Header,
    #[serde(default)]
    fields: Templates,
    #[serde(default)]
    when: Vec<Templates>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    homepage: String,
    #[serde(default)]
    docs: String,
    #[serde(default)]
    object: String,
    #[serde(default)]
    icon: Option<String>,
    #[serde(default)]
    topic_prefix_re: Option<String>,
    #[serde(default)]
    email_domain: Option<String>,
    #[serde(default = "absent_when_empty_default")]
    absent_when_empty: Vec<String>,
    #[serde(default)]
    macros: Option<Spanned<String>>,
}

/// `[fields]` and each `[[when]]` block (the topic tests only in the
/// latter).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Templates {
    #[serde(default)]
    topic_contains: Option<String>,
    #[serde(default)]
    topic_re: Option<Spanned<String>>,
    title: Option<Spanned<toml::Value>>,
    subtitle: Option<Spanned<toml::Value>>,
    link: Option<Spanned<toml::Value>>,
    icon: Option<Spanned<toml::Value>>,
    secondary_icon: Option<Spanned<toml::Value>>,
    usernames: Option<Spanned<toml::Value>>,
    agent: Option<Spanned<toml::Value>>,
    packages: Option<Spanned<toml::Value>>,
    objects: Option<Spanned<toml::Value>>,
}

impl Templates {
    fn get(&self, field: &str) -> Option<&Spanned<toml::Value>> {
        match field {
            "title" => self.title.as_ref(),
            "subtitle" => self.subtitle.as_ref(),
            "link" => self.link.as_ref(),
            "icon" => self.icon.as_ref(),
            "secondary_icon" => self.secondary_icon.as_ref(),
            "usernames" => self.usernames.as_ref(),
            "packages" => self.packages.as_ref(),
            "objects" => self.objects.as_ref(),
            "agent" => self.agent.as_ref(),
            _ => None,
        }
    }
}

/// The fields whose empty output means "none" unless a file says otherwise
/// (fedmsg.meta's processors mostly returned `None` for no icon, `""` for
/// no link).
fn absent_when_empty_default() -> Vec<String> {
    vec!["icon".into(), "secondary_icon".into()]
}

/// Which topics a `[[when]]` block is for.
#[derive(Debug)]
enum TopicTest {
    Contains(String),
    Matches(Regex),
    Always,
}

impl TopicTest {
    fn matches(&self, topic: &str) -> bool {
        match self {
            TopicTest::Contains(part) => topic.contains(part.as_str()),
            TopicTest::Matches(re) => re.is_match(topic),
            TopicTest::Always => true,
        }
    }
}

/// The `macros` of a processor, split per macro so that a template imports
/// only the macros it uses: importing a module runs every definition in it,
/// and that was a quarter of the rendering time when every template
/// imported all of them.
struct MacroModules {
    /// `(name, definition, names of the other macros it calls)`, or `None`
    /// when the text is not only macro definitions (then a template that
    /// mentions `m` imports all of it).
    macros: Option<Vec<(String, String, Vec<String>)>>,
    /// Whether there are macros at all.
    any: bool,
}

/// A macro definition (not nested: a text with nested definitions is not
/// split).
static MACRO_DEF: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
    Regex::new(r"(?s)\{%[-+]?\s*macro\s+(\w+)\s*\(.*?\{%[-+]?\s*endmacro\s*[-+]?%\}")
        .expect("a constant regex")
});

/// A use of the macros' namespace in a template.
static M_USE: std::sync::LazyLock<Regex> =
    std::sync::LazyLock::new(|| Regex::new(r"\bm\b(\.(\w+))?").expect("a constant regex"));

impl MacroModules {
    fn split(text: &str) -> MacroModules {
        let any = !text.trim().is_empty();
        let mut defs = Vec::new();
        let mut rest = String::new();
        let mut last = 0;
        for found in MACRO_DEF.captures_iter(text) {
            let (Some(whole), Some(name)) = (found.get(0), found.get(1)) else {
                continue;
            };
            rest.push_str(&text[last..whole.start()]);
            last = whole.end();
            defs.push((name.as_str().to_owned(), whole.as_str().to_owned()));
        }
        rest.push_str(&text[last..]);
        let nested = defs
            .iter()
            .any(|(_, def)| def.matches("endmacro").count() > 1);
        if !rest.trim().is_empty() || nested {
            return MacroModules { macros: None, any };
        }
        let names: Vec<String> = defs.iter().map(|(n, _)| n.clone()).collect();
        let macros = defs
            .into_iter()
            .map(|(name, def)| {
                let calls = names
                    .iter()
                    .filter(|other| **other != name && mentions(&def, other))
                    .cloned()
                    .collect();
                (name, def, calls)
            })
            .collect();
        MacroModules {
            macros: Some(macros),
            any,
        }
    }

    /// The name of the module `source` imports as `m` (added to `env` on
    /// first use), or `None` when it uses no macro.
    fn module_for(&self, source: &str, env: &mut Environment<'static>) -> Option<String> {
        if !self.any {
            return None;
        }
        let uses: Vec<Option<&str>> = M_USE
            .captures_iter(source)
            .map(|c| c.get(2).map(|m| m.as_str()))
            .collect();
        if uses.is_empty() {
            return None;
        }
        let macros = match &self.macros {
            // `m` on its own (passed along, subscripted): all of them.
            Some(macros) if uses.iter().all(Option::is_some) => macros,
            _ => return Some("macros".to_owned()),
        };
        // The macros used and those they call, in definition order.
        let mut wanted: Vec<&str> = uses.into_iter().flatten().collect();
        let mut i = 0;
        while let Some(name) = wanted.get(i).copied() {
            if let Some((_, _, calls)) = macros.iter().find(|(n, _, _)| n == name) {
                for call in calls {
                    if !wanted.contains(&call.as_str()) {
                        wanted.push(call);
                    }
                }
            }
            i += 1;
        }
        let chosen: Vec<&(String, String, Vec<String>)> = macros
            .iter()
            .filter(|(n, _, _)| wanted.contains(&n.as_str()))
            .collect();
        if chosen.len() == macros.len() {
            return Some("macros".to_owned());
        }
        let name = format!(
            "macros:{}",
            chosen
                .iter()
                .map(|(n, _, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        if env.get_template(&name).is_err() {
            let text: String = chosen.iter().map(|(_, def, _)| def.as_str()).collect();
            // Each definition compiled as part of the whole; alone it can
            // only fail if the split was wrong, and then the whole is used.
            if env.add_template_owned(name.clone(), text).is_err() {
                return Some("macros".to_owned());
            }
        }
        Some(name)
    }
}

/// Whether `text` mentions the identifier `name` as a whole word.
fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let word = |c: char| c.is_alphanumeric() || c == '_';
        !text[..at].ends_with(word) && !text[at + name.len()..].starts_with(word)
    })
}

/// One field's compiled template(s): names in the processor's environment.
#[derive(Debug, Clone)]
enum Compiled {
    One(String),
    Each(Vec<String>),
}

/// A loaded processor.
pub struct Processor {
    name: String,
    lower: String,
    description: String,
    homepage: String,
    docs: String,
    object: String,
    icon: Option<String>,
    email_domain: Option<String>,
    /// Fields (of `icon`, `secondary_icon`, `link`) whose empty output is
    /// "none" rather than an empty text.
    absent_when_empty: Vec<String>,
    pattern: Regex,
    /// Per `FIELDS` entry: `(topic test, template)` in the order tried;
    /// the `[fields]` default last with `TopicTest::Always`.
    fields: Vec<Vec<(usize, Compiled)>>,
    tests: Vec<TopicTest>,
    env: Environment<'static>,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("name", &self.name)
            .field("pattern", &self.pattern.as_str())
            .finish_non_exhaustive()
    }
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(1, |before| before.matches('\n').count() + 1)
}

impl Processor {
    /// Loads the rule file `file` (its name, for errors) from `text`.
    /// `default_prefix_re` is used when the file sets no
    /// `topic_prefix_re`.
    ///
    /// # Errors
    ///
    /// [`RuleError`] naming the line: TOML syntax, an unknown key, a bad
    /// regular expression, a template that does not compile.
    pub fn parse(file: &str, text: &str, default_prefix_re: &str) -> Result<Processor, RuleError> {
        let error = |line: usize, message: String| RuleError {
            file: file.to_owned(),
            line,
            message,
        };
        let parsed: File = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            error(line, e.message().to_owned())
        })?;
        let header = parsed.processor;
        if header.name.trim().is_empty() {
            return Err(error(0, "processor.name is empty".into()));
        }
        let lower = header.name.to_lowercase();
        let prefix = header
            .topic_prefix_re
            .clone()
            .unwrap_or_else(|| default_prefix_re.to_owned());
        let pattern = Regex::new(&format!(
            r"^{prefix}\.({})(\.(.*))?$",
            regex::escape(&lower)
        ))
        .map_err(|e| error(0, format!("topic_prefix_re: {e}")))?;

        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Text in, text out: HTML or control characters in a message pass
        // through as they are; escaping is the consumer's job (busmon
        // escapes for HTML, the IRC bot strips control characters).
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        // `{% ... %}` lines leave no blank lines behind (list templates
        // give one element per output line).
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| error(0, e.to_string()))?,
        );
        env.set_fuel(Some(FUEL));
        crate::filters::register(&mut env);
        let (macros, macros_line) = match &header.macros {
            Some(m) => (m.get_ref().clone(), line_of(text, m.span().start)),
            None => (String::new(), 0),
        };
        if !macros.is_empty() {
            env.add_template_owned("macros", macros.clone())
                .map_err(|e| error(macros_line + e.line().unwrap_or(1) - 1, e.to_string()))?;
        }
        let modules = MacroModules::split(&macros);

        let mut tests = Vec::with_capacity(parsed.when.len() + 1);
        let mut sources: Vec<&Templates> = Vec::with_capacity(parsed.when.len() + 1);
        if parsed.fields.topic_contains.is_some() || parsed.fields.topic_re.is_some() {
            return Err(error(
                0,
                "[fields] applies to every topic: topic tests belong in [[when]] blocks".into(),
            ));
        }
        for when in &parsed.when {
            let test = match (&when.topic_contains, &when.topic_re) {
                (Some(part), None) => TopicTest::Contains(part.clone()),
                (None, Some(re)) => TopicTest::Matches(Regex::new(re.get_ref()).map_err(|e| {
                    error(line_of(text, re.span().start), format!("topic_re: {e}"))
                })?),
                (None, None) => TopicTest::Always,
                (Some(_), Some(_)) => {
                    return Err(error(
                        0,
                        "a [[when]] block has both topic_contains and topic_re".into(),
                    ))
                }
            };
            tests.push(test);
            sources.push(when);
        }
        tests.push(TopicTest::Always);
        sources.push(&parsed.fields);

        let mut fields = Vec::with_capacity(FIELDS.len());
        for field in FIELDS {
            let mut chain = Vec::new();
            for (index, templates) in sources.iter().enumerate() {
                let Some(spanned) = templates.get(field) else {
                    continue;
                };
                let line = line_of(text, spanned.span().start);
                let texts: Vec<&str> = match spanned.get_ref() {
                    toml::Value::String(s) => vec![s.as_str()],
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|item| {
                            item.as_str().ok_or_else(|| {
                                error(line, format!("{field}: expected a list of templates"))
                            })
                        })
                        .collect::<Result<_, _>>()?,
                    _ => {
                        return Err(error(
                            line,
                            format!("{field}: expected a template or a list of templates"),
                        ))
                    }
                };
                if texts.len() > 1 && !matches!(field, "usernames" | "packages" | "objects") {
                    return Err(error(line, format!("{field}: expected one template")));
                }
                let mut names = Vec::with_capacity(texts.len());
                for (n, source) in texts.iter().enumerate() {
                    let name = format!("{field}.{index}.{n}");
                    let full = match modules.module_for(source, &mut env) {
                        Some(module) => format!("{{% import {module:?} as m %}}{source}"),
                        None => (*source).to_owned(),
                    };
                    env.add_template_owned(name.clone(), full).map_err(|e| {
                        error(line + e.line().unwrap_or(1) - 1, format!("{field}: {e}"))
                    })?;
                    names.push(name);
                }
                let compiled = match spanned.get_ref() {
                    toml::Value::Array(_) => Compiled::Each(names),
                    _ => Compiled::One(names.remove(0)),
                };
                chain.push((index, compiled));
            }
            fields.push(chain);
        }
        Ok(Processor {
            name: header.name,
            lower,
            description: header.description,
            homepage: header.homepage,
            docs: header.docs,
            object: header.object,
            icon: header.icon,
            email_domain: header.email_domain,
            absent_when_empty: header.absent_when_empty,
            pattern,
            fields,
            tests,
            env,
        })
    }

    /// Sets the table of e-mail addresses and IRC nicks → FAS usernames that
    /// the `email2fas` and `nick2fas` filters look in.
    pub fn set_fas_users(&mut self, table: &minijinja::Value) {
        self.env
            .add_global(crate::filters::FAS_USERS, table.clone());
    }

    /// fedmsg's `__name__`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// fedmsg's `__description__`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// fedmsg's `__link__`: the service's home page.
    pub fn homepage(&self) -> &str {
        &self.homepage
    }

    /// fedmsg's `__docs__`.
    pub fn docs(&self) -> &str {
        &self.docs
    }

    /// fedmsg's `__obj__`: what its messages are about.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// The regular expression of the topics the processor handles.
    pub(crate) fn pattern(&self) -> &Regex {
        &self.pattern
    }

    /// What follows the processor's name in `topic` (without the dot), when
    /// it handles `topic` (fedmsg's `handle_msg`).
    pub fn handles<'t>(&self, topic: &'t str) -> Option<&'t str> {
        // Most processors do not match: a plain match test is several times
        // cheaper than capturing, which only the winner needs.
        if !self.pattern.is_match(topic) {
            return None;
        }
        let captures = self.pattern.captures(topic)?;
        Some(captures.get(captures.len() - 1).map_or("", |m| m.as_str()))
    }

    /// Renders every field of `envelope`.
    pub(crate) fn render(
        &self,
        envelope: &Arc<Value>,
        topic: &str,
        suffix: &str,
        now: f64,
        stats: &MetaStats,
    ) -> Rendering {
        let matched: Vec<bool> = self.tests.iter().map(|t| t.matches(topic)).collect();
        // A lazy view: only what templates read is converted.
        let whole = crate::view::of(Arc::clone(envelope));
        let msg = whole.get_attr("msg").ok().filter(|m| !m.is_undefined());
        let context = minijinja::context! {
            msg => msg,
            envelope => whole,
            topic => topic,
            parts => topic.split('.').map(str::to_owned).collect::<Vec<_>>(),
            suffix => suffix,
            username => envelope.get("username").and_then(Value::as_str),
            now => now,
        };
        let text = |field: usize, default: String| -> String {
            match self.template_for(field, &matched) {
                Some(Compiled::One(name)) => self.eval(name, &context).unwrap_or_else(|e| {
                    stats.record(&self.lower, FIELDS[field], &e);
                    default
                }),
                _ => default,
            }
        };
        let set = |field: usize| -> BTreeSet<String> {
            match self.template_for(field, &matched) {
                Some(Compiled::One(name)) => match self.eval(name, &context) {
                    Ok(out) => out
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    Err(e) => {
                        stats.record(&self.lower, FIELDS[field], &e);
                        BTreeSet::new()
                    }
                },
                Some(Compiled::Each(names)) => names
                    .iter()
                    .filter_map(|name| match self.eval(name, &context) {
                        Ok(out) => Some(out.trim().to_owned()).filter(|s| !s.is_empty()),
                        Err(e) => {
                            stats.record(&self.lower, FIELDS[field], &e);
                            None
                        }
                    })
                    .collect(),
                None => BTreeSet::new(),
            }
        };
        let optional = |field: usize, s: String| {
            let absent = s.is_empty() && self.absent_when_empty.iter().any(|f| f == FIELDS[field]);
            (!absent).then_some(s)
        };
        let usernames = set(5);
        let (emails, avatars) = match &self.email_domain {
            Some(domain) => (
                usernames
                    .iter()
                    .map(|u| (format!("{u}@{domain}"), u.clone()))
                    .collect(),
                usernames
                    .iter()
                    .map(|u| (u.clone(), crate::filters::avatar_url(u)))
                    .collect(),
            ),
            None => Default::default(),
        };
        // fedmsg's msg2agent: the processor's own answer, else an element
        // of the usernames (Python popped an arbitrary one; the first
        // sorted here, which is the same when there is one).
        let agent = Some(text(8, String::new()))
            .filter(|a| !a.is_empty())
            .or_else(|| usernames.first().cloned());
        Rendering {
            processor: self.lower.clone(),
            agent,
            title: text(0, default_title(topic)),
            subtitle: text(1, String::new()),
            link: optional(2, text(2, String::new())),
            icon: optional(3, text(3, self.icon.clone().unwrap_or_default())),
            secondary_icon: self
                .template_for(4, &matched)
                .and_then(|_| optional(4, text(4, String::new()))),
            usernames,
            packages: set(6),
            objects: set(7),
            emails,
            avatars,
        }
    }

    /// The template of `field` for a topic whose `[[when]]` tests gave
    /// `matched` (computed once per message, not once per field).
    fn template_for(&self, field: usize, matched: &[bool]) -> Option<&Compiled> {
        self.fields.get(field)?.iter().find_map(|(test, compiled)| {
            matched
                .get(*test)
                .copied()
                .unwrap_or(false)
                .then_some(compiled)
        })
    }

    fn eval(&self, name: &str, context: &minijinja::Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PREFIX: &str = r"org\.fedoraproject\.(dev|stg|prod)";

    #[test]
    fn errors_name_file_and_line() {
        let e = Processor::parse("x.toml", "[processor]\nname = \"x\"\nbogus = 1\n", PREFIX)
            .unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("x.toml", 3), "{e}");
        let e = Processor::parse(
            "y.toml",
            "[processor]\nname = \"y\"\n\n[fields]\nsubtitle = \"{{ msg.a \"\n",
            PREFIX,
        )
        .unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(e.to_string().starts_with("y.toml:5: subtitle:"), "{e}");
        let e = Processor::parse("z.toml", "[processor]\nname = ", PREFIX).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn fields_branch_per_topic_and_fall_back_on_errors() {
        let rules = r#"
[processor]
name = "Demo"
icon = "https://icon"

[fields]
subtitle = "generic {{ suffix }}"
usernames = "{{ msg.user }}\n{{ msg.other }}"

[[when]]
topic_contains = ".demo.special"
subtitle = "special for {{ msg.user }}"
link = "https://x/{{ msg.id }}"
packages = ["{{ msg.pkg }}", "{{ msg.missing }}"]
"#;
        let p = Processor::parse("demo.toml", rules, PREFIX).unwrap();
        assert_eq!(
            p.handles("org.fedoraproject.prod.demo.special"),
            Some("special")
        );
        assert_eq!(p.handles("org.fedoraproject.prod.demo"), Some(""));
        assert_eq!(p.handles("org.fedoraproject.prod.demolition.x"), None);
        let stats = MetaStats::default();
        let env = json!({"topic": "org.fedoraproject.prod.demo.special",
                         "msg": {"user": "ralph", "id": 7, "pkg": "kernel"}});
        let r = p.render(
            &Arc::new(env),
            "org.fedoraproject.prod.demo.special",
            "special",
            0.0,
            &stats,
        );
        assert_eq!(r.processor, "demo");
        assert_eq!(r.title, "demo.special");
        assert_eq!(r.subtitle, "special for ralph");
        assert_eq!(r.link.as_deref(), Some("https://x/7"));
        assert_eq!(r.icon.as_deref(), Some("https://icon"));
        assert_eq!(r.packages, BTreeSet::from(["kernel".to_owned()]));
        // `msg.other` is missing: the whole one-template set is empty.
        assert!(r.usernames.is_empty());
        assert_eq!(stats.failures(), 2);
        let env = json!({"topic": "org.fedoraproject.prod.demo.other", "msg": {}});
        let r = p.render(
            &Arc::new(env),
            "org.fedoraproject.prod.demo.other",
            "other",
            0.0,
            &stats,
        );
        assert_eq!(r.subtitle, "generic other");
        assert_eq!(r.link.as_deref(), Some(""));
    }

    #[test]
    fn templates_import_only_the_macros_they_use() {
        let macros = r#"
{% macro inner(v) %}<{{ v }}>{% endmacro %}
{% macro outer(v) %}{{ inner(v) }}!{% endmacro %}
{% macro other() %}{{ msg.missing }}{% endmacro %}
"#;
        let modules = MacroModules::split(macros);
        let mut env = Environment::new();
        env.add_template_owned("macros", macros.to_owned()).unwrap();
        assert_eq!(modules.module_for("{{ msg.a }}", &mut env), None);
        // `outer` calls `inner`: both, not `other`.
        assert_eq!(
            modules
                .module_for("{{ m.outer(msg.a) }}", &mut env)
                .as_deref(),
            Some("macros:inner,outer")
        );
        assert!(env.get_template("macros:inner,outer").is_ok());
        // `m` on its own: everything.
        assert_eq!(
            modules
                .module_for("{{ m['outer'](1) }}", &mut env)
                .as_deref(),
            Some("macros")
        );
        // Not only definitions: everything.
        let mixed = MacroModules::split("{% set x = 1 %}{% macro a() %}{% endmacro %}");
        assert_eq!(
            mixed.module_for("{{ m.a() }}", &mut env).as_deref(),
            Some("macros")
        );
        let rules = format!(
            "[processor]\nname = \"mac\"\nmacros = '''{macros}'''\n[fields]\nsubtitle = \"{{{{ m.outer(msg.a) }}}}\"\nlink = \"{{{{ m.other() }}}}\"\n"
        );
        let p = Processor::parse("mac.toml", &rules, PREFIX).unwrap();
        let stats = MetaStats::default();
        let env = json!({"topic": "org.fedoraproject.prod.mac", "msg": {"a": 1}});
        let r = p.render(
            &Arc::new(env),
            "org.fedoraproject.prod.mac",
            "",
            0.0,
            &stats,
        );
        assert_eq!(r.subtitle, "<1>!");
        assert_eq!(r.link.as_deref(), Some(""), "a failing macro: the default");
        assert_eq!(stats.failures(), 1);
    }

    #[test]
    fn a_looping_or_allocating_rule_runs_out_of_fuel() {
        let rules = r#"
[processor]
name = "loop"
[fields]
subtitle = "{% for i in range(1000000) %}{{ i }}{% endfor %}"
link = '{{ ("x" * 100000000000) | length }}'
title = "{{ range(100000000000) | list | length }}"
"#;
        let p = Processor::parse("loop.toml", rules, PREFIX).unwrap();
        let stats = MetaStats::default();
        let env = json!({"topic": "org.fedoraproject.prod.loop", "msg": {}});
        let r = p.render(
            &Arc::new(env.clone()),
            "org.fedoraproject.prod.loop",
            "",
            0.0,
            &stats,
        );
        assert_eq!(r.subtitle, "");
        assert_eq!(r.link.as_deref(), Some(""));
        assert_eq!(r.title, "loop", "the default title");
        assert_eq!(stats.failures(), 3);
    }
}
