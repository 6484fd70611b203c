//! Gap tracking rules, and the REQ client against a real replay server
//! and hand-written misbehaving REP servers on 127.0.0.1.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::replay::server::{ReplayLimits, ReplayServer};
use crate::replay::store::ReplayStore;
use crate::shutdown::OwnedThread;

const NAME: &str = "relay_outbound";

#[test]
fn client_and_tracker_can_move_to_a_replay_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<ReplayClient>();
    assert_send::<GapTracker>();
    assert_send::<Replayed>();
}

#[test]
fn tracker_follows_the_rules() {
    let mut t = GapTracker::new();
    assert_eq!(t.last("a"), None);
    assert_eq!(
        t.observe("a", 5),
        Action::Deliver,
        "first message of a name"
    );
    assert_eq!(t.observe("a", 6), Action::Deliver);
    assert_eq!(t.observe("a", 6), Action::Duplicate);
    assert_eq!(t.observe("a", 3), Action::Duplicate);
    assert_eq!(t.observe("a", 10), Action::Gap { from: 7, to: 9 });
    assert_eq!(t.last("a"), Some(10));
    // Replayed messages arriving late over the live socket are duplicates.
    assert_eq!(t.observe("a", 8), Action::Duplicate);
    assert_eq!(t.observe("a", 11), Action::Deliver);
    // Names are independent.
    assert_eq!(t.observe("b", 1), Action::Deliver);
    assert_eq!(t.observe("b", 3), Action::Gap { from: 2, to: 2 });
    assert_eq!(t.last("a"), Some(11));
}

#[test]
fn tracker_seeds_and_publisher_restarts() {
    let mut t = GapTracker::new();
    t.seed("a", 100);
    assert_eq!(t.observe("a", 104), Action::Gap { from: 101, to: 103 });
    // A recreated store starts again from 1.
    assert_eq!(t.observe("a", 1), Action::Deliver);
    assert_eq!(t.last("a"), Some(1));
    assert_eq!(t.observe("a", 1), Action::Duplicate);
    assert_eq!(t.observe("a", 2), Action::Deliver);
    t.seed("b", RESTART_DISTANCE + 500);
    assert_eq!(
        t.observe("b", 400),
        Action::Deliver,
        "far below: started over"
    );
    t.seed("c", 500);
    assert_eq!(
        t.observe("c", 400),
        Action::Duplicate,
        "near: a late duplicate"
    );
}

