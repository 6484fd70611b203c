//! Replay server tests with real zmq sockets on 127.0.0.1 and a real
//! SQLite file.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use super::*;
use crate::envelope;

const NAME: &str = "relay_outbound";

fn envelope_for(n: u64) -> Value {
    json!({
        "topic": "org.test.replay",
        "msg": {"n": n, "x": 0.5},
        "msg_id": format!("2024-{n:04}"),
        "timestamp": 1000 + n,
        "i": n,
        "username": "tester",
    })
}

fn store_with(dir: &Path, count: u64) -> (ReplayStore, Vec<String>) {
    let path = dir.join("replay.sqlite");
    let mut writer = ReplayStore::open(&path).unwrap();
    let bodies = (1..=count)
        .map(|n| writer.add(NAME, &mut envelope_for(n)).unwrap().body)
        .collect();
    (ReplayStore::open(&path).unwrap(), bodies)
}

struct Fixture {
    _dir: tempfile::TempDir,
    ctx: zmq::Context,
    server: ReplayServer,
    bodies: Vec<String>,
}

fn start(count: u64, limits: ReplayLimits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (store, bodies) = store_with(dir.path(), count);
    let ctx = zmq::Context::new();
    let server = ReplayServer::start(&ctx, "tcp://127.0.0.1:*", NAME, store, limits).unwrap();
    Fixture {
        _dir: dir,
        ctx,
        server,
        bodies,
    }
}

/// One REQ round trip on a fresh socket; `None` on timeout.
fn request(
    ctx: &zmq::Context,
    endpoint: &str,
    frames: &[&[u8]],
    timeout: Duration,
) -> Option<Vec<Vec<u8>>> {
    let socket = ctx.socket(zmq::REQ).unwrap();
    socket.set_linger(0).unwrap();
    socket.connect(endpoint).unwrap();
    socket.send_multipart(frames, 0).unwrap();
    let ready = socket
        .poll(zmq::POLLIN, timeout.as_millis() as i64)
        .unwrap();
    (ready > 0).then(|| socket.recv_multipart(0).unwrap())
}

fn ask(f: &Fixture, query: &str) -> Vec<String> {
    request(
        &f.ctx,
        f.server.endpoint(),
        &[query.as_bytes()],
        Duration::from_secs(5),
    )
    .expect("reply")
    .into_iter()
    .map(|frame| String::from_utf8(frame).unwrap())
    .collect()
}

