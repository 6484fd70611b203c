//! The hub's status files (`status_directory/<plugin>.json`): a file left
//! damaged by a disk, an editor or an older version must give a position or
//! a named error, never a panic, and a position must read back as written.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fedmsg_hub::fuzzing::status_file(data);
});
