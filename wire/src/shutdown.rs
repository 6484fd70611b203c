//! The one shutdown primitive of the hub and the tools: a [`Stop`] signal
//! that any thread can trigger, test cheaply or sleep on, and a [`Thread`]
//! handle that joins with a deadline.
//!
//! mini-redis's `shutdown.rs` is the model: shutting down never interrupts
//! anyone. It only sets a signal; every loop looks at it at a point where
//! stopping is safe (between two messages, between two polls) and returns,
//! and whoever started a thread then waits for it, for a bounded time. So a
//! shutdown cannot tear a message in half, and a stuck thread (a plugin
//! that never returns from `consume`) delays the exit by the deadline, no
//! more.
//!
//! Why a condition variable and not just a flag: a thread that waits (a
//! retry backoff, the catch-up delay, a join) must wake the moment the
//! signal is set, not at its next 10 or 50 ms poll; and a join with a
//! deadline needs to be told when the thread has finished, which
//! `std::thread::JoinHandle` cannot do without polling.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A stop signal: set once, seen by every clone. Testing it is one atomic
/// load, cheap enough for a receive loop.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    inner: Arc<Latch>,
}

impl Stop {
    /// A signal that is not set.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Sets the signal and wakes every thread sleeping on it. Returns true
    /// for the call that set it, false when it was already set (a second
    /// SIGTERM, say).
    pub fn trigger(&self) -> bool {
        self.inner.set()
    }

    /// True once the signal is set.
    pub fn is_triggered(&self) -> bool {
        self.inner.is_set()
    }

    /// Sleeps for `duration` unless the signal is set first. True when the
    /// whole duration passed, false when woken by the signal.
    pub fn sleep(&self, duration: Duration) -> bool {
        match Instant::now().checked_add(duration) {
            Some(deadline) => !self.inner.wait_until(deadline),
            // Too far in the future to represent: as good as forever.
            None => {
                self.inner.wait();
                false
            }
        }
    }
}

