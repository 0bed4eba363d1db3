//! One lock per key — a pod's metadata — that RunPodSandbox holds while it looks for and makes
//! the sandbox, so that a kubelet retry waits for the first call and then finds its result.
//! A key's entry lives exactly as long as someone holds or waits for it. Touches nothing else.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

pub struct Reservations<K> {
    held: Mutex<HashMap<K, Arc<Mutex<()>>>>,
}

impl<K> Default for Reservations<K> {
    fn default() -> Self {
        Reservations { held: Mutex::new(HashMap::new()) }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K: Eq + Hash + Clone> Reservations<K> {
    /// Runs `work` while holding `key`: calls with an equal key run one after the other.
    pub fn with<T>(&self, key: &K, work: impl FnOnce() -> T) -> T {
        let slot = lock(&self.held).entry(key.clone()).or_default().clone();
        let _release = Release { reservations: self, key, slot: Some(slot.clone()) };
        let _held = lock(&slot);
        work()
    }

    /// How many keys are held or waited for.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.held).len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops this call's share of the key's entry — even when `work` panics — and the entry
/// itself when nobody else holds or waits for it (decided under the map's lock).
struct Release<'a, K: Eq + Hash> {
    reservations: &'a Reservations<K>,
    key: &'a K,
    slot: Option<Arc<Mutex<()>>>,
}

impl<K: Eq + Hash> Drop for Release<'_, K> {
    fn drop(&mut self) {
        let mut held = lock(&self.reservations.held);
        drop(self.slot.take());
        // The map's own reference, and `with`'s clone that is dropped right after this guard.
        if held.get(self.key).is_some_and(|slot| Arc::strong_count(slot) <= 2) {
            held.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn calls_with_one_key_never_overlap_and_leave_no_entry() {
        let reservations = Arc::new(Reservations::<&str>::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (reservations, inside) = (reservations.clone(), inside.clone());
                std::thread::spawn(move || {
                    let key = if i % 2 == 0 { "pod-a" } else { "pod-b" };
                    for _ in 0..50 {
                        reservations.with(&key, || {
                            assert!(inside.fetch_add(1, Ordering::SeqCst) < 2, "two calls of one key overlap");
                            std::thread::sleep(Duration::from_micros(50));
                            inside.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(reservations.is_empty(), "every entry went with its last holder");
    }

    #[test]
    fn a_waiter_keeps_the_entry_and_a_failed_call_leaves_none() {
        let reservations = Arc::new(Reservations::<String>::default());
        let (entered, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let first = {
            let reservations = reservations.clone();
            let (entered, wait) = (entered.0, release.1);
            std::thread::spawn(move || {
                reservations.with(&"pod".to_string(), || {
                    entered.send(()).unwrap();
                    wait.recv().unwrap();
                })
            })
        };
        entered.1.recv().unwrap();
        let second = {
            let reservations = reservations.clone();
            std::thread::spawn(move || reservations.with(&"pod".to_string(), || "second ran"))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(reservations.len(), 1);
        release.0.send(()).unwrap();
        first.join().unwrap();
        assert_eq!(second.join().unwrap(), "second ran");
        assert!(reservations.is_empty());

        let failed: Result<(), &str> = reservations.with(&"other".to_string(), || Err("refused"));
        assert!(failed.is_err());
        assert!(reservations.is_empty(), "a failed creation leaves no entry behind");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reservations.with(&"boom".to_string(), || panic!("boom"))
        }));
        assert!(panicked.is_err());
        assert!(reservations.is_empty(), "nor does a panic");
    }
}
