//! Receive path, step 2: ingest. Turns the frames a SUB socket received
//! ([`crate::transport`]) into a [`Delivery`], or into a counted, logged
//! rejection (next: the hub's verify step, or `fedmsg-tail`'s printer).
//!
//! Everything here runs on bytes a remote peer controls, so nothing may
//! panic, and every way to be wrong has a name (the `reason` label that
//! counters and logs use).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::cell::RefCell;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::crypto::Rejection;
use crate::delivery::{Delivery, Source};
use crate::envelope::scan;
use crate::peer_text::for_log;
use crate::ratelimit::LogLimiter;

/// Why a message never reached a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Not exactly two frames `[topic, body]`.
    FrameCount(usize),
    /// The topic frame is not UTF-8.
    TopicNotUtf8,
    /// The body frame is not UTF-8.
    BodyNotUtf8,
    /// The body is larger than `max_message_size`.
    TooLarge(usize),
    /// The topic frame is longer than [`Limits::max_topic_len`].
    TopicTooLong(usize),
    /// The envelope's `msg_id` is longer than [`Limits::max_msg_id_len`].
    MsgIdTooLong(usize),
    /// The body is not JSON at all.
    NotJson(String),
    /// The body is JSON, but not an object.
    NotObject,
    /// The envelope has no string `topic`.
    NoTopic,
    /// The frame topic differs from the envelope topic.
    TopicMismatch {
        /// The zmq topic frame.
        frame: String,
        /// The envelope's `topic`.
        envelope: String,
    },
}

impl Reject {
    /// A stable snake_case label for counters and log fields.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::FrameCount(_) => "frame_count",
            Reject::TopicNotUtf8 => "topic_not_utf8",
            Reject::BodyNotUtf8 => "body_not_utf8",
            Reject::TooLarge(_) => "too_large",
            Reject::TopicTooLong(_) => "topic_too_long",
            Reject::MsgIdTooLong(_) => "msg_id_too_long",
            Reject::NotJson(_) => "not_json",
            Reject::NotObject => "not_object",
            Reject::NoTopic => "no_topic",
            Reject::TopicMismatch { .. } => "topic_mismatch",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::FrameCount(n) => write!(f, "expected 2 frames [topic, body], got {n}"),
            Reject::TopicNotUtf8 => f.write_str("topic frame is not valid UTF-8"),
            Reject::BodyNotUtf8 => f.write_str("body frame is not valid UTF-8"),
            Reject::TooLarge(n) => write!(f, "body of {n} bytes exceeds max_message_size"),
            Reject::TopicTooLong(n) => write!(
                f,
                "topic of {n} bytes exceeds the limit of {}",
                Limits::default().max_topic_len
            ),
            Reject::MsgIdTooLong(n) => write!(
                f,
                "msg_id of {n} bytes exceeds the limit of {}",
                Limits::default().max_msg_id_len
            ),
            Reject::NotJson(e) => write!(f, "body is not JSON: {e}"),
            Reject::NotObject => f.write_str("body is JSON but not an object"),
            Reject::NoTopic => f.write_str("envelope has no string \"topic\""),
            // Both topics are the peer's: escaped and cut (one 5 MB topic
            // must not become a 5 MB log line).
            Reject::TopicMismatch { frame, envelope } => write!(
                f,
                "topic frame {:?} != envelope topic {:?}",
                for_log(frame),
                for_log(envelope)
            ),
        }
    }
}

/// Limits that protect the hub from hostile input.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted body in bytes.
    pub max_message_size: usize,
    /// Longest accepted topic in bytes. Real topics are under 200 bytes;
    /// the topic is kept per message in queues, logs and the status file.
    pub max_topic_len: usize,
    /// Longest accepted `msg_id` in bytes. fedmsg's are `<year>-<uuid>`
    /// (41 bytes); the id is kept in the de-duplication window and the
    /// status file, so an unbounded one let 150 messages take gigabytes.
    pub max_msg_id_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 64 * 1024 * 1024,
            max_topic_len: 1024,
            max_msg_id_len: 256,
        }
    }
}

