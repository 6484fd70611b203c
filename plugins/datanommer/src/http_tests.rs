//! The HTTP server under hostile load (issue 17 item 7): idle connections,
//! slow queries, the connection cap, the page byte cap. Loopback, port 0,
//! generous time bounds (a loaded 2-core machine).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fedmsg_plugin_api::serde_json::{json, Value};

use crate::http::{HttpLimits, HttpServer};
use crate::{DbUrl, Row, Store};

/// A database of `n` messages at timestamps 1000.. whose payload carries
/// `pad` bytes of text; ids `m0`, `m1`, ….
fn database(dir: &tempfile::TempDir, n: usize, pad: usize) -> DbUrl {
    let url = DbUrl::Sqlite(dir.path().join("dn.db"));
    let mut store = Store::open(&url, true).unwrap();
    let filler = "x".repeat(pad);
    let rows: Vec<Row> = (0..n)
        .map(|i| {
            let body = json!({"topic": "a.b.c.d", "msg_id": format!("m{i}"), "i": 1,
                              "timestamp": 1000 + i, "msg": {"pad": filler}})
            .to_string();
            Row::from_json("a.b.c.d", &body, 0).unwrap()
        })
        .collect();
    for batch in rows.chunks(1000) {
        store.insert_batch(batch).unwrap();
    }
    url
}

fn server(url: DbUrl, limits: HttpLimits) -> (HttpServer, SocketAddr) {
    let server = HttpServer::start("127.0.0.1:0", url, limits).unwrap();
    let addr = server.local_addr().unwrap();
    (server, addr)
}

fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = Vec::new();
    stream.read_to_end(&mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn idle_connections_take_no_threads_and_do_not_block_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = server(database(&dir, 10, 10), HttpLimits::default());
    // The runtime's threads exist once a request was served.
    assert_eq!(get(addr, "/id?id=m1").0, 200);
    let before = threads();
    // Half send nothing, half the start of a request (a slowloris).
    let idle: Vec<TcpStream> = (0..300)
        .map(|n| {
            let mut s = TcpStream::connect(addr).unwrap();
            if n % 2 == 1 {
                s.write_all(b"GET /raw HTTP/1.1\r\nHost: x\r\n").unwrap();
            }
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let (status, page) = get(addr, "/raw?start=0&end=2000&rows_per_page=5");
    assert_eq!((status, page["total"].as_u64()), (200, Some(10)), "{page}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let after = threads();
    // The old server had a thread per connection (300 more here).
    assert!(after < before + 16, "{before} threads, then {after}");
    drop(idle);
    drop(server);
}

#[test]
fn idle_and_slow_clients_are_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let limits = HttpLimits {
        timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    };
    let (server, addr) = server(database(&dir, 1, 10), limits);
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /raw HTTP/1.1\r\n").unwrap();
    for stream in [&mut silent, &mut slow] {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        // Closed by the server (EOF or reset), long before 30 s.
        let _ = stream.read_to_end(&mut rest);
        assert!(started.elapsed() < Duration::from_secs(15));
    }
    assert!(server.counters().snapshot().client_timeouts >= 2);
}

#[test]
fn a_slow_query_times_out_while_other_requests_are_served() {
    let dir = tempfile::tempdir().unwrap();
    // 5,000 messages of 4 kB; 100 `contains` that match nothing scan
    // ~2 GB of text: seconds, on any machine.
    let url = database(&dir, 5000, 4000);
    let limits = HttpLimits {
        query_timeout: Duration::from_millis(200),
        db_connections: 2,
        ..HttpLimits::default()
    };
    let (server, addr) = server(url, limits);
    let contains: String = (0..100)
        .map(|n| format!("&contains=nowhere-{n}-zzzzzzzzzzzz"))
        .collect();
    let slow_path = format!("/raw?start=0&end=100000{contains}");
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        let answer = get(addr, &slow_path);
        (answer, started.elapsed())
    });
    // Meanwhile the other connection serves.
    for _ in 0..5 {
        let (status, one) = get(addr, "/id?id=m42");
        assert_eq!((status, one["msg_id"].as_str()), (200, Some("m42")));
    }
    let ((status, body), took) = slow.join().unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "query took longer than 0.2 s");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(server.counters().snapshot().query_timeouts >= 1);
    // The connection is still good after its interruption.
    assert_eq!(get(addr, "/id?id=m1").0, 200);
}

#[test]
fn the_connection_cap_refuses_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let limits = HttpLimits {
        max_connections: 4,
        ..HttpLimits::default()
    };
    let (server, addr) = server(database(&dir, 3, 10), limits);
    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = get(addr, "/id?id=m1");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many connections"),
        "{body}"
    );
    assert!(server.counters().snapshot().connections_refused >= 1);
    drop(held);
    // Freed connections are served again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = get(addr, "/id?id=m1");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_page_over_the_byte_cap_is_refused_with_what_fits() {
    let dir = tempfile::tempdir().unwrap();
    let limits = HttpLimits {
        max_page_bytes: 100_000,
        ..HttpLimits::default()
    };
    // Ten messages of ~30 kB: three fit in 100 kB.
    let (server, addr) = server(database(&dir, 10, 30_000), limits);
    let (status, body) = get(addr, "/raw?start=0&end=2000&rows_per_page=10");
    assert_eq!(status, 413, "{}", body.to_string().len());
    assert_eq!(body["rows_that_fit"], 3, "{body}");
    assert_eq!(body["max_page_bytes"], 100_000);
    assert_eq!(server.counters().snapshot().pages_too_large, 1);
    let (status, page) = get(addr, "/raw?start=0&end=2000&rows_per_page=3&page=2");
    assert_eq!((status, page["count"].as_u64()), (200, Some(3)));
    assert_eq!(page["total"], 10);
    assert_eq!(page["pages"], 4);
}