/// A flag with a condition variable: set once, waited for with a deadline.
#[derive(Debug, Default)]
struct Latch {
    set: AtomicBool,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Latch {
    fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    fn set(&self) -> bool {
        // Taking the lock orders the store with a waiter's check-then-wait,
        // so no waiter can miss the notification.
        let _guard = self.lock();
        let first = !self.set.swap(true, Ordering::AcqRel);
        self.changed.notify_all();
        first
    }

    /// Waits until set or `deadline`; true when set.
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut guard = self.lock();
        loop {
            if self.is_set() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = match self.changed.wait_timeout(guard, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn wait(&self) {
        let mut guard = self.lock();
        while !self.is_set() {
            guard = match self.changed.wait(guard) {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data, so a poisoned one is as good as any.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How a [`Thread`] ended when joined.
#[derive(Debug)]
pub enum Joined<T> {
    /// It returned this.
    Finished(T),
    /// It panicked with this message.
    Panicked(String),
    /// It was still running at the deadline and has been left behind (it
    /// goes on until the process exits).
    Abandoned,
}

/// A named thread that can be joined with a deadline.
#[derive(Debug)]
pub struct Thread<T = ()> {
    name: String,
    handle: std::thread::JoinHandle<T>,
    finished: Arc<Latch>,
}

impl<T: Send + 'static> Thread<T> {
    /// Starts `body` on a new thread called `name`.
    ///
    /// # Errors
    ///
    /// The OS refused to create the thread.
    pub fn spawn<F>(name: impl Into<String>, body: F) -> std::io::Result<Thread<T>>
    where
        F: FnOnce() -> T + Send + 'static,
    {
        let name = name.into();
        let finished = Arc::new(Latch::default());
        let handle = {
            let finished = Arc::clone(&finished);
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    // Set on the way out, by return or by panic.
                    let _finished = SetOnDrop(finished);
                    body()
                })?
        };
        Ok(Thread {
            name,
            handle,
            finished,
        })
    }
}

impl<T> Thread<T> {
    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True once the thread has returned or panicked.
    pub fn is_finished(&self) -> bool {
        self.finished.is_set()
    }

    /// Waits until the thread has finished or `deadline` has passed; true
    /// when it has finished.
    pub fn wait_until(&self, deadline: Instant) -> bool {
        self.finished.wait_until(deadline)
    }

    /// Waits for the thread, however long it takes.
    pub fn join(self) -> Joined<T> {
        match self.handle.join() {
            Ok(value) => Joined::Finished(value),
            Err(payload) => Joined::Panicked(panic_text(payload.as_ref())),
        }
    }

    /// Waits for the thread until `deadline`; past it the thread is
    /// abandoned.
    pub fn join_until(self, deadline: Instant) -> Joined<T> {
        if self.finished.wait_until(deadline) {
            self.join()
        } else {
            Joined::Abandoned
        }
    }
}

struct SetOnDrop(Arc<Latch>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// A thread with a stop signal of its own, stopped and joined when the
/// value is dropped: what a component that runs in the background for as
/// long as it exists (the monitoring socket, a replay server, the replay
/// fetcher) holds.
#[derive(Debug)]
pub struct OwnedThread {
    stop: Stop,
    thread: Option<Thread<()>>,
}

impl OwnedThread {
    /// Starts `body` on a thread called `name`, handing it the stop signal
    /// it must return on.
    ///
    /// # Errors
    ///
    /// The OS refused to create the thread.
    pub fn spawn<F>(name: impl Into<String>, body: F) -> std::io::Result<OwnedThread>
    where
        F: FnOnce(Stop) + Send + 'static,
    {
        let stop = Stop::new();
        let thread = {
            let stop = stop.clone();
            Thread::spawn(name, move || body(stop))?
        };
        Ok(OwnedThread {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.trigger();
        if let Some(thread) = self.thread.take() {
            let name = thread.name().to_owned();
            if let Joined::Panicked(panic) = thread.join() {
                tracing::error!(thread = %name, %panic, "thread panicked");
            }
        }
    }
}

impl Drop for OwnedThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Triggers `stop` on the first SIGTERM or SIGINT, from a thread of its
/// own; a second one exits the process at once with status 130 (for an
/// operator who does not want to wait for the drain).
///
/// # Errors
///
/// The handlers or the thread could not be installed.
pub fn stop_on_signals(stop: Stop) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if !stop.trigger() {
                    tracing::warn!(signal, "second signal: exiting at once");
                    std::process::exit(130);
                }
                tracing::info!(
                    signal,
                    "shutting down (send the signal again to exit at once)"
                );
            }
        })?;
    Ok(())
}

/// The message of a panic payload (`&str` or `String`, as `panic!` makes).
pub fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(a panic payload that is not text)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_returns_at_once_when_stopped() {
        let stop = Stop::new();
        assert!(stop.sleep(Duration::from_millis(1)), "not stopped: slept");
        let waker = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                assert!(stop.trigger(), "first trigger");
            })
        };
        let started = Instant::now();
        assert!(!stop.sleep(Duration::from_secs(60)), "woken by the signal");
        assert!(started.elapsed() < Duration::from_secs(30));
        waker.join().expect("waker");
        assert!(stop.is_triggered());
        assert!(!stop.trigger(), "a second trigger says so");
        assert!(!stop.sleep(Duration::from_secs(60)), "already stopped");
    }

    #[test]
    fn join_with_a_deadline() {
        let quick = Thread::spawn("quick", || 7).expect("spawn");
        assert!(matches!(
            quick.join_until(Instant::now() + Duration::from_secs(30)),
            Joined::Finished(7)
        ));

        let release = Stop::new();
        let stuck = {
            let release = release.clone();
            Thread::spawn("stuck", move || {
                release.sleep(Duration::from_secs(60));
            })
            .expect("spawn")
        };
        assert_eq!(stuck.name(), "stuck");
        assert!(!stuck.is_finished());
        assert!(matches!(
            stuck.join_until(Instant::now() + Duration::from_millis(20)),
            Joined::Abandoned
        ));
        release.trigger();

        let panics = Thread::spawn("panics", || -> u8 { panic!("on purpose") }).expect("spawn");
        match panics.join_until(Instant::now() + Duration::from_secs(30)) {
            Joined::Panicked(text) => assert_eq!(text, "on purpose"),
            other => panic!("expected a panic, got {other:?}"),
        }
    }

    #[test]
    fn an_owned_thread_stops_when_dropped() {
        let (tx, rx) = std::sync::mpsc::channel();
        let owned = OwnedThread::spawn("owned", move |stop| {
            while stop.sleep(Duration::from_secs(60)) {}
            let _ = tx.send("stopped");
        })
        .expect("spawn");
        drop(owned);
        assert_eq!(rx.try_recv(), Ok("stopped"), "joined before drop returned");
    }
}
