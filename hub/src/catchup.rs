//! Delivery guarantee: catch-up from datagrepper, what a plugin missed
//! while the hub was down (fedmsg called it the backlog; here "backlog" is
//! only a queue length, as in moksha's monitoring report).
//!
//! At start, for a plugin with a recorded [`Position`],
//! the hub asks `datagrepper_url` (a datagrepper `/raw` endpoint, or the
//! datanommer plugin's compatible one) for every message from the position's
//! `resume_from` second up to `end`, page by page
//! (`?rows_per_page=100&page=N&start=S&end=E&order=asc`, reference §4.5),
//! and yields, in the server's (ascending timestamp) order, each message
//! that
//!
//! 1. is a JSON object with a string `topic`, after
//!    [`fix_datagrepper_message`](fedmsg_wire::envelope::fix_datagrepper_message)
//!    (§3.8) removed datagrepper's additions so that signatures verify;
//! 2. lies within `[start, end]` (checked again locally: a server that
//!    ignores `start`/`end` must not cause redelivery);
//! 3. matches the plugin's topic globs;
//! 4. was not finished already ([`Position::is_finished`]: before
//!    `resume_from`, or its `msg_id` is among the ids finished in its second);
//! 5. was not already yielded by this catch-up (a page boundary that shifted
//!    because a message was stored meanwhile repeats one message).
//!
//! Each becomes a [`Delivery`] whose body is the canonical JSON of the fixed
//! message, with `validated == false` (the caller validates like a live
//! message) and the source `datagrepper` / the URL.
//!
//! # Topic filtering is local
//!
//! datagrepper's `topic` parameter is an exact match (repeatable, OR-ed),
//! while plugin globs are prefixes (`org.fedoraproject.prod.bodhi.*`, or a
//! glob without wildcard under `zmq_strict = false`) or full wildcards; the
//! only server-side filter that could express them would be `category`,
//! which is not a topic prefix either. So every message of the time window
//! is fetched and filtered here. Upstream filtered with `topic[:-1]` as a
//! prefix, which is wrong for anything but a trailing `*`.
//!
//! # Incremental, bounded
//!
//! [`CatchUp`] is an iterator that fetches one page when the previous one
//! has been consumed, so a huge catch-up never sits in memory (at most one
//! page, itself capped at [`CatchUpOptions::max_page_bytes`]). Upstream
//! fetched page 1 twice and everything at once.
//!
//! Guards against a misbehaving server: the page count promised by page 1
//! may grow by at most [`PAGE_GROWTH_SLACK`] (messages stored late inside
//! the window) and never beyond [`CatchUpOptions::max_pages`]; an empty page
//! ends the catch-up; a page made only of messages already seen means the
//! server ignores `page`, which ends it with [`CatchUpError::Loop`].
//!
//! # Errors and retries
//!
//! Transport errors, HTTP 5xx/408/429 and bodies that are not JSON are
//! retried with exponential backoff (`retry_initial`, doubling up to
//! `retry_max_delay`) for at most `retry_budget` per page, each failure
//! logged at `warn` with the URL, page, attempt and delay. Other HTTP
//! statuses, a body over the size cap and a page without `pages` /
//! `raw_messages` fail at once. The first error is yielded once and ends
//! the iterator; the stop signal ends it with [`CatchUpError::Stopped`]
//! at once, even during a backoff.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedmsg_wire::delivery::{Delivery, Source};
use fedmsg_wire::envelope;
use fedmsg_wire::shutdown::Stop;
use fedmsg_wire::topic::TopicFilter;
use serde_json::Value;

use crate::dedup::DedupWindow;
use crate::status::{epoch_second, Position};

/// The [`Source`] name of catch-up deliveries.
pub const SOURCE_NAME: &str = "datagrepper";

/// How many pages beyond the count promised by page 1 are fetched when the
/// server reports more on later pages.
pub const PAGE_GROWTH_SLACK: u64 = 10;

/// Tuning of a [`CatchUp`].
#[derive(Debug, Clone)]
pub struct CatchUpOptions {
    /// `rows_per_page` (datagrepper's maximum is 100).
    pub rows_per_page: u32,
    /// Timeout of one HTTP request (connect, and the whole response).
    pub request_timeout: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max_delay: Duration,
    /// Total time spent retrying one page before giving up.
    pub retry_budget: Duration,
    /// Hard cap on the pages fetched, whatever the server says.
    pub max_pages: u64,
    /// Largest accepted response body, in bytes.
    pub max_page_bytes: u64,
    /// Messages whose canonical body is larger are skipped (like ingest).
    pub max_message_size: usize,
}

