//! A datagrepper-compatible HTTP endpoint over the store: `GET /raw` (the
//! query the hub's catch-up and datagrepper clients use) and `GET /id?id=`.
//!
//! Served by axum on a tokio runtime of its own (two worker threads; an
//! idle connection costs a task, not a thread), with an accept loop of our
//! own: at most `http_max_connections` connections (beyond: 503, counted),
//! a failed `accept` (EMFILE…) backs off and retries, never ends the
//! server; a client idle or slow for `http_timeout` is disconnected.
//! Queries run on the runtime's blocking pool, at most `http_threads` at
//! once (one pooled database connection each, opened on first use and
//! reopened after a failure), `contains` scans on all but one of them; a
//! query past `http_query_timeout` is stopped (SQLite progress handler,
//! PostgreSQL `statement_timeout`) and answered 503 "query took longer
//! than N s". A page is serialized message by message and refused with
//! 413 (`rows_that_fit`, `max_page_bytes`) once it passes
//! `http_max_page_bytes`, rather than cut short: datagrepper clients page
//! by page number, so a short page would silently skip messages.
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

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use fedmsg_plugin_api::tracing;
use fedmsg_wire::ratelimit::LogLimiter;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

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

    /// Runs the request: `{arguments, count, pages, raw_messages, total}`
    /// as JSON text in chunks (the messages are serialized one by one,
    /// never held as a tree). Fails with [`PageError::TooLarge`] as soon as
    /// the messages pass `max_bytes`, so a page never costs more than
    /// about that plus one message.
    pub fn run(&self, store: &mut Store, max_bytes: usize) -> Result<Vec<Bytes>, PageError> {
        let total = store.count(&self.query)?;
        let mut page_query = self.query.clone();
        page_query.limit = Some(self.rows_per_page);
        page_query.offset = (self.page - 1).saturating_mul(self.rows_per_page);
        let mut rows: Vec<u8> = Vec::new();
        let mut count = 0usize;
        store.each_message(&page_query, &mut |m| {
            rows.push(if count == 0 { b'[' } else { b',' });
            serde_json::to_writer(&mut rows, &m.to_datagrepper()?).map_err(|e| {
                StoreError::Corrupt {
                    id: m.id,
                    reason: format!("cannot serialize: {e}"),
                }
            })?;
            if rows.len() > max_bytes {
                return Err(PageError::TooLarge {
                    rows_that_fit: count,
                });
            }
            count += 1;
            Ok(None::<()>)
        })?;
        if count == 0 {
            rows.push(b'[');
        }
        rows.push(b']');
        // serde_json's map sorts keys: the same order as before, with
        // `raw_messages` spliced in between `pages` and `total`.
        let head = format!(
            "{{\"arguments\":{},\"count\":{count},\"pages\":{},\"raw_messages\":",
            self.arguments(),
            total.div_ceil(self.rows_per_page)
        );
        let tail = format!(",\"total\":{total}}}");
        Ok(vec![
            Bytes::from(head),
            Bytes::from(rows),
            Bytes::from(tail),
        ])
    }
}

/// Why a page was not served.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The database failed, or the deadline passed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `/id`: no such message.
    #[error("no message with this id")]
    NotFound,
    /// The page's messages are larger than `http_max_page_bytes`.
    #[error("the page is larger than the server's limit")]
    TooLarge {
        /// How many messages fit (a smaller `rows_per_page` that works).
        rows_that_fit: usize,
    },
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

