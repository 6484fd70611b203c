//! Envelope JSON: parsing and fedmsg's canonical encoding.
//!
//! fedmsg signs the *canonical* JSON text of an envelope, i.e. what Python
//! writes with `json.dumps(obj, sort_keys=True, separators=(',', ':'))`
//! (`ensure_ascii` and `allow_nan` left at their defaults). A verifier never
//! looks at the wire bytes: it parses the body and re-encodes it, so this
//! module must reproduce Python's output byte for byte:
//!
//! * object keys sorted by code point at every level (for valid UTF-8 this is
//!   plain byte order, i.e. `String`'s `Ord`), no whitespace at all;
//! * every character outside 0x20–0x7E escaped as `\u` + four lowercase hex
//!   digits (characters above U+FFFF as a surrogate pair), except the short
//!   escapes `\" \\ \n \r \t \b \f`; `/` is not escaped;
//! * integers digit for digit whatever their size (the workspace enables
//!   serde_json's `arbitrary_precision`, so a [`Number`] keeps its text), with
//!   Python's normalisation `-0` → `0`;
//! * floats in Python `repr` form: shortest round-trip digits, fixed notation
//!   with a trailing `.0` when the decimal exponent is in `-4..16`, otherwise
//!   `1e+16` / `1.5e-07` style; non-finite values as `NaN`, `Infinity`,
//!   `-Infinity`.
//!
//! A JSON number is a float for Python when its text has a fraction or an
//! exponent, and an int otherwise; [`parse`] keeps that distinction because
//! the number's text is kept.
//!
//! # Non-finite numbers
//!
//! Python's `json.loads` accepts the non-standard literals `NaN`, `Infinity`
//! and `-Infinity`, and `json.dumps` writes them back. A
//! [`serde_json::Value`] cannot hold a non-finite float, so [`parse`] (only
//! when strict parsing failed, so the common path pays nothing) rewrites those
//! literals outside strings into number texts that round-trip:
//! `Infinity` → `1e999999` (which any float parser, Python's included, reads
//! as infinity) and `NaN` → the reserved text [`NAN_SENTINEL`], which the
//! canonical writer prints as `NaN`. Plugins reading such a number with
//! `as_f64` get `None` for the infinities (serde_json filters non-finite
//! values) and `-0.0` for NaN; `as_str` shows the substituted text.
//!
//! # Known gaps
//!
//! Lone surrogate escapes (`"\ud800"`) are legal for Python but cannot live
//! in a Rust `String`; such envelopes fail to parse. Python also refuses
//! integers longer than 4300 digits, which this module accepts.

use serde_json::{Map, Number, Value};

pub mod scan;

/// Number text that [`parse`] substitutes for a bare `NaN` literal and that
/// the canonical writer prints as `NaN`. Python never writes an exponent with
/// this many digits, so the text cannot collide with a genuine fedmsg number.
pub const NAN_SENTINEL: &str = "-0.0e-7777777777777777777777777777";

/// Number text that [`parse`] substitutes for a bare `Infinity` literal. It
/// overflows to infinity under every correctly rounding float parser, so no
/// special case is needed when writing it back.
const INFINITY_TEXT: &[u8] = b"1e999999";

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// Why an envelope body could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is not JSON (or uses something serde_json cannot represent,
    /// such as a lone surrogate escape).
    ///
    /// The parser's message is part of this one and deliberately not also
    /// its `source`: a caller printing the chain (`{:#}`) would show it
    /// twice.
    #[error("not valid JSON: {0}")]
    Json(serde_json::Error),
}

impl From<serde_json::Error> for EnvelopeError {
    fn from(error: serde_json::Error) -> Self {
        EnvelopeError::Json(error)
    }
}

/// Parses an envelope body the way Python's `json.loads` does.
///
/// Numbers keep their text (so ints and floats stay distinct and big integers
/// keep every digit), duplicate keys resolve to the last value, a leading
/// UTF-8 byte order mark is ignored, and `NaN`/`Infinity`/`-Infinity` are
/// accepted as described in the module documentation.
///
/// # Errors
///
/// [`EnvelopeError::Json`] when the bytes are not JSON that serde_json can
/// represent.
pub fn parse(bytes: &[u8]) -> Result<Value, EnvelopeError> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(strict_error) => match rewrite_non_finite(bytes) {
            // Report the original error if the rewrite does not help: its
            // position refers to the bytes the caller actually sent.
            Some(rewritten) => serde_json::from_slice(&rewritten).map_err(|_| strict_error.into()),
            None => Err(strict_error.into()),
        },
    }
}

