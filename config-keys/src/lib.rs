//! The config-key rules: how a dotted key such as
//! `fedmsg.consumers.ircbot.enabled` is found in the merged configuration,
//! what a plugin's own table is, and when an enable key counts as set.
//!
//! fedmsg's configuration is a flat Python dict whose keys contain dots;
//! ours is TOML, where `[fedmsg.consumers.ircbot] enabled = true` nests and
//! `"fedmsg.consumers.ircbot.enabled" = true` does not. Both spellings, and
//! mixtures, must mean the same thing to the hub (which decides whether a
//! plugin runs), to the tools and to the plugin itself (which reads its own
//! table), so the rules live here, once, and every side calls them.
//!
//! # Precedence
//!
//! A literal key wins (that is what fedmsg looked up). Otherwise the key is
//! split after each of its dots, **longest first part first**, and the rest
//! is looked up in that table the same way: the most specific spelling an
//! operator wrote wins over a more general table that happens to hold the
//! same path.
//!
//! # Truthy values
//!
//! An enable key is set when it is `true`, a number other than zero, or one
//! of the strings `true`, `yes`, `on`, `1` in any case (what `FEDMSG_*`
//! variables and `--set` produce). Everything else is unset: `false`, `0`,
//! any other string (Python would take `"no"` or `"false"` as true; an
//! operator who writes them means the opposite), tables, lists, and a
//! missing key.

#![warn(missing_docs)]

use serde_json::{Map, Value};

/// Looks up a dotted key: nested tables (`{"a": {"b": 1}}`), flat dotted
/// keys (`{"a.b": 1}`) and mixtures (`{"a": {"b.c": 1}}`), with the
/// precedence of the module docs. An empty key is the whole configuration.
pub fn lookup<'v>(root: &'v Value, dotted: &str) -> Option<&'v Value> {
    if dotted.is_empty() {
        return Some(root);
    }
    find_in(
        root.as_object()?,
        dotted,
        &|table, key| table.get(key),
        &|value| value.as_object(),
    )
}

/// The lookup of [`lookup`] over any tree whose tables are `T` and whose
/// values are `V` (the configuration loader keeps a tree that remembers
/// where each value came from): `get` gives a table's value under a literal
/// key, `table_of` the table a value holds, if it is one.
pub fn find_in<'t, T: ?Sized, V>(
    table: &'t T,
    dotted: &str,
    get: &impl Fn(&'t T, &str) -> Option<&'t V>,
    table_of: &impl Fn(&'t V) -> Option<&'t T>,
) -> Option<&'t V> {
    if let Some(value) = get(table, dotted) {
        return Some(value);
    }
    let mut split = dotted.len();
    while let Some(dot) = dotted[..split].rfind('.') {
        if let Some(found) = get(table, &dotted[..dot])
            .and_then(table_of)
            .and_then(|inner| find_in(inner, &dotted[dot + 1..], get, table_of))
        {
            return Some(found);
        }
        split = dot;
    }
    None
}

/// Whether the value counts as set (see the module docs).
pub fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "on" | "1"),
        _ => false,
    }
}

/// Whether the enable key (e.g. `tally.enabled`) is set in `config`.
pub fn is_enabled(config: &Value, config_key: &str) -> bool {
    lookup(config, config_key).is_some_and(is_truthy)
}

/// The dotted path of the table a config key lives in: `tally.enabled` →
/// `tally`, `enabled` → `` (the top level).
pub fn section_path_of(config_key: &str) -> &str {
    config_key
        .rsplit_once('.')
        .map_or("", |(section, _)| section)
}

