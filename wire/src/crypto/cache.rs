//! Bounded cache of parsed certificates and their chain verdicts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use openssl::pkey::{PKey, Public};
use openssl::rsa::Rsa;

use super::{lock, Rejection};

/// SHA-256 of a decoded `certificate` field (the PEM text), so that the
/// same certificate wrapped differently is one entry.
pub(crate) type CertKey = [u8; 32];

/// What is remembered about one certificate.
pub(crate) struct CertEntry {
    /// The leaf's public key, for the per-message signature check.
    pub(crate) public_key: PKey<Public>,
    /// The same key as RSA (fedmsg keys always are), for the direct
    /// verification path; `None` for other key types.
    pub(crate) rsa: Option<Rsa<Public>>,
    /// First subject CN.
    pub(crate) signer: String,
    /// The chain verdict.
    pub(crate) chain: Result<(), Rejection>,
    /// Trust snapshot generation the verdict was computed with.
    pub(crate) generation: u64,
    /// Epoch second from which the entry must not be used any more.
    pub(crate) expires_at: i64,
}

/// A least-recently-used map with a hard size bound.
///
/// Recency is a counter: `order` maps each entry's last-use tick to its key,
/// so the oldest entry is the first of `order`. All operations are
/// O(log n); the map is small and only locked for lookups/inserts, never
/// while verifying.
struct Lru<V> {
    map: HashMap<CertKey, (V, u64)>,
    order: BTreeMap<u64, CertKey>,
    tick: u64,
    capacity: usize,
}

impl<V: Clone> Lru<V> {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::with_capacity(capacity.min(4096)),
            order: BTreeMap::new(),
            tick: 0,
            capacity,
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn get(&mut self, key: &CertKey) -> Option<V> {
        let tick = self.next_tick();
        let (value, last_used) = self.map.get_mut(key)?;
        self.order.remove(last_used);
        *last_used = tick;
        self.order.insert(tick, *key);
        Some(value.clone())
    }

    fn insert(&mut self, key: CertKey, value: V) {
        if self.capacity == 0 {
            return;
        }
        self.remove(&key);
        while self.map.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&oldest);
        }
        let tick = self.next_tick();
        self.order.insert(tick, key);
        self.map.insert(key, (value, tick));
    }

    fn remove(&mut self, key: &CertKey) {
        if let Some((_, tick)) = self.map.remove(key) {
            self.order.remove(&tick);
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Two LRU maps: certificates with a valid chain, and those without. Keeping
/// failures apart means a flood of forged certificates only churns its own,
/// smaller map and never evicts the certificates of real publishers.
pub(crate) struct CertCache {
    good: Mutex<Lru<Arc<CertEntry>>>,
    bad: Mutex<Lru<Arc<CertEntry>>>,
}

impl CertCache {
    pub(crate) fn new(good_capacity: usize, bad_capacity: usize) -> Self {
        Self {
            good: Mutex::new(Lru::new(good_capacity)),
            bad: Mutex::new(Lru::new(bad_capacity)),
        }
    }

    /// The entry for `key` if it was computed under `generation` and has not
    /// expired at epoch second `now`; stale entries are dropped.
    pub(crate) fn get(&self, key: &CertKey, generation: u64, now: i64) -> Option<Arc<CertEntry>> {
        for map in [&self.good, &self.bad] {
            let mut map = lock(map);
            if let Some(entry) = map.get(key) {
                if entry.generation == generation && now < entry.expires_at {
                    return Some(entry);
                }
                map.remove(key);
                return None;
            }
        }
        None
    }

    pub(crate) fn insert(&self, key: CertKey, entry: Arc<CertEntry>) {
        let map = if entry.chain.is_ok() {
            &self.good
        } else {
            &self.bad
        };
        lock(map).insert(key, entry);
    }

    /// (valid-chain entries, failed-chain entries).
    pub(crate) fn len(&self) -> (usize, usize) {
        (lock(&self.good).len(), lock(&self.bad).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> CertKey {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&n.to_le_bytes());
        k
    }

    #[test]
    fn lru_is_bounded_and_evicts_least_recent() {
        let mut lru = Lru::new(3);
        for n in 0..3 {
            lru.insert(key(n), n);
        }
        assert_eq!(lru.get(&key(0)), Some(0)); // 0 is now the most recent
        lru.insert(key(3), 3); // evicts 1
        assert_eq!(lru.get(&key(1)), None);
        assert_eq!(lru.get(&key(0)), Some(0));
        for n in 10..1000 {
            lru.insert(key(n), n);
            assert!(lru.len() <= 3);
        }
        assert_eq!(lru.order.len(), lru.len());
    }

    #[test]
    fn reinserting_a_key_replaces_it() {
        let mut lru = Lru::new(2);
        lru.insert(key(1), 1);
        lru.insert(key(1), 2);
        assert_eq!(lru.len(), 1);
        assert_eq!(lru.order.len(), 1);
        assert_eq!(lru.get(&key(1)), Some(2));
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut lru = Lru::new(0);
        lru.insert(key(1), 1);
        assert_eq!(lru.get(&key(1)), None);
    }
}
