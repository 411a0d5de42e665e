//! # Events (mirrors client-go's `record.EventRecorder`)
//!
//! When a component does something a human may want to know about — the scheduler could
//! not place a pod, the kubelet pulled an image, a container keeps crashing — it records an
//! **Event**: a small object in the same namespace as the thing it is about, with a `type`
//! (`Normal` or `Warning`), a short `reason` (`FailedScheduling`, `Pulled`, `BackOff`), a
//! `message` for humans, the `involvedObject`, and the `source` component.
//! `kulisse get events` lists them and `kulisse describe` shows them under the object.
//!
//! Repeats are folded, as client-go's event correlator does: the same reason and message
//! about the same object bumps `count` and `lastTimestamp` instead of creating a new Event.
//! Recording never fails the caller: an event that cannot be written is only logged.
//!
//! The folding cache holds at most 4,096 events, as client-go's, and forgets an event that
//! has not repeated for [`FOLD_WINDOW`] (client-go keeps it until 4,096 newer ones push it
//! out). A kulisse process can run hundreds of kubelets, each with its recorder, and under
//! churn every one of them filled its cache with events about pods long deleted: in a soak
//! of 100 nodes that was a steady growth of the process. A repeat after the window makes
//! a new Event instead of counting on the old one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::Client;
use crate::objects;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// How long the folding cache remembers an event that does not repeat (client-go's event
/// aggregator uses the same ten minutes as its window).
pub const FOLD_WINDOW: Duration = Duration::from_secs(600);
/// The most events the folding cache remembers (client-go's `maxLruCacheEntries`).
const FOLD_CAPACITY: usize = 4096;

/// (object uid, reason, message): what makes two events the same.
type FoldKey = (String, String, String);

/// An event the recorder wrote: (namespace, name, count, when last written).
type Folded = (String, String, i64, Instant);

/// The events a recorder wrote lately, to fold repeats into them.
#[derive(Default)]
struct FoldCache {
    events: HashMap<FoldKey, Folded>,
    /// Inserts since the last sweep of entries older than [`FOLD_WINDOW`].
    since_sweep: usize,
}

impl FoldCache {
    /// The event to fold `key` into, if one was written within the window.
    fn get(&self, key: &FoldKey, now: Instant) -> Option<(String, String, i64)> {
        let (ns, name, count, last) = self.events.get(key)?;
        (now.duration_since(*last) < FOLD_WINDOW).then(|| (ns.clone(), name.clone(), *count))
    }

    fn insert(&mut self, key: FoldKey, ns: String, name: String, count: i64, now: Instant) {
        self.since_sweep += 1;
        if self.since_sweep >= FOLD_CAPACITY / 16 {
            self.since_sweep = 0;
            self.events
                .retain(|_, (_, _, _, last)| now.duration_since(*last) < FOLD_WINDOW);
        }
        if self.events.len() >= FOLD_CAPACITY && !self.events.contains_key(&key) {
            self.events.clear();
        }
        self.events.insert(key, (ns, name, count, now));
    }
}

/// Records Events for one component (and node, for kubelets). Cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    client: Client,
    component: String,
    host: Option<String>,
    /// The folding cache ([`FoldCache`]).
    seen: Arc<Mutex<FoldCache>>,
}

impl EventRecorder {
    /// A recorder reporting as `component` (e.g. `default-scheduler`, `kubelet`).
    pub fn new(client: Client, component: &str, host: Option<&str>) -> Self {
        EventRecorder {
            client,
            component: component.to_string(),
            host: host.map(str::to_string),
            seen: Arc::default(),
        }
    }

    /// Record an event about `involved`. Never fails; problems are logged.
    pub async fn record(&self, involved: &Value, kind: EventType, reason: &str, message: &str) {
        self.record_at(chrono::Utc::now(), involved, kind, reason, message)
            .await;
    }