/// A plugin's table: the object at `path`, merged with flat `path.key`
/// entries at the top level (a nested entry wins over a flat one of the
/// same name). A missing table is an empty one; an empty path is the whole
/// configuration.
pub fn section_of(global: &Value, path: &str) -> Value {
    if path.is_empty() {
        return global.clone();
    }
    let mut section = match lookup(global, path) {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    if let Some(top) = global.as_object() {
        let prefix = format!("{path}.");
        for (key, value) in top {
            if let Some(rest) = key.strip_prefix(&prefix) {
                section
                    .entry(rest.to_owned())
                    .or_insert_with(|| value.clone());
            }
        }
    }
    Value::Object(section)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn precedence_literal_then_longest_first_part() {
        let config = json!({
            "a.b.c": "literal",
            "a.b": {"c": "a.b table"},
            "a": {"b": {"c": "nested"}, "b.c": "a table, flat"},
        });
        assert_eq!(lookup(&config, "a.b.c"), Some(&json!("literal")));
        let without_literal = json!({
            "a.b": {"c": "a.b table"},
            "a": {"b": {"c": "nested"}, "b.c": "a table, flat"},
        });
        assert_eq!(lookup(&without_literal, "a.b.c"), Some(&json!("a.b table")));
        let only_a = json!({"a": {"b": {"c": "nested"}, "b.c": "a table, flat"}});
        assert_eq!(lookup(&only_a, "a.b.c"), Some(&json!("a table, flat")));
        let only_nested = json!({"a": {"b": {"c": "nested"}}});
        assert_eq!(lookup(&only_nested, "a.b.c"), Some(&json!("nested")));
        // A longer first part that does not lead anywhere falls back to a
        // shorter one.
        let dead_end = json!({"a.b": {"x": 1}, "a": {"b": {"c": 2}}});
        assert_eq!(lookup(&dead_end, "a.b.c"), Some(&json!(2)));
        assert_eq!(lookup(&dead_end, "a.b.d"), None);
        assert_eq!(lookup(&dead_end, ""), Some(&dead_end));
        assert_eq!(lookup(&json!([1]), "a"), None);
    }

    #[test]
    fn truthy_values() {
        for set in [
            json!(true),
            json!(1),
            json!(-2),
            json!(0.5),
            json!("true"),
            json!("TRUE"),
            json!("Yes"),
            json!("on"),
            json!("1"),
        ] {
            assert!(is_truthy(&set), "{set} counts as set");
        }
        for unset in [
            json!(false),
            json!(0),
            json!(0.0),
            json!("false"),
            json!("no"),
            json!("off"),
            json!("0"),
            json!(""),
            json!("enabled"),
            json!(null),
            json!([true]),
            json!({"enabled": true}),
        ] {
            assert!(!is_truthy(&unset), "{unset} counts as unset");
        }
    }

    #[test]
    fn enable_keys_in_every_spelling() {
        let config = json!({
            "tally": {"enabled": true},
            "echo.enabled": "yes",
            "fedmsg": {"consumers": {"ircbot": {"enabled": 1}}},
            "fedmsg.consumers.gateway": {"enabled": false},
            "datanommer": {"enabled": "no"},
        });
        assert!(is_enabled(&config, "tally.enabled"));
        assert!(is_enabled(&config, "echo.enabled"));
        assert!(is_enabled(&config, "fedmsg.consumers.ircbot.enabled"));
        assert!(!is_enabled(&config, "fedmsg.consumers.gateway.enabled"));
        assert!(!is_enabled(&config, "datanommer.enabled"));
        assert!(!is_enabled(&config, "missing.enabled"));
        assert!(!is_enabled(&config, "tally"), "a table is not a flag");
    }

    #[test]
    fn sections() {
        assert_eq!(section_path_of("a.b.enabled"), "a.b");
        assert_eq!(section_path_of("enabled"), "");
        let global = json!({
            "tally": {"enabled": true, "output": "nested"},
            "tally.output": "flat",
            "tally.topic": ["a.*"],
        });
        assert_eq!(
            section_of(&global, "tally"),
            json!({"enabled": true, "output": "nested", "topic": ["a.*"]})
        );
        assert_eq!(section_of(&global, "missing"), json!({}));
        assert_eq!(section_of(&global, ""), global);
    }
}