/// The envelope fields ingest needs; everything else is skipped unparsed.
#[derive(Debug, Default, PartialEq)]
struct Head {
    topic: Option<String>,
    msg_id: Option<String>,
    timestamp: Option<f64>,
    seq_id: Option<u64>,
}

impl<'de> serde::Deserialize<'de> for Head {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HeadVisitor)
    }
}

struct HeadVisitor;

impl<'de> Visitor<'de> for HeadVisitor {
    type Value = Head;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    // A hand-written visitor rather than `#[derive(Deserialize)]` because
    // Python's json takes the last of duplicate keys (derive would reject
    // them) and because a `topic` or `timestamp` of an unexpected type must
    // not make the whole envelope unreadable.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
        let mut head = Head::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "topic" => {
                    head.topic = map
                        .next_value::<serde_json::Value>()?
                        .as_str()
                        .map(str::to_owned)
                }
                "msg_id" => {
                    head.msg_id = map
                        .next_value::<serde_json::Value>()?
                        .as_str()
                        .map(str::to_owned)
                }
                "timestamp" => head.timestamp = map.next_value::<serde_json::Value>()?.as_f64(),
                "seq_id" => head.seq_id = map.next_value::<serde_json::Value>()?.as_u64(),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(head)
    }
}

/// Checks the frames and parses the envelope head, producing an unverified
/// delivery (`validated == false`).
pub fn classify(
    frames: Vec<Vec<u8>>,
    source: &Arc<Source>,
    limits: &Limits,
) -> Result<Delivery, Reject> {
    let [topic, body]: [Vec<u8>; 2] = frames
        .try_into()
        .map_err(|frames: Vec<Vec<u8>>| Reject::FrameCount(frames.len()))?;
    if body.len() > limits.max_message_size {
        return Err(Reject::TooLarge(body.len()));
    }
    if topic.len() > limits.max_topic_len {
        return Err(Reject::TopicTooLong(topic.len()));
    }
    let topic = String::from_utf8(topic).map_err(|_| Reject::TopicNotUtf8)?;
    let body = String::from_utf8(body).map_err(|_| Reject::BodyNotUtf8)?;
    let head = parse_head(&body)?;
    let envelope_topic = head.topic.ok_or(Reject::NoTopic)?;
    if let Some(id) = &head.msg_id {
        if id.len() > limits.max_msg_id_len {
            return Err(Reject::MsgIdTooLong(id.len()));
        }
    }
    if envelope_topic != topic {
        return Err(Reject::TopicMismatch {
            frame: topic,
            envelope: envelope_topic,
        });
    }
    Ok(Delivery {
        topic,
        body,
        msg_id: head.msg_id,
        timestamp: head.timestamp,
        seq_id: head.seq_id,
        source: Arc::clone(source),
        validated: false,
        signer: None,
    })
}

fn parse_head(body: &str) -> Result<Head, Reject> {
    if let Some(head) = scan_head(body) {
        return Ok(head);
    }
    parse_head_serde(body)
}

thread_local! {
    /// Reused member list of [`scan_head`].
    static MEMBERS: RefCell<Vec<scan::Member>> = RefCell::new(Vec::with_capacity(16));
}

