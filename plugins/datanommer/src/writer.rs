//! The writer thread: takes rows from a bounded queue and commits them in
//! batches, retrying (with backoff) while the database is unavailable.
//!
//! - A batch commits when it holds `batch_size` rows or `flush_interval`
//!   after its first row arrived, whichever comes first.
//! - While the database is down the writer keeps its batch and retries;
//!   new rows wait in the queue. Nothing accepted is lost unless the queue
//!   overflows (the producer sees [`Writer::submit`] fail and counts it).
//! - A batch the database refuses because of a row's data is retried row
//!   by row, so one bad message costs only itself (logged with its
//!   `msg_id`, counted as `failed`).
//! - At shutdown the queue is closed, everything in it is committed, and a
//!   database that stays down is retried for `shutdown_timeout` only; what
//!   is left then is counted as `lost` and logged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use fedmsg_plugin_api::tracing;

use crate::row::Row;
use crate::store::{DbUrl, Store, StoreError};

/// First pause after a failure; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Rows per transaction at most.
    pub batch_size: usize,
    /// Longest time a row waits for its batch to fill.
    pub flush_interval: Duration,
    /// Rows the queue holds before [`Writer::submit`] refuses more.
    pub queue_capacity: usize,
    /// How long shutdown keeps retrying an unavailable database.
    pub shutdown_timeout: Duration,
}

/// Counters, shared with the plugin.
#[derive(Debug, Default)]
pub struct Stats {
    /// Rows committed.
    pub inserted: AtomicU64,
    /// Rows skipped: their `msg_id` was already stored.
    pub duplicates: AtomicU64,
    /// Rows refused by the database (their data), dropped.
    pub failed: AtomicU64,
    /// Rows refused because the queue was full.
    pub overflowed: AtomicU64,
    /// Rows still unwritten when shutdown gave up on the database.
    pub lost: AtomicU64,
    /// Failed attempts to write (or connect) that were retried.
    pub retries: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The counters now, for logs and tests.
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            inserted: load(&self.inserted),
            duplicates: load(&self.duplicates),
            failed: load(&self.failed),
            overflowed: load(&self.overflowed),
            lost: load(&self.lost),
            retries: load(&self.retries),
        }
    }
}

/// The writer's [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Rows committed.
    pub inserted: u64,
    /// Rows skipped: their `msg_id` was already stored.
    pub duplicates: u64,
    /// Rows refused by the database (their data), dropped.
    pub failed: u64,
    /// Rows refused because the queue was full.
    pub overflowed: u64,
    /// Rows still unwritten when shutdown gave up on the database.
    pub lost: u64,
    /// Failed attempts to write (or connect) that were retried.
    pub retries: u64,
}

/// A row [`Writer::submit`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFull {
    /// The refused message's `msg_id`.
    pub msg_id: String,
}

/// The producer side of the writer thread.
pub struct Writer {
    tx: Option<Sender<Row>>,
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
    stats: Arc<Stats>,
    shutdown_timeout: Duration,
}

