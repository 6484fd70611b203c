//! Frames from a SUB socket → `ingest::classify`: never panics; what it
//! accepts has a topic equal to the envelope's and a body that is JSON.
#![no_main]

use std::sync::Arc;

use fedmsg_wire::delivery::Source;
use fedmsg_wire::ingest::{classify, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the frame count; the rest is split at 0xFF bytes.
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let mut frames: Vec<Vec<u8>> = rest.split(|b| *b == 0xff).map(<[u8]>::to_vec).collect();
    frames.truncate(usize::from(count % 4));
    let source = Arc::new(Source {
        name: "fuzz".into(),
        url: "tcp://127.0.0.1:1".into(),
    });
    if let Ok(delivery) = classify(frames, &source, &Limits::default()) {
        let value: serde_json::Value =
            serde_json::from_str(&delivery.body).expect("accepted bodies are JSON");
        assert_eq!(value["topic"].as_str(), Some(delivery.topic.as_str()));
    }
});