/// Replaces `NaN` / `Infinity` literals found outside strings by number texts
/// (see the module docs). Returns `None` when there was nothing to replace.
pub(crate) fn rewrite_non_finite(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() + 32);
    let mut replaced = false;
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if let Some((len, text)) = non_finite_literal(&bytes[i..]) {
            out.extend_from_slice(text);
            replaced = true;
            i += len;
            continue;
        }
        out.push(b);
        i += 1;
    }
    replaced.then_some(out)
}

/// If `rest` starts with a non-finite literal, returns its length and the
/// replacement text. A `-` before `Infinity` has already been copied, which
/// yields `-1e999999` as wanted; `-NaN` becomes invalid, as in Python.
fn non_finite_literal(rest: &[u8]) -> Option<(usize, &'static [u8])> {
    if rest.starts_with(b"NaN") {
        Some((3, NAN_SENTINEL.as_bytes()))
    } else if rest.starts_with(b"Infinity") {
        Some((8, INFINITY_TEXT))
    } else {
        None
    }
}

/// Returns the canonical encoding of `value` (see the module documentation).
#[must_use]
pub fn to_canonical(value: &Value) -> String {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    ascii_to_string(out)
}

/// Appends the canonical encoding of `value` to `out`.
///
/// Intended for the hot path: callers keep one buffer and `clear()` it between
/// messages so that encoding allocates nothing.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => write_array(items, out),
        Value::Object(map) => write_canonical_object(map, &[], out),
    }
}

/// Appends the canonical encoding of `value` to `out`, leaving out the
/// top-level object keys listed in `skip` (nested objects are unaffected).
///
/// This is how the signed text is produced without cloning the envelope:
/// `write_canonical_without(&envelope, &["signature", "certificate"], buf)`.
pub fn write_canonical_without(value: &Value, skip: &[&str], out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_canonical_object(map, skip, out),
        other => write_canonical(other, out),
    }
}

/// Appends the canonical encoding of the object `map` to `out`, leaving out
/// the keys listed in `skip`.
pub fn write_canonical_object(map: &Map<String, Value>, skip: &[&str], out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    let mut entry = |key: &String, value: &Value, out: &mut Vec<u8>| {
        if skip.contains(&key.as_str()) {
            return;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_string(key, out);
        out.push(b':');
        write_canonical(value, out);
    };
    if keys_sorted(map) {
        for (key, value) in map {
            entry(key, value, out);
        }
    } else {
        // Only reachable if some crate in the build turns on serde_json's
        // `preserve_order`, which makes `Map` keep insertion order.
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, value) in entries {
            entry(key, value, out);
        }
    }
    out.push(b'}');
}

/// True when the map iterates in code-point order (always, with serde_json's
/// default `BTreeMap` backing).
fn keys_sorted(map: &Map<String, Value>) -> bool {
    let mut keys = map.keys();
    let Some(mut previous) = keys.next() else {
        return true;
    };
    for key in keys {
        if key < previous {
            return false;
        }
        previous = key;
    }
    true
}

fn write_array(items: &[Value], out: &mut Vec<u8>) {
    out.push(b'[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_canonical(item, out);
    }
    out.push(b']');
}

