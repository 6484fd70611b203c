//! Property test: our canonical encoding equals Python's
//! `json.dumps(json.loads(text), sort_keys=True, separators=(',', ':'))` for
//! random JSON documents. Each proptest case sends a batch of documents to a
//! single `python3` process (one line in, one line out per document).

use std::io::Write as _;
use std::process::{Command, Stdio};

use fedmsg_wire::envelope;
use proptest::prelude::*;

const PYTHON: &str = r#"
import json, sys
for line in sys.stdin.buffer:
    doc = json.loads(line.decode("utf-8"))
    sys.stdout.write(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
"#;

/// Runs Python over `docs` (one JSON text per line) and returns its lines.
fn python_canonical(docs: &[String]) -> Vec<String> {
    let mut child = Command::new("python3")
        .args(["-c", PYTHON])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed to run this test");
    let mut stdin = child.stdin.take().expect("stdin");
    let input: String = docs.iter().map(|d| format!("{d}\n")).collect();
    // Write from a thread so a full stdout pipe cannot deadlock us.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("python3 runs");
    writer
        .join()
        .expect("writer thread")
        .expect("write to python3");
    assert!(
        output.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("python writes ASCII")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// JSON string literal for `s`, escaping non-ASCII either as `\u` escapes
/// (surrogate pairs for astral characters) or leaving raw UTF-8.
fn json_string(chars: &[(char, bool)]) -> String {
    let mut out = String::from("\"");
    for &(c, escape_non_ascii) in chars {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c if !c.is_ascii() && escape_non_ascii => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            '/' if escape_non_ascii => out.push_str("\\/"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range(' ', '~'),
        1 => proptest::char::range('\u{0}', '\u{1f}'),
        1 => Just('\u{7f}'),
        2 => proptest::char::range('\u{80}', '\u{7ff}'),
        2 => proptest::char::range('\u{800}', '\u{ffff}').prop_filter("no surrogates", |c| !(0xd800..0xe000).contains(&(*c as u32))),
        2 => proptest::char::range('\u{10000}', '\u{10ffff}'),
    ]
}

fn string_literal() -> impl Strategy<Value = String> {
    prop::collection::vec((any_char(), any::<bool>()), 0..12).prop_map(|chars| json_string(&chars))
}

/// Object keys: often from a tiny alphabet (so duplicates and near-equal keys
/// happen), sometimes empty, sometimes arbitrary.
fn key_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["", "a", "A", "b", "aa", "\u{fc}ber", "z", "\u{1f600}", "_", "Z9"])
            .prop_map(|k| json_string(&k.chars().map(|c| (c, false)).collect::<Vec<_>>())),
        2 => string_literal(),
    ]
}

fn float_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        // Any finite double in exponent form (always a float for Python).
        3 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
        // Hand-written decimal texts: rounding, huge/tiny exponents, overflow.
        3 => "-?(0|[1-9][0-9]{0,22})\\.[0-9]{1,22}([eE][+-]?[0-9]{1,3})?",
        2 => "-?(0|[1-9][0-9]{0,5})[eE][+-]?[0-9]{1,3}",
        1 => prop::sample::select(vec![
            "0.0", "-0.0", "1.0", "1e16", "1e15", "9999999999999998.0", "0.0001", "0.00001",
            "5e-324", "1.7976931348623157e308", "2.2250738585072014e-308", "1e400", "-1e400",
            "1504642719.23539", "123456789012345678.0", "1598779432284802.25", "0.1", "1e22", "1e-7", "NaN", "Infinity", "-Infinity",
        ]).prop_map(str::to_owned),
    ]
}

fn int_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<i64>().prop_map(|i| i.to_string()),
        2 => "-?[1-9][0-9]{15,60}",
        1 => Just("-0".to_owned()),
        1 => Just("0".to_owned()),
    ]
}

/// Optional whitespace between tokens (no newlines: documents are lines).
fn ws() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", "", " ", "\t", "  ", "\r"])
}