/// The server's limits, from the `http_*` keys of `[datanommer]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpLimits {
    /// Database connections serving queries, and so queries running at
    /// once (`http_threads`); a request waits for one at most
    /// `query_timeout`.
    pub db_connections: usize,
    /// Open client connections at most (`http_max_connections`); beyond,
    /// a connection is answered 503 and closed.
    pub max_connections: usize,
    /// A client that sends nothing and reads nothing for this long, or
    /// takes longer to send a request's headers, is disconnected
    /// (`http_timeout`).
    pub timeout: Duration,
    /// A query running longer is stopped and answered 503
    /// (`http_query_timeout`).
    pub query_timeout: Duration,
    /// Largest page of messages, bytes of JSON (`http_max_page_bytes`):
    /// a larger page is answered 413. The default is the hub catch-up's own
    /// limit on a page (64 MiB), so the cap refuses nothing the hub's
    /// catch-up could have taken.
    pub max_page_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            db_connections: 2,
            max_connections: 512,
            timeout: Duration::from_secs(30),
            query_timeout: Duration::from_secs(10),
            max_page_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What the server refused or what failed, counted since the start.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Requests answered (any status).
    pub requests: AtomicU64,
    /// Connections answered 503 because `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Failed `accept` calls (e.g. EMFILE: out of file descriptors).
    pub accept_errors: AtomicU64,
    /// Clients disconnected for being idle or slow (`timeout`).
    pub client_timeouts: AtomicU64,
    /// Queries stopped at `query_timeout` (answered 503).
    pub query_timeouts: AtomicU64,
    /// Requests that waited `query_timeout` for a database connection in
    /// vain (answered 503).
    pub db_busy: AtomicU64,
    /// Pages over `max_page_bytes` (answered 413).
    pub pages_too_large: AtomicU64,
    /// Queries that failed otherwise (database down, …; answered 503).
    pub db_errors: AtomicU64,
    /// Stored messages that cannot be served (answered 500).
    pub corrupt: AtomicU64,
}

/// A plain copy of [`HttpCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpCountersSnapshot {
    /// See [`HttpCounters::requests`].
    pub requests: u64,
    /// See [`HttpCounters::connections_refused`].
    pub connections_refused: u64,
    /// See [`HttpCounters::accept_errors`].
    pub accept_errors: u64,
    /// See [`HttpCounters::client_timeouts`].
    pub client_timeouts: u64,
    /// See [`HttpCounters::query_timeouts`].
    pub query_timeouts: u64,
    /// See [`HttpCounters::db_busy`].
    pub db_busy: u64,
    /// See [`HttpCounters::pages_too_large`].
    pub pages_too_large: u64,
    /// See [`HttpCounters::db_errors`].
    pub db_errors: u64,
    /// See [`HttpCounters::corrupt`].
    pub corrupt: u64,
}

impl HttpCounters {
    /// The current values.
    pub fn snapshot(&self) -> HttpCountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HttpCountersSnapshot {
            requests: get(&self.requests),
            connections_refused: get(&self.connections_refused),
            accept_errors: get(&self.accept_errors),
            client_timeouts: get(&self.client_timeouts),
            query_timeouts: get(&self.query_timeouts),
            db_busy: get(&self.db_busy),
            pages_too_large: get(&self.pages_too_large),
            db_errors: get(&self.db_errors),
            corrupt: get(&self.corrupt),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// An answer: status and JSON text in chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The JSON text, in pieces.
    pub body: Vec<Bytes>,
}

impl Reply {
    fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            body: vec![Bytes::from(value.to_string())],
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, &json!({"error": message.into()}))
    }

    /// The body parsed (for tests and tools; `Null` when it is not JSON).
    pub fn value(&self) -> Value {
        let text: Vec<u8> = self.body.concat();
        serde_json::from_slice(&text).unwrap_or(Value::Null)
    }
}

/// A request that needs the database.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// `/raw` (boxed: much larger than an id).
    Raw(Box<RawRequest>),
    /// `/id?id=`.
    Id(String),
}