impl Writer {
    /// Starts the thread. `store` is an already open connection (or `None`
    /// to connect on the first batch).
    pub fn spawn(
        url: DbUrl,
        store: Option<Store>,
        config: WriterConfig,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = bounded(config.queue_capacity.max(1));
        let (done_tx, done) = bounded(1);
        let stopping = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let mut state = Loop {
            url,
            store,
            rx,
            stopping: stopping.clone(),
            stats: stats.clone(),
            config: config.clone(),
            give_up_at: None,
            failing_since: None,
        };
        let thread = std::thread::Builder::new()
            .name("datanommer-writer".into())
            .spawn(move || {
                state.run();
                let _ = done_tx.send(());
            })?;
        Ok(Writer {
            tx: Some(tx),
            done,
            thread: Some(thread),
            stopping,
            stats,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// Queues a row; refuses it (counted as `overflowed`) when the queue
    /// is full or closed.
    pub fn submit(&self, row: Row) -> Result<(), QueueFull> {
        let refused = match &self.tx {
            Some(tx) => match tx.try_send(row) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(row)) | Err(TrySendError::Disconnected(row)) => row,
            },
            None => row,
        };
        Stats::add(&self.stats.overflowed, 1);
        Err(QueueFull {
            msg_id: refused.msg_id,
        })
    }

    /// Rows waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.as_ref().map_or(0, Sender::len)
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Closes the queue and waits until everything queued is committed or
    /// given up. Bounded: it stops waiting when the writer has made no
    /// progress for `shutdown_timeout` plus a margin (a long queue being
    /// written is waited for; a writer stuck in the driver is not).
    pub fn shutdown(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.tx = None;
        let Some(thread) = self.thread.take() else {
            return;
        };
        let patience = self.shutdown_timeout + Duration::from_secs(5);
        let progress = |s: &Stats| {
            let s = s.snapshot();
            s.inserted + s.duplicates + s.failed + s.lost
        };
        let mut last = progress(&self.stats);
        let mut idle_since = Instant::now();
        loop {
            match self.done.recv_timeout(Duration::from_millis(200)) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    let _ = thread.join();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = progress(&self.stats);
                    if now != last {
                        (last, idle_since) = (now, Instant::now());
                    } else if idle_since.elapsed() >= patience {
                        // Stuck inside the database driver: leave the
                        // thread; the process is about to exit anyway.
                        tracing::error!(
                            waited_s = patience.as_secs_f64(),
                            "datanommer writer made no progress; abandoning it"
                        );
                        return;
                    }
                }
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The writer thread's state.
struct Loop {
    url: DbUrl,
    store: Option<Store>,
    rx: Receiver<Row>,
    stopping: Arc<AtomicBool>,
    stats: Arc<Stats>,
    config: WriterConfig,
    /// Set when shutdown started while the database was failing.
    give_up_at: Option<Instant>,
    /// When the current run of failures started (for the recovery log).
    failing_since: Option<Instant>,
}

impl Loop {
    fn run(&mut self) {
        let mut batch: Vec<Row> = Vec::with_capacity(self.config.batch_size);
        while let Ok(first) = self.rx.recv() {
            batch.push(first);
            let deadline = Instant::now() + self.config.flush_interval;
            let mut closed = false;
            while batch.len() < self.config.batch_size {
                match self.rx.recv_deadline(deadline) {
                    Ok(row) => batch.push(row),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if !self.write(&mut batch) {
                // Gave up (shutdown with the database down): count the rest.
                let left = batch.len() + self.rx.len();
                Stats::add(&self.stats.lost, left);
                tracing::error!(
                    lost = left,
                    url = %self.url.redacted(),
                    "datanommer: database still unavailable at shutdown; messages not stored"
                );
                return;
            }
            if closed {
                break;
            }
        }
        let s = self.stats.snapshot();
        tracing::info!(
            inserted = s.inserted,
            duplicates = s.duplicates,
            failed = s.failed,
            overflowed = s.overflowed,
            lost = s.lost,
            retries = s.retries,
            "datanommer writer stopped"
        );
    }

    /// Writes the batch, retrying while the database is unavailable.
    /// Returns false only when shutdown gave up (the batch is kept).
    fn write(&mut self, batch: &mut Vec<Row>) -> bool {
        let mut backoff = MIN_BACKOFF;
        while !batch.is_empty() {
            let result = match self.connection() {
                Ok(store) => store.insert_batch(batch),
                Err(e) => Err(e),
            };
            let e = match result {
                Ok(done) => {
                    self.recovered();
                    Stats::add(&self.stats.inserted, done.inserted);
                    Stats::add(&self.stats.duplicates, done.duplicates.len());
                    for &index in &done.duplicates {
                        tracing::debug!(
                            topic = %batch[index].topic,
                            msg_id = %batch[index].msg_id,
                            "skipping message with duplicate id"
                        );
                    }
                    if !done.duplicates.is_empty() {
                        tracing::info!(
                            duplicates = done.duplicates.len(),
                            batch = batch.len(),
                            "skipped messages whose msg_id is already stored"
                        );
                    }
                    batch.clear();
                    return true;
                }
                Err(e) if e.is_row_error() => match self.one_by_one(batch) {
                    Ok(()) => return true,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            // The database (or the connection) failed: keep the batch.
            self.store = None;
            Stats::add(&self.stats.retries, 1);
            if self.stopping.load(Ordering::SeqCst) {
                let give_up_at = *self
                    .give_up_at
                    .get_or_insert_with(|| Instant::now() + self.config.shutdown_timeout);
                if Instant::now() >= give_up_at {
                    return false;
                }
            }
            let first = self.failing_since.is_none();
            self.failing_since.get_or_insert_with(Instant::now);
            tracing::warn!(
                error = %e,
                url = %self.url.redacted(),
                batch = batch.len(),
                queued = self.rx.len(),
                retry_in_ms = backoff.as_millis() as u64,
                first_failure = first,
                "datanommer: database unavailable; keeping messages and retrying"
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        true
    }

    /// After a batch failed on a row's data: each row in its own
    /// transaction; rows the database refuses are dropped and logged. On an
    /// availability error the rows not yet written stay in `batch`.
    fn one_by_one(&mut self, batch: &mut Vec<Row>) -> Result<(), StoreError> {
        let mut written = 0;
        let result = (|| {
            for row in batch.iter() {
                let store = self.connection()?;
                match store.insert_batch(std::slice::from_ref(row)) {
                    Ok(done) => {
                        Stats::add(&self.stats.inserted, done.inserted);
                        Stats::add(&self.stats.duplicates, done.duplicates.len());
                    }
                    Err(e) if e.is_row_error() => {
                        Stats::add(&self.stats.failed, 1);
                        tracing::error!(
                            error = %e,
                            topic = %row.topic,
                            msg_id = %row.msg_id,
                            "datanommer: the database refused this message; dropped"
                        );
                    }
                    Err(e) => return Err(e),
                }
                written += 1;
            }
            Ok(())
        })();
        batch.drain(..written);
        result
    }

    fn connection(&mut self) -> Result<&mut Store, StoreError> {
        let store = match self.store.take() {
            Some(store) => store,
            None => Store::open(&self.url, true)?,
        };
        Ok(self.store.insert(store))
    }

    fn recovered(&mut self) {
        if let Some(since) = self.failing_since.take() {
            tracing::info!(
                url = %self.url.redacted(),
                down_s = since.elapsed().as_secs_f64(),
                queued = self.rx.len(),
                "datanommer: database available again; writing the queued messages"
            );
        }
    }
}
