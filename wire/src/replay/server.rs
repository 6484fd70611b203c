//! The replay server: a ZeroMQ REP socket answering replay queries for one
//! sender name from a [`ReplayStore`].
//!
//! One thread per server. It polls with a bounded timeout
//! ([`POLL_INTERVAL`]) so that [`ReplayServer::stop`] returns promptly, and
//! nothing a client sends can make it panic or stop:
//!
//! * a request that is not one frame, not JSON, not an object, has an
//!   unknown key or a value of the wrong type gets an error frame
//!   ([`super::query`] lists the texts);
//! * requests larger than [`ReplayLimits::max_request_bytes`] are refused by
//!   libzmq itself (`ZMQ_MAXMSGSIZE`: the connection is dropped);
//! * a reply holds at most [`ReplayLimits::max_reply_messages`] messages and
//!   about [`ReplayLimits::max_reply_bytes`] bytes (always at least one
//!   message): the **lowest** `seq_id`s that match. A client that gets
//!   fewer than it asked for asks again from the last `seq_id` it got plus
//!   one ([`super::client::ReplayClient::fetch_range`] does). Upstream had no
//!   cap, so one `[0, 10**9]` query could exhaust the publisher's memory;
//! * a store error is answered as `error: 'Internal error while querying
//!   the store'` and logged; a reply that cannot be sent (the client's
//!   pipe is full for [`SEND_TIMEOUT`]) makes the server rebind its socket,
//!   because a REP socket cannot receive again before it has replied.
//!
//! The socket binds where `replay_endpoints[name]` points; as upstream,
//! [`bind_address`] turns the configured `tcp://host:port` into
//! `tcp://*:port`.

use std::time::Duration;

use super::query::{self, QueryError};
use super::store::ReplayStore;
use crate::ratelimit::LogLimiter;
use crate::shutdown::{OwnedThread, Stop};

/// How often the server thread looks at its stop flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long a reply may wait for the client's pipe.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// The text answered when the store fails.
pub const INTERNAL_ERROR: &str = "Internal error while querying the store";

/// Bounds of what one request may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLimits {
    /// Most messages in one reply.
    pub max_reply_messages: usize,
    /// Reply size after which no further message is added.
    pub max_reply_bytes: usize,
    /// Largest request accepted by the socket.
    pub max_request_bytes: i64,
}

