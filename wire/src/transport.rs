//! Receive path, step 1: transport. ZeroMQ SUB sockets, one per configured
//! endpoint URL, polled by one thread, each message handed on as its frames
//! with the endpoint it came from (next: [`crate::ingest`]).
//!
//! One socket per URL (rather than one socket connected everywhere) is what
//! lets ingest know where each message came from: the endpoint is part of
//! what a plugin sees, order is kept per endpoint, and replay gaps are
//! tracked per sender name. A single thread polls all of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::delivery::Source;
use crate::shutdown::Stop;

/// How often the receive loop looks at its stop flag when idle.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// At most this many messages are taken from one socket before the others
/// get a turn, so one busy endpoint cannot starve the rest.
const BATCH_PER_SOCKET: usize = 1024;

/// Socket options of a hub SUB socket (fedmsg-reference §2.3, moksha column).
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// RCVHWM and SNDHWM; 0 = unlimited (moksha always sets it).
    pub high_water_mark: i32,
    /// ZMQ_RECONNECT_IVL in ms.
    pub reconnect_ivl: i32,
    /// ZMQ_RECONNECT_IVL_MAX in ms (0 = only `reconnect_ivl`).
    pub reconnect_ivl_max: i32,
    /// TCP keepalive, set only when enabled (like moksha).
    pub tcp_keepalive: Option<TcpKeepalive>,
}

impl SubscribeOptions {
    /// The options of the fedmsg configuration's keys (`high_water_mark`,
    /// `zmq_reconnect_ivl*`, `zmq_tcp_keepalive*`).
    pub fn from_config(config: &Config) -> SubscribeOptions {
        SubscribeOptions {
            high_water_mark: zmq_int(config.high_water_mark),
            reconnect_ivl: zmq_int(config.zmq_reconnect_ivl),
            reconnect_ivl_max: zmq_int(config.zmq_reconnect_ivl_max),
            tcp_keepalive: TcpKeepalive::from_config(config),
        }
    }
}

/// A configuration number as a zmq socket option (an `int`): values past
/// `i32::MAX` mean "as much as possible" and are clamped.
pub(crate) fn zmq_int(value: u64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// TCP keepalive parameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpKeepalive {
    /// ZMQ_TCP_KEEPALIVE_CNT.
    pub cnt: i32,
    /// ZMQ_TCP_KEEPALIVE_IDLE, seconds.
    pub idle: i32,
    /// ZMQ_TCP_KEEPALIVE_INTVL, seconds.
    pub intvl: i32,
}

impl TcpKeepalive {
    /// The keepalive of the fedmsg configuration (`zmq_tcp_keepalive*`),
    /// `None` when it is off (then the socket keeps the OS default, like
    /// moksha).
    pub fn from_config(config: &Config) -> Option<TcpKeepalive> {
        (config.zmq_tcp_keepalive != 0).then(|| TcpKeepalive {
            cnt: zmq_int(config.zmq_tcp_keepalive_cnt),
            idle: zmq_int(config.zmq_tcp_keepalive_idle),
            intvl: zmq_int(config.zmq_tcp_keepalive_intvl),
        })
    }

    /// Turns keepalive on for `socket` with these parameters.
    pub(crate) fn apply(&self, socket: &zmq::Socket) -> Result<(), zmq::Error> {
        socket.set_tcp_keepalive(1)?;
        socket.set_tcp_keepalive_cnt(self.cnt)?;
        socket.set_tcp_keepalive_idle(self.idle)?;
        socket.set_tcp_keepalive_intvl(self.intvl)
    }
}

/// A transport failure, naming the endpoint it concerns.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A socket could not be created or configured.
    #[error("cannot set up a SUB socket for {url}: {source}")]
    Socket {
        /// The endpoint URL.
        url: String,
        /// The zmq error.
        source: zmq::Error,
    },
    /// `connect` refused the URL (malformed, unknown transport, ...).
    #[error("cannot connect to endpoint {name} = {url}: {source}")]
    Connect {
        /// The endpoint name.
        name: String,
        /// The endpoint URL.
        url: String,
        /// The zmq error.
        source: zmq::Error,
    },
    /// Polling failed.
    #[error("zmq poll failed: {0}")]
    Poll(zmq::Error),
}

/// A set of connected SUB sockets.
pub struct Subscriber {
    sockets: Vec<(Arc<Source>, zmq::Socket)>,
}

