//! The message a plugin consumes.

use abi_stable::std_types::{ROption, RStr};
use serde::Deserialize;

use crate::abi::RawMessage;

/// One fedmsg message, borrowed from the hub for the duration of
/// `consume`. Copy out what you need to keep.
///
/// The hub parsed and (when configured) verified the envelope once; the raw
/// JSON text is handed over untouched, so a plugin that only needs the
/// topic or `msg_id` never pays for a JSON parse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Message<'a> {
    raw: RawMessage<'a>,
}

impl<'a> Message<'a> {
    /// A message with just a topic and a body (no metadata, not validated,
    /// endpoint empty): for a plugin's own unit tests. Add metadata with the
    /// `with_*` methods.
    pub fn new(topic: &'a str, body: &'a str) -> Self {
        Self {
            raw: RawMessage {
                topic: RStr::from_str(topic),
                body: RStr::from_str(body),
                msg_id: ROption::RNone,
                timestamp: ROption::RNone,
                endpoint_name: RStr::from_str(""),
                endpoint_url: RStr::from_str(""),
                validated: false,
                signer: ROption::RNone,
            },
        }
    }

    /// Wraps the FFI form (used by the generated shims).
    pub(crate) fn from_raw(raw: RawMessage<'a>) -> Self {
        Self { raw }
    }

    /// Sets `msg_id`.
    pub fn with_msg_id(mut self, msg_id: &'a str) -> Self {
        self.raw.msg_id = ROption::RSome(RStr::from_str(msg_id));
        self
    }

    /// Sets `timestamp`.
    pub fn with_timestamp(mut self, timestamp: f64) -> Self {
        self.raw.timestamp = ROption::RSome(timestamp);
        self
    }

    /// Sets the endpoint the message came from.
    pub fn with_endpoint(mut self, name: &'a str, url: &'a str) -> Self {
        self.raw.endpoint_name = RStr::from_str(name);
        self.raw.endpoint_url = RStr::from_str(url);
        self
    }

    /// Marks the message as validated by `signer`.
    pub fn with_signer(mut self, signer: &'a str) -> Self {
        self.raw.validated = true;
        self.raw.signer = ROption::RSome(RStr::from_str(signer));
        self
    }

    /// The zmq topic frame (equal to the envelope's `topic`).
    pub fn topic(&self) -> &'a str {
        self.raw.topic.as_str()
    }

    /// The envelope as raw JSON text, exactly as it arrived.
    pub fn body(&self) -> &'a str {
        self.raw.body.as_str()
    }

    /// The envelope's `msg_id`, when it has one.
    pub fn msg_id(&self) -> Option<&'a str> {
        self.raw.msg_id.map(|s| s.as_str()).into_option()
    }

    /// The envelope's `timestamp`, epoch seconds.
    pub fn timestamp(&self) -> Option<f64> {
        self.raw.timestamp.into_option()
    }

    /// The URL of the endpoint the message arrived from, e.g. `tcp://127.0.0.1:9940`.
    pub fn endpoint(&self) -> &'a str {
        self.raw.endpoint_url.as_str()
    }

    /// The name of that endpoint in the hub's `endpoints` configuration.
    pub fn endpoint_name(&self) -> &'a str {
        self.raw.endpoint_name.as_str()
    }

    /// True when the hub verified signature, certificate chain and routing
    /// policy. False when validation is off for this plugin.
    pub fn validated(&self) -> bool {
        self.raw.validated
    }

    /// The CN of the certificate that signed the message, when validated.
    pub fn signer(&self) -> Option<&'a str> {
        self.raw.signer.map(|s| s.as_str()).into_option()
    }

    /// Parses the envelope into a JSON value.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(self.body())
    }

    /// Parses the envelope into your own type; borrowing `&'a str` fields
    /// straight from the body is allowed (no copies).
    pub fn parse<T: Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let body = r#"{"topic":"org.x","msg":{"n":1},"msg_id":"id-1"}"#;
        let m = Message::new("org.x", body)
            .with_msg_id("id-1")
            .with_timestamp(12.5)
            .with_endpoint("relay", "tcp://127.0.0.1:1")
            .with_signer("bodhi");
        assert_eq!(m.topic(), "org.x");
        assert_eq!(m.body(), body);
        assert_eq!(m.msg_id(), Some("id-1"));
        assert_eq!(m.timestamp(), Some(12.5));
        assert_eq!(m.endpoint(), "tcp://127.0.0.1:1");
        assert_eq!(m.endpoint_name(), "relay");
        assert!(m.validated());
        assert_eq!(m.signer(), Some("bodhi"));
        assert_eq!(m.json().unwrap()["msg"]["n"], 1);

        #[derive(Deserialize)]
        struct Env<'a> {
            topic: &'a str,
        }
        assert_eq!(m.parse::<Env<'_>>().unwrap().topic, "org.x");
        let plain = Message::new("t", "[]");
        assert_eq!(
            (plain.msg_id(), plain.signer(), plain.validated()),
            (None, None, false)
        );
        assert!(Message::new("t", "{").json().is_err());
    }
}
