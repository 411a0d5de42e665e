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

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value, json};
use tracing::{Instrument, info_span};

use super::replicaset::{
    OwnerIndex, claim, controller_of, controller_ref, int_at, parse_time, record_event, resource, span_error,
};
use super::runtime::{
    Action, Queue, ReconcileError, ReconcileReason, Reconciler, TRACEPARENT_ANNOTATION, enqueue_own, enqueue_related,
    new_queue,
};
use super::{Ctx, SharedInformers};
use crate::client::ClientError;
use crate::client::informer::{InformerEvent, key_of};
use crate::events::EventType;
use crate::objects::{self, ResourceInfo};

/// The label that tells the ReplicaSets (and pods) of one Deployment apart.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The revision of a ReplicaSet (and the Deployment's latest).
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had before a rollback made it current again.
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// `spec.replicas` of the Deployment when it last sized this ReplicaSet.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` of the Deployment when it last sized this ReplicaSet.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations that are not copied onto its ReplicaSets.
const SKIPPED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    "deprecated.deployment.rollback.to",
    TRACEPARENT_ANNOTATION,
];

// Condition reasons, as upstream's `deploymentutil`.
const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
const RS_UPDATED: &str = "ReplicaSetUpdated";
const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
const TIMED_OUT: &str = "ProgressDeadlineExceeded";
const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
const PAUSED: &str = "DeploymentPaused";
const RESUMED: &str = "DeploymentResumed";

fn rs_info() -> &'static ResourceInfo {
    resource("apps/v1", "ReplicaSet")
}

fn deploy_info() -> &'static ResourceInfo {
    resource("apps/v1", "Deployment")
}

// ---------------------------------------------------------------------------------------
// pod-template-hash
// ---------------------------------------------------------------------------------------

/// JSON with object keys sorted, so that the same template always gives the same bytes,
/// whatever order its author wrote the fields in.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// FNV-1a, 32 bits (Go's `hash/fnv.New32a`).
fn fnv32a(bytes: &[u8], mut hash: u32) -> u32 {
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(16_777_619);
    }
    hash
}

/// The pod-template-hash of a template (`controller.ComputeHash`): FNV-32a over the
/// template (and the Deployment's `status.collisionCount`, if set, to step around a
/// collision), its decimal digits mapped onto `bcdfghjklmnpqrstvwxz2456789`
/// (`rand.SafeEncodeString`).
pub fn pod_template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut text = String::new();
    canonical_json(template, &mut text);
    let mut hash = fnv32a(text.as_bytes(), 2_166_136_261);
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(c as u32).to_le_bytes());
        hash = fnv32a(&bytes, hash);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// A template without the pod-template-hash label (an empty label map counts as none).
fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove(POD_TEMPLATE_HASH_LABEL);
        }
        if meta
            .get("labels")
            .is_some_and(|l| l.is_null() || l.as_object().is_some_and(Map::is_empty))
        {
            meta.remove("labels");
        }
    }
    // An empty `metadata` is the same as none (a Go struct has no "absent").
    if let Some(m) = t.as_object_mut()
        && m.get("metadata")
            .is_some_and(|v| v.is_null() || v.as_object().is_some_and(Map::is_empty))
    {
        m.remove("metadata");
    }
    t
}

/// Are two templates the same apart from the pod-template-hash label (`EqualIgnoreHash`)?
pub fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    without_hash(a) == without_hash(b)
}

// ---------------------------------------------------------------------------------------
// maxSurge / maxUnavailable
// ---------------------------------------------------------------------------------------

/// An `IntOrString` (`3` or `"25%"`) scaled against `total` (`GetScaledValueFromIntOrPercent`).
pub fn scaled_value(v: &Value, total: i64, round_up: bool) -> Result<i64, String> {
    match v {
        Value::Null => Ok(0),
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("{n} is not an integer")),
        Value::String(s) => {
            if let Some(p) = s.strip_suffix('%') {
                let pct: i64 = p
                    .parse()
                    .map_err(|_| format!("invalid value for IntOrString: invalid value \"{s}\""))?;
                let scaled = pct as f64 * total as f64 / 100.0;
                Ok(if round_up { scaled.ceil() } else { scaled.floor() } as i64)
            } else {
                s.parse().map_err(|_| {
                    format!("invalid value for IntOrString: invalid type: string is not a percentage: \"{s}\"")
                })
            }
        }
        other => Err(format!("{other} is neither an integer nor a percentage")),
    }
}

