//! One message as it is stored: the columns of `messages` plus the names
//! for the `user_messages` and `package_messages` links.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::{extract, time};

/// A message ready to be written (datanommer's `add`, minus the database).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The envelope's `msg_id`, else `headers["message-id"]`, else a new
    /// `<year>-<uuid4>` (as datanommer did).
    pub msg_id: String,
    /// The envelope's `i`, else 0.
    pub i: i64,
    /// The topic.
    pub topic: String,
    /// The envelope's `timestamp` (µs since the epoch), else the time of
    /// arrival.
    pub timestamp: i64,
    /// The envelope's `certificate`, when a string.
    pub certificate: Option<String>,
    /// The envelope's `signature`, when a string.
    pub signature: Option<String>,
    /// See [`category`].
    pub category: String,
    /// The envelope's `username`, when a string.
    pub username: Option<String>,
    /// The envelope's `crypto`, when a string.
    pub crypto: Option<String>,
    /// The payload `msg` as JSON text, exactly as the publisher wrote it
    /// (so numbers keep their text and re-encoding it canonically
    /// reproduces what was signed). `null` when absent.
    pub msg: String,
    /// The envelope's `headers` as JSON text, when present and not null.
    pub headers: Option<String>,
    /// Users the message names (see [`extract`]).
    pub users: Vec<String>,
    /// Packages the message names (see [`extract`]).
    pub packages: Vec<String>,
}

impl Row {
    /// Builds the row for an envelope (JSON text) received on `topic` at
    /// `now` (µs). Only the payload is parsed into a tree (for the users
    /// and packages); the other fields are read straight from the text,
    /// and `msg` and `headers` are stored as the publisher wrote them. A
    /// field of an unexpected type counts as absent; a duplicated key
    /// keeps its last value (as Python's `json.loads` does).
    pub fn from_json(topic: &str, body: &str, now: i64) -> Result<Row, serde_json::Error> {
        let fields: HashMap<String, &RawValue> = serde_json::from_str(body)?;
        let raw = |key: &str| fields.get(key).map(|v| v.get());
        let text = |key: &str| raw(key).and_then(|v| serde_json::from_str::<String>(v).ok());
        let headers = raw("headers").filter(|h| *h != "null");
        let msg_id = text("msg_id")
            .or_else(|| {
                let headers: Value = serde_json::from_str(headers?).ok()?;
                headers.get("message-id")?.as_str().map(str::to_owned)
            })
            .unwrap_or_else(|| format!("{}-{}", time::year_of(now), uuid::Uuid::new_v4()));
        let timestamp = raw("timestamp")
            .and_then(|v| serde_json::from_str::<f64>(v).ok())
            .and_then(time::from_epoch_secs)
            .unwrap_or(now);
        let category = category(topic);
        let msg = raw("msg").unwrap_or("null");
        let (users, packages) = match serde_json::from_str::<Value>(msg) {
            Ok(payload) => extract::users_and_packages(&category, &payload),
            Err(_) => (Vec::new(), Vec::new()),
        };
        Ok(Row {
            msg_id,
            i: raw("i")
                .and_then(|v| serde_json::from_str::<i64>(v).ok())
                .unwrap_or(0),
            topic: topic.to_owned(),
            timestamp,
            certificate: text("certificate"),
            signature: text("signature"),
            category,
            username: text("username"),
            crypto: text("crypto"),
            msg: msg.to_owned(),
            headers: headers.map(str::to_owned),
            users,
            packages,
        })
    }
}

/// datanommer's category: the fourth dot-separated part of the topic (the
/// third when the topic contains `VirtualTopic`, as STOMP topics do), or
/// `Unclassified` when there is no such part.
/// `org.fedoraproject.prod.bodhi.update.comment` → `bodhi`.
pub fn category(topic: &str) -> String {
    let index = if topic.contains("VirtualTopic") { 2 } else { 3 };
    topic
        .split('.')
        .nth(index)
        .map(str::to_owned)
        .unwrap_or_else(|| "Unclassified".to_owned())
}