/// Reads the method and URL: the job to run, or the answer when it does
/// not need the database (bad request, unknown path). `now` in µs.
pub fn route(method: &str, url: &str, now: i64) -> Result<Job, Reply> {
    if !matches!(method, "GET" | "HEAD") {
        return Err(Reply::error(405, "only GET is supported"));
    }
    let (path, query_string) = url.split_once('?').unwrap_or((url, ""));
    // Repeated and trailing slashes do not matter, as in datagrepper (Flask
    // merges slashes): its client library `datanozzle` asks for `//raw`.
    let path: String = path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .flat_map(|segment| ["/", segment])
        .collect();
    match path.as_str() {
        "/raw" => RawRequest::parse(query_string, now)
            .map(|r| Job::Raw(Box::new(r)))
            .map_err(|e| Reply::error(400, e)),
        "/id" => form_urlencoded::parse(query_string.as_bytes())
            .find(|(k, _)| k == "id")
            .map(|(_, v)| Job::Id(v.into_owned()))
            .ok_or_else(|| Reply::error(400, "id is required")),
        _ => Err(Reply::error(404, "not found; try /raw")),
    }
}

/// Interval of the log lines clients can cause (one per kind per interval,
/// with the number held back).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What the handlers share: the database, the limits, the counters.
pub struct Service {
    db: DbUrl,
    limits: HttpLimits,
    counters: Arc<HttpCounters>,
    /// Idle database connections (at most `db_connections`).
    pool: Mutex<Vec<Store>>,
    /// One per database connection: bounds the queries running at once
    /// (and so the blocking threads they use).
    db_permits: Arc<Semaphore>,
    /// `db_connections - 1` (at least 1): taken first by the queries that
    /// scan payloads (`contains`).
    scan_permits: Arc<Semaphore>,
    query_log: LogLimiter,
    accept_log: LogLimiter,
    refused_log: LogLimiter,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("db", &self.db.redacted())
            .field("limits", &self.limits)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service over `db` with `limits`.
    pub fn new(db: DbUrl, limits: HttpLimits) -> Service {
        Service {
            db,
            db_permits: Arc::new(Semaphore::new(limits.db_connections.max(1))),
            scan_permits: Arc::new(Semaphore::new(
                limits.db_connections.saturating_sub(1).max(1),
            )),
            limits,
            counters: Arc::default(),
            pool: Mutex::new(Vec::new()),
            query_log: LogLimiter::new(LOG_EVERY),
            accept_log: LogLimiter::new(LOG_EVERY),
            refused_log: LogLimiter::new(LOG_EVERY),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &HttpCounters {
        &self.counters
    }

    /// Answers one request synchronously, on the calling thread, with a
    /// pooled connection (tests; the server runs [`Service::run`] on its
    /// blocking pool).
    pub fn respond(&self, method: &str, url: &str) -> Reply {
        bump(&self.counters.requests);
        match route(method, url, time::now_micros()) {
            Ok(job) => self.run(&job),
            Err(reply) => reply,
        }
    }

    /// Runs a job with a pooled connection (opened when none is idle;
    /// dropped after an error that may have broken it), under the query
    /// deadline and the page byte cap. Blocks.
    pub fn run(&self, job: &Job) -> Reply {
        let idle = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut store = idle;
        let reply = self.run_with(job, &mut store);
        if let Some(store) = store {
            self.pool
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(store);
        }
        reply
    }

    fn run_with(&self, job: &Job, slot: &mut Option<Store>) -> Reply {
        let deadline = Instant::now() + self.limits.query_timeout;
        let store = match slot.take() {
            Some(s) => s,
            None => match Store::open(&self.db, false) {
                Ok(s) => s,
                Err(e) => return self.failed(PageError::Store(e)),
            },
        };
        let store = slot.insert(store);
        // Each request sets its own deadline, so a pooled connection's
        // stale one never matters.
        let result = match store.set_deadline(Some(deadline)) {
            Err(e) => Err(PageError::Store(e)),
            Ok(()) => match job {
                Job::Raw(request) => request.run(store, self.limits.max_page_bytes),
                Job::Id(id) => self.by_id(store, id),
            },
        };
        match result {
            Ok(body) => Reply { status: 200, body },
            Err(e) => {
                if let PageError::Store(e) = &e {
                    if !e.is_row_error() && !e.is_timeout() {
                        // Possibly a broken connection: a new one next time.
                        *slot = None;
                    }
                }
                self.failed(e)
            }
        }
    }

    fn by_id(&self, store: &mut Store, id: &str) -> Result<Vec<Bytes>, PageError> {
        let query = Query {
            msg_ids: vec![id.to_owned()],
            limit: Some(1),
            ..Query::default()
        };
        match store.messages(&query)?.first() {
            Some(m) => Ok(vec![Bytes::from(m.to_datagrepper()?.to_string())]),
            None => Err(PageError::NotFound),
        }
    }

    fn failed(&self, e: PageError) -> Reply {
        let c = &self.counters;
        match e {
            PageError::NotFound => Reply::error(404, "no message with this id"),
            PageError::TooLarge { rows_that_fit } => {
                bump(&c.pages_too_large);
                let max = self.limits.max_page_bytes;
                Reply::json(
                    413,
                    &json!({
                        "error": format!("the page is larger than {max} bytes; ask for fewer rows_per_page"),
                        "max_page_bytes": max,
                        "rows_that_fit": rows_that_fit,
                    }),
                )
            }
            PageError::Store(e) if e.is_timeout() => {
                bump(&c.query_timeouts);
                let secs = self.limits.query_timeout.as_secs_f64();
                if let Some(held_back) = self.query_log.check() {
                    tracing::warn!(
                        timeout_s = secs,
                        held_back,
                        "datanommer: query stopped at its time limit"
                    );
                }
                Reply::error(503, format!("query took longer than {secs} s"))
            }
            PageError::Store(e @ StoreError::Corrupt { .. }) => {
                bump(&c.corrupt);
                if let Some(held_back) = self.query_log.check() {
                    tracing::error!(error = %e, held_back, "datanommer: cannot serve a stored message");
                }
                Reply::error(500, e.to_string())
            }
            PageError::Store(e) => {
                bump(&c.db_errors);
                if let Some(held_back) = self.query_log.check() {
                    tracing::warn!(error = %e, url = %self.db.redacted(), held_back, "datanommer: query failed");
                }
                Reply::error(503, format!("database unavailable: {e}"))
            }
        }
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The runtime could not be built.
    #[error("cannot start datanommer's HTTP runtime: {0}")]
    Runtime(std::io::Error),
    /// The address could not be bound.
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        /// `http_listen`.
        listen: String,
        /// The error.
        source: std::io::Error,
    },
}

/// How long `stop` waits for requests in progress.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// First and longest pause after a failed `accept` (EMFILE, ENFILE,
/// ENOBUFS…): the connection waits in the backlog meanwhile.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// Refusals (503 then close) in progress at once; beyond, a connection
/// over the cap is just closed.
const REFUSALS_AT_ONCE: usize = 64;
/// How long a refusal waits for the client to take its 503.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// The running HTTP server: a tokio runtime of its own (two worker
/// threads, the queries on its blocking pool), stopped by [`HttpServer::stop`].
#[derive(Debug)]
pub struct HttpServer {
    runtime: Option<tokio::runtime::Runtime>,
    closing: watch::Sender<bool>,
    addr: SocketAddr,
    service: Arc<Service>,
}

impl HttpServer {
    /// Listens on `listen` (e.g. `127.0.0.1:5000`) and serves.
    ///
    /// # Errors
    ///
    /// The runtime or the socket.
    pub fn start(listen: &str, db: DbUrl, limits: HttpLimits) -> Result<HttpServer, HttpError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            // Queries hold a permit of `db_connections`; one spare for
            // the runtime's own blocking work.
            .max_blocking_threads(limits.db_connections.max(1) + 1)
            .thread_name("datanommer-http")
            .enable_all()
            .build()
            .map_err(HttpError::Runtime)?;
        let bind = |source| HttpError::Bind {
            listen: listen.to_owned(),
            source,
        };
        let std_listener = std::net::TcpListener::bind(listen).map_err(bind)?;
        std_listener.set_nonblocking(true).map_err(bind)?;
        let addr = std_listener.local_addr().map_err(bind)?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(bind)?
        };
        let (closing, closing_rx) = watch::channel(false);
        let service = Arc::new(Service::new(db, limits));
        runtime.spawn(accept_loop(listener, service.clone(), closing_rx));
        tracing::info!(listen = %addr, max_connections = service.limits.max_connections,
            db_connections = service.limits.db_connections, "datanommer serving /raw");
        Ok(HttpServer {
            runtime: Some(runtime),
            closing,
            addr,
            service,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        Some(self.addr)
    }

    /// The counters.
    pub fn counters(&self) -> &HttpCounters {
        self.service.counters()
    }

    /// Stops serving; waits a little for requests in progress.
    pub fn stop(&mut self) {
        let _ = self.closing.send(true);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(STOP_TIMEOUT);
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts until `closing`: a connection under the cap is served, one over
/// it refused; a failed accept never ends the loop (it backs off).
async fn accept_loop(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    closing: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(service.limits.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let app = Router::new().fallback(handle).with_state(service.clone());
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut until = closing.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = async { let _ = until.wait_for(|c| *c).await; } => return,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                backoff = ACCEPT_BACKOFF.0;
                stream
            }
            Err(e) => {
                bump(&service.counters.accept_errors);
                // A connection that failed before we took it: nothing
                // wrong with the server, next.
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionRefused
                        | ErrorKind::Interrupted
                ) {
                    continue;
                }
                // Out of descriptors or memory: the pending connection
                // stays in the backlog; wait for some to be freed.
                if let Some(held_back) = service.accept_log.check() {
                    tracing::error!(error = %e, backoff_ms = backoff.as_millis() as u64, held_back,
                        "datanommer: cannot accept HTTP connections; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    () = async { let _ = until.wait_for(|c| *c).await; } => return,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        match connections.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(serve_connection(
                    stream,
                    app.clone(),
                    service.clone(),
                    closing.clone(),
                    permit,
                ));
            }
            Err(_) => {
                bump(&service.counters.connections_refused);
                if let Some(held_back) = service.refused_log.check() {
                    tracing::warn!(
                        max_connections = service.limits.max_connections,
                        held_back,
                        "datanommer: HTTP connection refused, too many open"
                    );
                }
                // Over the refusal budget too: just close.
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    let max = service.limits.max_connections;
                    tokio::spawn(refuse(stream, max, permit));
                }
            }
        }
    }
}

