//! Text a remote peer chose, made safe for a log line or a terminal.
//!
//! A topic, a `msg_id` or a payload comes from whoever published it. Written
//! as it is, a `\n` forges a whole log line, an ESC sequence rewrites the
//! operator's terminal, and a 5 MB topic makes a 5 MB log line. Every
//! human-facing output of such text goes through [`escape`] (control
//! characters shown as Rust/JSON-style escapes) and, in logs, [`for_log`]
//! (also cut to a bounded length).

use std::borrow::Cow;
use std::fmt;

/// The most characters of one peer-controlled value a log line shows.
pub const LOG_MAX_CHARS: usize = 200;

/// `text` with every control character (C0, DEL, C1, and the Unicode line
/// and paragraph separators) escaped as `\n`, `\t`, `\u{1b}`, ...; the text
/// itself when it has none (no copy).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// A peer-controlled value for a log field: escaped as [`escape`] and cut
/// after [`LOG_MAX_CHARS`] characters, saying how long it was.
pub fn for_log(text: &str) -> ForLog<'_> {
    ForLog(text)
}

/// See [`for_log`].
#[derive(Clone, Copy)]
pub struct ForLog<'a>(&'a str);

impl fmt::Display for ForLog<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        match text.char_indices().nth(LOG_MAX_CHARS) {
            None => f.write_str(&escape(text)),
            Some((cut, _)) => write!(f, "{}… ({} bytes)", escape(&text[..cut]), text.len()),
        }
    }
}

impl fmt::Debug for ForLog<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_cuts_long_values() {
        assert!(matches!(escape("org.fedoraproject.x"), Cow::Borrowed(_)));
        assert_eq!(escape("a\nb\u{1b}[2Jc\u{7}"), "a\\nb\\u{1b}[2Jc\\u{7}");
        assert_eq!(escape("é\u{2028}"), "é\\u{2028}");
        assert_eq!(for_log("short").to_string(), "short");
        let long = "x".repeat(5_000_000);
        let shown = for_log(&long).to_string();
        assert!(shown.len() < LOG_MAX_CHARS + 40, "{}", shown.len());
        assert!(shown.ends_with("… (5000000 bytes)"), "{shown}");
        // A cut never splits a character.
        let wide = "é".repeat(1000);
        assert!(for_log(&wide).to_string().starts_with("éé"));
    }
}
