//! # The namespace controller (mirrors kube-controller-manager's `pkg/controller/namespace`)
//!
//! Deleting a namespace deletes everything inside it, but not in one stroke. The API server
//! only marks the namespace: `metadata.deletionTimestamp` and `status.phase: Terminating`.
//! From that moment nothing new may be created inside (`unable to create new content in
//! namespace shop because it is being terminated`), while everything already there can
//! still be read, changed and deleted. The namespace itself stays, held by the finalizer
//! `kubernetes` in its `spec.finalizers`, until this controller has emptied it:
//!
//! ```text
//! kubectl delete ns shop ──► Namespace shop: Terminating, spec.finalizers: [kubernetes]
//!        (5 s grace)     ──► namespace controller, for every namespaced resource kind:
//!                              list, DELETE each object (propagationPolicy: Background)
//!                              pods first; the rest only once no pod is left
//!                        ──► status.conditions say what is left and why
//!                        ──► PUT namespaces/shop/finalize without "kubernetes" ──► gone
//! ```
//!
//! Every object is deleted **through the API**, as a user would: pods get their grace period
//! (the kubelet stops their containers first), owners cascade to their dependents through
//! the garbage collector, and objects with finalizers wait for their owners to finish. The
//! namespace records its progress in five conditions, as upstream's deleter does:
//! `NamespaceDeletionDiscoveryFailure`, `NamespaceDeletionGroupVersionParsingFailure`,
//! `NamespaceDeletionContentFailure` (a delete failed), `NamespaceContentRemaining` (`pods.
//! has 2 resource instances`) and `NamespaceFinalizersRemaining` (objects held by a finalizer).
//!
//! Like upstream, the controller waits a short **grace period** (5 s) after it sees a
//! namespace start terminating: a client that deletes a namespace *and* the objects in it
//! (`kubectl delete -f app.yaml`) finds those objects still there and deletes them itself.
//! It then works in passes: when content remains it looks again once the pods' grace period
//! may be over (upstream's estimate), or as soon as an object inside is deleted.
//!
//! Where kulisse differs: the kinds to empty come from kulisse's registry (the list discovery
//! serves) rather than from a discovery request, so the two discovery conditions are always
//! `False`; objects are deleted one by one (kulisse serves no `deletecollection`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::{Instrument, info_span};

use super::reconciler::{Action, Cause, Queue, ReconcileError, ReconcileReason, Reconciler, new_queue, traceparent_of};
use super::{Ctx, SharedInformers};
use crate::client::ListParams;
use crate::client::informer::{Cache, InformerEvent, key_of};
use crate::objects::{self, NAMESPACE_FINALIZER, RESOURCES, ResourceInfo};

/// How long after a namespace starts terminating the controller begins to empty it
/// (upstream's `namespaceDeletionGracePeriod`).
pub const DELETION_GRACE_PERIOD: Duration = Duration::from_secs(5);

/// How long to wait for objects held by finalizers (upstream's `finalizerEstimateSeconds`).
const FINALIZER_ESTIMATE_SECS: i64 = 15;

/// The namespace controller. See the module documentation.
pub struct NamespaceController {
    ctx: Arc<Ctx>,
}

fn namespace_info() -> &'static ResourceInfo {
    objects::by_gvk("v1", "Namespace").expect("Namespace is a built-in kind")
}

fn deletion_time(ns: &Value) -> Option<DateTime<Utc>> {
    objects::deletion_timestamp(ns).and_then(|t| DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&Utc)))
}

/// How much of the grace period is left for a namespace that is terminating.
fn grace_left(ns: &Value) -> Duration {
    let Some(since) = deletion_time(ns) else {
        return DELETION_GRACE_PERIOD;
    };
    let elapsed = (Utc::now() - since).to_std().unwrap_or_default();
    DELETION_GRACE_PERIOD.saturating_sub(elapsed)
}

