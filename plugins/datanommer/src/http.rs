//! A datagrepper-compatible HTTP endpoint over the store: `GET /raw` (the
//! query the hub's catch-up and datagrepper clients use) and `GET /id?id=`.
//!
//! Served by a few threads of its own (`tiny_http`), each with its own
//! database connection, opened on first use and reopened after a failure.
//!
//! `/raw` parameters (datagrepper's): `start`, `end`, `delta` (float epoch
//! seconds; inclusive range), `topic`, `category`, `user`, `package`,
//! `contains` and their `not_` forms (repeatable; OR within one, AND
//! across), `page` (from 1), `rows_per_page` (1..=100, default 25),
//! `order` (`asc` | `desc`, default `desc`). Time range: `start` and `end`
//! win over `delta`; `start`+`delta` ends at `start + delta`; `end`+`delta`
//! starts at `end - delta`; `start` alone ends now; `delta` alone ends now;
//! nothing (or `end` alone) covers the [`DEFAULT_DELTA`] seconds before the
//! end. `meta` and `grouped=true` are not supported (400). Unknown
//! parameters are ignored, as datagrepper does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fedmsg_plugin_api::tracing;
use serde_json::{json, Value};
use tiny_http::{Header, Method, Response, Server};

use crate::store::{float, DbUrl, Order, Query, Store, StoreError};
use crate::time;

/// Seconds covered when neither `start` nor `delta` is given.
pub const DEFAULT_DELTA: f64 = 600.0;
/// Largest `rows_per_page`.
pub const MAX_ROWS_PER_PAGE: u64 = 100;
/// `rows_per_page` when not given.
pub const DEFAULT_ROWS_PER_PAGE: u64 = 25;
/// Most values of one list parameter (`topic`, …) in one request.
pub const MAX_LIST: usize = 100;

/// A parsed `/raw` request.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRequest {
    /// Range start, epoch seconds.
    pub start: f64,
    /// Range end, epoch seconds.
    pub end: f64,
    /// 1-based page.
    pub page: u64,
    /// Messages per page.
    pub rows_per_page: u64,
    /// The selection (times, filters, order), without paging.
    pub query: Query,
}

impl RawRequest {
    /// Parses a query string (without `?`), at time `now` (µs).
    pub fn parse(query_string: &str, now: i64) -> Result<RawRequest, String> {
        let mut start = None;
        let mut end = None;
        let mut delta = None;
        let mut page = 1;
        let mut rows_per_page = DEFAULT_ROWS_PER_PAGE;
        let mut query = Query {
            order: Order::Desc,
            ..Query::default()
        };
        for (key, value) in form_urlencoded::parse(query_string.as_bytes()) {
            let value = value.into_owned();
            let list = match key.as_ref() {
                "start" => {
                    start = Some(seconds(&key, &value)?);
                    continue;
                }
                "end" => {
                    end = Some(seconds(&key, &value)?);
                    continue;
                }
                "delta" => {
                    let d = seconds(&key, &value)?;
                    if d < 0.0 {
                        return Err(format!("delta must not be negative, got {value}"));
                    }
                    delta = Some(d);
                    continue;
                }
                "page" => {
                    page = integer(&key, &value)?;
                    if page < 1 {
                        return Err("page must be at least 1".into());
                    }
                    continue;
                }
                "rows_per_page" => {
                    rows_per_page = integer(&key, &value)?;
                    if !(1..=MAX_ROWS_PER_PAGE).contains(&rows_per_page) {
                        return Err(format!(
                            "rows_per_page must be between 1 and {MAX_ROWS_PER_PAGE}, got {value}"
                        ));
                    }
                    continue;
                }
                "order" => {
                    query.order = match value.as_str() {
                        "asc" => Order::Asc,
                        "desc" => Order::Desc,
                        _ => return Err(format!("order must be asc or desc, got {value:?}")),
                    };
                    continue;
                }
                "meta" => return Err("meta is not supported by this server".into()),
                "grouped" => {
                    if matches!(value.to_ascii_lowercase().as_str(), "true" | "1" | "yes") {
                        return Err("grouped is not supported by this server".into());
                    }
                    continue;
                }
                "topic" => &mut query.topics,
                "not_topic" => &mut query.not_topics,
                "category" => &mut query.categories,
                "not_category" => &mut query.not_categories,
                "user" => &mut query.users,
                "not_user" => &mut query.not_users,
                "package" => &mut query.packages,
                "not_package" => &mut query.not_packages,
                "contains" => &mut query.contains,
                _ => continue,
            };
            if list.len() >= MAX_LIST {
                return Err(format!("at most {MAX_LIST} values of {key}"));
            }
            list.push(value);
        }
        let now = time::to_epoch_secs(now);
        let (start, end) = match (start, end, delta) {
            (Some(s), Some(e), _) => (s, e),
            (Some(s), None, Some(d)) => (s, s + d),
            (Some(s), None, None) => (s, now),
            (None, Some(e), d) => (e - d.unwrap_or(DEFAULT_DELTA), e),
            (None, None, d) => (now - d.unwrap_or(DEFAULT_DELTA), now),
        };
        if start > end {
            return Err(format!("start ({start}) is after end ({end})"));
        }
        // The offset goes to SQL as a signed 64-bit integer: a page past
        // that is a bad request, not a database failure.
        let offset_fits = (page - 1)
            .checked_mul(rows_per_page)
            .is_some_and(|offset| i64::try_from(offset).is_ok());
        if !offset_fits {
            return Err(format!("page {page} is too large"));
        }
        query.start = Some(time::from_epoch_secs(start).ok_or("start is out of range")?);
        query.end = Some(time::from_epoch_secs(end).ok_or("end is out of range")?);
        Ok(RawRequest {
            start,
            end,
            page,
            rows_per_page,
            query,
        })
    }

