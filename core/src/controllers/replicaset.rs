//! # The ReplicaSet controller (mirrors `pkg/controller/replicaset` of kube-controller-manager)
//!
//! A ReplicaSet says "keep *N* pods that look like this template running". The controller
//! makes it so, over and over:
//!
//! 1. **Find my pods.** A pod belongs to a ReplicaSet when its `metadata.ownerReferences`
//!    names the ReplicaSet with `controller: true`. Pods are looked up through a small index
//!    kept from informer events (owner uid → pod keys), never by scanning every pod.
//! 2. **Adopt and release.** An *orphan* pod (no controlling owner) whose labels match the
//!    selector is **adopted**: the controller writes its ownerReference onto the pod. A pod
//!    it owns whose labels no longer match is **released**: the ownerReference is removed,
//!    and the pod lives on as an orphan. (client-go's `PodControllerRefManager`.)
//! 3. **Count and correct.** Pods being deleted (`deletionTimestamp` set) or finished
//!    (`Succeeded`/`Failed`) do not count. Too few → create pods from `spec.template`, named
//!    `<replicaset>-<5 random characters>` like `generateName`; too many → delete the ones
//!    that hurt least to lose, in the order of upstream's `ActivePods` sort: unscheduled before
//!    scheduled, Pending before Running, not ready before ready, pods doubled up on a node
//!    before lone ones, recently ready before long ready, more restarts before fewer, newer
//!    before older.
//! 4. **Expectations.** Right after creating 3 pods, the informer cache may not show them
//!    yet; a naive controller would count 0 again and create 3 more. client-go's
//!    `ControllerExpectations` prevents that: the controller remembers "I expect 3 creations
//!    (or these 2 deletions)" per ReplicaSet and does not act again until the informer has
//!    seen them all, or until [`EXPECTATIONS_TIMEOUT`] has passed (upstream waits 5 minutes;
//!    kulisse uses a few seconds so a lost event heals quickly on a learner's laptop).
//! 5. **Report.** `status.replicas`, `fullyLabeledReplicas`, `readyReplicas`,
//!    `availableReplicas` (ready for at least `spec.minReadySeconds`) and
//!    `observedGeneration` are written through the `/status` subresource, only when they
//!    changed.
//!
//! Events as upstream: `SuccessfulCreate` (`Created pod: web-7d4b9-x2kqj`),
//! `SuccessfulDelete`, `FailedCreate`, `FailedDelete`. Every write runs in its own span
//! (`controller.create_pod`, `controller.delete_pod`, `controller.adopt`,
//! `controller.release`, `controller.update_status`) under the reconcile loop's
//! `controller.reconcile` span, and each pod created carries the `kulisse.dev/traceparent`
//! annotation of its `controller.create_pod` span, so the scheduler and the kubelet continue
//! the same trace.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tracing::{Instrument, info_span};

use super::reconciler::{
    Action, Queue, ReconcileError, ReconcileReason, Reconciler, TRACEPARENT_ANNOTATION, enqueue_own, enqueue_related,
    namespace_terminating, new_queue,
};
use super::{Ctx, SharedInformers};
use crate::client::informer::{InformerEvent, key_of};
use crate::client::{Client, ClientError};
use crate::events::{EventRecorder, EventType};
use crate::objects::{self, ResourceInfo};

/// How long a ReplicaSet waits for the informer to show the pods it created or deleted
/// before it acts again anyway (client-go uses 5 minutes).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many pods are created or deleted in one reconcile (upstream's `burstReplicas`).
pub const BURST_REPLICAS: usize = 500;

pub use crate::objects::NAME_ALPHABET;

/// The annotation with which a pod asks to be deleted later (or sooner) on scale-down.
pub const POD_DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

pub(crate) fn resource(api_version: &str, kind: &str) -> &'static ResourceInfo {
    objects::by_gvk(api_version, kind).expect("built-in kind")
}

fn pods_info() -> &'static ResourceInfo {
    resource("v1", "Pod")
}

fn rs_info() -> &'static ResourceInfo {
    resource("apps/v1", "ReplicaSet")
}

// ---------------------------------------------------------------------------------------
// Small readers shared with the Deployment controller
// ---------------------------------------------------------------------------------------

/// An integer field (`/spec/replicas`), `default` when missing or not a number.
pub(crate) fn int_at(obj: &Value, pointer: &str, default: i64) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(default)
}

/// The name and uid of the controlling owner of `obj`, if it is of kind `kind` in group `apps`.
pub(crate) fn controller_of<'a>(obj: &'a Value, kind: &str) -> Option<(&'a str, &'a str)> {
    objects::owner_references(obj)
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .filter(|r| r.get("kind").and_then(Value::as_str) == Some(kind))
        .filter(|r| {
            r.get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| v.starts_with("apps/"))
        })
        .and_then(|r| Some((r.get("name")?.as_str()?, r.get("uid")?.as_str()?)))
}

