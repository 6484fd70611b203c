//! IRC lines: parsing what the server sends, and building what we send so
//! that no message content can end a line or start a command.
//!
//! Parsing follows RFC 1459/2812 with IRCv3 message tags: `[@tags ]
//! [:prefix ]COMMAND [params] [:trailing]`. It never fails on content: a
//! line that has no command is an error the caller counts and skips.
//!
//! Sending: every line we write fits IRC's 512 bytes *as the server relays
//! it to the channel*, which prepends `:nick!user@host ` to our line; that
//! prefix is reserved ([`prefix_reserve`]). Message text is cleaned first
//! ([`clean`]): CR, LF and TAB become spaces, NUL and every other control
//! character is dropped, so nothing a publisher writes can split the line
//! into two commands. A text that does not fit is cut at a UTF-8 boundary
//! and ends with `…`.

use std::borrow::Cow;

/// The longest line IRC allows, CRLF included.
pub const MAX_LINE: usize = 512;

/// Longest line we accept from a server, message tags included (IRCv3
/// allows 8191 bytes of tags plus the 512 of the message).
pub const MAX_RECEIVED_LINE: usize = 8191 + MAX_LINE;

/// Why a received line was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but spaces, or nothing at all.
    #[error("empty line")]
    Empty,
    /// Tags or a prefix, then nothing.
    #[error("no command")]
    NoCommand,
    /// The command is neither letters nor three digits.
    #[error("malformed command")]
    BadCommand,
}

/// One received line, borrowed from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// IRCv3 message tags (unparsed), without the `@`.
    pub tags: Option<&'a str>,
    /// The source (`nick!user@host` or a server name), without the `:`.
    pub prefix: Option<&'a str>,
    /// The command, as sent (letters or a three-digit numeric).
    pub command: &'a str,
    /// Parameters, the trailing one included (without its `:`).
    pub params: Vec<&'a str>,
}

/// RFC 2812: at most 15 parameters; the 15th takes the rest of the line.
const MAX_PARAMS: usize = 15;

impl<'a> Line<'a> {
    /// Parses one line (a trailing CR/LF is ignored).
    ///
    /// # Errors
    ///
    /// The line is empty or has no well-formed command.
    pub fn parse(line: &'a str) -> Result<Line<'a>, ParseError> {
        let mut rest = line.trim_end_matches(['\r', '\n']).trim_start_matches(' ');
        if rest.is_empty() {
            return Err(ParseError::Empty);
        }
        let mut tags = None;
        if let Some(after) = rest.strip_prefix('@') {
            let (t, r) = after.split_once(' ').unwrap_or((after, ""));
            tags = Some(t);
            rest = r.trim_start_matches(' ');
        }
        let mut prefix = None;
        if let Some(after) = rest.strip_prefix(':') {
            let (p, r) = after.split_once(' ').unwrap_or((after, ""));
            prefix = Some(p);
            rest = r.trim_start_matches(' ');
        }
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if command.is_empty() {
            return Err(ParseError::NoCommand);
        }
        let numeric = command.len() == 3 && command.bytes().all(|b| b.is_ascii_digit());
        if !numeric && !command.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ParseError::BadCommand);
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(trailing) = rest.strip_prefix(':') {
                params.push(trailing);
                break;
            }
            if params.len() == MAX_PARAMS - 1 {
                params.push(rest);
                break;
            }
            let (param, r) = rest.split_once(' ').unwrap_or((rest, ""));
            params.push(param);
            rest = r;
        }
        Ok(Line {
            tags,
            prefix,
            command,
            params,
        })
    }

    /// The nickname of the source (`nick` of `nick!user@host`).
    pub fn source_nick(&self) -> Option<&'a str> {
        let prefix = self.prefix?;
        Some(prefix.split(['!', '@']).next().unwrap_or(prefix))
    }

    /// Parameter `i`, or "".
    pub fn param(&self, i: usize) -> &'a str {
        self.params.get(i).copied().unwrap_or("")
    }

    /// True for this command (case-insensitive, as servers differ).
    pub fn is(&self, command: &str) -> bool {
        self.command.eq_ignore_ascii_case(command)
    }
}

