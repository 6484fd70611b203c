//! busmon's WebSocket client-frame parser (moksha's subscribe frames):
//! any text a browser or script sends must give a frame or a named error,
//! never a panic; an accepted pattern respects the length and control
//! character limits.
#![no_main]

use fedmsg_busmon::frame::{parse, ClientFrame, MAX_PATTERN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ClientFrame::Subscribe(pattern)) = parse(text) {
        assert!(!pattern.is_empty() && pattern.len() <= MAX_PATTERN);
        assert!(!pattern.chars().any(char::is_control));
    }
});
