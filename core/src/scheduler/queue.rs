//! # The scheduling queue (mirrors kube-scheduler's `internal/queue.PriorityQueue`)
//!
//! Pods waiting for a node live in one of three places:
//!
//! - **activeQ**: ready to be tried now, ordered by `spec.priority` (higher first), then by
//!   arrival (kube-scheduler's default `PrioritySort` plugin);
//! - **backoffQ**: failed recently; they wait out a back-off (1 s, doubling per attempt up
//!   to 10 s) so a pod that cannot be placed does not hog the scheduler;
//! - **unschedulablePods**: tried, and no node fits. Trying again is pointless until the
//!   cluster changes, so they wait for a **cluster event** — a node added or changed, a
//!   pod deleted (freeing room) — that moves them back to activeQ (or backoffQ, if their
//!   back-off is not over yet). As a safety net, a pod that stayed there longer than
//!   `podMaxInUnschedulablePodsDuration` (5 min) is moved back by a periodic flush.
//!
//! One subtlety: while a pod is being scheduled (*in flight*), the cluster may change. If
//! the attempt then fails, parking the pod among the unschedulable ones would miss that
//! change. Like upstream, the queue remembers the scheduling cycle of the last move
//! request: a pod whose attempt started before it goes to backoffQ instead.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Where a pod key is in the queue (for traces and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

/// A pod handed out by [`SchedulingQueue::pop`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Popped {
    pub key: String,
    /// The scheduling cycle this attempt belongs to.
    pub cycle: u64,
    /// Attempts so far, this one included.
    pub attempts: u32,
}

#[derive(Default)]
struct Inner {
    /// (higher priority first, arrival order, key).
    active: BTreeSet<(Reverse<i32>, u64, String)>,
    active_index: HashMap<String, (Reverse<i32>, u64)>,
    /// key → (priority, when the back-off ends).
    backoff: HashMap<String, (i32, Instant)>,
    /// key → (priority, when it was parked).
    unschedulable: HashMap<String, (i32, Instant)>,
    in_flight: HashSet<String>,
    /// key → (failed attempts, time of the last failure).
    failures: HashMap<String, (u32, Instant)>,
    scheduling_cycle: u64,
    move_request_cycle: u64,
    seq: u64,
    closed: bool,
}

impl Inner {
    fn push_active(&mut self, key: String, priority: i32) {
        self.seq += 1;
        let entry = (Reverse(priority), self.seq);
        self.active_index.insert(key.clone(), entry);
        self.active.insert((entry.0, entry.1, key));
    }

    fn remove_active(&mut self, key: &str) -> bool {
        match self.active_index.remove(key) {
            Some((p, s)) => self.active.remove(&(p, s, key.to_string())),
            None => false,
        }
    }

    fn place(&self, key: &str) -> Option<Place> {
        if self.active_index.contains_key(key) {
            Some(Place::Active)
        } else if self.backoff.contains_key(key) {
            Some(Place::Backoff)
        } else if self.unschedulable.contains_key(key) {
            Some(Place::Unschedulable)
        } else if self.in_flight.contains(key) {
            Some(Place::InFlight)
        } else {
            None
        }
    }
}

