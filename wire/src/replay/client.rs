//! The subscriber side of replay: gap tracking per sender name, and a REQ
//! client that fetches a missing range.
//!
//! # Gap rules ([`GapTracker::observe`])
//!
//! Per sender name (the endpoint name a message came from), with `last` the
//! last `seq_id` accepted:
//!
//! | case | [`Action`] | `last` becomes |
//! |---|---|---|
//! | no `last` yet (first message of the name) | `Deliver` | `seq_id` |
//! | `seq_id == last + 1` | `Deliver` | `seq_id` |
//! | `seq_id > last + 1` | `Gap { from: last + 1, to: seq_id - 1 }` | `seq_id` |
//! | `seq_id <= last` | `Duplicate` | unchanged |
//!
//! except, so that a publisher whose store was recreated is not silenced
//! until its numbers catch up, a `seq_id` of 1, or one more than
//! [`RESTART_DISTANCE`] below `last`, is taken as the publisher starting
//! over: `Deliver` (logged at `warn`), `last = seq_id`. The price: a
//! duplicate of a sender's very first message arriving after a later one
//! is taken for a restart and delivered again (as are the few messages
//! replay then refetches); `dedup_window` catches those.
//!
//! On `Gap`, the caller fetches `from..=to` from `replay_endpoints[name]`,
//! validates and delivers what came back in `seq_id` order, then the message
//! that revealed the gap. `last` already points past the gap, so replayed
//! messages arriving late over the live socket count as duplicates. A
//! message without `seq_id` bypasses the tracker entirely.
//!
//! # Fetching ([`ReplayClient`])
//!
//! REQ sockets are strict send/receive state machines: after a request
//! whose reply never came, the socket can neither send nor receive again.
//! So a socket that timed out or failed is dropped (LINGER 0, nothing left
//! behind) and the next request to that endpoint connects a new one; a
//! healthy socket is kept for the next gap. Every wait is bounded by the
//! caller's timeout, which covers the whole fetch, including the follow-up
//! requests needed when the server caps its replies
//! ([`super::server::ReplayLimits`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::query::{self, Query, QueryError};
use crate::envelope;

/// A `seq_id` this far below the last one is a publisher starting over,
/// not a duplicate (no live duplicate arrives that late).
pub const RESTART_DISTANCE: u64 = 100_000;

/// What to do with a message carrying a `seq_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// In sequence (or the first of its name): deliver it.
    Deliver,
    /// Already seen: drop it.
    Duplicate,
    /// `from..=to` are missing: replay them, then deliver this one.
    Gap {
        /// First missing `seq_id`.
        from: u64,
        /// Last missing `seq_id`.
        to: u64,
    },
}

/// The last `seq_id` accepted per sender name.
#[derive(Debug, Clone, Default)]
pub struct GapTracker {
    last: HashMap<String, u64>,
}

impl GapTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `last` for `name`, e.g. from a status file at start, so that
    /// what was published while the hub was down shows up as a gap.
    pub fn seed(&mut self, name: &str, last: u64) {
        self.last.insert(name.to_owned(), last);
    }

    /// The last `seq_id` accepted for `name`.
    pub fn last(&self, name: &str) -> Option<u64> {
        self.last.get(name).copied()
    }

    /// Classifies `seq_id` from `name` and updates `last` (module docs).
    pub fn observe(&mut self, name: &str, seq_id: u64) -> Action {
        let Some(last) = self.last.get_mut(name) else {
            self.last.insert(name.to_owned(), seq_id);
            return Action::Deliver;
        };
        let previous = *last;
        if seq_id <= previous {
            if seq_id < previous && (seq_id == 1 || previous - seq_id > RESTART_DISTANCE) {
                tracing::warn!(
                    name,
                    seq_id,
                    last = previous,
                    "seq_id went back: the publisher started over"
                );
                *last = seq_id;
                return Action::Deliver;
            }
            return Action::Duplicate;
        }
        *last = seq_id;
        if seq_id == previous + 1 {
            Action::Deliver
        } else {
            Action::Gap {
                from: previous + 1,
                to: seq_id - 1,
            }
        }
    }
}

/// The top-level `seq_id` of an envelope, when it is a non-negative integer.
pub fn seq_id_of(envelope: &Value) -> Option<u64> {
    envelope.get("seq_id").and_then(Value::as_u64)
}

