//! Which keys are known, for the unknown-key warning and for deciding which
//! environment variables are configuration.

use super::tree::{Kind, Node, Table};

/// Top-level keys fedmsg (or moksha) defines that this hub reads nowhere.
/// They are accepted silently so that a configuration shared with Python
/// fedmsg tools does not produce warnings. (`irc_*` and `stomp_*` keys are
/// matched by prefix in [`is_known_top_level`].)
const FEDMSG_ONLY_KEYS: &[&str] = &[
    "amqp_broker",
    "collectd_interval",
    "config_filename",
    "explicit_hub_consumers",
    "fedmsg",
    "irc",
    "logging",
    "moksha",
    "print_config",
    "zmq_publish_endpoints",
    "zmq_subscribe_endpoints",
    "zmq_subscribe_method",
];

/// Prefixes of fedmsg key families this hub does not use.
const FEDMSG_ONLY_PREFIXES: &[&str] = &["irc_", "stomp_"];

/// Keys of `[moksha.monitoring]`, the only moksha table the hub reads.
const MONITORING_KEYS: &[&str] = &["socket", "socket_mode"];

/// True when `key` is a top-level key this hub or fedmsg knows. `typed` is
/// the list of fields of [`Config`](super::Config).
pub(crate) fn is_known_top_level(key: &str, typed: &[String]) -> bool {
    typed.iter().any(|t| t == key)
        || FEDMSG_ONLY_KEYS.contains(&key)
        || FEDMSG_ONLY_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The dotted paths of the unknown keys of `tree`, sorted. An unknown table
/// is reported once, by its name (`tally`), so that the caller can exempt
/// the tables claimed by plugins by comparing the first segment.
pub(crate) fn unknown_keys(tree: &Table, typed: &[String]) -> Vec<String> {
    let mut unknown = Vec::new();
    for (key, node) in tree {
        if !is_known_top_level(key, typed) {
            unknown.push(key.clone());
            continue;
        }
        match key.as_str() {
            // fedmsg keeps only its consumers' settings under `fedmsg.`
            // (`fedmsg.consumers.gateway.port`, `...ircbot.enabled`).
            "fedmsg" => {
                if let Some(table) = node.as_table() {
                    unknown.extend(
                        table
                            .keys()
                            .filter(|k| *k != "consumers")
                            .map(|k| format!("fedmsg.{k}")),
                    );
                }
            }
            // Other moksha keys are moksha's business; the monitoring table
            // is typed here, so a typo in it must be reported.
            "moksha" => {
                let monitoring = node
                    .as_table()
                    .and_then(|t| t.get("monitoring"))
                    .and_then(Node::as_table);
                if let Some(monitoring) = monitoring {
                    unknown.extend(
                        monitoring
                            .keys()
                            .filter(|k| !MONITORING_KEYS.contains(&k.as_str()))
                            .map(|k| format!("moksha.monitoring.{k}")),
                    );
                }
            }
            _ => {}
        }
    }
    unknown.sort();
    unknown
}

/// True when the top-level `key` of `tree` is a table (so that an
/// environment variable may add keys to it).
pub(crate) fn is_table(tree: &Table, key: &str) -> bool {
    matches!(tree.get(key).map(|n| &n.kind), Some(Kind::Table(_)))
}
