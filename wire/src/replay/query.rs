//! Replay queries: parsing the request frame, and the error texts.
//!
//! The texts are upstream's where upstream has one (clients only look for
//! the `error: ` prefix, but operators compare logs):
//!
//! | case | text |
//! |---|---|
//! | unknown key | `Unsupported field: "key"` (the literal word `key`, as upstream) |
//! | `seq_id_range` not two values | `Ill-format "seq_id_range" field` (upstream misspells it `sed_id_range`) |
//! | `time` not two values | `Ill-format "time" field` |
//! | a value of the wrong type | `Something went wrong when processing the field "<key>"` |
//! | nothing found | `There was no match for the given query` |
//!
//! and ours where upstream crashed or had no limit: `Query is not valid
//! JSON`, `Query is not a JSON object`, `Query must be a single frame`,
//! `Too many values in the field "<key>" (at most N)`.

use serde_json::{Map, Value};

use crate::envelope;

/// Most values accepted in `seq_ids` / `msg_ids` (bounds the SQL work one
/// request can cause).
pub const MAX_LIST_VALUES: usize = 10_000;

/// A parsed query: the union of everything it selects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// `seq_ids` and `seq_id`.
    pub seq_ids: Vec<i64>,
    /// `seq_id_range`, inclusive.
    pub seq_id_range: Option<(i64, i64)>,
    /// `msg_ids` and `msg_id`.
    pub msg_ids: Vec<String>,
    /// `time`, inclusive, epoch seconds.
    pub time: Option<(f64, f64)>,
}

impl Query {
    /// A query for `lo..=hi`.
    pub fn range(lo: i64, hi: i64) -> Query {
        Query {
            seq_id_range: Some((lo, hi)),
            ..Query::default()
        }
    }

    /// True when the query selects nothing at all (`{}`).
    pub fn is_empty(&self) -> bool {
        self.seq_ids.is_empty()
            && self.seq_id_range.is_none()
            && self.msg_ids.is_empty()
            && self.time.is_none()
    }

    /// The JSON request for this query (what a client sends).
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        if !self.seq_ids.is_empty() {
            map.insert("seq_ids".into(), Value::from(self.seq_ids.clone()));
        }
        if let Some((lo, hi)) = self.seq_id_range {
            map.insert("seq_id_range".into(), Value::from(vec![lo, hi]));
        }
        if !self.msg_ids.is_empty() {
            map.insert("msg_ids".into(), Value::from(self.msg_ids.clone()));
        }
        if let Some((t0, t1)) = self.time {
            map.insert("time".into(), Value::from(vec![t0, t1]));
        }
        Value::Object(map)
    }
}

/// Why a request is refused; [`QueryError::text`] is what goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The request frame is not JSON.
    #[error("Query is not valid JSON")]
    NotJson,
    /// The request is JSON but not an object.
    #[error("Query is not a JSON object")]
    NotObject,
    /// The request had more than one frame.
    #[error("Query must be a single frame")]
    Frames,
    /// A key outside the six supported ones.
    #[error("Unsupported field: \"key\"")]
    Unsupported(String),
    /// `seq_id_range` or `time` is not a pair.
    #[error("Ill-format \"{0}\" field")]
    IllFormat(&'static str),
    /// A value of the wrong type.
    #[error("Something went wrong when processing the field \"{0}\"")]
    BadValue(String),
    /// A list longer than [`MAX_LIST_VALUES`].
    #[error("Too many values in the field \"{0}\" (at most {MAX_LIST_VALUES})")]
    TooMany(String),
    /// The query selected nothing.
    #[error("There was no match for the given query")]
    NoMatch,
}

impl QueryError {
    /// The text inside the error frame.
    pub fn text(&self) -> String {
        self.to_string()
    }

    /// The whole reply frame: `error: '<text>'`.
    pub fn frame(&self) -> String {
        error_frame(&self.text())
    }
}

/// Formats an error reply frame like upstream (`"error: '%s'" % e`).
pub fn error_frame(text: &str) -> String {
    format!("error: '{text}'")
}

