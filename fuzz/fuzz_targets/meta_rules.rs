//! fedmsg.meta rule files: any text either loads as a processor or is an
//! error naming a line within the file; never a panic.
#![no_main]

use fedmsg_meta::Processor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(error) = Processor::parse("fuzz.toml", text, r"org\.example\.[a-z]+") {
            assert!(error.line <= text.lines().count() + 1, "{error}");
        }
    }
});