/// The ownerReference a controller puts on what it creates or adopts
/// (`metav1.NewControllerRef`).
pub(crate) fn controller_ref(owner: &Value, kind: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": objects::name(owner).unwrap_or(""),
        "uid": objects::uid(owner).unwrap_or(""),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// A string map (`labels`, `annotations`, `matchLabels`) at `pointer`; non-strings skipped.
pub(crate) fn labels_at(obj: &Value, pointer: &str) -> std::collections::BTreeMap<String, String> {
    obj.pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub use crate::objects::pod::is_pod_ready;
use crate::objects::pod::ready_condition;

pub(crate) fn parse_time(obj: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn ready_since(pod: &Value) -> Option<DateTime<Utc>> {
    ready_condition(pod).and_then(|c| parse_time(c, "/lastTransitionTime"))
}

/// A pod is *available* when it has been ready for at least `min_ready_seconds`
/// (`podutil.IsPodAvailable`).
pub fn is_pod_available(pod: &Value, min_ready_seconds: i64, now: DateTime<Utc>) -> bool {
    if !is_pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    ready_since(pod).is_some_and(|t| t + chrono::Duration::seconds(min_ready_seconds) < now)
}

/// Pods being deleted or finished do not count towards `replicas` (`controller.IsPodActive`).
pub fn is_pod_active(pod: &Value) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    objects::deletion_timestamp(pod).is_none() && phase != "Succeeded" && phase != "Failed"
}

/// Record an event without making the reconcile wait for it (client-go's broadcaster is
/// asynchronous too).
pub(crate) fn record_event(recorder: &EventRecorder, obj: &Value, kind: EventType, reason: &str, message: String) {
    let recorder = recorder.clone();
    let obj = obj.clone();
    let reason = reason.to_string();
    tokio::spawn(
        async move { recorder.record(&obj, kind, &reason, &message).await }.instrument(tracing::Span::current()),
    );
}

/// Mark a span as failed, with a message a learner can read.
pub(crate) fn span_error(span: &tracing::Span, err: &dyn std::fmt::Display) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", err.to_string().as_str());
}

// ---------------------------------------------------------------------------------------
// The owner index
// ---------------------------------------------------------------------------------------

/// Objects of one kind indexed by the uid of their controlling owner, kept up to date from
/// informer events. Orphans (no controller) are indexed by namespace, so a controller can
/// look for adoption candidates without scanning everything.
#[derive(Default)]
pub struct OwnerIndex {
    inner: Mutex<IndexInner>,
}

#[derive(Default)]
struct IndexInner {
    /// object key → (namespace, controller uid).
    entries: HashMap<String, (String, Option<String>)>,
    by_owner: HashMap<String, BTreeSet<String>>,
    orphans: HashMap<String, BTreeSet<String>>,
}

impl IndexInner {
    fn unlink(&mut self, key: &str) {
        if let Some((ns, owner)) = self.entries.remove(key) {
            let (map, k) = match owner {
                Some(uid) => (&mut self.by_owner, uid),
                None => (&mut self.orphans, ns),
            };
            if let Some(set) = map.get_mut(&k) {
                set.remove(key);
                if set.is_empty() {
                    map.remove(&k);
                }
            }
        }
    }
}

impl OwnerIndex {
    /// Apply one informer event.
    pub fn observe(&self, ev: &InformerEvent) {
        let obj = ev.object();
        let key = key_of(obj);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.unlink(&key);
        if matches!(ev, InformerEvent::Deleted(_)) {
            return;
        }
        let ns = objects::namespace(obj).unwrap_or("").to_string();
        let owner = objects::controller_uid(obj).map(str::to_string);
        match &owner {
            Some(uid) => inner.by_owner.entry(uid.clone()).or_default().insert(key.clone()),
            None => inner.orphans.entry(ns.clone()).or_default().insert(key.clone()),
        };
        inner.entries.insert(key, (ns, owner));
    }

    /// Keys of the objects whose controller has this uid.
    pub fn owned_by(&self, uid: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .by_owner
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Keys of the objects in `namespace` that have no controller.
    pub fn orphans_in(&self, namespace: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .orphans
            .get(namespace)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// Adoption and release (client-go's ControllerRefManager)
// ---------------------------------------------------------------------------------------

/// Claim the `candidates` for `owner` (of `owner_kind`): keep what it owns and still
/// selects, adopt matching orphans, release owned objects that no longer match. Returns
/// the objects it owns afterwards. `can_adopt` is checked (once, lazily) before the first
/// adoption: upstream re-reads the owner from the API server to be sure it still exists
/// and is not being deleted.
pub(crate) async fn claim(
    client: &Client,
    child_info: &'static ResourceInfo,
    owner: &Value,
    owner_kind: &str,
    candidates: Vec<Arc<Value>>,
) -> Result<Vec<Arc<Value>>, ReconcileError> {
    let owner_uid = objects::uid(owner).unwrap_or("");
    let selector = owner.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
    let owner_deleting = objects::deletion_timestamp(owner).is_some();
    let mut owned = Vec::new();
    let mut can_adopt: Option<bool> = None;
    let mut errors = Vec::new();
    for child in candidates {
        let matches = objects::match_label_selector(&selector, &objects::labels(&child));
        match objects::controller_uid(&child) {
            Some(uid) if uid == owner_uid => {
                if matches || owner_deleting {
                    owned.push(child);
                    continue;
                }
                match set_controller(client, child_info, &child, owner, owner_kind, false).await {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(404) => {}
                    Err(e) => errors.push(e.to_string()),
                }
            }
            Some(_) => {} // someone else's
            None => {
                if owner_deleting || !matches || objects::deletion_timestamp(&child).is_some() {
                    continue;
                }
                if can_adopt.is_none() {
                    can_adopt = Some(owner_still_there(client, owner).await?);
                }
                if can_adopt != Some(true) {
                    continue;
                }
                match set_controller(client, child_info, &child, owner, owner_kind, true).await {
                    Ok(adopted) => owned.push(Arc::new(adopted)),
                    Err(e) if e.code() == Some(404) => {}
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(owned)
    } else {
        Err(ReconcileError(errors.join("; ")))
    }
}

async fn owner_still_there(client: &Client, owner: &Value) -> Result<bool, ReconcileError> {
    let info = resource(
        objects::api_version(owner).unwrap_or("apps/v1"),
        objects::kind(owner).unwrap_or("ReplicaSet"),
    );
    let fresh = match client
        .get(info, objects::namespace(owner), objects::name(owner).unwrap_or(""))
        .await
    {
        Ok(v) => v,
        Err(e) if e.code() == Some(404) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    Ok(objects::uid(&fresh) == objects::uid(owner) && objects::deletion_timestamp(&fresh).is_none())
}

/// Adopt (`adopt = true`) or release `child`: write its ownerReferences with a PUT carrying
/// its resourceVersion, so a concurrent change makes it fail with 409 and we look again.
async fn set_controller(
    client: &Client,
    child_info: &'static ResourceInfo,
    child: &Value,
    owner: &Value,
    owner_kind: &str,
    adopt: bool,
) -> Result<Value, ClientError> {
    let name = objects::name(child).unwrap_or("");
    let ns = objects::namespace(child).unwrap_or("");
    let owner_text = format!("{owner_kind}/{}", objects::name(owner).unwrap_or(""));
    macro_rules! ownership_span {
        ($name:literal) => {
            info_span!(
                $name,
                "kulisse.stage" = "controller",
                "k8s.kind" = child_info.kind,
                "k8s.namespace" = ns,
                "k8s.name" = name,
                "controller.owner" = owner_text.as_str(),
                "otel.status_code" = tracing::field::Empty,
                "otel.status_description" = tracing::field::Empty,
            )
        };
    }
    let span = if adopt {
        ownership_span!("controller.adopt")
    } else {
        ownership_span!("controller.release")
    };
    let owner_uid = objects::uid(owner).unwrap_or("");
    let mut refs: Vec<Value> = objects::owner_references(child)
        .iter()
        .filter(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid))
        .cloned()
        .collect();
    if adopt {
        refs.push(controller_ref(owner, owner_kind));
    }
    let mut updated = child.clone();
    if let Some(meta) = objects::meta_mut(&mut updated) {
        meta.insert("ownerReferences".into(), Value::Array(refs));
    }
    let result = client
        .replace(child_info, objects::namespace(child), name, None, &updated)
        .instrument(span.clone())
        .await;
    if let Err(e) = &result {
        span_error(&span, e);
    }
    result
}

// ---------------------------------------------------------------------------------------
// Expectations (client-go's UIDTrackingControllerExpectations)
// ---------------------------------------------------------------------------------------

/// What a controller is still waiting to see in its informer, per owner key.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expectation>>,
}

struct Expectation {
    adds: i64,
    /// Keys of the pods whose deletion we asked for and have not seen yet.
    deletes: HashSet<String>,
    since: Instant,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectation>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May the controller act on `key`? Yes when nothing is pending, or when it waited too long.
    pub fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => (e.adds <= 0 && e.deletes.is_empty()) || e.since.elapsed() > EXPECTATIONS_TIMEOUT,
        }
    }

    /// How long until `key`'s pending expectations time out (None: nothing pending).
    pub fn pending_for(&self, key: &str) -> Option<Duration> {
        let inner = self.lock();
        let e = inner.get(key)?;
        if e.adds <= 0 && e.deletes.is_empty() {
            return None;
        }
        Some(EXPECTATIONS_TIMEOUT.saturating_sub(e.since.elapsed()))
    }

    /// Remember that `adds` creations and the deletion of `deletes` were just requested.
    pub fn expect(&self, key: &str, adds: i64, deletes: impl IntoIterator<Item = String>) {
        self.lock().insert(
            key.to_string(),
            Expectation {
                adds,
                deletes: deletes.into_iter().collect(),
                since: Instant::now(),
            },
        );
    }

    /// The informer showed one of our new pods (or a create failed and will never show).
    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.adds -= 1;
        }
    }

    /// The informer showed `pod_key` going away (or the delete failed).
    pub fn deletion_observed(&self, key: &str, pod_key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.deletes.remove(pod_key);
        }
    }

    /// Forget `key` (its owner was deleted).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

// ---------------------------------------------------------------------------------------
// Which pods to delete first (controller.ActivePodsWithRanks)
// ---------------------------------------------------------------------------------------

fn phase_ordinal(pod: &Value) -> u8 {
    match pod.pointer("/status/phase").and_then(Value::as_str) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0, // Pending (and anything else) first
    }
}

fn deletion_cost(pod: &Value) -> i64 {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(POD_DELETION_COST_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<i32>().ok())
        .map(i64::from)
        .unwrap_or(0)
}

fn max_restarts(pod: &Value) -> i64 {
    ["/status/containerStatuses", "/status/initContainerStatuses"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
        .max()
        .unwrap_or(0)
}

/// `afterOrZero`: a missing time first, then the later time first.
fn newer_first(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

/// The order in which pods are deleted on scale-down: the ones first that hurt least.
/// `rank` is the number of related pods on the same node (doubled-up pods go first).
pub fn deletion_order(a: &Value, rank_a: usize, b: &Value, rank_b: usize) -> Ordering {
    let node = |p: &Value| {
        p.pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (na, nb) = (node(a), node(b));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    phase_ordinal(a)
        .cmp(&phase_ordinal(b))
        .then_with(|| is_pod_ready(a).cmp(&is_pod_ready(b)))
        .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
        .then_with(|| rank_b.cmp(&rank_a))
        .then_with(|| {
            if is_pod_ready(a) && is_pod_ready(b) {
                newer_first(ready_since(a), ready_since(b))
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| max_restarts(b).cmp(&max_restarts(a)))
        .then_with(|| {
            newer_first(
                parse_time(a, "/metadata/creationTimestamp"),
                parse_time(b, "/metadata/creationTimestamp"),
            )
        })
}

/// Pick `count` pods of `pods` to delete; `related` are the active pods of the ReplicaSet
/// and its siblings (same owning Deployment), used to spot pods doubled up on a node.
pub fn pods_to_delete(pods: &[Arc<Value>], related: &[Arc<Value>], count: usize) -> Vec<Arc<Value>> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in related {
        if let Some(n) = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let mut ranked: Vec<(usize, &Arc<Value>)> = pods
        .iter()
        .map(|p| {
            let rank = p
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .and_then(|n| per_node.get(n).copied())
                .unwrap_or(0);
            (rank, p)
        })
        .collect();
    ranked.sort_by(|(ra, a), (rb, b)| deletion_order(a, *ra, b, *rb));
    ranked.into_iter().take(count).map(|(_, p)| p.clone()).collect()
}

// ---------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------

/// The ReplicaSet controller.
pub struct ReplicaSetController {
    ctx: Arc<Ctx>,
    pods: Arc<OwnerIndex>,
    expectations: Arc<Expectations>,
}

/// `namespace/name` of the ReplicaSet that controls `pod`, if any.
fn owner_key(pod: &Value) -> Option<String> {
    let (name, _) = controller_of(pod, "ReplicaSet")?;
    Some(format!("{}/{}", objects::namespace(pod).unwrap_or(""), name))
}

/// Queue every ReplicaSet in the pod's namespace whose selector matches it (for orphans).
fn enqueue_matching(queue: &Queue, ctx: &Ctx, pod: &Value) {
    let ns = objects::namespace(pod).unwrap_or("");
    let labels = objects::labels(pod);
    for rs in ctx.caches.replicasets.filter(|rs| {
        objects::namespace(rs) == Some(ns)
            && rs
                .pointer("/spec/selector")
                .is_some_and(|s| objects::match_label_selector(s, &labels))
    }) {
        enqueue_related(queue, key_of(&rs), "Pod", pod);
    }
}

fn on_pod_event(queue: &Queue, ctx: &Ctx, exp: &Expectations, ev: &InformerEvent) {
    match ev {
        InformerEvent::Added(pod) => {
            if let Some(owner) = owner_key(pod) {
                if objects::deletion_timestamp(pod).is_some() {
                    exp.deletion_observed(&owner, &key_of(pod));
                } else {
                    exp.creation_observed(&owner);
                }
                enqueue_related(queue, owner, "Pod", pod);
            } else {
                enqueue_matching(queue, ctx, pod);
            }
        }
        InformerEvent::Modified { old, new } => {
            if objects::deletion_timestamp(new).is_some()
                && objects::deletion_timestamp(old).is_none()
                && let Some(owner) = owner_key(new)
            {
                exp.deletion_observed(&owner, &key_of(new));
            }
            let (old_owner, new_owner) = (owner_key(old), owner_key(new));
            if old_owner != new_owner
                && let Some(o) = old_owner
            {
                enqueue_related(queue, o, "Pod", new);
            }
            match new_owner {
                Some(o) => enqueue_related(queue, o, "Pod", new),
                None => {
                    let labels_changed = objects::labels(old) != objects::labels(new);
                    if labels_changed || objects::controller_uid(old).is_some() {
                        enqueue_matching(queue, ctx, new);
                    }
                }
            }
        }
        InformerEvent::Deleted(pod) => {
            if let Some(owner) = owner_key(pod) {
                exp.deletion_observed(&owner, &key_of(pod));
                enqueue_related(queue, owner, "Pod", pod);
            }
        }
        InformerEvent::Resync(_) => {}
    }
}

/// Wire the ReplicaSet controller to the shared informers.
pub fn setup(informers: &mut SharedInformers, ctx: Arc<Ctx>) -> (Arc<ReplicaSetController>, Queue) {
    let queue = new_queue();
    let pods = Arc::new(OwnerIndex::default());
    let expectations = Arc::new(Expectations::default());
    {
        let (queue, exp) = (queue.clone(), expectations.clone());
        informers.replicasets.on_event(move |ev| {
            if let InformerEvent::Deleted(rs) = ev {
                exp.forget(&key_of(rs));
            }
            enqueue_own(&queue, ev);
        });
    }
    {
        let (queue, exp, index, ctx) = (queue.clone(), expectations.clone(), pods.clone(), ctx.clone());
        informers.pods.on_event(move |ev| {
            index.observe(ev);
            on_pod_event(&queue, &ctx, &exp, ev);
        });
    }
    (
        Arc::new(ReplicaSetController {
            ctx,
            pods,
            expectations,
        }),
        queue,
    )
}

/// A pod name like `generateName` gives: the prefix (cut to 58 characters) and 5 random
/// characters (the API server's own name generator, [`objects::generated_name`]).
pub fn generate_pod_name(prefix: &str) -> String {
    objects::generated_name(prefix)
}

/// The pod a ReplicaSet creates from its template (`controller.GetPodFromTemplate`).
fn pod_from_template(rs: &Value, name: &str, traceparent: Option<String>) -> Value {
    let template = rs.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let mut annotations = template
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(tp) = traceparent {
        annotations.insert(TRACEPARENT_ANNOTATION.into(), Value::String(tp));
    }
    let mut meta = Map::new();
    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(objects::namespace(rs).unwrap_or("default")));
    if let Some(labels) = template.pointer("/metadata/labels").filter(|l| l.is_object()) {
        meta.insert("labels".into(), labels.clone());
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    if let Some(f) = template.pointer("/metadata/finalizers").filter(|f| f.is_array()) {
        meta.insert("finalizers".into(), f.clone());
    }
    meta.insert("ownerReferences".into(), json!([controller_ref(rs, "ReplicaSet")]));
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

impl ReplicaSetController {
    /// The active pods this ReplicaSet may own: those indexed under its uid plus the orphans
    /// of its namespace (adoption candidates).
    fn candidate_pods(&self, uid: &str, ns: &str) -> Vec<Arc<Value>> {
        let mut keys = self.pods.owned_by(uid);
        keys.extend(self.pods.orphans_in(ns));
        keys.iter()
            .filter_map(|k| self.ctx.caches.pods.get(k))
            .filter(|p| is_pod_active(p))
            .collect()
    }

    /// Active pods of every ReplicaSet with the same controlling owner (a Deployment's
    /// other ReplicaSets), to rank pods doubled up on a node.
    fn related_pods(&self, rs: &Value, own: &[Arc<Value>]) -> Vec<Arc<Value>> {
        let Some(owner_uid) = objects::controller_uid(rs) else {
            return own.to_vec();
        };
        let ns = objects::namespace(rs);
        let mut out = Vec::new();
        for sibling in self
            .ctx
            .caches
            .replicasets
            .filter(|o| objects::namespace(o) == ns && objects::controller_uid(o) == Some(owner_uid))
        {
            for k in self.pods.owned_by(objects::uid(&sibling).unwrap_or("")) {
                if let Some(p) = self.ctx.caches.pods.get(&k).filter(|p| is_pod_active(p)) {
                    out.push(p);
                }
            }
        }
        out
    }

    async fn create_pod(&self, rs: &Value) -> Result<String, ClientError> {
        let rs_name = objects::name(rs).unwrap_or("");
        let ns = objects::namespace(rs).unwrap_or("default");
        let span = info_span!(
            "controller.create_pod",
            "kulisse.stage" = "controller",
            "k8s.kind" = "Pod",
            "k8s.namespace" = ns,
            "k8s.name" = tracing::field::Empty,
            "controller.owner" = format!("ReplicaSet/{rs_name}").as_str(),
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        );
        async {
            let traceparent = kulisse_traces::propagation::traceparent_of_current();
            let mut last = None;
            // A random name can collide (27^5 ≈ 14 million names): try a few.
            for _ in 0..3 {
                let name = generate_pod_name(&format!("{rs_name}-"));
                tracing::Span::current().record("k8s.name", name.as_str());
                let pod = pod_from_template(rs, &name, traceparent.clone());
                match self.ctx.client.create(pods_info(), Some(ns), &pod).await {
                    Ok(_) => return Ok(name),
                    Err(e) if e.code() == Some(409) => last = Some(e),
                    Err(e) => {
                        span_error(&tracing::Span::current(), &e);
                        return Err(e);
                    }
                }
            }
            let e = last.unwrap_or_else(|| ClientError::Protocol("no pod name was free".into()));
            span_error(&tracing::Span::current(), &e);
            Err(e)
        }
        .instrument(span)
        .await
    }

    async fn delete_pod(&self, rs: &Value, pod: &Value) -> Result<(), ClientError> {
        let name = objects::name(pod).unwrap_or("");
        let ns = objects::namespace(pod);
        let span = info_span!(
            "controller.delete_pod",
            "kulisse.stage" = "controller",
            "k8s.kind" = "Pod",
            "k8s.namespace" = ns.unwrap_or(""),
            "k8s.name" = name,
            "controller.owner" = format!("ReplicaSet/{}", objects::name(rs).unwrap_or("")).as_str(),
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        );
        let result = self
            .ctx
            .client
            .delete(pods_info(), ns, name, None)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            span_error(&span, e);
        }
        result.map(|_| ())
    }

    /// Create or delete pods so that `pods.len()` becomes `spec.replicas`
    /// (`manageReplicas`).
    async fn manage_replicas(&self, key: &str, rs: &Value, pods: &[Arc<Value>]) -> Result<(), ReconcileError> {
        let want = int_at(rs, "/spec/replicas", 1).max(0) as usize;
        let have = pods.len();
        if have < want {
            let diff = (want - have).min(BURST_REPLICAS);
            self.expectations.expect(key, diff as i64, []);
            let (created, failure) = self.slow_start_batch(rs, diff).await;
            // Creations that failed or were skipped will never be seen by the informer.
            for _ in created..diff {
                self.expectations.creation_observed(key);
            }
            if let Some(e) = failure {
                return Err(ReconcileError(format!(
                    "ReplicaSet {key}: created {created} of {diff} missing pods; the API server refused the next one: {e}"
                )));
            }
        } else if have > want {
            let diff = (have - want).min(BURST_REPLICAS);
            self.delete_surplus(key, rs, pods, diff).await?;
        }
        Ok(())
    }

    /// Create `count` pods for `rs` with a slow start (`slowStartBatch`): batches of 1, 2,
    /// 4, ... so a template that cannot be created (quota, invalid) fails once, not 500
    /// times. Returns how many were created and the error that stopped the batches, if any.
    async fn slow_start_batch(&self, rs: &Value, count: usize) -> (usize, Option<ClientError>) {
        let recorder = &self.ctx.recorder;
        let mut created = 0usize;
        let mut batch = 1usize;
        let mut failure = None;
        // A namespace being deleted refuses every create: stop, quietly (upstream does).
        let mut terminating = false;
        while created < count {
            let n = batch.min(count - created);
            let results = futures::future::join_all((0..n).map(|_| self.create_pod(rs))).await;
            for r in results {
                match r {
                    Ok(name) => {
                        created += 1;
                        record_event(
                            recorder,
                            rs,
                            EventType::Normal,
                            "SuccessfulCreate",
                            format!("Created pod: {name}"),
                        );
                    }
                    Err(e) if namespace_terminating(&e) => terminating = true,
                    Err(e) => {
                        record_event(
                            recorder,
                            rs,
                            EventType::Warning,
                            "FailedCreate",
                            format!("Error creating: {e}"),
                        );
                        failure = Some(e);
                    }
                }
            }
            if failure.is_some() || terminating {
                break;
            }
            batch *= 2;
        }
        (created, failure)
    }

    /// Delete `count` surplus pods of `rs`, the cheapest to lose first (`getPodsToDelete`),
    /// all at once.
    async fn delete_surplus(
        &self,
        key: &str,
        rs: &Value,
        pods: &[Arc<Value>],
        count: usize,
    ) -> Result<(), ReconcileError> {
        let recorder = &self.ctx.recorder;
        let related = self.related_pods(rs, pods);
        let victims = pods_to_delete(pods, &related, count);
        self.expectations.expect(key, 0, victims.iter().map(|p| key_of(p)));
        let results = futures::future::join_all(victims.iter().map(|p| self.delete_pod(rs, p))).await;
        let mut errors = Vec::new();
        for (pod, r) in victims.iter().zip(results) {
            let name = objects::name(pod).unwrap_or("");
            match r {
                Ok(()) => record_event(
                    recorder,
                    rs,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                ),
                Err(e) => {
                    self.expectations.deletion_observed(key, &key_of(pod));
                    if e.code() != Some(404) {
                        record_event(
                            recorder,
                            rs,
                            EventType::Warning,
                            "FailedDelete",
                            format!("Error deleting: {e}"),
                        );
                        errors.push(format!("{name}: {e}"));
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(ReconcileError(format!(
                "ReplicaSet {key}: could not delete surplus pods: {}",
                errors.join("; ")
            )));
        }
        Ok(())
    }

    /// Write `status` through `/status` if it differs from what is stored.
    async fn update_status(&self, rs: &Value, status: Value) -> Result<(), ReconcileError> {
        if rs.get("status") == Some(&status) {
            return Ok(());
        }
        let ns = objects::namespace(rs);
        let name = objects::name(rs).unwrap_or("");
        let span = info_span!(
            "controller.update_status",
            "kulisse.stage" = "controller",
            "k8s.kind" = "ReplicaSet",
            "k8s.namespace" = ns.unwrap_or(""),
            "k8s.name" = name,
            "controller.replicas.desired" = int_at(rs, "/spec/replicas", 1),
            "controller.replicas.current" = int_at(&status, "/replicas", 0),
            "controller.replicas.ready" = int_at(&status, "/readyReplicas", 0),
            "controller.replicas.available" = int_at(&status, "/availableReplicas", 0),
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        );
        let client = &self.ctx.client;
        let result = async {
            let mut obj = rs.clone();
            obj["status"] = status.clone();
            match client.replace(rs_info(), ns, name, Some("status"), &obj).await {
                Err(e) if e.code() == Some(409) => {
                    // Someone wrote in between: read again and retry once, as upstream does.
                    let mut fresh = client.get(rs_info(), ns, name).await?;
                    fresh["status"] = status;
                    client
                        .replace(rs_info(), ns, name, Some("status"), &fresh)
                        .await
                        .map(|_| ())
                }
                other => other.map(|_| ()),
            }
        }
        .instrument(span.clone())
        .await;
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(404) => Ok(()), // deleted meanwhile
            Err(e) => {
                span_error(&span, &e);
                Err(ReconcileError(format!(
                    "could not update the status of ReplicaSet {}/{name}: {e}",
                    ns.unwrap_or("")
                )))
            }
        }
    }
}

/// The status a ReplicaSet should report for these pods (`calculateStatus`).
pub fn calculate_status(
    rs: &Value,
    pods: &[Arc<Value>],
    manage_error: Option<&ReconcileError>,
    now: DateTime<Utc>,
) -> Value {
    let template_labels = labels_at(rs, "/spec/template/metadata/labels");
    let min_ready = int_at(rs, "/spec/minReadySeconds", 0);
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    for p in pods {
        let labels = objects::labels(p);
        if template_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            fully_labeled += 1;
        }
        if is_pod_ready(p) {
            ready += 1;
            if is_pod_available(p, min_ready, now) {
                available += 1;
            }
        }
    }
    let mut status = rs.get("status").and_then(Value::as_object).cloned().unwrap_or_default();
    status.insert("replicas".into(), json!(pods.len()));
    // Like the Kubernetes API, leave out the counters that are `omitempty` and 0.
    let generation = int_at(rs, "/metadata/generation", 1);
    for (field, value) in [
        ("fullyLabeledReplicas", fully_labeled),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("observedGeneration", generation),
    ] {
        if value == 0 {
            status.remove(field);
        } else {
            status.insert(field.into(), json!(value));
        }
    }
    // The ReplicaFailure condition: set when creating/deleting failed, cleared when it works.
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has_failure = conditions
        .iter()
        .any(|c| c.get("type").and_then(Value::as_str) == Some("ReplicaFailure"));
    match manage_error {
        Some(err) if !has_failure => {
            let want = int_at(rs, "/spec/replicas", 1);
            let reason = if (pods.len() as i64) < want {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            conditions.push(json!({
                "type": "ReplicaFailure",
                "status": "True",
                "lastTransitionTime": crate::objects::time::time(now),
                "reason": reason,
                "message": err.to_string(),
            }));
        }
        None if has_failure => {
            conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("ReplicaFailure"));
        }
        _ => {}
    }
    if conditions.is_empty() {
        status.remove("conditions");
    } else {
        status.insert("conditions".into(), Value::Array(conditions));
    }
    Value::Object(status)
}

#[async_trait::async_trait]
impl Reconciler for ReplicaSetController {
    fn name(&self) -> &'static str {
        "replicaset"
    }

    async fn reconcile(&self, key: &str, _reason: &ReconcileReason) -> Result<Action, ReconcileError> {
        let Some(rs) = self.ctx.caches.replicasets.get(key) else {
            self.expectations.forget(key);
            return Ok(Action::await_change());
        };
        let ns = objects::namespace(&rs).unwrap_or("").to_string();
        let uid = objects::uid(&rs).unwrap_or("").to_string();
        // Decide whether to act before looking at pods: an event arriving in between then
        // only makes the next reconcile act, never this one twice.
        let needs_sync = self.expectations.satisfied(key);
        let candidates = self.candidate_pods(&uid, &ns);
        let pods = claim(&self.ctx.client, pods_info(), &rs, "ReplicaSet", candidates).await?;

        let mut manage_error = None;
        if needs_sync && objects::deletion_timestamp(&rs).is_none() {
            manage_error = self.manage_replicas(key, &rs, &pods).await.err();
        }
        let now = Utc::now();
        let status = calculate_status(&rs, &pods, manage_error.as_ref(), now);
        self.update_status(&rs, status.clone()).await?;
        if let Some(e) = manage_error {
            return Err(e);
        }
        // Pods that are ready but not yet available for minReadySeconds: look again then.
        let replicas = int_at(&rs, "/spec/replicas", 1);
        let min_ready = int_at(&rs, "/spec/minReadySeconds", 0);
        if min_ready > 0
            && int_at(&status, "/readyReplicas", 0) == replicas
            && int_at(&status, "/availableReplicas", 0) != replicas
        {
            return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
        }
        // Waiting for the informer to show our writes: if it never does, act after the timeout.
        if let Some(left) = self.expectations.pending_for(key) {
            return Ok(Action::requeue(left + Duration::from_millis(100)));
        }
        Ok(Action::await_change())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, phase: &str, ready: bool, created: &str) -> Arc<Value> {
        Arc::new(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                "lastTransitionTime": created}]}
        }))
    }

    #[test]
    fn deletion_prefers_unassigned_pending_unready_newer() {
        let pods = vec![
            pod("running-old", "n1", "Running", true, "2024-01-01T00:00:00Z"),
            pod("running-new", "n1", "Running", true, "2024-01-02T00:00:00Z"),
            pod("pending", "n1", "Pending", false, "2024-01-01T00:00:00Z"),
            pod("unassigned", "", "Pending", false, "2024-01-01T00:00:00Z"),
            pod("not-ready", "n1", "Running", false, "2024-01-01T00:00:00Z"),
        ];
        let order: Vec<String> = pods_to_delete(&pods, &pods, 5)
            .iter()
            .map(|p| objects::name(p).unwrap_or("").to_string())
            .collect();
        assert_eq!(
            order,
            ["unassigned", "pending", "not-ready", "running-new", "running-old"]
        );
    }

    #[test]
    fn doubled_up_pods_go_first() {
        let a = pod("alone", "n1", "Running", true, "2024-01-01T00:00:00Z");
        let b = pod("crowded", "n2", "Running", true, "2024-01-01T00:00:00Z");
        let c = pod("crowded2", "n2", "Running", true, "2024-01-01T00:00:00Z");
        let all = vec![a.clone(), b.clone(), c];
        let first = pods_to_delete(&[a, b], &all, 1);
        assert_eq!(objects::name(&first[0]), Some("crowded"));
    }

    #[test]
    fn expectations_block_until_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
        e.expect("ns/rs", 2, []);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        e.expect("ns/rs", 0, ["ns/p1".to_string()]);
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "ns/other");
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "ns/p1");
        assert!(e.satisfied("ns/rs"));
    }

    #[test]
    fn generated_names_use_the_safe_alphabet() {
        let n = generate_pod_name("web-");
        assert_eq!(n.len(), 9);
        assert!(n[4..].bytes().all(|b| NAME_ALPHABET.contains(&b)));
        let long = generate_pod_name(&"x".repeat(100));
        assert_eq!(long.len(), 63);
    }

    #[test]
    fn availability_honours_min_ready_seconds() {
        let p = pod("p", "n", "Running", true, "2024-01-01T00:00:00Z");
        let t = DateTime::parse_from_rfc3339("2024-01-01T00:00:05Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        assert!(is_pod_available(&p, 0, t));
        assert!(is_pod_available(&p, 4, t));
        assert!(!is_pod_available(&p, 10, t));
    }
}