/// If `frame` is an error reply, its text (without the quotes when present).
pub fn parse_error_frame(frame: &[u8]) -> Option<String> {
    let rest = frame.strip_prefix(b"error: ")?;
    let text = String::from_utf8_lossy(rest);
    let unquoted = text
        .strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .unwrap_or(&text);
    Some(unquoted.to_owned())
}

/// Parses one request frame.
///
/// # Errors
///
/// Every [`QueryError`] but [`QueryError::NoMatch`] and
/// [`QueryError::Frames`].
pub fn parse(frame: &[u8]) -> Result<Query, QueryError> {
    let value = envelope::parse(frame).map_err(|_| QueryError::NotJson)?;
    let Value::Object(map) = value else {
        return Err(QueryError::NotObject);
    };
    let mut query = Query::default();
    for (key, value) in &map {
        parse_field(&mut query, key, value)?;
    }
    Ok(query)
}

fn parse_field(query: &mut Query, key: &str, value: &Value) -> Result<(), QueryError> {
    let bad = || QueryError::BadValue(key.to_owned());
    match key {
        "seq_ids" => {
            let list = bounded_list(key, value)?;
            let ids: Option<Vec<i64>> = list.iter().map(integer).collect();
            query.seq_ids.extend(ids.ok_or_else(bad)?);
        }
        "seq_id" => query.seq_ids.push(integer(value).ok_or_else(bad)?),
        "seq_id_range" => {
            let (lo, hi) = pair(value, "seq_id_range")?;
            query.seq_id_range = Some((integer(lo).ok_or_else(bad)?, integer(hi).ok_or_else(bad)?));
        }
        "msg_ids" => {
            let list = bounded_list(key, value)?;
            let ids: Option<Vec<String>> =
                list.iter().map(|v| v.as_str().map(str::to_owned)).collect();
            query.msg_ids.extend(ids.ok_or_else(bad)?);
        }
        "msg_id" => query
            .msg_ids
            .push(value.as_str().ok_or_else(bad)?.to_owned()),
        "time" => {
            let (t0, t1) = pair(value, "time")?;
            let number = |v: &Value| {
                let nan = v
                    .as_number()
                    .is_some_and(|n| n.as_str() == envelope::NAN_SENTINEL);
                v.as_f64().filter(|f| f.is_finite() && !nan)
            };
            query.time = Some((number(t0).ok_or_else(bad)?, number(t1).ok_or_else(bad)?));
        }
        other => return Err(QueryError::Unsupported(other.to_owned())),
    }
    Ok(())
}

fn bounded_list<'a>(key: &str, value: &'a Value) -> Result<&'a [Value], QueryError> {
    let list = value
        .as_array()
        .ok_or_else(|| QueryError::BadValue(key.to_owned()))?;
    if list.len() > MAX_LIST_VALUES {
        return Err(QueryError::TooMany(key.to_owned()));
    }
    Ok(list)
}

/// A two-element list, as Python's `a, b = value` demands.
fn pair<'a>(value: &'a Value, field: &'static str) -> Result<(&'a Value, &'a Value), QueryError> {
    match value.as_array().map(Vec::as_slice) {
        Some([a, b]) => Ok((a, b)),
        _ => Err(QueryError::IllFormat(field)),
    }
}

