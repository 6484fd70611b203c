//! The bounded outgoing queue of one connection.
//!
//! `consume` pushes and never waits: when the queue is full the *oldest*
//! entry is dropped (the channel should show what is happening now) and
//! counted; the send thread then says so once, with a summary line, at
//! the place of the gap. The queue is bounded in entries (`max_queue`) and
//! in bytes ([`MAX_QUEUE_BYTES`]), so a burst of huge messages cannot grow
//! the hub either. Entries are shared between the connections that want
//! the same message (one copy of the body, however many channels).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Bytes of message bodies one connection's queue holds at most.
pub const MAX_QUEUE_BYTES: usize = 8 << 20;

/// One message waiting to be shown, rendered only when it is sent (most
/// of a burst is dropped unrendered).
#[derive(Debug)]
pub struct Item {
    /// The topic.
    pub topic: Box<str>,
    /// The envelope's JSON text.
    pub body: Box<str>,
}

impl Item {
    /// Copies a message out of the hub's borrow.
    pub fn new(topic: &str, body: &str) -> Arc<Item> {
        Arc::new(Item {
            topic: topic.into(),
            body: body.into(),
        })
    }

    fn bytes(&self) -> usize {
        self.topic.len() + self.body.len()
    }
}

/// What the send thread gets next.
#[derive(Debug)]
pub enum Next {
    /// This many messages were dropped before the ones still queued.
    Skipped(u64),
    /// A message.
    Item(Arc<Item>),
    /// Nothing arrived in time.
    Timeout,
    /// The queue is closed (shutdown).
    Closed,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Arc<Item>>,
    bytes: usize,
    skipped: u64,
    closed: bool,
}

/// A bounded, drop-oldest queue with a skip count.
#[derive(Debug)]
pub struct OutQueue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
    max_bytes: usize,
}

impl OutQueue {
    /// A queue of at most `capacity` entries and [`MAX_QUEUE_BYTES`].
    pub fn new(capacity: usize) -> OutQueue {
        OutQueue::with_limits(capacity, MAX_QUEUE_BYTES)
    }