impl Row {
    /// Adds users and packages found elsewhere (fedmsg.meta) to the row's
    /// own, with the same limits as [`crate::extract`]: trimmed,
    /// no empty or over-long names, at most
    /// [`MAX_NAMES`](crate::extract::MAX_NAMES) of each, sorted.
    pub fn add_names(
        &mut self,
        users: impl IntoIterator<Item = String>,
        packages: impl IntoIterator<Item = String>,
    ) {
        self.users = crate::extract::merged(std::mem::take(&mut self.users), users);
        self.packages = crate::extract::merged(std::mem::take(&mut self.packages), packages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from_value(topic: &str, envelope: Value, now: i64) -> Row {
        Row::from_json(topic, &envelope.to_string(), now).unwrap()
    }

    #[test]
    fn categories() {
        assert_eq!(
            category("org.fedoraproject.prod.bodhi.update.comment"),
            "bodhi"
        );
        assert_eq!(category("org.fedoraproject.dev.logger.log"), "logger");
        assert_eq!(category("/topic/VirtualTopic.eng.ci.x"), "ci");
        assert_eq!(category("org.fedoraproject.prod"), "Unclassified");
        assert_eq!(category("a.b.c."), "");
        assert_eq!(category(""), "Unclassified");
    }

    #[test]
    fn full_envelope() {
        let body = r#"{"topic":"org.fedoraproject.prod.copr.build.start","i":3,"msg_id":"2017-1",
            "timestamp":1504643075,"username":"copr","crypto":"x509","signature":"c2ln\n","certificate":"Y2VydA==\n",
            "headers":{"a":1},"msg":{"owner":"dvdmuckle","pkg":"minsh","f":1504642719.23539,"big":123456789012345678901234567890,"e":1e-07}}"#;
        let row = Row::from_json("org.fedoraproject.prod.copr.build.start", body, 0).unwrap();
        assert_eq!(row.msg_id, "2017-1");
        assert_eq!(row.i, 3);
        assert_eq!(row.timestamp, 1_504_643_075_000_000);
        assert_eq!(row.category, "copr");
        assert_eq!(row.username.as_deref(), Some("copr"));
        assert_eq!(row.crypto.as_deref(), Some("x509"));
        assert_eq!(row.signature.as_deref(), Some("c2ln\n"));
        assert_eq!(row.certificate.as_deref(), Some("Y2VydA==\n"));
        assert_eq!(row.headers.as_deref(), Some(r#"{"a":1}"#));
        // Stored as sent: key order and number text survive exactly.
        assert_eq!(
            row.msg,
            r#"{"owner":"dvdmuckle","pkg":"minsh","f":1504642719.23539,"big":123456789012345678901234567890,"e":1e-07}"#
        );
        assert_eq!(row.users, ["dvdmuckle"]);
        assert_eq!(row.packages, ["minsh"]);
    }

    #[test]
    fn missing_fields_get_datanommer_defaults() {
        let now = 1_700_000_000_500_000;
        let row = from_value(
            "t",
            json!({"topic": "t", "timestamp": "soon", "i": "x", "msg_id": 5}),
            now,
        );
        assert_eq!(row.timestamp, now);
        assert_eq!(row.i, 0);
        assert_eq!(row.msg, "null");
        assert_eq!(row.headers, None);
        assert_eq!(row.category, "Unclassified");
        assert!(row.msg_id.starts_with("2023-"), "{}", row.msg_id);
        assert_eq!(row.msg_id.len(), "2023-".len() + 36);
        let other = from_value("t", json!({"topic": "t"}), now);
        assert_ne!(row.msg_id, other.msg_id);

        let stomp = json!({"topic": "t", "headers": {"message-id": "ID:broker-1"}, "msg": {}});
        assert_eq!(from_value("t", stomp, now).msg_id, "ID:broker-1");
        let null_headers = json!({"topic": "t", "headers": null, "msg_id": "m"});
        assert_eq!(from_value("t", null_headers, now).headers, None);
        // Last duplicate key wins; not an object is an error.
        let dup = Row::from_json(
            "t",
            r#"{"msg_id":"a","msg_id":"b","msg":{"x":1},"msg":{"user":"u"}}"#,
            now,
        )
        .unwrap();
        assert_eq!(
            (dup.msg_id.as_str(), dup.msg.as_str()),
            ("b", r#"{"user":"u"}"#)
        );
        assert_eq!(dup.users, ["u"]);
        assert!(Row::from_json("t", "[1]", now).is_err());
    }
}
