//! The monitoring report (reference §10.4): the JSON frame a hub publishes
//! on its monitoring socket, in moksha's `MonitoringProducer` shape, which
//! `fedmsg-check` (ours and fedmsg's) reads.
//!
//! `{"consumers": [...], "producers": [...], "hub": {...}}`. Each consumer
//! has moksha's fields (`name`, `module`, `topic`, `initialized`,
//! `exceptions`, `jsonify`, `backlog`, `headcount_in`, `headcount_out`,
//! `times`), where, as in moksha, `exceptions`, the headcounts and `times`
//! count only since the previous report, and `backlog` is the number of
//! messages waiting in the plugin's queue. Our own fields follow (moksha
//! readers ignore unknown fields). Every field is optional when reading, so
//! that a Python hub's report parses too. The hub's reporting thread is
//! `fedmsg_hub`'s `monitor` module.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The window of a consumer's `recent` counters.
pub const RECENT_WINDOW: Duration = Duration::from_secs(60);

/// One monitoring message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// The consumers (plugins).
    pub consumers: Vec<ConsumerReport>,
    /// The producers (the monitor itself, the hub publisher).
    pub producers: Vec<ProducerReport>,
    /// Hub-wide counters (absent from moksha's reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubReport>,
}

/// One consumer: moksha's fields, then ours (all optional when reading, so
/// that a Python hub's report parses too).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerReport {
    /// Plugin name (moksha: the class name).
    pub name: String,
    /// The plugin's file (moksha: the Python module).
    pub module: String,
    /// Topic globs (moksha: a string or a list).
    pub topic: serde_json::Value,
    /// False once disabled, or when it never started.
    pub initialized: bool,
    /// Errors and panics since the previous report.
    pub exceptions: u64,
    /// Always true (plugins get JSON).
    pub jsonify: bool,
    /// Messages waiting in the plugin's queue.
    pub backlog: u64,
    /// Consumed since the previous report.
    pub headcount_out: u64,
    /// Queued since the previous report.
    pub headcount_in: u64,
    /// Processing times (s) since the previous report; we keep only the
    /// last one.
    pub times: Vec<f64>,
    /// `running`, `disabled` or `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why the plugin failed, for `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Plugin version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Cumulative counters since the hub started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<Counters>,
    /// The counters over the last [`RECENT_WINDOW`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent: Option<Window>,
    /// Capacity of the plugin's queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<u64>,
    /// Seconds the last `consume` took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_processing_time: Option<f64>,
}

/// A plugin's message counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Queued for the plugin.
    pub received: u64,
    /// Consumed successfully.
    pub consumed: u64,
    /// `consume` errors.
    pub errors: u64,
    /// `consume` panics.
    pub panics: u64,
    /// Dropped for the plugin (queue full, disabled).
    pub dropped: u64,
    /// Skipped as already delivered (`dedup_window`).
    pub duplicates: u64,
    /// Stamped more than a few seconds in the future: delivered, but the
    /// status position used the local clock instead of their timestamp.
    pub future_timestamps: u64,
}

impl Counters {
    /// The difference `self - earlier`, saturating at 0.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            received: self.received.saturating_sub(earlier.received),
            consumed: self.consumed.saturating_sub(earlier.consumed),
            errors: self.errors.saturating_sub(earlier.errors),
            panics: self.panics.saturating_sub(earlier.panics),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            duplicates: self.duplicates.saturating_sub(earlier.duplicates),
            future_timestamps: self
                .future_timestamps
                .saturating_sub(earlier.future_timestamps),
        }
    }
}

/// Counters over a recent window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Window {
    /// How long the window really is (shorter right after start).
    pub seconds: f64,
    /// The counters in it.
    #[serde(flatten)]
    pub counters: Counters,
}

/// One producer: moksha's fields, then ours.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProducerReport {
    /// Name.
    pub name: String,
    /// Module.
    pub module: String,
    /// False when it does not work.
    pub initialized: bool,
    /// Failures since the previous report.
    pub exceptions: u64,
    /// Polling interval in s (polling producers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency: Option<f64>,
    /// Epoch time of this report (polling producers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub now: Option<f64>,
    /// Epoch time of the last periodic run (polling producers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ran: Option<f64>,
    /// The publisher's bound endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Why it does not work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Messages sent (cumulative).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<u64>,
    /// Messages dropped (cumulative).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// Messages that failed (cumulative).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
    /// Messages waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
}

/// Hub-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HubReport {
    /// Process id.
    pub pid: u32,
    /// Hub version.
    pub version: String,
    /// Epoch time the hub started.
    pub started: f64,
    /// Seconds since start.
    pub uptime: f64,
    /// Messages received from sockets.
    pub received: u64,
    /// Messages accepted by ingest.
    pub accepted: u64,
    /// Ingest rejections by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Signature validation failures by reason.
    pub invalid: BTreeMap<String, u64>,
    /// seq_id replay counters, when some plugin gets replay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplaySnapshot>,
    /// Why signature validation cannot succeed (CA or CRL unavailable),
    /// when a plugin validates and that is so: every signed message is
    /// being rejected. `fedmsg-check` is CRITICAL on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_problem: Option<String>,
}

/// The replay counters at one moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ReplaySnapshot {
    /// Gaps detected (each one a fetch).
    pub gaps: u64,
    /// Messages obtained by replay and delivered.
    pub replayed: u64,
    /// Fetches that failed (timeout, dead endpoint, error frame) or were
    /// given up because the hold overflowed.
    pub failures: u64,
    /// `seq_id`s of detected gaps that could not be recovered.
    pub missing: u64,
    /// Live messages dropped for replay plugins as already seen.
    pub duplicates: u64,
}
