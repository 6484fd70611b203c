//! The publisher socket (reference §1.3, "Publisher socket setup"): bind the
//! first free URL of an endpoint name, or connect to `relay_inbound`.
//!
//! The socket is an XPUB rather than a PUB. On the wire the two are the
//! same (a SUB peer accepts either), but XPUB hands the subscriptions of its
//! peers to the application, which is how a publisher can know that a
//! message sent now will reach somebody, instead of sleeping
//! `post_init_sleep` and hoping, as fedmsg does:
//!
//! * connecting (`fedmsg-logger` → relay): a PUB drops every message until
//!   the relay's SUB has sent its subscription over the new connection, so
//!   "connected" is not enough. [`PubSocket::wait_ready`] waits for that
//!   subscription. A socket monitor watches the connection meanwhile, only
//!   to say precisely what went wrong on timeout (refused, or connected but
//!   no subscription).
//! * binding (the hub's own endpoint, the relay's outbound side): nobody
//!   may be listening, and that is normal; callers that must not lose their
//!   first message can still wait for the first subscriber.
//!
//! The subscription notifications queue inside the socket until read, so
//! [`PubSocket::poll_subscriptions`] is called regularly by long-lived
//! publishers to drain them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::PublishError;
use crate::config::Config;
use crate::transport::{zmq_int, TcpKeepalive};

/// How a publisher's socket is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// Bind the first URL of `endpoints[name]` that is free (fedmsg's
    /// passive publisher: processes of one service share a list of ports).
    Bind {
        /// The endpoint name, for messages.
        name: String,
        /// Its URLs, tried in order.
        urls: Vec<String>,
    },
    /// Connect to every URL (fedmsg's `active` mode, towards a relay).
    Connect {
        /// The URLs, normally `relay_inbound`.
        urls: Vec<String>,
    },
}

/// Socket options of a publisher.
#[derive(Debug, Clone, Copy)]
pub struct SocketOptions {
    /// SNDHWM in messages; 0 = unlimited. (fedmsg leaves libzmq's 1000 when
    /// `high_water_mark` is 0; we read 0 as "unlimited" everywhere, as the
    /// configuration documents.)
    pub high_water_mark: i32,
    /// ZMQ_LINGER in ms: how long closing waits for unsent messages.
    pub linger_ms: i32,
    /// TCP keepalive, when enabled in the configuration.
    pub tcp_keepalive: Option<TcpKeepalive>,
}

impl SocketOptions {
    /// The publisher options from the fedmsg configuration
    /// (`high_water_mark`, `zmq_linger`, `zmq_tcp_keepalive*`).
    pub fn from_config(config: &Config) -> Self {
        SocketOptions {
            high_water_mark: zmq_int(config.high_water_mark),
            linger_ms: zmq_int(config.zmq_linger),
            tcp_keepalive: TcpKeepalive::from_config(config),
        }
    }
}

/// A bound or connected XPUB socket.
pub struct PubSocket {
    socket: zmq::Socket,
    attach: Attach,
    /// The URL bound (one) or connected (all).
    endpoints: Vec<String>,
    /// Watches the connections of a connecting socket until it is ready.
    monitor: Option<ConnectMonitor>,
    subscriptions: u64,
}

impl std::fmt::Debug for PubSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSocket")
            .field("endpoints", &self.endpoints)
            .field("subscriptions", &self.subscriptions)
            .finish_non_exhaustive()
    }
}

impl PubSocket {
    /// Creates the socket and binds or connects it.
    ///
    /// # Errors
    ///
    /// [`PublishError::NotConfigured`] when there is no URL,
    /// [`PublishError::NoFreeEndpoint`] when no URL can be bound,
    /// [`PublishError::Connect`] for a URL zmq refuses, and
    /// [`PublishError::Socket`] when the socket cannot be set up.
    pub fn open(
        ctx: &zmq::Context,
        attach: &Attach,
        options: &SocketOptions,
    ) -> Result<PubSocket, PublishError> {
        let socket = ctx.socket(zmq::XPUB).map_err(PublishError::Socket)?;
        configure(&socket, options).map_err(PublishError::Socket)?;
        let (endpoints, monitor) = match attach {
            Attach::Bind { name, urls } => (vec![bind_first_free(&socket, name, urls)?], None),
            Attach::Connect { urls } => {
                if urls.is_empty() {
                    return Err(PublishError::NotConfigured("relay_inbound".into()));
                }
                // The monitor must exist before connecting, or the first
                // events are lost. It only serves to explain a timeout, so
                // the socket works without it.
                let monitor = ConnectMonitor::attach(ctx, &socket).ok();
                for url in urls {
                    socket
                        .connect(url)
                        .map_err(|source| PublishError::Connect {
                            url: url.clone(),
                            source,
                        })?;
                }
                (urls.clone(), monitor)
            }
        };
        Ok(PubSocket {
            socket,
            attach: attach.clone(),
            endpoints,
            monitor,
            subscriptions: 0,
        })
    }