impl Subscriber {
    /// Connects one SUB socket per `(name, url)`, subscribed to every prefix
    /// in `prefixes`. A URL that cannot be connected is returned as an error
    /// in the second vector; the others still work.
    pub fn connect(
        ctx: &zmq::Context,
        endpoints: &[(String, String)],
        prefixes: &[String],
        options: &SubscribeOptions,
    ) -> (Subscriber, Vec<TransportError>) {
        let mut sockets = Vec::with_capacity(endpoints.len());
        let mut errors = Vec::new();
        let doubts = doubts_about(endpoints.iter().map(|(_, url)| url.as_str()));
        for ((name, url), doubt) in endpoints.iter().zip(doubts) {
            match open_socket(ctx, name, url, prefixes, options) {
                Ok(socket) => {
                    let source = Arc::new(Source {
                        name: name.clone(),
                        url: url.clone(),
                    });
                    match doubt {
                        // zmq connects lazily and retries for ever: without
                        // this, a typo in a host name read as "subscribed".
                        Some(doubt) => tracing::warn!(
                            endpoint_name = %name,
                            endpoint = %url,
                            "subscribed, but nothing can arrive yet: {doubt} (zmq keeps retrying)"
                        ),
                        None => {
                            tracing::info!(endpoint_name = %name, endpoint = %url, "subscribed")
                        }
                    }
                    sockets.push((source, socket));
                }
                Err(e) => errors.push(e),
            }
        }
        (Subscriber { sockets }, errors)
    }

    /// Number of connected sockets.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// True when no socket is connected.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Receives until `stop` is triggered, handing every multipart message
    /// (as its frames) to `on_message`. Returns only on stop or poll
    /// failure.
    pub fn run<F>(&self, stop: &Stop, mut on_message: F) -> Result<(), TransportError>
    where
        F: FnMut(&Arc<Source>, Vec<Vec<u8>>),
    {
        let mut items: Vec<zmq::PollItem<'_>> = self
            .sockets
            .iter()
            .map(|(_, s)| s.as_poll_item(zmq::POLLIN))
            .collect();
        let timeout = POLL_INTERVAL.as_millis() as i64;
        while !stop.is_triggered() {
            if items.is_empty() {
                stop.sleep(POLL_INTERVAL);
                continue;
            }
            match zmq::poll(&mut items, timeout) {
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(TransportError::Poll(e)),
            }
            for (item, (source, socket)) in items.iter().zip(&self.sockets) {
                if item.is_readable() {
                    drain_socket(source, socket, &mut on_message);
                }
            }
        }
        Ok(())
    }
}

fn drain_socket<F>(source: &Arc<Source>, socket: &zmq::Socket, on_message: &mut F)
where
    F: FnMut(&Arc<Source>, Vec<Vec<u8>>),
{
    for _ in 0..BATCH_PER_SOCKET {
        match socket.recv_multipart(zmq::DONTWAIT) {
            Ok(frames) => on_message(source, frames),
            Err(zmq::Error::EAGAIN) => return,
            Err(zmq::Error::EINTR) => continue,
            Err(error) => {
                tracing::error!(endpoint = %source.url, %error, "receive failed");
                return;
            }
        }
    }
}

fn open_socket(
    ctx: &zmq::Context,
    name: &str,
    url: &str,
    prefixes: &[String],
    options: &SubscribeOptions,
) -> Result<zmq::Socket, TransportError> {
    let sock_err = |source| TransportError::Socket {
        url: url.to_owned(),
        source,
    };
    let socket = ctx.socket(zmq::SUB).map_err(sock_err)?;
    configure(&socket, options).map_err(sock_err)?;
    for prefix in prefixes {
        socket.set_subscribe(prefix.as_bytes()).map_err(sock_err)?;
    }
    socket
        .connect(url)
        .map_err(|source| TransportError::Connect {
            name: name.to_owned(),
            url: url.to_owned(),
            source,
        })?;
    Ok(socket)
}

