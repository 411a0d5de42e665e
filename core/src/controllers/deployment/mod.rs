//! # The Deployment controller (mirrors `pkg/controller/deployment` of kube-controller-manager)
//!
//! A Deployment does not manage pods itself. It manages **ReplicaSets**, one per version of
//! the pod template, and lets the [ReplicaSet controller](super::replicaset) manage pods:
//!
//! ```text
//!  Deployment web ──owns──► ReplicaSet web-5d4f8b7c9 (template v2, 3 replicas) ──owns──► 3 Pods
//!                 └─owns──► ReplicaSet web-7c6b4d9f5 (template v1, 0 replicas, kept as history)
//! ```
//!
//! - **pod-template-hash.** Each ReplicaSet is named `<deployment>-<hash>`, where the hash is
//!   computed from the pod template (FNV-32a, written with the consonants-and-digits
//!   alphabet of `rand.SafeEncodeString`, as upstream). The hash is also added as the label
//!   `pod-template-hash` to the ReplicaSet's selector, its template and so to its pods, so
//!   that ReplicaSets of one Deployment never fight over the same pods. Same template →
//!   same hash → the same ReplicaSet is found again; new template → new ReplicaSet.
//! - **Ownership.** ReplicaSets carry an ownerReference to their Deployment; orphans that
//!   match the selector are adopted, owned ones that stop matching are released.
//! - **Revisions.** Each new template gets `deployment.kubernetes.io/revision` = highest so
//!   far + 1 (on the ReplicaSet and on the Deployment); `desired-replicas` and
//!   `max-replicas` annotations remember the size the Deployment had when it last scaled a
//!   ReplicaSet, which is how a scale during a rollout is recognised.
//! - **Scaling** (`kubectl scale`): when a ReplicaSet's `desired-replicas` differs from
//!   `spec.replicas`, the controller only scales. With one active ReplicaSet, that one gets
//!   all replicas; during a rolling update, the change is spread **proportionally** over the
//!   active ReplicaSets, the larger first, exactly like upstream's `scale`.
//! - **RollingUpdate.** `maxSurge` (pods above `replicas`, rounded up from a percentage) and
//!   `maxUnavailable` (rounded down) bound the rollout. The new ReplicaSet grows while the
//!   total stays within `replicas + maxSurge`; old ReplicaSets shrink only as far as the
//!   *available* pods allow, never below `replicas - maxUnavailable`. A ReplicaSet whose
//!   status still counts pods it is about to delete is counted with at most its
//!   `spec.replicas` available pods, so a stale status can never justify a second cut.
//! - **Recreate.** Old ReplicaSets go to 0 first; the new one is created and scaled up once
//!   no old pod is left running.
//! - **History.** Old ReplicaSets at 0 beyond `revisionHistoryLimit` are deleted.
//! - **Status.** `observedGeneration`, `replicas`, `updatedReplicas`, `readyReplicas`,
//!   `availableReplicas`, `unavailableReplicas`, and the conditions `Available`
//!   (`MinimumReplicasAvailable`/`MinimumReplicasUnavailable`) and `Progressing`
//!   (`NewReplicaSetCreated`, `FoundNewReplicaSet`, `ReplicaSetUpdated`,
//!   `NewReplicaSetAvailable`, `ProgressDeadlineExceeded`), with upstream's messages, all
//!   read by `kubectl rollout status`.
//!
//! Each write has its own span under `controller.reconcile`: `controller.create_replicaset`,
//! `controller.scale_replicaset` (with `controller.replicas.from`/`.to`),
//! `controller.update_replicaset`, `controller.delete_replicaset`, `controller.adopt`,
//! `controller.release`, `controller.update_status`. A ReplicaSet created here carries the
//! `kulisse.dev/traceparent` of its `controller.create_replicaset` span, so the pods the
//! ReplicaSet controller creates for it join the same trace.
//!
//! ## Files, as upstream cuts `pkg/controller/deployment`
//!
//! - `mod.rs`, this file (`deployment_controller.go`): the controller, its informer
//!   handlers, and `syncDeployment`: claim the ReplicaSets, then scale, roll out or only
//!   write status;
//! - `sync.rs` (`sync.go`): find or create the new ReplicaSet, revisions, scaling, history
//!   cleanup, the status and every write;
//! - `rolling.rs` (`rolling.go`): the RollingUpdate strategy;
//! - `recreate.rs` (`recreate.go`): the Recreate strategy;
//! - `progress.rs` (`progress.go` and the condition helpers of `deploymentutil`): the
//!   `Progressing`/`Available` conditions, complete, progressing, timed out;
//! - `util.rs` (`util/deployment_util.go`, `controller.ComputeHash`): pod-template-hash,
//!   maxSurge/maxUnavailable, annotations, small getters.