    /// The URL bound, or the URLs connected to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Subscriptions received from peers so far.
    pub fn subscriptions(&self) -> u64 {
        self.subscriptions
    }

    /// Waits until a peer has subscribed, so that the next message is
    /// delivered: for a connecting socket, the relay's subscription; for a
    /// bound one, any subscriber's.
    ///
    /// # Errors
    ///
    /// [`PublishError::NotReady`] after `timeout`, saying what the socket
    /// monitor saw (connection refused, connected but silent, ...).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), PublishError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(monitor) = &mut self.monitor {
                monitor.read_events();
            }
            self.poll_subscriptions();
            if self.subscriptions > 0 {
                // Connection diagnostics are no longer needed.
                self.monitor = None;
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PublishError::NotReady(self.not_ready_detail(timeout)));
            }
            let wait = left.min(Duration::from_millis(50));
            let millis = i64::try_from(wait.as_millis()).unwrap_or(50);
            match self.socket.poll(zmq::POLLIN, millis) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(PublishError::Socket(e)),
            }
        }
    }

    fn not_ready_detail(&self, timeout: Duration) -> String {
        match &self.attach {
            Attach::Bind { name, .. } => format!(
                "nobody subscribed to {name} ({}) within {timeout:?}",
                self.endpoints.join(", ")
            ),
            Attach::Connect { urls } => {
                let seen = self
                    .monitor
                    .as_ref()
                    .map_or_else(String::new, ConnectMonitor::describe);
                format!(
                    "no relay subscribed on {} within {timeout:?}{seen} (is fedmsg-relay running there?)",
                    urls.join(", ")
                )
            }
        }
    }

    /// Reads the subscription notifications queued in the socket, without
    /// waiting; returns how many new subscriptions arrived.
    pub fn poll_subscriptions(&mut self) -> u64 {
        let mut new = 0;
        loop {
            match self.socket.recv_bytes(zmq::DONTWAIT) {
                // 1 = subscribe, 0 = unsubscribe, followed by the prefix.
                Ok(frame) if frame.first() == Some(&1) => new += 1,
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(_) => break,
            }
        }
        self.subscriptions += new;
        new
    }

    /// Sends one message `[topic, body]`. A PUB socket never blocks: a
    /// message for a subscriber whose queue is at the high-water mark is
    /// dropped by zmq for that subscriber.
    ///
    /// # Errors
    ///
    /// [`PublishError::Send`] when zmq refuses (socket closed, context
    /// terminated, interrupted).
    pub fn send(&self, topic: &[u8], body: &[u8]) -> Result<(), PublishError> {
        self.socket
            .send(topic, zmq::SNDMORE)
            .and_then(|()| self.socket.send(body, 0))
            .map_err(PublishError::Send)
    }

    /// Sends the frames of one message unchanged (the relay's forwarding).
    ///
    /// # Errors
    ///
    /// As [`PubSocket::send`].
    pub fn send_frames(&self, frames: &[Vec<u8>]) -> Result<(), PublishError> {
        self.socket
            .send_multipart(frames, 0)
            .map_err(PublishError::Send)
    }
}

fn configure(socket: &zmq::Socket, options: &SocketOptions) -> Result<(), zmq::Error> {
    socket.set_sndhwm(options.high_water_mark)?;
    socket.set_rcvhwm(options.high_water_mark)?;
    socket.set_linger(options.linger_ms)?;
    // Report every subscription, not only the first of each prefix, so that
    // a second subscriber is noticed too.
    socket.set_xpub_verbose(true)?;
    if let Some(keepalive) = options.tcp_keepalive {
        keepalive.apply(socket)?;
    }
    Ok(())
}

