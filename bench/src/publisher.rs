//! The benchmark publisher: an XPUB socket with an unlimited high-water mark
//! that sends pre-built frames, either as fast as possible or paced.
//!
//! XPUB rather than PUB: subscriptions arrive as messages, so the driver
//! knows when the hub is really listening instead of sleeping through zmq's
//! slow-joiner window (PUB/SUB drops whatever is sent before that).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::frames::Frame;
use crate::unix_ns;

/// What was sent, and when.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    /// Messages handed to zmq.
    pub count: usize,
    /// Unix time (ns) just before the first send.
    pub start_ns: u64,
    /// Unix time (ns) just after the last send.
    pub end_ns: u64,
    /// Per message, the Unix time (ns) just before its send (paced runs only).
    pub send_ns: Vec<u64>,
}

impl Sent {
    /// Messages per second the publisher achieved.
    pub fn rate(&self) -> f64 {
        let seconds = self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9;
        if seconds > 0.0 {
            self.count as f64 / seconds
        } else {
            0.0
        }
    }
}

/// A bound XPUB socket.
pub struct Publisher {
    socket: zmq::Socket,
    endpoint: String,
    _ctx: zmq::Context,
}

impl Publisher {
    /// Binds on a free loopback port.
    pub fn bind() -> Result<Publisher> {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::XPUB)?;
        // 0 = unlimited: the publisher never drops, whatever the hub's pace
        // (fedmsg's default of 1000 loses messages to a slow hub).
        socket.set_sndhwm(0)?;
        socket.set_linger(0)?;
        socket
            .bind("tcp://127.0.0.1:*")
            .context("cannot bind the publisher")?;
        let endpoint = socket
            .get_last_endpoint()?
            .map_err(|_| anyhow::anyhow!("endpoint is not UTF-8"))?;
        Ok(Publisher {
            socket,
            endpoint,
            _ctx: ctx,
        })
    }

    /// The URL the hub must connect to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Waits until a subscription arrives, calling `alive` between polls so
    /// that a hub that died is reported at once. Bounded by `timeout`.
    pub fn wait_subscribed(
        &self,
        timeout: Duration,
        mut alive: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            alive()?;
            if self.socket.poll(zmq::POLLIN, 100)? > 0 {
                let frame = self.socket.recv_bytes(0)?;
                if frame.first() == Some(&1) {
                    return Ok(());
                }
            }
        }
        bail!("nobody subscribed to {} within {timeout:?}", self.endpoint)
    }

    /// Sends every frame as fast as zmq takes them.
    pub fn burst(&self, frames: &[Frame]) -> Result<Sent> {
        let start_ns = unix_ns();
        for frame in frames {
            self.send(frame)?;
        }
        Ok(Sent {
            count: frames.len(),
            start_ns,
            end_ns: unix_ns(),
            send_ns: Vec::new(),
        })
    }

    /// Sends `rate` frames per second, recording each send time. Pacing
    /// sleeps (no busy wait, which would steal a core from the hub); a late
    /// wake-up shifts one message, not the schedule.
    pub fn paced(
        &self,
        frames: &[Frame],
        rate: f64,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Sent> {
        let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
        let mut send_ns = Vec::with_capacity(frames.len());
        let origin = Instant::now();
        let start_ns = unix_ns();
        for (i, frame) in frames.iter().enumerate() {
            let due = origin + interval * u32::try_from(i).unwrap_or(u32::MAX);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if i % 256 == 0 && interrupted() {
                bail!("interrupted");
            }
            send_ns.push(unix_ns());
            self.send(frame)?;
        }
        Ok(Sent {
            count: frames.len(),
            start_ns,
            end_ns: unix_ns(),
            send_ns,
        })
    }

    fn send(&self, frame: &Frame) -> Result<()> {
        self.socket.send(&frame.topic[..], zmq::SNDMORE)?;
        self.socket.send(&frame.body[..], 0)?;
        Ok(())
    }
}
