//! # Pod conditions (mirrors `k8s.io/kubernetes/pkg/api/v1/pod/util.go`)
//!
//! A pod's `status.conditions` is a list of **conditions**, each a small record
//!
//! ```yaml
//! - type: Ready                  # which question it answers
//!   status: "True"               # "True", "False" or "Unknown"
//!   reason: ContainersNotReady   # one CamelCase word, for programs (optional)
//!   message: containers with unready status: [web]   # for people (optional)
//!   lastTransitionTime: "2026-01-02T03:04:05Z"      # when `status` last changed
//! ```
//!
//! The kubelet writes `PodReadyToStartContainers`, `Initialized`, `ContainersReady` and
//! `Ready`; the scheduler (through the binding) writes `PodScheduled`. Everyone else only
//! reads them, and the one question most readers ask is upstream's `IsPodReady`: *is the
//! `Ready` condition `True`?* That answer decides whether a pod is behind a Service
//! (EndpointSlices), counts as available for a Deployment, or may be deleted first when a
//! ReplicaSet scales down.
//!
//! `lastTransitionTime` moves only when `status` changes: a writer that sets a condition
//! again with the same status keeps the old time (upstream's `UpdatePodCondition`), so the
//! time says *since when* a pod has been ready, which `minReadySeconds` builds on.
//!
//! Other kinds (Deployments, Nodes, Namespaces) use the same list shape in their own
//! status, so [`condition`] and [`set_condition`] take any object's `status`.

use serde_json::{Value, json};

/// The condition of type `ty` in `status.conditions` (`GetPodCondition`); `status` is an
/// object's `status`, not the object.
pub fn condition<'a>(status: &'a Value, ty: &str) -> Option<&'a Value> {
    condition_in(status.get("conditions")?, ty)
}

/// The condition of type `ty` in a list of conditions (`GetPodConditionFromList`).
pub fn condition_in<'a>(conditions: &'a Value, ty: &str) -> Option<&'a Value> {
    conditions
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
}

/// The pod's `Ready` condition (`GetPodReadyCondition`).
pub fn ready_condition(pod: &Value) -> Option<&Value> {
    condition(pod.get("status")?, "Ready")
}

/// A pod is ready when its `Ready` condition is `True` (`IsPodReady`).
pub fn is_pod_ready(pod: &Value) -> bool {
    ready_condition(pod).is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

/// The pod's `spec.restartPolicy`: `Always` (the default), `OnFailure` or `Never`.
pub fn restart_policy(pod: &Value) -> &str {
    pod.pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always")
}

/// The `lastTransitionTime` for a condition that now has `status`: the one of `old` when
/// `old` had the same status, else `now`.
pub fn transition_time(old: Option<&Value>, status: &str, now: &str) -> Value {
    old.filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now))
}

/// Put `cond` into `status.conditions`, replacing the condition of its type (moved to the
/// end of the list). Nothing changes when the present one has the same `status` and
/// `reason`; when only the reason changes, the present `lastTransitionTime` is kept.
/// Returns whether the list changed. (`SetDeploymentCondition`, which `UpdatePodCondition`
/// resembles.)
pub fn set_condition(status: &mut Value, mut cond: Value) -> bool {
    let ty = cond.get("type").and_then(Value::as_str).unwrap_or("").to_string();
    if let Some(current) = condition(status, &ty) {
        if current.get("status") == cond.get("status") && current.get("reason") == cond.get("reason") {
            return false;
        }
        if current.get("status") == cond.get("status")
            && let Some(t) = current.get("lastTransitionTime")
        {
            cond["lastTransitionTime"] = t.clone();
        }
    }
    remove_condition(status, &ty);
    if !status.is_object() {
        *status = json!({});
    }
    let list = status
        .as_object_mut()
        .map(|m| m.entry("conditions").or_insert_with(|| json!([])));
    if let Some(Value::Array(list)) = list {
        list.push(cond);
    }
    true
}

/// Drop the condition of type `ty` from `status.conditions`.
pub fn remove_condition(status: &mut Value, ty: &str) {
    if let Some(list) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        list.retain(|c| c.get("type").and_then(Value::as_str) != Some(ty));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(conditions: Value) -> Value {
        json!({"status": {"conditions": conditions}})
    }

    #[test]
    fn ready_only_when_the_ready_condition_is_true() {
        assert!(is_pod_ready(&pod(json!([{"type": "Ready", "status": "True"}]))));
        assert!(!is_pod_ready(&pod(json!([{"type": "Ready", "status": "False"}]))));
        assert!(!is_pod_ready(&pod(
            json!([{"type": "ContainersReady", "status": "True"}])
        )));
        assert!(!is_pod_ready(&json!({"status": {}})));
        assert!(!is_pod_ready(&json!({"status": {"conditions": "oops"}})));
        assert!(!is_pod_ready(&json!({})));
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let old = json!({"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"});
        assert_eq!(transition_time(Some(&old), "True", "NOW"), "2020-01-01T00:00:00Z");
        assert_eq!(transition_time(Some(&old), "False", "NOW"), "NOW");
        assert_eq!(transition_time(None, "True", "NOW"), "NOW");
    }

    #[test]
    fn set_condition_keeps_the_transition_time_and_reports_changes() {
        let mut status = json!({});
        let first = json!({"type": "Available", "status": "True", "reason": "A", "lastTransitionTime": "T1"});
        assert!(set_condition(&mut status, first));
        let same = json!({"type": "Available", "status": "True", "reason": "A", "lastTransitionTime": "T2"});
        assert!(!set_condition(&mut status, same));
        assert_eq!(condition(&status, "Available").unwrap()["lastTransitionTime"], "T1");
        let reason = json!({"type": "Available", "status": "True", "reason": "B", "lastTransitionTime": "T3"});
        assert!(set_condition(&mut status, reason));
        let c = condition(&status, "Available").unwrap();
        assert_eq!(
            (c["reason"].as_str(), c["lastTransitionTime"].as_str()),
            (Some("B"), Some("T1"))
        );
        let flipped = json!({"type": "Available", "status": "False", "reason": "B", "lastTransitionTime": "T4"});
        assert!(set_condition(&mut status, flipped));
        assert_eq!(condition(&status, "Available").unwrap()["lastTransitionTime"], "T4");
        assert_eq!(status["conditions"].as_array().map(Vec::len), Some(1));
        remove_condition(&mut status, "Available");
        assert!(condition(&status, "Available").is_none());
    }
}
