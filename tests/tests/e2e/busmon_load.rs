//! busmon under load: 5,000 messages a second for 10 seconds through a
//! hub with busmon and `tally`, watched by 20 moksha WebSocket clients, one
//! of which stops reading (and holds a small receive buffer, so that the
//! kernel cannot absorb the stream for it). The 19 others see every message
//! in order; tally consumes every message (busmon costs the hub's other
//! plugins nothing); the slow client is told what it lost; the hub's peak
//! resident memory stays bounded (printed, with the figures).
//!
//! Debug builds (what CI runs) must keep up: nothing here is scaled down
//! for them. All on loopback, on free ports.

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fedmsg_e2e::bus::free_port;
use fedmsg_e2e::{Hub, Publisher, Sandbox, WAIT};
use tungstenite::{Message, WebSocket};

const RATE: u64 = 5_000;
const SECONDS: u64 = 10;
const TOTAL: u64 = RATE * SECONDS;
const CLIENTS: usize = 20;
/// Messages are published in batches this often.
const TICK: Duration = Duration::from_millis(10);
const TOPIC: &str = "org.test.load.msg";
/// How much the hub's resident memory may grow under the load (KiB): it
/// grows by a few MB (the clients' bounded queues, the plugin queues); the
/// stalled client alone would hold ~100 MB (50,000 envelopes and their
/// frames) if its queue were not bounded.
const RSS_GROWTH_BOUND_KIB: u64 = 48 * 1024;

type Ws = WebSocket<TcpStream>;

/// A ~1 KiB envelope: `msg_id` `load-<n>` (or any id), padded so that an
/// unbounded client queue would show in the hub's memory. Formatted, not
/// built as a JSON value: the test makes 50,000 of them in a debug build.
fn envelope(msg_id: &str) -> String {
    format!(
        "{{\"i\":1,\"msg\":{{\"pad\":\"{}\"}},\"msg_id\":\"{msg_id}\",\"timestamp\":1700000000,\
         \"topic\":\"{TOPIC}\",\"username\":\"load\"}}",
        *PAD
    )
}

static PAD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| "x".repeat(900));

fn send(publisher: &Publisher, msg_id: &str) -> Result<()> {
    publisher.send_frames(&[TOPIC.as_bytes(), envelope(msg_id).as_bytes()])
}

/// A moksha client subscribed to the load topic. `rcvbuf`: a small kernel
/// receive buffer (bytes) for the client that stops reading.
fn client(port: u16, rcvbuf: Option<i32>) -> Result<Ws> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    if let Some(size) = rcvbuf {
        use std::os::fd::AsRawFd;
        // SAFETY: setsockopt on a socket we own, with a c_int of the right size.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        ensure!(rc == 0, "setsockopt: {}", std::io::Error::last_os_error());
    }
    let (mut ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}/"), stream)?;
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))?;
    let frame = serde_json::json!({"topic": "__topic_subscribe__", "body": "org.test.load.*"});
    ws.send(Message::text(frame.to_string()))?;
    Ok(ws)
}

/// The `msg_id` of a frame, found without parsing the JSON (19 clients ×
/// 5,000 frames a second in a debug build: a full parse each would cost
/// the test more CPU than the hub gets).
fn msg_id(frame: &str) -> Option<&str> {
    let start = frame.find("\"msg_id\":\"")? + "\"msg_id\":\"".len();
    let len = frame[start..].find('"')?;
    Some(&frame[start..start + len])
}

/// What a reading client saw.
#[derive(Debug, Default)]
struct Seen {
    /// `load-<n>` messages, all in order.
    load: u64,
    /// Out of order or unexpected frames (the first few).
    wrong: Vec<String>,
    /// `__busmon_skipped__` markers' total.
    skipped: u64,
    probes: u64,
    end: bool,
}

