//! Messages per minute, per category, for the last hour, and the live
//! total: kept in the plugin (busmon used memcached).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// Minutes kept.
pub const MINUTES: usize = 60;

/// Distinct categories counted per minute at most; more go to `other`, so
/// that a publisher inventing topics cannot grow the hub's memory.
pub const MAX_CATEGORIES: usize = 200;

/// The category for what is past [`MAX_CATEGORIES`].
pub const OTHER: &str = "(other)";

#[derive(Debug, Default)]
struct Minute {
    minute: u64,
    total: u64,
    by_category: BTreeMap<String, u64>,
}

/// The counters.
#[derive(Debug, Default)]
pub struct Rates {
    total: AtomicU64,
    minutes: Mutex<VecDeque<Minute>>,
}

/// `/api/stats`'s rates part.
#[derive(Debug, Serialize, PartialEq)]
pub struct RatesSnapshot {
    /// Messages since the plugin started.
    pub total: u64,
    /// The minute (epoch seconds / 60) of the last entry of each series.
    pub now_minute: u64,
    /// Messages per minute, oldest first, [`MINUTES`] entries.
    pub per_minute: Vec<u64>,
    /// Per category: messages in the last hour, and per minute.
    pub categories: Vec<CategorySnapshot>,
}

/// One category's counts.
#[derive(Debug, Serialize, PartialEq)]
pub struct CategorySnapshot {
    /// The category.
    pub name: String,
    /// Messages in the last hour.
    pub last_hour: u64,
    /// Messages per minute, oldest first.
    pub per_minute: Vec<u64>,
}

impl Rates {
    /// Counts one message of `category` in minute `minute`.
    pub fn record(&self, category: &str, minute: u64) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        if minutes.back().is_none_or(|m| m.minute < minute) {
            minutes.push_back(Minute {
                minute,
                ..Minute::default()
            });
        }
        while minutes
            .front()
            .is_some_and(|m| m.minute + MINUTES as u64 <= minute)
        {
            minutes.pop_front();
        }
        // A clock stepping back counts into the newest minute.
        let Some(current) = minutes.back_mut() else {
            return;
        };
        current.total += 1;
        let known = current.by_category.contains_key(category);
        let key = if known || current.by_category.len() < MAX_CATEGORIES {
            category
        } else {
            OTHER
        };
        match current.by_category.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                current.by_category.insert(key.to_owned(), 1);
            }
        }
    }

    /// The counts as of minute `now`.
    pub fn snapshot(&self, now: u64) -> RatesSnapshot {
        let minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        let first = now.saturating_sub(MINUTES as u64 - 1);
        let slot = |m: u64| (m >= first && m <= now).then(|| (m - first) as usize);
        let mut per_minute = vec![0; MINUTES];
        let mut categories: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for m in minutes.iter() {
            let Some(i) = slot(m.minute) else { continue };
            per_minute[i] += m.total;
            for (name, n) in &m.by_category {
                categories.entry(name).or_insert_with(|| vec![0; MINUTES])[i] += n;
            }
        }
        let mut categories: Vec<CategorySnapshot> = categories
            .into_iter()
            .map(|(name, per_minute)| CategorySnapshot {
                name: name.to_owned(),
                last_hour: per_minute.iter().sum(),
                per_minute,
            })
            .collect();
        categories.sort_by(|a, b| b.last_hour.cmp(&a.last_hour).then(a.name.cmp(&b.name)));
        RatesSnapshot {
            total: self.total.load(Ordering::Relaxed),
            now_minute: now,
            per_minute,
            categories,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_minute_per_category_for_an_hour() {
        let r = Rates::default();
        r.record("bodhi", 100);
        r.record("bodhi", 100);
        r.record("koji", 101);
        let s = r.snapshot(101);
        assert_eq!(s.total, 3);
        assert_eq!(s.per_minute[58..], [2, 1]);
        assert_eq!(s.categories[0].name, "bodhi");
        assert_eq!(s.categories[0].last_hour, 2);
        assert_eq!(s.categories[1].per_minute[59], 1);
        // An hour later the old minutes are gone from the series.
        r.record("koji", 161);
        let s = r.snapshot(161);
        assert_eq!(s.total, 4);
        assert_eq!(s.per_minute.iter().sum::<u64>(), 1);
        assert_eq!(s.categories.len(), 1);
    }

    #[test]
    fn categories_are_bounded() {
        let r = Rates::default();
        for i in 0..MAX_CATEGORIES + 50 {
            r.record(&format!("c{i}"), 5);
        }
        let s = r.snapshot(5);
        assert_eq!(s.categories.len(), MAX_CATEGORIES + 1);
        assert!(s
            .categories
            .iter()
            .any(|c| c.name == OTHER && c.last_hour == 50));
    }
}