/// How long the start waits for host names to resolve, all together.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why each URL cannot deliver anything right now, when that can be told
/// before connecting: a host name that does not resolve, an `ipc://` path
/// in a directory that does not exist. Host names are resolved in parallel,
/// for at most three seconds in all.
pub fn doubts_about<'a>(urls: impl Iterator<Item = &'a str>) -> Vec<Option<String>> {
    let checks: Vec<_> = urls
        .map(|url| {
            if let Some(path) = url.strip_prefix("ipc://") {
                let dir = std::path::Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty());
                return Check::Done(
                    dir.filter(|d| !d.is_dir())
                        .map(|d| format!("the directory {} does not exist", d.display())),
                );
            }
            let Some((host, port)) = url
                .strip_prefix("tcp://")
                .and_then(|rest| rest.rsplit_once(':'))
            else {
                return Check::Done(None);
            };
            let literal = host == "*"
                || host.parse::<std::net::IpAddr>().is_ok()
                || (host.starts_with('[') && host.ends_with(']'));
            let Ok(port) = port.parse::<u16>() else {
                return Check::Done(None);
            };
            if literal {
                return Check::Done(None);
            }
            let (sender, receiver) = std::sync::mpsc::sync_channel(1);
            let host = host.to_owned();
            let spawned = std::thread::Builder::new()
                .name("resolve".into())
                .spawn(move || {
                    use std::net::ToSocketAddrs;
                    let answer = match (host.as_str(), port).to_socket_addrs() {
                        Ok(mut addresses) => addresses
                            .next()
                            .is_none()
                            .then(|| format!("{host} resolves to no address")),
                        Err(error) => Some(format!("cannot resolve {host}: {error}")),
                    };
                    let _ = sender.send(answer);
                });
            match spawned {
                Ok(_) => Check::Pending(receiver),
                Err(_) => Check::Done(None),
            }
        })
        .collect();
    let deadline = Instant::now() + RESOLVE_TIMEOUT;
    checks
        .into_iter()
        .map(|check| match check {
            Check::Done(answer) => answer,
            Check::Pending(receiver) => {
                match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(answer) => answer,
                    Err(_) => Some(format!(
                        "resolving its host takes longer than {} s",
                        RESOLVE_TIMEOUT.as_secs()
                    )),
                }
            }
        })
        .collect()
}

enum Check {
    Done(Option<String>),
    Pending(std::sync::mpsc::Receiver<Option<String>>),
}

fn configure(socket: &zmq::Socket, options: &SubscribeOptions) -> Result<(), zmq::Error> {
    socket.set_rcvhwm(options.high_water_mark)?;
    socket.set_sndhwm(options.high_water_mark)?;
    socket.set_linger(100)?;
    if options.reconnect_ivl > 0 {
        socket.set_reconnect_ivl(options.reconnect_ivl)?;
    }
    if options.reconnect_ivl_max > 0 {
        socket.set_reconnect_ivl_max(options.reconnect_ivl_max)?;
    }
    if let Some(keepalive) = options.tcp_keepalive {
        keepalive.apply(socket)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    #[test]
    fn endpoints_that_cannot_deliver_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let good_ipc = format!("ipc://{}/hub.sock", dir.path().display());
        let doubts = doubts_about(
            [
                "tcp://127.0.0.1:3000",
                "tcp://localhost:3000",
                "tcp://no-such-host.invalid:3000",
                "ipc:///no/such/directory/hub.sock",
                good_ipc.as_str(),
            ]
            .into_iter(),
        );
        assert_eq!(doubts[0], None);
        assert_eq!(doubts[1], None, "localhost resolves");
        let unresolved = doubts[2].as_deref().unwrap_or_default();
        assert!(
            unresolved.contains("no-such-host.invalid"),
            "{unresolved:?}"
        );
        assert!(doubts[3]
            .as_deref()
            .is_some_and(|d| d.contains("/no/such/directory")));
        assert_eq!(doubts[4], None);
    }

    #[test]
    fn receives_from_every_endpoint_and_names_the_source() {
        let ctx = zmq::Context::new();
        let mut pubs = Vec::new();
        let mut endpoints = Vec::new();
        for name in ["a", "b"] {
            let publisher = ctx.socket(zmq::PUB).unwrap();
            publisher.bind("tcp://127.0.0.1:*").unwrap();
            let url = publisher.get_last_endpoint().unwrap().unwrap();
            endpoints.push((name.to_owned(), url));
            pubs.push(publisher);
        }
        endpoints.push(("bad".into(), "nonsense://x".into()));
        let (subscriber, errors) = Subscriber::connect(
            &ctx,
            &endpoints,
            &[String::from("t")],
            &SubscribeOptions::default(),
        );
        assert_eq!(subscriber.len(), 2);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("nonsense://x"));

        // PUB/SUB drops what is sent before the connection is up, so the
        // publishers repeat until the subscriber has heard both.
        let done = Arc::new(AtomicBool::new(false));
        let publishing = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                    for publisher in &pubs {
                        publisher.send_multipart(["t", "{}"], 0).unwrap();
                        publisher.send_multipart(["x", "{}"], 0).unwrap();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let stop = Stop::new();
        let watchdog = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                stop.sleep(Duration::from_secs(20));
                stop.trigger();
            })
        };
        let mut seen = BTreeSet::new();
        subscriber
            .run(&stop, |source, frames| {
                assert_eq!(frames[0], b"t", "subscription filter lets only `t` through");
                seen.insert(source.name.clone());
                if seen.len() == 2 {
                    stop.trigger();
                }
            })
            .unwrap();
        done.store(true, Ordering::Relaxed);
        publishing.join().unwrap();
        drop(watchdog);
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec!["a", "b"]);
    }
}