fn queue_after_grace(queue: &Queue, ns: &Value, reason: ReconcileReason, traceparent: Option<String>) {
    queue.add_after(key_of(ns), Cause { reason, traceparent }, grace_left(ns));
}

/// Set up the controller: queue terminating namespaces after the grace period, and queue
/// one again when an object inside it is deleted (its next pass may finish the job).
pub fn setup(informers: &mut SharedInformers, ctx: Arc<Ctx>) -> (Arc<NamespaceController>, Queue) {
    let queue = new_queue();
    {
        let queue = queue.clone();
        informers.namespaces.on_event(move |ev| {
            let ns = ev.object();
            if !matches!(ev, InformerEvent::Deleted(_)) && objects::deletion_timestamp(ns).is_some() {
                queue_after_grace(&queue, ns, ReconcileReason::of_event(ev), traceparent_of(ns));
            }
        });
    }
    let contents = [
        ("Pod", &mut informers.pods),
        ("ReplicaSet", &mut informers.replicasets),
        ("Deployment", &mut informers.deployments),
        ("Service", &mut informers.services),
        ("Endpoints", &mut informers.endpoints),
        ("EndpointSlice", &mut informers.endpointslices),
    ];
    for (kind, informer) in contents {
        let (queue, namespaces) = (queue.clone(), ctx.caches.namespaces.clone());
        informer.on_event(move |ev| content_deleted(&queue, &namespaces, kind, ev));
    }
    (Arc::new(NamespaceController { ctx }), queue)
}

fn content_deleted(queue: &Queue, namespaces: &Cache, kind: &str, ev: &InformerEvent) {
    let InformerEvent::Deleted(obj) = ev else { return };
    let Some(ns) = objects::namespace(obj).and_then(|n| namespaces.get(n)) else {
        return;
    };
    if objects::deletion_timestamp(&ns).is_some() {
        let reason = ReconcileReason::RelatedObjectChanged {
            kind: kind.to_string(),
            name: objects::name(obj).unwrap_or("").to_string(),
        };
        queue_after_grace(queue, &ns, reason, traceparent_of(&ns));
    }
}

/// What one pass over a namespace's contents found.
#[derive(Default, Debug)]
struct Content {
    /// Objects deleted in this pass.
    deleted: usize,
    /// resource (`pods.`, `deployments.apps`) → objects still there.
    remaining: BTreeMap<String, usize>,
    /// finalizer → objects it still holds.
    finalizers: BTreeMap<String, usize>,
    /// Deletes or lists that failed.
    errors: Vec<String>,
    /// Seconds until the remaining objects should be gone (0: nothing to wait for).
    estimate: i64,
}

/// Upstream names a resource in conditions as `resource.group`: `pods.`, `deployments.apps`.
fn resource_label(info: &ResourceInfo) -> String {
    format!("{}.{}", info.plural, info.group)
}

