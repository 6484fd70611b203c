//! The hub's counters at exit: logged as a summary, and written as JSON to
//! `--stats-file` (which the end-to-end tests read). While the hub runs,
//! the same counters go out on the monitoring socket ([`crate::monitor`]).

use std::collections::BTreeMap;
use std::path::Path;

use fedmsg_wire::ingest::IngestStats;
use fedmsg_wire::report::{Counters, ReplaySnapshot};
use serde::Serialize;

use crate::publisher::PublisherSnapshot;
use crate::worker::WorkerHandle;

/// The counters of a finished (or running) hub, as written to the stats file.
#[derive(Debug, Serialize)]
pub struct StatsSnapshot {
    /// Messages received from sockets.
    pub received: u64,
    /// Messages accepted by ingest.
    pub accepted: u64,
    /// Rejections by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Signature validation failures by reason.
    pub invalid: BTreeMap<&'static str, u64>,
    /// Per-plugin counters.
    pub plugins: Vec<PluginSnapshot>,
    /// The hub publisher's counters, when the hub has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<PublisherSnapshot>,
    /// seq_id replay counters, when some plugin gets replay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplaySnapshot>,
}

/// One plugin's counters.
#[derive(Debug, Serialize)]
pub struct PluginSnapshot {
    /// Plugin name.
    pub name: String,
    /// Its message counters.
    #[serde(flatten)]
    pub counters: Counters,
    /// Still queued.
    pub backlog: usize,
    /// Disabled after panics.
    pub disabled: bool,
}

impl StatsSnapshot {
    /// The counters now.
    pub fn of(ingest: &IngestStats, workers: &[WorkerHandle]) -> StatsSnapshot {
        StatsSnapshot {
            received: ingest.received(),
            accepted: ingest.accepted(),
            rejected: ingest.rejected(),
            invalid: ingest.invalid(),
            plugins: workers
                .iter()
                .map(|w| PluginSnapshot {
                    name: w.name.clone(),
                    counters: w.stats.counters(),
                    backlog: w.queue.len(),
                    disabled: w.stats.is_disabled(),
                })
                .collect(),
            publisher: None,
            replay: None,
        }
    }

    /// Logs the counters (at exit).
    pub fn log(&self) {
        tracing::info!(
            received = self.received,
            accepted = self.accepted,
            "ingest summary"
        );
        for (reason, count) in &self.rejected {
            tracing::info!(reason, count, "ingest rejections");
        }
        for (reason, count) in &self.invalid {
            tracing::info!(reason, count, "validation failures");
        }
        for p in &self.plugins {
            tracing::info!(
                plugin = %p.name,
                received = p.counters.received,
                consumed = p.counters.consumed,
                errors = p.counters.errors,
                panics = p.counters.panics,
                dropped = p.counters.dropped,
                disabled = p.disabled,
                "plugin summary"
            );
        }
    }

    /// Writes the counters as JSON to `path` (atomically: a reader sees the
    /// old file or the new one); a failure is logged.
    pub fn write(&self, path: &Path) {
        let written = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, path)
            });
        if let Err(error) = written {
            tracing::error!(path = %path.display(), %error, "cannot write the stats file");
        }
    }
}
