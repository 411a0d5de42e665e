//! # Deployment progress (mirrors `pkg/controller/deployment/progress.go`)
//!
//! A rollout reports how it is doing in two conditions of the Deployment's status, the
//! ones `kubectl rollout status` reads:
//!
//! - `Available`: are at least `replicas - maxUnavailable` pods available?
//! - `Progressing`: `NewReplicaSetCreated` / `FoundNewReplicaSet` when the new ReplicaSet
//!   appears, `ReplicaSetUpdated` while counts move forward (`DeploymentProgressing`),
//!   `NewReplicaSetAvailable` once complete (`DeploymentComplete`), and
//!   `ProgressDeadlineExceeded` when nothing moved for `progressDeadlineSeconds`
//!   (`DeploymentTimedOut`). A rollout still in progress is looked at again when its
//!   deadline would pass (`requeueStuckDeployment`).
//!
//! A ReplicaSet's `ReplicaFailure` (e.g. a quota that refuses pods) is copied up. Setting a
//! condition follows `SetDeploymentCondition`: same status and reason, no change; same
//! status, new reason: the transition time stays.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use super::DeploymentSync;
use super::util::{d_replicas, has_progress_deadline, name_of};
use crate::controllers::replicaset::{int_at, parse_time};

// Condition reasons, as upstream's `deploymentutil`.
pub(super) const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub(super) const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub(super) const RS_UPDATED: &str = "ReplicaSetUpdated";
pub(super) const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub(super) const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub(super) const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
pub(super) const PAUSED: &str = "DeploymentPaused";
pub(super) const RESUMED: &str = "DeploymentResumed";

// ---------------------------------------------------------------------------------------
// Conditions
// ---------------------------------------------------------------------------------------

pub(super) fn condition(status: &Value, kind: &str) -> Option<Value> {
    crate::objects::pod::condition(status, kind).cloned()
}

pub(super) fn new_condition(kind: &str, status: &str, reason: &str, message: String) -> Value {
    let now = crate::objects::time::now();
    json!({
        "type": kind,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    })
}

pub(super) fn remove_condition(status: &mut Value, kind: &str) {
    crate::objects::pod::remove_condition(status, kind);
}

/// `SetDeploymentCondition`: no change when status and reason are the same; keep the
/// transition time when only the reason changes.
pub(super) fn set_condition(status: &mut Value, cond: Value) {
    crate::objects::pod::set_condition(status, cond);
}

/// Has the Deployment reached its goal (`DeploymentComplete`)?
pub(super) fn deployment_complete(d: &Value, status: &Value) -> bool {
    let want = d_replicas(d);
    int_at(status, "/updatedReplicas", 0) == want
        && int_at(status, "/replicas", 0) == want
        && int_at(status, "/availableReplicas", 0) == want
        && int_at(status, "/observedGeneration", 0) >= int_at(d, "/metadata/generation", 1)
}

/// Did the rollout move forward since the last status (`DeploymentProgressing`)?
pub(super) fn deployment_progressing(d: &Value, new: &Value) -> bool {
    let old = d.get("status").cloned().unwrap_or_else(|| json!({}));
    int_at(new, "/updatedReplicas", 0) > int_at(&old, "/updatedReplicas", 0)
        || int_at(new, "/replicas", 0) < int_at(&old, "/replicas", 0)
        || int_at(new, "/readyReplicas", 0) > int_at(&old, "/readyReplicas", 0)
        || int_at(new, "/availableReplicas", 0) > int_at(&old, "/availableReplicas", 0)
}

/// Has the rollout made no progress for `progressDeadlineSeconds` (`DeploymentTimedOut`)?
pub(super) fn deployment_timed_out(d: &Value, status: &Value) -> bool {
    if !has_progress_deadline(d) {
        return false;
    }
    let Some(cond) = condition(status, "Progressing") else {
        return false;
    };
    match cond.get("reason").and_then(Value::as_str) {
        Some(TIMED_OUT) => return true,
        Some(NEW_RS_AVAILABLE) => return false,
        _ => {}
    }
    let Some(from) = parse_time(&cond, "/lastUpdateTime") else {
        return false;
    };
    let deadline = int_at(d, "/spec/progressDeadlineSeconds", 600);
    from + chrono::Duration::seconds(deadline) < Utc::now()
}