/// Upstream's `estimateGracefulTerminationForPods`: the longest grace period of the pods
/// that have not finished, minus what has passed since the namespace began terminating.
fn pods_estimate(pods: &[Value], deleted_at: DateTime<Utc>) -> i64 {
    let longest = pods
        .iter()
        .filter(|p| {
            let phase = p.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
            phase != "Succeeded" && phase != "Failed"
        })
        .filter_map(|p| p.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
        .max()
        .unwrap_or(0);
    if (Utc::now() - deleted_at).num_seconds() >= longest {
        0
    } else {
        longest
    }
}

fn items(list: &Value) -> Vec<Value> {
    list.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
}

impl NamespaceController {
    /// Delete every object of one kind in `ns`, then look at what is left
    /// (upstream's `deleteAllContentForGroupVersionResource`).
    async fn delete_kind(&self, info: &'static ResourceInfo, ns: &str, deleted_at: DateTime<Utc>, out: &mut Content) {
        let client = &self.ctx.client;
        let listed = match client.list(info, Some(ns), &ListParams::default()).await {
            Ok(l) => items(&l),
            Err(e) => {
                return out
                    .errors
                    .push(format!("could not list {}: {e}", info.group_resource()));
            }
        };
        let estimate = if info.kind == "Pod" {
            pods_estimate(&listed, deleted_at)
        } else {
            0
        };
        let background = json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"});
        for obj in listed.iter().filter(|o| objects::deletion_timestamp(o).is_none()) {
            let name = objects::name(obj).unwrap_or("");
            match client.delete_with_options(info, Some(ns), name, &background).await {
                Ok(_) => out.deleted += 1,
                Err(e) if e.code() == Some(404) => {}
                Err(e) => out
                    .errors
                    .push(format!("could not delete {} {name:?}: {e}", info.group_resource())),
            }
        }
        let left = match client.list(info, Some(ns), &ListParams::default()).await {
            Ok(l) => items(&l),
            Err(e) => {
                return out
                    .errors
                    .push(format!("could not list {}: {e}", info.group_resource()));
            }
        };
        if left.is_empty() {
            return;
        }
        out.remaining.insert(resource_label(info), left.len());
        let mut held = false;
        for f in left.iter().flat_map(|o| objects::finalizers(o)) {
            held = true;
            *out.finalizers.entry(f).or_default() += 1;
        }
        if estimate > 0 {
            out.estimate = out.estimate.max(estimate);
        } else if held {
            out.estimate = out.estimate.max(FINALIZER_ESTIMATE_SECS);
        } else {
            out.errors.push(format!(
                "unexpected items still remain in namespace: {ns} for gvr: {}/{}, Resource={}",
                info.group, info.version, info.plural
            ));
        }
    }

    /// Empty the namespace: pods first, everything else once no pod is left (upstream's
    /// `deleteAllContent` with `OrderedNamespaceDeletion`).
    async fn delete_all_content(&self, ns: &str, deleted_at: DateTime<Utc>) -> Content {
        let mut content = Content::default();
        let pods = objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind");
        self.delete_kind(pods, ns, deleted_at, &mut content).await;
        if content.remaining.contains_key(&resource_label(pods)) {
            return content;
        }
        for info in RESOURCES.iter().filter(|r| r.namespaced && r.kind != "Pod") {
            self.delete_kind(info, ns, deleted_at, &mut content).await;
        }
        content
    }
}

/// The conditions the deleter maintains, with the reason and message of their "all is
/// well" (`False`) form (upstream's `status_condition_utils.go`).
const CONDITIONS: &[(&str, &str, &str)] = &[
    (
        "NamespaceDeletionDiscoveryFailure",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        "NamespaceDeletionGroupVersionParsingFailure",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        "NamespaceContentRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        "NamespaceFinalizersRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
];

/// The failing (`True`) conditions for what a pass found: type → (reason, message).
fn failing_conditions(content: &Content) -> BTreeMap<&'static str, (&'static str, String)> {
    let mut failing = BTreeMap::new();
    if !content.errors.is_empty() {
        let mut errs = content.errors.clone();
        errs.sort();
        let message = format!(
            "Failed to delete all resource types, {} remaining: {}",
            errs.len(),
            errs.join(", ")
        );
        failing.insert("NamespaceDeletionContentFailure", ("ContentDeletionFailed", message));
    }
    if !content.remaining.is_empty() {
        let parts: Vec<String> = content
            .remaining
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        let message = format!("Some resources are remaining: {}", parts.join(", "));
        failing.insert("NamespaceContentRemaining", ("SomeResourcesRemain", message));
    }
    if !content.finalizers.is_empty() {
        let parts: Vec<String> = content
            .finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        let message = format!("Some finalizers are remaining: {}", parts.join(", "));
        failing.insert("NamespaceFinalizersRemaining", ("SomeFinalizerRemain", message));
    }
    failing
}

/// Write the five conditions into `ns`'s status; true when anything changed. The
/// transition time moves only when a condition's status flips.
fn update_conditions(ns: &mut Value, content: &Content) -> bool {
    let failing = failing_conditions(content);
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut conditions: Vec<Value> = ns
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut changed = false;
    for (kind, ok_reason, ok_message) in CONDITIONS {
        let (status, reason, message) = match failing.get(kind) {
            Some((reason, message)) => ("True", *reason, message.clone()),
            None => ("False", *ok_reason, ok_message.to_string()),
        };
        let wanted = json!({"type": kind, "status": status, "reason": reason, "message": message});
        match conditions
            .iter_mut()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        {
            None => {
                let mut c = wanted;
                c["lastTransitionTime"] = json!(now);
                conditions.push(c);
                changed = true;
            }
            Some(c)
                if ["status", "reason", "message"]
                    .iter()
                    .any(|f| c.get(*f) != wanted.get(*f)) =>
            {
                if c.get("status") != wanted.get("status") {
                    c["lastTransitionTime"] = json!(now);
                }
                for f in ["status", "reason", "message"] {
                    c[f] = wanted[f].clone();
                }
                changed = true;
            }
            Some(_) => {}
        }
    }
    if changed {
        ns["status"]["conditions"] = Value::Array(conditions);
    }
    changed
}

fn spec_finalizers(ns: &Value) -> Vec<String> {
    ns.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

impl NamespaceController {
    /// Read the namespace from the API server (other controllers may be changing it too).
    async fn fresh(&self, name: &str) -> Result<Option<Value>, ReconcileError> {
        match self.ctx.client.get(namespace_info(), None, name).await {
            Ok(ns) => Ok(Some(ns)),
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Write `ns`'s status; returns the namespace as stored.
    async fn write_status(&self, name: &str, ns: &Value) -> Result<Value, ReconcileError> {
        Ok(self
            .ctx
            .client
            .replace(namespace_info(), None, name, Some("status"), ns)
            .await?)
    }

    /// One pass of deleting the contents, with the conditions written afterwards. `Ok(None)`:
    /// the namespace is empty; `Ok(Some(action))`: wait and look again.
    async fn empty(
        &self,
        name: &str,
        ns: &mut Value,
        deleted_at: DateTime<Utc>,
    ) -> Result<Option<Action>, ReconcileError> {
        let span = info_span!(
            "controller.delete_namespace_content",
            "kulisse.stage" = "controller",
            "k8s.kind" = "Namespace",
            "k8s.name" = name,
            "namespace.deleted" = tracing::field::Empty,
            "namespace.remaining" = tracing::field::Empty,
            "namespace.estimate_seconds" = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
            "otel.status_message" = tracing::field::Empty,
        );
        let content = self.delete_all_content(name, deleted_at).instrument(span.clone()).await;
        span.record("namespace.deleted", content.deleted);
        span.record("namespace.remaining", format!("{:?}", content.remaining).as_str());
        span.record("namespace.estimate_seconds", content.estimate);
        if update_conditions(ns, &content) {
            *ns = self.write_status(name, ns).instrument(span.clone()).await?;
        }
        if !content.errors.is_empty() {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_message", content.errors.join("; ").as_str());
            return Err(ReconcileError(format!(
                "could not delete everything in namespace {name}: {}",
                content.errors.join("; ")
            )));
        }
        if content.remaining.is_empty() {
            return Ok(None);
        }
        // Upstream looks again after half the estimate; a deletion inside queues it sooner.
        Ok(Some(Action::requeue(Duration::from_secs(
            (content.estimate / 2 + 1).unsigned_abs(),
        ))))
    }

    /// Remove our finalizer through `/finalize`; the API server then removes the namespace
    /// (unless other finalizers still hold it).
    async fn finalize(&self, name: &str, ns: &Value) -> Result<(), ReconcileError> {
        let mut finalized = ns.clone();
        let rest: Vec<String> = spec_finalizers(ns)
            .into_iter()
            .filter(|f| f != NAMESPACE_FINALIZER)
            .collect();
        finalized["spec"]["finalizers"] = json!(rest);
        let span = info_span!(
            "controller.finalize_namespace",
            "kulisse.stage" = "controller",
            "k8s.kind" = "Namespace",
            "k8s.name" = name,
            "namespace.finalizers.left" = rest.len(),
        );
        let result = self
            .ctx
            .client
            .replace(namespace_info(), None, name, Some("finalize"), &finalized)
            .instrument(span)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A namespace stored before namespaces carried the `kubernetes` finalizer: once it is
    /// empty, delete it again, which now removes it (upstream's older `deleteNamespace`).
    async fn delete_unfinalized(&self, name: &str, ns: &Value) -> Result<(), ReconcileError> {
        let options = json!({
            "kind": "DeleteOptions", "apiVersion": "v1",
            "preconditions": {"uid": objects::uid(ns).unwrap_or("")},
        });
        match self
            .ctx
            .client
            .delete_with_options(namespace_info(), None, name, &options)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for NamespaceController {
    fn name(&self) -> &'static str {
        "namespace"
    }

    async fn reconcile(&self, key: &str, _reason: &ReconcileReason) -> Result<Action, ReconcileError> {
        let Some(mut ns) = self.fresh(key).await? else {
            return Ok(Action::await_change());
        };
        let Some(deleted_at) = deletion_time(&ns) else {
            return Ok(Action::await_change());
        };
        if ns.pointer("/status/phase").and_then(Value::as_str) != Some("Terminating") {
            ns["status"]["phase"] = json!("Terminating");
            ns = self.write_status(key, &ns).await?;
        }
        let finalizers = spec_finalizers(&ns);
        let ours = finalizers.iter().any(|f| f == NAMESPACE_FINALIZER);
        if !ours && !finalizers.is_empty() {
            return Ok(Action::await_change()); // finalized by us already; others still hold it
        }
        if let Some(wait) = self.empty(key, &mut ns, deleted_at).await? {
            return Ok(wait);
        }
        if ours {
            self.finalize(key, &ns).await?;
        } else {
            self.delete_unfinalized(key, &ns).await?;
        }
        Ok(Action::await_change())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_say_what_remains_and_flip_back() {
        let mut ns = json!({"metadata": {"name": "shop"}, "status": {"phase": "Terminating"}});
        let mut content = Content::default();
        content.remaining.insert("pods.".into(), 2);
        content.finalizers.insert("example.com/hold".into(), 1);
        assert!(update_conditions(&mut ns, &content));
        let conds = ns["status"]["conditions"].as_array().unwrap().clone();
        assert_eq!(conds.len(), 5);
        let get = |t: &str| conds.iter().find(|c| c["type"] == t).unwrap().clone();
        assert_eq!(get("NamespaceContentRemaining")["status"], "True");
        assert_eq!(
            get("NamespaceContentRemaining")["message"],
            "Some resources are remaining: pods. has 2 resource instances"
        );
        assert_eq!(
            get("NamespaceFinalizersRemaining")["message"],
            "Some finalizers are remaining: example.com/hold in 1 resource instances"
        );
        assert_eq!(get("NamespaceDeletionContentFailure")["reason"], "ContentDeleted");
        assert!(!update_conditions(&mut ns, &content), "same pass, no write");
        assert!(update_conditions(&mut ns, &Content::default()));
        let conds = ns["status"]["conditions"].as_array().unwrap();
        assert!(conds.iter().all(|c| c["status"] == "False"), "{conds:?}");
    }

    #[test]
    fn pods_estimate_is_their_grace_period_until_it_has_passed() {
        let pod = |grace: i64, phase: &str| json!({"spec": {"terminationGracePeriodSeconds": grace}, "status": {"phase": phase}});
        let now = Utc::now();
        let pods = [pod(30, "Running"), pod(60, "Succeeded")];
        assert_eq!(pods_estimate(&pods, now), 30);
        assert_eq!(pods_estimate(&pods, now - chrono::Duration::seconds(31)), 0);
        assert_eq!(pods_estimate(&[], now), 0);
    }
}