mod progress;
mod recreate;
mod rolling;
mod sync;
mod util;

use std::sync::Arc;

use serde_json::{Map, Value};

use super::reconciler::{
    Action, Queue, ReconcileError, ReconcileReason, Reconciler, enqueue_own, enqueue_related, new_queue,
};
use super::replicaset::{OwnerIndex, claim, controller_of, record_event};
use super::{Ctx, SharedInformers};
use crate::client::informer::{InformerEvent, key_of};
use crate::events::EventType;
use crate::objects;
pub use util::{
    DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION, POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION, equal_ignore_hash, pod_template_hash, resolve_fenceposts, scaled_value,
};
use util::{by_creation, max_surge, max_unavailable, name_of, rs_info, uid_of};

/// The Deployment controller.
pub struct DeploymentController {
    ctx: Arc<Ctx>,
    replicasets: Arc<OwnerIndex>,
    pods: Arc<OwnerIndex>,
}

fn deployment_key(rs: &Value) -> Option<String> {
    let (name, _) = controller_of(rs, "Deployment")?;
    Some(format!("{}/{}", objects::namespace(rs).unwrap_or(""), name))
}

fn enqueue_matching(queue: &Queue, ctx: &Ctx, rs: &Value) {
    let ns = objects::namespace(rs);
    let labels = objects::labels(rs);
    for d in ctx.caches.deployments.filter(|d| {
        objects::namespace(d) == ns
            && d.pointer("/spec/selector")
                .is_some_and(|s| objects::match_label_selector(s, &labels))
    }) {
        enqueue_related(queue, key_of(&d), "ReplicaSet", rs);
    }
}

fn on_rs_event(queue: &Queue, ctx: &Ctx, ev: &InformerEvent) {
    match ev {
        InformerEvent::Added(rs) | InformerEvent::Deleted(rs) => match deployment_key(rs) {
            Some(k) => enqueue_related(queue, k, "ReplicaSet", rs),
            None if matches!(ev, InformerEvent::Added(_)) => enqueue_matching(queue, ctx, rs),
            None => {}
        },
        InformerEvent::Modified { old, new } => {
            let (old_owner, new_owner) = (deployment_key(old), deployment_key(new));
            if old_owner != new_owner
                && let Some(o) = old_owner
            {
                enqueue_related(queue, o, "ReplicaSet", new);
            }
            match new_owner {
                Some(o) => enqueue_related(queue, o, "ReplicaSet", new),
                None => {
                    if objects::labels(old) != objects::labels(new) || objects::controller_uid(old).is_some() {
                        enqueue_matching(queue, ctx, new);
                    }
                }
            }
        }
        InformerEvent::Resync(_) => {}
    }
}

/// Wire the Deployment controller to the shared informers.
pub fn setup(informers: &mut SharedInformers, ctx: Arc<Ctx>) -> (Arc<DeploymentController>, Queue) {
    let queue = new_queue();
    let replicasets = Arc::new(OwnerIndex::default());
    let pods = Arc::new(OwnerIndex::default());
    {
        let queue = queue.clone();
        informers.deployments.on_event(move |ev| enqueue_own(&queue, ev));
    }
    {
        let (queue, index, ctx) = (queue.clone(), replicasets.clone(), ctx.clone());
        informers.replicasets.on_event(move |ev| {
            index.observe(ev);
            on_rs_event(&queue, &ctx, ev);
        });
    }
    {
        // Pods matter only for Recreate ("are old pods still running?"): a pod going away
        // may unblock it.
        let (queue, index, ctx) = (queue.clone(), pods.clone(), ctx.clone());
        informers.pods.on_event(move |ev| {
            index.observe(ev);
            if let InformerEvent::Deleted(pod) = ev
                && let Some((rs_name, _)) = controller_of(pod, "ReplicaSet")
            {
                let rs_key = format!("{}/{rs_name}", objects::namespace(pod).unwrap_or(""));
                if let Some(d_key) = ctx.caches.replicasets.get(&rs_key).and_then(|rs| deployment_key(&rs)) {
                    enqueue_related(&queue, d_key, "Pod", pod);
                }
            }
        });
    }
    (Arc::new(DeploymentController { ctx, replicasets, pods }), queue)
}

