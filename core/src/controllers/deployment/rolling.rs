//! # RollingUpdate (mirrors `pkg/controller/deployment/rolling.go`)
//!
//! A rolling update replaces pods a few at a time, bounded by two fenceposts:
//!
//! - the new ReplicaSet grows while all ReplicaSets together stay within
//!   `replicas + maxSurge` (`reconcileNewReplicaSet`, `NewRSNewReplicas`);
//! - old ReplicaSets shrink only as far as availability allows, never below
//!   `replicas - maxUnavailable` available pods (`reconcileOldReplicaSets`): first the
//!   pods that are not available anyway (`cleanupUnhealthyReplicas`), then available ones
//!   (`scaleDownOldReplicaSetsForRollingUpdate`), oldest ReplicaSet first.
//!
//! Each step writes at most one round of sizes and returns; the next reconcile, triggered by
//! the pods' readiness changing the ReplicaSets' status, takes the next step.

use serde_json::{Value, json};

use super::DeploymentSync;
use super::progress::deployment_complete;
use super::util::{available_replicas, by_creation, d_replicas, spec_replicas};
use crate::controllers::reconciler::{Action, ReconcileError};

impl DeploymentSync<'_> {
    /// RollingUpdate (`rolloutRolling`).
    pub(super) async fn rollout_rolling(&mut self) -> Result<Action, ReconcileError> {
        let (new, old) = self.get_all_and_sync_revision(true).await?;
        let Some(new) = new else {
            return Err(self.err("no new ReplicaSet after creating one"));
        };
        // Scale up, if we can.
        if self.reconcile_new_rs(&new, &old).await? {
            let (new, _) = self.refreshed(Some(&new), &old);
            return self.sync_status(new.as_ref(), true).await;
        }
        // Scale down, if we can.
        let (new, old) = self.refreshed(Some(&new), &old);
        let Some(new) = new else {
            return Err(self.err("lost track of the new ReplicaSet"));
        };
        if self.reconcile_old_rss(&new, &old).await? {
            let (new, _) = self.refreshed(Some(&new), &old);
            return self.sync_status(new.as_ref(), true).await;
        }
        let status = self.deployment.get("status").cloned().unwrap_or_else(|| json!({}));
        if deployment_complete(&self.deployment, &status) {
            self.cleanup(&old).await?;
        }
        self.sync_status(Some(&new), true).await
    }

    /// `reconcileNewReplicaSet`.
    pub(super) async fn reconcile_new_rs(&mut self, new: &Value, old: &[Value]) -> Result<bool, ReconcileError> {
        let want = d_replicas(&self.deployment);
        let have = spec_replicas(new);
        if have == want {
            return Ok(false);
        }
        if have > want {
            return self.scale_rs(new, want).await;
        }
        let mut all = old.to_vec();
        all.push(new.clone());
        let count = self.new_rs_new_replicas(&all, new)?;
        self.scale_rs(new, count).await
    }

    /// `reconcileOldReplicaSets`: shrink old ReplicaSets as far as availability allows.
    pub(super) async fn reconcile_old_rss(&mut self, new: &Value, old: &[Value]) -> Result<bool, ReconcileError> {
        let old_count: i64 = old.iter().map(spec_replicas).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let all_count = old_count + spec_replicas(new);
        let min_available = d_replicas(&self.deployment) - self.unavailable()?;
        let new_unavailable = spec_replicas(new) - available_replicas(new);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // First drop old pods that are not available anyway: they cost no availability.
        let cleaned = self.cleanup_unhealthy_replicas(old, max_scaled_down).await?;
        // Then scale down available old pods, keeping at least minAvailable available.
        let scaled = self
            .scale_down_old_rss_for_rolling_update(new, old, min_available)
            .await?;
        Ok(cleaned + scaled > 0)
    }

    /// Scale old ReplicaSets down by their pods that are not available, oldest first, at
    /// most `max_cleanup` pods in all (`cleanupUnhealthyReplicas`). Returns how many.
    async fn cleanup_unhealthy_replicas(&mut self, old: &[Value], max_cleanup: i64) -> Result<i64, ReconcileError> {
        let mut old_sorted: Vec<Value> = old.to_vec();
        old_sorted.sort_by(by_creation);
        let mut cleaned = 0;
        for rs in &old_sorted {
            if cleaned >= max_cleanup {
                break;
            }
            let size = spec_replicas(rs);
            let avail = available_replicas(rs);
            if size == 0 || size == avail {
                continue;
            }
            let down = (max_cleanup - cleaned).min(size - avail);
            self.scale_rs(rs, size - down).await?;
            cleaned += down;
        }
        Ok(cleaned)
    }

    /// Scale old ReplicaSets down, oldest first, as far as the available pods above
    /// `min_available` allow (`scaleDownOldReplicaSetsForRollingUpdate`). Returns how many.
    async fn scale_down_old_rss_for_rolling_update(
        &mut self,
        new: &Value,
        old: &[Value],
        min_available: i64,
    ) -> Result<i64, ReconcileError> {
        let (new, old) = self.refreshed(Some(new), old);
        let mut all = old.clone();
        all.extend(new);
        let available: i64 = all.iter().map(available_replicas).sum();
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            let mut old_sorted = old;
            old_sorted.sort_by(by_creation);
            for rs in &old_sorted {
                if scaled >= total {
                    break;
                }
                let size = spec_replicas(rs);
                if size == 0 {
                    continue;
                }
                let down = size.min(total - scaled);
                self.scale_rs(rs, size - down).await?;
                scaled += down;
            }
        }
        Ok(scaled)
    }
}
