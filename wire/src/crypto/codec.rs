//! Small encoding helpers: fedmsg's base64 flavours and ASN.1 times.

use base64::Engine as _;
use openssl::asn1::{Asn1Time, Asn1TimeRef};

/// Base64 as Python 2's `str.encode('base64')` writes it: standard alphabet,
/// 76-character lines, each line (the last one too) followed by `\n`.
pub(crate) fn encode_base64_wrapped(data: &[u8]) -> String {
    let flat = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(flat.len() + flat.len() / 76 + 1);
    let mut rest = flat.as_str();
    while !rest.is_empty() {
        // Base64 text is ASCII, so any byte offset is a char boundary.
        let (line, tail) = rest.split_at(rest.len().min(76));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out
}

/// Why lenient base64 decoding failed (Python's messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Base64Error {
    /// One data character too many in the last group.
    #[error("invalid base64: number of data characters is 1 more than a multiple of 4")]
    Dangling,
    /// The last group is incomplete and not padded.
    #[error("invalid base64: incorrect padding")]
    Padding,
}

/// Decodes base64 the way Python's `base64.b64decode` does without
/// `validate=True`: characters outside the alphabet (newlines, spaces, ...)
/// are skipped, decoding stops at the padding that completes a group, and an
/// incomplete final group is an error.
pub(crate) fn decode_base64_lenient(input: &[u8]) -> Result<Vec<u8>, Base64Error> {
    if let Some(decoded) = decode_wrapped_strict(input) {
        return Ok(decoded);
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    let mut group_len = 0u8; // data characters seen in the current group of 4
    let mut pending = 0u32; // bits not yet written
    let mut pads = 0u8; // consecutive '=' seen since the last data character
    for &c in input {
        if c == b'=' {
            if group_len >= 2 {
                pads += 1;
                if group_len + pads >= 4 {
                    return Ok(out);
                }
            }
            continue;
        }
        let Some(sextet) = sextet(c) else {
            continue;
        };
        pads = 0;
        pending = (pending << 6) | u32::from(sextet);
        group_len += 1;
        // Emit a byte whenever at least 8 bits are pending.
        match group_len {
            2 => out.push((pending >> 4) as u8),
            3 => out.push((pending >> 2) as u8),
            4 => {
                out.push(pending as u8);
                group_len = 0;
                pending = 0;
            }
            _ => {}
        }
        pending &= match group_len {
            2 => 0x0f,
            3 => 0x03,
            _ => 0x3f,
        };
    }
    match group_len {
        0 => Ok(out),
        1 => Err(Base64Error::Dangling),
        _ => Err(Base64Error::Padding),
    }
}

/// The common case, fast: standard padded base64, possibly broken into
/// lines with `\n` (what every fedmsg publisher writes). For such input the
/// strict decoder's result is exactly the lenient one's; anything else
/// (other separators, missing or inner padding, non-zero trailing bits)
/// returns `None` and goes through the lenient loop.
fn decode_wrapped_strict(input: &[u8]) -> Option<Vec<u8>> {
    let mut compact = [0u8; 1024];
    let mut len = 0;
    for &c in input {
        if c != b'\n' {
            *compact.get_mut(len)? = c;
            len += 1;
        }
    }
    base64::engine::general_purpose::STANDARD
        .decode(&compact[..len])
        .ok()
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Converts an ASN.1 time to epoch seconds (`None` if OpenSSL cannot).
pub(crate) fn asn1_to_epoch(time: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(time).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_76_with_trailing_newline() {
        let encoded = encode_base64_wrapped(&[0u8; 128]);
        let lines: Vec<&str> = encoded.split_terminator('\n').collect();
        assert_eq!(
            lines.iter().map(|l| l.len()).collect::<Vec<_>>(),
            vec![76, 76, 20]
        );
        assert!(encoded.ends_with("A=\n"));
        assert_eq!(encode_base64_wrapped(b""), "");
        assert_eq!(encode_base64_wrapped(&[0u8; 57]).len(), 77);
    }

    #[test]
    fn lenient_decoding_matches_python() {
        let cases: [(&str, Result<&[u8], Base64Error>); 10] = [
            ("aGVsbG8=", Ok(b"hello")),
            ("aGVs\nbG8=\n", Ok(b"hello")),
            ("a G V s b G 8 =", Ok(b"hello")),
            ("aGVsbG8", Err(Base64Error::Padding)),
            ("aGVsbG8===", Ok(b"hello")),
            ("aGVsbG8=trailing", Ok(b"hello")),
            ("a", Err(Base64Error::Dangling)),
            ("=aGVsbG8=", Ok(b"hello")),
            ("", Ok(b"")),
            ("!!aGk=??", Ok(b"hi")),
        ];
        for (input, expected) in cases {
            let expected = expected.map(<[u8]>::to_vec);
            assert_eq!(
                decode_base64_lenient(input.as_bytes()),
                expected,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn fast_and_lenient_paths_agree() {
        let data: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        let wrapped = encode_base64_wrapped(&data);
        assert!(decode_wrapped_strict(wrapped.as_bytes()).is_some());
        // Non-zero trailing bits: the strict decoder refuses, the lenient
        // one (like Python) ignores them.
        assert_eq!(decode_wrapped_strict(b"aGk="), Some(b"hi".to_vec()));
        assert_eq!(decode_wrapped_strict(b"aGl="), None);
        assert_eq!(decode_base64_lenient(b"aGl="), Ok(b"hi".to_vec()));
        // Longer than the fast path's buffer: still decoded.
        let long: Vec<u8> = vec![7; 2000];
        let encoded = encode_base64_wrapped(&long);
        assert_eq!(decode_wrapped_strict(encoded.as_bytes()), None);
        assert_eq!(decode_base64_lenient(encoded.as_bytes()), Ok(long));
    }

    #[test]
    fn round_trip() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let wrapped = encode_base64_wrapped(&data);
        assert_eq!(decode_base64_lenient(wrapped.as_bytes()), Ok(data));
    }
}
