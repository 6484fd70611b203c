//! What `consume` costs the hub per message (the issue's target: at most
//! 20 µs), with the shipped configuration's filters (`lub-dub` body
//! filter) on the 25 signed production messages of
//! `shared/vectors/upstream/sample_datanommer_response.json` (~3 KiB
//! each): filters, one copy of the message, the push into each bot's
//! bounded queue (full after the first 1,000, so every push also drops
//! the oldest, the worst case). The bots point at a closed port, so
//! nothing is sent or rendered (that happens on the send threads, never in
//! `consume`).
//!
//! ```text
//! cargo bench -p fedmsg-irc --bench consume
//! ```

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use fedmsg_irc::render::MetaSource;
use fedmsg_irc::settings::Settings;
use fedmsg_irc::IrcBot;
use fedmsg_plugin_api::{ConsumerPlugin, Message, MetaRendering, PluginConfig};
use serde_json::{json, Value};

/// Never asked: nothing is sent.
struct NoMeta;

impl MetaSource for NoMeta {
    fn render(&self, _topic: &str, _body: &str) -> Result<MetaRendering, String> {
        Err("not in this benchmark".into())
    }
}

fn messages() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/vectors/upstream/sample_datanommer_response.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set up shared/ beside the checkout)",
            path.display()
        )
    });
    let page: Value = serde_json::from_str(&text).expect("JSON");
    page["raw_messages"]
        .as_array()
        .expect("raw_messages")
        .iter()
        .map(|m| {
            (
                m["topic"]
                    .as_str()
                    .unwrap_or("org.fedoraproject.prod.x")
                    .to_owned(),
                m.to_string(),
            )
        })
        .collect()
}

fn plugin(bots: usize) -> IrcBot {
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let bot = json!({"network": "127.0.0.1", "port": port, "channel": "fedora-fedmsg",
                     "nickname": "fedmsg-bench", "make_pretty": true, "make_terse": true,
                     "make_short": true, "line_rate": 0.9,
                     "filters": {"topic": [], "body": ["lub-dub"]}});
    let config = PluginConfig::new(
        json!({"irc": vec![bot; bots], "irc_method": "notice"}),
        "fedmsg.consumers.ircbot",
    );
    let settings = Settings::from_config(&config).expect("settings");
    IrcBot::start(settings, Arc::new(NoMeta)).expect("plugin")
}

fn consume(c: &mut Criterion) {
    let messages = messages();
    let mut group = c.benchmark_group("irc consume");
    for bots in [1, 3] {
        let mut plugin = plugin(bots);
        let mut next = messages.iter().cycle();
        group.bench_function(format!("one message, {bots} bot(s)"), |b| {
            b.iter(|| {
                let (topic, body) = next.next().expect("cycle");
                plugin.consume(&Message::new(topic, body)).expect("consume");
            })
        });
        let (_, stats) = plugin.stats();
        println!(
            "{bots} bot(s): {} queued, {} dropped oldest (queue bound), {} filtered",
            stats[0].queued, stats[0].skipped, stats[0].filtered_body
        );
        plugin.stop();
    }
    group.finish();
}

criterion_group!(benches, consume);
criterion_main!(benches);