/// Answers 503 and closes. The request is read (and dropped) briefly
/// after the answer: closing with unread data would reset the connection
/// and the client could lose the 503.
async fn refuse(mut stream: TcpStream, max: usize, _permit: OwnedSemaphorePermit) {
    let body = json!({"error": format!("too many connections (at most {max}); try again later")})
        .to_string();
    let text = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(text.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    service: Arc<Service>,
    mut closing: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let timeout = service.limits.timeout;
    let io = TokioIo::new(Idle::new(stream, timeout, service.counters.clone()));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = async { let _ = closing.wait_for(|c| *c).await; } => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(STOP_TIMEOUT, connection.as_mut()).await {
                Ok(served) => served,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = served {
        if e.is_timeout() {
            bump(&service.counters.client_timeouts);
        }
        tracing::debug!(error = %e, "datanommer: HTTP connection ended");
    }
}

async fn handle(State(service): State<Arc<Service>>, method: Method, uri: Uri) -> Response {
    bump(&service.counters.requests);
    let url = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let job = match route(method.as_str(), url, time::now_micros()) {
        Ok(job) => job,
        Err(reply) => return into_response(reply),
    };
    // Waiting for a database connection counts as query time: a request
    // behind slow ones is answered, not queued without end.
    // A `contains` query scans every payload in its range (no index can
    // help): such scans get all connections but one, so a few clients
    // repeating them cannot keep the indexed queries (catch-up, /id)
    // waiting behind them.
    let scans = match &job {
        Job::Raw(r) if !r.query.contains.is_empty() => Some(service.scan_permits.clone()),
        _ => None,
    };
    let permits = tokio::time::timeout(service.limits.query_timeout, async {
        let scan = match scans {
            Some(scans) => Some(scans.acquire_owned().await?),
            None => None,
        };
        let db = service.db_permits.clone().acquire_owned().await?;
        Ok::<_, tokio::sync::AcquireError>((scan, db))
    })
    .await;
    let Ok(Ok(permit)) = permits else {
        bump(&service.counters.db_busy);
        let secs = service.limits.query_timeout.as_secs_f64();
        return into_response(Reply::error(
            503,
            format!("query took longer than {secs} s (waiting for a database connection)"),
        ));
    };
    let worker = service.clone();
    let reply = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        worker.run(&job)
    })
    .await;
    match reply {
        Ok(reply) => into_response(reply),
        Err(e) => {
            bump(&service.counters.db_errors);
            tracing::error!(error = %e, "datanommer: a query task failed");
            into_response(Reply::error(500, "internal error"))
        }
    }
}

