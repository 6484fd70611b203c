//! `fedmsg-relay`: the active-to-passive relay of reference §1.6.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use fedmsg_hub::cli::{self, CommonArgs};
use fedmsg_hub::config::{Config, ConfigArgs};
use fedmsg_hub::publish::{Attach, PubSocket, SocketOptions};
use fedmsg_hub::ratelimit::LogLimiter;
use signal_hook::consts::{SIGINT, SIGTERM};

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
}

/// How long the loop waits for input before looking at the stop flag.
const POLL_MS: i64 = 100;

/// Messages taken from the inbound socket before checking the stop flag.
const BATCH: usize = 4096;

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_logging(args.log_level.as_deref(), "info");
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
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    let ctx = zmq::Context::new();
    let inbound = bind_inbound(&ctx, &config)?;
    let outbound = bind_outbound(&ctx, &config)?;
    tracing::info!(
        inbound = %config.relay_inbound.join(", "),
        outbound = %outbound.endpoints().join(", "),
        "fedmsg-relay started"
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let counts = forward(&inbound, outbound, &stop)?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!(
        forwarded = counts.forwarded,
        dropped = counts.dropped,
        "fedmsg-relay stopped"
    );
    Ok(())
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
    stop: &AtomicBool,
) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    let odd_log = LogLimiter::default();
    while !stop.load(Ordering::Relaxed) {
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
            outbound.send_frames(&frames)?;
            counts.forwarded += 1;
        }
        outbound.poll_subscriptions();
    }
    Ok(counts)
}