/// Binds the first URL of `urls` that works (reference §1.3).
fn bind_first_free(
    socket: &zmq::Socket,
    name: &str,
    urls: &[String],
) -> Result<String, PublishError> {
    if urls.is_empty() {
        return Err(PublishError::NotConfigured(name.to_owned()));
    }
    let mut attempts = Vec::new();
    for url in urls {
        let address = bind_address(url);
        match socket.bind(&address) {
            Ok(()) => {
                // What was really bound (a `*` port resolved), for logs.
                let bound = socket.get_last_endpoint().ok().and_then(Result::ok);
                return Ok(bound.unwrap_or_else(|| url.clone()));
            }
            Err(error) => attempts.push(format!("{address}: {error}")),
        }
    }
    Err(PublishError::NoFreeEndpoint {
        name: name.to_owned(),
        attempts: attempts.join("; "),
    })
}

/// The address to bind for an endpoint URL. fedmsg binds `tcp://*:<port>`
/// whatever the host, because the URL names the host as *others* reach it
/// (often a DNS name). We keep an IP literal or `*` as written, so that a
/// loopback endpoint stays on loopback, and replace only a host name by `*`.
/// Other transports (`ipc://`, `inproc://`) are bound as written.
pub fn bind_address(url: &str) -> String {
    let Some(rest) = url.strip_prefix("tcp://") else {
        return url.to_owned();
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return url.to_owned();
    };
    let literal = host == "*"
        || host.parse::<std::net::IpAddr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
    if literal {
        url.to_owned()
    } else {
        format!("tcp://*:{port}")
    }
}

/// Reads a connecting socket's monitor events, to explain a timeout.
struct ConnectMonitor {
    events: zmq::Socket,
    refused: u64,
    connected: u64,
    handshake_failed: u64,
    disconnected: u64,
}

impl ConnectMonitor {
    fn attach(ctx: &zmq::Context, socket: &zmq::Socket) -> Result<Self, zmq::Error> {
        // inproc names are global to the context: make each unique.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let address = format!(
            "inproc://fedmsg-publish-monitor-{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        socket.monitor(&address, zmq::SocketEvent::ALL as i32)?;
        let events = ctx.socket(zmq::PAIR)?;
        events.set_linger(0)?;
        events.connect(&address)?;
        Ok(ConnectMonitor {
            events,
            refused: 0,
            connected: 0,
            handshake_failed: 0,
            disconnected: 0,
        })
    }

    fn read_events(&mut self) {
        while let Ok(frames) = self.events.recv_multipart(zmq::DONTWAIT) {
            // Frame 1: u16 event number, u32 value (native endianness).
            let Some(raw) = frames.first().and_then(|f| f.get(..2)) else {
                continue;
            };
            let event = u16::from_ne_bytes([raw[0], raw[1]]);
            self.record(event);
        }
    }

    fn record(&mut self, event: u16) {
        use zmq::SocketEvent as E;
        if event == E::CONNECT_RETRIED.to_raw() {
            self.refused += 1;
        } else if event == E::HANDSHAKE_SUCCEEDED.to_raw() {
            self.connected += 1;
        } else if event == E::HANDSHAKE_FAILED_NO_DETAIL.to_raw()
            || event == E::HANDSHAKE_FAILED_PROTOCOL.to_raw()
            || event == E::HANDSHAKE_FAILED_AUTH.to_raw()
        {
            self.handshake_failed += 1;
        } else if event == E::DISCONNECTED.to_raw() {
            self.disconnected += 1;
        }
    }

