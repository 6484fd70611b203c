//! fedmsg.meta on hostile messages: any JSON object renders with the
//! bundled processors without panicking, and the terse line is the fields
//! it is made of.
#![no_main]

use std::sync::OnceLock;

use fedmsg_meta::{default_topic_prefix_re, MetaSet};
use libfuzzer_sys::fuzz_target;

fn set() -> &'static MetaSet {
    static SET: OnceLock<MetaSet> = OnceLock::new();
    SET.get_or_init(|| {
        MetaSet::bundled(&default_topic_prefix_re("org.fedoraproject")).expect("bundled rules")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = serde_json::from_slice::<serde_json::Value>(data) {
        let r = set().render(&envelope, 0.0);
        let link = r.link.as_deref().unwrap_or_default();
        assert_eq!(r.repr(), format!("{} -- {} {link}", r.title, r.subtitle));
    }
});
