//! `fedmsg-relay`: the active-to-passive relay of reference §1.6.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use fedmsg_tools::cli::{self, CommonArgs};
use fedmsg_wire::config::{Config, ConfigArgs};
use fedmsg_wire::publish::{Attach, PubSocket, SocketOptions};
use fedmsg_wire::ratelimit::LogLimiter;
use fedmsg_wire::replay::server::{self as replay_server, ReplayLimits, ReplayServer};
use fedmsg_wire::replay::store::ReplayStore;
use fedmsg_wire::shutdown::{self, Stop};

/// Relay messages from processes that cannot bind a port of their own.
///
/// Binds a SUB socket on every `relay_inbound` URL (where fedmsg-logger and
/// other active publishers connect) and a PUB socket on the first free URL
/// of `endpoints.relay_outbound` (which hubs subscribe to), and forwards
/// every message. The frames are forwarded unchanged, byte for byte, so
/// signatures, field order and unknown fields survive (fedmsg's relay
/// re-encodes the JSON). Only messages of exactly two frames [topic, body]
/// are forwarded; anything else is counted and dropped. Both sockets use
/// `high_water_mark` (0 = unlimited, so nothing is dropped for a slow
/// subscriber; memory grows instead).
///
/// With `--store PATH` the relay keeps what it sends for replay (reference
/// §4.4): it parses each body, stamps it with the next `seq_id` of the
/// sender name `relay_outbound`, stores it in the SQLite file PATH and
/// forwards the stored (canonical) body instead of the bytes it received,
/// and answers replay queries on `replay_endpoints.relay_outbound`. Frames
/// therefore stay byte-identical only without `--store`. A body that is not
/// a JSON object with a topic is forwarded unchanged, without `seq_id`.
///
/// SIGINT or SIGTERM stops the relay (exit 0).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    common: CommonArgs,
    /// Log filter, e.g. `info` or `debug` (default: RUST_LOG, else info).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// SQLite file of the replay store: stamp `seq_id`, keep every message
    /// sent and serve `replay_endpoints.relay_outbound`.
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,
    /// Test-only: with --store, do not send every Nth message after storing
    /// it, so that subscribers see gaps that replay must fill. Hidden from
    /// --help on purpose: it loses messages, which no deployment wants.
    #[arg(long, value_name = "N", hide = true, requires = "store")]
    test_drop_every: Option<u64>,
}

/// The sender name of the relay's outbound side (its `seq_id` sequence and
/// its key in `replay_endpoints`).
const OUTBOUND_NAME: &str = "relay_outbound";

/// How long the loop waits for input before looking at the stop flag.
const POLL_MS: i64 = 100;

/// Messages taken from the inbound socket before checking the stop flag.
const BATCH: usize = 4096;

fn main() -> ExitCode {
    let args = Args::parse();
    fedmsg_wire::logging::init(args.log_level.as_deref(), "info");
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("fedmsg-relay: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config = cli::load(&args.config, &args.common)
        .context("cannot load the configuration")?
        .config;
    if args.common.print_config {
        println!("{}", config.to_json_string());
        return Ok(());
    }
    let stop = Stop::new();
    shutdown::stop_on_signals(stop.clone()).context("cannot install signal handlers")?;
    let ctx = zmq::Context::new();
    let inbound = bind_inbound(&ctx, &config)?;
    let outbound = bind_outbound(&ctx, &config)?;
    let (mut stamper, server) = match &args.store {
        Some(path) => {
            let (stamper, server) = open_store(&ctx, &config, path, args.test_drop_every)?;
            (Some(stamper), server)
        }
        None => (None, None),
    };
    tracing::info!(
        inbound = %config.relay_inbound.join(", "),
        outbound = %outbound.endpoints().join(", "),
        store = ?args.store,
        replay = server.as_ref().map(ReplayServer::endpoint),
        "fedmsg-relay started"
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let counts = forward(&inbound, outbound, stamper.as_mut(), &stop)?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    if let Some(server) = server {
        server.stop();
    }
    tracing::info!(
        forwarded = counts.forwarded,
        dropped = counts.dropped,
        stamped = stamper.as_ref().map_or(0, |s| s.stamped),
        unstamped = stamper.as_ref().map_or(0, |s| s.unstamped),
        test_dropped = stamper.as_ref().map_or(0, |s| s.test_dropped),
        "fedmsg-relay stopped"
    );
    Ok(())
}

/// Stamps and stores outgoing messages (`--store`).
struct Stamper {
    store: ReplayStore,
    drop_every: Option<u64>,
    stamped: u64,
    unstamped: u64,
    test_dropped: u64,
    log: LogLimiter,
}

impl Stamper {
    /// The body to send for `body`, or `None` when the test switch drops
    /// this one. A body that cannot be stamped is sent unchanged (the relay
    /// stays a relay; that message just cannot be replayed).
    fn stamp(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        let mut envelope = match fedmsg_wire::envelope::parse(body) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.unstamped += 1;
                if let Some(suppressed) = self.log.check() {
                    tracing::warn!(%error, suppressed, "body is not JSON: forwarded without seq_id");
                }
                return Some(body.to_vec());
            }
        };
        match self.store.add(OUTBOUND_NAME, &mut envelope) {
            Ok(stored) => {
                self.stamped += 1;
                if self
                    .drop_every
                    .is_some_and(|n| n > 0 && stored.seq_id % n == 0)
                {
                    self.test_dropped += 1;
                    tracing::debug!(seq_id = stored.seq_id, "test switch: stored but not sent");
                    return None;
                }
                Some(stored.body.into_bytes())
            }
            Err(error) => {
                self.unstamped += 1;
                if let Some(suppressed) = self.log.check() {
                    tracing::error!(%error, suppressed, "cannot store the message: forwarded without seq_id");
                }
                Some(body.to_vec())
            }
        }
    }
}