    fn describe(&self) -> String {
        if self.connected > 0 {
            format!(
                ": connected {} time(s) but no subscription arrived",
                self.connected
            )
        } else if self.handshake_failed > 0 {
            ": the zmq handshake failed (not a zmq SUB socket?)".to_owned()
        } else if self.refused > 0 {
            format!(
                ": connection refused ({} attempt(s))",
                self.refused + self.disconnected
            )
        } else {
            ": no connection was made".to_owned()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn options() -> SocketOptions {
        SocketOptions {
            high_water_mark: 0,
            linger_ms: 0,
            tcp_keepalive: None,
        }
    }

    #[test]
    fn bind_addresses_keep_literals_and_replace_names() {
        assert_eq!(bind_address("tcp://127.0.0.1:3000"), "tcp://127.0.0.1:3000");
        assert_eq!(bind_address("tcp://*:3000"), "tcp://*:3000");
        assert_eq!(bind_address("tcp://[::1]:3000"), "tcp://[::1]:3000");
        assert_eq!(
            bind_address("tcp://hub.fedoraproject.org:9940"),
            "tcp://*:9940"
        );
        assert_eq!(bind_address("ipc:///tmp/x.sock"), "ipc:///tmp/x.sock");
    }

    #[test]
    fn binds_the_first_free_url() {
        let ctx = zmq::Context::new();
        let first = PubSocket::open(
            &ctx,
            &Attach::Bind {
                name: "svc".into(),
                urls: vec!["tcp://127.0.0.1:*".into()],
            },
            &options(),
        )
        .expect("bind");
        let taken = first
            .socket
            .get_last_endpoint()
            .expect("endpoint")
            .expect("utf-8");
        let second = PubSocket::open(
            &ctx,
            &Attach::Bind {
                name: "svc".into(),
                urls: vec![taken.clone(), "tcp://127.0.0.1:*".into()],
            },
            &options(),
        )
        .expect("second URL is free");
        assert_eq!(second.endpoints().len(), 1);
        assert_ne!(second.endpoints()[0], taken);
        assert!(second.endpoints()[0].starts_with("tcp://127.0.0.1:"));
        let err = PubSocket::open(
            &ctx,
            &Attach::Bind {
                name: "svc".into(),
                urls: vec![taken.clone()],
            },
            &options(),
        )
        .expect_err("taken");
        assert!(err.to_string().contains(&taken), "{err}");
        assert!(err.to_string().contains("svc"), "{err}");
    }

    /// A bound SUB, polled on its own thread like a relay's: a SUB only
    /// sends its subscriptions to a new peer once its owner calls into it,
    /// so an idle test thread would never let the publisher get ready.
    pub(crate) fn relay_stub(
        ctx: &zmq::Context,
    ) -> (String, std::sync::mpsc::Receiver<Vec<Vec<u8>>>) {
        let relay = ctx.socket(zmq::SUB).expect("sub");
        relay.bind("tcp://127.0.0.1:*").expect("bind");
        relay.set_subscribe(b"").expect("subscribe");
        let url = relay.get_last_endpoint().expect("ep").expect("utf-8");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if relay.poll(zmq::POLLIN, 50).unwrap_or(0) > 0 {
                    let Ok(frames) = relay.recv_multipart(0) else {
                        return;
                    };
                    if tx.send(frames).is_err() {
                        return;
                    }
                }
            }
        });
        (url, rx)
    }

    #[test]
    fn a_connecting_socket_is_ready_once_the_relay_subscribes() {
        let ctx = zmq::Context::new();
        let (url, received) = relay_stub(&ctx);
        let mut publisher = PubSocket::open(
            &ctx,
            &Attach::Connect {
                urls: vec![url.clone()],
            },
            &options(),
        )
        .expect("connect");
        publisher
            .wait_ready(Duration::from_secs(20))
            .expect("relay subscribes");
        publisher.send(b"t", b"{}").expect("send");
        // The very first message arrives: no sleep was needed.
        let frames = received
            .recv_timeout(Duration::from_secs(20))
            .expect("received");
        assert_eq!(frames, [b"t".to_vec(), b"{}".to_vec()]);
    }

    #[test]
    fn an_absent_relay_is_reported_as_refused() {
        let ctx = zmq::Context::new();
        // A port that was free a moment ago: nothing listens there.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let url = format!("tcp://127.0.0.1:{port}");
        let mut publisher = PubSocket::open(
            &ctx,
            &Attach::Connect {
                urls: vec![url.clone()],
            },
            &options(),
        )
        .expect("connect is asynchronous");
        let err = publisher
            .wait_ready(Duration::from_millis(600))
            .expect_err("nobody there");
        let text = err.to_string();
        assert!(text.contains(&url), "{text}");
        assert!(text.contains("refused"), "{text}");
    }
}
