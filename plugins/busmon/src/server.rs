//! The HTTP side: the page and its assets, moksha's WebSocket, SSE
//! `/stream`, `/_heartbeat` and `/api/stats`, on axum, on a runtime of the
//! plugin's own (two worker threads) that `shutdown` stops.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fedmsg_plugin_api::{tracing, HubContext};
use fedmsg_wire::crypto::Verifier;
use fedmsg_wire::ratelimit::LogLimiter;
use fedmsg_wire::topic::TopicFilter;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::watch;

use crate::fanout::{Event, Filter, Item, Registration, Registry, Render, View};
use crate::frame::{self, ClientFrame};
use crate::settings::Settings;
use crate::stats::Rates;

/// Largest frame a client may send (subscribe frames are tiny).
const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// Items sent per wake-up of a writer, so that one busy client cannot hold
/// a runtime thread for long.
const BATCH: usize = 64;

/// An SSE comment this often keeps proxies from closing an idle stream and
/// finds clients that went away.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// How long `stop` waits for the runtime's tasks.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// The page's policy: scripts, styles and images from busmon only, no
/// inline script or style, no framing, no forms.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What busmon's heartbeat says (busmon's exact text).
pub const HEARTBEAT: &str = "I am ok.  Thanks for asking.";

/// The counters of things that went wrong, or were refused.
#[derive(Debug, Default)]
pub struct Counters {
    /// Client frames that were not moksha frames.
    pub bad_frames: AtomicU64,
    /// Subscribe patterns over `max_subscriptions`.
    pub subscriptions_refused: AtomicU64,
    /// Client messages not published (`client2server` off).
    pub publish_refused: AtomicU64,
    /// Client messages published (`client2server` on).
    pub published: AtomicU64,
    /// Client messages the hub could not publish.
    pub publish_failed: AtomicU64,
    /// Sends to clients that failed (the client went away).
    pub send_failed: AtomicU64,
}

/// Everything the handlers and the plugin share.
pub struct Shared {
    /// The live clients.
    pub registry: Arc<Registry>,
    /// The rates for the chart.
    pub rates: Rates,
    /// fedmsg.meta.
    pub render: Arc<dyn Render>,
    /// Checks signatures the hub did not check, for the badge (when the
    /// hub's configuration validates).
    pub verifier: Option<Arc<Verifier>>,
    /// The settings.
    pub settings: Settings,
    /// Publishing for `client2server` (only when it is on).
    pub publisher: Option<HubContext>,
    /// Failure counters.
    pub counters: Counters,
    /// Rate limit for log lines clients can trigger.
    pub client_log: LogLimiter,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("settings", &self.settings)
            .field("clients", &self.registry.len())
            .finish_non_exhaustive()
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The runtime could not be built.
    #[error("cannot start busmon's runtime: {0}")]
    Runtime(std::io::Error),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `http_listen`.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// The running server.
#[derive(Debug)]
pub struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    closing: watch::Sender<bool>,
    addr: SocketAddr,
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    closing: watch::Receiver<bool>,
}