impl Default for CatchUpOptions {
    fn default() -> Self {
        CatchUpOptions {
            rows_per_page: 100,
            request_timeout: Duration::from_secs(30),
            retry_initial: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(30),
            retry_budget: Duration::from_secs(300),
            max_pages: 100_000,
            max_page_bytes: 64 * 1024 * 1024,
            max_message_size: 64 * 1024 * 1024,
        }
    }
}

/// Why the catch-up ended before it was complete.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// The HTTPS client could not be set up.
    #[error("cannot set up an HTTPS client for {url}: {reason}")]
    Client {
        /// The datagrepper URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The position has neither `resume_from` nor `timestamp`.
    #[error("the recorded position has no timestamp to start the catch-up from")]
    NoStart,
    /// A status that retrying cannot fix (404, 401, ...).
    #[error("datagrepper {url} page {page}: HTTP status {status}")]
    HttpStatus {
        /// The datagrepper URL.
        url: String,
        /// The page requested.
        page: u64,
        /// The HTTP status.
        status: u16,
    },
    /// Retryable failures went on for the whole retry budget.
    #[error("datagrepper {url} page {page}: gave up after {attempts} attempts in {elapsed_s:.1} s: {last_error}")]
    RetriesExhausted {
        /// The datagrepper URL.
        url: String,
        /// The page requested.
        page: u64,
        /// Attempts made.
        attempts: u32,
        /// Seconds spent.
        elapsed_s: f64,
        /// The last failure.
        last_error: String,
    },
    /// The response body exceeded `max_page_bytes`.
    #[error("datagrepper {url} page {page}: response larger than {limit} bytes")]
    TooLarge {
        /// The datagrepper URL.
        url: String,
        /// The page requested.
        page: u64,
        /// The cap.
        limit: u64,
    },
    /// The page is JSON but not a datagrepper page.
    #[error("datagrepper {url} page {page}: not a datagrepper page: {reason}")]
    Malformed {
        /// The datagrepper URL.
        url: String,
        /// The page requested.
        page: u64,
        /// What is missing.
        reason: String,
    },
    /// A page repeated only messages already seen.
    #[error(
        "datagrepper {url} page {page} holds only messages already seen: the server ignores paging"
    )]
    Loop {
        /// The datagrepper URL.
        url: String,
        /// The page requested.
        page: u64,
    },
    /// The stop signal was triggered.
    #[error("catch-up stopped by shutdown")]
    Stopped,
}

/// What a catch-up did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUpStats {
    /// Pages fetched.
    pub pages: u64,
    /// Messages in those pages.
    pub fetched: u64,
    /// Messages yielded.
    pub delivered: u64,
    /// Skipped: already finished according to the position.
    pub already_finished: u64,
    /// Skipped: no glob of the plugin matches.
    pub other_topic: u64,
    /// Skipped: outside `[start, end]`.
    pub out_of_range: u64,
    /// Skipped: yielded already (repeated across pages).
    pub duplicates: u64,
    /// Skipped: not an object, no topic, or too large.
    pub invalid: u64,
}

/// An iterator over one plugin's catch-up (see the module documentation).
pub struct CatchUp {
    agent: ureq::Agent,
    source: Arc<Source>,
    start: i64,
    end: i64,
    filter: TopicFilter,
    position: Position,
    options: CatchUpOptions,
    stop: Stop,
    next_page: u64,
    /// `pages` as reported by page 1.
    first_pages: Option<u64>,
    /// Last page that may be fetched (1 until page 1 says otherwise).
    page_limit: u64,
    buffer: VecDeque<Delivery>,
    seen: DedupWindow,
    stats: CatchUpStats,
    done: bool,
}

/// One failed attempt: retry it or give up.
enum Attempt {
    Retry(String),
    Fatal(CatchUpError),
}