/// The fast path of [`parse_head`]: one allocation-free pass of
/// [`scan::scan_object`], then the three fields read in place. `None` when
/// the body needs serde_json's judgement (not JSON the scanner is sure of,
/// or a head field written with escapes), which then gives the same result
/// the slow way.
fn scan_head(body: &str) -> Option<Head> {
    MEMBERS.with(|members| {
        let mut members = members.borrow_mut();
        let bytes = body.as_bytes();
        scan::scan_object(bytes, &mut members)?;
        let mut head = Head::default();
        for member in members.iter() {
            if member.escaped_key {
                // Could be `"\u0074opic"`: let serde_json decode it.
                return None;
            }
            let slot = match member.raw_key(bytes) {
                b"topic" => &mut head.topic,
                b"msg_id" => &mut head.msg_id,
                b"timestamp" => {
                    // Like `Value::as_f64`: numbers only, finite only.
                    head.timestamp = (member.kind == scan::Kind::Number)
                        .then(|| body.get(member.value.clone())?.parse::<f64>().ok())
                        .flatten()
                        .filter(|t| t.is_finite());
                    continue;
                }
                b"seq_id" => {
                    // Like `Value::as_u64`: plain non-negative integers only.
                    head.seq_id = (member.kind == scan::Kind::Number)
                        .then(|| body.get(member.value.clone())?.parse::<u64>().ok())
                        .flatten();
                    continue;
                }
                _ => continue,
            };
            // Last duplicate wins, as in Python; non-strings read as absent.
            *slot = match member.raw_string(bytes) {
                Some(_) if member.escaped_value => return None,
                Some(_) => body
                    .get(member.value.start + 1..member.value.end - 1)
                    .map(str::to_owned),
                None => None,
            };
        }
        Some(head)
    })
}

/// The general path of [`parse_head`], with serde_json's error messages.
fn parse_head_serde(body: &str) -> Result<Head, Reject> {
    // serde_json would happily read a JSON array into a map-shaped visitor's
    // error path with a confusing message; say plainly what is wrong instead.
    let first = body.trim_start().as_bytes().first().copied();
    if first != Some(b'{') {
        return match serde_json::from_str::<IgnoredAny>(body) {
            Ok(_) => Err(Reject::NotObject),
            Err(e) => Err(Reject::NotJson(e.to_string())),
        };
    }
    match serde_json::from_str::<Head>(body) {
        Ok(head) => Ok(head),
        // Python's json accepts `NaN` and `±Infinity` (and fedmsg signs
        // them): read the head of such a body as `envelope::parse` reads
        // the whole, instead of rejecting a message Python accepts.
        Err(strict) => crate::envelope::rewrite_non_finite(body.as_bytes())
            .and_then(|rewritten| serde_json::from_slice::<Head>(&rewritten).ok())
            .ok_or_else(|| Reject::NotJson(strict.to_string())),
    }
}

/// Counters of what ingest accepted and rejected, by reason.
#[derive(Debug, Default)]
pub struct IngestStats {
    received: AtomicU64,
    accepted: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    invalid: Mutex<BTreeMap<&'static str, u64>>,
    log_limiter: LogLimiter,
    invalid_log_limiter: LogLimiter,
}

impl IngestStats {
    /// Counts one message received from a socket.
    pub fn record_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one message handed on to dispatch.
    pub fn record_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a rejection under `reason` and logs it, rate-limited.
    pub fn record_rejected(
        &self,
        reason: &'static str,
        source: &Source,
        detail: &dyn fmt::Display,
    ) {
        if let Ok(mut rejected) = self.rejected.lock() {
            *rejected.entry(reason).or_insert(0) += 1;
        }
        if let Some(suppressed) = self.log_limiter.check() {
            tracing::warn!(
                reason,
                endpoint = %source.url,
                endpoint_name = %source.name,
                suppressed,
                "dropped message: {detail}"
            );
        }
    }

    /// Counts a message whose signature check failed and logs it,
    /// rate-limited. The message still reaches plugins that opted out of
    /// validation (with `validated == false`).
    pub fn record_invalid(&self, delivery: &Delivery, rejection: &Rejection) {
        let reason = rejection.reason();
        if let Ok(mut invalid) = self.invalid.lock() {
            *invalid.entry(reason).or_insert(0) += 1;
        }
        if let Some(suppressed) = self.invalid_log_limiter.check() {
            let signer = match rejection {
                Rejection::Policy { signer, .. }
                | Rejection::PolicyUnderspecified { signer, .. } => signer.as_str(),
                _ => "",
            };
            tracing::warn!(
                reason,
                msg_id = %for_log(delivery.msg_id.as_deref().unwrap_or("")),
                topic = %for_log(&delivery.topic),
                signer = %for_log(signer),
                endpoint = %delivery.source.url,
                suppressed,
                "invalid message: {rejection}"
            );
        }
    }

