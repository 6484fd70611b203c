//! Catch-up tests against a real local HTTP server standing in for
//! datagrepper.

use fedmsg_wire::shutdown::OwnedThread;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::*;

type Params = HashMap<String, String>;
type Handler = Box<dyn Fn(&Params, usize) -> (u16, String) + Send>;

#[test]
fn catch_up_can_run_on_its_own_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<CatchUp>();
    assert_send::<crate::status::StatusFile>();
}

/// A tiny_http server on 127.0.0.1 answering with `handler(params, n)`,
/// where `n` counts requests from 0; every request's parameters are kept.
struct FakeServer {
    url: String,
    requests: Arc<Mutex<Vec<Params>>>,
    _thread: OwnedThread,
}

impl FakeServer {
    fn start(handler: Handler) -> FakeServer {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let thread = OwnedThread::spawn("datagrepper", move |stop| {
            while !stop.is_triggered() {
                let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let params = parse_query(request.url());
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(params.clone());
                    log.len() - 1
                };
                let (status, body) = handler(&params, n);
                let response = tiny_http::Response::from_string(body).with_status_code(status);
                let _ = request.respond(response);
            }
        })
        .unwrap();
        FakeServer {
            url: format!("http://{addr}/raw"),
            requests,
            _thread: thread,
        }
    }

    fn requests(&self) -> Vec<Params> {
        self.requests.lock().unwrap().clone()
    }
}