/// The scheduling queue. All state sits behind one short-held std mutex.
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl SchedulingQueue {
    /// A queue whose back-off starts at `initial_backoff` and doubles up to `max_backoff`.
    pub fn new(initial_backoff: Duration, max_backoff: Duration) -> Self {
        SchedulingQueue {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            initial_backoff,
            max_backoff,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn backoff_for(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(20);
        self.initial_backoff.saturating_mul(1u32 << shift).min(self.max_backoff)
    }

    /// When this pod's back-off ends (now, if it has none).
    fn backoff_end(&self, inner: &Inner, key: &str) -> Instant {
        match inner.failures.get(key) {
            Some((n, at)) => *at + self.backoff_for(*n),
            None => Instant::now(),
        }
    }

    /// A new pending pod (or one seen again): queue it unless it is already somewhere.
    pub fn add(&self, key: &str, priority: i32) {
        let mut inner = self.lock();
        if inner.closed || inner.place(key).is_some() {
            return;
        }
        inner.push_active(key.to_string(), priority);
        drop(inner);
        self.notify.notify_one();
    }

    /// The pod's spec changed: if it was parked as unschedulable, give it another chance
    /// (after its back-off); if it is being scheduled, make sure a failure is retried.
    pub fn pod_updated(&self, key: &str, priority: i32) {
        let mut inner = self.lock();
        match inner.place(key) {
            Some(Place::Unschedulable) => {
                inner.unschedulable.remove(key);
                self.requeue_locked(&mut inner, key, priority);
            }
            Some(Place::InFlight) => inner.move_request_cycle = inner.scheduling_cycle,
            Some(Place::Active) | Some(Place::Backoff) => {}
            None => {
                if !inner.closed {
                    inner.push_active(key.to_string(), priority);
                }
            }
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// To activeQ if the back-off is over, else to backoffQ.
    fn requeue_locked(&self, inner: &mut Inner, key: &str, priority: i32) {
        let end = self.backoff_end(inner, key);
        if end <= Instant::now() {
            inner.push_active(key.to_string(), priority);
        } else {
            inner.backoff.insert(key.to_string(), (priority, end));
        }
    }

    /// The pod is gone, bound, or no longer ours: forget it everywhere.
    pub fn delete(&self, key: &str) {
        let mut inner = self.lock();
        inner.remove_active(key);
        inner.backoff.remove(key);
        inner.unschedulable.remove(key);
        inner.in_flight.remove(key);
        inner.failures.remove(key);
    }

    /// A cluster event that may make parked pods fit (a node added or changed, a pod
    /// deleted): move every unschedulable pod to activeQ or backoffQ.
    pub fn move_all_to_active_or_backoff(&self) {
        let mut inner = self.lock();
        let parked: Vec<(String, i32)> = inner.unschedulable.drain().map(|(k, (p, _))| (k, p)).collect();
        for (key, priority) in parked {
            self.requeue_locked(&mut inner, &key, priority);
        }
        inner.move_request_cycle = inner.scheduling_cycle;
        drop(inner);
        self.notify.notify_one();
    }

    /// The periodic flush: unschedulable pods parked longer than `max_age` go back.
    /// Returns how many moved.
    pub fn flush_unschedulable_leftover(&self, max_age: Duration) -> usize {
        let mut inner = self.lock();
        let now = Instant::now();
        let old: Vec<(String, i32)> = inner
            .unschedulable
            .iter()
            .filter(|(_, (_, since))| now.duration_since(*since) >= max_age)
            .map(|(k, (p, _))| (k.clone(), *p))
            .collect();
        for (key, priority) in &old {
            inner.unschedulable.remove(key);
            self.requeue_locked(&mut inner, key, *priority);
        }
        drop(inner);
        if !old.is_empty() {
            self.notify.notify_one();
        }
        old.len()
    }

    /// No node fits the pod: park it (or back it off if the cluster changed during the
    /// attempt). Ignored if the pod was deleted or bound meanwhile.
    pub fn add_unschedulable(&self, key: &str, priority: i32, cycle: u64) {
        let mut inner = self.lock();
        if !inner.in_flight.remove(key) || inner.closed {
            return;
        }
        let now = Instant::now();
        let n = inner.failures.get(key).map(|(n, _)| *n).unwrap_or(0) + 1;
        inner.failures.insert(key.to_string(), (n, now));
        if inner.move_request_cycle >= cycle {
            let end = self.backoff_end(&inner, key);
            inner.backoff.insert(key.to_string(), (priority, end));
        } else {
            inner.unschedulable.insert(key.to_string(), (priority, now));
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// An error (a failed API call, a failed bind): retry after the back-off. Unlike
    /// [`SchedulingQueue::add_unschedulable`], works whether or not the pod is in flight.
    pub fn add_backoff(&self, key: &str, priority: i32) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        inner.in_flight.remove(key);
        if inner.place(key).is_some() {
            return;
        }
        let now = Instant::now();
        let n = inner.failures.get(key).map(|(n, _)| *n).unwrap_or(0) + 1;
        inner.failures.insert(key.to_string(), (n, now));
        let end = self.backoff_end(&inner, key);
        inner.backoff.insert(key.to_string(), (priority, end));
        drop(inner);
        self.notify.notify_one();
    }

    /// The attempt is over and the pod needs nothing more from the queue for now (it was
    /// placed and its bind is under way). Its count of failures stays until the pod is seen
    /// bound or deleted ([`SchedulingQueue::delete`]), so a bind that keeps failing backs
    /// off longer each time, as upstream's per-pod attempts do.
    pub fn done(&self, key: &str) {
        self.lock().in_flight.remove(key);
    }

    /// Where a key is (for tests and traces).
    pub fn place(&self, key: &str) -> Option<Place> {
        self.lock().place(key)
    }

    /// Sizes of (activeQ, backoffQ, unschedulablePods).
    pub fn lens(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        (inner.active.len(), inner.backoff.len(), inner.unschedulable.len())
    }

    /// Stop: `pop` returns `None` from now on.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// The next pod to schedule: waits until activeQ has one (moving pods whose back-off
    /// ended). `None` once the queue is closed.
    pub async fn pop(&self) -> Option<Popped> {
        loop {
            let next_due = {
                let mut inner = self.lock();
                if inner.closed {
                    return None;
                }
                let now = Instant::now();
                let due: Vec<(String, i32)> = inner
                    .backoff
                    .iter()
                    .filter(|(_, (_, end))| *end <= now)
                    .map(|(k, (p, _))| (k.clone(), *p))
                    .collect();
                for (key, priority) in due {
                    inner.backoff.remove(&key);
                    inner.push_active(key, priority);
                }
                if let Some(first) = inner.active.pop_first() {
                    let key = first.2;
                    inner.active_index.remove(&key);
                    inner.in_flight.insert(key.clone());
                    inner.scheduling_cycle += 1;
                    let attempts = inner.failures.get(&key).map(|(n, _)| *n).unwrap_or(0) + 1;
                    return Some(Popped {
                        key,
                        cycle: inner.scheduling_cycle,
                        attempts,
                    });
                }
                inner.backoff.values().map(|(_, end)| *end).min()
            };
            match next_due {
                Some(at) => {
                    tokio::select! {
                        _ = self.notify.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> SchedulingQueue {
        SchedulingQueue::new(Duration::from_millis(10), Duration::from_millis(40))
    }

    #[tokio::test]
    async fn higher_priority_first_then_arrival_order() {
        let q = q();
        q.add("default/a", 0);
        q.add("default/b", 10);
        q.add("default/c", 0);
        q.add("default/a", 0); // already queued: no duplicate
        let order: Vec<String> = [q.pop().await, q.pop().await, q.pop().await]
            .into_iter()
            .map(|p| p.unwrap().key)
            .collect();
        assert_eq!(order, ["default/b", "default/a", "default/c"]);
        assert_eq!(q.lens(), (0, 0, 0));
    }

    #[tokio::test]
    async fn unschedulable_pods_wait_for_a_cluster_event() {
        let q = q();
        q.add("default/a", 0);
        let p = q.pop().await.unwrap();
        q.add_unschedulable(&p.key, 0, p.cycle);
        assert_eq!(q.place("default/a"), Some(Place::Unschedulable));
        // an unrelated status update does not move it; a cluster event does
        q.move_all_to_active_or_backoff();
        assert!(matches!(q.place("default/a"), Some(Place::Backoff | Place::Active)));
        let again = q.pop().await.unwrap();
        assert_eq!(again.key, "default/a");
        assert_eq!(again.attempts, 2);
        q.done("default/a");
        assert_eq!(q.place("default/a"), None);
    }

    #[tokio::test]
    async fn binds_that_keep_failing_back_off_longer_each_time() {
        let q = q();
        q.add("default/a", 0);
        for expected in [1u32, 2, 3] {
            let p = q.pop().await.unwrap();
            assert_eq!(p.attempts, expected);
            q.done(&p.key); // placed; the bind runs
            q.add_backoff(&p.key, 0); // ... and fails
            assert_eq!(q.place("default/a"), Some(Place::Backoff));
        }
        let inner = q.lock();
        assert_eq!(inner.failures.get("default/a").map(|(n, _)| *n), Some(3));
        drop(inner);
        q.delete("default/a"); // seen bound at last
        assert!(q.lock().failures.is_empty());
    }

    #[tokio::test]
    async fn a_cluster_event_during_the_attempt_means_backoff_not_parking() {
        let q = q();
        q.add("default/a", 0);
        let p = q.pop().await.unwrap();
        q.move_all_to_active_or_backoff(); // a node was added while we were filtering
        q.add_unschedulable(&p.key, 0, p.cycle);
        assert_eq!(q.place("default/a"), Some(Place::Backoff));
        assert_eq!(q.pop().await.unwrap().key, "default/a");
    }

    #[tokio::test]
    async fn deleted_in_flight_pods_are_not_requeued() {
        let q = q();
        q.add("default/a", 0);
        let p = q.pop().await.unwrap();
        q.delete("default/a");
        q.add_unschedulable(&p.key, 0, p.cycle);
        assert_eq!(q.place("default/a"), None);
    }

    #[tokio::test]
    async fn flush_moves_only_old_parked_pods() {
        let q = q();
        q.add("default/a", 0);
        let p = q.pop().await.unwrap();
        q.add_unschedulable(&p.key, 0, p.cycle);
        assert_eq!(q.flush_unschedulable_leftover(Duration::from_secs(3600)), 0);
        assert_eq!(q.flush_unschedulable_leftover(Duration::ZERO), 1);
        assert_eq!(q.pop().await.unwrap().key, "default/a");
    }

    #[tokio::test]
    async fn close_ends_pop() {
        let q = std::sync::Arc::new(q());
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.pop().await });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(waiter.await.unwrap(), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let q = q();
        assert_eq!(q.backoff_for(1), Duration::from_millis(10));
        assert_eq!(q.backoff_for(2), Duration::from_millis(20));
        assert_eq!(q.backoff_for(3), Duration::from_millis(40));
        assert_eq!(q.backoff_for(30), Duration::from_millis(40));
    }
}
