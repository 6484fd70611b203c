//! The IRC bot's line handling: whatever a server sends parses to a line
//! or a named error, never a panic; and whatever a message carries, the
//! line the bot builds from it is one line (no CR, LF or NUL before the
//! final CRLF) that fits IRC's 512 bytes once the server adds its prefix.
#![no_main]

use fedmsg_irc::proto::{clean, command_line, message_line, prefix_reserve, Line, MAX_LINE};
use libfuzzer_sys::fuzz_target;

fn one_line(line: &str) -> bool {
    match line.strip_suffix("\r\n") {
        Some(body) => !body.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0),
        None => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(line) = Line::parse(&text) {
        assert!(!line.command.is_empty());
        assert!(line.params.len() <= 15);
        let _ = line.source_nick();
    }
    let cleaned = clean(&text);
    assert!(!cleaned.chars().any(char::is_control));
    let (line, _) = message_line("NOTICE", "#fedora-fedmsg", &cleaned, "fedmsg-bot");
    assert!(one_line(&line), "{line:?}");
    assert!(line.len() + prefix_reserve("fedmsg-bot") <= MAX_LINE);
    // A PONG echoes a server's token: still one line.
    let pong = command_line("PONG", &[], Some(&text));
    assert!(one_line(&pong) && pong.len() <= MAX_LINE, "{pong:?}");
});
