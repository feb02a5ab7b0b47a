//! A small time-bounded cache for configuration the hot path reads on every request
//! (a tenant's routes, the tenant an API key belongs to).
//!
//! Writes made through [`super::Management`] invalidate the entries they affect at
//! once; entries also expire after a short time-to-live, so a change made elsewhere
//! (the delivery engine disabling a target, another instance) is seen within it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a cached entry is trusted without a write invalidating it.
pub const CONFIG_TTL: Duration = Duration::from_secs(1);

/// Values by key, each trusted for [`CONFIG_TTL`].
#[derive(Debug)]
pub struct Cached<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> Default for Cached<K, V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
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

    /// Stores `value` for `key`.
    pub fn put(&self, key: K, value: V) {
        let mut entries = self.lock();
        // Expired entries are dropped as new ones arrive, so the map stays small.
        if entries.len() > 1024 {
            entries.retain(|_, (stored, _)| stored.elapsed() < CONFIG_TTL);
        }
        entries.insert(key, (Instant::now(), value));
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.lock().clear();
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
        cache.put(1, "one");
        assert_eq!(cache.get(&1), Some("one"));
        cache.remove(&1);
        assert_eq!(cache.get(&1), None);
        cache.put(2, "two");
        cache.clear();
        assert_eq!(cache.get(&2), None);
    }
}