impl CatchUp {
    /// Prepares the catch-up of everything from `position.resume_from` (or,
    /// failing that, the floor of `position.timestamp`) to `end` (epoch
    /// seconds, inclusive) that matches `filter`. Nothing is fetched until
    /// the first call to `next`.
    ///
    /// # Errors
    ///
    /// [`CatchUpError::NoStart`] or [`CatchUpError::Client`].
    pub fn new(
        url: &str,
        position: &Position,
        end: i64,
        filter: TopicFilter,
        options: CatchUpOptions,
        stop: Stop,
    ) -> Result<CatchUp, CatchUpError> {
        let start = position
            .resume_from
            .or_else(|| position.timestamp.and_then(epoch_second))
            .ok_or(CatchUpError::NoStart)?;
        // A status file written before positions were bounded by the clock
        // may start in the future (a message stamped 2100): datagrepper
        // refuses such a window on every restart. Start at `end` instead.
        let start = if start > end {
            tracing::warn!(
                start,
                end,
                "status position lies in the future (a far-future message timestamp): catch-up starts now"
            );
            end
        } else {
            start
        };
        let tls = native_tls::TlsConnector::new().map_err(|e| CatchUpError::Client {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(options.request_timeout)
            .timeout(options.request_timeout)
            .tls_connector(Arc::new(tls))
            .build();
        // Large enough to hold a page the server repeats in full.
        let seen = DedupWindow::new((options.rows_per_page as usize * 4).max(1000));
        Ok(CatchUp {
            agent,
            source: Arc::new(Source {
                name: SOURCE_NAME.to_owned(),
                url: url.to_owned(),
            }),
            start,
            end,
            filter,
            position: position.clone(),
            options,
            stop,
            next_page: 1,
            first_pages: None,
            page_limit: 1,
            buffer: VecDeque::new(),
            seen,
            stats: CatchUpStats::default(),
            done: false,
        })
    }

    /// First second requested (inclusive).
    #[cfg(test)]
    pub fn start(&self) -> i64 {
        self.start
    }

    /// Last second requested (inclusive).
    #[cfg(test)]
    pub fn end(&self) -> i64 {
        self.end
    }

    /// Counters so far.
    #[cfg(test)]
    pub fn stats(&self) -> &CatchUpStats {
        &self.stats
    }

    fn url(&self) -> &str {
        &self.source.url
    }

    /// Fetches and filters the next page; `Ok(false)` when there is none.
    fn load_next_page(&mut self) -> Result<bool, CatchUpError> {
        let page = self.next_page;
        if page > self.page_limit {
            return Ok(false);
        }
        let body = self.fetch_with_retry(page)?;
        let (reported_pages, messages) = self.split_page(page, body)?;
        self.stats.pages += 1;
        let first = *self.first_pages.get_or_insert(reported_pages);
        if reported_pages != first {
            tracing::debug!(
                url = self.url(),
                page,
                first,
                reported_pages,
                "datagrepper page count changed during the catch-up"
            );
        }
        // Follow the server's current count, but never beyond what page 1
        // promised plus a little slack, nor `max_pages`.
        self.page_limit = reported_pages
            .min(first.saturating_add(PAGE_GROWTH_SLACK))
            .min(self.options.max_pages);
        self.next_page = page + 1;
        if messages.is_empty() {
            return Ok(false);
        }
        let new = self.take_messages(messages);
        if new == 0 {
            return Err(CatchUpError::Loop {
                url: self.url().to_owned(),
                page,
            });
        }
        Ok(true)
    }

    fn split_page(&self, page: u64, mut body: Value) -> Result<(u64, Vec<Value>), CatchUpError> {
        let malformed = |reason: &str| CatchUpError::Malformed {
            url: self.url().to_owned(),
            page,
            reason: reason.to_owned(),
        };
        let pages = body
            .get("pages")
            .and_then(Value::as_u64)
            .ok_or_else(|| malformed("no integer \"pages\""))?;
        match body.get_mut("raw_messages").map(Value::take) {
            Some(Value::Array(messages)) => Ok((pages, messages)),
            _ => Err(malformed("no \"raw_messages\" list")),
        }
    }

    /// Filters one page into the buffer; returns how many messages were not
    /// repeats of earlier ones.
    fn take_messages(&mut self, messages: Vec<Value>) -> usize {
        let mut new = 0;
        self.stats.fetched += messages.len() as u64;
        for mut message in messages {
            envelope::fix_datagrepper_message(&mut message);
            let msg_id = message.get("msg_id").and_then(Value::as_str);
            if !self.seen.admit(msg_id) {
                self.stats.duplicates += 1;
                continue;
            }
            new += 1;
            if let Some(delivery) = self.accept(&message) {
                self.buffer.push_back(delivery);
            }
        }
        new
    }

    /// Applies the checks 1–4 of the module documentation.
    fn accept(&mut self, message: &Value) -> Option<Delivery> {
        let Some(topic) = message.get("topic").and_then(Value::as_str) else {
            self.stats.invalid += 1;
            tracing::debug!(url = self.url(), "catch-up message without a topic skipped");
            return None;
        };
        let msg_id = message.get("msg_id").and_then(Value::as_str);
        let timestamp = message.get("timestamp").and_then(Value::as_f64);
        if let Some(second) = timestamp.and_then(epoch_second) {
            if second < self.start || second > self.end {
                self.stats.out_of_range += 1;
                return None;
            }
        }
        if !self.filter.matches(topic) {
            self.stats.other_topic += 1;
            return None;
        }
        if self.position.is_finished(msg_id, timestamp) {
            self.stats.already_finished += 1;
            tracing::debug!(msg_id, "already finished: skipped");
            return None;
        }
        let body = envelope::to_canonical(message);
        if body.len() > self.options.max_message_size {
            self.stats.invalid += 1;
            tracing::warn!(
                url = self.url(),
                msg_id,
                size = body.len(),
                "catch-up message larger than max_message_size skipped"
            );
            return None;
        }
        Some(Delivery {
            topic: topic.to_owned(),
            body,
            msg_id: msg_id.map(str::to_owned),
            timestamp,
            seq_id: None,
            source: Arc::clone(&self.source),
            validated: false,
            signer: None,
        })
    }

    fn fetch_with_retry(&self, page: u64) -> Result<Value, CatchUpError> {
        let started = Instant::now();
        let mut delay = self.options.retry_initial;
        let mut attempts = 0u32;
        loop {
            if self.stop.is_triggered() {
                return Err(CatchUpError::Stopped);
            }
            attempts += 1;
            let reason = match self.fetch_once(page) {
                Ok(body) => return Ok(body),
                Err(Attempt::Fatal(error)) => return Err(error),
                Err(Attempt::Retry(reason)) => reason,
            };
            if started.elapsed() + delay > self.options.retry_budget {
                return Err(CatchUpError::RetriesExhausted {
                    url: self.url().to_owned(),
                    page,
                    attempts,
                    elapsed_s: started.elapsed().as_secs_f64(),
                    last_error: reason,
                });
            }
            tracing::warn!(
                url = self.url(),
                page,
                attempt = attempts,
                retry_in_ms = delay.as_millis() as u64,
                error = %reason,
                "datagrepper request failed; retrying"
            );
            if !self.stop.sleep(delay) {
                return Err(CatchUpError::Stopped);
            }
            delay = (delay * 2).min(self.options.retry_max_delay);
        }
    }

    fn fetch_once(&self, page: u64) -> Result<Value, Attempt> {
        let request = self
            .agent
            .get(self.url())
            .query("rows_per_page", &self.options.rows_per_page.to_string())
            .query("page", &page.to_string())
            .query("start", &self.start.to_string())
            .query("end", &self.end.to_string())
            .query("order", "asc");
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(status, _)) => return Err(self.status_failure(page, status)),
            Err(ureq::Error::Transport(transport)) => {
                return Err(Attempt::Retry(transport.to_string()))
            }
        };
        let bytes = self.read_body(page, response)?;
        envelope::parse(&bytes).map_err(|e| Attempt::Retry(format!("response is not JSON: {e}")))
    }