#[async_trait::async_trait]
impl Reconciler for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment"
    }

    async fn reconcile(&self, key: &str, _reason: &ReconcileReason) -> Result<Action, ReconcileError> {
        let Some(d) = self.ctx.caches.deployments.get(key) else {
            return Ok(Action::await_change());
        };
        let mut sync = DeploymentSync {
            controller: self,
            deployment: (*d).clone(),
            replicasets: Vec::new(),
        };
        sync.run().await
    }
}

/// The state of one reconcile of one Deployment: the Deployment and its ReplicaSets as
/// this reconcile last wrote or read them.
struct DeploymentSync<'a> {
    /// The controller: its client, caches, event recorder and owner indexes.
    controller: &'a DeploymentController,
    /// The Deployment, as this reconcile last read or wrote it.
    deployment: Value,
    /// Its ReplicaSets (claimed at the start), as this reconcile last read or wrote them.
    replicasets: Vec<Value>,
}

impl DeploymentSync<'_> {
    fn ns(&self) -> String {
        objects::namespace(&self.deployment).unwrap_or("default").to_string()
    }

    fn name(&self) -> String {
        name_of(&self.deployment).to_string()
    }

    fn err(&self, what: impl std::fmt::Display) -> ReconcileError {
        ReconcileError(format!("Deployment {}/{}: {what}", self.ns(), self.name()))
    }

    fn surge(&self) -> Result<i64, ReconcileError> {
        max_surge(&self.deployment).map_err(|e| self.err(e))
    }

    fn unavailable(&self) -> Result<i64, ReconcileError> {
        max_unavailable(&self.deployment).map_err(|e| self.err(e))
    }

    fn event(&self, kind: EventType, reason: &str, message: String) {
        record_event(&self.controller.ctx.recorder, &self.deployment, kind, reason, message);
    }

    /// Replace our copy of a ReplicaSet after writing it.
    fn remember(&mut self, rs: Value) {
        let uid = uid_of(&rs).to_string();
        match self.replicasets.iter_mut().find(|r| uid_of(r) == uid) {
            Some(slot) => *slot = rs,
            None => self.replicasets.push(rs),
        }
    }

    fn by_uid(&self, uid: &str) -> Option<Value> {
        self.replicasets.iter().find(|r| uid_of(r) == uid).cloned()
    }

    /// The new ReplicaSet (template equal to the Deployment's, the oldest such) and the others.
    fn new_and_old(&self) -> (Option<Value>, Vec<Value>) {
        let template = self
            .deployment
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(Value::Null);
        let mut sorted = self.replicasets.clone();
        sorted.sort_by(by_creation);
        let pos = sorted.iter().position(|rs| {
            rs.pointer("/spec/template")
                .is_some_and(|t| equal_ignore_hash(t, &template))
        });
        let new = pos.map(|i| sorted.remove(i));
        (new, sorted)
    }

    async fn run(&mut self) -> Result<Action, ReconcileError> {
        let ns = self.ns();
        let uid = uid_of(&self.deployment).to_string();
        let selector = self
            .deployment
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or(Value::Null);
        if selector.as_object().is_some_and(|s| {
            s.values().all(|v| {
                v.is_null() || v.as_object().is_some_and(Map::is_empty) || v.as_array().is_some_and(Vec::is_empty)
            })
        }) {
            self.event(
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(Action::await_change());
        }
        // Claim ReplicaSets: owned ones plus adoptable orphans of the namespace.
        let mut keys = self.controller.replicasets.owned_by(&uid);
        keys.extend(self.controller.replicasets.orphans_in(&ns));
        let candidates: Vec<Arc<Value>> = keys
            .iter()
            .filter_map(|k| self.controller.ctx.caches.replicasets.get(k))
            .collect();
        let owned = claim(
            &self.controller.ctx.client,
            rs_info(),
            &self.deployment,
            "Deployment",
            candidates,
        )
        .await?;
        self.replicasets = owned.iter().map(|r| (**r).clone()).collect();

        if objects::deletion_timestamp(&self.deployment).is_some() {
            let (new, _) = self.new_and_old();
            self.sync_status(new.as_ref(), false).await?;
            return Ok(Action::await_change());
        }
        self.check_paused_condition();
        let paused = self.deployment.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
        if paused || self.is_scaling_event().await? {
            return self.sync(paused).await;
        }
        if self.deployment.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate") {
            self.rollout_recreate().await
        } else {
            self.rollout_rolling().await
        }
    }
}