fn is_rolling(d: &Value) -> bool {
    d.pointer("/spec/strategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// `(maxSurge, maxUnavailable)` as absolute numbers (`ResolveFenceposts`): surge rounds
/// up, unavailable rounds down, and both 0 would deadlock, so unavailable becomes 1.
pub fn resolve_fenceposts(d: &Value) -> Result<(i64, i64), String> {
    let desired = d_replicas(d);
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    let surge_v = ru
        .and_then(|r| r.get("maxSurge"))
        .cloned()
        .unwrap_or_else(|| json!("25%"));
    let unav_v = ru
        .and_then(|r| r.get("maxUnavailable"))
        .cloned()
        .unwrap_or_else(|| json!("25%"));
    let surge =
        scaled_value(&surge_v, desired, true).map_err(|e| format!("spec.strategy.rollingUpdate.maxSurge: {e}"))?;
    let mut unavailable = scaled_value(&unav_v, desired, false)
        .map_err(|e| format!("spec.strategy.rollingUpdate.maxUnavailable: {e}"))?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge.max(0), unavailable.max(0)))
}

fn max_surge(d: &Value) -> Result<i64, String> {
    if !is_rolling(d) {
        return Ok(0);
    }
    Ok(resolve_fenceposts(d)?.0)
}

fn max_unavailable(d: &Value) -> Result<i64, String> {
    let replicas = d_replicas(d);
    if !is_rolling(d) || replicas == 0 {
        return Ok(0);
    }
    Ok(resolve_fenceposts(d)?.1.min(replicas))
}

// ---------------------------------------------------------------------------------------
// Reading Deployments and ReplicaSets
// ---------------------------------------------------------------------------------------

fn d_replicas(d: &Value) -> i64 {
    int_at(d, "/spec/replicas", 1).max(0)
}

fn spec_replicas(rs: &Value) -> i64 {
    int_at(rs, "/spec/replicas", 1).max(0)
}

fn status_replicas(rs: &Value) -> i64 {
    int_at(rs, "/status/replicas", 0)
}

fn ready_replicas(rs: &Value) -> i64 {
    int_at(rs, "/status/readyReplicas", 0)
}

/// Available pods of a ReplicaSet, at most `spec.replicas`: pods beyond that are about to
/// be deleted (the not-ready ones first), so they must not count for a rollout decision.
fn available_replicas(rs: &Value) -> i64 {
    int_at(rs, "/status/availableReplicas", 0).min(spec_replicas(rs))
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn revision(rs: &Value) -> i64 {
    annotation(rs, REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn name_of(obj: &Value) -> &str {
    objects::name(obj).unwrap_or("")
}

fn uid_of(obj: &Value) -> &str {
    objects::uid(obj).unwrap_or("")
}

/// Oldest first; ties by name (`ReplicaSetsByCreationTimestamp`).
fn by_creation(a: &Value, b: &Value) -> Ordering {
    parse_time(a, "/metadata/creationTimestamp")
        .cmp(&parse_time(b, "/metadata/creationTimestamp"))
        .then_with(|| name_of(a).cmp(name_of(b)))
}

fn has_progress_deadline(d: &Value) -> bool {
    d.pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|s| s != i64::from(i32::MAX))
}

fn set_annotation(obj: &mut Value, key: &str, value: String) {
    if let Some(meta) = objects::meta_mut(obj) {
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if !ann.is_object() {
            *ann = json!({});
        }
        if let Some(a) = ann.as_object_mut() {
            a.insert(key.to_string(), Value::String(value));
        }
    }
}

/// Set the replicas annotations; true if they changed (`SetReplicasAnnotations`).
fn set_replicas_annotations(rs: &mut Value, desired: i64, max: i64) -> bool {
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS_ANNOTATION, desired), (MAX_REPLICAS_ANNOTATION, max)] {
        let text = value.to_string();
        if annotation(rs, key) != Some(text.as_str()) {
            set_annotation(rs, key, text);
            changed = true;
        }
    }
    changed
}

