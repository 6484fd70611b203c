//! The messages of a workload, built (and signed) before anything is sent,
//! so that sending costs only a zmq send per frame.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use fedmsg_wire::crypto::Signer;
use fedmsg_wire::envelope;
use serde_json::{json, Map, Value};

/// The topic every benchmark message is published on. `shared/pyfedmsg`'s
/// `routing_policy` lists it (signer `shell-app01`), so neither hub logs a
/// warning per message.
pub const TOPIC: &str = "org.fedoraproject.dev.bench.msg";

/// One message as it goes on the wire: `[topic, body]`.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The zmq topic frame.
    pub topic: Vec<u8>,
    /// The envelope, as fedmsg writes it (sorted keys, compact, ASCII).
    pub body: Vec<u8>,
    /// The envelope's `msg_id`, which sinks report back with receive times.
    pub msg_id: String,
}

/// What signing a batch cost.
#[derive(Debug, Clone, Copy)]
pub struct SignCost {
    /// Messages signed.
    pub messages: usize,
    /// Threads that signed.
    pub threads: usize,
    /// CPU seconds of all signing threads together.
    pub cpu_s: f64,
    /// Wall-clock seconds.
    pub wall_s: f64,
}

impl SignCost {
    /// Messages per CPU second, i.e. per core.
    pub fn per_core(&self) -> f64 {
        if self.cpu_s > 0.0 {
            self.messages as f64 / self.cpu_s
        } else {
            0.0
        }
    }
}

/// The envelope `FedMsgContext.publish` builds for `bench_publish.py`'s
/// payload (`{"seq": i, "payload": 16 * "x"}`), before signing.
pub fn envelope_for(seq: u64, msg_id: &str, timestamp: u64) -> Map<String, Value> {
    let value = json!({
        "topic": TOPIC,
        "msg": {"seq": seq, "payload": "x".repeat(16)},
        "timestamp": timestamp,
        "msg_id": msg_id,
        "i": seq + 1,
        "username": "bench",
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A fedmsg `msg_id`: `<year>-<uuid4>`.
pub fn new_msg_id(now_s: u64) -> String {
    format!("{}-{}", year_of(now_s), uuid::Uuid::new_v4())
}

/// The Gregorian year of a Unix time (Howard Hinnant's `civil_from_days`).
fn year_of(unix_s: u64) -> i64 {
    let days = i64::try_from(unix_s / 86_400).unwrap_or(0) + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn frame_of(map: Map<String, Value>) -> Frame {
    let msg_id = map
        .get("msg_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let body = envelope::to_canonical(&Value::Object(map)).into_bytes();
    Frame {
        topic: TOPIC.as_bytes().to_vec(),
        body,
        msg_id,
    }
}

/// `count` unsigned messages.
pub fn unsigned(count: usize) -> Vec<Frame> {
    let now = unix_s();
    (0..count as u64)
        .map(|seq| frame_of(envelope_for(seq, &new_msg_id(now), now)))
        .collect()
}

/// `count` messages signed by `signer` on `threads` threads, and what the
/// signing cost. Each message goes through what a publisher does per
/// message: build the envelope, sign it, encode it.
pub fn signed(count: usize, signer: &Signer, threads: usize) -> Result<(Vec<Frame>, SignCost)> {
    let threads = threads.clamp(1, count.max(1));
    let now = unix_s();
    let started = Instant::now();
    let chunk = count.div_ceil(threads);
    let results: Vec<Result<(Vec<Frame>, f64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let range = (t * chunk).min(count)..((t + 1) * chunk).min(count);
                scope.spawn(move || sign_range(range, signer, now))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a signing thread panicked")))
            })
            .collect()
    });
    let mut frames = Vec::with_capacity(count);
    let mut cpu_s = 0.0;
    for result in results {
        let (part, cpu) = result?;
        frames.extend(part);
        cpu_s += cpu;
    }
    let cost = SignCost {
        messages: count,
        threads,
        cpu_s,
        wall_s: started.elapsed().as_secs_f64(),
    };
    Ok((frames, cost))
}

fn sign_range(
    range: std::ops::Range<usize>,
    signer: &Signer,
    now: u64,
) -> Result<(Vec<Frame>, f64)> {
    let cpu0 = thread_cpu_s();
    let mut frames = Vec::with_capacity(range.len());
    for seq in range {
        let mut map = envelope_for(seq as u64, &new_msg_id(now), now);
        signer.sign(&mut map).context("signing failed")?;
        frames.push(frame_of(map));
    }
    Ok((frames, thread_cpu_s() - cpu0))
}

/// CPU seconds consumed by the calling thread.
pub fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn years() {
        assert_eq!(year_of(0), 1970);
        assert_eq!(year_of(951_782_400), 2000); // 2000-02-29
        assert_eq!(year_of(1_735_689_599), 2024); // 2024-12-31T23:59:59
        assert_eq!(year_of(1_735_689_600), 2025);
    }

    #[test]
    fn unsigned_frames_look_like_fedmsg() {
        let frames = unsigned(2);
        assert_eq!(frames.len(), 2);
        let body: Value = serde_json::from_slice(&frames[1].body).expect("json");
        assert_eq!(body["topic"], TOPIC);
        assert_eq!(body["i"], 2);
        assert_eq!(body["msg"]["seq"], 1);
        assert_eq!(body["msg_id"], frames[1].msg_id.as_str());
        let text = std::str::from_utf8(&frames[1].body).expect("ascii");
        assert!(text.starts_with("{\"i\":2,\"msg\":{\"payload\":"), "{text}");
    }
}