impl DeploymentSync<'_> {
    /// When to look again at a rollout still in progress: when its deadline would pass
    /// (`requeueStuckDeployment`). `None` for a complete or timed-out rollout, or one
    /// without a deadline.
    pub(super) fn requeue_stuck(&self, status: &Value) -> Option<Duration> {
        if has_progress_deadline(&self.deployment)
            && !deployment_complete(&self.deployment, status)
            && let Some(cond) = condition(status, "Progressing")
            && cond.get("reason").and_then(Value::as_str) != Some(TIMED_OUT)
            && let Some(from) = parse_time(&cond, "/lastUpdateTime")
        {
            let deadline =
                from + chrono::Duration::seconds(int_at(&self.deployment, "/spec/progressDeadlineSeconds", 600));
            let left = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            return Some(left + Duration::from_secs(1));
        }
        None
    }

    /// The Progressing condition and ReplicaFailure (`syncRolloutStatus`).
    pub(super) fn progressing(&self, new: Option<&Value>, status: &mut Value) {
        let d = &self.deployment;
        if !has_progress_deadline(d) {
            remove_condition(status, "Progressing");
        }
        let current = condition(status, "Progressing");
        let complete = int_at(status, "/replicas", 0) == int_at(status, "/updatedReplicas", 0)
            && current.as_ref().and_then(|c| c.get("reason")).and_then(Value::as_str) == Some(NEW_RS_AVAILABLE);
        let new_name = new.map(name_of);
        if has_progress_deadline(d) && !complete {
            if deployment_complete(d, status) {
                let msg = match new_name {
                    Some(n) => format!("ReplicaSet \"{n}\" has successfully progressed."),
                    None => "Deployment has successfully progressed.".to_string(),
                };
                set_condition(status, new_condition("Progressing", "True", NEW_RS_AVAILABLE, msg));
            } else if deployment_progressing(d, status) {
                let msg = match new_name {
                    Some(n) => format!("ReplicaSet \"{n}\" is progressing."),
                    None => "Deployment is progressing.".to_string(),
                };
                let mut cond = new_condition("Progressing", "True", RS_UPDATED, msg);
                if let Some(cur) = &current {
                    if cur.get("status").and_then(Value::as_str) == Some("True")
                        && let Some(t) = cur.get("lastTransitionTime")
                    {
                        cond["lastTransitionTime"] = t.clone();
                    }
                    remove_condition(status, "Progressing");
                }
                set_condition(status, cond);
            } else if deployment_timed_out(d, status) {
                let msg = match new_name {
                    Some(n) => format!("ReplicaSet \"{n}\" has timed out progressing."),
                    None => "Deployment has timed out progressing.".to_string(),
                };
                set_condition(status, new_condition("Progressing", "False", TIMED_OUT, msg));
            }
        }
        // Copy a ReplicaSet's ReplicaFailure up, or clear it when none is left.
        let failure = self.replicasets.iter().find_map(|rs| {
            rs.pointer("/status/conditions")
                .and_then(Value::as_array)?
                .iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("ReplicaFailure"))
                .cloned()
        });
        match failure {
            Some(f) => {
                let cond = new_condition(
                    "ReplicaFailure",
                    f.get("status").and_then(Value::as_str).unwrap_or("True"),
                    f.get("reason").and_then(Value::as_str).unwrap_or(""),
                    f.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
                );
                set_condition(status, cond);
            }
            None => remove_condition(status, "ReplicaFailure"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_keep_transition_time_when_status_stays() {
        let mut status = json!({});
        let mut first = new_condition("Progressing", "True", NEW_RS_CREATED, "a".into());
        first["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
        set_condition(&mut status, first);
        set_condition(
            &mut status,
            new_condition("Progressing", "True", RS_UPDATED, "b".into()),
        );
        let c = condition(&status, "Progressing").unwrap_or_default();
        assert_eq!(c["reason"], RS_UPDATED);
        assert_eq!(c["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_eq!(status["conditions"].as_array().map(Vec::len), Some(1));
    }
}