    fn status_failure(&self, page: u64, status: u16) -> Attempt {
        if status >= 500 || status == 408 || status == 429 {
            Attempt::Retry(format!("HTTP status {status}"))
        } else {
            Attempt::Fatal(CatchUpError::HttpStatus {
                url: self.url().to_owned(),
                page,
                status,
            })
        }
    }

    fn read_body(&self, page: u64, response: ureq::Response) -> Result<Vec<u8>, Attempt> {
        let limit = self.options.max_page_bytes;
        let mut bytes = Vec::new();
        response
            .into_reader()
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| Attempt::Retry(format!("reading the response: {e}")))?;
        if bytes.len() as u64 > limit {
            return Err(Attempt::Fatal(CatchUpError::TooLarge {
                url: self.url().to_owned(),
                page,
                limit,
            }));
        }
        Ok(bytes)
    }

    fn log_summary(&self) {
        let s = &self.stats;
        tracing::info!(
            url = self.url(),
            start = self.start,
            end = self.end,
            pages = s.pages,
            fetched = s.fetched,
            delivered = s.delivered,
            already_finished = s.already_finished,
            other_topic = s.other_topic,
            out_of_range = s.out_of_range,
            duplicates = s.duplicates,
            invalid = s.invalid,
            "catch-up retrieved from datagrepper"
        );
    }
}

impl Iterator for CatchUp {
    type Item = Result<Delivery, CatchUpError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(delivery) = self.buffer.pop_front() {
                self.stats.delivered += 1;
                return Some(Ok(delivery));
            }
            if self.done {
                return None;
            }
            match self.load_next_page() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    self.log_summary();
                }
                Err(error) => {
                    self.done = true;
                    tracing::error!(url = self.url(), %error, delivered = self.stats.delivered, "catch-up incomplete");
                    return Some(Err(error));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
