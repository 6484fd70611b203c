//! Rendering speed: the full field set of fedmsg.meta for a mix of real
//! messages (`shared/vectors/upstream/meta-examples.json`: logger, git,
//! buildsys, FAS, bodhi, copr, pagure and the fallback), with the bundled
//! rule set. `cargo bench -p fedmsg-meta --bench render`.

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fedmsg_meta::{default_topic_prefix_re, MetaSet};
use serde_json::Value;

fn messages() -> Vec<Arc<Value>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/vectors/upstream/meta-examples.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set up shared/ beside the checkout)",
            path.display()
        )
    });
    let examples: Value = serde_json::from_str(&text).expect("JSON");
    examples["examples"]
        .as_array()
        .expect("examples")
        .iter()
        .map(|e| Arc::new(e["msg"].clone()))
        .collect()
}

fn render(c: &mut Criterion) {
    let set = MetaSet::bundled(&default_topic_prefix_re("org.fedoraproject")).expect("rules");
    let messages = messages();
    let mut group = c.benchmark_group("meta");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("render all fields, example mix", |b| {
        b.iter(|| {
            for message in &messages {
                std::hint::black_box(set.render_shared(message, 0.0));
            }
        })
    });
    group.bench_function("load the bundled rules", |b| {
        b.iter(|| MetaSet::bundled(&default_topic_prefix_re("org.fedoraproject")).expect("rules"))
    });
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