fn into_response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::new(Chunks::new(reply.body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A body of several chunks with its exact length (so it is sent with
/// `Content-Length`, as before, and HTTP/1.0 clients get it too) without
/// copying the chunks into one.
struct Chunks {
    chunks: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(chunks: Vec<Bytes>) -> Chunks {
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Chunks {
            chunks: chunks.into(),
            remaining,
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.chunks.pop_front();
        if let Some(chunk) = &next {
            self.remaining -= chunk.len() as u64;
        }
        Poll::Ready(next.map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// A client connection that fails with `TimedOut` when nothing was read
/// from or written to it for `timeout` while the server waits on it: an
/// idle keep-alive connection, a client that stops reading its response.
struct Idle {
    stream: TcpStream,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    counters: Arc<HttpCounters>,
}

impl Idle {
    fn new(stream: TcpStream, timeout: Duration, counters: Arc<HttpCounters>) -> Idle {
        Idle {
            stream,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            counters,
        }
    }

    fn progress(&mut self) {
        let next = tokio::time::Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }

    /// `Pending` until the deadline, then the error.
    fn expired<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                bump(&self.counters.client_timeouts);
                Poll::Ready(Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    "HTTP client idle too long",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Idle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Pending => self.expired(cx),
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.progress();
                }
                Poll::Ready(result)
            }
        }
    }
}

impl AsyncWrite for Idle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, data) {
            Poll::Pending => self.expired(cx),
            Poll::Ready(result) => {
                self.progress();
                Poll::Ready(result)
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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
        let service = Service::new(db, HttpLimits::default());
        let respond = |method: &str, url: &str| {
            let reply = service.respond(method, url);
            (reply.status, reply.value())
        };
        let (status, body) = respond("GET", "/raw?page=0");
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().contains("page"));
        assert_eq!(respond("GET", "/nothing").0, 404);
        assert_eq!(respond("POST", "/raw").0, 405);
        assert_eq!(respond("GET", "/id").0, 400);
        let (status, body) = respond("GET", "/raw");
        assert_eq!(status, 503, "{body}");
        assert!(service.pool.lock().unwrap().is_empty());
        assert_eq!(service.counters().snapshot().db_errors, 1);
        // A page whose offset SQL cannot hold is the client's error.
        let (status, body) = respond("GET", "/raw?page=9223372036854775808");
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains("too large"));
        // datagrepper's client asks for `//raw`; Flask merges slashes.
        for path in ["//raw?page=0", "/raw/?page=0", "//raw//?page=0"] {
            let (status, body) = respond("GET", path);
            assert_eq!(status, 400, "{path}: {body}");
        }
        assert_eq!(respond("GET", "//nothing").0, 404);
    }
}
