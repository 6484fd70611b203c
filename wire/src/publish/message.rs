//! Building the envelope of reference §1.2: the full topic, `msg_id`,
//! integer `timestamp`, the `i` counter and `username`.

use serde_json::{Map, Value};

use crate::localtime;

/// Builds envelopes for one publisher. fedmsg keeps `i` per publishing
/// context (per thread in Python); one builder is one context.
#[derive(Debug, Clone)]
pub struct EnvelopeBuilder {
    topic_prefix: String,
    environment: String,
    username: String,
    /// The `i` of the last envelope built (0 before the first).
    last_i: u64,
}

impl EnvelopeBuilder {
    /// A builder for topics `<topic_prefix>.<environment>.…`, with the OS
    /// user as `username`.
    pub fn new(topic_prefix: &str, environment: &str) -> Self {
        Self::with_username(topic_prefix, environment, &username())
    }

    /// Like [`EnvelopeBuilder::new`] with an explicit `username`.
    pub fn with_username(topic_prefix: &str, environment: &str, username: &str) -> Self {
        EnvelopeBuilder {
            topic_prefix: topic_prefix.to_owned(),
            environment: environment.to_owned(),
            username: username.to_owned(),
            last_i: 0,
        }
    }

    /// fedmsg's topic rule (§1.3 steps 1–4): `<modname>.<topic>` (topic
    /// `unspecified` when empty), then `<topic_prefix>.<environment>.` in
    /// front unless that string already starts with `topic_prefix`. An
    /// empty `modname` is left out.
    pub fn full_topic(&self, modname: &str, topic: &str) -> String {
        let topic = if topic.is_empty() {
            "unspecified"
        } else {
            topic
        };
        let joined = if modname.is_empty() {
            topic.to_owned()
        } else {
            format!("{modname}.{topic}")
        };
        if joined.starts_with(&self.topic_prefix) {
            joined
        } else {
            format!("{}.{}.{joined}", self.topic_prefix, self.environment)
        }
    }

    /// The topic a hub plugin publishes on: a topic already starting with
    /// `<topic_prefix>.` is kept whole, anything else becomes
    /// `<topic_prefix>.<environment>.<modname>.<topic>`. (fedmsg would put
    /// the modname in front even of a full topic; a plugin that builds its
    /// own full topic means it.)
    pub fn plugin_topic(&self, modname: &str, topic: &str) -> String {
        let prefix = format!("{}.", self.topic_prefix);
        if topic.starts_with(&prefix) {
            topic.to_owned()
        } else {
            self.full_topic(modname, topic)
        }
    }

    /// The envelope `{topic, msg, timestamp, msg_id, i, username}` for
    /// `full_topic` (already composed). A "falsy" `msg` (null, false, 0,
    /// "", [] or {}) becomes `{}`, as in fedmsg.
    pub fn build(&mut self, full_topic: String, msg: Value) -> Map<String, Value> {
        self.last_i += 1;
        let msg = if is_falsy(&msg) {
            Value::Object(Map::new())
        } else {
            msg
        };
        let mut envelope = Map::new();
        envelope.insert("topic".into(), Value::String(full_topic));
        envelope.insert("msg".into(), msg);
        envelope.insert("timestamp".into(), Value::from(localtime::now_epoch()));
        envelope.insert("msg_id".into(), Value::String(new_msg_id()));
        envelope.insert("i".into(), Value::from(self.last_i));
        envelope.insert("username".into(), Value::String(self.username.clone()));
        envelope
    }
}

/// `"<year>-<uuid4>"`, the year from the local clock (§1.2).
pub fn new_msg_id() -> String {
    format!(
        "{}-{}",
        localtime::current_year(),
        uuid::Uuid::new_v4().hyphenated()
    )
}