/// Copy the Deployment's annotations to the new ReplicaSet and move its revision up
/// (`SetNewReplicaSetAnnotations`). True if anything changed.
fn set_new_rs_annotations(d: &Value, rs: &mut Value, new_revision: i64, exists: bool, max_surge: i64) -> bool {
    let mut changed = false;
    for (k, v) in objects::annotations(d) {
        if SKIPPED_ANNOTATIONS.contains(&k.as_str()) || annotation(rs, &k) == Some(v.as_str()) {
            continue;
        }
        set_annotation(rs, &k, v);
        changed = true;
    }
    let old_text = annotation(rs, REVISION_ANNOTATION).map(str::to_string);
    let old = match old_text.as_deref() {
        None | Some("") => 0,
        Some(t) => match t.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return false,
        },
    };
    if old < new_revision {
        set_annotation(rs, REVISION_ANNOTATION, new_revision.to_string());
        changed = true;
        if let Some(prev) = old_text.filter(|t| !t.is_empty()) {
            let history = match annotation(rs, REVISION_HISTORY_ANNOTATION) {
                Some(h) if !h.is_empty() => format!("{h},{prev}"),
                _ => prev,
            };
            set_annotation(rs, REVISION_HISTORY_ANNOTATION, history);
        }
    }
    if !exists {
        let desired = d_replicas(d);
        changed |= set_replicas_annotations(rs, desired, desired + max_surge);
    }
    changed
}

// ---------------------------------------------------------------------------------------
// Conditions
// ---------------------------------------------------------------------------------------

fn condition(status: &Value, kind: &str) -> Option<Value> {
    crate::objects::pod::condition(status, kind).cloned()
}

