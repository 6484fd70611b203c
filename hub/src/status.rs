//! Delivery guarantee: per-plugin status files, how far each plugin got,
//! so that a restarted hub can fetch exactly what the plugin missed (see
//! [`crate::catchup`]).
//!
//! # What is recorded
//!
//! `<status_directory>/<plugin>.json` holds the plugin's [`Position`]:
//!
//! * `msg_id` / `timestamp`: the last message the plugin *finished*
//!   (`consume` returned, successfully or not: a failed message is not
//!   retried live either);
//! * `resume_from`: the epoch second the catch-up starts from (inclusive);
//! * `finished`: every `msg_id` finished with a timestamp in
//!   `resume_from..`, grouped by second. fedmsg timestamps have a resolution
//!   of one second, so a timestamp alone cannot tell which of the messages of
//!   that second were done; with the ids the catch-up skips exactly those;
//! * `seq_ids`: the last `seq_id` finished per sender name (replay, see
//!   [`crate::replay`]), so gap detection can resume where it stopped.
//!
//! `resume_from` trails the newest finished second by
//! [`StatusOptions::reorder_window_secs`] (default 2 s). Messages of
//! different publishers arrive slightly out of timestamp order (clock skew,
//! network paths); a message that arrives late by up to that window and was
//! not finished at a crash is still found by the catch-up, and the ids kept
//! for the window make sure nothing finished is delivered twice. This is
//! upstream's "last timestamp" rule (§4.5) made exact: with a window of 0 it
//! is the last timestamp second and the ids finished within it.
//!
//! A fresh file (no status yet) is written at [`StatusFile::open`] with
//! `resume_from` = now − window and no message: if the hub dies before its
//! plugin finishes anything, the restart still fetches what was published
//! since the first start.
//!
//! # Why a crash can only make the position older
//!
//! 1. The in-memory position changes only in [`StatusFile::record_finished`],
//!    which the plugin worker calls *after* `consume` returned; so the
//!    in-memory position never covers a message that was not finished.
//! 2. A flush serialises that position into a temporary file, `fsync`s it,
//!    renames it over the status file and `fsync`s the directory. `rename`
//!    is atomic: after a crash (process or power) the file is either the
//!    previous complete snapshot or the new complete one, never a mix, and
//!    the data is durable before the name points at it.
//! 3. Every snapshot was, at the moment it was taken, a position the plugin
//!    had reached; later snapshots only add finished messages. So what a
//!    crash leaves on disk is some earlier (older or equal) position: the
//!    restart re-fetches a little more and skips what the ids say was done,
//!    never the reverse. The bounded flush rate (at most once per
//!    [`StatusOptions::flush_interval`], plus [`StatusFile::flush`] at
//!    shutdown) only bounds how much older.
//!
//! Only two things can make a restart deliver a message twice: more
//! finished ids in the window than [`StatusOptions::max_finished_ids`]
//! (logged; the newest second keeps recording until the cap, beyond which
//! those ids are not kept), and a message without `msg_id`. Only a message
//! arriving more than the reorder window late *and* unfinished at a crash
//! can be missed.
//!
//! # Format
//!
//! Versioned JSON, written compactly:
//! `{"format":"fedmsg-hub-status","version":1,"plugin":"tally","written_at":…,"position":{…}}`.
//! A file that does not parse, has another `format`, another `version`, or
//! names another plugin is reported as [`StatusError`], logged by
//! [`StatusFile::open`] at `error`, moved aside to `<plugin>.json.corrupt`
//! and treated as no status. This format is the hub's own: upstream's
//! `{"message":…,"status":"pre"|"post"}` files are not read.
//!
//! One [`StatusFile`] belongs to one plugin worker thread; two hub processes
//! must not share a status directory for the same plugin name.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fedmsg_wire::localtime::now_epoch_f64;

use serde::{Deserialize, Serialize};

use fedmsg_wire::delivery::Delivery;