fn json_doc() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        int_literal(),
        float_literal(),
        string_literal(),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec((inner.clone(), ws()), 0..6).prop_map(|items| {
                let body: Vec<String> = items
                    .into_iter()
                    .map(|(v, w)| format!("{w}{v}{w}"))
                    .collect();
                format!("[{}]", body.join(","))
            }),
            prop::collection::vec((key_literal(), inner, ws()), 0..6).prop_map(|entries| {
                let body: Vec<String> = entries
                    .into_iter()
                    .map(|(k, v, w)| format!("{w}{k}{w}:{w}{v}"))
                    .collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn canonical_encoding_matches_python(docs in prop::collection::vec(json_doc(), 1..80)) {
        let expected = python_canonical(&docs);
        prop_assert_eq!(expected.len(), docs.len());
        for (doc, python) in docs.iter().zip(&expected) {
            let value = envelope::parse(doc.as_bytes());
            prop_assert!(value.is_ok(), "we failed to parse {:?}: {:?}", doc, value.err());
            let ours = value.map(|v| envelope::to_canonical(&v)).unwrap_or_default();
            prop_assert_eq!(&ours, python, "input {:?}", doc);
        }
    }
}

#[test]
fn hand_picked_documents_match_python() {
    let docs: Vec<String> = [
        r#"{"b":1,"a":[1,2.0,-0,-0.0,1e16,1E-5,12345678901234567890123]}"#,
        r#"{"":"empty","Alpha":1,"alpha":2,"\u00fcber":3,"\ud83d\ude00":4,"z":5}"#,
        r#""h\u00e9llo \u2603 \ud834\udd1e \u65e5\u672c \"q\" \\ \/ \n\t\r\b\f \u0001 \u007f </script>""#,
        r#"{"a":1,"a":2,"a":{"x":NaN,"y":Infinity,"z":-Infinity}}"#,
        r#"[1504642719.23539,0.0,1504643044.0,1e-07,1e+22,0.1,2.0,100.0,1e15,123e-20]"#,
        // Ties between two shortest candidates: Python picks the even digit.
        r#"[1598779432284802.25,1598779432284802.34079164681,-1598779432284802.25,648743036750707.255]"#,
        "\"raw \u{10ffff} \u{7ff} \u{800} \u{ffff}\"",
        r#"[[[[[[[[[[[]]]]]]]]]],{}]"#,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let expected = python_canonical(&docs);
    for (doc, python) in docs.iter().zip(&expected) {
        let ours = envelope::to_canonical(&envelope::parse(doc.as_bytes()).expect("parses"));
        assert_eq!(&ours, python, "input {doc}");
    }
}

/// Deterministic xorshift64* generator, so failures are reproducible.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn many_doubles_match_python_repr() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut floats = Vec::new();
    for _ in 0..20_000 {
        // Arbitrary bit patterns (all exponents).
        let f = f64::from_bits(xorshift(&mut state));
        if f.is_finite() {
            floats.push(f);
        }
        // x.25 / x.75 in [1e15, 2^51): the ulp is 0.25, so both 17-digit
        // neighbours round-trip and the shortest digits are a tie.
        let base = 1e15 + (xorshift(&mut state) % 1_000_000_000_000_000) as f64 * 1.25;
        if base < 2f64.powi(51) {
            floats.push(base.trunc() + 0.25);
            floats.push(base.trunc() + 0.75);
        }
        // Doubles with short binary fractions across the binades where
        // 16- and 17-digit ties live (2^40 .. 2^60), and their negatives.
        let binade = 40 + (xorshift(&mut state) % 21) as i32;
        let ulp = 2f64.powi(binade - 52);
        let steps = (xorshift(&mut state) % (1 << 52)) as f64;
        let f = 2f64.powi(binade) + steps * ulp;
        floats.push(f);
        floats.push(-f);
    }
    // `{:e}` texts parse back to exactly these doubles in both languages.
    let docs: Vec<String> = floats.iter().map(|f| format!("{f:e}")).collect();
    let expected = python_canonical(&docs);
    assert_eq!(expected.len(), docs.len());
    let mut mismatches = Vec::new();
    for (doc, python) in docs.iter().zip(&expected) {
        let ours = envelope::to_canonical(&envelope::parse(doc.as_bytes()).expect("parses"));
        if &ours != python {
            mismatches.push(format!("{doc}: ours {ours}, python {python}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches, e.g.:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
}