    /// The `arguments` object of the response (datagrepper's keys).
    pub fn arguments(&self) -> Value {
        let q = &self.query;
        json!({
            "start": float(self.start),
            "end": float(self.end),
            "delta": float(self.end - self.start),
            "page": self.page,
            "rows_per_page": self.rows_per_page,
            "order": match q.order { Order::Asc => "asc", Order::Desc => "desc" },
            "topics": q.topics,
            "not_topics": q.not_topics,
            "categories": q.categories,
            "not_categories": q.not_categories,
            "users": q.users,
            "not_users": q.not_users,
            "packages": q.packages,
            "not_packages": q.not_packages,
            "contains": q.contains,
            "grouped": false,
            "meta": [],
        })
    }

    /// Runs the request: `{raw_messages, count, pages, total, arguments}`.
    pub fn run(&self, store: &mut Store) -> Result<Value, StoreError> {
        let total = store.count(&self.query)?;
        let mut page_query = self.query.clone();
        page_query.limit = Some(self.rows_per_page);
        page_query.offset = (self.page - 1).saturating_mul(self.rows_per_page);
        let messages = store.each_message(&page_query, &mut |m| m.to_datagrepper().map(Some))?;
        Ok(json!({
            "arguments": self.arguments(),
            "count": messages.len(),
            "pages": total.div_ceil(self.rows_per_page),
            "total": total,
            "raw_messages": messages,
        }))
    }
}

fn seconds(key: &str, value: &str) -> Result<f64, String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{key} must be a number of seconds, got {value:?}"))
}

fn integer(key: &str, value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{key} must be a non-negative integer, got {value:?}"))
}