/// The `format` field of every status file.
pub const FORMAT_NAME: &str = "fedmsg-hub-status";
/// The version this hub writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Tuning of a [`StatusFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusOptions {
    /// Minimum time between two writes by [`StatusFile::maybe_flush`].
    pub flush_interval: Duration,
    /// How many seconds `resume_from` trails the newest finished second.
    pub reorder_window_secs: u32,
    /// Most finished ids kept for the window (bounds memory and file size).
    pub max_finished_ids: usize,
}

impl Default for StatusOptions {
    fn default() -> Self {
        StatusOptions {
            flush_interval: Duration::from_secs(1),
            reorder_window_secs: 2,
            max_finished_ids: 200_000,
        }
    }
}

/// Why a status file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The plugin name cannot be a file name.
    #[error("plugin name {0:?} cannot name a status file")]
    BadName(String),
    /// The status directory could not be created.
    #[error("cannot create status directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file exists but could not be read.
    #[error("cannot read status file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a status file of this hub.
    #[error("status file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by a hub with another format version.
    #[error(
        "status file {path} has format version {found}; this hub reads version {FORMAT_VERSION}"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u64,
    },
    /// Writing, syncing or renaming failed.
    #[error("cannot write status file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// How far a plugin got (see the module documentation).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Position {
    /// `msg_id` of the last finished message.
    #[serde(default)]
    pub msg_id: Option<String>,
    /// Timestamp of the last finished message, epoch seconds.
    #[serde(default)]
    pub timestamp: Option<f64>,
    /// The catch-up starts at this epoch second (inclusive).
    #[serde(default)]
    pub resume_from: Option<i64>,
    /// Finished `msg_id`s by epoch second, for seconds `>= resume_from`.
    #[serde(default)]
    pub finished: BTreeMap<i64, BTreeSet<String>>,
    /// Last finished `seq_id` per sender (endpoint) name.
    #[serde(default)]
    pub seq_ids: BTreeMap<String, u64>,
}

impl Position {
    /// A position with nothing finished whose catch-up starts at `second`.
    pub fn starting_at(second: i64) -> Self {
        Position {
            resume_from: Some(second),
            ..Position::default()
        }
    }

    /// True when the message `msg_id` with `timestamp` is known finished, or
    /// lies before `resume_from` (so the catch-up must not deliver it).
    pub fn is_finished(&self, msg_id: Option<&str>, timestamp: Option<f64>) -> bool {
        let second = timestamp.and_then(epoch_second);
        if let (Some(second), Some(from)) = (second, self.resume_from) {
            if second < from {
                return true;
            }
        }
        match (msg_id, second) {
            (Some(id), Some(second)) => self.finished.get(&second).is_some_and(|s| s.contains(id)),
            // Without a timestamp, look in every second of the window.
            (Some(id), None) => self.finished.values().any(|s| s.contains(id)),
            (None, _) => false,
        }
    }

    /// Number of finished ids kept.
    pub fn finished_len(&self) -> usize {
        self.finished.values().map(BTreeSet::len).sum()
    }
}

/// One finished message, as [`StatusFile::record_finished`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Finished<'a> {
    /// The envelope's `msg_id`.
    pub msg_id: Option<&'a str>,
    /// The envelope's `timestamp`.
    pub timestamp: Option<f64>,
    /// `(sender name, seq_id)` when the message carried a `seq_id` and came
    /// from a named endpoint (not from the catch-up).
    pub seq: Option<(&'a str, u64)>,
}

impl<'a> Finished<'a> {
    /// The fields of a delivery; `seq_id` (not part of [`Delivery`]) is
    /// given by the caller, which knows whether the source is a sender.
    pub fn from_delivery(delivery: &'a Delivery, seq_id: Option<u64>) -> Self {
        Finished {
            msg_id: delivery.msg_id.as_deref(),
            timestamp: delivery.timestamp,
            seq: seq_id.map(|seq| (delivery.source.name.as_str(), seq)),
        }
    }
}

/// On-disk wrapper of a [`Position`].
#[derive(Debug, Serialize, Deserialize)]
struct FileContents {
    format: String,
    version: u64,
    plugin: String,
    #[serde(default)]
    written_at: f64,
    position: Position,
}

