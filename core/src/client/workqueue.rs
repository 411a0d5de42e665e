//! # The work queue (mirrors client-go's `workqueue.RateLimitingInterface`)
//!
//! A controller does not react to watch events one by one. It turns each event into a
//! *key* (`default/web`) and puts the key in a queue; workers take keys out and reconcile
//! the object *as it is now*. Three properties make this robust:
//!
//! - **Deduplication.** A key that is already waiting is not added twice: ten quick
//!   changes to one Deployment cause one reconcile, not ten.
//! - **One worker per key.** A key being processed is not handed to a second worker; if it
//!   changes meanwhile, it is queued again for after the current run (`done`).
//! - **Rate-limited retries.** A failed key comes back after a delay that doubles on each
//!   failure (5 ms, 10 ms, ... up to a cap), and resets on success (`forget`).
//!
//! Each queued key also remembers *why* it was queued (the latest reason wins), so the
//! reconcile span can say so.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// A deduplicating, rate-limited queue of keys, each with the latest payload (the reason).
pub struct WorkQueue<K, P> {
    /// All queue state behind one short-held std mutex: never held across an await.
    inner: Mutex<Inner<K, P>>,
    /// Wakes a waiting worker when a key becomes available.
    notify: Notify,
    base_delay: Duration,
    max_delay: Duration,
}

struct Inner<K, P> {
    queue: VecDeque<K>,
    /// Keys waiting in `queue`, with their latest payload.
    dirty: HashMap<K, P>,
    /// Keys a worker is reconciling right now.
    processing: HashSet<K>,
    /// Keys that changed while being processed: re-queued by `done`.
    again: HashMap<K, P>,
    failures: HashMap<K, u32>,
    shut_down: bool,
}

impl<K, P> WorkQueue<K, P>
where
    K: Clone + Eq + Hash + Send + 'static,
    P: Clone + Send + 'static,
{
    /// A queue whose retry delays go from `base_delay`, doubling, up to `max_delay`.
    pub fn new(base_delay: Duration, max_delay: Duration) -> Arc<Self> {
        Arc::new(WorkQueue {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                dirty: HashMap::new(),
                processing: HashSet::new(),
                again: HashMap::new(),
                failures: HashMap::new(),
                shut_down: false,
            }),
            notify: Notify::new(),
            base_delay,
            max_delay,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, P>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queue `key` now (or refresh its payload if it is already waiting).
    pub fn add(&self, key: K, payload: P) {
        let mut inner = self.lock();
        if inner.shut_down {
            return;
        }
        if inner.processing.contains(&key) {
            inner.again.insert(key, payload);
            return;
        }
        if inner.dirty.insert(key.clone(), payload).is_none() {
            inner.queue.push_back(key);
            drop(inner);
            self.notify.notify_one();
        }
    }

    /// Queue `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: K, payload: P, delay: Duration) {
        if delay.is_zero() {
            return self.add(key, payload);
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = me.upgrade() {
                q.add(key, payload);
            }
        });
    }

    /// Queue `key` again after its rate-limited delay (doubling per consecutive failure).
    /// Returns the delay chosen.
    pub fn add_rate_limited(self: &Arc<Self>, key: K, payload: P) -> Duration {
        let delay = {
            let mut inner = self.lock();
            let n = inner.failures.entry(key.clone()).or_insert(0);
            let delay = self.base_delay.saturating_mul(2u32.saturating_pow((*n).min(30)));
            *n += 1;
            delay.min(self.max_delay)
        };
        self.add_after(key, payload, delay);
        delay
    }

    /// How many times in a row `key` has failed.
    pub fn failures(&self, key: &K) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Reset `key`'s failure count (after a successful reconcile).
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// Wait for the next key. `None` once the queue is shut down.
    pub async fn next(&self) -> Option<(K, P)> {
        loop {
            let notified = self.notify.notified();
            {
                let mut inner = self.lock();
                if inner.shut_down {
                    return None;
                }
                if let Some(key) = inner.queue.pop_front() {
                    let payload = inner.dirty.remove(&key).expect("queued keys are dirty");
                    inner.processing.insert(key.clone());
                    if !inner.queue.is_empty() {
                        drop(inner);
                        self.notify.notify_one();
                    }
                    return Some((key, payload));
                }
            }
            notified.await;
        }
    }

    /// A worker finished `key`. If it changed meanwhile, it is queued again.
    pub fn done(&self, key: &K) {
        let mut inner = self.lock();
        inner.processing.remove(key);
        if let Some(payload) = inner.again.remove(key) {
            if inner.dirty.insert(key.clone(), payload).is_none() {
                inner.queue.push_back(key.clone());
                drop(inner);
                self.notify.notify_one();
            }
        }
    }

    /// Number of keys waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when no key is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stop handing out keys; waiting workers get `None`.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedupes_and_keeps_latest_payload() {
        let q: Arc<WorkQueue<String, u32>> = WorkQueue::new(Duration::from_millis(1), Duration::from_secs(1));
        q.add("a".into(), 1);
        q.add("a".into(), 2);
        q.add("b".into(), 3);
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, Some(("a".into(), 2)));
        // "a" changes while processed: it is not handed out twice, but comes back after done.
        q.add("a".into(), 4);
        assert_eq!(q.next().await, Some(("b".into(), 3)));
        assert!(q.is_empty());
        q.done(&"a".into());
        assert_eq!(q.next().await, Some(("a".into(), 4)));
    }

    #[tokio::test]
    async fn rate_limited_delays_double_and_reset() {
        let q: Arc<WorkQueue<String, ()>> = WorkQueue::new(Duration::from_millis(5), Duration::from_millis(40));
        let d: Vec<Duration> = (0..5).map(|_| q.add_rate_limited("k".into(), ())).collect();
        assert_eq!(
            d.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
            vec![5, 10, 20, 40, 40]
        );
        q.forget(&"k".into());
        assert_eq!(q.failures(&"k".into()), 0);
        assert_eq!(q.next().await.map(|(k, _)| k), Some("k".to_string()));
    }

    #[tokio::test]
    async fn shut_down_releases_workers() {
        let q: Arc<WorkQueue<String, ()>> = WorkQueue::new(Duration::from_millis(1), Duration::from_secs(1));
        let q2 = q.clone();
        let worker = tokio::spawn(async move { q2.next().await });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(worker.await.unwrap(), None);
    }
}