fn ascii_to_string(bytes: Vec<u8>) -> String {
    // The canonical encoding is pure ASCII, so this conversion cannot fail;
    // the lossy fallback only avoids a panic path.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

// ---------------------------------------------------------------------------
// Numbers

/// True when Python's `json.loads` would turn this number text into a float.
fn is_float_text(text: &str) -> bool {
    text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

fn write_number(n: &Number, out: &mut Vec<u8>) {
    let text = n.as_str();
    if text == NAN_SENTINEL {
        out.extend_from_slice(b"NaN");
    } else if is_float_text(text) {
        match text.parse::<f64>() {
            Ok(f) => write_float(f, out),
            // serde_json only stores valid JSON number texts, which always
            // parse; writing the text keeps this total without panicking.
            Err(_) => out.extend_from_slice(text.as_bytes()),
        }
    } else if text == "-0" {
        // Python's int('-0') is 0.
        out.push(b'0');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// Writes `f` exactly like Python's `float.__repr__` (and `json.dumps` for
/// the non-finite values).
pub fn write_float(f: f64, out: &mut Vec<u8>) {
    if f.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if f.is_infinite() {
        out.extend_from_slice(if f > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        let mut shortest_buf = StackBuf::new();
        let mut nearest_buf = StackBuf::new();
        let mut digits = shortest_digits(f, &mut shortest_buf);
        let count = digits.digits.len();
        if count >= 16 {
            if let Some(nearest) = nearest_digits(f, count, &mut nearest_buf) {
                digits = nearest;
            }
        }
        layout_python_repr(&digits, out);
    }
}

/// Significant digits and exponent of a finite float.
struct Digits<'a> {
    negative: bool,
    /// Significant digits without the decimal point, e.g. `b"15"` for 1.5e-7.
    digits: &'a [u8],
    /// Decimal exponent of the first digit (scientific notation exponent).
    exponent: i32,
}

/// Shortest round-trip digits, from Rust's `{:e}` formatting. Their count is
/// the same as Python's `repr`, and so are the digits except for ties (see
/// [`nearest_digits`]).
fn shortest_digits(f: f64, scratch: &mut StackBuf) -> Digits<'_> {
    use std::fmt::Write as _;
    // A f64 in `{:e}` form is at most ~25 bytes; StackBuf holds 64.
    let _ = write!(scratch, "{f:e}");
    split_scientific(scratch.as_bytes_mut())
}

/// When two shortest candidates are equally close to the float, Python
/// (David Gay's dtoa) picks the even last digit while Rust's shortest mode
/// picks the upper one, e.g. 1598779432284802.25 → Python
/// `1598779432284802.2`, Rust `1598779432284802.3`. Two `count`-digit
/// candidates fit in one ulp (at most 2.2e-16 relative) only when `count` is
/// 16 or 17; there the correctly rounded (ties-to-even, which Rust's
/// fixed-precision formatting does) `count`-digit text is Python's answer
/// whenever it round-trips.
fn nearest_digits(f: f64, count: usize, scratch: &mut StackBuf) -> Option<Digits<'_>> {
    use std::fmt::Write as _;
    write!(scratch, "{f:.prec$e}", prec = count.saturating_sub(1)).ok()?;
    let round_trips = std::str::from_utf8(scratch.as_bytes_mut())
        .ok()
        .and_then(|text| text.parse::<f64>().ok())
        .is_some_and(|back| back == f);
    round_trips.then(|| split_scientific(scratch.as_bytes_mut()))
}

/// Splits Rust's `{:e}` output (`-1.25e-7`) into sign, digits and exponent.
fn split_scientific(text: &mut [u8]) -> Digits<'_> {
    let negative = text.first() == Some(&b'-');
    let body_start = usize::from(negative);
    let e_pos = text.iter().position(|&b| b == b'e').unwrap_or(text.len());
    let exponent = std::str::from_utf8(&text[e_pos.saturating_add(1).min(text.len())..])
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .unwrap_or(0);
    // Squeeze out the '.' in place so the digits are contiguous.
    let mut len = body_start;
    for index in body_start..e_pos {
        if text[index] != b'.' {
            text[len] = text[index];
            len += 1;
        }
    }
    Digits {
        negative,
        digits: &text[body_start..len],
        exponent,
    }
}

/// Lays out shortest digits following CPython's `repr` rules (`'r'` format
/// with `Py_DTSF_ADD_DOT_0`).
fn layout_python_repr(s: &Digits<'_>, out: &mut Vec<u8>) {
    if s.negative {
        out.push(b'-');
    }
    if (-4..16).contains(&s.exponent) {
        write_fixed(s.digits, s.exponent, out);
    } else {
        write_scientific(s.digits, s.exponent, out);
    }
}

fn write_fixed(digits: &[u8], exponent: i32, out: &mut Vec<u8>) {
    if exponent < 0 {
        out.extend_from_slice(b"0.");
        for _ in 0..(-exponent - 1) {
            out.push(b'0');
        }
        out.extend_from_slice(digits);
        return;
    }
    // `exponent` is in 0..16 here, so the cast is lossless.
    let int_len = exponent as usize + 1;
    if digits.len() > int_len {
        out.extend_from_slice(&digits[..int_len]);
        out.push(b'.');
        out.extend_from_slice(&digits[int_len..]);
    } else {
        out.extend_from_slice(digits);
        for _ in digits.len()..int_len {
            out.push(b'0');
        }
        out.extend_from_slice(b".0");
    }
}

fn write_scientific(digits: &[u8], exponent: i32, out: &mut Vec<u8>) {
    let Some((first, rest)) = digits.split_first() else {
        return;
    };
    out.push(*first);
    if !rest.is_empty() {
        out.push(b'.');
        out.extend_from_slice(rest);
    }
    out.push(b'e');
    out.push(if exponent < 0 { b'-' } else { b'+' });
    let magnitude = exponent.unsigned_abs();
    if magnitude < 10 {
        out.push(b'0');
    }
    let mut buf = itoa_u32(magnitude);
    out.extend_from_slice(buf.as_bytes_mut());
}

fn itoa_u32(n: u32) -> StackBuf {
    use std::fmt::Write as _;
    let mut buf = StackBuf::new();
    let _ = write!(buf, "{n}");
    buf
}

/// Tiny fixed-size formatting buffer so float formatting allocates nothing.
struct StackBuf {
    bytes: [u8; 64],
    len: usize,
}

impl StackBuf {
    fn new() -> Self {
        Self {
            bytes: [0; 64],
            len: 0,
        }
    }

    fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len]
    }
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Strings