#[test]
fn seq_id_is_read_from_the_top_level_only() {
    assert_eq!(
        seq_id_in_body(r#"{"topic":"t","seq_id":42,"msg":{}}"#),
        Some(42)
    );
    assert_eq!(seq_id_in_body(r#"{"msg":{"seq_id":42}}"#), None);
    assert_eq!(seq_id_in_body(r#"{"seq_id":1,"seq_id":2}"#), Some(2));
    assert_eq!(seq_id_in_body(r#"{"seq_id":"3"}"#), None);
    assert_eq!(seq_id_in_body(r#"{"seq_id":-3}"#), None);
    assert_eq!(seq_id_in_body(r#"{"seq_id":3.5}"#), None);
    assert_eq!(seq_id_in_body("[1]"), None);
    assert_eq!(seq_id_in_body("garbage"), None);
    assert_eq!(seq_id_of(&json!({"seq_id": 7})), Some(7));
    assert_eq!(seq_id_of(&json!([7])), None);
}

fn envelope_for(n: u64) -> Value {
    json!({
        "topic": "org.test.replay",
        "msg": {"n": n},
        "msg_id": format!("2024-{n:04}"),
        "timestamp": 1000 + n,
        "i": n,
        "username": "tester",
    })
}

struct Real {
    _dir: tempfile::TempDir,
    ctx: zmq::Context,
    server: ReplayServer,
    bodies: Vec<String>,
}

fn real_server(count: u64, limits: ReplayLimits) -> Real {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replay.sqlite");
    let mut writer = ReplayStore::open(&path).unwrap();
    let bodies = (1..=count)
        .map(|n| writer.add(NAME, &mut envelope_for(n)).unwrap().body)
        .collect();
    let ctx = zmq::Context::new();
    let store = ReplayStore::open(&path).unwrap();
    let server = ReplayServer::start(&ctx, "tcp://127.0.0.1:*", NAME, store, limits).unwrap();
    Real {
        _dir: dir,
        ctx,
        server,
        bodies,
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn fetches_a_gap_in_order_from_a_real_server() {
    let r = real_server(10, ReplayLimits::default());
    let mut client = ReplayClient::new(&r.ctx);
    let got = client
        .fetch_range(r.server.endpoint(), 3, 7, 5 * SECOND)
        .unwrap();
    let seqs: Vec<u64> = got.iter().map(|m| m.seq_id).collect();
    assert_eq!(seqs, vec![3, 4, 5, 6, 7]);
    for m in &got {
        assert_eq!(m.body, r.bodies[m.seq_id as usize - 1]);
        assert_eq!(m.topic(), Some("org.test.replay"));
        assert_eq!(m.envelope["seq_id"], m.seq_id);
    }
    // The socket is reused for the next gap.
    assert_eq!(client.sockets.len(), 1);
    assert_eq!(
        client
            .fetch_range(r.server.endpoint(), 9, 9, 5 * SECOND)
            .unwrap()
            .len(),
        1
    );
    assert!(client
        .fetch_range(r.server.endpoint(), 5, 4, SECOND)
        .unwrap()
        .is_empty());
}

#[test]
fn capped_replies_are_followed_up() {
    let limits = ReplayLimits {
        max_reply_messages: 4,
        ..ReplayLimits::default()
    };
    let r = real_server(30, limits);
    let mut client = ReplayClient::new(&r.ctx);
    let got = client
        .fetch_range(r.server.endpoint(), 2, 25, 5 * SECOND)
        .unwrap();
    assert_eq!(
        got.iter().map(|m| m.seq_id).collect::<Vec<_>>(),
        (2..=25).collect::<Vec<_>>()
    );

    let options = ClientOptions {
        max_messages: 6,
        ..ClientOptions::default()
    };
    let mut small = ReplayClient::with_options(&r.ctx, options);
    let got = small
        .fetch_range(r.server.endpoint(), 1, 30, 5 * SECOND)
        .unwrap();
    assert_eq!(got.len(), 6, "bounded on a huge gap");
}

#[test]
fn pruned_ranges_are_empty_not_errors() {
    let r = real_server(5, ReplayLimits::default());
    let mut client = ReplayClient::new(&r.ctx);
    assert!(client
        .fetch_range(r.server.endpoint(), 50, 60, 5 * SECOND)
        .unwrap()
        .is_empty());
    // Partly stored: what exists comes back.
    let got = client
        .fetch_range(r.server.endpoint(), 4, 60, 5 * SECOND)
        .unwrap();
    assert_eq!(got.len(), 2);
}

/// A REP server whose reply to request `n` is `script(n, request)`:
/// `(delay before replying, frames)`.
struct Scripted {
    endpoint: String,
    _thread: OwnedThread,
}

type Script = Box<dyn FnMut(usize, &[Vec<u8>]) -> (Duration, Vec<Vec<u8>>) + Send>;

impl Scripted {
    fn start(ctx: &zmq::Context, mut script: Script) -> Scripted {
        let socket = ctx.socket(zmq::REP).unwrap();
        socket.set_linger(0).unwrap();
        socket.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = socket.get_last_endpoint().unwrap().unwrap();
        let thread = OwnedThread::spawn("scripted-rep", move |stop| {
            let mut n = 0;
            while !stop.is_triggered() {
                if socket.poll(zmq::POLLIN, 50).unwrap_or(0) == 0 {
                    continue;
                }
                let request = socket.recv_multipart(0).unwrap();
                let (delay, frames) = script(n, &request);
                n += 1;
                stop.sleep(delay);
                let _ = socket.send_multipart(frames, 0);
            }
        })
        .unwrap();
        Scripted {
            endpoint,
            _thread: thread,
        }
    }
}

fn frame(seq: u64) -> Vec<u8> {
    let mut e = envelope_for(seq);
    e["seq_id"] = json!(seq);
    envelope::to_canonical(&e).into_bytes()
}

#[test]
fn a_dead_endpoint_times_out_on_time() {
    let ctx = zmq::Context::new();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let mut client = ReplayClient::new(&ctx);
    let started = Instant::now();
    let error = client
        .fetch_range(&endpoint, 1, 5, Duration::from_millis(200))
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(error, FetchError::Timeout { .. }), "{error}");
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
    assert!(client.sockets.is_empty(), "the wedged socket is dropped");
}

#[test]
fn a_slow_server_does_not_wedge_the_client() {
    let ctx = zmq::Context::new();
    let server = Scripted::start(
        &ctx,
        Box::new(|n, _| {
            let delay = if n == 0 {
                Duration::from_secs(2)
            } else {
                Duration::ZERO
            };
            (delay, vec![frame(3)])
        }),
    );
    let mut client = ReplayClient::new(&ctx);
    let started = Instant::now();
    let error = client
        .fetch_range(&server.endpoint, 3, 3, Duration::from_millis(150))
        .unwrap_err();
    assert!(matches!(error, FetchError::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_millis(1200));
    // A new socket: the late reply to the first request cannot be mistaken
    // for the answer to this one.
    let got = client
        .fetch_range(&server.endpoint, 3, 3, 5 * SECOND)
        .unwrap();
    assert_eq!(got.len(), 1);
}

#[test]
fn error_frames_are_errors() {
    let ctx = zmq::Context::new();
    let server = Scripted::start(
        &ctx,
        Box::new(|_, _| (Duration::ZERO, vec![b"error: 'boom'".to_vec()])),
    );
    let mut client = ReplayClient::new(&ctx);
    let error = client
        .fetch_range(&server.endpoint, 1, 2, 5 * SECOND)
        .unwrap_err();
    match error {
        FetchError::Remote { text, endpoint } => {
            assert_eq!(text, "boom");
            assert_eq!(endpoint, server.endpoint);
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn unusable_frames_are_skipped_and_an_unusable_reply_is_an_error() {
    let ctx = zmq::Context::new();
    let server = Scripted::start(
        &ctx,
        Box::new(|n, request| {
            assert_eq!(request.len(), 1);
            let frames = if n == 0 {
                // Out of order, out of range, not JSON, no seq_id: only
                // 5 and 6 are usable.
                vec![
                    frame(6),
                    frame(99),
                    b"not json".to_vec(),
                    br#"{"topic":"t"}"#.to_vec(),
                    frame(5),
                ]
            } else {
                vec![b"[1,2]".to_vec()]
            };
            (Duration::ZERO, frames)
        }),
    );
    let mut client = ReplayClient::new(&ctx);
    let got = client
        .fetch_range(&server.endpoint, 5, 6, 5 * SECOND)
        .unwrap();
    assert_eq!(got.iter().map(|m| m.seq_id).collect::<Vec<_>>(), vec![5, 6]);
    let error = client
        .fetch_range(&server.endpoint, 5, 6, 5 * SECOND)
        .unwrap_err();
    assert!(matches!(error, FetchError::BadReply { .. }), "{error}");
}

#[test]
fn a_partial_answer_is_kept_when_time_runs_out() {
    let ctx = zmq::Context::new();
    let server = Scripted::start(
        &ctx,
        Box::new(|n, _| {
            if n == 0 {
                (Duration::ZERO, vec![frame(1), frame(2)])
            } else {
                (Duration::from_secs(5), vec![frame(3)])
            }
        }),
    );
    let mut client = ReplayClient::new(&ctx);
    let started = Instant::now();
    let got = client
        .fetch_range(&server.endpoint, 1, 5, Duration::from_millis(300))
        .unwrap();
    assert_eq!(got.iter().map(|m| m.seq_id).collect::<Vec<_>>(), vec![1, 2]);
    assert!(started.elapsed() < Duration::from_millis(1500));
    // The server is still sleeping on the second request; dropping it ends that.
    drop(server);
}

#[test]
fn requests_are_the_documented_range_queries() {
    let ctx = zmq::Context::new();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let server = Scripted::start(
        &ctx,
        Box::new(move |n, request| {
            log.lock()
                .unwrap()
                .push(String::from_utf8(request[0].clone()).unwrap());
            // Capped replies: two messages at a time.
            let first = 10 + 2 * n as u64;
            (Duration::ZERO, vec![frame(first), frame(first + 1)])
        }),
    );
    let mut client = ReplayClient::new(&ctx);
    let got = client
        .fetch_range(&server.endpoint, 10, 14, 5 * SECOND)
        .unwrap();
    assert_eq!(got.len(), 5, "14 arrives with 15, which is out of range");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            r#"{"seq_id_range":[10,14]}"#,
            r#"{"seq_id_range":[12,14]}"#,
            r#"{"seq_id_range":[14,14]}"#
        ]
    );
}