/// Answers one request: (HTTP status, JSON body). `store` is the calling
/// thread's connection, opened here when needed and dropped after an
/// error that may have broken it.
pub fn respond(method: &Method, url: &str, store: &mut Option<Store>, db: &DbUrl) -> (u16, Value) {
    if !matches!(method, Method::Get | Method::Head) {
        return (405, json!({"error": "only GET is supported"}));
    }
    let (path, query_string) = url.split_once('?').unwrap_or((url, ""));
    // Repeated and trailing slashes do not matter, as in datagrepper (Flask
    // merges slashes): its client library `datanozzle` asks for `//raw`.
    let path: String = path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .flat_map(|segment| ["/", segment])
        .collect();
    let result = match path.as_str() {
        "/raw" => match RawRequest::parse(query_string, time::now_micros()) {
            Ok(request) => with_store(store, db, |s| request.run(s)),
            Err(e) => return (400, json!({"error": e})),
        },
        "/id" => {
            let id = form_urlencoded::parse(query_string.as_bytes())
                .find(|(k, _)| k == "id")
                .map(|(_, v)| v.into_owned());
            let Some(id) = id else {
                return (400, json!({"error": "id is required"}));
            };
            let query = Query {
                msg_ids: vec![id],
                limit: Some(1),
                ..Query::default()
            };
            match with_store(store, db, |s| s.messages(&query)) {
                Ok(found) => match found.first().map(|m| m.to_datagrepper()) {
                    Some(Ok(message)) => Ok(message),
                    Some(Err(e)) => Err(e),
                    None => return (404, json!({"error": "no message with this id"})),
                },
                Err(e) => Err(e),
            }
        }
        _ => return (404, json!({"error": "not found; try /raw"})),
    };
    match result {
        Ok(body) => (200, body),
        Err(e @ StoreError::Corrupt { .. }) => {
            tracing::error!(error = %e, "datanommer: cannot serve a stored message");
            (500, json!({"error": e.to_string()}))
        }
        Err(e) => {
            tracing::warn!(error = %e, url = %db.redacted(), "datanommer: query failed");
            (503, json!({"error": format!("database unavailable: {e}")}))
        }
    }
}

fn with_store<T>(
    store: &mut Option<Store>,
    db: &DbUrl,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let connection = match store.take() {
        Some(s) => s,
        None => Store::open(db, false)?,
    };
    let connection = store.insert(connection);
    let result = f(connection);
    if result.as_ref().is_err_and(|e| !e.is_row_error()) {
        // Possibly a broken connection: reconnect on the next request.
        *store = None;
    }
    result
}

/// The running HTTP server.
pub struct HttpServer {
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    addr: Option<SocketAddr>,
}

/// How often the serving threads look at the stop flag.
const POLL: Duration = Duration::from_millis(200);