/// Opens the store (one connection to stamp, one for the replay server's
/// thread) and starts the replay server when `replay_endpoints` has the
/// relay's name.
fn open_store(
    ctx: &zmq::Context,
    config: &Config,
    path: &std::path::Path,
    drop_every: Option<u64>,
) -> anyhow::Result<(Stamper, Option<ReplayServer>)> {
    let mut store = ReplayStore::open(path)
        .with_context(|| format!("cannot open the replay store {}", path.display()))?;
    store.set_retention(config.replay_retention_duration());
    let server = match config.replay_endpoints.get(OUTBOUND_NAME) {
        Some(url) => {
            let serving = ReplayStore::open(path)
                .with_context(|| format!("cannot open the replay store {}", path.display()))?;
            let bind = replay_server::bind_address(url);
            let server =
                ReplayServer::start(ctx, &bind, OUTBOUND_NAME, serving, ReplayLimits::default())
                    .context("cannot start the replay server (replay_endpoints.relay_outbound)")?;
            Some(server)
        }
        None => {
            tracing::warn!(
                "--store without replay_endpoints.relay_outbound: messages are stamped and stored, \
                 but nobody can ask for them"
            );
            None
        }
    };
    if let Some(n) = drop_every {
        tracing::warn!(
            every = n,
            "test switch on: every Nth message is stored but not sent"
        );
    }
    let stamper = Stamper {
        store,
        drop_every,
        stamped: 0,
        unstamped: 0,
        test_dropped: 0,
        log: LogLimiter::default(),
    };
    Ok((stamper, server))
}

fn bind_inbound(ctx: &zmq::Context, config: &Config) -> anyhow::Result<zmq::Socket> {
    if config.relay_inbound.is_empty() {
        bail!("relay_inbound is not configured");
    }
    let socket = ctx
        .socket(zmq::SUB)
        .context("cannot create the inbound socket")?;
    let hwm = i32::try_from(config.high_water_mark).unwrap_or(i32::MAX);
    socket
        .set_rcvhwm(hwm)
        .and_then(|()| socket.set_linger(0))
        .and_then(|()| socket.set_subscribe(b""))
        .context("cannot configure the inbound socket")?;
    for url in &config.relay_inbound {
        socket
            .bind(url)
            .with_context(|| format!("cannot bind relay_inbound {url}"))?;
    }
    Ok(socket)
}

fn bind_outbound(ctx: &zmq::Context, config: &Config) -> anyhow::Result<PubSocket> {
    let urls = config
        .endpoints
        .get("relay_outbound")
        .cloned()
        .unwrap_or_default();
    let attach = Attach::Bind {
        name: "relay_outbound".into(),
        urls,
    };
    PubSocket::open(ctx, &attach, &SocketOptions::from_config(config))
        .context("cannot bind the outbound socket (endpoints.relay_outbound)")
}

#[derive(Debug, Default)]
struct Counts {
    forwarded: u64,
    dropped: u64,
}

fn forward(
    inbound: &zmq::Socket,
    mut outbound: PubSocket,
    mut stamper: Option<&mut Stamper>,
    stop: &Stop,
) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    let odd_log = LogLimiter::default();
    while !stop.is_triggered() {
        match inbound.poll(zmq::POLLIN, POLL_MS) {
            Ok(0) | Err(zmq::Error::EINTR) => {
                outbound.poll_subscriptions();
                continue;
            }
            Ok(_) => {}
            Err(e) => return Err(e).context("polling the inbound socket failed"),
        }
        for _ in 0..BATCH {
            let frames = match inbound.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => break,
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(e).context("receiving failed"),
            };
            if frames.len() != 2 {
                counts.dropped += 1;
                if let Some(suppressed) = odd_log.check() {
                    tracing::warn!(
                        frames = frames.len(),
                        suppressed,
                        "dropped a message that is not [topic, body]"
                    );
                }
                continue;
            }
            match stamper.as_deref_mut() {
                None => outbound.send_frames(&frames)?,
                Some(stamper) => {
                    let Some(body) = stamper.stamp(&frames[1]) else {
                        continue;
                    };
                    outbound.send(&frames[0], &body)?;
                }
            }
            counts.forwarded += 1;
        }
        outbound.poll_subscriptions();
    }
    Ok(counts)
}
