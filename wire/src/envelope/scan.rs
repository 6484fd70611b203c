//! A validating, allocation-free JSON scanner for the hot path.
//!
//! fedmsg publishers put the canonical encoding itself on the wire (sorted
//! keys, no whitespace, ASCII escapes), so the text a signature covers is
//! almost always the received body minus its `signature` and `certificate`
//! members. [`scan_object`] walks a body once, checks that it is JSON,
//! records where each top-level member is, and tells whether the text is
//! already canonical (what [`super::write_canonical`] would write for it).
//! Ingest uses the member positions to read `topic`, `msg_id` and
//! `timestamp` without building a tree; the verifier hashes the canonical
//! members in place instead of parsing and re-encoding the envelope.
//!
//! The scanner is deliberately narrower than JSON: it refuses (returns
//! `None`) whatever it is not sure about: lone surrogate escapes, control
//! characters, nesting deeper than [`MAX_DEPTH`], a byte order mark. Callers
//! then take the general path (`serde_json`, [`super::parse`]), so the
//! scanner can only make things faster, never change a verdict.

use std::ops::Range;

/// Nesting depth beyond which the scanner gives up (serde_json's own limit
/// is 128, so anything the scanner accepts, serde_json accepts too).
pub const MAX_DEPTH: usize = 100;

/// One member of the top-level object, as byte ranges of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The whole `"key":value` text.
    pub text: Range<usize>,
    /// The key's raw text between its quotes.
    pub key: Range<usize>,
    /// The value's text (with the quotes, for a string).
    pub value: Range<usize>,
    /// What the value is.
    pub kind: Kind,
    /// The key contains a backslash escape (its raw text is not the key).
    pub escaped_key: bool,
    /// The value is a string with a backslash escape (its raw text is not
    /// the string).
    pub escaped_value: bool,
}

impl Member {
    /// The key's raw text (equal to the key when `!escaped`).
    pub fn raw_key<'a>(&self, body: &'a [u8]) -> &'a [u8] {
        &body[self.key.clone()]
    }

    /// For a string value, the raw text between the quotes.
    pub fn raw_string<'a>(&self, body: &'a [u8]) -> Option<&'a [u8]> {
        (self.kind == Kind::String)
            .then(|| &body[self.value.start + 1..self.value.end.saturating_sub(1)])
    }
}

/// The JSON type of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `"..."`.
    String,
    /// A number.
    Number,
    /// `{...}`.
    Object,
    /// `[...]`.
    Array,
    /// `true`, `false` or `null`.
    Literal,
}