/// Per-byte escape class: 0 = copy as is, `U` = `\u00XX`, `N` = non-ASCII
/// lead byte (escape the whole character), anything else = the letter of a
/// two-character escape.
const U: u8 = b'u';
const N: u8 = 0xff;

static ESCAPES: [u8; 256] = build_escape_table();

const fn build_escape_table() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0x00..=0x1f | 0x7f => U,
            0x80..=0xff => N,
            _ => 0,
        };
        b += 1;
    }
    table
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `s` as a JSON string literal with Python's `ensure_ascii` escaping.
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let class = ESCAPES[usize::from(bytes[i])];
        if class == 0 {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        i += write_escape(s, i, class, out);
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes the escape for the character at byte offset `at` and returns the
/// number of input bytes it covered.
fn write_escape(s: &str, at: usize, class: u8, out: &mut Vec<u8>) -> usize {
    match class {
        U => {
            write_u_escape(u16::from(s.as_bytes()[at]), out);
            1
        }
        N => {
            // `at` is always a char boundary: we only stop on ASCII bytes or
            // UTF-8 lead bytes and skip whole characters.
            let Some(ch) = s.get(at..).and_then(|rest| rest.chars().next()) else {
                return 1;
            };
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write_u_escape(*unit, out);
            }
            ch.len_utf8()
        }
        letter => {
            out.extend_from_slice(&[b'\\', letter]);
            1
        }
    }
}

fn write_u_escape(unit: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&[
        b'\\',
        b'u',
        HEX[usize::from(unit >> 12)],
        HEX[usize::from((unit >> 8) & 0xf)],
        HEX[usize::from((unit >> 4) & 0xf)],
        HEX[usize::from(unit & 0xf)],
    ]);
}

// ---------------------------------------------------------------------------
// Datagrepper

/// Undoes what datagrepper adds to a stored message, so that its signature
/// verifies again (reference §3.8).
///
/// Only when both `source_name` and `source_version` are present: removes
/// them, removes `headers` if it is falsy in Python's sense (`{}`, `[]`, `""`,
/// `null`, `false`, `0`), and casts `timestamp` to an integer (floats are
/// truncated toward zero like Python's `int()`). Returns whether the fix was
/// applied. Like upstream this is a heuristic: a message that was signed
/// with an empty `headers` no longer verifies afterwards.
pub fn fix_datagrepper_message(message: &mut Value) -> bool {
    let Some(map) = message.as_object_mut() else {
        return false;
    };
    if !(map.contains_key("source_name") && map.contains_key("source_version")) {
        return false;
    }
    map.remove("source_name");
    map.remove("source_version");
    if map.get("headers").is_some_and(is_falsy) {
        map.remove("headers");
    }
    if let Some(timestamp) = map.get_mut("timestamp") {
        if let Some(int) = python_int(timestamp) {
            *timestamp = Value::Number(int);
        }
    }
    true
}