impl Seen {
    fn frame(&mut self, text: &str) {
        if text.starts_with("{\"topic\":\"__busmon_skipped__\"") {
            let n = text
                .split("\"skipped\":")
                .nth(1)
                .and_then(|t| t.trim_end_matches('}').parse::<u64>().ok());
            self.skipped += n.unwrap_or(1);
            return;
        }
        match msg_id(text) {
            Some(id) if id.starts_with("probe") => self.probes += 1,
            Some("end") => self.end = true,
            Some(id)
                if id.strip_prefix("load-").and_then(|n| n.parse().ok()) == Some(self.load) =>
            {
                self.load += 1
            }
            _ => {
                if self.wrong.len() < 5 {
                    self.wrong.push(format!(
                        "after {}: {}",
                        self.load,
                        &text[..text.len().min(200)]
                    ));
                }
            }
        }
    }
}

/// Reads `ws` until the end marker or `stop`.
fn reader(mut ws: Ws, stop: Arc<AtomicBool>) -> JoinHandle<Result<Seen>> {
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        while !seen.end && !stop.load(Ordering::Relaxed) {
            match ws.read() {
                Ok(Message::Text(text)) => seen.frame(text.as_str()),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => bail!("client after {} messages: {e}", seen.load),
            }
        }
        Ok(seen)
    })
}

/// Reads `ws` until a probe arrives (the subscription is live), for at
/// most `patience`.
fn await_probe(ws: &mut Ws, patience: Duration) -> Result<bool> {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(text))
                if msg_id(text.as_str()).is_some_and(|i| i.starts_with("probe")) =>
            {
                return Ok(true)
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => bail!("websocket: {e}"),
        }
    }
    Ok(false)
}

/// `VmHWM` / `VmRSS` of `pid`, KiB.
fn memory_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// CPU seconds (user + system) `pid` has used: `/proc/PID/stat` fields 14
/// and 15, in clock ticks.
fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: the fields follow its ')'.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

fn http_get(port: u16, path: &str) -> Result<String> {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(WAIT))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (_, body) = text.split_once("\r\n\r\n").context("no HTTP head")?;
    Ok(body.to_owned())
}

