//! # Deployment sync (mirrors `pkg/controller/deployment/sync.go`)
//!
//! What every strategy shares, and every write the controller makes:
//!
//! - **The new ReplicaSet** (`getAllReplicaSetsAndSyncRevision`, `getNewReplicaSet`): the
//!   ReplicaSet whose template equals the Deployment's is found again and gets the next
//!   revision; if none exists it is created as `<deployment>-<pod-template-hash>`, sized
//!   within maxSurge. A name taken by a foreign template raises `status.collisionCount`, so
//!   the next attempt hashes differently.
//! - **Scaling** (`sync`, `scale`): a change of `spec.replicas` alone (a scaling event or a
//!   paused Deployment) only resizes: one active ReplicaSet takes everything, several share
//!   the change proportionally.
//! - **Writes**: `scaleReplicaSet` (with its `ScalingReplicaSet` event), the ReplicaSet
//!   update, `cleanupDeployment` (old ReplicaSets beyond `revisionHistoryLimit`), and the
//!   status (`calculateStatus`, `syncDeploymentStatus`), each in its own span.
//! - **Pause** (`checkPausedConditions`): a pause or resume is recorded in `Progressing`.

use std::cmp::Ordering;

use serde_json::{Map, Value, json};
use tracing::{Instrument, info_span};

use super::DeploymentSync;
use super::progress::{
    FAILED_RS_CREATE, FOUND_NEW_RS, NEW_RS_CREATED, PAUSED, RESUMED, condition, new_condition, set_condition,
};
use super::util::{
    DESIRED_REPLICAS_ANNOTATION, POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, annotation, by_creation, d_replicas,
    deploy_info, equal_ignore_hash, has_progress_deadline, is_rolling, name_of, pod_template_hash, proportion,
    ready_replicas, revision, rs_info, set_annotation, set_new_rs_annotations, set_replicas_annotations, spec_replicas,
    status_replicas, uid_of,
};
use crate::client::ClientError;
use crate::controllers::reconciler::{Action, ReconcileError, TRACEPARENT_ANNOTATION};
use crate::controllers::replicaset::{controller_ref, int_at, span_error};
use crate::events::EventType;
use crate::objects;

/// The status with `Progressing` set to `DeploymentPaused` (or `DeploymentResumed`) when a
/// pause (or resume) is not recorded yet (`checkPausedConditions`); `None`: nothing to record.
pub(super) fn paused_status(d: &Value) -> Option<Value> {
    if !has_progress_deadline(d) {
        return None;
    }
    let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let mut status = d.get("status").cloned().unwrap_or_else(|| json!({}));
    let reason =
        condition(&status, "Progressing").and_then(|c| c.get("reason").and_then(Value::as_str).map(str::to_string));
    let cond = if paused && reason.as_deref() != Some(PAUSED) {
        new_condition("Progressing", "Unknown", PAUSED, "Deployment is paused".into())
    } else if !paused && reason.as_deref() == Some(PAUSED) {
        new_condition("Progressing", "Unknown", RESUMED, "Deployment is resumed".into())
    } else {
        return None;
    };
    set_condition(&mut status, cond);
    Some(status)
}