fn seq_ids(frames: &[String]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| {
            envelope::parse(f.as_bytes()).unwrap()["seq_id"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn answers_every_query_kind_in_seq_order() {
    let f = start(20, ReplayLimits::default());
    assert!(f.server.endpoint().starts_with("tcp://127.0.0.1:"));
    assert_eq!(f.server.name(), NAME);
    assert_eq!(
        seq_ids(&ask(&f, r#"{"seq_id_range":[3,6]}"#)),
        vec![3, 4, 5, 6]
    );
    assert_eq!(seq_ids(&ask(&f, r#"{"seq_ids":[9,2]}"#)), vec![2, 9]);
    assert_eq!(seq_ids(&ask(&f, r#"{"seq_id":7}"#)), vec![7]);
    assert_eq!(
        seq_ids(&ask(&f, r#"{"msg_ids":["2024-0011","2024-0001"]}"#)),
        vec![1, 11]
    );
    assert_eq!(seq_ids(&ask(&f, r#"{"msg_id":"2024-0015"}"#)), vec![15]);
    assert_eq!(seq_ids(&ask(&f, r#"{"time":[1012,1013.5]}"#)), vec![12, 13]);
    assert_eq!(
        seq_ids(&ask(
            &f,
            r#"{"seq_id":20,"msg_id":"2024-0001","seq_id_range":[10,11]}"#
        )),
        vec![1, 10, 11, 20]
    );
    // Each frame is exactly the stored canonical JSON, seq_id included.
    let frames = ask(&f, r#"{"seq_id":4}"#);
    assert_eq!(frames, vec![f.bodies[3].clone()]);
    let value = envelope::parse(frames[0].as_bytes()).unwrap();
    assert_eq!(envelope::to_canonical(&value), frames[0]);
    f.server.stop();
}

#[test]
fn bad_queries_get_error_frames_and_the_server_keeps_going() {
    let f = start(3, ReplayLimits::default());
    let cases: [(&str, &str); 7] = [
        (r#"{"bogus":1}"#, r#"error: 'Unsupported field: "key"'"#),
        (
            r#"{"seq_id_range":[1,2,3]}"#,
            r#"error: 'Ill-format "seq_id_range" field'"#,
        ),
        (r#"{"time":[1]}"#, r#"error: 'Ill-format "time" field'"#),
        (
            r#"{"seq_id":"one"}"#,
            r#"error: 'Something went wrong when processing the field "seq_id"'"#,
        ),
        (
            r#"{"seq_id":99}"#,
            "error: 'There was no match for the given query'",
        ),
        ("{}", "error: 'There was no match for the given query'"),
        ("this is not json", "error: 'Query is not valid JSON'"),
    ];
    for (query, expected) in cases {
        assert_eq!(ask(&f, query), vec![expected.to_owned()], "{query}");
    }
    assert_eq!(
        ask(&f, "[1,2]"),
        vec!["error: 'Query is not a JSON object'".to_owned()]
    );
    let two = request(
        &f.ctx,
        f.server.endpoint(),
        &[b"{}", b"{}"],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(two, vec![b"error: 'Query must be a single frame'".to_vec()]);
    let binary = request(
        &f.ctx,
        f.server.endpoint(),
        &[b"\xff\x00\xfe"],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(binary, vec![b"error: 'Query is not valid JSON'".to_vec()]);
    assert_eq!(
        seq_ids(&ask(&f, r#"{"seq_id_range":[1,3]}"#)),
        vec![1, 2, 3]
    );
}

#[test]
fn huge_ranges_are_capped_to_the_lowest_seq_ids() {
    let limits = ReplayLimits {
        max_reply_messages: 5,
        ..ReplayLimits::default()
    };
    let f = start(12, limits);
    let frames = ask(&f, r#"{"seq_id_range":[0,99999999999999999999]}"#);
    assert_eq!(seq_ids(&frames), vec![1, 2, 3, 4, 5]);
    let frames = ask(&f, r#"{"seq_id_range":[6,12]}"#);
    assert_eq!(seq_ids(&frames), vec![6, 7, 8, 9, 10]);

    let limits = ReplayLimits {
        max_reply_bytes: 10,
        ..ReplayLimits::default()
    };
    let f = start(3, limits);
    assert_eq!(
        seq_ids(&ask(&f, r#"{"seq_id_range":[1,3]}"#)),
        vec![1],
        "at least one message"
    );
}

#[test]
fn oversized_requests_are_dropped_by_zmq_without_harm() {
    let limits = ReplayLimits {
        max_request_bytes: 256,
        ..ReplayLimits::default()
    };
    let f = start(2, limits);
    let big = format!("{{\"msg_id\":\"{}\"}}", "x".repeat(10_000));
    let reply = request(
        &f.ctx,
        f.server.endpoint(),
        &[big.as_bytes()],
        Duration::from_millis(300),
    );
    assert!(reply.is_none());
    assert_eq!(seq_ids(&ask(&f, r#"{"seq_id":2}"#)), vec![2]);
}

#[test]
fn clients_that_vanish_do_not_wedge_the_server() {
    let f = start(2, ReplayLimits::default());
    for _ in 0..5 {
        let socket = f.ctx.socket(zmq::REQ).unwrap();
        socket.set_linger(0).unwrap();
        socket.connect(f.server.endpoint()).unwrap();
        socket.send(r#"{"seq_id_range":[1,2]}"#, 0).unwrap();
        drop(socket);
    }
    assert_eq!(seq_ids(&ask(&f, r#"{"seq_id_range":[1,2]}"#)), vec![1, 2]);
}

#[test]
fn serves_messages_stored_after_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.sqlite");
    let mut writer = ReplayStore::open(&path).unwrap();
    let ctx = zmq::Context::new();
    let server = ReplayServer::start(
        &ctx,
        "tcp://127.0.0.1:*",
        NAME,
        ReplayStore::open(&path).unwrap(),
        ReplayLimits::default(),
    )
    .unwrap();
    for n in 1..=3 {
        writer.add(NAME, &mut envelope_for(n)).unwrap();
    }
    writer.add("another", &mut envelope_for(9)).unwrap();
    let reply = request(
        &ctx,
        server.endpoint(),
        &[br#"{"seq_id_range":[1,10]}"#],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(reply.len(), 3, "only this server's name");
}

#[test]
fn stop_is_prompt_and_the_port_is_released() {
    let f = start(1, ReplayLimits::default());
    let endpoint = f.server.endpoint().to_owned();
    let started = Instant::now();
    f.server.stop();
    assert!(started.elapsed() < Duration::from_millis(1500));
    // The same address can be bound again.
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_with(dir.path(), 1);
    let again =
        ReplayServer::start(&f.ctx, &endpoint, NAME, store, ReplayLimits::default()).unwrap();
    assert_eq!(again.endpoint(), endpoint);
}

#[test]
fn binding_a_taken_address_is_an_error() {
    let f = start(1, ReplayLimits::default());
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_with(dir.path(), 1);
    let taken = ReplayServer::start(
        &f.ctx,
        f.server.endpoint(),
        NAME,
        store,
        ReplayLimits::default(),
    );
    let error = taken.err().expect("address in use");
    assert!(error.to_string().contains(f.server.endpoint()), "{error}");
}

#[test]
fn bind_address_keeps_a_loopback_endpoint_on_loopback() {
    assert_eq!(bind_address("tcp://hub.example.org:4002"), "tcp://*:4002");
    assert_eq!(bind_address("tcp://127.0.0.1:4002"), "tcp://127.0.0.1:4002");
    assert_eq!(bind_address("tcp://[::1]:4002"), "tcp://[::1]:4002");
    assert_eq!(
        bind_address("ipc:///run/replay.sock"),
        "ipc:///run/replay.sock"
    );
}

#[test]
fn answer_reports_store_failures_as_an_internal_error() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_with(dir.path(), 1);
    // Break the table under the reader.
    rusqlite::Connection::open(dir.path().join("replay.sqlite"))
        .unwrap()
        .execute_batch("DROP TABLE replay_messages")
        .unwrap();
    let (frames, outcome) = answer(
        &store,
        NAME,
        &[br#"{"seq_id":1}"#.to_vec()],
        &ReplayLimits::default(),
    );
    assert_eq!(
        frames,
        vec![format!("error: '{INTERNAL_ERROR}'").into_bytes()]
    );
    assert_eq!(outcome, Outcome::Refused(INTERNAL_ERROR.to_owned()));
}