/// The top-level `seq_id` of an envelope body, read without building the
/// whole value (other fields are skipped; the last duplicate key wins, as
/// in Python). `None` when absent, not an integer, or not a JSON object.
pub fn seq_id_in_body(body: &str) -> Option<u64> {
    let mut deserializer = serde_json::Deserializer::from_str(body);
    deserializer.deserialize_map(SeqIdVisitor).ok().flatten()
}

struct SeqIdVisitor;

impl<'de> Visitor<'de> for SeqIdVisitor {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
        let mut seq_id = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "seq_id" {
                seq_id = map.next_value::<Value>()?.as_u64();
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(seq_id)
    }
}

/// One replayed message.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// Its `seq_id`.
    pub seq_id: u64,
    /// The frame as received (the stored canonical JSON), for a delivery.
    pub body: String,
    /// The parsed envelope (for validation).
    pub envelope: Value,
}

impl Replayed {
    /// The envelope's `topic`, if it has a string one.
    pub fn topic(&self) -> Option<&str> {
        self.envelope.get("topic").and_then(Value::as_str)
    }
}

/// Why a fetch returned nothing.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The REQ socket could not be created, connected or used.
    #[error("replay endpoint {endpoint}: {source}")]
    Socket {
        /// The replay endpoint.
        endpoint: String,
        /// The zmq error.
        source: zmq::Error,
    },
    /// No reply within the timeout.
    #[error("replay endpoint {endpoint}: no reply within {waited_ms} ms")]
    Timeout {
        /// The replay endpoint.
        endpoint: String,
        /// How long it waited.
        waited_ms: u64,
    },
    /// The server answered an error frame.
    #[error("replay endpoint {endpoint} answered an error: {text}")]
    Remote {
        /// The replay endpoint.
        endpoint: String,
        /// The text of the error frame.
        text: String,
    },
    /// The reply held no usable message.
    #[error("replay endpoint {endpoint}: unusable reply: {reason}")]
    BadReply {
        /// The replay endpoint.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
}

/// Tuning of a [`ReplayClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Most messages one `fetch_range` returns (bounds memory on a huge gap).
    pub max_messages: usize,
    /// Largest reply frame accepted (`ZMQ_MAXMSGSIZE`).
    pub max_frame_bytes: i64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_messages: 10_000,
            max_frame_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Fetches missing messages from replay endpoints, one socket per endpoint.
pub struct ReplayClient {
    ctx: zmq::Context,
    options: ClientOptions,
    sockets: HashMap<String, zmq::Socket>,
}

impl ReplayClient {
    /// A client with default options.
    pub fn new(ctx: &zmq::Context) -> Self {
        Self::with_options(ctx, ClientOptions::default())
    }

    /// A client with `options`.
    pub fn with_options(ctx: &zmq::Context, options: ClientOptions) -> Self {
        ReplayClient {
            ctx: ctx.clone(),
            options,
            sockets: HashMap::new(),
        }
    }

    /// Fetches `lo..=hi` from `endpoint` within `timeout` (in total),
    /// asking again after a capped reply. Returns the messages found, in
    /// `seq_id` order, each within `lo..=hi`; some may be missing (pruned by
    /// the publisher, or time ran out after a partial answer, logged), and
    /// `There was no match` is an empty result, not an error. Frames that
    /// are not JSON objects with a `seq_id` in range are skipped and logged.
    ///
    /// # Errors
    ///
    /// Only when nothing was obtained: [`FetchError::Timeout`],
    /// [`FetchError::Socket`], [`FetchError::Remote`] (any error frame but
    /// "no match") or [`FetchError::BadReply`].
    pub fn fetch_range(
        &mut self,
        endpoint: &str,
        lo: u64,
        hi: u64,
        timeout: Duration,
    ) -> Result<Vec<Replayed>, FetchError> {
        let deadline = Instant::now() + timeout;
        let mut found: BTreeMap<u64, Replayed> = BTreeMap::new();
        let mut next = lo;
        while next <= hi && found.len() < self.options.max_messages {
            let step = self.fetch_step(endpoint, next, hi, deadline);
            let reply = match step {
                Ok(reply) => reply,
                Err(error) if found.is_empty() => return Err(error),
                Err(error) => {
                    tracing::warn!(endpoint, lo, hi, got = found.len(), %error, "replay fetch incomplete");
                    break;
                }
            };
            let Some(highest) = reply.last().map(|r| r.seq_id) else {
                break; // no match: the rest of the range is not stored
            };
            found.extend(reply.into_iter().map(|r| (r.seq_id, r)));
            if highest >= hi {
                break;
            }
            next = highest + 1;
        }
        Ok(found
            .into_values()
            .take(self.options.max_messages)
            .collect())
    }