/// The status file of one plugin, owned by that plugin's worker.
#[derive(Debug)]
pub struct StatusFile {
    plugin: String,
    dir: PathBuf,
    path: PathBuf,
    tmp_path: PathBuf,
    options: StatusOptions,
    position: Position,
    dirty: bool,
    last_attempt: Option<Instant>,
    cap_warned: bool,
}

/// How far past the local clock a finished message may move the position.
/// A publisher's clock a little ahead is normal; a timestamp of 2100 (one
/// message, signed or not) would otherwise move `resume_from` to 2100, and
/// every later catch-up would ask datagrepper for the future and recover
/// nothing, on every restart.
pub const MAX_FUTURE_SECS: i64 = 10;

impl StatusFile {
    /// Opens (creating `dir` if needed) the status file of `plugin` with
    /// default options. See [`StatusFile::open_with`].
    ///
    /// # Errors
    ///
    /// See [`StatusFile::open_with`].
    pub fn open(dir: &Path, plugin: &str) -> Result<(StatusFile, Option<Position>), StatusError> {
        Self::open_with(dir, plugin, StatusOptions::default())
    }

    /// Opens the status file of `plugin` in `dir`.
    ///
    /// Returns the file and the position it recorded: `None` when there was
    /// none (first start) or it was corrupt (logged, moved aside). Without a
    /// recorded position, a fresh one starting now is written at once.
    ///
    /// # Errors
    ///
    /// [`StatusError::BadName`], [`StatusError::CreateDir`],
    /// [`StatusError::Read`] (the file exists but cannot be read, e.g.
    /// permissions), or [`StatusError::Write`] for the fresh file.
    pub fn open_with(
        dir: &Path,
        plugin: &str,
        options: StatusOptions,
    ) -> Result<(StatusFile, Option<Position>), StatusError> {
        check_name(plugin)?;
        fs::create_dir_all(dir).map_err(|source| StatusError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = status_path(dir, plugin);
        let recorded = match load(&path, plugin) {
            Ok(position) => position,
            Err(error @ (StatusError::Corrupt { .. } | StatusError::Version { .. })) => {
                tracing::error!(plugin, path = %path.display(), %error, "status file unusable: treated as no status");
                set_aside(&path);
                None
            }
            Err(error) => return Err(error),
        };
        let mut file = StatusFile {
            plugin: plugin.to_owned(),
            dir: dir.to_owned(),
            tmp_path: dir.join(format!(".{plugin}.json.tmp")),
            path,
            options,
            position: recorded.clone().unwrap_or_default(),
            dirty: false,
            last_attempt: None,
            cap_warned: false,
        };
        if recorded.is_none() {
            let window = i64::from(options.reorder_window_secs);
            file.position = Position::starting_at(now_second().saturating_sub(window));
            file.dirty = true;
            file.flush()?;
        }
        Ok((file, recorded))
    }

    /// The status file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The in-memory position (what the next flush writes).
    #[cfg(test)]
    pub fn position(&self) -> &Position {
        &self.position
    }

    /// True when the in-memory position has not been written yet.
    #[cfg(test)]
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Records that the plugin finished `delivery` (whose `seq_id`, when it
    /// came from a sender with replay, is `seq_id`).
    /// True when the timestamp was clamped ([`StatusFile::record_finished`]).
    pub fn record_delivery(&mut self, delivery: &Delivery, seq_id: Option<u64>) -> bool {
        self.record_finished(Finished::from_delivery(delivery, seq_id))
    }

    /// Records one finished message. Call it only after `consume` returned.
    /// True when its timestamp lay more than [`MAX_FUTURE_SECS`] ahead of
    /// the local clock and the position used the clock instead (the caller
    /// counts it).
    pub fn record_finished(&mut self, mut finished: Finished<'_>) -> bool {
        self.dirty = true;
        let latest = now_second().saturating_add(MAX_FUTURE_SECS);
        let mut clamped = false;
        if let Some(second) = finished.timestamp.and_then(epoch_second) {
            if second > latest {
                clamped = true;
                if let Some(suppressed) = FUTURE_LOG.check() {
                    tracing::warn!(
                        plugin = %self.plugin,
                        msg_id = %fedmsg_wire::peer_text::for_log(finished.msg_id.unwrap_or("")),
                        timestamp = second,
                        suppressed,
                        "message timestamp far in the future: the status position uses the local clock instead"
                    );
                }
                finished.timestamp = Some(latest as f64);
            }
        }
        if let Some(id) = finished.msg_id {
            self.position.msg_id = Some(id.to_owned());
        }
        if finished.timestamp.is_some() {
            self.position.timestamp = finished.timestamp;
        }
        if let Some((name, seq)) = finished.seq {
            // The last one, not the maximum: a sender whose store was reset
            // starts again from 1, and that is what gap tracking must see.
            self.position.seq_ids.insert(name.to_owned(), seq);
        }
        if let Some(second) = finished.timestamp.and_then(epoch_second) {
            self.record_second(finished.msg_id, second);
        }
        clamped
    }

    fn record_second(&mut self, msg_id: Option<&str>, second: i64) {
        if second < self.position.resume_from.unwrap_or(i64::MIN) {
            // Older than the catch-up window: the catch-up never returns it.
            return;
        }
        match msg_id {
            Some(id) => {
                self.make_room();
                if second < self.position.resume_from.unwrap_or(i64::MIN) {
                    return;
                }
                if self.position.finished_len() < self.options.max_finished_ids {
                    let ids = self.position.finished.entry(second).or_default();
                    ids.insert(id.to_owned());
                } else {
                    self.warn_cap_once(second);
                }
            }
            // Still moves the window: the message was finished.
            None => {
                self.position.finished.entry(second).or_default();
            }
        }
        self.advance_resume_from();
    }

    /// Moves `resume_from` up to the newest second minus the window and
    /// drops the ids below it.
    fn advance_resume_from(&mut self) {
        let Some(newest) = self.position.finished.keys().next_back().copied() else {
            return;
        };
        let floor = newest.saturating_sub(i64::from(self.options.reorder_window_secs));
        if self.position.resume_from.is_none_or(|from| floor > from) {
            self.position.resume_from = Some(floor);
            self.position.finished = self.position.finished.split_off(&floor);
        }
    }

    /// At the cap, forgets whole old seconds (shrinking the reorder
    /// tolerance: `resume_from` moves past them, so their ids are not needed)
    /// but never the newest second.
    fn make_room(&mut self) {
        while self.position.finished.len() > 1
            && self.position.finished_len() >= self.options.max_finished_ids
        {
            let Some((second, _)) = self.position.finished.pop_first() else {
                break;
            };
            self.position.resume_from = Some(second.saturating_add(1));
        }
    }

    fn warn_cap_once(&mut self, second: i64) {
        if !self.cap_warned {
            self.cap_warned = true;
            tracing::warn!(
                plugin = %self.plugin,
                second,
                max_finished_ids = self.options.max_finished_ids,
                "too many messages finished within one second to remember them all: a restart may deliver some of them again"
            );
        }
    }

    /// Writes the position if it changed and the last write (or failed
    /// attempt) is at least `flush_interval` old. Returns whether it wrote.
    ///
    /// # Errors
    ///
    /// [`StatusError::Write`]; the position stays dirty and the next
    /// attempt waits another interval.
    pub fn maybe_flush(&mut self) -> Result<bool, StatusError> {
        if !self.dirty {
            return Ok(false);
        }
        let due = self
            .last_attempt
            .is_none_or(|at| at.elapsed() >= self.options.flush_interval);
        if !due {
            return Ok(false);
        }
        self.flush().map(|()| true)
    }

    /// Time until [`maybe_flush`](Self::maybe_flush) would write, if the
    /// position is dirty; lets a worker wait on its queue with this timeout.
    pub fn flush_due_in(&self) -> Option<Duration> {
        if !self.dirty {
            return None;
        }
        Some(self.last_attempt.map_or(Duration::ZERO, |at| {
            self.options.flush_interval.saturating_sub(at.elapsed())
        }))
    }

    /// Writes the position now if it changed (at shutdown, or after a
    /// catch-up).
    ///
    /// # Errors
    ///
    /// [`StatusError::Write`].
    pub fn flush(&mut self) -> Result<(), StatusError> {
        if !self.dirty {
            return Ok(());
        }
        self.last_attempt = Some(Instant::now());
        let contents = FileContents {
            format: FORMAT_NAME.to_owned(),
            version: u64::from(FORMAT_VERSION),
            plugin: self.plugin.clone(),
            written_at: now_epoch_f64(),
            position: self.position.clone(),
        };
        let write_error = |source| StatusError::Write {
            path: self.path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec(&contents).map_err(|e| write_error(e.into()))?;
        bytes.push(b'\n');
        write_atomically(&self.dir, &self.tmp_path, &self.path, &bytes).map_err(write_error)?;
        self.dirty = false;
        tracing::trace!(plugin = %self.plugin, resume_from = ?self.position.resume_from, "status written");
        Ok(())
    }
}

/// The status file path of `plugin` in `dir`.
pub fn status_path(dir: &Path, plugin: &str) -> PathBuf {
    dir.join(format!("{plugin}.json"))
}

/// Reads the position recorded in `path` for `plugin`: `Ok(None)` when the
/// file does not exist.
///
/// # Errors
///
/// [`StatusError::Read`], [`StatusError::Corrupt`] or
/// [`StatusError::Version`].
pub fn load(path: &Path, plugin: &str) -> Result<Option<Position>, StatusError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StatusError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    parse(&bytes, path, plugin).map(Some)
}

/// The position of a status file's `bytes` (read from `path`) for `plugin`.
///
/// # Errors
///
/// [`StatusError::Corrupt`] or [`StatusError::Version`].
pub fn parse(bytes: &[u8], path: &Path, plugin: &str) -> Result<Position, StatusError> {
    let corrupt = |reason: String| StatusError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    // Check the header first so a future version is reported as such even
    // if its position no longer has this shape.
    let header: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    if header.get("format").and_then(serde_json::Value::as_str) != Some(FORMAT_NAME) {
        return Err(corrupt(format!("\"format\" is not {FORMAT_NAME:?}")));
    }
    match header.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(found) => {
            return Err(StatusError::Version {
                path: path.to_owned(),
                found,
            })
        }
        None => return Err(corrupt("no integer \"version\"".into())),
    }
    let contents: FileContents =
        serde_json::from_value(header).map_err(|e| corrupt(e.to_string()))?;
    if contents.plugin != plugin {
        return Err(corrupt(format!(
            "written for plugin {:?}, not {plugin:?}",
            contents.plugin
        )));
    }
    Ok(contents.position)
}

fn check_name(plugin: &str) -> Result<(), StatusError> {
    let bad = plugin.is_empty()
        || plugin.starts_with('.')
        || plugin.contains(['/', '\\', '\0'])
        || plugin.len() > 200;
    if bad {
        return Err(StatusError::BadName(plugin.to_owned()));
    }
    Ok(())
}

/// Moves an unusable file aside so it can be examined and is not mistaken
/// for a good one again. Best effort: the next flush overwrites it anyway.
fn set_aside(path: &Path) {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".corrupt");
    if let Err(error) = fs::rename(path, &aside) {
        tracing::warn!(path = %path.display(), %error, "cannot move the unusable status file aside");
    }
}

