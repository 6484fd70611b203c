//! Receive path, steps 2 and 3: ingest and verify. On the receive thread,
//! each message's frames are checked and classified
//! ([`fedmsg_wire::ingest::classify`]: a [`Delivery`] or a counted
//! rejection); with validation, signatures are verified on a pool of
//! threads and arrival order is restored; then dispatch
//! ([`crate::dispatch`]).
//!
//! RSA verification is the hub's ceiling with validation on, so it runs on
//! as many threads as there are cores. Each message gets a sequence number
//! on the receive thread; the pool may finish them in any order, and the
//! verifier thread that finishes the next message in sequence dispatches
//! it, together with any later ones already finished, under one small
//! lock. So every plugin still sees each endpoint's messages in arrival
//! order, without a thread of its own for reordering: a separate reorder
//! thread cost a wake-up and a context switch per message, which on two
//! cores was a tenth of the CPU spent per signed message.
//!
//! At a trickle (the pool has nothing queued and the previous message came
//! more than [`INLINE_GAP`] earlier) the receive thread verifies the message
//! itself: that saves waking a verifier thread, one scheduler hop less
//! between publish and consume. Both conditions matter: while the receive
//! thread verifies, newer messages wait in zmq, not in the pool's queue, so
//! an empty queue alone would keep a burst on the receive thread.
//! Without validation there is no pool: the receive thread dispatches.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use fedmsg_wire::crypto::Verifier;
use fedmsg_wire::delivery::{Delivery, Source};
use fedmsg_wire::ingest::{self, IngestStats, Limits};
use fedmsg_wire::shutdown::{Joined, Thread};

use crate::dispatch::Dispatcher;

/// Messages waiting for a verifier thread; beyond this the receive thread
/// waits (zmq buffers upstream), which bounds memory. A thousand signed
/// messages are ~2.4 MB; more would not make the pool any busier.
const PENDING_CAPACITY: usize = 1024;

/// Finished messages that may wait for an earlier one still being verified
/// (say, one whose certificate is being fetched); a verifier thread that
/// gets further ahead than this waits, so memory stays bounded.
const REORDER_CAPACITY: usize = 1024;

/// Messages closer together than this go to the pool (see the module docs).
const INLINE_GAP: Duration = Duration::from_micros(200);

type Job = (u64, Delivery);

/// The receive thread's side of the path: ingest, then straight to
/// dispatch or through the verifier pool.
pub struct Pipeline {
    limits: Limits,
    stats: Arc<IngestStats>,
    mode: Mode,
}

enum Mode {
    Inline {
        dispatcher: Dispatcher,
    },
    Pooled {
        next_seq: u64,
        jobs: Sender<Job>,
        threads: Vec<Thread>,
        /// When the previous `submit` returned.
        last_submit: Instant,
        ordered: Arc<Ordered>,
        verifier: Arc<Verifier>,
    },
}

impl Mode {
    fn pooled(
        dispatcher: Dispatcher,
        verifier: Arc<Verifier>,
        threads: usize,
        stats: &Arc<IngestStats>,
    ) -> std::io::Result<Mode> {
        let (jobs_tx, jobs_rx) = bounded::<Job>(PENDING_CAPACITY);
        let ordered = Arc::new(Ordered {
            state: Mutex::new(Reorder {
                next: 0,
                waiting: BTreeMap::new(),
            }),
            advanced: Condvar::new(),
            dispatcher,
        });
        let mut handles = Vec::with_capacity(threads.max(1));
        for n in 0..threads.max(1) {
            let jobs = jobs_rx.clone();
            let ordered = Arc::clone(&ordered);
            let verifier = Arc::clone(&verifier);
            let stats = Arc::clone(stats);
            handles.push(Thread::spawn(format!("verify-{n}"), move || {
                verify_loop(&jobs, &ordered, &verifier, &stats)
            })?);
        }
        Ok(Mode::Pooled {
            next_seq: 0,
            jobs: jobs_tx,
            threads: handles,
            last_submit: Instant::now(),
            ordered,
            verifier,
        })
    }
}

/// State shared by the verifier threads: who is next, and the finished
/// messages that wait for it.
struct Ordered {
    state: Mutex<Reorder>,
    /// Signalled whenever `next` advances.
    advanced: Condvar,
    dispatcher: Dispatcher,
}

struct Reorder {
    next: u64,
    waiting: BTreeMap<u64, Delivery>,
}

impl Pipeline {
    /// Starts the pipeline in front of `dispatcher`: with a `verifier`,
    /// `threads` verifier threads (which share the dispatcher); without,
    /// the receive thread dispatches itself.
    ///
    /// # Errors
    ///
    /// A verifier thread could not be started.
    pub fn start(
        dispatcher: Dispatcher,
        verifier: Option<Arc<Verifier>>,
        threads: usize,
        max_message_size: usize,
        stats: Arc<IngestStats>,
    ) -> std::io::Result<Pipeline> {
        let mode = match verifier {
            Some(verifier) => {
                tracing::info!(threads, "signature validation on");
                Mode::pooled(dispatcher, verifier, threads, &stats)?
            }
            None => {
                tracing::info!("signature validation off");
                Mode::Inline { dispatcher }
            }
        };
        Ok(Pipeline {
            limits: Limits {
                max_message_size,
                ..Limits::default()
            },
            stats,
            mode,
        })
    }

