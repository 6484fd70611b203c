//! The ingest pipeline: classify on the receive thread, verify signatures
//! on a pool of threads, restore arrival order, dispatch.
//!
//! RSA verification is the hub's ceiling with validation on, so it runs on
//! as many threads as there are cores. Each message gets a sequence number
//! on the receive thread; the pool may finish them in any order, and one
//! reorder thread hands them to dispatch strictly by sequence number, so
//! every plugin still sees each endpoint's messages in arrival order.
//! Without validation there is no pool: the receive thread dispatches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::crypto::{Rejection, Verdict, Verifier};
use crate::delivery::Delivery;
use crate::dispatch::Dispatcher;
use crate::envelope;
use crate::ingest::IngestStats;

/// Messages waiting for a verifier thread; beyond this the receive thread
/// waits (zmq buffers upstream), which bounds memory.
const PENDING_CAPACITY: usize = 4096;

type Job = (u64, Delivery);

/// Where accepted deliveries go.
pub enum Pipeline {
    /// No validation: dispatch on the calling thread.
    Inline {
        /// The dispatcher.
        dispatcher: Dispatcher,
    },
    /// Validation on a pool, then in-order dispatch.
    Pooled {
        /// Next sequence number.
        next_seq: u64,
        /// Jobs for the pool.
        jobs: Sender<Job>,
        /// The verifier threads and the reorder thread.
        threads: Vec<JoinHandle<()>>,
    },
}

impl Pipeline {
    /// Dispatches inline (no validation).
    pub fn inline(dispatcher: Dispatcher) -> Pipeline {
        Pipeline::Inline { dispatcher }
    }

    /// Starts `threads` verifier threads and a reorder thread that owns the
    /// dispatcher.
    pub fn pooled(
        dispatcher: Dispatcher,
        verifier: Arc<Verifier>,
        threads: usize,
        stats: Arc<IngestStats>,
    ) -> std::io::Result<Pipeline> {
        let (jobs_tx, jobs_rx) = bounded::<Job>(PENDING_CAPACITY);
        let (done_tx, done_rx) = bounded::<Job>(PENDING_CAPACITY);
        let mut handles = Vec::with_capacity(threads + 1);
        for n in 0..threads.max(1) {
            let jobs = jobs_rx.clone();
            let done = done_tx.clone();
            let verifier = Arc::clone(&verifier);
            let stats = Arc::clone(&stats);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("verify-{n}"))
                    .spawn(move || verify_loop(&jobs, &done, &verifier, &stats))?,
            );
        }
        drop(done_tx);
        handles.push(
            std::thread::Builder::new()
                .name("reorder".into())
                .spawn(move || reorder_loop(&done_rx, &dispatcher))?,
        );
        Ok(Pipeline::Pooled {
            next_seq: 0,
            jobs: jobs_tx,
            threads: handles,
        })
    }

    /// Hands on one accepted delivery.
    pub fn submit(&mut self, delivery: Delivery) {
        match self {
            Pipeline::Inline { dispatcher } => dispatcher.dispatch(&Arc::new(delivery)),
            Pipeline::Pooled { next_seq, jobs, .. } => {
                let seq = *next_seq;
                *next_seq += 1;
                // Only fails once the pool is gone, which happens only after
                // `finish`; nothing to do with the message then.
                let _ = jobs.send((seq, delivery));
            }
        }
    }

    /// Finishes every submitted message and drops the dispatcher (which
    /// closes the plugin queues).
    pub fn finish(self) {
        if let Pipeline::Pooled { jobs, threads, .. } = self {
            drop(jobs);
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a verification thread panicked");
                }
            }
        }
    }
}

fn verify_loop(jobs: &Receiver<Job>, done: &Sender<Job>, verifier: &Verifier, stats: &IngestStats) {
    for (seq, mut delivery) in jobs {
        match verify(verifier, &delivery) {
            Verdict::Valid { signer } => {
                delivery.validated = true;
                delivery.signer = Some(signer);
            }
            Verdict::Invalid(rejection) => stats.record_invalid(&delivery, &rejection),
        }
        if done.send((seq, delivery)).is_err() {
            return;
        }
    }
}

fn verify(verifier: &Verifier, delivery: &Delivery) -> Verdict {
    match envelope::parse(delivery.body.as_bytes()) {
        Ok(value) => verifier.verify(&value),
        // ingest already parsed the head, so this is rare (e.g. a lone
        // surrogate escape): the message cannot be re-canonicalized.
        Err(error) => Verdict::Invalid(Rejection::BadEncoding(error.to_string())),
    }
}

/// Releases deliveries strictly in sequence order. The buffer holds at most
/// what the pool has in flight (bounded by the channel capacities).
fn reorder_loop(done: &Receiver<Job>, dispatcher: &Dispatcher) {
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, Delivery> = BTreeMap::new();
    for (seq, delivery) in done {
        if seq != next {
            waiting.insert(seq, delivery);
            continue;
        }
        dispatcher.dispatch(&Arc::new(delivery));
        next += 1;
        while let Some(delivery) = waiting.remove(&next) {
            dispatcher.dispatch(&Arc::new(delivery));
            next += 1;
        }
    }
}
