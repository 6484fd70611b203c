//! Topic globs: which messages a plugin wants, and the zmq subscriptions
//! that bring them in.
//!
//! fedmsg deleted every `*` from a consumer's topic and used the rest as a
//! zmq prefix, so only a trailing `*` worked. We keep that behaviour for a
//! trailing `*` (prefix match) and make a `*` anywhere else a real wildcard
//! that matches any run of characters, dots included. The zmq SUBSCRIBE
//! prefix is the literal part before the first wildcard; the full glob is
//! checked again at dispatch.

use wildmatch::WildMatch;

/// One compiled topic glob.
#[derive(Debug, Clone)]
enum Pattern {
    /// Matches every topic (`*` or the empty string, as in fedmsg).
    Any,
    /// `literal*`: a prefix test, the common fedmsg form.
    Prefix(String),
    /// No wildcard at all: an exact match.
    Exact(String),
    /// Wildcards elsewhere: a full glob match.
    Glob(WildMatch),
}

/// The set of topic globs one plugin asked for.
#[derive(Debug, Clone)]
pub struct TopicFilter {
    globs: Vec<String>,
    patterns: Vec<Pattern>,
}

/// Returns the literal part of `glob` before its first wildcard: the zmq
/// SUBSCRIBE prefix that lets through every topic the glob can match.
pub fn literal_prefix(glob: &str) -> &str {
    match glob.find(['*', '?']) {
        Some(at) => &glob[..at],
        None => glob,
    }
}

impl TopicFilter {
    /// Compiles `globs`. With `strict` (fedmsg's `zmq_strict`), a glob
    /// without wildcards must equal the topic; otherwise a glob without
    /// wildcards is a prefix, exactly as fedmsg treats it.
    pub fn new<S: AsRef<str>>(globs: &[S], strict: bool) -> Self {
        let globs: Vec<String> = globs.iter().map(|g| g.as_ref().to_owned()).collect();
        let patterns = globs.iter().map(|g| compile(g, strict)).collect();
        TopicFilter { globs, patterns }
    }

    /// The globs as given.
    pub fn globs(&self) -> &[String] {
        &self.globs
    }

    /// True when `topic` matches at least one glob. A message matching
    /// several globs of one plugin is still delivered once (fedmsg
    /// delivered it once per matching glob).
    pub fn matches(&self, topic: &str) -> bool {
        self.patterns.iter().any(|p| match p {
            Pattern::Any => true,
            Pattern::Prefix(prefix) => topic.starts_with(prefix.as_str()),
            Pattern::Exact(exact) => topic == exact,
            Pattern::Glob(glob) => glob.matches(topic),
        })
    }

    /// The zmq SUBSCRIBE prefixes needed to receive every matching topic.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut prefixes: Vec<String> = self
            .globs
            .iter()
            .map(|g| literal_prefix(g).to_owned())
            .collect();
        minimize_prefixes(&mut prefixes);
        prefixes
    }
}

fn compile(glob: &str, strict: bool) -> Pattern {
    let prefix = literal_prefix(glob);
    if glob.is_empty() || glob == "*" {
        Pattern::Any
    } else if prefix.len() == glob.len() {
        if strict {
            Pattern::Exact(glob.to_owned())
        } else {
            Pattern::Prefix(glob.to_owned())
        }
    } else if prefix.len() + 1 == glob.len() && glob.ends_with('*') {
        Pattern::Prefix(prefix.to_owned())
    } else {
        Pattern::Glob(WildMatch::new(glob))
    }
}

/// Sorts, then drops every prefix already covered by a shorter one, so the
/// SUB sockets carry as few subscriptions as possible (an empty prefix
/// covers everything).
pub fn minimize_prefixes(prefixes: &mut Vec<String>) {
    prefixes.sort();
    prefixes.dedup();
    let mut kept: Vec<String> = Vec::with_capacity(prefixes.len());
    for prefix in prefixes.drain(..) {
        if !kept.iter().any(|k| prefix.starts_with(k.as_str())) {
            kept.push(prefix);
        }
    }
    *prefixes = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(globs: &[&str]) -> TopicFilter {
        TopicFilter::new(globs, false)
    }

    #[test]
    fn star_and_empty_match_everything() {
        assert!(filter(&["*"]).matches("org.fedoraproject.prod.x"));
        assert!(filter(&[""]).matches("anything"));
        assert_eq!(filter(&["*"]).subscriptions(), vec![String::new()]);
    }

    #[test]
    fn trailing_star_is_a_prefix_like_fedmsg() {
        let f = filter(&["org.fedoraproject.prod.bodhi.*"]);
        assert!(f.matches("org.fedoraproject.prod.bodhi.update.comment"));
        assert!(f.matches("org.fedoraproject.prod.bodhi."));
        assert!(!f.matches("org.fedoraproject.prod.bodhix"));
        assert!(!f.matches("org.fedoraproject.stg.bodhi.update"));
        assert_eq!(f.subscriptions(), vec!["org.fedoraproject.prod.bodhi."]);
    }

    #[test]
    fn middle_star_is_a_real_wildcard() {
        let f = filter(&["org.fedoraproject.*.bodhi.update"]);
        assert!(f.matches("org.fedoraproject.prod.bodhi.update"));
        assert!(f.matches("org.fedoraproject.a.b.bodhi.update"));
        assert!(!f.matches("org.fedoraproject.prod.bodhi.update.comment"));
        assert_eq!(f.subscriptions(), vec!["org.fedoraproject."]);
    }

    #[test]
    fn no_wildcard_is_prefix_unless_strict() {
        let loose = filter(&["org.a"]);
        assert!(loose.matches("org.a.b"));
        let strict = TopicFilter::new(&["org.a"], true);
        assert!(strict.matches("org.a"));
        assert!(!strict.matches("org.a.b"));
    }

    #[test]
    fn subscriptions_are_minimized() {
        let f = filter(&["a.b.*", "a.*", "c.d", "a.b.c.*"]);
        assert_eq!(f.subscriptions(), vec!["a.", "c.d"]);
        let all = filter(&["a.*", "*"]);
        assert_eq!(all.subscriptions(), vec![String::new()]);
    }

    #[test]
    fn overlapping_globs_match_once() {
        let f = filter(&["a.*", "a.b.*"]);
        assert!(f.matches("a.b.c"));
    }
}