fn new_condition(kind: &str, status: &str, reason: &str, message: String) -> Value {
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

fn remove_condition(status: &mut Value, kind: &str) {
    crate::objects::pod::remove_condition(status, kind);
}

/// `SetDeploymentCondition`: no change when status and reason are the same; keep the
/// transition time when only the reason changes.
fn set_condition(status: &mut Value, cond: Value) {
    crate::objects::pod::set_condition(status, cond);
}

/// The status with `Progressing` set to `DeploymentPaused` (or `DeploymentResumed`) when a
/// pause (or resume) is not recorded yet (`checkPausedConditions`); `None`: nothing to record.
fn paused_status(d: &Value) -> Option<Value> {
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

/// Has the Deployment reached its goal (`DeploymentComplete`)?
fn deployment_complete(d: &Value, status: &Value) -> bool {
    let want = d_replicas(d);
    int_at(status, "/updatedReplicas", 0) == want
        && int_at(status, "/replicas", 0) == want
        && int_at(status, "/availableReplicas", 0) == want
        && int_at(status, "/observedGeneration", 0) >= int_at(d, "/metadata/generation", 1)
}

/// Did the rollout move forward since the last status (`DeploymentProgressing`)?
fn deployment_progressing(d: &Value, new: &Value) -> bool {
    let old = d.get("status").cloned().unwrap_or_else(|| json!({}));
    int_at(new, "/updatedReplicas", 0) > int_at(&old, "/updatedReplicas", 0)
        || int_at(new, "/replicas", 0) < int_at(&old, "/replicas", 0)
        || int_at(new, "/readyReplicas", 0) > int_at(&old, "/readyReplicas", 0)
        || int_at(new, "/availableReplicas", 0) > int_at(&old, "/availableReplicas", 0)
}

/// Has the rollout made no progress for `progressDeadlineSeconds` (`DeploymentTimedOut`)?
fn deployment_timed_out(d: &Value, status: &Value) -> bool {
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

/// `GetProportion`: this ReplicaSet's share of `to_add`.
fn proportion(d: &Value, rs: &Value, to_add: i64, added: i64, max_replicas: i64) -> i64 {
    let size = spec_replicas(rs);
    if size == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if d_replicas(&d) == 0 {
        -size
    } else {
        let before = annotation(rs, MAX_REPLICAS_ANNOTATION)
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| *v != 0)
            .unwrap_or_else(|| int_at(&d, "/status/replicas", 0));
        if before == 0 {
            0
        } else {
            ((size as f64 / before as f64) * max_replicas as f64).round() as i64 - size
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

// ---------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------

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
        let mut sync = Sync {
            c: self,
            d: (*d).clone(),
            rss: Vec::new(),
        };
        sync.run().await
    }
}

/// The state of one reconcile of one Deployment: the Deployment and its ReplicaSets as
/// this reconcile last wrote or read them.
struct Sync<'a> {
    c: &'a DeploymentController,
    d: Value,
    rss: Vec<Value>,
}

impl Sync<'_> {
    fn ns(&self) -> String {
        objects::namespace(&self.d).unwrap_or("default").to_string()
    }

    fn name(&self) -> String {
        name_of(&self.d).to_string()
    }

    fn err(&self, what: impl std::fmt::Display) -> ReconcileError {
        ReconcileError(format!("Deployment {}/{}: {what}", self.ns(), self.name()))
    }

    fn surge(&self) -> Result<i64, ReconcileError> {
        max_surge(&self.d).map_err(|e| self.err(e))
    }

    fn unavailable(&self) -> Result<i64, ReconcileError> {
        max_unavailable(&self.d).map_err(|e| self.err(e))
    }

    fn event(&self, kind: EventType, reason: &str, message: String) {
        record_event(&self.c.ctx.recorder, &self.d, kind, reason, message);
    }

    /// Replace our copy of a ReplicaSet after writing it.
    fn remember(&mut self, rs: Value) {
        let uid = uid_of(&rs).to_string();
        match self.rss.iter_mut().find(|r| uid_of(r) == uid) {
            Some(slot) => *slot = rs,
            None => self.rss.push(rs),
        }
    }

    fn by_uid(&self, uid: &str) -> Option<Value> {
        self.rss.iter().find(|r| uid_of(r) == uid).cloned()
    }

    /// The new ReplicaSet (template equal to the Deployment's, the oldest such) and the others.
    fn new_and_old(&self) -> (Option<Value>, Vec<Value>) {
        let template = self.d.pointer("/spec/template").cloned().unwrap_or(Value::Null);
        let mut sorted = self.rss.clone();
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
        let uid = uid_of(&self.d).to_string();
        let selector = self.d.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
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
        let mut keys = self.c.replicasets.owned_by(&uid);
        keys.extend(self.c.replicasets.orphans_in(&ns));
        let candidates: Vec<Arc<Value>> = keys
            .iter()
            .filter_map(|k| self.c.ctx.caches.replicasets.get(k))
            .collect();
        let owned = claim(&self.c.ctx.client, rs_info(), &self.d, "Deployment", candidates).await?;
        self.rss = owned.iter().map(|r| (**r).clone()).collect();

        if objects::deletion_timestamp(&self.d).is_some() {
            let (new, _) = self.new_and_old();
            self.sync_status(new.as_ref(), false).await?;
            return Ok(Action::await_change());
        }
        self.check_paused_condition();
        let paused = self.d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
        if paused || self.is_scaling_event().await? {
            return self.sync(paused).await;
        }
        if self.d.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate") {
            self.rollout_recreate().await
        } else {
            self.rollout_rolling().await
        }
    }

    /// `checkPausedConditions`: mark a paused (or resumed) Deployment in `Progressing`.
    fn check_paused_condition(&mut self) {
        if let Some(status) = paused_status(&self.d) {
            self.d["status"] = status;
        }
    }

    /// Is this reconcile only about `spec.replicas` (`isScalingEvent`)?
    async fn is_scaling_event(&mut self) -> Result<bool, ReconcileError> {
        let (new, old) = self.get_all_and_sync_revision(false).await?;
        let want = d_replicas(&self.d).to_string();
        Ok(new
            .iter()
            .chain(old.iter())
            .filter(|rs| spec_replicas(rs) > 0)
            .any(|rs| annotation(rs, DESIRED_REPLICAS_ANNOTATION).is_some_and(|desired| desired != want)))
    }

    /// Find (or, with `create`, create) the new ReplicaSet and sync revisions
    /// (`getAllReplicaSetsAndSyncRevision` + `getNewReplicaSet`).
    async fn get_all_and_sync_revision(&mut self, create: bool) -> Result<(Option<Value>, Vec<Value>), ReconcileError> {
        let (existing, old) = self.new_and_old();
        let new_revision = old.iter().map(revision).max().unwrap_or(0) + 1;
        let surge = self.surge()?;
        if let Some(existing) = existing {
            let mut copy = existing.clone();
            let annotations_changed = set_new_rs_annotations(&self.d, &mut copy, new_revision, true, surge);
            let min_ready = self.d.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0));
            let min_ready_changed = copy.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0)) != min_ready;
            if annotations_changed || min_ready_changed {
                copy["spec"]["minReadySeconds"] = min_ready;
                let updated = self.write_rs(copy, "controller.update_replicaset", None).await?;
                self.remember(updated.clone());
                return Ok((Some(updated), old));
            }
            let rev = annotation(&copy, REVISION_ANNOTATION).unwrap_or("").to_string();
            self.set_deployment_revision(&rev).await?;
            let mut status = self.d.get("status").cloned().unwrap_or_else(|| json!({}));
            if has_progress_deadline(&self.d) && condition(&status, "Progressing").is_none() {
                let msg = format!("Found new replica set \"{}\"", name_of(&copy));
                set_condition(&mut status, new_condition("Progressing", "True", FOUND_NEW_RS, msg));
                self.d["status"] = status;
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
    async fn set_deployment_revision(&mut self, rev: &str) -> Result<(), ReconcileError> {
        if rev.is_empty() || annotation(&self.d, REVISION_ANNOTATION) == Some(rev) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION_ANNOTATION: rev}}});
        let status = self.d.get("status").cloned();
        let updated = self
            .c
            .ctx
            .client
            .merge_patch(deploy_info(), Some(&self.ns()), &self.name(), None, &patch)
            .await
            .map_err(|e| self.err(format!("could not record revision {rev}: {e}")))?;
        self.d = updated;
        // Keep the status this reconcile has been preparing (conditions set above).
        if let Some(s) = status {
            self.d["status"] = s;
        }
        Ok(())
    }

    async fn create_new_rs(&mut self, old: &[Value], new_revision: i64, surge: i64) -> Result<Value, ReconcileError> {
        let ns = self.ns();
        let d_name = self.name();
        let template = self.d.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
        let collision = self.d.pointer("/status/collisionCount").and_then(Value::as_i64);
        let hash = pod_template_hash(&template, collision);
        let rs_name = format!("{d_name}-{hash}");
        let mut new_template = template.clone();
        if let Some(meta) = objects::meta_mut(&mut new_template) {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if !labels.is_object() {
                *labels = json!({});
            }
            labels[POD_TEMPLATE_HASH_LABEL] = json!(hash);
        }
        let mut selector = self.d.pointer("/spec/selector").cloned().unwrap_or_else(|| json!({}));
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
        let mut rs = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": rs_name,
                "namespace": ns,
                "labels": labels,
                "ownerReferences": [controller_ref(&self.d, "Deployment")],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": self.d.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0)),
                "selector": selector,
                "template": new_template,
            },
        });
        let mut all: Vec<Value> = old.to_vec();
        all.push(rs.clone());
        let replicas = self.new_rs_new_replicas(&all, &rs)?;
        rs["spec"]["replicas"] = json!(replicas);
        set_new_rs_annotations(&self.d, &mut rs, new_revision, false, surge);

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
            self.c.ctx.client.create(rs_info(), Some(&ns), &rs).await
        }
        .instrument(span.clone())
        .await;
        let (created, already_existed) = match result {
            Ok(created) => (created, false),
            Err(e) if e.code() == Some(409) => {
                // A slow cache, or a hash collision with someone else's ReplicaSet.
                let key = format!("{ns}/{rs_name}");
                let existing = match self.c.ctx.caches.replicasets.get(&key) {
                    Some(r) => (*r).clone(),
                    None => self.c.ctx.client.get(rs_info(), Some(&ns), &rs_name).await?,
                };
                let ours = objects::controller_uid(&existing) == objects::uid(&self.d)
                    && existing
                        .pointer("/spec/template")
                        .is_some_and(|t| equal_ignore_hash(t, &template));
                if ours {
                    (existing, true)
                } else {
                    span_error(&span, &e);
                    let count = collision.unwrap_or(0) + 1;
                    let mut status = self.d.get("status").cloned().unwrap_or_else(|| json!({}));
                    status["collisionCount"] = json!(count);
                    let _ = self.put_status(status).await;
                    return Err(self.err(format!(
                        "the ReplicaSet name {rs_name} is taken by a ReplicaSet with another template (hash \
                         collision); collisionCount is now {count}, the next attempt uses a new hash"
                    )));
                }
            }
            Err(e) => {
                span_error(&span, &e);
                let msg = format!("Failed to create new replica set \"{rs_name}\": {e}");
                if has_progress_deadline(&self.d) {
                    let mut status = self.d.get("status").cloned().unwrap_or_else(|| json!({}));
                    set_condition(
                        &mut status,
                        new_condition("Progressing", "False", FAILED_RS_CREATE, msg.clone()),
                    );
                    let _ = self.put_status(status).await;
                }
                self.event(EventType::Warning, FAILED_RS_CREATE, msg.clone());
                return Err(self.err(msg));
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
        if !already_existed && has_progress_deadline(&self.d) {
            let mut status = self.d.get("status").cloned().unwrap_or_else(|| json!({}));
            let msg = format!("Created new replica set \"{rs_name}\"");
            set_condition(&mut status, new_condition("Progressing", "True", NEW_RS_CREATED, msg));
            self.d["status"] = status;
        }
        Ok(created)
    }

    /// How big the new ReplicaSet may be now (`NewRSNewReplicas`).
    fn new_rs_new_replicas(&self, all: &[Value], new: &Value) -> Result<i64, ReconcileError> {
        let want = d_replicas(&self.d);
        if !is_rolling(&self.d) {
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
    async fn write_rs(
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
            .c
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
    async fn scale_rs(&mut self, rs: &Value, to: i64) -> Result<bool, ReconcileError> {
        let from = spec_replicas(rs);
        let want = d_replicas(&self.d);
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
    async fn sync(&mut self, paused: bool) -> Result<Action, ReconcileError> {
        let (new, old) = self.get_all_and_sync_revision(false).await?;
        self.scale(new.as_ref(), &old).await?;
        let (new, old) = self.refreshed(new.as_ref(), &old);
        if paused {
            self.cleanup(&old).await?;
        }
        self.sync_status(new.as_ref(), false).await
    }

    /// Our latest copies of `new` and `old` after writes.
    fn refreshed(&self, new: Option<&Value>, old: &[Value]) -> (Option<Value>, Vec<Value>) {
        let new = new.and_then(|n| self.by_uid(uid_of(n)));
        let old = old.iter().filter_map(|o| self.by_uid(uid_of(o))).collect();
        (new, old)
    }

    /// Scale the ReplicaSets to `spec.replicas` (`scale`): one active RS takes everything;
    /// a saturated new RS means the old ones go to 0; otherwise, during a rolling update,
    /// spread the difference proportionally.
    async fn scale(&mut self, new: Option<&Value>, old: &[Value]) -> Result<(), ReconcileError> {
        let want = d_replicas(&self.d);
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
        if !is_rolling(&self.d) {
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
                let p = proportion(&self.d, rs, to_add, added, want + surge);
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

    /// RollingUpdate (`rolloutRolling`).
    async fn rollout_rolling(&mut self) -> Result<Action, ReconcileError> {
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
        let status = self.d.get("status").cloned().unwrap_or_else(|| json!({}));
        if deployment_complete(&self.d, &status) {
            self.cleanup(&old).await?;
        }
        self.sync_status(Some(&new), true).await
    }

    /// `reconcileNewReplicaSet`.
    async fn reconcile_new_rs(&mut self, new: &Value, old: &[Value]) -> Result<bool, ReconcileError> {
        let want = d_replicas(&self.d);
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
    async fn reconcile_old_rss(&mut self, new: &Value, old: &[Value]) -> Result<bool, ReconcileError> {
        let old_count: i64 = old.iter().map(spec_replicas).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let all_count = old_count + spec_replicas(new);
        let min_available = d_replicas(&self.d) - self.unavailable()?;
        let new_unavailable = spec_replicas(new) - available_replicas(new);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // First drop old pods that are not available anyway: they cost no availability.
        let mut old_sorted: Vec<Value> = old.to_vec();
        old_sorted.sort_by(by_creation);
        let mut cleaned = 0;
        for rs in &old_sorted {
            if cleaned >= max_scaled_down {
                break;
            }
            let size = spec_replicas(rs);
            let avail = available_replicas(rs);
            if size == 0 || size == avail {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(size - avail);
            self.scale_rs(rs, size - down).await?;
            cleaned += down;
        }
        // Then scale down available old pods, keeping at least minAvailable available.
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
        Ok(cleaned + scaled > 0)
    }

    /// Recreate (`rolloutRecreate`): old to 0, wait for their pods to be gone, then new.
    async fn rollout_recreate(&mut self) -> Result<Action, ReconcileError> {
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
        let want = d_replicas(&self.d);
        if spec_replicas(&new) != want {
            self.scale_rs(&new, want).await?;
        }
        let status = self.d.get("status").cloned().unwrap_or_else(|| json!({}));
        if deployment_complete(&self.d, &status) {
            self.cleanup(&old).await?;
        }
        let (new, _) = self.refreshed(Some(&new), &old);
        self.sync_status(new.as_ref(), true).await
    }

    /// Are pods of old ReplicaSets still around (not Succeeded/Failed)?
    fn old_pods_running(&self, new: Option<&Value>, old: &[Value]) -> bool {
        if old.iter().map(status_replicas).sum::<i64>() > 0 {
            return true;
        }
        let new_uid = new.map(uid_of);
        self.rss
            .iter()
            .filter(|rs| Some(uid_of(rs)) != new_uid)
            .flat_map(|rs| self.c.pods.owned_by(uid_of(rs)))
            .filter_map(|k| self.c.ctx.caches.pods.get(&k))
            .any(|p| {
                !matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded") | Some("Failed")
                )
            })
    }

    /// Delete old ReplicaSets at 0 beyond `revisionHistoryLimit` (`cleanupDeployment`).
    async fn cleanup(&mut self, old: &[Value]) -> Result<(), ReconcileError> {
        let Some(limit) = self.d.pointer("/spec/revisionHistoryLimit").and_then(Value::as_i64) else {
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
                .c
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
    fn calculate_status(&self, new: Option<&Value>) -> Result<Value, ReconcileError> {
        let d = &self.d;
        let all = &self.rss;
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
    async fn sync_status(&mut self, new: Option<&Value>, rollout: bool) -> Result<Action, ReconcileError> {
        match self.try_sync_status(new, rollout).await {
            // Our cached Deployment was older than the stored one (typically our own last
            // status write has not reached the informer yet): read it and redo the status
            // once, as upstream's status updaters do, instead of failing the whole reconcile.
            Err(StatusError::Conflict) => {
                let fresh = self
                    .c
                    .ctx
                    .client
                    .get(deploy_info(), Some(&self.ns()), &self.name())
                    .await;
                match fresh {
                    Ok(fresh) => {
                        self.d = fresh;
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
            if has_progress_deadline(&self.d)
                && !deployment_complete(&self.d, &status)
                && let Some(cond) = condition(&status, "Progressing")
                && cond.get("reason").and_then(Value::as_str) != Some(TIMED_OUT)
                && let Some(from) = parse_time(&cond, "/lastUpdateTime")
            {
                let deadline = from + chrono::Duration::seconds(int_at(&self.d, "/spec/progressDeadlineSeconds", 600));
                let left = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                requeue = Some(left + Duration::from_secs(1));
            }
        }
        if self.d.get("status") != Some(&status) {
            self.put_status(status).await?;
        }
        Ok(match requeue {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        })
    }

    /// The Progressing condition and ReplicaFailure (`syncRolloutStatus`).
    fn progressing(&self, new: Option<&Value>, status: &mut Value) {
        let d = &self.d;
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
        let failure = self.rss.iter().find_map(|rs| {
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
            "controller.replicas.desired" = d_replicas(&self.d),
            "controller.replicas.updated" = int_at(&status, "/updatedReplicas", 0),
            "controller.replicas.available" = int_at(&status, "/availableReplicas", 0),
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        );
        let mut obj = self.d.clone();
        obj["status"] = status;
        let result: Result<Value, ClientError> = self
            .c
            .ctx
            .client
            .replace(deploy_info(), Some(&ns), &name, Some("status"), &obj)
            .instrument(span.clone())
            .await;
        match result {
            Ok(updated) => {
                self.d = updated;
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
    fn into_reconcile(self, sync: &Sync<'_>) -> ReconcileError {
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

    fn template(image: &str) -> Value {
        json!({"metadata": {"labels": {"app": "web"}},
               "spec": {"containers": [{"name": "web", "image": image}]}})
    }

    #[test]
    fn hash_is_stable_and_follows_the_template() {
        let a = pod_template_hash(&template("nginx:1"), None);
        assert_eq!(a, pod_template_hash(&template("nginx:1"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:2"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:1"), Some(1)));
        assert!(a.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
        // Key order does not matter.
        let reordered = json!({"spec": {"containers": [{"image": "nginx:1", "name": "web"}]},
                               "metadata": {"labels": {"app": "web"}}});
        assert_eq!(a, pod_template_hash(&reordered, None));
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let mut with = template("nginx:1");
        with["metadata"]["labels"][POD_TEMPLATE_HASH_LABEL] = json!("abc");
        assert!(equal_ignore_hash(&with, &template("nginx:1")));
        assert!(!equal_ignore_hash(&with, &template("nginx:2")));
        let bare = json!({"spec": {}});
        let only_hash = json!({"metadata": {"labels": {POD_TEMPLATE_HASH_LABEL: "x"}}, "spec": {}});
        assert!(equal_ignore_hash(&bare, &only_hash));
    }

    #[test]
    fn surge_rounds_up_unavailable_rounds_down() {
        let d = |replicas: i64, surge: Value, unav: Value| {
            json!({"spec": {"replicas": replicas, "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unav}}}})
        };
        assert_eq!(resolve_fenceposts(&d(3, json!("25%"), json!("25%"))), Ok((1, 0)));
        assert_eq!(resolve_fenceposts(&d(10, json!("25%"), json!("25%"))), Ok((3, 2)));
        assert_eq!(resolve_fenceposts(&d(4, json!(0), json!(0))), Ok((0, 1)));
        assert_eq!(resolve_fenceposts(&d(4, json!(2), json!("50%"))), Ok((2, 2)));
        assert!(resolve_fenceposts(&d(4, json!("x%"), json!(1))).is_err());
        assert_eq!(max_unavailable(&d(2, json!(0), json!(5))), Ok(2));
        let recreate = json!({"spec": {"replicas": 3, "strategy": {"type": "Recreate"}}});
        assert_eq!(max_surge(&recreate), Ok(0));
        assert_eq!(max_unavailable(&recreate), Ok(0));
    }

    #[test]
    fn scaling_during_a_rollout_is_proportional() {
        // replicas 10 → 15 with maxSurge 3 (max 13 → 18) while two ReplicaSets hold 8 and 5.
        let d = json!({"spec": {"replicas": 15}, "status": {"replicas": 13}});
        let rs =
            |n: i64| json!({"spec": {"replicas": n}, "metadata": {"annotations": {MAX_REPLICAS_ANNOTATION: "13"}}});
        let to_add = 18 - 13;
        let big = proportion(&d, &rs(8), to_add, 0, 18);
        let small = proportion(&d, &rs(5), to_add, big, 18);
        assert_eq!((big, small), (3, 2), "8/13 and 5/13 of 18, rounded");
        // Scaling to 0 takes everything away.
        let zero = json!({"spec": {"replicas": 0}});
        assert_eq!(proportion(&zero, &rs(8), -13, 0, 0), -8);
        // Never more than what is left to add.
        assert_eq!(proportion(&d, &rs(8), 5, 4, 18), 1);
    }

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

    #[test]
    fn new_rs_annotations_move_revision_up_and_keep_history() {
        let d = json!({"metadata": {"annotations": {"team": "a", TRACEPARENT_ANNOTATION: "x"}},
                       "spec": {"replicas": 3}});
        let mut rs = json!({"metadata": {"annotations": {REVISION_ANNOTATION: "1"}}});
        assert!(set_new_rs_annotations(&d, &mut rs, 3, true, 1));
        assert_eq!(annotation(&rs, REVISION_ANNOTATION), Some("3"));
        assert_eq!(annotation(&rs, REVISION_HISTORY_ANNOTATION), Some("1"));
        assert_eq!(annotation(&rs, "team"), Some("a"));
        assert_eq!(annotation(&rs, TRACEPARENT_ANNOTATION), None);
        assert!(!set_new_rs_annotations(&d, &mut rs, 3, true, 1));
        let mut fresh = json!({"metadata": {}});
        set_new_rs_annotations(&d, &mut fresh, 1, false, 1);
        assert_eq!(annotation(&fresh, DESIRED_REPLICAS_ANNOTATION), Some("3"));
        assert_eq!(annotation(&fresh, MAX_REPLICAS_ANNOTATION), Some("4"));
    }
}