    /// Takes one message as received from `source`: classifies it (a
    /// rejection is counted and logged, rate-limited) and hands the
    /// accepted delivery on.
    pub fn receive(&mut self, source: &Arc<Source>, frames: Vec<Vec<u8>>) {
        self.stats.record_received();
        match ingest::classify(frames, source, &self.limits) {
            Ok(delivery) => {
                self.stats.record_accepted();
                self.submit(delivery);
            }
            Err(reject) => self.stats.record_rejected(reject.reason(), source, &reject),
        }
    }

    /// Hands on one accepted delivery.
    fn submit(&mut self, delivery: Delivery) {
        let stats = &self.stats;
        match &mut self.mode {
            Mode::Inline { dispatcher } => dispatcher.dispatch(&Arc::new(delivery)),
            Mode::Pooled {
                next_seq,
                jobs,
                last_submit,
                ordered,
                verifier,
                ..
            } => {
                let seq = *next_seq;
                *next_seq += 1;
                if jobs.is_empty() && last_submit.elapsed() >= INLINE_GAP {
                    verify_and_commit(seq, delivery, ordered, verifier, stats);
                } else {
                    // Only fails once the pool is gone, which happens only
                    // after `finish`; nothing to do with the message then.
                    let _ = jobs.send((seq, delivery));
                }
                *last_submit = Instant::now();
            }
        }
    }

    /// Finishes every submitted message and drops the dispatcher (which
    /// closes the plugin queues).
    pub fn finish(self) {
        if let Mode::Pooled { jobs, threads, .. } = self.mode {
            drop(jobs);
            for thread in threads {
                let name = thread.name().to_owned();
                if let Joined::Panicked(panic) = thread.join() {
                    tracing::error!(thread = %name, %panic, "a verification thread panicked");
                }
            }
        }
    }
}

fn verify_loop(jobs: &Receiver<Job>, ordered: &Ordered, verifier: &Verifier, stats: &IngestStats) {
    for (seq, delivery) in jobs {
        verify_and_commit(seq, delivery, ordered, verifier, stats);
    }
}

fn verify_and_commit(
    seq: u64,
    mut delivery: Delivery,
    ordered: &Ordered,
    verifier: &Verifier,
    stats: &IngestStats,
) {
    if let Err(rejection) = delivery.verify_with(verifier) {
        stats.record_invalid(&delivery, &rejection);
    }
    ordered.commit(seq, delivery);
}

impl Ordered {
    fn lock(&self) -> MutexGuard<'_, Reorder> {
        // Dispatch only try_sends; a panic while holding the lock leaves the
        // state consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Dispatches `delivery` if it is next, followed by every finished
    /// successor; otherwise parks it until its turn.
    fn commit(&self, seq: u64, delivery: Delivery) {
        let mut state = self.lock();
        if seq != state.next {
            while state.waiting.len() >= REORDER_CAPACITY && seq != state.next {
                state = match self
                    .advanced
                    .wait_timeout(state, Duration::from_millis(100))
                {
                    Ok((guard, _)) => guard,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
            if seq != state.next {
                state.waiting.insert(seq, delivery);
                return;
            }
        }
        self.dispatcher.dispatch(&Arc::new(delivery));
        state.next += 1;
        loop {
            let next = state.next;
            let Some(delivery) = state.waiting.remove(&next) else {
                break;
            };
            self.dispatcher.dispatch(&Arc::new(delivery));
            state.next += 1;
        }
        drop(state);
        self.advanced.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::DispatchSettings;
    use crate::testing::delivery;
    use crate::worker::{DrainDeadline, WorkerSettings};

    /// A dispatcher without plugins never blocks, so the order of commits
    /// is what is checked here.
    fn ordered() -> Ordered {
        let settings = DispatchSettings {
            queue_capacity: 10,
            worker: WorkerSettings {
                max_consecutive_panics: 5,
                dedup_window: 0,
            },
        };
        let (dispatcher, _) =
            Dispatcher::start(Vec::new(), settings, Arc::new(DrainDeadline::default()))
                .expect("dispatcher");
        Ordered {
            state: Mutex::new(Reorder {
                next: 0,
                waiting: BTreeMap::new(),
            }),
            advanced: Condvar::new(),
            dispatcher,
        }
    }

    #[test]
    fn commits_in_sequence_order() {
        let ordered = ordered();
        ordered.commit(2, delivery(2));
        ordered.commit(1, delivery(1));
        assert_eq!(ordered.lock().next, 0);
        assert_eq!(ordered.lock().waiting.len(), 2);
        ordered.commit(0, delivery(0));
        assert_eq!(ordered.lock().next, 3);
        assert!(ordered.lock().waiting.is_empty());
        ordered.commit(3, delivery(3));
        assert_eq!(ordered.lock().next, 4);
    }

    #[test]
    fn a_thread_far_ahead_waits_for_the_missing_message() {
        let ordered = Arc::new(ordered());
        for seq in 1..=REORDER_CAPACITY as u64 {
            ordered.commit(seq, delivery(seq));
        }
        let ahead = {
            let ordered = Arc::clone(&ordered);
            let seq = REORDER_CAPACITY as u64 + 1;
            std::thread::spawn(move || ordered.commit(seq, delivery(seq)))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!ahead.is_finished(), "the buffer is full: it must wait");
        ordered.commit(0, delivery(0));
        ahead.join().expect("no panic");
        let state = ordered.lock();
        assert_eq!(state.next, REORDER_CAPACITY as u64 + 2);
        assert!(state.waiting.is_empty());
    }
}