impl DeploymentSync<'_> {
    /// `checkPausedConditions`: mark a paused (or resumed) Deployment in `Progressing`.
    pub(super) fn check_paused_condition(&mut self) {
        if let Some(status) = paused_status(&self.deployment) {
            self.deployment["status"] = status;
        }
    }

    /// Is this reconcile only about `spec.replicas` (`isScalingEvent`)?
    pub(super) async fn is_scaling_event(&mut self) -> Result<bool, ReconcileError> {
        let (new, old) = self.get_all_and_sync_revision(false).await?;
        let want = d_replicas(&self.deployment).to_string();
        Ok(new
            .iter()
            .chain(old.iter())
            .filter(|rs| spec_replicas(rs) > 0)
            .any(|rs| annotation(rs, DESIRED_REPLICAS_ANNOTATION).is_some_and(|desired| desired != want)))
    }

    /// Find (or, with `create`, create) the new ReplicaSet and sync revisions
    /// (`getAllReplicaSetsAndSyncRevision` + `getNewReplicaSet`).
    pub(super) async fn get_all_and_sync_revision(
        &mut self,
        create: bool,
    ) -> Result<(Option<Value>, Vec<Value>), ReconcileError> {
        let (existing, old) = self.new_and_old();
        let new_revision = old.iter().map(revision).max().unwrap_or(0) + 1;
        let surge = self.surge()?;
        if let Some(existing) = existing {
            let mut copy = existing.clone();
            let annotations_changed = set_new_rs_annotations(&self.deployment, &mut copy, new_revision, true, surge);
            let min_ready = self
                .deployment
                .pointer("/spec/minReadySeconds")
                .cloned()
                .unwrap_or(json!(0));
            let min_ready_changed = copy.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0)) != min_ready;
            if annotations_changed || min_ready_changed {
                copy["spec"]["minReadySeconds"] = min_ready;
                let updated = self.write_rs(copy, "controller.update_replicaset", None).await?;
                self.remember(updated.clone());
                return Ok((Some(updated), old));
            }
            let rev = annotation(&copy, REVISION_ANNOTATION).unwrap_or("").to_string();
            self.set_deployment_revision(&rev).await?;
            let mut status = self.deployment.get("status").cloned().unwrap_or_else(|| json!({}));
            if has_progress_deadline(&self.deployment) && condition(&status, "Progressing").is_none() {
                let msg = format!("Found new replica set \"{}\"", name_of(&copy));
                set_condition(&mut status, new_condition("Progressing", "True", FOUND_NEW_RS, msg));
                self.deployment["status"] = status;
            }
            return Ok((Some(copy), old));
        }
        if !create {
            return Ok((None, old));
        }
        let created = self.create_new_rs(&old, new_revision, surge).await?;
        Ok((Some(created), old))
    }

    /// Set the Deployment's revision annotation (a metadata-only write, no new generation).
    pub(super) async fn set_deployment_revision(&mut self, rev: &str) -> Result<(), ReconcileError> {
        if rev.is_empty() || annotation(&self.deployment, REVISION_ANNOTATION) == Some(rev) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION_ANNOTATION: rev}}});
        let status = self.deployment.get("status").cloned();
        let updated = self
            .controller
            .ctx
            .client
            .merge_patch(deploy_info(), Some(&self.ns()), &self.name(), None, &patch)
            .await
            .map_err(|e| self.err(format!("could not record revision {rev}: {e}")))?;
        self.deployment = updated;
        // Keep the status this reconcile has been preparing (conditions set above).
        if let Some(s) = status {
            self.deployment["status"] = s;
        }
        Ok(())
    }

    /// Create the new ReplicaSet for the Deployment's template (the creating half of
    /// `getNewReplicaSet`), record its revision on the Deployment and `Progressing` as
    /// `NewReplicaSetCreated`.
    pub(super) async fn create_new_rs(
        &mut self,
        old: &[Value],
        new_revision: i64,
        surge: i64,
    ) -> Result<Value, ReconcileError> {
        let ns = self.ns();
        let d_name = self.name();
        let template = self
            .deployment
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let collision = self
            .deployment
            .pointer("/status/collisionCount")
            .and_then(Value::as_i64);
        let hash = pod_template_hash(&template, collision);
        let rs_name = format!("{d_name}-{hash}");
        let mut rs = self.new_rs_object(&template, &hash, &rs_name);
        let mut all: Vec<Value> = old.to_vec();
        all.push(rs.clone());
        let replicas = self.new_rs_new_replicas(&all, &rs)?;
        rs["spec"]["replicas"] = json!(replicas);
        set_new_rs_annotations(&self.deployment, &mut rs, new_revision, false, surge);

        let span = info_span!(
            "controller.create_replicaset",
            "kulisse.stage" = "controller",
            "k8s.kind" = "ReplicaSet",
            "k8s.namespace" = ns.as_str(),
            "k8s.name" = rs_name.as_str(),
            "controller.owner" = format!("Deployment/{d_name}").as_str(),
            "controller.pod_template_hash" = hash.as_str(),
            "controller.revision" = new_revision,
            "controller.replicas.desired" = replicas,
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        );
        let result = async {
            if let Some(tp) = kulisse_traces::propagation::traceparent_of_current() {
                set_annotation(&mut rs, TRACEPARENT_ANNOTATION, tp);
            }
            self.controller.ctx.client.create(rs_info(), Some(&ns), &rs).await
        }
        .instrument(span.clone())
        .await;
        let (created, already_existed) = match result {
            Ok(created) => (created, false),
            Err(e) if e.code() == Some(409) => {
                let existing = self
                    .on_create_conflict(&span, &e, &rs_name, &template, collision)
                    .await?;
                (existing, true)
            }
            Err(e) => {
                span_error(&span, &e);
                return Err(self
                    .on_create_failure(format!("Failed to create new replica set \"{rs_name}\": {e}"))
                    .await);
            }
        };
        if !already_existed && replicas > 0 {
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled up replica set {rs_name} from 0 to {replicas}"),
            );
        }
        self.remember(created.clone());
        self.set_deployment_revision(&new_revision.to_string()).await?;
        if !already_existed && has_progress_deadline(&self.deployment) {
            let mut status = self.deployment.get("status").cloned().unwrap_or_else(|| json!({}));
            let msg = format!("Created new replica set \"{rs_name}\"");
            set_condition(&mut status, new_condition("Progressing", "True", NEW_RS_CREATED, msg));
            self.deployment["status"] = status;
        }
        Ok(created)
    }

    /// The new ReplicaSet as an object, at 0 replicas: the Deployment's template and
    /// selector with the `pod-template-hash` label added, owned by the Deployment.
    fn new_rs_object(&self, template: &Value, hash: &str, rs_name: &str) -> Value {
        let mut new_template = template.clone();
        if let Some(meta) = objects::meta_mut(&mut new_template) {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if !labels.is_object() {
                *labels = json!({});
            }
            labels[POD_TEMPLATE_HASH_LABEL] = json!(hash);
        }
        let mut selector = self
            .deployment
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or_else(|| json!({}));
        if let Some(sel) = selector.as_object_mut() {
            let ml = sel.entry("matchLabels").or_insert_with(|| json!({}));
            if !ml.is_object() {
                *ml = json!({});
            }
            ml[POD_TEMPLATE_HASH_LABEL] = json!(hash);
        }
        let labels = new_template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or_else(|| json!({}));
        json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": rs_name,
                "namespace": self.ns(),
                "labels": labels,
                "ownerReferences": [controller_ref(&self.deployment, "Deployment")],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": self.deployment.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0)),
                "selector": selector,
                "template": new_template,
            },
        })
    }

    /// The name of the new ReplicaSet is taken: a slow cache (it is ours, with our
    /// template: use it), or a hash collision with someone else's ReplicaSet (raise
    /// `status.collisionCount`, so the next attempt hashes differently, and fail).
    async fn on_create_conflict(
        &mut self,
        span: &tracing::Span,
        err: &ClientError,
        rs_name: &str,
        template: &Value,
        collision: Option<i64>,
    ) -> Result<Value, ReconcileError> {
        let ns = self.ns();
        let key = format!("{ns}/{rs_name}");
        let existing = match self.controller.ctx.caches.replicasets.get(&key) {
            Some(r) => (*r).clone(),
            None => self.controller.ctx.client.get(rs_info(), Some(&ns), rs_name).await?,
        };
        let ours = objects::controller_uid(&existing) == objects::uid(&self.deployment)
            && existing
                .pointer("/spec/template")
                .is_some_and(|t| equal_ignore_hash(t, template));
        if ours {
            return Ok(existing);
        }
        span_error(span, err);
        let count = collision.unwrap_or(0) + 1;
        let mut status = self.deployment.get("status").cloned().unwrap_or_else(|| json!({}));
        status["collisionCount"] = json!(count);
        let _ = self.put_status(status).await;
        Err(self.err(format!(
            "the ReplicaSet name {rs_name} is taken by a ReplicaSet with another template (hash \
             collision); collisionCount is now {count}, the next attempt uses a new hash"
        )))
    }

    /// The new ReplicaSet could not be created: say so in `Progressing`
    /// (`ReplicaSetCreateError`) and in an event; the error to return.
    async fn on_create_failure(&mut self, msg: String) -> ReconcileError {
        if has_progress_deadline(&self.deployment) {
            let mut status = self.deployment.get("status").cloned().unwrap_or_else(|| json!({}));
            set_condition(
                &mut status,
                new_condition("Progressing", "False", FAILED_RS_CREATE, msg.clone()),
            );
            let _ = self.put_status(status).await;
        }
        self.event(EventType::Warning, FAILED_RS_CREATE, msg.clone());
        self.err(msg)
    }

    /// How big the new ReplicaSet may be now (`NewRSNewReplicas`).
    pub(super) fn new_rs_new_replicas(&self, all: &[Value], new: &Value) -> Result<i64, ReconcileError> {
        let want = d_replicas(&self.deployment);
        if !is_rolling(&self.deployment) {
            return Ok(want);
        }
        let current: i64 = all.iter().map(spec_replicas).sum();
        let max_total = want + self.surge()?;
        if current >= max_total {
            return Ok(spec_replicas(new));
        }
        let up = (max_total - current).min(want - spec_replicas(new));
        Ok(spec_replicas(new) + up)
    }

    /// PUT a ReplicaSet (with its resourceVersion: a concurrent change gives 409 and a retry).
    pub(super) async fn write_rs(
        &self,
        rs: Value,
        step: &'static str,
        from_to: Option<(i64, i64)>,
    ) -> Result<Value, ReconcileError> {
        let ns = self.ns();
        let name = name_of(&rs).to_string();
        let (from, to) = from_to.unwrap_or((spec_replicas(&rs), spec_replicas(&rs)));
        macro_rules! rs_span {
            ($n:literal) => {
                info_span!(
                    $n,
                    "kulisse.stage" = "controller",
                    "k8s.kind" = "ReplicaSet",
                    "k8s.namespace" = ns.as_str(),
                    "k8s.name" = name.as_str(),
                    "controller.owner" = format!("Deployment/{}", self.name()).as_str(),
                    "controller.replicas.from" = from,
                    "controller.replicas.to" = to,
                    "otel.status_code" = tracing::field::Empty,
                    "otel.status_description" = tracing::field::Empty,
                )
            };
        }
        let span = if step == "controller.scale_replicaset" {
            rs_span!("controller.scale_replicaset")
        } else {
            rs_span!("controller.update_replicaset")
        };
        let result = self
            .controller
            .ctx
            .client
            .replace(rs_info(), Some(&ns), &name, None, &rs)
            .instrument(span.clone())
            .await;
        result.map_err(|e| {
            span_error(&span, &e);
            self.err(format!("could not update ReplicaSet {name}: {e}"))
        })
    }

    /// Set a ReplicaSet's size and replicas annotations (`scaleReplicaSet`). Returns
    /// whether the size changed.
    pub(super) async fn scale_rs(&mut self, rs: &Value, to: i64) -> Result<bool, ReconcileError> {
        let from = spec_replicas(rs);
        let want = d_replicas(&self.deployment);
        let max = want + self.surge()?;
        let mut copy = rs.clone();
        let annotations_changed = set_replicas_annotations(&mut copy, want, max);
        if from == to && !annotations_changed {
            return Ok(false);
        }
        copy["spec"]["replicas"] = json!(to);
        let updated = self
            .write_rs(copy, "controller.scale_replicaset", Some((from, to)))
            .await?;
        self.remember(updated);
        if from != to {
            let direction = if from < to { "up" } else { "down" };
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled {direction} replica set {} from {from} to {to}", name_of(rs)),
            );
        }
        Ok(from != to)
    }

    /// `sync`: scale only (a scaling event or a paused Deployment), then status.
    pub(super) async fn sync(&mut self, paused: bool) -> Result<Action, ReconcileError> {
        let (new, old) = self.get_all_and_sync_revision(false).await?;
        self.scale(new.as_ref(), &old).await?;
        let (new, old) = self.refreshed(new.as_ref(), &old);
        if paused {
            self.cleanup(&old).await?;
        }
        self.sync_status(new.as_ref(), false).await
    }

    /// Our latest copies of `new` and `old` after writes.
    pub(super) fn refreshed(&self, new: Option<&Value>, old: &[Value]) -> (Option<Value>, Vec<Value>) {
        let new = new.and_then(|n| self.by_uid(uid_of(n)));
        let old = old.iter().filter_map(|o| self.by_uid(uid_of(o))).collect();
        (new, old)
    }

    /// Scale the ReplicaSets to `spec.replicas` (`scale`): one active RS takes everything;
    /// a saturated new RS means the old ones go to 0; otherwise, during a rolling update,
    /// spread the difference proportionally.
    pub(super) async fn scale(&mut self, new: Option<&Value>, old: &[Value]) -> Result<(), ReconcileError> {
        let want = d_replicas(&self.deployment);
        // FindActiveOrLatest
        let mut old_sorted = old.to_vec();
        old_sorted.sort_by(|a, b| by_creation(b, a));
        let mut active: Vec<Value> = old_sorted.iter().filter(|r| spec_replicas(r) > 0).cloned().collect();
        if let Some(n) = new.filter(|n| spec_replicas(n) > 0) {
            active.push(n.clone());
        }
        let target = match active.len() {
            0 => new.cloned().or_else(|| old_sorted.first().cloned()),
            1 => active.first().cloned(),
            _ => None,
        };
        if let Some(rs) = target {
            if spec_replicas(&rs) != want {
                self.scale_rs(&rs, want).await?;
            }
            return Ok(());
        }
        // IsSaturated
        if let Some(n) = new
            && spec_replicas(n) == want
            && annotation(n, DESIRED_REPLICAS_ANNOTATION) == Some(want.to_string().as_str())
            && int_at(n, "/status/availableReplicas", 0) == want
        {
            for rs in old.iter().filter(|r| spec_replicas(r) > 0) {
                self.scale_rs(rs, 0).await?;
            }
            return Ok(());
        }
        if !is_rolling(&self.deployment) {
            return Ok(());
        }
        let surge = self.surge()?;
        let mut all = active;
        let current: i64 = all.iter().map(spec_replicas).sum();
        let allowed = if want > 0 { want + surge } else { 0 };
        let to_add = allowed - current;
        match to_add.cmp(&0) {
            // Bigger first; equal sizes: newer first when growing, older first when shrinking.
            Ordering::Greater => {
                all.sort_by(|a, b| spec_replicas(b).cmp(&spec_replicas(a)).then_with(|| by_creation(b, a)))
            }
            Ordering::Less => {
                all.sort_by(|a, b| spec_replicas(b).cmp(&spec_replicas(a)).then_with(|| by_creation(a, b)))
            }
            Ordering::Equal => {}
        }
        let mut added = 0;
        let mut sizes = Vec::new();
        for rs in &all {
            if to_add != 0 {
                let p = proportion(&self.deployment, rs, to_add, added, want + surge);
                sizes.push(spec_replicas(rs) + p);
                added += p;
            } else {
                sizes.push(spec_replicas(rs));
            }
        }
        if to_add != 0
            && let Some(first) = sizes.first_mut()
        {
            *first = (*first + to_add - added).max(0);
        }
        for (rs, size) in all.iter().zip(sizes) {
            self.scale_rs(rs, size).await?;
        }
        Ok(())
    }

    /// Delete old ReplicaSets at 0 beyond `revisionHistoryLimit` (`cleanupDeployment`).
    pub(super) async fn cleanup(&mut self, old: &[Value]) -> Result<(), ReconcileError> {
        let Some(limit) = self
            .deployment
            .pointer("/spec/revisionHistoryLimit")
            .and_then(Value::as_i64)
        else {
            return Ok(());
        };
        let mut cleanable: Vec<&Value> = old
            .iter()
            .filter(|rs| objects::deletion_timestamp(rs).is_none())
            .collect();
        let diff = cleanable.len() as i64 - limit;
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| revision(a).cmp(&revision(b)).then_with(|| by_creation(a, b)));
        let ns = self.ns();
        for rs in cleanable.into_iter().take(diff as usize) {
            if status_replicas(rs) != 0
                || spec_replicas(rs) != 0
                || int_at(rs, "/metadata/generation", 1) > int_at(rs, "/status/observedGeneration", 0)
            {
                continue;
            }
            let name = name_of(rs);
            let span = info_span!(
                "controller.delete_replicaset",
                "kulisse.stage" = "controller",
                "k8s.kind" = "ReplicaSet",
                "k8s.namespace" = ns.as_str(),
                "k8s.name" = name,
                "controller.owner" = format!("Deployment/{}", self.name()).as_str(),
                "controller.revision" = revision(rs),
                "otel.status_code" = tracing::field::Empty,
                "otel.status_description" = tracing::field::Empty,
            );
            match self
                .controller
                .ctx
                .client
                .delete(rs_info(), Some(&ns), name, None)
                .instrument(span.clone())
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == Some(404) => {}
                Err(e) => {
                    span_error(&span, &e);
                    return Err(self.err(format!("could not delete old ReplicaSet {name}: {e}")));
                }
            }
        }
        Ok(())
    }

    /// The status from the ReplicaSets (`calculateStatus`).
    pub(super) fn calculate_status(&self, new: Option<&Value>) -> Result<Value, ReconcileError> {
        let d = &self.deployment;
        let all = &self.replicasets;
        let available: i64 = all.iter().map(|r| int_at(r, "/status/availableReplicas", 0)).sum();
        let total: i64 = all.iter().map(spec_replicas).sum();
        let unavailable = (total - available).max(0);
        let mut status = Map::new();
        status.insert("observedGeneration".into(), json!(int_at(d, "/metadata/generation", 1)));
        let counts = [
            ("replicas", all.iter().map(status_replicas).sum::<i64>()),
            ("updatedReplicas", new.map(status_replicas).unwrap_or(0)),
            ("readyReplicas", all.iter().map(ready_replicas).sum::<i64>()),
            ("availableReplicas", available),
            ("unavailableReplicas", unavailable),
        ];
        for (k, v) in counts {
            // These fields are `omitempty` in the Kubernetes API: 0 is not written.
            if v != 0 {
                status.insert(k.into(), json!(v));
            }
        }
        if let Some(c) = d.pointer("/status/collisionCount") {
            status.insert("collisionCount".into(), c.clone());
        }
        if let Some(c) = d.pointer("/status/conditions").filter(|c| c.is_array()) {
            status.insert("conditions".into(), c.clone());
        }
        let mut status = Value::Object(status);
        let cond = if available >= d_replicas(d) - self.unavailable()? {
            new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            )
        } else {
            new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            )
        };
        set_condition(&mut status, cond);
        Ok(status)
    }

    /// Write the status (with `rollout`: also the Progressing condition, `syncRolloutStatus`).
    pub(super) async fn sync_status(&mut self, new: Option<&Value>, rollout: bool) -> Result<Action, ReconcileError> {
        match self.try_sync_status(new, rollout).await {
            // Our cached Deployment was older than the stored one (typically our own last
            // status write has not reached the informer yet): read it and redo the status
            // once, as upstream's status updaters do, instead of failing the whole reconcile.
            Err(StatusError::Conflict) => {
                let fresh = self
                    .controller
                    .ctx
                    .client
                    .get(deploy_info(), Some(&self.ns()), &self.name())
                    .await;
                match fresh {
                    Ok(fresh) => {
                        self.deployment = fresh;
                        self.try_sync_status(new, rollout)
                            .await
                            .map_err(|e| e.into_reconcile(self))
                    }
                    Err(e) if e.code() == Some(404) => Ok(Action::await_change()),
                    Err(e) => Err(self.err(format!("could not read the Deployment again: {e}"))),
                }
            }
            other => other.map_err(|e| e.into_reconcile(self)),
        }
    }

    async fn try_sync_status(&mut self, new: Option<&Value>, rollout: bool) -> Result<Action, StatusError> {
        let mut status = self.calculate_status(new).map_err(StatusError::Other)?;
        let mut requeue = None;
        if rollout {
            self.progressing(new, &mut status);
            // A rollout in progress: look again when its deadline would pass.
            requeue = self.requeue_stuck(&status);
        }
        if self.deployment.get("status") != Some(&status) {
            self.put_status(status).await?;
        }
        Ok(match requeue {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        })
    }

    /// PUT the Deployment's `/status` (with its resourceVersion).
    async fn put_status(&mut self, status: Value) -> Result<(), StatusError> {
        let ns = self.ns();
        let name = self.name();
        let span = info_span!(
            "controller.update_status",
            "kulisse.stage" = "controller",
            "k8s.kind" = "Deployment",
            "k8s.namespace" = ns.as_str(),
            "k8s.name" = name.as_str(),
            "controller.replicas.desired" = d_replicas(&self.deployment),
            "controller.replicas.updated" = int_at(&status, "/updatedReplicas", 0),
            "controller.replicas.available" = int_at(&status, "/availableReplicas", 0),
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        );
        let mut obj = self.deployment.clone();
        obj["status"] = status;
        let result: Result<Value, ClientError> = self
            .controller
            .ctx
            .client
            .replace(deploy_info(), Some(&ns), &name, Some("status"), &obj)
            .instrument(span.clone())
            .await;
        match result {
            Ok(updated) => {
                self.deployment = updated;
                Ok(())
            }
            Err(e) if e.code() == Some(404) => Ok(()),
            Err(e) if e.code() == Some(409) => {
                span.record(
                    "otel.status_description",
                    "conflict: the Deployment changed since it was read",
                );
                Err(StatusError::Conflict)
            }
            Err(e) => {
                span_error(&span, &e);
                Err(StatusError::Other(
                    self.err(format!("could not update the status: {e}")),
                ))
            }
        }
    }
}

