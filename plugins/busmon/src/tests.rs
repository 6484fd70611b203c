//! The server on a loopback port, spoken to with plain HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::*;

struct Stub;
impl Render for Stub {
    fn render(&self, topic: &str, _body: &str) -> Option<MetaLite> {
        Some(MetaLite {
            repr: format!("terse {topic}"),
            ..MetaLite::default()
        })
    }
}

fn busmon(max_clients: usize) -> Busmon {
    let settings = Settings {
        http_listen: "127.0.0.1:0".parse().unwrap(),
        max_clients,
        client_buffer: 4,
        max_subscriptions: 4,
        client2server: false,
        raw_url: None,
    };
    Busmon::start(settings, Arc::new(Stub), None, None).unwrap()
}

fn get(b: &Busmon, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(b.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_lowercase(), body.to_owned())
}

#[test]
fn page_heartbeat_and_headers() {
    let b = busmon(4);
    let (head, body) = get(&b, "/_heartbeat");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "I am ok.  Thanks for asking.");
    let (head, body) = get(&b, "/");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(body.contains("/static/busmon.js") && !body.contains("<script>"));
    let (head, body) = get(&b, "/static/busmon.js");
    assert!(head.contains("text/javascript"), "{head}");
    assert!(!body.contains("innerHTML"), "the page must not insert HTML");
    let (head, _) = get(&b, "/nothing");
    assert!(head.starts_with("http/1.1 404"), "{head}");
}

/// Reads SSE lines until `pred` holds on the text so far.
fn read_until(reader: &mut BufReader<TcpStream>, text: &mut String, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pred(text) {
        assert!(Instant::now() < deadline, "timed out; got:\n{text}");
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => panic!("stream ended; got:\n{text}"),
            Ok(_) => text.push_str(&line),
            Err(e) => panic!("{e}; got:\n{text}"),
        }
    }
}

#[test]
fn sse_filters_bounds_and_refuses_past_max_clients() {
    let b = busmon(1);
    let mut s = TcpStream::connect(b.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /stream?topic=a.*&view=page HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut text = String::new();
    read_until(&mut reader, &mut text, |t| t.contains(": busmon"));
    assert!(text.to_lowercase().contains("text/event-stream"));

    let (head, body) = get(&b, "/stream");
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(body.contains("max_clients = 1"), "{body}");

    // Offered faster than the server may write them: whatever did not fit
    // the client's 4 places is counted and reported, none is both.
    b.offer(&Message::new("b.x", r#"{"n":0}"#));
    for n in 1..=10 {
        let body = format!("{{\"n\":{n},\n\"x\":\"<b>\"}}");
        b.offer(&Message::new("a.x", &body).with_msg_id("m"));
    }
    // A sentinel may be skipped too while the queue is full: offered
    // until one arrives.
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text.contains("\"n\":11") {
        assert!(Instant::now() < deadline, "no sentinel; got:\n{text}");
        b.offer(&Message::new("a.x", r#"{"n":11}"#));
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            text.push_str(&line);
            line.clear();
        }
    }
    assert!(!text.contains("\"n\":0"), "{text}");
    assert!(text.contains("\"repr\":\"terse a.x\""), "{text}");
    assert!(text.contains("id: m\n"), "{text}");
    let received = (1..=10)
        .filter(|n| text.contains(&format!("\"n\":{n},")))
        .count() as u64;
    let skipped: u64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: {\"skipped\":"))
        .filter_map(|l| l.trim_end_matches('}').parse::<u64>().ok())
        .sum();
    assert!(received + skipped >= 10, "{text}");
    assert_eq!(b.shared.registry.skipped.load(Ordering::Relaxed), skipped);
    drop(reader);
    drop(s);
    // The place is free again once the server sees the client gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b.shared.registry.is_empty() {
        b.offer(&Message::new("a.x", "{}"));
        assert!(Instant::now() < deadline, "client never unregistered");
        std::thread::sleep(Duration::from_millis(50));
    }
}
