//! `envelope::parse` then canonical encoding: never panics, the output is
//! ASCII, and re-parsing it gives the same canonical text (a fixed point).
#![no_main]

use fedmsg_wire::envelope::{parse, to_canonical};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = parse(data) {
        let canonical = to_canonical(&value);
        assert!(canonical.is_ascii());
        let again = parse(canonical.as_bytes()).expect("canonical text parses");
        assert_eq!(to_canonical(&again), canonical);
    }
});