/// Why a status write failed: a conflict (read again and retry) or anything else.
enum StatusError {
    Conflict,
    Other(ReconcileError),
}

impl StatusError {
    fn into_reconcile(self, sync: &DeploymentSync<'_>) -> ReconcileError {
        match self {
            StatusError::Conflict => sync.err(
                "could not update the status: the Deployment kept changing while it was being written; will retry",
            ),
            StatusError::Other(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::progress::NEW_RS_AVAILABLE;

    #[test]
    fn a_pause_and_a_resume_are_recorded_once_in_progressing() {
        let mut d = json!({"spec": {"paused": true, "progressDeadlineSeconds": 600},
                           "status": {"conditions": [new_condition("Progressing", "True", NEW_RS_AVAILABLE, "x".into())]}});
        let status = paused_status(&d).expect("a pause to record");
        let c = condition(&status, "Progressing").unwrap_or_default();
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("Unknown"), Some(PAUSED))
        );
        d["status"] = status;
        assert_eq!(paused_status(&d), None, "recorded once");
        d["spec"]["paused"] = json!(false);
        let resumed = paused_status(&d).expect("a resume to record");
        assert_eq!(
            condition(&resumed, "Progressing").unwrap_or_default()["reason"],
            RESUMED
        );
        // Without a progress deadline there is no Progressing condition to keep.
        d["spec"]["progressDeadlineSeconds"] = json!(i64::from(i32::MAX));
        assert_eq!(paused_status(&d), None);
    }
}
