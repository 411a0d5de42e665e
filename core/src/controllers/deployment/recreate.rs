//! # Recreate (mirrors `pkg/controller/deployment/recreate.go`)
//!
//! The Recreate strategy never runs old and new pods side by side: every old ReplicaSet is
//! scaled to 0 first (`scaleDownOldReplicaSetsForRecreate`), the controller then waits until
//! no pod of an old ReplicaSet is left running (`oldPodsRunning`; a pod going away requeues
//! the Deployment), and only then creates the new ReplicaSet at full size
//! (`scaleUpNewReplicaSetForRecreate`).

use serde_json::{Value, json};

use super::DeploymentSync;
use super::progress::deployment_complete;
use super::util::{d_replicas, spec_replicas, status_replicas, uid_of};
use crate::controllers::reconciler::{Action, ReconcileError};

impl DeploymentSync<'_> {
    /// Recreate (`rolloutRecreate`): old to 0, wait for their pods to be gone, then new.
    pub(super) async fn rollout_recreate(&mut self) -> Result<Action, ReconcileError> {
        let (new, old) = self.get_all_and_sync_revision(false).await?;
        let mut scaled_down = false;
        for rs in old.iter().filter(|r| spec_replicas(r) > 0) {
            scaled_down |= self.scale_rs(rs, 0).await?;
        }
        if scaled_down {
            let (new, _) = self.refreshed(new.as_ref(), &old);
            return self.sync_status(new.as_ref(), true).await;
        }
        if self.old_pods_running(new.as_ref(), &old) {
            return self.sync_status(new.as_ref(), true).await;
        }
        let (new, old) = match new {
            Some(n) => (n, old),
            None => match self.get_all_and_sync_revision(true).await? {
                (Some(n), old) => (n, old),
                (None, _) => return Err(self.err("no new ReplicaSet after creating one")),
            },
        };
        let want = d_replicas(&self.deployment);
        if spec_replicas(&new) != want {
            self.scale_rs(&new, want).await?;
        }
        let status = self.deployment.get("status").cloned().unwrap_or_else(|| json!({}));
        if deployment_complete(&self.deployment, &status) {
            self.cleanup(&old).await?;
        }
        let (new, _) = self.refreshed(Some(&new), &old);
        self.sync_status(new.as_ref(), true).await
    }

    /// Are pods of old ReplicaSets still around (not Succeeded/Failed)?
    pub(super) fn old_pods_running(&self, new: Option<&Value>, old: &[Value]) -> bool {
        if old.iter().map(status_replicas).sum::<i64>() > 0 {
            return true;
        }
        let new_uid = new.map(uid_of);
        self.replicasets
            .iter()
            .filter(|rs| Some(uid_of(rs)) != new_uid)
            .flat_map(|rs| self.controller.pods.owned_by(uid_of(rs)))
            .filter_map(|k| self.controller.ctx.caches.pods.get(&k))
            .any(|p| {
                !matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded") | Some("Failed")
                )
            })
    }
}
