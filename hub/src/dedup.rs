//! Delivery guarantee: a bounded window of recently delivered `msg_id`s, for the optional
//! per-plugin de-duplication (`dedup_window`).
//!
//! fedmsg delivers a message once per endpoint it arrives on and never
//! de-duplicates; with catch-up, replay and several endpoints carrying the
//! same publisher, the same `msg_id` can reach a plugin twice. A plugin
//! whose `dedup_window` is non-zero remembers the last `capacity` `msg_id`s
//! it was handed and drops a message whose `msg_id` is among them.
//!
//! The window is a ring buffer (insertion order, for eviction) plus a hash
//! set (for lookup), both sharing one allocation per id through `Arc<str>`.
//! Memory is bounded by `capacity` ids whatever the input: the oldest id is
//! forgotten when a new one arrives at capacity. A message without a
//! `msg_id` is never considered a duplicate.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// The last `capacity` distinct `msg_id`s seen, oldest evicted first.
#[derive(Debug, Clone)]
pub struct DedupWindow {
    capacity: usize,
    order: VecDeque<Arc<str>>,
    seen: HashSet<Arc<str>>,
}

impl DedupWindow {
    /// A window remembering up to `capacity` ids; 0 disables it (every
    /// message is new).
    pub fn new(capacity: usize) -> Self {
        // Pre-allocate modestly: a large window fills up over time.
        let initial = capacity.min(4096);
        DedupWindow {
            capacity,
            order: VecDeque::with_capacity(initial),
            seen: HashSet::with_capacity(initial),
        }
    }

    /// Number of ids currently remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when no id is remembered.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// True when `msg_id` is in the window.
    #[cfg(test)]
    pub fn contains(&self, msg_id: &str) -> bool {
        self.seen.contains(msg_id)
    }

    /// Remembers `msg_id` and returns `true` when it is new (deliver the
    /// message), `false` when it is a duplicate (drop it). A duplicate does
    /// not refresh the id's age: the window is about arrival order, and
    /// refreshing would let a flood of one id pin it forever.
    pub fn check_and_insert(&mut self, msg_id: &str) -> bool {
        if self.capacity == 0 {
            return true;
        }
        // One hash for lookup and insertion (the common case is a new id);
        // only a duplicate pays for the discarded allocation.
        let id: Arc<str> = Arc::from(msg_id);
        if !self.seen.insert(Arc::clone(&id)) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        true
    }

    /// Like [`check_and_insert`](Self::check_and_insert) for an optional
    /// id: a message without `msg_id` is always new.
    pub fn admit(&mut self, msg_id: Option<&str>) -> bool {
        msg_id.is_none_or(|id| self.check_and_insert(id))
    }

    /// Forgets every id.
    #[cfg(test)]
    pub fn clear(&mut self) {
        self.order.clear();
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_then_duplicate() {
        let mut w = DedupWindow::new(3);
        assert!(w.check_and_insert("a"));
        assert!(!w.check_and_insert("a"));
        assert!(w.contains("a"));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn oldest_is_evicted_at_capacity() {
        let mut w = DedupWindow::new(2);
        assert!(w.check_and_insert("a"));
        assert!(w.check_and_insert("b"));
        assert!(w.check_and_insert("c"));
        assert!(!w.contains("a"));
        assert!(w.contains("b") && w.contains("c"));
        assert_eq!(w.len(), 2);
        // "a" was forgotten, so it is new again (and evicts "b").
        assert!(w.check_and_insert("a"));
        assert!(!w.contains("b"));
    }

    #[test]
    fn duplicate_does_not_refresh_age() {
        let mut w = DedupWindow::new(2);
        w.check_and_insert("a");
        w.check_and_insert("b");
        assert!(!w.check_and_insert("a"));
        w.check_and_insert("c");
        assert!(!w.contains("a"), "a stays the oldest");
    }

    #[test]
    fn zero_capacity_disables() {
        let mut w = DedupWindow::new(0);
        assert!(w.check_and_insert("a"));
        assert!(w.check_and_insert("a"));
        assert!(w.is_empty());
    }

    #[test]
    fn missing_msg_id_is_always_new() {
        let mut w = DedupWindow::new(2);
        assert!(w.admit(None));
        assert!(w.admit(None));
        assert!(w.admit(Some("x")));
        assert!(!w.admit(Some("x")));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood() {
        let mut w = DedupWindow::new(100);
        for n in 0..10_000 {
            assert!(w.check_and_insert(&format!("id-{n}")));
        }
        assert_eq!(w.len(), 100);
        assert_eq!(w.seen.len(), 100);
        assert!(w.contains("id-9999") && !w.contains("id-9899"));
        w.clear();
        assert!(w.is_empty());
    }
}