/// RFC 1459 case folding (`[]\~` are the upper case of `{}|^`), which
/// servers use to compare nicknames and channel names.
pub fn irc_eq(a: &str, b: &str) -> bool {
    fn fold(b: u8) -> u8 {
        match b {
            b'[' => b'{',
            b']' => b'}',
            b'\\' => b'|',
            b'~' => b'^',
            other => other.to_ascii_lowercase(),
        }
    }
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// Makes message content safe to put in a line: CR, LF and TAB become a
/// space, every other control character (NUL, the mIRC formatting codes a
/// publisher might smuggle in, DEL, C1) is dropped. Borrowed when nothing
/// needed changing, which is the usual case.
pub fn clean(text: &str) -> Cow<'_, str> {
    // Every control character of interest is below 0x20, 0x7f, or encoded
    // with a 0xC2 lead byte (U+0080..U+009F): a byte scan finds out fast.
    let suspicious = |b: &u8| *b < 0x20 || *b == 0x7f || *b == 0xc2;
    if !text.as_bytes().iter().any(suspicious) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\r' | '\n' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Bytes the server adds when it relays our line to the channel:
/// `:` + nick + `!` + user (`~` and up to 10) + `@` + host (up to 63) + ` `.
pub fn prefix_reserve(nick: &str) -> usize {
    1 + nick.len() + 1 + 11 + 1 + 63 + 1
}

/// The ellipsis that ends a cut text.
pub const ELLIPSIS: &str = "…";

/// A whole `<COMMAND> <target> :<text>\r\n` line whose relayed form fits
/// 512 bytes; `text` must already be [`clean`]ed (it may hold the mIRC
/// codes we add ourselves). Returns the line and whether the text was cut.
pub fn message_line(command: &str, target: &str, text: &str, nick: &str) -> (String, bool) {
    let fixed = command.len() + 1 + target.len() + 2 + 2;
    let budget = MAX_LINE
        .saturating_sub(prefix_reserve(nick))
        .saturating_sub(fixed);
    let (text, cut) = fit(text, budget);
    let mut line = String::with_capacity(fixed + text.len());
    line.push_str(command);
    line.push(' ');
    line.push_str(target);
    line.push_str(" :");
    line.push_str(&text);
    line.push_str("\r\n");
    (line, cut)
}

/// `text` if it has at most `budget` bytes, else its longest prefix that
/// ends on a character boundary and leaves room for `…`, plus `…`.
pub fn fit(text: &str, budget: usize) -> (Cow<'_, str>, bool) {
    if text.len() <= budget {
        return (Cow::Borrowed(text), false);
    }
    let mut end = budget.saturating_sub(ELLIPSIS.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + ELLIPSIS.len());
    out.push_str(&text[..end]);
    out.push_str(ELLIPSIS);
    (Cow::Owned(out), true)
}

/// A command line of our own (`JOIN #chan`, `PONG :token`): parameters are
/// config values checked at start or tokens the server sent; they are
/// cleaned anyway, and the line is cut to 512 bytes, so a hostile server
/// cannot make us send two commands.
pub fn command_line(command: &str, params: &[&str], trailing: Option<&str>) -> String {
    let mut line = String::from(command);
    for param in params {
        line.push(' ');
        line.push_str(&clean(param).replace(' ', ""));
    }
    if let Some(trailing) = trailing {
        line.push_str(" :");
        line.push_str(&clean(trailing));
    }
    let (line, _) = fit(&line, MAX_LINE - 2);
    let mut line = line.into_owned();
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefix_command_and_params() {
        let l = Line::parse(":nick!user@host PRIVMSG #chan :hello world\r\n").unwrap();
        assert_eq!(l.prefix, Some("nick!user@host"));
        assert_eq!(l.source_nick(), Some("nick"));
        assert_eq!(l.command, "PRIVMSG");
        assert_eq!(l.params, vec!["#chan", "hello world"]);
        assert!(l.is("privmsg"));

        let l = Line::parse("PING :irc.example.org").unwrap();
        assert_eq!(
            (l.prefix, l.command, l.param(0)),
            (None, "PING", "irc.example.org")
        );
        assert_eq!(l.param(5), "");

        let l = Line::parse("@time=2020 :srv 324 me #c +nt").unwrap();
        assert_eq!(l.tags, Some("time=2020"));
        assert_eq!(l.params, vec!["me", "#c", "+nt"]);

        let l = Line::parse(":srv 353 me = #c :a b  c").unwrap();
        assert_eq!(l.param(3), "a b  c");
        let l = Line::parse("CMD  a   b :").unwrap();
        assert_eq!(l.params, vec!["a", "b", ""]);
        let many = format!(
            "X {}",
            (0..20).map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
        );
        let l = Line::parse(&many).unwrap();
        assert_eq!(l.params.len(), 15);
        assert_eq!(l.params[14], "14 15 16 17 18 19");
        let l = Line::parse(":server.only").unwrap_err();
        assert_eq!(l, ParseError::NoCommand);
        assert_eq!(Line::parse("  \r\n"), Err(ParseError::Empty));
        assert_eq!(Line::parse("PRIV-MSG x"), Err(ParseError::BadCommand));
        assert_eq!(Line::parse("12 x"), Err(ParseError::BadCommand));
        assert_eq!(Line::parse(":srv").unwrap_err(), ParseError::NoCommand);
        assert_eq!(Line::parse("@a").unwrap_err(), ParseError::NoCommand);
        assert_eq!(
            Line::parse(":irc.x NOTICE").unwrap().source_nick(),
            Some("irc.x")
        );
    }

    #[test]
    fn case_folding() {
        assert!(irc_eq("Fed[Bot]", "fed{bot}"));
        assert!(irc_eq("#Chan", "#chan"));
        assert!(!irc_eq("bot", "bot_"));
    }

    #[test]
    fn content_cannot_start_a_command() {
        let dirty = "a\r\nPRIVMSG #other :pwned\0\x03\x07\x7f\u{85}b\tc";
        let cleaned = clean(dirty);
        assert_eq!(cleaned, "a  PRIVMSG #other :pwnedb c");
        assert!(matches!(clean("plain ünïcode"), Cow::Borrowed(_)));
        let (line, cut) = message_line("NOTICE", "#chan", &cleaned, "bot");
        assert!(!cut);
        assert_eq!(line, "NOTICE #chan :a  PRIVMSG #other :pwnedb c\r\n");
        assert_eq!(line.matches("\r\n").count(), 1);

        let line = command_line("PONG", &[], Some("tok\r\nQUIT"));
        assert_eq!(line, "PONG :tok  QUIT\r\n");
        let line = command_line("JOIN", &["#a b\n"], None);
        assert_eq!(line, "JOIN #ab\r\n");
        let long = "x".repeat(2000);
        assert_eq!(command_line("PONG", &[], Some(&long)).len(), MAX_LINE);
    }

    /// The fuzz target's properties (`fuzz/fuzz_targets/irc_line.rs`) on
    /// random input, for machines without cargo-fuzz.
    #[test]
    fn random_input_never_breaks_a_line() {
        let mut rng = fastrand::Rng::with_seed(12);
        let alphabet: Vec<char> = "\r\n\0\x01\x03 :#@!ab€𝄞\u{85}".chars().collect();
        for _ in 0..20_000 {
            let len = rng.usize(0..700);
            let text: String = (0..len)
                .map(|_| alphabet[rng.usize(0..alphabet.len())])
                .collect();
            if let Ok(line) = Line::parse(&text) {
                assert!(!line.command.is_empty() && line.params.len() <= MAX_PARAMS);
            }
            let (line, _) = message_line("PRIVMSG", "#c", &clean(&text), "nick");
            let body = line.strip_suffix("\r\n").expect("CRLF");
            assert!(!body.contains(['\r', '\n', '\0']), "{line:?}");
            assert!(line.len() + prefix_reserve("nick") <= MAX_LINE);
            let pong = command_line("PONG", &[&text], Some(&text));
            assert!(!pong.trim_end_matches("\r\n").contains(['\r', '\n', '\0']));
            assert!(pong.len() <= MAX_LINE);
        }
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let nick = "fedmsg-bot";
        for unit in ["a", "é", "€", "𝄞"] {
            let text = unit.repeat(5000);
            let (line, cut) = message_line("PRIVMSG", "#fedora-fedmsg", &text, nick);
            assert!(cut);
            assert!(line.ends_with("…\r\n"), "{unit}");
            assert!(line.len() + prefix_reserve(nick) <= MAX_LINE, "{unit}");
            // Nothing wasted: one more unit would not have fit.
            assert!(
                line.len() + prefix_reserve(nick) + unit.len() > MAX_LINE,
                "{unit}"
            );
        }
        let (exact, cut) = fit("abcdef", 6);
        assert_eq!((exact.as_ref(), cut), ("abcdef", false));
        let (short, cut) = fit("abcdefg", 6);
        assert_eq!((short.as_ref(), cut), ("abc…", true));
        let (tiny, _) = fit("abcdefg", 1);
        assert_eq!(tiny, "…");
    }
}