fn parse_query(url: &str) -> Params {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn param(params: &Params, key: &str, default: i64) -> i64 {
    params
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A message as its publisher sent it.
fn original(n: u64, second: i64, topic: &str) -> Value {
    json!({
        "topic": topic,
        "msg": {"n": n, "f": 1.5},
        "msg_id": format!("2024-{n:08}"),
        "timestamp": second,
        "i": n,
        "username": "tester",
    })
}

/// The same message as datagrepper returns it.
fn as_served(original: &Value) -> Value {
    let mut m = original.clone();
    let ts = m["timestamp"].as_i64().unwrap() as f64;
    m["timestamp"] = json!(ts);
    m["source_name"] = json!("datanommer");
    m["source_version"] = json!("0.8.1");
    m["headers"] = json!({});
    m
}

fn page_json(slice: &[Value], pages: u64, total: u64) -> String {
    json!({
        "arguments": {},
        "count": slice.len(),
        "pages": pages,
        "total": total,
        "raw_messages": slice,
    })
    .to_string()
}

/// A datagrepper `/raw` over `messages`, honouring start/end/page/rows.
fn datagrepper(messages: Vec<Value>) -> impl Fn(&Params, usize) -> (u16, String) + Send {
    move |params, _| {
        let rows = param(params, "rows_per_page", 20).max(1) as usize;
        let page = param(params, "page", 1).max(1) as usize;
        let (start, end) = (param(params, "start", 0), param(params, "end", i64::MAX));
        let window: Vec<Value> = messages
            .iter()
            .filter(|m| {
                let ts = m["timestamp"].as_f64().unwrap() as i64;
                (start..=end).contains(&ts)
            })
            .map(as_served)
            .collect();
        let pages = window.len().div_ceil(rows) as u64;
        let from = ((page - 1) * rows).min(window.len());
        let to = (page * rows).min(window.len());
        (
            200,
            page_json(&window[from..to], pages, window.len() as u64),
        )
    }
}

fn fast_options() -> CatchUpOptions {
    CatchUpOptions {
        retry_initial: Duration::from_millis(10),
        retry_max_delay: Duration::from_millis(40),
        retry_budget: Duration::from_millis(400),
        request_timeout: Duration::from_secs(5),
        ..CatchUpOptions::default()
    }
}

fn new_catch_up(
    url: &str,
    position: &Position,
    end: i64,
    globs: &[&str],
    options: CatchUpOptions,
) -> CatchUp {
    let filter = TopicFilter::new(globs, false);
    CatchUp::new(url, position, end, filter, options, Stop::new()).unwrap()
}

/// 250 messages, 25 per second from 1000 to 1009, topics alternating.
fn corpus() -> Vec<Value> {
    (0..250)
        .map(|n| {
            let topic = if n % 2 == 0 { "org.a.x" } else { "org.b.y" };
            original(n, 1000 + (n / 25) as i64, topic)
        })
        .collect()
}

#[test]
fn delivers_the_window_in_order_skipping_finished_and_other_topics() {
    let messages = corpus();
    let server = FakeServer::start(Box::new(datagrepper(messages.clone())));
    // The plugin finished the first three org.a messages of second 1002.
    let finished: BTreeSet<String> = messages
        .iter()
        .filter(|m| m["timestamp"] == 1002 && m["topic"] == "org.a.x")
        .take(3)
        .map(|m| m["msg_id"].as_str().unwrap().to_owned())
        .collect();
    let mut position = Position::starting_at(1002);
    position.finished.insert(1002, finished.clone());
    let options = CatchUpOptions {
        rows_per_page: 50,
        ..fast_options()
    };
    let mut catch_up = new_catch_up(&server.url, &position, 1008, &["org.a.*"], options);
    assert_eq!((catch_up.start(), catch_up.end()), (1002, 1008));

    let first = catch_up.next().unwrap().unwrap();
    assert_eq!(
        server.requests().len(),
        1,
        "pages are fetched one at a time"
    );
    let mut got = vec![first];
    got.extend(catch_up.by_ref().map(Result::unwrap));
    assert!(catch_up.next().is_none());

    let expected: Vec<&Value> = messages
        .iter()
        .filter(|m| (1002..=1008).contains(&m["timestamp"].as_i64().unwrap()))
        .filter(|m| m["topic"] == "org.a.x")
        .filter(|m| !finished.contains(m["msg_id"].as_str().unwrap()))
        .collect();
    assert_eq!(got.len(), expected.len());
    for (delivery, original) in got.iter().zip(&expected) {
        assert_eq!(
            delivery.body,
            envelope::to_canonical(original),
            "fixed and re-encoded"
        );
        assert_eq!(delivery.msg_id.as_deref(), original["msg_id"].as_str());
        assert_eq!(delivery.topic, "org.a.x");
        assert_eq!(delivery.timestamp, original["timestamp"].as_f64());
        assert_eq!(delivery.source.name, SOURCE_NAME);
        assert_eq!(delivery.source.url, server.url);
        assert!(!delivery.validated && delivery.signer.is_none());
    }

    let requests = server.requests();
    // 175 messages in 1002..=1008, 50 per page: 4 pages.
    assert_eq!(requests.len(), 4);
    for (n, request) in requests.iter().enumerate() {
        assert_eq!(request["rows_per_page"], "50");
        assert_eq!(request["page"], (n + 1).to_string());
        assert_eq!(request["start"], "1002");
        assert_eq!(request["end"], "1008");
        assert_eq!(request["order"], "asc");
    }
    let stats = catch_up.stats();
    assert_eq!(stats.pages, 4);
    assert_eq!(stats.fetched, 175);
    assert_eq!(stats.delivered, expected.len() as u64);
    assert_eq!(stats.already_finished, 3);
    assert_eq!(stats.other_topic, 175 - 88);
}

#[test]
fn retries_transient_failures_with_backoff() {
    let messages = corpus();
    let serve = datagrepper(messages.clone());
    let server = FakeServer::start(Box::new(move |params, n| match n {
        0 => (503, "busy".into()),
        1 => (200, "<html>proxy error</html>".into()),
        3 => (429, "slow down".into()),
        _ => serve(params, n),
    }));
    let position = Position::starting_at(1000);
    let got: Vec<Delivery> = new_catch_up(&server.url, &position, 2000, &["*"], fast_options())
        .map(Result::unwrap)
        .collect();
    assert_eq!(got.len(), 250);
    // 3 pages of 100 plus 3 failed attempts.
    assert_eq!(server.requests().len(), 6);
}

#[test]
fn gives_up_after_the_retry_budget() {
    let server = FakeServer::start(Box::new(|_, _| (500, "down".into())));
    let started = Instant::now();
    let mut catch_up = new_catch_up(
        &server.url,
        &Position::starting_at(1),
        2,
        &["*"],
        fast_options(),
    );
    let error = catch_up.next().unwrap().unwrap_err();
    match &error {
        CatchUpError::RetriesExhausted {
            attempts,
            last_error,
            page,
            ..
        } => {
            assert!(*attempts >= 3, "{error}");
            assert_eq!(*page, 1);
            assert!(last_error.contains("500"), "{error}");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(catch_up.next().is_none(), "an error ends the catch-up");
}

#[test]
fn client_errors_are_not_retried() {
    let server = FakeServer::start(Box::new(|_, _| (404, "no such page".into())));
    let mut catch_up = new_catch_up(
        &server.url,
        &Position::starting_at(1),
        2,
        &["*"],
        fast_options(),
    );
    let error = catch_up.next().unwrap().unwrap_err();
    assert!(
        matches!(
            error,
            CatchUpError::HttpStatus {
                status: 404,
                page: 1,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn connection_refused_is_retried_then_reported() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/raw");
    let mut catch_up = new_catch_up(&url, &Position::starting_at(1), 2, &["*"], fast_options());
    let error = catch_up.next().unwrap().unwrap_err();
    assert!(
        matches!(error, CatchUpError::RetriesExhausted { .. }),
        "{error}"
    );
    assert!(error.to_string().contains(&url), "{error}");
}

#[test]
fn server_ignoring_page_is_detected() {
    let slice: Vec<Value> = (0..10).map(|n| as_served(&original(n, 5, "t"))).collect();
    let server = FakeServer::start(Box::new(move |_, _| (200, page_json(&slice, 5, 50))));
    let mut catch_up = new_catch_up(
        &server.url,
        &Position::starting_at(1),
        10,
        &["*"],
        fast_options(),
    );
    let got: Vec<_> = catch_up.by_ref().take(10).map(Result::unwrap).collect();
    assert_eq!(got.len(), 10);
    let error = catch_up.next().unwrap().unwrap_err();
    assert!(
        matches!(error, CatchUpError::Loop { page: 2, .. }),
        "{error}"
    );
    assert!(catch_up.next().is_none());
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn page_count_growth_is_bounded() {
    // Every page brings new messages and claims five more pages.
    let server = FakeServer::start(Box::new(|params, _| {
        let page = param(params, "page", 1) as u64;
        let slice: Vec<Value> = (0..2)
            .map(|k| as_served(&original(page * 10 + k, 5, "t")))
            .collect();
        (200, page_json(&slice, page + 5, 0))
    }));
    let got: Vec<_> = new_catch_up(
        &server.url,
        &Position::starting_at(1),
        10,
        &["*"],
        fast_options(),
    )
    .map(Result::unwrap)
    .collect();
    let limit = 6 + PAGE_GROWTH_SLACK;
    assert_eq!(server.requests().len() as u64, limit);
    assert_eq!(got.len() as u64, 2 * limit);
}

#[test]
fn max_pages_caps_a_huge_promise_and_empty_page_ends_early() {
    let pages_of = |empty_from: i64| {
        move |params: &Params, _| {
            let page = param(params, "page", 1);
            let slice: Vec<Value> = if page >= empty_from {
                Vec::new()
            } else {
                vec![as_served(&original(page as u64, 5, "t"))]
            };
            (200, page_json(&slice, 1_000_000_000, 0))
        }
    };
    let server = FakeServer::start(Box::new(pages_of(3)));
    let got: Vec<_> = new_catch_up(
        &server.url,
        &Position::starting_at(1),
        10,
        &["*"],
        fast_options(),
    )
    .map(Result::unwrap)
    .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(server.requests().len(), 3, "the empty page 3 ends it");

    let server = FakeServer::start(Box::new(pages_of(i64::MAX)));
    let options = CatchUpOptions {
        max_pages: 7,
        ..fast_options()
    };
    let got: Vec<_> = new_catch_up(&server.url, &Position::starting_at(1), 10, &["*"], options)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got.len(), 7);
    assert_eq!(server.requests().len(), 7);
}

#[test]
fn stop_flag_interrupts_a_backoff() {
    let server = FakeServer::start(Box::new(|_, _| (503, "busy".into())));
    let stop = Stop::new();
    let options = CatchUpOptions {
        retry_initial: Duration::from_secs(30),
        retry_budget: Duration::from_secs(600),
        ..fast_options()
    };
    let filter = TopicFilter::new(&["*"], false);
    let mut catch_up = CatchUp::new(
        &server.url,
        &Position::starting_at(1),
        2,
        filter,
        options,
        stop.clone(),
    )
    .unwrap();
    let raiser = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            stop.trigger();
        })
    };
    let started = Instant::now();
    let error = catch_up.next().unwrap().unwrap_err();
    assert!(matches!(error, CatchUpError::Stopped), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
    raiser.join().unwrap();
}

#[test]
fn malformed_oversized_and_non_json_pages() {
    let server = FakeServer::start(Box::new(|_, _| (200, r#"{"raw_messages": []}"#.into())));
    let error = new_catch_up(
        &server.url,
        &Position::starting_at(1),
        2,
        &["*"],
        fast_options(),
    )
    .next()
    .unwrap()
    .unwrap_err();
    assert!(
        error.to_string().contains("no integer \"pages\""),
        "{error}"
    );

    let server = FakeServer::start(Box::new(|_, _| {
        (200, r#"{"pages": 1, "raw_messages": 3}"#.into())
    }));
    let error = new_catch_up(
        &server.url,
        &Position::starting_at(1),
        2,
        &["*"],
        fast_options(),
    )
    .next()
    .unwrap()
    .unwrap_err();
    assert!(matches!(error, CatchUpError::Malformed { .. }), "{error}");

    let server = FakeServer::start(Box::new(|_, _| (200, "x".repeat(10_000))));
    let options = CatchUpOptions {
        max_page_bytes: 1000,
        ..fast_options()
    };
    let error = new_catch_up(&server.url, &Position::starting_at(1), 2, &["*"], options)
        .next()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, CatchUpError::TooLarge { limit: 1000, .. }),
        "{error}"
    );
    assert_eq!(server.requests().len(), 1);

    let server = FakeServer::start(Box::new(|_, _| (200, "{truncated".into())));
    let error = new_catch_up(
        &server.url,
        &Position::starting_at(1),
        2,
        &["*"],
        fast_options(),
    )
    .next()
    .unwrap()
    .unwrap_err();
    assert!(error.to_string().contains("not JSON"), "{error}");
}

#[test]
fn server_ignoring_the_window_is_filtered_locally() {
    let messages = corpus();
    let all: Vec<Value> = messages.iter().map(as_served).collect();
    let server = FakeServer::start(Box::new(move |_, _| (200, page_json(&all, 1, 250))));
    let mut catch_up = new_catch_up(
        &server.url,
        &Position::starting_at(1003),
        1004,
        &["*"],
        fast_options(),
    );
    let got: Vec<Delivery> = catch_up.by_ref().map(Result::unwrap).collect();
    assert_eq!(got.len(), 50);
    assert!(got
        .iter()
        .all(|d| (1003.0..1005.0).contains(&d.timestamp.unwrap())));
    assert_eq!(catch_up.stats().out_of_range, 200);
}

#[test]
fn repeats_across_a_shifted_page_boundary_are_yielded_once() {
    let messages: Vec<Value> = (0..6).map(|n| as_served(&original(n, 5, "t"))).collect();
    let server = FakeServer::start(Box::new(move |params, _| {
        // Page 2 starts with the last message of page 1, as happens when a
        // message is stored inside the window during the catch-up.
        let slice = match param(params, "page", 1) {
            1 => &messages[0..3],
            2 => &messages[2..5],
            _ => &messages[5..6],
        };
        (200, page_json(slice, 3, 6))
    }));
    let mut catch_up = new_catch_up(
        &server.url,
        &Position::starting_at(1),
        10,
        &["*"],
        fast_options(),
    );
    let ids: Vec<String> = catch_up
        .by_ref()
        .map(|d| d.unwrap().msg_id.unwrap())
        .collect();
    let expected: Vec<String> = (0..6).map(|n| format!("2024-{n:08}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(catch_up.stats().duplicates, 1);
}

#[test]
fn invalid_messages_are_skipped() {
    let server = FakeServer::start(Box::new(|_, _| {
        let slice = vec![
            json!("not an object"),
            json!({"msg_id": "no-topic", "timestamp": 5}),
            as_served(&original(1, 5, "t")),
        ];
        (200, page_json(&slice, 1, 3))
    }));
    let mut catch_up = new_catch_up(
        &server.url,
        &Position::starting_at(1),
        10,
        &["*"],
        fast_options(),
    );
    let got: Vec<Delivery> = catch_up.by_ref().map(Result::unwrap).collect();
    assert_eq!(got.len(), 1);
    assert_eq!(catch_up.stats().invalid, 2);
}

#[test]
fn a_position_without_time_cannot_start() {
    let filter = TopicFilter::new(&["*"], false);
    let stop = Stop::new();
    let result = CatchUp::new(
        "http://127.0.0.1:1/raw",
        &Position::default(),
        5,
        filter,
        CatchUpOptions::default(),
        stop,
    );
    assert!(matches!(result, Err(CatchUpError::NoStart)));
    let position = Position {
        timestamp: Some(99.5),
        ..Position::default()
    };
    let filter = TopicFilter::new(&["*"], false);
    let catch_up = CatchUp::new(
        "http://127.0.0.1:1/raw",
        &position,
        100,
        filter,
        CatchUpOptions::default(),
        Stop::new(),
    )
    .unwrap();
    assert_eq!(catch_up.start(), 99);
}

#[test]
fn a_position_in_the_future_starts_the_catch_up_at_the_end() {
    // A status file from before positions were bounded by the clock: a
    // message stamped 2100 moved `resume_from` there.
    let position = Position {
        resume_from: Some(4_102_444_800),
        ..Position::default()
    };
    let catch_up = CatchUp::new(
        "http://127.0.0.1:1/raw",
        &position,
        1_000,
        TopicFilter::new(&["*"], false),
        CatchUpOptions::default(),
        Stop::new(),
    )
    .unwrap();
    assert_eq!((catch_up.start(), catch_up.end()), (1_000, 1_000));
}