fn is_falsy(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The OS user, as Python's `getpass.getuser()`: the first non-empty of
/// `LOGNAME`, `USER`, `LNAME`, `USERNAME`, else the password database entry
/// of the real uid, else the uid as a number.
pub fn username() -> String {
    for var in ["LOGNAME", "USER", "LNAME", "USERNAME"] {
        if let Some(value) = std::env::var_os(var) {
            if !value.is_empty() {
                return value.to_string_lossy().into_owned();
            }
        }
    }
    // SAFETY: getuid cannot fail and has no side effects.
    let uid = unsafe { libc::getuid() };
    passwd_name(uid).unwrap_or_else(|| uid.to_string())
}

fn passwd_name(uid: libc::uid_t) -> Option<String> {
    let mut buffer = vec![0u8; 4096];
    // SAFETY: `passwd` is plain data that getpwuid_r fills in; `buffer`
    // outlives the call and its real length is passed; `result` is only read
    // after a successful call, and then points into `passwd`, whose strings
    // point into `buffer`, both still alive while we copy the name out.
    unsafe {
        let mut passwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut passwd,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || passwd.pw_name.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(passwd.pw_name);
        Some(name.to_string_lossy().into_owned())
    }
}

/// The machine's host name up to the first dot (fedmsg's "short hostname").
pub fn short_hostname() -> String {
    let full = gethostname::gethostname().to_string_lossy().into_owned();
    full.split('.').next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn builder() -> EnvelopeBuilder {
        EnvelopeBuilder::with_username("org.fedoraproject", "dev", "alice")
    }

    #[test]
    fn topics_follow_fedmsg() {
        let b = builder();
        assert_eq!(
            b.full_topic("logger", "log"),
            "org.fedoraproject.dev.logger.log"
        );
        assert_eq!(
            b.full_topic("git", "repo.update"),
            "org.fedoraproject.dev.git.repo.update"
        );
        assert_eq!(
            b.full_topic("logger", ""),
            "org.fedoraproject.dev.logger.unspecified"
        );
        // fedmsg checks the prefix after joining the modname.
        assert_eq!(
            b.full_topic("org.fedoraproject.prod.bodhi", "update"),
            "org.fedoraproject.prod.bodhi.update"
        );
        assert_eq!(
            b.full_topic("m", "org.fedoraproject.dev.x"),
            "org.fedoraproject.dev.m.org.fedoraproject.dev.x"
        );
    }

    #[test]
    fn plugin_topics_keep_full_topics() {
        let b = builder();
        assert_eq!(
            b.plugin_topic("faulty", "org.fedoraproject.dev.x.reply"),
            "org.fedoraproject.dev.x.reply"
        );
        assert_eq!(
            b.plugin_topic("faulty", "x.reply"),
            "org.fedoraproject.dev.faulty.x.reply"
        );
        // A topic that merely shares the prefix's first characters is not full.
        assert_eq!(
            b.plugin_topic("faulty", "org.fedoraprojectx"),
            "org.fedoraproject.dev.faulty.org.fedoraprojectx"
        );
    }

    #[test]
    fn envelopes_have_every_field_and_count_from_one() {
        let mut b = builder();
        let first = b.build("t".into(), json!({"log": "hi"}));
        let second = b.build("t".into(), Value::Null);
        assert_eq!(first["i"], 1);
        assert_eq!(second["i"], 2);
        assert_eq!(first["msg"], json!({"log": "hi"}));
        assert_eq!(second["msg"], json!({}));
        assert_eq!(first["username"], "alice");
        assert_eq!(first["topic"], "t");
        assert!(first["timestamp"].is_u64() || first["timestamp"].is_i64());
        let id = first["msg_id"].as_str().expect("msg_id");
        let (year, uuid) = id.split_once('-').expect("year-uuid");
        assert_eq!(year.len(), 4, "{id}");
        assert_eq!(uuid.len(), 36, "{id}");
        assert_eq!(uuid, uuid.to_lowercase());
        assert_ne!(first["msg_id"], second["msg_id"]);
        let keys: Vec<&str> = first.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
    }

    #[test]
    fn falsy_messages_become_empty_objects() {
        for value in [json!(null), json!(false), json!(0), json!(""), json!([])] {
            assert!(is_falsy(&value), "{value}");
        }
        for value in [
            json!(true),
            json!(1),
            json!("x"),
            json!([0]),
            json!({"a": 0}),
        ] {
            assert!(!is_falsy(&value), "{value}");
        }
    }

    #[test]
    fn username_is_never_empty() {
        assert!(!username().is_empty());
        // SAFETY: getuid has no side effects.
        let uid = unsafe { libc::getuid() };
        // Whatever the container, uid 0 has a passwd entry.
        if uid == 0 {
            assert_eq!(passwd_name(0).as_deref(), Some("root"));
        }
    }
}
