//! A replay query frame (the REP server's input): never panics, and an
//! error always renders as an `error: '...'` frame.
#![no_main]

use fedmsg_wire::replay::query::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = parse(data) {
        assert!(error.frame().starts_with("error: '"));
    }
});