impl Default for ReplayLimits {
    fn default() -> Self {
        ReplayLimits {
            max_reply_messages: 1000,
            max_reply_bytes: 64 * 1024 * 1024,
            max_request_bytes: 1024 * 1024,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Creating, configuring or binding the REP socket failed.
    #[error("cannot bind the replay endpoint {endpoint}: {source}")]
    Bind {
        /// The address.
        endpoint: String,
        /// The zmq error.
        source: zmq::Error,
    },
    /// The server thread could not be spawned.
    #[error("cannot start the replay server thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// What the server did with one request (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Messages were sent; `truncated` when the caps cut the reply.
    Replied {
        /// Messages sent.
        messages: usize,
        /// True when more matched than was sent.
        truncated: bool,
    },
    /// An error frame was sent.
    Refused(String),
}

/// A running replay server.
pub struct ReplayServer {
    name: String,
    endpoint: String,
    thread: OwnedThread,
}

impl ReplayServer {
    /// Binds a REP socket on `bind` (e.g. `tcp://*:4002`, or
    /// `tcp://127.0.0.1:*` for an ephemeral port) and answers queries for
    /// `name` from `store` on a thread of its own.
    ///
    /// # Errors
    ///
    /// [`ServerError::Bind`] or [`ServerError::Thread`].
    pub fn start(
        ctx: &zmq::Context,
        bind: &str,
        name: &str,
        store: ReplayStore,
        limits: ReplayLimits,
    ) -> Result<ReplayServer, ServerError> {
        let socket = bind_socket(ctx, bind, &limits)?;
        // With a wildcard port, the real one is only known after binding.
        let endpoint = socket
            .get_last_endpoint()
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| bind.to_owned());
        let worker = Worker {
            ctx: ctx.clone(),
            endpoint: endpoint.clone(),
            name: name.to_owned(),
            store,
            limits,
            refused_log: LogLimiter::new(Duration::from_secs(10)),
        };
        let thread = OwnedThread::spawn(format!("replay:{name}"), move |stop| {
            worker.run(socket, &stop)
        })?;
        tracing::info!(name, endpoint = %endpoint, "replay server listening");
        Ok(ReplayServer {
            name: name.to_owned(),
            endpoint,
            thread,
        })
    }

    /// The address actually bound (port resolved).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The sender name it serves.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops the thread and waits for it (at most about one poll interval
    /// plus one request). Dropping the server does the same.
    pub fn stop(self) {
        self.thread.stop();
    }
}

/// The address to bind for a configured replay endpoint: the rule of every
/// endpoint we bind ([`crate::publish::bind_address`]). Upstream bound
/// `tcp://*:<port>` whatever the URL said, which put a replay endpoint
/// configured on loopback on every interface; an IP literal is now bound as
/// written and only a host name becomes `*`.
pub fn bind_address(url: &str) -> String {
    crate::publish::bind_address(url)
}

/// Answers one request (all its frames) from `store`: the reply frames and
/// what they mean.
pub fn answer(
    store: &ReplayStore,
    name: &str,
    request: &[Vec<u8>],
    limits: &ReplayLimits,
) -> (Vec<Vec<u8>>, Outcome) {
    let refused = |error: &QueryError| {
        (
            vec![error.frame().into_bytes()],
            Outcome::Refused(error.text()),
        )
    };
    let [frame] = request else {
        return refused(&QueryError::Frames);
    };
    let parsed = match query::parse(frame) {
        Ok(parsed) => parsed,
        Err(error) => return refused(&error),
    };
    let result = match store.query(name, &parsed, limits.max_reply_messages.max(1)) {
        Ok(result) => result,
        Err(error) => {
            tracing::error!(name, %error, "replay store query failed");
            let text = INTERNAL_ERROR.to_owned();
            return (
                vec![query::error_frame(&text).into_bytes()],
                Outcome::Refused(text),
            );
        }
    };
    if result.messages.is_empty() {
        return refused(&QueryError::NoMatch);
    }
    let mut truncated = result.truncated;
    let mut frames = Vec::with_capacity(result.messages.len());
    let mut bytes = 0usize;
    for message in result.messages {
        if !frames.is_empty() && bytes + message.body.len() > limits.max_reply_bytes {
            truncated = true;
            break;
        }
        bytes += message.body.len();
        frames.push(message.body.into_bytes());
    }
    let messages = frames.len();
    (
        frames,
        Outcome::Replied {
            messages,
            truncated,
        },
    )
}

fn bind_socket(
    ctx: &zmq::Context,
    endpoint: &str,
    limits: &ReplayLimits,
) -> Result<zmq::Socket, ServerError> {
    let bind_error = |source| ServerError::Bind {
        endpoint: endpoint.to_owned(),
        source,
    };
    let socket = ctx.socket(zmq::REP).map_err(bind_error)?;
    socket.set_linger(0).map_err(bind_error)?;
    socket
        .set_maxmsgsize(limits.max_request_bytes)
        .map_err(bind_error)?;
    socket
        .set_sndtimeo(SEND_TIMEOUT.as_millis() as i32)
        .map_err(bind_error)?;
    socket.bind(endpoint).map_err(bind_error)?;
    Ok(socket)
}

struct Worker {
    ctx: zmq::Context,
    endpoint: String,
    name: String,
    store: ReplayStore,
    limits: ReplayLimits,
    refused_log: LogLimiter,
}

impl Worker {
    fn run(self, mut socket: zmq::Socket, stop: &Stop) {
        while !stop.is_triggered() {
            match socket.poll(zmq::POLLIN, POLL_INTERVAL.as_millis() as i64) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(name = %self.name, %error, "replay socket poll failed");
                    stop.sleep(POLL_INTERVAL);
                    continue;
                }
            }
            if !self.serve_one(&socket) {
                match self.rebind(socket, stop) {
                    Some(fresh) => socket = fresh,
                    None => return,
                }
            }
        }
        tracing::debug!(name = %self.name, "replay server stopped");
    }

    /// Receives and answers one request; false when the socket must be
    /// replaced.
    fn serve_one(&self, socket: &zmq::Socket) -> bool {
        let request = match socket.recv_multipart(zmq::DONTWAIT) {
            Ok(request) => request,
            Err(zmq::Error::EAGAIN) => return true,
            Err(error) => {
                tracing::warn!(name = %self.name, %error, "replay request could not be received");
                return false;
            }
        };
        let (frames, outcome) = answer(&self.store, &self.name, &request, &self.limits);
        self.log(&outcome);
        if let Err(error) = socket.send_multipart(frames, 0) {
            tracing::warn!(name = %self.name, %error, "replay reply could not be sent; resetting the socket");
            return false;
        }
        true
    }

    fn log(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Replied {
                messages,
                truncated,
            } => {
                tracing::debug!(name = %self.name, messages, truncated, "replay query answered");
            }
            Outcome::Refused(text) => {
                if let Some(suppressed) = self.refused_log.check() {
                    tracing::info!(name = %self.name, error = %text, suppressed, "replay query refused");
                }
            }
        }
    }

    /// Replaces a socket stuck in the wrong REP state, retrying the bind
    /// (the old one may hold the port for a moment) until stopped.
    fn rebind(&self, old: zmq::Socket, stop: &Stop) -> Option<zmq::Socket> {
        drop(old);
        loop {
            if stop.is_triggered() {
                return None;
            }
            match bind_socket(&self.ctx, &self.endpoint, &self.limits) {
                Ok(socket) => return Some(socket),
                Err(error) => {
                    tracing::warn!(name = %self.name, %error, "replay endpoint rebind failed; retrying");
                    stop.sleep(POLL_INTERVAL);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