impl HttpServer {
    /// Listens on `listen` (e.g. `127.0.0.1:5000`) and serves with
    /// `threads` threads.
    pub fn start(listen: &str, db: DbUrl, threads: usize) -> Result<HttpServer, String> {
        let server = Server::http(listen)
            .map(Arc::new)
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = server.server_addr().to_ip();
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for n in 0..threads.max(1) {
            let (server, flag, db) = (server.clone(), stop.clone(), db.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("datanommer-http-{n}"))
                .spawn(move || serve(&server, &flag, &db));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    return Err(format!("cannot start an HTTP thread: {e}"));
                }
            }
        }
        tracing::info!(listen = %listen, threads = handles.len(), "datanommer serving /raw");
        Ok(HttpServer {
            server,
            stop,
            threads: handles,
            addr,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Stops serving; waits for requests in progress.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for _ in &self.threads {
            self.server.unblock();
        }
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(server: &Server, stop: &AtomicBool, db: &DbUrl) {
    let mut store: Option<Store> = None;
    let json_type = Header::from_bytes("Content-Type", "application/json").ok();
    while !stop.load(Ordering::SeqCst) {
        let request = match server.recv_timeout(POLL) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "datanommer: HTTP accept failed");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let started = Instant::now();
        let (status, body) = respond(request.method(), request.url(), &mut store, db);
        tracing::debug!(
            method = %request.method(),
            url = %request.url(),
            status,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "datanommer HTTP request"
        );
        let mut response = Response::from_string(body.to_string()).with_status_code(status);
        if let Some(header) = &json_type {
            response.add_header(header.clone());
        }
        if let Err(e) = request.respond(response) {
            tracing::debug!(error = %e, "datanommer: client went away before the response");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000 * time::MICROS;

    fn parse(q: &str) -> Result<RawRequest, String> {
        RawRequest::parse(q, NOW)
    }

    #[test]
    fn catch_up_request() {
        let r =
            parse("rows_per_page=100&page=2&start=1504643021&end=1504643081.5&order=asc").unwrap();
        assert_eq!(
            (r.start, r.end, r.page, r.rows_per_page),
            (1504643021.0, 1504643081.5, 2, 100)
        );
        assert_eq!(r.query.order, Order::Asc);
        assert_eq!(r.query.start, Some(1_504_643_021 * time::MICROS));
        assert_eq!(r.query.end, Some(1_504_643_081 * time::MICROS + 500_000));
        let args = r.arguments();
        assert_eq!(args["delta"].to_string(), "60.5");
        assert_eq!(args["start"].to_string(), "1504643021.0");
        assert_eq!(args["order"], "asc");
    }

    #[test]
    fn filters_repeat_and_decode() {
        let r = parse("topic=a.b&topic=c%2Ed&category=bodhi&user=ralph&not_user=bot&package=kernel&contains=x+y&unknown=1").unwrap();
        assert_eq!(r.query.topics, ["a.b", "c.d"]);
        assert_eq!(r.query.categories, ["bodhi"]);
        assert_eq!(r.query.users, ["ralph"]);
        assert_eq!(r.query.not_users, ["bot"]);
        assert_eq!(r.query.packages, ["kernel"]);
        assert_eq!(r.query.contains, ["x y"]);
        assert_eq!(r.query.order, Order::Desc);
        assert_eq!(r.rows_per_page, DEFAULT_ROWS_PER_PAGE);
        assert_eq!(r.arguments()["topics"], json!(["a.b", "c.d"]));
    }

    #[test]
    fn time_range_defaults() {
        let now = 1_700_000_000.0;
        let range = |q: &str| {
            let r = parse(q).unwrap();
            (r.start, r.end)
        };
        assert_eq!(range(""), (now - DEFAULT_DELTA, now));
        assert_eq!(range("delta=60"), (now - 60.0, now));
        assert_eq!(range("start=100"), (100.0, now));
        assert_eq!(range("start=100&delta=50"), (100.0, 150.0));
        assert_eq!(range("end=1000&delta=50"), (950.0, 1000.0));
        assert_eq!(range("end=1000"), (1000.0 - DEFAULT_DELTA, 1000.0));
        assert_eq!(range("start=10&end=20&delta=5"), (10.0, 20.0));
    }

    #[test]
    fn bad_parameters_are_refused() {
        for bad in [
            "start=yesterday",
            "end=nan",
            "delta=-5",
            "page=0",
            "page=-1",
            "page=x",
            "rows_per_page=101",
            "rows_per_page=0",
            "order=random",
            "start=20&end=10",
            "start=1e300",
            "meta=title",
            "grouped=true",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
        let many = (0..=MAX_LIST)
            .map(|i| format!("topic=t{i}"))
            .collect::<Vec<_>>()
            .join("&");
        assert!(parse(&many).is_err());
        assert!(parse("grouped=false").is_ok());
    }

    #[test]
    fn routing_and_errors_without_a_database() {
        let db = DbUrl::Sqlite("/nonexistent/dir/x.db".into());
        let mut store = None;
        let (status, body) = respond(&Method::Get, "/raw?page=0", &mut store, &db);
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().contains("page"));
        assert_eq!(respond(&Method::Get, "/nothing", &mut store, &db).0, 404);
        assert_eq!(respond(&Method::Post, "/raw", &mut store, &db).0, 405);
        assert_eq!(respond(&Method::Get, "/id", &mut store, &db).0, 400);
        let (status, body) = respond(&Method::Get, "/raw", &mut store, &db);
        assert_eq!(status, 503, "{body}");
        assert!(store.is_none());
        // A page whose offset SQL cannot hold is the client's error.
        let (status, body) = respond(
            &Method::Get,
            "/raw?page=9223372036854775808",
            &mut store,
            &db,
        );
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains("too large"));
        // datagrepper's client asks for `//raw`; Flask merges slashes.
        for path in ["//raw?page=0", "/raw/?page=0", "//raw//?page=0"] {
            let (status, body) = respond(&Method::Get, path, &mut store, &db);
            assert_eq!(status, 400, "{path}: {body}");
        }
        assert_eq!(respond(&Method::Get, "//nothing", &mut store, &db).0, 404);
    }
}