    /// Messages that failed validation so far, by reason.
    pub fn invalid(&self) -> BTreeMap<&'static str, u64> {
        self.invalid.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Messages received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Messages handed to dispatch so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Rejections so far, by reason.
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        self.rejected.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Arc<Source> {
        Arc::new(Source {
            name: "test".into(),
            url: "tcp://127.0.0.1:1".into(),
        })
    }

    fn frames(parts: &[&[u8]]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.to_vec()).collect()
    }

    fn classify_parts(parts: &[&[u8]]) -> Result<Delivery, Reject> {
        classify(frames(parts), &source(), &Limits::default())
    }

    #[test]
    fn accepts_a_fedmsg_envelope() {
        let body = br#"{"i":1,"msg":{"log":"Hello world"},"msg_id":"2014-f1c49f0b","timestamp":1393878837,"topic":"org.fedoraproject.dev.logger.log","username":"root"}"#;
        let d = classify_parts(&[b"org.fedoraproject.dev.logger.log", body]).unwrap();
        assert_eq!(d.topic, "org.fedoraproject.dev.logger.log");
        assert_eq!(d.msg_id.as_deref(), Some("2014-f1c49f0b"));
        assert_eq!(d.timestamp, Some(1393878837.0));
        assert_eq!(d.body.as_bytes(), body);
        assert!(!d.validated);
    }

    #[test]
    fn accepts_float_timestamp_duplicates_and_odd_types() {
        let d = classify_parts(&[
            b"t",
            br#"{"topic":"x","timestamp":1.5,"topic":"t","msg_id":7}"#,
        ])
        .unwrap();
        assert_eq!(d.timestamp, Some(1.5));
        assert_eq!(d.msg_id, None);
    }

    #[test]
    fn reads_seq_id_when_it_is_a_plain_integer() {
        let d = classify_parts(&[b"t", br#"{"topic":"t","seq_id":42}"#]).unwrap();
        assert_eq!(d.seq_id, Some(42));
        let d = classify_parts(&[b"t", br#"{"topic":"t","seq_id":"42"}"#]).unwrap();
        assert_eq!(d.seq_id, None);
        let d = classify_parts(&[b"t", br#"{"topic":"t","seq_id":-1}"#]).unwrap();
        assert_eq!(d.seq_id, None);
    }

    #[test]
    fn rejects_each_malformed_kind() {
        let reason = |parts: &[&[u8]]| classify_parts(parts).unwrap_err().reason();
        assert_eq!(reason(&[b"only-one"]), "frame_count");
        assert_eq!(reason(&[b"a", b"{}", b"c"]), "frame_count");
        assert_eq!(reason(&[b"\xff\xfe", b"{}"]), "topic_not_utf8");
        assert_eq!(
            reason(&[b"t", b"{\"topic\":\"t\",\"x\":\"\xff\"}"]),
            "body_not_utf8"
        );
        assert_eq!(reason(&[b"t", b"not json"]), "not_json");
        assert_eq!(reason(&[b"t", b"{\"topic\":"]), "not_json");
        assert_eq!(reason(&[b"t", b"[1,2]"]), "not_object");
        assert_eq!(reason(&[b"t", b"null"]), "not_object");
        assert_eq!(reason(&[b"t", b"{\"msg\":1}"]), "no_topic");
        assert_eq!(reason(&[b"t", b"{\"topic\":5}"]), "no_topic");
        assert_eq!(reason(&[b"t", b"{\"topic\":\"u\"}"]), "topic_mismatch");
        assert_eq!(reason(&[b"t", b"{\"topic\":\"t\"} trailing"]), "not_json");
    }

    #[test]
    fn fast_and_serde_head_parsing_agree() {
        let bodies = [
            r#"{"i":1,"msg":{"topic":"inner"},"msg_id":"2024-x","timestamp":1393878837,"topic":"t"}"#,
            r#"{"topic":"x","timestamp":1.5,"topic":"t","msg_id":7}"#,
            r#"{"topic":"t","timestamp":"soon","msg_id":null}"#,
            r#"{"topic":"t","timestamp":1e999}"#,
            r#"{"topic":"t","timestamp":-0,"msg_id":"a\"b"}"#,
            r#"{"\u0074opic":"t"}"#,
            r#" { "topic" : "t" , "msg_id" : "\u00e9" } "#,
            r#"{"topic":"t","extra":[1,{"a":[]}],"timestamp":12345678901234567890}"#,
            r#"{"msg":1}"#,
        ];
        for body in bodies {
            let slow = parse_head_serde(body).expect("serde parses");
            assert_eq!(parse_head(body).expect("parses"), slow, "{body}");
            if let Some(fast) = scan_head(body) {
                assert_eq!(fast, slow, "{body}");
            }
        }
        assert!(scan_head(r#"{"topic":"t","msg_id":"m"}"#).is_some());
        assert!(scan_head(r#"{"\u0074opic":"t"}"#).is_none());
        assert!(scan_head(r#"{"topic":"\u0074"}"#).is_none());
    }

    #[test]
    fn accepts_non_finite_numbers_as_python_does() {
        let body =
            br#"{"topic":"t","msg":{"x":NaN,"y":-Infinity,"z":"NaN"},"msg_id":"m1","timestamp":1}"#;
        let d = classify_parts(&[b"t", body]).expect("Python's json.loads accepts it");
        assert_eq!(d.msg_id.as_deref(), Some("m1"));
        assert_eq!(d.body.as_bytes(), body, "forwarded as received");
        // Still rejected: what Python rejects too.
        assert_eq!(
            classify_parts(&[b"t", br#"{"topic":"t","x":nan}"#])
                .unwrap_err()
                .reason(),
            "not_json"
        );
    }

    #[test]
    fn rejects_oversized_bodies_before_parsing() {
        let limits = Limits {
            max_message_size: 8,
            ..Limits::default()
        };
        let err = classify(frames(&[b"t", b"{\"topic\":\"t\"}"]), &source(), &limits).unwrap_err();
        assert_eq!(err, Reject::TooLarge(13));
    }

    #[test]
    fn caps_topic_and_msg_id_length() {
        let limits = Limits::default();
        let long_topic = "t".repeat(limits.max_topic_len + 1);
        let body = format!("{{\"topic\":\"{long_topic}\"}}");
        let err = classify_parts(&[long_topic.as_bytes(), body.as_bytes()]).unwrap_err();
        assert_eq!(err, Reject::TopicTooLong(limits.max_topic_len + 1));
        let long_id = "i".repeat(4 * 1024 * 1024);
        let body = format!("{{\"topic\":\"t\",\"msg_id\":\"{long_id}\"}}");
        let err = classify_parts(&[b"t", body.as_bytes()]).unwrap_err();
        assert_eq!(err.reason(), "msg_id_too_long");
        let ok_id = "i".repeat(limits.max_msg_id_len);
        let body = format!("{{\"topic\":\"t\",\"msg_id\":\"{ok_id}\"}}");
        assert!(classify_parts(&[b"t", body.as_bytes()]).is_ok());
    }

    #[test]
    fn a_mismatch_shows_bounded_escaped_topics() {
        let frame = format!("a\nforged line{}", "x".repeat(1000));
        let err = classify_parts(&[frame.as_bytes(), b"{\"topic\":\"u\"}"]).unwrap_err();
        let shown = err.to_string();
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.len() < 400, "{}", shown.len());
    }

    #[test]
    fn stats_count_by_reason() {
        let stats = IngestStats::default();
        let src = source();
        stats.record_rejected("not_json", &src, &"x");
        stats.record_rejected("not_json", &src, &"x");
        stats.record_rejected("frame_count", &src, &"x");
        let rejected = stats.rejected();
        assert_eq!(rejected.get("not_json"), Some(&2));
        assert_eq!(rejected.get("frame_count"), Some(&1));
    }
}
