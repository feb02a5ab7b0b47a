//! A small time-bounded cache for configuration the hot path reads on every request
//! (a tenant's routes, the tenant an API key belongs to).
//!
//! Writes made through [`super::Management`] invalidate the entries they affect at
//! once; entries also expire after a short time-to-live, so a change made elsewhere
//! (the delivery engine disabling a target, another instance) is seen within it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a cached entry is trusted without a write invalidating it.
pub const CONFIG_TTL: Duration = Duration::from_secs(1);

/// Values by key, each trusted for [`CONFIG_TTL`].
#[derive(Debug)]
pub struct Cached<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    /// Bumped by every invalidation, so a value read before one is not stored after.
    generation: AtomicU64,
}

impl<K: Eq + Hash, V: Clone> Default for Cached<K, V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }
}

impl<K: Eq + Hash, V: Clone> Cached<K, V> {
    /// The value for `key` if it was stored less than the TTL ago.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.lock();
        let (stored, value) = entries.get(key)?;
        (stored.elapsed() < CONFIG_TTL).then(|| value.clone())
    }

    /// The current generation: take it before reading the value to [`Self::put`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Stores `value` for `key`, read when the cache was at `generation`; dropped if
    /// an invalidation happened since (the value may predate it).
    pub fn put(&self, generation: u64, key: K, value: V) {
        let mut entries = self.lock();
        if self.generation() != generation {
            return;
        }
        // Expired entries are dropped as new ones arrive, so the map stays small.
        if entries.len() > 1024 {
            entries.retain(|_, (stored, _)| stored.elapsed() < CONFIG_TTL);
        }
        entries.insert(key, (Instant::now(), value));
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &K) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.remove(key);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_served_until_removed() {
        let cache: Cached<u8, &str> = Cached::default();
        assert_eq!(cache.get(&1), None);
        cache.put(cache.generation(), 1, "one");
        assert_eq!(cache.get(&1), Some("one"));
        cache.remove(&1);
        assert_eq!(cache.get(&1), None);
        cache.put(cache.generation(), 2, "two");
        cache.clear();
        assert_eq!(cache.get(&2), None);
    }

    #[test]
    fn a_value_read_before_an_invalidation_is_not_stored() {
        let cache: Cached<u8, &str> = Cached::default();
        let before = cache.generation();
        cache.remove(&1);
        cache.put(before, 1, "stale");
        assert_eq!(cache.get(&1), None);
    }
}