    /// A queue with an explicit byte bound (tests).
    pub fn with_limits(capacity: usize, max_bytes: usize) -> OutQueue {
        OutQueue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing can be left half-updated by a panic under this lock (no
        // code that can panic runs while it is held), so a poisoned lock
        // is as good as any.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `item`, dropping the oldest entries to make room. Returns
    /// how many were dropped (0 when closed: the item is not queued).
    pub fn push(&self, item: Arc<Item>) -> u64 {
        let mut state = self.lock();
        if state.closed {
            return 0;
        }
        let mut dropped = 0;
        while !state.items.is_empty()
            && (state.items.len() >= self.capacity || state.bytes + item.bytes() > self.max_bytes)
        {
            if let Some(old) = state.items.pop_front() {
                state.bytes -= old.bytes();
                dropped += 1;
            }
        }
        state.skipped += dropped;
        state.bytes += item.bytes();
        state.items.push_back(item);
        drop(state);
        self.ready.notify_one();
        dropped
    }

    /// The skip summary if one is due, else the oldest message; waits up
    /// to `timeout` for one.
    pub fn pop(&self, timeout: Duration) -> Next {
        let mut state = self.lock();
        if state.items.is_empty() && state.skipped == 0 && !state.closed {
            state = match self.ready.wait_timeout(state, timeout) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        if state.closed {
            return Next::Closed;
        }
        if state.skipped > 0 {
            return Next::Skipped(std::mem::take(&mut state.skipped));
        }
        match state.items.pop_front() {
            Some(item) => {
                state.bytes -= item.bytes();
                Next::Item(item)
            }
            None => Next::Timeout,
        }
    }

    /// Puts back what [`pop`](Self::pop) returned (the send thread found
    /// the channel gone meanwhile), in front, as if it had not been taken.
    /// Returns how many entries that dropped (the item itself, when the
    /// queue filled up meanwhile: it is the oldest).
    pub fn unpop(&self, next: Next) -> u64 {
        let mut state = self.lock();
        if state.closed {
            return 0;
        }
        match next {
            Next::Skipped(n) => state.skipped += n,
            Next::Item(item) => {
                if state.items.len() >= self.capacity || state.bytes + item.bytes() > self.max_bytes
                {
                    state.skipped += 1;
                    return 1;
                }
                state.bytes += item.bytes();
                state.items.push_front(item);
            }
            Next::Timeout | Next::Closed => {}
        }
        0
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the queue (wakes the send thread); returns how many entries
    /// it still held, which are dropped.
    pub fn close(&self) -> usize {
        let mut state = self.lock();
        state.closed = true;
        let left = state.items.len();
        state.items.clear();
        state.bytes = 0;
        drop(state);
        self.ready.notify_all();
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(next: Next) -> String {
        match next {
            Next::Item(item) => item.topic.to_string(),
            other => panic!("expected an item, got {other:?}"),
        }
    }

    #[test]
    fn drops_the_oldest_and_reports_the_gap_first() {
        let q = OutQueue::new(3);
        for i in 0..10 {
            let dropped = q.push(Item::new(&format!("t{i}"), "{}"));
            assert_eq!(dropped, u64::from(i >= 3), "push {i}");
        }
        assert_eq!(q.len(), 3);
        assert!(matches!(q.pop(Duration::ZERO), Next::Skipped(7)));
        assert_eq!(topic(q.pop(Duration::ZERO)), "t7");
        assert_eq!(topic(q.pop(Duration::ZERO)), "t8");
        assert_eq!(topic(q.pop(Duration::ZERO)), "t9");
        assert!(matches!(q.pop(Duration::from_millis(1)), Next::Timeout));
        assert!(q.is_empty());
    }

    #[test]
    fn unpop_puts_back_in_front() {
        let q = OutQueue::new(2);
        q.push(Item::new("a", "{}"));
        q.push(Item::new("b", "{}"));
        let a = q.pop(Duration::ZERO);
        assert_eq!(q.unpop(a), 0);
        assert_eq!(topic(q.pop(Duration::ZERO)), "a");
        q.push(Item::new("c", "{}"));
        let b = q.pop(Duration::ZERO);
        q.push(Item::new("d", "{}"));
        // Full meanwhile: b, the oldest, is dropped and counted.
        assert_eq!(q.unpop(b), 1);
        assert!(matches!(q.pop(Duration::ZERO), Next::Skipped(1)));
        q.unpop(Next::Skipped(4));
        assert!(matches!(q.pop(Duration::ZERO), Next::Skipped(4)));
        assert_eq!(topic(q.pop(Duration::ZERO)), "c");
    }

    #[test]
    fn bounded_in_bytes_too() {
        let q = OutQueue::with_limits(100, 10);
        q.push(Item::new("a", "1234"));
        q.push(Item::new("b", "1234"));
        // 5 + 5 + 5 > 10: the oldest goes.
        assert_eq!(q.push(Item::new("c", "1234")), 1);
        // A single entry larger than the bound is still queued alone.
        assert_eq!(q.push(Item::new("d", &"x".repeat(50))), 2);
        assert_eq!(q.len(), 1);
        assert!(matches!(q.pop(Duration::ZERO), Next::Skipped(3)));
        assert_eq!(topic(q.pop(Duration::ZERO)), "d");
    }

    #[test]
    fn close_wakes_a_waiter_and_refuses_more() {
        let q = Arc::new(OutQueue::new(10));
        q.push(Item::new("a", "{}"));
        assert_eq!(topic(q.pop(Duration::ZERO)), "a");
        let waiter = {
            let q = Arc::clone(&q);
            // Waits (or, started late, finds the queue closed at once).
            std::thread::spawn(move || q.pop(Duration::from_secs(60)))
        };
        q.push(Item::new("b", "{}"));
        std::thread::sleep(Duration::from_millis(20));
        q.close();
        let started = std::time::Instant::now();
        let next = waiter.join().expect("waiter");
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(matches!(next, Next::Closed | Next::Item(_)), "{next:?}");
        assert!(matches!(q.pop(Duration::from_secs(60)), Next::Closed));
        assert_eq!(q.push(Item::new("c", "{}")), 0);
        assert!(q.is_empty());
    }
}