/// Scans `body`, which must be one JSON object (surrounding whitespace
/// allowed). Fills `members` (cleared first) with the top-level members in
/// order and returns whether the text is canonical; `None` when the body is
/// not JSON the scanner is sure about.
pub fn scan_object(body: &[u8], members: &mut Vec<Member>) -> Option<bool> {
    members.clear();
    let mut scanner = Scanner {
        bytes: body,
        at: 0,
        canonical: true,
    };
    scanner.whitespace();
    if scanner.peek() != Some(b'{') {
        return None;
    }
    scanner.at += 1;
    scanner.whitespace();
    let mut previous_key: Option<Range<usize>> = None;
    if scanner.peek() == Some(b'}') {
        scanner.at += 1;
    } else {
        loop {
            let start = scanner.at;
            let key_escaped = scanner.string()?;
            let key = start + 1..scanner.at - 1;
            scanner.check_key_order(&mut previous_key, &key, key_escaped);
            scanner.whitespace();
            scanner.expect(b':')?;
            scanner.whitespace();
            let value_start = scanner.at;
            let (kind, value_escaped) = scanner.value(1)?;
            members.push(Member {
                text: start..scanner.at,
                key,
                value: value_start..scanner.at,
                kind,
                escaped_key: key_escaped,
                escaped_value: value_escaped,
            });
            scanner.whitespace();
            match scanner.next()? {
                b',' => scanner.whitespace(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    scanner.whitespace();
    (scanner.at == body.len()).then_some(scanner.canonical)
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    canonical: bool,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
            self.canonical = false;
        }
    }

    /// Canonical objects have strictly increasing keys (code point order is
    /// byte order for unescaped ASCII); an escaped key is not judged and so
    /// makes the text non-canonical.
    fn check_key_order(
        &mut self,
        previous: &mut Option<Range<usize>>,
        key: &Range<usize>,
        escaped: bool,
    ) {
        if escaped {
            self.canonical = false;
        } else if let Some(prev) = previous {
            if self.bytes[prev.clone()] >= self.bytes[key.clone()] {
                self.canonical = false;
            }
        }
        *previous = Some(key.clone());
    }

    /// Scans one value; returns its kind and whether it is a string with
    /// escapes.
    fn value(&mut self, depth: usize) -> Option<(Kind, bool)> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => Some((Kind::String, self.string()?)),
            b'{' => {
                self.object(depth)?;
                Some((Kind::Object, false))
            }
            b'[' => {
                self.array(depth)?;
                Some((Kind::Array, false))
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => {
                self.number()?;
                Some((Kind::Number, false))
            }
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<(Kind, bool)> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| {
            self.at = end;
            (Kind::Literal, false)
        })
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        self.at += 1; // '{'
        self.whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        let mut previous_key = None;
        loop {
            let start = self.at;
            let escaped = self.string()?;
            let key = start + 1..self.at - 1;
            self.check_key_order(&mut previous_key, &key, escaped);
            self.whitespace();
            self.expect(b':')?;
            self.whitespace();
            self.value(depth + 1)?;
            self.whitespace();
            match self.next()? {
                b',' => self.whitespace(),
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        self.at += 1; // '['
        self.whitespace();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(());
        }
        loop {
            self.value(depth + 1)?;
            self.whitespace();
            match self.next()? {
                b',' => self.whitespace(),
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// Scans a string starting at its opening quote; returns whether it has
    /// escapes. Canonical strings are printable ASCII with exactly Python's
    /// escapes (`ensure_ascii`): the short ones for `"` `\` and \b \t \n \f
    /// \r, `\u00xx` (lowercase) for other control characters and DEL, and
    /// `\uxxxx` for everything above, astral characters as surrogate pairs.
    fn string(&mut self) -> Option<bool> {
        if self.next()? != b'"' {
            return None;
        }
        let mut escaped = false;
        loop {
            // Plain printable ASCII is the bulk of any envelope (the
            // certificate alone is 1.7 kB of base64): skip it in a tight loop.
            self.at += plain_prefix(&self.bytes[self.at..]);
            match self.next()? {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                0x00..=0x1f => return None,
                _ => {
                    // DEL or a multi-byte UTF-8 sequence (the body is a
                    // `str`, so it is valid): fine JSON, but Python would
                    // have escaped it.
                    self.canonical = false;
                }
            }
        }
    }

    fn escape(&mut self) -> Option<()> {
        match self.next()? {
            b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => Some(()),
            b'/' => {
                self.canonical = false;
                Some(())
            }
            b'u' => {
                let unit = self.hex4()?;
                match unit {
                    0xd800..=0xdbff => {
                        // A high surrogate must be followed by a low one.
                        if self.bytes.get(self.at..self.at + 2)? != b"\\u" {
                            return None;
                        }
                        self.at += 2;
                        if !(0xdc00..=0xdfff).contains(&self.hex4()?) {
                            return None;
                        }
                    }
                    0xdc00..=0xdfff => return None,
                    // Python writes these with the short escapes, and leaves
                    // printable ASCII unescaped.
                    0x08 | 0x09 | 0x0a | 0x0c | 0x0d | 0x20..=0x7e => self.canonical = false,
                    _ => {}
                }
                Some(())
            }
            _ => None,
        }
    }

    /// Four hex digits; lowercase letters only in canonical text.
    fn hex4(&mut self) -> Option<u16> {
        let digits = self.bytes.get(self.at..self.at + 4)?;
        let mut unit = 0u16;
        for &d in digits {
            let value = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => {
                    self.canonical = false;
                    d - b'A' + 10
                }
                _ => return None,
            };
            unit = unit << 4 | u16::from(value);
        }
        self.at += 4;
        Some(unit)
    }

    /// RFC 8259 number grammar. Canonical integers are exactly what
    /// Python's `int.__repr__` writes (so not `-0`); canonical floats are
    /// exactly Python's `float.__repr__` of their value.
    fn number(&mut self) -> Option<()> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.at += 1;
            float = true;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            float = true;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        let text = &self.bytes[start..self.at];
        if float {
            if self.canonical && !float_is_canonical(text) {
                self.canonical = false;
            }
        } else if text == b"-0" {
            self.canonical = false;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }
}

/// Length of the prefix of `bytes` made of printable ASCII other than `"`
/// and `\\` (the bytes a string scan can skip), eight bytes at a time.
fn plain_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Bit 7 of each byte of the result is set where `word`'s byte is zero
    // (exact for the first such byte, which is all that is used).
    let zero_bytes = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut array = [0u8; 8];
        array.copy_from_slice(chunk);
        let word = u64::from_ne_bytes(array);
        let special = zero_bytes(word ^ u64::from_ne_bytes([b'"'; 8]))
            | zero_bytes(word ^ u64::from_ne_bytes([b'\\'; 8]))
            // below 0x20: subtracting 0x20 borrows into bit 7
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS)
            // 0x7f and above: adding 1 reaches bit 7 (or it was set)
            | ((word & !HIGHS).wrapping_add(ONES) | word) & HIGHS;
        if special != 0 {
            break;
        }
        at += 8;
    }
    at + bytes[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
        .unwrap_or(bytes.len() - at)
}

/// True when `text` is Python's `repr` of the float it denotes.
fn float_is_canonical(text: &[u8]) -> bool {
    let Some(value) = std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
    else {
        return false;
    };
    let mut repr = Vec::with_capacity(32);
    super::write_float(value, &mut repr);
    repr == text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Option<bool> {
        scan_object(text.as_bytes(), &mut Vec::new())
    }

    #[test]
    fn plain_prefix_stops_at_every_special_byte() {
        let reference = |bytes: &[u8]| {
            bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
                .unwrap_or(bytes.len())
        };
        for special in (0u8..0x20).chain([b'"', b'\\', 0x7f, 0x80, 0xc3, 0xff]) {
            for position in 0..20 {
                let mut bytes = vec![b'a'; 20];
                bytes[position] = special;
                assert_eq!(
                    plain_prefix(&bytes),
                    position,
                    "byte {special:#x} at {position}"
                );
                // A special byte after an ordinary one at the chunk boundary.
                bytes[position] = b'~';
                assert_eq!(plain_prefix(&bytes), reference(&bytes));
            }
        }
        let all: Vec<u8> = (0..=255u8).collect();
        for start in 0..all.len() {
            assert_eq!(plain_prefix(&all[start..]), reference(&all[start..]));
        }
    }

    #[test]
    fn members_and_kinds() {
        let body = br#"{"a":"x\ny","b":{"c":[1,2.5,true]},"d":null,"e":-12}"#;
        let mut members = Vec::new();
        assert_eq!(scan_object(body, &mut members), Some(true));
        let keys: Vec<&[u8]> = members.iter().map(|m| m.raw_key(body)).collect();
        assert_eq!(keys, [&b"a"[..], b"b", b"d", b"e"]);
        let kinds: Vec<Kind> = members.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [Kind::String, Kind::Object, Kind::Literal, Kind::Number]
        );
        assert_eq!(members[0].raw_string(body), Some(&br"x\ny"[..]));
        assert!(members[0].escaped_value && !members[0].escaped_key);
        assert!(!members[1].escaped_value);
        assert_eq!(&body[members[1].text.clone()], br#""b":{"c":[1,2.5,true]}"#);
        assert_eq!(&body[members[3].value.clone()], b"-12");
        assert_eq!(members[3].raw_string(body), None);
    }

    #[test]
    fn canonical_or_not() {
        assert_eq!(scan("{}"), Some(true));
        assert_eq!(scan(r#"{"a":1,"b":[]}"#), Some(true));
        for text in [
            r#"{"b":1,"a":2}"#,       // unsorted
            r#"{"a":1,"a":2}"#,       // duplicate
            r#"{"a": 1}"#,            // whitespace
            r#" {"a":1}"#,            // leading whitespace
            r#"{"a":"\/"}"#,          // needless escape
            r#"{"a":"\u0041"}"#,      // printable ASCII escaped
            r#"{"a":"\u000a"}"#,      // \n written long
            r#"{"a":"\u00E9"}"#,      // uppercase hex
            "{\"a\":\"\u{e9}\"}",     // raw non-ASCII
            "{\"a\":\"\u{7f}\"}",     // raw DEL
            r#"{"a":-0}"#,            // Python prints 0
            r#"{"a":1e5}"#,           // Python prints 100000.0
            r#"{"a":1.50}"#,          // Python prints 1.5
            r#"{"\u0061":1}"#,        // escaped key
            r#"{"a":{"d":1,"c":2}}"#, // unsorted nested
        ] {
            assert_eq!(scan(text), Some(false), "{text}");
        }
        for text in [
            r#"{"a":"\u00e9\ud83d\ude00\u007f\u0001\n\"\\"}"#,
            r#"{"a":1.5,"b":1e-07,"c":1e+22,"d":-0.0,"e":123456789012345678901234567890}"#,
        ] {
            assert_eq!(scan(text), Some(true), "{text}");
        }
    }

    #[test]
    fn refuses_what_it_is_not_sure_about() {
        for text in [
            "",
            "[]",
            "{",
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":1} x"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":tru}"#,
            r#"{"a":NaN}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":"unterminated}"#,
            "\u{feff}{}",
        ] {
            assert_eq!(scan(text), None, "{text:?}");
        }
        // The top-level value is at depth 1, so MAX_DEPTH arrays fit.
        let nested = |n: usize| format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
        assert_eq!(scan(&nested(MAX_DEPTH + 1)), None);
        let ok = nested(MAX_DEPTH);
        assert_eq!(scan(&ok), Some(true));
    }

    #[test]
    fn agrees_with_serde_json_on_what_it_accepts() {
        let samples = [
            r#"{"a":[1,{"b":null}],"c":"d\te"}"#,
            "{\"a\" : 1 ,\n\"b\":[ ]\t}",
            r#"{"x":-1.5e+3,"y":0,"z":"\u00e9"}"#,
        ];
        for text in samples {
            assert!(scan(text).is_some(), "{text}");
            assert!(serde_json::from_str::<serde_json::Value>(text).is_ok());
        }
    }

    #[test]
    fn canonical_text_is_what_the_writer_writes() {
        let texts = [
            r#"{"a":"\u00e9\ud83d\ude00\u007f\u0001\n\"\\","b":[1.5,1e-07,true,null],"c":{"d":{}}}"#,
            r#"{"certificate":"QUJD\n","crypto":"x509","i":1,"msg":{"payload":"xx","seq":0},"timestamp":1700000000}"#,
        ];
        for text in texts {
            assert_eq!(scan(text), Some(true), "{text}");
            let value = super::super::parse(text.as_bytes()).expect("parses");
            assert_eq!(super::super::to_canonical(&value), text);
        }
    }
}