/// Python truthiness of a JSON value.
fn is_falsy(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_str().parse::<f64>().is_ok_and(|f| f == 0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Python's `int(x)` for the JSON values where it succeeds; `None` otherwise
/// (upstream would raise, we leave the value alone).
fn python_int(value: &Value) -> Option<Number> {
    match value {
        Value::Number(n) if !is_float_text(n.as_str()) => Some(n.clone()),
        Value::Number(n) => float_to_int(n.as_str().parse::<f64>().ok()?),
        Value::Bool(b) => Some(Number::from(u8::from(*b))),
        Value::String(s) => {
            let t = s.trim();
            let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let t = t.strip_prefix('+').unwrap_or(t);
            // Reparse through serde_json to get a canonical integer text.
            let normalized = t.trim_start_matches('-').trim_start_matches('0');
            let sign = if t.starts_with('-') && !normalized.is_empty() {
                "-"
            } else {
                ""
            };
            let body = if normalized.is_empty() {
                "0"
            } else {
                normalized
            };
            format!("{sign}{body}").parse::<Number>().ok()
        }
        _ => None,
    }
}

fn float_to_int(f: f64) -> Option<Number> {
    if !f.is_finite() {
        return None;
    }
    let truncated = f.trunc();
    if truncated == 0.0 {
        return Some(Number::from(0u8));
    }
    // `{:.0}` prints the exact integer value of an integral f64.
    format!("{truncated:.0}").parse::<Number>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        match parse(text.as_bytes()) {
            Ok(value) => to_canonical(&value),
            Err(e) => panic!("{text:?} did not parse: {e}"),
        }
    }

    fn float_repr(f: f64) -> String {
        let mut out = Vec::new();
        write_float(f, &mut out);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        assert_eq!(
            canon(r#"{ "b": 1, "a": {"z": [1, 2], "": null, "Z": true} }"#),
            r#"{"a":{"":null,"Z":true,"z":[1,2]},"b":1}"#
        );
    }

    #[test]
    fn duplicate_keys_last_wins() {
        assert_eq!(canon(r#"{"a":1,"a":2}"#), r#"{"a":2}"#);
    }

    #[test]
    fn key_order_is_code_point_order() {
        // U+00FC sorts after 'z'; an astral key sorts after a BMP one.
        assert_eq!(
            canon(r#"{"\u00fcber":1,"zeta":2,"\ud83d\ude00":3,"\uffff":4}"#),
            r#"{"zeta":2,"\u00fcber":1,"\uffff":4,"\ud83d\ude00":3}"#
        );
    }

    #[test]
    fn string_escapes_match_python() {
        let input = "\"q\" \\ / \n\t\r\u{8}\u{c} \u{1} \u{7f} é ☃ 𝄞 </script>";
        let mut out = Vec::new();
        write_string(input, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            r#""\"q\" \\ / \n\t\r\b\f \u0001 \u007f \u00e9 \u2603 \ud834\udd1e </script>""#
        );
    }

    #[test]
    fn every_control_character_is_escaped() {
        for b in 0u8..0x20 {
            let s = char::from(b).to_string();
            let mut out = Vec::new();
            write_string(&s, &mut out);
            let text = String::from_utf8(out).expect("ascii");
            assert!(text.starts_with("\"\\"), "{b:#x} -> {text}");
        }
    }

    #[test]
    fn integers_keep_their_digits() {
        assert_eq!(
            canon("[12345678901234567890123456789012345678901234567890,-7,0,-0]"),
            "[12345678901234567890123456789012345678901234567890,-7,0,0]"
        );
    }

    #[test]
    fn floats_use_python_repr() {
        let cases = [
            ("1.0", "1.0"),
            ("2.0", "2.0"),
            ("0.0", "0.0"),
            ("-0.0", "-0.0"),
            ("0.1", "0.1"),
            ("1e16", "1e+16"),
            ("1E16", "1e+16"),
            ("1e15", "1000000000000000.0"),
            ("9999999999999998.0", "9999999999999998.0"),
            ("1.5e-7", "1.5e-07"),
            ("1e-07", "1e-07"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("1504642719.23539", "1504642719.23539"),
            ("1504643044.0", "1504643044.0"),
            ("1e22", "1e+22"),
            ("123.456e-2", "1.23456"),
            ("1e400", "Infinity"),
            ("-1e400", "-Infinity"),
            ("1e-400", "0.0"),
            ("0e0", "0.0"),
            ("100.0", "100.0"),
            ("12345678901234567890.0", "1.2345678901234567e+19"),
            ("1598779432284802.34079164681", "1598779432284802.2"),
            ("1598779432284802.25", "1598779432284802.2"),
            ("648743036750707.255", "648743036750707.2"),
            ("648743036750707.75", "648743036750707.8"),
        ];
        for (input, expected) in cases {
            assert_eq!(canon(input), expected, "input {input}");
        }
    }

    #[test]
    fn float_repr_of_computed_values() {
        assert_eq!(float_repr(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(float_repr(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(float_repr(f64::NAN), "NaN");
        assert_eq!(float_repr(f64::INFINITY), "Infinity");
        assert_eq!(float_repr(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(float_repr(f64::MIN_POSITIVE), "2.2250738585072014e-308");
        assert_eq!(float_repr(-123456.789), "-123456.789");
    }

    #[test]
    fn non_finite_literals_are_accepted_outside_strings_only() {
        assert_eq!(
            canon(r#"{"a":NaN,"b":Infinity,"c":-Infinity,"d":"NaN Infinity \"NaN\""}"#),
            r#"{"a":NaN,"b":Infinity,"c":-Infinity,"d":"NaN Infinity \"NaN\""}"#
        );
        assert!(parse(b"-NaN").is_err());
        assert!(parse(b"[nan]").is_err());
        assert!(parse(b"{\"a\":NaNa}").is_err());
    }

    #[test]
    fn non_finite_values_read_as_floats() {
        let v = parse(b"[Infinity,-Infinity]").expect("parses");
        assert_eq!(v[0].as_number().map(Number::as_str), Some("1e+999999"));
        assert_eq!(v[1].as_number().map(Number::as_str), Some("-1e+999999"));
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        assert_eq!(canon("\u{feff}{\"a\":1}"), r#"{"a":1}"#);
    }

    #[test]
    fn invalid_json_is_an_error() {
        for bad in [
            "",
            "{",
            "{\"a\":}",
            "[1,]",
            "\"\\ud800\"",
            "{\"a\":\"\u{1}\"}",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn skip_applies_to_top_level_only() {
        let v = parse(br#"{"signature":"s","certificate":"c","msg":{"signature":1},"a":2}"#)
            .expect("parses");
        let mut out = Vec::new();
        write_canonical_without(&v, &["signature", "certificate"], &mut out);
        assert_eq!(out, br#"{"a":2,"msg":{"signature":1}}"#);
    }

    #[test]
    fn datagrepper_fix() {
        let mut v = parse(
            br#"{"headers":{},"source_name":"datanommer","source_version":"0.8.1","timestamp":1504643075.9,"i":1}"#,
        )
        .expect("parses");
        assert!(fix_datagrepper_message(&mut v));
        assert_eq!(to_canonical(&v), r#"{"i":1,"timestamp":1504643075}"#);

        let mut kept = parse(
            br#"{"headers":{"a":1},"source_name":"x","source_version":"y","timestamp":-2.5}"#,
        )
        .expect("parses");
        assert!(fix_datagrepper_message(&mut kept));
        assert_eq!(to_canonical(&kept), r#"{"headers":{"a":1},"timestamp":-2}"#);

        let mut untouched =
            parse(br#"{"headers":{},"source_name":"x","timestamp":1.5}"#).expect("parses");
        assert!(!fix_datagrepper_message(&mut untouched));
        assert_eq!(
            to_canonical(&untouched),
            r#"{"headers":{},"source_name":"x","timestamp":1.5}"#
        );
    }

    #[test]
    fn datagrepper_timestamp_casts() {
        let cases = [
            ("1e20", "100000000000000000000"),
            ("-0.5", "0"),
            ("\" 0042 \"", "42"),
            ("\"-17\"", "-17"),
            ("true", "1"),
            ("\"1.5\"", "\"1.5\""),
            ("null", "null"),
        ];
        for (input, expected) in cases {
            let text = format!(r#"{{"source_name":"x","source_version":"y","timestamp":{input}}}"#);
            let mut v = parse(text.as_bytes()).expect("parses");
            fix_datagrepper_message(&mut v);
            assert_eq!(
                to_canonical(&v),
                format!(r#"{{"timestamp":{expected}}}"#),
                "input {input}"
            );
        }
    }

    #[test]
    fn buffer_is_appended_not_replaced() {
        let mut out = b"prefix:".to_vec();
        write_canonical(&Value::from(vec![1, 2]), &mut out);
        assert_eq!(out, b"prefix:[1,2]");
    }
}
