//! moksha's WebSocket protocol: the frames a client sends, and the frames
//! busmon sends.
//!
//! In: `{"topic": "__topic_subscribe__", "body": PATTERN}` adds a
//! subscription; any other `{"topic": T, "body": B}` is a message for the
//! bus, published only with `client2server` (moksha's default: off).
//! Out: `{"topic": T, "body": ENVELOPE}`, one text frame per message, the
//! envelope exactly as received.

use serde::Deserialize;
use serde_json::value::RawValue;

/// moksha's subscribe topic.
pub const SUBSCRIBE: &str = "__topic_subscribe__";

/// The topic of busmon's "N skipped" marker frame (not a fedmsg topic: it
/// has no dots, so no glob a client subscribes to names it by accident
/// except `*`).
pub const SKIPPED_TOPIC: &str = "__busmon_skipped__";

/// Longest subscribe pattern accepted, in bytes (fedmsg topics are short).
pub const MAX_PATTERN: usize = 512;

/// A frame a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// `__topic_subscribe__`: the pattern.
    Subscribe(String),
    /// Anything else: a message for the bus (`body` as JSON text).
    Publish {
        /// The topic the client asked for.
        topic: String,
        /// The body, JSON text.
        body: String,
    },
}

/// Why a client frame was refused (each has a counter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a JSON object with a string `topic` and a `body`.
    #[error("not a moksha frame ({0})")]
    NotAFrame(String),
    /// A subscribe whose body is not a string.
    #[error("__topic_subscribe__ needs a string body")]
    PatternNotString,
    /// A subscribe pattern that is empty or too long.
    #[error("subscribe pattern of {0} bytes (1 to {MAX_PATTERN} allowed)")]
    PatternLength(usize),
    /// A pattern with control characters.
    #[error("subscribe pattern with a control character")]
    PatternControl,
}

impl FrameError {
    /// Short name for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            FrameError::NotAFrame(_) => "not_a_frame",
            FrameError::PatternNotString => "pattern_not_string",
            FrameError::PatternLength(_) => "pattern_length",
            FrameError::PatternControl => "pattern_control",
        }
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    topic: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// Parses one text frame from a client.
///
/// # Errors
///
/// See [`FrameError`].
pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
    let wire: Wire<'_> =
        serde_json::from_str(text).map_err(|e| FrameError::NotAFrame(e.to_string()))?;
    if wire.topic != SUBSCRIBE {
        return Ok(ClientFrame::Publish {
            topic: wire.topic.into_owned(),
            body: wire.body.get().to_owned(),
        });
    }
    let pattern: String =
        serde_json::from_str(wire.body.get()).map_err(|_| FrameError::PatternNotString)?;
    if pattern.is_empty() || pattern.len() > MAX_PATTERN {
        return Err(FrameError::PatternLength(pattern.len()));
    }
    if pattern.chars().any(char::is_control) {
        return Err(FrameError::PatternControl);
    }
    Ok(ClientFrame::Subscribe(pattern))
}

/// JSON text of a string.
pub fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// The frame busmon sends for one message: `{"topic":T,"body":ENVELOPE}`,
/// the envelope spliced in as received (the hub checked it is a JSON
/// object), so nothing is parsed or re-encoded per message.
pub fn message_frame(topic: &str, envelope: &str) -> String {
    let topic = json_string(topic);
    let mut out = String::with_capacity(envelope.len() + topic.len() + 20);
    out.push_str("{\"topic\":");
    out.push_str(&topic);
    out.push_str(",\"body\":");
    out.push_str(envelope);
    out.push('}');
    out
}

/// The marker frame: `{"topic":"__busmon_skipped__","body":{"skipped":N}}`.
pub fn skipped_frame(n: u64) -> String {
    format!("{{\"topic\":\"{SKIPPED_TOPIC}\",\"body\":{{\"skipped\":{n}}}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_frames() {
        assert_eq!(
            parse(r#"{"topic":"__topic_subscribe__","body":"*"}"#),
            Ok(ClientFrame::Subscribe("*".into()))
        );
        assert_eq!(
            parse(r#"{"body":"org.fedoraproject.prod.bodhi.*","topic":"__topic_subscribe__"}"#),
            Ok(ClientFrame::Subscribe(
                "org.fedoraproject.prod.bodhi.*".into()
            ))
        );
        assert_eq!(
            parse(r#"{"topic":"__topic_subscribe__","body":5}"#),
            Err(FrameError::PatternNotString)
        );
        assert_eq!(
            parse(r#"{"topic":"__topic_subscribe__","body":""}"#),
            Err(FrameError::PatternLength(0))
        );
        assert_eq!(
            parse(r#"{"topic":"__topic_subscribe__","body":"a\nb"}"#),
            Err(FrameError::PatternControl)
        );
        let long = format!(
            r#"{{"topic":"__topic_subscribe__","body":"{}"}}"#,
            "a".repeat(600)
        );
        assert_eq!(parse(&long), Err(FrameError::PatternLength(600)));
    }

    #[test]
    fn other_frames() {
        assert_eq!(
            parse(r#"{"topic":"x.y","body":{"a":[1]}}"#),
            Ok(ClientFrame::Publish {
                topic: "x.y".into(),
                body: r#"{"a":[1]}"#.into()
            })
        );
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"topic":1,"body":2}"#,
            r#"{"topic":"x"}"#,
            "nul\0",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.label(), "not_a_frame", "{bad:?}");
        }
    }

    #[test]
    fn out_frames_are_json() {
        let f = message_frame("a.\"b", r#"{"msg": {"x": "<img>"}}"#);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["topic"], "a.\"b");
        assert_eq!(v["body"]["msg"]["x"], "<img>");
        let v: serde_json::Value = serde_json::from_str(&skipped_frame(7)).unwrap();
        assert_eq!(v["body"]["skipped"], 7);
    }
}