/// A JSON integer as SQLite's i64; integers beyond i64 saturate (they can
/// only be range ends that select everything above or below).
fn integer(value: &Value) -> Option<i64> {
    if let Some(i) = value.as_i64() {
        return Some(i);
    }
    // An integer too big for i64: its text has no fraction or exponent.
    let text = value.as_number()?.as_str();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    let integral = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    integral.then_some(if negative { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_and_ors_together() {
        let q = parse(
            br#"{"seq_ids":[1,2],"seq_id":9,"seq_id_range":[3,5],"msg_ids":["a"],"msg_id":"b","time":[1.5,2]}"#,
        )
        .unwrap();
        assert_eq!(q.seq_ids, vec![9, 1, 2]);
        assert_eq!(q.seq_id_range, Some((3, 5)));
        assert_eq!(q.msg_ids, vec!["b".to_owned(), "a".to_owned()]);
        assert_eq!(q.time, Some((1.5, 2.0)));
        assert!(!q.is_empty());
        assert!(parse(b"{}").unwrap().is_empty());
    }

    #[test]
    fn upstream_error_texts() {
        let text = |q: &[u8]| parse(q).unwrap_err().frame();
        assert_eq!(
            text(br#"{"bogus":1}"#),
            r#"error: 'Unsupported field: "key"'"#
        );
        assert_eq!(
            text(br#"{"seq_id_range":[1]}"#),
            r#"error: 'Ill-format "seq_id_range" field'"#
        );
        assert_eq!(
            text(br#"{"seq_id_range":5}"#),
            r#"error: 'Ill-format "seq_id_range" field'"#
        );
        assert_eq!(
            text(br#"{"time":[1,2,3]}"#),
            r#"error: 'Ill-format "time" field'"#
        );
        assert_eq!(
            text(br#"{"seq_id":"x"}"#),
            r#"error: 'Something went wrong when processing the field "seq_id"'"#
        );
        assert_eq!(
            QueryError::NoMatch.frame(),
            "error: 'There was no match for the given query'"
        );
    }

    #[test]
    fn malformed_requests_are_errors_not_panics() {
        for (frame, expected) in [
            (&b"not json"[..], QueryError::NotJson),
            (b"", QueryError::NotJson),
            (b"\xff\xfe", QueryError::NotJson),
            (b"[1,2]", QueryError::NotObject),
            (b"null", QueryError::NotObject),
            (
                br#"{"seq_ids":[1,"a"]}"#,
                QueryError::BadValue("seq_ids".into()),
            ),
            (br#"{"seq_ids":3}"#, QueryError::BadValue("seq_ids".into())),
            (br#"{"seq_id":true}"#, QueryError::BadValue("seq_id".into())),
            (br#"{"seq_id":1.5}"#, QueryError::BadValue("seq_id".into())),
            (
                br#"{"msg_ids":[1]}"#,
                QueryError::BadValue("msg_ids".into()),
            ),
            (br#"{"msg_id":null}"#, QueryError::BadValue("msg_id".into())),
            (br#"{"time":["a",1]}"#, QueryError::BadValue("time".into())),
            (br#"{"time":[NaN,1]}"#, QueryError::BadValue("time".into())),
            (
                br#"{"seq_id_range":[1,{}]}"#,
                QueryError::BadValue("seq_id_range".into()),
            ),
        ] {
            assert_eq!(
                parse(frame),
                Err(expected),
                "{}",
                String::from_utf8_lossy(frame)
            );
        }
    }

    #[test]
    fn huge_values_saturate_and_long_lists_are_refused() {
        let q = parse(br#"{"seq_id_range":[-99999999999999999999999,99999999999999999999999]}"#)
            .unwrap();
        assert_eq!(q.seq_id_range, Some((i64::MIN, i64::MAX)));
        let q = parse(br#"{"seq_id_range":[0,18446744073709551615]}"#).unwrap();
        assert_eq!(q.seq_id_range, Some((0, i64::MAX)));
        let long = format!(
            "{{\"seq_ids\":[{}]}}",
            vec!["1"; MAX_LIST_VALUES + 1].join(",")
        );
        assert_eq!(
            parse(long.as_bytes()),
            Err(QueryError::TooMany("seq_ids".into()))
        );
    }

    #[test]
    fn last_duplicate_key_wins_like_python() {
        let q = parse(br#"{"seq_id_range":[1,2],"seq_id_range":[7,8]}"#).unwrap();
        assert_eq!(q.seq_id_range, Some((7, 8)));
    }

    #[test]
    fn error_frames_round_trip_and_queries_serialize() {
        assert_eq!(
            parse_error_frame(b"error: 'There was no match for the given query'").as_deref(),
            Some("There was no match for the given query")
        );
        assert_eq!(parse_error_frame(b"error: raw").as_deref(), Some("raw"));
        assert_eq!(parse_error_frame(b"{\"seq_id\":1}"), None);
        let q = Query::range(4, 9);
        assert_eq!(q.to_json().to_string(), r#"{"seq_id_range":[4,9]}"#);
        assert_eq!(parse(q.to_json().to_string().as_bytes()).unwrap(), q);
    }
}
