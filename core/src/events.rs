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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// Records Events for one component (and node, for kubelets). Cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    client: Client,
    component: String,
    host: Option<String>,
    /// (object uid, reason, message) → (event namespace, event name, count): the folding
    /// cache. Bounded: cleared when it grows past 4096 entries.
    seen: Arc<Mutex<HashMap<(String, String, String), (String, String, i64)>>>,
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
            .get(&cache_key)
            .cloned();
        if let Some((ns, name, count)) = known {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            match self.client.merge_patch(info, Some(&ns), &name, None, &patch).await {
                Ok(_) => {
                    self.seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(cache_key, (ns, name, count + 1));
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
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 4096 {
            seen.clear();
        }
        seen.insert(cache_key, (ns, name, 1));
        Ok(())
    }
}