/// write + fsync the temporary file, rename it over `path`, fsync `dir`.
fn write_atomically(dir: &Path, tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    // Without this the rename itself may not survive a power loss, which
    // would leave the older file (still correct: older, never newer).
    File::open(dir)?.sync_all()
}

/// One warning per minute about clamped timestamps (a peer chooses them).
static FUTURE_LOG: fedmsg_wire::ratelimit::LogLimiter =
    fedmsg_wire::ratelimit::LogLimiter::new(std::time::Duration::from_secs(60));

/// The epoch second of a timestamp (floor), `None` when not finite or out
/// of range.
pub fn epoch_second(timestamp: f64) -> Option<i64> {
    let floor = timestamp.floor();
    // i64 covers every plausible epoch; the bounds keep the cast exact.
    (floor.is_finite() && floor.abs() < 9.0e15).then_some(floor as i64)
}

fn now_second() -> i64 {
    epoch_second(now_epoch_f64()).unwrap_or(0)
}

/// What the status fuzz target checks (`fuzz/fuzz_targets/status_file.rs`):
/// any bytes parse to a position or an error, never a panic; an accepted
/// position answers `is_finished` and survives being written and read
/// back unchanged.
#[doc(hidden)]
pub fn fuzz_status_file(bytes: &[u8]) {
    let path = Path::new("fuzz.json");
    let Ok(position) = parse(bytes, path, "fuzz") else {
        return;
    };
    for timestamp in [None, Some(0.0), Some(-1.5e300), Some(f64::NAN), Some(1e18)] {
        let _ = position.is_finished(Some("id"), timestamp);
        let _ = position.is_finished(None, timestamp);
    }
    let contents = FileContents {
        format: FORMAT_NAME.to_owned(),
        version: u64::from(FORMAT_VERSION),
        plugin: "fuzz".to_owned(),
        written_at: 0.0,
        position: position.clone(),
    };
    let Ok(written) = serde_json::to_vec(&contents) else {
        return;
    };
    match parse(&written, path, "fuzz") {
        Ok(again) => assert_eq!(again, position, "a written position reads back the same"),
        Err(error) => panic!("a written position does not read back: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(window: u32) -> StatusOptions {
        StatusOptions {
            flush_interval: Duration::from_millis(200),
            reorder_window_secs: window,
            max_finished_ids: 1000,
        }
    }

    fn done(file: &mut StatusFile, id: &str, ts: f64) {
        file.record_finished(Finished {
            msg_id: Some(id),
            timestamp: Some(ts),
            seq: None,
        });
    }

    #[test]
    fn a_far_future_timestamp_cannot_move_the_position_past_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = StatusFile::open_with(dir.path(), "p", opts(2)).unwrap();
        let hostile = Finished {
            msg_id: Some("hostile"),
            timestamp: Some(4_102_444_800.0),
            seq: None,
        };
        assert!(file.record_finished(hostile), "counted as clamped");
        let latest = now_second() + MAX_FUTURE_SECS;
        let from = file.position().resume_from.unwrap();
        assert!(from <= latest, "resume_from {from} past {latest}");
        assert!(file.position().timestamp.unwrap() <= latest as f64 + 1.0);
        // A timestamp a little ahead (publisher clock skew) is kept.
        let ahead = (now_second() + 3) as f64;
        let skewed = Finished {
            msg_id: Some("skewed"),
            timestamp: Some(ahead),
            seq: None,
        };
        assert!(!file.record_finished(skewed));
        assert_eq!(file.position().timestamp, Some(ahead));
    }

    #[test]
    fn the_status_fuzz_entry_point_holds_on_real_and_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = StatusFile::open_with(dir.path(), "fuzz", opts(2)).unwrap();
        done(&mut file, "a", (now_second() - 1) as f64);
        file.flush().unwrap();
        let real = fs::read(file.path()).unwrap();
        fuzz_status_file(&real);
        for broken in [
            &real[..real.len() / 2],
            b"{}".as_slice(),
            b"null",
            br#"{"format":"fedmsg-hub-status","version":1,"plugin":"fuzz","position":{"resume_from":-9223372036854775808,"finished":{"9223372036854775807":["x"]}}}"#,
        ] {
            fuzz_status_file(broken);
        }
    }

    #[test]
    fn first_open_writes_a_fresh_position_starting_now() {
        let dir = tempfile::tempdir().unwrap();
        let (file, recorded) = StatusFile::open_with(dir.path(), "tally", opts(2)).unwrap();
        assert!(recorded.is_none());
        assert!(!file.is_dirty());
        let on_disk = load(file.path(), "tally").unwrap().unwrap();
        let from = on_disk.resume_from.unwrap();
        assert!((now_second() - 2 - from).abs() <= 1, "{from}");
        assert!(on_disk.msg_id.is_none());
        // Reopening returns it.
        let (_, again) = StatusFile::open_with(dir.path(), "tally", opts(2)).unwrap();
        assert_eq!(again, Some(on_disk));
    }

    #[test]
    fn records_ids_of_the_last_second_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = StatusFile::open_with(dir.path(), "p", opts(0)).unwrap();
        file.position.resume_from = Some(100);
        done(&mut file, "a", 100.0);
        done(&mut file, "b", 101.0);
        done(&mut file, "c", 101.9);
        file.record_finished(Finished {
            msg_id: Some("d"),
            timestamp: Some(101.0),
            seq: Some(("relay_outbound", 7)),
        });
        file.flush().unwrap();
        let (_, recorded) = StatusFile::open_with(dir.path(), "p", opts(0)).unwrap();
        let p = recorded.unwrap();
        assert_eq!(p.msg_id.as_deref(), Some("d"));
        assert_eq!(p.timestamp, Some(101.0));
        assert_eq!(p.resume_from, Some(101));
        assert_eq!(p.finished.len(), 1);
        assert_eq!(p.finished[&101].len(), 3);
        assert_eq!(p.seq_ids["relay_outbound"], 7);
        assert!(p.is_finished(Some("b"), Some(101.0)));
        assert!(p.is_finished(Some("a"), Some(100.0)), "before resume_from");
        assert!(!p.is_finished(Some("e"), Some(101.0)));
        assert!(!p.is_finished(Some("e"), Some(102.0)));
        assert!(p.is_finished(Some("c"), None));
        assert_eq!(p.seq_ids.get("relay_outbound"), Some(&7));
        assert_eq!(p.seq_ids.get("other"), None);
    }

    #[test]
    fn window_keeps_late_seconds_and_resume_from_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = StatusFile::open_with(dir.path(), "p", opts(2)).unwrap();
        file.position.resume_from = Some(0);
        done(&mut file, "a", 100.0);
        done(&mut file, "b", 103.0);
        assert_eq!(file.position().resume_from, Some(101));
        assert!(!file.position().finished.contains_key(&100));
        // A late message within the window is recorded...
        done(&mut file, "late", 101.5);
        assert!(file.position().is_finished(Some("late"), Some(101.5)));
        // ...one before the window is ignored for the window...
        done(&mut file, "older", 99.0);
        assert_eq!(file.position().resume_from, Some(101));
        assert_eq!(file.position().msg_id.as_deref(), Some("older"));
        // ...and is reported finished because the catch-up starts later.
        assert!(file.position().is_finished(Some("older"), Some(99.0)));
    }

    #[test]
    fn cap_evicts_old_seconds_then_stops_recording_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let options = StatusOptions {
            max_finished_ids: 3,
            ..opts(5)
        };
        let (mut file, _) = StatusFile::open_with(dir.path(), "p", options).unwrap();
        file.position.resume_from = Some(0);
        done(&mut file, "a", 100.0);
        done(&mut file, "b", 101.0);
        done(&mut file, "c", 102.0);
        done(&mut file, "d", 102.0);
        assert_eq!(file.position().finished_len(), 3);
        assert_eq!(file.position().resume_from, Some(101));
        for id in ["e", "f", "g"] {
            done(&mut file, id, 102.0);
        }
        assert!(file.position().finished_len() <= 3);
        assert_eq!(file.position().finished.len(), 1);
        assert_eq!(file.position().resume_from, Some(102));
    }

    #[test]
    fn maybe_flush_is_rate_limited() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = StatusFile::open_with(dir.path(), "p", opts(0)).unwrap();
        assert!(!file.maybe_flush().unwrap(), "clean");
        done(&mut file, "a", now_epoch_f64());
        // open() just wrote, so the interval has not passed.
        assert!(!file.maybe_flush().unwrap());
        assert!(file.flush_due_in().is_some());
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(file.flush_due_in(), Some(Duration::ZERO));
        assert!(file.maybe_flush().unwrap());
        assert!(!file.is_dirty());
        assert_eq!(file.flush_due_in(), None);
        done(&mut file, "b", now_epoch_f64());
        assert!(!file.maybe_flush().unwrap());
        file.flush().unwrap();
        let p = load(file.path(), "p").unwrap().unwrap();
        assert_eq!(p.msg_id.as_deref(), Some("b"));
    }

    #[test]
    fn on_disk_position_lags_until_flushed() {
        // The crash argument: what is on disk is always a position the
        // plugin had reached, never one ahead of the in-memory one.
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = StatusFile::open_with(dir.path(), "p", opts(0)).unwrap();
        done(&mut file, "a", now_epoch_f64());
        file.flush().unwrap();
        done(&mut file, "b", now_epoch_f64());
        let on_disk = load(file.path(), "p").unwrap().unwrap();
        assert_eq!(on_disk.msg_id.as_deref(), Some("a"));
        assert!(!file.tmp_path.exists(), "no temporary file is left behind");
    }

    #[test]
    fn corrupt_file_is_logged_moved_aside_and_treated_as_no_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = status_path(dir.path(), "p");
        fs::write(&path, b"{not json").unwrap();
        let err = load(&path, "p").unwrap_err();
        assert!(err.to_string().contains("is corrupt: not JSON"), "{err}");
        let (file, recorded) = StatusFile::open_with(dir.path(), "p", opts(0)).unwrap();
        assert!(recorded.is_none());
        assert!(dir.path().join("p.json.corrupt").exists());
        assert!(
            load(file.path(), "p").unwrap().is_some(),
            "fresh file written"
        );
    }

    #[test]
    fn wrong_format_version_or_plugin_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = status_path(dir.path(), "p");
        fs::write(&path, br#"{"message":{},"status":"post"}"#).unwrap();
        assert!(matches!(load(&path, "p"), Err(StatusError::Corrupt { .. })));
        fs::write(
            &path,
            br#"{"format":"fedmsg-hub-status","version":9,"plugin":"p","position":{}}"#,
        )
        .unwrap();
        let err = load(&path, "p").unwrap_err();
        assert!(
            matches!(err, StatusError::Version { found: 9, .. }),
            "{err}"
        );
        fs::write(
            &path,
            br#"{"format":"fedmsg-hub-status","version":1,"plugin":"q","position":{}}"#,
        )
        .unwrap();
        let err = load(&path, "p").unwrap_err();
        assert!(
            err.to_string().contains("written for plugin \"q\""),
            "{err}"
        );
        fs::write(
            &path,
            br#"{"format":"fedmsg-hub-status","version":1,"plugin":"p","position":{"finished":{"x":[]}}}"#,
        )
        .unwrap();
        assert!(matches!(load(&path, "p"), Err(StatusError::Corrupt { .. })));
    }

    #[test]
    fn bad_names_and_unreadable_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["", "../x", "a/b", ".hidden"] {
            assert!(matches!(
                StatusFile::open(dir.path(), name),
                Err(StatusError::BadName(_))
            ));
        }
        // A directory where the file should be cannot be read.
        fs::create_dir(status_path(dir.path(), "p")).unwrap();
        assert!(matches!(
            StatusFile::open(dir.path(), "p"),
            Err(StatusError::Read { .. })
        ));
    }

    #[test]
    fn creates_the_directory_and_reports_write_failures() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let (mut file, _) = StatusFile::open_with(&nested, "p", opts(0)).unwrap();
        assert!(file.path().exists());
        // Replace the directory by a file: the next write must fail cleanly.
        fs::remove_dir_all(&nested).unwrap();
        fs::write(&nested, b"").unwrap();
        done(&mut file, "a", 1.0e9);
        let err = file.flush().unwrap_err();
        assert!(matches!(err, StatusError::Write { .. }), "{err}");
        assert!(file.is_dirty());
    }

    #[test]
    fn epoch_second_floors_and_rejects_nonsense() {
        assert_eq!(epoch_second(1.9), Some(1));
        assert_eq!(epoch_second(-0.5), Some(-1));
        assert_eq!(epoch_second(f64::NAN), None);
        assert_eq!(epoch_second(f64::INFINITY), None);
        assert_eq!(epoch_second(1e300), None);
    }
}
