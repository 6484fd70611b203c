//! From a bus message to the text of one IRC line (reference part 2 §1.4).
//!
//! - **terse + pretty**: `"{title} -- {subtitle} {link}"` with the title in
//!   the colour `irc_color_lookup` gives its first dotted part (else
//!   `irc_default_color`) and the link in teal, or an empty link (the line
//!   then ends with a space), as fedmsg built it. Colour codes are written
//!   with two digits (`\x0308`): they show the same, and a title starting
//!   with a digit cannot merge into the code (upstream issue 8).
//! - **terse**: fedmsg.meta's `repr` line as the hub renders it.
//! - **not terse**: the topic padded to 30, a space, and the envelope as
//!   compact JSON without `topic`, `signature` and `certificate` (base64
//!   noise that would fill the whole line). fedmsg printed a Python repr
//!   (or ANSI-coloured JSON, which IRC cannot show).
//!
//! Every piece of message content is [`clean`]ed before our own colour
//! codes go around it, so the only control characters in a line are ours.

use std::collections::HashMap;

use fedmsg_plugin_api::{HubContext, Message, MetaRendering};

use crate::proto::clean;

/// Where renderings come from: the hub's fedmsg.meta in the plugin, a
/// stand-in in tests.
pub trait MetaSource: Send + Sync {
    /// The rendering of one envelope, or why not.
    fn render(&self, topic: &str, body: &str) -> Result<MetaRendering, String>;
}

impl MetaSource for HubContext {
    fn render(&self, topic: &str, body: &str) -> Result<MetaRendering, String> {
        self.meta(&Message::new(topic, body))
            .map_err(|e| e.to_string())
    }
}

/// How one bot shows messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// One fedmsg.meta line instead of JSON.
    pub terse: bool,
    /// mIRC colours (off while the channel is `+c`).
    pub pretty: bool,
}

/// The colour table.
#[derive(Debug, Clone)]
pub struct Palette {
    /// `irc_color_lookup`.
    pub colors: HashMap<String, u8>,
    /// `irc_default_color`.
    pub default_color: u8,
}

/// mIRC teal, fedmsg's link colour.
const LINK_COLOR: u8 = 10;

/// fedmsg.meta's fallback title: the topic without its first three parts
/// (`org.fedoraproject.prod`).
pub fn fallback_title(topic: &str) -> String {
    topic.splitn(4, '.').nth(3).unwrap_or("").to_owned()
}

/// What to show when the hub cannot render: fedmsg.meta's own fallback.
pub fn fallback(topic: &str) -> MetaRendering {
    let mut meta = MetaRendering::default();
    meta.title = fallback_title(topic);
    meta.repr = format!("{} --  ", meta.title);
    meta
}

/// The terse line of `meta` (`repr`), cleaned.
pub fn terse(meta: &MetaRendering) -> String {
    clean(&meta.repr).into_owned()
}

/// The coloured terse line; `link` is the (possibly shortened) link.
pub fn pretty(meta: &MetaRendering, link: Option<&str>, palette: &Palette) -> String {
    let title = clean(&meta.title);
    let code = title
        .split('.')
        .next()
        .and_then(|first| palette.colors.get(first))
        .copied()
        .unwrap_or(palette.default_color);
    let subtitle = clean(&meta.subtitle);
    let mut line = format!("\x03{code:02}{title}\x03 -- {subtitle} ");
    if let Some(link) = link.filter(|l| !l.is_empty()) {
        line.push_str(&format!("\x03{LINK_COLOR:02}{}\x03", clean(link)));
    }
    line
}

/// The non-terse line: topic padded to 30, then compact JSON.
pub fn json(topic: &str, body: &str) -> String {
    let shown = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut map)) => {
            for noise in ["topic", "signature", "certificate"] {
                map.remove(noise);
            }
            serde_json::Value::Object(map).to_string()
        }
        // Not an object (the hub only delivers objects, but a test or a
        // future hub might not): show it as it is.
        _ => body.to_owned(),
    };
    clean(&format!("{topic:<30} {shown}")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn palette() -> Palette {
        Palette {
            colors: HashMap::from([("buildsys".to_owned(), 8), ("fas".to_owned(), 12)]),
            default_color: 15,
        }
    }

    fn meta(title: &str, subtitle: &str, link: Option<&str>) -> MetaRendering {
        let mut m = MetaRendering::default();
        m.title = title.into();
        m.subtitle = subtitle.into();
        m.link = link.map(Into::into);
        m.repr = format!("{title} -- {subtitle} {}", link.unwrap_or(""));
        m
    }

    #[test]
    fn pretty_as_upstream_with_padded_codes() {
        // Reference part 2 §1.4's example (TestKojiBuildTag).
        let m = meta(
            "buildsys.tag",
            "ralph's stage-4.1.1-3.fc18 tagged into f18-updates-testing-pending by bodhi",
            Some("http://koji.fedoraproject.org/koji/taginfo?tagID=216"),
        );
        assert_eq!(
            pretty(&m, m.link.as_deref(), &palette()),
            "\x0308buildsys.tag\x03 -- ralph's stage-4.1.1-3.fc18 tagged into \
             f18-updates-testing-pending by bodhi \
             \x0310http://koji.fedoraproject.org/koji/taginfo?tagID=216\x03"
        );
        // No link: the trailing space stays; unknown prefix: default colour.
        let m = meta("logger.log", "hello (ralph)", None);
        assert_eq!(
            pretty(&m, None, &palette()),
            "\x0315logger.log\x03 -- hello (ralph) "
        );
        assert_eq!(
            pretty(&m, Some(""), &palette()),
            "\x0315logger.log\x03 -- hello (ralph) "
        );
        // Content cannot inject colour codes or lines.
        let m = meta("fas.user\x03", "a\r\nQUIT\x02", Some("http://x\n"));
        assert_eq!(
            pretty(&m, m.link.as_deref(), &palette()),
            "\x0312fas.user\x03 -- a  QUIT \x0310http://x \x03"
        );
    }

    #[test]
    fn terse_and_fallback() {
        let m = meta("logger.log", "hi\nthere (u)", None);
        assert_eq!(terse(&m), "logger.log -- hi there (u) ");
        let f = fallback("org.fedoraproject.stg.unhandled_service.some_event");
        assert_eq!(f.repr, "unhandled_service.some_event --  ");
        assert_eq!(f.title, "unhandled_service.some_event");
        assert_eq!(fallback("a.b").repr, " --  ");
    }

    #[test]
    fn json_line() {
        let body = r#"{"topic":"org.x.dev.logger.log","msg":{"log":"a\r\nb"},"signature":"AAAA","certificate":"BBBB","i":1}"#;
        assert_eq!(
            json("org.x.dev.logger.log", body),
            format!(
                "{:<30} {}",
                "org.x.dev.logger.log", r#"{"i":1,"msg":{"log":"a\r\nb"}}"#
            )
        );
        assert_eq!(json("t", "[1,\n2]"), format!("{:<30} [1, 2]", "t"));
    }
}