    /// Record an event that happened at `at`, which may be a moment before it is recorded.
    /// The scheduler stamps its `Scheduled` event with the time it sent the binding: it
    /// records the event only once the bind has returned, and by then the node's kubelet may
    /// already have seen the binding and recorded its own `Pulling`; stamped at the bind,
    /// the two events keep the order in which things happened (events are named, and so
    /// listed, by their time).
    pub async fn record_at(
        &self,
        at: chrono::DateTime<chrono::Utc>,
        involved: &Value,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(e) = self.try_record(at, involved, kind, reason, message).await {
            tracing::debug!("could not record event {reason} ({message}): {e}");
        }
    }

    async fn try_record(
        &self,
        at: chrono::DateTime<chrono::Utc>,
        involved: &Value,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), crate::client::ClientError> {
        let info = objects::by_gvk("v1", "Event").expect("Event is a built-in kind");
        let now = crate::objects::time::time(at);
        let uid = involved
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let cache_key = (uid.clone(), reason.to_string(), message.to_string());
        let known = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cache_key, Instant::now());
        if let Some((ns, name, count)) = known {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            match self.client.merge_patch(info, Some(&ns), &name, None, &patch).await {
                Ok(_) => {
                    self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(
                        cache_key,
                        ns,
                        name,
                        count + 1,
                        Instant::now(),
                    );
                    return Ok(());
                }
                Err(e) if e.code() == Some(404) => {} // the event was deleted: create a new one
                Err(e) => return Err(e),
            }
        }
        let involved_name = objects::name(involved).unwrap_or("");
        let ns = objects::namespace(involved)
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_string();
        let nanos = at.timestamp_nanos_opt().unwrap_or(0);
        let name = format!("{involved_name}.{nanos:x}");
        let mut source = json!({"component": self.component});
        if let Some(h) = &self.host {
            source["host"] = json!(h);
        }
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {
                "kind": involved.get("kind").cloned().unwrap_or(Value::Null),
                "apiVersion": involved.get("apiVersion").cloned().unwrap_or(Value::Null),
                "namespace": objects::namespace(involved),
                "name": involved_name,
                "uid": uid,
                "resourceVersion": involved.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null),
            },
            "reason": reason,
            "message": message,
            "type": kind.as_str(),
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.host.clone().unwrap_or_default(),
        });
        self.client.create(info, Some(&ns), &event).await?;
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cache_key, ns, name, 1, Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> FoldKey {
        (format!("uid-{i}"), "Started".into(), "Started container c".into())
    }

    #[test]
    fn the_fold_cache_forgets_what_did_not_repeat_within_the_window() {
        let start = Instant::now();
        let mut cache = FoldCache::default();
        cache.insert(key(0), "default".into(), "web.1".into(), 1, start);
        let soon = start + FOLD_WINDOW - Duration::from_secs(1);
        assert_eq!(cache.get(&key(0), soon), Some(("default".into(), "web.1".into(), 1)));
        assert_eq!(
            cache.get(&key(0), start + FOLD_WINDOW),
            None,
            "a repeat after the window is a new Event"
        );
        // Entries past the window are dropped by the next sweep, not kept until the cap.
        let later = start + FOLD_WINDOW + Duration::from_secs(1);
        for i in 1..=FOLD_CAPACITY / 16 {
            cache.insert(key(i), "default".into(), format!("e.{i}"), 1, later);
        }
        assert!(!cache.events.contains_key(&key(0)));
        assert_eq!(cache.events.len(), FOLD_CAPACITY / 16);
    }

    #[test]
    fn the_fold_cache_never_holds_more_than_its_capacity() {
        let now = Instant::now();
        let mut cache = FoldCache::default();
        for i in 0..FOLD_CAPACITY * 3 {
            cache.insert(key(i), "default".into(), format!("e.{i}"), 1, now);
            assert!(cache.events.len() <= FOLD_CAPACITY);
        }
        // A repeat of a known event is counted, not a reason to clear the cache.
        let known = key(FOLD_CAPACITY * 3 - 1);
        let before = cache.events.len();
        cache.insert(known.clone(), "default".into(), "again".into(), 2, now);
        assert_eq!(cache.events.len(), before);
        assert_eq!(cache.get(&known, now).map(|(_, _, n)| n), Some(2));
    }
}