    /// One request for `next..=hi`: the usable messages of the reply, empty
    /// for "no match".
    fn fetch_step(
        &mut self,
        endpoint: &str,
        next: u64,
        hi: u64,
        deadline: Instant,
    ) -> Result<Vec<Replayed>, FetchError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(FetchError::Timeout {
                endpoint: endpoint.to_owned(),
                waited_ms: 0,
            });
        }
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let request = Query::range(to_i64(next), to_i64(hi));
        let frames = self.request(endpoint, &request, remaining)?;
        parse_reply(endpoint, frames, next, hi)
    }

    /// Sends `query` to `endpoint` and returns the raw reply frames, waiting
    /// at most `timeout`. A socket that timed out or failed is discarded.
    ///
    /// # Errors
    ///
    /// [`FetchError::Socket`] or [`FetchError::Timeout`].
    pub fn request(
        &mut self,
        endpoint: &str,
        query: &Query,
        timeout: Duration,
    ) -> Result<Vec<Vec<u8>>, FetchError> {
        let socket_error = |source| FetchError::Socket {
            endpoint: endpoint.to_owned(),
            source,
        };
        let socket = match self.sockets.remove(endpoint) {
            Some(socket) => socket,
            None => self.connect(endpoint).map_err(socket_error)?,
        };
        let request = query.to_json().to_string();
        socket
            .send(request.as_bytes(), zmq::DONTWAIT)
            .map_err(socket_error)?;
        let millis = i64::try_from(timeout.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let ready = socket.poll(zmq::POLLIN, millis).map_err(socket_error)?;
        if ready == 0 {
            // The socket now waits for a reply forever: drop it.
            return Err(FetchError::Timeout {
                endpoint: endpoint.to_owned(),
                waited_ms: u64::try_from(millis).unwrap_or(0),
            });
        }
        let frames = socket.recv_multipart(zmq::DONTWAIT).map_err(socket_error)?;
        self.sockets.insert(endpoint.to_owned(), socket);
        Ok(frames)
    }

    fn connect(&self, endpoint: &str) -> Result<zmq::Socket, zmq::Error> {
        let socket = self.ctx.socket(zmq::REQ)?;
        socket.set_linger(0)?;
        socket.set_maxmsgsize(self.options.max_frame_bytes)?;
        socket.connect(endpoint)?;
        Ok(socket)
    }
}

/// Turns reply frames into messages within `lo..=hi`.
fn parse_reply(
    endpoint: &str,
    frames: Vec<Vec<u8>>,
    lo: u64,
    hi: u64,
) -> Result<Vec<Replayed>, FetchError> {
    if let [only] = frames.as_slice() {
        if let Some(text) = query::parse_error_frame(only) {
            if text == QueryError::NoMatch.text() {
                return Ok(Vec::new());
            }
            return Err(FetchError::Remote {
                endpoint: endpoint.to_owned(),
                text,
            });
        }
    }
    let total = frames.len();
    let mut messages = Vec::with_capacity(total);
    let mut last_problem = String::new();
    for frame in frames {
        match parse_frame(frame, lo, hi) {
            Ok(message) => messages.push(message),
            Err(problem) => last_problem = problem,
        }
    }
    if messages.len() < total {
        tracing::warn!(endpoint, skipped = total - messages.len(), problem = %last_problem, "unusable replay frames skipped");
    }
    if messages.is_empty() {
        return Err(FetchError::BadReply {
            endpoint: endpoint.to_owned(),
            reason: last_problem,
        });
    }
    messages.sort_by_key(|m| m.seq_id);
    Ok(messages)
}

fn parse_frame(frame: Vec<u8>, lo: u64, hi: u64) -> Result<Replayed, String> {
    let body = String::from_utf8(frame).map_err(|_| "a frame is not UTF-8".to_owned())?;
    let envelope =
        envelope::parse(body.as_bytes()).map_err(|e| format!("a frame is not JSON: {e}"))?;
    if !envelope.is_object() {
        return Err("a frame is not a JSON object".into());
    }
    let seq_id = seq_id_of(&envelope).ok_or_else(|| "a frame has no integer seq_id".to_owned())?;
    if !(lo..=hi).contains(&seq_id) {
        return Err(format!("seq_id {seq_id} outside the requested {lo}..={hi}"));
    }
    Ok(Replayed {
        seq_id,
        body,
        envelope,
    })
}

#[cfg(test)]
mod tests;