impl Server {
    /// Binds `http_listen` (so that a taken port fails the plugin's start)
    /// and serves.
    ///
    /// # Errors
    ///
    /// The runtime or the socket.
    pub fn start(shared: Arc<Shared>) -> Result<Server, ServerError> {
        let addr = shared.settings.http_listen;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("busmon-http")
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let bind = |source| ServerError::Bind { addr, source };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        std_listener.set_nonblocking(true).map_err(bind)?;
        let addr = std_listener.local_addr().map_err(bind)?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(bind)?
        };
        let (closing, closing_rx) = watch::channel(false);
        let app = router(AppState {
            shared,
            closing: closing_rx.clone(),
        });
        let mut until = closing_rx;
        runtime.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = until.wait_for(|c| *c).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "busmon's HTTP server stopped");
            }
        });
        Ok(Server {
            runtime: Some(runtime),
            closing,
            addr,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ends every client and the server.
    pub fn stop(&mut self) {
        let _ = self.closing.send(true);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(STOP_TIMEOUT);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ws", get(index))
        .route("/stream", get(stream))
        .route("/_heartbeat", get(|| async { HEARTBEAT }))
        .route("/api/stats", get(api_stats))
        .route(
            "/static/busmon.js",
            get(|| async { asset(JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/static/busmon.css",
            get(|| async { asset(CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/static/favicon.svg",
            get(|| async { asset(ICON, "image/svg+xml") }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

const INDEX: &str = include_str!("../assets/index.html");
const JS: &str = include_str!("../assets/busmon.js");
const CSS: &str = include_str!("../assets/busmon.css");
const ICON: &str = include_str!("../assets/favicon.svg");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn too_many(max: usize) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "10")],
        format!("busmon: too many clients (max_clients = {max}); try again later\n"),
    )
        .into_response()
}

/// `/`: the page, or moksha's WebSocket (its clients connect to the root).
async fn index(State(state): State<AppState>, request: Request) -> Response {
    let wants_ws = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !wants_ws {
        return asset(INDEX, "text/html; charset=utf-8");
    }
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(reservation) = state.shared.registry.reserve() else {
        return too_many(state.shared.settings.max_clients);
    };
    upgrade
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| async move {
            // A moksha client sees nothing before its first subscribe.
            let filter = Filter {
                topics: Some(TopicFilter::new::<&str>(&[], false)),
                ..Filter::default()
            };
            let registration = reservation.activate(View::Envelope, filter);
            let mut closing = state.closing.clone();
            tokio::select! {
                () = websocket(socket, &registration, &state.shared) => {}
                _ = closing.wait_for(|c| *c) => {}
            }
        })
}

async fn websocket(socket: WebSocket, registration: &Registration, shared: &Shared) {
    let client = &registration.client;
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => client_frame(text.as_str(), registration, shared),
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return,
                // Pings are answered by the library; binary frames mean nothing in moksha's protocol.
                Some(Ok(_)) => {}
            },
            () = client.notify.notified() => {
                loop {
                    let batch: Vec<Item> = {
                        let mut queue = client.queue();
                        std::iter::from_fn(|| queue.pop()).take(BATCH).collect()
                    };
                    if batch.is_empty() {
                        break;
                    }
                    for item in batch {
                        let frame = match item {
                            Item::Message(event) => event.moksha_frame(),
                            Item::Skipped(n) => frame::skipped_frame(n).into(),
                        };
                        if sink.feed(WsMessage::Text(frame)).await.is_err() {
                            shared.counters.send_failed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        shared.counters.send_failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
    }
}

/// One frame from a WebSocket client.
fn client_frame(text: &str, registration: &Registration, shared: &Shared) {
    let counters = &shared.counters;
    match frame::parse(text) {
        Ok(ClientFrame::Subscribe(pattern)) => {
            let mut filter = registration.client.filter();
            let mut globs: Vec<String> = filter
                .topics
                .as_ref()
                .map(|t| t.globs().to_vec())
                .unwrap_or_default();
            if globs.len() >= shared.settings.max_subscriptions {
                counters
                    .subscriptions_refused
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = shared.client_log.check() {
                    tracing::warn!(
                        client = registration.client.id,
                        max = shared.settings.max_subscriptions,
                        suppressed,
                        "busmon: a client asked for too many subscriptions"
                    );
                }
                return;
            }
            if !globs.contains(&pattern) {
                globs.push(pattern);
            }
            filter.topics = Some(TopicFilter::new(&globs, false));
        }
        Ok(ClientFrame::Publish { topic, body }) => {
            let Some(publisher) = &shared.publisher else {
                counters.publish_refused.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = shared.client_log.check() {
                    tracing::info!(
                        client = registration.client.id,
                        suppressed,
                        "busmon: a client sent a message; not published (client2server is off)"
                    );
                }
                return;
            };
            let published = serde_json::from_str::<serde_json::Value>(&body)
                .map_err(|e| e.to_string())
                .and_then(|value| publisher.publish(&topic, &value).map_err(|e| e.to_string()));
            match published {
                Ok(()) => counters.published.fetch_add(1, Ordering::Relaxed),
                Err(error) => {
                    if let Some(suppressed) = shared.client_log.check() {
                        tracing::warn!(client = registration.client.id, %error, suppressed, "busmon: could not publish a client's message");
                    }
                    counters.publish_failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
        Err(error) => {
            counters.bad_frames.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = shared.client_log.check() {
                tracing::info!(client = registration.client.id, reason = error.label(), %error, suppressed, "busmon: a client frame was refused");
            }
        }
    }
}

/// `/stream`'s query: every part optional.
#[derive(Debug, Default, Deserialize)]
pub struct StreamQuery {
    /// Topic globs, comma-separated.
    pub topic: Option<String>,
    /// Free text.
    pub text: Option<String>,
    /// A user.
    pub user: Option<String>,
    /// A package.
    pub package: Option<String>,
    /// `page` for the page's JSON; else the envelope.
    pub view: Option<String>,
}

impl StreamQuery {
    /// The filter it asks for (empty parts are absent).
    pub fn filter(&self) -> Filter {
        fn given(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|s| !s.is_empty())
        }
        Filter {
            topics: given(&self.topic).map(|t| {
                let globs: Vec<&str> = t
                    .split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .collect();
                TopicFilter::new(&globs, false)
            }),
            text: given(&self.text).map(str::to_lowercase),
            user: given(&self.user).map(str::to_owned),
            package: given(&self.package).map(str::to_owned),
        }
    }
}

/// `GET /stream`: Server-Sent Events.
async fn stream(State(state): State<AppState>, Query(query): Query<StreamQuery>) -> Response {
    let Some(reservation) = state.shared.registry.reserve() else {
        return too_many(state.shared.settings.max_clients);
    };
    let view = if query.view.as_deref() == Some("page") {
        View::Page
    } else {
        View::Envelope
    };
    let registration = reservation.activate(view, query.filter());
    let stream = futures_util::stream::unfold(
        (registration, state, true),
        |(registration, mut state, first)| async move {
            if first {
                let hello = ": busmon\nretry: 2000\n\n".to_owned();
                return Some((
                    Ok::<_, std::convert::Infallible>(hello),
                    (registration, state, false),
                ));
            }
            loop {
                if *state.closing.borrow() {
                    return None;
                }
                let chunk = sse_batch(&registration, &state.shared);
                if !chunk.is_empty() {
                    return Some((Ok(chunk), (registration, state, false)));
                }
                tokio::select! {
                    () = registration.client.notify.notified() => {}
                    () = tokio::time::sleep(KEEPALIVE) => {
                        return Some((Ok(": keepalive\n\n".to_owned()), (registration, state, false)));
                    }
                    _ = state.closing.changed() => return None,
                }
            }
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Up to [`BATCH`] waiting items as SSE events.
fn sse_batch(registration: &Registration, shared: &Shared) -> String {
    let client = &registration.client;
    let items: Vec<Item> = {
        let mut queue = client.queue();
        std::iter::from_fn(|| queue.pop()).take(BATCH).collect()
    };
    let mut out = String::new();
    for item in items {
        match item {
            Item::Message(event) => sse_event(&mut out, &event, client.view, shared),
            Item::Skipped(n) => {
                out.push_str(&format!("event: skipped\ndata: {{\"skipped\":{n}}}\n\n"));
            }
        }
    }
    out
}

/// One message as an SSE event: `id:` its `msg_id`, `data:` one line per
/// line of the JSON (a JSON text may contain line breaks between tokens;
/// the client joins `data:` lines with `\n`, which keeps the same JSON).
fn sse_event(out: &mut String, event: &Event, view: View, shared: &Shared) {
    if let Some(id) = &event.msg_id {
        if !id.contains(['\r', '\n', '\0']) {
            out.push_str("id: ");
            out.push_str(id);
            out.push('\n');
        }
    }
    let data = match view {
        View::Envelope => event.body.as_str(),
        View::Page => event.page_json(
            &*shared.render,
            shared.verifier.as_deref(),
            shared.settings.raw_url.as_deref(),
        ),
    };
    for line in data.split(['\r', '\n']) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

/// The current minute, epoch.
pub fn now_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0)
}

async fn api_stats(State(state): State<AppState>) -> Response {
    let shared = &state.shared;
    let c = &shared.counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let body = serde_json::json!({
        "rates": shared.rates.snapshot(now_minute()),
        "clients": shared.registry.len(),
        "max_clients": shared.settings.max_clients,
        "clients_refused": load(&shared.registry.refused),
        "skipped": load(&shared.registry.skipped),
        "bad_frames": load(&c.bad_frames),
        "subscriptions_refused": load(&c.subscriptions_refused),
        "publish_refused": load(&c.publish_refused),
        "published": load(&c.published),
        "publish_failed": load(&c.publish_failed),
        "send_failed": load(&c.send_failed),
        "raw_url": shared.settings.raw_url,
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body.to_string(),
    )
        .into_response()
}