#[test]
fn busmon_load_5000_per_second_20_websocket_clients_one_stalled() -> Result<()> {
    let mut publisher = Publisher::bind()?;
    let sandbox = Sandbox::new()?;
    sandbox.add_plugin("fedmsg-busmon")?;
    sandbox.add_plugin("fedmsg-example-tally")?;
    let port = free_port()?;
    let tally = sandbox.path().join("tally.jsonl");
    sandbox.write_config(
        "hub.toml",
        &format!(
            "{}\n[tally]\nenabled = true\noutput = {:?}\n\n\
             [busmon]\nenabled = true\nhttp_listen = \"127.0.0.1:{port}\"\n",
            sandbox.base_config(publisher.endpoint()),
            tally.display().to_string(),
        ),
    )?;
    let mut hub = Hub::start(&sandbox, &[])?;
    hub.wait_subscribed(&mut publisher)?;
    let pid = hub.pid().context("hub pid")?;
    let deadline = Instant::now() + WAIT;
    while http_get(port, "/_heartbeat").is_err() {
        ensure!(
            Instant::now() < deadline,
            "busmon never answered:\n{}",
            hub.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Every client subscribed (a probe reached it) before the load starts.
    let mut clients: Vec<Ws> = (0..CLIENTS - 1)
        .map(|_| client(port, None))
        .collect::<Result<_>>()?;
    let mut stalled = client(port, Some(4096))?;
    let mut ready = [false; CLIENTS];
    let deadline = Instant::now() + WAIT;
    for n in 0.. {
        ensure!(
            Instant::now() < deadline,
            "not every client got a probe:\n{}",
            hub.log()
        );
        send(&publisher, &format!("probe-{n}"))?;
        for (i, ws) in clients
            .iter_mut()
            .chain(std::iter::once(&mut stalled))
            .enumerate()
        {
            if !ready[i] {
                ready[i] = await_probe(ws, Duration::from_millis(100))?;
            }
        }
        if ready.iter().all(|r| *r) {
            break;
        }
    }
    let rss_before = memory_kib(pid, "VmRSS")?;
    // The peak of the start (the hub reads each plugin file whole to vet
    // it: ~100 MB for a debug busmon) is not the load's: reset the high
    // water mark to the current RSS (Linux's clear_refs, value 5).
    let start_hwm = memory_kib(pid, "VmHWM")?;
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("reset the hub's VmHWM")?;

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = clients
        .into_iter()
        .map(|ws| reader(ws, Arc::clone(&stop)))
        .collect();

    // 5,000 a second: a batch every tick, on an absolute schedule (a late
    // tick sends more, so the rate over the run holds).
    let per_tick = RATE * TICK.as_millis() as u64 / 1000;
    let cpu_before = cpu_secs(pid)?;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut peak_rss = rss_before;
    let mut tick = 0u64;
    while sent < TOTAL {
        tick += 1;
        let due = (tick * per_tick).min(TOTAL);
        while sent < due {
            send(&publisher, &format!("load-{sent}"))?;
            sent += 1;
        }
        if tick.is_multiple_of(50) {
            peak_rss = peak_rss.max(memory_kib(pid, "VmRSS")?);
        }
        let next = start + TICK * tick as u32;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let publish_secs = start.elapsed().as_secs_f64();
    send(&publisher, "end")?;

    // The readers end at the end marker; bounded.
    let deadline = Instant::now() + WAIT;
    while readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let drained_secs = start.elapsed().as_secs_f64();
    let hub_cpu = cpu_secs(pid)? - cpu_before;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for r in readers {
        seen.push(
            r.join()
                .map_err(|_| anyhow::anyhow!("a reader panicked"))??,
        );
    }
    let stats: serde_json::Value = serde_json::from_str(&http_get(port, "/api/stats")?)?;
    let hwm = memory_kib(pid, "VmHWM")?;
    peak_rss = peak_rss.max(memory_kib(pid, "VmRSS")?);
    drop(stalled);
    ensure!(hub.terminate()?.success(), "{}", hub.log());
    let tally_stats = hub.plugin_stats("fedmsg-example-tally")?;
    let busmon_stats = hub.plugin_stats("fedmsg-busmon")?;
    let tally_lines = std::fs::read_to_string(&tally)?
        .lines()
        .filter(|l| l.contains("\"load-"))
        .count() as u64;

    let counts: Vec<u64> = seen.iter().map(|s| s.load).collect();
    println!(
        "busmon load: {TOTAL} messages published in {publish_secs:.2} s ({:.0}/s), all read by \
         {:.2} s (hub CPU {hub_cpu:.1} s); per reading client: {counts:?}; skipped by the stalled client: {}; tally: {} \
         lines, consumed {}, dropped {}; busmon consumed {}, dropped {}; hub RSS before {} KiB, \
         peak sampled {} KiB, VmHWM during the load {} KiB (at start {} KiB)",
        TOTAL as f64 / publish_secs,
        drained_secs,
        stats["skipped"],
        tally_lines,
        tally_stats["consumed"],
        tally_stats["dropped"],
        busmon_stats["consumed"],
        busmon_stats["dropped"],
        rss_before,
        peak_rss,
        hwm,
        start_hwm,
    );
    for (i, s) in seen.iter().enumerate() {
        ensure!(
            s.load == TOTAL && s.end && s.skipped == 0 && s.wrong.is_empty(),
            "client {i} saw {} of {TOTAL} (end: {}, skipped: {}, wrong: {:?})",
            s.load,
            s.end,
            s.skipped,
            s.wrong
        );
    }
    ensure!(tally_lines == TOTAL, "tally wrote {tally_lines} of {TOTAL}");
    ensure!(tally_stats["dropped"] == 0, "{tally_stats}");
    ensure!(busmon_stats["dropped"] == 0, "{busmon_stats}");
    // The stalled client lost messages (it was told when it came back, had
    // it come back) instead of growing the hub.
    ensure!(stats["skipped"].as_u64() > Some(0), "{stats}");
    ensure!(
        hwm.saturating_sub(rss_before) < RSS_GROWTH_BOUND_KIB,
        "the hub grew from {rss_before} KiB to {hwm} KiB under load (bound: +{RSS_GROWTH_BOUND_KIB} KiB)"
    );
    ensure!(
        publish_secs < SECONDS as f64 * 1.5,
        "the test could not publish at {RATE}/s: {publish_secs:.2} s"
    );
    Ok(())
}
